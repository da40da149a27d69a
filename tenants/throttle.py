"""A fixed-window counter in Django's cache (Redis when REDIS_URL is set, so every process shares
it): ``throttle_hit`` refuses the call past ``limit`` per ``window_s`` for one key."""

from __future__ import annotations

import hashlib
import time

from django.core.cache import cache

from fortranspire_site.errors import RateLimited


def throttle_hit(*, bucket: str, key: str, limit: int, window_s: int) -> None:
    """Count one call for ``key`` in ``bucket``; raise RateLimited once over ``limit``."""
    if limit <= 0:
        return
    window = int(time.time() // window_s)
    # Hashed: client addresses never appear as cache keys in clear.
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    cache_key = f"throttle:{bucket}:{window}:{digest}"
    cache.add(cache_key, 0, timeout=window_s + 5)
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.set(cache_key, 1, timeout=window_s + 5)
        count = 1
    if count > limit:
        retry_after = max(1, int((window + 1) * window_s - time.time()))
        raise RateLimited(
            f"too many attempts from this address; try again in {retry_after} s",
            retry_after=retry_after,
        )


def client_address(request) -> str:
    """The peer address uvicorn saw (no X-Forwarded-For trust: clients can set it)."""
    return request.META.get("REMOTE_ADDR", "") or "unknown"
