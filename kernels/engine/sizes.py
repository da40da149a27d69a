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

**Branch selectors.** Some inputs choose which branch runs, not how far loops go:
``IF (direction == 1) ... ELSE IF (direction == 2)``, ``SELECT CASE (limiter)``, a LOGICAL flag,
an integer array of flags (``IF (fields(FIELD_DENSITY) == 1)``), or a local computed from such
inputs (``sweep = direction + 2*(sweep_number-1)`` then ``IF (sweep == 3)``). One call runs one
branch of each, so no single set of values runs every loop. :func:`selectors` finds these inputs
(integers that bound no loop and size no array, compared with constants; LOGICAL scalars; integer
arrays read only in such comparisons) and the values worth trying: the constants they are
compared with, one value matching none of them (the ELSE branch), and for an input that reaches
the comparison through a local, the values that make the local equal each constant.
:func:`branch_selections` then evaluates the IF conditions statically for combinations of those
values and picks, greedily, a few combinations that together reach every loop that can be
reached. The verifier runs the kernel once per combination (each run compared on its own) and
takes the union of the loops they ran. A flag array is filled with one value in every element.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from itertools import product

from kernels.engine import ir, types
from kernels.engine.dataflow import affine, substitute, top_level_definitions

UPPER_VALUES = (13, 11, 9, 10, 7, 12, 6, 5)
SIMULATOR_UPPER_VALUES = (7, 6, 5, 8, 4, 9, 3, 10)
LOWER_VALUE = 1
OFFSET_VALUE = 2
COUNT_VALUE = 3
OTHER_VALUE = 3
MAX_CANDIDATES = 4
MAX_SELECTIONS = 8  # selector combinations run per verification
MAX_COMBINATIONS = 256  # selector combinations evaluated statically (more: one at a time)


@dataclass
class Candidate:
    values: dict[str, int]
    empty_loops: list[int] = field(default_factory=list)  # lines of loops that cannot run
    out_of_bounds: list[str] = field(default_factory=list)  # accesses outside declared bounds
    # Lines of loops in branches the selector values in ``values`` do not take (statically).
    unreached: list[int] = field(default_factory=list)
    # Selector values, one dict per run (see :func:`branch_selections`); the first is in ``values``.
    selections: list[dict[str, int]] = field(default_factory=list)
    # Loops none of the selections reaches, or empty at these sizes.
    never_reached: list[int] = field(default_factory=list)

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

    # Read loop bounds through top-level copies (``nx = grid%nx`` before ``do i = 1, nx``).
    defs = top_level_definitions(kernel.body, exclude={a.name for a in kernel.args})

    def note(e: ir.Expr | None, into: dict[str, int]) -> None:
        a = affine(substitute(e, defs)) if e is not None else None
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


