"""Sizes for ``profile --measure``: scaled past a (fake) last-level cache, within cap and budget.

Working sets are counted by hand from the fixtures' declarations (real(8): 8 bytes):
- heat2d_jacobi: u and unew are (0:n+1, 0:m+1), so W = 2 * 8 * (n+2) * (m+2);
- stencil3d_7pt: a and b are (n, m, l), so W = 2 * 8 * n * m * l;
- axpy (profile_hotspots): x and y are (n), so W = 2 * 8 * n.
With a fake 1 MiB last-level cache the target is 4 MiB = 4_194_304 bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kernels.engine.pipeline import find_kernels
from kernels.engine.profile import machine_info, select_measure_sizes
from kernels.engine.profile_sizes import (
    CacheLevel,
    choose_measure_sizes,
    last_level_cache_bytes,
    read_cpu_caches,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"
MIB = 1 << 20
FAKE_LLC = 1 * MIB
TARGET = 4 * MIB


def kernel_of(fixture: str, name: str | None = None):
    kernels = find_kernels((FIXTURES / fixture).read_text(), filename=fixture)
    return next(k for k in kernels if name is None or k.name == name)


def slow_machine() -> dict:
    # So slow that every candidate takes far more than 20 ms: only the working set decides.
    return {**machine_info(), "bandwidth_gbs": 1e-3, "peak_gflops_serial": 1e-3}


def select(kernel, base, **kw):
    opts = {
        "machine": slow_machine(),
        "llc_bytes": FAKE_LLC,
        "memory_cap_bytes": 1 << 40,
        "budget_s": 1e12,
        "base": base,
    }
    return select_measure_sizes(kernel, **{**opts, **kw})


def test_heat2d_is_scaled_to_the_smallest_square_past_four_times_the_cache():
    choice = select(kernel_of("heat2d_jacobi.f90"), {"n": 16, "m": 16, "nstep": 1})
    # 16 * (n+2)**2 >= 4 MiB  <=>  n+2 >= 512: n = m = 510, exactly 4 MiB; nstep untouched.
    assert choice.sizes == {"n": 510, "m": 510, "nstep": 1}
    assert choice.working_set_bytes == 16 * 512 * 512 == TARGET
    assert choice.to_dict()["working_set_mib"] == 4.0
    assert choice.to_dict()["exceeds_llc"] is True


def test_heat2d_keeps_the_ratio_of_its_starting_sizes():
    choice = select(kernel_of("heat2d_jacobi.f90"), {"n": 26, "m": 13, "nstep": 1})
    n, m = choice.sizes["n"], choice.sizes["m"]
    assert n == 2 * m or n == 2 * m - 1 or n == 2 * m + 1
    assert 16 * (n + 2) * (m + 2) >= TARGET
    # the next smaller scaling (largest dimension one less) would miss the target
    n1 = n - 1
    m1 = max(13, round(13 * n1 / 26))
    assert 16 * (n1 + 2) * (m1 + 2) < TARGET


def test_stencil3d_is_scaled_to_a_cube_of_64():
    choice = select(kernel_of("stencil3d_7pt.f90"), {"n": 16, "m": 16, "l": 16})
    # 16 * n**3 >= 4 MiB  <=>  n**3 >= 262144 = 64**3.
    assert choice.sizes == {"n": 64, "m": 64, "l": 64}
    assert choice.working_set_bytes == 16 * 64**3 == TARGET


def test_axpy_is_scaled_to_a_quarter_million_elements():
    choice = select(kernel_of("profile_hotspots.f90", "axpy"), {"n": 64})
    # 16 * n >= 4 MiB  <=>  n >= 262144.
    assert choice.sizes == {"n": 262144}
    assert choice.working_set_bytes == TARGET


def test_memory_cap_bounds_the_working_set_and_says_so():
    # A 2 MiB cap on the inputs: at most 2 MiB of working set, under the 4 MiB target.
    choice = select(
        kernel_of("heat2d_jacobi.f90"), {"n": 16, "m": 16, "nstep": 1}, memory_cap_bytes=2 * MIB
    )
    # 16 * (n+2)**2 <= 2 MiB  <=>  n+2 <= 362.03: n = 360.
    assert choice.sizes["n"] == choice.sizes["m"] == 360
    assert choice.working_set_bytes == 16 * 362 * 362 <= 2 * MIB
    assert any("memory cap" in n for n in choice.notes)


def test_time_loop_count_is_raised_until_one_call_takes_20_ms():
    # A pure check of the time rule: each step costs 1 ms whatever the size.
    choice = choose_measure_sizes(
        {"n": 8, "nstep": 2},
        dim_vars=["n"],
        time_vars=["nstep"],
        working_set=lambda s: 16 * s["n"],
        predict_call_s=lambda s: 1e-3 * s["nstep"],
        llc_bytes=1024,
        memory_cap_bytes=1 << 30,
        budget_s=1e6,
    )
    assert choice.sizes == {"n": 256, "nstep": 20}  # 16 * 256 = 4 KiB; 2 ms -> 20 ms
    assert choice.predicted_call_s == pytest.approx(0.020)
    assert choice.min_repeats == 5


def test_short_calls_without_a_time_loop_get_more_repeats_once_the_cap_is_reached():
    choice = choose_measure_sizes(
        {"n": 8},
        dim_vars=["n"],
        time_vars=[],
        working_set=lambda s: 16 * s["n"],
        predict_call_s=lambda s: 1e-9 * s["n"],  # 1 ns per element: never 20 ms under the cap
        llc_bytes=1024,
        memory_cap_bytes=16 * 1024,
        budget_s=1e6,
    )
    assert choice.sizes == {"n": 1024}  # the cap: 16 KiB of working set
    # 5 * 20 ms / 1.024 us would be ~97,700 calls: capped at 50x the minimum of 5.
    assert choice.min_repeats == 250
    assert any("timed calls" in n for n in choice.notes)


def test_budget_shrinks_the_sizes_so_every_planned_call_fits():
    choice = choose_measure_sizes(
        {"n": 8},
        dim_vars=["n"],
        time_vars=[],
        working_set=lambda s: 16 * s["n"],
        predict_call_s=lambda s: 1e-3 * s["n"],
        llc_bytes=1 << 20,
        memory_cap_bytes=1 << 30,
        budget_s=10.0,
        planned_calls=100,  # 0.1 s per call: n <= 100
    )
    assert choice.sizes == {"n": 100}
    assert any("budget" in n for n in choice.notes)


def test_caches_are_read_from_sysfs_layout(tmp_path):
    for idx, (level, kind, size) in enumerate(
        [
            (1, "Data", "48K"),
            (1, "Instruction", "32K"),
            (2, "Unified", "2048K"),
            (3, "Unified", "30M"),
        ]
    ):
        d = tmp_path / f"index{idx}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    caches = read_cpu_caches(tmp_path)
    assert [c.size_bytes for c in caches] == [48 << 10, 32 << 10, 2 << 20, 30 << 20]
    assert last_level_cache_bytes(caches) == 30 << 20
    assert last_level_cache_bytes([CacheLevel(1, "Instruction", 1024)]) is None
    assert read_cpu_caches(tmp_path / "absent") == []


def test_only_upper_bounds_scale_offsets_and_lower_bounds_stay_valid():
    # wide_stencil_1d: w(-r:r), x(1-r:n+r); r is an offset (kernels.engine.sizes.roles), so it
    # keeps its valid value while n grows to the target.
    kernel = kernel_of("wide_stencil_1d.f90")
    choice = select(kernel, None)
    assert choice.sizes["r"] == 2
    assert choice.sizes["n"] > 1000
    assert choice.working_set_bytes >= TARGET
