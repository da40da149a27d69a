"""Bearer-key auth on the MCP endpoints: tenant binding by Host, 401 challenges, unknown hosts."""

from __future__ import annotations

import datetime as dt

import anyio
import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


def _initialize(mcp_live, hostname, key=None):
    with mcp_live.http(hostname, key) as http:
        return http.post("/mcp", json=INITIALIZE, headers=ACCEPT)


def test_request_without_a_key_gets_401_pointing_at_resource_metadata(mcp_live, tenant_a):
    response = _initialize(mcp_live, "a.localhost")
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    expected = f'resource_metadata="http://a.localhost:{mcp_live.port}/.well-known/oauth-protected-resource/mcp"'
    assert expected in challenge

    with mcp_live.http("a.localhost") as http:
        sse = http.get("/sse")
    assert sse.status_code == 401
    assert "oauth-protected-resource/sse" in sse.headers["www-authenticate"]


def test_key_from_another_tenant_is_refused(mcp_live, tenant_a, tenant_b, make_key):
    key_b = make_key(tenant_b)
    refused = _initialize(mcp_live, "a.localhost", key_b)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    accepted = _initialize(mcp_live, "b.localhost", key_b)
    assert accepted.status_code == 200


def test_revoked_and_expired_keys_are_refused(mcp_live, tenant_a, make_key):
    from tenants.models import ApiKey
    from tenants.services import api_key_revoke

    revoked = make_key(tenant_a, name="revoked")
    assert _initialize(mcp_live, "a.localhost", revoked).status_code == 200
    api_key_revoke(key=ApiKey.objects.get(prefix=revoked[:12]))
    assert _initialize(mcp_live, "a.localhost", revoked).status_code == 401

    expired = make_key(
        tenant_a, name="expired", expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    )
    ApiKey.objects.filter(prefix=expired[:12]).update(
        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    assert _initialize(mcp_live, "a.localhost", expired).status_code == 401


def test_api_key_environment_variable_works_for_the_default_tenant_only(
    mcp_live, tenant_a, settings, monkeypatch
):
    settings.DEFAULT_TENANT_SLUG = "a"
    monkeypatch.setenv("API_KEY", "legacy-shared-secret-for-tests")
    assert _initialize(mcp_live, "a.localhost", "legacy-shared-secret-for-tests").status_code == 200
    assert _initialize(mcp_live, "b.localhost", "legacy-shared-secret-for-tests").status_code == 401

    async def call():
        async with mcp_live.session(
            "sse", "a.localhost", "legacy-shared-secret-for-tests"
        ) as session:
            return await session.call_tool("list_kernel_runs", {})

    assert not anyio.run(call).is_error
    from kernels.selectors import kernel_run_list

    (run,) = kernel_run_list(tenant=tenant_a)
    assert run.tool == "list_kernel_runs" and run.api_key_prefix == "env"


@pytest.mark.parametrize(
    "path", ["/mcp", "/sse", "/messages/?session_id=00", "/.well-known/oauth-protected-resource"]
)
def test_unknown_host_is_rejected_without_a_traceback(mcp_live, tenant_a, make_key, path):
    key = make_key(tenant_a)
    with mcp_live.http("evil.example", key) as http:
        response = http.post(path, json=INITIALIZE) if path != "/sse" else http.get(path)
    assert response.status_code == 421
    assert response.json()["error"] == "unknown_host"
    assert "Traceback" not in response.text


def test_public_host_is_not_an_mcp_tenant(mcp_live, tenant_a, make_key):
    response = _initialize(mcp_live, "localhost", make_key(tenant_a))
    assert response.status_code == 421


def test_health_answers_without_a_token(mcp_live, tenant_a):
    with mcp_live.http("a.localhost") as http:
        response = http.get("/health")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


def test_protected_resource_metadata_names_the_tenant_host(mcp_live, tenant_a):
    base = f"http://a.localhost:{mcp_live.port}"
    with mcp_live.http("a.localhost") as http:
        for path, resource in [
            ("/.well-known/oauth-protected-resource/mcp", f"{base}/mcp"),
            ("/.well-known/oauth-protected-resource/sse", f"{base}/sse"),
            ("/.well-known/oauth-protected-resource", base),
        ]:
            response = http.get(path)
            assert response.status_code == 200, path
            meta = response.json()
            assert meta["resource"] == resource
            assert meta["authorization_servers"] == [base]
            assert meta["scopes_supported"] == ["translate", "profile", "agent", "history"]
            assert meta["bearer_methods_supported"] == ["header"]
        assert http.get("/.well-known/oauth-protected-resource/admin").status_code == 404


def test_session_cannot_be_used_with_another_key(mcp_live, tenant_a, make_key):
    """A stolen Mcp-Session-Id is useless without the key that opened the session."""
    owner, other = make_key(tenant_a, name="owner"), make_key(tenant_a, name="other")
    opened = _initialize(mcp_live, "a.localhost", owner)
    session_id = opened.headers["mcp-session-id"]
    with mcp_live.http("a.localhost", other) as http:
        response = http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**ACCEPT, "Mcp-Session-Id": session_id, "Mcp-Protocol-Version": "2025-06-18"},
        )
    assert response.status_code == 404


def test_new_tenant_host_is_served_without_a_restart(monkeypatch):
    """The allow-list follows the database: a host unknown a moment ago is looked up again."""
    from mcp_bridge import hosts

    known: dict[str, object] = {}
    monkeypatch.setattr("tenants.selectors.tenant_for_host", lambda host: known.get(host))
    monkeypatch.setattr("tenants.selectors.tenant_domains", lambda: set(known))

    async def direct(fn, /, *args, **kwargs):
        return fn(*args, **kwargs)

    monkeypatch.setattr(hosts, "run_db", direct)
    directory = hosts.TenantDirectory()
    clock = [1000.0]
    monkeypatch.setattr(hosts.time, "monotonic", lambda: clock[0])

    assert anyio.run(directory.resolve, "new.localhost:8000") is None
    known["new.localhost"] = object()
    clock[0] += 1.5  # past the one-second negative cache
    assert anyio.run(directory.resolve, "new.localhost:8000") is known["new.localhost"]
    assert "new.localhost:*" in directory.security.allowed_hosts
    assert "https://new.localhost" in directory.security.allowed_origins

    del known["new.localhost"]
    clock[0] += 60  # past the TTL: the domain list is re-read and the host dropped
    assert anyio.run(directory.resolve, "new.localhost:8000") is None
    assert "new.localhost:*" not in directory.security.allowed_hosts


def test_wrong_keys_from_one_address_are_throttled_like_on_rest(
    mcp_live, tenant_a, make_key, settings
):
    settings.AXES_FAILURE_LIMIT = 5
    good = make_key(tenant_a)
    statuses = [
        _initialize(mcp_live, "a.localhost", f"fsp_wrong{i:030d}").status_code for i in range(6)
    ]
    assert statuses == [401] * 4 + [429, 429]  # the guess that reaches the limit is refused too
    refused = _initialize(mcp_live, "a.localhost", "fsp_wrong_again")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    # A right key is not what a guesser has: it still works on MCP (only failures pay for the
    # lock-out lookup, which keeps valid requests off the database).
    assert _initialize(mcp_live, "a.localhost", good).status_code == 200
