"""A real uvicorn serving fortranspire_site.asgi in a thread (the ``mcp_live`` fixture).

Tenant hosts (a.localhost, b.localhost) are reached by connecting to 127.0.0.1 and sending the
tenant's Host header, so no resolver setup is needed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.mcp_bridge.support import LiveServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mcp_live(transactional_db, tenant_a, tenant_b) -> Iterator[LiveServer]:
    """uvicorn on loopback serving the whole site (Django + MCP), with the lifespan on."""
    import uvicorn

    from fortranspire_site.asgi import build_application
    from mcp_bridge.auth import forget_verified_keys
    from mcp_bridge.hosts import tenant_directory
    from mcp_bridge.limits import rate_limiter

    # Tenant rows are re-created between transactional tests: forget cached ones.
    tenant_directory.clear()
    forget_verified_keys()
    rate_limiter.reset()
    port = _free_port()
    config = uvicorn.Config(
        build_application(),
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(port)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        tenant_directory.clear()
