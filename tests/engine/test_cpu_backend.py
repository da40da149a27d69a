"""CPU backend: generated numba modules are readable, importable and compute what Fortran does."""

from __future__ import annotations

import types

import numpy as np
import pytest

from kernels.engine.backends.cpu import generate_cpu
from kernels.engine.frontend import parse_file


def build(source: str, name: str | None = None):
    ks = parse_file(source, filename="t.f90").kernels
    k = ks[0] if name is None else next(x for x in ks if x.name == name)
    gen = generate_cpu(k)
    mod = types.ModuleType("generated")
    exec(compile(gen.code, "generated", "exec"), mod.__dict__)
    return getattr(mod, gen.entry), gen


JACOBI = """
subroutine jacobi(n, m, u, unew)
  implicit none
  integer, intent(in) :: n, m
  real(8), intent(in) :: u(0:n+1, 0:m+1)
  real(8), intent(inout) :: unew(0:n+1, 0:m+1)
  integer :: i, j
  do j = 1, m
    do i = 1, n
      unew(i, j) = 0.25d0 * (u(i-1, j) + u(i+1, j) + u(i, j-1) + u(i, j+1))
    end do
  end do
end subroutine jacobi
"""

GAUSS_SEIDEL = JACOBI.replace("jacobi", "gs").replace(
    "unew(i, j) = 0.25d0", "unew(i, j) = unew(i-1, j) + unew(i, j-1) + 0.25d0"
)


@pytest.fixture(scope="module")
def jacobi():
    return build(JACOBI)


def test_jacobi_runs_prange_on_the_outer_loop_and_matches_numpy(jacobi):
    fn, gen = jacobi
    assert gen.parallel_loops == 1
    assert "for j in prange(1, m + 1):" in gen.code
    assert "for i in range(1, n + 1):" in gen.code
    n, m = 7, 5
    u = np.asfortranarray(np.random.default_rng(0).random((n + 2, m + 2)))
    unew = np.zeros((n + 2, m + 2), order="F")
    fn(n, m, u, unew)
    ref = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])
    np.testing.assert_array_equal(unew[1:-1, 1:-1], ref)
    assert unew[0, :].tolist() == [0.0] * (m + 2)  # halo untouched


def test_generated_module_is_readable_with_line_comments_and_calling_convention(jacobi):
    _, gen = jacobi
    assert gen.code.startswith('"""numba port of Fortran subroutine JACOBI')
    assert "Calling convention:" in gen.code and "jacobi(n, m, u, unew)" in gen.code
    assert "# line 8: do j = 1, m" in gen.code and "# line 9: do i = 1, n" in gen.code
    assert "fastmath=False" in gen.code and "parallel=True" in gen.code


def test_carried_dependence_produces_serial_code_without_parallel_flag():
    fn, gen = build(GAUSS_SEIDEL)
    assert gen.parallel_loops == 0 and "prange(" not in gen.code.split("import")[-1]
    assert "parallel=True" not in gen.code
    n, m = 4, 3
    u = np.asfortranarray(np.ones((n + 2, m + 2)))
    unew = np.zeros((n + 2, m + 2), order="F")
    fn(n, m, u, unew)
    ref = np.zeros((n + 2, m + 2))
    for j in range(1, m + 1):  # the Fortran order, column by column
        for i in range(1, n + 1):
            ref[i, j] = ref[i - 1, j] + ref[i, j - 1] + 1.0
    np.testing.assert_array_equal(unew, ref)


def test_scalar_out_arguments_are_returned_in_argument_order():
    fn, gen = build(
        """
subroutine stats(n, a, s, amax)
  integer, intent(in) :: n
  real(8), intent(in) :: a(n)
  real(8), intent(out) :: s, amax
  integer :: i
  s = 0
  amax = a(1)
  do i = 1, n
    s = s + a(i)
    if (a(i) > amax) amax = a(i)
  end do
end subroutine
"""
    )
    a = np.array([3.0, -1.0, 7.0, 2.0])
    assert fn(4, a, 0.0, 0.0) == (11.0, 7.0)
    assert "amax = max(amax, a[i - 1])" in gen.code  # IF-max printed as a numba reduction


def test_function_kernel_returns_its_result():
    fn, _ = build(
        """
function norm1(n, x) result(r)
  integer, intent(in) :: n
  real(8), intent(in) :: x(n)
  real(8) :: r
  integer :: i
  r = 0
  do i = 1, n
    r = r + abs(x(i))
  end do
end function
"""
    )
    assert fn(3, np.array([1.0, -2.0, 3.5])) == 6.5


