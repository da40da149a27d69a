"""integration/le-chat-connector.json is generated from the live registry and kept in sync; the
same data is served as the MCP Server Card; every tool declares its output and reads argument
errors back as sentences."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import jsonschema
import pytest

from mcp_bridge.auth import TOOL_SCOPES
from mcp_bridge.manifest import REGENERATE_COMMAND, build_manifest, manifest_json, server_card

MANIFEST = Path(__file__).resolve().parents[2] / "integration" / "le-chat-connector.json"


def test_committed_connector_manifest_matches_a_fresh_generation():
    assert MANIFEST.read_text() == manifest_json(), (
        "integration/le-chat-connector.json is stale (a tool, a schema, a setting or a "
        f"benchmark result changed): regenerate it with `{REGENERATE_COMMAND}` and commit it."
    )


def test_manifest_states_what_the_kit_asks_for():
    manifest = json.loads(MANIFEST.read_text())
    assert [t["type"] for t in manifest["transports"]] == ["streamable-http", "sse"]
    modes = {m["type"]: m for m in manifest["authentication"]["modes"]}
    assert modes["oauth2"]["dynamic_client_registration"] is True
    assert modes["oauth2"]["code_challenge_methods"] == ["S256"]
    assert modes["api_key"]["value_format"] == "Bearer {api_key}"
    assert [t["name"] for t in manifest["tools"]] == list(TOOL_SCOPES)
    for tool in manifest["tools"]:
        assert tool["description"] and not tool["description"].startswith(" ")
        assert tool["input_schema"]["type"] == "object"
        assert tool["output_schema"]["type"] == "object"
        jsonschema.Draft202012Validator.check_schema(tool["output_schema"])
        assert tool["required_scope"] == TOOL_SCOPES[tool["name"]]
        assert tool["side_effects"]
        assert tool["expected_latency"]["mcp_round_trip_p50_ms"] > 0
    translate = manifest["tools"][0]["expected_latency"]
    assert translate["cpml_verify_median_ms"] > translate["cpml_no_verify_median_ms"] > 0
    privacy = manifest["privacy"]
    assert privacy["notice"].endswith("/privacy")
    assert privacy["sub_processors"][0]["name"] == "Mistral AI"
    assert {"data_residency", "retention", "deletion"} <= set(privacy)
    assert manifest["licensing"]["license"]
    states = {item["item"]: item["state"] for item in manifest["operator_checklist"]}
    assert states["Tokens stored hashed"] == "done"
    assert set(states.values()) <= {"done", "open"}


def test_manifest_base_url_is_configurable():
    manifest = build_manifest("https://acme.example.com/")
    assert manifest["server"]["url"] == "https://acme.example.com/mcp"
    assert manifest["transports"][1]["url"] == "https://acme.example.com/sse"
    oauth = manifest["authentication"]["modes"][0]
    assert oauth["issuer"] == "https://acme.example.com"


def test_server_card_has_the_proposal_fields_and_a_tenant_variable():
    card = server_card()
    assert {"name", "version", "description", "remotes", "capabilities", "tools", "auth"} <= set(
        card
    )
    assert card["remotes"][0]["type"] == "streamable-http"
    assert "{tenant}" in card["remotes"][0]["url"]
    assert card["remotes"][0]["variables"]["tenant"]["isRequired"] is True
    assert "tools" in card["capabilities"]
    assert [t["name"] for t in card["tools"]] == list(TOOL_SCOPES)
    assert all(t["outputSchema"]["type"] == "object" for t in card["tools"])


@pytest.mark.django_db
def test_server_card_is_served_on_a_tenant_host(client_a, public_client):
    response = client_a.get("/.well-known/mcp/server-card.json")
    assert response.status_code == 200
    card = response.json()
    assert card["remotes"][0]["url"] == "http://a.localhost/mcp"
    assert "variables" not in card["remotes"][0]
    assert card["auth"]["modes"][0]["issuer"] == "http://a.localhost"
    assert public_client.get("/.well-known/mcp/server-card.json").status_code == 404


def test_argument_errors_read_as_sentences():
    from mcp_bridge.server import build_server

    server = build_server()
    result = anyio.run(server.call_tool, "list_kernel_runs", {"limit": 0, "offset": "x"})
    assert result.is_error
    text = result.structured_content["message"]
    assert text.startswith("list_kernel_runs was called with invalid arguments.")
    assert "The argument 'limit' is not valid: input should be greater than or equal to 1." in text
    assert "validation error" not in text and "[type=" not in text
    missing = anyio.run(server.call_tool, "translate_kernel", {})
    assert "The argument 'source' is required." in missing.structured_content["message"]
    assert json.loads(missing.content[0].text) == missing.structured_content
