"""Each attack class of the review, run through the path that was open, is contained by the sandbox.

The payloads (tests/security/payloads.py) are what a tenant controls: Fortran that reaches libc
through ``bind(C)`` (``system``, ``kill``, ``open``), and a Python port an LLM could answer with.
The scanner and the LLM answer check would refuse both; most tests here switch those checks off
on purpose, to show the sandbox holds on its own. Each test asserts on what the payload saw from
inside (its uid, the host's /proc, SECRET_KEY, the database socket and port, the network, another
run's directory) and on the host afterwards (canary process alive, canary and project files
unchanged, no process left over).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from kernels.engine import llm, sandbox, security
from kernels.engine.sandbox import run_sandboxed, sandbox_tempdir
from tests.fakes.mistral_server import FakeMistral, reply
from tests.security.payloads import (
    Outside,
    assert_report_contained,
    fortran_bind_c_kernel,
    parse_report,
    python_probe,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"
needs_gfortran = pytest.mark.skipif(shutil.which("gfortran") is None, reason="needs gfortran")
KEY = "sk-tenant-key-for-the-attack-tests-0123456789"


@pytest.fixture
def outside(tmp_path: Path):
    o = Outside(tmp_path)
    yield o
    o.close()


def _scanner_misses_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a scanner that misses the payload: it refuses nothing."""
    monkeypatch.setattr(security, "scan_units", lambda source, **kw: security.ScanResult(source))


# --------------------------------------------------------------------------------------------
# The sandbox and harness layer, called directly


@needs_gfortran
def test_bind_c_payload_compiled_and_run_in_the_sandbox_is_contained(outside: Outside) -> None:
    source = fortran_bind_c_kernel(outside.targets())
    assert security.find_forbidden(source)  # the scanner would refuse it; here nothing asks it
    main = "program attack\n  real(8) :: x(3)\n  x = 1.0d0\n  call evil(3, x)\nend program\n"
    with sandbox_tempdir(prefix="attack-") as work:
        (work / "evil.f90").write_text(source)
        (work / "main.f90").write_text(main)
        built = run_sandboxed(
            ["gfortran", "-ffree-line-length-none", "evil.f90", "main.f90", "-o", "attack"],
            cwd=work,
            timeout_s=120,
            memory_mb=2048,
        )
        assert built.ok, built.stderr
        ran = run_sandboxed(["./attack"], cwd=work, timeout_s=60, memory_mb=512)
    assert ran.returncode == 3  # it ran to its STOP: every probe was tried
    libc = parse_libc(ran.stderr)
    assert libc["getuid"] == "65534"
    assert libc["open_secret"] == "-1" and libc["open_source"] == "-1" and libc["kill"] == "-1"
    assert_report_contained(parse_report(ran.stderr))
    outside.assert_untouched()


def parse_libc(text: str) -> dict[str, str]:
    line = next(ln for ln in text.splitlines() if ln.startswith("FSP-LIBC "))
    return dict(kv.split("=", 1) for kv in line.split(" ", 1)[1].split(";"))


@needs_gfortran
def test_python_payload_run_by_the_verification_harness_is_contained(outside: Outside) -> None:
    from kernels.engine.backends.common import GeneratedCode
    from kernels.engine.pipeline import find_kernels
    from kernels.engine.verify import verify_against_gfortran

    (kernel,) = find_kernels((FIXTURES / "clamp_goto.f90").read_text(), filename="clamp_goto.f90")
    port = GeneratedCode(code=python_probe(outside.targets()), entry="clamp_goto")
    report = verify_against_gfortran(kernel, port, sizes={"n": 8}, timeout_s=120)
    assert report.status == "failed"
    assert_report_contained(parse_report(report.message))
    outside.assert_untouched()


# --------------------------------------------------------------------------------------------
# translate with the LLM fallback, through the API and the fake Mistral server


