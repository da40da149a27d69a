"""CPU backend: an analysed IR kernel -> a numba ``@njit`` module (``prange`` where legal).

The generated module is plain, readable Python: Fortran names, one comment per loop naming its
source line, and a docstring stating the calling convention. ``fastmath`` stays off so the
floating-point operations happen in the order and precision the Fortran asks for.
"""

from __future__ import annotations

from kernels.engine import ir
from kernels.engine.analysis import PRIVATE_ARRAYS_ATTR, KernelAnalysis, analyse
from kernels.engine.backends.common import (
    CodegenError,
    ExprPrinter,
    GeneratedCode,
    StmtPrinter,
    helper_source,
    py_name,
)
from kernels.engine.dataflow import affine
from kernels.engine.sizes import roles
from kernels.engine.types import Scope

# error_model="numpy": a float division by zero gives inf/nan as in Fortran (IEEE) instead of
# raising, and drops the zero test numba would put in front of every division.
HELPER_DECORATOR = '@njit(fastmath=False, error_model="numpy", cache=False)'
KERNEL_DECORATOR = '@njit(fastmath=False, error_model="numpy", cache=False)'
PARALLEL_DECORATOR = '@njit(parallel=True, fastmath=False, error_model="numpy", cache=False)'


SHALLOW_REASON = (
    "a boundary loop beside deeper parallel nests: a thread launch costs more than it saves"
)
HALO_REASON = (
    "a halo loop: O(n) work along an edge of a rank-{rank} array (an inner loop spans only the "
    "halo depth): a thread launch costs more than it saves, and each parallel loop is a gufunc "
    "that numba compiles (about a second each)"
)

#: A loop whose trip count is at most this, with no domain-sized variable in it, spans "a few
#: fixed values" (``do m = 1, 4`` over the components of a state vector).
FEW_FIXED_VALUES = 16


def nest_depth(s: ir.Loop) -> int:
    """How many counted loops deep the nest starting at ``s`` goes (1: no inner loop)."""
    inner = [x for x in ir.walk(s.body) if isinstance(x, ir.Loop)]
    return 1 + max((nest_depth(x) for x in inner), default=0)


def prange_nest_depth(kernel: ir.Kernel) -> int:
    """The depth a parallel nest needs to run as prange: the deepest parallel nest's depth,
    counting only the loops that span the domain (:func:`domain_depth`).

    Only the kernel's main work is spread over threads. A 1-D loop over an edge of a 2-D grid
    (``vx(1, :) = 0`` inside a time loop) is O(n) next to O(n^2) nests: as prange it costs a
    thread launch per execution at run time and a gufunc (about a second of numba compile time
    each) at compile time, for no gain. It runs sequentially, which is the Fortran order. A loop
    over the 4 components of a cell's state or over a halo depth adds no depth: the 2-D nest
    beside a ``do j; do i; do m = 1, 4`` nest is main work too.
    """
    halo = halo_variables(kernel)
    depths = [
        domain_depth(x, halo) for x in ir.walk(kernel.body) if isinstance(x, ir.Loop) and x.parallel
    ]
    return max(depths, default=1)


def _small_extent(lower: ir.Expr | None, upper: ir.Expr | None, halo: set[str]) -> bool:
    """``lower..upper`` spans only a halo depth or a few fixed values (not the domain)."""
    if lower is None or upper is None:
        return False
    extent = affine(ir.BinOp("-", upper, lower))
    if extent is None:
        return False
    coefficients, constant = extent
    return all(v in halo for v, c in coefficients.items() if c) and abs(constant) <= (
        FEW_FIXED_VALUES
    )


def domain_depth(s: ir.Loop, halo: set[str]) -> int:
    """How many loops of the nest starting at ``s`` span the domain (not a halo depth)."""
    inner = [x for x in ir.walk(s.body) if isinstance(x, ir.Loop)]
    own = 0 if _small_extent(s.start, s.stop, halo) else 1
    return own + max((domain_depth(x, halo) for x in inner), default=0)


def domain_rank(kernel: ir.Kernel, nest: ir.Loop, halo: set[str]) -> int:
    """The most domain-sized dimensions of an array the nest writes (0: it writes none)."""
    dims = {a.name: a.dims for a in kernel.args if a.dims}
    dims.update({n: d.dims for n, d in kernel.locals.items() if d.dims})
    rank = 0
    for x in ir.walk([nest]):
        if isinstance(x, ir.Assign) and isinstance(x.target, ir.ArrayRef):
            declared = dims.get(x.target.name, [])
            rank = max(rank, sum(1 for d in declared if not _small_extent(d.lower, d.upper, halo)))
    return rank


