"""/api/v1/llm: the credential (owner scope, write-only key), usage and alerts; ask_agent history."""

from __future__ import annotations

import json

import pytest

from kernels import agent
from kernels.services import kernel_run_record
from tenants import llm_credentials as creds
from tests.fakes.mistral_server import FakeMistral, reply

KEY = "sk-owner-put-key-0123456789SECRET"


def _put(client, headers, body):
    return client.put(
        "/api/v1/llm/credential", data=json.dumps(body), content_type="application/json", **headers
    )


def test_owner_puts_a_key_and_get_never_shows_it(client_a, tenant_a, make_key, auth_headers):
    owner = auth_headers(make_key(tenant_a, scopes=["owner"]))
    res = _put(
        client_a, owner, {"api_key": KEY, "fallback_enabled": True, "model": "codestral-2508"}
    )
    assert res.status_code == 200, res.content
    assert KEY not in res.content.decode()
    res = client_a.get("/api/v1/llm/credential", **owner)
    body = res.json()
    assert res.status_code == 200 and KEY not in res.content.decode()
    assert body["has_api_key"] is True and body["key_source"] == "tenant"
    assert body["fallback_enabled"] is True and body["model"] == "codestral-2508"


def test_credential_needs_the_owner_scope(client_a, tenant_a, make_key, auth_headers):
    member = auth_headers(make_key(tenant_a, scopes=["translate", "agent", "history"]))
    assert _put(client_a, member, {"api_key": KEY}).status_code == 403
    assert client_a.get("/api/v1/llm/credential", **member).status_code == 403
    assert creds.llm_credential_get(tenant=tenant_a) is None


def test_a_key_of_tenant_a_cannot_set_tenant_b_credential(
    client_b, tenant_a, tenant_b, make_key, auth_headers
):
    owner_a = auth_headers(make_key(tenant_a, scopes=["owner"]))
    assert _put(client_b, owner_a, {"api_key": KEY}).status_code == 401
    assert creds.llm_credential_get(tenant=tenant_b) is None


def test_invalid_endpoint_is_a_400_with_the_reason(
    client_a, tenant_a, make_key, auth_headers, settings
):
    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = False
    owner = auth_headers(make_key(tenant_a, scopes=["owner"]))
    res = _put(client_a, owner, {"api_key": KEY, "endpoint": "http://169.254.169.254/latest"})
    assert res.status_code == 400
    assert "private" in res.json()["message"] or "loopback" in res.json()["message"]


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "2130706433",
        "0x7f000001",
        "localhost.",
        "0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "10.0.0.7",
        "169.254.169.254",
    ],
)
def test_every_spelling_of_an_internal_endpoint_is_refused_and_nothing_is_stored(
    client_a, tenant_a, make_key, auth_headers, settings, host
):
    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = False
    owner = auth_headers(make_key(tenant_a, scopes=["owner"]))
    res = _put(client_a, owner, {"api_key": KEY, "endpoint": f"https://{host}:8443/v1"})
    assert res.status_code == 400, res.content
    assert "not allowed" in res.json()["message"]
    assert "8443" not in res.json()["message"]
    assert creds.llm_credential_get(tenant=tenant_a) is None


def _translation_report(name: str, calls: int, status: str, tokens: int = 0) -> dict:
    return {
        "file": "input.f90",
        "target": "cpu",
        "kernels": [
            {
                "name": name,
                "status": status,
                "llm_calls": calls,
                "llm_tokens": tokens,
                "diagnostics": [{"line": 7, "column": 3, "message": "GOTO is not supported"}],
            }
        ],
    }


