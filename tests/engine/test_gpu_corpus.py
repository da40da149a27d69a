"""Every fixture of the corpus through the GPU target, verified against gfortran.

Without an NVIDIA GPU the pipeline verifies on the CUDA simulator (device 'simulator') in the
sandboxed subprocess; with one it runs on the GPU (device 'gpu'). Size hints above 40 are shrunk
so the simulator, which runs every GPU thread as a Python thread, keeps the file within a couple
of minutes; every size stays off the block sizes (32, 8, 256...) so partial blocks are exercised.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fortranspire_site.cli import main
from kernels.engine import translate_source
from kernels.engine.report import ForbiddenStatementError, FortranSyntaxError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"
SIMULATOR_MAX_SIZE = 40
SHRUNK_SIZE = 21

pytestmark = pytest.mark.skipif(
    shutil.which("gfortran") is None, reason="gfortran is not installed (needed to verify)"
)


def header(path: Path) -> tuple[str, dict[str, int]]:
    text = path.read_text()
    expect = re.search(r"^[!cC*]\s*expect:\s*([a-z-]+)", text, re.M)
    assert expect is not None, f"{path.name} has no 'expect:' line"
    sizes: dict[str, int] = {}
    hint = re.search(r"^[!cC*]\s*sizes:\s*(.+)$", text, re.M)
    if hint:
        for part in hint.group(1).split(","):
            if "=" in part:
                name, value = part.split("=", 1)
                v = int(value)
                sizes[name.strip().lower()] = v if v <= SIMULATOR_MAX_SIZE else SHRUNK_SIZE
    return expect.group(1), sizes


FIXTURE_PATHS = sorted(
    p for p in FIXTURES.iterdir() if p.suffix.lower() in (".f90", ".f", ".f77", ".f95")
)


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=lambda p: p.name)
def test_fixture_translates_to_gpu_and_reaches_its_expected_status(path: Path) -> None:
    expect, sizes = header(path)
    source = path.read_text()
    if expect == "forbidden":
        with pytest.raises(ForbiddenStatementError):
            translate_source(source, filename=path.name, target="gpu", sizes=sizes)
        return
    if expect == "syntax-error":
        with pytest.raises(FortranSyntaxError):
            translate_source(source, filename=path.name, target="gpu", sizes=sizes)
        return
    verify = expect in ("verified", "inconclusive", "out-of-bounds")
    result = translate_source(source, filename=path.name, target="gpu", sizes=sizes, verify=verify)
    assert result.target == "gpu" and result.kernels
    if expect == "inconclusive":
        assert all(k.status == "inconclusive" for k in result.kernels)
        assert all(k.coverage["loops_run"] < k.coverage["loops"] for k in result.kernels)
        return
    if expect == "out-of-bounds":
        for k in result.kernels:
            assert k.status == "failed"
            assert any("out-of-bounds access in the original" in d.message for d in k.diagnostics)
        return
    if expect == "unsupported":
        bad = [k for k in result.kernels if k.status == "unsupported"]
        assert bad and all(d.line > 0 for k in bad for d in k.diagnostics)
        return
    for k in result.kernels:
        detail = "; ".join(d.message for d in k.diagnostics)[:2000]
        assert k.status == "verified", f"{k.name}: {k.status}: {detail}"
        assert k.coverage is not None and k.coverage["loops_run"] == k.coverage["loops"]
        assert k.device in ("gpu", "simulator")
        assert "from numba import cuda" in k.code and "@cuda.jit" in k.code
        assert k.max_rel_err is not None and k.llm_calls == 0
        for arg in k.arguments:
            assert arg.passed, arg


# --------------------------------------------------------------------------------------------
# Real-GPU compilation without a GPU: every launched kernel compiles to PTX for sm_90.
# (numba's CUDA target with NVVM needs no device to type and compile.)

RECORD_SIGNATURES = r"""
# Run every generated module of the batch on the simulator, recording each launch's arg types.
import importlib.util, json, pickle, sys, traceback
import numba
import numpy as np
from numba.cuda.simulator import kernel as K
from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

