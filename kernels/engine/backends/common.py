"""Printing shared by every backend: IR expressions and statements -> Python/numba source text.

Stable API (the CPU and CUDA backends both build on it):

- :class:`GeneratedCode` ``(code, entry, parallel_loops, notes)``: what a backend returns.
- :func:`py_name` maps a Fortran name to a safe Python identifier (keywords, builtins and the
  names generated modules use are suffixed with ``_``).
- The printers take a :class:`kernels.engine.types.Scope` (types and dimensions of the names
  visible in a kernel or procedure); type inference lives in :mod:`kernels.engine.types`.
- :class:`ExprPrinter` prints an IR expression with Fortran semantics (integer division truncating
  toward zero, MOD/MODULO/SIGN/NINT, float32 arithmetic kept in float32, 0-based indices from the
  declared lower bounds). :meth:`ExprPrinter.type_of` gives the Fortran type of an expression.
  Intrinsics that differ from Python are printed as calls to ``_f_*`` helpers; the helpers used
  are collected in :attr:`ExprPrinter.helpers`.
- :func:`helper_source` returns the Python text of those helpers, each preceded by the decorator
  line the backend chooses (``@njit(inline="always")`` for CPU, ``@cuda.jit(device=True)`` for
  CUDA). The helpers are plain scalar Python, valid in both.
- :class:`StmtPrinter` prints statement lists; backends subclass it and override
  :meth:`StmtPrinter.loop_header` (e.g. to print ``prange``) or :meth:`StmtPrinter.loop`.
- :class:`CodegenError` is raised for IR a backend cannot print (the pipeline reports it as an
  unsupported construct).
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernels.engine import ir
from kernels.engine.dataflow import affine, continuation, read_before_write
from kernels.engine.intrinsics import MATH as _MATH
from kernels.engine.intrinsics import MATH2 as _MATH2
from kernels.engine.types import COMPARE_OPS as _COMPARE
from kernels.engine.types import LOGICAL_OPS as _LOGICAL_OPS
from kernels.engine.types import Scope, TypingError, type_of
from kernels.engine.types import promote as _promote

# --------------------------------------------------------------------------------------------
# Result


@dataclass
class GeneratedCode:
    code: str  # a complete importable Python module
    entry: str  # the function to call in ``code``
    parallel_loops: int = 0
    notes: list[str] = field(default_factory=list)
    launch_plan: Any = field(
        default=None, repr=False
    )  # GPU: the driver's launches per time step (gpu_model.LaunchPlan)


class CodegenError(Exception):
    """IR the backend cannot print; carries the source line for the diagnostic."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(message)
        self.message = message
        self.line = line


# --------------------------------------------------------------------------------------------
# Names

_RESERVED = set(keyword.kwlist) | {
    "np",
    "math",
    "numba",
    "njit",
    "prange",
    "cuda",
    "range",
    "min",
    "max",
    "abs",
    "int",
    "float",
    "bool",
    "len",
    "print",
    "sum",
    "type",
    "id",
    "list",
    "dict",
    "str",
    "object",
    "input",
    "round",
    "pow",
}


def py_name(name: str) -> str:
    """A Python identifier for a Fortran name (already lower-cased by the frontend)."""
    name = name.lower()
    if name in _RESERVED or name.startswith("_f_"):
        return name + "_"
    return name


# --------------------------------------------------------------------------------------------
# Intrinsic helpers: plain scalar Python, valid under @njit and @cuda.jit(device=True).

