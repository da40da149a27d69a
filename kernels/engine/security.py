"""Refuse Fortran that reaches outside the kernel, before anything parses or compiles it.

This is defence in depth: every compile and run happens in the sandbox
(:mod:`kernels.engine.sandbox`), which must hold when this scan misses something. The scan keeps
kernels from even trying, and gives the user a precise diagnostic.

The pipeline calls :func:`scan_units` first. A forbidden statement refuses its *program unit*
(main program, module, external subprogram): that unit's lines are blanked out of the source
(line numbers kept) and it is reported as excluded, with the reasons; the other units still
translate. Something forbidden outside every unit (a preprocessor include at the top of the
file), or a file whose every unit is refused, refuses the whole file
(:class:`ForbiddenStatementError`, as :func:`check_forbidden` does).

The scan works on *logical statements*: comments are removed, string literals are blanked (so
``print *, 'open the file'`` is harmless), continuation lines are joined, also across comment
and blank lines between them (so ``call sys&`` / ``! note`` / ``&tem('ls')`` is caught), and
``;`` separates statements. In fixed form blanks are not significant, so they are dropped before
matching (``CALL SYS TEM('ls')`` is a valid call there). Every hit keeps the line and column of
its first character in the original file.

Refused:
- the GNU extensions and intrinsics that act on processes, files, the environment or raw
  memory (:data:`PROCESS_AND_FILE_ROUTINES`), in ``CALL`` form, in function form
  (``st = kill(pid, 9)``) and when named in ``EXTERNAL``/``INTRINSIC`` or after ``=>``;
- the file statements ``open``, ``close``, ``inquire``, ``rewind``, ``backspace``, ``endfile``,
  ``flush``, ``wait``;
- ``read`` / ``write`` with a unit other than the standard streams: ``read *``,
  ``read(*, ...)``, ``write(*, ...)``, ``write(6, ...)`` (standard output), ``write(0, ...)``
  (standard error), ``flush(6)``/``flush(0)`` and ``print`` are allowed, and so is an *internal*
  READ/WRITE, whose unit is a variable declared CHARACTER in the file (and never INTEGER): it
  reads or writes that string, no file. Any other unit, a unit number written as an expression
  or a named constant among them, is a file (``fort.N`` is created when nothing opened it), so it
  is refused; ``open`` is refused too, so units 0 and 6 stay the streams. ``read(5, ...)`` stays
  refused: input a kernel reads is input the verification cannot give it;
- ``bind(c)``: it lets a kernel call any libc function (``system``, ``kill``, ``open``);
- every file-reading preprocessor form, unless it names a file the user uploaded
  (``allowed_includes``): ``#include``, ``#include_next``, ``#import``, ``#embed``, also spelled
  with a backslash-newline inside, a ``/* */`` comment inside (``#/**/include``), the trigraph
  ``??=`` or the digraph ``%:``; ``__has_include`` and ``#pragma GCC dependency``; and the
  Fortran ``include`` line.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from kernels.engine.report import Diagnostic, ForbiddenStatementError

#: GNU extensions and standard intrinsics that act on the process, the file system, the
#: environment or raw memory. Refused in CALL form, function form, and when named in
#: EXTERNAL/INTRINSIC statements or after ``=>``. None of them has a use in a numeric kernel.
PROCESS_AND_FILE_ROUTINES = (
    # processes and signals
    "execute_command_line",
    "system",
    "fork",
    "kill",
    "signal",
    "alarm",
    "sleep",
    "getpid",
    "getppid",
    "getuid",
    "getgid",
    # files and directories
    "unlink",
    "rename",
    "link",
    "symlnk",
    "chdir",
    "chmod",
    "umask",
    "access",
    "stat",
    "lstat",
    "fstat",
    "getcwd",
    "fget",
    "fgetc",
    "fput",
    "fputc",
    "fseek",
    "ftell",
    "fnum",
    "flush",
    "isatty",
    "ttynam",
    # the environment (the command line is allowed: intrinsics.COMMAND_LINE reads argv only)
    "getenv",
    "get_environment_variable",
    "hostnm",
    "getlog",
    # raw memory (Cray pointers) and C function pointers
    "malloc",
    "free",
    "c_f_procpointer",
    "c_funloc",
)
# Names distinctive enough that any mention is refused: ``external system`` + ``call
# run(system)`` or ``p => execute_command_line`` reach the routine without ``name(``.
_ANY_MENTION = {n for n in PROCESS_AND_FILE_ROUTINES if len(n) >= 6 and n != "signal"}
# Statements that always address a file or a unit.
_FILE_STATEMENTS = ("open", "close", "inquire", "rewind", "backspace", "endfile", "flush", "wait")
_IO_STATEMENTS = ("read", "write")
# Units gfortran preconnects to the standard output streams (OPEN, which could reconnect them,
# is refused): standard output (6) and standard error (0). A driver reports on them as with PRINT.
_PRECONNECTED = {"read": ("*",), "write": ("*", "6", "0")}


@dataclass
class _Stmt:
    """One logical statement: its cleaned text and, per character, the (line, column) it came from."""

    text: str
    where: list[tuple[int, int]]

    def pos(self, index: int) -> tuple[int, int]:
        if not self.where:
            return (1, 1)
        return self.where[min(max(index, 0), len(self.where) - 1)]

    @property
    def first_line(self) -> int:
        return self.where[0][0] if self.where else 1

    @property
    def last_line(self) -> int:
        return self.where[-1][0] if self.where else 1


@dataclass
class ProgramUnit:
    """A top-level program unit: ``kind`` (subroutine, function, module, program...), its name
    and its line range in the original file (inclusive)."""

    kind: str
    name: str
    first_line: int
    last_line: int

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}".strip()


@dataclass
class ExcludedUnit:
    """A program unit refused because of the forbidden statements in ``diagnostics``."""

    unit: ProgramUnit
    diagnostics: list[Diagnostic]

    def reason(self) -> str:
        first = self.diagnostics[0]
        more = f" (and {len(self.diagnostics) - 1} more)" if len(self.diagnostics) > 1 else ""
        return (
            f"{self.unit.label} (lines {self.unit.first_line}-{self.unit.last_line}) was "
            f"excluded: line {first.line}, column {first.column}: {first.message}{more}"
        )


@dataclass
class ScanResult:
    """``source`` with every excluded unit's lines blanked, and what was excluded and why."""

    source: str
    excluded: list[ExcludedUnit] = field(default_factory=list)
    units: list[ProgramUnit] = field(default_factory=list)


