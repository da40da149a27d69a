"""Loop coverage of the reference run: which DO loops of a kernel ran in the gfortran build.

A port that matches gfortran proves nothing about a loop that never ran: with ``x_min > x_max``
every output "matches". So the reference records, per DO loop of the kernel, how many times its
body was entered, and ``verified`` requires every one of them to have run.

Why counters rather than gcov: gfortran attributes the loop-header blocks of a DO to the first
line of its body, so gcov shows a count of 1 on the body of a loop that ran zero times (checked
with gfortran 12 at -O0 and -O2). Instead :func:`instrument` inserts ``call fsp_cov_hit(k)``
right after each DO statement of the kernel (after its continuation lines), the counters live in
a small module compiled with the wrapper (:func:`support_source`), and the wrapper calls
``fsp_cov_dump`` after the kernel, which writes one count per line to :data:`COVERAGE_FILE` in
the sandbox's work dir. An external CALL needs no declaration in the user's code, and a CALL is
legal anywhere a DO body statement is, except inside DO CONCURRENT and in PURE/ELEMENTAL
procedures, which may only call PURE procedures: there the kernel's unit gets ``use
fsp_cov_pure, only: fsp_cov_hit`` right after its header, an interface that declares the same
routine PURE (compiled from its own file, :func:`pure_interface_source`, so gfortran never sees
the interface and the counting body together). A DO CONCURRENT loop counts its *active*
iterations: the counter sits after the header, inside the mask. The inserted lines are kept in
a line map, so gfortran's runtime messages (``At line N``) still point at the user's lines.

``lines``/``lines_run`` count the kernel's executable statement lines and those whose enclosing
DO loops all ran (IF branches are not tracked, so this is line coverage at loop granularity).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from kernels.engine import ir
from kernels.engine.frontend.parse import strip_comment

COVERAGE_FILE = "fsp_coverage.txt"
SUPPORT_FILE = "fsp_coverage.f90"
PURE_INTERFACE_FILE = "fsp_coverage_pure.f90"
PURE_INTERFACE_MODULE = "fsp_cov_pure"
HIT = "fsp_cov_hit"
DUMP = "fsp_cov_dump"

# A DO statement: optional statement label (fixed form columns 1-5) or construct name, then DO.
_DO_STMT = re.compile(r"^\s*(?:\d+\s+)?(?:[a-z_]\w*\s*:\s*)?do\b", re.IGNORECASE)
_DO_CONCURRENT = re.compile(r"\bdo\s*concurrent\b", re.IGNORECASE)
# A procedure whose body may only call PURE procedures (prefixes before SUBROUTINE/FUNCTION).
_PURE_PREFIX = re.compile(r"^[^'\"]*\b(?:pure|elemental)\b[^'\"]*\b(?:subroutine|function)\b", re.I)


@dataclass
class CoveredLoop:
    index: int  # 1-based counter index; 0 when the loop could not be instrumented
    line: int  # the loop's line in the user's file
    why_not: str = ""  # why it is not instrumented


@dataclass
class InstrumentedSource:
    """The original as compiled for the reference run, with one counter per DO loop."""

    source: str
    loops: list[CoveredLoop]
    # For each line of ``source``, the line of the user's file (0 for inserted/generated lines).
    user_lines: list[int] = field(default_factory=list)
    statement_lines: dict[int, list[int]] = field(default_factory=dict)  # line -> enclosing loops

    @property
    def counters(self) -> int:
        return sum(1 for lp in self.loops if lp.index)

    def user_line(self, compiled_line: int) -> int:
        """The user's line for a line number of the compiled original (0 when generated)."""
        if 1 <= compiled_line <= len(self.user_lines):
            return self.user_lines[compiled_line - 1]
        return 0


