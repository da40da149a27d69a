"""Sizes for a verification run: values for a kernel's integer scalar arguments that exercise it.

A fixed table in argument order gives ``x_min=13, x_max=11`` for ``do j = x_min, x_max``: every loop
is empty and every output "matches". Instead each integer input gets a *role* from how the kernel
uses it, and candidates are built from the roles:

- **lower**: a loop start or an array's lower bound (``do j = x_min, ...``, ``a(x_min-2:...)``): 1;
- **offset**: added at one end of a range and subtracted at the other (``do i = 1+r, n-r``,
  ``a(1-ng:n+ng)``, ``do j = x_min-depth, x_max+depth``): small and positive, 2;
- **upper**: a loop stop or an array's upper bound: distinct values well above the lowers
  (13, 11, 9, ...: not multiples of 8 or 32, so tiling bugs show);
- **count**: a loop stop that sizes no array (time steps, iterations): 3;
- anything else: 3.

Each candidate is checked statically before anything runs: every DO loop whose bounds can be
evaluated must run at least once, and every array subscript that is affine in loop variables must
stay inside its declared bounds (the original must not read out of bounds at our sizes). The
candidates are ordered best first; the verifier runs the first one and, when the reference shows a
loop that never ran, the next ones (see :func:`candidates`). ``--size NAME=VALUE`` always wins.

The simulator runs every thread in Python, so its sizes are smaller (uppers 7, 6, 5, ...).

**Sizes fixed by PARAMETERs** (``integer, parameter :: nx = 401, nstep = 2000``) are no input, so
a run at them may not fit its budget (:func:`work` against :func:`work_budget`: the simulator
manages a few thousand statement executions a second). They are shrunk for the run only, and
only where that cannot change what the code computes other than in size. The rule: an integer
named constant may be shrunk when every use of it, and of every constant derived from it, is a
*size* - an array extent or bound, a DO bound or trip count, a subscript, or integer arithmetic
and comparison - and none is floating-point arithmetic (``dble(nx)``, ``x * nx``, a REAL
constant ``width = npml * dx`` that the kernel uses, an integer assigned to a REAL), which would
change the numbers, not the size (:func:`parameter_float_uses`). Its role (as for inputs) picks the smaller value
(:func:`parameter_plans`); the caller substitutes it in the source, so that the original and the
port see the same value, and checks the result with :func:`check`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from kernels.engine import ir, types
from kernels.engine.dataflow import affine

UPPER_VALUES = (13, 11, 9, 10, 7, 12, 6, 5)
SIMULATOR_UPPER_VALUES = (7, 6, 5, 8, 4, 9, 3, 10)
LOWER_VALUE = 1
OFFSET_VALUE = 2
COUNT_VALUE = 3
OTHER_VALUE = 3
MAX_CANDIDATES = 4


@dataclass
class Candidate:
    values: dict[str, int]
    empty_loops: list[int] = field(default_factory=list)  # lines of loops that cannot run
    out_of_bounds: list[str] = field(default_factory=list)  # accesses outside declared bounds

    @property
    def score(self) -> tuple[int, int]:
        return (len(self.empty_loops), len(self.out_of_bounds))


def integer_inputs(kernel: ir.Kernel) -> list[str]:
    """The integer scalar arguments a caller chooses (INTENT(OUT) ones are results, not inputs)."""
    return [
        a.name
        for a in kernel.args
        if not a.is_array and a.type.base == "integer" and a.intent != "out"
    ]


def dim_vars(kernel: ir.Kernel) -> list[str]:
    """Integer scalar arguments that appear in some array bound, in argument order."""
    used: set[str] = set()
    for a in kernel.args:
        for d in a.dims:
            for part in (d.lower, d.upper):
                for e in ir.walk_expr(part):
                    if isinstance(e, ir.Var):
                        used.add(e.name)
    return [
        a.name
        for a in kernel.args
        if not a.is_array and a.type.base == "integer" and a.name in used
    ]


def roles(kernel: ir.Kernel, names: Collection[str] | None = None) -> dict[str, str]:
    """lower / offset / upper / count / other, for each integer input (see the module doc).

    With ``names`` (named constants, see :func:`parameter_plans`), for those instead; the bounds
    of the kernel's local arrays then count as array bounds too (a private ``tmp(nx)``).
    """
    arrays = [a.dims for a in kernel.args]
    if names is not None:
        arrays += [d.dims for d in kernel.locals.values()]
    names = set(integer_inputs(kernel)) if names is None else set(names)
    starts: dict[str, int] = {}  # sign of the coefficient in range starts
    stops: dict[str, int] = {}
    in_bounds: set[str] = set()
    lower_side: dict[str, int] = {}
    upper_side: dict[str, int] = {}

    def note(e: ir.Expr | None, into: dict[str, int]) -> None:
        a = affine(e) if e is not None else None
        if a is None:
            return
        for v, c in a[0].items():
            if v in names and c:
                into.setdefault(v, 1 if c > 0 else -1)

    for dims in arrays:
        for d in dims:
            note(d.lower, lower_side)
            note(d.upper, upper_side)
            for part in (d.lower, d.upper):
                if part is not None:
                    in_bounds |= {e.name for e in ir.walk_expr(part) if isinstance(e, ir.Var)}
    for s in ir.walk(kernel.body):
        if isinstance(s, ir.Loop):
            step = _const_int(s.step)
            first, last = (s.start, s.stop) if step is None or step > 0 else (s.stop, s.start)
            note(first, starts)
            note(last, stops)

    out: dict[str, str] = {}
    for v in names:
        if starts.get(v) == 1 and stops.get(v) == -1 or starts.get(v) == -1 and stops.get(v) == 1:
            out[v] = "offset"
        elif lower_side.get(v) == -1 or upper_side.get(v) == -1 and v not in stops:
            out[v] = "offset"
        elif v in stops or v in upper_side:
            out[v] = "upper" if v in in_bounds or v in upper_side else "count"
        elif v in starts or v in lower_side:
            out[v] = "lower"
        else:
            out[v] = "other"
    return out


def candidates(
    kernel: ir.Kernel, given: Mapping[str, int | float] | None = None, *, simulator: bool = False
) -> list[Candidate]:
    """Value sets for the integer inputs, best first (``given`` fixes some of them)."""
    fixed = {k.lower(): int(v) for k, v in (given or {}).items()}
    inputs = integer_inputs(kernel)
    role = roles(kernel)
    uppers = [v for v in inputs if role.get(v) == "upper"]
    table = SIMULATOR_UPPER_VALUES if simulator else UPPER_VALUES
    small = {
        "lower": LOWER_VALUE,
        "offset": OFFSET_VALUE,
        "count": COUNT_VALUE,
        "other": OTHER_VALUE,
    }

    def build(upper_values: list[int]) -> dict[str, int]:
        values = {}
        for v in inputs:
            if role.get(v) == "upper":
                values[v] = upper_values[uppers.index(v)]
            else:
                values[v] = small[role.get(v, "other")]
        values.update({k: v for k, v in fixed.items() if k in values or k.startswith("dim")})
        return values

    distinct = [table[i % len(table)] for i in range(len(uppers))]
    plans = [
        distinct,
        list(reversed(distinct)),
        [max(distinct, default=0)] * len(uppers),
        [table[0] + 2 * i for i in range(len(uppers))],
    ]
    seen: list[dict[str, int]] = []
    out: list[Candidate] = []
    for upper_values in plans:
        values = build(upper_values)
        for key, extent in assumed_extents(kernel, values).items():
            if key not in fixed:
                values[key] = extent
        if values in seen:
            continue
        seen.append(values)
        out.append(check(kernel, values))
    # Stable: the first (distinct sizes in argument order) wins ties.
    order = sorted(range(len(out)), key=lambda k: (out[k].score, k))
    best = [out[k] for k in order][:MAX_CANDIDATES]
    # A LOGICAL input picks the branch that runs (IF (predict) ... ELSE ...): the best sizes with
    # each flag true, then false, so that together the runs reach both branches.
    flags = [
        a.name
        for a in kernel.args
        if not a.is_array and a.type.base == "logical" and a.intent != "out" and a.name not in fixed
    ]
    if flags:
        base = best[0].values
        best = [
            Candidate({**base, **{f: 1 for f in flags}}, best[0].empty_loops),
            Candidate({**base, **{f: 0 for f in flags}}, best[0].empty_loops),
            *best[1:],
        ]
    return best


def assumed_extents(kernel: ir.Kernel, values: dict[str, int]) -> dict[str, int]:
    """``dim1``, ``dim2``...: extents of assumed-shape dimensions large enough for every affine
    subscript the kernel uses on them (``fields(FIELD_DENSITY1)`` with a constant 14 needs 14)."""
    env: dict[str, int] = dict(values)
    for name, c in kernel.constants.items():
        if isinstance(c.value, int) and not isinstance(c.value, bool):
            env.setdefault(name, c.value)
    open_dims = {
        a.name: [k for k, d in enumerate(a.dims) if d.upper is None] for a in kernel.args if a.dims
    }
    lowers = {a.name: a.dims for a in kernel.args if a.dims}
    need: dict[str, int] = {}

    def visit(stmts: list[ir.Stmt], ranges: dict[str, tuple[int, int]]) -> None:
        for s in stmts:
            for e in _exprs(s):
                for sub in ir.walk_expr(e):
                    if not (isinstance(sub, ir.ArrayRef) and open_dims.get(sub.name)):
                        continue
                    for k in open_dims[sub.name]:
                        if k >= len(sub.indices) or isinstance(sub.indices[k], ir.Slice):
                            continue
                        r = _interval(sub.indices[k], ranges, env)
                        lo = _interval(lowers[sub.name][k].lower, {}, env)
                        if r is not None and lo is not None:
                            key = f"dim{k + 1}"
                            need[key] = max(need.get(key, 0), r[1] - lo[0] + 1)
            if isinstance(s, ir.Loop):
                lo, hi = _interval(s.start, ranges, env), _interval(s.stop, ranges, env)
                inner = dict(ranges)
                if lo is not None and hi is not None:
                    inner[s.var] = (min(lo[0], hi[0]), max(lo[1], hi[1]))
                visit(s.body, inner)
            elif isinstance(s, ir.WhileLoop):
                visit(s.body, ranges)
            elif isinstance(s, ir.If):
                for _, body in s.branches:
                    visit(body, ranges)
                visit(s.orelse, ranges)

    visit(kernel.body, {})
    return {k: v for k, v in need.items() if v > 0}


def infer(
    kernel: ir.Kernel, given: Mapping[str, int | float] | None = None, *, simulator: bool = False
) -> dict[str, int]:
    """The best candidate's values."""
    return candidates(kernel, given, simulator=simulator)[0].values


