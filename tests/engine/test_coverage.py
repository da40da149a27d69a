"""Coverage-checked verification: a port is ``verified`` only when every DO loop ran in gfortran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fortranspire_site.cli import main
from kernels.engine import coverage, translate_source
from kernels.engine.frontend import parse_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"

HALO = """subroutine halo(x_min, x_max, y_min, y_max, a, b)
  implicit none
  integer, intent(in) :: x_min, x_max, y_min, y_max
  real(8), intent(in) :: a(x_min-2:x_max+2, y_min-2:y_max+2)
  real(8), intent(inout) :: b(x_min-2:x_max+2, y_min-2:y_max+2)
  integer :: j, k
  do k = y_min, y_max
    do j = x_min, &
           x_max
      b(j, k) = 0.5d0 * (a(j-1, k) + a(j+1, k))
    end do
  end do
end subroutine
"""


def test_instrumentation_counts_each_do_after_its_continuation_lines():
    (k,) = parse_file(HALO).kernels
    inst = coverage.instrument(k, k.fortran_source, fixed=False)
    lines = inst.source.split("\n")
    assert [lp.line for lp in inst.loops] == [7, 8]
    assert lines[7] == "      call fsp_cov_hit(1)"  # after `do k`
    assert lines[10] == "      call fsp_cov_hit(2)"  # after both lines of `do j ..., &`
    # Inserted lines map to nothing; the user's lines keep their numbers.
    assert inst.user_line(8) == 0 and inst.user_line(9) == 8 and inst.user_line(12) == 10


def test_fixed_form_labelled_loops_get_counters_in_column_7():
    src = (
        "      subroutine s(n, a)\n      integer n, i\n      real*8 a(n)\n"
        "      do 10 i = 1,\n     &   n\n   10 a(i) = 1\n      end\n"
    )
    (k,) = parse_file(src, filename="s.f").kernels
    inst = coverage.instrument(k, k.fortran_source, fixed=True)
    assert inst.source.split("\n")[5] == "      call fsp_cov_hit(1)"


def test_array_syntax_loops_are_not_counted_as_do_loops():
    src = "subroutine s(n, a)\n  integer :: n\n  real(8) :: a(n)\n  a(:) = 0\nend subroutine\n"
    (k,) = parse_file(src).kernels
    assert coverage.instrument(k, k.fortran_source, fixed=False).loops == []


def test_a_kernel_whose_loop_cannot_run_is_inconclusive_never_verified():
    source = (FIXTURES / "dead_loop.f90").read_text()
    (k,) = translate_source(source, filename="dead_loop.f90", sizes={"n": 7}).kernels
    assert k.status == "inconclusive"
    assert k.coverage == {"loops": 2, "loops_run": 1, "lines": 4, "lines_run": 3}
    (diag,) = k.diagnostics
    assert "DO loop at line 12 never ran" in diag.message
    assert "n=7" in diag.message and "--size" in diag.message
    assert all(a.passed for a in k.arguments)  # the outputs do match: that is not enough


def test_loops_emptied_by_the_sizes_are_inconclusive_and_running_them_verifies(capsys, tmp_path):
    path = tmp_path / "halo.f90"
    path.write_text(HALO)
    empty = ["--size", "x_min=5", "--size", "x_max=3", "--size", "y_min=1", "--size", "y_max=4"]
    code = main(["translate", str(path), "--json", *empty])
    (k,) = json.loads(capsys.readouterr().out)["kernels"]
    assert code == 1
    assert k["status"] == "inconclusive"
    assert k["coverage"]["loops"] == 2 and k["coverage"]["loops_run"] == 1
    assert "line 8" in k["diagnostics"][0]["message"]
    full = ["--size", "x_min=2", "--size", "x_max=9", "--size", "y_min=1", "--size", "y_max=4"]
    code = main(["translate", str(path), "--json", *full])
    (k,) = json.loads(capsys.readouterr().out)["kernels"]
    assert code == 0 and k["status"] == "verified"
    assert k["coverage"] == {"loops": 2, "loops_run": 2, "lines": 3, "lines_run": 3}


def test_out_of_bounds_read_in_the_original_is_reported_as_such_not_as_a_mismatch():
    source = (FIXTURES / "oob_read.f90").read_text()
    (k,) = translate_source(source, filename="oob_read.f90", sizes={"n": 9}).kernels
    assert k.status == "failed"
    (diag,) = k.diagnostics
    assert diag.message.startswith("out-of-bounds access in the original Fortran at line 12:")
    assert "index 10 of dimension 1 of array a is above its upper bound 9" in diag.message
    assert "n=9" in diag.message


@pytest.mark.parametrize("status", ["inconclusive"])
def test_inconclusive_is_a_status_of_every_edge(status):
    from kernels.engine.report import STATUSES
    from kernels.models import KernelRun

    assert status in STATUSES
    assert status in dict(KernelRun.STATUSES)


FLAGGED = """subroutine predictor(n, predict, a, b)
  implicit none
  integer, intent(in) :: n
  logical, intent(in) :: predict
  real(8), intent(in) :: a(n)
  real(8), intent(inout) :: b(n)
  integer :: i
  if (predict) then
    do i = 1, n
      b(i) = 0.5d0 * a(i)
    end do
  else
    do i = 1, n
      b(i) = b(i) + a(i)
    end do
  end if