@dataclass
class Coverage:
    loops: int
    loops_run: int
    lines: int
    lines_run: int
    not_run: list[int] = field(default_factory=list)  # user lines of loops that never ran
    unmeasured: list[str] = field(default_factory=list)  # loops that could not be instrumented
    ran: list[int] = field(default_factory=list)  # user lines of the loops that ran

    def merged(self, other: Coverage) -> Coverage:
        """What two runs covered together (the lines of statements: the better of the two)."""
        ran = sorted(set(self.ran) | set(other.ran))
        return Coverage(
            loops=self.loops,
            loops_run=len(ran) if not self.unmeasured else min(len(ran), self.loops - 1),
            lines=self.lines,
            lines_run=max(self.lines_run, other.lines_run),
            not_run=[x for x in self.not_run if x not in ran],
            unmeasured=list(self.unmeasured),
            ran=ran,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "loops": self.loops,
            "loops_run": self.loops_run,
            "lines": self.lines,
            "lines_run": self.lines_run,
        }

    @property
    def complete(self) -> bool:
        return self.loops_run == self.loops


def kernel_loops(kernel: ir.Kernel) -> list[ir.Loop | ir.WhileLoop]:
    """The DO loops of the kernel's own body, one per source DO statement, in source order.

    Loops the frontend made from array syntax (``a(:) = 0``) share their statement's line and
    are not DO statements; they are recognised at instrumentation time and left out.
    """
    out: list[ir.Loop | ir.WhileLoop] = []
    seen: set[int] = set()
    for s in ir.walk(kernel.body):
        if isinstance(s, (ir.Loop, ir.WhileLoop)) and s.line not in seen:
            seen.add(s.line)
            out.append(s)
    return out


def instrument(kernel: ir.Kernel, source: str, *, fixed: bool) -> InstrumentedSource:
    """``source`` (which contains ``kernel.fortran_source``) with a counter after each DO."""
    lines = source.split("\n")
    prefix = (
        source[: source.find(kernel.fortran_source)].count("\n")
        if kernel.fortran_source in source
        else 0
    )
    own = kernel.source_lines or list(range(1, kernel.fortran_source.count("\n") + 2))
    user_lines = [0] * len(lines)
    for k, u in enumerate(own):
        if prefix + k < len(lines):
            user_lines[prefix + k] = u
    where = {u: k for k, u in enumerate(user_lines) if u}

    statements: list[tuple[int, int]] = []  # (user line of the DO, its last compiled line)
    concurrent = False
    for lp in kernel_loops(kernel):
        k = where.get(lp.line)
        if k is None:
            continue
        text = strip_comment(lines[k])
        if not _DO_STMT.match(text):
            continue  # a loop made from array syntax, not a DO statement
        concurrent = concurrent or bool(_DO_CONCURRENT.search(text))
        statements.append((lp.line, _statement_end(lines, k, fixed)))
    insert_after: dict[int, list[str]] = {}  # compiled line index -> lines inserted after it
    header = _unit_header(kernel, lines, where)
    header_end = _statement_end(lines, header, fixed) if header is not None else -1
    pure = header is not None and bool(_PURE_PREFIX.match(_joined(lines, header, header_end)))
    if statements and (concurrent or pure):
        if header is None:
            why = "the counter needs a PURE interface and the kernel's header was not found"
            loops = [CoveredLoop(0, line, why) for line, _ in statements]
            return _finished(kernel, lines, user_lines, {}, loops)
        insert_after[header_end] = [f"      use {PURE_INTERFACE_MODULE}, only: {HIT}"]
    loops: list[CoveredLoop] = []
    for index, (line, last) in enumerate(statements, start=1):
        loops.append(CoveredLoop(index, line))
        insert_after.setdefault(last, []).append(f"      call {HIT}({index})")
    return _finished(kernel, lines, user_lines, insert_after, loops)


