"""Reports shaped for the templates: numbers as short text, profile rankings as table rows."""

from __future__ import annotations

from typing import Any

VARIANT_LABELS = {
    "gfortran": "gfortran -O3",
    "numba_serial": "numba serial",
    "numba_prange": "numba prange",
    "numba_cuda": "numba.cuda",
}


def fmt_number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if value == int(value) and abs(value) < 1e9:
            return str(int(value))
        return f"{value:.3g}"
    return str(value)


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "–"
    if value < 1e-3:
        return f"{value * 1e6:.3g} µs"
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


def profile_context(*, report: dict, run=None, run_id: str | None = None) -> dict:
    """What ``dashboard/_profile_result.html`` shows: the ranking table and measured timings."""
    kernels = []
    for k in report.get("kernels") or []:
        measured = []
        for variant, timing in (k.get("measured") or {}).items():
            measured.append(
                {
                    "variant": VARIANT_LABELS.get(variant, variant),
                    "status": timing.get("status", ""),
                    "median": _seconds(timing.get("median_s")),
                    "spread": fmt_number(timing.get("spread_pct")),
                    "gflops": fmt_number(timing.get("gflops")),
                    "bandwidth": fmt_number(timing.get("bandwidth_gbs")),
                    "stream_pct": fmt_number(timing.get("stream_pct")),
                    "speedup": fmt_number(timing.get("speedup_vs_gfortran")),
                    "message": timing.get("message", ""),
                }
            )
        kernels.append(
            {
                "rank": k.get("rank", 0),
                "name": k.get("name", ""),
                "line": k.get("line", 0),
                "share_pct": round(100 * float(k.get("share") or 0), 1),
                "estimated": _seconds(k.get("estimated_s")),
                "trip_count": k.get("trip_count_symbolic", ""),
                "flops": fmt_number(k.get("flops")),
                "bytes": fmt_number(k.get("bytes")),
                "intensity": fmt_number(k.get("intensity")),
                "bound": k.get("bound", ""),
                "parallel": k.get("parallel", False),
                "reason": k.get("reason", ""),
                "measured": measured,
                "notes": list(k.get("notes") or []),
            }
        )
    kernels.sort(key=lambda k: k["rank"] or 1_000_000)
    return {
        "run": run,
        "run_id": str(run.id) if run is not None else run_id,
        "file": report.get("file", ""),
        "measured": bool(report.get("measured")),
        "kernels": kernels,
        "machine": report.get("machine") or {},
    }
