"""Frontend, the statement visitor: DO forms, IF chains, DO CONCURRENT, SELECT CASE."""

from __future__ import annotations

from kernels.engine import ir
from tests.engine.frontend_ir import only


def test_fixed_form_shared_label_builds_a_nested_loop():
    k = only(
        """
      SUBROUTINE S(N, M, A)
      INTEGER N, M
      REAL*8 A(N, M)
      DO 10 J = 1, M
      DO 10 I = 1, N
         A(I, J) = A(I, J) +
     &             1.0D0
   10 CONTINUE
      END
""",
        filename="s.f",
    )
    outer = k.body[0]
    assert isinstance(outer, ir.Loop) and outer.var == "j"
    inner = outer.body[0]
    assert isinstance(inner, ir.Loop) and inner.var == "i"
    assert isinstance(inner.body[0], ir.Assign)


def test_do_while_exit_cycle_and_construct_names():
    k = only(
        """
subroutine s(n, x)
  integer, intent(in) :: n
  real(8), intent(inout) :: x
  integer :: i
  outer: do while (x > 1.0d0)
    do i = 1, n
      if (i == 2) cycle
      if (x < 2.0d0) exit outer
      x = x / 2
    end do
  end do outer
end subroutine
"""
    )
    w = k.body[0]
    assert isinstance(w, ir.WhileLoop) and w.label == "outer"
    jumps = [s for s in ir.walk(k.body) if isinstance(s, (ir.Exit, ir.Cycle))]
    assert [(type(s).__name__, s.label) for s in jumps] == [("Cycle", None), ("Exit", "outer")]


def test_if_else_if_else_chain_keeps_branch_order():
    k = only(
        """
subroutine s(x, y)
  real(8), intent(in) :: x
  real(8), intent(out) :: y
  if (x > 1.0d0) then
    y = 1.0d0
  else if (x > 0.0d0) then
    y = 2.0d0
  else
    y = 3.0d0
  end if
end subroutine
"""
    )
    (stmt,) = k.body
    assert isinstance(stmt, ir.If) and len(stmt.branches) == 2 and len(stmt.orelse) == 1
    assert [b[1][0].value.value for b in stmt.branches] == [1.0, 2.0]


def test_do_concurrent_becomes_a_loop_nest_with_the_first_index_innermost():
    k = only(
        """
subroutine s(n, m, a)
  integer, intent(in) :: n, m
  real(8), intent(inout) :: a(n, m)
  integer :: i, j
  do concurrent (i = 1:n, j = 1:m)
    a(i, j) = 0
  end do
end subroutine
"""
    )
    outer = k.body[0]
    assert outer.var == "j" and outer.body[0].var == "i"


def test_select_case_becomes_an_if_chain_with_ranges_and_default():
    k = only(
        """
subroutine s(k, r)
  integer, intent(in) :: k
  integer, intent(out) :: r
  select case (k)
  case (1, 3:5)
    r = 1
  case (:-1)
    r = 2
  case default
    r = 3
  end select
end subroutine
"""
    )
    (stmt,) = k.body
    assert isinstance(stmt, ir.If) and len(stmt.branches) == 2
    assert stmt.orelse[0].value == ir.Const(3, ir.INTEGER)
    first = stmt.branches[0][0]
    assert first.op == "or" and first.right.op == "and"
