"""Per-tenant Mistral credentials: encrypted at rest, never shown back, never shared.

The agent calls go through the real ``mistralai`` SDK to tests/fakes/mistral_server.py, which
records the Authorization header of every request: that is how these tests see whose key was used.
"""

from __future__ import annotations

import pytest
from django.db import connection

from fortranspire_site.errors import ValidationFailed
from kernels import agent
from tenants import llm_credentials as creds
from tenants.models import AuditLog, LlmCredential
from tests.fakes.mistral_server import FakeMistral, error, reply

KEY_A = "sk-tenant-a-0123456789abcdefSECRET"
KEY_B = "sk-tenant-b-9876543210fedcbaSECRET"


@pytest.fixture
def fake_mistral(settings):
    # The fake listens on 127.0.0.1, which the SSRF guard refuses unless the operator allows it.
    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    with FakeMistral() as fake:
        yield fake


def _rows_containing(text: str) -> list[str]:
    """Every table, in every schema, whose row text contains ``text`` (a whole-database grep)."""
    hits = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        for schema, table in cursor.fetchall():
            cursor.execute(
                f'SELECT count(*) FROM "{schema}"."{table}" AS t WHERE t::text LIKE %s',
                [f"%{text}%"],
            )
            if cursor.fetchone()[0]:
                hits.append(f"{schema}.{table}")
    return hits


def test_api_key_is_not_stored_in_plain_text_anywhere_in_the_database(tenant_a):
    creds.llm_credential_set(tenant=tenant_a, api_key=KEY_A, fallback_enabled=True, actor="test")

    assert _rows_containing(KEY_A) == []
    assert _rows_containing("tenant-a-0123") == []  # not even a fragment
    stored = LlmCredential.objects.get(tenant=tenant_a)
    assert stored.encrypted_api_key and KEY_A not in stored.encrypted_api_key
    assert creds.llm_credential_decrypt(credential=stored) == KEY_A
    # The audit row says what changed, not the key.
    row = AuditLog.objects.filter(action="llm_credential.set").latest("at")
    assert row.details["changed"] == ["api_key", "fallback_enabled"]


def test_encrypted_key_survives_a_secret_rotation_with_fallbacks(tenant_a, settings):
    creds.llm_credential_set(tenant=tenant_a, api_key=KEY_A)
    old = settings.SECRET_KEY
    settings.SECRET_KEY = "a-brand-new-secret-key-for-rotation-0123456789"
    settings.SECRET_KEY_FALLBACKS = [old]
    stored = creds.llm_credential_get(tenant=tenant_a)
    assert creds.llm_credential_decrypt(credential=stored) == KEY_A
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(creds.LlmCredentialUnreadable):
        creds.llm_credential_decrypt(credential=stored)


def test_status_never_returns_the_key(tenant_a):
    creds.llm_credential_set(tenant=tenant_a, api_key=KEY_A, model="codestral-2508")
    status = creds.llm_credential_status(tenant=tenant_a).to_dict()
    assert status["has_api_key"] is True and status["key_source"] == "tenant"
    assert status["model"] == "codestral-2508" and status["fallback_enabled"] is False
    assert KEY_A not in repr(status) and "SECRET" not in repr(status)
    assert KEY_A not in repr(creds.llm_config_for(tenant=tenant_a))


def test_tenant_without_a_credential_gets_a_clear_error_saying_how_to_configure_one(tenant_b):
    with pytest.raises(creds.LlmNotConfigured) as exc:
        agent.agent_ask(tenant=tenant_b, question="What can you port?")
    assert exc.value.status == 400 and exc.value.code == "llm_not_configured"
    assert "PUT /api/v1/llm/credential" in exc.value.message
    assert "admin" in exc.value.message and "MISTRAL_API_KEY" in exc.value.message


def test_tenant_a_credential_is_never_used_for_tenant_b(tenant_a, tenant_b, fake_mistral):
    creds.llm_credential_set(
        tenant=tenant_a, api_key=KEY_A, endpoint=fake_mistral.url, fallback_enabled=True
    )
    # B has nothing configured: no config, no fallback, no agent, and nothing sent anywhere.
    assert creds.llm_config_for(tenant=tenant_b) is None
    assert agent.llm_fallback_for(tenant_b) is None
    with pytest.raises(creds.LlmNotConfigured):
        agent.agent_ask(tenant=tenant_b, question="hi")
    assert fake_mistral.requests == []

    # With both configured, each request carries its own tenant's key.
    creds.llm_credential_set(tenant=tenant_b, api_key=KEY_B, endpoint=fake_mistral.url)
    fake_mistral.push(reply("answer for A"), reply("answer for B"))
    _, out_a = agent.agent_ask(tenant=tenant_a, question="hi from A")
    _, out_b = agent.agent_ask(tenant=tenant_b, question="hi from B")
    assert (out_a["answer"], out_b["answer"]) == ("answer for A", "answer for B")
    assert [r.authorization for r in fake_mistral.requests] == [
        f"Bearer {KEY_A}",
        f"Bearer {KEY_B}",
    ]


def test_fallback_runs_only_for_tenants_that_switched_it_on(tenant_a, fake_mistral):
    creds.llm_credential_set(tenant=tenant_a, api_key=KEY_A, endpoint=fake_mistral.url)
    assert agent.llm_fallback_for(tenant_a) is None
    creds.llm_credential_set(tenant=tenant_a, fallback_enabled=True)
    assert callable(agent.llm_fallback_for(tenant_a))


