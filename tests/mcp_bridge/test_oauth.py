"""OAuth 2.1 on a tenant host, end to end with the mcp SDK's OAuthClientProvider over real HTTP:
discovery, registration, login + consent, code exchange, tool calls on both transports, refresh,
revocation; and the refusals (PKCE, redirect URIs, replay, other tenant, expiry, flooding)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import timedelta
from urllib.parse import urlencode

import anyio
import httpx2
import pytest

from mcp_bridge.oauth_client import (
    REDIRECT_URI,
    OAuthConnection,
    Person,
    code_from,
    loopback_client,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

PASSWORD = "correct horse battery staple 42"
TINY = "subroutine twice(x)\n  real, intent(inout) :: x\n  x = 2.0 * x\nend subroutine twice\n"


@pytest.fixture(autouse=True)
def fresh_registration_limits():
    """The per-IP registration counter lives in the process's cache: every test starts at 0."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def alice(tenant_a):
    """An owner of tenant a (a dashboard account)."""
    from django.contrib.auth import get_user_model

    from tenants.services import membership_set

    user = get_user_model().objects.create_user("alice", password=PASSWORD)
    membership_set(tenant=tenant_a, user=user, role="owner")
    return user


@pytest.fixture
def bob(tenant_b):
    from django.contrib.auth import get_user_model

    from tenants.services import membership_set

    user = get_user_model().objects.create_user("bob", password=PASSWORD)
    membership_set(tenant=tenant_b, user=user, role="owner")
    return user


def origin(mcp_live, host: str = "a.localhost") -> str:
    return f"http://{host}:{mcp_live.port}"


async def _get(url: str, **kwargs) -> httpx2.Response:
    async with loopback_client() as client:
        return await client.get(url, **kwargs)


async def _post(url: str, **kwargs) -> httpx2.Response:
    async with loopback_client() as client:
        return await client.post(url, **kwargs)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


async def register(base: str, redirect_uris=(REDIRECT_URI,)) -> httpx2.Response:
    return await _post(
        f"{base}/oauth/register/",
        json={
            "client_name": "manual test client",
            "redirect_uris": list(redirect_uris),
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
    )


def authorize_url(base: str, client_id: str, challenge: str | None, **extra) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "state": "st-123",
        "scope": "translate history",
    }
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(extra)
    return f"{base}/oauth/authorize/?{urlencode(params)}"


async def manual_code(base: str, username: str = "alice", **extra) -> tuple[str, str, str]:
    """(client_id, code_verifier, code) through registration, login and consent."""
    registration = await register(base)
    assert registration.status_code == 201, registration.text
    client_id = registration.json()["client_id"]
    verifier, challenge = pkce_pair()
    redirect = await Person(username, PASSWORD).authorize(
        authorize_url(base, client_id, challenge, **extra)
    )
    result = code_from(redirect)
    assert result.state == "st-123"
    assert result.iss == base  # RFC 9207
    return client_id, verifier, result.code


async def exchange(base: str, client_id: str, verifier: str, code: str) -> httpx2.Response:
    return await _post(
        f"{base}/oauth/token/",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )


async def initialize_status(base: str, token: str) -> int:
    response = await _post(
        f"{base}/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        },
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
        },
    )
    return response.status_code


# ---- the whole flow ---------------------------------------------------------------------------


