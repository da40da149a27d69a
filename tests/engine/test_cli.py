"""``fortranspire translate``: the DESIGN.md contract (JSON shape, -o DIR, exit codes, messages)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fortranspire_site.cli import main
from kernels.engine.report import KernelResult, TranslationResult

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"
HEAT = FIXTURES / "heat2d_jacobi.f90"
CONTRACT_FIELDS = {
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


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["translate", *argv])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_is_one_object_with_the_contract_fields(capsys) -> None:
    code, out, _ = run(capsys, str(HEAT), "--json", "--size", "n=21", "--size", "m=13")
    payload = json.loads(out)  # exactly one JSON document on stdout
    assert set(payload) == {"file", "target", "kernels"}
    assert payload["target"] == "cpu"
    (kernel,) = payload["kernels"]
    assert CONTRACT_FIELDS <= set(kernel)
    assert kernel["name"] == "heat2d_jacobi"
    assert kernel["status"] == "verified" and code == 0
    assert kernel["device"] == "cpu" and kernel["llm_calls"] == 0
    assert kernel["max_rel_err"] <= 1e-12
    assert kernel["sizes"]["n"] == 21 and kernel["sizes"]["m"] == 13
    assert "def heat2d_jacobi" in kernel["code"]


def test_no_verify_gives_translated_and_exit_zero(capsys) -> None:
    code, out, _ = run(capsys, str(HEAT), "--no-verify", "--json")
    assert code == 0
    assert [k["status"] for k in json.loads(out)["kernels"]] == ["translated"]


def test_output_dir_gets_one_module_per_kernel_and_the_report(capsys, tmp_path: Path) -> None:
    out_dir = tmp_path / "ported"
    code, out, _ = run(
        capsys, str(FIXTURES / "program_time_loop.f90"), "--no-verify", "-o", str(out_dir), "--json"
    )
    assert code == 0
    payload = json.loads(out)
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted([f"{k['name']}.py" for k in payload["kernels"]] + ["report.json"])
    assert json.loads((out_dir / "report.json").read_text()) == payload
    for k in payload["kernels"]:
        assert (out_dir / f"{k['name']}.py").read_text() == k["code"]
    # nothing staged is left next to the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ported"]


def test_output_dir_that_exists_is_updated_in_place(capsys, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "report.json").write_text("stale")
    code, _, _ = run(capsys, str(HEAT), "--no-verify", "-o", str(tmp_path))
    assert code == 0
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert (
        json.loads((tmp_path / "report.json").read_text())["kernels"][0]["name"] == "heat2d_jacobi"
    )
    assert (tmp_path / "heat2d_jacobi.py").exists()


def test_readable_table_lists_each_kernel_and_its_status(capsys) -> None:
    code, out, err = run(capsys, str(HEAT), "--no-verify")
    assert code == 0
    assert "heat2d_jacobi" in out and "translated" in out
    assert "[parse" in err  # progress goes to stderr, never into stdout


def test_missing_file_exits_2_with_a_message(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, str(tmp_path / "nope.f90"))
    assert code == 2
    assert "nope.f90: no such file" in err and out == ""


def test_malformed_size_is_a_usage_error(capsys) -> None:
    code, _, err = run(capsys, str(HEAT), "--size", "n")
    assert code == 2
    assert "NAME=VALUE" in err


def test_syntax_error_exits_2_with_file_line_column(capsys) -> None:
    code, out, err = run(capsys, str(FIXTURES / "syntax_error.f90"))
    assert code == 2
    located = [
        ln for ln in err.splitlines() if ln.startswith(str(FIXTURES / "syntax_error.f90") + ":")
    ]
    assert located, err
    _, line, column, message = located[0].rsplit(".f90", 1)[1].split(":", 3)
    assert int(line) == 10 and int(column) > 0 and message.strip()
    assert "Traceback" not in err and out == ""


def test_forbidden_statement_exits_2_with_its_position(capsys) -> None:
    code, _, err = run(capsys, str(FIXTURES / "forbidden_execute_command.f90"))
    assert code == 2
    assert "forbidden_execute_command.f90:12:8: forbidden: execute_command_line" in err


def test_forbidden_with_json_still_prints_one_object(capsys) -> None:
    code, out, _ = run(capsys, str(FIXTURES / "forbidden_open_file.f90"), "--json")
    assert code == 2
    payload = json.loads(out)
    assert payload["kernels"] == [] and payload["error"]["error"] == "ForbiddenStatementError"
    assert payload["error"]["diagnostics"][0]["line"] == 9


def test_unsupported_kernel_exits_1_and_shows_the_construct(capsys) -> None:
    code, out, _ = run(capsys, str(FIXTURES / "unsupported_goto.f90"), "--json")
    assert code == 1
    (kernel,) = json.loads(out)["kernels"]
    assert kernel["status"] == "unsupported"
    assert kernel["diagnostics"] and kernel["diagnostics"][0]["line"] > 0


def test_unknown_kernel_name_is_a_usage_error(capsys) -> None:
    code, _, err = run(capsys, str(HEAT), "--kernel", "no_such_kernel", "--no-verify")
    assert code == 2
    assert "no_such_kernel" in err


def test_a_mismatch_exits_1(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import kernels.engine as engine

    def fake_translate(project, **kwargs):
        r = TranslationResult(file="x.f90", target="cpu")
        r.kernels.append(KernelResult("good", "verified", "cpu", max_rel_err=0.0))
        r.kernels.append(KernelResult("bad", "mismatch", "cpu", max_rel_err=3e-5))
        return r

    monkeypatch.setattr(engine, "translate_project", fake_translate)
    code, out, _ = run(capsys, str(HEAT))
    assert code == 1
    assert "mismatch" in out and "3e-05" in out


def test_translated_without_no_verify_is_not_success(
    capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kernels.engine as engine

    def fake_translate(project, **kwargs):
        r = TranslationResult(file="x.f90", target="cpu")
        r.kernels.append(KernelResult("k", "translated", "cpu"))
        return r

    monkeypatch.setattr(engine, "translate_project", fake_translate)
    assert run(capsys, str(HEAT), "--json")[0] == 1


def test_sizes_and_seed_reach_the_engine(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import kernels.engine as engine

    seen = {}

    def fake_translate(project, **kwargs):
        seen.update(kwargs)
        return TranslationResult(
            file="x.f90", target=kwargs["target"], kernels=[KernelResult("k", "verified", "cpu")]
        )

    monkeypatch.setattr(engine, "translate_project", fake_translate)
    code, _, _ = run(
        capsys,
        str(HEAT),
        "--size",
        "N=40",
        "--size",
        "dt=0.5",
        "--seed",
        "9",
        "--target",
        "gpu",
        "--json",
    )
    assert code == 0
    assert seen["sizes"] == {"n": 40, "dt": 0.5} and seen["seed"] == 9 and seen["target"] == "gpu"
    assert seen["verify"] is True and seen["kernel"] is None


def test_translate_never_imports_django(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from fortranspire_site.cli import main\n"
        f"rc = main(['translate', {str(HEAT)!r}, '--no-verify', '--json'])\n"
        "assert rc == 0, rc\n"
        "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules), 'django imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["kernels"][0]["status"] == "translated"
