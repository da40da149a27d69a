"""Stateless answers kept from the SDK (mcp_bridge.fast_path) and the revocation bound of the
key cache they rely on (mcp_bridge.auth): same bytes as the SDK, auth on every request, per
tenant, and a revoked key refused everywhere within MCP_AUTH_CACHE_S."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import anyio
import pytest

from mcp_bridge.fast_path import answer_key

pytestmark = pytest.mark.timeout(300)

JSON_ACCEPT = {"Accept": "application/json, text/event-stream"}
VERSION = "2025-06-18"
INITIALIZE_PARAMS = {
    "protocolVersion": VERSION,
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "0"},
}


def _headers(**extra: str) -> dict[bytes, bytes]:
    base = {
        "host": "a.localhost:8000",
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": VERSION,
    }
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return {k.encode(): v.encode() for k, v in base.items() if v is not None}


# ---- which requests may be answered from a kept answer --------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, ("tools/list", VERSION)),
        (
            {"jsonrpc": "2.0", "id": "x", "method": "tools/list", "params": {}},
            ("tools/list", VERSION),
        ),
        ({"jsonrpc": "2.0", "id": 3, "method": "ping"}, ("ping", VERSION)),
        (
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            ("notifications/initialized", VERSION),
        ),
        (
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INITIALIZE_PARAMS},
            ("initialize", VERSION, VERSION),
        ),
        # Anything the SDK must judge or that changes the answer goes to the SDK.
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": "2"}}, None),
        (
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {"x": 1}}},
            None,
        ),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}}, None),
        ({"jsonrpc": "2.0", "id": True, "method": "tools/list"}, None),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"}, None),
        ({"jsonrpc": "2.0", "method": "tools/list"}, None),  # a notification, not a request
        ({"jsonrpc": "1.0", "id": 1, "method": "tools/list"}, None),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "extra": 1}, None),
        ([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}], None),  # a batch
        (
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"capabilities": {}}},
            None,
        ),
        (
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {**INITIALIZE_PARAMS, "protocolVersion": "1999-01-01"},
            },
            None,
        ),
    ],
)
def test_only_plain_requests_with_fixed_answers_are_eligible(message, expected):
    assert answer_key(_headers(), message) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://a.localhost:8000"},  # browsers keep the SDK's Origin check
        {"mcp_session_id": "abc"},
        {"content_type": "text/plain"},
        {"accept": "text/event-stream"},  # the SDK answers 406
        {"mcp_protocol_version": "2026-07-28"},  # the SDK's 2026-era path
        {"mcp_protocol_version": "not-a-version"},
    ],
)
def test_requests_the_sdk_must_check_are_not_eligible(headers):
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert answer_key(_headers(**headers), message) is None


def test_accept_wildcards_and_a_missing_version_header_are_eligible():
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert answer_key(_headers(accept="*/*"), message) == ("tools/list", VERSION)
    assert answer_key(_headers(mcp_protocol_version=None), message) == ("tools/list", "")


# ---- the kept answers over real HTTP ---------------------------------------------------------


@pytest.fixture
def stateless_env(monkeypatch):
    from mcp_bridge.app import STATELESS_ENV

    monkeypatch.setenv(STATELESS_ENV, "1")


@pytest.fixture
def stateless_server(stateless_env, mcp_live, monkeypatch):
    """The in-thread live server in stateless mode, and the paths of requests the SDK handled."""
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    handled: list[str] = []
    original = StreamableHTTPSessionManager.handle_request

    async def counting(self, scope, receive, send):
        handled.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(StreamableHTTPSessionManager, "handle_request", counting)
    return mcp_live, handled


def _post(http, body, **headers):
    return http.post(
        "/mcp", json=body, headers={**JSON_ACCEPT, "Mcp-Protocol-Version": VERSION, **headers}
    )


def _without_date(response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.multi_items() if k.lower() != "date"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "body",
    [
        {"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": "é-ü", "method": "tools/list", "params": {}},
        {"jsonrpc": "2.0", "id": 2**60, "method": "ping"},
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INITIALIZE_PARAMS},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ],
)
def test_kept_answers_are_the_sdks_bytes_and_skip_the_sdk(
    stateless_server, tenant_a, make_key, body
):
    server, handled = stateless_server
    key = make_key(tenant_a)
    with server.http("a.localhost", key) as http:
        first = _post(http, body)  # the SDK answers and its answer is kept
        sdk_calls = len(handled)
        again = [_post(http, body) for _ in range(3)]
    assert sdk_calls == 1
    assert len(handled) == 1, "later requests were answered without the SDK"
    assert first.status_code in (200, 202)
    assert "mcp-session-id" not in first.headers
    for response in again:
        assert response.status_code == first.status_code
        assert response.content == first.content
        assert _without_date(response) == _without_date(first)
    if "id" in body:
        assert first.json()["id"] == body["id"]


@pytest.mark.django_db(transaction=True)
def test_kept_tools_list_is_refused_without_a_valid_key_for_this_tenant(
    stateless_server, tenant_a, tenant_b, make_key
):
    from tenants.models import ApiKey
    from tenants.services import api_key_revoke

    server, _handled = stateless_server
    key_a = make_key(tenant_a)
    key_b = make_key(tenant_b)
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    with server.http("a.localhost", key_a) as http:
        assert _post(http, listing).status_code == 200  # kept, and key_a verified on a
    with server.http("b.localhost", key_b) as http:
        assert _post(http, listing).status_code == 200  # key_b verified on b

    with server.http("a.localhost") as anonymous:
        refused = _post(anonymous, listing)
    assert (
        refused.status_code == 401 and "resource_metadata=" in refused.headers["www-authenticate"]
    )
    with server.http("a.localhost", "fsp_" + "x" * 43) as wrong:
        assert _post(wrong, listing).status_code == 401
    # Keys verified on their own tenant's host are no good on another's.
    with server.http("b.localhost", key_a) as crossed:
        assert _post(crossed, listing).status_code == 401
    with server.http("a.localhost", key_b) as crossed:
        assert _post(crossed, listing).status_code == 401
    # Revoked here: the signal clears this process's cache, so the very next request is refused.
    api_key_revoke(key=ApiKey.objects.get(prefix=key_a[:12]))
    with server.http("a.localhost", key_a) as http:
        assert _post(http, listing).status_code == 401
    with server.http("b.localhost", key_b) as http:
        assert _post(http, listing).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_requests_the_sdk_must_judge_still_reach_it(stateless_server, tenant_a, make_key):
    server, handled = stateless_server
    key = make_key(tenant_a)
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    with server.http("a.localhost", key) as http:
        assert _post(http, listing).status_code == 200
        before = len(handled)
        foreign = _post(http, listing, Origin="http://evil.example")
        sse_only = http.post(
            "/mcp",
            json=listing,
            headers={"Accept": "text/event-stream", "Mcp-Protocol-Version": VERSION},
        )
        upper_host = _post(http, listing, Host=f"A.LOCALHOST:{server.port}")
    assert len(handled) == before + 3
    assert foreign.status_code == 403  # the SDK's Origin check
    assert sse_only.status_code == 406  # JSON answers need Accept: application/json
    assert upper_host.status_code == 421  # the SDK's Host allow-list is exact


@pytest.mark.django_db(transaction=True)
def test_a_key_revoked_without_a_signal_is_refused_within_the_bound(
    stateless_server, tenant_a, make_key, settings
):
    """A bare UPDATE sends no signal: what another process's revocation looks like here."""
    from django.utils import timezone

    from mcp_bridge.limits import limit_setting
    from tenants.models import ApiKey

    server, _handled = stateless_server
    bound = limit_setting("MCP_AUTH_CACHE_S")
    assert bound == 1
    key = make_key(tenant_a)
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    with server.http("a.localhost", key) as http:
        # In steady use for longer than the bound: the background re-check keeps it served.
        until = time.monotonic() + 2.5 * bound
        while time.monotonic() < until:
            assert _post(http, listing).status_code == 200
            time.sleep(0.05)
        ApiKey.objects.filter(prefix=key[:12]).update(revoked_at=timezone.now())
        revoked_at = time.monotonic()
        statuses = []
        while time.monotonic() < revoked_at + bound + 1.0:
            statuses.append((time.monotonic() - revoked_at, _post(http, listing).status_code))
            time.sleep(0.05)
    # Refused: 401, and past django-axes' limit of wrong keys from this address, 429.
    first_refusal = next(t for t, status in statuses if status == 401)
    assert first_refusal <= bound + 0.2, statuses
    assert all(status in (401, 429) for t, status in statuses if t >= first_refusal), statuses


