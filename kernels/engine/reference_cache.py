"""A tenant's cache of gfortran reference builds, so a verification with new inputs skips gfortran.

The reference side of a verification compiles the original (loop counters inserted) and its
``bind(C)`` wrapper into a shared library, then runs it on inputs the sandboxed harness draws from
the seed. The library does not depend on the seed, so a verification of the same source at the
same sizes with another seed can load it from here instead of running gfortran again.

**Key.** :func:`build_key` hashes exactly what gfortran reads and how it is called: the name and
text of every file it compiles, its arguments, gfortran's identity (:func:`gfortran_identity`) and
the engine version. Sizes, PARAMETER values and ``-D`` defines are all in those texts (the wrapper
declares every array with this run's numeric bounds; the original is the preprocessed text), so
changing any of them, a flag, the compiler or the engine is a miss.

**Safety.** The library is the tenant's code compiled: it only ever runs in the sandbox. The
cache directory belongs to one tenant and is never bound into any sandbox (not even the port's,
which gets the numba cache), so no run can write into it. Entries are 0600 files under a 0700
directory, written whole to a temporary name and renamed, and carry the sha256 of the library
they hold: a short, altered or unreadable entry is a miss, is removed, and the verification
builds again. The library is stored right after gfortran made it, before the reference run (the
tenant's code, which can rewrite any file of its work dir) starts.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from kernels.engine.version import ENGINE_VERSION

#: Entries kept per tenant; the least recently used go first.
MAX_ENTRIES = 256
#: A larger library is not kept (an ordinary kernel's is tens of KiB).
MAX_LIBRARY_BYTES = 64 << 20
_SUFFIX = ".ref"
_DIGEST_BYTES = 64  # sha256 in hex, then a newline, then the library


def build_key(*, files: Mapping[str, str], argv: Sequence[str], compiler: str) -> str:
    """The content address of one reference build (sha256 hex).

    ``files``: name -> text of every file gfortran reads (each name's suffix is its source form);
    ``argv``: its flags and file names in order; ``compiler``: :func:`gfortran_identity`.
    """
    payload = {
        "engine": ENGINE_VERSION,
        "compiler": compiler,
        "argv": list(argv),
        "files": sorted(
            (name, hashlib.sha256(text.encode("utf-8")).hexdigest()) for name, text in files.items()
        ),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def gfortran_identity(gfortran: str = "gfortran") -> str:
    """``gfortran --version``'s first line and where the driver is, or "" when none is found.

    Looked up again whenever the driver's file changes (an upgrade), so a new compiler never
    loads an old compiler's builds.
    """
    path = shutil.which(gfortran)
    if path is None:
        return ""
    real = os.path.realpath(path)
    st = os.stat(real)
    return _identity(real, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _identity(real: str, _mtime_ns: int, _size: int) -> str:
    # Our own toolchain asked for its version: no user input reaches it.
    out = subprocess.run([real, "--version"], capture_output=True, text=True, timeout=30)
    first = (out.stdout.strip().splitlines() or [""])[0]
    return f"{first} ({real})"


def load(cache_dir: str | os.PathLike[str], key: str, dest: Path) -> bool:
    """Write the library stored under ``key`` to ``dest``; False (and nothing written) on a miss.

    A damaged entry is removed, so the build that follows stores a good one.
    """
    entry = _entry(cache_dir, key)
    try:
        blob = _read_regular(entry, MAX_LIBRARY_BYTES + _DIGEST_BYTES + 1)
    except FileNotFoundError:
        return False
    except OSError:
        _discard(entry)
        return False
    digest, library = blob[:_DIGEST_BYTES], blob[_DIGEST_BYTES + 1 :]
    if (
        len(blob) <= _DIGEST_BYTES + 1
        or blob[_DIGEST_BYTES : _DIGEST_BYTES + 1] != b"\n"
        or hashlib.sha256(library).hexdigest().encode("ascii") != digest
    ):
        _discard(entry)
        return False
    dest.write_bytes(library)
    with contextlib.suppress(OSError):
        os.utime(entry)  # recently used: kept longest
    return True


def store(cache_dir: str | os.PathLike[str], key: str, built: Path) -> None:
    """Keep the library gfortran just wrote at ``built`` (a file of the sandbox's work dir).

    A library that is not a regular file or is too large is simply not kept.
    """
    try:
        library = _read_regular(built, MAX_LIBRARY_BYTES)
    except OSError:
        return
    root = _root(cache_dir)
    blob = hashlib.sha256(library).hexdigest().encode("ascii") + b"\n" + library
    entry = _entry(cache_dir, key)
    tmp = root / f".{key}.{os.getpid()}.{id(blob)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, entry)  # atomic: a concurrent reader sees the old entry or this one
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _evict(root)


def _root(cache_dir: str | os.PathLike[str]) -> Path:
    root = Path(cache_dir)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


def _entry(cache_dir: str | os.PathLike[str], key: str) -> Path:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"not a build key: {key!r}")
    return Path(cache_dir) / f"{key}{_SUFFIX}"


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, never following a symlink (a
    sandbox wrote the directory it is in)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise OSError(f"{path} is larger than {limit} bytes")
        data = fh.read(limit + 1)
        if len(data) > limit:
            raise OSError(f"{path} is larger than {limit} bytes")
        return data


def _discard(entry: Path) -> None:
    with contextlib.suppress(OSError):
        entry.unlink()


def _evict(root: Path) -> None:
    entries = sorted(root.glob(f"*{_SUFFIX}"), key=_mtime)
    for old in entries[: max(0, len(entries) - MAX_ENTRIES)]:
        _discard(old)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
