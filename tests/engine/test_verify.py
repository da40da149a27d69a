"""verify_against_gfortran: both sides run on the same inputs and every output is compared.

These tests build the IR kernels by hand (no frontend needed) and use hand-written ports, so they
check the harness itself: the bind(C) wrapper, the sandboxed runs, the comparison and its rules.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from kernels.engine import ir
from kernels.engine.frontend.parse import is_fixed_form
from kernels.engine.verify import (
    DIM_DEFAULTS,
    PORT_SPEC,
    PortSandbox,
    Tolerance,
    compare_arrays,
    default_tolerance,
    fortran_sources,
    fortran_wrapper,
    harness_spec,
    infer_sizes,
    make_inputs,
    plan_run,
    verify_against_gfortran,
)

pytestmark = pytest.mark.skipif(
    __import__("shutil").which("gfortran") is None, reason="gfortran is not installed"
)

ONE = ir.Const(1, ir.INTEGER)
ZERO = ir.Const(0, ir.INTEGER)
N = ir.Var("n")


@dataclass
class Port:
    """Stands in for backends.common.GeneratedCode (verify only reads .code and .entry)."""

    code: str
    entry: str


def arr(name: str, t: ir.FType, intent: str, *dims: tuple[ir.Expr, ir.Expr | None]) -> ir.Arg:
    return ir.Arg(name, t, intent, [ir.Dim(lo, hi) for lo, hi in dims])


def kernel(name: str, args: list[ir.Arg], source: str, **kw) -> ir.Kernel:
    kw.setdefault("locals", {})
    return ir.Kernel(name=name, args=args, body=[], fortran_source=source, fortran_entry=name, **kw)


# A halo'd 1-D smoother: writes the interior of b only, so b's halo must come back untouched.
SMOOTH_SRC = """
subroutine smooth(n, w, a, b, total)
  implicit none
  integer, intent(in) :: n
  real(8), intent(in) :: w
  real(8), intent(in) :: a(0:n+1)
  real(8), intent(out) :: b(0:n+1)
  real(8), intent(out) :: total
  integer :: i
  total = 0.0d0
  do i = 1, n
    b(i) = w * (a(i-1) + a(i+1)) + (1.0d0 - 2.0d0 * w) * a(i)
    total = total + b(i)
  end do
end subroutine smooth
"""
NP1 = ir.BinOp("+", N, ONE)
SMOOTH = kernel(
    "smooth",
    [
        ir.Arg("n", ir.INTEGER, "in"),
        ir.Arg("w", ir.REAL8, "in"),
        arr("a", ir.REAL8, "in", (ZERO, NP1)),
        arr("b", ir.REAL8, "out", (ZERO, NP1)),
        ir.Arg("total", ir.REAL8, "out"),
    ],
    SMOOTH_SRC,
)
SMOOTH_PORT = """
from numba import njit

@njit
def smooth(n, w, a, b, total):
    total = 0.0
    for i in range(1, n + 1):
        b[i] = w * (a[i - 1] + a[i + 1]) + (1.0 - 2.0 * w) * a[i]
        total = total + b[i]
    return total
