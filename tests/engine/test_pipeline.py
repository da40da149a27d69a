"""Pipeline: translate_source / find_kernels end to end (stages, statuses, progress, errors)."""

from __future__ import annotations

import shutil
import signal

import pytest

from kernels.engine import find_kernels, translate_source
from kernels.engine.report import EngineError, FortranSyntaxError

SAXPY = """
subroutine saxpy(n, a, x, y)
  integer, intent(in) :: n
  real(8), intent(in) :: a, x(n)
  real(8), intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = y(i) + a * x(i)
  end do
end subroutine saxpy

subroutine scale(n, y)
  integer, intent(in) :: n
  real(8), intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = 2 * y(i)
  end do
end subroutine scale
"""

GOTO = """subroutine g(n, a)
  integer, intent(in) :: n
  real(8), intent(inout) :: a(n)
  integer :: i
  i = 1
10 a(i) = 0
  i = i + 1
  if (i <= n) go to 10
end subroutine
"""


def test_find_kernels_lists_every_subroutine_in_source_order():
    assert [k.name for k in find_kernels(SAXPY)] == ["saxpy", "scale"]


def test_translation_without_verification_is_translated_with_zero_llm_calls():
    stages = []
    result = translate_source(
        SAXPY, verify=False, progress=lambda stage, done, total, msg: stages.append(stage)
    )
    assert [k.status for k in result.kernels] == ["translated", "translated"]
    assert all(k.llm_calls == 0 and k.parallel_loops == 1 for k in result.kernels)
    assert result.ok
    data = result.to_dict()
    assert data["target"] == "cpu" and data["kernels"][0]["device"] == "cpu"
    assert "def saxpy(n, a, x, y):" in data["kernels"][0]["code"]
    assert stages.index("parse") < stages.index("analyse") < stages.index("generate")


def test_kernel_selection_by_name_and_unknown_name_lists_the_kernels():
    result = translate_source(SAXPY, verify=False, kernel="SCALE")
    assert [k.name for k in result.kernels] == ["scale"]
    with pytest.raises(EngineError) as info:
        translate_source(SAXPY, verify=False, kernel="nope")
    assert "saxpy" in info.value.message and "scale" in info.value.message


def test_unsupported_kernel_gets_a_positioned_diagnostic_and_goes_to_the_fallback():
    calls = []

    def fallback(*, kernel, result, target, sizes, seed):
        calls.append(kernel.name)
        assert kernel.args and kernel.fortran_source  # enough to verify an LLM port
        result.notes.append("fallback consulted")
        return result

    result = translate_source(GOTO, verify=False, llm_fallback=fallback)
    (k,) = result.kernels
    assert k.status == "unsupported" and k.code == ""
    assert calls == ["g"] and "fallback consulted" in k.notes
    (d,) = k.diagnostics
    assert d.line == 8 and "GOTO" in d.message


def test_syntax_error_is_raised_with_a_line():
    with pytest.raises(FortranSyntaxError) as info:
        translate_source("subroutine s(\n", verify=False)
    assert info.value.diagnostics and info.value.diagnostics[0].line >= 1


def test_translation_of_a_cpml_sized_kernel_is_fast():
    import time
    from pathlib import Path

    src = (Path(__file__).parents[1] / "fixtures" / "fortran" / "cpml_elastic_2d.f90").read_text()
    translate_source(src, verify=False)  # warm the parser factory
    t0 = time.perf_counter()
    result = translate_source(src, verify=False)
    elapsed = time.perf_counter() - t0
    assert result.kernels[0].status == "translated"
    assert elapsed < 1.0  # target 0.3 s on an idle core; generous for a shared CI box


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_saxpy_is_verified_against_gfortran():
    result = translate_source(SAXPY, kernel="saxpy", sizes={"n": 17})
    (k,) = result.kernels
    assert k.status == "verified", k.diagnostics
    assert k.max_rel_err is not None and k.max_rel_err <= 1e-12


def test_a_failing_llm_fallback_leaves_the_unsupported_result_with_a_note():
    def fallback(**_):
        raise RuntimeError("no API key")

    (k,) = translate_source(GOTO, verify=False, llm_fallback=fallback).kernels
    assert k.status == "unsupported"
    assert any("LLM fallback failed" in n and "no API key" in n for n in k.notes)


TWO_KERNELS = """\
subroutine scale(n, x)
  integer, intent(in) :: n
  real(8), intent(inout) :: x(n)
  integer :: i
  do i = 1, n
    x(i) = 2.0d0 * x(i)
  end do
end subroutine scale

subroutine shift(n, x)
  integer, intent(in) :: n
  real(8), intent(inout) :: x(n)
  integer :: i
  do i = 1, n
    x(i) = x(i) + 1.0d0
  end do
end subroutine shift
"""


