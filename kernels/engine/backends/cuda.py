"""numba.cuda backend: one ``@cuda.jit`` kernel per parallel loop nest, driven from the host.

The generated module has the same entry signature as the Fortran routine (see
``backends/common.py`` for the calling convention) and is organised like this:

- **Parallel nests** (``Loop.parallel`` from analysis): the perfectly nested parallel loops with
  rectangular bounds are collapsed (up to three) onto a 1-D, 2-D or 3-D grid. The loop whose
  variable is the *first* subscript of most array references goes to ``x`` (so a warp reads
  consecutive elements of a column-major array), the next to ``y``, then ``z``; every thread is
  guarded by the trip counts. Loops inside the collapsed ones run sequentially per thread, private
  scalars are plain locals and private local arrays become ``cuda.local.array``.
- **Reductions** (+, *, min, max and the argmax/argmin IF pattern) use two passes: every thread
  runs the loop body on its own copy of the reduction variables, a shared-memory tree reduction
  gives one partial per block, and a one-block finishing kernel combines the partials. argmax
  carries the Fortran iteration number with the value so ties keep the FIRST occurrence,
  whatever the order threads finish in. Results come back to the host through one small array.
- **Independent nests of the same rank in a row** are fused into one launch when no nest reads
  what another writes and arrays written by several are written with the same constant: the
  Dirichlet edges of the CPML demo (``vx(1,:) = 0``...), and its two stress nests and its two
  velocity nests (5 launches per step become 3). The grid covers the largest trip count per
  axis; each nest keeps its own guard. ``fuse_nests=False`` keeps only the 1-D fusion.
- **Buffer swaps.** A whole-array copy ``a = b`` in a host loop that only carries the step's
  result forward (see :meth:`_CudaModule._swap_copies` for the legality conditions) becomes an
  exchange of the two device arrays instead of a launch; after the loop, Fortran's final ``b``
  is rebuilt once. ``swap_buffers=False`` keeps the copies.
- **Explicit signatures.** Every kernel's numba signature is written into the module
  (``_SIGNATURES``); the driver compiles each once per process at its first call and launches
  through ``_launch``, which caches the configured kernel per grid and block, so a launch types
  no argument and builds no launch configuration.
- **The launch plan** (``GeneratedCode.launch_plan``, :mod:`kernels.engine.gpu_model`) lists what
  one time step launches, for the traffic and launch model in the report.
- **An IF whose condition reads device arrays** but whose branches are host work (``EXIT`` of
  the time loop on a convergence test) costs a one-thread kernel plus a one-flag copy; the
  nests around it stay parallel.
- **Everything else that touches arrays** (a Gauss-Seidel sweep with carried dependences, a
  boundary update that is not parallel, DO WHILE with array conditions...) runs in a
  *sequential kernel*: one GPU thread executes the statements in Fortran order. This is always
  correct; the notes of the result say which loops took that path and why.
- **The host driver** copies every array to the device once, runs scalar-only statements and the
  control flow around the nests (typically the time loop) on the host, launches the kernels
  between them without copying arrays back, and copies back only INTENT(OUT/INOUT) arrays at the
  end. Scalars written on the device that the host needs later come back through a small
  float64 array (one transfer per sequential kernel or reduction, never per array).

Launch configuration: ``BLOCK_1D``, ``BLOCK_2D`` and ``BLOCK_3D`` at module level, or the
``block_1d=``/``block_2d=``/``block_3d=`` keyword arguments of the entry function.

The module imports on a machine without a GPU; run it with ``NUMBA_ENABLE_CUDASIM=1`` there.
Device code reuses :class:`~kernels.engine.backends.common.ExprPrinter` and
:class:`~kernels.engine.backends.common.StmtPrinter`; the Fortran intrinsic helpers are emitted
twice, as device functions and (renamed ``_host_f_*``) as plain Python for host statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kernels.engine import gpu_model, ir
from kernels.engine.backends.common import (
    CodegenError,
    ExprPrinter,
    GeneratedCode,
    StmtPrinter,
    helper_source,
    py_name,
)
from kernels.engine.dataflow import affine, stmt_exprs
from kernels.engine.types import Scope

DEFAULT_BLOCKS = {1: (256,), 2: (32, 8), 3: (32, 4, 2)}
FINISH_THREADS = 256  # threads of the one-block kernel that combines per-block partials
MAX_BLOCK_THREADS = 1024  # size of the shared-memory scratch of a reduction (CUDA's limit)
STATIC_SHARED_BYTES = 48 * 1024  # static shared memory a block may use without opting in
REDUCTION_OPS = ("+", "*", "min", "max", "argmax", "argmin")

_IND = "    "
_HELPER_CALL = re.compile(r"\b_f_(\w+)\(")


# --------------------------------------------------------------------------------------------
# Plan: what runs where


@dataclass
class _Nest:
    """A parallel loop nest that becomes one kernel (plus a finishing kernel for reductions)."""

    index: int
    loops: list[ir.Loop]  # collapsed loops, outermost first
    body: list[ir.Stmt]  # the body of the innermost collapsed loop
    grid_order: list[int]  # loop indices in x, y, z order
    reductions: list[ir.Reduction] = field(default_factory=list)
    private_arrays: list[str] = field(default_factory=list)
    first_occurrence: bool = True

    @property
    def name(self) -> str:
        return f"_k{self.index}_line{self.loops[0].line}"


@dataclass
class _Serial:
    """Statements one device thread runs in order."""

    index: int
    stmts: list[ir.Stmt]
    reason: str = ""
    box: list[str] = field(default_factory=list)  # scalars copied back to the host
    has_return: bool = False
    conds: list[ir.Expr] = field(default_factory=list)  # IF conditions evaluated for the host

    @property
    def cond_names(self) -> list[str]:
        return [f"_c{self.index}_{j}" for j in range(len(self.conds))]

    @property
    def name(self) -> str:
        line = getattr(self.stmts[0], "line", 0) if self.stmts else 0
        return f"_s{self.index}_line{line}"


@dataclass
class _Fused:
    """Consecutive independent nests of the same rank launched as one kernel.

    The grid covers the largest trip count of each axis; a thread runs, in order, the iteration
    of each nest its grid position falls in (per-nest guards).
    """

    index: int
    nests: list[_Nest]

    @property
    def name(self) -> str:
        return f"_f{self.index}_line{self.nests[0].loops[0].line}"

    @property
    def rank(self) -> int:
        return len(self.nests[0].loops)


@dataclass
class _Swap:
    """A whole-array copy ``a = b`` in a host loop, replaced by exchanging the device buffers.

    ``flag`` (``_sw<n>``) says the exchange has happened at least once in the current run of the
    loop; ``copy`` is the copy nest, launched once after the loop (in the other direction) when
    ``b``'s final contents are observable. See :meth:`_CudaModule._swap_copies`.
    """

    a: str
    b: str
    copy: _Nest
    flag: str
    line: int = 0
    finish: bool = False  # b is an argument: redo the last copy into b after the loop


@dataclass
class _SwapStage:
    """Host lines around a host loop with swaps: ``init`` before, ``prepare`` at the top of the
    body, ``finish`` after the loop."""

    stage: str
    swaps: list[_Swap]


@dataclass
class _Launch:
    """Marker statement in the host body: launch ``region`` here."""

    region: _Nest | _Serial | _Fused
    line: int = 0


def _numba_scalar(t: ir.FType) -> str:
    return "boolean" if t.base == "logical" else t.numpy_dtype


def _sig_array(t: ir.FType, ndim: int) -> str:
    """numba signature text of a contiguous device array: F order (1-D: C, the same thing)."""
    layout = ", ".join(["::1"] + [":"] * (ndim - 1))
    return f"{_numba_scalar(t)}[{layout}]"


def _itemsize(t: ir.FType) -> int:
    return 1 if t.base == "logical" else t.kind


def _array_refs(
    stmts: list[ir.Stmt], loops: list[gpu_model.Bound], arrays: set[str]
) -> tuple[dict[str, list], dict[str, list]]:
    """(reads, writes): per array, the loops each reference's subscripts depend on (None: all).

    The model's element counts come from these (see ``gpu_model``).
    """
    reads: dict[str, list] = {}
    writes: dict[str, list] = {}

    def loops_of(indices: list, stack: list) -> tuple | None:
        names: set[str] = set()
        for ix in indices:
            if isinstance(ix, ir.Slice):
                return None
            names |= {x.name for x in ir.walk_expr(ix) if isinstance(x, ir.Var)}
        if names and any(b is None for b in stack):
            return None  # inside a DO WHILE: unknown trip count
        return tuple(b for b in stack if b is not None and b.var in names)

    def expr(e, stack: list) -> None:
        for sub in ir.walk_expr(e):
            if isinstance(sub, ir.ArrayRef) and sub.name in arrays:
                reads.setdefault(sub.name, []).append(loops_of(sub.indices, stack))
            elif isinstance(sub, ir.Var) and sub.name in arrays:
                reads.setdefault(sub.name, []).append(None)

    def visit(ss: list, stack: list) -> None:
        for s in ss:
            if isinstance(s, ir.Loop):
                for e in (s.start, s.stop, s.step):
                    if e is not None:
                        expr(e, stack)
                visit(s.body, stack + [gpu_model.Bound(s.var, s.start, s.stop, s.step)])
            elif isinstance(s, ir.WhileLoop):
                expr(s.cond, stack)
                visit(s.body, stack + [None])
            elif isinstance(s, ir.If):
                for c, b in s.branches:
                    expr(c, stack)
                    visit(b, stack)
                visit(s.orelse, stack)
            elif isinstance(s, ir.Assign):
                t = s.target
                if isinstance(t, ir.ArrayRef) and t.name in arrays:
                    writes.setdefault(t.name, []).append(loops_of(t.indices, stack))
                    for ix in t.indices:
                        if not isinstance(ix, ir.Slice):
                            expr(ix, stack)
                elif isinstance(t, ir.Var) and t.name in arrays:
                    writes.setdefault(t.name, []).append(None)
                expr(s.value, stack)
            elif isinstance(s, ir.CallStmt):
                for a in s.args:
                    name = a.name if isinstance(a, (ir.Var, ir.ArrayRef)) else None
                    if name in arrays:
                        reads.setdefault(name, []).append(None)
                        writes.setdefault(name, []).append(None)
                    else:
                        expr(a, stack)
            else:
                for e in stmt_exprs(s):
                    expr(e, stack)

    visit(stmts, list(loops))
    return reads, writes


class _Demote(Exception):
    """A host construct cannot be split around its device work: run it all sequentially."""


# --------------------------------------------------------------------------------------------
# Small IR queries


def _refs(stmts: list[ir.Stmt]) -> tuple[set[str], set[str]]:
    """(names read, names written) anywhere in ``stmts``."""
    reads: set[str] = set()
    writes: set[str] = set()
    for s in ir.walk(stmts):
        for e in stmt_exprs(s):
            for sub in ir.walk_expr(e):
                if isinstance(sub, (ir.Var, ir.ArrayRef)):
                    reads.add(sub.name)
        if isinstance(s, ir.Assign):
            writes.add(s.target.name)
        elif isinstance(s, ir.Loop):
            writes.add(s.var)
        elif isinstance(s, ir.CallStmt):
            for a in s.args:
                if isinstance(a, (ir.Var, ir.ArrayRef)):
                    writes.add(a.name)
        elif isinstance(s, ir.Allocate):
            writes.add(s.name)
            for d in s.dims:
                for part in (d.lower, d.upper):
                    for sub in ir.walk_expr(part):
                        if isinstance(sub, ir.Var):
                            reads.add(sub.name)
    return reads, writes


def _reads_unbound(stmts: list[ir.Stmt], name: str) -> bool:
    """Whether ``name`` is read anywhere except inside DO loops that assign it themselves."""

    def reads(e: ir.Expr) -> bool:
        return any(isinstance(x, ir.Var) and x.name == name for x in ir.walk_expr(e))

    for s in stmts:
        if any(reads(e) for e in stmt_exprs(s)):
            return True
        if isinstance(s, ir.Loop) and s.var == name:
            continue  # the body sees the loop's own values
        if isinstance(s, (ir.Loop, ir.WhileLoop)) and _reads_unbound(s.body, name):
            return True
        if isinstance(s, ir.If) and (
            any(_reads_unbound(b, name) for _, b in s.branches) or _reads_unbound(s.orelse, name)
        ):
            return True
    return False


def _escaping_jump(stmts: list[ir.Stmt]) -> bool:
    """True when an EXIT/CYCLE in ``stmts`` targets a loop that encloses ``stmts``."""

    def visit(ss: list[ir.Stmt], labels: list[str | None]) -> bool:
        for s in ss:
            if isinstance(s, (ir.Exit, ir.Cycle)):
                if not labels or (s.label is not None and s.label not in labels):
                    return True
            elif isinstance(s, (ir.Loop, ir.WhileLoop)):
                if visit(s.body, labels + [s.label]):
                    return True
            elif isinstance(s, ir.If):
                if any(visit(b, labels) for _, b in s.branches) or visit(s.orelse, labels):
                    return True
        return False

    return visit(stmts, [])


def _np_type(t: ir.FType) -> str:
    return "np.bool_" if t.base == "logical" else f"np.{t.numpy_dtype}"


def _numba_type(t: ir.FType) -> str:
    return "numba.boolean" if t.base == "logical" else f"numba.{t.numpy_dtype}"


def _strip_loop(stmts: list[ir.Stmt], loop: ir.Stmt) -> list[ir.Stmt]:
    """``stmts`` without the subtree of ``loop`` (matched by identity)."""
    return ir.prune(stmts, lambda s: s is loop)


def _without(stmts: list[ir.Stmt], skip: set[int]) -> list[ir.Stmt]:
    """``stmts`` with the statements whose id is in ``skip`` removed (at any depth)."""
    return ir.prune(stmts, lambda s: id(s) in skip)


def _const_step(loop: ir.Loop) -> int | None:
    if loop.step is None:
        return 1
    a = affine(loop.step)
    return a[1] if a is not None and not a[0] else None


def _probe_parallel(loop: ir.Loop, kernel: ir.Kernel) -> dict[int, tuple[list, list]] | None:
    """GPU-only parallelism the CPU-oriented analysis leaves out, proved by the same analysis.

    Analysis keeps two kinds of loops sequential for the CPU's sake: first-occurrence
    argmax/argmin (prange cannot merge per-chunk locations) and non-unit steps (prange needs step
    1). On the GPU both are parallel when the rest of the body is: re-run the dependence analysis
    on a probe copy of the nest with the argmax IF statements removed and the step normalised
    (same iterations, ascending: the dependence tests do not depend on the order). Returns
    {id(loop): (reductions, private arrays)} for the outermost levels that are parallel.
    """
    if loop.parallel:
        return None
    try:
        from kernels.engine import analysis
    except ImportError:  # pragma: no cover - analysis is part of the engine
        return None
    levels = [loop]
    while len(levels) < 3 and len(levels[-1].body) == 1 and isinstance(levels[-1].body[0], ir.Loop):
        levels.append(levels[-1].body[0])
    body = levels[-1].body
    red = None
    for lp in levels:
        for r in lp.reductions:
            if r.op in ("argmax", "argmin"):
                red = r
    if red is None:
        # Analysis may stop at the location variable ("used after the loop") before it sees
        # the pattern: look for it directly.
        written = sorted(
            {
                x.target.name
                for x in ir.walk(body)
                if isinstance(x, ir.Assign) and isinstance(x.target, ir.Var)
            }
        )
        for name in written:
            try:
                r = analysis._reduction(name, body, levels[-1])
            except Exception:  # noqa: BLE001 - best effort
                r = None
            if r is not None and r.op in ("argmax", "argmin"):
                red = r
                break
    steps = [_const_step(lp) for lp in levels]
    if red is None and all(st == 1 for st in steps):
        return None
    if any(st is None or st == 0 for st in steps):
        return None
    if red is not None:
        owned = {red.var, *red.index_vars}

        def is_pattern(s: ir.Stmt) -> bool:
            return (
                isinstance(s, ir.If)
                and all(isinstance(x, ir.Assign) for _, b in s.branches for x in b)
                and all(
                    isinstance(x.target, ir.Var) and x.target.name in owned
                    for _, b in s.branches
                    for x in b
                )
            )

        stripped = [s for s in body if not is_pattern(s)]
        if len(stripped) == len(body):
            return None
        body = stripped
    # Build the probe nest from the inside out.
    probes: list[ir.Loop] = []
    inner: list[ir.Stmt] = body
    for lp, st in zip(reversed(levels), reversed(steps), strict=True):
        lo, hi = (lp.start, lp.stop) if st > 0 else (lp.stop, lp.start)
        probe = ir.Loop(lp.var, lo, hi, None, inner, lp.line, lp.label)
        probes.insert(0, probe)
        inner = [probe]
    try:
        ctx = analysis._Context(kernel)
        # "Used after the loop" questions are answered against the real surroundings.
        ctx.kernel = ir.Kernel(
            kernel.name,
            kernel.args,
            _replace(kernel.body, loop, probes[0]),
            kernel.locals,
            kernel.fortran_source,
            kernel.fortran_entry,
            constants=kernel.constants,
            functions=kernel.functions,
        )
        infos = [analysis._analyse_loop(p, ctx, []) for p in probes]
    except Exception:  # noqa: BLE001 - the probe is best effort: failure keeps it sequential
        return None
    found: dict[int, tuple[list, list]] = {}
    for lp, probe, info in zip(levels, probes, infos, strict=True):
        if not info.parallel:
            break
        reds = list(probe.reductions) + ([red] if red is not None else [])
        found[id(lp)] = (reds, list(getattr(probe, "private_arrays", [])))
    if not found or (red is not None and len(found) != len(levels)):
        # argmax needs every level around the pattern in the grid (one thread per candidate).
        return None
    return found


def _replace(stmts: list[ir.Stmt], old: ir.Stmt, new: ir.Stmt) -> list[ir.Stmt]:
    out: list[ir.Stmt] = []
    for s in stmts:
        if s is old:
            out.append(new)
        elif isinstance(s, ir.Loop):
            out.append(
                ir.Loop(s.var, s.start, s.stop, s.step, _replace(s.body, old, new), s.line, s.label)
            )
        elif isinstance(s, ir.WhileLoop):
            out.append(ir.WhileLoop(s.cond, _replace(s.body, old, new), s.line, s.label))
        elif isinstance(s, ir.If):
            out.append(
                ir.If(
                    [(c, _replace(b, old, new)) for c, b in s.branches],
                    _replace(s.orelse, old, new),
                    s.line,
                )
            )
        else:
            out.append(s)
    return out


# --------------------------------------------------------------------------------------------
# Printers


class _DevicePrinter(StmtPrinter):
    """Statements inside a kernel or device function: plain sequential Python."""

    def allocate(self, s: ir.Allocate) -> str:
        raise CodegenError("ALLOCATE inside device code", s.line)


class _HostPrinter(StmtPrinter):
    """The driver body: scalar statements, host control flow and kernel launches."""

    def __init__(self, printer: ExprPrinter, gen: _CudaModule, **kw):
        super().__init__(printer, **kw)
        self.gen = gen
        self.originals: dict[int, ir.Stmt] = {}

    def stmt(self, s, depth: int) -> list[str]:
        if isinstance(s, _Launch):
            return self.gen.launch_lines(s.region, depth)
        if isinstance(s, _Swap):
            return self.gen.swap_lines(s, depth)
        if isinstance(s, _SwapStage):
            return self.gen.swap_stage_lines(s, depth)
        return super().stmt(s, depth)

    def allocate(self, s: ir.Allocate) -> str:
        return f"_d_{py_name(s.name)} = cuda.to_device({self.p.new_array(s.name, s.dims)})"

    def loop_comment(self, s):
        text = super().loop_comment(s)
        return text + "  (on the host; arrays stay on the device)"

    def _var_used_after(self, s: ir.Loop) -> bool:
        orig = self.originals.get(id(s), s)
        outside = _strip_loop(self._all, orig)
        reads, _ = _refs(outside)
        return s.var in reads


# --------------------------------------------------------------------------------------------
# Module builder


class _CudaModule:
    def __init__(self, kernel: ir.Kernel, *, swap_buffers: bool = True, fuse_nests: bool = True):
        self.k = kernel
        self.swap_buffers = swap_buffers
        self.fuse_nests = fuse_nests
        self.swaps: list[_Swap] = []
        self.signatures: dict[str, str] = {}
        self.scope = Scope.from_kernel(kernel)
        self.arrays = set(self.scope.dims)
        self.scalars: dict[str, ir.FType] = {}
        for a in kernel.args:
            if not a.dims:
                self.scalars[a.name] = a.type
        for name, d in kernel.locals.items():
            if not d.dims and name not in kernel.constants:
                self.scalars[name] = d.type
        self.result_name: str | None = (
            getattr(kernel, "result", None) if kernel.origin == "function" else None
        )
        if self.result_name and self.result_name not in self.scalars:
            self.scalars[self.result_name] = self.scope.type(self.result_name)
        self.nests: list[_Nest] = []
        self.serials: list[_Serial] = []
        self.counter = 0
        self.helpers: set[str] = set()
        self.notes: list[str] = []
        self.uses_return = False
        self.host_loops: list[ir.Stmt] = []  # host control constructs (copies)
        self.inside_host_loop: dict[int, bool] = {}
        self.probed: dict[int, tuple[list[ir.Reduction], list[str]]] = {}
        self.notes_extra: list[str] = []
        self.fused: list[_Fused] = []

    # -- planning ------------------------------------------------------------------------------
    def _is_host(self, s: ir.Stmt) -> bool:
        """Scalar-only statements (and their control flow) run on the host."""
        for x in ir.walk([s]):
            if isinstance(x, (ir.CallStmt, ir.Unsupported)):
                return False
            if isinstance(x, ir.Assign) and isinstance(x.target, ir.ArrayRef):
                return False
            if isinstance(x, ir.Allocate):
                exprs = [p for d in x.dims for p in (d.lower, d.upper) if p is not None]
            else:
                exprs = stmt_exprs(x)
            for e in exprs:
                for sub in ir.walk_expr(e):
                    if isinstance(sub, ir.ArrayRef):
                        return False
                    if isinstance(sub, ir.Var) and sub.name in self.arrays:
                        return False
                    if isinstance(sub, ir.Call) and sub.name in self.k.functions:
                        return False
                    if isinstance(sub, ir.Call) and sub.name in ("size", "lbound", "ubound"):
                        return False
        return True

    def _header_is_host(self, s: ir.Stmt) -> bool:
        exprs = stmt_exprs(s)
        for e in exprs:
            for sub in ir.walk_expr(e):
                if isinstance(sub, ir.ArrayRef):
                    return False
                if isinstance(sub, ir.Var) and sub.name in self.arrays:
                    return False
                if isinstance(sub, ir.Call) and (
                    sub.name in self.k.functions or sub.name in ("size", "lbound", "ubound")
                ):
                    return False
        return True

    def plan(self, stmts: list[ir.Stmt], in_host_loop: bool, loop: ir.Stmt | None = None) -> list:
        """Rewrite a statement list for the host: launches replace the device work.

        ``loop`` is the host loop whose body ``stmts`` is: its whole-array copies may become
        buffer swaps (before fusion, so a copy fused with another nest is not lost).
        """
        out: list = []
        pending: list[ir.Stmt] = []

        def flush() -> None:
            if not pending:
                return
            if _escaping_jump(pending):
                raise _Demote()
            region = self._new_serial(list(pending), in_host_loop)
            out.append(_Launch(region, getattr(pending[0], "line", 0)))
            pending.clear()

        for s in stmts:
            if isinstance(s, ir.Loop) and not s.parallel:
                found = _probe_parallel(s, self.k)
                if found is not None:
                    self.probed.update(found)
            if isinstance(s, ir.Loop) and (s.parallel or id(s) in self.probed):
                nest = self._try_nest(s)
                if nest is not None:
                    flush()
                    self.counter += 1
                    nest.index = self.counter
                    out.append(_Launch(nest, s.line))
                    continue
                pending.append(s)
                continue
            if (
                isinstance(s, (ir.Loop, ir.WhileLoop, ir.If))
                and _contains_parallel_or_argmax(s)
                and self._header_is_host(s)
            ):
                saved = self._snapshot()
                try:
                    host = self._host_construct(s)
                except _Demote:
                    self._restore(saved)  # forget the kernels planned inside it
                    pending.append(s)
                    continue
                flush()
                out.extend(host)
                continue
            split = self._device_condition(s, in_host_loop)
            if split is not None:
                flush()
                out.extend(split)
                continue
            if self._is_host(s):
                flush()
                out.append(s)
                if isinstance(s, ir.Return):
                    self.uses_return = True
                continue
            pending.append(s)
        flush()
        if loop is not None and self.swap_buffers:
            out = self._swap_copies(out, loop)
        return self._fuse(out)

    def _snapshot(self) -> tuple:
        return (
            list(self.nests),
            list(self.serials),
            list(self.fused),
            list(self.host_loops),
            self.counter,
            list(self.swaps),
        )

    def _restore(self, saved: tuple) -> None:
        self.nests, self.serials, self.fused, self.host_loops, self.counter = (
            list(saved[0]),
            list(saved[1]),
            list(saved[2]),
            list(saved[3]),
            saved[4],
        )
        self.swaps = list(saved[5])

    # -- buffer swaps --------------------------------------------------------------------------
    def _pure_copy(self, nest: _Nest) -> tuple[str, str] | None:
        """(a, b) when the nest only does ``a(i, j, ..) = b(i, j, ..)`` over its whole grid."""
        if len(nest.body) != 1 or nest.reductions or nest.private_arrays:
            return None
        s = nest.body[0]
        if not (
            isinstance(s, ir.Assign)
            and isinstance(s.target, ir.ArrayRef)
            and isinstance(s.value, ir.ArrayRef)
            and s.target.name != s.value.name
        ):
            return None
        a, b = s.target, s.value
        loop_vars = [lp.var for lp in nest.loops]
        idx = [x.name if isinstance(x, ir.Var) else None for x in a.indices]
        if (
            None in idx
            or repr(a.indices) != repr(b.indices)
            or sorted(idx) != sorted(loop_vars)
            or len(self.scope.dims.get(a.name, [])) != len(idx)
            or len(self.scope.dims.get(b.name, [])) != len(idx)
        ):
            return None
        return a.name, b.name

    @staticmethod
    def _region(nest: _Nest, ref: ir.ArrayRef) -> list[str] | None:
        """Bounds of the loop behind each subscript of ``ref`` (subscripts must be loop vars)."""
        by_var = {lp.var: lp for lp in nest.loops}
        out = []
        for ix in ref.indices:
            if not isinstance(ix, ir.Var) or ix.name not in by_var:
                return None
            lp = by_var[ix.name]
            out.append(repr((lp.start, lp.stop, lp.step)))
        return out

    def _swap_copies(self, items: list, loop: ir.Stmt) -> list:
        """Replace whole-array copies that only carry a step's result forward by buffer swaps.

        Legal for a copy nest ``a(R) = b(R)`` in the body of host loop L (R: the copy's grid)
        when all of these hold, checked on the Fortran statements of L:

        1. L's body has no EXIT, CYCLE or RETURN (every iteration runs the whole body);
        2. an earlier nest of the same body (the producer) assigns ``b(R)`` unconditionally, at
           the top level of its body, over exactly the same region R, so the values of ``b``
           inside R at the start of an iteration are dead;
        3. ``b`` appears nowhere else in L (only as the producer's target and the copy's source):
           nothing in L reads ``b`` outside R, or before the producer wrote it;
        4. ``a`` is written nowhere else in L: outside R it keeps its entry values throughout;
        5. the bounds of both nests use no variable L assigns (nor L's own variable);
        6. ``a`` and ``b`` have the same declared type and bounds, neither is allocatable, the
           copy's DO variables are not read after it, and a local ``b`` is not used after L.

        Then the driver swaps the two device arrays where the copy was. At the top of the first
        iteration it copies ``a`` into ``b``'s buffer (device to device, once), so both buffers
        carry ``a``'s values outside R, which is all that is read there (3, 4). After L ran at
        least once, the buffer named ``a`` holds exactly Fortran's ``a``; ``b`` (an argument)
        is restored from the host's untouched input and the copy kernel runs once in the other
        direction, ``b(R) = a(R)``, which is Fortran's final ``b`` whatever the parity of the
        step count. A loop that runs zero times swaps nothing and changes nothing.
        """
        if not isinstance(loop, (ir.Loop, ir.WhileLoop)):
            return items
        body = loop.body
        if any(isinstance(x, (ir.Exit, ir.Cycle, ir.Return)) for x in ir.walk(body)):
            return items
        _, assigned = _refs(body)
        if isinstance(loop, ir.Loop):
            assigned = assigned | {loop.var}
        outside = _strip_loop(self.k.body, loop)
        outside_reads, outside_writes = _refs(outside)
        args = {a.name for a in self.k.args}
        found: list[_Swap] = []
        out = list(items)
        for pos, item in enumerate(items):
            if not (isinstance(item, _Launch) and isinstance(item.region, _Nest)):
                continue
            copy = item.region
            pair = self._pure_copy(copy)
            if pair is None:
                continue
            a, b = pair
            if any(a in (s.a, s.b) or b in (s.a, s.b) for s in found):
                continue
            stmt = copy.body[0]
            region = self._region(copy, stmt.value)
            producer = None
            for earlier in items[:pos]:
                nest = earlier.region if isinstance(earlier, _Launch) else None
                if not isinstance(nest, _Nest) or len(nest.loops) != len(copy.loops):
                    continue
                tops = [
                    x
                    for x in nest.body
                    if isinstance(x, ir.Assign)
                    and isinstance(x.target, ir.ArrayRef)
                    and x.target.name == b
                ]
                if len(tops) == 1 and self._region(nest, tops[0].target) == region:
                    producer = (nest, tops[0])
            if producer is None or region is None:
                continue
            nest, target = producer
            uses_b = [
                sub
                for x in ir.walk(body)
                for e in [*stmt_exprs(x), *([x.target] if isinstance(x, ir.Assign) else [])]
                for sub in ir.walk_expr(e)
                if isinstance(sub, (ir.Var, ir.ArrayRef)) and sub.name == b
            ]
            if len(uses_b) != 2 or not any(u is target.target for u in uses_b):
                continue
            writes_a = [
                x
                for x in ir.walk(body)
                if (isinstance(x, ir.Assign) and x.target.name == a)
                or (
                    isinstance(x, ir.CallStmt)
                    and any(getattr(y, "name", None) == a for y in x.args)
                )
                or (isinstance(x, ir.Allocate) and x.name in (a, b))
            ]
            if writes_a != [stmt]:
                continue
            bound_names = {
                sub.name
                for lp in [*copy.loops, *nest.loops]
                for e in (lp.start, lp.stop, lp.step)
                if e is not None
                for sub in ir.walk_expr(e)
                if isinstance(sub, ir.Var)
            }
            if bound_names & assigned:
                continue
            da, db = self.scope.dims.get(a), self.scope.dims.get(b)
            if repr(da) != repr(db) or self.scope.type(a) != self.scope.type(b):
                continue
            if any(
                self.k.locals.get(n) is not None and self.k.locals[n].allocatable for n in (a, b)
            ):
                continue
            if any(
                _reads_unbound(_strip_loop(self.k.body, copy.loops[0]), lp.var) for lp in copy.loops
            ):
                continue
            if b not in args and b in outside_reads | outside_writes:
                continue
            self.counter += 1
            swap = _Swap(a, b, copy, f"_sw{self.counter}", item.line, finish=b in args)
            found.append(swap)
            out[pos] = swap
        if not found:
            return items
        self.swaps.extend(found)
        return [_SwapStage("prepare", found), *out]

    def _fuse(self, items: list) -> list:
        """Merge runs of consecutive independent nests of the same rank into one launch each."""
        out: list = []
        run: list[_Nest] = []

        def close() -> None:
            if len(run) == 1:
                out.append(_Launch(run[0], run[0].loops[0].line))
            elif run:
                self.counter += 1
                fused = _Fused(self.counter, list(run))
                self.fused.append(fused)
                for nest in run:
                    self.nests.remove(nest)
                out.append(_Launch(fused, run[0].loops[0].line))
            run.clear()

        for item in items:
            nest = item.region if isinstance(item, _Launch) else None
            if isinstance(nest, _Nest) and self._fusable(nest):
                if run and (
                    len(run[0].loops) != len(nest.loops)
                    or not all(_independent(nest, other) for other in run)
                ):
                    close()
                run.append(nest)
                continue
            close()
            out.append(item)
        close()
        return out

    def _fusable(self, nest: _Nest) -> bool:
        """Nests a fused kernel can hold: no reduction, no per-thread array; 1-D only unless
        ``fuse_nests`` (the generalised fusion) is on."""
        if nest.reductions or nest.private_arrays:
            return False
        return len(nest.loops) == 1 or self.fuse_nests

    def _device_condition(self, s: ir.Stmt, in_host_loop: bool) -> list | None:
        """An IF whose conditions read device arrays but whose branches are host work (EXIT of
        the time loop, scalar updates): evaluate the conditions in a one-thread kernel, copy the
        flags back, branch on the host. Keeps the parallel nests around it parallel."""
        if not isinstance(s, ir.If) or self._header_is_host(s):
            return None
        bodies = [b for _, b in s.branches] + [s.orelse]
        if not all(self._is_host(x) for b in bodies for x in b):
            return None
        if not in_host_loop and any(
            isinstance(x, (ir.Exit, ir.Cycle)) for b in bodies for x in ir.walk(b)
        ):
            return None
        self.counter += 1
        probe = ir.If([(c, []) for c, _ in s.branches], [], s.line)
        region = _Serial(self.counter, [probe], "", conds=[c for c, _ in s.branches])
        self.serials.append(region)
        self.inside_host_loop[id(region)] = in_host_loop
        branches = [(ir.Var(n), b) for n, (_, b) in zip(region.cond_names, s.branches, strict=True)]
        for x in ir.walk([s]):
            if isinstance(x, ir.Return):
                self.uses_return = True
        return [_Launch(region, s.line), ir.If(branches, s.orelse, s.line)]

    def _host_construct(self, s: ir.Stmt) -> list:
        """The host version of a construct (plus the lines around it that its swaps need)."""
        if isinstance(s, ir.Loop):
            body = self.plan(s.body, True, loop=s)
            new = ir.Loop(s.var, s.start, s.stop, s.step, body, s.line, s.label)
        elif isinstance(s, ir.WhileLoop):
            body = self.plan(s.body, True, loop=s)
            new = ir.WhileLoop(s.cond, body, s.line, s.label)
        else:
            assert isinstance(s, ir.If)
            branches = []
            for c, b in s.branches:
                branches.append((c, self.plan(b, False)))
            new = ir.If(branches, self.plan(s.orelse, False), s.line)
        self.host_loops.append((new, s))
        stage = new.body[0] if isinstance(new, (ir.Loop, ir.WhileLoop)) and new.body else None
        if isinstance(stage, _SwapStage):
            return [_SwapStage("init", stage.swaps), new, _SwapStage("finish", stage.swaps)]
        return [new]

    def _new_serial(self, stmts: list[ir.Stmt], in_host_loop: bool) -> _Serial:
        self.counter += 1
        reasons = [
            f"line {x.line}: {x.reason}"
            for x in ir.walk(stmts)
            if isinstance(x, ir.Loop) and x.reason and not x.parallel
        ]
        region = _Serial(self.counter, stmts, "; ".join(reasons[:4]))
        region.has_return = any(isinstance(x, ir.Return) for x in ir.walk(stmts))
        self.serials.append(region)
        self.inside_host_loop[id(region)] = in_host_loop
        return region

    def _try_nest(self, loop: ir.Loop) -> _Nest | None:
        loops = [loop]
        while len(loops) < 3:
            inner = loops[-1].body
            if len(inner) != 1 or not isinstance(inner[0], ir.Loop):
                break
            if not (inner[0].parallel or id(inner[0]) in self.probed):
                break
            cand = inner[0]
            bound_names = set()
            for e in (cand.start, cand.stop, cand.step):
                for sub in ir.walk_expr(e):
                    if isinstance(sub, ir.Var):
                        bound_names.add(sub.name)
            if bound_names & {x.var for x in loops}:
                break  # triangular: the inner trip count varies with an outer index
            loops.append(cand)
        body = loops[-1].body
        reductions: list[ir.Reduction] = []
        private_arrays: list[str] = []
        for lp in loops:
            if id(lp) in self.probed:
                reds, privs = self.probed[id(lp)]
                reductions.extend(reds)
                private_arrays.extend(privs)
            else:
                reductions.extend(lp.reductions)
                private_arrays.extend(getattr(lp, "private_arrays", []))
        # Analysis lists a nest's reductions on every loop of it: keep one per variable.
        unique: dict[str, ir.Reduction] = {}
        for r in reductions:
            unique.setdefault(r.var, r)
        reductions = list(unique.values())
        if any(r.op not in REDUCTION_OPS for r in reductions):
            return None
        for s in ir.walk(body):
            if isinstance(s, (ir.Return, ir.Allocate, ir.Unsupported)):
                return None
        if _escaping_jump(body):
            return None
        # Local arrays used only inside this nest are per-thread scratch (cuda.local.array).
        outside_reads, outside_writes = _refs(_strip_loop(self.k.body, loop))
        reads, writes = _refs([loop])
        for name in sorted((reads | writes) & set(self.k.locals)):
            if name in self.arrays and name not in outside_reads | outside_writes:
                if name not in private_arrays:
                    private_arrays.append(name)
        for name in private_arrays:
            if self._const_shape(name) is None:
                return None
        nest = _Nest(
            0,
            loops,
            body,
            self._grid_order(loops, body),
            reductions,
            sorted(set(private_arrays)),
        )
        for r in reductions:
            if r.op in ("argmax", "argmin"):
                nest.first_occurrence = not _last_occurrence(body, r)
        self.nests.append(nest)
        return nest

    def _grid_order(self, loops: list[ir.Loop], body: list[ir.Stmt]) -> list[int]:
        """Loop indices for x, y, z: x gets the loop most used as the first (contiguous) index."""
        score = {k: 0 for k in range(len(loops))}
        var_index = {lp.var: k for k, lp in enumerate(loops)}
        for s in ir.walk(body):
            exprs = list(stmt_exprs(s))
            if isinstance(s, ir.Assign) and isinstance(s.target, ir.ArrayRef):
                exprs.append(s.target)
            for e in exprs:
                for sub in ir.walk_expr(e):
                    if isinstance(sub, ir.ArrayRef) and sub.indices:
                        for pos, ix in enumerate(sub.indices):
                            if isinstance(ix, ir.Slice):
                                continue
                            names = {x.name for x in ir.walk_expr(ix) if isinstance(x, ir.Var)}
                            for v in names & set(var_index):
                                # First subscript weighs most; later ones rank y before z.
                                score[var_index[v]] += 1000 if pos == 0 else 10 // (pos + 1)
        # Ties keep the innermost loop first (Fortran's usual order already matches).
        return sorted(range(len(loops)), key=lambda k: (-score[k], -k))

    def _const_shape(self, name: str) -> list[int] | None:
        env = {n: c.value for n, c in self.k.constants.items() if not isinstance(c.value, bool)}
        shape = []
        for d in self.scope.dims.get(name, []):
            if d.upper is None:
                return None
            try:
                shape.append(ir.eval_int(d.upper, env) - ir.eval_int(d.lower, env) + 1)
            except (ir.NotConstant, ValueError, ZeroDivisionError):
                return None
        return shape

    # -- liveness of scalars written on the device -----------------------------------------------
    def _outputs(self) -> list[str]:
        outs = [self.result_name] if self.result_name else []
        outs += [a.name for a in self.k.args if not a.dims and a.intent in ("out", "inout")]
        return outs

    def _box_for(self, region: _Serial) -> list[str]:
        if region.conds:
            return []
        _, writes = _refs(region.stmts)
        written = sorted(n for n in writes if n in self.scalars)
        skip = {id(s) for s in region.stmts}
        outside = _without(self.k.body, skip)
        outs = set(self._outputs())
        loop_vars = {x.var for x in ir.walk(region.stmts) if isinstance(x, ir.Loop)}
        assigned = {
            x.target.name
            for x in ir.walk(region.stmts)
            if isinstance(x, ir.Assign) and isinstance(x.target, ir.Var)
        }
        box = []
        for n in written:
            needed = n in outs or _reads_unbound(outside, n)
            if not needed and self.inside_host_loop.get(id(region)):
                # Inside a host loop the next launch starts from the host's value.
                needed = n in assigned or n not in loop_vars
            if needed:
                box.append(n)
        return box

    # -- printing helpers ----------------------------------------------------------------------
    def _expr_printer(self) -> ExprPrinter:
        return ExprPrinter(self.scope)

    def _kernel_params(self, stmts: list[ir.Stmt], exclude: set[str]) -> tuple[list, list]:
        """(arrays, scalars) a kernel needs, in a stable order."""
        reads, writes = _refs(stmts)
        names = reads | writes
        arrays = sorted(n for n in names if n in self.arrays)
        # Lower bounds of the arrays appear in the subscripts (extents come from .shape).
        for a in arrays:
            for d in self.scope.dims[a]:
                for part in (d.lower,):
                    for sub in ir.walk_expr(part):
                        if isinstance(sub, ir.Var):
                            names.add(sub.name)
        scalars = sorted(n for n in names if n in self.scalars and n not in exclude)
        return arrays, scalars

    def _nest_params(self, nest: _Nest) -> tuple[list[str], list[str]]:
        """(arrays, scalars) a nest kernel takes before its loop bounds and reduction slots."""
        red_vars = {r.var for r in nest.reductions} | {
            v for r in nest.reductions for v in r.index_vars
        }
        loop_vars = {lp.var for lp in nest.loops}
        arrays, scalars = self._kernel_params(nest.body, set())
        _, written = _refs(nest.body)
        scalars = [s for s in scalars if s not in written | loop_vars | red_vars]
        arrays = [a for a in arrays if a not in set(nest.private_arrays)]
        return arrays, scalars

    def _param_types(self, arrays: list[str], scalars: list[str]) -> list[str]:
        """numba types of a kernel's array and scalar parameters (its explicit signature)."""
        out = [_sig_array(self.scope.type(a), len(self.scope.dims[a])) for a in arrays]
        return out + [_numba_scalar(self.scope.type(x)) for x in scalars]

    def _device_body(self, stmts: list[ir.Stmt], depth: int, returns: str = "return") -> list:
        p = self._expr_printer()
        printer = _DevicePrinter(p, returns=returns, all_stmts=self.k.body)
        lines = printer.block(stmts, depth)
        self.helpers |= p.helpers
        return lines

    def _local_arrays(self, names: list[str], depth: int) -> list[str]:
        lines = []
        for n in names:
            shape = self._const_shape(n)
            assert shape is not None
            t = self.scope.type(n)
            dims = ", ".join(str(x) for x in shape)
            lines.append(
                f"{_IND * depth}{py_name(n)} = cuda.local.array(({dims},), {_numba_type(t)})"
            )
        return lines

    # -- kernels -------------------------------------------------------------------------------
    def nest_kernel(self, nest: _Nest) -> list[str]:
        nd = len(nest.loops)
        arrays, scalars = self._nest_params(nest)
        params = [py_name(a) for a in arrays] + [py_name(s) for s in scalars]
        sig = self._param_types(arrays, scalars)
        for k in range(nd):
            params += [f"_lo{k}", f"_st{k}", f"_n{k}"]
            sig += ["int64"] * 3
        red_params = []
        for r in nest.reductions:
            red_params.append(f"_r_{py_name(r.var)}")
            red_params += [f"_r_{py_name(v)}" for v in r.index_vars]
            sig += [_numba_scalar(self.scope.type(n)) for n in [r.var, *r.index_vars]]
        partials = self._partial_names(nest)
        sig += [_sig_array(t, 1) for _, _, t in self._slots(nest)]
        params += red_params + partials
        self.signatures[nest.name] = f"void({', '.join(sig)})"
        lines = ["@cuda.jit", f"def {nest.name}({', '.join(params)}):"]
        axes = "xyz"
        doc = [
            f"{_IND}# line {lp.line}: do {lp.var} (grid {axes[nest.grid_order.index(k)]})"
            for k, lp in enumerate(nest.loops)
        ]
        lines += doc
        tvars = [f"_t{k}" for k in nest.grid_order]
        if nd == 1:
            lines.append(f"{_IND}{tvars[0]} = cuda.grid(1)")
        else:
            lines.append(f"{_IND}{', '.join(tvars)} = cuda.grid({nd})")
        lines += self._local_arrays(nest.private_arrays, 1)
        for r in nest.reductions:
            lines.append(f"{_IND}{py_name(r.var)} = _r_{py_name(r.var)}")
            for v in r.index_vars:
                lines.append(f"{_IND}{py_name(v)} = _r_{py_name(v)}")
            if r.op in ("argmax", "argmin"):
                lines.append(f"{_IND}_key = {'_KEY_NONE' if nest.first_occurrence else -1}")
        guard = " and ".join(f"_t{k} < _n{k}" for k in range(nd))
        lines.append(f"{_IND}if {guard}:")
        for k, lp in enumerate(nest.loops):
            lines.append(f"{_IND * 2}{py_name(lp.var)} = _lo{k} + _t{k} * _st{k}")
        lines += self._device_body(nest.body, 2)
        for r in nest.reductions:
            if r.op in ("argmax", "argmin"):
                changed = " or ".join(
                    f"{py_name(v)} != _r_{py_name(v)}" for v in [r.var, *r.index_vars]
                )
                key = "_t0"
                for k in range(1, nd):
                    key = f"({key}) * _n{k} + _t{k}"
                lines.append(f"{_IND * 2}if {changed}:")
                lines.append(f"{_IND * 3}_key = {key}")
        if nest.reductions:
            lines += self._block_reduction(nest)
        return lines

    def _fused_params(self, fused: _Fused) -> tuple[list[str], list[str]]:
        arrays: set[str] = set()
        scalars: set[str] = set()
        loop_vars = {lp.var for n in fused.nests for lp in n.loops}
        for nest in fused.nests:
            a, sc = self._kernel_params(nest.body, set())
            _, written = _refs(nest.body)
            arrays |= set(a)
            scalars |= {x for x in sc if x not in written}
        return sorted(arrays), sorted(scalars - loop_vars)

    def fused_kernel(self, fused: _Fused) -> list[str]:
        arrays, scalars = self._fused_params(fused)
        nd = fused.rank
        params = [py_name(a) for a in arrays] + [py_name(x) for x in scalars]
        sig = [_sig_array(self.scope.type(a), len(self.scope.dims[a])) for a in arrays]
        sig += [_numba_scalar(self.scope.type(x)) for x in scalars]
        for q in range(len(fused.nests)):
            for k in range(nd):
                params += [f"_lo{q}_{k}", f"_st{q}_{k}", f"_n{q}_{k}"]
                sig += ["int64"] * 3
        self.signatures[fused.name] = f"void({', '.join(sig)})"
        lines = ["@cuda.jit", f"def {fused.name}({', '.join(params)}):"]
        lines.append(
            f"{_IND}# {len(fused.nests)} independent {nd}-D nests in one launch (a thread runs "
            "its grid point of each)"
        )
        axes = [f"_g{p}" for p in range(nd)]
        lines.append(
            f"{_IND}{', '.join(axes)} = cuda.grid({nd})" if nd > 1 else f"{_IND}_g0 = cuda.grid(1)"
        )
        for q, nest in enumerate(fused.nests):
            heads = ", ".join(f"do {lp.var}" for lp in nest.loops)
            lines.append(f"{_IND}# line {nest.loops[0].line}: {heads}")
            # Loop k of nest q runs on the grid axis its own plan gave it.
            guard = " and ".join(f"{axes[nest.grid_order.index(k)]} < _n{q}_{k}" for k in range(nd))
            lines.append(f"{_IND}if {guard}:")
            for k, lp in enumerate(nest.loops):
                g = axes[nest.grid_order.index(k)]
                lines.append(f"{_IND * 2}{py_name(lp.var)} = _lo{q}_{k} + {g} * _st{q}_{k}")
            lines += self._device_body(nest.body, 2)
        return lines

    def _scratch(self, nest: _Nest) -> int:
        """Entries of each shared scratch array: a block's threads, within 48 KiB in all."""
        per_thread = sum(8 for _ in self._slots(nest))  # every slot is at most 8 bytes
        n = MAX_BLOCK_THREADS
        while n > 32 and n * per_thread > STATIC_SHARED_BYTES:
            n //= 2
        return n

    def _partial_names(self, nest: _Nest) -> list[str]:
        names = []
        for j, r in enumerate(nest.reductions):
            names.append(f"_p{j}")
            if r.op in ("argmax", "argmin"):
                names.append(f"_p{j}_key")
                names += [f"_p{j}_{py_name(v)}" for v in r.index_vars]
        return names

    def _slots(self, nest: _Nest) -> list[tuple[str, str, ir.FType]]:
        """(value expression in a thread, partial array, type) per reduction slot."""
        slots = []
        for j, r in enumerate(nest.reductions):
            slots.append((py_name(r.var), f"_p{j}", self.scope.type(r.var)))
            if r.op in ("argmax", "argmin"):
                slots.append(("_key", f"_p{j}_key", ir.FType("integer", 8)))
                for v in r.index_vars:
                    slots.append((py_name(v), f"_p{j}_{py_name(v)}", self.scope.type(v)))
        return slots

    def _combine(
        self, nest: _Nest, dst: list[str], a: str, src: list[str], b: str, depth: int
    ) -> list[str]:
        """Lines folding the slot values ``src[..][b]`` into ``dst[..][a]``, slot by slot.

        ``dst`` and ``src`` list the same slots (argmax/argmin take value, key and index slots);
        they are the same shared arrays inside a block, the per-block partials in the finish pass.
        """
        ind = _IND * depth
        lines = []
        k = 0
        for r in nest.reductions:
            v, w = dst[k], src[k]
            if r.op in ("+", "*"):
                lines.append(f"{ind}{v}[{a}] = {v}[{a}] {r.op} {w}[{b}]")
                k += 1
            elif r.op in ("min", "max"):
                lines.append(f"{ind}{v}[{a}] = {r.op}({v}[{a}], {w}[{b}])")
                k += 1
            else:
                width = 2 + len(r.index_vars)
                better = ">" if r.op == "argmax" else "<"
                tie = "<" if nest.first_occurrence else ">"
                lines.append(
                    f"{ind}if {w}[{b}] {better} {v}[{a}] or "
                    f"({w}[{b}] == {v}[{a}] and {src[k + 1]}[{b}] {tie} {dst[k + 1]}[{a}]):"
                )
                for q in range(width):
                    lines.append(f"{ind}{_IND}{dst[k + q]}[{a}] = {src[k + q]}[{b}]")
                k += width
        return lines

    def _block_reduction(self, nest: _Nest) -> list[str]:
        slots = self._slots(nest)
        lines = [
            f"{_IND}# Block reduction in shared memory; thread 0 writes the block's partial.",
            f"{_IND}_tid = cuda.threadIdx.x + cuda.blockDim.x * "
            "(cuda.threadIdx.y + cuda.blockDim.y * cuda.threadIdx.z)",
            f"{_IND}_nt = cuda.blockDim.x * cuda.blockDim.y * cuda.blockDim.z",
        ]
        sh = []
        for j, (value, _, t) in enumerate(slots):
            lines.append(
                f"{_IND}_sh{j} = cuda.shared.array({self._scratch(nest)}, {_numba_type(t)})"
            )
            lines.append(f"{_IND}_sh{j}[_tid] = {value}")
            sh.append(f"_sh{j}")
        lines += self._tree(nest, sh, 1)
        lines.append(f"{_IND}if _tid == 0:")
        lines.append(
            f"{_IND * 2}_b = cuda.blockIdx.x + cuda.gridDim.x * "
            "(cuda.blockIdx.y + cuda.gridDim.y * cuda.blockIdx.z)"
        )
        for j, (_, part, _) in enumerate(slots):
            lines.append(f"{_IND * 2}{part}[_b] = _sh{j}[0]")
        return lines

    def _tree(self, nest: _Nest, sh: list[str], depth: int) -> list[str]:
        ind = _IND * depth
        lines = [
            f"{ind}cuda.syncthreads()",
            f"{ind}_s = 1",
            f"{ind}while _s < _nt:",
            f"{ind}{_IND}_s *= 2",
            f"{ind}_s //= 2",
            f"{ind}while _s > 0:",
            f"{ind}{_IND}if _tid < _s and _tid + _s < _nt:",
        ]
        lines += self._combine(nest, sh, "_tid", sh, "_tid + _s", depth + 2)
        lines += [f"{ind}{_IND}cuda.syncthreads()", f"{ind}{_IND}_s //= 2"]
        return lines

    def finish_kernel(self, nest: _Nest) -> list[str]:
        """One block combines the per-block partials and writes the results to ``_box``."""
        slots = self._slots(nest)
        parts = [p for _, p, _ in slots]
        inits = []
        for r in nest.reductions:
            inits.append(f"_i_{py_name(r.var)}")
            inits += [f"_i_{py_name(v)}" for v in r.index_vars]
        params = parts + ["_nb", "_box"] + inits
        sig = [_sig_array(t, 1) for _, _, t in slots] + ["int64", "float64[::1]"]
        sig += [
            _numba_scalar(self.scope.type(n))
            for r in nest.reductions
            for n in [r.var, *r.index_vars]
        ]
        self.signatures[f"{nest.name}_finish"] = f"void({', '.join(sig)})"
        lines = ["@cuda.jit", f"def {nest.name}_finish({', '.join(params)}):"]
        lines.append(f"{_IND}_tid = cuda.threadIdx.x")
        lines.append(f"{_IND}_nt = cuda.blockDim.x")
        sh = []
        for j, (_, _part, t) in enumerate(slots):
            lines.append(f"{_IND}_sh{j} = cuda.shared.array(_FINISH_THREADS, {_numba_type(t)})")
            sh.append(f"_sh{j}")
        # Each thread starts from block _tid's partial (or block 0's when there are fewer blocks:
        # min/max/argmax are idempotent, and +/* threads beyond _nb are masked below).
        lines.append(f"{_IND}_first = _tid if _tid < _nb else 0")
        for j, (_, part, _) in enumerate(slots):
            lines.append(f"{_IND}_sh{j}[_tid] = {part}[_first]")
        lines.append(f"{_IND}_j = _tid + _nt")
        lines.append(f"{_IND}while _j < _nb:")
        # Fold partial _j into this thread's slot.
        lines += self._combine(nest, sh, "_tid", parts, "_j", 2)
        lines.append(f"{_IND * 2}_j += _nt")
        # Threads with no partial of their own hold block 0's copy: neutral only for the
        # idempotent operations, so +/* reset them to the identity.
        k = 0
        for r in nest.reductions:
            if r.op in ("+", "*"):
                ident = "0" if r.op == "+" else "1"
                lines.append(f"{_IND}if _tid >= _nb:")
                lines.append(f"{_IND * 2}{sh[k]}[_tid] = {ident}")
                k += 1
            elif r.op in ("min", "max"):
                k += 1
            else:
                k += 2 + len(r.index_vars)
        lines += self._tree(nest, sh, 1)
        lines.append(f"{_IND}if _tid == 0:")
        k = 0
        slot = 0
        for r in nest.reductions:
            iv = f"_i_{py_name(r.var)}"
            if r.op == "+":
                lines.append(f"{_IND * 2}_box[{slot}] = {iv} + {sh[k]}[0]")
                k += 1
                slot += 1
            elif r.op == "*":
                lines.append(f"{_IND * 2}_box[{slot}] = {iv} * {sh[k]}[0]")
                k += 1
                slot += 1
            elif r.op in ("min", "max"):
                lines.append(f"{_IND * 2}_box[{slot}] = {sh[k]}[0]")
                k += 1
                slot += 1
            else:
                none = "_KEY_NONE" if nest.first_occurrence else -1
                lines.append(f"{_IND * 2}if {sh[k + 1]}[0] != {none}:")
                lines.append(f"{_IND * 3}_box[{slot}] = {sh[k]}[0]")
                for q in range(len(r.index_vars)):
                    lines.append(f"{_IND * 3}_box[{slot + 1 + q}] = {sh[k + 2 + q]}[0]")
                lines.append(f"{_IND * 2}else:")
                lines.append(f"{_IND * 3}_box[{slot}] = {iv}")
                for q, v in enumerate(r.index_vars):
                    lines.append(f"{_IND * 3}_box[{slot + 1 + q}] = _i_{py_name(v)}")
                k += 2 + len(r.index_vars)
                slot += 1 + len(r.index_vars)
        return lines

    def serial_kernel(self, region: _Serial) -> list[str]:
        if region.conds:
            return self._condition_kernel(region)
        region.box = self._box_for(region)
        arrays, scalars = self._kernel_params(region.stmts, set())
        params = [py_name(a) for a in arrays] + [py_name(s) for s in scalars] + ["_box"]
        sig = self._param_types(arrays, scalars) + ["float64[::1]"]
        self.signatures[region.name] = f"void({', '.join(sig)})"
        lines = ["@cuda.jit", f"def {region.name}({', '.join(params)}):"]
        why = region.reason or "statements that touch arrays outside a parallel loop"
        lines.append(f"{_IND}# One thread runs these statements in Fortran order: {why}")
        writes = [f"_box[{j}] = {py_name(n)}" for j, n in enumerate(region.box)]
        ret = "return"
        if region.has_return:
            ret = "; ".join([*writes, f"_box[{len(region.box)}] = 1", "return"])
        lines += self._device_body(region.stmts, 1, returns=ret)
        lines += [f"{_IND}{w}" for w in writes]
        return lines

    def _condition_kernel(self, region: _Serial) -> list[str]:
        arrays, scalars = self._kernel_params(region.stmts, set())
        params = [py_name(a) for a in arrays] + [py_name(x) for x in scalars] + ["_box"]
        sig = self._param_types(arrays, scalars) + ["float64[::1]"]
        self.signatures[region.name] = f"void({', '.join(sig)})"
        lines = ["@cuda.jit", f"def {region.name}({', '.join(params)}):"]
        lines.append(f"{_IND}# IF conditions that read device arrays, evaluated for the host")
        p = self._expr_printer()
        for j, cond in enumerate(region.conds):
            lines.append(f"{_IND}_box[{j}] = 1.0 if {p.expr(cond)} else 0.0")
        self.helpers |= p.helpers
        return lines

    def device_functions(self) -> list[str]:
        lines: list[str] = []
        for name, proc in self.k.functions.items():
            scope = Scope.from_procedure(proc, self.scope)
            p = ExprPrinter(scope)
            outs = []
            if proc.kind == "function":
                outs = [proc.result or proc.name]
            else:
                outs = [
                    a
                    for a in proc.args
                    if a in proc.decls
                    and not proc.decls[a].dims
                    and proc.decls[a].intent in ("out", "inout")
                ]
            ret = "return " + ", ".join(py_name(o) for o in outs) if outs else "return"
            printer = _DevicePrinter(p, returns=ret, all_stmts=proc.body)
            lines.append("@cuda.jit(device=True)")
            lines.append(f"def {py_name(name)}({', '.join(py_name(a) for a in proc.args)}):")
            kind = "elemental " if proc.elemental else ("pure " if proc.pure else "")
            lines.append(f'{_IND}"""Fortran {kind}{proc.kind} {name} (line {proc.line})."""')
            for local, d in proc.decls.items():
                if local in proc.args or not d.dims or d.parameter is not None:
                    continue
                env = {n: c.value for n, c in scope.constants.items()}
                try:
                    dims = [
                        ir.eval_int(x.upper, env) - ir.eval_int(x.lower, env) + 1 for x in d.dims
                    ]
                except (ir.NotConstant, ValueError, TypeError) as exc:
                    raise CodegenError(
                        f"local array {local} of {name} has no constant shape", d.line
                    ) from exc
                lines.append(
                    f"{_IND}{py_name(local)} = cuda.local.array("
                    f"({', '.join(map(str, dims))},), {_numba_type(d.type)})"
                )
            lines += printer.block(proc.body, 1)
            lines.append(f"{_IND}{ret}")
            lines.append("")
            lines.append("")
            self.helpers |= p.helpers
        return lines

    def scalar_device_version(self) -> list[str]:
        """A scalar-only routine runs on the host; emit its device twin for use in kernels."""
        outs = self._outputs()
        ret = "return " + ", ".join(py_name(o) for o in outs) if outs else "return"
        name = f"{py_name(self.k.name)}_device"
        lines = [
            "@cuda.jit(device=True)",
            f"def {name}({', '.join(py_name(a.name) for a in self.k.args)}):",
            f'{_IND}"""Device version of {self.k.name}: callable from other CUDA kernels."""',
        ]
        for local, t in sorted(self.scalars.items()):
            if local not in {a.name for a in self.k.args}:
                zero = "False" if t.base == "logical" else "0"
                lines.append(f"{_IND}{py_name(local)} = {_np_type(t)}({zero})")
        lines += self._device_body(self.k.body, 1, returns=ret)
        lines += [f"{_IND}{ret}", "", ""]
        self.notes_extra.append(
            f"scalar-only {self.k.origin}: the entry computes on the host (a launch would cost "
            f"more than the work); {name} is the same code as a CUDA device function"
        )
        return lines

    # -- host ----------------------------------------------------------------------------------
    def launch_lines(
        self, region: _Nest | _Serial | _Fused, depth: int, rename: dict[str, str] | None = None
    ) -> list[str]:
        """Host lines launching ``region``; ``rename`` passes other device arrays for some of a
        nest's array parameters (the reverse copy after a loop with swaps)."""
        ind = _IND * depth
        p = self._expr_printer()
        if isinstance(region, _Serial) and region.conds:
            arrays, scalars = self._kernel_params(region.stmts, set())
            args = [f"_d_{py_name(a)}" for a in arrays] + [py_name(x) for x in scalars]
            lines = [f"{ind}_box = cuda.device_array({len(region.conds)}, np.float64)"]
            lines.append(f"{ind}_launch({region.name}, 1, 1)({', '.join([*args, '_box'])})")
            lines.append(f"{ind}_h = _box.copy_to_host()")
            for j, name in enumerate(region.cond_names):
                lines.append(f"{ind}{name} = _h[{j}] != 0")
            return lines
        if isinstance(region, _Serial):
            arrays, scalars = self._kernel_params(region.stmts, set())
            args = [f"_d_{py_name(a)}" for a in arrays] + [py_name(s) for s in scalars]
            nbox = len(region.box) + (1 if region.has_return else 0)
            if region.has_return:  # the RETURN flag must start at 0
                lines = [f"{ind}_box = cuda.to_device(np.zeros({nbox}))"]
            else:
                lines = [f"{ind}_box = cuda.device_array({max(nbox, 1)}, np.float64)"]
            lines.append(f"{ind}_launch({region.name}, 1, 1)({', '.join([*args, '_box'])})")
            if nbox:
                lines.append(f"{ind}_h = _box.copy_to_host()")
                for j, n in enumerate(region.box):
                    lines.append(f"{ind}{py_name(n)} = {self._from_box(n, f'_h[{j}]')}")
                if region.has_return:
                    lines.append(f"{ind}if _h[{len(region.box)}]:")
                    lines.append(f"{ind}{_IND}raise _FortranReturn()")
                    self.uses_return = True
            return lines
        if isinstance(region, _Fused):
            return self._fused_launch(region, depth)
        nest = region
        nd = len(nest.loops)
        lines = []
        for k, lp in enumerate(nest.loops):
            lo = self._host_int(p, lp.start)
            hi = self._host_int(p, lp.stop)
            st = self._host_int(p, lp.step) if lp.step is not None else "1"
            lines.append(f"{ind}_lo{k}, _st{k} = {lo}, {st}")
            lines.append(f"{ind}_n{k} = _trip(_lo{k}, {hi}, _st{k})")
        arrays, scalars = self._nest_params(nest)
        rename = rename or {}
        args = [rename.get(a, f"_d_{py_name(a)}") for a in arrays] + [py_name(s) for s in scalars]
        for k in range(nd):
            args += [f"_lo{k}", f"_st{k}", f"_n{k}"]
        block = f"_block{nd}"
        sizes = ", ".join(f"_n{k}" for k in nest.grid_order)
        lines.append(f"{ind}_grid = _grid_for(({sizes},), {block})")
        guard = " and ".join(f"_n{k} > 0" for k in range(nd))
        if nest.reductions:
            lines += self._reduction_launch(nest, args, block, guard, ind)
        else:
            lines.append(f"{ind}if {guard}:")
            lines.append(f"{ind}{_IND}_launch({nest.name}, _grid, {block})({', '.join(args)})")
        # The DO variables keep Fortran's final values for any later use on the host.
        outside = _strip_loop(self.k.body, nest.loops[0])
        for k, lp in enumerate(nest.loops):
            if _reads_unbound(outside, lp.var):
                t = _np_type(self.scope.type(lp.var))
                lines.append(f"{ind}{py_name(lp.var)} = {t}(_lo{k} + _n{k} * _st{k})")
        return lines

    def swap_lines(self, swap: _Swap, depth: int) -> list[str]:
        ind = _IND * depth
        a, b = py_name(swap.a), py_name(swap.b)
        return [
            f"{ind}# line {swap.line}: {swap.a} = {swap.b} carries the step's result: the device "
            "buffers are swapped, no copy is launched",
            f"{ind}_d_{a}, _d_{b} = _d_{b}, _d_{a}",
        ]

    def swap_stage_lines(self, stage: _SwapStage, depth: int) -> list[str]:
        ind = _IND * depth
        lines: list[str] = []
        for swap in stage.swaps:
            a, b = py_name(swap.a), py_name(swap.b)
            if stage.stage == "init":
                lines.append(f"{ind}{swap.flag} = False  # {swap.a}/{swap.b} not swapped yet")
            elif stage.stage == "prepare":
                lines += [
                    f"{ind}if not {swap.flag}:",
                    f"{ind}{_IND}# Once: {swap.b}'s buffer takes {swap.a}'s values, so both "
                    f"carry {swap.a}'s edges outside the copied region",
                    f"{ind}{_IND}_d_{b}.copy_to_device(_d_{a})",
                    f"{ind}{_IND}{swap.flag} = True",
                ]
            elif swap.finish:
                lines += [
                    f"{ind}if {swap.flag}:",
                    f"{ind}{_IND}# Fortran's final {swap.b}: its entry values, then the last "
                    f"copy's region from {swap.a}",
                    f"{ind}{_IND}_d_{b}.copy_to_device(np.asfortranarray({b}))",
                ]
                rename = {swap.a: f"_d_{b}", swap.b: f"_d_{a}"}
                lines += self.launch_lines(swap.copy, depth + 1, rename=rename)
        return lines or [f"{ind}pass"]

    # -- the model's view of the driver ----------------------------------------------------------
    def launch_plan(self, body: list) -> gpu_model.LaunchPlan:
        """What one time step launches (see ``gpu_model``), from the planned host body."""

        def count(items: list) -> int:
            n = 0
            for x in items:
                if isinstance(x, _Launch):
                    n += 1
                elif isinstance(x, (ir.Loop, ir.WhileLoop)):
                    n += count(x.body)
                elif isinstance(x, ir.If):
                    n += sum(count(b) for _, b in x.branches) + count(x.orelse)
            return n

        loops = [x for x in body if isinstance(x, (ir.Loop, ir.WhileLoop)) and count(x.body)]
        time_loop = max(loops, key=lambda x: count(x.body)) if loops else None
        per_step: list[gpu_model.Launch] = []

        def collect(items: list, repeat: tuple) -> None:
            for x in items:
                if isinstance(x, _Launch):
                    per_step.append(self._model_launch(x.region, repeat))
                elif isinstance(x, ir.Loop):
                    collect(x.body, (*repeat, gpu_model.Bound(x.var, x.start, x.stop, x.step)))
                elif isinstance(x, ir.WhileLoop):
                    collect(x.body, (*repeat, None))
                elif isinstance(x, ir.If):
                    for _, b in x.branches:
                        collect(b, repeat)
                    collect(x.orelse, repeat)

        collect(time_loop.body if time_loop is not None else body, ())
        arrays = {
            name: gpu_model.ArrayInfo(_itemsize(self.scope.type(name)), list(dims))
            for name, dims in self.scope.dims.items()
        }
        bound = None
        if isinstance(time_loop, ir.Loop):
            bound = gpu_model.Bound(time_loop.var, time_loop.start, time_loop.stop, time_loop.step)
        return gpu_model.LaunchPlan(
            arrays,
            per_step,
            bound,
            time_loop.line if time_loop is not None else 0,
            [(x.a, x.b) for x in self.swaps],
            eager_signatures=True,
        )

    def _model_launch(self, region, repeat: tuple) -> gpu_model.Launch:
        arrays = self.arrays
        if isinstance(region, _Serial):
            r, w = _array_refs(region.stmts, [], arrays)
            a, sc = self._kernel_params(region.stmts, set())
            return gpu_model.Launch(
                region.name,
                "condition" if region.conds else "serial",
                {name: [refs] for name, refs in r.items()},
                {name: [refs] for name, refs in w.items()},
                len(a) + 1,
                len(sc),
                waits=bool(region.conds or region.box or region.has_return),
                repeat=repeat,
            )
        nests = region.nests if isinstance(region, _Fused) else [region]
        reads: dict[str, list] = {}
        writes: dict[str, list] = {}
        for nest in nests:
            bounds = [gpu_model.Bound(lp.var, lp.start, lp.stop, lp.step) for lp in nest.loops]
            r, w = _array_refs(nest.body, bounds, arrays - set(nest.private_arrays))
            for src, dst in ((r, reads), (w, writes)):
                for name, refs in src.items():
                    dst.setdefault(name, []).append(refs)
        if isinstance(region, _Fused):
            a, sc = self._fused_params(region)
            nscalar = len(sc) + 3 * region.rank * len(region.nests)
            return gpu_model.Launch(
                region.name, "fused", reads, writes, len(a), nscalar, repeat=repeat
            )
        a, sc = self._nest_params(region)
        slots = len(self._slots(region))
        return gpu_model.Launch(
            region.name,
            "nest",
            reads,
            writes,
            len(a) + slots,
            len(sc) + 3 * len(region.loops) + slots,
            pure_copy=self._pure_copy(region) is not None,
            waits=bool(region.reductions),
            extra_launches=1 if region.reductions else 0,
            repeat=repeat,
        )

    def _fused_launch(self, fused: _Fused, depth: int) -> list[str]:
        ind = _IND * depth
        p = self._expr_printer()
        nd = fused.rank
        lines = []
        per_axis: list[list[str]] = [[] for _ in range(nd)]
        for q, nest in enumerate(fused.nests):
            for k, lp in enumerate(nest.loops):
                lo, hi = self._host_int(p, lp.start), self._host_int(p, lp.stop)
                st = self._host_int(p, lp.step) if lp.step is not None else "1"
                lines.append(f"{ind}_lo{q}_{k}, _st{q}_{k} = {lo}, {st}")
                lines.append(f"{ind}_n{q}_{k} = _trip(_lo{q}_{k}, {hi}, _st{q}_{k})")
                per_axis[nest.grid_order.index(k)].append(f"_n{q}_{k}")
        for g, trips in enumerate(per_axis):
            lines.append(f"{ind}_m{g} = max({', '.join(trips)})")
        arrays, scalars = self._fused_params(fused)
        args = [f"_d_{py_name(a)}" for a in arrays] + [py_name(x) for x in scalars]
        for q in range(len(fused.nests)):
            for k in range(nd):
                args += [f"_lo{q}_{k}", f"_st{q}_{k}", f"_n{q}_{k}"]
        sizes = ", ".join(f"_m{g}" for g in range(nd))
        lines.append(f"{ind}if {' and '.join(f'_m{g} > 0' for g in range(nd))}:")
        lines.append(
            f"{ind}{_IND}_launch({fused.name}, _grid_for(({sizes},), _block{nd}), _block{nd})"
            f"({', '.join(args)})"
        )
        outside = _without(self.k.body, {id(n.loops[0]) for n in fused.nests})
        for q, nest in enumerate(fused.nests):
            for k, lp in enumerate(nest.loops):
                if _reads_unbound(outside, lp.var):
                    t = _np_type(self.scope.type(lp.var))
                    lines.append(
                        f"{ind}{py_name(lp.var)} = {t}(_lo{q}_{k} + _n{q}_{k} * _st{q}_{k})"
                    )
        return lines

    def _reduction_launch(self, nest: _Nest, args, block: str, guard: str, ind: str) -> list:
        lines = [
            f"{ind}_nb = _grid[0] * (_grid[1] if len(_grid) > 1 else 1) * "
            "(_grid[2] if len(_grid) > 2 else 1)"
        ]
        red_args = []
        inits = []
        for r in nest.reductions:
            t = _np_type(self.scope.type(r.var))
            if r.op == "+":
                red_args.append(f"{t}(0)")
            elif r.op == "*":
                red_args.append(f"{t}(1)")
            else:
                red_args.append(py_name(r.var))
            red_args += [py_name(v) for v in r.index_vars]
            inits.append(py_name(r.var))
            inits += [py_name(v) for v in r.index_vars]
        lines.append(f"{ind}if math.prod({block}) > {self._scratch(nest)}:")
        lines.append(
            f"{ind}{_IND}raise ValueError('{nest.name}: a reduction block may have at most "
            f"{self._scratch(nest)} threads')"
        )
        parts = []
        for _, part, t in self._slots(nest):
            lines.append(f"{ind}{part} = cuda.device_array(max(_nb, 1), {_np_type(t)})")
            parts.append(part)
        nbox = len(inits)
        lines.append(f"{ind}_box = cuda.device_array({nbox}, np.float64)")
        lines.append(f"{ind}if {guard}:")
        lines.append(
            f"{ind}{_IND}_launch({nest.name}, _grid, {block})"
            f"({', '.join([*args, *red_args, *parts])})"
        )
        lines.append(
            f"{ind}{_IND}_launch({nest.name}_finish, 1, _FINISH_THREADS)"
            f"({', '.join([*parts, '_nb', '_box', *inits])})"
        )
        lines.append(f"{ind}{_IND}_h = _box.copy_to_host()")
        j = 0
        for r in nest.reductions:
            for n in [r.var, *r.index_vars]:
                lines.append(f"{ind}{_IND}{py_name(n)} = {self._from_box(n, f'_h[{j}]')}")
                j += 1
        return lines

    def _from_box(self, name: str, text: str) -> str:
        t = self.scope.type(name)
        if t.base == "logical":
            return f"np.bool_({text} != 0)"
        if t.base == "integer":
            return f"{_np_type(t)}(int({text}))"
        return f"{_np_type(t)}({text})"

    def _host_int(self, p: ExprPrinter, e: ir.Expr) -> str:
        text = p.expr(e)
        self.helpers |= p.helpers
        text = _HELPER_CALL.sub(r"_host_f_\1(", text)
        return text if re.fullmatch(r"-?\d+", text) else f"int({text})"

    def driver(self, body: list) -> list[str]:
        k = self.k
        fn = py_name(k.name)
        params = [py_name(a.name) for a in k.args]
        sig = ", ".join(params)
        sig = (
            f"{sig}, *, block_1d=None, block_2d=None, block_3d=None"
            if sig
            else ("*, block_1d=None, block_2d=None, block_3d=None")
        )
        lines = [f"def {fn}({sig}):"]
        lines.append(f'{_IND}"""Fortran {k.origin} {k.fortran_entry} (line {k.line}) on the GPU.')
        lines.append("")
        lines.append(
            f"{_IND}Arrays are F-ordered numpy arrays, modified in place (INTENT(OUT/INOUT) are"
        )
        lines.append(f"{_IND}copied back); scalar INTENT(OUT/INOUT) values are returned.")
        lines.append(f'{_IND}"""')
        lines.append(f"{_IND}_block1 = tuple(block_1d or BLOCK_1D)")
        lines.append(f"{_IND}_block2 = tuple(block_2d or BLOCK_2D)")
        lines.append(f"{_IND}_block3 = tuple(block_3d or BLOCK_3D)")
        if self.nests or self.serials or self.fused:
            lines.append(f"{_IND}_compile_all()")
        for a in k.args:
            if not a.dims:
                lines.append(f"{_IND}{py_name(a.name)} = {_np_type(a.type)}({py_name(a.name)})")
        for name, t in sorted(self.scalars.items()):
            if name in {a.name for a in k.args}:
                continue
            zero = "False" if t.base == "logical" else "0"
            lines.append(f"{_IND}{py_name(name)} = {_np_type(t)}({zero})")
        lines.append(f"{_IND}# Copy in once; the arrays stay on the device until the end.")
        for a in k.args:
            if a.dims:
                lines.append(f"{_IND}_d_{py_name(a.name)} = _to_device({py_name(a.name)})")
        p = self._expr_printer()
        for name, d in sorted(k.locals.items()):
            if not d.dims or d.allocatable or self._only_private(name):
                continue
            try:
                text = p.new_array(name, d.dims)
            except CodegenError:
                continue
            text = _HELPER_CALL.sub(r"_host_f_\1(", text)
            lines.append(f"{_IND}_d_{py_name(name)} = cuda.to_device({text})")
        self.helpers |= p.helpers
        hp = self._expr_printer()
        host = _HostPrinter(hp, self, returns="raise _FortranReturn()", all_stmts=k.body)
        for new, orig in self.host_loops:
            host.originals[id(new)] = orig
        uses_return = self.uses_return or any(
            isinstance(r, _Serial) and r.has_return for r in self.serials
        )
        body_lines = host.block(body, 2 if uses_return else 1)
        self.helpers |= hp.helpers
        body_lines = [_HELPER_CALL.sub(r"_host_f_\1(", x) for x in body_lines]
        if uses_return:
            lines.append(f"{_IND}try:")
            lines += body_lines
            lines.append(f"{_IND}except _FortranReturn:")
            lines.append(f"{_IND * 2}pass")
        else:
            lines += body_lines
        lines.append(f"{_IND}# Copy back only INTENT(OUT/INOUT) arrays.")
        for a in k.args:
            if a.dims and a.intent in ("out", "inout"):
                lines.append(f"{_IND}_to_host(_d_{py_name(a.name)}, {py_name(a.name)})")
        outs = [py_name(n) for n in self._outputs()]
        if len(outs) == 1:
            lines.append(f"{_IND}return {outs[0]}")
        elif outs:
            lines.append(f"{_IND}return {', '.join(outs)}")
        return lines

    def _only_private(self, name: str) -> bool:
        return any(name in n.private_arrays for n in self.nests) and not any(
            name in _refs(s.stmts)[0] | _refs(s.stmts)[1] for s in self.serials
        )

    # -- whole module --------------------------------------------------------------------------
    def build(self) -> GeneratedCode:
        k = self.k
        body = self.plan(k.body, False)
        for region in self.serials:
            region.box = self._box_for(region)
        driver = self.driver(body)
        plan = self.launch_plan(body)
        kernels: list[str] = []
        for nest in self.nests:
            kernels += self.nest_kernel(nest) + ["", ""]
            if nest.reductions:
                kernels += self.finish_kernel(nest) + ["", ""]
        for fused in self.fused:
            kernels += self.fused_kernel(fused) + ["", ""]
        for region in self.serials:
            kernels += self.serial_kernel(region) + ["", ""]
        functions = self.device_functions()
        if not self.nests and not self.serials and not any(a.dims for a in k.args):
            functions += self.scalar_device_version()
        self._notes()
        head = [
            f'"""numba.cuda port of Fortran {k.origin} {k.fortran_entry} (line {k.line}),',
            "generated by fortranspire.",
            "",
            f"Entry: {py_name(k.name)}({', '.join(py_name(a.name) for a in k.args)}). Arrays are "
            "F-ordered numpy arrays",
            "indexed with Fortran's lower bounds mapped to 0; they are copied to the device "
            "once, kept",
            "there across every kernel launch, and INTENT(OUT/INOUT) ones are copied back at "
            "the end.",
            "Launch configuration: BLOCK_1D / BLOCK_2D / BLOCK_3D below, or the block_1d= / "
            "block_2d= /",
            "block_3d= keyword arguments. Without a GPU, set NUMBA_ENABLE_CUDASIM=1.",
            "",
            *[f"- {n}" for n in ir.argument_sources(k)],
            *[f"- {n}" for n in self.notes],
            '"""',
            "",
            "import math",
            "",
            "import numba",
            "import numpy as np",
            "from numba import cuda",
            "",
            f"BLOCK_1D = {DEFAULT_BLOCKS[1]!r}",
            f"BLOCK_2D = {DEFAULT_BLOCKS[2]!r}",
            f"BLOCK_3D = {DEFAULT_BLOCKS[3]!r}",
            f"_FINISH_THREADS = {FINISH_THREADS}",
            "_KEY_NONE = 2**62  # iteration number of 'no candidate yet' in argmax/argmin",
            "",
            "",
            "class _FortranReturn(Exception):",
            '    """RETURN executed on the host."""',
            "",
            "",
            "def _trip(lo, hi, st):",
            '    """Fortran DO trip count, evaluated once before the loop."""',
            "    return max(0, (hi - lo + st) // st)",
            "",
            "",
            "def _grid_for(sizes, block):",
            "    return tuple((n + b - 1) // b for n, b in zip(sizes, block))",
            "",
            "",
            "def _to_device(a):",
            "    return cuda.to_device(np.asfortranarray(a))",
            "",
            "",
            "def _to_host(d, a):",
            "    if a.flags.f_contiguous:",
            "        d.copy_to_host(a)",
            "    else:",
            "        a[...] = d.copy_to_host()",
            "",
            "",
        ]
        helpers = []
        if self.helpers:
            helpers.append("# Fortran intrinsics with semantics Python lacks, on the device ...")
            helpers.append(helper_source(self.helpers, "@cuda.jit(device=True)"))
            helpers.append("")
            helpers.append("# ... and on the host (scalar statements outside the kernels).")
            host = helper_source(self.helpers, "")
            host = re.sub(r"\bdef _f_", "def _host_f_", host)
            helpers.append(host.replace("\n\ndef ", "\ndef ").lstrip("\n"))
            helpers += ["", ""]
        launch = []
        if self.signatures:
            launch = [
                "# Explicit signatures: each kernel is compiled once per process for these types",
                "# (at the entry's first call), so a launch skips typing its arguments.",
                "_SIGNATURES = {",
                *[f"    {name!r}: {sig!r}," for name, sig in sorted(self.signatures.items())],
                "}",
                "_COMPILED = {}",
                "_LAUNCHERS = {}",
                "",
                "",
                "def _compile_all():",
                '    """Compile every kernel for its signature (once per process; not in the simulator)."""',
                "    if numba.config.ENABLE_CUDASIM:",
                "        return",
                "    for name, sig in _SIGNATURES.items():",
                "        if name not in _COMPILED:",
                "            _COMPILED[name] = cuda.jit(sig)(globals()[name].py_func)",
                "",
                "",
                "def _launch(kernel, grid, block):",
                '    """kernel[grid, block], compiled for its signature and cached per launch shape."""',
                "    key = (kernel, grid, block)",
                "    launcher = _LAUNCHERS.get(key)",
                "    if launcher is None:",
                "        name = kernel.py_func.__name__",
                "        if numba.config.ENABLE_CUDASIM:",
                "            # The simulator configures a kernel object in place: one object per shape.",
                "            launcher = cuda.jit(_SIGNATURES[name])(kernel.py_func)[grid, block]",
                "        else:",
                "            if name not in _COMPILED:",
                "                _COMPILED[name] = cuda.jit(_SIGNATURES[name])(kernel.py_func)",
                "            launcher = _COMPILED[name][grid, block]",
                "        _LAUNCHERS[key] = launcher",
                "    return launcher",
                "",
                "",
            ]
        code_lines = head + helpers + launch + functions + kernels + driver
        code = "\n".join(code_lines).rstrip() + "\n"
        code = re.sub(r"\n{4,}", "\n\n\n", code)
        loops = len(self.nests) + sum(len(f.nests) for f in self.fused)
        return GeneratedCode(code, py_name(k.name), loops, list(self.notes), launch_plan=plan)

    def _notes(self) -> None:
        notes = []
        axes = "xyz"
        for nest in self.nests:
            grid = ", ".join(
                f"{axes[pos]}={nest.loops[k].var}" for pos, k in enumerate(nest.grid_order)
            )
            text = (
                f"line {nest.loops[0].line}: kernel {nest.name}, {len(nest.loops)}-D grid ({grid}),"
                f" default block {DEFAULT_BLOCKS[len(nest.loops)]}"
            )
            if nest.private_arrays:
                text += f", private arrays in cuda.local.array: {', '.join(nest.private_arrays)}"
            if nest.reductions:
                reds = ", ".join(f"{r.op} on {r.var}" for r in nest.reductions)
                text += (
                    f"; reductions ({reds}): block shared-memory tree + one-block finishing "
                    "kernel (two passes)"
                )
                if any(r.op.startswith("arg") for r in nest.reductions):
                    text += (
                        ", argmax/argmin keep the "
                        + ("first" if nest.first_occurrence else "last")
                        + " occurrence via the iteration number"
                    )
            notes.append(text)
        for fused in self.fused:
            lines = ", ".join(str(n.loops[0].line) for n in fused.nests)
            notes.append(
                f"lines {lines}: {len(fused.nests)} independent {fused.rank}-D nests fused into "
                f"kernel {fused.name} (one launch instead of {len(fused.nests)})"
            )
        for swap in self.swaps:
            notes.append(
                f"line {swap.line}: the copy {swap.a} = {swap.b} only carries the step's result: "
                f"the device buffers of {swap.a} and {swap.b} are swapped instead (no launch, "
                "no bytes moved per step)"
            )
        for region in self.serials:
            line = getattr(region.stmts[0], "line", 0)
            if region.conds:
                notes.append(
                    f"line {line}: IF condition reads device arrays: one-thread kernel "
                    f"{region.name} evaluates it, the flag comes back, the branch runs on the host"
                )
                continue
            why = region.reason or "no parallel loop"
            text = (
                f"line {line}: sequential single-thread kernel {region.name}, Fortran order kept"
                f" (no wavefront) ({why})"
            )
            if region.box:
                text += f"; scalars copied back after it: {', '.join(region.box)}"
            notes.append(text)
        for new, _ in self.host_loops:
            if isinstance(new, ir.Loop):
                notes.append(
                    f"line {new.line}: do {new.var} runs on the host; arrays stay resident on "
                    "the device across its iterations (launches only, no copies)"
                )
        self.notes = notes + self.notes_extra


def _independent(a: _Nest, b: _Nest) -> bool:
    """Whether nests ``a`` and ``b`` may run in one kernel with no order between their threads.

    Legal when neither reads an array or scalar the other writes, and arrays both write are
    written only with the same constant (Dirichlet edges: ``vx(1,:) = 0`` and ``vx(:,1) = 0``
    meet at a corner, and either order leaves the same value there).
    """
    ra, wa = _refs(a.body)
    rb, wb = _refs(b.body)
    own = {lp.var for lp in [*a.loops, *b.loops]}
    # Subscript reads are reads: only values read from the other's writes matter.
    if (ra - own) & (wb - own) or (rb - own) & (wa - own):
        return False
    for name in (wa & wb) - own:
        values = {
            repr(x.value)
            for x in ir.walk([*a.body, *b.body])
            if isinstance(x, ir.Assign) and x.target.name == name
        }
        consts = all(
            isinstance(x.value, ir.Const)
            for x in ir.walk([*a.body, *b.body])
            if isinstance(x, ir.Assign) and x.target.name == name
        )
        if len(values) != 1 or not consts:
            return False
    return True


def _contains_parallel_or_argmax(s: ir.Stmt) -> bool:
    return any(
        isinstance(x, ir.Loop) and (x.parallel or any(r.op.startswith("arg") for r in x.reductions))
        for x in ir.walk([s])
    )


def _last_occurrence(body: list[ir.Stmt], r: ir.Reduction) -> bool:
    """Whether the argmax IF compares with >= / <= (the last maximum wins)."""
    for s in ir.walk(body):
        if isinstance(s, ir.If):
            for cond, _ in s.branches:
                if isinstance(cond, ir.BinOp) and cond.op in (">=", "<="):
                    if any(isinstance(x, ir.Var) and x.name == r.var for x in ir.walk_expr(cond)):
                        return True
    return False


def generate_cuda(
    kernel: ir.Kernel, *, swap_buffers: bool = True, fuse_nests: bool = True
) -> GeneratedCode:
    """Print ``kernel`` (analysed) as a numba.cuda module with a host driver; see module doc.

    ``swap_buffers`` and ``fuse_nests`` switch the traffic-saving transformations off (the
    before/after figures of ``benchmarks/gpu_model.py``); with both off the 1-D edge fusion
    remains. The result's ``launch_plan`` feeds :mod:`kernels.engine.gpu_model`.
    """
    if kernel.unsupported:
        first = kernel.unsupported[0]
        raise CodegenError(f"unsupported construct: {first.construct}", first.line)
    return _CudaModule(kernel, swap_buffers=swap_buffers, fuse_nests=fuse_nests).build()