def test_usage_has_a_histogram_tokens_and_alerts_on_kernels_needing_more_than_six_calls(
    client_a, tenant_a, make_key, auth_headers
):
    hard = "subroutine hard(n, x)\n! goto inside\nend\n"
    # The same kernel (source + name) needed 4 calls, then 3 more on a second attempt: 7 > 6.
    for calls, status in ((4, "unsupported"), (3, "verified")):
        kernel_run_record(
            tenant=tenant_a,
            channel="api",
            status=status,
            source=hard,
            tool="translate_kernel",
            report=_translation_report("hard", calls, status, tokens=1000),
            llm_calls=calls,
            llm_tokens=1000,
        )
    # A kernel the LLM ported in 2 calls, once: no alert. One the pipeline did alone: bucket 0.
    kernel_run_record(
        tenant=tenant_a,
        channel="api",
        status="verified",
        source="subroutine easy\nend\n",
        report=_translation_report("easy", 2, "verified", tokens=500),
        llm_calls=2,
        llm_tokens=500,
    )
    kernel_run_record(
        tenant=tenant_a,
        channel="api",
        status="verified",
        source="subroutine det\nend\n",
        report=_translation_report("det", 0, "verified"),
    )
    kernel_run_record(
        tenant=tenant_a,
        channel="mcp",
        status="ok",
        tool="ask_agent",
        llm_calls=3,
        llm_tokens=90,
        report={"answer": "x", "trace": []},
    )
    res = client_a.get("/api/v1/llm/usage", **auth_headers(make_key(tenant_a, scopes=["history"])))
    assert res.status_code == 200, res.content
    usage = res.json()
    assert usage["calls_per_kernel_histogram"] == {"0": 1, "1": 0, "2": 1, "3": 1, "4": 1, "5+": 0}
    assert usage["fallback"] == {"calls": 9, "tokens": 2500}
    assert usage["agent"] == {"runs": 1, "calls": 3, "tokens": 90}
    assert usage["llm_calls"] == 12 and usage["llm_tokens"] == 2590
    assert [a["kernel"] for a in usage["alerts"]] == ["hard"]
    alert = usage["alerts"][0]
    assert alert["llm_calls"] == 7 and alert["attempts"] == 2 and alert["alert"] is True
    assert alert["last_status"] == "verified" and alert["reasons"] == ["GOTO is not supported"]


def test_ask_agent_run_is_recorded_in_history_with_its_trace(tenant_a, settings):
    from kernels.selectors import kernel_run_get

    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    earlier = kernel_run_record(
        tenant=tenant_a,
        channel="api",
        status="verified",
        source="subroutine det\nend\n",
        tool="translate_kernel",
        kernel_names=["det"],
        report=_translation_report("det", 0, "verified"),
    )
    script = [
        reply("", tool_calls=[("list_kernel_runs", {"limit": 5})]),
        reply("", tool_calls=[("get_kernel_run", {"run_id": str(earlier.id)})]),
        reply("Your last run ported det with 0 LLM calls.", prompt_tokens=20, completion_tokens=10),
    ]
    with FakeMistral(script) as fake:
        creds.llm_credential_set(tenant=tenant_a, api_key=KEY, endpoint=fake.url)
        run, out = agent.agent_ask(tenant=tenant_a, question="What did I port last?")
        tool_results = [m for m in fake.requests[2].messages if m["role"] == "tool"]
    assert out["answer"] == "Your last run ported det with 0 LLM calls."
    assert out["llm_calls"] == 3 and out["run_id"] == str(run.id)
    assert [t["tool"] for t in out["trace"]] == ["list_kernel_runs", "get_kernel_run"]
    assert out["trace"][1]["summary"] == f"run {earlier.id}: translate_kernel verified"
    assert json.loads(tool_results[1]["content"])["source"].startswith("subroutine det")
    stored = kernel_run_get(tenant=tenant_a, run_id=run.id)
    assert stored.tool == "ask_agent" and stored.status == "ok"
    assert stored.llm_calls == 3 and stored.llm_tokens == 150 + 150 + 30
    assert stored.report["trace"] == out["trace"]
    assert stored.report["question"] == "What did I port last?"


def test_agent_cannot_read_another_tenants_run(tenant_a, tenant_b, settings):
    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    secret_run = kernel_run_record(
        tenant=tenant_b,
        channel="api",
        status="verified",
        source="subroutine secret\nend\n",
        report=_translation_report("secret", 0, "verified"),
    )
    script = [
        reply("", tool_calls=[("get_kernel_run", {"run_id": str(secret_run.id)})]),
        reply("I cannot find that run."),
    ]
    with FakeMistral(script) as fake:
        creds.llm_credential_set(tenant=tenant_a, api_key=KEY, endpoint=fake.url)
        _, out = agent.agent_ask(tenant=tenant_a, question="show run")
        tool_msg = [m for m in fake.requests[1].messages if m["role"] == "tool"][0]
    assert out["trace"][0]["summary"].startswith("error: no kernel run")
    assert "secret" not in tool_msg["content"]
    with pytest.raises(Exception) as exc:  # and asking with run_id directly is a 404
        agent.agent_ask(tenant=tenant_a, question="x", run_id=str(secret_run.id))
    assert getattr(exc.value, "status", None) == 404


