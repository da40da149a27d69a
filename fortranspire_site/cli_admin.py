"""CLI commands that need Django: serve, bootstrap-demo, tenant, key, member, purge.

Each sets Django up lazily (embedded PostgreSQL unless DATABASE_URL is set). Errors become a
one-line message: exit 2 for bad input (ApplicationError), 1 when something else failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import datetime, timedelta

DEMO_DOMAIN = "demo.localhost"
DEMO_KEY_NAME = "demo"
DEFAULT_PRIVACY_BODY = (
    "fortranspire processes the Fortran source you submit in order to translate, verify and "
    "profile it. Sources, generated code and reports are stored in your workspace's own "
    "database schema and are visible only to your workspace. They are deleted after your "
    "workspace's retention period, or at once when an owner deletes the history. If you enable "
    "the LLM fallback, the kernels that need it are sent to Mistral AI with your own API key."
)


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fortranspire_site.settings")
    import django

    django.setup()


def _run(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Set Django up, run, and turn failures into a message and an exit code (no traceback)."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            setup_django()
            from fortranspire_site.errors import ApplicationError
        except Exception as exc:  # noqa: BLE001
            print(f"error: could not start Django / the database: {exc}", file=sys.stderr)
            return 1
        try:
            return int(handler(args) or 0)
        except ApplicationError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001
            if os.environ.get("FORTRANSPIRE_DEBUG"):
                raise
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1

    return wrapper


def _tenant(slug: str):
    from tenants.selectors import tenant_get

    return tenant_get(slug=slug)


def _parse_scopes(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [s.strip() for s in value.split(",") if s.strip()]


# ---- serve ----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from django.db import connection

    connection.ensure_connection()  # start the embedded database before accepting requests
    import signal

    from kernels.engine import sandbox

    # Work directories a killed server or worker left behind still hold tenants' sources.
    swept = sandbox.sweep_stale_workdirs()
    if swept:
        print(f"removed {swept} leftover sandbox work dir(s) from {sandbox.sandbox_root()}")
    probe = sandbox.probe()
    if not probe.ok:
        print(f"warning: untrusted code will not run: {probe.reason}", file=sys.stderr)

    import uvicorn

    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default handler the process
    # would die without running atexit hooks, leaving the embedded PostgreSQL running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        from mcp_bridge.app import STATELESS_ENV

        # Read by every worker when it builds the MCP app: sessions in one process's memory
        # cannot be shared, so Streamable HTTP must not need them.
        os.environ[STATELESS_ENV] = "1"
        print(
            f"{args.workers} worker processes: /mcp (Streamable HTTP) runs stateless and any "
            "worker answers any request. /sse + /messages/ (legacy SSE) stay bound to the worker "
            "holding the session: behind more than one worker they need sticky routing on "
            "session_id (or run SSE clients against a single-worker server).",
            flush=True,
        )
    print(
        f"fortranspire serving on http://{args.host}:{args.port} "
        f"(try: curl -H 'Host: {DEMO_DOMAIN}' http://{args.host}:{args.port}/health)",
        flush=True,
    )
    uvicorn.run(
        "fortranspire_site.asgi:application",
        host=args.host,
        port=args.port,
        lifespan="on",
        log_level=args.log_level,
        proxy_headers=True,
        workers=args.workers,
        # Longer than HTTP clients' own keep-alive expiry (httpx: 5 s), so an SSE client's POST
        # never races the server closing the idle connection under it.
        timeout_keep_alive=30,
    )
    return 0


# ---- bootstrap-demo -------------------------------------------------------------------------


def migrate_all(verbosity: int = 0) -> None:
    """migrate_schemas for the public schema, then for every tenant schema."""
    from django.core.management import call_command

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=verbosity)
    call_command("migrate_schemas", tenant=True, interactive=False, verbosity=verbosity)


def bootstrap_demo(*, out=None) -> dict:
    """Idempotent: migrate, tenant ``demo`` on demo.localhost, privacy notice v1, one demo key.

    Returns what it did: ``{"tenant_created", "notice_created", "raw_key", "existing_key"}``.
    """
    from django.conf import settings
    from django.utils import timezone

    from tenants import selectors, services
    from tenants.models import ApiKey, Tenant

    out = out or sys.stdout
    migrate_all()
    slug = settings.DEFAULT_TENANT_SLUG
    result: dict = {
        "tenant_created": False,
        "notice_created": False,
        "raw_key": None,
        "existing_key": None,
    }
    tenant = Tenant.objects.filter(schema_name=slug).first()
    if tenant is None:
        tenant = services.tenant_create(
            slug=slug, domain=DEMO_DOMAIN, name="Demo", actor="bootstrap-demo"
        )
        result["tenant_created"] = True
        print(f"created tenant {slug!r} on {DEMO_DOMAIN}", file=out)
    else:
        print(f"tenant {slug!r} exists", file=out)
    if selectors.privacy_notice_current() is None:
        services.privacy_notice_publish(
            body=DEFAULT_PRIVACY_BODY,
            sub_processors=["Mistral AI (only if the LLM fallback is enabled)"],
            data_residency="Where this server runs (self-hosted).",
            retention_policy="Kernel runs are deleted after each workspace's retention_days.",
            actor="bootstrap-demo",
        )
        result["notice_created"] = True
        print("published privacy notice v1", file=out)
    now = timezone.now()
    active = (
        ApiKey.objects.filter(tenant=tenant, name=DEMO_KEY_NAME, revoked_at__isnull=True)
        .exclude(expires_at__lte=now)
        .first()
    )
    if active is not None:
        result["existing_key"] = active.prefix
        print(
            f"a demo key already exists ({active.prefix}…); its raw value was shown when it was "
            f"created. Make another with: fortranspire key create --tenant {slug} --name demo",
            file=out,
        )
    else:
        _key, raw = services.api_key_create(
            tenant=tenant, name=DEMO_KEY_NAME, scopes=["translate", "profile", "agent", "history"]
        )
        result["raw_key"] = raw
        print(f"demo API key for {DEMO_DOMAIN} (shown once, only its hash is stored):", file=out)
        print(raw, file=out)
    return result


def cmd_bootstrap_demo(args: argparse.Namespace) -> int:
    bootstrap_demo()
    return 0


# ---- tenants --------------------------------------------------------------------------------


def cmd_tenant_create(args: argparse.Namespace) -> int:
    from tenants.services import tenant_create

    tenant = tenant_create(
        slug=args.slug,
        domain=args.domain,
        name=args.name,
        retention_days=args.retention_days,
        actor="cli",
    )
    domain = tenant.domains.get(is_primary=True).domain
    print(f"created tenant {tenant.schema_name!r} on {domain}")
    from django.conf import settings
    from django.http.request import validate_host

    if not validate_host(domain, settings.ALLOWED_HOSTS):
        print(
            f"note: {domain} is not in ALLOWED_HOSTS; add it to FORTRANSPIRE_ALLOWED_HOSTS "
            "(comma separated) and restart the server, or requests to it get a 404",
            file=sys.stderr,
        )
    return 0


def cmd_tenant_delete(args: argparse.Namespace) -> int:
    from tenants.services import tenant_delete

    if not args.yes and sys.stdin.isatty():
        answer = input(f"Delete tenant {args.slug!r}, its schema and all its data? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("aborted")
            return 1
    tenant_delete(slug=args.slug, actor="cli")
    print(f"deleted tenant {args.slug!r} (schema dropped)")
    return 0


def cmd_tenant_list(args: argparse.Namespace) -> int:
    from tenants.selectors import tenant_list

    for t in tenant_list():
        domains = ",".join(d.domain for d in t.domains.all())
        print(f"{t.schema_name}\t{domains}\tretention={t.retention_days}d\t{t.name}")
    return 0


# ---- keys -----------------------------------------------------------------------------------


def cmd_key_create(args: argparse.Namespace) -> int:
    from django.utils import timezone

    from tenants.services import api_key_create

    tenant = _tenant(args.tenant)
    expires_at = None
    if args.expires_days is not None:
        expires_at = timezone.now() + timedelta(days=args.expires_days)
    key, raw = api_key_create(
        tenant=tenant, name=args.name, scopes=_parse_scopes(args.scopes), expires_at=expires_at
    )
    print(
        f"key {key.prefix}… for tenant {tenant.schema_name!r}, scopes {','.join(key.scopes)}"
        " (shown once, only its hash is stored):"
    )
    print(raw)
    return 0


def _fmt(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M") if dt else "-"


def cmd_key_list(args: argparse.Namespace) -> int:
    from tenants.selectors import api_key_list

    tenant = _tenant(args.tenant)
    print("prefix\tname\tscopes\tcreated\texpires\trevoked\tlast_used")
    for k in api_key_list(tenant=tenant):
        print(
            f"{k.prefix}\t{k.name}\t{','.join(k.scopes)}\t{_fmt(k.created_at)}\t"
            f"{_fmt(k.expires_at)}\t{_fmt(k.revoked_at)}\t{_fmt(k.last_used_at)}"
        )
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    from tenants.selectors import api_key_get_by_prefix
    from tenants.services import api_key_revoke

    tenant = _tenant(args.tenant) if args.tenant else None
    key = api_key_get_by_prefix(prefix=args.prefix, tenant=tenant)
    api_key_revoke(key=key, actor="cli")
    print(f"revoked {key.prefix}… ({key.name}) of tenant {key.tenant.schema_name!r}")
    return 0


# ---- members --------------------------------------------------------------------------------


def cmd_member_add(args: argparse.Namespace) -> int:
    import secrets

    from django.contrib.auth import get_user_model

    from tenants.services import membership_set

    tenant = _tenant(args.tenant)
    User = get_user_model()
    user = User.objects.filter(username=args.username).first()
    password = None
    if user is None:
        password = args.password or secrets.token_urlsafe(12)
        user = User.objects.create_user(username=args.username, password=password)
    membership_set(tenant=tenant, user=user, role=args.role, actor="cli")
    print(f"{args.username} is {args.role} of {tenant.schema_name!r}")
    if password and not args.password:
        print(f"password: {password}")
    return 0


# ---- purge ----------------------------------------------------------------------------------


def cmd_purge(args: argparse.Namespace) -> int:
    from kernels.services import kernel_run_purge

    deleted = kernel_run_purge()
    for slug, count in deleted.items():
        print(f"{slug}: deleted {count} run(s)")
    print(f"total: {sum(deleted.values())}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register serve, bootstrap-demo, tenant, key, member and purge; each sets ``handler``."""
    p = sub.add_parser("serve", help="serve the web app, API and MCP endpoint under uvicorn")
    p.add_argument("--host", default=os.environ.get("FORTRANSPIRE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("FORTRANSPIRE_PORT", 8000)))
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("FORTRANSPIRE_WORKERS", 1)),
        help="uvicorn worker processes; above 1, /mcp runs stateless and SSE needs sticky routing",
    )
    p.set_defaults(handler=_run(cmd_serve))

    p = sub.add_parser(
        "bootstrap-demo", help="migrate, create the demo tenant and print a demo key (idempotent)"
    )
    p.set_defaults(handler=_run(cmd_bootstrap_demo))

    tenant = sub.add_parser("tenant", help="create, delete or list tenants")
    tsub = tenant.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    p = tsub.add_parser("create", help="create a tenant with its schema and domain")
    p.add_argument("slug", help="schema name: lower-case letters, digits, underscores")
    p.add_argument("--domain", required=True, help="host name, e.g. acme.localhost")
    p.add_argument("--name", default=None)
    p.add_argument("--retention-days", type=int, default=None)
    p.set_defaults(handler=_run(cmd_tenant_create))
    p = tsub.add_parser("delete", help="drop the tenant's schema and every public row of it")
    p.add_argument("slug")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=_run(cmd_tenant_delete))
    p = tsub.add_parser("list", help="list tenants")
    p.set_defaults(handler=_run(cmd_tenant_list))

    key = sub.add_parser("key", help="create, list or revoke API keys")
    ksub = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    p = ksub.add_parser("create", help="mint a key; the raw key is the last line printed")
    p.add_argument("--tenant", required=True)
    p.add_argument("--name", default="cli")
    p.add_argument(
        "--scopes",
        default=None,
        help="comma separated: translate,profile,agent,history,owner "
        "(default: translate,profile,agent,history)",
    )
    p.add_argument("--expires-days", type=int, default=None)
    p.set_defaults(handler=_run(cmd_key_create))
    p = ksub.add_parser("list", help="list a tenant's keys (prefixes only)")
    p.add_argument("--tenant", required=True)
    p.set_defaults(handler=_run(cmd_key_list))
    p = ksub.add_parser("revoke", help="revoke a key by its prefix (fsp_xxxxxxxx)")
    p.add_argument("prefix")
    p.add_argument("--tenant", default=None)
    p.set_defaults(handler=_run(cmd_key_revoke))

    member = sub.add_parser("member", help="give a user access to a tenant's dashboard")
    msub = member.add_subparsers(dest="member_command", required=True, metavar="ACTION")
    p = msub.add_parser("add", help="add (creating the user if needed) a member or owner")
    p.add_argument("--tenant", required=True)
    p.add_argument("username")
    p.add_argument("--role", choices=["owner", "member"], default="member")
    p.add_argument("--password", default=None, help="for a new user (default: generated)")
    p.set_defaults(handler=_run(cmd_member_add))

    p = sub.add_parser("purge", help="delete kernel runs older than each tenant's retention")
    p.set_defaults(handler=_run(cmd_purge))
