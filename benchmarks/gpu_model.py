"""Modeled GPU traffic and launches of the generated numba.cuda code, before and after issue 16.

    .venv/bin/python benchmarks/gpu_model.py            # writes benchmarks/results/gpu-model.json
    .venv/bin/python benchmarks/gpu_model.py --copy-bandwidth 4.8e12   # e.g. an H200

No GPU is needed: every figure comes from the engine's traffic model
(``kernels/engine/gpu_model.py``, whose docstring states the formulas) applied to the launch plan
of the code the CUDA backend generates, at the full sizes:

- ``heat2d``: tests/fixtures/fortran/heat2d_jacobi.f90 at 8192^2 (Jacobi nest + copy-back nest);
- ``stencil3d``: a 7-point Jacobi step at 512^3 with a copy-back, :data:`STENCIL3D_STEPS`;
- ``stencil3d_pingpong``: the two-sweep ping-pong form benchmarks/gpu_bandwidth.py times
  (``a -> b``, ``b -> a``): no copy to remove, so it shows what the transformations leave;
- ``cpml``: tests/fixtures/fortran/cpml_elastic_2d.f90, the demo, at 4096^2 (100 steps).

"before" is the code as it was generated before issue 16: whole-array copies launched as
kernels, only one-dimensional nests fused, launches typed at every call (no explicit
signatures). "after" is today's: buffer swaps, fusion of independent nests of any rank, kernels
compiled for explicit signatures. Targets: bytes ratio <= 1.1 and predicted fraction of copy
bandwidth >= 0.80. The script also checks that every "after" port still verifies against
gfortran at small sizes on the CUDA simulator (``--no-verify`` skips that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "fortran"
RESULTS = ROOT / "benchmarks" / "results"
TARGET_RATIO = 1.1
TARGET_FRACTION = 0.80

STENCIL3D_STEPS = (ROOT / "tests" / "fixtures" / "gpu_model" / "heat3d_steps.f90").read_text()

WORKLOADS: dict[str, dict[str, Any]] = {
    "heat2d": {
        "file": "heat2d_jacobi.f90",
        "sizes": {"n": 8192, "m": 8192, "nstep": 100},
        "small": {"n": 19, "m": 13, "nstep": 3},
    },
    "stencil3d": {
        "source": STENCIL3D_STEPS,
        "sizes": {"n": 512, "m": 512, "l": 512, "nstep": 100},
        "small": {"n": 9, "m": 7, "l": 6, "nstep": 3},
    },
    "stencil3d_pingpong": {
        "source": "pingpong",
        "sizes": {"n": 512, "m": 512, "l": 512, "nstep": 100},
        "small": {"n": 9, "m": 7, "l": 6, "nstep": 2},
    },
    "cpml": {
        "file": "cpml_elastic_2d.f90",
        "sizes": {"nx": 4096, "ny": 4096, "nstep": 100},
        "small": {"nx": 19, "ny": 13, "nstep": 2},
    },
}


def _source(spec: dict[str, Any]) -> tuple[str, str]:
    if "file" in spec:
        return (FIXTURES / spec["file"]).read_text(), spec["file"]
    if spec["source"] == "pingpong":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from gpu_bandwidth import STENCIL3D_SOURCE

        return STENCIL3D_SOURCE, "jacobi3d_steps.f90"
    return spec["source"], "heat3d_steps.f90"


def _figures(model) -> dict[str, Any]:
    return {
        "bytes_per_step": model.bytes_per_step,
        "min_bytes_per_step": model.min_bytes_per_step,
        "bytes_ratio": model.bytes_ratio,
        "launches_per_step": model.launches_per_step,
        "host_launch_cost_per_step_s": model.host_launch_cost_per_step_s,
        "predicted_copy_bandwidth_fraction": model.predicted_copy_bandwidth_fraction,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copy-bandwidth", type=float, default=None, help="bytes/s (read+write)")
    parser.add_argument("--no-verify", action="store_true", help="skip the simulator check")
    parser.add_argument("--output", type=Path, default=RESULTS / "gpu-model.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")  # the small verification runs
    sys.path.insert(0, str(ROOT))
    from kernels.engine import find_kernels, gpu_model, translate_source
    from kernels.engine.analysis import analyse
    from kernels.engine.backends.cuda import generate_cuda

    bandwidth = args.copy_bandwidth or gpu_model.DEFAULT_COPY_BANDWIDTH_BPS
    result: dict[str, Any] = {
        "benchmark": "gpu_model",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "copy_bandwidth_Bps": bandwidth,
        "targets": {"bytes_ratio_max": TARGET_RATIO, "predicted_fraction_min": TARGET_FRACTION},
        "constants": {
            "launch_dispatch_s": gpu_model.LAUNCH_DISPATCH_S,
            "launch_per_array_arg_s": gpu_model.LAUNCH_PER_ARRAY_ARG_S,
            "launch_per_scalar_arg_s": gpu_model.LAUNCH_PER_SCALAR_ARG_S,
            "type_dispatch_per_arg_s": gpu_model.TYPE_DISPATCH_PER_ARG_S,
            "device_launch_gap_s": gpu_model.DEVICE_LAUNCH_GAP_S,
        },
        "workloads": {},
    }
    for name, spec in WORKLOADS.items():
        source, filename = _source(spec)
        row: dict[str, Any] = {"sizes": spec["sizes"]}
        for label, options in (
            ("before", {"swap_buffers": False, "fuse_nests": False}),
            ("after", {}),
        ):
            (kernel,) = find_kernels(source, filename=filename)
            analyse(kernel)
            generated = generate_cuda(kernel, **options)
            plan = generated.launch_plan
            plan.eager_signatures = label == "after"
            model = gpu_model.evaluate(plan, spec["sizes"], copy_bandwidth=bandwidth)
            row[label] = _figures(model)
            if label == "after":
                row["transformations"] = [
                    n for n in generated.notes if "swapped" in n or "fused" in n
                ]
        after = row["after"]
        row["meets_ratio_target"] = (after["bytes_ratio"] or 99) <= TARGET_RATIO
        row["meets_fraction_target"] = (
            after["predicted_copy_bandwidth_fraction"] or 0
        ) >= TARGET_FRACTION
        if not args.no_verify:
            t0 = time.perf_counter()
            (k,) = translate_source(
                source, filename=filename, target="gpu", sizes=spec["small"]
            ).kernels
            row["small_verification"] = {
                "sizes": spec["small"],
                "status": k.status,
                "device": k.device,
                "max_rel_err": k.max_rel_err,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        result["workloads"][name] = row
        b, a = row["before"], row["after"]
        print(
            f"{name:19s} bytes ratio {b['bytes_ratio']:.3f} -> {a['bytes_ratio']:.3f}   "
            f"launches/step {b['launches_per_step']} -> {a['launches_per_step']}   "
            f"predicted {100 * b['predicted_copy_bandwidth_fraction']:5.1f}% -> "
            f"{100 * a['predicted_copy_bandwidth_fraction']:5.1f}% of copy"
            + (
                f"   [{row['small_verification']['status']}]" if "small_verification" in row else ""
            ),
            flush=True,
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
