"""Checks of what a caller sends with a job request (source text, sizes, seed, target).

Every channel (REST, MCP, dashboard, CLI) goes through these, so a request is accepted or
refused the same way wherever it comes from. Pure Python, no Django: the CLI uses them with no
database. (Size *inference* for verification lives in the engine; this module only parses and
bounds the sizes a person typed.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from fortranspire_site.errors import PayloadTooLarge, ValidationFailed

MAX_SIZE_VALUE = 1 << 24
MAX_SIZES = 32
TARGETS = ("cpu", "gpu")
SIZE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# "n=64, m=32" or "n=64 m=32" or "n=64;m=32": items split before each NAME=.
_SIZE_ITEM_SPLIT = re.compile(r"[,;\s]+(?=[A-Za-z_])")


def _position(text: str, index: int) -> dict[str, int]:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return {"line": line, "column": column, "offset": index}


def source_check(source: Any, *, max_bytes: int, field: str = "source") -> str:
    """The source text, or ValidationFailed / PayloadTooLarge saying what and where.

    NUL bytes and lone surrogates are refused with their position: the first cannot be passed
    to gfortran or a C string, the second cannot be encoded to UTF-8 for the sandbox's files.
    """
    if not isinstance(source, str) or not source.strip():
        raise ValidationFailed(f"{field} must be non-empty Fortran text")
    # Checked before encoding: len() bounds the cost of everything below.
    if len(source) > max_bytes:
        raise PayloadTooLarge(
            f"{field} is larger than {max_bytes} bytes", extra={"limit": max_bytes}
        )
    nul = source.find("\x00")
    if nul >= 0:
        where = _position(source, nul)
        raise ValidationFailed(
            f"{field} contains a NUL character at line {where['line']}, column {where['column']}",
            extra={"field": field, **where},
        )
    try:
        size = len(source.encode("utf-8"))
    except UnicodeEncodeError as exc:
        where = _position(source, exc.start)
        raise ValidationFailed(
            f"{field} contains a lone surrogate (U+{ord(source[exc.start]):04X}) at line "
            f"{where['line']}, column {where['column']}",
            extra={"field": field, **where},
        ) from None
    if size > max_bytes:
        raise PayloadTooLarge(
            f"{field} is {size} bytes; the limit is {max_bytes} bytes",
            extra={"size": size, "limit": max_bytes},
        )
    return source


def size_item_parse(text: str) -> tuple[str, int | float]:
    """``"n=37"`` -> ``("n", 37)``; a value with a point or exponent is a real scalar."""
    name, sep, value = str(text).partition("=")
    name = name.strip().lower()
    if not sep or not SIZE_NAME.fullmatch(name):
        raise ValidationFailed(f"expected NAME=VALUE (e.g. n=64), got {str(text).strip()!r}")
    value = value.strip()
    try:
        number: int | float = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise ValidationFailed(
                f"{str(text).strip()!r} is not NAME=VALUE (e.g. n=64): {value!r} is not a number"
            ) from None
    return name, _size_value_check(name, number)


def _size_value_check(name: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(f"size {name!r} must be an integer")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValidationFailed(f"size {name} must be finite")
        return value
    if not 0 < value <= MAX_SIZE_VALUE:
        raise ValidationFailed(f"size {name}={value} is out of range (1..{MAX_SIZE_VALUE})")
    return value


def sizes_parse(value: Any, *, integers_only: bool = True) -> dict[str, int | float] | None:
    """The one parser of user-given sizes: a mapping, ``"n=64, m=32"`` text, or NAME=VALUE items.

    Returns ``{name: value}`` with lower-case names, or None when nothing was given. Integer
    values must be 1..MAX_SIZE_VALUE; real values (CLI scalars) only when ``integers_only`` is
    False.
    """
    if value is None or (isinstance(value, str | Mapping | list | tuple) and not value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        pairs = [size_item_parse(item) for item in _SIZE_ITEM_SPLIT.split(text)]
    elif isinstance(value, Mapping):
        pairs = []
        for name, number in value.items():
            key = str(name).strip().lower() if isinstance(name, str) else None
            if key is None or not SIZE_NAME.fullmatch(key):
                raise ValidationFailed(f"size name {name!r} is not a Fortran name")
            pairs.append((key, _size_value_check(key, number)))
    elif isinstance(value, Iterable):
        pairs = [size_item_parse(item) for item in value]
    else:
        raise ValidationFailed("sizes must be an object of NAME: positive integer")
    if len(pairs) > MAX_SIZES:
        raise ValidationFailed(f"at most {MAX_SIZES} sizes may be given")
    sizes = dict(pairs)
    if integers_only:
        for name, number in sizes.items():
            if not isinstance(number, int):
                raise ValidationFailed(f"size {name} must be an integer")
    return sizes


def target_check(target: Any) -> str:
    if target not in TARGETS:
        raise ValidationFailed(f"target must be one of {', '.join(TARGETS)}")
    return target


def seed_check(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValidationFailed("seed must be an integer in 0..2**32-1")
    return seed
