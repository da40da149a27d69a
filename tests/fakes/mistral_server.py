"""A local HTTP server that speaks the Mistral chat-completions API, scripted per test.

The real ``mistralai`` SDK is pointed at it through ``server_url``, so the tests exercise the
same request building, response parsing and error classes as production, with no network.

A script is a list of steps, consumed one per HTTP request to ``/v1/chat/completions``:
- ``reply(content=..., tool_calls=...)``: a 200 chat completion (with a usage block);
- ``error(status, body=..., headers=...)``: an HTTP error such as 401, 429 or 503;
- ``raw(body, content_type=...)``: a 200 whose body is not a valid completion (malformed);
- any step may carry ``delay_s`` to simulate a slow server (a client timeout).

Every request is recorded (headers and JSON body) so tests can assert on what the SDK sent,
e.g. which tenant's key was in the Authorization header.

It also keeps a small stateful connectors API (``client.beta.connectors``): ``POST
/v1/connectors`` creates one, ``GET /v1/connectors/{id or name}`` reads it back and ``GET
/v1/connectors/{id or name}/tools`` answers ``connector_tools`` (what Mistral would list from
the MCP server); these requests do not consume the script.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay_s: float = 0.0


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")

    @property
    def messages(self) -> list[dict]:
        return list((self.body or {}).get("messages", []))

    @property
    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user":
                c = m.get("content")
                return c if isinstance(c, str) else json.dumps(c)
        return ""


_counter = iter(range(1, 1_000_000))


def reply(
    content: str | None = "",
    *,
    tool_calls: list[tuple[str, dict]] | None = None,
    prompt_tokens: int = 100,
    completion_tokens: int = 50,
    delay_s: float = 0.0,
) -> Step:
    """A successful chat completion. ``tool_calls`` is [(function name, arguments dict)]."""
    n = next(_counter)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call{n}x{i}",
                "type": "function",
                "index": i,
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(tool_calls)
        ]
    body = {
        "id": f"cmpl-{n}",
        "object": "chat.completion",
        "model": "codestral-latest",
        "created": int(time.time()),
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "message": message,
            }
        ],
    }
    return Step(200, body, delay_s=delay_s)


def error(
    status: int,
    message: str = "",
    *,
    headers: dict[str, str] | None = None,
    delay_s: float = 0.0,
) -> Step:
    body = {"object": "error", "message": message or f"fake error {status}", "type": "error"}
    return Step(status, body, headers=dict(headers or {}), delay_s=delay_s)


def raw(body: str, *, content_type: str = "application/json", status: int = 200) -> Step:
    return Step(status, body, content_type=content_type)


class FakeMistral:
    """Context manager: ``with FakeMistral([reply("..."), error(429)]) as fake: fake.url``."""

    def __init__(self, script: list[Step] | None = None):
        self.script: list[Step] = list(script or [])
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.connectors: dict[str, dict[str, Any]] = {}
        self.connector_tools: list[dict[str, Any]] = []

    # -- connectors API ----------------------------------------------------------------------
    def _connector(self, id_or_name: str) -> dict[str, Any] | None:
        for connector in self.connectors.values():
            if id_or_name in (connector["id"], connector["name"]):
                return connector
        return None

    def connectors_route(self, method: str, path: str, body: Any) -> tuple[int, Any] | None:
        """(status, JSON) for a connectors API request, or None when ``path`` is not one."""
        parts = path.split("?", 1)[0].strip("/").split("/")
        if parts[:2] != ["v1", "connectors"]:
            return None
        with self._lock:
            if method == "POST" and len(parts) == 2:
                if not isinstance(body, dict) or not body.get("name") or not body.get("server"):
                    return 422, {"detail": [{"msg": "name and server are required"}]}
                if self._connector(body["name"]) is not None:
                    return 409, {"detail": f"connector {body['name']!r} exists"}
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                connector = {
                    "id": f"conn-{next(_counter)}",
                    "protocol": "mcp",
                    "name": body["name"],
                    "title": body.get("title"),
                    "description": body.get("description", ""),
                    "server": body["server"],
                    "system_prompt": body.get("system_prompt"),
                    "created_at": now,
                    "modified_at": now,
                    "owner_type": "workspace",
                    "visibility": body.get("visibility", "private"),
                    "private_tool_execution": False,
                    "supports_mcp": True,
                    "is_authenticated": False,
                }
                self.connectors[connector["id"]] = connector
                return 201, connector
            if method == "GET" and len(parts) in (3, 4):
                connector = self._connector(parts[2])
                if connector is None:
                    return 404, {"detail": "connector not found"}
                if len(parts) == 3:
                    return 200, connector
                if parts[3] == "tools":
                    return 200, list(self.connector_tools)
        return 404, {"detail": f"no route {method} {path}"}

    # -- scripting -------------------------------------------------------------------------
    def push(self, *steps: Step) -> None:
        with self._lock:
            self.script.extend(steps)

    @property
    def remaining(self) -> int:
        return len(self.script)

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> FakeMistral:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _answer(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _connectors(self, method: str, parsed: Any) -> bool:
                routed = fake.connectors_route(method, self.path, parsed)
                if routed is None:
                    return False
                with fake._lock:
                    fake.requests.append(
                        RecordedRequest(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, parsed
                        )
                    )
                status, body = routed
                self._answer(status, json.dumps(body).encode(), "application/json")
                return True

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                if not self._connectors("GET", None):
                    self._answer(404, b'{"detail": "not found"}', "application/json")

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("content-length") or 0)
                data = self.rfile.read(length) if length else b""
                try:
                    parsed = json.loads(data) if data else None
                except ValueError:
                    parsed = data.decode("utf-8", "replace")
                if self._connectors("POST", parsed):
                    return
                with fake._lock:
                    fake.requests.append(
                        RecordedRequest(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, parsed
                        )
                    )
                    step = fake.script.pop(0) if fake.script else None
                if not self.path.rstrip("/").endswith("/v1/chat/completions"):
                    step = error(404, f"no route {self.path}")
                if step is None:
                    step = error(500, "fake Mistral script exhausted")
                if step.delay_s:
                    time.sleep(step.delay_s)
                payload = (
                    step.body if isinstance(step.body, str) else json.dumps(step.body)
                ).encode()
                try:
                    self.send_response(step.status)
                    self.send_header("content-type", step.content_type)
                    self.send_header("content-length", str(len(payload)))
                    for k, v in step.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test); nothing to answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