def check_forbidden(
    source: str, *, fixed_form: bool = False, allowed_includes: Collection[str] = ()
) -> None:
    """Raise :class:`ForbiddenStatementError` listing every forbidden statement in ``source``.

    ``fixed_form`` selects the fixed-form rules (comment letters in column 1, continuation in
    column 6, text in columns 7-72, blanks insignificant). Returns ``None`` when the source is clean.
    """
    found = find_forbidden(source, fixed_form=fixed_form, allowed_includes=allowed_includes)
    if found:
        raise _refusal(found)


def _refusal(found: list[Diagnostic], prefix: str = "") -> ForbiddenStatementError:
    first = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return ForbiddenStatementError(
        f"{prefix}line {first.line}, column {first.column}: {first.message}{more}", found
    )


def scan_units(
    source: str, *, fixed_form: bool = False, allowed_includes: Collection[str] = ()
) -> ScanResult:
    """Exclude each program unit holding a forbidden statement; refuse the file if nothing is left.

    Raises :class:`ForbiddenStatementError` when something forbidden lies outside every unit,
    or when every unit is excluded. Otherwise the result's ``source`` is what may be parsed.
    """
    lines = source.splitlines()
    statements = _statements(lines, fixed_form)
    found = _find(source, lines, statements, allowed_includes, fixed_form=fixed_form)
    units = _units(statements, len(lines))
    if not found:
        return ScanResult(source, [], units)
    by_unit: dict[int, list[Diagnostic]] = {}
    for d in found:
        owner = next(
            (i for i, u in enumerate(units) if u.first_line <= d.line <= u.last_line), None
        )
        if owner is None:
            raise _refusal(found, "outside any program unit: ")
        by_unit.setdefault(owner, []).append(d)
    # A unit sharing a line with an excluded one (``end subroutine a; subroutine b``) goes too.
    changed = True
    while changed:
        changed = False
        for i, u in enumerate(units):
            if i in by_unit:
                continue
            for j in list(by_unit):
                v = units[j]
                if u.first_line <= v.last_line and v.first_line <= u.last_line:
                    by_unit[i] = [
                        Diagnostic(
                            u.first_line, 1, f"forbidden: shares a line with {v.label}, excluded"
                        )
                    ]
                    changed = True
                    break
    if len(by_unit) == len(units):
        raise _refusal(found)
    excluded = [ExcludedUnit(units[i], ds) for i, ds in sorted(by_unit.items())]
    blank = {n for e in excluded for n in range(e.unit.first_line, e.unit.last_line + 1)}
    kept = ["" if n in blank else text for n, text in enumerate(lines, start=1)]
    return ScanResult("\n".join(kept) + ("\n" if source.endswith("\n") else ""), excluded, units)


