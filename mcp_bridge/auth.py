"""Bearer auth for the MCP endpoints, bound to the tenant of the Host header.

Two kinds of bearer are accepted, with the same scope checks: API keys (``fsp_...``) and
OAuth 2.1 access tokens issued by this tenant's authorization server (tenants/oauth_views.py),
which must be bound to this tenant's resource (RFC 8707).

The SDK's ``TokenVerifier.verify_token(token)`` sees only the token, not the request, so a thin
ASGI middleware (:class:`TenantHostMiddleware`) resolves the tenant from the Host header first
and hands it to the verifier through a context variable. The SDK's BearerAuthBackend then puts
the resulting :class:`TenantAccessToken` into ``scope["user"]``, where tools read it back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from pydantic import ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_bridge.hosts import TenantDirectory, lookup_thread, run_db, tenant_directory
from mcp_bridge.limits import limit_setting

SCOPES = ("translate", "profile", "agent", "history")

# Which scope each tool needs; also drives the HTTP-level 403 on /mcp.
TOOL_SCOPES: dict[str, str] = {
    "translate_kernel": "translate",
    "translate_kernel_gpu": "translate",
    "profile_kernels": "profile",
    "ask_agent": "agent",
    "list_kernel_runs": "history",
    "get_kernel_run": "history",
}

logger = logging.getLogger(__name__)

TENANT_SCOPE_KEY = "fortranspire.tenant"
current_tenant: ContextVar[Any | None] = ContextVar("fortranspire_mcp_tenant", default=None)


class TenantAccessToken(AccessToken):
    """An AccessToken that also carries the tenant and the ApiKey row it was checked against."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tenant: Any = Field(default=None, exclude=True, repr=False)
    api_key: Any = Field(default=None, exclude=True, repr=False)
    # OAuth access tokens act for a dashboard user through a client (no ApiKey row).
    user: Any = Field(default=None, exclude=True, repr=False)
    oauth_client_id: str | None = Field(default=None, exclude=True)


