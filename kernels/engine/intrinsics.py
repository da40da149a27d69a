"""The intrinsic tables every stage uses (frontend, lowering, type inference, backends).

One table per question, in the manner of PSyclone's ``IntrinsicCall.Intrinsic``: which names are
intrinsics, which are array reductions the frontend lowers to loops, which are inquiry functions.
"""

from __future__ import annotations

# Elemental real functions: the math.* name to call.
MATH = {
    "sqrt": "math.sqrt",
    "exp": "math.exp",
    "log": "math.log",
    "alog": "math.log",
    "dlog": "math.log",
    "log10": "math.log10",
    "sin": "math.sin",
    "cos": "math.cos",
    "tan": "math.tan",
    "asin": "math.asin",
    "acos": "math.acos",
    "atan": "math.atan",
    "sinh": "math.sinh",
    "cosh": "math.cosh",
    "tanh": "math.tanh",
    "dsqrt": "math.sqrt",
    "dexp": "math.exp",
    "dsin": "math.sin",
    "dcos": "math.cos",
    "dtan": "math.tan",
    "datan": "math.atan",
    "dtanh": "math.tanh",
}
MATH2 = {"atan2": "math.atan2", "datan2": "math.atan2"}

#: Intrinsic names the printers understand (the frontend uses this to tell calls from arrays).
INTRINSICS = (
    set(MATH)
    | set(MATH2)
    | {
        "abs",
        "dabs",
        "iabs",
        "min",
        "max",
        "amin1",
        "amax1",
        "dmin1",
        "dmax1",
        "min0",
        "max0",
        "mod",
        "amod",
        "dmod",
        "modulo",
        "sign",
        "dsign",
        "isign",
        "int",
        "ifix",
        "idint",
        "nint",
        "idnint",
        "anint",
        "aint",
        "real",
        "float",
        "sngl",
        "dble",
        "dfloat",
        "floor",
        "ceiling",
        "size",
        "sum",
        "maxval",
        "minval",
        "product",
        "huge",
        "tiny",
        "epsilon",
        "kind",
        "merge",
        "dim",
        "lbound",
        "ubound",
        "selected_real_kind",
        "selected_int_kind",
    }
)


ARRAY_REDUCTIONS = {
    "sum",
    "maxval",
    "minval",
    "product",
    "count",
    "any",
    "all",
    "maxloc",
    "minloc",
}
# Intrinsics the frontend lowers itself (the printers never see them).
LOWERED = {"count", "any", "all", "maxloc", "minloc", "dot_product"}
# Intrinsic inquiry functions whose array argument is not elementwise.
INQUIRY = {"size", "lbound", "ubound", "kind", "huge", "tiny", "epsilon"}

#: Intrinsics that read the program's command line (argv) and nothing else. The security scan
#: lets them through (a driver parsing its arguments touches no file and no process); a kernel
#: has no command line, so the frontend reports them as unsupported inside one.
COMMAND_LINE = {"command_argument_count", "get_command_argument", "get_command", "getarg", "iargc"}