def find_forbidden(
    source: str, *, fixed_form: bool = False, allowed_includes: Collection[str] = ()
) -> list[Diagnostic]:
    """Every forbidden statement as a Diagnostic, in source order (empty when the source is clean)."""
    lines = source.splitlines()
    statements = _statements(lines, fixed_form)
    return _find(source, lines, statements, allowed_includes, fixed_form=fixed_form)


def _statements(lines: list[str], fixed_form: bool) -> list[_Stmt]:
    return _fixed_statements(lines) if fixed_form else _free_statements(lines)


def _find(
    source: str,
    lines: list[str],
    statements: list[_Stmt],
    allowed_includes: Collection[str],
    *,
    fixed_form: bool,
) -> list[Diagnostic]:
    allowed = {name.strip() for name in allowed_includes}
    diagnostics: list[Diagnostic] = list(_directive_diagnostics(source, allowed))
    strings = _character_variables(statements)
    for stmt in statements:
        diagnostics.extend(
            _check_statement(stmt, lines, allowed, fixed_form=fixed_form, strings=strings)
        )
    if not diagnostics and _has_directives(source):
        # A macro can assemble a forbidden call (#define RUN call system): scan what the
        # preprocessor makes of the text too, at the original line numbers.
        expanded = _preprocessed(source)
        if expanded is not None:
            exp_lines = expanded.splitlines()
            statements = _fixed_statements(exp_lines) if fixed_form else _free_statements(exp_lines)
            for stmt in statements:
                for d in _check_statement(
                    stmt, exp_lines, allowed, fixed_form=fixed_form, strings=strings
                ):
                    diagnostics.append(
                        Diagnostic(d.line, d.column, d.message + " (after preprocessing)")
                    )
    diagnostics.sort(key=lambda d: (d.line, d.column))
    return diagnostics


def _has_directives(source: str) -> bool:
    return any(ln.lstrip().startswith(("#", "??=", "%:")) for ln in source.splitlines())


# --------------------------------------------------------------------------------------------
# Preprocessor directives that read files


_READING_DIRECTIVE = re.compile(
    r"(?:#|\?\?=|%:)[ \t]*(include_next|include|import|embed)\b[ \t]*"
    r"(?:\"([^\"\n]*)\"|<([^>\n]*)>)?",
    re.I,
)
_OTHER_READING = re.compile(r"__has_include(?:_next)?\b|\bpragma[ \t]+gcc[ \t]+dependency\b", re.I)


