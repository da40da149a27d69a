"""Publishing a tenant's MCP endpoint as a custom connector in its Mistral workspace.

Uses the mistralai SDK's connectors API (``client.beta.connectors``) with the tenant's own
encrypted Mistral key (tenants.llm_credentials): ``create`` registers the endpoint with the data
of the server card and the OAuth authorization-server metadata (Mistral then registers itself
through our open DCR), ``list_tools`` confirms Mistral sees our tools, ``get`` reports the state.
"""

from __future__ import annotations

from typing import Any

from fortranspire_site.errors import ApplicationError, NotFound, ServiceUnavailable
from tenants.models import Tenant

CONNECTOR_VISIBILITY = "shared_workspace"


def connector_name(tenant: Tenant) -> str:
    return f"fortranspire-{tenant.schema_name}".replace("_", "-")


def tenant_base_url(tenant: Tenant, scheme: str = "https") -> str:
    domain = tenant.get_primary_domain()
    if domain is None:
        raise NotFound(f"tenant {tenant.schema_name!r} has no domain")
    return f"{scheme}://{domain.domain}"


def _client(tenant: Tenant):
    from mistralai.client import Mistral

    from tenants.llm_credentials import llm_config_required

    config = llm_config_required(tenant=tenant, purpose="agent")
    return Mistral(
        api_key=config.api_key,
        server_url=config.server_url,
        timeout_ms=int(config.timeout_s * 1000),
    )


def _sdk_error(action: str, exc: Exception) -> ApplicationError:
    status = getattr(getattr(exc, "raw_response", None), "status_code", None)
    detail = f"HTTP {status}" if status else type(exc).__name__
    return ServiceUnavailable(f"Mistral connectors API: {action} failed ({detail}): {exc}")


def _tool_names(tools: Any) -> list[str]:
    names = []
    for tool in tools or []:
        name = tool.get("name") if isinstance(tool, dict) else getattr(tool, "name", None)
        if name:
            names.append(str(name))
    return names


def _authorization_server_metadata(base_url: str) -> dict[str, Any]:
    from mcp_bridge.manifest import build_manifest

    oauth = build_manifest(base_url)["authentication"]["modes"][0]
    return {
        "issuer": oauth["issuer"],
        "authorization_endpoint": oauth["authorization_endpoint"],
        "token_endpoint": oauth["token_endpoint"],
        "registration_endpoint": oauth["registration_endpoint"],
        "scopes_supported": oauth["scopes"],
        "response_types_supported": ["code"],
        "grant_types_supported": oauth["grant_types"],
        "token_endpoint_auth_methods_supported": ["none"],
        "service_documentation": f"{base_url}/.well-known/mcp/server-card.json",
    }


def connector_publish(*, tenant: Tenant, base_url: str | None = None) -> dict[str, Any]:
    """Create the tenant's connector (or reuse the one of that name) and list its tools."""
    from mcp_bridge.manifest import server_card
    from tenants.services import audit

    base_url = (base_url or tenant_base_url(tenant)).rstrip("/")
    card = server_card(base_url)
    name = connector_name(tenant)
    client = _client(tenant)
    existing = _get(client, name)
    created = False
    if existing is None:
        try:
            existing = client.beta.connectors.create(
                request={
                    "protocol": "mcp",
                    "name": name,
                    "title": f"{card['title']} ({tenant.name or tenant.schema_name})",
                    "description": card["description"],
                    "server": f"{base_url}/mcp",
                    "visibility": CONNECTOR_VISIBILITY,
                    "system_prompt": card["instructions"],
                    "oauth2_server_metadata_url": (
                        f"{base_url}/.well-known/oauth-authorization-server"
                    ),
                    "oauth2_server_metadata": _authorization_server_metadata(base_url),
                }
            )
        except Exception as exc:  # the SDK's error classes, network errors
            raise _sdk_error("create", exc) from exc
        created = True
    seen = _list_tools(client, existing.id)
    expected = [t["name"] for t in card["tools"]]
    result = {
        "connector_id": existing.id,
        "name": name,
        "server": f"{base_url}/mcp",
        "created": created,
        "tools_seen": seen,
        "tools_missing": [t for t in expected if t not in seen],
    }
    audit(
        action="connector.publish",
        target=name,
        tenant=tenant,
        actor="cli",
        details={k: result[k] for k in ("connector_id", "server", "created", "tools_missing")},
    )
    return result


def connector_status(*, tenant: Tenant) -> dict[str, Any]:
    """Whether the tenant's connector exists in its workspace, and what Mistral sees of it."""
    client = _client(tenant)
    name = connector_name(tenant)
    connector = _get(client, name)
    if connector is None:
        return {"name": name, "published": False}
    return {
        "name": name,
        "published": True,
        "connector_id": connector.id,
        "server": getattr(connector, "server", None),
        "visibility": getattr(connector, "visibility", None),
        "is_authenticated": getattr(connector, "is_authenticated", None),
        "modified_at": str(getattr(connector, "modified_at", "")),
        "tools_seen": _list_tools(client, connector.id),
    }


def _get(client, name: str):
    from mistralai.client import errors

    try:
        return client.beta.connectors.get(connector_id_or_name=name)
    except errors.SDKError as exc:
        if getattr(getattr(exc, "raw_response", None), "status_code", None) == 404:
            return None
        raise _sdk_error("get", exc) from exc
    except Exception as exc:
        raise _sdk_error("get", exc) from exc


def _list_tools(client, connector_id: str) -> list[str]:
    try:
        tools = client.beta.connectors.list_tools(connector_id_or_name=connector_id, refresh=True)
    except Exception as exc:
        raise _sdk_error("list_tools", exc) from exc
    return _tool_names(tools)