_HELPERS: dict[str, str] = {
    "_f_idiv": '''def _f_idiv(a, b):
    """Fortran integer division: truncates toward zero (Python's // floors)."""
    q = a // b
    if q < 0 and q * b != a:
        q += 1
    return q
''',
    "_f_mod_i": '''def _f_mod_i(a, b):
    """MOD for integers: the result has the sign of the dividend."""
    q = a // b
    if q < 0 and q * b != a:
        q += 1
    return a - q * b
''',
    "_f_mod_r": '''def _f_mod_r(a, b):
    """MOD for reals: a - int(a/b)*b, i.e. C fmod (sign of the dividend)."""
    return math.fmod(a, b)
''',
    "_f_modulo_i": '''def _f_modulo_i(a, p):
    """MODULO for integers: the result has the sign of the divisor."""
    q = a // p
    if q < 0 and q * p != a:
        q += 1
    r = a - q * p
    if r != 0 and ((r < 0) != (p < 0)):
        r += p
    return r
''',
    "_f_modulo_r": '''def _f_modulo_r(a, p):
    """MODULO for reals, as gfortran computes it: fmod then shift into the divisor's sign."""
    r = math.fmod(a, p)
    if r != 0 and ((r < 0) != (p < 0)):
        r += p
    return r
''',
    "_f_sign_i": '''def _f_sign_i(a, b):
    """SIGN for integers: |a| when b >= 0 (so SIGN(a, 0) = |a|), else -|a|."""
    if b >= 0:
        return abs(a)
    return -abs(a)
''',
    "_f_sign_r": '''def _f_sign_r(a, b):
    """SIGN for reals: gfortran uses copysign, so b = +0.0 gives |a| and b = -0.0 gives -|a|."""
    return math.copysign(abs(a), b)
''',
    "_f_nint": '''def _f_nint(x):
    """NINT: round half away from zero (Python's round() rounds half to even)."""
    if x >= 0:
        t = math.floor(x)
        if x - t >= 0.5:
            t += 1
        return int(t)
    t = math.floor(-x)
    if -x - t >= 0.5:
        t += 1
    return -int(t)
''',
    "_f_anint": '''def _f_anint(x):
    """ANINT: round half away from zero, result stays real."""
    if x >= 0:
        t = math.floor(x)
        if x - t >= 0.5:
            t += 1
        return t * 1.0
    t = math.floor(-x)
    if -x - t >= 0.5:
        t += 1
    return -t * 1.0
''',
    "_f_ipow": '''def _f_ipow(a, n):
    """Integer ** integer with Fortran semantics (negative exponents truncate to 0 unless |a| = 1)."""
    if n < 0:
        if a == 1:
            return 1
        if a == -1:
            return 1 if n % 2 == 0 else -1
        return 0
    r = 1
    b = a
    while n > 0:
        if n & 1:
            r *= b
        b *= b
        n >>= 1
    return r
''',
    "_f_dim": '''def _f_dim(a, b):
    """DIM(a, b) = max(a - b, 0)."""
    if a > b:
        return a - b
    return a - a
''',
}


def helper_source(names: set[str] | list[str], decorator: str, *, fmod: str = "math.fmod") -> str:
    """Python text defining the requested ``_f_*`` helpers, each under ``decorator``.

    ``fmod`` names the C fmod to call: numba's CPU target has ``np.fmod`` but no
    ``math.fmod``; numba.cuda device code has ``math.fmod``.
    """
    out = []
    for name in sorted(names):
        if name not in _HELPERS:
            continue
        out.append(f"{decorator}\n{_HELPERS[name].replace('math.fmod', fmod)}")
    return "\n\n".join(out)


# --------------------------------------------------------------------------------------------
# Affine helpers (used to fold index arithmetic so `u(i-1, j)` prints as `u[i - 2, j - 1]`)


