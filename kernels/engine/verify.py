"""Verify a port by running it and the original (compiled by gfortran) on the same random inputs.

Steps, all untrusted work in :mod:`kernels.engine.sandbox` subprocesses inside one temp dir:

1. **Plan**: pick sizes and scalar values (:func:`infer_sizes`), evaluate every array's declared
   bounds, draw reproducible inputs from ``np.random.default_rng(seed)``.
2. **Fortran side**: a ``bind(C)`` wrapper (iso_c_binding, arrays as explicit-shape dummies with
   the numeric bounds of this run, logicals passed as ``c_int`` and converted) is compiled with
   the original by ``gfortran -O2 -fPIC -shared -ffp-contract=off`` (IEEE semantics: no
   -ffast-math, no FMA contraction) and called through ctypes.
3. **Port side**: the generated module is written to a file and imported in a subprocess (never
   in this process: LLM-written code goes through the same path), then called with copies of
   the same inputs. ``device='simulator'`` sets ``NUMBA_ENABLE_CUDASIM=1``; ``'gpu'`` lets the
   child see the GPU.
4. **Compare** every INTENT(OUT/INOUT) argument (whole arrays, halos included) and a function's
   result: max absolute error, max relative error ``|a-b| / max(|a|, |b|, tiny)`` and max ULP
   distance in the argument's own precision.

Input values (documented because they decide which kernels can be checked):
- reals uniform in [0.5, 1.5]: positive, so sqrt/log/** of inputs stay real, and away from 0 so
  divisions are safe;
- integer arrays uniform in [1, 9] (safe as divisors and as 1-based indices);
- logicals random; INTENT(OUT) arrays get the same random garbage on both sides, so elements a
  kernel never writes (halos) compare equal.
- integer scalars that size an array: ``sizes[name]`` or distinct small defaults (13, 11, 9, ...:
  not multiples of 8 or 32, so tiling bugs show); other integer scalars: ``sizes[name]`` or 3
  (time steps, iteration counts). Assumed-shape extents come from ``sizes['dim1']``, ``'dim2'``...

Pass rules (the tolerance used is written into each ``ArgError.tolerance``):
- integers and logicals: exact;
- real(8) on cpu: every element has rel <= 1e-12 or abs <= 1e-12;
- real(4) on cpu: every element is within 4 ULP, or abs <= 2.4e-7 (2 epsilons: results that
  cancel to ~0, where ULPs explode);
- device gpu/simulator (FMA contraction, other libm): real(8) rel/abs <= 1e-10, real(4) rel <= 1e-5;
- a scalar that is a reduction of a parallel loop (summation order changes): real(8) rel <= 1e-10,
  real(4) rel <= 1e-4 (a bound relative to the result, valid for the positive inputs above);
- ``tolerances={name: Tolerance(...)}`` overrides any of these per argument.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernels.engine import coverage, ir
from kernels.engine.report import ArgError
from kernels.engine.sandbox import SandboxResult, run_sandboxed, sandbox_tempdir
from kernels.engine.sizes import candidates as size_candidates
from kernels.engine.sizes import infer as infer_integer_inputs

DIM_DEFAULTS = (13, 11, 9, 10, 7, 12, 6, 5)
OTHER_INT_DEFAULT = 3
REAL_RANGE = (0.5, 1.5)
INT_ARRAY_RANGE = (1, 10)  # numpy's upper bound is exclusive: values 1..9

GFORTRAN = "gfortran"
# IEEE-faithful flags: -O2 keeps evaluation order; contraction off so a*b+c is not fused.
GFORTRAN_VERIFY_FLAGS = ("-O2", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")
# The reference run also checks bounds: an out-of-bounds access in the original is reported as
# such (line, array, index), never as a mismatch of the port.
GFORTRAN_REFERENCE_FLAGS = (*GFORTRAN_VERIFY_FLAGS, "-fcheck=bounds")
WRAPPER_SYMBOL = "fsp_entry"
RESULT_KEY = "__result__"

COMPILE_MEMORY_MB = 2048
FORTRAN_RUN_MEMORY_MB = 3072
PYTHON_RUN_MEMORY_MB = 6144  # numba + LLVM reserve a lot of address space
# On a GPU the limit is RLIMIT_DATA (see sandbox); the CUDA driver's pinned staging buffers and
# context count against it, so leave room.
GPU_RUN_MEMORY_MB = 16384


# --------------------------------------------------------------------------------------------
# Public result types


@dataclass
class Tolerance:
    """An element passes when ``abs_err <= atol`` or ``rel_err <= rtol`` or ``ulp <= max_ulp``."""

    rtol: float = 0.0
    atol: float = 0.0
    max_ulp: float = 0.0
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        parts = []
        if self.rtol:
            parts.append(f"rel<={self.rtol:g}")
        if self.atol:
            parts.append(f"abs<={self.atol:g}")
        if self.max_ulp:
            parts.append(f"ulp<={self.max_ulp:g}")
        return " or ".join(parts) or "exact"


EXACT = Tolerance(label="exact")


@dataclass
class VerifyReport:
    status: str  # 'verified' | 'inconclusive' | 'mismatch' | 'failed'
    arguments: list[ArgError] = field(default_factory=list)
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    max_ulp: float | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    device: str = "cpu"
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    coverage: coverage.Coverage | None = None  # which DO loops ran in the reference

    @property
    def ok(self) -> bool:
        return self.status == "verified"


# --------------------------------------------------------------------------------------------
# Plan: sizes, shapes, inputs


@dataclass
class ArgPlan:
    name: str
    type: ir.FType
    intent: str
    shape: tuple[int, ...] = ()
    bounds: tuple[tuple[int, int], ...] = ()  # declared (lower, upper) per dimension
    assumed_shape: bool = False

    @property
    def is_array(self) -> bool:
        return bool(self.bounds)

    @property
    def is_output(self) -> bool:
        return self.intent in ("out", "inout")


@dataclass
class RunPlan:
    args: list[ArgPlan]
    sizes: dict[str, int]
    scalars: dict[str, Any]
    result_type: ir.FType | None = None  # set when the kernel is a function


class PlanError(ValueError):
    """The inputs cannot be planned (a bound depends on something unknown)."""


def infer_sizes(
    kernel: ir.Kernel, sizes: Mapping[str, int | float] | None = None
) -> dict[str, int]:
    """Values for the integer scalar arguments: ``sizes`` first, then :mod:`kernels.engine.sizes`."""
    given = {k.lower(): v for k, v in (sizes or {}).items()}
    out: dict[str, int] = infer_integer_inputs(kernel, given)
    for a in kernel.args:
        if not a.is_array and a.type.base == "integer" and a.name not in out:
            out[a.name] = int(given.get(a.name, OTHER_INT_DEFAULT))
    # Assumed-shape extents, when asked for.
    for k, v in given.items():
        if k.startswith("dim") and k[3:].isdigit():
            out[k] = int(v)
    return out


def _const_env(kernel: ir.Kernel) -> dict[str, int | float]:
    env: dict[str, int | float] = {}
    for name, c in kernel.constants.items():
        if isinstance(c.value, (int, float)) and not isinstance(c.value, bool):
            env[name.lower()] = c.value
    return env


def _result_type(kernel: ir.Kernel) -> ir.FType | None:
    """The function result type when the kernel is a FUNCTION (None for subroutines)."""
    if kernel.origin != "function":
        return None
    explicit = getattr(kernel, "result_type", None)
    if isinstance(explicit, ir.FType):
        return explicit
    for key in (kernel.fortran_entry, kernel.name):
        proc = kernel.functions.get(key) if key else None
        if proc is not None and proc.result and proc.result in proc.decls:
            return proc.decls[proc.result].type
    result_name = getattr(kernel, "result", None)
    for key in (result_name, kernel.fortran_entry, kernel.name, "r", "res", "result"):
        if key and key in kernel.locals:
            return kernel.locals[key].type
    return ir.REAL8


def plan_run(kernel: ir.Kernel, sizes: Mapping[str, int | float] | None = None) -> RunPlan:
    """Resolve every argument's shape and every scalar's value for one verification run."""
    given = {k.lower(): v for k, v in (sizes or {}).items()}
    int_values = infer_sizes(kernel, given)
    env: dict[str, int | float] = _const_env(kernel)
    env.update(int_values)
    plans: list[ArgPlan] = []
    # Reported sizes: the integers the caller could set (an INTENT(OUT) value is not an input).
    used_sizes: dict[str, int] = {
        a.name: int_values[a.name]
        for a in kernel.args
        if a.name in int_values and a.intent != "out"
    }
    for a in kernel.args:
        if not a.is_array:
            plans.append(ArgPlan(a.name, a.type, a.intent))
            continue
        bounds = []
        assumed = False
        for k, d in enumerate(a.dims):
            try:
                lower = ir.eval_int(d.lower, env) if d.lower is not None else 1
            except ir.NotConstant as exc:
                raise PlanError(
                    f"cannot size argument {a.name}: lower bound depends on {exc}"
                ) from exc
            if d.upper is None:
                assumed = True
                key = f"dim{k + 1}"
                extent = int(given.get(key, DIM_DEFAULTS[k % len(DIM_DEFAULTS)]))
                used_sizes[key] = extent
                upper = lower + extent - 1
            else:
                try:
                    upper = ir.eval_int(d.upper, env)
                except ir.NotConstant as exc:
                    raise PlanError(
                        f"cannot size argument {a.name}: bound depends on {exc}; pass --size NAME=VALUE"
                    ) from exc
            bounds.append((lower, max(upper, lower - 1)))
        shape = tuple(hi - lo + 1 for lo, hi in bounds)
        plans.append(ArgPlan(a.name, a.type, a.intent, shape, tuple(bounds), assumed))
    scalars = {k: v for k, v in given.items() if not k.startswith("dim")}
    return RunPlan(plans, used_sizes, scalars, _result_type(kernel))


def make_inputs(plan: RunPlan, seed: int = 0) -> dict[str, Any]:
    """Reproducible inputs for every argument (F-ordered arrays, numpy scalars of the right kind)."""
    rng = np.random.default_rng(seed)
    values: dict[str, Any] = {}
    for a in plan.args:
        dtype = np.dtype(a.type.numpy_dtype)
        if a.is_array:
            values[a.name] = _random_array(rng, a.type, a.shape)
            continue
        if a.name in plan.sizes:
            values[a.name] = dtype.type(plan.sizes[a.name])
        elif a.name in plan.scalars:
            values[a.name] = dtype.type(plan.scalars[a.name])
        else:
            values[a.name] = _random_array(rng, a.type, ()).item()
            values[a.name] = dtype.type(values[a.name])
    return values


def _random_array(rng: np.random.Generator, t: ir.FType, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(t.numpy_dtype)
    if t.base == "real":
        data = rng.uniform(*REAL_RANGE, size=shape)
    elif t.base == "integer":
        data = rng.integers(*INT_ARRAY_RANGE, size=shape)
    elif t.base == "logical":
        data = rng.random(size=shape) < 0.5
    elif t.base == "complex":
        data = rng.uniform(*REAL_RANGE, size=shape) + 1j * rng.uniform(*REAL_RANGE, size=shape)
    else:  # pragma: no cover - FType only has the four bases
        raise PlanError(f"no inputs for type {t}")
    return np.asfortranarray(np.asarray(data).astype(dtype))


# --------------------------------------------------------------------------------------------
# Fortran side: bind(C) wrapper


_C_KINDS = {
    ("integer", 4): "integer(c_int32_t)",
    ("integer", 8): "integer(c_int64_t)",
    ("integer", 2): "integer(c_int16_t)",
    ("integer", 1): "integer(c_int8_t)",
    ("real", 4): "real(c_float)",
    ("real", 8): "real(c_double)",
    ("complex", 8): "complex(c_float_complex)",
    ("complex", 16): "complex(c_double_complex)",
    ("logical", 4): "integer(c_int32_t)",
    ("logical", 1): "integer(c_int32_t)",
    ("logical", 8): "integer(c_int32_t)",
}


def _c_decl(t: ir.FType) -> str:
    try:
        return _C_KINDS[(t.base, t.kind)]
    except KeyError as exc:
        raise PlanError(f"type {t} cannot cross the C boundary") from exc


def _fortran_type(t: ir.FType) -> str:
    return f"{t.base}(kind={t.kind})"


def _bounds_text(bounds: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(f"{lo}:{hi}" for lo, hi in bounds)


def needs_module_wrapping(kernel: ir.Kernel, plan: RunPlan) -> bool:
    """Assumed-shape dummies need an explicit interface: put a module-less source in a module."""
    return kernel.fortran_module is None and any(a.assumed_shape for a in plan.args)


WRAP_MODULE = "fsp_orig_mod"


def fortran_wrapper(
    kernel: ir.Kernel,
    plan: RunPlan,
    *,
    symbol: str = WRAPPER_SYMBOL,
    after_call: tuple[str, ...] = (),
) -> str:
    """A ``bind(C)`` subroutine taking every argument by reference, then the result if a function."""
    names = [a.name for a in plan.args]
    dummies = list(names)
    if plan.result_type is not None:
        dummies.append("fsp_result")
    lines = [
        f'subroutine {symbol}({", ".join(dummies)}) bind(C, name="{symbol}")',
        "  use, intrinsic :: iso_c_binding",
    ]
    module = kernel.fortran_module or (WRAP_MODULE if needs_module_wrapping(kernel, plan) else None)
    if module:
        lines.append(f"  use {module}, only: {kernel.fortran_entry}")
    lines.append("  implicit none")
    actual: list[str] = []
    pre: list[str] = []
    post: list[str] = []
    for a in plan.args:
        dims = f"({_bounds_text(a.bounds)})" if a.is_array else ""
        lines.append(f"  {_c_decl(a.type)}, intent(inout) :: {a.name}{dims}")
        if a.type.base == "logical":
            local = f"fsp_l_{a.name}"
            lines.append(f"  {_fortran_type(a.type)} :: {local}{dims}")
            pre.append(f"  {local} = {a.name} /= 0")
            post.append(f"  {a.name} = merge(1_c_int32_t, 0_c_int32_t, {local})")
            actual.append(local)
        else:
            actual.append(a.name)
    call_args = ", ".join(actual)
    if plan.result_type is not None:
        lines.append(f"  {_c_decl(plan.result_type)}, intent(inout) :: fsp_result")
        if not module:
            lines.append(f"  {_fortran_type(plan.result_type)}, external :: {kernel.fortran_entry}")
        if plan.result_type.base == "logical":
            call = f"  fsp_result = merge(1_c_int32_t, 0_c_int32_t, {kernel.fortran_entry}({call_args}))"
        else:
            call = f"  fsp_result = {kernel.fortran_entry}({call_args})"
    else:
        if not module:
            lines.append(f"  external :: {kernel.fortran_entry}")
        call = f"  call {kernel.fortran_entry}({call_args})"
    lines += pre + [call] + post + [f"  {x}" for x in after_call] + [f"end subroutine {symbol}", ""]
    return "\n".join(lines)


def looks_fixed_form(source: str) -> bool:
    """Heuristic: comment letters in column 1 or code that never starts before column 7."""
    code_lines = [
        ln for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith("!")
    ]
    if not code_lines:
        return False
    if any(
        ln[:1] in ("c", "C", "*") and not ln[:1].isspace() and _is_fixed_comment(ln)
        for ln in code_lines
    ):
        return True
    return all(ln[:6].strip() == "" or ln[:5].strip().isdigit() for ln in code_lines)


def _is_fixed_comment(line: str) -> bool:
    # 'c ...' or 'C-----' in column 1; not free-form code such as 'call x' / 'contains' at column 1.
    low = line.lower()
    return not (
        low.startswith(
            ("call", "contains", "character", "complex", "case", "close", "cycle", "common")
        )
    )


def fortran_sources(kernel: ir.Kernel, plan: RunPlan) -> tuple[str, bool]:
    """The original source as it will be compiled (module-wrapped if needed) and whether it is fixed form."""
    source = kernel.fortran_source
    fixed = looks_fixed_form(source)
    if needs_module_wrapping(kernel, plan) and not fixed:
        source = (
            f"module {WRAP_MODULE}\n  implicit none\ncontains\n{source}\nend module {WRAP_MODULE}\n"
        )
    return source, fixed


def compile_fortran(
    kernel: ir.Kernel,
    plan: RunPlan,
    workdir: Path,
    *,
    flags: tuple[str, ...] = GFORTRAN_VERIFY_FLAGS,
    timeout_s: float = 60,
    library: str = "fsp_kernel.so",
    instrumented: coverage.InstrumentedSource | None = None,
) -> tuple[Path | None, SandboxResult]:
    """Write the original + wrapper into ``workdir`` and build a shared library (sandboxed gfortran).

    With ``instrumented``, its text (loop counters inserted) is compiled instead of the original,
    with the counters' support file, and the wrapper dumps the counters after the call.
    """
    source, fixed = fortran_sources(kernel, plan)
    wrapper = workdir / "fsp_wrapper.f90"
    extra: list[str] = []
    if instrumented is not None:
        source = instrumented.source
        (workdir / coverage.SUPPORT_FILE).write_text(coverage.support_source(instrumented.counters))
        extra.append(coverage.SUPPORT_FILE)
        wrapper.write_text(fortran_wrapper(kernel, plan, after_call=(f"call {coverage.DUMP}()",)))
    else:
        wrapper.write_text(fortran_wrapper(kernel, plan))
    lib = workdir / library
    result: SandboxResult | None = None
    # The suffix selects the source form. The heuristic can be wrong (a free-form text indented
    # past column 6): on a compile error, try the other form before reporting the first error.
    for form_fixed in (fixed, not fixed):
        original = workdir / ("fsp_original.f" if form_fixed else "fsp_original.f90")
        original.write_text(source)
        argv = [GFORTRAN, *flags, "-ffree-line-length-none", *extra, original.name, wrapper.name]
        attempt = run_sandboxed(
            [*argv, "-o", lib.name], cwd=workdir, timeout_s=timeout_s, memory_mb=COMPILE_MEMORY_MB
        )
        if result is None:
            result = attempt
        if attempt.ok and lib.exists():
            return lib, attempt
        if attempt.timed_out:
            break
        original.unlink(missing_ok=True)
    assert result is not None
    return None, result


# --------------------------------------------------------------------------------------------
# The side runner: executed in the sandbox (python fsp_side.py spec.json)

SIDE_RUNNER = r"""
import ctypes, importlib.util, json, sys, time
import numpy as np

