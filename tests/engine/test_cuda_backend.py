"""The numba.cuda backend: kernel structure, host driver, reductions, argmax, Gauss-Seidel.

Generated modules are executed in a subprocess with NUMBA_ENABLE_CUDASIM=1 (the CUDA simulator),
so these tests need no GPU and never import generated code into the test process. Shapes are
small and deliberately not multiples of the block sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kernels.engine import find_kernels, ir
from kernels.engine.analysis import analyse
from kernels.engine.backends.common import CodegenError
from kernels.engine.backends.cuda import generate_cuda

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"
REPO = Path(__file__).resolve().parents[2]

RUNNER = r"""
import json, sys, importlib.util
import numpy as np
spec = importlib.util.spec_from_file_location("gen", "gen.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
req = json.load(open("req.json"))
for name, value in req.get("module_vars", {}).items():
    setattr(mod, name, tuple(value))
data = np.load("inputs.npz")
args = []
for name in req["order"]:
    v = data[name]
    args.append(np.asfortranarray(v.copy()) if v.ndim else v[()])
kwargs = {k: tuple(v) for k, v in req.get("kwargs", {}).items()}
ret = getattr(mod, req["entry"])(*args, **kwargs)
if not isinstance(ret, tuple):
    ret = () if ret is None else (ret,)
out = {f"arg{i}": a for i, a in enumerate(args) if isinstance(a, np.ndarray)}
for i, r in enumerate(ret):
    out[f"ret{i}"] = np.asarray(r)
np.savez("outputs.npz", **out)
"""


def simulate(
    tmp_path: Path,
    code: str,
    entry: str,
    args: list,
    *,
    kwargs: dict | None = None,
    module_vars: dict | None = None,
    env_sim: bool = True,
) -> tuple[list, list]:
    """Run ``entry(*args)`` of ``code`` in a CUDA-simulator subprocess: (args after, returns)."""
    (tmp_path / "gen.py").write_text(code)
    (tmp_path / "run.py").write_text(RUNNER)
    order = [f"a{i}" for i in range(len(args))]
    np.savez(
        tmp_path / "inputs.npz", **{n: np.asarray(a) for n, a in zip(order, args, strict=True)}
    )
    req = {"entry": entry, "order": order, "kwargs": kwargs or {}, "module_vars": module_vars or {}}
    (tmp_path / "req.json").write_text(json.dumps(req))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if env_sim:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "run.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "outputs.npz") as out:
        after = [out[f"arg{i}"] if f"arg{i}" in out.files else None for i in range(len(args))]
        rets = [out[k] for k in sorted(k for k in out.files if k.startswith("ret"))]
    return after, rets


def fixture_kernel(name: str, kernel: str | None = None) -> ir.Kernel:
    path = FIXTURES / name
    kernels = find_kernels(path.read_text(), filename=path.name)
    k = kernels[0] if kernel is None else next(x for x in kernels if x.name == kernel)
    analyse(k)
    return k


def heat_ir() -> ir.Kernel:
    """Hand-built IR: unew(i,j) = u(i-1,j) + u(i,j+1) over a 0:n+1 x 0:m+1 grid, a time loop."""
    i8 = ir.REAL8
    n, m, nstep = ir.Var("n"), ir.Var("m"), ir.Var("nstep")
    one = ir.Const(1, ir.INTEGER)
    zero = ir.Const(0, ir.INTEGER)
    dims = [ir.Dim(zero, ir.BinOp("+", n, one)), ir.Dim(zero, ir.BinOp("+", m, one))]
    i, j = ir.Var("i"), ir.Var("j")

    def ref(name, di=0, dj=0):
        ii = ir.BinOp("+", i, ir.Const(di, ir.INTEGER)) if di else i
        jj = ir.BinOp("+", j, ir.Const(dj, ir.INTEGER)) if dj else j
        return ir.ArrayRef(name, [ii, jj])

    update = ir.Assign(
        ref("unew"),
        ir.BinOp("*", ir.Const(0.5, i8), ir.BinOp("+", ref("u", di=-1), ref("u", dj=1))),
        line=5,
    )
    inner = ir.Loop("i", one, n, None, [update], line=4, parallel=True)
    outer = ir.Loop("j", one, m, None, [inner], line=3, parallel=True)
    copy_i = ir.Loop("i", one, n, None, [ir.Assign(ref("u"), ref("unew"), line=8)], line=7)
    copy_i.parallel = True
    copy = ir.Loop("j", one, m, None, [copy_i], line=6, parallel=True)
    time = ir.Loop("step", one, nstep, None, [outer, copy], line=2)
    args = [
        ir.Arg("n", ir.INTEGER, "in"),
        ir.Arg("m", ir.INTEGER, "in"),
        ir.Arg("nstep", ir.INTEGER, "in"),
        ir.Arg("u", i8, "inout", dims),
        ir.Arg("unew", i8, "inout", dims),
    ]
    locals_ = {v: ir.Decl(v, ir.INTEGER) for v in ("i", "j", "step")}
    return ir.Kernel("heat", args, [time], locals_, "", "heat", line=1)


def heat_reference(n, m, nstep, u, unew):
    u, unew = u.copy(order="F"), unew.copy(order="F")
    for _ in range(nstep):
        unew[1 : n + 1, 1 : m + 1] = 0.5 * (u[0:n, 1 : m + 1] + u[1 : n + 1, 2 : m + 2])
        u[1 : n + 1, 1 : m + 1] = unew[1 : n + 1, 1 : m + 1]
    return u, unew


# --------------------------------------------------------------------------------------------
# Structure of the generated module


def test_one_kernel_per_parallel_nest_with_first_index_on_thread_x() -> None:
    gen = generate_cuda(heat_ir())
    assert gen.entry == "heat" and gen.parallel_loops == 2
    assert gen.code.count("@cuda.jit\ndef _k") == 2
    # The contiguous Fortran index i goes to x: cuda.grid(2) returns (x, y) = (i's, j's) thread.
    assert "_t1, _t0 = cuda.grid(2)" in gen.code
    assert "if _t0 < _n0 and _t1 < _n1:" in gen.code  # bounds guard on both axes
    assert "BLOCK_2D = (32, 8)" in gen.code
    assert any("2-D grid (x=i, y=j)" in n for n in gen.notes)
    compile(gen.code, "gen.py", "exec")


def test_time_loop_stays_on_host_and_arrays_stay_resident() -> None:
    code = generate_cuda(heat_ir(), swap_buffers=False).code
    driver = code[code.index("def heat(") :]
    loop_at = driver.index("for step in range(")
    # Copy-in happens once before the loop, copy-back once after it; the loop only launches.
    assert driver.count("= _to_device(") == 2 and driver.rindex("= _to_device(") < loop_at
    loop_body = driver[loop_at : driver.index("# Copy back")]
    assert "copy_to_host" not in loop_body and "_to_host" not in loop_body
    assert loop_body.count(", _grid, _block2)(") == 2


def test_only_intent_out_and_inout_arrays_are_copied_back() -> None:
    k = fixture_kernel("private_temporaries.f90")
    code = generate_cuda(k).code
    assert "_to_host(_d_c, c)" in code
    assert "_to_host(_d_a" not in code and "_to_host(_d_b" not in code


def test_small_private_array_becomes_a_cuda_local_array() -> None:
    gen = generate_cuda(fixture_kernel("small_local_array.f90"))
    assert "tmp = cuda.local.array((3,), numba.float64)" in gen.code
    assert gen.parallel_loops == 1


def test_pure_and_elemental_functions_become_device_functions() -> None:
    k = fixture_kernel("pure_elemental.f90", "apply_blend")
    code = generate_cuda(k).code
    assert code.count("@cuda.jit(device=True)") >= 1
    assert (
        "@cuda.jit(device=True)\ndef blend(" in code
        or "@cuda.jit(device=True)\ndef softclip(" in code
    )


def test_gauss_seidel_runs_in_a_sequential_kernel_and_says_so() -> None:
    gen = generate_cuda(fixture_kernel("gauss_seidel.f90"))
    assert gen.parallel_loops == 0
    assert ", 1, 1)(" in gen.code  # one block of one thread
    assert any("sequential single-thread kernel" in n and "carried" in n for n in gen.notes)


def test_independent_edge_nests_are_fused_into_one_launch() -> None:
    gen = generate_cuda(fixture_kernel("cpml_elastic_2d.f90"))
    assert gen.parallel_loops == 12
    assert any("8 independent 1-D nests fused" in n for n in gen.notes)
    # The two stress nests (both read only velocities) and the two velocity nests (both read
    # only stresses) are independent 2-D pairs: one launch each.
    assert sum("independent 2-D nests fused" in n for n in gen.notes) == 2
    driver = gen.code[gen.code.index("def cpml_elastic_2d(") :]
    assert driver.count("_launch(") == 3  # two fused 2-D pairs + one fused edge kernel per step
    before = generate_cuda(fixture_kernel("cpml_elastic_2d.f90"), fuse_nests=False)
    before_driver = before.code[before.code.index("def cpml_elastic_2d(") :]
    assert before_driver.count("_launch(") == 5


def test_nests_with_a_dependence_between_them_are_not_fused() -> None:
    k = fixture_kernel("dot_product_loop.f90")  # the second nest reads the reduced s
    gen = generate_cuda(k)
    assert "_f" not in "".join(n.split(":")[0] for n in gen.notes if "fused" in n)
    assert not any("fused" in n for n in gen.notes)


def test_generated_module_imports_without_gpu_or_simulator(tmp_path: Path) -> None:
    (tmp_path / "gen.py").write_text(generate_cuda(heat_ir()).code)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run(
        [sys.executable, "-c", "import gen; print(gen.BLOCK_1D, callable(gen.heat))"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(256,) True"


def test_unsupported_kernel_is_refused_with_its_line() -> None:
    k = heat_ir()
    k.unsupported = [ir.Unsupported("derived type", line=7)]
    with pytest.raises(CodegenError) as exc:
        generate_cuda(k)
    assert exc.value.line == 7


# --------------------------------------------------------------------------------------------
# Results on the simulator


def test_hand_built_heat_matches_numpy_with_default_and_custom_blocks(tmp_path: Path) -> None:
    n, m, nstep = 37, 11, 2  # 37 = 32 + 5 and 11 = 8 + 3: partial blocks on both axes
    rng = np.random.default_rng(1)
    u = np.asfortranarray(rng.random((n + 2, m + 2)))
    unew = np.asfortranarray(rng.random((n + 2, m + 2)))
    want_u, want_unew = heat_reference(n, m, nstep, u, unew)
    code = generate_cuda(heat_ir()).code
    after, rets = simulate(tmp_path, code, "heat", [n, m, nstep, u, unew])
    assert rets == []
    np.testing.assert_allclose(after[3], want_u, rtol=1e-14)
    np.testing.assert_allclose(after[4], want_unew, rtol=1e-14)
    after, _ = simulate(tmp_path, code, "heat", [n, m, nstep, u, unew], kwargs={"block_2d": [8, 4]})
    np.testing.assert_allclose(after[3], want_u, rtol=1e-14)
    after, _ = simulate(
        tmp_path, code, "heat", [n, m, nstep, u, unew], module_vars={"BLOCK_2D": [16, 2]}
    )
    np.testing.assert_allclose(after[4], want_unew, rtol=1e-14)


def test_argmax_keeps_the_first_occurrence_across_blocks(tmp_path: Path) -> None:
    k = fixture_kernel("argmax_ties.f90")
    gen = generate_cuda(k)
    assert gen.parallel_loops == 1 and "_KEY_NONE" in gen.code
    n = 601  # three 256-thread blocks, the last one partial
    a = np.full(n, 0.2)  # nint(3*0.2) = 1 everywhere
    # The maximum value 3 (nint(3*1.0)) appears in three different blocks; Fortran keeps the first.
    for idx in (530, 300, 17):
        a[idx] = 1.0
    after, rets = simulate(tmp_path, gen.code, gen.entry, [n, a, np.int32(0), 0.0])
    imax, vmax = (r.item() for r in rets)
    assert (imax, vmax) == (18, 3.0)  # 1-based index of a[17]
    # No element beats a(1): the location stays at its initial value 1.
    after, rets = simulate(tmp_path, gen.code, gen.entry, [n, np.full(n, 0.2), np.int32(0), 0.0])
    assert [r.item() for r in rets] == [1, 1.0]


def test_sum_product_min_max_reductions_match_numpy(tmp_path: Path) -> None:
    gen = generate_cuda(fixture_kernel("reductions.f90"))
    assert gen.parallel_loops == 1
    assert any("two passes" in n for n in gen.notes)
    n, m = 45, 19  # 2 x 3 blocks of (32, 8), all partial at the edges
    a = np.asfortranarray(np.random.default_rng(3).uniform(0.5, 1.5, (n, m)))
    _, rets = simulate(tmp_path, gen.code, gen.entry, [n, m, a, 0.0, 0.0, 0.0, 0.0])
    total, prod, amin, amax = (r.item() for r in rets)
    terms = np.abs(a).sum()
    assert abs(total - a.sum()) <= 1e-12 * terms
    assert prod == pytest.approx(np.prod(0.5 + 0.5 * a.ravel(order="F")), rel=1e-12)
    assert (amin, amax) == (a.min(), a.max())


def test_gauss_seidel_sweep_is_bit_identical_to_the_sequential_order(tmp_path: Path) -> None:
    gen = generate_cuda(fixture_kernel("gauss_seidel.f90"))
    n, m, nsweep = 13, 9, 2
    rng = np.random.default_rng(5)
    f = np.asfortranarray(rng.random((n + 2, m + 2)))
    u = np.asfortranarray(rng.random((n + 2, m + 2)))
    want = u.copy(order="F")
    for _ in range(nsweep):
        for j in range(1, m + 1):
            for i in range(1, n + 1):
                want[i, j] = 0.25 * (
                    want[i - 1, j] + want[i + 1, j] + want[i, j - 1] + want[i, j + 1] - f[i, j]
                )
    after, _ = simulate(tmp_path, gen.code, gen.entry, [n, m, nsweep, f, u])
    assert np.array_equal(after[4], want)


RELAX_UNTIL = """\
subroutine relax_until(n, maxit, tol, a, b, iters)
  implicit none
  integer, intent(in) :: n, maxit
  real(8), intent(in) :: tol
  real(8), intent(inout) :: a(n), b(n)
  integer, intent(out) :: iters
  integer :: i, it
  iters = 0
  do it = 1, maxit
    do i = 2, n - 1
      b(i) = 0.5d0 * (a(i-1) + a(i+1))
    end do
    do i = 2, n - 1
      a(i) = b(i)
    end do
    iters = it
    if (abs(a(3) - a(2)) < tol) exit
  end do
end subroutine relax_until
"""


@pytest.mark.parametrize("tol", [1.0, 1e-3])  # exits at once / runs every iteration
def test_exit_on_a_device_array_condition_keeps_the_nests_parallel(tol: float) -> None:
    from kernels.engine import translate_source

    result = translate_source(RELAX_UNTIL, target="gpu", sizes={"n": 29, "maxit": 5, "tol": tol})
    (k,) = result.kernels
    assert k.status == "verified", k.diagnostics
    assert k.parallel_loops == 2
    assert any("IF condition reads device arrays" in n for n in k.notes)
    assert "break" in k.code[k.code.index("def relax_until(") :]


ARGMAX_2D = """\
subroutine argmax2d(n, m, a, imax, jmax, vmax, total)
  implicit none
  integer, intent(in) :: n, m
  real(8), intent(in) :: a(n, m)
  integer, intent(out) :: imax, jmax
  real(8), intent(out) :: vmax, total
  integer :: i, j
  real(8) :: v
  imax = 1
  jmax = 1
  vmax = -1.0d0
  total = 0.0d0
  do j = 1, m
    do i = 1, n
      v = dble(nint(2.0d0 * a(i, j)))
      total = total + a(i, j)
      if (v > vmax) then
        vmax = v
        imax = i
        jmax = j
      end if
    end do
  end do
end subroutine argmax2d
"""


def test_two_dimensional_argmax_with_ties_runs_on_a_2d_grid_and_matches_gfortran() -> None:
    from kernels.engine import translate_source

    # nint(2a) of a in the verifier's positive range takes 2 or 3 values: ties everywhere.
    result = translate_source(ARGMAX_2D, target="gpu", sizes={"n": 45, "m": 19})
    (k,) = result.kernels
    assert k.status == "verified", k.diagnostics
    assert k.parallel_loops == 1
    assert any("2-D grid (x=i, y=j)" in n and "argmax on vmax" in n for n in k.notes)


def test_loop_with_a_non_unit_step_is_parallel_on_the_gpu_when_independent() -> None:
    gen = generate_cuda(fixture_kernel("negative_step.f90"))
    # The stride -2 update is independent; the backward recurrence x(i) <- x(i+1) is not.
    assert gen.parallel_loops == 1
    assert any(n.startswith("line 15: kernel") for n in gen.notes)
    assert any(n.startswith("line 12: sequential single-thread kernel") for n in gen.notes)


# --------------------------------------------------------------------------------------------
# The benchmark script


def test_gpu_benchmark_runs_its_code_path_on_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "gpu-simulator.json"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_bandwidth.py"),
            "--simulate-small",
            "--no-corpus",
            "--output",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "simulator" and result["simulated"] is True
    assert set(result["workloads"]) == {"heat2d", "stencil3d", "cpml"}
    heat = result["workloads"]["heat2d"]
    # 21 x 13 interior points; the copy-back is a buffer swap: one launch reading u, writing unew.
    assert heat["launches_per_step"] == 1 and heat["bytes_per_step"] == 2 * 21 * 13 * 8
    assert heat["modeled_bytes_per_step"] == heat["bytes_per_step"]
    assert heat["time_per_step_s"] > 0 and heat["effective_bandwidth_GBps"] > 0
    assert heat["measured_over_predicted"] > 0
    cpml = result["workloads"]["cpml"]
    assert cpml["parallel_nests_per_step"] == 12 and cpml["launches_per_step"] == 3
    assert cpml["launch_overhead_per_step_s"] > 0
    assert cpml["model"]["launch_cost_source"] == "model"
    assert cpml["predicted_fraction_of_copy"] > 0 and cpml["measured_over_predicted"] > 0


def test_gpu_benchmark_without_a_gpu_exits_cleanly_with_a_message() -> None:
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a GPU is present: the full benchmark would run")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_bandwidth.py"), "--no-corpus"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0
    assert "no NVIDIA GPU" in proc.stderr and "--simulate-small" in proc.stderr


# --------------------------------------------------------------------------------------------
# Buffer swaps instead of copy-back launches


@pytest.mark.parametrize("nstep", [0, 1, 2, 3])
def test_swapped_buffers_give_fortrans_final_arrays_whatever_the_step_parity(
    tmp_path: Path, nstep: int
) -> None:
    gen = generate_cuda(heat_ir())
    assert any("u = unew only carries the step's result" in n for n in gen.notes)
    loop = gen.code[gen.code.index("for step in range(") : gen.code.index("# Copy back")]
    assert loop.count("_launch(") == 2  # the stencil in the loop, the copy once after it
    assert "_d_u, _d_unew = _d_unew, _d_u" in loop
    n, m = 37, 11
    rng = np.random.default_rng(nstep)
    # Different halos in u and unew: the swap must not let one leak into the other.
    u = np.asfortranarray(rng.random((n + 2, m + 2)))
    unew = np.asfortranarray(rng.random((n + 2, m + 2)) + 10.0)
    want_u, want_unew = heat_reference(n, m, nstep, u, unew)
    after, _ = simulate(tmp_path, gen.code, "heat", [n, m, nstep, u, unew])
    np.testing.assert_array_equal(after[3], want_u)
    np.testing.assert_array_equal(after[4], want_unew)


COPY_WIDER_THAN_PRODUCER = """\
subroutine relax_with_halo_copy(n, nstep, a, b)
  implicit none
  integer, intent(in) :: n, nstep
  real(8), intent(inout) :: a(0:n+1), b(0:n+1)
  integer :: i, step
  do step = 1, nstep
    do i = 1, n
      b(i) = 0.5d0 * (a(i-1) + a(i+1))
    end do
    do i = 0, n + 1
      a(i) = b(i)
    end do
  end do
end subroutine relax_with_halo_copy
"""

B_READ_AFTER_THE_COPY = """\
subroutine relax_and_smooth(n, nstep, a, b, c)
  implicit none
  integer, intent(in) :: n, nstep
  real(8), intent(inout) :: a(0:n+1), b(0:n+1), c(0:n+1)
  integer :: i, step
  do step = 1, nstep
    do i = 1, n
      b(i) = 0.5d0 * (a(i-1) + a(i+1))
    end do
    do i = 1, n
      a(i) = b(i)
    end do
    do i = 1, n
      c(i) = c(i) + b(i-1)
    end do
  end do
end subroutine relax_and_smooth
"""


@pytest.mark.parametrize(
    "source",
    [COPY_WIDER_THAN_PRODUCER, B_READ_AFTER_THE_COPY],
    ids=["copy-covers-b-halo", "b-read-outside-the-copy"],
)
def test_copy_is_kept_when_a_swap_would_change_the_results(source: str) -> None:
    """The copy also carries b's halo (not produced this step) / b is read at i-1 elsewhere:
    swapping would expose stale values, so the copy stays a launch, and the port verifies."""
    from kernels.engine import translate_source

    result = translate_source(source, target="gpu", sizes={"n": 29, "nstep": 3})
    (k,) = result.kernels
    assert k.status == "verified", k.diagnostics
    assert not any("buffers of" in n for n in k.notes)
    assert "_d_a, _d_b = _d_b, _d_a" not in k.code
    assert k.gpu_model is not None and k.gpu_model["launches_per_step"] >= 2


# --------------------------------------------------------------------------------------------
# Explicit signatures: what the simulator passes is what the real target compiles for

CHECK_SIGNATURES = r"""
import importlib.util, json, numba
import numpy as np
from numba.core import sigutils, types
from numba.cuda.simulator import kernel as K
from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

seen = {}
launch = K.FakeCUDAKernel.__call__

def recording(self, *args):
    if not self._device and not K._kernel_context:
        seen.setdefault(self.fn.__name__, set()).add(
            tuple(numba.typeof(a._ary if isinstance(a, FakeCUDAArray) else a) for a in args))
    return launch(self, *args)

K.FakeCUDAKernel.__call__ = recording
spec = importlib.util.spec_from_file_location("gen", "gen.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
data = np.load("inputs.npz")
args = [np.asfortranarray(data[f"a{i}"].copy()) if data[f"a{i}"].ndim else data[f"a{i}"][()]
        for i in range(len(data.files))]
getattr(mod, json.load(open("req.json"))["entry"])(*args)
problems = []
for name, calls in seen.items():
    declared, _ = sigutils.normalize_signature(mod._SIGNATURES[name])
    for call in calls:
        for want, got in zip(declared, call, strict=True):
            if isinstance(want, types.Array):
                # Contiguous is what matters: the driver makes every device array F-ordered
                # (an (n, 1) array types as C but its memory is the F layout all the same).
                ok = (isinstance(got, types.Array) and got.dtype == want.dtype
                      and got.ndim == want.ndim and got.layout in ("C", "F"))
            else:
                kind = lambda t: (isinstance(t, types.Boolean), isinstance(t, types.Integer),
                                  isinstance(t, types.Float))
                ok = kind(want) == kind(got)
            if not ok:
                problems.append(f"{name}: declared {want}, passed {got}")
json.dump({"launched": sorted(seen), "problems": problems}, open("sig.json", "w"))
"""

COMPILE_DECLARED = r"""
import importlib.util, json
from numba import cuda
from numba.core import sigutils
import numba.cuda.dispatcher as dispatcher

class _Hopper:
    compute_capability = (9, 0)

dispatcher.get_current_device = lambda: _Hopper()
spec = importlib.util.spec_from_file_location("gen", "gen.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
done = []
for name, sig in mod._SIGNATURES.items():
    argtypes, _ = sigutils.normalize_signature(sig)
    ptx, _ = cuda.compile_ptx(getattr(mod, name).py_func, argtypes, cc=(9, 0))
    assert ".entry" in ptx
    done.append(name)
json.dump(done, open("ptx.json", "w"))
"""


@pytest.mark.parametrize(
    "fixture", ["cpml_elastic_2d.f90", "reductions.f90", "gauss_seidel.f90", "heat2d_jacobi.f90"]
)
def test_declared_signatures_match_the_launches_and_compile_for_sm90(
    tmp_path: Path, fixture: str
) -> None:
    from kernels.engine.verify import make_inputs, plan_run

    k = fixture_kernel(fixture)
    gen = generate_cuda(k)
    plan = plan_run(k, {"n": 19, "m": 13, "nx": 19, "ny": 13, "nstep": 2, "nsweep": 2})
    inputs = make_inputs(plan, 0)
    (tmp_path / "gen.py").write_text(gen.code)
    np.savez(
        tmp_path / "inputs.npz",
        **{f"a{i}": np.asarray(inputs[a.name]) for i, a in enumerate(plan.args)},
    )
    (tmp_path / "req.json").write_text(json.dumps({"entry": gen.entry}))
    (tmp_path / "check.py").write_text(CHECK_SIGNATURES)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "check.py"],
        cwd=tmp_path,
        env={**env, "NUMBA_ENABLE_CUDASIM": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "sig.json").read_text())
    assert report["launched"] and report["problems"] == []
    (tmp_path / "compile.py").write_text(COMPILE_DECLARED)
    proc = subprocess.run(
        [sys.executable, "compile.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if "NVVM" in proc.stderr and proc.returncode != 0:
        pytest.skip("NVVM/NVRTC not installed (pip install '.[gpu]'): signatures checked only")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(json.loads((tmp_path / "ptx.json").read_text())) >= set(report["launched"])