# ---- the key cache's bound, on a clock we control ---------------------------------------------


@pytest.fixture
def fake_checks(monkeypatch, settings):
    """TenantKeyVerifier with its database check and clock replaced: returns (verifier, state)."""
    from mcp_bridge import auth

    settings.MCP_AUTH_CACHE_S = 1
    state = SimpleNamespace(now=100.0, valid=True, checks=[], gate=None)
    monkeypatch.setattr(auth.time, "monotonic", lambda: state.now)

    async def check(self, tenant, token, digest):
        state.checks.append(state.now)
        if state.gate is not None:
            await state.gate.wait()
        if not state.valid:
            return None
        return auth.TenantAccessToken(token=digest, client_id="c", scopes=[], tenant=tenant)

    monkeypatch.setattr(auth.TenantKeyVerifier, "_check", check)
    return auth.TenantKeyVerifier(), state


TENANT = SimpleNamespace(pk=1)
OTHER_TENANT = SimpleNamespace(pk=2)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_kept_key_is_rechecked_in_the_background_and_dropped_once_revoked(fake_checks):
    from mcp_bridge.auth import current_tenant

    verifier, state = fake_checks

    async def scenario():
        current_tenant.set(TENANT)
        assert await verifier.verify_token("k") is not None  # checked inline at t=100
        state.now = 100.4
        assert verifier.cached(TENANT, "k") is not None
        assert verifier.cached(OTHER_TENANT, "k") is None  # kept per tenant
        await _settle()
        assert state.checks == [100.0]  # young entry: no re-check
        state.now, state.valid = 100.6, False  # revoked elsewhere
        assert verifier.cached(TENANT, "k") is not None  # within the bound, re-check started
        await _settle()
        assert state.checks == [100.0, 100.6]
        assert verifier.cached(TENANT, "k") is None  # the re-check saw the revocation

    anyio.run(scenario)