def _env(kernel: ir.Kernel, values: Mapping[str, int]) -> dict[str, int]:
    """``values``, then the kernel's integer named constants."""
    env: dict[str, int] = dict(values)
    for name, c in kernel.constants.items():
        if isinstance(c.value, int) and not isinstance(c.value, bool):
            env.setdefault(name, c.value)
    return env


def check(kernel: ir.Kernel, values: dict[str, int]) -> Candidate:
    """Loops that cannot run and subscripts outside declared bounds at ``values`` (static)."""
    env = _env(kernel, values)
    bounds: dict[str, list[tuple[int, int] | None]] = {}
    for a in kernel.args:
        if a.dims:
            bounds[a.name] = [_dim_range(d, env) for d in a.dims]
    cand = Candidate(dict(values))

    def visit(stmts: list[ir.Stmt], ranges: dict[str, tuple[int, int]]) -> None:
        for s in stmts:
            for e in _exprs(s):
                for sub in ir.walk_expr(e):
                    if isinstance(sub, ir.ArrayRef) and sub.name in bounds:
                        _check_ref(sub, bounds[sub.name], ranges, env, cand)
            if isinstance(s, ir.Loop):
                lo = _interval(s.start, ranges, env)
                hi = _interval(s.stop, ranges, env)
                step = _const_int(s.step) or 1
                if lo is None or hi is None:
                    visit(s.body, ranges)
                    continue
                # The loop runs for some outer iteration when its widest range is non-empty.
                first, last = (lo[0], hi[1]) if step > 0 else (lo[1], hi[0])
                if (last - first) * step < 0:
                    cand.empty_loops.append(s.line)
                    continue
                inner = dict(ranges)
                inner[s.var] = (min(first, last), max(first, last))
                visit(s.body, inner)
            elif isinstance(s, ir.WhileLoop):
                visit(s.body, ranges)
            elif isinstance(s, ir.If):
                for _, body in s.branches:
                    visit(body, ranges)
                visit(s.orelse, ranges)

    visit(kernel.body, {})
    return cand