def _print_affine(coef: dict[str, int], const: int) -> str:
    parts: list[str] = []
    for name, c in coef.items():
        term = py_name(name) if abs(c) == 1 else f"{abs(c)} * {py_name(name)}"
        if not parts:
            parts.append(term if c > 0 else f"-{term}")
        else:
            parts.append(f"+ {term}" if c > 0 else f"- {term}")
    if const or not parts:
        if not parts:
            parts.append(str(const))
        else:
            parts.append(f"+ {const}" if const > 0 else f"- {-const}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# Expressions

_PREC = {
    "or": 1,
    "and": 2,
    "not": 3,
    "eqv": 0,
    "neqv": 0,
    "==": 4,
    "/=": 4,
    "<": 4,
    "<=": 4,
    ">": 4,
    ">=": 4,
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
    "u-": 7,
    "**": 8,
}
_PYOP = {
    "==": "==",
    "/=": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
    "and": "and",
    "or": "or",
    "eqv": "==",
    "neqv": "!=",
    "+": "+",
    "-": "-",
    "*": "*",
    "/": "/",
    "**": "**",
}

_F32_MAX = 3.4028234663852886e38
_F64_MAX = 1.7976931348623157e308


class ExprPrinter:
    """Prints IR expressions as Python source with Fortran semantics.

    ``index_base`` is 0: arrays are indexed ``a[i - lower]``. The printer never changes the
    order of floating-point operations: children are parenthesised the way Fortran groups them.
    """

    def __init__(self, scope: Scope):
        self.scope = scope
        self.helpers: set[str] = set()

    # -- types ---------------------------------------------------------------------------------
    def type_of(self, e: ir.Expr) -> ir.FType:
        try:
            return type_of(e, self.scope)
        except TypingError as exc:
            raise CodegenError(str(exc)) from exc

    # -- printing ------------------------------------------------------------------------------
    def expr(self, e: ir.Expr) -> str:
        if isinstance(e, ir.Const):
            return self.const(e)
        if isinstance(e, ir.Var):
            if e.name in self.scope.constants and e.name not in self.scope.dims:
                return self.const(self.scope.constants[e.name])
            return py_name(e.name)
        if isinstance(e, ir.ArrayRef):
            return self.array_ref(e)
        if isinstance(e, ir.UnaryOp):
            return self._unary(e)
        if isinstance(e, ir.BinOp):
            return self._binop(e)
        if isinstance(e, ir.Call):
            return self._call(e)
        raise CodegenError(f"cannot print expression {e!r}")

    def const(self, c: ir.Const) -> str:
        if c.type.base == "logical":
            return "True" if c.value else "False"
        if c.type.base == "integer":
            return str(int(c.value))
        if c.type.base == "real":
            if c.type.kind == 4:
                # Single-precision literals stay float32 (numba would otherwise use float64);
                # the shortest text that round-trips in float32 keeps the source readable.
                text = repr(float(np.float32(c.value)))
                short = str(np.float32(c.value))
                if float(np.float32(float(short))) == float(np.float32(c.value)):
                    text = short
                return f"np.float32({text})"
            return repr(float(c.value))
        raise CodegenError(f"unsupported constant {c!r}")

    def cast(self, code: str, src: ir.FType, dst: ir.FType) -> str:
        """Fortran assignment conversion of ``code`` (of type ``src``) to ``dst``."""
        if src == dst or dst.base == "logical":
            return code
        if dst.base == "integer":
            if src.base == "integer":
                return code
            return f"int({code})"  # truncation toward zero, as Fortran INT()
        if dst.base == "real":
            if dst.kind == 4:
                return f"np.float32({code})"
            if src.base == "real" and src.kind == 8:
                return code
            return f"np.float64({code})"
        return code

    def index(self, name: str, indices: list[ir.Expr]) -> str:
        """0-based subscript text for ``name(indices)`` from its declared lower bounds."""
        dims = self.scope.dims.get(name)
        if dims is None:
            raise CodegenError(f"{name} is indexed but not declared as an array")
        if len(dims) != len(indices):
            raise CodegenError(f"{name} has rank {len(dims)} but {len(indices)} subscripts")
        parts = []
        for ix, d in zip(indices, dims, strict=True):
            if isinstance(ix, ir.Slice):
                raise CodegenError(f"array section of {name} left in a scalar context")
            parts.append(self._offset(ix, d.lower))
        return ", ".join(parts)

    def _offset(self, ix: ir.Expr, lower: ir.Expr) -> str:
        lower = self._fold_constants(lower)
        a, b = affine(self._fold_constants(ix)), affine(lower)
        if a is not None and b is not None:
            coef = dict(a[0])
            for k, v in b[0].items():
                coef[k] = coef.get(k, 0) - v
            coef = {k: v for k, v in coef.items() if v != 0}
            return _print_affine(coef, a[1] - b[1])
        text = self.expr(ix)
        if self.type_of(ix).base != "integer":
            text = f"int({text})"
        if isinstance(lower, ir.Const) and lower.value == 0:
            return text
        return f"({text}) - ({self.expr(lower)})"

    def _fold_constants(self, e: ir.Expr) -> ir.Expr:
        """Replace named integer constants so bounds like ``0:n+1`` fold into the subscript."""
        if isinstance(e, ir.Var) and e.name in self.scope.constants:
            return self.scope.constants[e.name]
        if isinstance(e, ir.BinOp):
            return ir.BinOp(e.op, self._fold_constants(e.left), self._fold_constants(e.right))
        if isinstance(e, ir.UnaryOp):
            return ir.UnaryOp(e.op, self._fold_constants(e.operand))
        return e

    def new_array(self, name: str, dims: list[ir.Dim]) -> str:
        """Text allocating a zeroed F-ordered array for a local with ``dims``."""
        t = self.scope.type(name)
        extents = []
        for d in dims:
            if d.upper is None:
                raise CodegenError(f"local array {name} has no known shape")
            a = affine(self._fold_constants(d.upper))
            b = affine(self._fold_constants(d.lower))
            if a is not None and b is not None:
                coef = dict(a[0])
                for k, v in b[0].items():
                    coef[k] = coef.get(k, 0) - v
                extents.append(_print_affine({k: v for k, v in coef.items() if v}, a[1] - b[1] + 1))
            else:
                extents.append(f"({self.expr(d.upper)}) - ({self.expr(d.lower)}) + 1")
        dtype = f"np.{t.numpy_dtype}" if t.base != "logical" else "np.bool_"
        if len(extents) == 1:
            return f"np.zeros({extents[0]}, dtype={dtype})"
        # numba's np.zeros has no order=: allocate the reversed shape and transpose (F layout).
        rev = ", ".join(reversed(extents))
        return f"np.zeros(({rev}), dtype={dtype}).T"

    def array_ref(self, e: ir.ArrayRef) -> str:
        return f"{py_name(e.name)}[{self.index(e.name, e.indices)}]"

    def _wrap(self, child: ir.Expr, parent_prec: int, right: bool = False) -> str:
        text = self.expr(child)
        prec = None
        if isinstance(child, ir.BinOp):
            prec = _PREC[child.op]
        elif isinstance(child, ir.UnaryOp):
            prec = _PREC["not"] if child.op == "not" else _PREC["u-"]
        if prec is not None and (prec < parent_prec or (right and prec == parent_prec)):
            return f"({text})"
        if prec is not None and prec == parent_prec and prec == _PREC["=="]:
            return f"({text})"  # Python would chain comparisons
        return text

    def _unary(self, e: ir.UnaryOp) -> str:
        if e.op == "not":
            return f"not {self._wrap(e.operand, _PREC['not'])}"
        inner = self._wrap(e.operand, _PREC["u-"])
        if isinstance(e.operand, ir.BinOp) and e.operand.op != "**":
            inner = f"({self.expr(e.operand)})"
        if e.op == "+":
            return inner
        return f"-{inner}"

    def _operand(self, e: ir.Expr, result: ir.FType, prec: int, right: bool = False) -> str:
        """An operand converted the way Fortran converts it for a mixed-mode operation."""
        t = self.type_of(e)
        text = self._wrap(e, prec, right)
        if result.base == "real" and result.kind == 4 and t.base == "integer":
            # numba would promote float32 (op) int64 to float64; Fortran converts to real(4).
            return f"np.float32({self.expr(e)})"
        return text

    def _binop(self, e: ir.BinOp) -> str:
        op = e.op
        if op in _LOGICAL_OPS:
            prec = _PREC[op]
            left = self._wrap(e.left, prec + 1)
            right = self._wrap(e.right, prec + 1)
            if op in ("eqv", "neqv"):
                return f"({left}) {_PYOP[op]} ({right})"
            return f"{left} {_PYOP[op]} {right}"
        lt, rt = self.type_of(e.left), self.type_of(e.right)
        if op in _COMPARE:
            prec = _PREC[op]
            common = _promote(lt, rt)
            return (
                f"{self._operand(e.left, common, prec + 1)} {_PYOP[op]} "
                f"{self._operand(e.right, common, prec + 1)}"
            )
        result = self.type_of(e)
        if op == "**":
            return self._power(e, lt, rt, result)
        prec = _PREC[op]
        left = self._operand(e.left, result, prec)
        right = self._operand(e.right, result, prec, right=True)
        if op == "/" and result.base == "integer":
            self.helpers.add("_f_idiv")
            return f"_f_idiv({self.expr(e.left)}, {self.expr(e.right)})"
        text = f"{left} {_PYOP[op]} {right}"
        return text

    def _power(self, e: ir.BinOp, lt: ir.FType, rt: ir.FType, result: ir.FType) -> str:
        if lt.base == "integer" and rt.base == "integer":
            self.helpers.add("_f_ipow")
            return f"_f_ipow({self.expr(e.left)}, {self.expr(e.right)})"
        base = self._wrap(e.left, _PREC["**"] + 1)
        if result.base == "real" and result.kind == 4 and lt.base == "integer":
            base = f"np.float32({self.expr(e.left)})"
        if rt.base == "integer":
            exp = self._wrap(e.right, _PREC["**"] + 1)
            if isinstance(e.right, ir.Const) and e.right.value < 0:
                exp = f"({exp})"
        else:
            exp = self._operand(e.right, result, _PREC["**"] + 1)
        text = f"{base} ** {exp}"
        if result.base == "real" and result.kind == 4:
            return f"np.float32({text})"
        return text

    def _call(self, e: ir.Call) -> str:
        n = e.name
        if n in self.scope.functions:
            return f"{py_name(n)}({', '.join(self.expr(a) for a in e.args)})"
        args = e.args
        result = self.type_of(e)
        f32 = result.base == "real" and result.kind == 4

        def a(i: int) -> str:
            return self.expr(args[i])

        def keep(text: str) -> str:
            return f"np.float32({text})" if f32 else text

        if n in _MATH:
            return keep(f"{_MATH[n]}({a(0)})")
        if n in _MATH2:
            return keep(f"{_MATH2[n]}({self._as(args[0], result)}, {self._as(args[1], result)})")
        if n in ("abs", "dabs", "iabs"):
            return f"abs({a(0)})"
        if n in ("min", "max", "amin1", "amax1", "dmin1", "dmax1", "min0", "max0"):
            fn = "min" if "min" in n else "max"
            parts = [self._as(x, result) for x in args]
            text = parts[0]
            for p in parts[1:]:
                text = f"{fn}({text}, {p})"
            return text
        if n in ("mod", "amod", "dmod"):
            if result.base == "integer":
                self.helpers.add("_f_mod_i")
                return f"_f_mod_i({a(0)}, {a(1)})"
            self.helpers.add("_f_mod_r")
            return keep(f"_f_mod_r({self._as(args[0], result)}, {self._as(args[1], result)})")
        if n == "modulo":
            if result.base == "integer":
                self.helpers.add("_f_modulo_i")
                return f"_f_modulo_i({a(0)}, {a(1)})"
            self.helpers.add("_f_modulo_r")
            return keep(f"_f_modulo_r({self._as(args[0], result)}, {self._as(args[1], result)})")
        if n in ("sign", "dsign", "isign"):
            if result.base == "integer":
                self.helpers.add("_f_sign_i")
                return f"_f_sign_i({a(0)}, {a(1)})"
            self.helpers.add("_f_sign_r")
            return keep(f"_f_sign_r({self._as(args[0], result)}, {self._as(args[1], result)})")
        if n == "dim":
            self.helpers.add("_f_dim")
            return keep(f"_f_dim({self._as(args[0], result)}, {self._as(args[1], result)})")
        if n in ("int", "ifix", "idint"):
            if self.type_of(args[0]).base == "integer":
                return a(0)
            return f"int({a(0)})"
        if n in ("nint", "idnint"):
            self.helpers.add("_f_nint")
            return f"_f_nint({a(0)})"
        if n == "anint":
            self.helpers.add("_f_anint")
            return keep(f"_f_anint({a(0)})")
        if n == "aint":
            return keep(f"math.trunc({a(0)}) * 1.0")
        if n == "floor":
            return f"int(math.floor({a(0)}))"
        if n == "ceiling":
            return f"int(math.ceil({a(0)}))"
        if n in ("real", "float", "sngl", "dble", "dfloat"):
            if result.kind == 4:
                return f"np.float32({a(0)})"
            return f"np.float64({a(0)})"
        if n == "size":
            return self._size(e)
        if n in ("lbound", "ubound"):
            return self._bound(e)
        if n == "huge":
            t = self.type_of(args[0])
            if t.base == "integer":
                return str(2**31 - 1 if t.kind == 4 else 2**63 - 1)
            return keep(repr(_F32_MAX if t.kind == 4 else _F64_MAX))
        if n == "tiny":
            t = self.type_of(args[0])
            return keep(repr(1.1754943508222875e-38 if t.kind == 4 else 2.2250738585072014e-308))
        if n == "epsilon":
            t = self.type_of(args[0])
            return keep(repr(1.1920928955078125e-07 if t.kind == 4 else 2.220446049250313e-16))
        if n == "kind":
            return str(self.type_of(args[0]).kind)
        if n == "merge":
            return (
                f"({self._as(args[0], result)} if {self.expr(args[2])} "
                f"else {self._as(args[1], result)})"
            )
        raise CodegenError(f"unsupported intrinsic {n.upper()}")

    def _as(self, e: ir.Expr, t: ir.FType) -> str:
        """``e`` converted to type ``t`` when Fortran would convert it (mixed min/max/atan2...)."""
        et = self.type_of(e)
        if et == t or t.base != "real" or et.base not in ("integer", "real"):
            return self.expr(e)
        return f"np.float32({self.expr(e)})" if t.kind == 4 else f"np.float64({self.expr(e)})"

    def _size(self, e: ir.Call) -> str:
        arr = e.args[0]
        if not isinstance(arr, (ir.Var, ir.ArrayRef)):
            raise CodegenError("SIZE of an expression")
        dim = e.keywords.get("dim") or (e.args[1] if len(e.args) > 1 else None)
        name = py_name(arr.name)
        if dim is None:
            return f"{name}.size"
        d = ir.eval_int(dim, {})
        return f"{name}.shape[{d - 1}]"

    def _bound(self, e: ir.Call) -> str:
        arr = e.args[0]
        dim = e.keywords.get("dim") or (e.args[1] if len(e.args) > 1 else None)
        if not isinstance(arr, ir.Var) or dim is None:
            raise CodegenError(f"{e.name.upper()} without DIM")
        d = ir.eval_int(dim, {})
        dd = self.scope.dims[arr.name][d - 1]
        if e.name == "lbound":
            return self.expr(dd.lower)
        return f"({self.expr(dd.lower)} + {py_name(arr.name)}.shape[{d - 1}] - 1)"


# --------------------------------------------------------------------------------------------
# Statements


class StmtPrinter:
    """Prints IR statements as indented Python lines.

    Subclasses override :meth:`loop_header` to choose ``range``/``prange`` (CPU) or to map loops
    onto threads (CUDA). ``returns`` is the text of the ``return`` statement for RETURN.
    """

    indent_unit = "    "

    def __init__(self, printer: ExprPrinter, *, returns: str = "return", all_stmts=None):
        self.p = printer
        self.returns = returns
        self.loop_stack: list[ir.Loop | ir.WhileLoop] = []
        self._flag = 0
        self._all = all_stmts or []
        self.flags_needed: dict[int, tuple[str, str]] = {}

    # -- blocks --------------------------------------------------------------------------------
    def block(self, stmts: list[ir.Stmt], depth: int) -> list[str]:
        lines: list[str] = []
        for s in stmts:
            lines.extend(self.stmt(s, depth))
        if not lines:
            lines.append(self.indent_unit * depth + "pass")
        return lines

    def stmt(self, s: ir.Stmt, depth: int) -> list[str]:
        ind = self.indent_unit * depth
        if isinstance(s, ir.Assign):
            return [ind + self.assign(s)]
        if isinstance(s, ir.Loop):
            return self.loop(s, depth)
        if isinstance(s, ir.WhileLoop):
            return self.while_loop(s, depth)
        if isinstance(s, ir.If):
            return self.if_(s, depth)
        if isinstance(s, ir.Exit):
            return self.jump(s, depth, "break")
        if isinstance(s, ir.Cycle):
            return self.jump(s, depth, "continue")
        if isinstance(s, ir.Return):
            return [ind + self.returns]
        if isinstance(s, ir.CallStmt):
            return [ind + self.call(s)]
        if isinstance(s, ir.Allocate):
            return [ind + self.allocate(s)]
        if isinstance(s, ir.Unsupported):
            raise CodegenError(f"unsupported construct: {s.construct}", s.line)
        raise CodegenError(f"cannot print statement {type(s).__name__}", getattr(s, "line", 0))

    def assign(self, s: ir.Assign) -> str:
        tt = self.p.type_of(s.target)
        vt = self.p.type_of(s.value)
        if isinstance(s.value, ir.Const) and tt.base == "real" and vt.base == "integer":
            # `x = 0` into a real: print the converted literal rather than a runtime cast.
            value = self.p.const(ir.Const(float(s.value.value), tt))
        else:
            value = self.p.cast(self.p.expr(s.value), vt, tt)
        if isinstance(s.target, ir.Var):
            return f"{py_name(s.target.name)} = {value}"
        return f"{self.p.array_ref(s.target)} = {value}"

    def allocate(self, s: ir.Allocate) -> str:
        """A zero-filled local array in Fortran (column-major) layout."""
        return f"{py_name(s.name)} = {self.p.new_array(s.name, s.dims)}"

    def call(self, s: ir.CallStmt) -> str:
        proc = self.p.scope.functions.get(s.name)
        args = ", ".join(self.p.expr(a) for a in s.args)
        if proc is None:
            raise CodegenError(f"CALL of unknown subroutine {s.name}", s.line)
        outs = []
        for dummy, actual in zip(proc.args, s.args, strict=False):
            d = proc.decls.get(dummy)
            if d is not None and not d.dims and d.intent in ("out", "inout"):
                if not isinstance(actual, (ir.Var, ir.ArrayRef)):
                    raise CodegenError(f"CALL {s.name}: OUT argument is not a variable", s.line)
                outs.append(self.p.expr(actual))
        if outs:
            return f"{', '.join(outs)} = {py_name(s.name)}({args})"
        return f"{py_name(s.name)}({args})"

    def if_(self, s: ir.If, depth: int) -> list[str]:
        ind = self.indent_unit * depth
        lines = []
        for k, (cond, body) in enumerate(s.branches):
            kw = "if" if k == 0 else "elif"
            lines.append(f"{ind}{kw} {self.p.expr(cond)}:")
            lines.extend(self.block(body, depth + 1))
        if s.orelse:
            lines.append(f"{ind}else:")
            lines.extend(self.block(s.orelse, depth + 1))
        return lines

    # -- loops ---------------------------------------------------------------------------------
    def _target(self, label: str | None) -> int:
        """Index in loop_stack of the loop an EXIT/CYCLE refers to."""
        if not self.loop_stack:
            raise CodegenError("EXIT/CYCLE outside a loop")
        if label is None:
            return len(self.loop_stack) - 1
        for k in range(len(self.loop_stack) - 1, -1, -1):
            if self.loop_stack[k].label == label:
                return k
        raise CodegenError(f"EXIT/CYCLE names unknown loop {label}")

    def jump(self, s: ir.Exit | ir.Cycle, depth: int, word: str) -> list[str]:
        ind = self.indent_unit * depth
        k = self._target(s.label)
        if k == len(self.loop_stack) - 1:
            flag = self._exit_flag(k) if word == "break" else None
            if flag:
                return [f"{ind}{flag} = True", f"{ind}break"]
            return [ind + word]
        # A jump out of nested loops: set the target's flag and break out level by level.
        target = self.loop_stack[k]
        flag = self._named_flag(target, word)
        return [f"{ind}{flag} = True", f"{ind}break"]

    def _exit_flag(self, k: int) -> str | None:
        return self.flags_needed.get(id(self.loop_stack[k]), (None, None))[0]

    def _named_flag(self, loop, word: str) -> str:
        key = id(loop)
        brk, cont = self.flags_needed.get(key, (None, None))
        if word == "break":
            if brk is None:
                self._flag += 1
                brk = f"_exit{self._flag}"
            self.flags_needed[key] = (brk, cont)
            return brk
        if cont is None:
            self._flag += 1
            cont = f"_cycle{self._flag}"
        self.flags_needed[key] = (brk, cont)
        return cont

    def _jump_flags(self, loop) -> None:
        """Pre-register flags for labelled jumps that leave nested loops."""
        stack = [loop]

        def visit(stmts, inner_depth):
            for s in stmts:
                if isinstance(s, (ir.Exit, ir.Cycle)) and s.label == loop.label and inner_depth > 0:
                    self._named_flag(loop, "break" if isinstance(s, ir.Exit) else "continue")
                if isinstance(s, (ir.Loop, ir.WhileLoop)):
                    visit(s.body, inner_depth + 1)
                elif isinstance(s, ir.If):
                    for _, b in s.branches:
                        visit(b, inner_depth)
                    visit(s.orelse, inner_depth)

        if loop.label:
            visit(loop.body, 0)
        del stack

    def _after_inner_loop(self, depth: int) -> list[str]:
        """After an inner loop: propagate flags of labelled jumps aimed at enclosing loops."""
        ind = self.indent_unit * depth
        lines = []
        here = len(self.loop_stack) - 1
        for k, outer in enumerate(self.loop_stack):
            brk, cont = self.flags_needed.get(id(outer), (None, None))
            if brk and brk.startswith("_exit") and k <= here:
                lines.append(f"{ind}if {brk}:")
                lines.append(f"{ind}{self.indent_unit}break")
            if cont and k <= here:
                lines.append(f"{ind}if {cont}:")
                if k == here:
                    lines.append(f"{ind}{self.indent_unit}continue")
                else:
                    lines.append(f"{ind}{self.indent_unit}break")
        return lines

    def loop_bounds(self, s: ir.Loop) -> tuple[str, str, int | None, str | None]:
        """(start, stop-exclusive text for range, constant step or None, step text)."""
        start = self.p.cast(self.p.expr(s.start), self.p.type_of(s.start), ir.INTEGER)
        stop = self.p.cast(self.p.expr(s.stop), self.p.type_of(s.stop), ir.INTEGER)
        if s.step is None:
            return start, _plus(s.stop, stop, 1, self.p), 1, None
        step_aff = affine(s.step)
        if step_aff is not None and not step_aff[0]:
            k = step_aff[1]
            if k == 0:
                raise CodegenError("DO loop with zero step", s.line)
            return start, _plus(s.stop, stop, 1 if k > 0 else -1, self.p), k, None
        step = self.p.expr(s.step)
        return start, f"{stop} + (1 if {step} > 0 else -1)", None, step

    def loop_header(self, s: ir.Loop, start: str, stop: str, step: int | None, step_text) -> str:
        """The ``for`` line of a counted loop (CPU backend overrides it for prange)."""
        v = py_name(s.var)
        if step == 1:
            return f"for {v} in range({start}, {stop}):"
        return f"for {v} in range({start}, {stop}, {step if step is not None else step_text}):"

    def loop_prologue(self, s: ir.Loop, depth: int) -> list[str]:
        """Lines printed first in a loop body (CPU: private array allocation)."""
        return []

    def loop_done(self, s: ir.Loop) -> None:
        """Called once a loop has been printed (lets subclasses track nesting)."""

    def loop_comment(self, s: ir.Loop | ir.WhileLoop) -> str:
        if isinstance(s, ir.WhileLoop):
            return f"# line {s.line}: do while"
        text = f"do {s.var} = {ir.fortran_comment_text(s.start)}, {ir.fortran_comment_text(s.stop)}"
        if s.step is not None:
            text += f", {ir.fortran_comment_text(s.step)}"
        return f"# line {s.line}: {text}"

    def loop(self, s: ir.Loop, depth: int) -> list[str]:
        ind = self.indent_unit * depth
        start, stop, step, step_text = self.loop_bounds(s)
        needs_final = self._var_used_after(s)
        lines = [ind + self.loop_comment(s)]
        self._jump_flags(s)
        has_exit = any(
            isinstance(x, ir.Exit) and (x.label is None or x.label == s.label)
            for x in _own_jumps(s)
        )
        v = py_name(s.var)
        if needs_final:
            # The DO variable keeps Fortran's final value (start + trip*step) after the loop.
            lines.append(f"{ind}_{v}_lo = {start}")
            lines.append(f"{ind}_{v}_hi = {stop}")
            start, stop = f"_{v}_lo", f"_{v}_hi"
            if has_exit:
                flag = self._named_flag(s, "break")
                lines.append(f"{ind}{flag} = False")
        brk, cont = self.flags_needed.get(id(s), (None, None))
        if brk and not needs_final:
            lines.append(f"{ind}{brk} = False")
        lines.append(ind + self.loop_header(s, start, stop, step, step_text))
        self.loop_stack.append(s)
        if cont:
            lines.append(f"{ind}{self.indent_unit}{cont} = False")
        lines.extend(self.loop_prologue(s, depth + 1))
        lines.extend(self.block(s.body, depth + 1))
        self.loop_stack.pop()
        self.loop_done(s)
        if needs_final:
            st = str(step) if step is not None else step_text
            final = f"{v} = {start} + max(0, len(range({start}, {stop}, {st}))) * {st}"
            if has_exit:
                lines.append(f"{ind}if not {self.flags_needed[id(s)][0]}:")
                lines.append(f"{ind}{self.indent_unit}{final}")
            else:
                lines.append(f"{ind}{final}")
        if self.loop_stack:
            lines.extend(self._after_inner_loop(depth))
        return lines

    def while_loop(self, s: ir.WhileLoop, depth: int) -> list[str]:
        ind = self.indent_unit * depth
        self._jump_flags(s)
        lines = [ind + self.loop_comment(s)]
        brk, cont = self.flags_needed.get(id(s), (None, None))
        if brk:
            lines.append(f"{ind}{brk} = False")
        lines.append(f"{ind}while {self.p.expr(s.cond)}:")
        self.loop_stack.append(s)
        if cont:
            lines.append(f"{ind}{self.indent_unit}{cont} = False")
        lines.extend(self.block(s.body, depth + 1))
        self.loop_stack.pop()
        if self.loop_stack:
            lines.extend(self._after_inner_loop(depth))
        return lines

    def _var_used_after(self, s: ir.Loop) -> bool:
        """Whether the DO variable is read outside the loop (then it needs its final value)."""
        if self.var_live_out(s.var):
            return True
        if not self._all:
            return False
        return read_before_write(s.var, continuation(self._all, s))

    def var_live_out(self, name: str) -> bool:
        """Whether ``name`` is returned to the caller (scalar OUT argument, function result)."""
        return False


def _own_jumps(loop: ir.Loop | ir.WhileLoop):
    """EXIT/CYCLE statements in ``loop``'s body that are not inside a nested loop."""
    stack = list(loop.body)
    while stack:
        s = stack.pop()
        if isinstance(s, (ir.Exit, ir.Cycle)):
            yield s
        elif isinstance(s, ir.If):
            for _, b in s.branches:
                stack.extend(b)
            stack.extend(s.orelse)
        elif isinstance(s, (ir.Loop, ir.WhileLoop)):
            for x in ir.walk(s.body):
                if isinstance(x, (ir.Exit, ir.Cycle)) and x.label and x.label == loop.label:
                    yield x


def _plus(e: ir.Expr, text: str, k: int, p: ExprPrinter) -> str:
    """``text + k`` folded when ``e`` is affine (``ny - 1`` + 1 prints as ``ny``)."""
    a = affine(p._fold_constants(e))
    if a is not None:
        return _print_affine(a[0], a[1] + k)
    return f"{text} + {k}" if k > 0 else f"{text} - {-k}"
