"""Bounded parsing: statements too long for fparser are refused before it runs, with the line
and the reason, and a parse that overruns its time budget stops with a clear error."""

from __future__ import annotations

import time

import pytest

from kernels.engine import find_kernels
from kernels.engine.frontend import parse
from kernels.engine.report import FortranSyntaxError


def _continued_sum(lines: int) -> str:
    terms = " &\n      + ".join(f"x({i % 7 + 1})" for i in range(lines + 1))
    return (
        "subroutine s(x, y)\n  real, intent(in) :: x(8)\n  real, intent(out) :: y\n"
        f"  y = {terms}\nend subroutine s\n"
    )


def test_two_thousand_continuation_lines_are_refused_at_once_with_the_line():
    source = _continued_sum(2000)
    started = time.monotonic()
    with pytest.raises(FortranSyntaxError):
        parse.check_statement_bounds(source, fixed=False)
    assert time.monotonic() - started < 0.5  # a linear scan, before fparser sees anything
    with pytest.raises(FortranSyntaxError) as refused:
        find_kernels(source)
    assert "statement starting at line 4" in refused.value.message
    assert "more than 255 continuation lines" in refused.value.message
    assert refused.value.diagnostics[0].line == 4 + 256


def test_the_standards_255_continuation_lines_still_parse():
    kernels = find_kernels(_continued_sum(40))
    assert [k.name for k in kernels] == ["s"]
    parse.check_statement_bounds(_continued_sum(255), fixed=False)


def test_comment_lines_between_continued_lines_do_not_reset_the_count():
    source = _continued_sum(300).replace(" &\n", " &\n! note\n")
    with pytest.raises(FortranSyntaxError, match="continuation lines"):
        parse.check_statement_bounds(source, fixed=False)


def test_fixed_form_continuations_are_counted_in_column_six():
    body = "\n".join(["      Y = X(1)"] + ["     &  + X(1)"] * 300)
    with pytest.raises(FortranSyntaxError, match="continuation lines"):
        parse.check_statement_bounds(body, fixed=True)


def test_an_overlong_statement_is_refused_with_its_line():
    source = "subroutine s(y)\n  real :: y\n  y = " + "1.0 + " * 5000 + "1.0\nend subroutine s\n"
    with pytest.raises(FortranSyntaxError, match="longer than 20000 characters") as refused:
        find_kernels(source)
    assert refused.value.diagnostics[0].line == 3


def test_a_parse_over_its_time_budget_stops_with_the_line_it_reached(monkeypatch):
    monkeypatch.setenv("FORTRANSPIRE_PARSE_BUDGET_S", "0")
    with pytest.raises(FortranSyntaxError, match="parsing took longer than 0 s"):
        find_kernels(_continued_sum(3))