"""


def test_faithful_port_is_verified_with_zero_error() -> None:
    report = verify_against_gfortran(SMOOTH, Port(SMOOTH_PORT, "smooth"), sizes={"n": 37})
    assert report.status == "verified", report.message
    assert report.sizes == {"n": 37}
    assert [a.name for a in report.arguments] == ["b", "total"]
    assert report.max_abs_err == 0.0 and report.max_rel_err == 0.0 and report.max_ulp == 0.0
    assert all(a.passed and a.tolerance for a in report.arguments)


def test_halo_left_untouched_by_the_port_still_compares_equal() -> None:
    # b is INTENT(OUT): both sides get the same garbage, so b(0) and b(n+1) must match.
    report = verify_against_gfortran(SMOOTH, Port(SMOOTH_PORT, "smooth"), sizes={"n": 5})
    assert report.status == "verified", report.message


def test_port_with_a_small_error_is_a_mismatch_naming_the_argument() -> None:
    wrong = SMOOTH_PORT.replace("(1.0 - 2.0 * w)", "(1.0 - 2.0 * w + 1e-9)")
    report = verify_against_gfortran(SMOOTH, Port(wrong, "smooth"), sizes={"n": 9})
    assert report.status == "mismatch"
    failing = [a.name for a in report.arguments if not a.passed]
    assert failing == ["b", "total"]
    assert 1e-10 < report.max_rel_err < 1e-7
    assert "b" in report.message


def test_port_writing_a_halo_it_should_not_is_a_mismatch() -> None:
    wrong = SMOOTH_PORT.replace("    return total", "    b[0] = 0.0\n    return total")
    report = verify_against_gfortran(SMOOTH, Port(wrong, "smooth"))
    assert report.status == "mismatch"
    assert [a.name for a in report.arguments if not a.passed] == ["b"]


def test_crashing_port_fails_with_its_error_message() -> None:
    code = "def smooth(*args):\n    raise RuntimeError('boom in port')\n"
    report = verify_against_gfortran(SMOOTH, Port(code, "smooth"))
    assert report.status == "failed"
    assert "boom in port" in report.message


def test_port_returning_the_wrong_number_of_scalars_fails() -> None:
    code = "def smooth(n, w, a, b, total):\n    return 1.0, 2.0\n"
    report = verify_against_gfortran(SMOOTH, Port(code, "smooth"))
    assert report.status == "failed"
    assert "expected 1" in report.message or "returned" in report.message


def test_port_that_never_finishes_times_out_as_failed() -> None:
    code = "import time\ndef smooth(*args):\n    time.sleep(120)\n"
    report = verify_against_gfortran(SMOOTH, Port(code, "smooth"), timeout_s=6)
    assert report.status == "failed"
    assert "timed out" in report.message


def test_original_that_does_not_compile_fails_with_gfortran_error() -> None:
    broken = kernel("smooth", SMOOTH.args, SMOOTH_SRC.replace("total = 0.0d0", "total = = 0"))
    report = verify_against_gfortran(broken, Port(SMOOTH_PORT, "smooth"))
    assert report.status == "failed"
    assert "gfortran" in report.message and "Error" in report.message


def test_port_runs_in_a_subprocess_with_a_scrubbed_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-do-not-leak")
    code = SMOOTH_PORT + (
        "\nimport os\nif 'MISTRAL_API_KEY' in os.environ:\n    raise SystemExit('secret visible')\n"
    )
    report = verify_against_gfortran(SMOOTH, Port(code, "smooth"))
    assert report.status == "verified", report.message
    assert "fsp_generated" not in sys.modules


# --------------------------------------------------------------------------------------------
# Types across the C boundary: logicals, integers, real(4), function results, modules


LOGIC_SRC = """
subroutine flip(n, mask, x, count, s)
  implicit none
  integer, intent(in) :: n
  logical, intent(inout) :: mask(n)
  real(4), intent(inout) :: x(n)
  integer, intent(out) :: count
  real(4), intent(out) :: s
  integer :: i
  count = 0
  s = 0.0
  do i = 1, n
    if (mask(i)) then
      count = count + 1
      x(i) = (x(i) + 1000.0) - 1000.0
    end if
    mask(i) = .not. mask(i)
    s = s + x(i)
  end do
end subroutine flip
"""
LOGIC = kernel(
    "flip",
    [
        ir.Arg("n", ir.INTEGER, "in"),
        arr("mask", ir.LOGICAL, "inout", (ONE, N)),
        arr("x", ir.REAL4, "inout", (ONE, N)),
        ir.Arg("count", ir.INTEGER, "out"),
        ir.Arg("s", ir.REAL4, "out"),
    ],
    LOGIC_SRC,
)
LOGIC_PORT = """
import numpy as np