def test_kept_key_is_never_served_past_the_bound_when_the_recheck_hangs(fake_checks):
    from mcp_bridge.auth import current_tenant

    verifier, state = fake_checks

    async def scenario():
        current_tenant.set(TENANT)
        assert await verifier.verify_token("k") is not None
        state.gate = asyncio.Event()  # the database stops answering
        state.now = 100.7
        assert verifier.cached(TENANT, "k") is not None
        await _settle()
        assert len(state.checks) == 2  # one re-check in flight, not one per request
        assert verifier.cached(TENANT, "k") is not None
        await _settle()
        assert len(state.checks) == 2
        state.now = 101.01  # past the bound from the start of the last good check
        assert verifier.cached(TENANT, "k") is None
        state.gate.set()
        await _settle()

    anyio.run(scenario)


def test_bound_counts_from_the_start_of_the_check_and_clear_discards_checks_in_flight(
    fake_checks,
):
    from mcp_bridge.auth import current_tenant

    verifier, state = fake_checks

    async def scenario():
        current_tenant.set(TENANT)
        state.gate = asyncio.Event()
        pending = asyncio.create_task(verifier.verify_token("k"))
        await _settle()
        state.now = 100.5  # the check took half a second
        state.gate.set()
        assert await pending is not None
        state.now = 101.001  # 0.501 s after it answered, but past the bound from its start
        assert verifier.cached(TENANT, "k") is None

        # A check that started before clear() (a revocation signal) is not kept.
        state.gate = asyncio.Event()
        pending = asyncio.create_task(verifier.verify_token("k"))
        await _settle()
        verifier.clear()
        state.gate.set()
        assert await pending is not None  # that request was already under way
        assert verifier.cached(TENANT, "k") is None

    anyio.run(scenario)


# ---- several processes ------------------------------------------------------------------------


@pytest.mark.timeout(600)
@pytest.mark.django_db(transaction=True)
def test_two_workers_refuse_a_key_revoked_by_another_process_within_the_bound(
    two_worker_server, tenant_a, make_key
):
    """No Redis: the revocation (made in this test process) reaches the workers only through
    their re-checks, so this is the documented bound, across processes."""
    from tenants.models import ApiKey
    from tenants.services import api_key_revoke

    server, log = two_worker_server
    key = make_key(tenant_a)
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}

    def listed() -> int:
        # A new connection each time: the kernel spreads them over both workers.
        with server.http("a.localhost", key) as http:
            return _post(http, listing).status_code

    until = time.monotonic() + 2.0  # longer than the bound: kept by the background re-checks
    while time.monotonic() < until:
        assert listed() == 200
    api_key_revoke(key=ApiKey.objects.get(prefix=key[:12]))
    revoked_at = time.monotonic()
    statuses = []
    while time.monotonic() < revoked_at + 2.5:
        statuses.append((time.monotonic() - revoked_at, listed()))
    late = [(t, status) for t, status in statuses if t > 1.2]
    assert late and all(status in (401, 429) for _, status in late), statuses
    assert "Traceback" not in log.read_text()