@dataclass
class _Checked:
    access: TenantAccessToken
    checked_at: float  # time.monotonic() when the database check that found it valid started


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TenantKeyVerifier(TokenVerifier):
    """Checks a raw API key or OAuth access token against the tenant of this request's Host.

    Every MCP message is its own HTTP request, and a database check per request would dominate
    the cost of a tools/list. So a successful check is kept, and served for at most
    MCP_AUTH_CACHE_S seconds (default 1; 0 disables) after the database check behind it
    *started*. While a key is in use, it is checked again in the background once its entry is
    half that old, so a request never waits for the database. That gives the revocation bound:
    a key or token revoked, deleted or expired by any process (dashboard, API, admin, another
    worker, a bare UPDATE) is refused by every process at most MCP_AUTH_CACHE_S after the change
    commits, because every check that starts after the commit sees it. Saves and deletes made
    in this process (and, with REDIS_URL, in any process) clear the cache at once. A key's own
    expiry is checked on every hit. Failed checks are never kept.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, str], _Checked] = {}
        # clear() moves to a new generation: a check that started before it must not be kept.
        self._generation = 0
        self._rechecking: set[tuple[Any, str]] = set()
        self._tasks: set[asyncio.Task] = set()
        _verifiers.append(self)

    def clear(self) -> None:
        self._generation += 1
        self._cache.clear()

    def cached(self, tenant: Any, token: str) -> TenantAccessToken | None:
        """The access ``token`` has on ``tenant`` if a check within the bound found it valid;
        None otherwise. Never touches the database (it may start the background re-check)."""
        if tenant is None or not token or len(token) > 512:
            return None
        return self._fresh(tenant, token, token_digest(token))

    async def verify_token(self, token: str) -> AccessToken | None:
        tenant = current_tenant.get()
        # Checked before any hashing or DB work: a request on no known tenant host costs nothing.
        if tenant is None or not token or len(token) > 512:
            return None
        digest = token_digest(token)
        access = self._fresh(tenant, token, digest)
        if access is not None:
            return access
        return await self._check_and_keep(tenant, token, digest)

    def _fresh(self, tenant: Any, token: str, digest: str) -> TenantAccessToken | None:
        cache_key = (tenant.pk, digest)
        checked = self._cache.get(cache_key)
        if checked is None:
            return None
        bound = limit_setting("MCP_AUTH_CACHE_S")
        age = time.monotonic() - checked.checked_at
        expires_at = checked.access.expires_at
        if age > bound or (expires_at is not None and expires_at <= time.time()):
            if self._cache.get(cache_key) is checked:
                del self._cache[cache_key]
            return None
        if age > bound / 2 and cache_key not in self._rechecking:
            self._rechecking.add(cache_key)
            task = asyncio.get_running_loop().create_task(self._recheck(tenant, token, digest))
            self._tasks.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._tasks.discard)
        return checked.access

    async def _recheck(self, tenant: Any, token: str, digest: str) -> None:
        try:
            await self._check_and_keep(tenant, token, digest)
        except Exception:  # noqa: BLE001 - the entry runs out at the bound; requests then check inline
            logger.warning("background re-check of an MCP key or token failed", exc_info=True)
        finally:
            self._rechecking.discard((tenant.pk, digest))

    async def _check_and_keep(
        self, tenant: Any, token: str, digest: str
    ) -> TenantAccessToken | None:
        cache_key = (tenant.pk, digest)
        generation = self._generation
        started = time.monotonic()
        access = await self._check(tenant, token, digest)
        if access is None:
            self._cache.pop(cache_key, None)
            return None
        current = self._cache.get(cache_key)
        if (
            limit_setting("MCP_AUTH_CACHE_S") > 0
            and generation == self._generation
            and (current is None or current.checked_at < started)
        ):
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[cache_key] = _Checked(access, started)
        return access

    async def _check(self, tenant: Any, token: str, digest: str) -> TenantAccessToken | None:
        from fortranspire_site.errors import ApplicationError
        from tenants.services import api_key_authenticate

        try:
            key = await lookup_thread.run(api_key_authenticate, raw_key=token, tenant=tenant)
        except ApplicationError:
            return await self._verify_oauth_token(token, tenant, digest)
        return self._key_access(key, tenant, digest)

    @staticmethod
    async def _verify_oauth_token(token: str, tenant: Any, digest: str) -> TenantAccessToken | None:
        from fortranspire_site.errors import ApplicationError
        from tenants.oauth_services import oauth_token_authenticate

        try:
            row = await lookup_thread.run(oauth_token_authenticate, raw_token=token, tenant=tenant)
        except ApplicationError:
            return None
        tenant_id = getattr(tenant, "schema_name", None) or getattr(tenant, "pk", "")
        client_id = row.application.client_id
        return TenantAccessToken(
            token=digest,
            client_id=f"{tenant_id}:oauth:{client_id}",
            subject=f"{tenant_id}:user:{row.user.pk}",
            scopes=[s for s in (row.scope or "").split() if s in SCOPES],
            expires_at=int(row.expires.timestamp()),
            resource=(row.resource or [None])[0],
            tenant=tenant,
            api_key=None,
            user=row.user,
            oauth_client_id=client_id,
        )

    @staticmethod
    def _key_access(key: Any, tenant: Any, digest: str) -> TenantAccessToken:
        scopes = [str(s) for s in (getattr(key, "scopes", None) or [])]
        expires = getattr(key, "expires_at", None)
        key_id = getattr(key, "pk", None) or "env"
        tenant_id = getattr(tenant, "schema_name", None) or getattr(tenant, "pk", "")
        access = TenantAccessToken(
            # Never keep the raw key around (reprs, logs): its digest identifies it well enough.
            token=digest,
            client_id=f"{tenant_id}:{key_id}",
            subject=f"{tenant_id}:{key_id}",
            scopes=scopes,
            expires_at=int(expires.timestamp()) if expires else None,
            tenant=tenant,
            # The API_KEY env key has no row (pk None); runs still record its "env" prefix.
            api_key=key,
        )
        return access


_verifiers: list[TenantKeyVerifier] = []


def forget_verified_keys(**_: Any) -> None:
    """Signal receiver: an ApiKey changed (revoked, deleted), so no cached check may outlive it."""
    for verifier in _verifiers:
        verifier.clear()


def connect_key_signals() -> None:
    from django.db.models.signals import post_delete, post_save
    from oauth2_provider.settings import oauth2_settings

    for sender in ("tenants.ApiKey", oauth2_settings.ACCESS_TOKEN_MODEL):
        post_save.connect(
            forget_verified_keys, sender=sender, dispatch_uid=f"mcp_forget_{sender}_save"
        )
        post_delete.connect(
            forget_verified_keys, sender=sender, dispatch_uid=f"mcp_forget_{sender}_delete"
        )


def base_url(scope: Scope) -> str:
    """scheme://host[:port] as the client addressed us (the tenant's own origin)."""
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin-1") or "localhost"
    return f"{scope.get('scheme', 'http')}://{host}"


def resource_path_for(path: str) -> str:
    """The RFC 9728 resource path an MCP request path belongs to."""
    return "/sse" if path.startswith(("/sse", "/messages")) else "/mcp"


def resource_metadata_url(scope: Scope) -> str:
    return f"{base_url(scope)}/.well-known/oauth-protected-resource{resource_path_for(scope.get('path', ''))}"


