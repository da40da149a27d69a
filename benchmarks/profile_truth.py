"""``profile --measure`` with no ``--size``: the figures a new user would see, recorded.

    .venv/bin/python benchmarks/profile_truth.py          # writes benchmarks/results/profile-measure.json
    .venv/bin/python benchmarks/profile_truth.py --quick  # 60 s per fixture: profile-measure-quick.json

For each fixture it runs ``profile_source(..., measure=True)`` without sizes, which is the path of
``fortranspire profile FILE --measure``: the machine is probed (STREAM triad and FMA peak on 1 and
all threads), the sizes are chosen per kernel (working set past the last-level cache within the
sandbox's byte cap, one call of about 20 ms), every variant is timed adaptively in the sandboxed
harness, parallel variants at 1..N threads, and gfortran -fopenmp too where the original has
OpenMP directives. The summary printed (and stored under ``summary``) gives per kernel: the sizes
chosen and the working set, the median time of each variant with its 95 % interval, the % of the
measured STREAM triad, the prange speed-up on 2 threads, and, on the OpenMP fixture, gfortran
-fopenmp against numba prange at the same thread counts. The load average is recorded before
and after each case: on a shared machine it says how far to trust the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures" / "fortran"
CASES = ("heat2d_jacobi.f90", "cpml_elastic_2d.f90", "omp_jacobi2d.f90")


def _summary(data: dict) -> list[dict]:
    rows = []
    for k in data["kernels"]:
        measured = k.get("measured") or {}
        row: dict = {
            "kernel": k["name"],
            "sizes": (k.get("measure_sizes") or {}).get("sizes"),
            "working_set_mib": (k.get("measure_sizes") or {}).get("working_set_mib"),
            "size_notes": (k.get("measure_sizes") or {}).get("notes", []),
            "openmp_in_original": (k.get("openmp") or {}).get("directives"),
            "variants": {},
        }
        for v, t in measured.items():
            if t["status"] != "ok":
                row["variants"][v] = {"status": t["status"], "message": t["message"]}
                if t["status"] == "model" and t["median_s"] is not None:
                    row["variants"][v]["median_ms"] = round(t["median_s"] * 1e3, 3)
                continue
            row["variants"][v] = {
                "threads": t["threads"],
                "median_ms": round(t["median_s"] * 1e3, 3),
                "ci_ms": [round(t["ci_low_s"] * 1e3, 3), round(t["ci_high_s"] * 1e3, 3)],
                "repeats": t["repeats"],
                "spread_pct": t["spread_pct"],
                "stream_pct": t["stream_pct"],
                "vs_gfortran": t["speedup_vs_gfortran"],
                "compared_with": t["compared_with"],
                "warnings": t["warnings"],
            }
            two = next((r for r in t.get("scaling") or [] if r["threads"] == 2), None)
            if two is not None:
                row["variants"][v]["speedup_2_threads"] = two["speedup"]
                if "vs_gfortran_omp" in two:
                    row["variants"][v]["vs_gfortran_omp_2_threads"] = two["vs_gfortran_omp"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    from kernels.engine.profile import profile_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per fixture")
    ap.add_argument("--quick", action="store_true", help="60 s per fixture (a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    timeout = 60.0 if args.quick else args.timeout
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"cases": [], "summary": []}
    for name in CASES:
        load_before = os.getloadavg()
        started = time.monotonic()
        result = profile_source(
            (FIXTURES / name).read_text(), filename=name, measure=True, timeout_s=timeout
        )
        data = result.to_dict()
        case = {
            "file": name,
            "wall_s": round(time.monotonic() - started, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "stream": data["stream"],
            "summary": _summary(data),
        }
        report["machine"] = data["machine"]
        report["cases"].append(data)
        report["summary"].append(case)
        print(json.dumps(case, indent=2))
    path = out_dir / f"profile-measure{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