def _finished(
    kernel: ir.Kernel,
    lines: list[str],
    user_lines: list[int],
    insert_after: dict[int, list[str]],
    loops: list[CoveredLoop],
) -> InstrumentedSource:
    """The lines with the insertions made, and the line map that undoes them."""
    out: list[str] = []
    out_user: list[int] = []
    for k, text in enumerate(lines):
        out.append(text)
        out_user.append(user_lines[k])
        for inserted in insert_after.get(k, []):
            out.append(inserted)
            out_user.append(0)
    inst = InstrumentedSource("\n".join(out), loops, out_user)
    inst.statement_lines = _statement_lines(kernel, {lp.line for lp in loops})
    return inst


def pure_interface_source() -> str:
    """The module that declares the hit routine PURE, for DO CONCURRENT and PURE procedures.

    The declaration is not true (the routine updates a counter), which is why it lives in a file
    of its own: gfortran checks purity only against what it compiles in the same file, and a
    call to a PURE subroutine is still made (only PURE *functions* may be dropped by the
    optimiser; a subroutine call is kept for its effects on its arguments).
    """
    return f"""module {PURE_INTERFACE_MODULE}
  implicit none
  interface
    pure subroutine {HIT}(k)
      integer, intent(in) :: k
    end subroutine {HIT}
  end interface
end module {PURE_INTERFACE_MODULE}
"""


def support_source(counters: int) -> str:
    """The counters, the hit routine and the dump routine (free form, compiled with the wrapper)."""
    n = max(1, counters)
    return f"""module fsp_cov_mod
  implicit none
  integer(8), save :: fsp_cov_counts({n}) = 0
end module fsp_cov_mod

subroutine {HIT}(k)
  use fsp_cov_mod
  implicit none
  integer, intent(in) :: k
  fsp_cov_counts(k) = fsp_cov_counts(k) + 1
end subroutine {HIT}

subroutine {DUMP}()
  use fsp_cov_mod
  implicit none
  integer :: u, k
  open(newunit=u, file="{COVERAGE_FILE}", status="replace", action="write")
  do k = 1, {n}
    write(u, '(i0)') fsp_cov_counts(k)
  end do
  close(u)
end subroutine {DUMP}
"""


def read_counts(path: Path) -> list[int] | None:
    """The counters a reference run wrote to ``path`` (:data:`COVERAGE_FILE` in its work dir),
    or None when it wrote none (it did not finish)."""
    if not path.exists():
        return None
    try:
        return [int(x) for x in path.read_text().split()]
    except ValueError:
        return None


def summarize(inst: InstrumentedSource, counts: list[int]) -> Coverage:
    """Loops and statement lines that ran, from the counters of one reference run."""
    ran: dict[int, bool] = {}
    not_run: list[int] = []
    unmeasured: list[str] = []
    for lp in inst.loops:
        if not lp.index:
            ran[lp.line] = False
            unmeasured.append(f"line {lp.line}: {lp.why_not}")
            continue
        hit = lp.index <= len(counts) and counts[lp.index - 1] > 0
        ran[lp.line] = hit
        if not hit:
            not_run.append(lp.line)
    lines_run = sum(
        1 for enclosing in inst.statement_lines.values() if all(ran.get(x, True) for x in enclosing)
    )
    return Coverage(
        loops=len(inst.loops),
        loops_run=sum(1 for v in ran.values() if v),
        lines=len(inst.statement_lines),
        lines_run=lines_run,
        not_run=not_run,
        unmeasured=unmeasured,
        ran=sorted(line for line, hit in ran.items() if hit),
    )


def _statement_lines(kernel: ir.Kernel, loop_lines: set[int]) -> dict[int, list[int]]:
    """Executable statement lines of the kernel -> lines of the DO loops enclosing them."""
    out: dict[int, list[int]] = {}

    def visit(stmts: list[ir.Stmt], enclosing: list[int]) -> None:
        for s in stmts:
            if isinstance(s, ir.Unsupported):
                continue
            if s.line and s.line not in out:
                out[s.line] = list(enclosing)
            if isinstance(s, (ir.Loop, ir.WhileLoop)):
                inner = enclosing + [s.line] if s.line in loop_lines else enclosing
                visit(s.body, inner)
            elif isinstance(s, ir.If):
                for _, body in s.branches:
                    visit(body, enclosing)
                visit(s.orelse, enclosing)

    visit(kernel.body, [])
    return out


