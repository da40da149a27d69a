"""The Le Chat connector listing and the MCP Server Card, generated from the running code.

    python -m mcp_bridge.manifest            # writes integration/le-chat-connector.json
    python -m mcp_bridge.manifest --stdout   # prints it instead

Everything comes from the live registry and the repository, never typed by hand: the tools as
tools/list serves them (input and output schemas, annotations), the scope each needs, the
latency measured by benchmarks (benchmarks/results/), both auth modes and both transports as
the server configures them, the privacy facts the server publishes, and the operator checklist
with each item's state read from the tree. tests/mcp_bridge/test_manifest.py fails when the
committed file differs from a fresh generation. The same data is served on every tenant host as
an MCP Server Card at /.well-known/mcp/server-card.json (``server_card``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from mcp_bridge.auth import SCOPES, TOOL_SCOPES

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "integration" / "le-chat-connector.json"
RESULTS = ROOT / "benchmarks" / "results"
REGENERATE_COMMAND = ".venv/bin/python -m mcp_bridge.manifest"
DEFAULT_BASE_URL = "https://{tenant}.fortranspire.example"
MANIFEST_VERSION = 2
SERVER_CARD_SCHEMA = "https://static.modelcontextprotocol.io/schemas/mcp-server-card/v1.json"

# What each tool stores and what leaves the machine, in words (tools/list has no field for it).
SIDE_EFFECTS = {
    "translate_kernel": (
        "Stores one KernelRun in the organisation's history (the source, the report and the "
        "generated code), deleted after the organisation's retention period. Compiles and runs "
        "the original and the port in the server's sandbox; nothing leaves the machine. Only if "
        "the organisation enabled the LLM fallback, a kernel the compiler cannot port is sent to "
        "Mistral AI (at most 4 calls per kernel)."
    ),
    "translate_kernel_gpu": (
        "Same as translate_kernel: one KernelRun stored, sandboxed compile and run (on the GPU, or "
        "numba's CUDA simulator when the server has none); nothing leaves the machine unless the "
        "organisation enabled the LLM fallback."
    ),
    "profile_kernels": (
        "Stores one KernelRun with the profile. Static analysis only (no code is run); nothing "
        "leaves the machine."
    ),
    "ask_agent": (
        "Stores one KernelRun. Sends the question, and the source or earlier run it names, to "
        "Mistral AI with the organisation's own key; refused when the organisation has not "
        "configured one. Proposed code is verified like any port."
    ),
    "list_kernel_runs": "Read only: lists the organisation's history. Nothing is stored or sent.",
    "get_kernel_run": "Read only: returns one run of the organisation. Nothing is stored or sent.",
}


def _read_json(name: str) -> dict[str, Any] | None:
    try:
        return json.loads((RESULTS / name).read_text())
    except (OSError, ValueError):
        return None


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def expected_latency() -> dict[str, dict[str, Any]]:
    """Per tool: the measured engine time plus the measured MCP round trip, with sources."""
    measured_run = _read_json("tool-latency.json") or {}
    tools = measured_run.get("tools", {})
    load = _read_json("mcp-load.json") or {}
    # The scaled-out server (`serve --workers 2`, stateless), measured with the benchmark's
    # light client: the SDK client's own CPU is not part of the server's round trip.
    scaled_out = (load.get("workers") or {}).get("2 workers, stateless") or {}
    round_trip = scaled_out.get("tools_list_open_loop_1rps", {}).get("p50_ms")
    overhead = {
        "mcp_round_trip_p50_ms": round_trip,
        "round_trip_source": "benchmarks/results/mcp-load.json (tools/list p50, Streamable HTTP, "
        "serve --workers 2, 100 clients at 1 request/s)",
    }
    latency: dict[str, dict[str, Any]] = {}
    for tool in TOOL_SCOPES:
        measured = tools.get(tool)
        if measured:
            latency[tool] = {
                **{
                    f"{case}_median_ms": _ms(values.get("median_s"))
                    for case, values in sorted(measured.items())
                },
                **{
                    f"{case}_first_call_ms": _ms(values.get("first_s"))
                    for case, values in sorted(measured.items())
                },
                "engine_source": "benchmarks/results/tool-latency.json "
                "(benchmarks/tool_latency.py; small = saxpy, cpml = the ~100-line CPML demo)",
                "load_average_during_measurement": measured_run.get("load_average_at_start"),
                **overhead,
            }
        elif tool == "ask_agent":
            latency[tool] = {
                "note": "Dominated by the Mistral API (seconds per call, up to 4 calls); not "
                "benchmarked here because it needs the organisation's LLM key.",
                **overhead,
            }
        else:
            latency[tool] = {
                "note": "One database read; no engine work.",
                **overhead,
            }
    return latency


def _tool_entries(server, latency: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    tools = asyncio.run(server.list_tools())
    entries = []
    for tool in tools:
        entry = {
            "name": tool.name,
            "title": tool.title,
            "description": tool.description,
            "required_scope": TOOL_SCOPES[tool.name],
            "input_schema": tool.input_schema,
            "output_schema": tool.output_schema,
            "side_effects": SIDE_EFFECTS[tool.name],
            "expected_latency": latency[tool.name],
        }
        if tool.annotations is not None:
            entry["annotations"] = tool.annotations.model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
        entries.append(entry)
    return entries


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _oauth_mode(base_url: str) -> dict[str, Any]:
    from django.conf import settings

    dot = settings.OAUTH2_PROVIDER
    return {
        "type": "oauth2",
        "detection": "automatic: POST /mcp without a token answers 401 with resource_metadata; "
        "the client follows RFC 9728 -> RFC 8414 -> RFC 7591 (or a Client ID Metadata "
        "Document) -> authorization code with PKCE.",
        "issuer": base_url,
        "protected_resource_metadata": f"{base_url}/.well-known/oauth-protected-resource/mcp",
        "authorization_server_metadata": f"{base_url}/.well-known/oauth-authorization-server",
        "authorization_endpoint": f"{base_url}/oauth/authorize/",
        "token_endpoint": f"{base_url}/oauth/token/",
        "registration_endpoint": f"{base_url}/oauth/register/",
        "revocation_endpoint": f"{base_url}/oauth/revoke/",
        "dynamic_client_registration": bool(dot["DCR_ENABLED"]),
        "client_id_metadata_document_supported": bool(dot["CIMD_ENABLED"]),
        "code_challenge_methods": ["S256"],
        "grant_types": list(dot["OAUTH2_GRANT_TYPES_SUPPORTED"]),
        "refresh_token_rotation": bool(dot["ROTATE_REFRESH_TOKEN"]),
        "access_token_lifetime_s": dot["ACCESS_TOKEN_EXPIRE_SECONDS"],
        "resource_indicator": f"{base_url}/mcp (RFC 8707; tokens work only on this host)",
        "scopes": list(SCOPES),
        "login": "the organisation's dashboard accounts; a consent page picks the scopes",
        "redirect_uris": "https, or http on a loopback address; matched exactly",
    }


def _api_key_mode() -> dict[str, Any]:
    return {
        "type": "api_key",
        "header": "Authorization",
        "value_format": "Bearer {api_key}",
        "how_to_get_a_key": (
            "An owner creates a key in the fortranspire dashboard (API keys) or with "
            "`fortranspire key create --tenant SLUG --scopes translate,profile,agent,history`. "
            "A key only works on its own organisation's host."
        ),
        "scopes": list(SCOPES),
    }


def _privacy(base_url: str) -> dict[str, Any]:
    from tenants.models import Tenant

    retention_days = Tenant._meta.get_field("retention_days").default
    return {
        "notice": f"{base_url}/privacy",
        "notice_json": f"{base_url}/api/v1/privacy",
        "sub_processors": [
            {
                "name": "Mistral AI",
                "purpose": "LLM fallback and ask_agent",
                "when": "only for organisations that configured a Mistral key (their own, or "
                "opted in to the operator's): ask_agent always, the translate tools only when the "
                "organisation enabled the LLM fallback",
            }
        ],
        "data_residency": "Where the operator runs the server: the source, runs and accounts are "
        "kept in its PostgreSQL, one schema per organisation.",
        "retention": f"Kernel runs are deleted after the organisation's retention_days "
        f"(default {retention_days}) by `fortranspire purge`.",
        "deletion": "An owner deletes the whole history with DELETE /api/v1/runs; the operator "
        "deletes an organisation with `fortranspire tenant delete SLUG --yes` (drops its schema).",
        "training": "Sources and results are not used to train models.",
    }


def _checklist() -> list[dict[str, str]]:
    """The connector kit's operator checklist, each item's state read from the tree."""
    from django.conf import settings

    dot = settings.OAUTH2_PROVIDER
    gpu = _read_json("gpu_bandwidth.json")
    makefile = (ROOT / "Makefile").read_text()

    def item(name: str, done: bool, evidence: str, missing: str) -> dict[str, str]:
        return {
            "item": name,
            "state": "done" if done else "open",
            "evidence": evidence if done else missing,
        }

    return [
        item(
            "OAuth 2.1 auto-detect (DCR, PKCE S256, refresh rotation, revocation)",
            bool(dot["DCR_ENABLED"] and dot["PKCE_REQUIRED"] and dot["ROTATE_REFRESH_TOKEN"]),
            "tenants/oauth_views.py; tests/mcp_bridge/test_oauth.py",
            "OAUTH2_PROVIDER settings",
        ),
        item(
            "Tokens stored hashed",
            bool(dot["COMPLIANT_BCP_RFC9700_TOKEN_STORAGE"]),
            "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE (checksums only)",
            "enable COMPLIANT_BCP_RFC9700_TOKEN_STORAGE",
        ),
        item(
            "API key auth",
            True,
            "tenants/services.py api_key_authenticate (SHA-256 digests only)",
            "",
        ),
        item(
            "Every tool has input and output schemas",
            True,
            "mcp_bridge/schemas.py; checked by tests/mcp_bridge/test_manifest.py",
            "",
        ),
        item(
            "Expected latency measured",
            (RESULTS / "tool-latency.json").exists() and (RESULTS / "mcp-load.json").exists(),
            "benchmarks/results/tool-latency.json, mcp-load.json",
            "run benchmarks/tool_latency.py and benchmarks/mcp_load.py",
        ),
        item(
            "Privacy notice published",
            True,
            "/privacy on every host (tenants.PrivacyNotice, immutable once published)",
            "",
        ),
        item(
            "Security policy",
            (ROOT / "SECURITY.md").exists(),
            "SECURITY.md",
            "write SECURITY.md",
        ),
        item(
            "On-call runbook",
            (ROOT / "docs" / "on-call.md").exists(),
            "docs/on-call.md",
            "write docs/on-call.md",
        ),
        item(
            "Scripted demo",
            "\ndemo:" in makefile,
            "make demo",
            "add a demo target to the Makefile",
        ),
        item(
            "License declared",
            "license" in _project(),
            "pyproject.toml [project] license",
            "pyproject.toml declares no license: the operator must choose one before listing",
        ),
        item(
            "GPU ports measured on a real GPU",
            bool(gpu) and not gpu.get("simulated", False),
            "benchmarks/results/gpu_bandwidth.json",
            "no real-GPU result in benchmarks/results (verified on numba's CUDA simulator only)",
        ),
    ]


def _transports(base_url: str) -> list[dict[str, Any]]:
    return [
        {"type": "streamable-http", "url": f"{base_url}/mcp"},
        {"type": "sse", "url": f"{base_url}/sse", "message_path": "/messages/"},
    ]


def build_manifest(base_url: str = DEFAULT_BASE_URL, server=None) -> dict[str, Any]:
    """The listing for a deployment whose tenant hosts look like ``base_url``."""
    if server is None:
        from mcp_bridge.server import mcp_server as server
    base_url = base_url.rstrip("/")
    project = _project()
    latency = expected_latency()
    return {
        "manifest_version": MANIFEST_VERSION,
        "generated_by": REGENERATE_COMMAND,
        "connector_name": server.name,
        "display_name": "fortranspire",
        "version": project["version"],
        "description": server.description,
        "instructions": server.instructions,
        # Le Chat's connector form takes one server URL and leaves authentication on "auto".
        "server": {"transport": "streamable-http", "url": f"{base_url}/mcp"},
        "transports": _transports(base_url),
        "authentication": {
            "modes": [_oauth_mode(base_url), _api_key_mode()],
            "protected_resource_metadata": f"{base_url}/.well-known/oauth-protected-resource/mcp",
        },
        "tools": _tool_entries(server, latency),
        "privacy": _privacy(base_url),
        "vendor": {
            "name": "fortranspire",
            "security_contact": "see SECURITY.md",
            "support": f"{base_url}/api/v1/docs",
        },
        "licensing": {
            "license": project.get("license", "not declared"),
            "service_terms": "set by the operator of the deployment",
            "dependencies": "open-source Python packages listed in pyproject.toml",
        },
        "server_card": f"{base_url}/.well-known/mcp/server-card.json",
        "operator_checklist": _checklist(),
    }


def server_card(base_url: str = DEFAULT_BASE_URL, server=None) -> dict[str, Any]:
    """The same data in the shape of the MCP server-cards proposal."""
    if server is None:
        from mcp_bridge.server import mcp_server as server
    from mcp_types import LATEST_PROTOCOL_VERSION

    manifest = build_manifest(base_url, server)
    templated = "{tenant}" in base_url
    variables = (
        {"tenant": {"description": "Your organisation's slug (its host name).", "isRequired": True}}
        if templated
        else {}
    )
    remotes = [
        {"type": t["type"], "url": t["url"], **({"variables": variables} if variables else {})}
        for t in manifest["transports"]
    ]
    capabilities = server._lowlevel_server.create_initialization_options().capabilities
    return {
        "$schema": SERVER_CARD_SCHEMA,
        "name": manifest["connector_name"],
        "title": manifest["display_name"],
        "version": manifest["version"],
        "description": manifest["description"],
        "protocolVersion": LATEST_PROTOCOL_VERSION,
        "remotes": remotes,
        "capabilities": capabilities.model_dump(mode="json", by_alias=True, exclude_none=True),
        "instructions": manifest["instructions"],
        "tools": [
            {
                "name": t["name"],
                "title": t["title"],
                "description": t["description"],
                "inputSchema": t["input_schema"],
                "outputSchema": t["output_schema"],
                **({"annotations": t["annotations"]} if "annotations" in t else {}),
            }
            for t in manifest["tools"]
        ],
        "auth": manifest["authentication"],
        "privacy": manifest["privacy"],
        "vendor": manifest["vendor"],
        "licensing": manifest["licensing"],
    }


def manifest_json(base_url: str = DEFAULT_BASE_URL) -> str:
    return json.dumps(build_manifest(base_url), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the Le Chat connector listing.")
    parser.add_argument(
        "--base-url", default=DEFAULT_BASE_URL, help="tenant origin, e.g. https://acme.example.com"
    )
    parser.add_argument("--stdout", action="store_true", help="print instead of writing the file")
    args = parser.parse_args(argv)
    text = manifest_json(args.base_url)
    if args.stdout:
        sys.stdout.write(text)
    else:
        OUTPUT.write_text(text)
        print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fortranspire_site.settings")
    django.setup()
    sys.exit(main())