def _real_targets(tmp_path: Path) -> Outside:
    """Aim at the real thing: this server's SECRET_KEY file and its database socket/port."""
    from django.conf import settings
    from django.db import connection

    connection.ensure_connection()
    db = connection.settings_dict
    host, port = db.get("HOST") or "", int(db.get("PORT") or 5432)
    socket_path = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else None
    secret = Path(settings.FORTRANSPIRE_HOME) / "secret_key"
    return Outside(
        tmp_path,
        state_dir=str(settings.FORTRANSPIRE_HOME),
        secret_file=str(secret),
        db_socket=socket_path,
        db_port=port,
    )


def _post_translate(client, headers, source: str) -> dict:
    res = client.post(
        "/api/v1/translate",
        data=json.dumps({"source": source, "target": "cpu", "allow_llm": True, "sizes": {"n": 8}}),
        content_type="application/json",
        **headers,
    )
    assert res.status_code in (200, 422), res.content
    return res.json()


@needs_gfortran
@pytest.mark.django_db(transaction=True)
def test_llm_answer_attacking_from_the_generated_code_is_contained(
    client_a, tenant_a, make_key, auth_headers, settings, monkeypatch, tmp_path
) -> None:
    from tenants import llm_credentials as creds

    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    monkeypatch.setattr(llm, "check_module", lambda code, entry: None)  # the check missed it
    outside = _real_targets(tmp_path)
    try:
        evil = reply("```python\n" + python_probe(outside.targets()) + "```")
        with FakeMistral([evil] * 4) as fake:
            creds.llm_credential_set(
                tenant=tenant_a, api_key=KEY, endpoint=fake.url, fallback_enabled=True
            )
            headers = auth_headers(make_key(tenant_a, scopes=["translate"]))
            body = _post_translate(client_a, headers, (FIXTURES / "clamp_goto.f90").read_text())
            repair = fake.requests[1].last_user_text
        assert body["kernels"][0]["status"] == "unsupported"
        report = parse_report(repair)
        assert_report_contained(report)
        assert report["dbtcp"] == "no" and report["net"] == "no"
        outside.assert_untouched()
    finally:
        outside.close()


@needs_gfortran
@pytest.mark.django_db(transaction=True)
def test_unsupported_fortran_run_by_the_llm_fallback_verification_is_contained(
    client_a, tenant_a, make_key, auth_headers, settings, monkeypatch, tmp_path
) -> None:
    from tenants import llm_credentials as creds

    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    _scanner_misses_everything(monkeypatch)
    outside = _real_targets(tmp_path)
    try:
        source = fortran_bind_c_kernel(outside.targets(), name="clamp_goto")
        benign = reply(
            "```python\nimport numba\n\n@numba.njit\ndef clamp_goto(n, x):\n    pass\n```"
        )
        with FakeMistral([benign] * 4) as fake:
            creds.llm_credential_set(
                tenant=tenant_a, api_key=KEY, endpoint=fake.url, fallback_enabled=True
            )
            headers = auth_headers(make_key(tenant_a, scopes=["translate"]))
            body = _post_translate(client_a, headers, source)
            repair = fake.requests[1].last_user_text
        assert body["kernels"][0]["status"] == "unsupported"
        assert "the original Fortran failed to run" in repair
        assert_report_contained(parse_report(repair))
        outside.assert_untouched()
    finally:
        outside.close()


