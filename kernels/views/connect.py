"""Dashboard: connect Le Chat. The workspace's MCP URLs, the connector form's steps, and a
"test connection" that speaks MCP to the workspace's own endpoint.

How the test works: the server mints a short-lived key (history scope only, 5 minutes, named
"connection test"), opens an MCP client session with the SDK (initialize + tools/list) on both
transports, then revokes the key whatever happened. It connects over loopback to the port this
request came in on, with this request's Host header, so it exercises what Le Chat reaches (host
-> tenant routing, bearer auth, the MCP apps and the tool registry) but not public DNS or TLS in
front of the server. A real connection, not an in-process call: an internal shortcut could pass
while the mounted endpoint is broken.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import timedelta

import anyio
import httpx2
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from fortranspire_site.errors import NotFound
from kernels.views.translate import CONNECTION_TEST_KEY
from tenants import services as tenant_services
from tenants.access import is_htmx, member_required, owner_required
from tenants.oauth_services import oauth_client_list, oauth_client_revoke

PROBE_TIMEOUT_S = 20
PROBE_KEY_TTL = timedelta(minutes=5)
TRANSPORTS = (("Streamable HTTP", "/mcp"), ("HTTP+SSE (legacy)", "/sse"))


@dataclass
class ProbeResult:
    transport: str
    path: str
    ok: bool = False
    server: str = ""
    protocol: str = ""
    tools: list[str] = field(default_factory=list)
    elapsed_ms: int = 0
    error: str = ""


async def _probe_one(base: str, host: str, key: str, transport: str, path: str) -> ProbeResult:
    result = ProbeResult(transport=transport, path=path)
    headers = {"Host": host, "Authorization": f"Bearer {key}"}
    started = time.monotonic()
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            if path == "/mcp":
                async with (
                    httpx2.AsyncClient(headers=headers, timeout=PROBE_TIMEOUT_S) as client,
                    streamable_http_client(f"{base}/mcp", http_client=client) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    init = await session.initialize()
                    tools = await session.list_tools()
            else:
                async with (
                    sse_client(f"{base}/sse", headers=headers, timeout=PROBE_TIMEOUT_S) as (
                        read,
                        write,
                    ),
                    ClientSession(read, write) as session,
                ):
                    init = await session.initialize()
                    tools = await session.list_tools()
        result.server = f"{init.server_info.name} {init.server_info.version or ''}".strip()
        result.protocol = str(init.protocol_version)
        result.tools = sorted(t.name for t in tools.tools)
        result.ok = bool(result.tools)
        if not result.ok:
            result.error = "the server lists no tools"
    except TimeoutError:
        result.error = f"no answer within {PROBE_TIMEOUT_S} s"
    except Exception as exc:  # noqa: BLE001 - whatever broke is the answer the owner needs
        result.error = _describe(exc)
    result.elapsed_ms = int((time.monotonic() - started) * 1000)
    return result


def _describe(exc: BaseException) -> str:
    # anyio task groups wrap the real error; show the innermost one.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:500]


def probe_mcp(*, base: str, host: str, key: str) -> list[ProbeResult]:
    """initialize + tools/list on both transports (sequentially) against ``base``, as ``host``."""

    async def both() -> list[ProbeResult]:
        return [await _probe_one(base, host, key, name, path) for name, path in TRANSPORTS]

    return asyncio.run(both())


def _loopback_base(request: HttpRequest) -> str:
    return f"http://127.0.0.1:{request.META.get('SERVER_PORT') or 80}"


def _connect_context(request: HttpRequest) -> dict:
    origin = f"{request.scheme}://{request.get_host()}"
    return {
        "origin": origin,
        "mcp_url": f"{origin}/mcp",
        "sse_url": f"{origin}/sse",
        "oauth_metadata_url": f"{origin}/.well-known/oauth-protected-resource/mcp",
        "oauth_clients": oauth_client_list(tenant=request.tenant),
        "nav": "connect",
    }


@member_required
@never_cache
@require_GET
def connect(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/connect.html", _connect_context(request))


@owner_required
@require_POST
def connect_test(request: HttpRequest) -> HttpResponse:
    key, raw_key = tenant_services.api_key_create(
        tenant=request.tenant,
        name=CONNECTION_TEST_KEY,
        scopes=["history"],
        expires_at=timezone.now() + PROBE_KEY_TTL,
        created_by=request.user,
    )
    try:
        results = probe_mcp(base=_loopback_base(request), host=request.get_host(), key=raw_key)
    finally:
        tenant_services.api_key_revoke(key=key, actor=request.user)
    context = {"results": results, "all_ok": all(r.ok for r in results)}
    if is_htmx(request):
        return render(request, "dashboard/_connect_result.html", context)
    return render(request, "dashboard/connect.html", {**_connect_context(request), "test": context})


@owner_required
@require_POST
def connect_oauth_revoke(request: HttpRequest, client_id: str) -> HttpResponse:
    """Revoke every token and code an OAuth client holds for this workspace."""
    try:
        oauth_client_revoke(tenant=request.tenant, client_id=client_id, actor=request.user)
    except NotFound:
        pass  # already gone (a second click): the list shows the truth
    return redirect("dashboard_connect")