_SPLICE_OR_COMMENT = ("\\\n", "\\\r\n", "??/\n", "/*")
# Without splices or comments a file-reading form must show one of these words whole.
_MIGHT_READ = re.compile(r"include|import|embed|__has_include|dependency", re.I)


def _cpp_view(source: str, *, strip_comments: bool) -> tuple[str, list[tuple[int, int]]]:
    """The text as cpp reads it for directives: backslash-newlines (also ``??/`` + newline)
    spliced and (``strip_comments``) ``/* */`` comments removed; with the original (line,
    column) of each character."""
    out: list[str] = []
    where: list[tuple[int, int]] = []
    line, col = 1, 1
    i, n = 0, len(source)
    in_comment = False
    while i < n:
        c = source[i]
        splice = 0
        if c == "\\" and source[i + 1 : i + 2] == "\n":
            splice = 2
        elif c == "\\" and source[i + 1 : i + 3] == "\r\n":
            splice = 3
        elif source.startswith("??/\n", i):
            splice = 4
        if splice:
            i += splice
            line, col = line + 1, 1
            continue
        if strip_comments and not in_comment and source.startswith("/*", i):
            in_comment = True
            i += 2
            col += 2
            continue
        if in_comment:
            if source.startswith("*/", i):
                in_comment = False
                i += 2
                col += 2
                continue
            if c == "\n":
                # A comment is one blank to cpp, newlines inside it too: ``#/*\n*/include``.
                line, col = line + 1, 1
            else:
                col += 1
            i += 1
            continue
        out.append(c)
        where.append((line, col))
        if c == "\n":
            line, col = line + 1, 1
        else:
            col += 1
        i += 1
    return "".join(out), where


def _directive_diagnostics(source: str, allowed: set[str]) -> list[Diagnostic]:
    # Both views: with comments removed (``#/**/include``) and without (a ``/*`` inside a
    # Fortran string must not hide a directive that cpp, reading the quotes, would obey).
    found: dict[tuple[int, int], Diagnostic] = {}
    if not any(m in source for m in _SPLICE_OR_COMMENT) and not _MIGHT_READ.search(source):
        return []  # the common case: no directive word anywhere, whatever the splicing
    for strip in (True, False):
        text, where = _cpp_view(source, strip_comments=strip)
        for m in _READING_DIRECTIVE.finditer(text):
            target = m.group(2) if m.group(2) is not None else m.group(3)
            if target is not None and target.strip() in allowed:
                continue
            line, column = where[m.start()] if m.start() < len(where) else (1, 1)
            named = f" {target!r}" if target is not None else ""
            found.setdefault(
                (line, column),
                Diagnostic(
                    line,
                    column,
                    f"forbidden: #{m.group(1).lower()}{named} reads a file that was not "
                    "uploaded with the source",
                ),
            )
        for m in _OTHER_READING.finditer(text):
            line, column = where[m.start()] if m.start() < len(where) else (1, 1)
            found.setdefault(
                (line, column),
                Diagnostic(line, column, f"forbidden: {m.group(0)} reads or probes a file"),
            )
    return list(found.values())


_LINE_MARKER = re.compile(r'^#\s*(?:line\s+)?(\d+)(?:\s+"[^"]*")?')