def flip(n, mask, x, count, s):
    count = 0
    s = np.float32(0.0)
    for i in range(n):
        if mask[i]:
            count += 1
            x[i] = (x[i] + np.float32(1000.0)) - np.float32(1000.0)
        mask[i] = not mask[i]
        s = np.float32(s + x[i])
    return count, s
"""


def test_logicals_integers_and_real4_round_trip_exactly() -> None:
    report = verify_against_gfortran(LOGIC, Port(LOGIC_PORT, "flip"), sizes={"n": 29}, seed=3)
    assert report.status == "verified", report.message
    by_name = {a.name: a for a in report.arguments}
    assert set(by_name) == {"mask", "x", "count", "s"}
    assert by_name["mask"].tolerance == "exact" and by_name["count"].tolerance == "exact"
    assert "ulp<=4" in by_name["x"].tolerance


def test_real4_port_promoted_to_double_is_caught() -> None:
    # (x + 1000) - 1000 loses ~10 bits in float32 but is exact in float64.
    promoted = LOGIC_PORT.replace(
        "(x[i] + np.float32(1000.0)) - np.float32(1000.0)", "(float(x[i]) + 1000.0) - 1000.0"
    )
    report = verify_against_gfortran(LOGIC, Port(promoted, "flip"), sizes={"n": 29}, seed=3)
    assert report.status == "mismatch"
    assert not {a.name: a for a in report.arguments}["x"].passed


FUNC_SRC = """
function mean_of(n, x) result(m)
  implicit none
  integer, intent(in) :: n
  real(8), intent(in) :: x(n)
  real(8) :: m
  m = sum(x) / n
end function mean_of
"""


def test_function_result_is_compared() -> None:
    k = kernel(
        "mean_of",
        [ir.Arg("n", ir.INTEGER, "in"), arr("x", ir.REAL8, "in", (ONE, N))],
        FUNC_SRC,
        origin="function",
        locals={"m": ir.Decl("m", ir.REAL8)},
    )
    good = "def mean_of(n, x):\n    return x.sum() / n\n"
    report = verify_against_gfortran(k, Port(good, "mean_of"))
    assert report.status == "verified", report.message
    assert [a.name for a in report.arguments] == ["mean_of"]
    bad = verify_against_gfortran(
        k, Port("def mean_of(n, x):\n    return x.sum() / (n + 1)\n", "mean_of")
    )
    assert bad.status == "mismatch"


MODULE_SRC = """
module scaling
  implicit none
  real(8), parameter :: factor = 2.5d0
contains
  subroutine scale_all(a, b)
    real(8), intent(in) :: a(:, :)
    real(8), intent(out) :: b(:, :)
    b = factor * a
  end subroutine scale_all
end module scaling
"""


def test_module_procedure_with_assumed_shape_arguments_is_called_through_the_module() -> None:
    k = kernel(
        "scale_all",
        [
            arr("a", ir.REAL8, "in", (ONE, None), (ONE, None)),
            arr("b", ir.REAL8, "out", (ONE, None), (ONE, None)),
        ],
        MODULE_SRC,
        fortran_module="scaling",
    )
    port = "def scale_all(a, b):\n    b[:, :] = 2.5 * a\n"
    report = verify_against_gfortran(k, Port(port, "scale_all"), sizes={"dim1": 7, "dim2": 5})
    assert report.status == "verified", report.message
    assert report.sizes == {"dim1": 7, "dim2": 5}


def test_external_procedure_with_assumed_shape_is_wrapped_in_a_module() -> None:
    src = "subroutine twice(a)\n  real(8), intent(inout) :: a(:)\n  a = 2.0d0 * a\nend subroutine twice\n"
    k = kernel("twice", [arr("a", ir.REAL8, "inout", (ONE, None))], src)
    report = verify_against_gfortran(k, Port("def twice(a):\n    a *= 2.0\n", "twice"))
    assert report.status == "verified", report.message
    assert report.sizes == {"dim1": DIM_DEFAULTS[0]}


FIXED_SRC = """C     fixed-form original with implicit typing
      SUBROUTINE AXPY(N, ALPHA, X, Y)
      IMPLICIT DOUBLE PRECISION (A-H,O-Z)
      DIMENSION X(N), Y(N)
      DO 10 I = 1, N
         Y(I) = Y(I) + ALPHA*X(I)
   10 CONTINUE
      END
