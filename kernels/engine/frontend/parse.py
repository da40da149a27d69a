"""Parse and preprocess: Fortran source text -> fparser2 parse tree, with line-exact diagnostics.

cpp runs only inside the sandbox (``run_sandboxed``); line markers map its output back to the
lines the user wrote.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import PurePath

from kernels.engine import ir, sandbox
from kernels.engine.report import Diagnostic, EngineError, FortranSyntaxError

_PARSER = None
_PARSE_LOCK = threading.Lock()

# fparser's cost grows with a statement's length (its expression matcher re-splits the rest of
# the statement at every operator, and recurses per operand), not with the number of lines; the
# continuation reader is linear. So statements are bounded before fparser sees them: the
# standard's 255 continuation lines, and a length. The parse then has a time budget, checked
# at each statement, so that many long statements cannot hold the parse lock for long.
MAX_CONTINUATION_LINES = 255
MAX_STATEMENT_CHARS = 20_000
_FREE_CONTINUED = re.compile(r"&\s*(?:![^'\"]*)?$")


def _parse_budget_s() -> float:
    return float(os.environ.get("FORTRANSPIRE_PARSE_BUDGET_S", "20"))


_FIXED_SUFFIXES = {".f", ".for", ".f77", ".ftn", ".fpp"}
_CPP_SUFFIXES = {".F", ".F90", ".F95", ".F03", ".F08", ".FOR", ".FPP", ".FTN", ".F77"}


def _parser():
    # Building the f2008 parser class tree costs ~0.3 s: do it once per process.
    global _PARSER
    if _PARSER is None:
        from fparser.two.parser import ParserFactory

        _PARSER = ParserFactory().create(std="f2008")
    return _PARSER


@dataclass
class ParsedFile:
    """Everything the frontend learnt from one file."""

    source: str  # after preprocessing
    fixed_form: bool
    kernels: list[ir.Kernel] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # per kernel name


def is_fixed_form(filename: str) -> bool:
    """The one source-form decision: fixed form for ``.f .for .ftn .f77 .fpp`` (any case), free
    form otherwise, per file and by its name, as gfortran decides it.

    Parsing, the security scan, preprocessing, coverage instrumentation and the gfortran build
    all ask this, so a file is never read in one form and compiled in the other. An included
    file (``include``/``#include``) has no form of its own: it is read in the form of the file
    that includes it, as gfortran and cpp do (its text becomes part of that file). In a project
    mixing both forms, each file is compiled in its own form (:class:`ir.SourcePart`).
    """
    return PurePath(filename).suffix.lower() in _FIXED_SUFFIXES


def needs_preprocessing(filename: str) -> bool:
    return PurePath(filename).suffix in _CPP_SUFFIXES


def has_directives(source: str) -> bool:
    """Whether a source has C preprocessor directives (``#define``, ``#ifdef``...) anywhere."""
    return re.search(r"^\s*#\s*[a-z]", source, re.M | re.I) is not None


def preprocess(
    source: str,
    *,
    filename: str = "input.F90",
    defines: dict[str, str | None] | None = None,
    fixed: bool = False,
) -> str:
    """Run the C preprocessor (as gfortran -cpp does) and return the expanded text.

    cpp reads only ``source`` from stdin, in the sandbox, with no include path: files named by
    ``#include`` are inlined beforehand from the project's own files (see
    :mod:`kernels.engine.project`), marked with line markers so that every output line still
    goes back to its line in the user's file.
    """
    argv = None
    # Line markers are kept (no -P) so that every output line goes back to its source line:
    # diagnostics then point at the file the user wrote, not at the expanded text.
    if shutil.which("cpp"):
        argv = ["cpp", "-traditional-cpp", "-undef", "-nostdinc", "-w"]
    elif shutil.which("gfortran"):
        argv = ["gfortran", "-E", "-cpp", "-nostdinc", "-x", "f95-cpp-input"]
    if argv is None:
        raise EngineError("no C preprocessor (cpp or gfortran) is installed")
    for name, value in (defines or {}).items():
        argv.append(f"-D{name}" if value is None else f"-D{name}={value}")
    argv.append("-")
    with sandbox.sandbox_tempdir() as tmp:
        res = sandbox.run_sandboxed(
            argv, cwd=tmp, timeout_s=20, memory_mb=512, stdin=source, isolate_network=True
        )
    if res.timed_out or res.returncode != 0:
        detail = res.stderr.strip().replace("<stdin>", filename)[:500]
        m = re.search(r":(\d+):(?:(\d+):)?\s*(?:error:)?\s*(.*)", detail)
        line, column, message = (
            (int(m.group(1)), int(m.group(2) or 1), m.group(3).strip())
            if m
            else (1, 1, "C preprocessor failed")
        )
        raise FortranSyntaxError(
            f"preprocessing {filename} failed: {detail}",
            [Diagnostic(line, column, f"C preprocessor: {message}")],
        )
    return realign_lines(res.stdout, fixed=fixed)


_MARKER = re.compile(r'^#\s*(\d+)\s+"([^"]*)"')


def realign_lines(
    text: str, *, fixed: bool = False, main: tuple[str, ...] = ("<stdin>", "-")
) -> str:
    """Drop line markers, placing each line of the user's file at its original number.

    Lines that came from another file (an inlined ``#include``/``include``) are joined into the
    line of the directive that included them, as one line of ``;``-separated statements (free
    form), so that the lines after it keep their numbers. Fixed-form lines cannot grow past
    column 72: there the included statements are inserted as lines of their own.
    """
    lines: list[str] = []
    in_main = True
    next_line = 1
    include_at = 0
    included: list[str] = []

    def place(at: int, raw: str) -> None:
        while len(lines) < at - 1:
            lines.append("")
        if len(lines) >= at:
            lines.append(raw)  # a macro expanding to several lines: keep them in order
        else:
            lines.append(raw)

    def flush() -> None:
        if not included:
            return
        if fixed:
            for raw in included:
                place(include_at, raw)
        else:
            joined = "; ".join(_statements(included))
            if joined:
                place(include_at, joined)
        included.clear()

    for raw in text.splitlines():
        m = _MARKER.match(raw)
        if m:
            name = m.group(2)
            if name in main:
                flush()
                in_main = True
                next_line = int(m.group(1))
            elif not name.startswith("<"):
                if in_main:
                    include_at = next_line
                in_main = False
            continue
        if in_main:
            place(next_line, raw)
            next_line += 1
        elif raw.strip():
            included.append(raw)
    flush()
    return "\n".join(lines) + "\n"


def check_statement_bounds(source: str, *, fixed: bool) -> None:
    """Refuse (line, reason) a statement with too many continuation lines or too long."""
    start = count = length = 0
    for number, line in enumerate(source.splitlines(), start=1):
        if fixed:
            if line[:1] in ("c", "C", "*", "!") or not line.strip():
                continue
            if len(line) > 5 and line[5] not in " 0":
                count += 1
            else:
                start, count, length = number, 0, 0
        else:
            if not line.strip() or line.lstrip().startswith("!"):
                continue  # comment lines may sit between continued lines
            if count == 0:
                start, length = number, 0
        length += len(line)
        if count > MAX_CONTINUATION_LINES:
            raise FortranSyntaxError(
                f"the statement starting at line {start} has more than "
                f"{MAX_CONTINUATION_LINES} continuation lines (the Fortran standard's limit)",
                [Diagnostic(number, 1, "too many continuation lines")],
            )
        if length > MAX_STATEMENT_CHARS:
            raise FortranSyntaxError(
                f"the statement starting at line {start} is longer than "
                f"{MAX_STATEMENT_CHARS} characters; split it",
                [Diagnostic(number, 1, "statement too long")],
            )
        if not fixed:
            count = count + 1 if _FREE_CONTINUED.search(line) else 0


def _with_deadline(reader, budget_s: float) -> None:
    """Make the reader stop the parse once ``budget_s`` is spent (checked per statement)."""
    deadline = time.monotonic() + budget_s
    get_item = reader.get_item

    def get_item_in_time(*args, **kwargs):
        if time.monotonic() > deadline:
            line = max(1, int(getattr(reader, "linecount", 1) or 1))
            raise FortranSyntaxError(
                f"parsing took longer than {budget_s:g} s (stopped at line {line}); "
                "send only the kernels you want ported",
                [Diagnostic(line, 1, "parse time budget exceeded")],
            )
        return get_item(*args, **kwargs)

    reader.get_item = get_item_in_time


def _statements(lines: list[str]) -> list[str]:
    """Free-form lines as whole statements: comments dropped, continuation lines joined."""
    out: list[str] = []
    pending = ""
    for raw in lines:
        code = strip_comment(raw).strip()
        if not code:
            continue
        if pending:
            code = pending + " " + code.lstrip("&").lstrip()
            pending = ""
        if code.endswith("&"):
            pending = code[:-1].rstrip()
            continue
        out.append(code)
    if pending:
        out.append(pending)
    return out


def strip_comment(line: str) -> str:
    """The statement part of a source line (a trailing ``!`` comment removed, quotes respected)."""
    quote = ""
    for k, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "!":
            return line[:k]
    return line


def _parse_tree(source: str, fixed: bool):
    from fparser.common.readfortran import FortranStringReader
    from fparser.common.sourceinfo import FortranFormat
    from fparser.two.symbol_table import SYMBOL_TABLES
    from fparser.two.utils import FparserException

    check_statement_bounds(source, fixed=fixed)
    reader = FortranStringReader(source, ignore_comments=False)
    reader.set_format(FortranFormat(not fixed, False))
    # fparser's reader calls sys.exit(1) on some errors (a mismatched END name, say): in a
    # server that would end the worker thread. Report them as syntax errors instead.
    reader.exit_on_error = False
    reader.error = lambda message, item=None: _reader_error(message, item, reader)
    _with_deadline(reader, _parse_budget_s())
    try:
        # fparser keeps module-level state (symbol tables): one parse at a time per process,
        # since the web service translates from several threads. The tables are cleared
        # first, so they neither grow for the life of the server nor keep a scope left open by
        # a parse that failed half-way.
        with _PARSE_LOCK:
            SYMBOL_TABLES.clear()
            tree = _parser()(reader)
    except FparserException as exc:
        raise _syntax_error(str(exc), source) from None
    except FortranSyntaxError:
        raise
    except Exception as exc:  # noqa: BLE001 - fparser fails on some bad input with its own bugs
        # (assertions, index errors...): whatever it raises, the source did not parse.
        line = max(1, int(getattr(reader, "linecount", 1) or 1))
        detail = str(exc) or type(exc).__name__
        raise FortranSyntaxError(
            f"could not parse the source near line {line}: {detail}",
            [Diagnostic(line, 1, detail)],
        ) from None
    if tree is None or not tree.children:
        raise FortranSyntaxError("no Fortran program unit found", [Diagnostic(1, 1, "empty")])
    return tree


def _reader_error(message: str, item, reader) -> None:
    if item is not None and getattr(item, "span", None):
        line = item.span[0]
    else:  # fparser passes no item for some errors: the line it was reading is the best guess
        line = max(1, int(getattr(reader, "linecount", 1) or 1))
    message = message.removesuffix(" Ignoring.")  # fparser's wording; we do not ignore it
    raise FortranSyntaxError(
        f"syntax error at line {line}: {message}", [Diagnostic(line, 1, message)]
    )


def _syntax_error(message: str, source: str) -> FortranSyntaxError:
    line = 1
    m = re.search(r"at line (\d+)", message)
    if m:
        line = int(m.group(1))
    text = ""
    m2 = re.search(r">>>(.*)", message)
    if m2:
        text = m2.group(1).strip()
    lines = source.splitlines()
    column = 1
    if 1 <= line <= len(lines):
        src_line = lines[line - 1]
        column = len(src_line) - len(src_line.lstrip()) + 1
        column = _guess_column(src_line) or column
    msg = f"syntax error at line {line}"
    if text:
        msg += f": {text}"
    return FortranSyntaxError(msg, [Diagnostic(line, column, msg)])


def _guess_column(line: str) -> int | None:
    """Best-effort column of the fault: an unbalanced parenthesis or a dangling operator."""
    code = line.split("!")[0].rstrip()
    depth = 0
    first_open = None
    for k, ch in enumerate(code):
        if ch == "(":
            if depth == 0:
                first_open = k
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return k + 1
    if depth > 0 and first_open is not None:
        return first_open + 1
    if code and code[-1] in "+-*/=,":
        return len(code)
    return None


# --------------------------------------------------------------------------------------------
