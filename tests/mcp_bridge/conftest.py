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


def _database_url() -> str:
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    host = db["HOST"]
    auth = quote(db["USER"] or "postgres") + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    if host.startswith("/"):  # the embedded server's Unix socket directory
        return f"postgresql://{auth}@/{db['NAME']}?host={quote(host)}"
    return f"postgresql://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def two_worker_server(transactional_db, tenant_a, tmp_path):
    """``fortranspire serve --workers 2`` in a subprocess on the test database."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.live_server import free_port
    from tests.mcp_bridge.support import LiveServer

    repo = Path(__file__).resolve().parents[2]
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "FORTRANSPIRE_HOME": str(tmp_path / "home"),
        "FORTRANSPIRE_MCP_RATE_LIMIT_PER_MINUTE": "0",
        "PYTHONPATH": str(repo),
    }
    env.pop("FORTRANSPIRE_MCP_STATELESS", None)  # serve --workers 2 must turn it on itself
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fortranspire_site.cli", "serve", "--port", str(port)]
        + ["--workers", "2", "--log-level", "warning"],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "serve --workers 2 did not start"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.3)
        yield LiveServer(port), tmp_path / "serve.log"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
