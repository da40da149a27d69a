"""The GPU traffic and launch model (kernels/engine/gpu_model.py) against hand-computed cases.

Element counts are worked out from the Fortran by hand in each test: a reference touches the
product of the trip counts of the loops in its subscripts; every array is 8-byte real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kernels.engine import find_kernels, gpu_model, translate_source
from kernels.engine.analysis import analyse
from kernels.engine.backends.cuda import generate_cuda

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"


def plan_of(name: str, **options):
    path = FIXTURES / name
    (k,) = find_kernels(path.read_text(), filename=path.name)
    analyse(k)
    return generate_cuda(k, **options).launch_plan


BEFORE = {"swap_buffers": False, "fuse_nests": False}


def test_heat_2d_copy_back_doubles_the_traffic_until_the_buffers_are_swapped() -> None:
    n, m = 37, 29
    points = n * m  # the interior: do j = 1, m / do i = 1, n
    sizes = {"n": n, "m": m, "nstep": 3}
    before = gpu_model.evaluate(plan_of("heat2d_jacobi.f90", **BEFORE), sizes)
    # Stencil: read u, write unew; copy: read unew, write u.
    assert before.bytes_per_step == 4 * points * 8
    # u is read (live-in), unew gets new values; the copy into u adds no new values.
    assert before.min_bytes_per_step == 2 * points * 8
    assert before.bytes_ratio == 2.0 and before.launches_per_step == 2
    after = gpu_model.evaluate(plan_of("heat2d_jacobi.f90"), sizes)
    assert after.bytes_per_step == after.min_bytes_per_step == 2 * points * 8
    assert after.bytes_ratio == 1.0 and after.launches_per_step == 1
    assert after.time_loop_line == 12


def test_seven_point_3d_sweep_reads_one_array_and_writes_another() -> None:
    n, m, depth = 11, 9, 12  # the fixture's n, m, l
    points = (n - 2) * (m - 2) * (depth - 2)  # do k = 2, l-1 / j = 2, m-1 / i = 2, n-1
    model = gpu_model.evaluate(plan_of("stencil3d_7pt.f90"), {"n": n, "m": m, "l": depth})
    assert model.bytes_per_step == model.min_bytes_per_step == 2 * points * 8
    assert model.launches_per_step == 1 and model.time_loop_line == 0  # no time loop: one call
    # Launch cost: dispatch + 2 arrays + h2inv + 3 x (lo, step, trips).
    cost = gpu_model.LAUNCH_DISPATCH_S + 2 * gpu_model.LAUNCH_PER_ARRAY_ARG_S
    cost += 10 * gpu_model.LAUNCH_PER_SCALAR_ARG_S
    assert model.host_launch_cost_per_step_s == pytest.approx(cost)
    assert model.launch_cost_source == "model"


def test_cpml_traffic_before_and_after_fusing_the_independent_pairs() -> None:
    nx, ny = 37, 29
    sizes = {"nx": nx, "ny": ny, "nstep": 4}
    p = 28 * 36  # every update nest runs 28 x 36 points (j: 2..ny or 1..ny-1, i likewise)
    size = nx * ny  # a 2-D field
    profiles = 3 * 36 + 3 * 28  # per nest: three x profiles (36 points), three y profiles (28)
    edges = 2 * (29 + 29 + 37 + 37)  # vx(1,:), vx(nx,:), vx(:,1), vx(:,ny) and the same for vy
    # Stresses xx/yy: lambda, mu, vx, vy read; two memory arrays and two stresses updated.
    stress_xx = 4 * p + 4 * 2 * p + profiles
    # Stress xy, velocity x, velocity y: three arrays read, three updated.
    others = 3 * p + 3 * 2 * p + profiles
    before = gpu_model.evaluate(plan_of("cpml_elastic_2d.f90", **BEFORE), sizes)
    assert before.bytes_per_step == 8 * (stress_xx + 3 * others + edges)
    assert before.launches_per_step == 5  # four update nests + the fused edges
    # Minimum: 16 fields read once (3 materials, 5 wavefields, 8 memory arrays), 13 written once,
    # the 12 profiles read once.
    minimum = 8 * ((16 + 13) * p + 2 * profiles)
    assert before.min_bytes_per_step == minimum
    after = gpu_model.evaluate(plan_of("cpml_elastic_2d.f90"), sizes)
    assert after.min_bytes_per_step == minimum  # fusion moves fewer bytes, not fewer needed
    assert after.launches_per_step == 3
    # Fused stresses: mu, vx, vy are read by both nests (counted once, at most the array).
    stresses = p + 3 * min(2 * p, size) + 4 * 2 * p + 2 * 2 * p + 2 * p + 2 * profiles
    # Fused velocities: sigmaxx, sigmayy read by one nest, sigmaxy and rho by both; four memory
    # arrays and vx, vy updated.
    velocities = 2 * p + 2 * min(2 * p, size) + 4 * 2 * p + 2 * 2 * p + 2 * profiles
    assert after.bytes_per_step == 8 * (stresses + velocities + edges)
    assert after.bytes_ratio == round(after.bytes_per_step / minimum, 4)
    assert after.bytes_per_step < before.bytes_per_step


def test_predicted_fraction_follows_the_stated_formula() -> None:
    plan = plan_of("heat2d_jacobi.f90", **BEFORE)
    sizes = {"n": 8192, "m": 8192, "nstep": 10}
    bw = 2.0e12
    model = gpu_model.evaluate(plan, sizes, copy_bandwidth=bw)
    t = max(model.bytes_per_step / bw, model.host_launch_cost_per_step_s)
    t += model.launches_per_step * gpu_model.DEVICE_LAUNCH_GAP_S
    assert model.predicted_copy_bandwidth_fraction == pytest.approx(
        model.min_bytes_per_step / (bw * t), rel=1e-3
    )
    assert 0.45 < model.predicted_copy_bandwidth_fraction < 0.5  # half the bytes are the copy
    # A measured launch cost replaces the constants; at tiny sizes launches dominate.
    tiny = gpu_model.evaluate(plan, {"n": 8, "m": 8}, launch_cost_per_step_s=1e-3)
    assert tiny.launch_cost_source == "measured" and tiny.host_launch_cost_per_step_s == 1e-3
    assert tiny.predicted_copy_bandwidth_fraction < 0.01


def test_model_without_known_sizes_says_why() -> None:
    model = gpu_model.evaluate(plan_of("heat2d_jacobi.f90"), {})
    assert model.bytes_per_step is None and model.launches_per_step == 1
    assert "u" in model.reason


def test_translate_json_carries_the_gpu_model_at_the_run_sizes() -> None:
    source = (FIXTURES / "heat2d_jacobi.f90").read_text()
    result = translate_source(source, target="gpu", verify=False, sizes={"n": 19, "m": 13})
    (k,) = result.kernels
    model = k.to_dict()["gpu_model"]
    assert model["bytes_per_step"] == 2 * 19 * 13 * 8 and model["launches_per_step"] == 1
    assert set(model) >= {
        "bytes_per_step",
        "min_bytes_per_step",
        "bytes_ratio",
        "launches_per_step",
        "predicted_copy_bandwidth_fraction",
    }
    cpu = translate_source(source, target="cpu", verify=False).kernels[0].to_dict()
    assert "gpu_model" not in cpu


def test_profile_target_gpu_reports_the_model_per_kernel(capsys) -> None:
    import json

    from fortranspire_site.cli import main

    path = FIXTURES / "cpml_elastic_2d.f90"
    code = main(["profile", str(path), "--target", "gpu", "--json", "--size", "nx=37"])
    assert code == 0
    (k,) = json.loads(capsys.readouterr().out)["kernels"]
    model = k["gpu_model"]
    assert model["launches_per_step"] == 3
    direct = gpu_model.evaluate(plan_of("cpml_elastic_2d.f90"), k["sizes"])
    assert model["bytes_per_step"] == direct.bytes_per_step
    assert model["bytes_ratio"] == direct.bytes_ratio
    code = main(["profile", str(path), "--json"])
    assert code == 0 and "gpu_model" not in json.loads(capsys.readouterr().out)["kernels"][0]


def test_profile_measure_without_a_gpu_shows_the_model_time_per_call() -> None:
    from kernels.engine import profile

    path = FIXTURES / "heat2d_jacobi.f90"
    (k,) = find_kernels(path.read_text(), filename=path.name)
    analyse(k)
    prof = profile.profile_kernel(k, sizes={"n": 64, "m": 48, "nstep": 5})
    timing = profile._gpu_model_figures(k, prof, profile.machine_info())
    assert timing is not None and timing.status == "model"
    model = gpu_model.evaluate(plan_of("heat2d_jacobi.f90"), {"n": 64, "m": 48, "nstep": 5})
    assert timing.median_s == pytest.approx(5 * model.time_per_step_s)


HEAT3D_STEPS = (
    Path(__file__).resolve().parents[1] / "fixtures" / "gpu_model" / "heat3d_steps.f90"
).read_text()


def test_seven_point_3d_time_loop_swaps_its_copy_and_still_verifies() -> None:
    """Odd step count, different halos in u and unew (random inputs): gfortran agrees."""
    result = translate_source(
        HEAT3D_STEPS, target="gpu", sizes={"n": 9, "m": 7, "l": 6, "nstep": 3}
    )
    (k,) = result.kernels
    assert k.status == "verified", k.diagnostics
    assert any("u = unew only carries the step's result" in n for n in k.notes)
    interior = 7 * 5 * 4
    assert k.gpu_model["bytes_per_step"] == k.gpu_model["min_bytes_per_step"] == 2 * interior * 8
    assert k.gpu_model["launches_per_step"] == 1