def test_kernels_past_the_time_budget_fail_with_the_reason_instead_of_running(monkeypatch):
    import kernels.engine.verify as verify

    def must_not_run(*args, **kwargs):
        raise AssertionError("verification started after the budget ran out")

    monkeypatch.setattr(verify, "verify_against_gfortran", must_not_run)
    result = translate_source(TWO_KERNELS, time_budget_s=0.5)

    assert [k.status for k in result.kernels] == ["failed", "failed"]
    assert all(k.code for k in result.kernels)  # the port itself is still delivered
    assert "time budget of 0.5 s ran out" in result.kernels[0].diagnostics[-1].message
    assert not result.ok


def test_the_time_budget_caps_each_verification_timeout(monkeypatch):
    import kernels.engine.verify as verify

    seen = []
    real = verify.verify_against_gfortran

    def spy(*args, **kwargs):
        seen.append(kwargs["timeout_s"])
        return real(*args, **kwargs)

    monkeypatch.setattr(verify, "verify_against_gfortran", spy)
    result = translate_source(TWO_KERNELS, kernel="scale", time_budget_s=60)

    assert [k.status for k in result.kernels] == ["verified"]
    assert len(seen) == 1 and 55 < seen[0] <= 60


def test_a_mismatched_end_name_is_a_syntax_error_with_its_line_not_an_exit():
    # fparser's reader calls sys.exit(1) on this by default, which would end a server thread.
    source = "module good\ncontains\n  subroutine s(x)\n    real :: x\n    x = 1.0\n  end subroutine s\nend module bad\n"
    with pytest.raises(FortranSyntaxError) as err:
        find_kernels(source)
    assert err.value.diagnostics[0].line == 7
    assert "good" in err.value.message and "Ignoring" not in err.value.message


def test_parsing_twice_does_not_accumulate_fparser_symbol_tables():
    from fparser.two.symbol_table import SYMBOL_TABLES

    source = "module m1\n  integer, parameter :: k = 3\nend module m1\n"
    find_kernels(source)
    find_kernels(source.replace("m1", "m2"))
    assert list(SYMBOL_TABLES._symbol_tables) == ["m2"]


# --------------------------------------------------------------------------------------------
# Sizes fixed by PARAMETERs, shrunk for the run only

FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "fortran"


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_a_time_loop_over_budget_runs_with_shrunk_parameters_and_ships_the_values_as_written():
    source = (FIXTURES / "param_wave_2d.f90").read_text()
    (k,) = translate_source(
        source, filename="param_wave_2d.f90", kernel="param_wave_2d_loop4"
    ).kernels
    assert k.status == "verified", [d.message for d in k.diagnostics]
    assert k.coverage["loops_run"] == k.coverage["loops"] == 5
    # 2000 steps of 401 x 401 are over even a compiled run's budget: the CPU run shrinks too.
    assert k.sizes == {"nx": 13, "ny": 11, "nstep": 9}
    for note in (
        "PARAMETER nx = 401 shrunk to 13 for the CPU run",
        "PARAMETER ny = 401 shrunk to 11 for the CPU run",
        "PARAMETER nstep = 2000 shrunk to 9 for the CPU run",
    ):
        assert note in k.notes
    (why,) = [n for n in k.notes if n.startswith("why:")]
    assert "isrc 200 -> 6" in why and "jrec 203 -> 8" in why  # derived PARAMETERs followed
    # The delivered port is the one generated from the source as written, not the run's.
    (plain,) = translate_source(
        source, filename="param_wave_2d.f90", kernel="param_wave_2d_loop4", verify=False
    ).kernels
    assert k.code == plain.code and "range(1, 2001)" in k.code


