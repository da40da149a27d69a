"""Profile kernels: a static cost model, hotspot ranking and (optionally) measured timings.

Static model (no execution), per kernel and per loop nest inside it:

* **Trip count**: the number of executions of the innermost statement groups, both as a
  symbolic formula over the kernel's size arguments (``"(n-2)*(m-2)*nstep"``, innermost loop
  first) and evaluated at the given sizes. A loop whose bounds depend on an enclosing loop
  variable (triangular nests) is summed by substituting the enclosing variable with the midpoint
  of its range, which is exact when the inner trip count is linear in it.
* **Flops**: floating-point operations as written (no common-subexpression elimination, no
  hoisting of invariants), weighted by :data:`FLOP_WEIGHTS`. Integer arithmetic (subscripts,
  counters) is not counted, nor are comparisons or type conversions. For an IF, the condition
  plus the most expensive branch is counted (an upper bound).
* **Bytes**: unique array traffic with ideal reuse, per group of statements sharing the same
  enclosing loops (a nest body). An array subscripted by every loop of the nest costs one
  element per iteration point when it is read and one more when it is written, however many
  stencil neighbours are read: ``u(i-1,j) + u(i+1,j)`` costs one element of ``u``, not two. An
  array subscripted by fewer loops costs its footprint, the product of the trip counts of the
  loops that do subscript it (a coefficient profile ``a_x(i)`` in a ``(j, i)`` nest costs ``nx``
  elements per sweep, the ``x(j)`` of a matrix-vector product ``n``), as a cache would keep it.
  Loops whose variable subscripts none of the nest's arrays (time loops) re-stream everything.
  Scalars live in registers and cost nothing; SIZE/LBOUND/UBOUND read no data. Element sizes
  are the declared kinds (real(8): 8 bytes).
* **Intensity** = flops / bytes; **parallel** and **reason** come from the engine's dependence
  analysis (the outermost parallel loop of the dominant nest, or the dependence that prevents it).

The estimated cost of a kernel is its roofline time ``max(flops / peak, bytes / bandwidth)`` on
the machine model (nominal figures, or the measured STREAM bandwidth with ``measure=True``);
kernels are ranked by it and each gets its share of the total.

``measure=True`` first probes the machine: STREAM copy/triad and a peak-FLOP loop (independent
FMA chains, numba) on 1 and all threads; these become the roofline's ceilings, labelled
"measured", and the ranking uses them. Then, per kernel and unless the user gave sizes, it picks
sizes whose working set exceeds the last-level cache (read from sysfs) within the sandbox's byte
cap and the time budget, with time loops raised until one call takes about 20 ms
(:mod:`kernels.engine.profile_sizes`). It times the original compiled with
``gfortran -O3 -march=native`` (verify's bind(C) wrapper), again with ``-fopenmp`` at every
thread count when the original has OpenMP directives, the generated numba code serially
(``parallel=False``) and with ``prange`` at 1, 2, ..., N threads, and numba.cuda when a GPU is
present. Every run goes through the sandboxed harness (:mod:`kernels.engine.harness`) under one
overall deadline. The first call at each thread count is a warm-up; each timed call starts from
fresh inputs; repeats continue until the median's 95 % interval is within +-2 % or the budget
runs out, and a spread (IQR / median) above 10 % is reported as a warning. Achieved bandwidth
(model bytes / median time) is given as a percentage of the STREAM triad at the same thread
count; a parallel port is compared with ``gfortran -fopenmp`` at the same thread count when the
original has directives, and with serial gfortran (said so) otherwise. Working sets that fit in
cache can exceed 100 % of STREAM: the sizes table says when the cap kept them there.
"""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from kernels.engine import harness, ir, verify
from kernels.engine import sizes as sizes_module
from kernels.engine.profile_sizes import (
    SizeChoice,
    choose_measure_sizes,
    last_level_cache_bytes,
    read_cpu_caches,
)
from kernels.engine.report import EngineError, ProgressCallback, SandboxError
from kernels.engine.sandbox import run_sandboxed, sandbox_tempdir

# --------------------------------------------------------------------------------------------
# Flop weights

# Weights are "equivalent flops". + - * / and sqrt map to one hardware instruction each (division
# and sqrt are slower, but counting them as one keeps the figure comparable with LIKWID/PAPI FP
# counters); transcendental functions are library calls costing roughly ten multiply-adds.
FLOP_WEIGHTS: dict[str, int] = {
    "+": 1,
    "-": 1,
    "*": 1,
    "/": 1,
    "sqrt": 1,
    "abs": 1,
    "sign": 1,
    "min": 1,  # per extra argument
    "max": 1,  # per extra argument
    "mod": 2,
    "modulo": 2,
    "aint": 1,
    "anint": 1,
    "dim": 1,
    "exp": 10,
    "log": 10,
    "log10": 10,
    "sin": 10,
    "cos": 10,
    "tan": 10,
    "asin": 10,
    "acos": 10,
    "atan": 10,
    "atan2": 10,
    "sinh": 10,
    "cosh": 10,
    "tanh": 10,
    "**": 10,  # real exponent: pow(); an integer constant exponent k costs k-1 multiplies
}
# Conversions and inquiry functions move no data and do no arithmetic worth counting.
ZERO_COST_INTRINSICS = frozenset(
    {"real", "dble", "float", "int", "nint", "cmplx", "sngl", "size", "lbound", "ubound"}
)
# The "peak" of the nominal machine is what one core does with 4-wide FMA at about 2.5 GHz; the
# bandwidth is what one DDR4 channel pair sustains. Both are replaced by measured figures where
# the user asks for measurement (bandwidth) or calls with an explicit machine.
NOMINAL_PEAK_GFLOPS_PER_CORE = 20.0
NOMINAL_BANDWIDTH_GBS = 20.0

# --------------------------------------------------------------------------------------------
# A tiny polynomial algebra for symbolic trip counts (no sympy dependency)

Monomial = tuple[str, ...]  # sorted variable names, repeated for powers


class Poly:
    """A polynomial with rational coefficients over named symbols."""

    __slots__ = ("terms",)

    def __init__(self, terms: Mapping[Monomial, Fraction] | None = None):
        self.terms: dict[Monomial, Fraction] = {m: c for m, c in (terms or {}).items() if c != 0}

    @staticmethod
    def const(value: int | Fraction) -> Poly:
        return Poly({(): Fraction(value)})

    @staticmethod
    def symbol(name: str) -> Poly:
        return Poly({(name,): Fraction(1)})

    def __add__(self, other: Poly) -> Poly:
        out = dict(self.terms)
        for m, c in other.terms.items():
            out[m] = out.get(m, Fraction(0)) + c
        return Poly(out)

    def __neg__(self) -> Poly:
        return Poly({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Poly) -> Poly:
        return self + (-other)

    def __mul__(self, other: Poly) -> Poly:
        out: dict[Monomial, Fraction] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = tuple(sorted(m1 + m2))
                out[m] = out.get(m, Fraction(0)) + c1 * c2
        return Poly(out)

    def scale(self, k: Fraction) -> Poly:
        return Poly({m: c * k for m, c in self.terms.items()})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Poly) and self.terms == other.terms

    def __hash__(self) -> int:
        return hash(frozenset(self.terms.items()))

    @property
    def is_const(self) -> bool:
        return all(not m for m in self.terms)

    @property
    def symbols(self) -> set[str]:
        return {s for m in self.terms for s in m}

    def constant_value(self) -> Fraction:
        return self.terms.get((), Fraction(0))

    def substitute(self, name: str, value: Poly) -> Poly:
        if name not in self.symbols:
            return self
        out = Poly()
        for m, c in self.terms.items():
            term = Poly.const(c)
            for s in m:
                term = term * (value if s == name else Poly.symbol(s))
            out = out + term
        return out

    def evaluate(self, env: Mapping[str, float]) -> float:
        total = 0.0
        for m, c in self.terms.items():
            v = float(c)
            for s in m:
                v *= float(env[s])
            total += v
        return total

    def n_terms(self) -> int:
        return len(self.terms)

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        # Highest degree first, constants last: "2*n+1", "n-2".
        ordered = sorted(self.terms.items(), key=lambda mc: (-len(mc[0]), mc[0]))
        parts: list[str] = []
        for idx, (m, c) in enumerate(ordered):
            mag = abs(c)
            body = "*".join(_power_groups(m))
            if not m:
                text = _fraction_text(mag)
            elif mag == 1:
                text = body
            else:
                text = f"{_fraction_text(mag)}*{body}"
            if idx == 0:
                parts.append(("-" if c < 0 else "") + text)
            else:
                parts.append(("-" if c < 0 else "+") + text)
        return "".join(parts)


def _power_groups(m: Monomial) -> list[str]:
    out: list[str] = []
    for name in dict.fromkeys(m):
        k = m.count(name)
        out.append(name if k == 1 else f"{name}**{k}")
    return out


