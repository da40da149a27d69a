"""Site-wide views that belong to no app: health, the public landing page, the 404 page."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from tenants.selectors import privacy_notice_current

logger = logging.getLogger(__name__)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:  # noqa: BLE001 - any failure means "down" for a health probe
        logger.warning("health: database check failed", exc_info=True)
        return False


async def _channel_layer_round_trip() -> bool:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return False
    channel = await layer.new_channel("health.")
    await layer.send(channel, {"type": "health.ping"})
    message = await asyncio.wait_for(layer.receive(channel), timeout=2)
    return message.get("type") == "health.ping"


def _channel_layer_ok() -> bool:
    try:
        return bool(async_to_sync(_channel_layer_round_trip)())
    except Exception:  # noqa: BLE001
        logger.warning("health: channel layer check failed", exc_info=True)
        return False


def _sandbox_status() -> str:
    from kernels.engine import sandbox

    try:
        # Cached by the engine: a working sandbox is probed once per process.
        return sandbox.status()
    except Exception:  # noqa: BLE001 - a broken probe means untrusted code cannot run
        logger.warning("health: sandbox probe failed", exc_info=True)
        return "unavailable"


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers; no auth, answers on every known host.

    ``sandbox`` is ``unavailable`` when bubblewrap cannot run here: translations then fail
    (nothing untrusted runs unsandboxed), so the instance reports itself degraded.
    """
    database = _database_ok()
    channel_layer = _channel_layer_ok()
    sandbox = _sandbox_status()
    ok = database and channel_layer and sandbox == "ok"
    return JsonResponse(
        {
            "status": "ok" if ok else "degraded",
            "database": "ok" if database else "down",
            "channel_layer": "ok" if channel_layer else "down",
            "sandbox": sandbox,
        },
        status=200 if ok else 503,
    )


def landing(request: HttpRequest) -> HttpResponse:
    return render(request, "public/landing.html", {"signup_enabled": settings.SIGNUP_ENABLED})


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "404.html", {"reason": "not_found"}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    return render(request, "500.html", {}, status=500)


def privacy(request: HttpRequest) -> HttpResponse:
    """The host's workspace's latest published notice (else the platform's), public."""
    tenant = getattr(request, "tenant", None)
    tenant = tenant if tenant is not None and tenant.pk else None
    notice = privacy_notice_current(tenant=tenant)
    return render(
        request,
        "privacy.html",
        {"notice": notice, "tenant": tenant},
        status=200 if notice else 404,
    )


def mcp_server_card(request: HttpRequest) -> HttpResponse:
    """The MCP Server Card of this host (/.well-known/mcp/server-card.json), public."""
    from mcp_bridge.manifest import server_card

    tenant = getattr(request, "tenant", None)
    if tenant is None or tenant.pk is None:
        return JsonResponse(
            {"error": "not_found", "message": "Server cards are served on tenant hosts."},
            status=404,
        )
    card = server_card(f"{request.scheme}://{request.get_host()}")
    response = JsonResponse(card, json_dumps_params={"indent": 2})
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    return response
