"""Acceptance test: every fixture of tests/fixtures/fortran/ through the whole engine (target cpu).

Each fixture states what it expects in a header comment:
- ``! expect: verified``: every kernel found is verified against gfortran within tolerance, with
  every DO loop run in the reference;
- ``! expect: inconclusive``: the outputs match but some DO loop never ran: never ``verified``;
- ``! expect: out-of-bounds``: the original itself indexes out of bounds: reported as such;
- ``! expect: unsupported``: at least one kernel is 'unsupported' with a positioned diagnostic;
- ``! expect: syntax-error``: FortranSyntaxError with a line, never a traceback;
- ``! expect: forbidden``: ForbiddenStatementError, raised before anything is compiled;
and optionally ``! sizes: n=37, m=19`` for the verification sizes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"
ALL_FIXTURES = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".f90", ".F90", ".f", ".F"))
EXPECTATIONS = (
    "verified",
    "inconclusive",
    "out-of-bounds",
    "unsupported",
    "syntax-error",
    "forbidden",
)


def fixture_header(path: Path) -> tuple[str, dict[str, int]]:
    """The ``expect:`` status and the ``sizes:`` hints of a fixture."""
    text = path.read_text()
    expect = re.search(r"^[!cC*]\s*expect:\s*([a-z-]+)", text, re.M)
    if expect is None:
        raise AssertionError(f"{path.name} has no 'expect:' line")
    sizes: dict[str, int] = {}
    hint = re.search(r"^[!cC*]\s*sizes:\s*(.+)$", text, re.M)
    if hint:
        for item in hint.group(1).split(","):
            name, _, value = item.partition("=")
            sizes[name.strip().lower()] = int(value)
    return expect.group(1), sizes


def test_corpus_is_large_enough_and_every_fixture_says_what_it_exercises() -> None:
    assert len(ALL_FIXTURES) >= 25
    expectations = []
    for path in ALL_FIXTURES:
        expect, _ = fixture_header(path)
        assert expect in EXPECTATIONS, path.name
        expectations.append(expect)
        first = path.read_text().splitlines()[0]
        assert first[:1] in "!cC*" and len(first) > 20, f"{path.name}: needs a header comment"
    for expect in EXPECTATIONS:
        assert expect in expectations, f"no fixture expects {expect}"


def test_positive_fixtures_compile_with_gfortran(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("gfortran") is None:
        pytest.skip("gfortran is not installed")
    for path in ALL_FIXTURES:
        if fixture_header(path)[0] != "verified":
            continue
        done = subprocess.run(
            ["gfortran", "-fsyntax-only", "-J", str(tmp_path), str(path)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert done.returncode == 0, f"{path.name}: {done.stderr}"


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: p.name)
def test_fixture_reaches_its_expected_status(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kernels.engine import translate_source
    from kernels.engine.report import ForbiddenStatementError, FortranSyntaxError

    expect, sizes = fixture_header(path)
    source = path.read_text()

    if expect == "forbidden":
        # Refused before compiling anything: running a sandboxed step would fail the test.
        import kernels.engine.sandbox as sandbox
        import kernels.engine.verify as verify

        def no_compiling(*args, **kwargs):
            raise AssertionError("a forbidden source reached the sandbox")

        monkeypatch.setattr(sandbox, "run_sandboxed", no_compiling)
        monkeypatch.setattr(verify, "run_sandboxed", no_compiling)
        with pytest.raises(ForbiddenStatementError) as info:
            translate_source(source, filename=path.name, target="cpu", sizes=sizes)
        assert info.value.diagnostics and info.value.diagnostics[0].line > 0
        return

    if expect == "syntax-error":
        with pytest.raises(FortranSyntaxError) as info:
            translate_source(source, filename=path.name, target="cpu", sizes=sizes)
        assert info.value.diagnostics, "a syntax error must carry its position"
        assert info.value.diagnostics[0].line > 0
        return

    result = translate_source(source, filename=path.name, target="cpu", sizes=sizes)
    assert result.kernels, f"{path.name}: no kernel found"
    statuses = {k.name: k.status for k in result.kernels}

    if expect == "unsupported":
        unsupported = [k for k in result.kernels if k.status == "unsupported"]
        assert unsupported, statuses
        for k in unsupported:
            assert k.diagnostics, f"{k.name}: unsupported without a diagnostic"
            assert all(d.line > 0 for d in k.diagnostics)
        return

    if expect == "inconclusive":
        for k in result.kernels:
            assert k.status == "inconclusive", statuses
            assert k.coverage["loops_run"] < k.coverage["loops"]
            assert any("never ran" in d.message and "--size" in d.message for d in k.diagnostics)
        return

    if expect == "out-of-bounds":
        for k in result.kernels:
            assert k.status == "failed", statuses
            assert any("out-of-bounds access in the original" in d.message for d in k.diagnostics)
        return

    for k in result.kernels:
        detail = "; ".join(d.message for d in k.diagnostics) + " " + " ".join(k.notes)
        assert k.status == "verified", f"{k.name}: {k.status}: {detail}"
        assert k.coverage is not None and k.coverage["loops_run"] == k.coverage["loops"]
        assert k.llm_calls == 0
        assert k.code and k.entry
        for a in k.arguments:
            assert a.passed, f"{k.name}.{a.name}: {a}"
        assert k.max_rel_err is not None
        assert k.max_rel_err <= 1e-12 or k.max_abs_err <= 1e-12 or _fp32_only(k), (
            f"{k.name}: max_rel_err {k.max_rel_err}, max_abs_err {k.max_abs_err}"
        )


def _fp32_only(k) -> bool:
    # real(4) outputs are held to the ULP rule instead (see kernels/engine/verify.py).
    return all(a.passed for a in k.arguments) and any("ulp" in a.tolerance for a in k.arguments)


@pytest.mark.parametrize(
    ("fixture", "mutation"),
    [
        ("heat2d_jacobi.f90", ("4.0 *", "4.000000001 *")),  # a constant off in the 10th digit
        ("heat2d_jacobi.f90", ("prange(", "range(")),  # harmless: must still verify
        ("stencil3d_7pt.f90", ("range(2, n)", "range(2, n + 1)")),  # writes the boundary
    ],
)
def test_verification_judges_mutated_ports_of_fixtures(fixture: str, mutation) -> None:
    """The acceptance test can fail: a port that differs from the Fortran is not verified."""
    from kernels.engine import find_kernels, translate_source
    from kernels.engine.verify import verify_against_gfortran

    path = FIXTURES / fixture
    source = path.read_text()
    _, sizes = fixture_header(path)
    (port,) = translate_source(source, filename=path.name, verify=False).kernels
    (kernel,) = find_kernels(source, filename=path.name)
    old, new = mutation
    if old not in port.code:
        pytest.skip(f"the generated code has no {old!r} to mutate")

    class Mutated:
        code = port.code.replace(old, new, 1)
        entry = port.entry

    report = verify_against_gfortran(kernel, Mutated(), sizes=sizes)
    harmless = old == "prange("
    assert report.status == ("verified" if harmless else "mismatch"), report.message
