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

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("content-length") or 0)
                data = self.rfile.read(length) if length else b""
                try:
                    parsed = json.loads(data) if data else None
                except ValueError:
                    parsed = data.decode("utf-8", "replace")
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
