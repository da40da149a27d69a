"""Intrinsics and operators whose meaning differs between Fortran and Python.

Each expected value below was produced by gfortran 12 (the program is in the module docstring of
``_GFORTRAN_PROGRAM``); one test also recompiles a tiny program to check SIGN with -0.0 live.
The generated numba code is run directly (no verification harness), so a failure here points
at the printer in ``backends/common.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import types

import numpy as np
import pytest

from kernels.engine.backends.cpu import generate_cpu
from kernels.engine.frontend import parse_file


def _compile(source: str, name: str | None = None):
    kernels = parse_file(source, filename="t.f90").kernels
    kernel = kernels[0] if name is None else next(k for k in kernels if k.name == name)
    generated = generate_cpu(kernel)
    module = types.ModuleType("generated")
    exec(compile(generated.code, "generated", "exec"), module.__dict__)
    return getattr(module, generated.entry), generated


INT_OPS = """
subroutine int_ops(n, ia, ib, q, r, md, sg, pw)
  integer, intent(in) :: n, ia(n), ib(n)
  integer, intent(out) :: q(n), r(n), md(n), sg(n), pw(n)
  integer :: k
  do k = 1, n
    q(k) = ia(k) / ib(k)
    r(k) = mod(ia(k), ib(k))
    md(k) = modulo(ia(k), ib(k))
    sg(k) = sign(ia(k), ib(k))
    pw(k) = ib(k) ** ia(k)
  end do
end subroutine
"""

REAL_OPS = """
subroutine real_ops(n, x, y, rmod, rmodulo, rsign, ni, it, fl, ce)
  integer, intent(in) :: n
  real(8), intent(in) :: x(n), y(n)
  real(8), intent(out) :: rmod(n), rmodulo(n), rsign(n)
  integer, intent(out) :: ni(n), it(n), fl(n), ce(n)
  integer :: k
  do k = 1, n
    rmod(k) = mod(x(k), y(k))
    rmodulo(k) = modulo(x(k), y(k))
    rsign(k) = sign(x(k), y(k))
    ni(k) = nint(x(k))
    it(k) = int(x(k))
    fl(k) = floor(x(k))
    ce(k) = ceiling(x(k))
  end do
end subroutine
"""


@pytest.fixture(scope="module")
def int_ops():
    fn, _ = _compile(INT_OPS)
    ia = np.array([7, -7, 7, -7, 0, 5], dtype=np.int32)
    ib = np.array([2, 2, -2, -2, 3, -3], dtype=np.int32)
    outs = [np.zeros(6, dtype=np.int32) for _ in range(5)]
    fn(6, ia, ib, *outs)
    return dict(zip(["q", "r", "md", "sg", "pw"], outs, strict=True))


@pytest.fixture(scope="module")
def real_ops():
    fn, _ = _compile(REAL_OPS)
    return fn


def test_integer_division_truncates_toward_zero(int_ops):
    assert int_ops["q"].tolist() == [3, -3, -3, 3, 0, -1]


def test_mod_takes_the_sign_of_the_dividend(int_ops):
    assert int_ops["r"].tolist() == [1, -1, 1, -1, 0, 2]


def test_modulo_takes_the_sign_of_the_divisor(int_ops):
    assert int_ops["md"].tolist() == [1, 1, -1, -1, 0, -1]


def test_integer_sign_uses_the_sign_of_the_second_argument(int_ops):
    assert int_ops["sg"].tolist() == [7, 7, -7, -7, 0, -5]


def test_integer_power_with_integer_exponent(int_ops):
    # ib ** ia with gfortran: 2**7, 2**(-7) = 0, (-2)**7, (-2)**(-7) = 0, 3**0, (-3)**5
    assert int_ops["pw"].tolist() == [128, 0, -128, 0, 1, -243]


def test_integer_power_negative_exponent_of_one_and_minus_one():
    fn, _ = _compile(
        """
subroutine p(a, b, c)
  integer, intent(out) :: a, b, c
  a = 2**(-1)
  b = (-1)**(-3)
  c = 1**(-2)
end subroutine
"""
    )
    assert fn(0, 0, 0) == (0, -1, 1)


def test_sign_with_zero_second_argument_gives_the_absolute_value():
    fn, _ = _compile(
        """
subroutine s(a, b, x)
  integer, intent(out) :: a, b
  real(8), intent(out) :: x
  a = sign(5, 0)
  b = sign(-5, 0)
  x = sign(-3.0d0, 0.0d0)
