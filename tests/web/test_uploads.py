"""kernels.uploads: Fortran files and archives to {name: text}, refusing anything unsafe."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from fortranspire_site.errors import PayloadTooLarge, ValidationFailed
from kernels.uploads import MAX_ARCHIVE_ENTRIES, safe_member_name, sources_from_uploads

KERNEL = "subroutine k(n)\n integer :: n\nend subroutine k\n"


def _zip(entries: dict[str, str]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return SimpleUploadedFile("project.zip", buffer.getvalue())


def _tar(build) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        build(archive)
    return SimpleUploadedFile("project.tar.gz", buffer.getvalue())


def _add(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def test_several_files_and_an_archive_make_one_dictionary():
    found = sources_from_uploads(
        [
            SimpleUploadedFile("a.f90", KERNEL.encode()),
            SimpleUploadedFile("my file.F90", KERNEL.encode()),
            _zip({"lib/b.f": KERNEL, "docs/readme.txt": "hi", "lib/": ""}),
        ],
        limit_bytes=10_000,
    )
    assert sorted(found.files) == ["a.f90", "lib/b.f", "my_file.F90"]
    assert found.skipped == ["docs/readme.txt"]


def test_a_tar_gz_is_read_in_memory_and_its_names_kept_relative():
    upload = _tar(lambda t: (_add(t, "./src/m.f90", KERNEL), _add(t, "src/main.f90", KERNEL)))
    found = sources_from_uploads([upload], limit_bytes=10_000)
    assert found.files == {"src/m.f90": KERNEL, "src/main.f90": KERNEL}


@pytest.mark.parametrize(
    "name", ["../x.f90", "a/../../x.f90", "/etc/x.f90", "C:/x.f90", "a/b c.f90"]
)
def test_member_names_that_leave_the_archive_or_look_odd_are_refused(name):
    with pytest.raises(ValidationFailed):
        safe_member_name(name)


def test_symlinks_in_a_tar_are_refused():
    def build(archive):
        link = tarfile.TarInfo("evil.f90")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)

    with pytest.raises(ValidationFailed, match="not a regular file"):
        sources_from_uploads([_tar(build)], limit_bytes=10_000)


def test_a_compression_bomb_stops_at_the_byte_limit():
    upload = _zip({"big.f90": "!" * 5_000_000})
    assert upload.size < 100_000
    with pytest.raises(PayloadTooLarge):
        sources_from_uploads([upload], limit_bytes=1_000_000)


def test_too_many_entries_are_refused_before_reading_them():
    upload = _zip({f"f{i}.txt": "" for i in range(MAX_ARCHIVE_ENTRIES + 1)})
    with pytest.raises(ValidationFailed, match="more than"):
        sources_from_uploads([upload], limit_bytes=1_000_000)


def test_non_fortran_files_damaged_archives_and_non_utf8_are_clear_errors():
    with pytest.raises(ValidationFailed, match="neither Fortran"):
        sources_from_uploads([SimpleUploadedFile("x.exe", b"MZ")], limit_bytes=100)
    with pytest.raises(ValidationFailed, match="damaged"):
        sources_from_uploads([SimpleUploadedFile("x.zip", b"not a zip")], limit_bytes=100)
    with pytest.raises(ValidationFailed, match="not UTF-8"):
        sources_from_uploads([SimpleUploadedFile("x.f90", b"\xff\xfe")], limit_bytes=100)
    with pytest.raises(ValidationFailed, match="no Fortran file"):
        sources_from_uploads([_zip({"readme.md": "x"})], limit_bytes=1_000)
