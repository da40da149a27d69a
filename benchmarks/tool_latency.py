"""Expected latency of each MCP tool's work, for the connector listing.

    .venv/bin/python benchmarks/tool_latency.py     # writes benchmarks/results/tool-latency.json

Times what each tool's call spends in the engine, one call at a time (no contention from this
benchmark itself), on two sources: a small 1-D kernel (saxpy,
below) and the ~100-line CPML demo. Verification compiles the original with
gfortran and JIT-compiles the port, so a first call costs more than a repeat; both are kept.
GPU ports are verified on numba's CUDA simulator when the machine has no GPU (``device`` says
which). The HTTP and MCP framing around a call is measured separately by benchmarks/mcp_load.py
(tools/list round trip); mcp_bridge/manifest.py adds the two.

The load average is recorded next to the figures: on a shared machine they measure the other
processes too.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures" / "fortran"
RESULTS = ROOT / "benchmarks" / "results"
OUTPUT = RESULTS / "tool-latency.json"

SMALL = """\
! saxpy: one parallel loop, real(4): the smallest useful kernel.
subroutine saxpy(n, a, x, y)
  integer, intent(in) :: n
  real, intent(in) :: a
  real, intent(in) :: x(n)
  real, intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = a * x(i) + y(i)
  end do
end subroutine saxpy
"""


def _timed(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return {
        "first_s": round(times[0], 4),
        "median_s": round(statistics.median(times), 4),
        "repeats": repeats,
        "result": result,
    }


def main() -> int:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    from kernels.engine import translate_source
    from kernels.engine.profile import profile_source

    cpml = (FIXTURES / "cpml_elastic_2d.f90").read_text()
    cases = {"small": (SMALL, {"n": 1000}), "cpml": (cpml, None)}
    load_start = os.getloadavg()
    tools: dict[str, dict] = {}
    for case, (source, sizes) in cases.items():
        for tool, target in (("translate_kernel", "cpu"), ("translate_kernel_gpu", "gpu")):
            for verify in (False, True):

                def run(source=source, target=target, verify=verify, sizes=sizes):
                    result = translate_source(
                        source, target=target, verify=verify, sizes=sizes
                    ).to_dict()
                    return sorted({(k["status"], k["device"]) for k in result["kernels"]})

                repeats = 2 if verify else 5
                measured = _timed(run, repeats)
                statuses = measured.pop("result")
                key = f"{case}_verify" if verify else f"{case}_no_verify"
                tools.setdefault(tool, {})[key] = {
                    **measured,
                    "statuses": [list(s) for s in statuses],
                }
                print(tool, key, measured, flush=True)
        measured = _timed(
            lambda source=source, sizes=sizes: bool(profile_source(source, sizes=sizes).kernels), 5
        )
        measured.pop("result")
        tools.setdefault("profile_kernels", {})[case] = measured
        print("profile_kernels", case, measured, flush=True)
    report = {
        "benchmark": "tool_latency",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": [round(x, 2) for x in load_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "what": "engine time per tool call, one call at a time; add the MCP round trip "
        "from mcp-load.json",
        "tools": tools,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