spec = json.load(open(sys.argv[1]))
inputs = np.load("fsp_inputs.npz")
args = spec["args"]
out = {}
if spec["mode"] == "fortran":
    lib = ctypes.CDLL("./" + spec["library"])
    fn = getattr(lib, spec["symbol"])
    fn.restype = None
    keep, ptrs = [], []
    ctypes_of = {"int8": ctypes.c_int8, "int16": ctypes.c_int16, "int32": ctypes.c_int32,
                 "int64": ctypes.c_int64, "float32": ctypes.c_float, "float64": ctypes.c_double,
                 "bool": ctypes.c_int32}
    for a in args:
        v = inputs[a["name"]]
        if a["array"]:
            arr = np.asfortranarray(v.astype(np.int32) if a["dtype"] == "bool" else v.copy())
            keep.append(arr)
            ptrs.append(arr.ctypes.data_as(ctypes.c_void_p))
        elif a["dtype"].startswith("complex"):
            arr = np.array([v], dtype=a["dtype"])
            keep.append(arr)
            ptrs.append(arr.ctypes.data_as(ctypes.c_void_p))
        else:
            c = ctypes_of[a["dtype"]](int(v) if a["dtype"] == "bool" else v.item())
            keep.append(c)
            ptrs.append(ctypes.byref(c))
    if spec["result"]:
        res_dtype = spec["result"]
        res = np.zeros(1, dtype=np.int32 if res_dtype == "bool" else res_dtype)
        keep.append(res)
        ptrs.append(res.ctypes.data_as(ctypes.c_void_p))
    t0 = time.perf_counter()
    fn(*ptrs)
    elapsed = time.perf_counter() - t0
    for a, obj in zip(args, keep):
        if not a["output"]:
            continue
        if a["array"]:
            val = obj.astype(bool) if a["dtype"] == "bool" else obj
        elif isinstance(obj, np.ndarray):
            val = obj[0]
        else:
            val = np.array(obj.value, dtype=a["dtype"])
        out[a["name"]] = np.asarray(val)
    if spec["result"]:
        r = keep[-1][0]
        out["__result__"] = np.asarray(bool(r) if spec["result"] == "bool" else r)