def test_pure_function_callee_is_emitted_as_a_jitted_helper():
    fn, gen = build(
        """
module m
contains
  elemental real(8) function clip(x)
    real(8), intent(in) :: x
    clip = x / (1.0d0 + abs(x))
  end function
  subroutine s(n, a, b)
    integer, intent(in) :: n
    real(8), intent(in) :: a(n)
    real(8), intent(out) :: b(n)
    integer :: i
    do i = 1, n
      b(i) = clip(a(i))
    end do
  end subroutine
end module
""",
        name="s",
    )
    assert "def clip(x):" in gen.code
    b = np.zeros(2)
    fn(2, np.array([1.0, -3.0]), b)
    assert b.tolist() == [0.5, -0.75]


def test_labelled_exit_leaves_both_loops():
    fn, _ = build(
        """
subroutine find(n, m, a, fi, fj)
  integer, intent(in) :: n, m
  real(8), intent(in) :: a(n, m)
  integer, intent(out) :: fi, fj
  integer :: i, j
  fi = 0
  fj = 0
  outer: do j = 1, m
    do i = 1, n
      if (a(i, j) > 0.5d0) then
        fi = i
        fj = j
        exit outer
      end if
    end do
  end do outer
end subroutine
"""
    )
    a = np.zeros((3, 4), order="F")
    a[1, 2] = 1.0
    a[2, 3] = 1.0
    assert fn(3, 4, a, 0, 0) == (2, 3)


def test_local_arrays_are_allocated_in_fortran_order():
    fn, gen = build(
        """
subroutine s(n, out)
  integer, intent(in) :: n
  real(8), intent(out) :: out(n)
  real(8), allocatable :: w(:, :)
  integer :: i
  allocate(w(n, 2))
  do i = 1, n
    w(i, 1) = i
    w(i, 2) = 2 * i
  end do
  do i = 1, n
    out(i) = w(i, 1) + w(i, 2)
  end do
  deallocate(w)
end subroutine
"""
    )
    assert ".T" in gen.code  # reversed shape + transpose = column-major
    out = np.zeros(3)
    fn(3, out)
    assert out.tolist() == [3.0, 6.0, 9.0]


def test_named_constants_in_subscripts_and_bounds_are_folded_to_values():
    fn, gen = build(
        """
subroutine edge(a)
  integer, parameter :: nx = 6, ny = 4
  real(8), intent(inout) :: a(0:nx+1, ny)
  a(nx/2, ny) = 1.0d0
  a(nx, :) = 2.0d0
end subroutine
"""
    )
    assert "nx" not in gen.code.split("def edge")[1]
    a = np.zeros((8, 4), order="F")
    fn(a)
    assert a[3, 3] == 1.0 and a[6, :].tolist() == [2.0] * 4


def test_where_and_select_case_compute_what_fortran_does():
    fn, _ = build(
        """
subroutine wc(n, a, c, r)
  integer, intent(in) :: n
  real(8), intent(in) :: a(n)
  real(8), intent(out) :: c(n)
  integer, intent(out) :: r(n)
  integer :: i
  where (a > 0.7d0)
    c = 2 * a
  elsewhere (a < 0.2d0)
    c = -a
  elsewhere
    c = 0
  end where
  do i = 1, n
    select case (i)
    case (1, 3:4)
      r(i) = 10
    case (5:)
      r(i) = 20
    case default
      r(i) = 30
    end select
  end do
end subroutine
"""
    )
    a = np.array([0.9, 0.1, 0.5, 0.8, 0.0])
    c = np.zeros(5)
    r = np.zeros(5, dtype=np.int32)
    fn(5, a, c, r)
    assert c.tolist() == [1.8, -0.1, 0.0, 1.6, -0.0]
    assert r.tolist() == [10, 30, 10, 10, 20]


def test_maxloc_minloc_keep_the_first_occurrence_and_count_any_all_reduce_masks():
    fn, _ = build(
        """
subroutine locs(n, a, imax, imin, cnt, anyneg, allpos)
  integer, intent(in) :: n
  real(8), intent(in) :: a(0:n-1)
  integer, intent(out) :: imax, imin, cnt
  logical, intent(out) :: anyneg, allpos
  imax = maxloc(a, dim=1)
  imin = minloc(a(1:n-1), 1)
  cnt = count(a > 0.5d0)
  anyneg = any(a < 0)
  allpos = all(a > 0)
end subroutine
"""
    )
    a = np.array([0.1, 0.9, 0.3, 0.9, 0.1])
    # positions are 1-based within the (section of the) array, ties give the first one
    assert fn(5, a, 0, 0, 0, False, False) == (2, 4, 2, False, True)


