"""``fortranspire connector publish|status --tenant SLUG``: the tenant's MCP endpoint as a custom
connector in its Mistral workspace (mcp_bridge.connector does the work)."""

from __future__ import annotations

import argparse
import json

from fortranspire_site.cli_admin import _run, _tenant


def cmd_connector_publish(args: argparse.Namespace) -> int:
    from mcp_bridge.connector import connector_publish

    result = connector_publish(tenant=_tenant(args.tenant), base_url=args.base_url)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verb = "created" if result["created"] else "already published as"
        print(f"{verb} connector {result['name']} ({result['connector_id']}) -> {result['server']}")
        print(
            f"Mistral sees {len(result['tools_seen'])} tool(s): {', '.join(result['tools_seen'])}"
        )
        if result["tools_missing"]:
            print(f"missing: {', '.join(result['tools_missing'])}")
    return 1 if result["tools_missing"] else 0


def cmd_connector_status(args: argparse.Namespace) -> int:
    from mcp_bridge.connector import connector_status

    status = connector_status(tenant=_tenant(args.tenant))
    if args.json:
        print(json.dumps(status, indent=2))
    elif not status["published"]:
        print(f"connector {status['name']}: not published (run `fortranspire connector publish`)")
    else:
        print(f"connector {status['name']} ({status['connector_id']}): published")
        print(f"  server: {status['server']}  visibility: {status['visibility']}")
        print(f"  authenticated: {status['is_authenticated']}  modified: {status['modified_at']}")
        print(f"  tools seen by Mistral: {', '.join(status['tools_seen']) or 'none'}")
    return 0 if status["published"] else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    connector = sub.add_parser(
        "connector", help="publish the tenant's MCP endpoint to its Mistral workspace"
    )
    csub = connector.add_subparsers(dest="connector_command", required=True, metavar="ACTION")
    p = csub.add_parser("publish", help="create the custom connector and check its tools")
    p.add_argument("--tenant", required=True)
    p.add_argument(
        "--base-url", default=None, help="the tenant's public origin (default: https://DOMAIN)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_run(cmd_connector_publish))
    p = csub.add_parser("status", help="show the connector as Mistral sees it")
    p.add_argument("--tenant", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_run(cmd_connector_status))