else:
    sys.path.insert(0, ".")
    modspec = importlib.util.spec_from_file_location("fsp_generated", "fsp_generated.py")
    mod = importlib.util.module_from_spec(modspec)
    modspec.loader.exec_module(mod)
    fn = getattr(mod, spec["entry"])
    call = []
    for a in args:
        v = inputs[a["name"]]
        if a["array"]:
            call.append(np.asfortranarray(v.copy()))
        else:
            call.append(np.dtype(a["dtype"]).type(v))
    t0 = time.perf_counter()
    returned = fn(*call)
    elapsed = time.perf_counter() - t0
    expected = ([ "__result__"] if spec["result"] else []) + [
        a["name"] for a in args if a["output"] and not a["array"]]
    if len(expected) == 0:
        values = []
    elif len(expected) == 1 and not isinstance(returned, (tuple, list)):
        values = [returned]
    else:
        if not isinstance(returned, (tuple, list)) or len(returned) != len(expected):
            sys.stderr.write("generated code returned %r, expected %d values (%s)\n"
                             % (type(returned).__name__, len(expected), ", ".join(expected)))
            sys.exit(3)
        values = list(returned)
    for name, v in zip(expected, values):
        if v is None:
            sys.stderr.write("generated code returned None for %s\n" % name)
            sys.exit(3)
        dtype = spec["result"] if name == "__result__" else [a for a in args if a["name"] == name][0]["dtype"]
        out[name] = np.asarray(v).astype(dtype)
    for a, arr in zip(args, call):
        if a["output"] and a["array"]:
            out[a["name"]] = arr