"""


def test_fixed_form_original_compiles_and_verifies() -> None:
    k = kernel(
        "axpy",
        [
            ir.Arg("n", ir.INTEGER, "in"),
            ir.Arg("alpha", ir.REAL8, "in"),
            arr("x", ir.REAL8, "in", (ONE, N)),
            arr("y", ir.REAL8, "inout", (ONE, N)),
        ],
        FIXED_SRC,
        file="legacy/axpy.f",  # the file's name decides the form, as for gfortran
    )
    port = "def axpy(n, alpha, x, y):\n    for i in range(n):\n        y[i] = y[i] + alpha * x[i]\n"
    report = verify_against_gfortran(k, Port(port, "axpy"))
    assert report.status == "verified", report.message


# Free form that a content heuristic took for fixed form (no statement before column 7).
INDENTED_FREE_SRC = """      subroutine shift(n, a)
        integer, intent(in) :: n
        real(8), intent(inout) :: a(n)
        integer :: i
        do i = 1, n
          a(i) = a(i) + &
                 1.0d0
        end do
      end subroutine shift
"""


@pytest.mark.parametrize(
    ("name", "fixed"),
    [("k.f", True), ("K.F", True), ("k.for", True), ("k.fpp", True), ("k.f90", False),
     ("k.F90", False), ("k.f08", False), ("", False)],
)  # fmt: skip
def test_the_compiled_form_is_the_files_form_by_its_suffix_whatever_the_text(name, fixed) -> None:
    k = kernel("shift", [ir.Arg("n", ir.INTEGER, "in")], INDENTED_FREE_SRC, file=name)
    plan = plan_run(k, {"n": 3})
    assert fortran_sources(k, plan)[1] is fixed
    assert is_fixed_form(name) is fixed  # the one rule the parser uses too


# --------------------------------------------------------------------------------------------
# Planning and inputs


def test_default_sizes_are_distinct_small_and_not_multiples_of_eight() -> None:
    m, l_ = ir.Var("m"), ir.Var("l")
    k = kernel(
        "k",
        [
            ir.Arg("n", ir.INTEGER, "in"),
            ir.Arg("m", ir.INTEGER, "in"),
            ir.Arg("l", ir.INTEGER, "in"),
            ir.Arg("nstep", ir.INTEGER, "in"),
            arr("a", ir.REAL8, "inout", (ONE, N), (ONE, m), (ONE, l_)),
        ],
        "",
    )
    sizes = infer_sizes(k)
    dims = [sizes["n"], sizes["m"], sizes["l"]]
    assert len(set(dims)) == 3
    assert all(d % 8 and 4 < d < 40 for d in dims)
    assert sizes["nstep"] == 3
    assert infer_sizes(k, {"N": 21, "nstep": 2})["n"] == 21


def test_inputs_are_reproducible_from_the_seed_and_in_the_safe_range() -> None:
    plan = plan_run(SMOOTH, {"n": 11})
    first, again, other = make_inputs(plan, 7), make_inputs(plan, 7), make_inputs(plan, 8)
    assert np.array_equal(first["a"], again["a"]) and first["w"] == again["w"]
    assert not np.array_equal(first["a"], other["a"])
    assert first["a"].shape == (13,) and first["a"].flags.f_contiguous
    assert 0.5 <= first["a"].min() and first["a"].max() <= 1.5
    assert first["n"] == 11 and first["n"].dtype == np.int32


def test_bounds_that_cannot_be_evaluated_fail_cleanly() -> None:
    k = kernel("k", [arr("a", ir.REAL8, "inout", (ONE, ir.Var("unknown")))], "")
    report = verify_against_gfortran(k, Port("", "k"))
    assert report.status == "failed"
    assert "unknown" in report.message


def test_wrapper_declares_numeric_bounds_and_converts_logicals() -> None:
    text = fortran_wrapper(LOGIC, plan_run(LOGIC, {"n": 5}))
    assert 'bind(C, name="fsp_entry")' in text
    assert "integer(c_int32_t), intent(inout) :: mask(1:5)" in text
    assert "fsp_l_mask = mask /= 0" in text
    assert "call flip(n, fsp_l_mask, x, count, s)" in text


# --------------------------------------------------------------------------------------------
# Comparison rules


def test_ulp_distance_is_measured_in_the_arguments_own_precision() -> None:
    ref = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    got = ref.copy()
    got[1] = np.nextafter(np.nextafter(got[1], np.float32(0)), np.float32(0))
    err = compare_arrays("x", ref, got, default_tolerance(ir.REAL4))
    assert err.max_ulp == 2.0 and err.passed


def test_fp32_beyond_four_ulp_fails() -> None:
    ref = np.array([1.0], dtype=np.float32)
    got = ref.copy()
    for _ in range(5):
        got = np.nextafter(got, np.float32(2))
    err = compare_arrays("x", ref, got, default_tolerance(ir.REAL4))
    assert err.max_ulp == 5.0 and not err.passed


def test_fp64_relative_tolerance_is_1e12() -> None:
    ref = np.array([1.0, 2.0])
    assert compare_arrays("x", ref, ref * (1 + 5e-13), default_tolerance(ir.REAL8)).passed
    assert not compare_arrays("x", ref, ref * (1 + 5e-12), default_tolerance(ir.REAL8)).passed


def test_tiny_absolute_difference_near_zero_passes() -> None:
    ref = np.array([0.0, 1.0])
    got = np.array([1e-15, 1.0])
    err = compare_arrays("x", ref, got, default_tolerance(ir.REAL8))
    assert err.passed and err.max_rel_err == 1.0


def test_nan_matches_only_nan() -> None:
    ref = np.array([np.nan, 1.0])
    assert compare_arrays("x", ref, ref.copy(), default_tolerance(ir.REAL8)).passed
    err = compare_arrays("x", ref, np.array([0.0, 1.0]), default_tolerance(ir.REAL8))
    assert not err.passed and math.isinf(err.max_abs_err)


def test_integers_must_match_exactly() -> None:
    err = compare_arrays(
        "k", np.array([1, 2, 3]), np.array([1, 2, 4]), default_tolerance(ir.INTEGER)
    )
    assert not err.passed and err.max_abs_err == 1


def test_gpu_devices_get_the_looser_fp64_rule() -> None:
    tol = default_tolerance(ir.REAL8, device="simulator")
    assert tol.rtol == 1e-10
    ref = np.array([1.0])
    assert compare_arrays("x", ref, ref * (1 + 5e-11), tol).passed


def test_tolerance_override_is_applied_and_reported() -> None:
    wrong = SMOOTH_PORT.replace("total = total + b[i]", "total = total + b[i] * (1 + 1e-9)")
    loose = Tolerance(rtol=1e-6, label="rel<=1e-6 (test override)")
    report = verify_against_gfortran(
        SMOOTH, Port(wrong, "smooth"), sizes={"n": 9}, tolerances={"total": loose}
    )
    assert report.status == "verified", report.message
    assert {a.name: a.tolerance for a in report.arguments}["total"] == "rel<=1e-6 (test override)"


def test_simulator_device_runs_a_cuda_port_under_the_cuda_simulator() -> None:
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    src = (
        "subroutine twice(n, a, b)\n  integer, intent(in) :: n\n"
        "  real(8), intent(in) :: a(n)\n  real(8), intent(out) :: b(n)\n"
        "  b = 2.0d0 * a\nend subroutine twice\n"
    )
    k = kernel(
        "twice",
        [
            ir.Arg("n", ir.INTEGER, "in"),
            arr("a", ir.REAL8, "in", (ONE, N)),
            arr("b", ir.REAL8, "out", (ONE, N)),
        ],
        src,
    )
    port = (
        "import os\n"
        "from numba import cuda\n"
        "assert os.environ.get('NUMBA_ENABLE_CUDASIM') == '1'\n"
        "@cuda.jit\n"
        "def _twice(n, a, b):\n"
        "    i = cuda.grid(1)\n"
        "    if i < n:\n"
        "        b[i] = 2.0 * a[i]\n"
        "def twice(n, a, b):\n"
        "    _twice[1, 32](n, a, b)\n"
    )
    report = verify_against_gfortran(k, Port(port, "twice"), device="simulator")
    assert report.status == "verified", report.message
    assert report.device == "simulator"
    assert {a.name: a.tolerance for a in report.arguments}["b"] == "rel<=1e-10 or abs<=1e-10"


@pytest.mark.parametrize(
    ("fixture", "kernel", "mutation"),
    [
        # new%hx and new%hy reach the original apart: swapping them is seen.
        ("derived_type_field.f90", "diffuse", ("/ new_hx ** 2", "/ new_hy ** 2")),
        # the wrapper sets the module array coef before the call ...
        ("module_variables.f90", "diffuse_step", ("coef[0] *", "coef[1] *")),
        # ... and reads the module counter back after it.
        ("module_variables.f90", "diffuse_step", ("steps_done + 1", "steps_done + 2")),
    ],
)
def test_a_port_that_misuses_a_component_or_a_module_variable_is_a_mismatch(
    fixture: str, kernel: str, mutation: tuple[str, str]
) -> None:
    from pathlib import Path

    from kernels.engine import find_kernels, translate_source

    path = Path(__file__).resolve().parents[1] / "fixtures" / "fortran" / fixture
    source = path.read_text()
    (port,) = [
        k
        for k in translate_source(source, filename=fixture, verify=False).kernels
        if k.name == kernel
    ]
    (k,) = [x for x in find_kernels(source, filename=fixture) if x.name == kernel]
    old, new = mutation
    assert old in port.code

    class Mutated:
        code = port.code.replace(old, new, 1)
        entry = port.entry

    report = verify_against_gfortran(k, Mutated())
    assert report.status == "mismatch", report.message


# --------------------------------------------------------------------------------------------
# The port's sandbox started ahead (PortSandbox)


def test_a_port_sandbox_started_ahead_runs_exactly_the_port_it_is_given() -> None:
    good = PortSandbox.start(device="cpu", numba_cache_dir=None, timeout_s=60)
    report = verify_against_gfortran(SMOOTH, Port(SMOOTH_PORT, "smooth"), sizes={"n": 9}, port=good)
    assert report.status == "verified", report.message
    assert report.timings_ms["port_start"] > 0
    assert not good.workdir.exists()

    wrong = SMOOTH_PORT.replace("(1.0 - 2.0 * w)", "(1.0 - 2.0 * w + 1e-9)")
    ahead = PortSandbox.start(device="cpu", numba_cache_dir=None, timeout_s=60)
    report = verify_against_gfortran(SMOOTH, Port(wrong, "smooth"), sizes={"n": 9}, port=ahead)
    assert report.status == "mismatch"


def test_a_port_sandbox_that_is_not_needed_ends_without_running_anything() -> None:
    ahead = PortSandbox.start(device="cpu", numba_cache_dir=None, timeout_s=60)
    workdir = ahead.workdir
    # A spec is there, but without the go the harness must not run it.
    (workdir / PORT_SPEC).write_text(
        json.dumps(harness_spec(plan_run(SMOOTH, {"n": 3}), 0, task="run", mode="python"))
    )
    result = ahead.process.finish(b"")  # EOF instead of the go
    assert result.returncode == 0, result.stderr
    assert "elapsed_s" not in result.stdout
    ahead.close()
    assert not workdir.exists()


def test_closing_an_unused_port_sandbox_kills_it_and_removes_its_files() -> None:
    ahead = PortSandbox.start(device="cpu", numba_cache_dir=None, timeout_s=60)
    ahead.close()
    assert not ahead.workdir.exists()
    assert ahead.process.finish().returncode == -signal.SIGKILL


# Branches chosen by an integer argument: every selection is one call, checked on its own.
MODES_SRC = """
subroutine modes(n, mode, a, b)
  implicit none
  integer, intent(in) :: n, mode
  real(8), intent(in) :: a(n)
  real(8), intent(out) :: b(n)
  integer :: i
  if (mode == 1) then
    do i = 1, n
      b(i) = 2.0d0 * a(i)
    end do
  else if (mode == 2) then
    do i = 1, n
      b(i) = 3.0d0 * a(i)
    end do
  end if
  if (mode == 1 .and. mode == 2) then
    do i = 1, n
      b(i) = 0.0d0
    end do
  end if
