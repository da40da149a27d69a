"""Verify a port by running it and the original (compiled by gfortran) on the same random inputs.

Steps, all untrusted work in :mod:`kernels.engine.sandbox` subprocesses inside one temp dir:

1. **Plan**: pick sizes and scalar values (:func:`infer_sizes`), evaluate every array's declared
   bounds, check the byte cap; the sandboxed harness
   (:mod:`kernels.engine.harness`) draws reproducible inputs from ``np.random.default_rng(seed)``.
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

import contextlib
import hashlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernels.engine import coverage, harness, ir, reference_cache
from kernels.engine.frontend.parse import is_fixed_form
from kernels.engine.report import ArgError
from kernels.engine.sandbox import (
    SandboxProcess,
    SandboxResult,
    run_sandboxed,
    sandbox_tempdir,
    start_sandboxed,
)
from kernels.engine.sizes import candidates as size_candidates
from kernels.engine.sizes import infer as infer_integer_inputs

DIM_DEFAULTS = (13, 11, 9, 10, 7, 12, 6, 5)
OTHER_INT_DEFAULT = 3
REAL_RANGE = harness.REAL_RANGE
INT_ARRAY_RANGE = harness.INT_ARRAY_RANGE
DEFAULT_MAX_RUN_BYTES = 256 << 20

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
MAX_VERIFY_S = 120.0  # the longest one kernel's verification may take (the pipeline's cap)
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
    # Milliseconds per verification stage (report.TIMING_STAGES from gfortran_compile on).
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The port's machine code came from the tenant's numba cache instead of being compiled.
    numba_cache_hit: bool = False
    # The original's library came from the tenant's reference cache instead of gfortran.
    reference_cache_hit: bool = False
    coverage: coverage.Coverage | None = None  # which DO loops ran in the reference
    # The values of each run whose outputs were compared: the sizes, plus the branch selection
    # (``direction=2``, ``fields=1``) when several selections ran.
    runs: list[dict[str, int]] = field(default_factory=list)

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
    allocatable: bool = False  # the wrapper passes an allocated copy (ALLOCATABLE dummy)
    # A component of a derived-type dummy or a module variable: the wrapper moves it in and out.
    source: ir.ComponentOf | ir.ModuleVariable | None = None

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
    # Bounds of each array-of-derived-type dummy (the wrapper declares one of the original's).
    derived_bounds: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)


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
            plans.append(ArgPlan(a.name, a.type, a.intent, source=a.source))
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
        plans.append(
            ArgPlan(
                a.name, a.type, a.intent, shape, tuple(bounds), assumed, a.allocatable, a.source
            )
        )
    scalars = {k: v for k, v in given.items() if not k.startswith("dim")}
    plan = RunPlan(plans, used_sizes, scalars, _result_type(kernel))
    plan.derived_bounds = _derived_bounds(kernel, plans, env)
    return plan


def _derived_bounds(
    kernel: ir.Kernel, plans: list[ArgPlan], env: Mapping[str, int | float]
) -> dict[str, tuple[tuple[int, int], ...]]:
    """Bounds of the arrays of derived type: those of their components (structure of arrays)."""
    out: dict[str, tuple[tuple[int, int], ...]] = {}
    for name, da in kernel.derived_args.items():
        if not da.dims:
            continue
        parts = [
            p
            for p in plans
            if isinstance(p.source, ir.ComponentOf)
            and p.source.parent == name
            and len(p.bounds) == len(da.dims)
        ]
        if parts:
            out[name] = parts[0].bounds
            continue
        try:
            out[name] = tuple(
                (ir.eval_int(d.lower, env), ir.eval_int(d.upper, env))  # type: ignore[arg-type]
                for d in da.dims
            )
        except (ir.NotConstant, TypeError) as exc:
            raise PlanError(f"cannot size argument {name}: bound depends on {exc}") from exc
    return out


def harness_args(plan: RunPlan) -> list[dict[str, Any]]:
    """The plan's arguments as the harness spec lists them (inputs are drawn from these)."""
    out = []
    for a in plan.args:
        value = plan.sizes.get(a.name, plan.scalars.get(a.name)) if not a.is_array else None
        out.append(
            {
                "name": a.name,
                "dtype": a.type.numpy_dtype,
                "base": a.type.base,
                "array": a.is_array,
                "output": a.is_output,
                "shape": list(a.shape),
                "value": value,
                # A flag array given one value (``--size fields=1``, or a branch selection).
                "fill": plan.scalars.get(a.name) if a.is_array else None,
            }
        )
    return out


def make_inputs(plan: RunPlan, seed: int = 0) -> dict[str, Any]:
    """The inputs the sandboxed harness draws for ``plan`` (for tests and tools: the server
    itself never allocates them; see :func:`harness.make_inputs`)."""
    return harness.make_inputs(harness_args(plan), seed)


