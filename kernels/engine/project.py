"""A translation project: the files a user gives, the include directories and the -D defines.

Real codes are several files: a kernel module ``use``s a common module from another file, and
kernels ``#include`` the benchmark's own headers and need ``-D`` defines. A :class:`Project` holds
every file the translation may read, *as text*, by the name the user gave it:

- ``sources``: the files that are translated (program units), in the order given;
- the files of the ``include_dirs`` (headers), which are only read through ``#include`` and
  ``include``.

Nothing is read from disk after :func:`project_from_paths` (the CLI) has loaded the given files
and directories: ``#include "x.h"`` / ``include 'x.h'`` are resolved against the project's own
files (the including file's directory first, then each include directory, as cpp does) and
inlined between line markers before cpp runs, and cpp then runs in the sandbox on stdin with no
include path. So an include can only ever reach the given files; one naming anything else stays
unresolved and cpp reports it as not found.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from kernels.engine import security
from kernels.engine.frontend import has_directives, needs_preprocessing, preprocess, realign_lines
from kernels.engine.frontend.parse import is_fixed_form
from kernels.engine.report import (
    Diagnostic,
    EngineError,
    ForbiddenStatementError,
    FortranSyntaxError,
)

SOURCE_SUFFIXES = {
    ".f90",
    ".f95",
    ".f03",
    ".f08",
    ".f",
    ".for",
    ".f77",
    ".ftn",
    ".fpp",
}
MAX_PROJECT_FILES = 500
MAX_PROJECT_BYTES = 16 * 1024 * 1024
MAX_INCLUDE_DEPTH = 8
_DEFINE = re.compile(r"^[A-Za-z_]\w*$")
_CPP_INCLUDE = re.compile(r'^\s*#\s*include\s*(?:"([^"]+)"|<([^>]+)>)', re.I)
_FORTRAN_INCLUDE = re.compile(r"""^\s*include\s*(?:'([^']+)'|"([^"]+)")\s*(?:!.*)?$""", re.I)


@dataclass
class Project:
    files: dict[str, str]
    sources: list[str]
    include_dirs: list[str] = field(default_factory=list)
    defines: dict[str, str | None] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # per source, set while preparing

    @property
    def label(self) -> str:
        """How the project is named in a report: its one file, or the files given."""
        return self.sources[0] if len(self.sources) == 1 else " ".join(self.sources)


def parse_defines(items: Iterable[str]) -> dict[str, str | None]:
    """``NAME`` or ``NAME=VALUE`` items (the CLI's ``-D``) as a mapping; bad names are refused."""
    out: dict[str, str | None] = {}
    for item in items:
        name, eq, value = item.partition("=")
        name = name.strip()
        if not _DEFINE.match(name):
            raise EngineError(f"-D {item!r}: a macro name is a letter or _ then letters, digits, _")
        if "\n" in value:
            raise EngineError(f"-D {item!r}: the value must be one line")
        out[name] = value if eq else None
    return out


def single_file(source: str, filename: str) -> Project:
    return Project({filename: source}, [filename])


def project_from_texts(
    files: Mapping[str, str],
    *,
    include_dirs: Iterable[str] = (),
    defines: Mapping[str, str | None] | None = None,
    max_bytes: int = MAX_PROJECT_BYTES,
) -> Project:
    """A project from ``{name: text}`` (the API and MCP tools).

    The sources are the files with a Fortran suffix that are not inside an include directory.
    """
    dirs = [_clean(d).rstrip("/") for d in include_dirs]
    texts = {_clean(name): text for name, text in files.items()}
    _check_limits(texts, max_bytes)
    sources = [
        n
        for n in texts
        if PurePath(n).suffix.lower() in SOURCE_SUFFIXES
        and not any(n.startswith(d + "/") for d in dirs if d)
    ]
    if not sources:
        raise EngineError("no Fortran source among the files (.f90, .f, .F90, ...)")
    return Project(texts, sources, dirs, dict(defines or {}))


def project_from_paths(
    paths: Iterable[str],
    *,
    include_dirs: Iterable[str] = (),
    defines: Mapping[str, str | None] | None = None,
    max_bytes: int = MAX_PROJECT_BYTES,
) -> Project:
    """A project from the files and directories on the command line, read once, here."""
    files: dict[str, str] = {}
    sources: list[str] = []
    for p in paths:
        name = _clean(p)
        files[name] = _read(Path(p))
        sources.append(name)
    dirs: list[str] = []
    for d in include_dirs:
        root = Path(d)
        if not root.is_dir():
            raise EngineError(f"-I {d}: not a directory")
        prefix = _clean(d).rstrip("/")
        dirs.append(prefix)
        for f in sorted(root.rglob("*")):
            if f.is_file() and not f.is_symlink():
                rel = f.relative_to(root).as_posix()
                files.setdefault(f"{prefix}/{rel}" if prefix else rel, _read(f))
                if len(files) > MAX_PROJECT_FILES:
                    raise EngineError(f"more than {MAX_PROJECT_FILES} files in the project")
    _check_limits(files, max_bytes)
    return Project(files, sources, dirs, dict(defines or {}))


