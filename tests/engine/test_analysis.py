"""Analysis: parallel loops only where legal, private scalars/arrays, reductions, argmax."""

from __future__ import annotations

from kernels.engine import ir
from kernels.engine.analysis import analyse
from kernels.engine.frontend import parse_file


def analysed(source: str):
    (k,) = parse_file(source, filename="t.f90").kernels
    info = analyse(k)
    by_var = {}
    for s in ir.walk(k.body):
        if isinstance(s, ir.Loop):
            by_var.setdefault(s.var, s)
    return k, info, by_var


def sub(body: str, decls: str = "", args: str = "n, m, a, b") -> str:
    return (
        f"subroutine t({args})\n  integer, intent(in) :: n, m\n"
        "  real(8), intent(inout) :: a(0:n+1, 0:m+1), b(0:n+1, 0:m+1)\n"
        f"  integer :: i, j\n{decls}{body}\nend subroutine\n"
    )


def test_jacobi_stencil_parallelises_the_outer_loop_only():
    _, info, loops = analysed(
        sub(
            "  do j = 1, m\n    do i = 1, n\n"
            "      b(i, j) = a(i-1, j) + a(i+1, j) + a(i, j-1) + a(i, j+1)\n    end do\n  end do"
        )
    )
    assert loops["j"].parallel and loops["i"].parallel
    assert [x.var for x in info.parallel_loops] == ["j"]


def test_gauss_seidel_sweep_stays_sequential_with_the_distance_in_the_reason():
    _, info, loops = analysed(
        sub(
            "  do j = 1, m\n    do i = 1, n\n"
            "      a(i, j) = 0.25d0 * (a(i-1, j) + a(i+1, j) + a(i, j-1) + a(i, j+1))\n"
            "    end do\n  end do"
        )
    )
    assert not loops["j"].parallel and not loops["i"].parallel
    assert "a(i, j - 1)" in loops["j"].reason and "distance 1 in j" in loops["j"].reason
    assert "distance 1 in i" in loops["i"].reason
    assert info.parallel_loops == []


def test_time_loop_is_sequential_and_its_inner_nests_are_parallel():
    _, info, loops = analysed(
        sub(
            "  do it = 1, 10\n    do j = 1, m\n      do i = 1, n\n"
            "        b(i, j) = a(i+1, j) - a(i-1, j)\n      end do\n    end do\n"
            "    do j = 1, m\n      do i = 1, n\n        a(i, j) = b(i, j)\n      end do\n    end do\n"
            "  end do",
            decls="  integer :: it\n",
        )
    )
    assert not loops["it"].parallel
    assert [x.var for x in info.parallel_loops] == ["j", "j"]


def test_scalar_written_before_read_is_private():
    _, _, loops = analysed(
        sub(
            "  do j = 1, m\n    do i = 1, n\n      t = a(i, j) * 2\n      b(i, j) = t + t\n"
            "    end do\n  end do",
            decls="  real(8) :: t\n",
        )
    )
    assert loops["j"].parallel and "t" in loops["j"].private and "i" in loops["j"].private


def test_scalar_recurrence_carries_a_dependence():
    _, _, loops = analysed(
        sub(
            "  t = 0\n  do i = 1, n\n    t = 0.5d0 * t + a(i, 1)\n    b(i, 1) = t\n  end do",
            decls="  real(8) :: t\n",
        )
    )
    assert not loops["i"].parallel and "t" in loops["i"].reason


def test_sum_and_max_reductions_are_recognised_and_stay_parallel():
    k, _, loops = analysed(
        """
subroutine r(n, a, s, amax, p)
  integer, intent(in) :: n
  real(8), intent(in) :: a(n)
  real(8), intent(out) :: s, amax, p
  integer :: i
  s = 0
  amax = -1d30
  p = 1
  do i = 1, n
    s = s + a(i)
    p = p * a(i)
    if (a(i) > amax) amax = a(i)
  end do
end subroutine
"""
    )
    loop = loops["i"]
    assert loop.parallel
    assert {(r.var, r.op) for r in loop.reductions} == {("s", "+"), ("p", "*"), ("amax", "max")}


