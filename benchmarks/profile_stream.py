"""Measured profile of the stencil fixtures: gfortran vs numba serial/prange vs STREAM.

    .venv/bin/python benchmarks/profile_stream.py            # writes benchmarks/results/profile-stream.{json,png}
    .venv/bin/python benchmarks/profile_stream.py --quick    # small sizes, a smoke run

For each case it runs ``profile_source(..., measure=True)`` (the same path as
``fortranspire profile FILE --measure``): every variant runs in the sandboxed subprocess, one
warm-up call excluded (numba's JIT), then ``--repeats`` timed calls; the median and the spread
(max-min)/median are reported, and each variant's achieved bandwidth (model bytes / median time)
as a percentage of a STREAM triad measured in the same run (serial triad for gfortran and numba
serial, all-threads triad for prange).

The sizes are chosen so that the working set (two or three float64 grids) exceeds a typical L2
but, on the 2-core CI machine, each case stays within a few seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures" / "fortran"
CASES = {
    "heat2d_jacobi.f90": {"n": 1024, "m": 1024, "nstep": 4},
    "stencil3d_7pt.f90": {"n": 128, "m": 128, "l": 128},
    "cpml_elastic_2d.f90": {"nx": 512, "ny": 512, "nstep": 4},
}
QUICK = {
    "heat2d_jacobi.f90": {"n": 256, "m": 256, "nstep": 2},
    "stencil3d_7pt.f90": {"n": 48, "m": 48, "l": 48},
    "cpml_elastic_2d.f90": {"nx": 128, "ny": 128, "nstep": 2},
}


def main(argv: list[str] | None = None) -> int:
    from kernels.engine.plot import write_plot
    from kernels.engine.profile import profile_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    cases = QUICK if args.quick else CASES
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": None, "stream": None, "cases": []}
    for name, sizes in cases.items():
        result = profile_source(
            (FIXTURES / name).read_text(),
            filename=name,
            sizes=sizes,
            measure=True,
            repeats=args.repeats,
            timeout_s=300,
        )
        data = result.to_dict()
        report["machine"] = data["machine"]
        report["stream"] = data["stream"]
        report["cases"].append(data)
        stem = Path(name).stem
        write_plot(result, out_dir / f"profile-{stem}{'-quick' if args.quick else ''}.png")
        for k in data["kernels"]:
            print(f"\n{name} {k['name']} sizes={k['sizes']}")
            print(
                f"  model: {k['flops']:.3g} flop, {k['bytes']:.3g} B, "
                f"{k['intensity']} flop/B, parallel={k['parallel']}"
            )
            print(
                f"  {'variant':<14}{'median':>12}{'spread':>9}{'GB/s':>9}{'%STREAM':>9}{'x gfortran':>12}"
            )
            for v, t in (k.get("measured") or {}).items():
                if t["status"] != "ok":
                    print(f"  {v:<14}{t['status']}: {t['message'][:80]}")
                    continue
                print(
                    f"  {v:<14}{t['median_s'] * 1e3:>10.3f}ms{t['spread_pct']:>8.1f}%"
                    f"{t['bandwidth_gbs']:>9.2f}{t['stream_pct'] or 0:>8.1f}%"
                    f"{t['speedup_vs_gfortran'] or 0:>11.2f}x"
                )
    stream = report["stream"] or {}
    print(
        f"\nSTREAM triad (best of repeats): serial {stream.get('triad_serial_gbs')} GB/s, "
        f"{stream.get('threads')} threads {stream.get('triad_parallel_gbs')} GB/s "
        f"on {platform.node()} ({report['machine']['cpu'] if report['machine'] else '?'})"
    )
    path = out_dir / f"profile-stream{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