def halo_variables(kernel: ir.Kernel) -> set[str]:
    """Integer inputs that are halo depths or stencil radii (``do j = x_min-depth, x_max+depth``)."""
    return {name for name, role in roles(kernel).items() if role == "offset"}


class CpuStmtPrinter(StmtPrinter):
    """Prints ``prange`` for the outermost parallel loop of each nest, ``range`` elsewhere."""

    def __init__(
        self,
        printer: ExprPrinter,
        *,
        returns: str,
        all_stmts,
        allow_prange: bool,
        min_nest_depth: int = 1,
        kernel: ir.Kernel | None = None,
    ):
        super().__init__(printer, returns=returns, all_stmts=all_stmts)
        self.allow_prange = allow_prange
        self.min_nest_depth = min_nest_depth
        self.kernel = kernel
        self.halo = halo_variables(kernel) if kernel is not None else set()
        self.sequential_reasons: dict[int, str] = {}  # line -> why a parallel loop is not prange
        self._decided: dict[int, str] = {}  # id(loop) -> that reason, '' for prange
        self.prange_lines: list[int] = []
        self.parallel_depth = 0
        self.prange_loops = 0
        self.active_reductions: list[ir.Reduction] = []
        self.notes: list[str] = []
        self.live_out: set[str] = set()

    def var_live_out(self, name: str) -> bool:
        return name in self.live_out

    def _is_prange(self, s: ir.Loop) -> bool:
        return self.allow_prange and self._outermost_parallel(s) and not self._kept_sequential(s)

    def _outermost_parallel(self, s: ir.Loop) -> bool:
        return s.parallel and self.parallel_depth == 0

    def _kept_sequential(self, s: ir.Loop) -> str:
        """Why the parallel nest at ``s`` runs sequentially anyway ('' when it runs as prange)."""
        if id(s) in self._decided:
            return self._decided[id(s)]
        reason = ""
        depth = domain_depth(s, self.halo)
        rank = domain_rank(self.kernel, s, self.halo) if self.kernel is not None else 0
        if depth < rank:
            reason = HALO_REASON.format(rank=rank)
        elif depth < self.min_nest_depth:
            reason = SHALLOW_REASON
        self._decided[id(s)] = reason
        if reason:
            self.sequential_reasons[s.line] = reason
        return reason

    def loop_header(self, s, start, stop, step, step_text) -> str:
        if self._is_prange(s):
            self.parallel_depth += 1
            self.prange_loops += 1
            self.prange_lines.append(s.line)
            self.active_reductions = list(s.reductions)
            s._printed_prange = True  # type: ignore[attr-defined]
            return f"for {py_name(s.var)} in prange({start}, {stop}):"
        return super().loop_header(s, start, stop, step, step_text)

    def loop_comment(self, s) -> str:
        text = super().loop_comment(s)
        if isinstance(s, ir.Loop) and self._is_prange(s):
            return text + "  (parallel: " + s.reason + ")"
        if isinstance(s, ir.Loop) and self.allow_prange and self._outermost_parallel(s):
            return text + "  (sequential: " + self._kept_sequential(s) + ")"
        if isinstance(s, ir.Loop) and s.reason and not s.parallel:
            return text + "  (sequential: " + s.reason + ")"
        return text

    def loop_prologue(self, s: ir.Loop, depth: int) -> list[str]:
        if not getattr(s, "_printed_prange", False):
            return []
        lines = []
        for name in getattr(s, PRIVATE_ARRAYS_ATTR, []):
            dims = self.p.scope.dims[name]
            lines.append(
                f"{self.indent_unit * depth}{py_name(name)} = {self.p.new_array(name, dims)}"
                "  # private to each iteration"
            )
        return lines

    def loop_done(self, s: ir.Loop) -> None:
        if getattr(s, "_printed_prange", False):
            self.parallel_depth -= 1
            self.active_reductions = []
            s._printed_prange = False  # type: ignore[attr-defined]

    def assign(self, s: ir.Assign) -> str:
        # numba recognises a parallel min/max reduction only as ``m = min(m, e)``: a Fortran
        # ``m = MIN(m, a, b, c)`` is printed as ``m = min(m, min(min(a, b), c))`` (the same
        # value for non-NaN data), not as the nested ``min(min(min(m, a), b), c)``.
        value = s.value
        if (
            self.parallel_depth
            and isinstance(s.target, ir.Var)
            and isinstance(value, ir.Call)
            and value.name in _MIN_MAX
            and len(value.args) > 2
        ):
            fn = "min" if "min" in value.name else "max"
            mine = [a for a in value.args if isinstance(a, ir.Var) and a.name == s.target.name]
            others = [a for a in value.args if a not in mine]
            if len(mine) == 1 and any(
                r.var == s.target.name and r.op == fn and not r.index_vars
                for r in self.active_reductions
            ):
                regrouped = ir.Call(value.name, [mine[0], ir.Call(value.name, others)])
                return super().assign(ir.Assign(s.target, regrouped, s.line))
        return super().assign(s)

    def if_(self, s: ir.If, depth: int) -> list[str]:
        # Inside prange, `IF (e > s) s = e` is printed as `s = max(s, e)`: the form numba
        # recognises as a parallel reduction (same value as the IF for non-NaN data).
        if self.parallel_depth and len(s.branches) == 1 and not s.orelse:
            cond, body = s.branches[0]
            if (
                len(body) == 1
                and isinstance(body[0], ir.Assign)
                and isinstance(body[0].target, ir.Var)
            ):
                name = body[0].target.name
                for r in self.active_reductions:
                    if r.var == name and r.op in ("max", "min") and not r.index_vars:
                        tt = self.p.type_of(body[0].target)
                        value = self.p.cast(
                            self.p.expr(body[0].value), self.p.type_of(body[0].value), tt
                        )
                        return [
                            f"{self.indent_unit * depth}{py_name(name)} = {r.op}({py_name(name)}, {value})"
                        ]
        return super().if_(s, depth)