np.savez(spec["output"], **out)
print(json.dumps({"elapsed_s": elapsed}))
"""


def _side_spec(plan: RunPlan, mode: str, **extra: Any) -> dict[str, Any]:
    return {
        "mode": mode,
        "args": [
            {
                "name": a.name,
                "dtype": a.type.numpy_dtype,
                "array": a.is_array,
                "output": a.is_output,
            }
            for a in plan.args
        ],
        "result": plan.result_type.numpy_dtype if plan.result_type is not None else None,
        **extra,
    }


def _python_env(device: str) -> dict[str, str]:
    env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
    if device == "simulator":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return env


# --------------------------------------------------------------------------------------------
# Comparison


def default_tolerance(t: ir.FType, *, device: str = "cpu", reduction: bool = False) -> Tolerance:
    """The documented pass rule for one argument of type ``t``."""
    if t.base in ("integer", "logical"):
        return EXACT
    single = t.kind == 4 or (t.base == "complex" and t.kind == 8)
    if reduction:
        return Tolerance(rtol=1e-4, atol=1e-6) if single else Tolerance(rtol=1e-10, atol=1e-12)
    if device in ("gpu", "simulator"):
        return Tolerance(rtol=1e-5, atol=1e-6) if single else Tolerance(rtol=1e-10, atol=1e-10)
    if single:
        return Tolerance(max_ulp=4, atol=2.4e-7)
    return Tolerance(rtol=1e-12, atol=1e-12)


def reduction_targets(kernel: ir.Kernel) -> set[str]:
    """Scalars reduced across iterations of a loop the analysis marked parallel."""
    names: set[str] = set()
    for s in ir.walk(kernel.body):
        if isinstance(s, ir.Loop) and s.parallel:
            for r in s.reductions:
                names.add(r.var)
                names.update(r.index_vars)
    return names


def _ordered_ints(x: np.ndarray) -> np.ndarray:
    """Map floats to integers whose order and spacing follow the floats' (for ULP distances)."""
    if x.dtype == np.float64:
        i = x.view(np.int64)
        return np.where(i < 0, np.int64(-(2**63)) - i, i)
    i = x.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, np.int64(-(2**31)) - i, i)