def test_platform_key_is_only_a_default_for_tenants_that_opt_in(
    tenant_a, tenant_b, settings, fake_mistral
):
    settings.MISTRAL_API_KEY = "sk-platform-key"
    settings.MISTRAL_SERVER_URL = fake_mistral.url
    assert creds.llm_config_for(tenant=tenant_b) is None  # no opt-in, no key
    creds.llm_credential_set(tenant=tenant_b, use_platform_key=True, fallback_enabled=True)
    config = creds.llm_config_for(tenant=tenant_b, purpose="fallback")
    assert config is not None and config.api_key == "sk-platform-key"
    assert creds.llm_credential_status(tenant=tenant_b).key_source == "platform"
    assert creds.llm_config_for(tenant=tenant_a) is None


def test_platform_key_is_never_sent_to_a_tenant_endpoint_override(tenant_a, settings):
    settings.MISTRAL_API_KEY = "sk-platform-key"
    settings.MISTRAL_SERVER_URL = None
    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    creds.llm_credential_set(
        tenant=tenant_a, use_platform_key=True, endpoint="http://127.0.0.1:9/steal"
    )
    config = creds.llm_config_for(tenant=tenant_a)
    assert config.api_key == "sk-platform-key" and config.server_url is None


def test_endpoint_override_on_a_private_address_is_refused_by_default(tenant_a, settings):
    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = False
    for endpoint in (
        "http://127.0.0.1:8000",
        "https://10.0.0.5",
        "https://localhost",
        "ftp://x.io",
    ):
        with pytest.raises(ValidationFailed):
            creds.llm_credential_set(tenant=tenant_a, api_key=KEY_A, endpoint=endpoint)
    cred = creds.llm_credential_set(
        tenant=tenant_a, api_key=KEY_A, endpoint="https://llm.example.com/"
    )
    assert cred.endpoint_override == "https://llm.example.com"


def test_provider_rejecting_the_key_is_a_clear_error_and_the_run_is_recorded(
    tenant_a, fake_mistral
):
    from kernels.selectors import kernel_run_list

    creds.llm_credential_set(tenant=tenant_a, api_key=KEY_A, endpoint=fake_mistral.url)
    fake_mistral.push(error(401, "Unauthorized"))
    with pytest.raises(agent.LlmProviderError) as exc:
        agent.agent_ask(tenant=tenant_a, question="hi")
    assert "rejected the API key" in exc.value.message
    assert exc.value.extra["llm_error"] == "llm_auth"
    run = kernel_run_list(tenant=tenant_a, limit=1)[0]
    assert str(run.id) == exc.value.extra["run_id"]
    assert run.tool == "ask_agent" and run.status == "failed" and "llm_auth" in run.error


def test_translate_with_allow_llm_uses_only_the_calling_tenants_fallback(
    tenant_a, tenant_b, fake_mistral
):
    import shutil
    from pathlib import Path

    from kernels.services import kernel_translate

    if shutil.which("gfortran") is None:
        pytest.skip("gfortran is not installed: the fallback's answer cannot be verified")
    source = (Path(__file__).parents[1] / "fixtures" / "fortran" / "clamp_goto.f90").read_text()
    correct = (
        "```python\nimport numba\n\n\n@numba.njit\ndef clamp_goto(n, x):\n"
        "    for i in range(n):\n        if x[i] < 0.75:\n            x[i] = 0.75\n"
        "        if x[i] > 1.25:\n            x[i] = 1.25\n```\n"
    )
    creds.llm_credential_set(
        tenant=tenant_a, api_key=KEY_A, endpoint=fake_mistral.url, fallback_enabled=True
    )
    fake_mistral.push(reply(correct, prompt_tokens=400, completion_tokens=100))

    # B asks for the LLM but has no credential: deterministic result, nothing sent.
    run_b, result_b = kernel_translate(
        tenant=tenant_b, source=source, target="cpu", channel="api", allow_llm=True
    )
    assert [(k.status, k.llm_calls) for k in result_b.kernels] == [("unsupported", 0)]
    assert fake_mistral.requests == []

    # A without allow_llm: no call either, even though its fallback is on.
    _, result = kernel_translate(tenant=tenant_a, source=source, target="cpu", channel="api")
    assert result.kernels[0].status == "unsupported" and fake_mistral.requests == []

    run_a, result_a = kernel_translate(
        tenant=tenant_a, source=source, target="cpu", channel="api", allow_llm=True
    )
    assert [(k.status, k.llm_calls) for k in result_a.kernels] == [("verified", 1)]
    assert [r.authorization for r in fake_mistral.requests] == [f"Bearer {KEY_A}"]
    assert (run_a.llm_calls, run_a.llm_tokens, run_b.llm_calls) == (1, 500, 0)


def test_a_first_save_without_a_key_does_not_silently_opt_in_to_the_platform_key(
    tenant_a, settings
):
    settings.MISTRAL_API_KEY = "sk-platform-key"
    with pytest.raises(ValidationFailed):
        creds.llm_credential_set(tenant=tenant_a, model="codestral-latest", fallback_enabled=True)
    assert creds.llm_credential_get(tenant=tenant_a) is None
    assert creds.llm_config_for(tenant=tenant_a) is None
