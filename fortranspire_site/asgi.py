"""ASGI entry point: ``uvicorn fortranspire_site.asgi:application`` (what ``fortranspire serve`` runs).

Django is set up first (settings.py starts the embedded PostgreSQL before DATABASES is read), then
a Channels ProtocolTypeRouter sends the MCP paths (/mcp, /sse, /messages/,
/.well-known/oauth-protected-resource) to the MCP app and everything else, /health included, to
Django. The MCP app also takes the ASGI lifespan: the Streamable HTTP session manager runs for
the lifetime of the server (uvicorn's lifespan "auto"/"on").
"""

from __future__ import annotations

import logging
import os
import re
import threading

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fortranspire_site.settings")

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import re_path  # noqa: E402

django_asgi_app = get_asgi_application()

from mcp_bridge.app import MCP_PATH_REGEX, build_mcp_app  # noqa: E402


def _server_error(request, exc: Exception):
    """MCP paths: a lost database (tenant lookup, key check) is a 503 JSON, other faults a 500."""
    from django.db import InterfaceError, OperationalError
    from starlette.responses import JSONResponse, PlainTextResponse

    if isinstance(exc, OperationalError | InterfaceError):
        return JSONResponse(
            {
                "error": "unavailable",
                "message": "the database is unavailable; retry shortly",
                "part": "database",
                "retry_after": 5,
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return PlainTextResponse("Internal Server Error", status_code=500)


_KEY_IN_QUERY = re.compile(
    rb"(?:^|&)(?:api_key|apikey|key|token|access_token)=|fsp_[A-Za-z0-9_-]{6}"
)


def _refuse_keys_in_query_strings(app):
    """A key in a URL ends up in access logs, proxies and browser history: refuse the request
    before anything logs it (the access log filter below also masks it)."""
    from starlette.responses import JSONResponse

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and _KEY_IN_QUERY.search(scope.get("query_string") or b""):
            scope = {**scope, "query_string": b""}
            await JSONResponse(
                {
                    "error": "invalid_request",
                    "message": "send API keys in the Authorization header, never in the URL",
                },
                status_code=400,
            )(scope, receive, send)
            return
        await app(scope, receive, send)

    return guarded


class _MaskKeysInAccessLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_mask(a) if isinstance(a, str) else a for a in record.args)
        return True


def _mask(text: str) -> str:
    return re.sub(
        r"fsp_[A-Za-z0-9_-]+", "fsp_***", text.split("?", 1)[0] if "fsp_" in text else text
    )


logging.getLogger("uvicorn.access").addFilter(_MaskKeysInAccessLog())


def build_application():
    """The whole site as one ASGI app (tests build a fresh one per server)."""
    mcp_app = build_mcp_app()
    mcp_app.add_exception_handler(Exception, _server_error)
    return ProtocolTypeRouter(
        {
            "http": _refuse_keys_in_query_strings(
                URLRouter(
                    [
                        re_path(MCP_PATH_REGEX, mcp_app),
                        re_path(r"", django_asgi_app),
                    ]
                )
            ),
            "lifespan": mcp_app,
        }
    )


application = build_application()


def _sweep_jobs_of_dead_processes() -> None:
    """Runs a killed server left unfinished end ``interrupted`` (kernels.jobs)."""
    import logging

    from kernels.jobs import job_sweep_at_startup

    def sweep() -> None:
        try:
            job_sweep_at_startup()
        except Exception:  # noqa: BLE001 - a database still starting must not stop the server
            logging.getLogger(__name__).warning("start-up sweep of jobs failed", exc_info=True)

    # In its own thread: uvicorn's worker processes (serve --workers N) import this module
    # inside their running event loop, where Django refuses synchronous ORM calls.
    worker = threading.Thread(target=sweep, name="fortranspire-startup-sweep")
    worker.start()
    worker.join()


_sweep_jobs_of_dead_processes()

from mcp_bridge.auth import forget_verified_keys  # noqa: E402
from tenants.key_events import key_events_listen  # noqa: E402

# Another process revoking a key clears this one's MCP key cache at once (with REDIS_URL).
key_events_listen(forget_verified_keys)