def _fraction_text(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


class _Opaque(Exception):
    """An expression the polynomial algebra cannot represent (division, MIN, ...)."""


def _to_poly(e: ir.Expr, atoms: dict[str, ir.Expr]) -> Poly:
    """Polynomial form of an integer bound; anything else becomes an opaque named atom."""
    try:
        return _to_poly_strict(e)
    except _Opaque:
        name = ir.fortran_text(e)
        atoms[name] = e
        return Poly.symbol(name)


def _to_poly_strict(e: ir.Expr) -> Poly:
    if isinstance(e, ir.Const) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return Poly.const(e.value)
    if isinstance(e, ir.Var):
        return Poly.symbol(e.name)
    if isinstance(e, ir.UnaryOp) and e.op in "+-":
        p = _to_poly_strict(e.operand)
        return -p if e.op == "-" else p
    if isinstance(e, ir.BinOp):
        if e.op in ("+", "-", "*"):
            a, b = _to_poly_strict(e.left), _to_poly_strict(e.right)
            return a + b if e.op == "+" else a - b if e.op == "-" else a * b
        if e.op == "/":
            a, b = _to_poly_strict(e.left), _to_poly_strict(e.right)
            # Only exact division by a constant keeps Fortran's truncation out of the picture.
            if b.is_const and b.constant_value() != 0:
                k = b.constant_value()
                if all((c / k).denominator == 1 for c in a.terms.values()):
                    return a.scale(1 / k)
    raise _Opaque


# --------------------------------------------------------------------------------------------
# Static cost walk


@dataclass
class NestCost:
    """One group of statements sharing the same enclosing loops (the body of a loop nest)."""

    line: int
    loops: list[str]  # loop variables, outermost first
    trip_factors: list[Poly]  # per enclosing loop, outermost first (after substitution)
    flops_per_iter: int
    reads: dict[str, _Access]  # array -> element size and the loop variables subscripting it
    writes: dict[str, _Access]
    parallel: bool
    reason: str
    top: int = 0  # the top-level statement it belongs to (selects the set-up values in force)

    def footprints(self) -> list[tuple[int, list[Poly]]]:
        """(element size, trip factors of its footprint) for every array access of the nest.

        This is the traffic model with ideal reuse (see the module docstring). Loops outside
        the *sweep* (those whose variable subscripts none of the nest's arrays, typically a
        time loop) re-stream everything. Inside the sweep an array costs its footprint: the
        product of the trip counts of the loops that subscript it. A stencil array indexed by
        every loop thus costs one element per iteration point, however many neighbours the
        stencil reads, while a coefficient profile ``a_x(i)`` in a ``(j, i)`` nest or the vector
        ``x(j)`` of a matrix-vector product costs its length, as a cache would keep it.
        """
        accesses = [*self.reads.values(), *self.writes.values()]
        used: set[str] = set()
        for acc in accesses:
            used |= set(self.loops) if acc.loop_vars is None else acc.loop_vars
        sweep = next((i for i, v in enumerate(self.loops) if v in used), len(self.loops))
        out = []
        for acc in accesses:
            factors = [
                f
                for idx, (var, f) in enumerate(zip(self.loops, self.trip_factors, strict=True))
                if idx < sweep or acc.loop_vars is None or var in acc.loop_vars
            ]
            out.append((acc.elem_bytes, factors))
        return out

    def repeat_symbols(self) -> set[str]:
        """Symbols bounding the loops outside the sweep (time loops): they repeat, not grow, work."""
        used: set[str] = set()
        for acc in [*self.reads.values(), *self.writes.values()]:
            used |= set(self.loops) if acc.loop_vars is None else acc.loop_vars
        out: set[str] = set()
        for var, f in zip(self.loops, self.trip_factors, strict=True):
            if var in used:
                break
            out |= f.symbols
        return out

    def trip_value(self, env: Mapping[str, float]) -> int:
        """Iteration points at ``env``; raises KeyError naming a symbol without a value."""
        return round(_clamped_product(self.trip_factors, env))

    def bytes_value(self, env: Mapping[str, float]) -> int:
        return round(sum(b * _clamped_product(fs, env) for b, fs in self.footprints()))

    def trip_text(self) -> str:
        return _product_text(list(reversed(self.trip_factors)))  # innermost loop first

    def bytes_text(self) -> str:
        """The traffic formula in factored form, one term per distinct footprint."""
        terms = self.bytes_terms()
        return _sum_text(terms) if terms else "0"

    def bytes_terms(self) -> dict[str, int]:
        """Footprint formula -> bytes per element of that footprint, summed over arrays."""
        terms: dict[str, int] = {}
        degree: dict[str, int] = {}
        for elem_bytes, factors in self.footprints():
            text = _product_text(list(reversed(factors)))
            terms[text] = terms.get(text, 0) + elem_bytes
            degree[text] = sum(1 for f in factors if not f.is_const)
        # The dominant (highest-degree) footprint first: "8*n**2 + 24*n".
        return {t: terms[t] for t in sorted(terms, key=lambda t: -degree[t])}


def _clamped_product(factors: list[Poly], env: Mapping[str, float]) -> float:
    # A loop that runs zero times empties the whole nest: clamp each factor, not the product
    # (two negative "trip counts" must not multiply into a positive one).
    value = 1.0
    for f in factors:
        value *= max(0.0, f.evaluate(env))
    return value


def _product_text(factors: list[Poly]) -> str:
    """``[n-2, n-2, nstep]`` -> ``(n-2)**2*nstep``; constant factors are multiplied out first."""
    k = Fraction(1)
    powers: dict[str, int] = {}
    for f in factors:
        if f.is_const:
            k *= f.constant_value()
            continue
        text = f"({f})" if f.n_terms() > 1 else str(f)
        powers[text] = powers.get(text, 0) + 1
    texts = [t if p == 1 else f"{t}**{p}" for t, p in powers.items()]
    if k != 1 or not texts:
        texts.insert(0, _fraction_text(k))
    if len(texts) == 1 and texts[0].startswith("(") and texts[0].endswith(")"):
        inner = texts[0][1:-1]
        if "(" not in inner:
            return inner
    return "*".join(texts)


def _sum_text(terms: dict[str, int]) -> str:
    """``{"n*m": 2, "1": 3}`` -> ``"2*n*m + 3"`` (coefficients folded into constant factors)."""
    parts = []
    for text, k in terms.items():
        if k == 1:
            parts.append(text)
            continue
        if not _is_product(text):
            text = f"({text})"
        lead, _, rest = text.partition("*")
        if text == "1":
            parts.append(str(k))
        elif lead.isdigit():
            parts.append(f"{int(lead) * k}*{rest}" if rest else str(int(lead) * k))
        else:
            parts.append(f"{k}*{text}")
    return " + ".join(parts)


def _is_product(text: str) -> bool:
    """True when ``text`` has no + or - outside parentheses (so it can take a coefficient)."""
    depth = 0
    for idx, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in "+-" and depth == 0 and idx > 0:
            return False
    return True


@dataclass
class _TypeEnv:
    types: dict[str, ir.FType]

    def of(self, name: str) -> ir.FType | None:
        return self.types.get(name)


def _kernel_types(kernel: ir.Kernel) -> _TypeEnv:
    types: dict[str, ir.FType] = {}
    for name, c in kernel.constants.items():
        types[name] = c.type
    for name, d in kernel.locals.items():
        types[name] = d.type
    for a in kernel.args:
        types[a.name] = a.type
    return _TypeEnv(types)


def _is_float_type(t: ir.FType | None) -> bool:
    return t is not None and t.base in ("real", "complex")


def _expr_is_float(e: ir.Expr, env: _TypeEnv, kernel: ir.Kernel) -> bool:
    if isinstance(e, ir.Const):
        return isinstance(e.value, float) or _is_float_type(e.type)
    if isinstance(e, (ir.Var, ir.ArrayRef)):
        return _is_float_type(env.of(e.name))
    if isinstance(e, ir.BinOp):
        if e.op in ("+", "-", "*", "/", "**"):
            return _expr_is_float(e.left, env, kernel) or _expr_is_float(e.right, env, kernel)
        return False  # comparisons and logical operators yield LOGICAL
    if isinstance(e, ir.UnaryOp):
        return e.op != "not" and _expr_is_float(e.operand, env, kernel)
    if isinstance(e, ir.Call):
        if e.name in ("int", "nint", "floor", "ceiling", "size", "lbound", "ubound"):
            return False
        if e.name in ("real", "dble", "float", "sngl", "cmplx", "sqrt", "exp", "log"):
            return True
        fn = kernel.functions.get(e.name)
        if fn is not None and fn.result and fn.result in fn.decls:
            return _is_float_type(fn.decls[fn.result].type)
        return any(_expr_is_float(a, env, kernel) for a in e.args)
    return False


def expr_flops(e: ir.Expr, env: _TypeEnv, kernel: ir.Kernel) -> int:
    """Weighted floating-point operations of one evaluation of ``e`` (subscripts not counted)."""
    if isinstance(e, (ir.Const, ir.Var, ir.ArrayRef)):
        return 0  # subscripts are integer address arithmetic
    if isinstance(e, ir.UnaryOp):
        return expr_flops(e.operand, env, kernel)  # negation folds into the consumer
    if isinstance(e, ir.BinOp):
        inner = expr_flops(e.left, env, kernel) + expr_flops(e.right, env, kernel)
        if e.op not in ("+", "-", "*", "/", "**") or not _expr_is_float(e, env, kernel):
            return inner
        if e.op == "**":
            r = e.right
            if (
                isinstance(r, ir.Const)
                and isinstance(r.value, int)
                and not isinstance(r.value, bool)
                and r.value >= 1
            ):
                return inner + int(r.value) - 1
            if isinstance(r, ir.Const) and r.value == 0.5:
                return inner + FLOP_WEIGHTS["sqrt"]
            return inner + FLOP_WEIGHTS["**"]
        return inner + FLOP_WEIGHTS[e.op]
    if isinstance(e, ir.Call):
        inner = sum(expr_flops(a, env, kernel) for a in e.args)
        inner += sum(expr_flops(a, env, kernel) for a in e.keywords.values())
        if e.name in ZERO_COST_INTRINSICS:
            return inner
        fn = kernel.functions.get(e.name)
        if fn is not None:
            # A pure/elemental callee: the flops of its body, once per call.
            return inner + _procedure_flops(fn, kernel)
        if not _expr_is_float(e, env, kernel):
            return inner
        if e.name in ("min", "max"):
            return inner + FLOP_WEIGHTS[e.name] * max(1, len(e.args) - 1)
        return inner + FLOP_WEIGHTS.get(e.name, 1)
    return 0


def _procedure_flops(fn: ir.Procedure, kernel: ir.Kernel) -> int:
    env = _TypeEnv({name: d.type for name, d in fn.decls.items()})
    total = 0
    for s in ir.walk(fn.body):
        if isinstance(s, ir.Assign):
            total += expr_flops(s.value, env, kernel)
    return total


def _elem_bytes(t: ir.FType | None) -> int:
    if t is None:
        return 8
    return t.kind * 2 if t.base == "complex" and t.kind <= 8 else t.kind


def _array_accesses(
    e: ir.Expr | ir.Slice | None, arrays: Mapping[str, ir.FType], loop_vars: list[str]
) -> list[tuple[str, _Access]]:
    """Arrays read in ``e`` (including inside subscripts) with the loop variables indexing them."""
    out: list[tuple[str, _Access]] = []
    for sub in ir.walk_expr(e, _is_inquiry):
        if isinstance(sub, ir.ArrayRef) and sub.name in arrays:
            used = {
                v.name
                for ix in sub.indices
                for v in ir.walk_expr(ix)
                if isinstance(v, ir.Var) and v.name in loop_vars
            }
            out.append((sub.name, _Access(_elem_bytes(arrays[sub.name]), used)))
        elif isinstance(sub, ir.Var) and sub.name in arrays:
            # A whole-array reference (array syntax) touches every element.
            out.append((sub.name, _Access(_elem_bytes(arrays[sub.name]), None)))
    return out


def _is_inquiry(e: ir.Expr | ir.Slice) -> bool:
    """SIZE(a) and friends read no array data: cost walks skip them and their arguments."""
    return isinstance(e, ir.Call) and e.name in INQUIRY_INTRINSICS


INQUIRY_INTRINSICS = frozenset(
    {"size", "lbound", "ubound", "shape", "allocated", "present", "kind", "len"}
)


@dataclass
class _Access:
    elem_bytes: int
    loop_vars: set[str] | None  # None: every loop of the nest (whole-array reference)

    def merge(self, other: _Access) -> _Access:
        if self.loop_vars is None or other.loop_vars is None:
            return _Access(self.elem_bytes, None)
        return _Access(self.elem_bytes, self.loop_vars | other.loop_vars)


@dataclass
class _Group:
    line: int
    flops: int = 0
    reads: dict[str, _Access] = field(default_factory=dict)
    writes: dict[str, _Access] = field(default_factory=dict)
    has_work: bool = False

    def touch(self, table: dict[str, _Access], name: str, access: _Access) -> None:
        table[name] = table[name].merge(access) if name in table else access
        self.has_work = True

    def absorb(self, other: _Group) -> None:
        for name, acc in other.reads.items():
            self.touch(self.reads, name, acc)
        for name, acc in other.writes.items():
            self.touch(self.writes, name, acc)
        self.has_work = self.has_work or other.has_work


class _CostWalker:
    """Walks a kernel body and produces one NestCost per statement group."""

    def __init__(self, kernel: ir.Kernel):
        self.kernel = kernel
        self.types = _kernel_types(kernel)
        self.arrays: dict[str, ir.FType] = {a.name: a.type for a in kernel.args if a.is_array}
        self.dims: dict[str, list[ir.Dim]] = {a.name: a.dims for a in kernel.args if a.is_array}
        for name, d in kernel.locals.items():
            if d.is_array:
                self.arrays[name] = d.type
                self.dims[name] = d.dims
        self.atoms: dict[str, ir.Expr] = {}
        self.nests: list[NestCost] = []
        self.top = 0  # index of the top-level statement being walked

    def run(self) -> list[NestCost]:
        # Top-level statements one at a time, so each nest knows which straight-line set-up
        # (``nr = size(a, 1)``, ``s = 3``) ran before it: its bounds are evaluated after that.
        body = self.kernel.body
        group = _Group(line=self.kernel.line)
        for idx, stmt in enumerate(body):
            self.top = idx
            self._collect([stmt], [], [], {}, group, [])
        if group.has_work:
            self.top = len(body)
            self._append(group, [], [])
        return sorted(self.nests, key=lambda n: n.line)

    def _append(self, group: _Group, loops: list[ir.Loop], factors: list[Poly]) -> None:
        parallel, reason = _nest_parallelism(loops)
        self.nests.append(
            NestCost(
                line=group.line,
                loops=[lp.var for lp in loops],
                trip_factors=list(factors),
                flops_per_iter=group.flops,
                reads=group.reads,
                writes=group.writes,
                parallel=parallel,
                reason=reason,
                top=self.top,
            )
        )

    # A block: the statements at one nesting level. Plain statements form one group; loops recurse.
    def _block(
        self,
        body: list[ir.Stmt],
        loops: list[ir.Loop],
        factors: list[Poly],
        bindings: dict[str, Poly],
        outer_lines: list[int],
    ) -> None:
        group = _Group(line=(loops[-1].line if loops else self.kernel.line))
        self._collect(body, loops, factors, bindings, group, outer_lines)
        if group.has_work:
            self._append(group, loops, factors)

    def _collect(
        self,
        body: list[ir.Stmt],
        loops: list[ir.Loop],
        factors: list[Poly],
        bindings: dict[str, Poly],
        group: _Group,
        outer_lines: list[int],
    ) -> None:
        for s in body:
            if isinstance(s, ir.Loop):
                trip, mid = self._trip(s, bindings)
                inner_bindings = dict(bindings)
                inner_bindings[s.var] = mid
                self._block(s.body, [*loops, s], [*factors, trip], inner_bindings, outer_lines)
            elif isinstance(s, ir.WhileLoop):
                # The iteration count of a DO WHILE is unknown statically: count its body once
                # per entry and say so through the reason of the enclosing nest.
                self._collect(s.body, loops, factors, bindings, group, outer_lines)
                group.flops += expr_flops(s.cond, self.types, self.kernel)
            elif isinstance(s, ir.If):
                best = None
                for cond, branch in [*s.branches, (None, s.orelse)]:
                    if cond is not None:
                        group.flops += expr_flops(cond, self.types, self.kernel)
                        for name, acc in _array_accesses(cond, self.arrays, self._vars(loops)):
                            group.touch(group.reads, name, acc)
                    sub = _Group(line=group.line)
                    self._collect(branch, loops, factors, bindings, sub, outer_lines)
                    if best is None or sub.flops > best.flops:
                        best = sub
                    # Traffic of every branch counts: which branch runs varies by point.
                    group.absorb(sub)
                if best is not None:
                    group.flops += best.flops
            elif isinstance(s, ir.Assign):
                extents = self._array_syntax_extents(s.target, bindings)
                if extents is None:
                    self._assign(s, group, self._vars(loops))
                else:
                    # Array syntax is an implicit, always-parallel loop over its elements: it
                    # becomes a nest of its own with the section's extents as trip factors.
                    sub = _Group(line=s.line or group.line)
                    self._assign(s, sub, self._vars(loops))
                    self.nests.append(
                        NestCost(
                            line=sub.line,
                            loops=self._vars(loops) + [f":{k + 1}" for k in range(len(extents))],
                            trip_factors=[*factors, *extents],
                            flops_per_iter=sub.flops,
                            reads=sub.reads,
                            writes=sub.writes,
                            parallel=True,
                            reason=f"array-syntax assignment (line {s.line}) is elementwise",
                            top=self.top,
                        )
                    )
            elif isinstance(s, ir.CallStmt):
                for a in s.args:
                    for name, acc in _array_accesses(a, self.arrays, self._vars(loops)):
                        group.touch(group.reads, name, acc)

    @staticmethod
    def _vars(loops: list[ir.Loop]) -> list[str]:
        return [lp.var for lp in loops]

    def _assign(self, s: ir.Assign, group: _Group, loop_vars: list[str]) -> None:
        if group.line == self.kernel.line and s.line:
            group.line = s.line
        flops = expr_flops(s.value, self.types, self.kernel)
        group.flops += flops
        reads = _array_accesses(s.value, self.arrays, loop_vars)
        t = s.target
        if isinstance(t, ir.ArrayRef):
            for ix in t.indices:
                reads += _array_accesses(ix, self.arrays, loop_vars)
        for name, acc in reads:
            group.touch(group.reads, name, acc)
        if isinstance(t, ir.ArrayRef) and t.name in self.arrays:
            written = _array_accesses(ir.ArrayRef(t.name, t.indices), self.arrays, loop_vars)
            group.touch(group.writes, t.name, written[0][1])
        elif isinstance(t, ir.Var) and t.name in self.arrays:
            group.touch(group.writes, t.name, _Access(_elem_bytes(self.arrays[t.name]), None))
        elif flops:
            group.has_work = True  # scalar arithmetic (a reduction, a temporary) is work too

    def _array_syntax_extents(
        self, target: ir.Var | ir.ArrayRef, bindings: dict[str, Poly]
    ) -> list[Poly] | None:
        """Extents of an array-syntax assignment (``u = 0``, ``vx(1,:) = 0``); None otherwise."""
        if isinstance(target, ir.Var) and target.name in self.dims:
            bounds = [(d.lower, d.upper) for d in self.dims[target.name]]
        elif isinstance(target, ir.ArrayRef) and any(
            isinstance(i, ir.Slice) for i in target.indices
        ):
            bounds = []
            dims = self.dims.get(target.name, [])
            for k, ix in enumerate(target.indices):
                if isinstance(ix, ir.Slice):
                    lo = ix.lower or (dims[k].lower if k < len(dims) else None)
                    hi = ix.upper or (dims[k].upper if k < len(dims) else None)
                    bounds.append((lo, hi, ix.step))
            return [self._extent(lo, hi, step, bindings) for lo, hi, step in bounds]
        else:
            return None
        return [self._extent(lo, hi, None, bindings) for lo, hi in bounds]

    def _extent(
        self,
        lo: ir.Expr | None,
        hi: ir.Expr | None,
        step: ir.Expr | None,
        bindings: dict[str, Poly],
    ) -> Poly:
        if lo is None or hi is None:
            # Assumed shape: the extent is the argument's SIZE, which the IR does not name.
            return Poly.symbol("size")
        loop = ir.Loop("_", lo, hi, step, [])
        trip, _ = self._trip(loop, bindings)
        return trip

    def _trip(self, loop: ir.Loop, bindings: dict[str, Poly]) -> tuple[Poly, Poly]:
        start = _to_poly(loop.start, self.atoms)
        stop = _to_poly(loop.stop, self.atoms)
        for var, value in bindings.items():
            start = start.substitute(var, value)
            stop = stop.substitute(var, value)
        mid = (start + stop).scale(Fraction(1, 2))
        step = Poly.const(1) if loop.step is None else _to_poly(loop.step, self.atoms)
        if step == Poly.const(1):
            return stop - start + Poly.const(1), mid
        if step.is_const and step.constant_value() != 0:
            k = step.constant_value()
            return (stop - start + step).scale(1 / k), mid
        name = f"(({ir.fortran_text(loop.stop)}-{ir.fortran_text(loop.start)}+{ir.fortran_text(loop.step)})/{ir.fortran_text(loop.step)})"
        self.atoms[name] = ir.BinOp(
            "/", ir.BinOp("+", ir.BinOp("-", loop.stop, loop.start), loop.step), loop.step
        )
        return Poly.symbol(name), mid


def _nest_parallelism(loops: list[ir.Loop]) -> tuple[bool, str]:
    """Parallel when some loop of the nest is; the reason names it, or the blocking dependences."""
    if not loops:
        return False, "straight-line code outside any loop"
    for idx, lp in enumerate(loops):
        if lp.parallel:
            why = f": {lp.reason}" if lp.reason else ""
            text = f"loop {lp.var} (line {lp.line}) is parallel{why}"
            # Say why the loops around it (a time loop, a sweep counter) stay sequential.
            outer = [
                f"loop {o.var} (line {o.line}) stays sequential: {o.reason or 'not analysed'}"
                for o in loops[:idx]
            ]
            return True, "; ".join([text, *outer])
    reasons = [f"loop {lp.var} (line {lp.line}): {lp.reason or 'not analysed'}" for lp in loops]
    return False, "; ".join(reasons)


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class MeasuredTiming:
    """Timing of one variant of one kernel: the median of adaptive repeats with its interval.

    For threaded variants the headline figures are at the most threads; ``scaling`` holds one
    row per thread count (median, interval, speed-up and efficiency against 1 thread).
    """

    variant: str  # one of VARIANTS, or 'numba_cuda_model' (GPU model, not measured)
    status: str  # 'ok' | 'skipped' | 'failed' | 'model'
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    spread_pct: float | None = None  # interquartile range / median, in percent
    ci_low_s: float | None = None  # order-statistic interval of the median
    ci_high_s: float | None = None
    ci_level: float | None = None  # its actual coverage
    repeats: int = 0
    threads: int | None = None
    stop_reason: str = ""  # 'settled' | 'budget' | 'max_repeats'
    warnings: list[str] = field(default_factory=list)
    gflops: float | None = None
    bandwidth_gbs: float | None = None
    stream_pct: float | None = None  # achieved bandwidth as % of the STREAM triad reference
    stream_ref: str = ""  # which STREAM figure it is compared with
    speedup_vs_gfortran: float | None = None
    compared_with: str = ""  # which gfortran build and thread count the ratio is against
    scaling: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["warnings"] = list(self.warnings)
        out["scaling"] = [dict(r) for r in self.scaling]
        return out


@dataclass
class KernelProfile:
    name: str
    line: int
    trip_count_symbolic: str
    trip_count: int | None
    flops_per_iter: float | None
    flops: int | None
    bytes: int | None
    intensity: float | None
    parallel: bool
    reason: str
    bytes_symbolic: str = ""
    estimated_s: float | None = None
    share: float = 0.0
    rank: int = 0
    bound: str = ""  # 'memory' | 'compute' on the machine model
    nests: list[dict[str, Any]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    measured: dict[str, MeasuredTiming] | None = None
    measure_sizes: dict[str, Any] | None = None  # the sizes timed and their working set
    openmp: dict[str, Any] | None = None  # OpenMP directives found in the original
    gpu_model: dict[str, Any] | None = None  # target gpu: kernels.engine.gpu_model figures

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "line": self.line,
            "trip_count_symbolic": self.trip_count_symbolic,
            "trip_count": self.trip_count,
            "flops_per_iter": self.flops_per_iter,
            "flops": self.flops,
            "bytes": self.bytes,
            "bytes_symbolic": self.bytes_symbolic,
            "intensity": self.intensity,
            "parallel": self.parallel,
            "reason": self.reason,
            "share": self.share,
            "rank": self.rank,
            "estimated_s": self.estimated_s,
            "bound": self.bound,
            "nests": list(self.nests),
            "sizes": dict(self.sizes),
            "notes": list(self.notes),
        }
        if self.gpu_model is not None:
            out["gpu_model"] = dict(self.gpu_model)
        if self.measured is not None:
            out["measured"] = {k: v.to_dict() for k, v in self.measured.items()}
            out["measure_sizes"] = dict(self.measure_sizes or {})
            out["openmp"] = dict(self.openmp or {})
        return out


@dataclass
class ProfileResult:
    file: str
    kernels: list[KernelProfile]
    machine: dict[str, Any]
    stream: dict[str, Any] = field(default_factory=dict)
    measured: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "measured": self.measured,
            "kernels": [k.to_dict() for k in self.kernels],
            "machine": dict(self.machine),
            "stream": dict(self.stream),
        }


