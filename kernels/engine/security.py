"""Refuse Fortran that reaches outside the kernel, before anything parses or compiles it.

The pipeline calls :func:`check_forbidden` first: user source is later compiled by gfortran and
run, and even inside the sandbox a kernel has no business spawning shells, touching files or
calling C. Checking the text (rather than the parse tree) means a statement fparser would reject,
or one that only appears in a preprocessor branch, is still refused.

The scan works on *logical statements*: comments are removed, string literals are blanked (so
``print *, 'open the file'`` is harmless), continuation lines are joined (so ``CALL &`` /
``& SYSTEM(...)`` is caught) and ``;`` separates statements. In fixed form blanks are not
significant, so they are dropped before matching (``CALL SYS TEM('ls')`` is a valid call there).
Every hit keeps the line and column of its first character in the original file.

Refused:
- ``execute_command_line``, ``system`` (``call system`` and the ``system()`` function) and the
  GNU file/process intrinsics (``unlink``, ``rename``, ``chdir``, ``kill``, ``getenv``...);
- the file statements ``open``, ``close``, ``inquire``, ``rewind``, ``backspace``, ``endfile``,
  ``flush``, ``wait``;
- ``read`` / ``write`` with a unit other than ``*`` (a numbered unit or an internal file: we
  cannot tell a unit variable from a character variable without types, so both are refused);
  ``read *``, ``read(*, ...)``, ``write(*, ...)`` and ``print`` are allowed;
- ``bind(c)`` and ``include`` / ``#include``: the first lets a kernel call any libc function
  (``popen``), the second reads arbitrary files at compile time and echoes them in errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kernels.engine.report import Diagnostic, ForbiddenStatementError

# GNU extensions and F2008 intrinsics that act on the process, the file system or the
# environment. These are refused wherever they appear as a call (CALL x or x(...) in an expression).
_FORBIDDEN_CALLS = (
    "execute_command_line",
    "system",
    "getenv",
    "get_environment_variable",
    "unlink",
    "rename",
    "chdir",
    "chmod",
    "symlnk",
    "hostnm",
    "getlog",
    "fseek",
    "ftell",
    "fgetc",
    "fputc",
)
# Short names a kernel may well use for its own arrays: only ``CALL name`` is refused.
_FORBIDDEN_SUBROUTINES = (
    "link",
    "kill",
    "stat",
    "lstat",
    "fstat",
    "fget",
    "fput",
    "sleep",
    "getcwd",
)
# Statements that always address a file or a unit.
_FILE_STATEMENTS = ("open", "close", "inquire", "rewind", "backspace", "endfile", "flush", "wait")
_IO_STATEMENTS = ("read", "write")


@dataclass
class _Stmt:
    """One logical statement: its cleaned text and, per character, the (line, column) it came from."""

    text: str
    where: list[tuple[int, int]]

    def pos(self, index: int) -> tuple[int, int]:
        if not self.where:
            return (1, 1)
        return self.where[min(max(index, 0), len(self.where) - 1)]


def check_forbidden(source: str, *, fixed_form: bool = False) -> None:
    """Raise :class:`ForbiddenStatementError` listing every forbidden statement in ``source``.

    ``fixed_form`` selects the fixed-form rules (comment letters in column 1, continuation in
    column 6, text in columns 7-72, blanks insignificant). Returns ``None`` when the source is clean.
    """
    found = find_forbidden(source, fixed_form=fixed_form)
    if found:
        first = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ForbiddenStatementError(
            f"line {first.line}, column {first.column}: {first.message}{more}", found
        )


def find_forbidden(source: str, *, fixed_form: bool = False) -> list[Diagnostic]:
    """Every forbidden statement as a Diagnostic, in source order (empty when the source is clean)."""
    diagnostics: list[Diagnostic] = []
    lines = source.splitlines()
    for number, raw in enumerate(lines, start=1):
        stripped = raw.lstrip()
        # Preprocessor includes read files at compile time; other directives are harmless here.
        if stripped.startswith("#") and re.match(r"#\s*include\b", stripped, re.I):
            diagnostics.append(
                Diagnostic(number, raw.index("#") + 1, "forbidden: #include reads a file")
            )
    statements = _fixed_statements(lines) if fixed_form else _free_statements(lines)
    for stmt in statements:
        diagnostics.extend(_check_statement(stmt, fixed_form=fixed_form))
    if not diagnostics and any(ln.lstrip().startswith("#") for ln in lines):
        # A macro can assemble a forbidden call (#define RUN call system): scan what the
        # preprocessor makes of the text too, at the original line numbers.
        expanded = _preprocessed(source)
        if expanded is not None:
            exp_lines = expanded.splitlines()
            statements = _fixed_statements(exp_lines) if fixed_form else _free_statements(exp_lines)
            for stmt in statements:
                for d in _check_statement(stmt, fixed_form=fixed_form):
                    diagnostics.append(
                        Diagnostic(d.line, d.column, d.message + " (after preprocessing)")
                    )
    diagnostics.sort(key=lambda d: (d.line, d.column))
    return diagnostics


_LINE_MARKER = re.compile(r'^#\s*(?:line\s+)?(\d+)(?:\s+"[^"]*")?')


def _preprocessed(source: str) -> str | None:
    """``cpp -traditional-cpp`` output re-aligned to the original line numbers (None if no cpp).

    Runs in the sandbox; ``#include`` was refused before this point, so cpp reads nothing but
    the text it is given.
    """
    import shutil

    if shutil.which("cpp") is None:
        return None
    from kernels.engine.sandbox import run_sandboxed, sandbox_tempdir

    with sandbox_tempdir(prefix="fsp-cpp-") as tmp:
        result = run_sandboxed(
            ["cpp", "-traditional-cpp", "-undef", "-w", "-"],
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


def _check_statement(stmt: _Stmt, *, fixed_form: bool) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    low = stmt.text.lower()
    sep = r"\s*" if not fixed_form else ""

    def hit(index: int, message: str) -> None:
        line, column = stmt.pos(index)
        out.append(Diagnostic(line, column, f"forbidden: {message}"))

    # Procedure calls anywhere in the statement (CALL x(...), or x(...) inside an expression).
    call_gap = "" if fixed_form else r"\s+"
    for name in _FORBIDDEN_CALLS:
        # Any mention counts, not only a call: ``external system`` + ``call run(system)`` or a
        # procedure pointer ``=> system`` reach the same routine without ``system(``.
        seen: set[int] = set()
        for m in re.finditer(rf"(?<![a-z0-9_%]){name}(?![a-z0-9_])", low):
            seen.add(m.start())
            hit(m.start(), f"{name} is not allowed in a kernel")
        for m in re.finditer(rf"\bcall{call_gap}{name}(?![a-z0-9_])", low):
            if m.end() - len(name) not in seen:
                hit(m.start(), f"{name} is not allowed in a kernel")
    for name in _FORBIDDEN_SUBROUTINES:
        for m in re.finditer(rf"\bcall{call_gap}{name}(?![a-z0-9_])", low):
            hit(m.start(), f"{name} is not allowed in a kernel")
    for m in re.finditer(rf"\bbind{sep}\({sep}c\b", low):
        hit(m.start(), "bind(c) would let the kernel call arbitrary C functions")

    # Statement keywords: strip a label, a construct name and a one-line IF (cond) prefix.
    head = _statement_start(low)
    rest = low[head:]
    if fixed_form:
        if re.match(r"include'", rest):
            hit(head, "include reads a file")
    elif re.match(r"include\s*['\"]", rest):
        hit(head, "include reads a file")
    for kw in _FILE_STATEMENTS:
        if _is_statement(rest, kw, fixed_form):
            hit(head, f"{kw.upper()} statement (file access) is not allowed")
    for kw in _IO_STATEMENTS:
        if _is_statement(rest, kw, fixed_form):
            unit = _io_unit(rest[len(kw) :].lstrip())
            if unit is not None and unit != "*":
                hit(head, f"{kw.upper()} to unit {unit!s} (file I/O) is not allowed; only * is")
    return out


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