def compare_arrays(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> ArgError:
    """Compare one output: errors over every element (NaN/inf equal only to themselves)."""
    ref = np.asarray(ref)
    got = np.asarray(got)
    if ref.shape != got.shape:
        return ArgError(
            name, math.inf, math.inf, math.inf, False, f"shape {got.shape} != {ref.shape}"
        )
    if ref.size == 0:
        return ArgError(name, 0.0, 0.0, 0.0, True, tol.describe())
    if ref.dtype.kind in "biu" or ref.dtype == np.bool_:
        diff = np.abs(ref.astype(np.int64) - got.astype(np.int64))
        worst = float(diff.max())
        rel = float((diff / np.maximum(np.abs(ref.astype(np.float64)), 1.0)).max())
        return ArgError(name, worst, rel, worst, worst == 0, tol.describe())
    if ref.dtype.kind == "c":
        parts = [
            compare_arrays(name, ref.real.copy(), got.real.astype(ref.real.dtype), tol),
            compare_arrays(name, ref.imag.copy(), got.imag.astype(ref.imag.dtype), tol),
        ]
        return ArgError(
            name,
            max(p.max_abs_err for p in parts),
            max(p.max_rel_err for p in parts),
            max(p.max_ulp for p in parts),
            all(p.passed for p in parts),
            tol.describe(),
        )
    got = got.astype(ref.dtype)
    a = ref.astype(np.float64)
    b = got.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.where(same, 0.0, np.abs(a - b))
        abs_err = np.where(np.isnan(abs_err), np.inf, abs_err)
        scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), np.finfo(ref.dtype).tiny)
        rel_err = np.where(same, 0.0, abs_err / scale)
        ulp = np.abs(_ordered_ints(ref).astype(np.float64) - _ordered_ints(got).astype(np.float64))
        ulp = np.where(same, 0.0, np.where(np.isnan(a) | np.isnan(b), np.inf, ulp))
    ok = same.copy()
    if tol.atol:
        ok |= abs_err <= tol.atol
    if tol.rtol:
        ok |= rel_err <= tol.rtol
    if tol.max_ulp:
        ok |= ulp <= tol.max_ulp
    return ArgError(
        name,
        float(abs_err.max()),
        float(rel_err.max()),
        float(ulp.max()),
        bool(ok.all()),
        tol.describe(),
    )