def _add_copies(kernel: ir.Kernel, env: dict[str, int]) -> None:
    """Add to ``env`` the top-level copies of what it holds (``nx = grid%nx``: nx)."""
    defs = top_level_definitions(kernel.body, exclude={a.name for a in kernel.args})
    for name, e in defs.items():
        try:
            env.setdefault(name, ir.eval_int(e, env))
        except (ir.NotConstant, ZeroDivisionError, ValueError, TypeError, OverflowError):
            continue


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

    def build(upper_values: list[int], lower: int) -> dict[str, int]:
        values = {}
        for v in inputs:
            if role.get(v) == "upper":
                values[v] = upper_values[uppers.index(v)]
            elif role.get(v) == "lower":
                values[v] = lower
            else:
                values[v] = small[role.get(v, "other")]
        values.update({k: v for k, v in fixed.items() if k in values or k.startswith("dim")})
        return values

    distinct = [table[i % len(table)] for i in range(len(uppers))]
    plans = [
        (distinct, LOWER_VALUE),
        (list(reversed(distinct)), LOWER_VALUE),
        ([max(distinct, default=0)] * len(uppers), LOWER_VALUE),
        ([table[0] + 2 * i for i in range(len(uppers))], LOWER_VALUE),
    ]
    seen: list[dict[str, int]] = []
    out: list[Candidate] = []

    def try_plans(plans: list[tuple[list[int], int]]) -> None:
        for upper_values, lower in plans:
            values = build(upper_values, lower)
            for key, extent in assumed_extents(kernel, values).items():
                if key not in fixed:
                    values[key] = extent
            if values in seen:
                continue
            seen.append(values)
            out.append(check(kernel, values))

    try_plans(plans)
    if all(c.out_of_bounds for c in out) and "lower" in role.values():
        # A loop from a lower bound reading a(i-1) (a sweep over a tile of a bigger array, whose
        # callers start at 2): start the lowers higher, inside the arrays.
        try_plans([(distinct, LOWER_VALUE + 1), (distinct, LOWER_VALUE + 2)])
    # Stable: the first (distinct sizes in argument order) wins ties.
    order = sorted(range(len(out)), key=lambda k: (out[k].score, k))
    best = [out[k] for k in order][:MAX_CANDIDATES]
    # Selectors: the best sizes with each chosen combination of selector values, then the other
    # sizes with the combinations chosen for them.
    chosen = branch_selections(kernel, best[0].values, fixed)
    for k, cand in enumerate(best):
        if k:  # the same selections at other sizes: only which loops they reach is redone
            chosen = _reached_by(kernel, cand.values, chosen.selections)
        cand.selections = chosen.selections
        cand.values = {**cand.values, **chosen.selections[0]} if chosen.selections else cand.values
        cand.unreached = chosen.unreached
        cand.never_reached = chosen.never_reached
    return best


def assumed_extents(kernel: ir.Kernel, values: dict[str, int]) -> dict[str, int]:
    """``dim1``, ``dim2``...: extents of assumed-shape dimensions large enough for every affine
    subscript the kernel uses on them (``fields(FIELD_DENSITY1)`` with a constant 14 needs 14)."""
    env = _env(kernel, values)
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
    _add_copies(kernel, env)
    return env