# --------------------------------------------------------------------------------------------
# Machine model


def machine_info() -> dict[str, Any]:
    """What the cost model assumes about this machine (nominal until measurement refines it)."""
    cpus = os.cpu_count() or 1
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    caches = read_cpu_caches()
    llc = last_level_cache_bytes(caches)
    return {
        "cpu": model,
        "cores": cpus,
        "caches": [c.to_dict() for c in caches],
        "llc_mib": round(llc / (1 << 20), 2) if llc else None,
        "peak_gflops": NOMINAL_PEAK_GFLOPS_PER_CORE * cpus,
        "peak_gflops_serial": NOMINAL_PEAK_GFLOPS_PER_CORE,
        "bandwidth_gbs": NOMINAL_BANDWIDTH_GBS,
        "bandwidth_source": "nominal",
        "peak_source": "nominal",
        "gpu": None,
    }


# --------------------------------------------------------------------------------------------
# Static profile of one kernel


def kernel_size_env(kernel: ir.Kernel, sizes: Mapping[str, int] | None) -> dict[str, int]:
    """Sizes used to evaluate trip counts: the user's, else the ones verification would pick."""
    given = {k.lower(): int(v) for k, v in (sizes or {}).items()}
    try:
        # plan_run also settles the extents of assumed-shape dummies (dim1, dim2, ...).
        planned = verify.plan_run(kernel, given).sizes
    except (verify.PlanError, ir.NotConstant, ValueError):
        planned = {}
    inferred = verify.infer_sizes(kernel, given)
    return {k: int(v) for k, v in {**inferred, **planned}.items()}


