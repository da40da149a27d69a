"""The whole site (Django + MCP, fortranspire_site.asgi) served by uvicorn on a loopback port.

Tests that need real HTTP (MCP SDK clients, Chromium) share this one server runner; it runs in a
thread of the test process so it sees the test database.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_site(*, name: str = "uvicorn-test", start_timeout_s: float = 30) -> Iterator[int]:
    """Serve a fresh ASGI application with the lifespan on; yields the port, stops on exit."""
    import uvicorn

    from fortranspire_site.asgi import build_application

    config = uvicorn.Config(
        build_application(),
        host="127.0.0.1",
        port=free_port(),
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield config.port
    finally:
        server.should_exit = True
        thread.join(timeout=15)