end subroutine modes
"""
MODES_PORT = """
def modes(n, mode, a, b):
    if mode == 1:
        for i in range(n):
            b[i] = 2.0 * a[i]
    elif mode == 2:
        for i in range(n):
            b[i] = 3.0 * a[i]
"""


def _modes_kernel(source: str = MODES_SRC):
    from kernels.engine.frontend import parse_file

    (k,) = parse_file(source, filename="modes.f90").kernels
    return k


def test_every_branch_selection_runs_and_a_loop_none_reaches_is_named():
    report = verify_against_gfortran(_modes_kernel(), Port(MODES_PORT, "modes"))
    assert report.status == "inconclusive", report.message
    assert [r["mode"] for r in report.runs] == [1, 2]
    assert report.coverage.ran == [9, 13] and report.coverage.not_run == [18]
    assert "in each of 2 runs choosing branches with mode=1; with mode=2" in report.message
    assert "loop at line 18 never ran" in report.message
    assert "mode=1" in report.message.split("never ran")[1]


def test_a_port_wrong_in_one_selection_only_is_a_mismatch_naming_it():
    wrong = MODES_PORT.replace("b[i] = 3.0 * a[i]", "b[i] = 3.0 * a[i] + 1e-6")
    report = verify_against_gfortran(_modes_kernel(), Port(wrong, "modes"))
    assert report.status == "mismatch"
    assert [a.name for a in report.arguments if not a.passed] == ["b"]
    assert report.message.endswith("in the runs with mode=2")


def test_a_selection_the_original_cannot_run_is_left_out_with_the_reason():
    crashing = MODES_SRC.replace("b(i) = 3.0d0 * a(i)", "b(i) = 3.0d0 * a(i + n)")
    port = MODES_PORT.replace("b[i] = 3.0 * a[i]", "b[i] = 3.0 * a[i + n]")
    report = verify_against_gfortran(_modes_kernel(crashing), Port(port, "modes"))
    # The static check sees a(i + n) leave its bounds: mode=2 is not even tried.
    assert [r["mode"] for r in report.runs] == [1]
    hidden = MODES_SRC.replace("b(i) = 3.0d0 * a(i)", "b(i) = 3.0d0 * a(i * i)")
    port = MODES_PORT.replace("b[i] = 3.0 * a[i]", "b[i] = 3.0 * a[(i + 1) * (i + 1) - 1]")
    report = verify_against_gfortran(_modes_kernel(hidden), Port(port, "modes"))
    assert report.status == "inconclusive", report.message
    assert [r["mode"] for r in report.runs] == [1]
    assert (
        "in the run choosing branches with mode=1 (the original failed with mode=2, left out"
        in (report.message)
    )
    assert "out-of-bounds access in the original Fortran at line 14" in report.message
    assert 13 in report.coverage.not_run