def _setup_envs(
    kernel: ir.Kernel,
    base: dict[str, float],
    sizes: Mapping[str, int],
    atoms: Mapping[str, ir.Expr],
) -> list[dict[str, float]]:
    """The values in force before each top-level statement (index len(body): after the last).

    Straight-line integer set-up (``nr = size(a, 1)``, ``s = 3``) is executed symbolically so
    that loop bounds over such locals evaluate; anything not evaluable is simply left unknown.
    """
    extents = _array_extents(kernel, base, sizes)
    env = dict(base)
    envs: list[dict[str, float]] = []

    def snapshot() -> dict[str, float]:
        snap = dict(env)
        for name, expr in atoms.items():
            try:
                snap[name] = ir.eval_int(_fold_inquiries(expr, extents), snap)
            except (ir.NotConstant, ZeroDivisionError, TypeError, ValueError):
                pass
        return snap

    for stmt in kernel.body:
        envs.append(snapshot())
        if isinstance(stmt, ir.Assign) and isinstance(stmt.target, ir.Var):
            name = stmt.target.name
            try:
                env[name] = ir.eval_int(_fold_inquiries(stmt.value, extents), env)
            except (ir.NotConstant, ZeroDivisionError, TypeError, ValueError):
                env.pop(name, None)  # overwritten by something we cannot follow
    envs.append(snapshot())
    return envs


