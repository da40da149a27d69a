"""``timing_lanes``: a kernel's ``timings_ms`` laid out as a bar, for the run page (no JS).

The translator stages run one after the other; the port's sandbox starts with them
(``port_start``, in the second lane from 0). Then the gfortran side (compile, reference run) and
the numba side (compile, port run, once the port's sandbox is ready too) run at the same time, in
two lanes; ``compare`` starts when both are done. Each segment gets its offset and width as a
percentage of that critical path.
"""

from __future__ import annotations

from typing import Any

from django import template

from kernels.engine.report import TIMING_STAGES

register = template.Library()

_SEQUENTIAL_BEFORE = ("parse", "analyse", "generate")
_GFORTRAN_SIDE = ("gfortran_compile", "reference_run")
_NUMBA_SIDE = ("numba_compile", "port_run")


@register.filter
def timing_lanes(timings_ms: Any) -> dict[str, Any] | None:
    """``{"total_ms", "lanes": [[{stage, label, ms, left, width}]]}``, or None without timings."""
    if not isinstance(timings_ms, dict):
        return None
    ms = {
        s: float(v)
        for s, v in timings_ms.items()
        if s in TIMING_STAGES and isinstance(v, (int, float)) and v >= 0
    }
    if not ms:
        return None
    lanes: list[list[tuple[str, float, float]]] = [[], []]
    clock = 0.0
    for stage in _SEQUENTIAL_BEFORE:
        if stage in ms:
            lanes[0].append((stage, clock, ms[stage]))
            clock += ms[stage]
    side_end = clock
    port_ready = 0.0
    if "port_start" in ms:
        lanes[1].append(("port_start", 0.0, ms["port_start"]))
        port_ready = ms["port_start"]
    for lane, stages in ((0, _GFORTRAN_SIDE), (1, _NUMBA_SIDE)):
        at = clock if lane == 0 else max(clock, port_ready)
        for stage in stages:
            if stage in ms:
                lanes[lane].append((stage, at, ms[stage]))
                at += ms[stage]
        side_end = max(side_end, at)
    if "compare" in ms:
        lanes[0].append(("compare", side_end, ms["compare"]))
        side_end += ms["compare"]
    total = max(side_end, 1e-9)
    return {
        "total_ms": round(total),
        "lanes": [
            [
                {
                    "stage": stage,
                    "label": stage.replace("_", " "),
                    "ms": round(value),
                    "left": round(100.0 * start / total, 2),
                    "width": max(round(100.0 * value / total, 2), 0.3),
                }
                for stage, start, value in lane
            ]
            for lane in lanes
            if lane
        ],
    }
