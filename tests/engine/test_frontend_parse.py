"""Frontend, parse and preprocess: syntax errors with positions, cpp, unsupported markers with lines."""

from __future__ import annotations

import pytest

from kernels.engine import ir
from kernels.engine.frontend import parse_file
from kernels.engine.report import FortranSyntaxError
from tests.engine.frontend_ir import only


def test_a_define_after_contains_in_a_f90_file_is_preprocessed_not_a_crash():
    src = (
        "module m\ncontains\n#define SCALE 2.0d0\n  subroutine s(n, a)\n    integer :: n\n"
        "    real(8) :: a(n)\n    a(1) = SCALE * a(1)\n  end subroutine s\nend module m\n"
    )
    (k,) = parse_file(src, filename="m.f90").kernels
    assert k.name == "s" and not k.unsupported
    (assign,) = k.body
    assert assign.line == 7  # lines keep their numbers through cpp
    assert assign.value.left.value == 2.0  # SCALE expanded


def test_a_top_level_define_in_a_f90_file_expands():
    src = "#define NX 8\nsubroutine t(a)\n  real(8) :: a(NX)\n  a(NX) = 1\nend subroutine t\n"
    (k,) = parse_file(src, filename="t.f90").kernels
    assert not k.unsupported
    assert k.args[0].dims[0].upper.value == 8


def test_a_broken_directive_is_a_positioned_preprocessor_error():
    src = "subroutine t(a)\n  real(8) :: a(4)\n#if 1\n  a(1) = 1\nend subroutine t\n"
    with pytest.raises(FortranSyntaxError) as info:
        parse_file(src, filename="t.f90")
    (d,) = info.value.diagnostics
    assert d.message.startswith("C preprocessor:") and "#if" in d.message


def test_unsupported_construct_is_reported_with_line_and_column():
    k = only(
        """subroutine s(n, a)
  integer, intent(in) :: n
  real(8), intent(inout) :: a(n)
  integer :: i
  i = 1
10 continue
  a(i) = 2 * a(i)
  i = i + 1
  if (i <= n) goto 10
end subroutine
"""
    )
    (u,) = k.unsupported
    assert u.construct == "GOTO" and u.line == 9 and u.column > 1
    assert [a.name for a in k.args] == ["n", "a"]  # the kernel still has its interface


def test_malformed_fortran_raises_syntax_error_with_position():
    with pytest.raises(FortranSyntaxError) as info:
        parse_file("subroutine s(a)\n  real :: a\n  a = (1.0 + \nend subroutine\n")
    (d,) = info.value.diagnostics
    assert d.line == 3 and d.column >= 1


def test_capitalised_suffix_goes_through_the_preprocessor():
    k = only(
        "#define SCALE 2.0d0\nsubroutine s(x)\n  real(8), intent(inout) :: x\n"
        "#ifdef UNDEFINED_FLAG\n  x = 0\n#else\n  x = SCALE * x\n#endif\nend subroutine\n",
        filename="s.F90",
    )
    (assign,) = k.body
    assert isinstance(assign.value, ir.BinOp) and assign.value.left.value == 2.0


def test_preprocessed_source_keeps_the_original_line_numbers():
    k = only(
        "#define A 1\n#define B 2\n\nsubroutine s(n, x)\n  integer :: n\n  real(8) :: x\n"
        "#ifdef Z\n  x = 0\n#endif\n  go to 10\n10 continue\nend subroutine\n",
        filename="s.F90",
    )
    assert k.line == 4
    assert [u.line for u in k.unsupported] == [10]