@pytest.mark.django_db(transaction=True)
def test_attribute_chain_answers_are_refused_before_anything_runs(
    client_a, tenant_a, make_key, auth_headers, settings, monkeypatch
) -> None:
    from tenants import llm_credentials as creds

    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    from kernels.engine import verify

    ran = []
    for module in (sandbox, verify):
        monkeypatch.setattr(module, "run_sandboxed", lambda *a, **k: ran.append(a))
    chains = [
        "import numpy as np\n\ndef clamp_goto(n, x):\n"
        "    np.ctypeslib.ctypes.CDLL(None).system(b'id')\n",
        "import numpy as np\n\ndef clamp_goto(n, x):\n    np.f2py.os.system('id')\n",
        "import numba\n\ndef clamp_goto(n, x):\n    numba.core.serialize.os.system('id')\n",
        "def clamp_goto(n, x):\n    ().__class__.__base__.__subclasses__()\n",
    ]
    with FakeMistral([reply(f"```python\n{c}```") for c in chains]) as fake:
        creds.llm_credential_set(
            tenant=tenant_a, api_key=KEY, endpoint=fake.url, fallback_enabled=True
        )
        headers = auth_headers(make_key(tenant_a, scopes=["translate"]))
        body = _post_translate(client_a, headers, (FIXTURES / "clamp_goto.f90").read_text())
        repairs = [r.last_user_text for r in fake.requests[1:]]
    (k,) = body["kernels"]
    assert k["status"] == "unsupported" and k["llm_calls"] == 4
    assert "`np.ctypeslib` is not allowed" in repairs[0]
    assert "`np.f2py` is not allowed" in repairs[1]
    assert "`numba.core` is not allowed" in repairs[2]
    assert ran == []  # no answer reached the sandbox, let alone ran


# --------------------------------------------------------------------------------------------
# profile --measure, through the CLI


@needs_gfortran
def test_profile_measure_never_runs_an_unsupported_kernel(
    outside: Outside, tmp_path: Path, monkeypatch, capsys
) -> None:
    from fortranspire_site.cli import main

    _scanner_misses_everything(monkeypatch)
    good = (FIXTURES / "heat2d_jacobi.f90").read_text()
    path = tmp_path / "mixed.f90"
    path.write_text(good + "\n" + fortran_bind_c_kernel(outside.targets()))
    code = main(
        ["profile", str(path), "--measure", "--json", "--size", "n=16", "--size", "m=16"]
        + ["--size", "nstep=1"]
    )
    data = json.loads(capsys.readouterr().out)
    measured = {k["name"]: k["measured"] for k in data["kernels"]}
    assert all(t["status"] == "skipped" for t in measured["evil"].values())
    assert "does not support" in measured["evil"]["gfortran"]["message"]
    assert measured["heat2d_jacobi"]["gfortran"]["status"] == "ok"
    assert code in (0, 1)
    outside.assert_untouched()


# --------------------------------------------------------------------------------------------
# include tricks, through the CLI


@pytest.mark.parametrize(
    ("suffix", "line"),
    [
        (".F90", '#include "{secret}"'),
        (".F90", '#inc\\\nlude "{secret}"'),
        (".F90", '#/**/include "{secret}"'),
        (".f90", "  include '{secret}'"),
    ],
)
def test_include_tricks_cannot_read_a_file_outside_the_upload(
    suffix: str, line: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    from fortranspire_site.cli import main

    secret = tmp_path / "secret.inc"
    secret.write_text("x(1) = 42.0d0 + secretcontent7d1f\n")
    directive = line.format(secret=secret)
    body = "subroutine k(n, x)\n  integer :: n\n  real(8) :: x(n)\n"
    if directive.startswith("  include"):
        source = body + directive + "\nend subroutine k\n"
    else:
        source = directive + "\n" + body + "end subroutine k\n"
    path = tmp_path / f"inc{suffix}"
    path.write_text(source)
    # The scanner refuses every spelling...
    assert main(["translate", str(path), "--json", "--size", "n=4"]) == 2
    first = capsys.readouterr()
    assert "secretcontent7d1f" not in (first.out + first.err).lower()
    # ...and without it the sandbox shows cpp and gfortran nothing but the upload.
    _scanner_misses_everything(monkeypatch)
    code = main(["translate", str(path), "--json", "--size", "n=4"])
    second = capsys.readouterr()
    assert "secretcontent7d1f" not in (second.out + second.err).lower()
    assert code != 0


# --------------------------------------------------------------------------------------------
# doctor, health, no fallback, byte cap


def test_doctor_passes_here_and_reports_the_isolation(capsys) -> None:
    from fortranspire_site.cli import main

    code = main(["doctor", "--json"])
    data = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in data["checks"]}
    assert code == 0 and data["ok"], checks
    assert checks["uid inside"]["detail"].startswith("uid 65534")
    assert checks["network unreachable"]["ok"] and checks["host processes invisible"]["ok"]
    assert checks["FORTRANSPIRE_HOME and host files invisible"]["ok"]


