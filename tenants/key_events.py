"""API key changes reach every process at once: a Redis pub/sub message per change.

Each process caches verified MCP keys for a few seconds (mcp_bridge.auth). A save or delete
of an ApiKey (revocation from the dashboard, API or admin) already clears this process's cache;
with REDIS_URL it is also published, after commit, and every other process that listens (all
web processes start :func:`key_events_listen` with the MCP key cache's ``forget``) clears
its cache when the message arrives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

logger = logging.getLogger(__name__)

CHANNEL = "fortranspire:api-keys-changed"
_listener: threading.Thread | None = None
_listener_lock = threading.Lock()


def _publish(**_kwargs) -> None:
    if not settings.REDIS_URL:
        return
    from kernels.limits import redis_client

    def send() -> None:
        try:
            redis_client().publish(CHANNEL, "changed")
        except Exception:  # noqa: BLE001 - the cache TTL still bounds a missed message
            logger.warning("key change not published", exc_info=True)

    # After commit: a process told earlier could re-read the old row and cache it again.
    transaction.on_commit(send)


def connect_key_event_signals() -> None:
    """Called from TenantsConfig.ready: every ApiKey save or delete is published."""
    from tenants.models import ApiKey

    post_save.connect(_publish, sender=ApiKey, dispatch_uid="key_events_publish_save")
    post_delete.connect(_publish, sender=ApiKey, dispatch_uid="key_events_publish_delete")


def key_events_listen(on_change: Callable[[], None]) -> threading.Thread | None:
    """Start (once per process) the thread that calls ``on_change`` on every key change."""
    global _listener
    if not settings.REDIS_URL:
        return None
    with _listener_lock:
        if _listener is not None and _listener.is_alive():
            return _listener
        ready = threading.Event()
        _listener = threading.Thread(
            target=_listen,
            args=(settings.REDIS_URL, ready, on_change),
            name="key-events",
            daemon=True,
        )
        _listener.start()
    ready.wait(5)
    return _listener


def _listen(url: str, ready: threading.Event, forget_verified_keys: Callable[[], None]) -> None:
    import time

    import redis

    while True:
        try:
            pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL)
            ready.set()
            # Anything may have changed while we were not listening.
            forget_verified_keys()
            for message in pubsub.listen():
                if message.get("type") == "message":
                    forget_verified_keys()
        except Exception:  # noqa: BLE001 - Redis restarted: subscribe again
            logger.warning("key change listener lost Redis; reconnecting", exc_info=True)
            ready.set()
            time.sleep(1)
