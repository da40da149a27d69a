"""Limits in one place, applied the same way to REST, MCP and the dashboard.

- ``rate_limit_check(key=...)``: a token bucket per API key (or dashboard user):
  FORTRANSPIRE_RATE_LIMIT_BURST calls at once, refilled at FORTRANSPIRE_RATE_LIMIT_PER_MINUTE.
  With REDIS_URL the bucket lives in Redis (one atomic script), so every web process shares
  it; otherwise in this process.
- ``tenant_job_admit(tenant=...)``: at most FORTRANSPIRE_TENANT_MAX_CONCURRENT_JOBS unfinished
  jobs (queued or running) per tenant. It counts the tenant's KernelRun rows under a
  transaction-scoped advisory lock, so the cap holds across processes and hosts alike.

Both raise RateLimited (429 + Retry-After on HTTP, a tool error with retry_after on MCP).
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.db import connection
from django_tenants.utils import tenant_context

from fortranspire_site.errors import RateLimited
from kernels.models import KernelRun
from tenants.models import Tenant

RATE_KEY_PREFIX = "fortranspire:rate:"

# KEYS[1] bucket; ARGV: now (s), rate (tokens/s), burst. Returns {allowed, retry_after_ms}.
_TOKEN_BUCKET_LUA = """
local data = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tokens = tonumber(data[1]) or burst
local updated = tonumber(data[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'updated', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {allowed, wait_ms}
"""


@dataclass
class _Bucket:
    tokens: float
    updated: float


class _LocalBuckets:
    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, rate: float, burst: float) -> float:
        """Take one token; returns 0 when allowed, else the seconds until one is free."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) > 100_000:  # a key spray must not grow this forever
                    self._buckets.clear()
                bucket = self._buckets[key] = _Bucket(tokens=burst, updated=now)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


_local_buckets = _LocalBuckets()


@lru_cache(maxsize=4)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def redis_client():
    """The shared Redis of the deployment (REDIS_URL), or None in the embedded setup."""
    return _redis(settings.REDIS_URL) if settings.REDIS_URL else None


def rate_limit_check(*, key: str) -> None:
    """Take one call from ``key``'s bucket or raise RateLimited with the seconds to wait."""
    per_minute = float(settings.FORTRANSPIRE_RATE_LIMIT_PER_MINUTE)
    burst = max(1.0, float(settings.FORTRANSPIRE_RATE_LIMIT_BURST))
    if per_minute <= 0:  # 0 disables the limit
        return
    rate = per_minute / 60.0
    client = redis_client()
    if client is not None:
        allowed, wait_ms = client.eval(
            _TOKEN_BUCKET_LUA, 1, RATE_KEY_PREFIX + key, time.time(), rate, burst
        )
        wait_s = 0.0 if int(allowed) else int(wait_ms) / 1000.0
    else:
        wait_s = _local_buckets.take(key, rate, burst)
    if wait_s <= 0:
        return
    retry_after = max(1, math.ceil(wait_s))
    raise RateLimited(
        f"rate limit reached for this key ({per_minute:g} calls/minute, burst {burst:g}); "
        f"retry after {retry_after} s",
        retry_after=retry_after,
    )


def rate_limit_reset() -> None:
    """Forget every bucket (tests)."""
    _local_buckets.reset()
    client = redis_client()
    if client is not None:
        for name in client.scan_iter(RATE_KEY_PREFIX + "*"):
            client.delete(name)


def tenant_job_admit(*, tenant: Tenant) -> None:
    """Refuse a new job when the tenant already has the maximum number unfinished.

    Must run inside the transaction that then creates the queued run: the advisory lock
    (released at commit) makes count-then-insert atomic across processes.
    """
    cap = int(settings.FORTRANSPIRE_TENANT_MAX_CONCURRENT_JOBS)
    if cap <= 0:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [0x6A6F62, _lock_id(tenant)])
    with tenant_context(tenant):
        unfinished = KernelRun.objects.filter(status__in=KernelRun.JOB_STATES).count()
    if unfinished >= cap:
        raise RateLimited(
            f"this organisation already has {unfinished} jobs queued or running "
            f"(the limit is {cap}); retry when one has finished",
            retry_after=5,
            extra={"running_jobs": unfinished, "cap": cap},
        )


def _lock_id(tenant: Tenant) -> int:
    # A signed 32-bit key from the schema name (advisory locks take two int4 keys).
    return zlib.crc32(tenant.schema_name.encode()) - (1 << 31)
