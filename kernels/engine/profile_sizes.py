"""Sizes that measure something: scale a valid size assignment up to a working-set target.

Verification runs kernels at tiny sizes (a few hundred elements) so that every branch is
exercised quickly. Timed at those sizes a kernel measures call overhead and thread start-up, not
the code. ``profile --measure`` therefore picks, per kernel and unless the user gave ``--size``:

* a **working set** (the bytes of the arguments) past the last-level cache, ``LLC_FACTOR``
  times its size, so that the data streams from memory as it would in a real run;
* a **call time** of at least ``MIN_CALL_S``, by raising the kernel's time-loop counts (an
  integer argument that bounds a loop whose variable subscripts no array, such as ``nstep``);
  with no such argument the arrays grow further instead, and when the cap stops them the
  measuring side takes more repeats;
* within the **memory cap** (the sandbox's byte cap on one run's input arrays,
  ``FORTRANSPIRE_MAX_RUN_BYTES``) and the **time budget** (every planned call at the predicted
  time must fit).

The search keeps the ratios of the starting assignment (a valid one: loops run, bounds stay in
their declarations): every dimension argument is scaled by the same factor, the largest one
taking each integer value in turn, so the result is the smallest such scaling that meets the
target. Everything here is pure; the caller supplies the working set and the predicted time of
a candidate assignment, and the cache sizes come from :func:`read_cpu_caches` (or a fake).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSFS_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")
LLC_FACTOR = 4  # a working set 4x the last-level cache leaves little of it resident
MIN_CALL_S = 0.020  # below ~20 ms a call is dominated by timer and dispatch noise
FALLBACK_LLC_BYTES = 32 << 20  # when the machine does not say (no sysfs): a common server L3
MAX_REPEAT_BOOST = 50


@dataclass(frozen=True)
class CacheLevel:
    level: int
    type: str  # 'Data' | 'Instruction' | 'Unified'
    size_bytes: int
    shared_cpus: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "type": self.type,
            "size_kib": self.size_bytes // 1024,
            "shared_cpus": self.shared_cpus,
        }


def _parse_size(text: str) -> int:
    """sysfs cache sizes: ``48K``, ``2048K``, ``300M`` (binary units), or plain bytes."""
    text = text.strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def read_cpu_caches(root: Path = SYSFS_CACHE_DIR) -> list[CacheLevel]:
    """The caches of CPU 0 as the kernel reports them (empty when sysfs does not have them)."""
    out = []
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _parse_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        shared = index / "shared_cpu_list"
        shared_text = shared.read_text().strip() if shared.exists() else ""
        out.append(CacheLevel(level, kind, size, shared_text))
    return sorted(out, key=lambda c: (c.level, c.type))


def last_level_cache_bytes(caches: Sequence[CacheLevel]) -> int | None:
    """Size of the highest-level data or unified cache, None when none is known."""
    data = [c for c in caches if c.type in ("Data", "Unified")]
    if not data:
        return None
    top = max(c.level for c in data)
    return max(c.size_bytes for c in data if c.level == top)


@dataclass
class SizeChoice:
    """The sizes ``--measure`` uses for one kernel and why."""

    sizes: dict[str, int]
    working_set_bytes: int
    target_bytes: int
    llc_bytes: int
    predicted_call_s: float | None
    min_repeats: int
    notes: list[str] = field(default_factory=list)

    @property
    def working_set_mib(self) -> float:
        return round(self.working_set_bytes / (1 << 20), 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizes": dict(self.sizes),
            "working_set_mib": self.working_set_mib,
            "target_mib": round(self.target_bytes / (1 << 20), 2),
            "llc_mib": round(self.llc_bytes / (1 << 20), 2),
            "exceeds_llc": self.working_set_bytes > self.llc_bytes,
            "predicted_call_s": self.predicted_call_s,
            "min_repeats": self.min_repeats,
            "notes": list(self.notes),
        }


def _scaled(base: Mapping[str, int], dims: Sequence[str], top: int) -> dict[str, int]:
    """``base`` with every dimension scaled so that the largest one becomes ``top``."""
    largest = max(base[d] for d in dims)
    out = dict(base)
    for d in dims:
        out[d] = max(base[d], round(base[d] * top / largest))
    return out


def _smallest_top(ok: Callable[[int], bool], lo: int, hi: int) -> int:
    """Smallest ``t`` in ``[lo, hi]`` with ``ok(t)`` (``ok`` monotone); ``hi`` when none is."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def choose_measure_sizes(
    base: Mapping[str, int],
    *,
    dim_vars: Sequence[str],
    time_vars: Sequence[str],
    working_set: Callable[[Mapping[str, int]], int],
    predict_call_s: Callable[[Mapping[str, int]], float | None],
    llc_bytes: int | None,
    memory_cap_bytes: int,
    budget_s: float = 300.0,
    planned_calls: int = 50,
    min_repeats: int = 5,
    llc_factor: int = LLC_FACTOR,
    min_call_s: float = MIN_CALL_S,
) -> SizeChoice:
    """Scale ``base`` (a valid assignment) up to a working set past the last-level cache.

    ``dim_vars`` are the integers that size arrays, ``time_vars`` those that only repeat work
    (time-loop counts). ``planned_calls`` is how many calls the measurement makes at least
    (variants x thread counts x (warm-up + repeats)); the predicted time of each must fit in
    ``budget_s`` together.
    """
    notes: list[str] = []
    llc = llc_bytes
    if llc is None:
        llc = FALLBACK_LLC_BYTES
        notes.append(
            f"the last-level cache size is unknown here; assumed {llc >> 20} MiB for sizing"
        )
    cap = memory_cap_bytes
    target = llc_factor * llc
    if target > cap:
        target = cap
        where = "inside" if cap <= llc else f"under {llc_factor}x"
        notes.append(
            f"working set limited to {cap / (1 << 20):.0f} MiB by the memory cap, {where} the "
            f"{llc / (1 << 20):.0f} MiB last-level cache: the timings include cache reuse"
        )
    per_call = budget_s / max(planned_calls, 1)
    sizes = dict(base)
    dims = [d for d in dim_vars if d in base and base[d] > 0]
    times = [t for t in time_vars if t in base and base[t] > 0 and t not in dims]

    def t_of(s: Mapping[str, int]) -> float:
        return predict_call_s(s) or 0.0

    if not dims:
        notes.append("no argument sizes an array: measured at the starting sizes")
    else:
        start = max(base[d] for d in dims)
        # Upper end of the search: double until past the cap (the working set grows with it).
        hi = start
        while working_set(_scaled(base, dims, hi)) <= cap and hi < (1 << 40):
            hi *= 2

        def fits(top: int) -> bool:
            return working_set(_scaled(base, dims, top)) <= cap

        def meets(top: int) -> bool:
            s = _scaled(base, dims, top)
            # Without a time loop, a longer call can only come from bigger arrays.
            return working_set(s) >= target and (bool(times) or t_of(s) >= min_call_s)

        top = _smallest_top(meets, start, hi)
        if not fits(top):
            # The cap is met before the target: take the largest scaling under the cap.
            top = max(start, _smallest_top(lambda t: not fits(t), start, hi) - 1)
        sizes = _scaled(base, dims, top)
        # Within the budget: shrink again while one call would not leave room for the rest.
        if t_of(sizes) > per_call:
            top = max(
                start,
                _smallest_top(lambda t: t_of(_scaled(base, dims, t)) > per_call, start, top) - 1,
            )
            sizes = _scaled(base, dims, top)
            notes.append(
                f"sizes reduced to keep {planned_calls} calls inside the {budget_s:.0f} s budget"
            )
    t = t_of(sizes)
    if times and 0 < t < min_call_s:
        factor = math.ceil(min_call_s / t)
        factor = max(1, min(factor, math.floor(per_call / t)))
        if factor > 1:
            for v in times:
                sizes[v] = base[v] * factor
            notes.append(
                f"time-loop count{'s' if len(times) > 1 else ''} {', '.join(times)} raised "
                f"{factor}x so that one call takes about {1e3 * t_of(sizes):.0f} ms"
            )
    t = t_of(sizes)
    repeats = min_repeats
    if 0 < t < min_call_s:
        # Short calls are timed more often; the median of many is still meaningful.
        repeats = min(min_repeats * MAX_REPEAT_BOOST, math.ceil(min_repeats * min_call_s / t))
        notes.append(
            f"one call is predicted at {1e3 * t:.2f} ms (< {1e3 * min_call_s:.0f} ms): "
            f"at least {repeats} timed calls"
        )
    return SizeChoice(
        sizes=sizes,
        working_set_bytes=working_set(sizes),
        target_bytes=target,
        llc_bytes=llc,
        predicted_call_s=t or None,
        min_repeats=repeats,
        notes=notes,
    )
