"""Constant folding: PARAMETER values and kind expressions evaluated to typed constants."""

from __future__ import annotations

import math

from kernels.engine import ir


def _real_kind_for_precision(p: int) -> int:
    if p <= 6:
        return 4
    if p <= 15:
        return 8
    return 16


# --------------------------------------------------------------------------------------------
# Constant evaluation (PARAMETERs, kinds)


def const_value(e: ir.Expr, consts: dict[str, ir.Const]) -> ir.Const:
    """Evaluate a constant expression to a typed constant (raises ir.NotConstant)."""
    if isinstance(e, ir.Const):
        return e
    if isinstance(e, ir.Var):
        if e.name in consts:
            return consts[e.name]
        raise ir.NotConstant(e.name)
    if isinstance(e, ir.UnaryOp):
        v = const_value(e.operand, consts)
        if e.op == "-":
            return ir.Const(-v.value, v.type)
        if e.op == "not":
            return ir.Const(not v.value, ir.LOGICAL)
        return v
    if isinstance(e, ir.BinOp):
        a, b = const_value(e.left, consts), const_value(e.right, consts)
        t = _num_type(a.type, b.type)
        x, y = a.value, b.value
        if e.op == "+":
            v = x + y
        elif e.op == "-":
            v = x - y
        elif e.op == "*":
            v = x * y
        elif e.op == "/":
            if t.base == "integer":
                q = abs(x) // abs(y)
                v = q if (x >= 0) == (y >= 0) else -q
            else:
                v = x / y
        elif e.op == "**":
            if a.type.base == "integer" and b.type.base == "integer":
                v = x**y if y >= 0 else (1 if abs(x) == 1 else 0)
                t = a.type
            else:
                v = float(x) ** y
                if b.type.base == "integer":
                    t = a.type
        else:
            raise ir.NotConstant(e.op)
        return _typed(v, t)
    if isinstance(e, ir.Call):
        return _const_call(e, consts)
    raise ir.NotConstant(repr(e))


def _num_type(a: ir.FType, b: ir.FType) -> ir.FType:
    if a.base == "real" or b.base == "real":
        return ir.FType("real", max(t.kind for t in (a, b) if t.base == "real"))
    return ir.FType("integer", max(a.kind, b.kind))


def _typed(v, t: ir.FType) -> ir.Const:
    if t.base == "integer":
        return ir.Const(int(v), t)
    if t.base == "real":
        v = float(v)
        if t.kind == 4:
            import numpy as np

            v = float(np.float32(v))
        return ir.Const(v, t)
    if t.base == "logical":
        return ir.Const(bool(v), t)
    return ir.Const(v, t)


_CONST_MATH = {
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "atan": math.atan,
    "asin": math.asin,
    "acos": math.acos,
    "abs": abs,
    "datan": math.atan,
    "dsqrt": math.sqrt,
}


def _const_call(e: ir.Call, consts: dict[str, ir.Const]) -> ir.Const:
    n = e.name
    if n == "kind":
        a = const_value(e.args[0], consts)
        return ir.Const(a.type.kind, ir.INTEGER)
    if n == "selected_real_kind":
        p = const_value(
            e.keywords.get("p", e.args[0] if e.args else ir.Const(6, ir.INTEGER)), consts
        )
        return ir.Const(_real_kind_for_precision(int(p.value)), ir.INTEGER)
    if n == "selected_int_kind":
        r = int(const_value(e.args[0], consts).value)
        return ir.Const(4 if r <= 9 else 8, ir.INTEGER)
    args = [const_value(a, consts) for a in e.args]
    if n in _CONST_MATH:
        return _typed(_CONST_MATH[n](args[0].value), args[0].type)
    if n == "atan2":
        return _typed(math.atan2(args[0].value, args[1].value), args[0].type)
    if n in ("max", "min"):
        t = args[0].type
        for a in args[1:]:
            t = _num_type(t, a.type)
        f = max if n == "max" else min
        return _typed(f(a.value for a in args), t)
    if n in ("dble", "dfloat"):
        return _typed(args[0].value, ir.REAL8)
    if n == "real" or n == "float":
        kind = 4
        if len(args) > 1:
            kind = int(args[1].value)
        elif "kind" in e.keywords:
            kind = int(const_value(e.keywords["kind"], consts).value)
        return _typed(args[0].value, ir.FType("real", kind))
    if n == "int":
        return ir.Const(int(args[0].value), ir.INTEGER)
    if n == "nint":
        x = args[0].value
        return ir.Const(int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1), ir.INTEGER)
    if n == "mod":
        x, y = args[0].value, args[1].value
        if args[0].type.base == "integer":
            return ir.Const(int(math.fmod(x, y)), args[0].type)
        return _typed(math.fmod(x, y), args[0].type)
    if n == "huge":
        t = args[0].type
        if t.base == "integer":
            return ir.Const(2**31 - 1 if t.kind == 4 else 2**63 - 1, t)
        return ir.Const(3.4028234663852886e38 if t.kind == 4 else 1.7976931348623157e308, t)
    if n == "epsilon":
        t = args[0].type
        return ir.Const(1.1920928955078125e-07 if t.kind == 4 else 2.220446049250313e-16, t)
    raise ir.NotConstant(n)