def max_run_bytes() -> int:
    """``$FORTRANSPIRE_MAX_RUN_BYTES``: the most one run's input arrays may take (256 MiB)."""
    raw = os.environ.get("FORTRANSPIRE_MAX_RUN_BYTES", "")
    try:
        return int(raw) if raw.strip() else DEFAULT_MAX_RUN_BYTES
    except ValueError as exc:
        raise PlanError(
            f"FORTRANSPIRE_MAX_RUN_BYTES must be a number of bytes, not {raw!r}"
        ) from exc


def check_run_bytes(plan: RunPlan) -> int:
    """The bytes of the plan's input arrays; PlanError before anything runs when over the cap."""
    need = harness.input_bytes(harness_args(plan))
    cap = max_run_bytes()
    if need > cap:
        raise PlanError(
            f"the arguments would take {_mib(need)} at these sizes; one run may use at most "
            f"{_mib(cap)} (choose smaller --size values, or raise FORTRANSPIRE_MAX_RUN_BYTES)"
        )
    return need


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


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
    """Assumed-shape and ALLOCATABLE dummies need an explicit interface: put a module-less
    source in a module."""
    return kernel.fortran_module is None and any(
        (a.source is None and (a.assumed_shape or a.allocatable))
        or (isinstance(a.source, ir.ComponentOf) and a.assumed_shape and not a.source.allocatable)
        for a in plan.args
    )


WRAP_MODULE = "fsp_orig_mod"


def fortran_wrapper(
    kernel: ir.Kernel,
    plan: RunPlan,
    *,
    symbol: str = WRAPPER_SYMBOL,
    after_call: tuple[str, ...] = (),
) -> str:
    """A ``bind(C)`` subroutine taking every argument by reference, then the result if a function.

    Arguments that are no dummy of the original are moved around the call: the components of
    a derived-type dummy fill a variable of that TYPE (allocating ALLOCATABLE components with
    the run's bounds) and are read back from it; module variables are set before the call and
    read back after it.
    """
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
    for type_module, type_name in sorted(
        {(d.module, d.type_name) for d in kernel.derived_args.values()}
    ):
        lines.append(f"  use {type_module}, only: {type_name}")
    for a in plan.args:
        if isinstance(a.source, ir.ModuleVariable):
            lines.append(f"  use {a.source.module}, only: fsp_m_{a.name} => {a.source.name}")
    lines.append("  implicit none")
    actual: dict[str, str] = {}
    pre: list[str] = []
    post: list[str] = []
    for a in plan.args:
        dims = f"({_bounds_text(a.bounds)})" if a.is_array else ""
        lines.append(f"  {_c_decl(a.type)}, intent(inout) :: {a.name}{dims}")
        if a.source is not None:
            _move_around_call(a, pre, post)
        elif a.allocatable and a.type.base != "logical":
            # An ALLOCATABLE dummy needs an allocatable actual: an allocated copy, copied back.
            local = f"fsp_a_{a.name}"
            lines.append(f"  {_fortran_type(a.type)}, allocatable :: {local}({_deferred(a)})")
            pre.append(f"  allocate({local}({_bounds_text(a.bounds)}))")
            pre.append(f"  {local} = {a.name}")
            post.append(f"  if (allocated({local})) then")
            post.append(f"    if (all(shape({local}) == shape({a.name}))) {a.name} = {local}")
            post.append("  end if")
            actual[a.name] = local
        elif a.type.base == "logical":
            local = f"fsp_l_{a.name}"
            lines.append(f"  {_fortran_type(a.type)} :: {local}{dims}")
            pre.append(f"  {local} = {a.name} /= 0")
            post.append(f"  {a.name} = merge(1_c_int32_t, 0_c_int32_t, {local})")
            actual[a.name] = local
        else:
            actual[a.name] = a.name
    for name, da in kernel.derived_args.items():
        bounds = plan.derived_bounds.get(name)
        dims = f"({_bounds_text(bounds)})" if bounds else ""
        lines.append(f"  type({da.type_name}) :: fsp_t_{name}{dims}")
        actual[name] = f"fsp_t_{name}"
    call_args = ", ".join(
        actual[n] for n in (names if kernel.fortran_args is None else kernel.fortran_args)
    )
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