def prepared_sources(
    project: Project, *, allowed_includes: Collection[str] = ()
) -> tuple[list[tuple[str, str]], list[tuple[str, security.ExcludedUnit]]]:
    """Each source ready for the frontend, and the program units the security scan excluded.

    Includes are inlined, cpp runs (sandbox), and forbidden statements are checked before
    anything runs: in the user's text as written (:func:`security.scan_units`: a unit holding
    one is excluded, a file with nothing left is refused; an include naming no given file is
    refused), then in what the compiler will see (included files, expanded macros).
    """
    out: list[tuple[str, str]] = []
    excluded: list[tuple[str, security.ExcludedUnit]] = []
    for name in project.sources:
        raw = project.files[name]
        fixed = is_fixed_form(name)
        targets = _resolved_targets(project, name, raw)
        allowed = set(targets) | set(allowed_includes)
        raw, left_out = _without_program_io(raw, fixed, allowed)
        if left_out:
            project.notes.setdefault(name, []).append(
                "left out of the main program before its nests were extracted (never compiled "
                "or run): " + "; ".join(left_out)
            )
        try:
            scan = security.scan_units(raw, fixed_form=fixed, allowed_includes=allowed)
        except ForbiddenStatementError as exc:
            exc.diagnostics = [_unresolved_include(d, raw) for d in exc.diagnostics]
            _refuse(project, name, exc.diagnostics)
        excluded.extend((name, unit) for unit in scan.excluded)
        inlined, resolved_lines = _inline(project, name, scan.source, depth=0)
        if needs_preprocessing(name) or has_directives(inlined):
            try:
                text = preprocess(inlined, filename=name, defines=project.defines, fixed=fixed)
            except EngineError as exc:
                exc = _missing_include(exc, raw) or exc
                exc.file = name  # type: ignore[attr-defined]
                raise exc from None
        elif resolved_lines:
            text = realign_lines(inlined, fixed=fixed)
        else:
            text = scan.source
        if text is not scan.source:
            _refuse(
                project,
                name,
                [
                    Diagnostic(d.line, d.column, d.message + " (after preprocessing)")
                    for d in security.find_forbidden(text, fixed_form=fixed)
                ],
            )
        out.append((name, text))
    return out, excluded


def _without_program_io(raw: str, fixed: bool, allowed: set[str]) -> tuple[str, list[str]]:
    """A main program's forbidden statements blanked out (lines kept), with what was removed.

    A main program is never compiled as a whole: only its loop nests are, each as a subroutine
    of its own lines. Its file I/O (seismograms, snapshots, OPEN of a parameter file) must not
    cost the nests around it, so those statements are removed (not just skipped): no kernel can
    contain them. In other units a forbidden statement still excludes the unit.
    """
    found = security.find_forbidden(raw, fixed_form=fixed, allowed_includes=allowed)
    if not found:
        return raw, []
    lines = raw.split("\n")
    programs = [u for u in security.program_units(lines, fixed_form=fixed) if u.kind == "program"]
    statements = security.logical_statements(lines, fixed_form=fixed)
    blank: set[int] = set()
    removed: list[str] = []
    for d in found:
        unit = next((u for u in programs if u.first_line <= d.line <= u.last_line), None)
        if unit is None or d.line in (unit.first_line, unit.last_line):
            continue
        stmt = next((s for s in statements if s.first_line <= d.line <= s.last_line), None)
        if stmt is None:
            continue
        blank.update(range(stmt.first_line, stmt.last_line + 1))
        removed.append(f"line {d.line}: {d.message.removeprefix('forbidden: ')}")
    if not blank:
        return raw, []
    kept = ["" if n in blank else text for n, text in enumerate(lines, start=1)]
    return "\n".join(kept), removed


# --------------------------------------------------------------------------------------------
# Named constants as written: where a PARAMETER gets its value, and a copy with other values


