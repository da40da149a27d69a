"""Per-key rate limiting, the per-tenant cap on concurrent jobs and the source-size limit.

All of them are in-process: one uvicorn process serves a tenant's MCP traffic in the embedded
deployment. With several processes each holds its own buckets, so the effective limits scale
with the process count (documented; a Redis-backed bucket is the scale-out follow-up).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from fortranspire_site.errors import PayloadTooLarge, RateLimited

DEFAULTS: dict[str, float] = {
    "MCP_MAX_SOURCE_BYTES": 1_000_000,
    "MCP_RATE_LIMIT_PER_MINUTE": 60,
    "MCP_RATE_LIMIT_BURST": 20,
    "MCP_TENANT_MAX_CONCURRENT_JOBS": 4,
    "MCP_JOB_QUEUE_TIMEOUT_S": 30,
    "MCP_TENANT_HOSTS_TTL_S": 30,
    "MCP_AUTH_CACHE_S": 10,
}


# Settings shared with the rest of the site that stand in when no MCP-specific one is set.
ALIASES = {"MCP_MAX_SOURCE_BYTES": "FORTRANSPIRE_MAX_SOURCE_BYTES"}


def limit_setting(name: str) -> float:
    """Django setting NAME (or its site-wide alias), else env FORTRANSPIRE_NAME, else the default.

    Read on every call (not cached) so tests and operators can change a limit without a restart.
    """
    try:
        from django.conf import settings

        value = getattr(settings, name, None)
        if value is None and name in ALIASES:
            value = getattr(settings, ALIASES[name], None)
    except Exception:  # settings not configured (engine-only use)
        value = None
    if value is None:
        value = os.environ.get(f"FORTRANSPIRE_{name}")
    if value is None:
        value = DEFAULTS[name]
    return float(value)


def check_source_size(source: str) -> None:
    """Raise PayloadTooLarge when ``source`` is over MCP_MAX_SOURCE_BYTES (UTF-8 bytes)."""
    limit = int(limit_setting("MCP_MAX_SOURCE_BYTES"))
    size = len(source.encode("utf-8", errors="replace"))
    if size > limit:
        raise PayloadTooLarge(
            f"Fortran source is {size} bytes; the limit is {limit} bytes. "
            "Send only the file (or module) that holds the kernels you want ported.",
            extra={"size": size, "limit": limit},
        )


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per API key: ``burst`` calls at once, refilled at ``per_minute`` / 60 per second."""

    def __init__(self) -> None:
        self._buckets: dict[Hashable, _Bucket] = {}
        # Tools run on one event loop, but benchmarks and tests may call from threads too.
        self._lock = threading.Lock()

    def check(self, key: Hashable) -> None:
        """Take one token for ``key`` or raise RateLimited with the seconds until one is free."""
        per_minute = limit_setting("MCP_RATE_LIMIT_PER_MINUTE")
        burst = max(1.0, limit_setting("MCP_RATE_LIMIT_BURST"))
        if per_minute <= 0:  # 0 disables the limit
            return
        rate = per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(tokens=burst, updated=now)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            retry_after = max(1, math.ceil((1.0 - bucket.tokens) / rate))
        raise RateLimited(
            f"Rate limit reached for this API key ({per_minute:g} calls/minute, burst {burst:g}). "
            f"Retry after {retry_after} s.",
            retry_after=retry_after,
        )

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


class TenantJobSlots:
    """At most MCP_TENANT_MAX_CONCURRENT_JOBS heavy jobs (translate, profile, agent) per tenant.

    A job over the cap waits up to MCP_JOB_QUEUE_TIMEOUT_S for a slot, so a short burst queues
    instead of failing, and is refused after that so one tenant cannot hold every worker thread.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, int] = {}
        self._changed: dict[Hashable, anyio.Event] = {}

    def running(self, tenant_key: Hashable) -> int:
        return self._running.get(tenant_key, 0)

    @asynccontextmanager
    async def slot(self, tenant_key: Hashable) -> AsyncIterator[None]:
        cap = max(1, int(limit_setting("MCP_TENANT_MAX_CONCURRENT_JOBS")))
        wait_s = max(0.0, limit_setting("MCP_JOB_QUEUE_TIMEOUT_S"))
        with anyio.move_on_after(wait_s) as scope:
            while self._running.get(tenant_key, 0) >= cap:
                event = self._changed.setdefault(tenant_key, anyio.Event())
                await event.wait()
        if scope.cancelled_caught or self._running.get(tenant_key, 0) >= cap:
            raise RateLimited(
                f"This organisation already has {cap} jobs running; retry in a few seconds.",
                retry_after=5,
                extra={"running_jobs": self._running.get(tenant_key, 0), "cap": cap},
            )
        self._running[tenant_key] = self._running.get(tenant_key, 0) + 1
        try:
            yield
        finally:
            self._running[tenant_key] -= 1
            if not self._running[tenant_key]:
                del self._running[tenant_key]
            event = self._changed.pop(tenant_key, None)
            if event is not None:
                event.set()


rate_limiter = RateLimiter()
job_slots = TenantJobSlots()