end subroutine
"""


def test_a_logical_input_is_run_both_ways_and_the_runs_together_cover_every_loop():
    (k,) = translate_source(FLAGGED, filename="predictor.f90").kernels
    assert k.status == "verified", [d.message for d in k.diagnostics]
    assert k.coverage["loops"] == 2 and k.coverage["loops_run"] == 2
    assert any(
        "every loop ran across the runs" in n and "predict=1" in n and "predict=0" in n
        for n in k.notes
    )


def test_with_the_flag_given_one_branch_stays_unrun_and_it_is_inconclusive():
    (k,) = translate_source(FLAGGED, filename="predictor.f90", sizes={"predict": 1}).kernels
    assert k.status == "inconclusive"
    assert "line 13 never ran" in k.diagnostics[0].message


CONCURRENT = """subroutine sweep(n, m, a, b)
  implicit none
  integer, intent(in) :: n, m
  real(8), intent(in) :: a(n, m)
  real(8), intent(inout) :: b(n, m)
  integer :: i, j
  do concurrent (i = 1:n, &
                 j = 1:m, a(i, j) > 0.0d0)
    b(i, j) = 2.0d0 * a(i, j)
  end do
end subroutine
"""


def test_do_concurrent_gets_a_counter_inside_its_mask_through_a_pure_interface():
    (k,) = parse_file(CONCURRENT).kernels
    inst = coverage.instrument(k, k.fortran_source, fixed=False)
    lines = inst.source.split("\n")
    # The unit sees the counter as PURE (the only calls DO CONCURRENT allows)...
    assert lines[1] == f"      use {coverage.PURE_INTERFACE_MODULE}, only: {coverage.HIT}"
    # ...and counts after the whole header (both lines), where only active iterations go.
    assert lines[9] == "      call fsp_cov_hit(1)"
    assert [(lp.index, lp.line) for lp in inst.loops] == [(1, 7)]
    assert inst.user_line(11) == 9  # the body keeps its user line


def test_do_concurrent_with_two_indices_and_a_mask_is_verified_with_every_loop_run():
    source = (FIXTURES / "do_concurrent.f90").read_text()
    (k,) = translate_source(source, filename="do_concurrent.f90").kernels
    assert k.status == "verified", [d.message for d in k.diagnostics]
    # Three DO CONCURRENT constructs (one per header, whatever its index count) + the inner DO.
    assert k.coverage == {"loops": 4, "loops_run": 4, "lines": 9, "lines_run": 9}


PURE_MASKED = """pure subroutine scale_rows(n, m, f, a)
  implicit none
  integer, intent(in) :: n, m
  real(8), intent(in) :: f(n)
  real(8), intent(inout) :: a(n, m)
  integer :: i, j
  do j = 1, m
    do concurrent (i = 1:n, f(i) > 2.0d0)
      a(i, j) = a(i, j) * f(i)
    end do
  end do
end subroutine scale_rows
"""


def test_a_mask_that_is_never_true_leaves_the_do_concurrent_unrun_in_a_pure_kernel():
    # Inputs are drawn from [0.5, 1.5]: the mask never holds, so the body never ran. The PURE
    # kernel itself compiles with its counters (before, gfortran refused the impure CALL).
    (k,) = translate_source(PURE_MASKED, filename="scale_rows.f90", sizes={"n": 5, "m": 4}).kernels
    assert k.status == "inconclusive"
    assert k.coverage["loops"] == 2 and k.coverage["loops_run"] == 1
    assert "DO loop at line 8 never ran" in k.diagnostics[0].message