def _array_extents(
    kernel: ir.Kernel, env: Mapping[str, float], sizes: Mapping[str, int]
) -> dict[str, list[int | None]]:
    """Extent of every dimension of every argument array (assumed shape: verify's dimK size)."""
    out: dict[str, list[int | None]] = {}
    for a in kernel.args:
        if not a.is_array:
            continue
        dims: list[int | None] = []
        for k, d in enumerate(a.dims):
            try:
                lo = ir.eval_int(d.lower, env) if d.lower is not None else 1
                if d.upper is None:
                    dims.append(sizes.get(f"dim{k + 1}"))
                else:
                    dims.append(ir.eval_int(d.upper, env) - lo + 1)
            except (ir.NotConstant, TypeError):
                dims.append(None)
        out[a.name] = dims
    return out


def _fold_inquiries(e: ir.Expr, extents: Mapping[str, list[int | None]]) -> ir.Expr:
    """Replace SIZE(a[, k]) by its value where the extents are known."""
    if isinstance(e, ir.Call) and e.name == "size" and e.args:
        target = e.args[0]
        name = target.name if isinstance(target, (ir.Var, ir.ArrayRef)) else None
        dims = extents.get(name or "")
        dim_arg = e.args[1] if len(e.args) > 1 else e.keywords.get("dim")
        if dims:
            if dim_arg is None and all(d is not None for d in dims):
                total = 1
                for d in dims:
                    total *= d or 0
                return ir.Const(total, ir.INTEGER)
            if isinstance(dim_arg, ir.Const) and 1 <= int(dim_arg.value) <= len(dims):
                value = dims[int(dim_arg.value) - 1]
                if value is not None:
                    return ir.Const(value, ir.INTEGER)
        return e
    if isinstance(e, ir.BinOp):
        return ir.BinOp(e.op, _fold_inquiries(e.left, extents), _fold_inquiries(e.right, extents))
    if isinstance(e, ir.UnaryOp):
        return ir.UnaryOp(e.op, _fold_inquiries(e.operand, extents))
    if isinstance(e, ir.Call):
        return ir.Call(e.name, [_fold_inquiries(a, extents) for a in e.args], dict(e.keywords))
    return e


def _eval_env(kernel: ir.Kernel, sizes: Mapping[str, int]) -> dict[str, float]:
    env: dict[str, float] = {}
    for name, c in kernel.constants.items():
        if isinstance(c.value, (int, float)) and not isinstance(c.value, bool):
            env[name] = c.value
    env.update({k: v for k, v in sizes.items()})
    return env


def profile_kernel(
    kernel: ir.Kernel,
    *,
    sizes: Mapping[str, int] | None = None,
    machine: Mapping[str, Any] | None = None,
) -> KernelProfile:
    """Static cost model of one kernel (loops must already carry the analysis results)."""
    walker = _CostWalker(kernel)
    nests = walker.run()
    size_env = kernel_size_env(kernel, sizes)
    envs = _setup_envs(kernel, _eval_env(kernel, size_env), size_env, walker.atoms)
    env = envs[0]
    notes: list[str] = list(getattr(kernel, "notes", []) or [])
    given = {k.lower() for k in (sizes or {})}
    defaulted = {k: v for k, v in size_env.items() if k not in given}
    if defaulted:
        listed = ", ".join(f"{k}={v}" for k, v in defaulted.items())
        notes.append(
            f"verification's default sizes used for {listed}: pass --size NAME=VALUE for yours"
        )
    for u in kernel.unsupported:
        # The model cannot see inside what the frontend did not translate: say so, per line.
        notes.append(f"line {u.line}: {u.construct} is not modelled (unsupported construct)")

    def ev(compute: Callable[[Mapping[str, float]], int]) -> int | None:
        try:
            return compute(env)
        except KeyError as exc:
            note = f"trip count depends on {exc.args[0]}, which has no value"
            if note not in notes:
                notes.append(note)
            return None

    nest_dicts: list[dict[str, Any]] = []
    total_trip: int | None = 0
    total_flops: int | None = 0
    total_bytes: int | None = 0
    sym_terms: dict[str, int] = {}
    dominant: tuple[float, NestCost] | None = None
    for nest in nests:
        env = envs[nest.top]
        trip = ev(nest.trip_value)
        flops = None if trip is None else trip * nest.flops_per_iter
        nbytes = None if trip is None else ev(nest.bytes_value)
        text = nest.trip_text()
        sym_terms[text] = sym_terms.get(text, 0) + 1
        nest_dicts.append(
            {
                "line": nest.line,
                "loops": nest.loops,
                "trip_count_symbolic": text,
                "trip_count": trip,
                "flops_per_iter": nest.flops_per_iter,
                "bytes_per_iter": round(nbytes / trip, 4) if nbytes is not None and trip else 0,
                "flops": flops,
                "bytes": nbytes,
                "bytes_symbolic": nest.bytes_text(),
                "reads": sorted(nest.reads),
                "writes": sorted(nest.writes),
                "parallel": nest.parallel,
                "reason": nest.reason,
            }
        )
        total_trip = None if trip is None or total_trip is None else total_trip + trip
        total_flops = None if flops is None or total_flops is None else total_flops + flops
        total_bytes = None if nbytes is None or total_bytes is None else total_bytes + nbytes
        weight = float((flops or 0) + (nbytes or 0))
        if dominant is None or weight > dominant[0]:
            dominant = (weight, nest)

    symbolic = _sum_text(sym_terms) or "0"
    byte_terms: dict[str, int] = {}
    for nest in nests:
        for text, k in nest.bytes_terms().items():
            byte_terms[text] = byte_terms.get(text, 0) + k
    if dominant is None:
        parallel, reason = False, "no loop nest with floating-point work or array traffic"
    else:
        parallel, reason = dominant[1].parallel, dominant[1].reason
    flops_per_iter = (
        round(total_flops / total_trip, 4)
        if total_flops is not None and total_trip
        else (0.0 if total_trip == 0 else None)
    )
    intensity = (
        round(total_flops / total_bytes, 4) if total_flops is not None and total_bytes else None
    )
    m = dict(machine or machine_info())
    estimated, bound = _roofline_time(total_flops, total_bytes, m, parallel)
    nest_times = [
        _roofline_time(d["flops"], d["bytes"], m, d["parallel"])[0] or 0.0 for d in nest_dicts
    ]
    for d, t in zip(nest_dicts, nest_times, strict=True):
        d["share"] = round(t / sum(nest_times), 4) if sum(nest_times) > 0 else 0.0
    return KernelProfile(
        name=kernel.name,
        line=kernel.line,
        trip_count_symbolic=symbolic,
        trip_count=total_trip,
        flops_per_iter=flops_per_iter,
        flops=total_flops,
        bytes=total_bytes,
        bytes_symbolic=_sum_text(byte_terms) or "0",
        intensity=intensity,
        parallel=parallel,
        reason=reason,
        estimated_s=estimated,
        bound=bound,
        nests=nest_dicts,
        sizes=dict(size_env),
        notes=notes,
    )


def _roofline_time(
    flops: int | None, nbytes: int | None, machine: Mapping[str, Any], parallel: bool
) -> tuple[float | None, str]:
    if flops is None or nbytes is None:
        return None, ""
    # A serial kernel only gets one core's arithmetic; memory bandwidth is shared either way.
    peak = machine["peak_gflops"] if parallel else machine["peak_gflops_serial"]
    t_compute = flops / (peak * 1e9)
    t_memory = nbytes / (machine["bandwidth_gbs"] * 1e9)
    return max(t_compute, t_memory), ("compute" if t_compute > t_memory else "memory")


def rank_kernels(kernels: list[KernelProfile]) -> list[KernelProfile]:
    """Order by estimated cost (highest first) and fill ``rank`` and ``share`` (0..1)."""
    total = sum(k.estimated_s or 0.0 for k in kernels)
    ordered = sorted(kernels, key=lambda k: (-(k.estimated_s or 0.0), k.line, k.name))
    for idx, k in enumerate(ordered, start=1):
        k.rank = idx
        k.share = round((k.estimated_s or 0.0) / total, 4) if total > 0 else 0.0
    return ordered


# --------------------------------------------------------------------------------------------
# Measurement: parent side

VARIANTS = ("gfortran", "gfortran_omp", "numba_serial", "numba_prange", "numba_cuda")
# Variants that run on several threads: timed at every count of :func:`thread_counts`.
THREADED_VARIANTS = ("gfortran_omp", "numba_prange")
DEFAULT_STREAM_ELEMENTS = 1 << 23  # 64 MiB per float64 array, bounded by the memory cap
GFORTRAN_PROFILE_FLAGS = ("-O3", "-march=native", "-fPIC", "-shared")
GFORTRAN_OPENMP_FLAGS = (*GFORTRAN_PROFILE_FLAGS, "-fopenmp")
KERNEL_RUN_MEMORY_MB = 6144  # numba + LLVM reserve a lot of address space
WARMUPS = 1  # the first call at each thread count JIT-compiles (numba) or faults pages in
COMPILE_RESERVE_S = 20.0  # per kernel: two gfortran builds and numba's JIT of two variants
FMA_LANES = 64  # independent FMA chains in the peak-FLOP probe (fills the vector units)
FMA_ITERATIONS = 1 << 16
OPENMP_DIRECTIVE = re.compile(r"^\s*!\$omp\s+(parallel|do\b)", re.IGNORECASE)


