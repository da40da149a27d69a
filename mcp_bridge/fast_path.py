"""Stateless Streamable HTTP answers that never change, served without the SDK's machinery.

In stateless mode (FORTRANSPIRE_MCP_STATELESS, ``serve --workers N``) the SDK serves every POST
with a fresh transport, dispatcher and server task, and validates and serialises the answer
through pydantic: for tools/list (six tools with large schemas) that was ~3 ms of CPU. Four
requests have answers that depend on nothing but their id and protocol version, whoever asks:

- ``tools/list`` without a cursor (the registry is fixed at start-up and every key sees every
  tool; scopes are enforced when a tool is called),
- ``ping``,
- ``initialize``, per protocol version asked for (the SDK's answer depends on nothing else),
- ``notifications/initialized`` (202, no body).

The SDK answers the first of each kind; :class:`AnswerCache` keeps its answer (status, headers,
and the body around the id) and serves later ones with their own id: byte for byte what the SDK
sends. Only requests the SDK would accept as they are take that path (:func:`answer_key`): an
allow-listed Host, no Origin (browsers keep the SDK's checks), JSON content type and Accept, a
handshake-era ``Mcp-Protocol-Version`` or none, no session id, a plain JSON-RPC envelope with
an int or string id, and empty params (for initialize, params the SDK's own model validates).
Anything else goes to the SDK as before.

:class:`StatelessFastPath` sits in front of the MCP app's authentication. A request with a kept
answer, on a Host whose tenant this process knows (mcp_bridge.hosts) and with a bearer this
process found valid for that tenant within the revocation bound (mcp_bridge.auth), is answered
there and then: no database, no middleware stack, no SDK. Every other request (first sight of
a key, an unknown or wrong key, any other method) goes down the full stack, which makes the
checks, sends the refusals (401, 403, 421, 429) and fills the caches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pydantic_core
from mcp_types import InitializeRequestParams
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_bridge.hosts import TenantDirectory

PEEK_LIMIT = 64 * 1024  # larger bodies are tools/call sources: no need to parse them here

REQUEST_METHODS = frozenset({"initialize", "tools/list", "ping"})
NOTIFICATION_METHODS = frozenset({"notifications/initialized"})
ENVELOPE_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
MAX_KEPT_ANSWERS = 32  # (method, version[, asked version]) combinations: a handful in practice
ANSWER_HEAD = b'{"jsonrpc":"2.0","id":'

AnswerKey = tuple[str, ...]


def first_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers, the first value of each name (what Starlette's ``get`` returns)."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers") or ():
        headers.setdefault(name, value)
    return headers


def host_of(headers: dict[bytes, bytes]) -> str | None:
    host = headers.get(b"host")
    return host.decode("latin-1") if host is not None else None


def parse_message(body: bytes) -> Any:
    """The POSTed JSON-RPC message (the SDK's own parser), or None when it is not JSON."""
    if len(body) > PEEK_LIMIT:
        return None
    try:
        return pydantic_core.from_json(body)
    except ValueError:
        return None


def _accepts_json(accept: bytes) -> bool:
    # The SDK's rule (mcp.server.streamable_http.check_accept_headers) for JSON answers.
    types = {t.split(b";")[0].strip().lower() for t in accept.split(b",")}
    return bool(types & {b"*/*", b"application/*", b"application/json"})


def _plain_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def answer_key(headers: dict[bytes, bytes], message: Any) -> AnswerKey | None:
    """Which kept answer fits this request, or None when the SDK must see it.

    The Host is the caller's to check (:meth:`TenantDirectory.cached` admits exactly the forms
    the SDK's DNS-rebinding check admits).
    """
    if not isinstance(message, dict) or not message.keys() <= ENVELOPE_KEYS:
        return None
    method = message.get("method")
    if message.get("jsonrpc") != "2.0" or method not in REQUEST_METHODS | NOTIFICATION_METHODS:
        return None
    if b"origin" in headers or b"mcp-session-id" in headers:
        return None
    if (headers.get(b"content-type") or b"").split(b";")[0].strip() != b"application/json":
        return None
    if not _accepts_json(headers.get(b"accept") or b""):
        return None
    raw_version = headers.get(b"mcp-protocol-version")
    version = raw_version.decode("latin-1") if raw_version is not None else ""
    if raw_version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None  # the SDK's 2026-era path (or its refusal of an unknown version)
    params = message.get("params")
    if method in NOTIFICATION_METHODS:
        return (method, version) if "id" not in message and params in (None, {}) else None
    if not _plain_id(message.get("id")):
        return None
    if method != "initialize":
        return (method, version) if params in (None, {}) else None
    if not isinstance(params, dict):
        return None
    try:
        asked = InitializeRequestParams.model_validate(params, by_name=False).protocol_version
    except ValidationError:
        return None
    # Any other version the SDK answers with its latest: left to it, so the kept set stays small.
    return (method, version, asked) if asked in HANDSHAKE_PROTOCOL_VERSIONS else None


@dataclass(frozen=True)
class KeptAnswer:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]  # as the SDK sent them, content-length included
    tail: bytes  # the body after the id (requests), or the whole body (notifications)

    def start(self, length: int) -> Message:
        headers = [
            (name, b"%d" % length if name.lower() == b"content-length" else value)
            for name, value in self.headers
        ]
        return {"type": "http.response.start", "status": self.status, "headers": headers}