def _preprocessed(source: str) -> str | None:
    """``cpp -traditional-cpp`` output re-aligned to the original line numbers (None if no cpp).

    Runs in the sandbox; file-reading directives were refused before this point, and the
    sandbox shows cpp nothing but an empty work directory anyway.
    """
    import shutil

    if shutil.which("cpp") is None:
        return None
    from kernels.engine.sandbox import run_sandboxed, sandbox_tempdir

    with sandbox_tempdir(prefix="cpp-scan-") as tmp:
        result = run_sandboxed(
            ["cpp", "-traditional-cpp", "-undef", "-nostdinc", "-w", "-"],
            cwd=tmp,
            timeout_s=20,
            memory_mb=512,
            stdin=source,
        )
    if not result.ok:
        return None
    placed: dict[int, list[str]] = {}
    line = 1
    for text in result.stdout.splitlines():
        marker = _LINE_MARKER.match(text)
        if marker:
            line = int(marker.group(1))
            continue
        placed.setdefault(line, []).append(text)
        line += 1
    if not placed:
        return ""
    out: list[str] = []
    for n in range(1, max(placed) + 1):
        # Several output lines on one source line (rare) are joined with ';' separators.
        out.append(" ; ".join(t for t in placed.get(n, []) if t.strip()) if n in placed else "")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Program units


_PREFIX = r"(?:(?:pure|impure|elemental|recursive|non_recursive|module)\s*)*"
_TYPE = (
    r"(?:(?:integer|real|complex|logical|character|doubleprecision|double\s+precision|"
    r"doublecomplex|double\s+complex|type\s*\(\s*\w+\s*\))\s*(?:\*\s*\d+|\([^()]*\))?\s*)?"
)
_SUBPROGRAM = re.compile(
    rf"^{_PREFIX}{_TYPE}{_PREFIX}(subroutine|function)\s*([a-z]\w*)\s*(?:\(|$|bind|result)"
)
_CONTAINER = re.compile(r"^(program|module|submodule\s*\([^()]*\)|block\s*data)\s*([a-z]\w*)?\s*$")
_END = re.compile(
    r"^end\s*(?:(program|module|submodule|subroutine|function|block\s*data)\s*\w*)?\s*$"
)


def logical_statements(lines: list[str], *, fixed_form: bool = False) -> list[_Stmt]:
    """The file's logical statements (continuations joined), each with the lines it spans."""
    return _statements(lines, fixed_form)


def program_units(lines: list[str], *, fixed_form: bool = False) -> list[ProgramUnit]:
    """The top-level program units of the file, with their line ranges (best effort, textual)."""
    return _units(_statements(lines, fixed_form), len(lines))


def _units(statements: list[_Stmt], line_count: int) -> list[ProgramUnit]:
    units: list[ProgramUnit] = []
    depth = 0
    current: ProgramUnit | None = None
    for stmt in statements:
        low = stmt.text.strip().lower()
        low = re.sub(r"^\d+\s*", "", low)  # statement label
        if not low:
            continue
        start = _unit_start(low)
        if start is not None:
            if depth == 0:
                current = ProgramUnit(start[0], start[1], stmt.first_line, stmt.last_line)
            depth += 1
            continue
        if _END.match(low):
            if depth == 0:
                continue
            depth -= 1
            if depth == 0 and current is not None:
                current.last_line = stmt.last_line
                units.append(current)
                current = None
            continue
        if depth == 0:
            # Statements before any PROGRAM/SUBROUTINE line: a main program without its header.
            current = ProgramUnit("program", "(main)", stmt.first_line, stmt.last_line)
            depth = 1
    if current is not None:  # unterminated: it runs to the end of the file
        current.last_line = line_count
        units.append(current)
    return units


def _unit_start(low: str) -> tuple[str, str] | None:
    if "=" in low.split("(", 1)[0]:
        return None  # an assignment (``function_count = 1``), not a header
    m = _SUBPROGRAM.match(low)
    if m:
        return m.group(1), m.group(2)
    if low.startswith(("module procedure", "moduleprocedure")):
        return None
    m = _CONTAINER.match(low)
    if m:
        kind = re.sub(r"\s+", " ", m.group(1).split("(")[0]).strip()
        return kind, m.group(2) or ""
    return None


# --------------------------------------------------------------------------------------------
# Logical statements