def check(kernel: ir.Kernel, values: dict[str, int]) -> Candidate:
    """Loops that cannot run and subscripts outside declared bounds at ``values`` (static).

    IF conditions that ``values`` decide (selector inputs, and locals assigned from them before
    the IF) take only their branch: the loops of the others are listed in ``unreached``.
    """
    env = _env(kernel, values)
    bounds: dict[str, list[tuple[int, int] | None]] = {}
    for a in kernel.args:
        if a.dims:
            bounds[a.name] = [_dim_range(d, env) for d in a.dims]
    flag_arrays = {a.name: values[a.name] for a in kernel.args if a.dims and a.name in values}
    cand = Candidate(dict(values))

    def skip(stmts: list[ir.Stmt]) -> None:
        cand.unreached.extend(x.line for x in ir.walk(stmts) if isinstance(x, ir.Loop))

    def forget(stmts: list[ir.Stmt], known: dict[str, int]) -> None:
        for name in _assigned_scalars(stmts):
            known.pop(name, None)

    returned = False  # a RETURN on the path every run takes: nothing after it runs

    def visit(
        stmts: list[ir.Stmt],
        ranges: dict[str, tuple[int, int]],
        known: dict[str, int],
        definite: bool,
    ) -> None:
        nonlocal returned
        for n, s in enumerate(stmts):
            if returned:
                skip(stmts[n:])
                return
            for e in _exprs(s):
                for sub in ir.walk_expr(e):
                    if isinstance(sub, ir.ArrayRef) and sub.name in bounds:
                        _check_ref(sub, bounds[sub.name], ranges, env, cand)
            if isinstance(s, ir.Return) and definite:
                returned = True
            elif isinstance(s, ir.Assign) and isinstance(s.target, ir.Var):
                value = _decide(s.value, known, flag_arrays)
                if value is None or isinstance(value, bool):
                    known.pop(s.target.name, None)
                else:
                    known[s.target.name] = value
            elif isinstance(s, ir.Loop):
                forget(s.body, known)
                known.pop(s.var, None)
                lo = _interval(s.start, ranges, env)
                hi = _interval(s.stop, ranges, env)
                step = _const_int(s.step) or 1
                if lo is None or hi is None:
                    visit(s.body, ranges, dict(known), False)
                    continue
                # The loop runs for some outer iteration when its widest range is non-empty.
                first, last = (lo[0], hi[1]) if step > 0 else (lo[1], hi[0])
                if (last - first) * step < 0:
                    cand.empty_loops.append(s.line)
                    continue
                inner = dict(ranges)
                inner[s.var] = (min(first, last), max(first, last))
                visit(s.body, inner, dict(known), False)
            elif isinstance(s, ir.WhileLoop):
                forget(s.body, known)
                visit(s.body, ranges, dict(known), False)
            elif isinstance(s, ir.If):
                # Branches decided false are skipped; the first decided true ends the chain.
                # Once a branch is undecided, what any branch assigns is unknown afterwards.
                taken = undecided = False
                for cond, body in s.branches:
                    if taken:
                        skip(body)
                        continue
                    decided = _decide(cond, known, flag_arrays)
                    if decided is None:
                        undecided = True
                        visit(body, ranges, dict(known), False)
                    elif decided:
                        taken = True
                        if undecided:
                            visit(body, ranges, dict(known), False)
                        else:
                            visit(body, ranges, known, definite)
                    else:
                        skip(body)
                if taken:
                    skip(s.orelse)
                elif undecided:
                    visit(s.orelse, ranges, dict(known), False)
                else:
                    visit(s.orelse, ranges, known, definite)
                if undecided:
                    forget([s], known)

    visit(kernel.body, {}, dict(env), True)
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


# --------------------------------------------------------------------------------------------
# Branch selectors


def selectors(
    kernel: ir.Kernel, fixed: Mapping[str, int | float] | None = None
) -> dict[str, list[int]]:
    """The inputs that choose branches, each with the values worth trying (see the module doc).

    Integer scalars whose role is ``other``, LOGICAL scalars, and integer arrays read only in
    comparisons with constants (filled with one value). Inputs in ``fixed`` are left out.
    """
    ranked = _ranked_selectors(kernel, *_selector_inputs(kernel, fixed), fixed=fixed)
    return {name: [v for v, _ in pairs] for name, pairs in ranked.items()}


def _selector_inputs(
    kernel: ir.Kernel, fixed: Mapping[str, int | float] | None
) -> tuple[set[str], list[str], set[str]]:
    """(integer scalars, LOGICAL scalars, integer flag arrays) that may select branches."""
    given = {k.lower() for k in (fixed or {})}
    role = roles(kernel)
    scalars = {
        a.name
        for a in kernel.args
        if not a.dims
        and a.intent != "out"
        and a.name not in given
        and a.type.base == "integer"
        and role.get(a.name) == "other"
    }
    logicals = [
        a.name
        for a in kernel.args
        if not a.dims and a.intent != "out" and a.type.base == "logical" and a.name not in given
    ]
    arrays = {
        a.name
        for a in kernel.args
        if a.dims and a.intent == "in" and a.type.base == "integer" and a.name not in given
    }
    arrays &= _read_only_in_comparisons(kernel, arrays, _int_constants(kernel))
    return scalars, logicals, arrays


#: How natural a selector value is, to break ties between combinations reaching the same loops:
#: a constant the input itself is compared with, then a value solved through a local, then the
#: value matching nothing (the ELSE branch).
_COMPARED, _SOLVED, _ELSE = 0, 1, 2