class AnswerCache:
    """The SDK's answers to :func:`answer_key` requests, kept to be served with another id."""

    def __init__(self) -> None:
        self.answers: dict[AnswerKey, KeptAnswer] = {}

    async def answer(self, key: AnswerKey, message: dict, send: Send) -> bool:
        """Send the kept answer for ``key`` with this message's id; False when none is kept."""
        kept = self.answers.get(key)
        if kept is None:
            return False
        if "id" in message:
            body = ANSWER_HEAD + pydantic_core.to_json(message["id"]) + kept.tail
        else:
            body = kept.tail
        await send(kept.start(len(body)))
        await send({"type": "http.response.body", "body": body})
        return True

    def recording(self, key: AnswerKey, message: dict, send: Send) -> Send:
        """``send`` that keeps the SDK's answer to this request under ``key`` if it succeeded."""
        if len(self.answers) >= MAX_KEPT_ANSWERS:
            return send
        head = ANSWER_HEAD + pydantic_core.to_json(message["id"]) if "id" in message else None
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def record(event: Message) -> None:
            if event["type"] == "http.response.start":
                start.update(event)
            elif event["type"] == "http.response.body" and start:
                chunks.append(event.get("body", b""))
                if not event.get("more_body"):
                    self._keep(key, head, start, b"".join(chunks))
            await send(event)

        return record

    def _keep(self, key: AnswerKey, head: bytes | None, start: dict, body: bytes) -> None:
        status = start["status"]
        headers = tuple((bytes(name), bytes(value)) for name, value in start.get("headers") or ())
        if sum(name.lower() == b"content-length" for name, _ in headers) != 1:
            return  # only whole answers of a known length are replayed
        if head is None:
            if status == 202 and body == b"":
                self.answers[key] = KeptAnswer(status, headers, b"")
        elif status == 200 and body.startswith(head + b',"result":'):
            self.answers[key] = KeptAnswer(status, headers, body[len(head) :])


Verify = Callable[[Any, str], Any]


class StatelessFastPath:
    """Answers kept requests from a known tenant host with a recently verified bearer.

    ``verified(tenant, token)`` is the verifier's database-free check
    (``TenantKeyVerifier.cached``). The body read to decide is replayed to the app unchanged
    when the request goes down the full stack.
    """

    def __init__(
        self,
        app: ASGIApp,
        answers: AnswerCache,
        directory: TenantDirectory,
        verified: Verify,
    ) -> None:
        self.app = app
        self.answers = answers
        self.directory = directory
        self.verified = verified

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/mcp":
            await self.app(scope, receive, send)
            return
        messages, body = await read_body(receive, PEEK_LIMIT)
        if await self._answered(scope, body, send):
            return
        await self.app(scope, replaying(messages, receive), send)

    async def _answered(self, scope: Scope, body: bytes | None, send: Send) -> bool:
        if body is None:
            return False
        message = parse_message(body)
        headers = first_headers(scope)
        key = answer_key(headers, message)
        if key is None or key not in self.answers.answers:
            return False
        # Read as the SDK's BearerAuthBackend reads it, so both accept the same tokens.
        authorization = (headers.get(b"authorization") or b"").decode("latin-1")
        if not authorization.lower().startswith("bearer "):
            return False
        tenant = self.directory.cached(host_of(headers))
        if tenant is None or self.verified(tenant, authorization[7:]) is None:
            return False
        return await self.answers.answer(key, message, send)


async def read_body(receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The request's messages read so far, and its whole body (None when longer than
    ``limit`` or cut short by a disconnect)."""
    messages: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        body.extend(message.get("body", b""))
        if len(body) > limit:
            return messages, None
        if not message.get("more_body"):
            return messages, bytes(body)


def replaying(messages: list[Message], receive: Receive) -> Callable[[], Awaitable[Message]]:
    """``receive`` that first hands back ``messages`` (already read), then reads on."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