_MIN_MAX = ("min", "max", "amin1", "amax1", "dmin1", "dmax1", "min0", "max0")


def _zero(t: ir.FType) -> str:
    if t.base == "logical":
        return "False"
    if t.base == "integer":
        return "0"
    return "np.float32(0.0)" if t.kind == 4 else "0.0"


def _returns(names: list[str]) -> str:
    if not names:
        return "return"
    if len(names) == 1:
        return f"return {py_name(names[0])}"
    return f"return ({', '.join(py_name(n) for n in names)})"


def _prelude_lines(
    args: list[tuple[str, ir.FType, bool]],
    locals_: dict[str, ir.Decl],
    printer: ExprPrinter,
    private_arrays: set[str],
    skip: set[str],
) -> list[str]:
    lines = []
    for name, t, is_array in args:
        if is_array:
            continue
        if t.base == "real":
            # Scalars keep their Fortran kind whatever Python number the caller passes.
            fn = "np.float32" if t.kind == 4 else "np.float64"
            lines.append(f"    {py_name(name)} = {fn}({py_name(name)})")
    for name, d in locals_.items():
        if name in skip or d.parameter is not None:
            continue
        if d.dims:
            if name in private_arrays or d.allocatable or any(x.upper is None for x in d.dims):
                continue
            lines.append(f"    {py_name(name)} = {printer.new_array(name, d.dims)}")
        else:
            lines.append(f"    {py_name(name)} = {_zero(d.type)}")
    return lines


def _procedure_source(proc: ir.Procedure, outer: Scope) -> tuple[str, set[str]]:
    """A callee (pure function or contained subroutine) as an @njit helper."""
    scope = Scope.from_procedure(proc, outer)
    printer = ExprPrinter(scope)
    outs = []
    if proc.kind == "function":
        outs = [proc.result or proc.name]
    else:
        for a in proc.args:
            d = proc.decls.get(a)
            if d is not None and not d.dims and d.intent in ("out", "inout"):
                outs.append(a)
    sp = StmtPrinter(printer, returns=_returns(outs), all_stmts=proc.body)
    body = sp.block(proc.body, 1)
    args = [
        (
            a,
            proc.decls[a].type if a in proc.decls else scope.type(a),
            bool(proc.decls.get(a) and proc.decls[a].dims),
        )
        for a in proc.args
    ]
    locals_ = {n: d for n, d in proc.decls.items() if n not in proc.args}
    prelude = _prelude_lines(args, locals_, printer, set(), set())
    head = f"def {py_name(proc.name)}({', '.join(py_name(a) for a in proc.args)}):"
    doc = f'    """Fortran {proc.kind} {proc.name.upper()} (line {proc.line})."""'
    text = "\n".join([HELPER_DECORATOR, head, doc, *prelude, *body, "    " + _returns(outs)])
    return text + "\n", printer.helpers