def _free_statements(lines: list[str]) -> list[_Stmt]:
    statements: list[_Stmt] = []
    text: list[str] = []
    where: list[tuple[int, int]] = []
    quote: str | None = None  # open string delimiter carried across an '&' continuation
    continuing = False
    for number, raw in enumerate(lines, start=1):
        if raw.lstrip().startswith("#"):
            continue
        col = 0
        if continuing and (raw.strip() == "" or raw.lstrip().startswith("!")):
            continue  # comment and blank lines between continuation lines belong to no statement
        if continuing:
            # A continuation line may start with '&': the statement resumes right after it.
            m = re.match(r"\s*&", raw)
            if m:
                col = m.end()
            elif quote is None:
                col = len(raw) - len(raw.lstrip())
        elif raw.strip() == "" or raw.lstrip().startswith("!"):
            continue
        continuing = False
        chars, cols = [], []
        i = col
        while i < len(raw):
            c = raw[i]
            if quote:
                if c == quote:
                    if i + 1 < len(raw) and raw[i + 1] == quote:  # doubled quote is a literal quote
                        chars.append(" ")
                        cols.append(i + 1)
                        i += 2
                        continue
                    quote = None
                    chars.append(c)
                    cols.append(i + 1)
                elif c == "&" and raw[i + 1 :].strip() == "":
                    continuing = True
                    break
                else:
                    chars.append(" ")  # blank string contents: they are data, not code
                    cols.append(i + 1)
            elif c in "'\"":
                quote = c
                chars.append(c)
                cols.append(i + 1)
            elif c == "!":
                break
            elif c == "&" and raw[i + 1 :].split("!", 1)[0].strip() == "":
                continuing = True
                break
            elif c == ";":
                text.extend(chars)
                where.extend((number, k) for k in cols)
                statements.append(_Stmt("".join(text), where))
                text, where, chars, cols = [], [], [], []
            else:
                chars.append(c)
                cols.append(i + 1)
            i += 1
        text.extend(chars)
        where.extend((number, k) for k in cols)
        if not continuing:
            quote = None
            statements.append(_Stmt("".join(text), where))
            text, where = [], []
    if text:
        statements.append(_Stmt("".join(text), where))
    return statements


def _fixed_statements(lines: list[str]) -> list[_Stmt]:
    statements: list[_Stmt] = []
    text: list[str] = []
    where: list[tuple[int, int]] = []
    quote: str | None = None
    for number, raw in enumerate(lines, start=1):
        if raw[:1] in ("c", "C", "*", "!", "d", "D") or raw.strip() == "" or raw.startswith("#"):
            continue
        if raw.lstrip().startswith("!"):
            continue
        raw = raw.expandtabs(6)[:72]
        is_continuation = len(raw) > 5 and raw[5] not in (" ", "0")
        if not is_continuation:
            if text:
                statements.append(_Stmt("".join(text), where))
            text, where, quote = [], [], None
        # Columns 1-5 hold the label and column 6 the continuation mark: never code.
        i = 6
        while i < len(raw):
            c = raw[i]
            if quote:
                if c == quote:
                    if i + 1 < len(raw) and raw[i + 1] == quote:
                        text.append(" ")
                        where.append((number, i + 1))
                        i += 2
                        continue
                    quote = None
                    text.append(c)
                else:
                    text.append(" ")
                where.append((number, i + 1))
            elif c in "'\"":
                quote = c
                text.append(c)
                where.append((number, i + 1))
            elif c == "!":
                break
            elif c == ";":
                statements.append(_Stmt("".join(text), where))
                text, where = [], []
            elif c in " \t":
                pass  # blanks are insignificant in fixed form
            else:
                text.append(c)
                where.append((number, i + 1))
            i += 1
    if text:
        statements.append(_Stmt("".join(text), where))
    return statements


# --------------------------------------------------------------------------------------------
# Matching