# --------------------------------------------------------------------------------------------
# Entry point


def verify_against_gfortran(
    kernel: ir.Kernel,
    generated: Any,
    *,
    sizes: Mapping[str, int | float] | None = None,
    seed: int = 0,
    device: str = "cpu",
    timeout_s: float = 120,
    tolerances: Mapping[str, Tolerance] | None = None,
) -> VerifyReport:
    """Run the original (gfortran) and ``generated`` (``.code``/``.entry``) on the same inputs.

    Never raises for a broken port or source: compile errors, crashes and timeouts come back as
    ``status='failed'`` with the first lines of the error in ``message``. When the outputs match
    but a loop never ran (``inconclusive``), the next size candidate of
    :func:`kernels.engine.sizes.candidates` is tried, within the same time budget.
    """
    import time

    deadline = time.monotonic() + timeout_s
    given = {k.lower(): v for k, v in (sizes or {}).items()}
    options = size_candidates(kernel, given, simulator=device == "simulator")
    tried: list[dict[str, int]] = []
    report: VerifyReport | None = None
    for option in options:
        left = deadline - time.monotonic()
        if report is not None and left < 5.0:
            break
        if report is not None and report.coverage is not None:
            # A candidate that statically leaves the same loops empty cannot do better.
            if set(report.coverage.not_run) <= set(option.empty_loops):
                continue
        report = _verify_once(
            kernel,
            generated,
            sizes={**option.values, **given},
            seed=seed,
            device=device,
            timeout_s=max(1.0, left),
            tolerances=tolerances,
        )
        tried.append(dict(report.sizes))
        if report.status != "inconclusive":
            break
    assert report is not None
    if report.status == "inconclusive" and len(tried) > 1:
        report.message = (
            report.message.split("; inconclusive:")[0]
            + "; "
            + (coverage.inconclusive_message(report.coverage, tried))
        )
    return report


