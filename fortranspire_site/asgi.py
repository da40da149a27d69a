"""ASGI entry point: ``uvicorn fortranspire_site.asgi:application`` (what ``fortranspire serve`` runs).

Django is set up first (settings.py starts the embedded PostgreSQL before DATABASES is read), then
a Channels ProtocolTypeRouter sends the MCP paths (/mcp, /sse, /messages/,
/.well-known/oauth-protected-resource) to the MCP app and everything else, /health included, to
Django. The MCP app also takes the ASGI lifespan: the Streamable HTTP session manager runs for
the lifetime of the server (uvicorn's lifespan "auto"/"on").
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fortranspire_site.settings")

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import re_path  # noqa: E402

django_asgi_app = get_asgi_application()

from mcp_bridge.app import MCP_PATH_REGEX, build_mcp_app  # noqa: E402


def build_application():
    """The whole site as one ASGI app (tests build a fresh one per server)."""
    mcp_app = build_mcp_app()
    return ProtocolTypeRouter(
        {
            "http": URLRouter(
                [
                    re_path(MCP_PATH_REGEX, mcp_app),
                    re_path(r"", django_asgi_app),
                ]
            ),
            "lifespan": mcp_app,
        }
    )


application = build_application()


def _sweep_jobs_of_dead_processes() -> None:
    """Runs a killed server left unfinished end ``interrupted`` (kernels.jobs)."""
    import logging

    from kernels.jobs import job_sweep_at_startup

    try:
        job_sweep_at_startup()
    except Exception:  # noqa: BLE001 - a database still starting must not stop the server
        logging.getLogger(__name__).warning("start-up sweep of jobs failed", exc_info=True)


_sweep_jobs_of_dead_processes()

from mcp_bridge.auth import forget_verified_keys  # noqa: E402
from tenants.key_events import key_events_listen  # noqa: E402

# Another process revoking a key clears this one's MCP key cache at once (with REDIS_URL).
key_events_listen(forget_verified_keys)
