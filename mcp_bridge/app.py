"""The ASGI app behind /mcp, /sse, /messages/ and /.well-known/oauth-protected-resource.

Built from the SDK's own transports (StreamableHTTPSessionManager, SseServerTransport) and auth
pieces (BearerAuthBackend, AuthContextMiddleware); what is ours is the per-Host tenant
resolution, the per-host 401/403 challenges and the protected-resource metadata, because every
tenant is its own origin.
"""

from __future__ import annotations

import contextlib
import gc
import logging
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
from mcp_bridge.hosts import TenantDirectory, tenant_directory
from mcp_bridge.limits import limit_setting

# Paths the Channels router hands to this app (everything else goes to Django).
MCP_PATH_REGEX = r"^(mcp/?$|sse/?$|messages/|\.well-known/oauth-protected-resource(/|$))"
MESSAGE_PATH = "/messages/"
SESSION_IDLE_TIMEOUT_S = 30 * 60


def max_body_bytes() -> int:
    # JSON escaping can double a Fortran source (newlines, quotes): leave room so an oversized
    # source gets the clear tool error rather than a bare 413 from the transport.
    return max(4 * 1024 * 1024, int(2 * limit_setting("MCP_MAX_SOURCE_BYTES")) + 64 * 1024)


class _StreamableHTTPEndpoint:
    """Delegates to the session manager of the current lifespan.

    A StreamableHTTPSessionManager runs once; building a fresh one on every startup lets the
    same ASGI application be served again (tests, ``uvicorn --reload``).
    """

    def __init__(self) -> None:
        self.manager: StreamableHTTPSessionManager | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.manager is None:
            await JSONResponse(
                {
                    "error": "unavailable",
                    "message": "MCP session manager is not running (ASGI lifespan off?)",
                },
                status_code=503,
            )(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)


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
    server: MCPServer | None = None, directory: TenantDirectory | None = None
) -> Starlette:
    """The Starlette app serving both MCP transports for every tenant host."""
    if server is None:
        from mcp_bridge.server import mcp_server as server
    directory = directory or tenant_directory
    connect_key_signals()
    # MCPServer keeps its protocol server private; both transports need it to run sessions.
    lowlevel = server._lowlevel_server
    body_limit = max_body_bytes()
    streamable = _StreamableHTTPEndpoint()
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
        manager = StreamableHTTPSessionManager(
            app=lowlevel,
            security_settings=directory.security,
            max_request_body_size=body_limit,
            session_idle_timeout=SESSION_IDLE_TIMEOUT_S,
        )
        async with manager.run():
            streamable.manager = manager
            try:
                yield
            finally:
                streamable.manager = None

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
        Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(TenantKeyVerifier())),
        Middleware(AuthContextMiddleware),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
