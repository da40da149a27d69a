"""The Le Chat connector manifest, generated from the live tool registry.

    python -m mcp_bridge.manifest > integration/le-chat-connector.json

It holds what the Le Chat "Custom MCP Connector" form asks for (name, server URL, description,
authentication) plus the tool list exactly as tools/list serves it, so a reviewer can see what
the connector exposes. tests/mcp_bridge/test_manifest.py fails when the committed file drifts
from the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from mcp_bridge.auth import SCOPES, TOOL_SCOPES

DEFAULT_BASE_URL = "https://{tenant}.fortranspire.example"
MANIFEST_VERSION = 1


def _tool_entries(server) -> list[dict[str, Any]]:
    tools = asyncio.run(server.list_tools())
    entries = []
    for tool in tools:
        entry = {
            "name": tool.name,
            "title": tool.title,
            "description": tool.description,
            "required_scope": TOOL_SCOPES[tool.name],
            "input_schema": tool.input_schema,
        }
        if tool.annotations is not None:
            entry["annotations"] = tool.annotations.model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
        entries.append(entry)
    return entries


def build_manifest(base_url: str = DEFAULT_BASE_URL, server=None) -> dict[str, Any]:
    """The manifest for a deployment whose tenant hosts look like ``base_url``."""
    if server is None:
        from mcp_bridge.server import mcp_server as server
    base_url = base_url.rstrip("/")
    return {
        "manifest_version": MANIFEST_VERSION,
        "connector_name": "fortranspire",
        "display_name": "fortranspire",
        "description": server.description,
        "instructions": server.instructions,
        # Le Chat's connector form takes one server URL; the legacy HTTP+SSE endpoint is the one
        # advertised, Streamable HTTP is listed for clients that prefer it.
        "server": {"transport": "sse", "url": f"{base_url}/sse", "message_path": "/messages/"},
        "alternate_servers": [{"transport": "streamable-http", "url": f"{base_url}/mcp"}],
        "authentication": {
            "method": "api_key",
            "header": "Authorization",
            "value_format": "Bearer {api_key}",
            "how_to_get_a_key": (
                "An owner creates a key in the fortranspire dashboard (API keys) or with "
                "`fortranspire key create --tenant SLUG --scopes translate,profile,agent,history`. "
                "A key only works on its own organisation's host."
            ),
            "scopes": list(SCOPES),
            "protected_resource_metadata": f"{base_url}/.well-known/oauth-protected-resource/sse",
        },
        "tools": _tool_entries(server),
    }


def manifest_json(base_url: str = DEFAULT_BASE_URL) -> str:
    return json.dumps(build_manifest(base_url), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the Le Chat connector manifest (JSON).")
    parser.add_argument(
        "--base-url", default=DEFAULT_BASE_URL, help="tenant origin, e.g. https://acme.example.com"
    )
    args = parser.parse_args(argv)
    sys.stdout.write(manifest_json(args.base_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