def test_internal_procedures_get_host_variables_as_extra_arguments():
    fn, gen = build(
        """
subroutine outer(n, a, c)
  integer, intent(in) :: n
  real(8), intent(inout) :: a(n)
  real(8), intent(in) :: c
  integer :: i
  do i = 1, n
    a(i) = scaled(a(i))
  end do
contains
  pure real(8) function scaled(x)
    real(8), intent(in) :: x
    scaled = c * x
  end function
end subroutine
"""
    )
    assert "def scaled(x, c):" in gen.code and "scaled(a[i - 1], c)" in gen.code
    a = np.array([1.0, 2.0])
    fn(2, a, 3.0)
    assert a.tolist() == [3.0, 6.0]


TIMESTEP = """
subroutine timestep(n, m, c, u, v, big, dt)
  implicit none
  integer, intent(in) :: n, m
  real(8), intent(in) :: c(n, m), u(n, m), v(n, m), big
  real(8), intent(out) :: dt
  real(8) :: dtc, dtu, dtv
  integer :: i, j
  dt = big
  do j = 1, m
    do i = 1, n
      dtc = 0.5d0 / c(i, j)
      dtu = 0.7d0 / abs(u(i, j))
      dtv = 0.7d0 / abs(v(i, j))
      dt = min(dt, dtc, dtu, dtv)
    end do
  end do
end subroutine timestep
"""


def test_a_min_of_several_values_into_a_reduction_variable_runs_as_a_parallel_reduction():
    # numba accepts a parallel min reduction only as ``dt = min(dt, e)``: the Fortran
    # MIN(dt, a, b, c) must not become min(min(min(dt, a), b), c), which numba refuses.
    fn, gen = build(TIMESTEP)
    assert gen.parallel_loops == 1
    assert "dt = min(dt, min(min(dtc, dtu), dtv))" in gen.code
    rng = np.random.default_rng(1)
    c, u, v = (np.asfortranarray(rng.uniform(0.5, 1.5, (6, 5))) for _ in range(3))
    expected = min(1e30, (0.5 / c).min(), (0.7 / abs(u)).min(), (0.7 / abs(v)).min())
    assert fn(6, 5, c, u, v, 1e30, 0.0) == expected


FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "fortran"


def _generated(source: str, name: str | None = None):
    ks = parse_file(source, filename="t.f90").kernels
    return generate_cpu(ks[0] if name is None else next(k for k in ks if k.name == name))


def test_halo_loops_run_sequentially_and_the_notes_say_why():
    # Every nest walks an edge of a 2-D array, its inner loop over 1..depth: as prange each
    # would cost a gufunc compile (CloverLeaf's update_halo has 60 and timed out compiling).
    gen = _generated((FIXTURES / "halo_exchange_fields.f90").read_text())
    assert gen.parallel_loops == 0 and "prange(" not in gen.code.split('"""', 2)[2]
    halo_notes = [n for n in gen.notes if "stays sequential: a halo loop" in n]
    assert [int(n.split(":")[0].split()[1]) for n in halo_notes] == [23, 30, 37, 44, 53, 60, 69, 76]
    assert "rank-2 array" in halo_notes[0]


HALO_AND_INTERIOR = """
subroutine step(x_min, x_max, y_min, y_max, depth, u, q, unew)
  implicit none
  integer, intent(in) :: x_min, x_max, y_min, y_max, depth
  real(8), intent(inout) :: u(x_min-2:x_max+2, y_min-2:y_max+2)
  real(8), intent(inout) :: q(4, x_min:x_max, y_min:y_max)
  real(8), intent(out) :: unew(x_min-2:x_max+2, y_min-2:y_max+2)
  integer :: j, k, m
  do j = x_min - depth, x_max + depth
    do k = 1, depth
      u(j, y_min - k) = u(j, y_min + k - 1)
    end do
  end do
  do k = y_min, y_max
    do j = x_min, x_max
      unew(j, k) = 0.25d0 * (u(j-1, k) + u(j+1, k) + u(j, k-1) + u(j, k+1))
    end do
  end do
  do k = y_min, y_max
    do j = x_min, x_max
      do m = 1, 4
        q(m, j, k) = q(m, j, k) * unew(j, k)
      end do
    end do
  end do
end subroutine step
"""


def test_a_halo_loop_is_sequential_beside_domain_nests_that_stay_parallel():
    gen = _generated(HALO_AND_INTERIOR)
    # The interior stencil and the nest over a state vector of 4 components per cell are
    # domain work (the small dimension of q does not make it an edge); the halo copy is not.
    assert gen.parallel_loops == 2
    assert "for k in prange(y_min, y_max + 1):" in gen.code
    assert any(n.startswith("line 9: do j stays sequential: a halo loop") for n in gen.notes)


def test_a_radius_stencil_is_domain_work_and_stays_parallel():
    gen = _generated((FIXTURES / "radius_stencil.f90").read_text())
    assert gen.parallel_loops == 1
    assert not any("halo loop" in n for n in gen.notes)
