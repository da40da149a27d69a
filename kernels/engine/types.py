"""Fortran types of IR names and expressions: the one type inference every stage uses.

:class:`Scope` holds the types and dimensions of the names visible in a kernel or procedure;
:func:`type_of` gives the Fortran type of an expression in a scope (numeric promotion as Fortran
does it, intrinsic result types and kinds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kernels.engine import ir
from kernels.engine.intrinsics import MATH, MATH2

COMPARE_OPS = {"==", "/=", "<", "<=", ">", ">="}
LOGICAL_OPS = {"and", "or", "eqv", "neqv"}


class TypingError(Exception):
    """An expression whose Fortran type cannot be inferred."""


@dataclass
class Scope:
    """Types and dimensions of the names a printer may meet."""

    types: dict[str, ir.FType] = field(default_factory=dict)
    dims: dict[str, list[ir.Dim]] = field(default_factory=dict)
    constants: dict[str, ir.Const] = field(default_factory=dict)
    functions: dict[str, ir.Procedure] = field(default_factory=dict)

    @classmethod
    def from_kernel(cls, kernel: ir.Kernel) -> Scope:
        s = cls(constants=dict(kernel.constants), functions=dict(kernel.functions))
        for name, c in kernel.constants.items():
            s.types[name] = c.type
        for name, d in kernel.locals.items():
            s.types[name] = d.type
            if d.dims:
                s.dims[name] = d.dims
        for a in kernel.args:
            s.types[a.name] = a.type
            if a.dims:
                s.dims[a.name] = a.dims
        return s

    @classmethod
    def from_procedure(cls, proc: ir.Procedure, outer: Scope | None = None) -> Scope:
        s = cls()
        if outer is not None:
            s.constants = dict(outer.constants)
            s.functions = dict(outer.functions)
            for name, c in outer.constants.items():
                s.types[name] = c.type
        for name, d in proc.decls.items():
            if d.parameter is not None and isinstance(d.parameter, ir.Const):
                s.constants[name] = d.parameter
            s.types[name] = d.type
            if d.dims:
                s.dims[name] = d.dims
        return s

    def type(self, name: str) -> ir.FType:
        if name in self.types:
            return self.types[name]
        # Implicit typing as a last resort (the frontend normally declares everything).
        return ir.INTEGER if name[:1] in "ijklmn" else ir.REAL4


def promote(a: ir.FType, b: ir.FType) -> ir.FType:
    if a.base == "real" or b.base == "real":
        kinds = [t.kind for t in (a, b) if t.base == "real"]
        return ir.FType("real", max(kinds))
    if a.base == "integer" and b.base == "integer":
        return ir.FType("integer", max(a.kind, b.kind))
    if a.base == "logical" and b.base == "logical":
        return ir.LOGICAL
    return a


def type_of(e: ir.Expr, scope: Scope) -> ir.FType:
    """The Fortran type of ``e`` in ``scope`` (raises TypingError when it cannot be typed)."""
    if isinstance(e, ir.Const):
        return e.type
    if isinstance(e, ir.Var):
        if e.name in scope.constants:
            return scope.constants[e.name].type
        return scope.type(e.name)
    if isinstance(e, ir.ArrayRef):
        return scope.type(e.name)
    if isinstance(e, ir.UnaryOp):
        if e.op == "not":
            return ir.LOGICAL
        return type_of(e.operand, scope)
    if isinstance(e, ir.BinOp):
        if e.op in COMPARE_OPS or e.op in LOGICAL_OPS:
            return ir.LOGICAL
        lt, rt = type_of(e.left, scope), type_of(e.right, scope)
        if e.op == "**" and rt.base == "integer":
            return lt
        return promote(lt, rt)
    if isinstance(e, ir.Call):
        return _call_type(e, scope)
    raise TypingError(f"cannot type expression {e!r}")


def _kind_arg(scope: Scope, e: ir.Call, default: int) -> int:
    k = e.keywords.get("kind")
    if k is None and len(e.args) > 1:
        k = e.args[1]
    if k is None:
        return default
    try:
        return ir.eval_int(k, {n: c.value for n, c in scope.constants.items()})
    except ir.NotConstant:
        return default


def _call_type(e: ir.Call, scope: Scope) -> ir.FType:
    n = e.name
    if n in scope.functions:
        proc = scope.functions[n]
        res = proc.result or proc.name
        return proc.decls[res].type if res in proc.decls else scope.type(res)
    arg_t = type_of(e.args[0], scope) if e.args else ir.REAL8
    if n in MATH or n in MATH2 or n in ("abs", "mod", "modulo", "sign", "dim"):
        if n in ("dsqrt", "dexp", "dsin", "dcos", "dtan", "datan", "dtanh", "dlog", "datan2"):
            return ir.REAL8
        if n in ("mod", "modulo", "sign", "dim") and len(e.args) == 2:
            return promote(arg_t, type_of(e.args[1], scope))
        return arg_t
    if n in ("dabs", "dmod", "dsign", "dble", "dfloat", "dmin1", "dmax1"):
        return ir.REAL8
    if n in ("iabs", "isign", "min0", "max0", "ifix", "idint", "idnint"):
        return ir.INTEGER
    if n in ("amod", "amin1", "amax1", "sngl", "float"):
        return ir.REAL4
    if n in ("min", "max"):
        t = arg_t
        for a in e.args[1:]:
            t = promote(t, type_of(a, scope))
        return t
    if n in ("int", "nint", "floor", "ceiling", "size", "kind", "lbound", "ubound"):
        return ir.FType("integer", _kind_arg(scope, e, 4) if n != "size" else 4)
    if n == "real":
        default = arg_t.kind if arg_t.base == "real" else 4
        return ir.FType("real", _kind_arg(scope, e, default))
    if n in ("aint", "anint", "huge", "tiny", "epsilon", "sum", "maxval", "minval", "product"):
        return arg_t
    if n == "merge":
        return promote(arg_t, type_of(e.args[1], scope))
    if n in ("selected_real_kind", "selected_int_kind"):
        return ir.INTEGER
    raise TypingError(f"unsupported intrinsic {n}")