def test_le_chat_flow_from_url_to_tool_calls_refresh_and_revocation(mcp_live, alice):
    base = origin(mcp_live)

    async def scenario():
        # 1-2. No token: the 401 challenge names the resource metadata, which names the issuer.
        challenge = await _post(f"{base}/mcp", json={})
        assert challenge.status_code == 401
        assert (
            f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"'
            in (challenge.headers["www-authenticate"])
        )
        resource = (await _get(f"{base}/.well-known/oauth-protected-resource/mcp")).json()
        assert resource["resource"] == f"{base}/mcp"
        assert resource["authorization_servers"] == [base]
        # 3. Authorization-server metadata (RFC 8414), issuer = the tenant's origin.
        metadata = (await _get(f"{base}/.well-known/oauth-authorization-server")).json()
        assert metadata["issuer"] == base
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert metadata["registration_endpoint"] == f"{base}/oauth/register/"
        assert metadata["client_id_metadata_document_supported"] is True
        assert set(metadata["scopes_supported"]) == {"translate", "profile", "agent", "history"}

        # 4-7. The SDK registers, sends the person to authorize, exchanges the code and calls.
        connection = OAuthConnection(
            base, Person("alice", PASSWORD, scopes=["translate", "history"])
        )
        async with connection.session("http") as session:
            result = await session.call_tool("translate_kernel", {"source": TINY, "verify": False})
            assert not result.is_error, result.content
            assert result.structured_content["kernels"][0]["status"] == "translated"
            # The text content is the same JSON (the SDK validated it against outputSchema).
            assert json.loads(result.content[0].text) == result.structured_content
        assert connection.storage.client_info.client_id
        assert "code_challenge_method=S256" in connection.authorize_urls[0]
        consent = connection.person.pages[0]
        assert "Le Chat (test)" in consent and "127.0.0.1:8976" in consent
        tokens = connection.storage.tokens
        assert tokens.refresh_token and set(tokens.scope.split()) == {"translate", "history"}

        # The same token on the legacy SSE transport.
        async with connection.session("sse") as session:
            runs = await session.call_tool("list_kernel_runs", {"limit": 5})
            assert not runs.is_error
            assert runs.structured_content["count"] >= 1
            # The history names who acted: the user behind the token, not an anonymous call.
            assert {r["caller"] for r in runs.structured_content["runs"]} == {"user alice"}
            # Scope not granted: the tool refuses.
            profile = await session.call_tool("profile_kernels", {"source": TINY})
            assert profile.is_error and "profile" in profile.content[0].text

        # 8. Refresh: the SDK refreshes an expired access token; the refresh token rotates.
        old_access, old_refresh = tokens.access_token, tokens.refresh_token
        connection.provider("http").context.token_expiry_time = 1.0  # long expired
        async with connection.session("http") as session:
            await session.list_tools()
        refreshed = connection.storage.tokens
        assert refreshed.access_token != old_access
        assert refreshed.refresh_token != old_refresh
        assert len(connection.authorize_urls) == 1  # no second consent
        assert await initialize_status(base, old_access) == 401

        # 9. Revocation (RFC 7009), then the token gets 401.
        client_id = connection.storage.client_info.client_id
        revoked = await _post(
            f"{base}/oauth/revoke/",
            data={"token": refreshed.access_token, "client_id": client_id},
        )
        assert revoked.status_code == 200
        assert await initialize_status(base, refreshed.access_token) == 401

    anyio.run(scenario)


def test_tokens_are_stored_as_checksums_only(mcp_live, alice):
    from oauth2_provider.models import AccessToken, RefreshToken

    base = origin(mcp_live)

    async def scenario():
        client_id, verifier, code = await manual_code(base)
        return (await exchange(base, client_id, verifier, code)).json()

    tokens = anyio.run(scenario)
    stored = AccessToken.objects.get(
        token_checksum=hashlib.sha256(tokens["access_token"].encode()).hexdigest()
    )
    assert tokens["access_token"] not in (stored.token or "")
    assert stored.resource == [f"{base}/mcp"]
    refresh = RefreshToken.objects.get(access_token=stored)
    assert tokens["refresh_token"] not in (refresh.token or "")


# ---- refusals ---------------------------------------------------------------------------------


def test_plain_or_missing_pkce_is_refused(mcp_live, alice):
    base = origin(mcp_live)

    async def scenario():
        client_id = (await register(base)).json()["client_id"]
        missing = await Person("alice", PASSWORD).authorize(authorize_url(base, client_id, None))
        plain = await Person("alice", PASSWORD).authorize(
            authorize_url(
                base, client_id, None, code_challenge="a" * 43, code_challenge_method="plain"
            )
        )
        return missing, plain

    missing, plain = anyio.run(scenario)
    for response in (missing, plain):
        # Refused with an error redirect to the (registered) client, never with a code.
        location = response.headers.get("location", "")
        assert "code=" not in location
        assert "error=invalid_request" in location


def test_redirect_uri_must_match_exactly(mcp_live, alice):
    base = origin(mcp_live)

    async def scenario():
        client_id = (await register(base)).json()["client_id"]
        _, challenge = pkce_pair()
        url = authorize_url(base, client_id, challenge, redirect_uri=REDIRECT_URI + "/other")
        return await Person("alice", PASSWORD).authorize(url)

    response = anyio.run(scenario)
    assert response.status_code == 400
    assert "location" not in response.headers