def test_argmax_is_recognised_with_first_occurrence_and_kept_sequential():
    _, _, loops = analysed(
        """
subroutine r(n, a, imax, vmax)
  integer, intent(in) :: n
  real(8), intent(in) :: a(n)
  integer, intent(out) :: imax
  real(8), intent(out) :: vmax
  integer :: i
  vmax = a(1)
  imax = 1
  do i = 2, n
    if (a(i) > vmax) then
      vmax = a(i)
      imax = i
    end if
  end do
end subroutine
"""
    )
    loop = loops["i"]
    assert not loop.parallel
    (red,) = loop.reductions
    assert (red.var, red.op, red.index_vars) == ("vmax", "argmax", ["imax"])
    assert "first occurrence" in loop.reason


def test_small_local_array_is_privatised():
    _, info, loops = analysed(
        """
subroutine s(n, p, q)
  integer, intent(in) :: n
  real(8), intent(in) :: p(3, n)
  real(8), intent(out) :: q(n)
  real(8) :: tmp(3)
  integer :: i, k
  do i = 1, n
    do k = 1, 3
      tmp(k) = p(k, i)
    end do
    q(i) = tmp(1) * tmp(2) - tmp(3)
  end do
end subroutine
"""
    )
    assert loops["i"].parallel
    assert info.parallel_loops[0].private_arrays == ["tmp"]


def test_gcd_test_proves_even_and_odd_elements_independent():
    _, _, loops = analysed(
        """
subroutine s(n, a)
  integer, intent(in) :: n
  real(8), intent(inout) :: a(2*n + 1)
  integer :: i
  do i = 1, n
    a(2*i) = a(2*i + 1)
  end do
end subroutine
"""
    )
    assert loops["i"].parallel


def test_non_unit_step_and_early_exit_stay_sequential():
    _, _, loops = analysed(
        sub(
            "  do i = 1, n, 2\n    b(i, 1) = a(i, 1)\n  end do\n"
            "  do j = 1, m\n    if (a(1, j) < 0) exit\n    b(1, j) = a(1, j)\n  end do"
        )
    )
    assert not loops["i"].parallel and "step" in loops["i"].reason
    assert not loops["j"].parallel and "EXIT" in loops["j"].reason


def test_local_array_read_before_it_is_written_in_the_iteration_is_not_private():
    _, _, loops = analysed(
        """
subroutine s(n, p, q)
  integer, intent(in) :: n
  real(8), intent(in) :: p(n)
  real(8), intent(out) :: q(n)
  real(8) :: tmp(2)
  integer :: i
  tmp(2) = 0
  do i = 1, n
    tmp(1) = p(i)
    q(i) = tmp(1) + tmp(2)
    tmp(2) = p(i)
  end do
end subroutine
"""
    )
    assert not loops["i"].parallel


SWEEP_3D = """
subroutine s(nx, ny, nz, u, g)
  integer, intent(in) :: nx, ny, nz
  real(8), intent(in) :: u(0:nx+1, 0:ny+1, 0:nz+1)
  real(8), intent(out) :: g(nx, ny, nz)
  real(8) :: tmp(3)
  integer :: i, j, k
  do k = 1, nz
    do j = 1, ny
      do i = 1, nx
        RESET
        tmp(1) = u(i+1, j, k) - u(i-1, j, k)
        tmp(2) = u(i, j+1, k) - u(i, j-1, k)
        if (k > 1) tmp(3) = u(i, j, k+1) - u(i, j, k-1)
        g(i, j, k) = sum(tmp)
      end do
    end do
  end do
end subroutine
"""


def test_local_array_reset_by_array_syntax_then_set_by_elements_is_private_to_the_outer_loop():
    _, info, loops = analysed(SWEEP_3D.replace("RESET", "tmp = 0.0d0"))
    assert [loops[v].parallel for v in "kji"] == [True, True, True]
    (outer,) = [x for x in info.loops if x.outermost_parallel]
    assert outer.var == "k" and outer.private_arrays == ["tmp"]


def test_local_array_element_set_only_under_an_if_carries_over_iterations():
    # Without the reset, tmp(3) keeps the previous iteration's value when k == 1: privatising
    # tmp would change what SUM reads.
    _, _, loops = analysed(SWEEP_3D.replace("RESET", ""))
    assert [loops[v].parallel for v in "kji"] == [False, False, False]
    assert "tmp" in loops["k"].reason


def test_elements_set_one_by_one_together_cover_a_sum_over_the_array():
    _, _, loops = analysed(SWEEP_3D.replace("RESET", "").replace("if (k > 1) tmp(3)", "tmp(3)"))
    assert loops["k"].parallel and loops["k"].private_arrays == ["tmp"]
