"""Translation time per kernel, without verification (target: < 0.3 s for a ~100-line kernel).

    .venv/bin/python benchmarks/translate_speed.py     # writes benchmarks/results/translate_speed.json

Every fixture of tests/fixtures/fortran/ that is expected to translate is run through
``translate_source(..., verify=False)`` (parse + analyse + generate; no gfortran, no numba JIT).
One warm-up pass loads fparser and the engine modules, then each file is translated ``REPEATS``
times and the median wall time is divided by the number of kernels in the file. The process CPU
time is reported too and decides the target: on a shared 2-core machine the wall time mostly
measures the other processes. The CPML demo
(cpml_elastic_2d.f90: one subroutine of ~110 lines) is the "100-line kernel" of the target.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures" / "fortran"
RESULTS = ROOT / "benchmarks" / "results"
REPEATS = 5
TARGET_S = 0.3
HUNDRED_LINE_KERNEL = "cpml_elastic_2d.f90"


def _translatable(path: Path) -> bool:
    m = re.search(r"^[!cC*]\s*expect:\s*([a-z-]+)", path.read_text(), re.M)
    return m is not None and m.group(1) in ("verified", "unsupported")


def _code_lines(text: str) -> int:
    return sum(1 for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("!"))


def main() -> int:
    from kernels.engine import translate_source

    files = sorted(p for p in FIXTURES.iterdir() if p.is_file() and _translatable(p))
    for path in files:  # warm-up: imports, fparser's class tables
        translate_source(path.read_text(), filename=path.name, verify=False)

    rows = []
    for path in files:
        source = path.read_text()
        times, cpu_times = [], []
        kernels = 0
        for _ in range(REPEATS):
            t0, c0 = time.perf_counter(), time.process_time()
            result = translate_source(source, filename=path.name, verify=False)
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
            kernels = len(result.kernels)
        median = statistics.median(times)
        cpu = statistics.median(cpu_times)
        rows.append(
            {
                "file": path.name,
                "lines": _code_lines(source),
                "kernels": kernels,
                "statuses": sorted({k.status for k in result.kernels}),
                "median_s": median,
                "per_kernel_s": median / max(kernels, 1),
                "min_s": min(times),
                "cpu_median_s": cpu,
                "cpu_per_kernel_s": cpu / max(kernels, 1),
            }
        )

    demo = next(r for r in rows if r["file"] == HUNDRED_LINE_KERNEL)
    summary = {
        "benchmark": "translate_speed",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeats": REPEATS,
        "files": len(rows),
        "kernels": sum(r["kernels"] for r in rows),
        "median_per_kernel_s": statistics.median(r["per_kernel_s"] for r in rows),
        "max_per_kernel_s": max(r["per_kernel_s"] for r in rows),
        "hundred_line_kernel": {
            "file": demo["file"],
            "lines": demo["lines"],
            "seconds": demo["per_kernel_s"],
            "min_seconds": demo["min_s"] / max(demo["kernels"], 1),
            "cpu_seconds": demo["cpu_per_kernel_s"],
            "target_s": TARGET_S,
            "meets_target": demo["cpu_per_kernel_s"] < TARGET_S,
        },
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "translate_speed.json"
    out.write_text(json.dumps(summary, indent=2))

    width = max(len(r["file"]) for r in rows)
    for r in rows:
        print(
            f"{r['file']:<{width}}  {r['lines']:4d} lines  {r['kernels']} kernel(s)  {r['per_kernel_s'] * 1000:7.1f} ms/kernel (cpu {r['cpu_per_kernel_s'] * 1000:.1f} ms)"
        )
    ok = demo["cpu_per_kernel_s"] < TARGET_S
    print(
        f"\n{demo['file']} ({demo['lines']} code lines): median wall {demo['per_kernel_s'] * 1000:.1f} ms, "
        f"min wall {demo['min_s'] * 1000:.1f} ms, median CPU {demo['cpu_per_kernel_s'] * 1000:.1f} ms "
        f"(target < {TARGET_S * 1000:.0f} ms) -> {'OK' if ok else 'MISSED'}"
    )
    print(
        f"median over {summary['kernels']} kernels: {summary['median_per_kernel_s'] * 1000:.1f} ms; wrote {out}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