# --------------------------------------------------------------------------------------------
# Work of a run, and PARAMETER-fixed sizes

#: Statement executions one verification run may take (loop trips multiplied out, statically).
#: The CUDA simulator runs each GPU thread in Python: a few thousand a second, so 20 000 is a
#: few seconds on a busy machine. gfortran and numba manage ~1e8 in well under a second each.
SIMULATOR_WORK_BUDGET = 20_000
COMPILED_WORK_BUDGET = 100_000_000
#: Multiples of the role values tried, smallest first, until every loop can run.
PARAMETER_SCALES = (1, 2, 3, 4, 6, 8, 12, 16)


def work_budget(device: str) -> int:
    """How many statement executions a run on ``device`` (cpu, gpu, simulator) may take."""
    return SIMULATOR_WORK_BUDGET if device == "simulator" else COMPILED_WORK_BUDGET


def work(kernel: ir.Kernel, values: Mapping[str, int]) -> int:
    """Statement executions of one call at ``values`` (which override named constants): every
    statement counts once per iteration of its enclosing loops, at their widest ranges. A loop
    whose bounds cannot be evaluated counts one trip (DO WHILE too)."""
    env = _env(kernel, values)
    total = 0

    def visit(stmts: list[ir.Stmt], ranges: dict[str, tuple[int, int]], times: int) -> None:
        nonlocal total
        for s in stmts:
            total += times
            if isinstance(s, ir.Loop):
                lo, hi = _interval(s.start, ranges, env), _interval(s.stop, ranges, env)
                step = _const_int(s.step) or 1
                if lo is None or hi is None:
                    visit(s.body, ranges, times)
                    continue
                first, last = (lo[0], hi[1]) if step > 0 else (lo[1], hi[0])
                trips = max(0, (last - first) // step + 1)
                inner = dict(ranges)
                inner[s.var] = (min(first, last), max(first, last))
                visit(s.body, inner, times * trips)
            elif isinstance(s, ir.WhileLoop):
                visit(s.body, ranges, times)
            elif isinstance(s, ir.If):
                for _, body in s.branches:
                    visit(body, ranges, times)
                visit(s.orelse, ranges, times)

    visit(kernel.body, {}, 1)
    return total


def integer_constants(kernel: ir.Kernel) -> dict[str, int]:
    """The kernel's scalar integer named constants that it references, with their values."""
    used = constants_used(kernel)
    return {
        name: c.value
        for name, c in kernel.constants.items()
        if name in used
        and c.type.base == "integer"
        and isinstance(c.value, int)
        and not isinstance(c.value, bool)
    }


def constants_used(kernel: ir.Kernel) -> set[str]:
    """The named constants the kernel (its body, its callees, its arrays' bounds) refers to."""
    used: set[str] = set()
    for body in [kernel.body, *(f.body for f in kernel.functions.values())]:
        for s in ir.walk(body):
            for e in _stmt_exprs(s):
                used |= {x.name for x in ir.walk_expr(e) if isinstance(x, ir.Var)}
    for dims in [a.dims for a in kernel.args] + [d.dims for d in kernel.locals.values()]:
        for d in dims:
            for part in (d.lower, d.upper):
                if part is not None:
                    used |= {x.name for x in ir.walk_expr(part) if isinstance(x, ir.Var)}
    return used & set(kernel.constants)


def parameter_float_uses(kernel: ir.Kernel, names: Collection[str]) -> dict[str, str]:
    """Why each of ``names`` (integer named constants) is not only a size: its first use in
    floating-point arithmetic, by line. Names absent from the result are used only as sizes.

    A constant passed to a procedure the kernel calls stands for the dummy there, whose uses are
    checked the same way; a CALL of anything else counts as an unknown use.
    """
    found: dict[str, str] = {}
    top = types.Scope.from_kernel(kernel)

    def real(e: ir.Expr, scope: types.Scope) -> bool:
        try:
            return types.type_of(e, scope).base in ("real", "complex")
        except types.TypingError:
            return True  # unknown: assume the worst

    def expr(e, in_float: bool, tracked: dict[str, str], scope, line: int, depth: int) -> None:
        if isinstance(e, ir.Var):
            if e.name in tracked and in_float:
                found.setdefault(
                    tracked[e.name], f"it is used in floating-point arithmetic (line {line})"
                )
        elif isinstance(e, ir.ArrayRef):
            for ix in e.indices:
                expr(ix, False, tracked, scope, line, depth)  # a subscript is a size
        elif isinstance(e, ir.Slice):
            for part in (e.lower, e.upper, e.step):
                if part is not None:
                    expr(part, False, tracked, scope, line, depth)
        elif isinstance(e, ir.UnaryOp):
            inner = in_float or (e.op != "not" and real(e, scope))
            expr(e.operand, inner, tracked, scope, line, depth)
        elif isinstance(e, ir.BinOp):
            if e.op in types.COMPARE_OPS:
                inner = real(e.left, scope) or real(e.right, scope)
            elif e.op in types.LOGICAL_OPS:
                inner = False
            else:
                inner = in_float or real(e, scope)
            expr(e.left, inner, tracked, scope, line, depth)
            expr(e.right, inner, tracked, scope, line, depth)
        elif isinstance(e, ir.Call):
            if e.name in kernel.functions:
                call(kernel.functions[e.name], e.args, tracked, scope, line, depth)
                return
            inner = in_float or real(e, scope)
            for a in [*e.args, *e.keywords.values()]:
                expr(a, inner or real(a, scope), tracked, scope, line, depth)

    def call(proc: ir.Procedure, actuals, tracked, scope, line: int, depth: int) -> None:
        inner: dict[str, str] = {}
        for dummy, actual in zip(proc.args, actuals, strict=False):
            origins = [
                tracked[x.name]
                for x in ir.walk_expr(actual)
                if isinstance(x, ir.Var) and x.name in tracked
            ]
            if not origins:
                continue
            expr(actual, real(actual, scope), tracked, scope, line, depth)
            if depth >= 4:
                for o in origins:
                    found.setdefault(o, f"it is passed down more than 4 calls (line {line})")
            inner[dummy] = origins[0]
        if inner:
            sub = types.Scope.from_procedure(proc, top)
            body(proc.body, inner, sub, depth + 1)
            dims(proc.decls.values(), inner, sub, proc.line, depth + 1)

    def dims(decls, tracked, scope, line: int, depth: int) -> None:
        for d in decls:
            for dim in d.dims:
                for part in (dim.lower, dim.upper):
                    if part is not None:
                        expr(part, False, tracked, scope, line, depth)

    def body(stmts: list[ir.Stmt], tracked: dict[str, str], scope, depth: int) -> None:
        for s in stmts:
            if isinstance(s, ir.Assign):
                expr(s.target, False, tracked, scope, s.line, depth)
                expr(s.value, real(s.target, scope), tracked, scope, s.line, depth)
            elif isinstance(s, ir.Loop):
                counter_real = scope.type(s.var).base != "integer"
                for part in (s.start, s.stop, s.step):
                    if part is not None:
                        expr(part, counter_real, tracked, scope, s.line, depth)
                body(s.body, tracked, scope, depth)
            elif isinstance(s, ir.WhileLoop):
                expr(s.cond, False, tracked, scope, s.line, depth)
                body(s.body, tracked, scope, depth)
            elif isinstance(s, ir.If):
                for cond, branch in s.branches:
                    expr(cond, False, tracked, scope, s.line, depth)
                    body(branch, tracked, scope, depth)
                body(s.orelse, tracked, scope, depth)
            elif isinstance(s, ir.CallStmt):
                if s.name in kernel.functions:
                    call(kernel.functions[s.name], s.args, tracked, scope, s.line, depth)
                else:
                    for a in s.args:
                        expr(a, True, tracked, scope, s.line, depth)
            elif isinstance(s, ir.Allocate):
                for d in s.dims:
                    for part in (d.lower, d.upper):
                        if part is not None:
                            expr(part, False, tracked, scope, s.line, depth)

    tracked = {n: n for n in names}
    body(kernel.body, tracked, top, 0)
    dims([*kernel.args, *kernel.locals.values()], tracked, top, kernel.line, 0)
    for proc in kernel.functions.values():
        # Module constants reach the callees too (unless a callee declares its own).
        own = {n: n for n in names if n not in proc.decls}
        if own:
            sub = types.Scope.from_procedure(proc, top)
            body(proc.body, own, sub, 1)
            dims(proc.decls.values(), own, sub, proc.line, 1)
    return found


def parameter_plans(
    kernel: ir.Kernel, names: Collection[str], *, simulator: bool = False
) -> list[dict[str, int]]:
    """Smaller values for the named constants ``names`` (already found to be sizes only), by
    role as for inputs: uppers from the size table (distinct, in the order given), counts 3,
    offsets 2; lowers and others keep their value. The first plan is the smallest; each next
    one scales the uppers (:data:`PARAMETER_SCALES`), for when the smallest empties a loop
    (``do i = npml + 1, nx - npml`` with ``npml`` kept). A constant is only ever made smaller.
    """
    values = integer_constants(kernel)
    role = roles(kernel, [n for n in names if n in values])
    uppers = [n for n in names if role.get(n) == "upper"]
    table = SIMULATOR_UPPER_VALUES if simulator else UPPER_VALUES
    fixed = {"count": COUNT_VALUE, "offset": OFFSET_VALUE}
    plans: list[dict[str, int]] = []
    for scale in PARAMETER_SCALES:
        plan: dict[str, int] = {}
        for n in names:
            if role.get(n) == "upper":
                new = table[uppers.index(n) % len(table)] * scale
            elif role.get(n) in fixed:
                new = fixed[role[n]]
            else:
                continue
            if new < values[n]:
                plan[n] = new
        if plan and plan not in plans:
            plans.append(plan)
    return plans


def _stmt_exprs(s: ir.Stmt) -> list[ir.Expr]:
    """Every expression of a statement, assignment targets whole."""
    if isinstance(s, ir.Assign):
        return [s.target, s.value]
    if isinstance(s, ir.Loop):
        return [x for x in (s.start, s.stop, s.step) if x is not None]
    if isinstance(s, ir.WhileLoop):
        return [s.cond]
    if isinstance(s, ir.If):
        return [c for c, _ in s.branches]
    if isinstance(s, ir.CallStmt):
        return list(s.args)
    return []


def _exprs(s: ir.Stmt) -> list[ir.Expr]:
    if isinstance(s, ir.Assign):
        return [s.target, s.value]
    if isinstance(s, ir.If):
        return [c for c, _ in s.branches]
    if isinstance(s, ir.CallStmt):
        return list(s.args)
    return []


def _check_ref(ref, dims, ranges, env, cand: Candidate) -> None:
    if len(ref.indices) != len(dims):
        return
    for k, (ix, dim) in enumerate(zip(ref.indices, dims, strict=True)):
        if dim is None or isinstance(ix, ir.Slice):
            continue
        r = _interval(ix, ranges, env)
        if r is None:
            continue
        if r[0] < dim[0] or r[1] > dim[1]:
            cand.out_of_bounds.append(
                f"{ref.name} dimension {k + 1}: index range {r[0]}..{r[1]} outside {dim[0]}..{dim[1]}"
            )


def _interval(
    e: ir.Expr | None, ranges: Mapping[str, tuple[int, int]], env: Mapping[str, int]
) -> tuple[int, int] | None:
    """The range of an affine integer expression over the loop-variable ranges."""
    if e is None:
        return None
    a = affine(e)
    if a is None:
        try:
            v = ir.eval_int(e, env)
        except (ir.NotConstant, ZeroDivisionError, ValueError, TypeError):
            return None
        return v, v
    coef, const = a
    lo = hi = const
    for v, c in coef.items():
        if v in ranges:
            r0, r1 = ranges[v]
            lo += min(c * r0, c * r1)
            hi += max(c * r0, c * r1)
        elif v in env:
            lo += c * env[v]
            hi += c * env[v]
        else:
            return None
    return lo, hi


def _dim_range(d: ir.Dim, env: Mapping[str, int]) -> tuple[int, int] | None:
    try:
        lo = ir.eval_int(d.lower, env) if d.lower is not None else 1
        if d.upper is None:
            return None
        return lo, ir.eval_int(d.upper, env)
    except (ir.NotConstant, ZeroDivisionError, ValueError, TypeError):
        return None


def _const_int(e: ir.Expr | None) -> int | None:
    if e is None:
        return None
    a = affine(e)
    if a is not None and not a[0]:
        return a[1]
    return None