def _verify_once(
    kernel: ir.Kernel,
    generated: Any,
    *,
    sizes: Mapping[str, int | float],
    seed: int,
    device: str,
    timeout_s: float,
    tolerances: Mapping[str, Tolerance] | None,
) -> VerifyReport:
    """One run of both sides at one set of sizes."""
    import time

    deadline = time.monotonic() + timeout_s

    def remaining() -> float:
        return max(1.0, deadline - time.monotonic())

    try:
        plan = plan_run(kernel, sizes)
        inputs = make_inputs(plan, seed)
    except (PlanError, ir.NotConstant, ValueError) as exc:
        return VerifyReport("failed", device=device, message=str(exc))

    report = VerifyReport("failed", sizes=dict(plan.sizes), device=device)
    with sandbox_tempdir(prefix="fsp-verify-") as workdir:
        np.savez(workdir / "fsp_inputs.npz", **inputs)
        (workdir / "fsp_side.py").write_text(SIDE_RUNNER)

        try:
            source, fixed = fortran_sources(kernel, plan)
            instrumented = coverage.instrument(kernel, source, fixed=fixed)
            lib, compiled = compile_fortran(
                kernel,
                plan,
                workdir,
                flags=GFORTRAN_REFERENCE_FLAGS,
                timeout_s=min(60.0, remaining()),
                instrumented=instrumented,
            )
        except PlanError as exc:
            report.message = str(exc)
            return report
        if lib is None:
            report.message = (
                "gfortran could not compile the original: " + compiled.describe_failure()
            )
            return report
        report.timings["gfortran_compile_s"] = compiled.duration_s

        spec = _side_spec(
            plan, "fortran", library=lib.name, symbol=WRAPPER_SYMBOL, output="fsp_ref.npz"
        )
        (workdir / "fsp_ref.json").write_text(json.dumps(spec))
        ref_run = run_sandboxed(
            [sys.executable, "fsp_side.py", "fsp_ref.json"],
            cwd=workdir,
            timeout_s=remaining(),
            memory_mb=FORTRAN_RUN_MEMORY_MB,
            env={"PYTHONDONTWRITEBYTECODE": "1"},
        )
        if not ref_run.ok:
            report.message = coverage.out_of_bounds_message(
                ref_run.stderr, instrumented, plan.sizes
            ) or "the original Fortran failed to run: " + ref_run.describe_failure(
                max_lines=12, tail=True
            )
            return report
        report.timings["fortran_s"] = _elapsed(ref_run)
        report.coverage = coverage.summarize(
            instrumented, coverage.read_counts(workdir) or [0] * instrumented.counters
        )

        (workdir / "fsp_generated.py").write_text(generated.code)
        spec = _side_spec(plan, "python", entry=generated.entry, output="fsp_port.npz")
        (workdir / "fsp_port.json").write_text(json.dumps(spec))
        port_run = run_sandboxed(
            [sys.executable, "fsp_side.py", "fsp_port.json"],
            cwd=workdir,
            timeout_s=remaining(),
            memory_mb=GPU_RUN_MEMORY_MB if device == "gpu" else PYTHON_RUN_MEMORY_MB,
            env=_python_env(device),
            allow_gpu=device == "gpu",
        )
        if not port_run.ok:
            report.message = "the generated code failed: " + port_run.describe_failure(
                max_lines=12, tail=True
            )
            return report
        report.timings["port_s"] = _elapsed(port_run)

        with (
            np.load(workdir / "fsp_ref.npz") as ref_npz,
            np.load(workdir / "fsp_port.npz") as port_npz,
        ):
            ref = {k: ref_npz[k] for k in ref_npz.files}
            port = {k: port_npz[k] for k in port_npz.files}

    reductions = reduction_targets(kernel)
    overrides = {k.lower(): v for k, v in (tolerances or {}).items()}
    names = [a for a in plan.args if a.is_output]
    checks: list[tuple[str, ir.FType]] = [(a.name, a.type) for a in names]
    if plan.result_type is not None:
        checks.insert(0, (RESULT_KEY, plan.result_type))
    for name, t in checks:
        label = kernel.name if name == RESULT_KEY else name
        tol = overrides.get(label) or default_tolerance(
            t, device=device, reduction=(label in reductions and not _is_array(plan, label))
        )
        if name not in port:
            report.arguments.append(
                ArgError(
                    label, math.inf, math.inf, math.inf, False, "missing from the port's outputs"
                )
            )
            continue
        report.arguments.append(compare_arrays(label, ref[name], port[name], tol))

    if report.arguments:
        report.max_abs_err = max(a.max_abs_err for a in report.arguments)
        report.max_rel_err = max(a.max_rel_err for a in report.arguments)
        report.max_ulp = max(a.max_ulp for a in report.arguments)
    else:
        report.max_abs_err = report.max_rel_err = report.max_ulp = 0.0
    failing = [a.name for a in report.arguments if not a.passed]
    if failing:
        report.status = "mismatch"
        report.message = "outputs differ from gfortran: " + ", ".join(
            f"{a.name} (max abs {a.max_abs_err:.3g}, rel {a.max_rel_err:.3g}, tolerance {a.tolerance})"
            for a in report.arguments
            if not a.passed
        )
    else:
        report.status = "verified"
        checked = len(report.arguments)
        report.message = (
            f"{checked} output{'s' if checked != 1 else ''} match gfortran"
            if checked
            else "the kernel has no outputs to compare"
        )
        if report.coverage is None or not report.coverage.complete:
            report.status = "inconclusive"
            report.message += "; " + coverage.inconclusive_message(report.coverage, [plan.sizes])
    return report


def _is_array(plan: RunPlan, name: str) -> bool:
    return any(a.name == name and a.is_array for a in plan.args)


def _elapsed(result: SandboxResult) -> float:
    for line in reversed(result.stdout.strip().splitlines()):
        try:
            return float(json.loads(line)["elapsed_s"])
        except (ValueError, KeyError, TypeError):
            continue
    return result.duration_s