def _ranked_selectors(
    kernel: ir.Kernel,
    scalars: set[str],
    logicals: list[str],
    arrays: set[str],
    *,
    fixed: Mapping[str, int | float] | None = None,
) -> dict[str, list[tuple[int, int]]]:
    """Each selector's values with their rank (see :data:`_COMPARED`), in argument order.

    A local computed from selectors and inputs the caller ``fixed`` is solved with those inputs
    at their given values.
    """
    consts = _int_constants(kernel)
    given = {k.lower(): int(v) for k, v in (fixed or {}).items()}
    derived = _derived_locals(kernel, scalars, set(given))
    found: dict[str, dict[int, int]] = {}

    def add(name: str, values: set[int], rank: int) -> None:
        mine = found.setdefault(name, {})
        for v in values:
            mine[v] = min(mine.get(v, rank), rank)

    solved: list[tuple[ir.Expr, set[int]]] = []
    for cond in _conditions(kernel.body):
        for side, other, op in _comparisons(cond):
            c = _const_value(other, consts)
            if c is None:
                continue
            tried = {c} if op in ("==", "/=") else {c - 1, c, c + 1}
            if isinstance(side, ir.Var) and side.name in scalars:
                add(side.name, tried, _COMPARED)
            elif isinstance(side, ir.ArrayRef) and side.name in arrays:
                add(side.name, tried, _COMPARED)
            elif isinstance(side, ir.Var) and side.name in derived:
                solved.append((derived[side.name], tried))
    direct = {name: set(values) for name, values in found.items()}
    direct.update({name: {value} for name, value in given.items()})
    for expr, tried in solved:
        for name, values in _solve(expr, tried, direct, kernel).items():
            if name in scalars:
                add(name, values, _SOLVED)
    out: dict[str, list[tuple[int, int]]] = {}
    for a in kernel.args:
        if a.name in found:
            ranked = sorted(found[a.name].items())
            # One value matching none of the constants: the ELSE / CASE DEFAULT branch.
            out[a.name] = ranked + [(ranked[-1][0] + 1, _ELSE)]
        elif a.name in logicals:
            out[a.name] = [(1, _COMPARED), (0, _COMPARED)]
    return out


@dataclass
class BranchChoice:
    selections: list[dict[str, int]]
    unreached: list[int]  # loops the first selection does not reach
    never_reached: list[int]  # loops no selection reaches (or empty at these sizes)


def branch_selections(
    kernel: ir.Kernel, values: Mapping[str, int], fixed: Mapping[str, int | float] | None = None
) -> BranchChoice:
    """A few combinations of selector values that, at sizes ``values``, reach every loop that
    some combination reaches (greedy set cover over the statically evaluated IF conditions)."""
    ranked = _ranked_selectors(kernel, *_selector_inputs(kernel, fixed), fixed=fixed)
    options = {name: [v for v, _ in pairs] for name, pairs in ranked.items()}
    rank = {name: dict(pairs) for name, pairs in ranked.items()}
    sizes = {k: v for k, v in values.items() if k not in options}
    loops = [x.line for x in ir.walk(kernel.body) if isinstance(x, ir.Loop)]
    if not options:
        base = check(kernel, dict(values))
        never = sorted(set(base.empty_loops) | set(base.unreached))
        return BranchChoice([], base.unreached, never)
    names = list(options)
    combos: list[dict[str, int]] = []
    total = 1
    for n in names:
        total *= len(options[n])
    if total <= MAX_COMBINATIONS:
        for picks in product(*(options[n] for n in names)):
            combos.append(dict(zip(names, picks, strict=True)))
    else:  # one selector varied at a time, the others at their first value
        first = {n: options[n][0] for n in names}
        combos.append(first)
        for n in names:
            combos.extend({**first, n: v} for v in options[n][1:])
    baseline = check(kernel, {**sizes, **combos[0]})
    reach: list[set[int]] = []
    for combo in combos:
        got = check(kernel, {**sizes, **combo})
        if len(got.out_of_bounds) > len(baseline.out_of_bounds):
            reach.append(set())  # these values would make the original read out of bounds
            continue
        reach.append(set(loops) - set(got.empty_loops) - set(got.unreached))
    cost = [sum(rank[n][v] for n, v in combo.items()) for combo in combos]
    chosen: list[int] = []
    covered: set[int] = set()
    while len(chosen) < MAX_SELECTIONS:
        gains = [len(r - covered) for r in reach]
        best = max(range(len(combos)), key=lambda k: (gains[k], -cost[k], -k))
        if gains[best] == 0:
            break
        chosen.append(best)
        covered |= reach[best]
    if not chosen:
        chosen = [0]
    first = check(kernel, {**sizes, **combos[chosen[0]]})
    return BranchChoice([combos[k] for k in chosen], first.unreached, sorted(set(loops) - covered))


