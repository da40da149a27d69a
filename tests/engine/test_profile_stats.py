"""Timing statistics of the harness: adaptive repeats, the median's interval and the spread warning.

A fake timer plays known samples and a fake clock advances by each sample's duration, so the
stopping rule and every reported figure can be checked exactly.
"""

from __future__ import annotations

import itertools

import pytest

from kernels.engine.harness import median_interval, summarise, time_adaptively


class FakeTimer:
    """Returns the given call times in a cycle; its clock advances by each one."""

    def __init__(self, times: list[float]):
        self._times = itertools.cycle(times)
        self.now = 0.0
        self.calls = 0

    def sample(self) -> float:
        dt = next(self._times)
        self.now += dt
        self.calls += 1
        return dt

    def clock(self) -> float:
        return self.now


def test_median_interval_uses_binomial_order_statistics():
    xs = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0]
    # n = 9: P(B < 2) = 10/512, coverage 1 - 20/512 = 0.9609 >= 0.95; rank 3 would give 0.82.
    assert median_interval(xs) == (2.0, 8.0, pytest.approx(0.9609, abs=1e-4))


def test_median_interval_of_five_samples_is_min_to_max_with_its_lower_coverage():
    assert median_interval([5.0, 1.0, 3.0, 2.0, 4.0]) == (1.0, 5.0, 0.9375)


def test_summary_reports_interquartile_spread_not_the_range():
    # One outlier in nine: the range is 101 % of the median, the interquartile spread 1 %.
    stats = summarise([1.00, 1.01, 0.99, 1.00, 1.01, 0.99, 1.00, 1.00, 2.00])
    assert stats["median_s"] == 1.00
    assert stats["min_s"] == 0.99 and stats["max_s"] == 2.00
    assert stats["spread_pct"] == pytest.approx(1.0)
    assert stats["warnings"] == []


def test_a_steady_call_stops_as_soon_as_the_median_is_pinned():
    timer = FakeTimer([0.0100, 0.0101, 0.0099])  # +-1 %: settles at the first allowed check
    stats = time_adaptively(
        timer.sample, budget_s=100.0, min_repeats=5, rel_halfwidth=0.02, clock=timer.clock
    )
    assert stats["repeats"] == 6 and timer.calls == 6  # 6 is the fewest for a 95 % interval
    assert stats["settled"] and stats["stop_reason"] == "settled"
    assert stats["median_s"] == pytest.approx(0.0100)
    assert stats["ci_low_s"] <= stats["median_s"] <= stats["ci_high_s"]
    assert stats["warnings"] == []


def test_a_noisy_call_runs_to_the_budget_and_warns():
    # Alternating 10 ms and 14 ms: the median never pins to +-2 %, the spread is ~40 %.
    timer = FakeTimer([0.010, 0.014])
    stats = time_adaptively(
        timer.sample, budget_s=0.245, min_repeats=5, rel_halfwidth=0.02, clock=timer.clock
    )
    assert stats["stop_reason"] == "budget" and not stats["settled"]
    assert stats["repeats"] == 21  # 10 pairs take 0.24 s; the 21st sample crosses 0.245 s
    assert stats["spread_pct"] == pytest.approx(100 * 0.004 / 0.010)
    assert len(stats["warnings"]) == 1 and "40%" in stats["warnings"][0]


def test_max_repeats_stops_a_noisy_call_with_an_unlimited_budget():
    timer = FakeTimer([0.010, 0.014])
    stats = time_adaptively(
        timer.sample, budget_s=1e9, min_repeats=5, max_repeats=30, clock=timer.clock
    )
    assert stats["repeats"] == 30 and stats["stop_reason"] == "max_repeats"


def test_the_budget_cuts_the_minimum_repeats_short_but_never_below_three():
    timer = FakeTimer([1.0])
    stats = time_adaptively(timer.sample, budget_s=0.0, min_repeats=5, clock=timer.clock)
    assert stats["repeats"] == 3 and stats["stop_reason"] == "budget"
    assert stats["ci_level"] == 0.75  # three samples: [min, max] covers the median 75 % of the time