def test_operator_admin_shows_usage_alerts_but_never_the_key(public_client, tenant_a):
    from django.contrib.auth import get_user_model

    credential = creds.llm_credential_set(tenant=tenant_a, api_key=KEY, fallback_enabled=True)
    for calls in (4, 4):
        kernel_run_record(
            tenant=tenant_a,
            channel="api",
            status="unsupported",
            source="subroutine hard\nend\n",
            report=_translation_report("hard", calls, "unsupported"),
            llm_calls=calls,
        )
    admin = get_user_model().objects.create_superuser("op", "op@example.com", "pw-op-123456")
    public_client.force_login(admin)
    res = public_client.get(f"/admin/tenants/llmcredential/{credential.pk}/change/")
    page = res.content.decode()
    assert res.status_code == 200
    assert "ALERT: 1 kernel(s) needed more than 6 calls" in page and "hard" in page
    assert KEY not in page and credential.encrypted_api_key not in page


def test_agent_analyses_and_translates_with_the_real_engine_then_answers(tenant_a, settings):
    import shutil
    from pathlib import Path

    from kernels.selectors import kernel_run_get

    if shutil.which("gfortran") is None:
        pytest.skip("gfortran is not installed: the translate tool cannot verify")
    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    source = (Path(__file__).parents[1] / "fixtures" / "fortran" / "heat2d_jacobi.f90").read_text()
    script = [
        reply("", tool_calls=[("analyse", {})]),
        reply("", tool_calls=[("translate", {"target": "cpu"})]),
        reply("heat2d_jacobi is verified on the CPU."),
    ]
    with FakeMistral(script) as fake:
        creds.llm_credential_set(tenant=tenant_a, api_key=KEY, endpoint=fake.url)
        run, out = agent.agent_ask(
            tenant=tenant_a, question="Port this to numba", source=source, channel="api"
        )
        tool_results = [
            json.loads(m["content"]) for m in fake.requests[2].messages if m["role"] == "tool"
        ]
    analysed, translated = tool_results
    loops = analysed["kernels"][0]["loops"]
    assert any(x["parallel"] for x in loops) and any(not x["parallel"] for x in loops)
    assert out["trace"][1]["summary"].startswith("cpu heat2d_jacobi: verified")
    assert run.kernel_names == ["heat2d_jacobi"]
    # The translation the agent made is a run of its own, linked from the trace.
    translate_run = kernel_run_get(tenant=tenant_a, run_id=translated["run_id"])
    assert translated["kernels"][0]["max_abs_err"] is not None
    assert translate_run.tool == "ask_agent.translate" and translate_run.status == "verified"


def test_agent_outage_midway_is_a_503_and_the_run_keeps_the_trace_so_far(tenant_a, settings):
    from fortranspire_site.errors import ServiceUnavailable
    from kernels.engine import llm
    from kernels.selectors import kernel_run_get
    from tests.fakes.mistral_server import error

    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    script = [reply("", tool_calls=[("list_kernel_runs", {})])] + [error(503, "overloaded")] * 3
    with FakeMistral(script) as fake:
        creds.llm_credential_set(tenant=tenant_a, api_key=KEY, endpoint=fake.url)
        with pytest.raises(ServiceUnavailable) as exc:
            agent.agent_ask(
                tenant=tenant_a,
                question="list my runs",
                chat_factory=lambda config: llm.MistralChat(config, sleep=lambda s: None),
            )
        assert len(fake.requests) == 4  # one answer, then 3 bounded attempts
    assert "503" in exc.value.message and exc.value.extra["llm_error"] == "llm_unavailable"
    run = kernel_run_get(tenant=tenant_a, run_id=exc.value.extra["run_id"])
    assert run.status == "failed" and run.llm_calls == 1
    assert [t["tool"] for t in run.report["trace"]] == ["list_kernel_runs"]


def test_agent_rate_limited_by_mistral_is_a_429_with_retry_after(tenant_a, settings):
    from fortranspire_site.errors import RateLimited
    from tests.fakes.mistral_server import error

    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    with FakeMistral([error(429, "quota", headers={"Retry-After": "120"})]) as fake:
        creds.llm_credential_set(tenant=tenant_a, api_key=KEY, endpoint=fake.url)
        with pytest.raises(RateLimited) as exc:
            agent.agent_ask(tenant=tenant_a, question="hi")
    assert exc.value.status == 429 and exc.value.retry_after == 120
