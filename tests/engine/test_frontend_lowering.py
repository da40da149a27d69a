"""Array lowering (kernels/engine/lowering.py): sections, whole arrays, reductions, WHERE."""

from __future__ import annotations

from kernels.engine import ir
from tests.engine.frontend_ir import only


def test_section_assignment_is_lowered_to_a_loop_over_the_open_dimension():
    k = only(
        """
subroutine s(n, m, vx)
  integer, intent(in) :: n, m
  real(8), intent(inout) :: vx(n, m)
  vx(1, :) = 0
end subroutine
"""
    )
    (loop,) = k.body
    assert isinstance(loop, ir.Loop)
    assign = loop.body[0]
    assert isinstance(assign.target, ir.ArrayRef)
    assert assign.target.indices[0] == ir.Const(1, ir.INTEGER)
    assert assign.target.indices[1] == ir.Var(loop.var)


def test_whole_array_expression_loops_with_first_dimension_innermost():
    k = only(
        """
subroutine s(n, m, a, b, c)
  integer, intent(in) :: n, m
  real(8), intent(in) :: a(n, m), b(n, m)
  real(8), intent(out) :: c(n, m)
  c = a * b + 1
end subroutine
"""
    )
    outer = k.body[0]
    inner = outer.body[0]
    assign = inner.body[0]
    # c(inner, outer): the innermost loop runs over the contiguous first index.
    assert assign.target.indices == [ir.Var(inner.var), ir.Var(outer.var)]


def test_sum_over_a_section_is_hoisted_into_an_explicit_loop():
    k = only(
        """
subroutine s(n, m, a, colsum)
  integer, intent(in) :: n, m
  real(8), intent(in) :: a(n, m)
  real(8), intent(out) :: colsum(m)
  integer :: j
  do j = 1, m
    colsum(j) = sum(a(:, j))
  end do
end subroutine
"""
    )
    body = k.body[0].body
    assert isinstance(body[0], ir.Assign) and isinstance(body[1], ir.Loop)
    assert isinstance(body[2].value, ir.Var) and body[2].value.name == body[0].target.name


def test_strided_section_copy_maps_both_sides_with_the_same_stride():
    k = only(
        """
subroutine s(n, a, b)
  integer, intent(in) :: n
  real(8), intent(in) :: b(n)
  real(8), intent(inout) :: a(n)
  a(2:n:2) = b(1:n-1:2)
end subroutine
"""
    )
    (loop,) = k.body
    assert loop.step == ir.Const(2, ir.INTEGER)
    assign = loop.body[0]
    # b's element: 1 + (v - 2) = v - 1 for the target element a(v).
    assert assign.value.indices[0] == ir.BinOp("-", ir.Var(loop.var), ir.Const(1, ir.INTEGER))


def test_where_elsewhere_lowers_to_masked_loops_and_rejects_mask_writes():
    k = only(
        """
subroutine s(n, a, c)
  integer, intent(in) :: n
  real(8), intent(in) :: a(n)
  real(8), intent(out) :: c(n)
  where (a > 0)
    c = a
  elsewhere
    c = 0
  end where
end subroutine
"""
    )
    first, second = k.body
    guard = second.body[0]
    assert isinstance(guard, ir.If) and guard.branches[0][0].op == "not"
    clip = only(
        "subroutine s(n, a)\n  integer :: n\n  real(8) :: a(n)\n  where (a > 0) a = -a\nend subroutine\n"
    )
    assert not clip.unsupported  # one assignment reading its own element: elementwise is exact
    bad = only(
        "subroutine s(n, a, b)\n  integer :: n\n  real(8) :: a(n), b(n)\n"
        "  where (a > 0)\n    a = -a\n    b = a\n  end where\nend subroutine\n"
    )
    assert "mask" in bad.unsupported[0].construct
