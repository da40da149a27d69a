"""Timing statistics for ``profile --measure``: adaptive repeats and a median with an interval.

Pure Python (no numpy, no numba): it runs inside the sandboxed measuring child and in tests with
a fake timer. The figures it reports are chosen to stay honest on a noisy, shared machine:

* the **median** of the timed calls, not the mean or the best, because a few preempted calls
  should not move it;
* a distribution-free **confidence interval** for that median from order statistics (the
  binomial argument: the true median lies between the l-th and (n-l+1)-th smallest of n samples
  with probability ``1 - 2 * P(Binomial(n, 1/2) < l)``), with its actual coverage, which is below
  95 % for fewer than 6 samples;
* the **spread** as the interquartile range over the median, which a single outlier does not
  inflate the way ``(max - min) / median`` does.

Repeats continue until the interval is narrow (its half-width within ``rel_halfwidth`` of the
median), the budget is spent or ``max_repeats`` is reached. A spread that stays above
:data:`SPREAD_WARNING_PCT` produces a warning rather than a figure that looks precise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SPREAD_WARNING_PCT = 10.0
CI_LEVEL = 0.95
DEFAULT_MIN_REPEATS = 5
DEFAULT_MAX_REPEATS = 200
DEFAULT_REL_HALFWIDTH = 0.02  # stop when the median is known to within +-2 %
FLOOR_REPEATS = 3  # taken whatever the budget: fewer samples have no median worth the name


@dataclass
class TimingStats:
    """Summary of the timed calls of one variant."""

    times: list[float]
    median_s: float
    ci_low_s: float
    ci_high_s: float
    ci_level: float  # the interval's actual coverage (order statistics are discrete)
    min_s: float
    max_s: float
    spread_pct: float  # interquartile range / median, in percent
    repeats: int
    settled: bool  # the interval narrowed to the requested width
    stop_reason: str  # 'settled' | 'budget' | 'max_repeats'
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["times"] = list(self.times)
        out["warnings"] = list(self.warnings)
        return out


def _binomial_cdf_below(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) < k)."""
    return sum(math.comb(n, i) for i in range(k)) / 2**n


def median_interval(times: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(low, high, coverage) of the order-statistic confidence interval for the median.

    The interval is the narrowest symmetric pair of order statistics whose coverage reaches
    ``level``; with too few samples for that it is ``[min, max]`` and the coverage says how much
    less it is worth.
    """
    xs = sorted(times)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    best = 1  # 1-based rank of the lower bound; [x_(1), x_(n)] always qualifies as a fallback
    for rank in range(1, n // 2 + 1):
        if 1.0 - 2.0 * _binomial_cdf_below(n, rank) >= level:
            best = rank
        else:
            break
    coverage = 1.0 - 2.0 * _binomial_cdf_below(n, best)
    return xs[best - 1], xs[n - best], round(coverage, 4)


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default method)."""
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarise(
    times: Sequence[float], *, settled: bool = False, stop_reason: str = "max_repeats"
) -> TimingStats:
    """Median, interval, extremes and spread of a list of call times (seconds)."""
    xs = sorted(times)
    if not xs:
        raise ValueError("no samples")
    n = len(xs)
    med = _quantile(xs, 0.5)
    lo, hi, coverage = median_interval(xs)
    iqr = _quantile(xs, 0.75) - _quantile(xs, 0.25)
    spread = round(100.0 * iqr / med, 2) if med > 0 else 0.0
    warnings = []
    if spread > SPREAD_WARNING_PCT:
        warnings.append(
            f"noisy timing: the interquartile spread is {spread:.0f}% of the median "
            f"(above {SPREAD_WARNING_PCT:.0f}%) after {n} calls"
        )
    return TimingStats(
        times=list(times),
        median_s=med,
        ci_low_s=lo,
        ci_high_s=hi,
        ci_level=coverage,
        min_s=xs[0],
        max_s=xs[-1],
        spread_pct=spread,
        repeats=n,
        settled=settled,
        stop_reason=stop_reason,
        warnings=warnings,
    )


def interval_settled(times: Sequence[float], rel_halfwidth: float) -> bool:
    """True when the median's interval (at full coverage) lies within +-rel_halfwidth of it."""
    if len(times) < 6:  # below 6 samples no pair of order statistics reaches 95 %
        return False
    lo, hi, _ = median_interval(times)
    med = _quantile(sorted(times), 0.5)
    return med > 0 and (hi - lo) / 2 <= rel_halfwidth * med


def time_adaptively(
    sample: Callable[[], float],
    *,
    budget_s: float,
    min_repeats: int = DEFAULT_MIN_REPEATS,
    max_repeats: int = DEFAULT_MAX_REPEATS,
    rel_halfwidth: float = DEFAULT_REL_HALFWIDTH,
    clock: Callable[[], float] = time.monotonic,
) -> TimingStats:
    """Call ``sample`` (which returns the duration of one timed call) until the median settles.

    Sampling stops when the interval is narrow enough (after ``min_repeats``), when ``budget_s``
    of ``clock`` time is spent (set-up between calls included) or at ``max_repeats``. The
    budget can cut ``min_repeats`` short, but never below :data:`FLOOR_REPEATS` samples.
    """
    start = clock()
    times: list[float] = []
    reason = "max_repeats"
    settled = False
    while len(times) < max(max_repeats, min_repeats):
        times.append(float(sample()))
        if len(times) >= min_repeats and interval_settled(times, rel_halfwidth):
            settled, reason = True, "settled"
            break
        if len(times) >= FLOOR_REPEATS and clock() - start >= budget_s:
            reason = "budget"
            break
    return summarise(times, settled=settled, stop_reason=reason)