@dataclass
class ParameterDefinition:
    """One ``name = value`` of a PARAMETER declaration in the user's files."""

    name: str  # lower case
    file: str
    line: int
    value: int | None  # the integer literal's value; None when the value is an expression
    columns: tuple[int, int] | None  # first and last column of the literal on ``line``
    mentions: set[str]  # the names its value expression refers to
    integer: bool | None  # declared INTEGER in the same statement; None when typed elsewhere


_INTEGER_LITERAL = re.compile(r"^\s*\+?\s*(\d+)\s*(?:_\s*\w+)?\s*$")
_NAMES = re.compile(r"[a-z_]\w*", re.I)
_ENTITY = re.compile(r"^\s*([a-z_]\w*)\s*(?:\([^=]*\))?\s*=(?!=)", re.I)


def parameter_definitions(project: Project) -> list[ParameterDefinition]:
    """Every named constant the project's files define, sources and included files alike.

    An included file is read in the form of the file that includes it (see
    :func:`kernels.engine.frontend.parse.is_fixed_form`).
    """
    forms = _file_forms(project)
    out: list[ParameterDefinition] = []
    for name, fixed in forms.items():
        lines = project.files[name].split("\n")
        for stmt in security.logical_statements(lines, fixed_form=fixed):
            out.extend(_definitions(stmt, name))
    return out


def with_parameters(
    project: Project, values: Mapping[str, int], originals: Mapping[str, int]
) -> Project:
    """A copy of ``project`` whose PARAMETERs ``values`` are set to new values.

    Each definition whose literal is ``originals[name]`` is rewritten in place, padded to the
    literal's width, so that every line and column keeps its place (fixed form never pushes
    text past column 72). Definitions of the name with another value (another scope) are left.
    """
    files = dict(project.files)
    for d in parameter_definitions(project):
        if d.name not in values or d.columns is None or d.value != originals.get(d.name):
            continue
        lines = files[d.file].split("\n")
        first, last = d.columns
        text = lines[d.line - 1]
        width = last - first + 1
        lines[d.line - 1] = text[: first - 1] + str(values[d.name]).rjust(width) + text[last:]
        files[d.file] = "\n".join(lines)
    return Project(files, list(project.sources), list(project.include_dirs), dict(project.defines))


def _file_forms(project: Project) -> dict[str, bool]:
    """Each source by its name, and each file it includes in the form of its includer."""
    forms: dict[str, bool] = {}
    pending = [(name, is_fixed_form(name)) for name in project.sources]
    while pending:
        name, fixed = pending.pop(0)
        if name in forms:
            continue
        forms[name] = fixed
        for target in _resolved_targets(project, name, project.files[name]):
            resolved = _resolve(project, name, target)
            if resolved is not None:
                pending.append((resolved, fixed))
    return forms


def _definitions(stmt, file: str) -> list[ParameterDefinition]:
    text = stmt.text
    low = text.lower()
    head = re.match(r"\s*parameter\s*\(", low)
    if head is not None:  # PARAMETER (n = 10, m = 2*n)
        close = low.rfind(")")
        items_at, items_end, integer = head.end(), close, None
    else:
        split = _top_level(low, "::")
        if split < 0:
            return []
        attributes = [item.strip() for _, _, item in _spans(low[:split])]
        if "parameter" not in attributes:
            return []
        integer = attributes[0].startswith("integer")
        items_at, items_end = split + 2, len(text)
    out = []
    for start, end, item in _spans(text[items_at:items_end]):
        m = _ENTITY.match(item)
        if m is None:
            continue
        value_at = items_at + start + m.end()
        value = text[value_at : items_at + end]
        literal = _INTEGER_LITERAL.match(value)
        columns = number = None
        if literal is not None:
            number = int(literal.group(1))
            a = value_at + literal.start(1)
            b = value_at + literal.end(1) - 1
            (line_a, col_a), (line_b, col_b) = stmt.pos(a), stmt.pos(b)
            if line_a == line_b:
                columns = (col_a, col_b)
        out.append(
            ParameterDefinition(
                name=m.group(1).lower(),
                file=file,
                line=stmt.pos(items_at + start + m.start(1))[0],
                value=number,
                columns=columns,
                mentions=set() if literal is not None else _names_in(value),
                integer=integer,
            )
        )
    return out


def _names_in(expression: str) -> set[str]:
    """The names an expression's text refers to (number literals and their kinds left out)."""
    without_numbers = _NUMBER.sub(" ", expression)
    return {n.lower() for n in _NAMES.findall(without_numbers)}


_NUMBER = re.compile(r"(?<![\w.])(?:\d+\.?\d*|\.\d+)(?:[deq][+-]?\d+)?(?:_\w+)?", re.I)


