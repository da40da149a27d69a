"""Analysis: which loops may run in parallel, what is private, what is a reduction.

For every counted DO loop ``L`` of a kernel this pass fills ``Loop.parallel``, ``Loop.reason``,
``Loop.private`` and ``Loop.reductions``:

- Arrays: every pair (write, access) of the same array inside ``L`` is tested for a dependence
  carried by ``L`` on affine subscripts. Per dimension the subscripts give an equation in the two
  iteration instances; a dimension may prove independence (GCD test / non-integer distance),
  pin the instances to the same iteration of ``L`` (distance 0: not carried), or give a non-zero
  distance (carried: ``L`` stays sequential; Gauss-Seidel sweeps end up here). Anything not
  affine is assumed to depend.
- Scalars written in ``L``: inner DO variables are private; a scalar always written before it
  is read in an iteration (and not read after the loop) is private; ``s = s + e``, ``s = s * e``,
  ``s = max(s, e)``/``min`` and ``IF (e > s) s = e`` are reductions; the IF pattern that also
  records the location (argmax/argmin, first occurrence) is recognised but kept sequential,
  since a parallel version would need per-chunk first-occurrence merging. Anything else carries a
  dependence.
- Local arrays whose subscripts do not involve ``L``'s variable and whose first access in the
  body is a write are privatised (allocated per iteration).

:func:`analyse` returns a :class:`KernelAnalysis` with the loops the CPU backend runs with
``prange`` (the outermost legal loop of each nest) and a reason for each sequential loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kernels.engine import ir
from kernels.engine.dataflow import (
    affine,
    continuation,
    read_before_write,
    reads_var,
    stmt_exprs,
    without_loop_body,
)


@dataclass
class LoopInfo:
    line: int
    var: str
    parallel: bool
    reason: str
    depth: int
    outermost_parallel: bool = False
    private: list[str] = field(default_factory=list)
    private_arrays: list[str] = field(default_factory=list)
    reductions: list[ir.Reduction] = field(default_factory=list)


@dataclass
class KernelAnalysis:
    kernel: str
    loops: list[LoopInfo] = field(default_factory=list)

    @property
    def parallel_loops(self) -> list[LoopInfo]:
        """The loops a backend parallelises: the outermost legal loop of each nest."""
        return [x for x in self.loops if x.outermost_parallel]

    def to_dict(self) -> dict:
        return {
            "kernel": self.kernel,
            "loops": [
                {
                    "line": x.line,
                    "var": x.var,
                    "parallel": x.parallel,
                    "outermost_parallel": x.outermost_parallel,
                    "reason": x.reason,
                    "private": list(x.private),
                    "private_arrays": list(x.private_arrays),
                    "reductions": [
                        {"var": r.var, "op": r.op, "index_vars": list(r.index_vars)}
                        for r in x.reductions
                    ],
                }
                for x in self.loops
            ],
        }


# Name of the ir.Loop field listing privatised local arrays (kept for backends importing it).
PRIVATE_ARRAYS_ATTR = "private_arrays"


def analyse(kernel: ir.Kernel) -> KernelAnalysis:
    """Annotate every DO loop of ``kernel`` in place and return the summary."""
    result = KernelAnalysis(kernel.name)
    ctx = _Context(kernel)
    _visit(kernel.body, ctx, [], result, inside_parallel=False)
    return result


class _Context:
    def __init__(self, kernel: ir.Kernel):
        self.kernel = kernel
        self.consts = {n: c for n, c in kernel.constants.items()}
        self.arg_names = {a.name: a for a in kernel.args}
        self.arrays = {a.name for a in kernel.args if a.dims} | {
            n for n, d in kernel.locals.items() if d.dims
        }
        self.local_arrays = {n for n, d in kernel.locals.items() if d.dims}
        self.functions = kernel.functions

    def fold(self, e: ir.Expr) -> ir.Expr:
        if isinstance(e, ir.Var) and e.name in self.consts:
            c = self.consts[e.name]
            if c.type.base == "integer":
                return c
        if isinstance(e, ir.BinOp):
            return ir.BinOp(e.op, self.fold(e.left), self.fold(e.right))
        if isinstance(e, ir.UnaryOp):
            return ir.UnaryOp(e.op, self.fold(e.operand))
        return e


def _visit(stmts, ctx: _Context, enclosing: list[ir.Loop], result: KernelAnalysis, inside_parallel):
    for s in stmts:
        if isinstance(s, ir.Loop):
            info = _analyse_loop(s, ctx, enclosing)
            info.depth = len(enclosing)
            if info.parallel and not inside_parallel:
                info.outermost_parallel = True
            result.loops.append(info)
            _visit(s.body, ctx, enclosing + [s], result, inside_parallel or info.outermost_parallel)
        elif isinstance(s, ir.WhileLoop):
            _visit(s.body, ctx, enclosing, result, inside_parallel)
        elif isinstance(s, ir.If):
            for _, body in s.branches:
                _visit(body, ctx, enclosing, result, inside_parallel)
            _visit(s.orelse, ctx, enclosing, result, inside_parallel)


def _sequential(loop: ir.Loop, reason: str) -> LoopInfo:
    loop.parallel = False
    loop.reason = reason
    loop.private = []
    loop.reductions = []
    loop.private_arrays = []
    return LoopInfo(loop.line, loop.var, False, reason, 0)


def _analyse_loop(loop: ir.Loop, ctx: _Context, enclosing: list[ir.Loop]) -> LoopInfo:
    body = loop.body
    # Control flow that leaves the loop early or has side effects keeps it sequential.
    for s in ir.walk(body):
        if isinstance(s, ir.Unsupported):
            return _sequential(loop, f"unsupported construct at line {s.line}")
        if isinstance(s, ir.Return):
            return _sequential(loop, f"RETURN inside the loop (line {s.line})")
        if isinstance(s, ir.Exit) and _jump_leaves(s, loop, body):
            return _sequential(loop, f"EXIT leaves the loop early (line {s.line})")
        if isinstance(s, ir.Cycle) and s.label is not None and _jump_leaves(s, loop, body):
            return _sequential(loop, f"CYCLE of an enclosing loop (line {s.line})")
        if isinstance(s, ir.CallStmt):
            return _sequential(loop, f"CALL {s.name} inside the loop (line {s.line})")
        if isinstance(s, ir.Allocate):
            return _sequential(loop, f"ALLOCATE inside the loop (line {s.line})")
        for e in stmt_exprs(s):
            for sub in ir.walk_expr(e):
                if isinstance(sub, ir.Call) and sub.name in ctx.functions:
                    f = ctx.functions[sub.name]
                    if not (f.pure or f.elemental):
                        return _sequential(loop, f"call of impure function {sub.name}")
    if loop.step is not None:
        a = affine(ctx.fold(loop.step))
        if a is None or a[0] or a[1] != 1:
            return _sequential(loop, "non-unit step (prange needs step 1)")
    inner_vars = {s.var for s in ir.walk(body) if isinstance(s, ir.Loop)}
    written_scalars = _written_scalars(body) - inner_vars
    after = _outside(ctx.kernel.body, loop)
    later = continuation(ctx.kernel.body, loop)

    private: list[str] = sorted(inner_vars)
    reductions: list[ir.Reduction] = []
    found = {}
    for name in sorted(written_scalars):
        red = _reduction(name, body, loop)
        if red is not None:
            found[name] = red
    for red in found.values():
        if red.op in ("argmax", "argmin"):
            # A parallel argmax needs per-chunk first-occurrence merging: keep it sequential.
            r = _sequential(
                loop,
                f"{red.op} of {red.var} at {', '.join(red.index_vars)} (first occurrence) kept sequential",
            )
            loop.reductions = [red]
            r.reductions = [red]
            return r
    for name in sorted(written_scalars):
        if name == loop.var:
            return _sequential(loop, f"the DO variable {name} is assigned in the body")
        if name in found:
            reductions.append(found[name])
            continue
        if _read_before_written(name, body):
            return _sequential(loop, f"scalar {name} is carried from one iteration to the next")
        if _live_after(name, later, ctx):
            return _sequential(loop, f"scalar {name} is used after the loop (last value needed)")
        private.append(name)

    private_arrays: list[str] = []
    accesses = _accesses(body, inner_vars)
    written_arrays = sorted({a.name for a in accesses if a.write})
    for name in written_arrays:
        mine = [a for a in accesses if a.name == name]
        if name in ctx.local_arrays and _privatisable(name, mine, body, loop, after, ctx):
            private_arrays.append(name)
            continue
        reason = _carried(name, mine, loop, body, ctx, inner_vars, written_scalars)
        if reason:
            return _sequential(loop, reason)

    # Reductions in IF form become max/min assignments so numba recognises them in prange.
    loop.parallel = True
    loop.private = private
    loop.reductions = reductions
    loop.private_arrays = private_arrays
    bits = ["no loop-carried dependence"]
    if reductions:
        bits.append("reductions: " + ", ".join(f"{r.op} on {r.var}" for r in reductions))
    if private_arrays:
        bits.append("private arrays: " + ", ".join(private_arrays))
    loop.reason = "; ".join(bits)
    info = LoopInfo(loop.line, loop.var, True, loop.reason, 0)
    info.private = list(private)
    info.private_arrays = private_arrays
    info.reductions = list(reductions)
    return info


def _jump_leaves(s, loop: ir.Loop, body) -> bool:
    """True when an EXIT/CYCLE inside ``body`` targets ``loop`` itself or something outside it."""
    if s.label is not None:
        inner_labels = {x.label for x in ir.walk(body) if isinstance(x, (ir.Loop, ir.WhileLoop))}
        return s.label not in inner_labels
    # Unlabelled: it targets the innermost enclosing loop; find whether that is ``loop``.
    return _innermost_target_is(loop.body, s)


def _innermost_target_is(stmts, target) -> bool:
    for s in stmts:
        if s is target:
            return True
        if isinstance(s, ir.If):
            for _, b in s.branches:
                if _innermost_target_is(b, target):
                    return True
            if _innermost_target_is(s.orelse, target):
                return True
    return False


# --------------------------------------------------------------------------------------------
# Scalars


def _written_scalars(body) -> set[str]:
    out = set()
    for s in ir.walk(body):
        if isinstance(s, ir.Assign) and isinstance(s.target, ir.Var):
            out.add(s.target.name)
    return out


def _reads_in(e, name: str) -> bool:
    return any(isinstance(x, ir.Var) and x.name == name for x in ir.walk_expr(e))


def _read_before_written(name: str, body) -> bool:
    return read_before_write(name, body)


def _live_after(name: str, after: list[ir.Stmt], ctx: _Context) -> bool:
    a = ctx.arg_names.get(name)
    if a is not None and a.intent in ("out", "inout"):
        return True
    if getattr(ctx.kernel, "result", None) == name:
        return True
    return read_before_write(name, after)


def _outside(stmts, loop):
    return without_loop_body(stmts, loop)


def _reduction(name: str, body, loop: ir.Loop) -> ir.Reduction | None:
    """Recognise the reduction patterns of ``name`` in ``body`` (every use must fit)."""
    ops: set[str] = set()
    index_vars: list[str] = []
    uses_ok = True

    def check_assign(s: ir.Assign) -> str | None:
        v = s.value
        if isinstance(v, ir.BinOp) and v.op in ("+", "*", "-"):
            if isinstance(v.left, ir.Var) and v.left.name == name and not _reads_in(v.right, name):
                return "+" if v.op in ("+", "-") else "*"
            if (
                v.op in ("+", "*")
                and isinstance(v.right, ir.Var)
                and v.right.name == name
                and not _reads_in(v.left, name)
            ):
                return v.op
        if isinstance(v, ir.Call) and v.name in ("max", "min", "amax1", "amin1", "dmax1", "dmin1"):
            hits = [a for a in v.args if isinstance(a, ir.Var) and a.name == name]
            others = [a for a in v.args if not (isinstance(a, ir.Var) and a.name == name)]
            if len(hits) == 1 and not any(_reads_in(o, name) for o in others):
                return "max" if "max" in v.name else "min"
        return None

    def if_pattern(s: ir.If) -> tuple[str, list[str]] | None:
        if len(s.branches) != 1 or s.orelse:
            return None
        cond, body_ = s.branches[0]
        if not isinstance(cond, ir.BinOp) or cond.op not in (">", "<", ">=", "<="):
            return None
        if isinstance(cond.right, ir.Var) and cond.right.name == name:
            expr, op = cond.left, cond.op
        elif isinstance(cond.left, ir.Var) and cond.left.name == name:
            expr, op = cond.right, {">": "<", "<": ">", ">=": "<=", "<=": ">="}[cond.op]
        else:
            return None
        kind = "max" if op in (">", ">=") else "min"
        assigns = [x for x in body_ if isinstance(x, ir.Assign)]
        if len(assigns) != len(body_):
            return None
        main = [a for a in assigns if isinstance(a.target, ir.Var) and a.target.name == name]
        if len(main) != 1 or repr(main[0].value) != repr(expr) or _reads_in(expr, name):
            return None
        rest = [a for a in assigns if a is not main[0]]
        idx = []
        for a in rest:
            if not isinstance(a.target, ir.Var):
                return None
            idx.append(a.target.name)
        if idx:
            if op in (">=", "<="):
                return None  # last occurrence semantics: not the argmax pattern
            return ("arg" + kind, idx)
        return (kind, [])

    # Walk every statement mentioning ``name``.
    def visit(stmts):
        nonlocal uses_ok
        for s in stmts:
            if isinstance(s, ir.If):
                pat = if_pattern(s)
                if pat is not None:
                    ops.add(pat[0])
                    index_vars.extend(pat[1])
                    continue
                if any(_reads_in(c, name) for c, _ in s.branches):
                    uses_ok = False
                for _, b in s.branches:
                    visit(b)
                visit(s.orelse)
            elif isinstance(s, ir.Assign):
                mentions = _reads_in(s.value, name) or (
                    isinstance(s.target, ir.ArrayRef)
                    and any(
                        _reads_in(i, name) for i in s.target.indices if not isinstance(i, ir.Slice)
                    )
                )
                if isinstance(s.target, ir.Var) and s.target.name == name:
                    op = check_assign(s)
                    if op is None:
                        uses_ok = False
                    else:
                        ops.add(op)
                elif mentions:
                    uses_ok = False
            elif isinstance(s, (ir.Loop, ir.WhileLoop)):
                if any(_reads_in(e, name) for e in stmt_exprs(s)):
                    uses_ok = False
                visit(s.body)
            else:
                if any(_reads_in(e, name) for e in stmt_exprs(s)):
                    uses_ok = False

    visit(body)
    if not uses_ok or len(ops) != 1:
        return None
    op = ops.pop()
    if op.startswith("arg"):
        # The location variables must only be written by the pattern.
        for v in index_vars:
            if _mentioned_elsewhere(v, body):
                return None
    return ir.Reduction(name, op, index_vars)


def _mentioned_elsewhere(v: str, body) -> bool:
    count = 0
    for s in ir.walk(body):
        if isinstance(s, ir.Assign) and isinstance(s.target, ir.Var) and s.target.name == v:
            count += 1
        for e in stmt_exprs(s):
            if _reads_in(e, v):
                return True
    return count == 0


# --------------------------------------------------------------------------------------------
# Arrays


@dataclass
class _Access:
    name: str
    indices: list
    write: bool
    order: int
    stmt: object


def _accesses(body, inner_vars) -> list[_Access]:
    out: list[_Access] = []
    counter = [0]

    def add_expr(e, s):
        for sub in ir.walk_expr(e):
            if isinstance(sub, ir.ArrayRef):
                counter[0] += 1
                out.append(_Access(sub.name, sub.indices, False, counter[0], s))

    for s in ir.walk(body):
        for e in stmt_exprs(s):
            add_expr(e, s)
        if isinstance(s, ir.Assign) and isinstance(s.target, ir.ArrayRef):
            counter[0] += 1
            out.append(_Access(s.target.name, s.target.indices, True, counter[0], s))
    return out


def _privatisable(name, mine: list[_Access], body, loop: ir.Loop, after, ctx: _Context) -> bool:
    if reads_var(after, name):
        return False
    for a in mine:
        for ix in a.indices:
            if isinstance(ix, ir.Slice):
                return False
            if _reads_in(ix, loop.var):
                return False
    # Every read must see an element written earlier in the same iteration (reads of a
    # statement come before its write in ``order``), by a write that always runs before it:
    # one under an IF the read is not under may leave the element as the previous iteration
    # set it.
    ranges = _inner_loop_ranges(body, ctx)
    paths = _paths(body)
    loops = {id(s): s for s in ir.walk(body) if isinstance(s, ir.Loop)}
    writes = []
    for a in sorted(mine, key=lambda a: a.order):
        if a.write:
            writes.append(a)
        elif not _defined(writes, a, paths, loops, ranges, ctx):
            return False
    return bool(writes)


def _paths(body) -> dict[int, list[tuple[int, int]]]:
    """For each statement of ``body``: the constructs around it (id, branch), outermost first."""
    out: dict[int, list[tuple[int, int]]] = {}

    def visit(stmts, path) -> None:
        for s in stmts:
            out[id(s)] = path
            if isinstance(s, (ir.Loop, ir.WhileLoop)):
                visit(s.body, [*path, (id(s), 0)])
            elif isinstance(s, ir.If):
                for k, (_, b) in enumerate(s.branches):
                    visit(b, [*path, (id(s), k)])
                visit(s.orelse, [*path, (id(s), len(s.branches))])

    visit(body, [])
    return out


MAX_COVER_POINTS = 4096  # elements of one read checked one by one against the writes


def _defined(writes: list[_Access], r: _Access, paths, loops, ranges, ctx: _Context) -> bool:
    """Whether ``writes`` have set, earlier in the same iteration, every element ``r`` reads.

    A write counts when the constructs around it that are not around ``r`` too are DO loops
    of constant range without EXIT/CYCLE/RETURN (they ran whole before the read): their
    variables range over the indices written, those of the loops around ``r`` alone over the
    indices read. A write under an IF the read is not under may not have run: the element
    could still hold what the previous iteration left. The writes together must cover the
    read (``v(1) = ..; v(2) = ..; s = sum(v)``).
    """
    pr = paths[id(r.stmt)]
    boxes = []
    for w in writes:
        pw = paths[id(w.stmt)]
        common = 0
        while common < min(len(pw), len(pr)) and pw[common] == pr[common]:
            common += 1
        spans: dict[str, tuple[int, int]] = {}
        for construct, _ in pw[common:]:
            loop = loops.get(construct)
            if loop is None or loop.var not in ranges:
                break
            if any(isinstance(x, (ir.Exit, ir.Cycle, ir.Return)) for x in ir.walk(loop.body)):
                break
            spans[loop.var] = ranges[loop.var]
        else:
            boxes.append(_box(w.indices, spans, ctx))
    read_spans = {
        loops[c].var: ranges[loops[c].var]
        for c, _ in pr
        if c in loops and loops[c].var in ranges and not _around_any(c, writes, paths)
    }
    read = _box(r.indices, read_spans, ctx)
    points = 1
    for kind, value in read:
        if kind == "span":
            points *= value[1] - value[0] + 1
    if not boxes or points > MAX_COVER_POINTS:
        return False
    for point in _points(read):
        if not any(_inside(point, box) for box in boxes):
            return False
    return True


def _around_any(construct: int, writes: list[_Access], paths) -> bool:
    return any((construct, 0) in paths[id(w.stmt)] for w in writes)


def _box(indices, spans, ctx: _Context) -> list[tuple[str, object]]:
    """Per dimension: ('span', (lo, hi)) of the indices taken, or ('expr', text) when unknown."""
    out: list[tuple[str, object]] = []
    for ix in indices:
        span = _span(ix, spans, ctx)
        out.append(("span", span) if span is not None else ("expr", repr(ix)))
    return out


def _points(box):
    """Each element of a read box (expression dimensions stay as they are)."""
    if not box:
        yield ()
        return
    (kind, value), rest = box[0], box[1:]
    heads = (
        [("span", (x, x)) for x in range(value[0], value[1] + 1)]
        if kind == "span"
        else [(kind, value)]
    )
    for head in heads:
        for tail in _points(rest):
            yield (head, *tail)


def _inside(point, box) -> bool:
    for (pk, pv), (bk, bv) in zip(point, box, strict=True):
        if pk != bk:
            return False
        if pk == "expr":
            if pv != bv:
                return False
        elif not (bv[0] <= pv[0] and pv[1] <= bv[1]):
            return False
    return True


def _span(ix, ranges, ctx: _Context) -> tuple[int, int] | None:
    """The interval an index takes: a constant, or ``v + c`` for a loop ``v`` of ``ranges``."""
    f = affine(ctx.fold(ix))
    if f is None:
        return None
    if not f[0]:
        return f[1], f[1]
    if len(f[0]) == 1:
        ((var, coef),) = f[0].items()
        if coef == 1 and var in ranges:
            lo, hi = ranges[var]
            return lo + f[1], hi + f[1]
    return None


def _inner_loop_ranges(body, ctx: _Context) -> dict[str, tuple[int, int]]:
    """Constant (lower, upper) of the step-1 DO loops inside ``body``, by variable."""
    out = {}
    for s in ir.walk(body):
        if isinstance(s, ir.Loop) and s.step is None:
            lo, hi = affine(ctx.fold(s.start)), affine(ctx.fold(s.stop))
            if lo is not None and hi is not None and not lo[0] and not hi[0]:
                out[s.var] = (lo[1], hi[1])
    return out


def _carried(name, mine: list[_Access], loop: ir.Loop, body, ctx, inner_vars, written_scalars):
    writes = [a for a in mine if a.write]
    for w in writes:
        for other in mine:
            verdict = _test_pair(w, other, loop, ctx, inner_vars, written_scalars)
            if verdict is not None:
                return verdict
    return ""


def _test_pair(
    w: _Access, o: _Access, loop: ir.Loop, ctx, inner_vars, written_scalars
) -> str | None:
    """A reason string when the pair may carry a dependence across iterations of ``loop``."""
    v = loop.var
    distance = None
    if len(w.indices) != len(o.indices):
        return f"{w.name} accessed with different ranks"
    for a_ix, b_ix in zip(w.indices, o.indices, strict=True):
        if isinstance(a_ix, ir.Slice) or isinstance(b_ix, ir.Slice):
            return None if False else f"array section of {w.name} inside the loop"
        fa, fb = affine(ctx.fold(a_ix)), affine(ctx.fold(b_ix))
        if fa is None or fb is None:
            continue  # not affine: no information from this dimension
        ca, ka = fa
        cb, kb = fb
        varying = set(inner_vars) | set(written_scalars)
        # Coefficients of the loop variable in the two instances, and of free variables.
        av, bv = ca.get(v, 0), cb.get(v, 0)
        free_coefs: list[int] = []
        ok_invariants = True
        for name in (set(ca) | set(cb)) - {v}:
            x, y = ca.get(name, 0), cb.get(name, 0)
            if name in varying:
                if x:
                    free_coefs.append(x)
                if y:
                    free_coefs.append(y)
            elif x != y:
                ok_invariants = False
                free_coefs.append(x - y)
        diff = kb - ka  # av*v1 - bv*v2 + free = kb - ka
        if not free_coefs and ok_invariants:
            if av == bv:
                if av == 0:
                    if diff != 0:
                        return None  # different constant subscripts: independent
                    continue
                if diff % av != 0:
                    return None  # non-integer distance: independent
                d = diff // av
                if d == 0:
                    return None  # pinned to the same iteration: not carried
                distance = d
                continue
            g = math.gcd(av, bv)
            if g and diff % g != 0:
                return None
            continue
        g = 0
        for c in free_coefs + [av, bv]:
            g = math.gcd(g, c)
        if g and diff % g != 0:
            return None  # GCD test: no integer solution
    ref = _fmt_ref(o)
    if distance is not None:
        return f"carried dependence on {ref} (distance {abs(distance)} in {v})"
    if w is o:
        return f"{w.name} is written at the same element in different iterations of {v}"
    if o.write:
        return f"{_fmt_ref(w)} and {ref} may write the same element in different iterations of {v}"
    return f"{ref} may read what {_fmt_ref(w)} writes in another iteration of {v}"


def _fmt_ref(a: _Access) -> str:
    return ir.fortran_comment_text(ir.ArrayRef(a.name, a.indices))
