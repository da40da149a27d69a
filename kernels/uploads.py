"""Uploaded Fortran files and archives -> ``{name: text}``, safely.

The dashboard accepts several files, or one ``.zip`` / ``.tar.gz`` / ``.tgz`` / ``.tar`` archive.
Nothing is ever extracted to disk: members are read in memory, so a crafted name
(``../../etc/x``, an absolute path, a symlink) can only ever become a dictionary key, and those
are refused or normalised here anyway. Limits bound the work an upload can cause: the number of
Fortran files, the total decompressed bytes (the same limit as a pasted source) and the number
of archive entries looked at (a zip of a million empty entries is refused before it is walked).
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from fortranspire_site.errors import PayloadTooLarge, ValidationFailed

FORTRAN_SUFFIXES = (".f", ".for", ".f77", ".f90", ".f95", ".f03", ".f08", ".fpp")
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
MAX_FILES = 50
MAX_ARCHIVE_ENTRIES = 500
MAX_NAME_CHARS = 200
_NAME_PART = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass
class UploadedSources:
    files: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # archive members that are not Fortran

    @property
    def total_bytes(self) -> int:
        return sum(len(text.encode("utf-8")) for text in self.files.values())


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def is_fortran(name: str) -> bool:
    return name.lower().endswith(FORTRAN_SUFFIXES)


def safe_member_name(raw: str) -> str:
    """A relative POSIX path made of plain parts, or ValidationFailed (traversal, absolute...)."""
    name = (raw or "").replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ValidationFailed(f"archive member {raw!r} has an absolute path")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ValidationFailed(f"archive member {raw!r} points outside the archive")
    if any(not _NAME_PART.match(p) for p in parts):
        raise ValidationFailed(
            f"file name {raw!r} has characters other than letters, digits and _ . + -"
        )
    cleaned = "/".join(parts)
    if len(cleaned) > MAX_NAME_CHARS:
        raise ValidationFailed(f"file name {raw[:40]!r}... is too long")
    return cleaned


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed(f"{name} is not UTF-8 text") from None


class _Collector:
    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.used = 0
        self.result = UploadedSources()

    def add(self, raw_name: str, read, size_hint: int) -> None:
        name = safe_member_name(raw_name)
        if not is_fortran(name):
            self.result.skipped.append(name)
            return
        if name in self.result.files:
            raise ValidationFailed(f"{name} appears twice")
        if len(self.result.files) >= MAX_FILES:
            raise ValidationFailed(f"more than {MAX_FILES} Fortran files")
        # The declared size is checked before reading, and the read itself is capped, so a
        # member lying about its size (or a compression bomb) cannot inflate past the limit.
        if self.used + max(0, size_hint) > self.limit:
            raise PayloadTooLarge(self._too_large())
        data = read(self.limit - self.used + 1)
        self.used += len(data)
        if self.used > self.limit:
            raise PayloadTooLarge(self._too_large())
        self.result.files[name] = _decode(name, data)

    def _too_large(self) -> str:
        return f"the Fortran files add up to more than {self.limit} bytes"


def _read_zip(data: bytes, collector: _Collector) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise ValidationFailed("the .zip file is damaged or not a zip archive") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ARCHIVE_ENTRIES:
            raise ValidationFailed(f"the archive has more than {MAX_ARCHIVE_ENTRIES} entries")
        for info in infos:
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise ValidationFailed(f"{info.filename} is encrypted")

            def read(limit: int, info=info) -> bytes:
                with archive.open(info) as member:
                    return member.read(limit)

            try:
                collector.add(info.filename, read, info.file_size)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError):
                raise ValidationFailed(f"{info.filename} cannot be read from the zip") from None


def _read_tar(data: bytes, collector: _Collector) -> None:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError):
        raise ValidationFailed("the archive is damaged or not a tar/tar.gz archive") from None
    with archive:
        count = 0
        try:
            for member in archive:
                count += 1
                if count > MAX_ARCHIVE_ENTRIES:
                    raise ValidationFailed(
                        f"the archive has more than {MAX_ARCHIVE_ENTRIES} entries"
                    )
                if member.isdir():
                    continue
                if not member.isfile():
                    # Links, devices and FIFOs are never followed or created.
                    raise ValidationFailed(f"{member.name} is not a regular file")

                def read(limit: int, member=member) -> bytes:
                    handle = archive.extractfile(member)
                    return handle.read(limit) if handle is not None else b""

                collector.add(member.name, read, member.size)
        except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile):
            raise ValidationFailed("the archive is damaged") from None


def sources_from_uploads(uploads: Iterable, *, limit_bytes: int) -> UploadedSources:
    """Every Fortran file in the uploads (plain files and archives); refuses anything unsafe.

    ``uploads`` are Django UploadedFile objects (``.name``, ``.size``, ``.read()``).
    """
    collector = _Collector(limit_bytes)
    uploads = list(uploads)
    for upload in uploads:
        base = PurePosixPath((upload.name or "").replace("\\", "/")).name
        if is_archive(base):
            # The compressed archive itself may be at most the same size as the sources.
            if upload.size > limit_bytes:
                raise PayloadTooLarge(
                    f"{base} is {upload.size} bytes; the limit is {limit_bytes} bytes"
                )
            data = upload.read()
            if base.lower().endswith(".zip"):
                _read_zip(data, collector)
            else:
                _read_tar(data, collector)
            continue
        if not is_fortran(base):
            raise ValidationFailed(
                f"{base or 'the file'} is neither Fortran ({', '.join(FORTRAN_SUFFIXES)}) nor an "
                f"archive ({', '.join(ARCHIVE_SUFFIXES)})"
            )
        # A plain file's own name is only ever a label: tidy it rather than refuse it.
        collector.add(re.sub(r"[^A-Za-z0-9_.+-]", "_", base)[:100], upload.read, upload.size)
    if uploads and not collector.result.files:
        raise ValidationFailed("no Fortran file found in the upload")
    return collector.result