def test_a_code_is_exchanged_once(mcp_live, alice):
    base = origin(mcp_live)

    async def scenario():
        client_id, verifier, code = await manual_code(base)
        first = await exchange(base, client_id, verifier, code)
        second = await exchange(base, client_id, verifier, code)
        return first, second

    first, second = anyio.run(scenario)
    assert first.status_code == 200
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"


def test_wrong_code_verifier_is_refused(mcp_live, alice):
    base = origin(mcp_live)

    async def scenario():
        client_id, _verifier, code = await manual_code(base)
        return await exchange(base, client_id, "x" * 50, code)

    response = anyio.run(scenario)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_token_of_tenant_a_is_refused_on_tenant_b(mcp_live, alice, bob):
    base_a, base_b = origin(mcp_live), origin(mcp_live, "b.localhost")

    async def scenario():
        client_id, verifier, code = await manual_code(base_a)
        token = (await exchange(base_a, client_id, verifier, code)).json()["access_token"]
        return await initialize_status(base_a, token), await initialize_status(base_b, token)

    on_a, on_b = anyio.run(scenario)
    assert (on_a, on_b) == (200, 401)


def test_a_resource_of_another_tenant_is_refused(mcp_live, alice, bob):
    base_a, base_b = origin(mcp_live), origin(mcp_live, "b.localhost")

    async def scenario():
        client_id = (await register(base_a)).json()["client_id"]
        _, challenge = pkce_pair()
        url = authorize_url(base_a, client_id, challenge, resource=f"{base_b}/mcp")
        return await Person("alice", PASSWORD).authorize(url)

    response = anyio.run(scenario)
    assert response.status_code == 400
    assert "invalid_target" in response.text


def test_a_non_member_cannot_approve(mcp_live, alice, bob):
    base = origin(mcp_live)

    async def scenario():
        client_id = (await register(base)).json()["client_id"]
        _, challenge = pkce_pair()
        return await Person("bob", PASSWORD).authorize(authorize_url(base, client_id, challenge))

    response = anyio.run(scenario)
    assert response.status_code == 403
    assert "not a member" in response.text


def test_expired_token_is_refused(mcp_live, alice):
    from django.utils import timezone
    from oauth2_provider.models import AccessToken

    from mcp_bridge.auth import forget_verified_keys

    base = origin(mcp_live)

    async def issue():
        client_id, verifier, code = await manual_code(base)
        return (await exchange(base, client_id, verifier, code)).json()["access_token"]

    token = anyio.run(issue)
    assert anyio.run(initialize_status, base, token) == 200
    checksum = hashlib.sha256(token.encode()).hexdigest()
    AccessToken.objects.filter(token_checksum=checksum).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    forget_verified_keys()  # an update() sends no signal; the cache TTL would cover it
    assert anyio.run(initialize_status, base, token) == 401


def test_owner_revokes_a_client_and_its_tokens_stop_working(mcp_live, alice, client_a, make_key):
    from tenants.oauth_services import oauth_client_list

    base = origin(mcp_live)

    async def issue():
        client_id, verifier, code = await manual_code(base)
        tokens = (await exchange(base, client_id, verifier, code)).json()
        return client_id, tokens

    client_id, tokens = anyio.run(issue)
    from tenants.models import Tenant

    tenant = Tenant.objects.get(schema_name="a")
    listed = oauth_client_list(tenant=tenant)
    assert [c["client_id"] for c in listed] == [client_id]
    assert listed[0]["users"] == ["alice"] and listed[0]["name"] == "manual test client"

    owner_key = make_key(tenant, scopes=["owner"])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {owner_key}"}
    api_list = client_a.get("/api/v1/oauth/clients", **headers)
    assert api_list.status_code == 200 and api_list.json()["clients"][0]["client_id"] == client_id
    revoked = client_a.delete(f"/api/v1/oauth/clients/{client_id}", **headers)
    assert revoked.status_code == 200, revoked.content
    assert oauth_client_list(tenant=tenant) == []

    assert anyio.run(initialize_status, base, tokens["access_token"]) == 401

    async def refresh():
        return await _post(
            f"{base}/oauth/token/",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": client_id,
            },
        )

    assert anyio.run(refresh).status_code == 400