REFUSED = """program refused
  implicit none
  integer, parameter :: n = 30, nt = 400
  real(8), parameter :: h = 1.0d0 / n
  real(8) :: x(n)
  integer :: i, it
  do it = 1, nt
    do i = 1, n
      x(i) = x(i) + h * dble(i)
    end do
  end do
  print *, x(1)
end program refused
"""


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_a_parameter_behind_a_real_constant_keeps_its_value_and_size_asks_for_the_others():
    # Under the CPU budget nothing shrinks by itself; --size sets a PARAMETER for the run when
    # it is only a size (nt), never when it enters floating-point arithmetic (n, via h = 1/n).
    (k,) = translate_source(REFUSED, filename="refused.f90", sizes={"nt": 2, "n": 5}).kernels
    assert k.status == "verified", [d.message for d in k.diagnostics]
    assert k.sizes == {"nt": 2}
    assert "PARAMETER nt = 400 shrunk to 2 for the CPU run" in k.notes
    assert "PARAMETER n = 30 not shrunk: the non-integer PARAMETER h is computed from it" in k.notes
    (plain,) = translate_source(REFUSED, filename="refused.f90").kernels
    assert plain.status == "verified" and plain.sizes == {}
    assert not any("PARAMETER" in n for n in plain.notes)


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_parameter_extents_over_the_byte_cap_are_shrunk_and_under_it_kept(monkeypatch):
    source = (FIXTURES / "param_grid_3d.f90").read_text()
    (as_written,) = translate_source(source, filename="param_grid_3d.f90").kernels
    assert as_written.status == "verified" and as_written.sizes == {}  # 2.5e6 statements: fine
    assert not any("PARAMETER" in n for n in as_written.notes)
    # Two 66 x 50 x 42 real(8) arrays take 2.2 MB: over a 1 MB cap, the run shrinks them.
    monkeypatch.setenv("FORTRANSPIRE_MAX_RUN_BYTES", "1000000")
    (k,) = translate_source(source, filename="param_grid_3d.f90").kernels
    assert k.status == "verified", [d.message for d in k.diagnostics]
    assert k.sizes == {"nx": 13, "ny": 11, "nz": 9, "nsweep": 3}
    (why,) = [n for n in k.notes if n.startswith("why:")]
    assert "one run may use at most 1.0 MiB" in why


UNUSED_REAL = """program unused_real
  implicit none
  integer, parameter :: n = 300, nt = 400
  real(8), parameter :: xmid = 0.5d0 * (n - 1)
  real(8) :: x(n)
  integer :: i, it
  do it = 1, nt
    do i = 1, n
      x(i) = x(i) + 1.0d-3 * dble(i)
    end do
  end do
  print *, x(1), xmid
end program unused_real
"""


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_a_real_parameter_computed_from_a_size_but_unused_by_the_kernel_does_not_block_it():
    # xmid = 0.5 * (n - 1) is a number, but the nest never reads it: n may shrink for the run.
    (k,) = translate_source(UNUSED_REAL, filename="u.f90", sizes={"n": 6, "nt": 2}).kernels
    assert k.status == "verified", [d.message for d in k.diagnostics]
    assert k.sizes == {"n": 6, "nt": 2}
    assert "PARAMETER n = 300 shrunk to 6 for the CPU run" in k.notes


@pytest.fixture
def port_sandboxes(monkeypatch):
    """Every PortSandbox the pipeline starts, and whether the source had been parsed by then."""
    from kernels.engine import pipeline, verify

    started: list[tuple[verify.PortSandbox, bool]] = []
    parsed: list[bool] = []
    real_start, real_parse = verify.PortSandbox.start, pipeline.find_project_kernels_and_exclusions

    def start(**kwargs):
        port = real_start(**kwargs)
        started.append((port, bool(parsed)))
        return port

    def parse(*args, **kwargs):
        parsed.append(True)
        return real_parse(*args, **kwargs)

    monkeypatch.setattr(verify.PortSandbox, "start", staticmethod(start))
    monkeypatch.setattr(pipeline, "find_project_kernels_and_exclusions", parse)
    return started


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_the_first_ports_sandbox_starts_before_the_parse_and_each_kernel_uses_one(
    port_sandboxes,
):
    result = translate_source(TWO_KERNELS, sizes={"n": 7})
    assert [k.status for k in result.kernels] == ["verified", "verified"]
    assert [parsed_already for _, parsed_already in port_sandboxes] == [False, True]
    for port, _ in port_sandboxes:
        ran = port.process.finish()
        assert ran.returncode == 0 and "elapsed_s" in ran.stdout  # it ran a port, not killed
        assert not port.workdir.exists()
    assert all("port_start" in k.timings_ms for k in result.kernels)


def test_a_port_sandbox_started_for_a_file_that_does_not_parse_is_ended(port_sandboxes):
    with pytest.raises(FortranSyntaxError):
        translate_source("subroutine s(x)\n  real :: x\n  x = = 1\nend subroutine s\n")
    ((port, parsed_already),) = port_sandboxes
    assert not parsed_already
    assert port.process.finish().returncode == -signal.SIGKILL
    assert not port.workdir.exists()


def test_no_port_sandbox_starts_without_verification(port_sandboxes):
    translate_source(TWO_KERNELS, verify=False)
    assert port_sandboxes == []
