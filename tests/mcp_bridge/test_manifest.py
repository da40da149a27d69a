"""integration/le-chat-connector.json is generated from the live tool registry and kept in sync."""

from __future__ import annotations

import json
from pathlib import Path

from mcp_bridge.auth import TOOL_SCOPES
from mcp_bridge.manifest import build_manifest, manifest_json

MANIFEST = Path(__file__).resolve().parents[2] / "integration" / "le-chat-connector.json"


def test_committed_connector_manifest_matches_the_tool_registry():
    assert MANIFEST.read_text() == manifest_json(), (
        "integration/le-chat-connector.json is stale: run "
        "`python -m mcp_bridge.manifest > integration/le-chat-connector.json`"
    )


def test_manifest_advertises_sse_with_bearer_keys_and_all_six_tools():
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["server"]["transport"] == "sse"
    assert manifest["server"]["url"].endswith("/sse")
    assert manifest["authentication"]["value_format"] == "Bearer {api_key}"
    names = [t["name"] for t in manifest["tools"]]
    assert names == list(TOOL_SCOPES)
    for tool in manifest["tools"]:
        assert tool["description"] and not tool["description"].startswith(" ")
        assert tool["input_schema"]["type"] == "object"
        assert tool["required_scope"] == TOOL_SCOPES[tool["name"]]


def test_manifest_base_url_is_configurable():
    manifest = build_manifest("https://acme.example.com/")
    assert manifest["server"]["url"] == "https://acme.example.com/sse"
    assert manifest["alternate_servers"][0]["url"] == "https://acme.example.com/mcp"