def test_registration_refuses_non_https_redirects(mcp_live):
    base = origin(mcp_live)

    async def scenario():
        return (
            await register(base, ["http://evil.example/callback"]),
            await register(base, ["javascript:alert(1)"]),
            await register(base, ["https://client.example/cb", "http://[::1]:9000/cb"]),
        )

    plain_http, script, fine = anyio.run(scenario)
    assert plain_http.status_code == 400
    assert plain_http.json()["error"] == "invalid_redirect_uri"
    assert script.status_code == 400
    assert fine.status_code == 201


def test_registration_flooding_gets_429(mcp_live, settings):
    settings.OAUTH_REGISTRATIONS_PER_IP_PER_HOUR = 3
    base = origin(mcp_live)

    async def scenario():
        return [(await register(base)).status_code for _ in range(5)]

    statuses = anyio.run(scenario)
    assert statuses == [201, 201, 201, 429, 429]


def test_unused_registrations_expire_and_the_cap_holds(mcp_live, settings):
    from oauth2_provider.models import Application

    from tenants.oauth_services import oauth_clients_expire_unused

    base = origin(mcp_live)
    settings.OAUTH_MAX_REGISTERED_CLIENTS = 2

    async def scenario():
        return [(await register(base)).status_code for _ in range(3)]

    assert anyio.run(scenario) == [201, 201, 503]
    assert oauth_clients_expire_unused(older_than_s=0) == 2
    assert Application.objects.count() == 0


def test_oauth_endpoints_are_not_served_on_the_public_host(mcp_live):
    async def scenario():
        return await _get(
            f"http://localhost:{mcp_live.port}/.well-known/oauth-authorization-server"
        )

    assert anyio.run(scenario).status_code == 404


CIMD_URL = "https://client.example/oauth/client-metadata.json"
CIMD_DOCUMENTS = {
    CIMD_URL: {
        "client_id": CIMD_URL,
        "client_name": "Metadata Document Client",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
}


class StaticDocumentFetcher:
    """Stands in for DOT's SSRF-hardened fetcher (https on public addresses only)."""

    def fetch(self, client_id: str) -> tuple[dict, int]:
        return CIMD_DOCUMENTS[client_id], 300


def test_client_id_metadata_document_replaces_registration(mcp_live, alice, settings):
    from oauth2_provider.models import Application

    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "CIMD_METADATA_FETCHER": f"{__name__}.StaticDocumentFetcher",
    }
    base = origin(mcp_live)

    async def scenario():
        connection = OAuthConnection(base, Person("alice", PASSWORD), client_metadata_url=CIMD_URL)
        async with connection.session("http") as session:
            runs = await session.call_tool("list_kernel_runs", {})
            assert not runs.is_error
        return connection

    connection = anyio.run(scenario)
    assert (
        f"client_id={CIMD_URL.replace(':', '%3A').replace('/', '%2F')}"
        in (connection.authorize_urls[0])
    )
    assert "Metadata Document Client" in connection.person.pages[0]
    app = Application.objects.get(client_id=CIMD_URL)
    assert app.registration_source == "cimd"


def test_owner_sees_and_revokes_a_client_on_the_connect_page(mcp_live, alice, tenant_client):
    from urllib.parse import quote

    base = origin(mcp_live)

    async def issue():
        client_id, verifier, code = await manual_code(base)
        tokens = (await exchange(base, client_id, verifier, code)).json()
        return client_id, tokens["access_token"]

    client_id, access = anyio.run(issue)
    browser = tenant_client("a.localhost")
    browser.force_login(alice)
    page = browser.get("/connect/")
    assert page.status_code == 200
    assert "manual test client" in page.content.decode() and "alice" in page.content.decode()
    revoked = browser.post(f"/connect/oauth/{quote(client_id)}/revoke/")
    assert revoked.status_code == 302
    assert "manual test client" not in browser.get("/connect/").content.decode()
    assert anyio.run(initialize_status, base, access) == 401


def test_missing_scope_gets_the_same_403_insufficient_scope_as_a_key(mcp_live, alice):
    base = origin(mcp_live)

    async def scenario():
        client_id, verifier, code = await manual_code(base)  # scope: translate history
        token = (await exchange(base, client_id, verifier, code)).json()["access_token"]
        return await _post(
            f"{base}/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "profile_kernels", "arguments": {"source": TINY}},
            },
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
            },
        )

    response = anyio.run(scenario)
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="profile"' in challenge
    assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in challenge