_UNIT_HEADER = r"^(?!\s*end\b)[^!'\"]*\b(?:subroutine|function)\s*{name}\b"


def _unit_header(kernel: ir.Kernel, lines: list[str], where: dict[int, int]) -> int | None:
    """Index of the SUBROUTINE/FUNCTION statement of the kernel's own unit in ``lines``."""
    pattern = re.compile(_UNIT_HEADER.format(name=re.escape(kernel.fortran_entry)), re.I)
    at = where.get(kernel.line)
    if at is not None and pattern.match(strip_comment(lines[at])):
        return at
    # An extracted nest: its SUBROUTINE statement is generated (no user line).
    for k, text in enumerate(lines):
        if pattern.match(strip_comment(text)):
            return k
    return None


def _joined(lines: list[str], first: int, last: int) -> str:
    return " ".join(strip_comment(x) for x in lines[first : last + 1])


def _statement_end(lines: list[str], k: int, fixed: bool) -> int:
    """Index of the last line of the statement starting at ``lines[k]`` (continuations)."""
    if fixed:
        while k + 1 < len(lines):
            nxt = lines[k + 1]
            if (
                len(nxt) > 5
                and nxt[:1] not in "cC*!"
                and nxt[:5].strip() == ""
                and nxt[5] not in " 0"
            ):
                k += 1
            else:
                break
        return k
    while strip_comment(lines[k]).rstrip().endswith("&") and k + 1 < len(lines):
        k += 1
    return k


_AT_LINE = re.compile(r"At line (\d+) of file (\S+)")
_INDEX = re.compile(
    r"Index '(-?\d+)' of dimension (\d+) of array '([^']+)' (above upper|below lower) bound of (-?\d+)"
)


def out_of_bounds_message(
    stderr: str, inst: InstrumentedSource | None, sizes: dict[str, int]
) -> str | None:
    """A clear report of an out-of-bounds access in the original (``-fcheck=bounds``), if any."""
    m = _INDEX.search(stderr)
    if m is None:
        return None
    index, dim, array, side, bound = m.groups()
    where = ""
    at = _AT_LINE.search(stderr)
    if at is not None and at.group(2).startswith("fsp_original"):
        line = inst.user_line(int(at.group(1))) if inst is not None else int(at.group(1))
        if line:
            where = f" at line {line}"
    relation = "above its upper" if side.startswith("above") else "below its lower"
    return (
        f"out-of-bounds access in the original Fortran{where}: index {index} of dimension {dim} "
        f"of array {array} is {relation} bound {bound} (at sizes {_sizes_text(sizes)}); "
        "this is a bug of the original, not of the port"
    )


def inconclusive_message(cov: Coverage | None, tried: list[dict[str, int]]) -> str:
    """Why a run whose outputs match is not a proof: the loops that never ran, and what to do."""
    at = "at sizes " + " and at ".join(_sizes_text(s) for s in tried)
    if cov is None:
        return f"loop coverage of the reference could not be measured {at}"
    parts = []
    if cov.not_run:
        lines = ", ".join(str(x) for x in cov.not_run)
        word = "loop at line" if len(cov.not_run) == 1 else "loops at lines"
        parts.append(f"the DO {word} {lines} never ran in the reference {at}")
    parts.extend(f"coverage not measured for the loop at {u}" for u in cov.unmeasured)
    return (
        "inconclusive: "
        + "; ".join(parts)
        + " - pass --size NAME=VALUE so that every loop runs (e.g. lower bound < upper bound)"
    )


def _sizes_text(sizes: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items()) or "(none)"
