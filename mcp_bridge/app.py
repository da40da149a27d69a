"""The ASGI app behind /mcp, /sse, /messages/ and /.well-known/oauth-protected-resource.

Built from the SDK's own transports (StreamableHTTPSessionManager, SseServerTransport) and auth
pieces (BearerAuthBackend, AuthContextMiddleware); what is ours is the per-Host tenant
resolution, the per-host 401/403 challenges and the protected-resource metadata, because every
tenant is its own origin.

**Scaling out.** With ``FORTRANSPIRE_MCP_STATELESS=1`` (what ``fortranspire serve --workers N``
sets for N > 1) Streamable HTTP runs in the SDK's stateless mode: no ``Mcp-Session-Id``, every
POST is served whole by whichever worker process receives it, so any number of processes behind
one port (or a load balancer) can answer. Progress notifications still arrive, on the SSE stream
that answers the tools/call POST itself; what stateless mode gives up is server-to-client
requests (sampling, elicitation), which no fortranspire tool makes. The legacy SSE transport
stays session-bound: the ``GET /sse`` stream and its ``POST /messages/?session_id=..`` must reach
the same process, so behind several workers it needs sticky routing (by ``session_id``), e.g. one
SSE worker or a proxy hashing on the session.

**The fast path.** In stateless mode, tools/list, ping, initialize and notifications/initialized
have answers that never change; once the SDK has given one, later ones from a known tenant host
with a recently verified bearer are answered before the middleware stack, byte for byte as the
SDK answers them (mcp_bridge.fast_path). Auth still runs on every request; the key cache it
relies on and its revocation bound are in mcp_bridge.auth; docs/mcp-endpoint.md has the figures.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
from mcp.server.mcpserver import MCPServer
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.auth import ProtectedResourceMetadata
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from mcp_bridge.auth import (
    SCOPES,
    TENANT_SCOPE_KEY,
    RequireTenantAuth,
    TenantHostMiddleware,
    TenantKeyVerifier,
    ToolScopeGuard,
    base_url,
    connect_key_signals,
)
from mcp_bridge.fast_path import (
    PEEK_LIMIT,
    AnswerCache,
    StatelessFastPath,
    answer_key,
    first_headers,
    host_of,
    parse_message,
    read_body,
    replaying,
)
from mcp_bridge.hosts import TenantDirectory, lookup_thread, tenant_directory
from mcp_bridge.limits import limit_setting

# Paths the Channels router hands to this app (everything else goes to Django).
MCP_PATH_REGEX = r"^(mcp/?$|sse/?$|messages/|\.well-known/oauth-protected-resource(/|$))"
MESSAGE_PATH = "/messages/"
SESSION_IDLE_TIMEOUT_S = 30 * 60


STATELESS_ENV = "FORTRANSPIRE_MCP_STATELESS"


def stateless_http_enabled() -> bool:
    """Whether Streamable HTTP runs without sessions (see the module docstring)."""
    return os.environ.get(STATELESS_ENV, "") not in ("", "0")


def max_body_bytes() -> int:
    # JSON escaping can double a Fortran source (newlines, quotes): leave room so an oversized
    # source gets the clear tool error rather than a bare 413 from the transport.
    return max(4 * 1024 * 1024, int(2 * limit_setting("MCP_MAX_SOURCE_BYTES")) + 64 * 1024)


# Requests whose answer may carry notifications (progress) before the result: answered on an SSE
# stream. Everything else can be one JSON body.
STREAMED_METHODS = frozenset({"tools/call"})


def _streams_its_answer(message: Any) -> bool:
    """Whether a POSTed JSON-RPC message needs the streaming (SSE) answer."""
    if not isinstance(message, dict):
        return True  # a batch, malformed or oversized: the streaming manager answers as always
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return message.get("method") in STREAMED_METHODS or (
        isinstance(meta, dict) and "progressToken" in meta
    )


class _StreamableHTTPEndpoint:
    """Delegates to the session manager(s) of the current lifespan.

    A StreamableHTTPSessionManager runs once; building fresh ones on every startup lets the same
    ASGI application be served again (tests, ``uvicorn --reload``). In stateless mode there are
    two: tools/call (and anything asking for progress) is answered on an SSE stream so progress
    notifications reach the client; every other request (initialize, tools/list, ping) gets a
    plain JSON body, which costs the server far less than opening and closing an SSE response.
    Sessions do not exist in that mode, so either manager can take any request. Requests whose
    answer never changes are answered from ``answers`` once the SDK has answered one of them
    (mcp_bridge.fast_path); :class:`StatelessFastPath` serves most of them before auth even
    runs, this serves the rest (first sight of a key).
    """

    def __init__(self, answers: AnswerCache, directory: TenantDirectory) -> None:
        self.manager: StreamableHTTPSessionManager | None = None
        self.json_manager: StreamableHTTPSessionManager | None = None
        self.answers = answers
        self.directory = directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self.manager
        if manager is None:
            await JSONResponse(
                {
                    "error": "unavailable",
                    "message": "MCP session manager is not running (ASGI lifespan off?)",
                },
                status_code=503,
            )(scope, receive, send)
            return
        if self.json_manager is not None and scope.get("method") == "POST":
            messages, body = await read_body(receive, PEEK_LIMIT)
            receive = replaying(messages, receive)
            message = parse_message(body) if body is not None else None
            if not _streams_its_answer(message):
                manager = self.json_manager
            headers = first_headers(scope)
            key = answer_key(headers, message)
            if key is not None and self.directory.cached(host_of(headers)) is not None:
                if await self.answers.answer(key, message, send):
                    return
                send = self.answers.recording(key, message, send)
        await manager.handle_request(scope, receive, send)


def _protected_resource_metadata(request: Request) -> Response:
    base = base_url(request.scope)
    suffix = request.path_params.get("resource", "").strip("/")
    if suffix not in ("", "mcp", "sse"):
        return JSONResponse({"error": "not_found", "message": "no such protected resource"}, 404)
    tenant = request.scope.get(TENANT_SCOPE_KEY)
    name = getattr(tenant, "name", None) or getattr(tenant, "schema_name", "")
    metadata = ProtectedResourceMetadata(
        resource=f"{base}/{suffix}" if suffix else base,
        # The tenant host is its own OAuth 2.1 authorization server (tenants/oauth_views.py,
        # served by Django); API keys from the dashboard work as bearer tokens too.
        authorization_servers=[base],
        scopes_supported=list(SCOPES),
        bearer_methods_supported=["header"],
        resource_name=f"fortranspire ({name})" if name else "fortranspire",
        resource_documentation=f"{base}/api/v1/docs",
    )
    return JSONResponse(
        metadata.model_dump(mode="json", exclude_none=True),
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )


async def protected_resource_endpoint(request: Request) -> Response:
    if request.method == "OPTIONS":
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, OPTIONS",
                "Access-Control-Allow-Headers": "mcp-protocol-version",
            },
        )
    return _protected_resource_metadata(request)


WARM_UP_SOURCE = (
    "subroutine warm_up(a)\n  real, intent(inout) :: a\n  a = a + 1.0\nend subroutine warm_up\n"
)


def warm_up_engine() -> None:
    """Parse a tiny kernel once at start-up, before tools run in parallel worker threads.

    fparser builds its parser class tree on first use, and building it while another thread
    parses breaks that parse (KeyError 'End_Program_Stmt', seen under the load benchmark);
    doing it here also takes the ~0.3 s cost off the first user request.
    """
    try:
        from kernels.engine import find_kernels

        find_kernels(WARM_UP_SOURCE)
    except Exception:  # the server must start even if the engine cannot
        logging.getLogger(__name__).warning("engine warm-up failed", exc_info=True)


def build_mcp_app(
    server: MCPServer | None = None,
    directory: TenantDirectory | None = None,
    *,
    stateless: bool | None = None,
) -> Starlette:
    """The Starlette app serving both MCP transports for every tenant host.

    ``stateless`` (default: :func:`stateless_http_enabled`) runs Streamable HTTP without
    sessions, so several worker processes can serve one endpoint.
    """
    if stateless is None:
        stateless = stateless_http_enabled()
    if server is None:
        from mcp_bridge.server import mcp_server as server
    directory = directory or tenant_directory
    connect_key_signals()
    # MCPServer keeps its protocol server private; both transports need it to run sessions.
    lowlevel = server._lowlevel_server
    body_limit = max_body_bytes()
    verifier = TenantKeyVerifier()
    streamable = _StreamableHTTPEndpoint(AnswerCache(), directory)
    sse = SseServerTransport(
        MESSAGE_PATH, security_settings=directory.security, max_request_body_size=body_limit
    )

    async def handle_sse(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "GET":
            await Response(status_code=405, headers={"Allow": "GET"})(scope, receive, send)
            return
        try:
            async with sse.connect_sse(scope, receive, send) as (read_stream, write_stream):
                await lowlevel.run(
                    read_stream, write_stream, lowlevel.create_initialization_options()
                )
        except ValueError:
            pass  # connect_sse already answered (DNS-rebinding refusal)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(warm_up_engine)
        # Start-up leaves ~150k long-lived objects (Django, fparser, the SDK) that every full
        # collection would walk again; freezing them roughly halved the full-collection pauses
        # measured under the load benchmark (they set the p99 of tools/list).
        gc.collect()
        gc.freeze()

        def manager(json_response: bool = False) -> StreamableHTTPSessionManager:
            return StreamableHTTPSessionManager(
                app=lowlevel,
                security_settings=directory.security,
                max_request_body_size=body_limit,
                session_idle_timeout=None if stateless else SESSION_IDLE_TIMEOUT_S,
                stateless=stateless,
                json_response=json_response,
            )

        async with contextlib.AsyncExitStack() as stack:
            streaming = manager()
            await stack.enter_async_context(streaming.run())
            plain = None
            if stateless:
                plain = manager(json_response=True)
                await stack.enter_async_context(plain.run())
            streamable.manager, streamable.json_manager = streaming, plain
            streamable.answers.answers.clear()
            try:
                yield
            finally:
                streamable.manager = streamable.json_manager = None
                await anyio.to_thread.run_sync(lookup_thread.stop)

    well_known = "/.well-known/oauth-protected-resource"
    routes: list[Any] = [
        Route(well_known, protected_resource_endpoint, methods=["GET", "OPTIONS"]),
        Route(
            well_known + "/{resource:path}", protected_resource_endpoint, methods=["GET", "OPTIONS"]
        ),
        Route("/mcp", RequireTenantAuth(ToolScopeGuard(streamable, body_limit))),
        Route("/sse", RequireTenantAuth(handle_sse)),
        Mount(MESSAGE_PATH, app=RequireTenantAuth(sse.handle_post_message)),
    ]
    middleware = [
        Middleware(TenantHostMiddleware, directory=directory),
        Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(verifier)),
        Middleware(AuthContextMiddleware),
    ]
    if stateless:
        middleware.insert(
            0,
            Middleware(
                StatelessFastPath,
                answers=streamable.answers,
                directory=directory,
                verified=verifier.cached,
            ),
        )
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
