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