def _move_around_call(a: ArgPlan, pre: list[str], post: list[str]) -> None:
    """Wrapper lines that put ``a`` where the original reads it, and take it back after."""
    if isinstance(a.source, ir.ComponentOf):
        place = "%".join([f"fsp_t_{a.source.parent}", *a.source.path])
        allocatable = a.source.allocatable
    else:
        assert isinstance(a.source, ir.ModuleVariable)
        place = f"fsp_m_{a.name}"
        allocatable = a.source.allocatable
    if allocatable:
        pre.append(f"  if (allocated({place})) deallocate({place})")
        pre.append(f"  allocate({place}({_bounds_text(a.bounds)}))")
    logical = a.type.base == "logical"
    pre.append(f"  {place} = {a.name}" + (" /= 0" if logical else ""))
    if not a.is_output:
        return
    back = f"merge(1_c_int32_t, 0_c_int32_t, {place})" if logical else place
    if allocatable:
        post.append(f"  if (allocated({place})) then")
        post.append(f"    if (all(shape({place}) == shape({a.name}))) {a.name} = {back}")
        post.append("  end if")
    else:
        post.append(f"  {a.name} = {back}")


def _deferred(a: ArgPlan) -> str:
    return ", ".join(":" for _ in a.bounds)


def fortran_sources(kernel: ir.Kernel, plan: RunPlan) -> tuple[str, bool]:
    """The kernel's own source as it will be compiled (module-wrapped if needed) and whether it is
    fixed form: the form of the kernel's file, by its name, the one rule the parser used too
    (:func:`kernels.engine.frontend.parse.is_fixed_form`)."""
    source = kernel.fortran_source
    fixed = is_fixed_form(kernel.file)
    if needs_module_wrapping(kernel, plan):
        pad = "      " if fixed else ""  # fixed form: statements from column 7
        source = (
            f"{pad}module {WRAP_MODULE}\n{pad}implicit none\n{pad}contains\n{source}\n"
            f"{pad}end module {WRAP_MODULE}\n"
        )
    return source, fixed


def source_file_name(stem: str, fixed: bool) -> str:
    """The name a source is compiled under: gfortran takes the form from the suffix."""
    return f"{stem}.f" if fixed else f"{stem}.f90"


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
    build = build_fortran(
        kernel,
        plan,
        workdir,
        flags=flags,
        timeout_s=timeout_s,
        library=library,
        instrumented=instrumented,
    )
    assert build.compiled is not None  # no cache: gfortran ran
    return build.library, build.compiled


@dataclass
class FortranBuild:
    """A shared library of the original (or why there is none)."""

    library: Path | None
    compiled: SandboxResult | None = None  # gfortran's run; None when loaded from the cache
    from_cache: bool = False