current = {}
launch = K.FakeCUDAKernel.__call__

def recording(self, *args):
    if not self._device and not K._kernel_context:
        types = tuple(numba.typeof(a._ary if isinstance(a, FakeCUDAArray) else a) for a in args)
        current.setdefault(self.fn.__name__, set()).add(types)
    return launch(self, *args)

K.FakeCUDAKernel.__call__ = recording
results = {}
for job in json.load(open("jobs.json")):
    current = {}
    try:
        spec = importlib.util.spec_from_file_location(job["module"], job["module"] + ".py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        data = np.load(job["module"] + ".npz")
        args = [np.asfortranarray(data[f"a{i}"].copy()) if data[f"a{i}"].ndim
                else data[f"a{i}"][()] for i in range(len(data.files))]
        getattr(mod, job["entry"])(*args)
        results[job["module"]] = current
    except Exception:
        results[job["module"]] = traceback.format_exc()
pickle.dump(results, open("sigs.pkl", "wb"))
"""

COMPILE_PTX = r"""
# Compile every recorded launch with numba's real CUDA target (NVVM; no device needed).
import importlib.util, json, pickle, traceback
from numba import cuda
import numba.cuda.dispatcher as dispatcher

class _Hopper:  # device functions ask the current device for its compute capability
    compute_capability = (9, 0)

dispatcher.get_current_device = lambda: _Hopper()
report = {}
for module, sigs in pickle.load(open("sigs.pkl", "rb")).items():
    if isinstance(sigs, str):
        report[module] = "simulator run failed: " + sigs[-2000:]
        continue
    try:
        spec = importlib.util.spec_from_file_location(module, module + ".py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        done = 0
        for name, types in sigs.items():
            for sig in types:
                ptx, _ = cuda.compile_ptx(getattr(mod, name).py_func, sig, cc=(9, 0))
                assert ".entry" in ptx
                done += 1
        report[module] = done
    except Exception:
        report[module] = traceback.format_exc()[-3000:]
json.dump(report, open("ptx.json", "w"))
"""


def _nvvm_available() -> bool:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    probe = (
        "import numba\nfrom numba import cuda\n"
        "def k(a):\n    a[0] = 1.0\n"
        "cuda.compile_ptx(k, (numba.float64[:],), cc=(9, 0))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    return proc.returncode == 0


VERIFIED_PATHS = [p for p in FIXTURE_PATHS if header(p)[0] == "verified"]


@pytest.fixture(scope="module")
def ptx_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """{kernel name: number of launches compiled to PTX, or the error}, for the whole corpus.

    One simulator process records every module's launches and one process compiles them all,
    so numba is imported twice in total rather than twice per kernel.
    """
    if not _nvvm_available():
        pytest.skip("NVVM/NVRTC not installed (pip install '.[gpu]' to compile PTX without a GPU)")
    from kernels.engine import find_kernels
    from kernels.engine.analysis import analyse
    from kernels.engine.backends.cuda import generate_cuda
    from kernels.engine.pipeline import shrink_parameters_for_run
    from kernels.engine.project import single_file
    from kernels.engine.verify import make_inputs, plan_run

    work = tmp_path_factory.mktemp("ptx")
    jobs = []
    for path in VERIFIED_PATHS:
        _, sizes = header(path)
        for k in find_kernels(path.read_text(), filename=path.name):
            analyse(k)
            gen = generate_cuda(k)
            if "@cuda.jit\ndef " not in gen.code:
                continue  # scalar-only routine: computed on the host
            # The launches are recorded on the simulator: at the sizes it verifies with.
            sized = shrink_parameters_for_run(
                single_file(path.read_text(), path.name),
                k,
                target="gpu",
                device="simulator",
                sizes=sizes,
            )
            if sized.kernel is not None:
                k, gen = sized.kernel, sized.generated
            module = f"m{len(jobs)}"
            (work / f"{module}.py").write_text(gen.code)
            plan = plan_run(k, sizes)
            inputs = make_inputs(plan, 0)
            np.savez(
                work / f"{module}.npz",
                **{f"a{i}": np.asarray(inputs[a.name]) for i, a in enumerate(plan.args)},
            )
            jobs.append({"module": module, "entry": gen.entry, "key": f"{path.name}:{k.name}"})
    (work / "jobs.json").write_text(json.dumps(jobs))
    (work / "record.py").write_text(RECORD_SIGNATURES)
    (work / "compile.py").write_text(COMPILE_PTX)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    for script, extra in (("record.py", {"NUMBA_ENABLE_CUDASIM": "1"}), ("compile.py", {})):
        proc = subprocess.run(
            [sys.executable, script],
            cwd=work,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((work / "ptx.json").read_text())
    return {job["key"]: report.get(job["module"]) for job in jobs}


@pytest.mark.parametrize("path", VERIFIED_PATHS, ids=lambda p: p.name)
def test_fixture_kernels_compile_to_ptx_for_a_real_gpu(path: Path, ptx_report) -> None:
    """The simulator runs Python; this types and compiles the same launches for sm_90 (Hopper)."""
    mine = {k: v for k, v in ptx_report.items() if k.startswith(path.name + ":")}
    for name, outcome in mine.items():
        assert isinstance(outcome, int) and outcome >= 1, f"{name}: {outcome}"


def test_cli_translate_gpu_json_follows_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "translate",
            str(FIXTURES / "heat2d_jacobi.f90"),
            "--target",
            "gpu",
            "--json",
            "--size",
            "n=19",
            "--size",
            "m=13",
            "--size",
            "nstep=2",
        ]
    )
    out, _ = capsys.readouterr()
    payload = json.loads(out)
    assert set(payload) == {"file", "target", "kernels"} and payload["target"] == "gpu"
    (kernel,) = payload["kernels"]
    contract = {
        "name",
        "status",
        "max_abs_err",
        "max_rel_err",
        "max_ulp",
        "llm_calls",
        "parallel_loops",
        "device",
        "code",
        "diagnostics",
    }
    assert contract <= set(kernel)
    assert kernel["status"] == "verified" and code == 0
    assert kernel["device"] in ("gpu", "simulator")
    assert kernel["parallel_loops"] == 2 and kernel["llm_calls"] == 0
    assert kernel["max_rel_err"] <= 1e-10
    assert "@cuda.jit" in kernel["code"]


PARAM_GRID = FIXTURES / "param_grid_3d.f90"


def test_the_simulator_shrinks_parameter_extents_and_verifies_every_loop() -> None:
    """A 3-D kernel with private temporaries sized by module PARAMETERs: 2.5 million statement
    executions, far beyond what the simulator runs in a verification's time."""
    (k,) = translate_source(PARAM_GRID.read_text(), filename=PARAM_GRID.name, target="gpu").kernels
    assert k.status == "verified", [d.message for d in k.diagnostics]
    assert k.coverage == {"loops": 4, "loops_run": 4, "lines": 9, "lines_run": 9}
    if k.device == "gpu":
        assert k.sizes == {}  # a real GPU runs the sizes as written
        return
    assert k.device == "simulator"
    assert k.sizes == {"nx": 7, "ny": 6, "nz": 5, "nsweep": 3}
    assert "PARAMETER nx = 64 shrunk to 7 for the simulator run" in k.notes
    assert "PARAMETER nsweep = 4 shrunk to 3 for the simulator run" in k.notes
    # The delivered port is the one generated from the source as written, not the run's.
    (plain,) = translate_source(
        PARAM_GRID.read_text(), filename=PARAM_GRID.name, target="gpu", verify=False
    ).kernels
    assert k.code == plain.code