def _character_variables(statements: list[_Stmt]) -> set[str]:
    """Names declared CHARACTER somewhere in the file and INTEGER nowhere (internal files)."""
    declared: dict[str, set[str]] = {"character": set(), "integer": set()}
    for stmt in statements:
        low = stmt.text.lower().strip()
        for kind in declared:
            m = re.match(rf"{kind}\b(?:\s*\*\s*\(?[\w*:]+\)?|\s*\([^)]*\))?(.*)$", low)
            if m is None:
                continue
            names = m.group(1).split("::", 1)[-1]
            for item in _split_top(names):
                name = re.match(r"\s*([a-z_]\w*)", item)
                if name:
                    declared[kind].add(name.group(1))
    return declared["character"] - declared["integer"]


def _check_statement(
    stmt: _Stmt,
    lines: list[str],
    allowed: set[str],
    *,
    fixed_form: bool,
    strings: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    low = stmt.text.lower()
    sep = r"\s*" if not fixed_form else ""

    def hit(index: int, message: str) -> None:
        line, column = stmt.pos(index)
        out.append(Diagnostic(line, column, f"forbidden: {message}"))

    call_gap = "" if fixed_form else r"\s+"
    head = _statement_start(low)
    rest = low[head:]
    # ``flush(6)`` after writing a table to standard output: the stream, not a file.
    flushes_a_stream = _is_statement(rest, "flush", fixed_form) and _flush_unit(rest) in ("6", "0")
    declares = re.match(rf"(?:external|intrinsic|procedure{sep}\([^)]*\))", rest)
    for name in PROCESS_AND_FILE_ROUTINES:
        seen: set[int] = set()

        def refuse(at: int, name: str = name, seen: set[int] = seen) -> None:
            if at not in seen:
                seen.add(at)
                hit(at, f"{name} is not allowed in a kernel")

        if name not in low:
            continue
        bare = rf"(?<![a-z0-9_%]){name}(?![a-z0-9_])"
        for m in re.finditer(bare, low):
            if flushes_a_stream and m.start() == head:
                continue
            after = low[m.end() :].lstrip()
            if (
                name in _ANY_MENTION
                or after.startswith("(")  # function form: st = kill(pid, 9)
                or declares  # external kill / intrinsic stat / procedure(...) :: p
                or re.search(r"=>\s*$", low[: m.start()])  # p => kill
            ):
                if (
                    after.startswith("=")
                    and not after.startswith("==")
                    and name not in _ANY_MENTION
                ):
                    continue  # a keyword argument or an assignment: allocate(x, stat=i)
                refuse(m.start())
        for m in re.finditer(rf"\bcall{call_gap}{name}(?![a-z0-9_])", low):
            if m.end() - len(name) not in seen:
                refuse(m.start())
    for m in re.finditer(rf"\bbind{sep}\({sep}c\b", low):
        hit(m.start(), "bind(c) would let the kernel call arbitrary C functions")

    # Statement keywords: strip a label, a construct name and a one-line IF (cond) prefix.
    if re.match(r"include" + ("'" if fixed_form else r"\s*['\"]"), rest):
        target = _include_target(lines, stmt.pos(head))
        if target is None or target not in allowed:
            named = f" {target!r}" if target is not None else ""
            hit(head, f"include{named} reads a file that was not uploaded with the source")
    for kw in _FILE_STATEMENTS:
        if kw == "flush" and flushes_a_stream:
            continue
        if _is_statement(rest, kw, fixed_form):
            hit(head, f"{kw.upper()} statement (file access) is not allowed")
    for kw in _IO_STATEMENTS:
        if _is_statement(rest, kw, fixed_form):
            unit = _io_unit(rest[len(kw) :].lstrip())
            internal = unit is not None and re.match(r"[a-z_]\w*", unit)
            if internal and internal.group(0) in strings:
                continue  # an internal file: a CHARACTER variable, not a unit
            if unit is not None and unit not in _PRECONNECTED[kw]:
                streams = ", ".join(_PRECONNECTED[kw])
                hit(
                    head,
                    f"{kw.upper()} to unit {unit!s} (file I/O) is not allowed; only the "
                    f"preconnected units ({streams}) are",
                )
    return out


def _include_target(lines: list[str], pos: tuple[int, int]) -> str | None:
    """The file name of an ``include 'name'`` line (string contents are blanked in statements)."""
    line, column = pos
    if not 1 <= line <= len(lines):
        return None
    m = re.match(r"\s*include\s*(['\"])(.*?)\1", lines[line - 1][column - 1 :], re.I)
    return m.group(2).strip() if m else None


def _statement_start(low: str) -> int:
    """Index where the executable keyword starts, after label, construct name and IF (...)."""
    i = 0
    while True:
        m = re.match(r"\s*\d+\s*", low[i:])  # statement label
        if m and m.end() and low[i : i + m.end()].strip().isdigit():
            i += m.end()
            continue
        m = re.match(r"\s*[a-z_]\w*\s*:(?!:)", low[i:])  # construct name
        if m:
            i += m.end()
            continue
        m = re.match(r"\s*if\s*\(", low[i:])
        if m:
            close = _matching_paren(low, i + m.end() - 1)
            if close is not None:
                after = low[close + 1 :].lstrip()
                if after and not after.startswith("then") and not after.startswith("="):
                    i = close + 1
                    continue
        break
    while i < len(low) and low[i].isspace():
        i += 1
    return i


def _is_statement(rest: str, kw: str, fixed_form: bool) -> bool:
    """``rest`` is a ``kw`` I/O statement, not an assignment to a variable named like one."""
    if not rest.startswith(kw):
        return False
    after = rest[len(kw) :]
    if after.lstrip().startswith("("):
        open_at = len(kw) + (len(after) - len(after.lstrip()))
        close = _matching_paren(rest, open_at)
        if close is None:
            return True
        tail = rest[close + 1 :].lstrip()
        return not (tail.startswith("=") and not tail.startswith("=="))  # write(i) = 3
    if fixed_form:
        # Blanks are gone: ``rewind5`` / ``readfmt,x`` / ``printx`` vs ``readx = 1``.
        return "=" not in after or "," in after.split("=", 1)[0]
    # Free form: ``rewind 5`` / ``read *, x`` need a blank or '*' after the keyword.
    if after[:1] in (" ", "\t", "*"):
        return not re.match(r"\s*=(?!=)", after)
    return False


def _io_unit(after_kw: str) -> str | None:
    """The unit of a READ/WRITE control list: '*', a unit text, or None for ``read *, x`` / ``read 10, x``."""
    if not after_kw.startswith("("):
        return None  # READ fmt, list and READ *, list read standard input
    close = _matching_paren(after_kw, 0)
    inner = after_kw[1:close] if close is not None else after_kw[1:]
    first = _split_top(inner)[0].strip() if inner.strip() else ""
    for item in _split_top(inner):
        m = re.match(r"\s*unit\s*=\s*(.*)$", item, re.S)
        if m:
            return m.group(1).strip()
    return first


def _flush_unit(rest: str) -> str | None:
    """The unit of a FLUSH statement (``flush 6``, ``flush(6)``, ``flush(unit=6, iostat=i)``)."""
    after = rest[len("flush") :].lstrip()
    if not after.startswith("("):
        return after.strip() or None
    close = _matching_paren(after, 0)
    if close is None or after[close + 1 :].strip():
        return None
    items = _split_top(after[1:close])
    for item in items:
        m = re.match(r"\s*unit\s*=\s*(.*)$", item, re.S)
        if m:
            return m.group(1).strip()
    first = items[0].strip()
    return None if "=" in first else first


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for c in text:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _matching_paren(text: str, open_index: int) -> int | None:
    depth = 0
    for k in range(open_index, len(text)):
        if text[k] == "(":
            depth += 1
        elif text[k] == ")":
            depth -= 1
            if depth == 0:
                return k
    return None
