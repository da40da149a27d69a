"""A real uvicorn serving fortranspire_site.asgi in a thread (the ``mcp_live`` fixture).

Tenant hosts (a.localhost, b.localhost) are reached by connecting to 127.0.0.1 and sending the
tenant's Host header, so no resolver setup is needed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live_server import serve_site
from tests.mcp_bridge.support import LiveServer


@pytest.fixture
def mcp_live(transactional_db, tenant_a, tenant_b) -> Iterator[LiveServer]:
    """uvicorn on loopback serving the whole site (Django + MCP), with the lifespan on."""
    from kernels.limits import rate_limit_reset
    from mcp_bridge.auth import forget_verified_keys
    from mcp_bridge.hosts import tenant_directory

    # Tenant rows are re-created between transactional tests: forget cached ones.
    tenant_directory.clear()
    forget_verified_keys()
    rate_limit_reset()
    try:
        with serve_site(name="uvicorn-mcp-test") as port:
            yield LiveServer(port)
    finally:
        tenant_directory.clear()