end subroutine
"""
    )
    assert fn(0, 0, 0.0) == (5, 5, 3.0)


def test_real_sign_with_negative_zero_matches_gfortran(real_ops):
    # gfortran implements SIGN with copysign: SIGN(3, -0.0) = -3.
    x = np.array([3.0, 3.0, -3.0, -3.0])
    y = np.array([0.0, -0.0, 0.0, -1.0])
    outs = _real_outputs(real_ops, x, y)
    assert outs["rsign"].tolist() == [3.0, -3.0, 3.0, -3.0]


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_real_sign_with_negative_zero_agrees_with_a_live_gfortran_run(tmp_path, real_ops):
    prog = tmp_path / "s.f90"
    prog.write_text(
        "program s\n  real(8) :: z\n  z = -0.0d0\n"
        "  print '(2f6.1)', sign(3.0d0, z), sign(-3.0d0, 0.0d0)\nend program\n"
    )
    subprocess.run(["gfortran", str(prog), "-o", str(tmp_path / "s")], check=True, timeout=60)
    out = subprocess.run([str(tmp_path / "s")], capture_output=True, text=True, timeout=10)
    expected = [float(v) for v in out.stdout.split()]
    got = _real_outputs(real_ops, np.array([3.0, -3.0]), np.array([-0.0, 0.0]))["rsign"]
    assert got.tolist() == expected


def _real_outputs(fn, x, y):
    n = len(x)
    names = ["rmod", "rmodulo", "rsign", "ni", "it", "fl", "ce"]
    outs = [np.zeros(n) for _ in range(3)] + [np.zeros(n, dtype=np.int32) for _ in range(4)]
    fn(n, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), *outs)
    return dict(zip(names, outs, strict=True))


def test_real_mod_and_modulo_follow_the_dividend_and_divisor_signs(real_ops):
    outs = _real_outputs(
        real_ops, np.array([5.5, -5.5, 5.5, -5.5]), np.array([2.0, 2.0, -2.0, 2.0])
    )
    assert outs["rmod"].tolist() == [1.5, -1.5, 1.5, -1.5]
    assert outs["rmodulo"].tolist() == [1.5, 0.5, -0.5, 0.5]


X_HALVES = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999999999999996, 0.49999999999999994]


def test_nint_rounds_half_away_from_zero(real_ops):
    outs = _real_outputs(real_ops, np.array(X_HALVES), np.ones(8))
    assert outs["ni"].tolist() == [1, 2, 3, -1, -2, -3, 2, 0]


def test_int_floor_ceiling_match_gfortran(real_ops):
    outs = _real_outputs(real_ops, np.array(X_HALVES), np.ones(8))
    assert outs["it"].tolist() == [0, 1, 2, 0, -1, -2, 2, 0]
    assert outs["fl"].tolist() == [0, 1, 2, -1, -2, -3, 2, 0]
    assert outs["ce"].tolist() == [1, 2, 3, 0, -1, -2, 3, 1]


def test_single_precision_literals_and_arithmetic_stay_float32():
    fn, gen = _compile(
        """
subroutine f32(t, d, u)
  real, intent(out) :: t, u
  real(8), intent(out) :: d
  real :: s, one
  integer :: i
  s = 0.1
  t = 0.0
  do i = 1, 10
    t = t + s * i
  end do
  d = 0.1 * 3.0d0
  one = 1.0
  u = (one + 1.0e-8) - one
end subroutine
"""
    )
    t, d, u = fn(0.0, 0.0, 0.0)
    assert float(t) == 5.5
    # In float64 the difference would be 1e-8; in real(4) 1 + 1e-8 rounds back to 1.
    assert u == 0.0
    # 0.1 is a real(4) literal: promoted to real(8) only after rounding to single precision.
    assert d == 3.0000000447034836e-01
    assert "np.float32(0.1)" in gen.code


def test_trip_count_is_evaluated_once_and_loop_variable_keeps_its_final_value():
    fn, _ = _compile(
        """
subroutine trip(n, cnt, last)
  integer, intent(inout) :: n
  integer, intent(out) :: cnt, last
  integer :: i
  cnt = 0
  do i = 1, n
    n = n - 1
    cnt = cnt + 1
  end do
  last = i
end subroutine
"""
    )
    assert fn(5, 0, 0) == (0, 5, 6)


def test_loop_variable_after_a_negative_step_loop():
    fn, _ = _compile(
        """
subroutine neg(last)
  integer, intent(out) :: last
  integer :: i
  do i = 10, 1, -3
  end do
  last = i
end subroutine
"""
    )
    assert fn(0) == -2


def test_declared_lower_bounds_map_to_zero_based_indices():
    fn, gen = _compile(
        """
subroutine lb(r, w, x, y)
  integer, intent(in) :: r
  real(8), intent(in) :: w(-r:r), x(0:9)
  real(8), intent(out) :: y(0:9)
  integer :: i, k
  do i = r, 9 - r
    y(i) = 0.0d0
    do k = -r, r
      y(i) = y(i) + w(k) * x(i + k)
    end do
  end do
end subroutine
"""
    )
    w = np.array([1.0, 10.0, 100.0])
    x = np.arange(10, dtype=np.float64)
    y = np.zeros(10)
    fn(1, w, x, y)
    expected = [w[0] * x[i - 1] + w[1] * x[i] + w[2] * x[i + 1] for i in range(1, 9)]
    assert y[1:9].tolist() == expected
    assert "w[k + r]" in gen.code