def test_doctor_fails_without_bubblewrap(monkeypatch, capsys) -> None:
    from fortranspire_site.cli import main

    monkeypatch.setattr(sandbox, "BWRAP", "no-such-bwrap")
    try:
        assert main(["doctor"]) == 1
        assert "FAIL" in capsys.readouterr().out
    finally:
        monkeypatch.undo()
        sandbox.probe(force=True)


@needs_gfortran
def test_without_a_sandbox_the_kernel_fails_with_the_reason_and_health_says_so(
    monkeypatch, public_client
) -> None:
    from kernels.engine import translate_source

    monkeypatch.setattr(sandbox, "BWRAP", "no-such-bwrap")
    sandbox.probe(force=True)
    try:
        result = translate_source((FIXTURES / "heat2d_jacobi.f90").read_text())
        (k,) = result.kernels
        assert k.status == "failed"
        message = " ".join(d.message for d in k.diagnostics)
        assert "sandbox is unavailable" in message and "make system-deps" in message
        health = public_client.get("/health").json()
        assert health["sandbox"] == "unavailable" and health["status"] == "degraded"
    finally:
        monkeypatch.undo()
        sandbox.probe(force=True)
    assert public_client.get("/health").json()["sandbox"] == "ok"


def test_sizes_over_the_byte_cap_fail_before_anything_is_allocated(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from fortranspire_site.cli import main

    monkeypatch.setenv("FORTRANSPIRE_MAX_RUN_BYTES", str(1 << 20))
    path = tmp_path / "heat.f90"
    path.write_text((FIXTURES / "heat2d_jacobi.f90").read_text())
    code = main(["translate", str(path), "--json", "--size", "n=4000", "--size", "m=4000"])
    (k,) = json.loads(capsys.readouterr().out)["kernels"]
    assert code == 1 and k["status"] == "failed"
    text = json.dumps(k["diagnostics"])
    assert "FORTRANSPIRE_MAX_RUN_BYTES" in text and "1.0 MiB" in text


def test_the_harness_runs_without_the_project_on_its_path() -> None:
    from kernels.engine import harness

    with sandbox_tempdir(prefix="harness-") as work:
        harness.install(work)
        res = run_sandboxed(
            [sys.executable, "-I", "-c", "import kernels"], cwd=work, timeout_s=30, memory_mb=512
        )
    assert res.returncode == 1 and "ModuleNotFoundError" in res.stderr


# --------------------------------------------------------------------------------------------
# translate_kernel, through MCP


@needs_gfortran
def test_mcp_translate_of_a_file_with_a_libc_payload_runs_none_of_it(
    mcp_live, tenant_a, make_key, monkeypatch, tmp_path
) -> None:
    import anyio

    _scanner_misses_everything(monkeypatch)
    outside = Outside(tmp_path)
    try:
        source = (FIXTURES / "heat2d_jacobi.f90").read_text() + "\n"
        source += fortran_bind_c_kernel(outside.targets())
        key = make_key(tenant_a, scopes=["translate"])

        async def scenario():
            async with mcp_live.session("http", "a.localhost", key) as session:
                return await session.call_tool(
                    "translate_kernel",
                    {"source": source, "sizes": {"n": 12, "m": 10, "nstep": 2}},
                )

        result = anyio.run(scenario)
        assert not result.is_error, result.content
        statuses = {k["name"]: k["status"] for k in result.structured_content["kernels"]}
        # The payload is not a kernel the translator supports: it is neither generated nor
        # run; the supported kernel is verified with the payload compiled next to it.
        assert statuses == {"heat2d_jacobi": "verified", "evil": "unsupported"}
        outside.assert_untouched()
    finally:
        outside.close()
