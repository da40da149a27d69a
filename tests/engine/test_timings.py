"""Stage timings: every kernel reports where its time went, and progress carries each stage."""

from __future__ import annotations

import shutil
import time

import pytest

from kernels.engine import translate_source
from kernels.engine.report import TIMING_STAGES

SCALE = """
subroutine scale(n, a, y)
  integer, intent(in) :: n
  real(8), intent(in) :: a
  real(8), intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = a * y(i)
  end do
end subroutine scale
"""

needs_gfortran = pytest.mark.skipif(
    shutil.which("gfortran") is None, reason="gfortran is not installed"
)


def test_translation_without_verification_times_only_the_translator_stages():
    result = translate_source(SCALE, verify=False)
    timings = result.kernels[0].timings_ms
    assert set(timings) == {"parse", "analyse", "generate"}
    assert all(v >= 0 for v in timings.values())
    assert result.to_dict()["kernels"][0]["timings_ms"] == timings
    assert result.to_dict()["kernels"][0]["cached"] is False


@needs_gfortran
def test_verified_kernel_reports_every_stage_and_they_add_up_to_the_wall_time():
    messages: list[tuple[str, int, int, str]] = []
    started = time.perf_counter()
    result = translate_source(SCALE, sizes={"n": 17}, progress=lambda *args: messages.append(args))
    wall_ms = (time.perf_counter() - started) * 1000.0
    kernel = result.kernels[0]
    assert kernel.status == "verified"
    timings = kernel.timings_ms
    assert list(timings) == list(TIMING_STAGES)
    assert all(v >= 0 for v in timings.values())
    # numba compiles for real here (no cache dir): that cannot take under a millisecond.
    assert timings["numba_compile"] > 1.0
    # The port's sandbox starts with the request; the gfortran side and the numba side overlap:
    # the critical path fits in the wall time, and the stages account for (most of) it.
    translator = timings["parse"] + timings["analyse"] + timings["generate"]
    gfortran_side = timings["gfortran_compile"] + timings["reference_run"]
    numba_side = timings["numba_compile"] + timings["port_run"]
    critical = (
        max(translator + gfortran_side, max(timings["port_start"], translator) + numba_side)
        + timings["compare"]
    )
    assert critical <= wall_ms + 5.0
    assert sum(timings.values()) >= 0.8 * wall_ms

    verify_messages = [m for m in messages if m[0] == "verify"]
    for stage in TIMING_STAGES[3:]:
        label = stage.replace("_", " ")
        sent = [m for m in verify_messages if f"scale: {label} " in m[3]]
        assert len(sent) == 1, stage
        assert sent[0][3].endswith(" ms")
    # Progress only moves forward (MCP drops updates that do not).
    fractions = [done / total for _, done, total, _ in verify_messages if total]
    assert fractions == sorted(fractions)
