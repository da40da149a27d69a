"""Every fixture of the corpus through the GPU target, verified against gfortran.

Without an NVIDIA GPU the pipeline verifies on the CUDA simulator (device 'simulator') in the
sandboxed subprocess; with one it runs on the GPU (device 'gpu'). Size hints above 40 are shrunk
so the simulator, which runs every GPU thread as a Python thread, keeps the file within a couple
of minutes; every size stays off the block sizes (32, 8, 256...) so partial blocks are exercised.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

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
    verify = expect == "verified"
    result = translate_source(source, filename=path.name, target="gpu", sizes=sizes, verify=verify)
    assert result.target == "gpu" and result.kernels
    if expect == "unsupported":
        bad = [k for k in result.kernels if k.status == "unsupported"]
        assert bad and all(d.line > 0 for k in bad for d in k.diagnostics)
        return
    for k in result.kernels:
        detail = "; ".join(d.message for d in k.diagnostics)[:2000]
        assert k.status == "verified", f"{k.name}: {k.status}: {detail}"
        assert k.device in ("gpu", "simulator")
        assert "from numba import cuda" in k.code and "@cuda.jit" in k.code
        assert k.max_rel_err is not None and k.llm_calls == 0
        for arg in k.arguments:
            assert arg.passed, arg


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