def _docstring(kernel: ir.Kernel, outs: list[str], parallel: int) -> str:
    lines = [
        f'"""numba port of Fortran {kernel.origin} {kernel.name.upper()} (line {kernel.line}),',
        "generated by fortranspire (deterministic translator, no LLM).",
        "",
        "Calling convention:",
        f"    {py_name(kernel.name)}({', '.join(py_name(a.name) for a in kernel.args)})",
        "- Arguments come in the Fortran order. Arrays are numpy arrays in Fortran (column-major)",
        "  order, np.asfortranarray(...), with the Fortran dtype; they are modified in place.",
        "  Element a(i, j) of an array declared a(l1:u1, l2:u2) is a[i - l1, j - l2] (0-based).",
    ]
    for a in kernel.args:
        if a.dims:
            shape = ", ".join(
                f"{_fexpr(d.lower)}:{_fexpr(d.upper) if d.upper is not None else ''}"
                for d in a.dims
            )
            lines.append(f"    {a.name}({shape}): {a.type.numpy_dtype}, intent({a.intent})")
        else:
            lines.append(f"    {a.name}: {a.type.numpy_dtype} scalar, intent({a.intent})")
    lines.extend("- " + line for line in ir.argument_sources(kernel))
    if outs:
        lines.append(
            "- Returns the scalar INTENT(OUT/INOUT) values"
            + (" (a tuple in argument order)" if len(outs) > 1 else "")
            + ": "
            + ", ".join(outs)
            + "."
        )
    else:
        lines.append("- Returns None.")
    lines.append(f"- Parallel loops (numba prange): {parallel}. fastmath is off.")
    lines.append('"""')
    return "\n".join(lines)


def _fexpr(e: ir.Expr) -> str:
    return ir.fortran_comment_text(e)


def generate_cpu(
    kernel: ir.Kernel, analysis: KernelAnalysis | None = None, *, parallel: bool = True
) -> GeneratedCode:
    """Print ``kernel`` as a numba module; runs :func:`analyse` first when not given."""
    if kernel.unsupported:
        u = kernel.unsupported[0]
        raise CodegenError(f"unsupported construct: {u.construct}", u.line)
    if analysis is None:
        analysis = analyse(kernel)
    scope = Scope.from_kernel(kernel)
    printer = ExprPrinter(scope)
    outs = [a.name for a in kernel.args if not a.dims and a.intent in ("out", "inout")]
    result = getattr(kernel, "result", None)
    if kernel.origin == "function" and result:
        outs = [result] + outs
    returns = _returns(outs)
    sp = CpuStmtPrinter(
        printer,
        returns=returns,
        all_stmts=kernel.body,
        allow_prange=parallel,
        min_nest_depth=prange_nest_depth(kernel),
        kernel=kernel,
    )
    sp.live_out = set(outs)
    body = sp.block(kernel.body, 1)
    private_arrays = {
        n
        for s in ir.walk(kernel.body)
        if isinstance(s, ir.Loop)
        for n in getattr(s, PRIVATE_ARRAYS_ATTR, [])
    }
    args = [(a.name, a.type, a.is_array) for a in kernel.args]
    prelude = _prelude_lines(
        args, kernel.locals, printer, private_arrays, {a.name for a in kernel.args}
    )
    helpers = set(printer.helpers)
    procs = []
    for proc in kernel.functions.values():
        text, used = _procedure_source(proc, scope)
        procs.append(text)
        helpers |= used
    entry = py_name(kernel.name)
    n_par = sp.prange_loops
    deco = PARALLEL_DECORATOR if n_par else KERNEL_DECORATOR
    parts = [
        _docstring(kernel, outs, n_par),
        "",
        "import math",
        "",
        "import numpy as np",
        "from numba import njit, prange",
        "",
    ]
    hs = helper_source(helpers, HELPER_DECORATOR, fmod="np.fmod")
    if hs:
        parts += ["", hs]
    for p in procs:
        parts += ["", p]
    parts += [
        "",
        deco,
        f"def {entry}({', '.join(py_name(a.name) for a in kernel.args)}):",
        *prelude,
        *body,
        "    " + returns,
        "",
    ]
    if parts[-2] == "    " + returns and len(parts) > 2 and parts[-3] == "    " + returns:
        del parts[-2]  # the Fortran already ends with RETURN
    code = "\n".join(parts)
    notes = []
    for info in analysis.loops:
        if info.outermost_parallel and info.line in sp.prange_lines:
            notes.append(
                f"line {info.line}: do {info.var} runs in parallel (prange): {info.reason}"
            )
        elif info.outermost_parallel and parallel:
            why = sp.sequential_reasons.get(info.line) or SHALLOW_REASON
            notes.append(f"line {info.line}: do {info.var} stays sequential: {why}")
        elif not info.parallel:
            notes.append(f"line {info.line}: do {info.var} stays sequential: {info.reason}")
    return GeneratedCode(code=code, entry=entry, parallel_loops=n_par, notes=notes)