def openmp_directive_lines(kernel: ir.Kernel) -> list[int]:
    """File lines of the OpenMP work-sharing directives (``!$omp parallel do``) in the kernel's unit.

    ``fortran_source`` holds the whole file from its first unit on, so the search is limited to
    the kernel's own SUBROUTINE/FUNCTION (to the first END SUBROUTINE/FUNCTION after its
    header); lines are counted from the header, which sits at ``kernel.line``.
    """
    lines = (kernel.fortran_source or "").splitlines()
    name = re.escape(kernel.fortran_entry or kernel.name)
    header = re.compile(rf"^(?!\s*end\b).*\b(subroutine|function)\s+{name}\b", re.IGNORECASE)
    start = next((i for i, text in enumerate(lines) if header.match(text)), None)
    if start is None:
        return []  # an extracted loop nest: the directives of a program are not the kernel's
    end_unit = re.compile(r"^\s*end\s*((subroutine|function)\b|$)", re.IGNORECASE)
    found = []
    for i in range(start + 1, len(lines)):
        if end_unit.match(lines[i]):
            break
        if OPENMP_DIRECTIVE.match(lines[i]):
            found.append(kernel.line + i - start if kernel.line else i + 1)
    return found


def available_threads() -> int:
    """Threads a measurement may use: the CPUs this process may run on (or the operator's cap)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    cap = os.environ.get("NUMBA_NUM_THREADS", "")
    return max(1, min(cpus, int(cap))) if cap.isdigit() else max(1, cpus)


def thread_counts(n: int) -> list[int]:
    """1, 2, ..., n for small machines; powers of two and n past 8 threads."""
    if n <= 8:
        return list(range(1, n + 1))
    counts = [1 << k for k in range(n.bit_length()) if 1 << k < n]
    return [*counts, n]


def _harness_env(threads: int) -> dict[str, str]:
    """What the harness needs on top of the sandbox's scrubbed environment."""
    # The largest count timed; the harness lowers it per run (set_num_threads, omp_set_...).
    return {"NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}


def _gpu_present() -> bool:
    import shutil

    if not shutil.which("nvidia-smi"):
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - any driver/toolkit problem means "no usable GPU"
        return False


class _Deadline:
    def __init__(self, seconds: float):
        import time

        self._time = time.monotonic
        self.end = self._time() + seconds

    def left(self) -> float:
        return max(0.0, self.end - self._time())


def probe_machine(
    *,
    threads: int,
    stream_elements: int,
    memory_cap_bytes: int,
    deadline: _Deadline,
    workdir: Path,
) -> dict[str, Any]:
    """STREAM copy/triad and the FMA peak on 1 and ``threads`` threads (sandboxed)."""
    # Three arrays must fit the cap; say when they fit in the last-level cache as well.
    n = max(1 << 10, min(stream_elements, memory_cap_bytes // 24))
    try:
        out = _run_harness(
            workdir,
            {
                "task": "stream",
                "elements": n,
                "threads": threads,
                "budget_s": min(10.0, max(1.5, deadline.left() / 20)),
                "fma_lanes": FMA_LANES,
                "fma_iterations": FMA_ITERATIONS,
            },
            timeout_s=deadline.left(),
            memory_mb=2048 + 3 * 8 * n // (1 << 20),
            threads=threads,
        )
    except EngineError as exc:
        # Without a reference the timings are still worth having; only the % is lost.
        return {"error": exc.message}
    llc = last_level_cache_bytes(read_cpu_caches())
    out["working_set_mib"] = round(24 * n / (1 << 20), 1)
    out["exceeds_llc"] = llc is not None and 24 * n > llc
    out["warnings"] = []
    if threads > 1 and (
        out["fma_parallel_gflops"] < out["fma_serial_gflops"]
        or out["triad_parallel_gbs"] < out["triad_serial_gbs"]
    ):
        # All threads slower than one: other processes hold the cores; say so next to the figures.
        out["warnings"].append(
            f"the {threads}-thread ceilings are below the 1-thread ones: other processes are "
            f"using the cores (load average {os.getloadavg()[0]:.1f}); parallel timings are "
            "not representative"
        )
    return out


def machine_probe_into(machine: dict[str, Any], stream: Mapping[str, Any]) -> None:
    """Replace the nominal ceilings of ``machine`` by the probed ones (where the probe ran)."""
    if stream.get("triad_parallel_gbs"):
        machine["bandwidth_gbs"] = stream["triad_parallel_gbs"]
        machine["bandwidth_gbs_serial"] = stream.get("triad_serial_gbs")
        machine["bandwidth_source"] = "STREAM triad, all threads (measured)"
        machine["threads"] = stream.get("threads")
    if stream.get("fma_parallel_gflops"):
        machine["peak_gflops"] = stream["fma_parallel_gflops"]
        machine["peak_gflops_serial"] = stream["fma_serial_gflops"]
        machine["peak_source"] = "numba FMA loop, 1 and all threads (measured)"


def measure_kernels(
    kernels: list[ir.Kernel],
    profiles: list[KernelProfile],
    *,
    machine: dict[str, Any],
    user_sizes: Mapping[str, int] | None = None,
    repeats: int = 5,
    timeout_s: float = 300.0,
    stream_elements: int = DEFAULT_STREAM_ELEMENTS,
    memory_cap_bytes: int | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[dict[str, Any], list[KernelProfile]]:
    """Probe the machine, then time every kernel's variants; returns (probe, profiles).

    Without ``user_sizes`` each kernel is re-profiled at sizes chosen for measuring (see
    :mod:`kernels.engine.profile_sizes`); the returned profiles carry those sizes. Each step
    runs in its own sandboxed subprocess and all share one deadline of ``timeout_s``.
    """
    deadline = _Deadline(timeout_s)
    # The sandbox's byte cap on one run's inputs; a caller may only lower it.
    cap = min(memory_cap_bytes or verify.max_run_bytes(), verify.max_run_bytes())
    gpu = _gpu_present()
    threads = available_threads()
    total = 1 + 2 * len(kernels)
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress("profile", done, total, message)

    if progress is not None:
        progress("profile", 0, total, "probing the machine: STREAM copy/triad, FMA peak")
    out: list[KernelProfile] = []
    with sandbox_tempdir(prefix="profile-") as workdir:
        harness.install(workdir)
        stream = probe_machine(
            threads=threads,
            stream_elements=stream_elements,
            memory_cap_bytes=cap,
            deadline=deadline,
            workdir=workdir,
        )
        machine_probe_into(machine, stream)
        tick("machine probed")
        for idx, (kernel, prof) in enumerate(zip(kernels, profiles, strict=True)):
            kernel_budget = deadline.left() / (len(kernels) - idx)
            timing_budget = max(1.0, kernel_budget - COMPILE_RESERVE_S)
            omp_lines = openmp_directive_lines(kernel)
            counts = thread_counts(threads)
            runs = 2 + (len(counts) if omp_lines else 0) + len(counts)
            if user_sizes is None:
                choice = select_measure_sizes(
                    kernel,
                    machine=machine,
                    memory_cap_bytes=cap,
                    budget_s=timing_budget,
                    planned_calls=runs * (WARMUPS + repeats),
                    min_repeats=repeats,
                )
                prof = profile_kernel(kernel, sizes=choice.sizes, machine=machine)
                prof.notes = [n for n in prof.notes if not n.startswith("verification's")]
                if len(kernels) > 1:
                    prof.notes.append(
                        "modelled at the sizes chosen for timing it, which differ per kernel: "
                        "pass --size to rank every kernel at the same sizes"
                    )
                prof.measure_sizes = {"source": "chosen for measuring", **choice.to_dict()}
            else:
                choice = None
                prof.measure_sizes = {
                    "source": "given (--size)",
                    "sizes": dict(prof.sizes),
                    "working_set_mib": round(_working_set_bytes(kernel, prof.sizes) / (1 << 20), 2),
                }
            prof.openmp = {"directives": bool(omp_lines), "lines": omp_lines}
            kdir = workdir / f"k{idx}"
            kdir.mkdir()
            harness.install(kdir)
            prof.measured = _measure_one(
                kernel,
                prof,
                kdir,
                threads=threads,
                counts=counts,
                openmp=bool(omp_lines),
                min_repeats=choice.min_repeats if choice else repeats,
                budget_s=timing_budget,
                deadline=deadline,
                gpu=gpu,
                memory_cap_bytes=cap,
                tick=tick,
            )
            _attach_rates(prof, stream)
            model = _gpu_model_figures(kernel, prof, machine)
            if model is not None:
                prof.measured["numba_cuda_model"] = model
            out.append(prof)
    return stream, out


def _gpu_model_figures(
    kernel: ir.Kernel, prof: KernelProfile, machine: Mapping[str, Any]
) -> MeasuredTiming | None:
    """The GPU model's predicted time, labelled "model", where no GPU was measured.

    Time per call = the model's time per step x the time loop's iterations at the profile's
    sizes, with the default copy bandwidth of :mod:`kernels.engine.gpu_model`.
    """
    if _gpu_present():
        return None
    from kernels.engine.pipeline import gpu_model_of

    model = prof.gpu_model or gpu_model_of(kernel, dict(prof.sizes))
    t_step, steps = model.get("time_per_step_s"), model.get("steps")
    if t_step is None or steps is None:
        return None
    moved = model.get("bytes_per_step") or 0
    return MeasuredTiming(
        "numba_cuda_model",
        "model",
        median_s=t_step * steps,
        bandwidth_gbs=round(moved / t_step / 1e9, 2) if t_step else None,
        message=(
            f"modeled, not measured: {model['launches_per_step']} launch(es) and "
            f"{moved} B per step, {100 * (model['predicted_copy_bandwidth_fraction'] or 0):.0f}%"
            f" of {model['copy_bandwidth_Bps'] / 1e12:.1f} TB/s copy bandwidth"
        ),
    )


def _working_set_bytes(kernel: ir.Kernel, sizes: Mapping[str, int]) -> int:
    """Bytes of every argument array at ``sizes``: what the sandbox's byte cap counts."""
    return harness.input_bytes(verify.harness_args(verify.plan_run(kernel, sizes)))


def select_measure_sizes(
    kernel: ir.Kernel,
    *,
    machine: Mapping[str, Any],
    memory_cap_bytes: int | None = None,
    budget_s: float = 300.0,
    planned_calls: int = 50,
    min_repeats: int = 5,
    llc_bytes: int | None | str = "sysfs",
    base: Mapping[str, int] | None = None,
) -> SizeChoice:
    """Sizes for timing ``kernel``: its verification sizes scaled past the last-level cache.

    ``llc_bytes`` defaults to this machine's (sysfs); tests pass a fake one. The predicted call
    time is the serial roofline time on ``machine`` (measured ceilings when probed).
    """
    _ensure_analysed(kernel)
    llc = last_level_cache_bytes(read_cpu_caches()) if llc_bytes == "sysfs" else llc_bytes
    start = dict(base) if base is not None else kernel_size_env(kernel, None)
    dims = [*sizes_module.dim_vars(kernel), *(k for k in start if k.startswith("dim"))]
    repeat_syms: set[str] = set()
    for nest in _CostWalker(kernel).run():
        repeat_syms |= nest.repeat_symbols()
    int_args = {a.name for a in kernel.args if not a.is_array and a.type.base == "integer"}
    times = sorted((repeat_syms & int_args) - set(dims))
    serial = {
        **machine,
        "bandwidth_gbs": machine.get("bandwidth_gbs_serial") or machine["bandwidth_gbs"],
    }

    def predict(sizes: Mapping[str, int]) -> float | None:
        prof = profile_kernel(kernel, sizes=sizes, machine=serial)
        t, _ = _roofline_time(prof.flops, prof.bytes, serial, False)
        return t

    return choose_measure_sizes(
        start,
        dim_vars=dims,
        time_vars=times,
        working_set=lambda s: _working_set_bytes(kernel, s),
        predict_call_s=predict,
        llc_bytes=llc,
        memory_cap_bytes=memory_cap_bytes or verify.max_run_bytes(),
        budget_s=budget_s,
        planned_calls=planned_calls,
        min_repeats=min_repeats,
    )


def _run_harness(
    workdir: Path,
    spec: dict[str, Any],
    *,
    timeout_s: float,
    memory_mb: int,
    threads: int,
    allow_gpu: bool = False,
) -> dict[str, Any]:
    """Run one harness task in the sandbox with ``workdir`` as its only directory."""
    if timeout_s <= 0:
        raise SandboxError("measurement time limit reached")
    n = len(list(workdir.glob("spec-*.json")))
    spec_file = f"spec-{spec['task']}-{n}.json"
    out = workdir / f"out-{spec['task']}-{n}.json"
    (workdir / spec_file).write_text(json.dumps({**spec, "output": out.name}))
    res = run_sandboxed(
        verify.harness_argv(spec_file),
        cwd=workdir,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        env=_harness_env(threads),
        allow_gpu=allow_gpu,
    )
    if res.timed_out:
        partial = json.loads(out.read_text()) if out.exists() else None
        if partial and partial.get("variants"):
            # The variants finished before the limit keep their figures; the rest fail below.
            for name in spec.get("variants", {}):
                partial["variants"].setdefault(
                    name, {"error": "the measurement time limit ran out before this variant"}
                )
            return partial
        raise SandboxError(f"measurement step '{spec['task']}' ran past its time limit")
    if res.returncode != 0 or not out.exists():
        raise SandboxError(
            f"measurement step '{spec['task']}' failed: {res.describe_failure(max_lines=8)}"
        )
    return json.loads(out.read_text())


def _timing_from_runs(variant: str, runs: list[dict[str, Any]]) -> MeasuredTiming:
    """The headline timing (most threads) plus the scaling table of a variant's runs."""
    head = max(runs, key=lambda r: r["threads"])
    timing = MeasuredTiming(
        variant,
        "ok",
        median_s=head["median_s"],
        min_s=head["min_s"],
        max_s=head["max_s"],
        spread_pct=head["spread_pct"],
        ci_low_s=head["ci_low_s"],
        ci_high_s=head["ci_high_s"],
        ci_level=head["ci_level"],
        repeats=head["repeats"],
        threads=head["threads"],
        stop_reason=head["stop_reason"],
        warnings=list(head["warnings"]),
    )
    if variant in THREADED_VARIANTS:
        one = next((r for r in runs if r["threads"] == 1), None)
        for r in sorted(runs, key=lambda r: r["threads"]):
            speedup = one["median_s"] / r["median_s"] if one and r["median_s"] else None
            timing.scaling.append(
                {
                    "threads": r["threads"],
                    "median_s": r["median_s"],
                    "ci_low_s": r["ci_low_s"],
                    "ci_high_s": r["ci_high_s"],
                    "spread_pct": r["spread_pct"],
                    "speedup": round(speedup, 3) if speedup else None,
                    "efficiency": round(speedup / r["threads"], 3) if speedup else None,
                }
            )
            timing.warnings += [
                f"at {r['threads']} thread{'s' if r['threads'] > 1 else ''}: {w}"
                for w in r["warnings"]
                if r is not head
            ]
    return timing


def _skip_all(reason: str, openmp: bool) -> dict[str, MeasuredTiming]:
    return {
        v: MeasuredTiming(v, "skipped", message=reason)
        for v in VARIANTS
        if v != "gfortran_omp" or openmp
    }


def _measure_one(
    kernel: ir.Kernel,
    prof: KernelProfile,
    kdir: Path,
    *,
    threads: int,
    counts: list[int],
    openmp: bool,
    min_repeats: int,
    budget_s: float,
    deadline: _Deadline,
    gpu: bool,
    memory_cap_bytes: int,
    tick: Callable[[str], None],
) -> dict[str, MeasuredTiming]:
    """Compile and time one kernel's variants; every failure becomes a 'failed' timing.

    Only kernels the translator supports are run: their code has been through the frontend and
    the code generator, so nothing of an unsupported construct is compiled or executed here.
    """
    from kernels.engine.backends.cpu import generate_cpu

    results: dict[str, MeasuredTiming] = {}
    if kernel.unsupported:
        first = kernel.unsupported[0]
        tick(f"{kernel.name}: skipped")
        tick(f"{kernel.name}: skipped")
        return _skip_all(
            f"not measured: the translator does not support this kernel "
            f"(line {first.line}: {first.construct})",
            openmp,
        )
    try:
        gen = generate_cpu(kernel)
    except Exception as exc:  # noqa: BLE001 - a codegen gap means "unsupported", not a crash
        msg = getattr(exc, "message", None) or str(exc)
        tick(f"{kernel.name}: skipped")
        tick(f"{kernel.name}: skipped")
        return _skip_all(
            f"not measured: the translator does not support this kernel ({msg})", openmp
        )
    try:
        # The same plan verification uses: shapes, scalar values, index-safe integers. The
        # inputs themselves are drawn inside the sandbox, after the byte cap is checked here.
        plan = verify.plan_run(kernel, prof.sizes)
        array_bytes = verify.check_run_bytes(plan)
        if array_bytes > memory_cap_bytes:
            raise verify.PlanError(
                f"the arguments would take {array_bytes / 2**20:.1f} MiB at these sizes; "
                f"this measurement is limited to {memory_cap_bytes / 2**20:.1f} MiB"
            )
    except (verify.PlanError, ir.NotConstant, ValueError) as exc:
        for v in VARIANTS:
            if v != "gfortran_omp" or openmp:
                results[v] = MeasuredTiming(v, "failed", message=f"cannot plan the inputs: {exc}")
        tick(f"{kernel.name}: skipped")
        tick(f"{kernel.name}: skipped")
        return {v: results[v] for v in VARIANTS if v in results}
    spec = verify.harness_spec(
        plan,
        0,
        task="time",
        min_repeats=min_repeats,
        warmups=WARMUPS,
        name=kernel.name,
        variants={},
        read_only=[a.name for a in plan.args if a.is_array and a.intent == "in"],
    )

    # The original, built the way a user would build it for speed; with -fopenmp as well when
    # it carries OpenMP directives, so that prange meets the parallel code a user would run.
    builds = [("gfortran", GFORTRAN_PROFILE_FLAGS, "fsp_kernel.so")]
    if openmp:
        builds.append(("gfortran_omp", GFORTRAN_OPENMP_FLAGS, "fsp_kernel_omp.so"))
    for variant, flags, library in builds:
        try:
            lib, compiled = verify.compile_fortran(
                kernel,
                plan,
                kdir,
                flags=flags,
                timeout_s=min(120.0, deadline.left()),
                library=library,
            )
            if lib is not None:
                spec["variants"][variant] = {
                    "library": lib.name,
                    "symbol": verify.WRAPPER_SYMBOL,
                    "openmp": variant == "gfortran_omp",
                    "threads": counts if variant == "gfortran_omp" else [1],
                }
            else:
                results[variant] = MeasuredTiming(
                    variant, "failed", message="gfortran: " + compiled.describe_failure()
                )
        except (verify.PlanError, EngineError) as exc:
            results[variant] = MeasuredTiming(variant, "failed", message=str(exc))
    tick(f"{kernel.name}: compiled")

    # The generated numba code: as generated (prange) and with parallel=False (serial).
    (kdir / "gen_prange.py").write_text(gen.code)
    serial_code = _serial_variant(gen.code)
    (kdir / "gen_serial.py").write_text(serial_code)
    spec["variants"]["numba_serial"] = {
        "module": "gen_serial.py",
        "entry": gen.entry,
        "threads": [1],
    }
    if serial_code != gen.code:
        spec["variants"]["numba_prange"] = {
            "module": "gen_prange.py",
            "entry": gen.entry,
            "threads": counts,
        }
    else:
        results["numba_prange"] = MeasuredTiming(
            "numba_prange",
            "skipped",
            message="the generated code has no parallel loop (same as serial)",
        )

    cuda_variant: dict[str, Any] | None = None
    if gpu:
        try:
            from kernels.engine.backends.cuda import generate_cuda

            gcu = generate_cuda(kernel)
            (kdir / "gen_cuda.py").write_text(gcu.code)
            cuda_variant = {"module": "gen_cuda.py", "entry": gcu.entry, "threads": [1]}
        except Exception as exc:  # noqa: BLE001
            msg = getattr(exc, "message", None) or str(exc)
            results["numba_cuda"] = MeasuredTiming("numba_cuda", "failed", message=msg)
    else:
        results["numba_cuda"] = MeasuredTiming("numba_cuda", "skipped", message="no GPU present")

    memory_mb = KERNEL_RUN_MEMORY_MB + 4 * array_bytes // (1 << 20)
    n_runs = sum(len(v["threads"]) for v in spec["variants"].values()) + (1 if cuda_variant else 0)
    spec["budget_s"] = budget_s / max(1, n_runs)
    runs: list[tuple[dict[str, Any], bool]] = []
    if spec["variants"]:
        runs.append((spec, False))
    if cuda_variant is not None:
        # Its own run: only this one may see the GPU (the sandbox then limits the data segment
        # instead of the address space, which the CUDA driver maps by the gigabyte).
        runs.append(({**spec, "variants": {"numba_cuda": cuda_variant}}, True))
    for run_spec, allow_gpu in runs:
        # The harness paces itself against this wall time (its start-up and numba's JIT come
        # out of it), so a slow machine shortens the sampling instead of losing every figure.
        run_spec["wall_s"] = max(1.0, deadline.left() - min(10.0, 0.2 * deadline.left()))
        try:
            out = _run_harness(
                kdir,
                run_spec,
                timeout_s=deadline.left(),
                memory_mb=memory_mb,
                threads=threads,
                allow_gpu=allow_gpu,
            )
            for v, data in out["variants"].items():
                if data.get("runs"):
                    results[v] = _timing_from_runs(v, data["runs"])
                    if v == "numba_cuda":
                        # The generated host driver copies arrays in and out on every call.
                        results[v].message = "end-to-end call, host<->device copies included"
                else:
                    results[v] = MeasuredTiming(v, "failed", message=data.get("error", ""))
        except EngineError as exc:
            for v in run_spec["variants"]:
                results[v] = MeasuredTiming(v, "failed", message=exc.message)
    if not openmp:
        results["gfortran_omp"] = MeasuredTiming(
            "gfortran_omp",
            "skipped",
            message="the original has no OpenMP directives: gfortran is timed serial only",
        )
    tick(f"{kernel.name}: timed")
    return {v: results[v] for v in VARIANTS if v in results}


def _serial_variant(code: str) -> str:
    """The generated module with every ``parallel=True`` turned off: prange then runs as range."""
    return re.sub(r"parallel\s*=\s*True", "parallel=False", code)


def _attach_rates(prof: KernelProfile, stream: Mapping[str, Any]) -> None:
    """GFLOP/s, GB/s, % of STREAM and the ratio to the fair gfortran baseline of each variant."""
    timings = prof.measured or {}
    serial_ref = timings.get("gfortran")
    omp_ref = timings.get("gfortran_omp")
    for v, t in timings.items():
        if t.status != "ok" or not t.median_s:
            continue
        if prof.flops is not None:
            t.gflops = round(prof.flops / t.median_s / 1e9, 4)
        if prof.bytes is not None:
            t.bandwidth_gbs = round(prof.bytes / t.median_s / 1e9, 4)
            parallel = (t.threads or 1) > 1
            key = "triad_parallel_gbs" if parallel else "triad_serial_gbs"
            if v != "numba_cuda" and stream.get(key):
                t.stream_pct = round(100.0 * t.bandwidth_gbs / stream[key], 2)
                t.stream_ref = (
                    f"triad, {stream.get('threads')} threads" if parallel else "triad, 1 thread"
                )
        # A parallel port is compared with the parallel original when there is one.
        ref = serial_ref
        if v in ("numba_prange", "numba_cuda") and omp_ref is not None and omp_ref.status == "ok":
            ref = omp_ref
        if v == "gfortran" or ref is None or ref.status != "ok" or not ref.median_s:
            continue
        t.speedup_vs_gfortran = round(ref.median_s / t.median_s, 3)
        if ref is omp_ref:
            t.compared_with = f"gfortran -O3 -fopenmp, {ref.threads} threads"
        elif v == "gfortran_omp":
            t.compared_with = "gfortran -O3, serial build"
        elif omp_ref is not None and omp_ref.status == "skipped":
            t.compared_with = "gfortran -O3, serial (no OpenMP in the original)"
        else:
            t.compared_with = "gfortran -O3, serial"
        if v == "numba_prange" and ref is omp_ref:
            # Scaling rows get the same fair ratio, thread count for thread count.
            omp_rows = {r["threads"]: r for r in omp_ref.scaling}
            for row in t.scaling:
                other = omp_rows.get(row["threads"])
                if other and row["median_s"]:
                    row["vs_gfortran_omp"] = round(other["median_s"] / row["median_s"], 3)


# --------------------------------------------------------------------------------------------
# Entry point


def profile_kernels(
    kernels: list[ir.Kernel],
    *,
    filename: str = "input.f90",
    sizes: Mapping[str, int] | None = None,
    measure: bool = False,
    repeats: int = 5,
    progress: ProgressCallback | None = None,
    timeout_s: float = 300.0,
    stream_elements: int = DEFAULT_STREAM_ELEMENTS,
    memory_cap_bytes: int | None = None,
    target: str = "cpu",
) -> ProfileResult:
    """Profile already-parsed kernels (loops annotated by analysis): model, rank, optionally time.

    ``target="gpu"`` adds each kernel's GPU traffic and launch model (``gpu_model``).
    """
    machine = machine_info()
    profiles = []
    for idx, kernel in enumerate(kernels):
        profiles.append(profile_kernel(kernel, sizes=sizes, machine=machine))
        if target == "gpu":
            from kernels.engine.pipeline import gpu_model_of

            profiles[-1].gpu_model = gpu_model_of(kernel, dict(profiles[-1].sizes))
        if progress is not None:
            progress("analyse", idx + 1, len(kernels), f"cost model: {kernel.name}")
    stream: dict[str, Any] = {}
    if measure and kernels:
        stream, profiles = measure_kernels(
            kernels,
            profiles,
            machine=machine,
            user_sizes=sizes,
            repeats=repeats,
            timeout_s=timeout_s,
            stream_elements=stream_elements,
            memory_cap_bytes=memory_cap_bytes,
            progress=progress,
        )
        # Rank on this machine's probed ceilings rather than the nominal figures.
        for prof in profiles:
            prof.estimated_s, prof.bound = _roofline_time(
                prof.flops, prof.bytes, machine, prof.parallel
            )
        machine["gpu"] = _gpu_name()
    ordered = rank_kernels(profiles)
    return ProfileResult(
        file=filename, kernels=ordered, machine=machine, stream=stream, measured=measure
    )


def _gpu_name() -> str | None:
    if not _gpu_present():
        return None
    try:
        from numba import cuda

        name = cuda.get_current_device().name
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001
        return "unknown NVIDIA GPU"


def profile_source(
    source: str,
    *,
    filename: str = "input.f90",
    sizes: Mapping[str, int] | None = None,
    measure: bool = False,
    repeats: int = 5,
    progress: ProgressCallback | None = None,
    timeout_s: float = 300.0,
    stream_elements: int = DEFAULT_STREAM_ELEMENTS,
    memory_cap_bytes: int | None = None,
    target: str = "cpu",
) -> ProfileResult:
    """Find the kernels of a Fortran file, rank them by estimated cost, optionally time them.

    Raises FortranSyntaxError / ForbiddenStatementError like ``find_kernels`` (the CLI maps them
    to exit code 2); measurement problems are reported per variant in the result instead.
    """
    from kernels.engine.pipeline import find_kernels

    if progress is not None:
        progress("parse", 0, 1, f"parsing {filename}")
    kernels = find_kernels(source, filename=filename)
    if progress is not None:
        progress("parse", 1, 1, f"{len(kernels)} kernel(s) found")
    for kernel in kernels:
        _ensure_analysed(kernel)
    return profile_kernels(
        kernels,
        filename=filename,
        sizes=sizes,
        measure=measure,
        repeats=repeats,
        progress=progress,
        timeout_s=timeout_s,
        stream_elements=stream_elements,
        memory_cap_bytes=memory_cap_bytes,
        target=target,
    )


def _ensure_analysed(kernel: ir.Kernel) -> None:
    """Run the dependence analysis unless the frontend already annotated the loops."""
    loops = [s for s in ir.walk(kernel.body) if isinstance(s, ir.Loop)]
    if not loops or any(lp.parallel or lp.reason for lp in loops):
        return
    from kernels.engine import analysis

    analysis.analyse(kernel)