def _reached_by(
    kernel: ir.Kernel, values: Mapping[str, int], selections: list[dict[str, int]]
) -> BranchChoice:
    """``selections`` at sizes ``values``: the loops the first misses and those all miss."""
    loops = {x.line for x in ir.walk(kernel.body) if isinstance(x, ir.Loop)}
    covered: set[int] = set()
    first: Candidate | None = None
    for selection in selections or [{}]:
        got = check(kernel, {**values, **selection})
        first = first or got
        covered |= loops - set(got.empty_loops) - set(got.unreached)
    assert first is not None
    return BranchChoice(list(selections), first.unreached, sorted(loops - covered))


def _int_constants(kernel: ir.Kernel) -> dict[str, int]:
    return {
        n: c.value
        for n, c in kernel.constants.items()
        if isinstance(c.value, int) and not isinstance(c.value, bool)
    }


def _const_value(e: ir.Expr, consts: Mapping[str, int]) -> int | None:
    try:
        v = ir.eval_int(e, consts)
    except (ir.NotConstant, ZeroDivisionError, ValueError, TypeError):
        return None
    return v


_COMPARISONS = {"==": "==", "/=": "/=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _comparisons(e: ir.Expr) -> list[tuple[ir.Expr, ir.Expr, str]]:
    """(one side, the other side, operator) for each comparison in ``e``, both ways round."""
    out = []
    for sub in ir.walk_expr(e):
        if isinstance(sub, ir.BinOp) and sub.op in _COMPARISONS:
            out.append((sub.left, sub.right, sub.op))
            out.append((sub.right, sub.left, _COMPARISONS[sub.op]))
    return out


def _conditions(stmts: list[ir.Stmt]) -> list[ir.Expr]:
    return [c for s in ir.walk(stmts) if isinstance(s, ir.If) for c, _ in s.branches]


def _read_only_in_comparisons(
    kernel: ir.Kernel, arrays: set[str], consts: Mapping[str, int]
) -> set[str]:
    """The arrays of ``arrays`` read only as ``a(constant) <op> constant`` in IF conditions."""
    compared: set[str] = set()
    elsewhere: set[str] = set()
    fine: set[int] = set()
    for cond in _conditions(kernel.body):
        for side, other, _ in _comparisons(cond):
            if (
                isinstance(side, ir.ArrayRef)
                and side.name in arrays
                and _const_value(other, consts) is not None
                and all(
                    not isinstance(i, ir.Slice) and _const_value(i, consts) is not None
                    for i in side.indices
                )
            ):
                compared.add(side.name)
                fine.add(id(side))
    for s in ir.walk(kernel.body):
        if isinstance(s, ir.Loop):
            exprs = [s.start, s.stop]
        elif isinstance(s, ir.WhileLoop):
            exprs = [s.cond]  # a filled flag could keep a DO WHILE running for ever
        else:
            exprs = _exprs(s)
        for e in exprs:
            for sub in ir.walk_expr(e):
                if isinstance(sub, (ir.ArrayRef, ir.Var)) and sub.name in arrays:
                    if id(sub) not in fine:
                        elsewhere.add(sub.name)
    return compared - elsewhere


def _derived_locals(
    kernel: ir.Kernel,
    scalars: set[str],
    known: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[str, ir.Expr]:
    """Locals assigned once, outside loops, from an expression of selector inputs (and of
    ``known`` inputs, whose values are given)."""
    args = {a.name for a in kernel.args}
    counts: dict[str, int] = {}
    for s in ir.walk(kernel.body):
        if isinstance(s, ir.Assign) and isinstance(s.target, ir.Var):
            counts[s.target.name] = counts.get(s.target.name, 0) + 1
    out: dict[str, ir.Expr] = {}
    for s in kernel.body:  # top level only: assigned before any branch or loop runs
        if (
            isinstance(s, ir.Assign)
            and isinstance(s.target, ir.Var)
            and s.target.name not in args
            and counts.get(s.target.name) == 1
        ):
            used = {e.name for e in ir.walk_expr(s.value) if isinstance(e, ir.Var)}
            if used & scalars and used <= scalars | known | set(kernel.constants):
                out[s.target.name] = s.value
    return out


def _solve(
    expr: ir.Expr, targets: set[int], found: Mapping[str, set[int]], kernel: ir.Kernel
) -> dict[str, set[int]]:
    """Values of the inputs of affine ``expr`` that make it equal each target: each input in
    turn, the others at the values found for them so far (or 1)."""
    a = affine(expr)
    consts = _int_constants(kernel)
    if a is None:
        return {}
    coef, const = a
    for name in list(coef):
        if name in consts:
            const += coef.pop(name) * consts[name]
    out: dict[str, set[int]] = {}
    for name, c in coef.items():
        others = [n for n in coef if n != name]
        pools = [sorted(found.get(n) or {1}) for n in others]
        for picks in product(*pools):
            rest = const + sum(coef[n] * v for n, v in zip(others, picks, strict=True))
            for t in targets:
                if (t - rest) % c == 0:
                    out.setdefault(name, set()).add((t - rest) // c)
    return out


def _assigned_scalars(stmts: list[ir.Stmt]) -> set[str]:
    names = {
        s.target.name
        for s in ir.walk(stmts)
        if isinstance(s, ir.Assign) and isinstance(s.target, ir.Var)
    }
    names |= {s.var for s in ir.walk(stmts) if isinstance(s, ir.Loop)}
    return names


def _decide(
    e: ir.Expr, known: Mapping[str, int], flag_arrays: Mapping[str, int]
) -> int | bool | None:
    """The value of ``e`` when ``known`` decides it (integers and logicals), else None."""
    if isinstance(e, ir.Const):
        return e.value if isinstance(e.value, (bool, int)) else None
    if isinstance(e, ir.Var):
        return known.get(e.name)
    if isinstance(e, ir.ArrayRef):
        return flag_arrays.get(e.name)
    if isinstance(e, ir.UnaryOp):
        v = _decide(e.operand, known, flag_arrays)
        if v is None:
            return None
        if e.op == "not":
            return not v
        return -v if e.op == "-" else v
    if isinstance(e, ir.BinOp):
        left = _decide(e.left, known, flag_arrays)
        right = _decide(e.right, known, flag_arrays)
        if e.op == "and":
            if left is not None and not left or right is not None and not right:
                return False
            return None if left is None or right is None else True
        if e.op == "or":
            if left is not None and left or right is not None and right:
                return True
            return None if left is None or right is None else False
        if left is None or right is None:
            return None
        ops = {
            "==": lambda a, b: a == b,
            "/=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
            "eqv": lambda a, b: bool(a) == bool(b),
            "neqv": lambda a, b: bool(a) != bool(b),
            "+": lambda a, b: a + b,
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
        }
        if e.op in ops:
            return ops[e.op](left, right)
    return None


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