async def send_json(
    send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class TenantHostMiddleware:
    """Refuses hosts that belong to no tenant; otherwise exposes the tenant to the verifier."""

    def __init__(self, app: ASGIApp, directory: TenantDirectory | None = None) -> None:
        self.app = app
        self.directory = directory or tenant_directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        tenant = await self.directory.resolve(host)
        if tenant is None:
            # 421 like the SDK's own DNS-rebinding check: this server is not authoritative for it.
            await send_json(
                send,
                421,
                {
                    "error": "unknown_host",
                    "message": "No fortranspire organisation is served at this host.",
                },
            )
            return
        scope[TENANT_SCOPE_KEY] = tenant
        reset = current_tenant.set(tenant)
        try:
            await self.app(scope, receive, send)
        finally:
            current_tenant.reset(reset)


class RequireTenantAuth:
    """401 with a per-host ``resource_metadata`` when the request carries no valid key.

    The SDK's RequireAuthMiddleware takes one fixed metadata URL; every tenant has its own host,
    so the URL is built from the request instead.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        headers = dict(scope.get("headers") or [])
        presented = headers.get(b"authorization", b"").lower().startswith(b"bearer ")
        if presented and not isinstance(user, AuthenticatedUser):
            # Key guessing is throttled as on REST (django-axes, per address): every wrong key
            # is counted and, past the limit, answered 429. Only failures pay for the lookup, so
            # the hot path (a valid, cached key) stays free of it.
            locked = await run_db(_key_guessing_outcome, scope)
            if locked is not None:
                await send_json(
                    send,
                    429,
                    {"error": "too_many_requests", "error_description": locked.message},
                    [(b"retry-after", str(locked.retry_after).encode())],
                )
                return
        if not isinstance(user, AuthenticatedUser):
            error = "invalid_token" if presented else "unauthorized"
            description = (
                "The API key or access token is unknown, revoked, expired or belongs to "
                "another organisation."
                if presented
                else "Send an API key or an OAuth access token as 'Authorization: Bearer <token>'."
            )
            parts = ['realm="fortranspire"']
            if presented:
                parts += [f'error="{error}"', f'error_description="{description}"']
            parts.append(f'resource_metadata="{resource_metadata_url(scope)}"')
            await send_json(
                send,
                401,
                {"error": error, "error_description": description},
                [(b"www-authenticate", ("Bearer " + ", ".join(parts)).encode())],
            )
            return
        await self.app(scope, receive, send)


def _key_guessing_outcome(scope: Scope):
    """Count one wrong key from the client's address; the RateLimited error when that address
    is now locked out, else None."""
    from fortranspire_site.errors import RateLimited
    from tenants.auth import api_key_guess_record, api_key_guessing_check, request_from_address

    headers = dict(scope.get("headers") or [])
    request = request_from_address(
        (scope.get("client") or ("", 0))[0] or "unknown",
        path=scope.get("path", "/mcp"),
        user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
    )
    api_key_guess_record(request)
    try:
        api_key_guessing_check(request)
    except RateLimited as exc:
        return exc
    return None


def missing_scope(access_token: AccessToken | None, tool_name: str) -> str | None:
    """The scope ``tool_name`` needs that the token lacks, or None."""
    needed = TOOL_SCOPES.get(tool_name)
    if needed is None:
        return None
    scopes = set(access_token.scopes) if access_token else set()
    return None if needed in scopes else needed


class ToolScopeGuard:
    """Answers a Streamable HTTP ``tools/call`` without the tool's scope with HTTP 403.

    That is the MCP authorization spec's step-up signal (``insufficient_scope`` + the scope in
    WWW-Authenticate); the body is also a JSON-RPC error so SDK clients surface it as an error.
    The legacy SSE transport answers on the event stream, not on the POST, so there the tools
    refuse with a tool error instead (they check scopes themselves either way).
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        messages = []
        body = bytearray()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body.extend(message.get("body", b""))
            if not message.get("more_body") or len(body) > self.max_body_bytes:
                break

        async def replay():
            if messages:
                return messages.pop(0)
            return await receive()

        refusal = self._refusal(scope, bytes(body))
        if refusal is None:
            await self.app(scope, replay, send)
            return
        request_id, needed = refusal
        description = f"The '{needed}' scope is needed for this tool."
        www = (
            f'Bearer realm="fortranspire", error="insufficient_scope", scope="{needed}", '
            f'error_description="{description}", resource_metadata="{resource_metadata_url(scope)}"'
        )
        await send_json(
            send,
            403,
            {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {
                    "code": -32003,
                    "message": f"insufficient_scope: {description}",
                    "data": {"error": "insufficient_scope", "scope": needed},
                },
            },
            [(b"www-authenticate", www.encode())],
        )

    @staticmethod
    def _refusal(scope: Scope, body: bytes) -> tuple[Any, str] | None:
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None  # the SDK answers malformed JSON-RPC itself
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            return None
        params = message.get("params") or {}
        name = params.get("name") if isinstance(params, dict) else None
        user = scope.get("user")
        token = user.access_token if isinstance(user, AuthenticatedUser) else None
        needed = missing_scope(token, name) if isinstance(name, str) else None
        return None if needed is None else (message.get("id"), needed)