def _spans(text: str) -> list[tuple[int, int, str]]:
    """The top-level comma-separated items of ``text``: (start, end, item)."""
    out, depth, start = [], 0, 0
    for k, c in enumerate(text):
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0:
            out.append((start, k, text[start:k]))
            start = k + 1
    out.append((start, len(text), text[start:]))
    return out


def _top_level(text: str, token: str) -> int:
    """Where ``token`` first occurs outside parentheses, or -1."""
    depth = 0
    for k, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and text.startswith(token, k):
            return k
    return -1


def _resolved_targets(project: Project, name: str, text: str) -> list[str]:
    """The include names (as written) in ``text`` that name a given file."""
    out = []
    for line in text.split("\n"):
        m = _CPP_INCLUDE.match(line) or _FORTRAN_INCLUDE.match(line)
        if m and _resolve(project, name, m.group(1) or m.group(2)) is not None:
            out.append(m.group(1) or m.group(2))
    return out


def _refuse(project: Project, name: str, found: list[Diagnostic]) -> None:
    if not found:
        return
    found.sort(key=lambda d: (d.line, d.column))
    first = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    prefix = f"{name}: " if len(project.sources) > 1 else ""
    exc = ForbiddenStatementError(
        f"{prefix}line {first.line}, column {first.column}: {first.message}{more}", found
    )
    exc.file = name  # type: ignore[attr-defined]
    raise exc


def _unresolved_include(d: Diagnostic, raw: str) -> Diagnostic:
    """An include that names no given file says so (it is refused either way)."""
    if "include" not in d.message:
        return d
    line = raw.split("\n")[d.line - 1] if 0 < d.line <= raw.count("\n") + 1 else ""
    m = _CPP_INCLUDE.match(line) or _FORTRAN_INCLUDE.match(line)
    if m is None:
        return d
    return Diagnostic(
        d.line,
        d.column,
        f"forbidden: include {m.group(1) or m.group(2)!r} is not among the given files and -I "
        "directories (nothing else can be included)",
    )


def _missing_include(exc: EngineError, raw: str) -> FortranSyntaxError | None:
    """cpp's "x.h: No such file" as a diagnostic at the ``#include`` line that names x.h."""
    m = re.search(r"([^\s:]+): No such file or directory", exc.message)
    if m is None:
        return None
    for number, line in enumerate(raw.split("\n"), start=1):
        inc = _CPP_INCLUDE.match(line)
        if inc and (inc.group(1) or inc.group(2)) == m.group(1):
            message = (
                f"#include {m.group(1)}: No such file or directory among the given files and "
                "-I directories"
            )
            return FortranSyntaxError(message, [Diagnostic(number, line.index("#") + 1, message)])
    return None


def _inline(project: Project, name: str, text: str, *, depth: int) -> tuple[str, set[int]]:
    """``text`` with each resolvable include replaced by the file between line markers.

    Returns the text and the lines (of ``text``) whose include was resolved.
    """
    if depth > MAX_INCLUDE_DEPTH:
        raise EngineError(f"{name}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
    out: list[str] = []
    resolved: set[int] = set()
    marker = "<stdin>" if depth == 0 else name
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        m = _CPP_INCLUDE.match(line) or _FORTRAN_INCLUDE.match(line)
        target = _resolve(project, name, (m.group(1) or m.group(2))) if m else None
        if target is None:
            out.append(line)
            continue
        inner, _ = _inline(project, target, project.files[target], depth=depth + 1)
        resolved.add(number)
        out.append(f'# 1 "{target}"')
        out.append(inner.rstrip("\n"))
        out.append(f'# {number + 1} "{marker}"')
    return "\n".join(out), resolved


def _resolve(project: Project, including: str, target: str) -> str | None:
    """The project file an include names: next to the including file, then in each -I dir."""
    if target.startswith("/"):
        return None
    here = posixpath.dirname(including)
    for base in [here, *project.include_dirs]:
        candidate = posixpath.normpath(posixpath.join(base, target)) if base else target
        candidate = _clean(candidate)
        if candidate in project.files:
            return candidate
    return None


def _clean(name: str) -> str:
    """A file name as the project keys it (posix separators, no ``./``)."""
    text = PurePath(name).as_posix()
    while text.startswith("./"):
        text = text[2:]
    return text


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EngineError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _check_limits(files: Mapping[str, str], max_bytes: int) -> None:
    if len(files) > MAX_PROJECT_FILES:
        raise EngineError(f"more than {MAX_PROJECT_FILES} files in the project")
    total = sum(len(t.encode("utf-8")) for t in files.values())
    if total > max_bytes:
        raise EngineError(f"the project is {total} bytes; the limit is {max_bytes}")