def build_fortran(
    kernel: ir.Kernel,
    plan: RunPlan,
    workdir: Path,
    *,
    flags: tuple[str, ...],
    timeout_s: float,
    library: str = "fsp_kernel.so",
    instrumented: coverage.InstrumentedSource | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> FortranBuild:
    """:func:`compile_fortran`, or with ``cache_dir`` (one tenant's
    :mod:`kernels.engine.reference_cache`) the same library loaded from an earlier identical
    build; a fresh build is stored there before anything runs it.
    """
    source, fixed = fortran_sources(kernel, plan)
    files: dict[str, str] = {}
    if instrumented is not None:
        source = instrumented.source
        # The interface module first: the original may USE it (DO CONCURRENT, PURE units).
        files[coverage.PURE_INTERFACE_FILE] = coverage.pure_interface_source()
        files[coverage.SUPPORT_FILE] = coverage.support_source(instrumented.counters)
        files["fsp_wrapper.f90"] = fortran_wrapper(
            kernel, plan, after_call=(f"call {coverage.DUMP}()",)
        )
    else:
        files["fsp_wrapper.f90"] = fortran_wrapper(kernel, plan)
    extra = [name for name in files if name != "fsp_wrapper.f90"]
    lib = workdir / library
    original_name = source_file_name("fsp_original", fixed)
    # A project mixing fixed and free form: the other form's units, each run a file of its own.
    parts: dict[str, list[str]] = {"before": [], "after": []}
    for side, found in (("before", kernel.compiled_before), ("after", kernel.compiled_after)):
        for k, part in enumerate(found, start=1):
            name = source_file_name(f"fsp_{side}{k}", is_fixed_form(part.file))
            files[name] = part.text
            parts[side].append(name)
    argv = [
        *flags,
        "-ffree-line-length-none",
        *extra,
        *parts["before"],
        original_name,
        *parts["after"],
        "fsp_wrapper.f90",
        "-o",
        lib.name,
    ]
    key = ""
    if cache_dir is not None:
        key = reference_cache.build_key(
            files={**files, original_name: source},
            argv=argv,
            compiler=reference_cache.gfortran_identity(GFORTRAN),
        )
        if reference_cache.load(cache_dir, key, lib):
            return FortranBuild(lib, from_cache=True)
    for name, text in files.items():
        (workdir / name).write_text(text)
    (workdir / original_name).write_text(source)
    result = run_sandboxed(
        [GFORTRAN, *argv], cwd=workdir, timeout_s=timeout_s, memory_mb=COMPILE_MEMORY_MB
    )
    if result.ok and lib.exists():
        if key:
            reference_cache.store(cache_dir, key, lib)
        return FortranBuild(lib, result)
    return FortranBuild(None, result)


# --------------------------------------------------------------------------------------------
# The two sides run by the harness (kernels/engine/harness.py) in the sandbox


def harness_spec(plan: RunPlan, seed: int, **fields: Any) -> dict[str, Any]:
    """A harness spec for ``plan``: the arguments, the seed, the result type, then ``fields``."""
    return {
        "seed": seed,
        "args": harness_args(plan),
        "result": plan.result_type.numpy_dtype if plan.result_type is not None else None,
        **fields,
    }


def harness_argv(spec_file: str, *, wait: bool = False) -> list[str]:
    """Isolated mode (-I): the work directory is not on sys.path, nor are PYTHON* variables read.

    ``wait``: the harness warms numba up, then waits for :data:`harness.GO` on stdin before it
    reads ``spec_file`` (:class:`PortSandbox`).
    """
    flag = [harness.WAIT_FLAG] if wait else []
    return [sys.executable, "-I", harness.HARNESS_FILE, *flag, spec_file]


def _python_env(device: str) -> dict[str, str]:
    env: dict[str, str] = {}
    if device == "simulator":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return env


def numba_cache_layout(cache_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(where generated modules are kept, where numba keeps their compiled code) in a cache dir."""
    root = Path(cache_dir)
    return root / "src", root / "numba"


def _port_module(code: str, workdir: Path, cache_dir: str | os.PathLike[str] | None) -> str:
    """Write the port where the harness imports it (the tenant's cache, or the work dir).

    The sandbox may already be running: the file is made readable to it explicitly (0644 in a
    0700 directory), whatever the server's umask.
    """
    if cache_dir is None:
        _write_for_sandbox(workdir / "fsp_generated.py", code)
        return "fsp_generated.py"
    src_dir, _numba_dir = numba_cache_layout(cache_dir)
    digest = hashlib.sha256(code.encode("utf-8")).hexdigest()[:24]
    module = src_dir / f"fsp_{digest}.py"
    # Named after its text: numba names its cache entries after the module file and checks the
    # file's hash, so each port keeps its own entry and finds it again at the same path.
    if not module.exists() or module.read_text() != code:
        _write_for_sandbox(module, code)
    return str(module)


def _write_for_sandbox(path: Path, text: str) -> None:
    # Atomic: a concurrent verification of the same port never sees half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


PORT_SPEC = "fsp_port.json"


class PortSandbox:
    """The port's sandbox, started before the port exists.

    Starting a sandboxed interpreter and importing numpy and numba costs most of a second, and
    numba's first compile or cache load adds a quarter more: :meth:`start` pays all of it (the
    harness's ``--wait`` mode) while the translator still parses and generates and while
    gfortran compiles; :meth:`run` then hands the generated module and the spec to the waiting
    harness. The port that runs is exactly the one given to :meth:`run`, compiled with its own
    options; the harness did nothing before but import and warm up numba.

    One port runs per sandbox. ``numba_cache_dir`` (one tenant's, see
    :func:`verify_against_gfortran`) is bound when the sandbox starts, so a started sandbox
    serves only the verifications that would have been given that directory anyway. Start it on
    a thread that lives until it is run or closed (see :func:`~kernels.engine.sandbox.start_sandboxed`);
    :meth:`close` ends an unused one.
    """

    def __init__(
        self,
        *,
        device: str,
        numba_cache_dir: str | os.PathLike[str] | None,
        timeout_s: float,
    ) -> None:
        self.device = device
        self.numba_cache_dir = numba_cache_dir if device == "cpu" else None
        self._stack = contextlib.ExitStack()
        self._used = False
        #: When a request took this sandbox (its start, or :meth:`claim` for a spare).
        self.claimed_at = time.monotonic()
        try:
            self.workdir = self._stack.enter_context(sandbox_tempdir(prefix="verify-port-"))
            harness.install(self.workdir)
            env = _python_env(device)
            rw: list[str | os.PathLike[str]] = []
            self._cache_identity: tuple[int, int] | None = None
            if self.numba_cache_dir is not None:
                for part in numba_cache_layout(self.numba_cache_dir):
                    part.mkdir(parents=True, exist_ok=True)
                self._cache_identity = _identity(self.numba_cache_dir)
                env["NUMBA_CACHE_DIR"] = str(numba_cache_layout(self.numba_cache_dir)[1])
                rw = [self.numba_cache_dir]
            self.process: SandboxProcess = self._stack.enter_context(
                start_sandboxed(
                    harness_argv(PORT_SPEC, wait=True),
                    cwd=self.workdir,
                    timeout_s=timeout_s,
                    cpu_s=2 * min(timeout_s, MAX_VERIFY_S) + 5,
                    memory_mb=GPU_RUN_MEMORY_MB if device == "gpu" else PYTHON_RUN_MEMORY_MB,
                    env=env,
                    input_later=True,
                    allow_gpu=device == "gpu",
                    rw_paths=rw,
                )
            )
        except BaseException:
            self._stack.close()
            raise

    @classmethod
    def start(
        cls,
        *,
        device: str,
        numba_cache_dir: str | os.PathLike[str] | None,
        timeout_s: float,
    ) -> PortSandbox:
        return cls(device=device, numba_cache_dir=numba_cache_dir, timeout_s=timeout_s)

    def run(self, spec: dict[str, Any], code: str, *, timeout_s: float) -> _PortRun:
        """Write ``code`` and ``spec`` (its ``module`` is filled in here), let the harness go and
        wait for it; ``timeout_s`` from now."""
        if self._used:
            raise RuntimeError("a PortSandbox runs one port")
        self._used = True
        spec = {**spec, "module": _port_module(code, self.workdir, self.numba_cache_dir)}
        spec["numba_cache"] = self.numba_cache_dir is not None
        _write_for_sandbox(self.workdir / PORT_SPEC, json.dumps(spec))
        go_at = time.monotonic()
        result = self.process.finish(harness.GO, timeout_s=timeout_s)
        return _PortRun(
            result,
            started_at=self.process.started_at,
            claimed_at=max(self.claimed_at, self.process.started_at),
            go_at=go_at,
        )

    def claim(self) -> None:
        """A request takes this sandbox now: its ``port_start`` counts from here."""
        self.claimed_at = time.monotonic()

    def usable(self) -> bool:
        """Not run yet, its harness alive, and its cache directory still the one at its path
        (bound when it started: a directory removed and made again since is another one)."""
        if self._used or not self.process.running:
            return False
        if self.numba_cache_dir is None:
            return True
        try:
            return _identity(self.numba_cache_dir) == self._cache_identity
        except OSError:
            return False

    def close(self) -> None:
        """Kill the harness if it never ran, and remove the work directory."""
        self._stack.close()


def _identity(path: str | os.PathLike[str]) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


@dataclass
class _PortRun:
    result: SandboxResult
    started_at: float  # time.monotonic() of the sandbox's start
    claimed_at: float  # ... of the request taking it (later than the start for a spare)
    go_at: float  # ... of the go

    @property
    def ended_at(self) -> float:
        return self.started_at + self.result.duration_s


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
    numba_cache_dir: str | os.PathLike[str] | None = None,
    reference_cache_dir: str | os.PathLike[str] | None = None,
    port: PortSandbox | None = None,
    on_stage: Callable[[str, float], None] | None = None,
) -> VerifyReport:
    """Run the original (gfortran) and ``generated`` (``.code``/``.entry``) on the same inputs.

    Never raises for a broken port or source: compile errors, crashes and timeouts come back as
    ``status='failed'`` with the first lines of the error in ``message``. Inputs that choose
    branches (:func:`kernels.engine.sizes.selectors`) are run with each of the candidate's
    selections, in one sandboxed process per side; every selection must match gfortran, and the
    loops they ran together count. When the outputs match but a loop never ran
    (``inconclusive``), the next size candidate of :func:`kernels.engine.sizes.candidates` is
    tried, within the same time budget.

    ``numba_cache_dir``: a directory of ONE tenant where numba keeps compiled ports between runs
    (:func:`numba_cache_layout`). Pass it only for the deterministic backend's output: cached
    machine code is loaded without recompiling, so what goes in must be trusted. Only the port's
    sandbox gets it, never the one that runs the tenant's Fortran. ``reference_cache_dir``: ONE
    tenant's :mod:`kernels.engine.reference_cache` of gfortran builds (no sandbox ever sees it).
    ``port``: a :class:`PortSandbox` started ahead with the same device and ``numba_cache_dir``;
    the first run uses it, and it is closed either way. ``on_stage(stage, ms)`` is called as each
    stage finishes.
    """
    deadline = time.monotonic() + timeout_s
    given = {k.lower(): v for k, v in (sizes or {}).items()}
    options = size_candidates(kernel, given, simulator=device == "simulator")
    tried: list[dict[str, int]] = []
    report: VerifyReport | None = None
    union: coverage.Coverage | None = None  # loops run by the runs whose outputs all matched
    for option in options:
        left = deadline - time.monotonic()
        if report is not None and left < 5.0:
            break
        if report is not None and union is not None:
            # A candidate that statically leaves the same loops unrun cannot do better.
            if set(union.not_run) <= set(option.never_reached) | set(option.empty_loops):
                continue
        report = _verify_once(
            kernel,
            generated,
            sizes={**option.values, **given},
            selections=option.selections,
            seed=seed,
            device=device,
            timeout_s=max(1.0, left),
            tolerances=tolerances,
            numba_cache_dir=numba_cache_dir,
            reference_cache_dir=reference_cache_dir,
            port=port,
            on_stage=on_stage,
        )
        port = None  # used (and closed) by the first run
        tried.extend(report.runs or [dict(report.sizes)])
        if report.status != "inconclusive":
            break
        if report.coverage is None:
            break
        union = report.coverage if union is None else union.merged(report.coverage)
        if union.complete:
            # Every run matched gfortran and together they ran every loop: verified.
            report.status = "verified"
            report.coverage = union
            report.message = report.message.split("; inconclusive:")[0] + (
                "; every loop ran across the runs at "
                + " and at ".join(", ".join(f"{k}={v}" for k, v in t.items()) for t in tried)
            )
            break
    assert report is not None
    if report.status == "inconclusive" and len(tried) > 1:
        report.message = (
            report.message.split("; inconclusive:")[0]
            + "; "
            + coverage.inconclusive_message(report.coverage, tried)
        )
    return report


def _verify_once(
    kernel: ir.Kernel,
    generated: Any,
    *,
    sizes: Mapping[str, int | float],
    selections: list[dict[str, int]] | None = None,
    seed: int,
    device: str,
    timeout_s: float,
    tolerances: Mapping[str, Tolerance] | None,
    numba_cache_dir: str | os.PathLike[str] | None,
    reference_cache_dir: str | os.PathLike[str] | None,
    port: PortSandbox | None,
    on_stage: Callable[[str, float], None] | None,
) -> VerifyReport:
    """One verification at one set of sizes (both sides, then the comparison).

    With several ``selections`` each side calls the kernel once per selection (one compile);
    each call's outputs are compared on their own, and the coverage is what they ran together.
    """
    deadline = time.monotonic() + timeout_s

    def timed(stage: str, ms: float) -> None:
        report.timings_ms[stage] = round(ms, 1)
        if on_stage is not None:
            on_stage(stage, ms)

    def remaining() -> float:
        return max(1.0, deadline - time.monotonic())

    try:
        plan = plan_run(kernel, sizes)
        check_run_bytes(plan)  # before anything starts: the harness allocates this much, twice
    except (PlanError, ir.NotConstant, ValueError) as exc:
        if port is not None:
            port.close()
        return VerifyReport("failed", device=device, message=str(exc))

    chosen = list(selections or []) if len(selections or []) > 1 else None
    # Flag arrays given one value are reported with the sizes: ``--size fields=1`` redoes it.
    fills = {
        a.name: plan.scalars[a.name] for a in plan.args if a.is_array and a.name in plan.scalars
    }
    report = VerifyReport("failed", sizes={**plan.sizes, **fills}, device=device)
    # The two sides share nothing but the plan and the seed (each draws the same inputs in its
    # own sandbox), so they run at the same time; stages are reported from this thread.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify") as pool:
        sides = {
            pool.submit(
                _reference_side, kernel, plan, seed, reference_cache_dir, remaining, chosen
            ): "reference",
            pool.submit(
                _port_side, generated, plan, seed, device, numba_cache_dir, remaining, port, chosen
            ): "port",
        }
        outcomes: dict[str, _SideOutcome] = {}
        for done in as_completed(sides):
            outcome = done.result()
            outcomes[sides[done]] = outcome
            for stage, ms in outcome.timings_ms.items():
                timed(stage, ms)
    ref_side, port_side = outcomes["reference"], outcomes["port"]
    # A selection the original itself cannot run (it crashed there) is left out, with the
    # reason; the first one (the sizes' own values) and a port failure are failures as before.
    compared = min(len(ref_side.runs), len(port_side.runs))
    if ref_side.failure and (chosen is None or not ref_side.runs):
        report.message = ref_side.failure
        return report
    if port_side.failure and len(port_side.runs) < len(ref_side.runs):
        report.message = port_side.failure
        return report
    report.numba_cache_hit = port_side.cache_hit
    report.reference_cache_hit = ref_side.cache_hit
    report.coverage = ref_side.coverage
    started = time.perf_counter()

    reductions = reduction_targets(kernel)
    overrides = {k.lower(): v for k, v in (tolerances or {}).items()}
    names = [a for a in plan.args if a.is_output]
    checks: list[tuple[str, ir.FType]] = [(a.name, a.type) for a in names]
    if plan.result_type is not None:
        checks.insert(0, (RESULT_KEY, plan.result_type))
    runs = [report.sizes | chosen[k] for k in range(compared)] if chosen else [report.sizes]
    failing_runs: list[str] = []
    worst: dict[str, ArgError] = {}
    for k in range(compared):
        ref, port = ref_side.runs[k], port_side.runs[k]
        failed_here = []
        for name, t in checks:
            label = kernel.name if name == RESULT_KEY else name
            tol = overrides.get(label) or default_tolerance(
                t, device=device, reduction=(label in reductions and not _is_array(plan, label))
            )
            if name not in port:
                err = ArgError(
                    label, math.inf, math.inf, math.inf, False, "missing from the port's outputs"
                )
            else:
                err = compare_arrays(label, ref[name], port[name], tol)
            if not err.passed:
                failed_here.append(label)
            previous = worst.get(label)
            if (
                previous is None
                or (previous.passed and not err.passed)
                or (previous.passed == err.passed and err.max_abs_err > previous.max_abs_err)
            ):
                worst[label] = err
        if failed_here and chosen:
            failing_runs.append(_values_text(chosen[k]))
    report.arguments = list(worst.values())
    report.runs = runs

    if report.arguments:
        report.max_abs_err = max(a.max_abs_err for a in report.arguments)
        report.max_rel_err = max(a.max_rel_err for a in report.arguments)
        report.max_ulp = max(a.max_ulp for a in report.arguments)
    else:
        report.max_abs_err = report.max_rel_err = report.max_ulp = 0.0
    timed("compare", _ms_since(started))
    failing = [a.name for a in report.arguments if not a.passed]
    if failing:
        report.status = "mismatch"
        report.message = "outputs differ from gfortran: " + ", ".join(
            f"{a.name} (max abs {a.max_abs_err:.3g}, rel {a.max_rel_err:.3g}, tolerance {a.tolerance})"
            for a in report.arguments
            if not a.passed
        )
        if failing_runs:
            report.message += " in the runs with " + "; with ".join(failing_runs)
        return report
    report.status = "verified"
    checked = len(report.arguments)
    report.message = (
        f"{checked} output{'s' if checked != 1 else ''} match gfortran"
        if checked
        else "the kernel has no outputs to compare"
    )
    if chosen:
        runs_text = f"in each of {compared} runs" if compared > 1 else "in the run"
        report.message += f" {runs_text} choosing branches with " + "; with ".join(
            _values_text(chosen[k]) for k in range(compared)
        )
        if compared < len(chosen):
            report.message += (
                f" (the original failed with {_values_text(chosen[compared])}, left out: "
                + ref_side.failure
                + ")"
            )
        if report.coverage is not None and report.coverage.complete:
            report.message += "; every loop ran across the runs"
    elif selections and selections[0]:
        report.message += " with " + _values_text(selections[0]) + ", chosen to take the branches"
    if report.coverage is None or not report.coverage.complete:
        report.status = "inconclusive"
        report.message += "; " + coverage.inconclusive_message(report.coverage, runs)
    return report


def _values_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


@dataclass
class _SideOutcome:
    """What one side of a verification produced: its outputs, or why it has none."""

    runs: list[dict[str, np.ndarray]] = field(default_factory=list)  # outputs, per call
    timings_ms: dict[str, float] = field(default_factory=dict)
    failure: str = ""
    cache_hit: bool = False  # the side's build came from the tenant's cache
    coverage: coverage.Coverage | None = None  # the reference side's loop counters


def _reference_side(
    kernel: ir.Kernel,
    plan: RunPlan,
    seed: int,
    cache_dir: str | os.PathLike[str] | None,
    remaining: Callable[[], float],
    selections: list[dict[str, int]] | None = None,
) -> _SideOutcome:
    """gfortran compile (or the tenant's cached build), then the original run on the seed's
    inputs, in its own sandbox (once per selection when given: the outputs of the calls that
    finished are kept)."""
    outcome = _SideOutcome()
    with sandbox_tempdir(prefix="verify-ref-") as workdir:
        harness.install(workdir)
        started = time.perf_counter()
        try:
            source, fixed = fortran_sources(kernel, plan)
            instrumented = coverage.instrument(kernel, source, fixed=fixed)
            build = build_fortran(
                kernel,
                plan,
                workdir,
                flags=GFORTRAN_REFERENCE_FLAGS,
                timeout_s=min(60.0, remaining()),
                instrumented=instrumented,
                cache_dir=cache_dir,
            )
        except PlanError as exc:
            outcome.failure = str(exc)
            return outcome
        lib = build.library
        if lib is None:
            assert build.compiled is not None
            outcome.failure = (
                "gfortran could not compile the original: " + build.compiled.describe_failure()
            )
            return outcome
        outcome.cache_hit = build.from_cache
        outcome.timings_ms["gfortran_compile"] = _ms_since(started)
        spec = harness_spec(
            plan,
            seed,
            task="run",
            mode="fortran",
            library=lib.name,
            symbol=WRAPPER_SYMBOL,
            output="fsp_ref.npz",
        )
        if selections:
            spec.update(selections=selections, coverage_file=coverage.COVERAGE_FILE)
        (workdir / "fsp_ref.json").write_text(json.dumps(spec))
        started = time.perf_counter()
        ref_run = run_sandboxed(
            harness_argv("fsp_ref.json"),
            cwd=workdir,
            timeout_s=remaining(),
            memory_mb=FORTRAN_RUN_MEMORY_MB,
        )
        outcome.runs = _finished_runs(workdir, "fsp_ref.npz", selections, ref_run.ok)
        if not ref_run.ok:
            at = dict(plan.sizes)
            if selections and len(outcome.runs) < len(selections):
                at |= selections[len(outcome.runs)]
            outcome.failure = coverage.out_of_bounds_message(
                ref_run.stderr, instrumented, at
            ) or "the original Fortran failed to run: " + ref_run.describe_failure(
                max_lines=12, tail=True
            )
            if not outcome.runs:
                return outcome
        outcome.timings_ms["reference_run"] = _ms_since(started)
        counts = workdir / coverage.COVERAGE_FILE
        if selections:  # counted since the first call: the last finished call's file has all
            counts = workdir / harness.selection_path(coverage.COVERAGE_FILE, len(outcome.runs) - 1)
        outcome.coverage = coverage.summarize(
            instrumented, coverage.read_counts(counts) or [0] * instrumented.counters
        )
    return outcome


def _finished_runs(
    workdir: Path, output: str, selections: list[dict[str, int]] | None, ok: bool
) -> list[dict[str, np.ndarray]]:
    """The outputs of the calls that finished, in order (one without selections, when ok)."""
    if not selections:
        return [_load_outputs(workdir / output)] if ok else []
    runs = []
    for k in range(len(selections)):
        path = workdir / harness.selection_path(output, k)
        if not path.exists():
            break
        runs.append(_load_outputs(path))
    return runs


def _port_side(
    generated: Any,
    plan: RunPlan,
    seed: int,
    device: str,
    numba_cache_dir: str | os.PathLike[str] | None,
    remaining: Callable[[], float],
    port: PortSandbox | None,
    selections: list[dict[str, int]] | None = None,
) -> _SideOutcome:
    """The port compiled (or loaded from the tenant's numba cache) and run, in its own sandbox
    (once per selection when given).

    ``port``: a sandbox started ahead for this port (same device and cache directory), or None
    to start one now. Only this sandbox sees ``numba_cache_dir``; the one running the tenant's
    Fortran never does.
    """
    outcome = _SideOutcome()
    if port is None:
        port = PortSandbox.start(
            device=device, numba_cache_dir=numba_cache_dir, timeout_s=remaining()
        )
    with contextlib.closing(port):
        spec = harness_spec(
            plan,
            seed,
            task="run",
            mode="python",
            entry=generated.entry,
            output="fsp_port.npz",
        )
        if selections:
            spec["selections"] = selections
        ran = port.run(spec, generated.code, timeout_s=remaining())
        outcome.runs = _finished_runs(port.workdir, "fsp_port.npz", selections, ran.result.ok)
        if not ran.result.ok:
            outcome.failure = "the generated code failed: " + ran.result.describe_failure(
                max_lines=12, tail=True
            )
            return outcome
        outcome.timings_ms.update(_port_timings(ran))
        outcome.cache_hit = _child_number(ran.result, "cache_hits") > 0
    return outcome


def _port_timings(ran: _PortRun) -> dict[str, float]:
    """``port_start``, ``numba_compile`` and ``port_run`` of one port run (milliseconds).

    The harness reports when its warm-up ended (``ready_at``: ``time.monotonic()``, one clock
    for every process of the machine: the sandbox makes no time namespace). ``port_start`` is
    the time from the request claiming the sandbox (starting it, or taking a spare) to that
    point: interpreter, numpy, numba and its warm-up, overlapping the translator's stages; 0 for
    a spare that was warm before the request came. ``port_run`` is what came after
    both the go and the warm-up, less the compile: loading the module, drawing the inputs, the
    call, saving the outputs and the exit.
    """
    ready_at = min(max(_child_number(ran.result, "ready_at"), ran.claimed_at), ran.ended_at)
    compile_ms = _child_number(ran.result, "compile_s") * 1000.0
    after = (ran.ended_at - max(ran.go_at, ready_at)) * 1000.0
    return {
        "port_start": (ready_at - ran.claimed_at) * 1000.0,
        "numba_compile": compile_ms,
        "port_run": max(0.0, after - compile_ms),
    }


def _load_outputs(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _is_array(plan: RunPlan, name: str) -> bool:
    return any(a.name == name and a.is_array for a in plan.args)


def _child_number(result: SandboxResult, key: str) -> float:
    """A number the side runner printed in its last JSON line (0 when absent)."""
    for line in reversed(result.stdout.strip().splitlines()):
        try:
            return float(json.loads(line)[key])
        except (ValueError, KeyError, TypeError):
            continue
    return 0.0


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
