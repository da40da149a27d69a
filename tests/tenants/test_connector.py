"""`fortranspire connector publish|status`: the real mistralai SDK against the local fake
Mistral server (server_url = the tenant's endpoint override), with the tenant's own key."""

from __future__ import annotations

import json

import pytest

from mcp_bridge.auth import TOOL_SCOPES
from tests.fakes.mistral_server import FakeMistral

KEY_A = "sk-tenant-a-connector-0123456789SECRET"


@pytest.fixture
def fake_mistral(settings):
    settings.FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS = True
    with FakeMistral() as fake:
        fake.connector_tools = [
            {"name": name, "inputSchema": {"type": "object"}} for name in TOOL_SCOPES
        ]
        yield fake


@pytest.fixture
def tenant_a_with_key(tenant_a, fake_mistral):
    from tenants.llm_credentials import llm_credential_set

    llm_credential_set(tenant=tenant_a, api_key=KEY_A, endpoint=fake_mistral.url, actor="test")
    return tenant_a


def _cli(capsys, *argv: str) -> tuple[int, str]:
    from fortranspire_site.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.django_db
def test_publish_creates_the_connector_and_confirms_the_tools(
    tenant_a_with_key, fake_mistral, capsys
):
    code, out = _cli(capsys, "connector", "status", "--tenant", "a")
    assert code == 1 and "not published" in out

    code, out = _cli(
        capsys, "connector", "publish", "--tenant", "a", "--base-url", "https://a.example.com"
    )
    assert code == 0, out
    assert "created connector fortranspire-a" in out
    create = next(r for r in fake_mistral.requests if r.path == "/v1/connectors")
    assert create.authorization == f"Bearer {KEY_A}"
    assert create.body["server"] == "https://a.example.com/mcp"
    assert create.body["protocol"] == "mcp"
    assert create.body["oauth2_server_metadata_url"] == (
        "https://a.example.com/.well-known/oauth-authorization-server"
    )
    metadata = create.body["oauth2_server_metadata"]
    assert metadata["issuer"] == "https://a.example.com"
    assert metadata["registration_endpoint"] == "https://a.example.com/oauth/register/"
    assert any("/tools" in r.path for r in fake_mistral.requests)

    # Publishing again reuses the connector of that name.
    code, out = _cli(capsys, "connector", "publish", "--tenant", "a", "--json")
    result = json.loads(out)
    assert code == 0 and result["created"] is False
    assert result["tools_seen"] == list(TOOL_SCOPES) and result["tools_missing"] == []
    assert len(fake_mistral.connectors) == 1

    code, out = _cli(capsys, "connector", "status", "--tenant", "a", "--json")
    status = json.loads(out)
    assert code == 0 and status["published"] is True
    assert status["server"] == "https://a.example.com/mcp"


@pytest.mark.django_db
def test_publish_reports_tools_mistral_does_not_see(tenant_a_with_key, fake_mistral, capsys):
    fake_mistral.connector_tools = fake_mistral.connector_tools[:2]
    code, out = _cli(capsys, "connector", "publish", "--tenant", "a")
    assert code == 1
    assert "missing: profile_kernels, ask_agent" in out


@pytest.mark.django_db
def test_publish_without_a_mistral_key_says_how_to_configure_one(tenant_a, capsys):
    code, out = _cli(capsys, "connector", "publish", "--tenant", "a")
    assert code == 2
    assert "No Mistral credential is configured for tenant 'a'" in out
