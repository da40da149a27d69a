"""Rate limit, per-tenant job cap and source-size limit, without a server."""

from __future__ import annotations

import anyio
import pytest

from fortranspire_site.errors import PayloadTooLarge, RateLimited
from mcp_bridge import limits


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    return now


def test_token_bucket_allows_the_burst_then_says_when_to_retry(settings, clock):
    settings.MCP_RATE_LIMIT_BURST = 2
    settings.MCP_RATE_LIMIT_PER_MINUTE = 6  # one token every 10 s
    limiter = limits.RateLimiter()
    limiter.check("k1")
    limiter.check("k1")
    with pytest.raises(RateLimited) as refused:
        limiter.check("k1")
    assert refused.value.retry_after == 10
    assert refused.value.status == 429
    limiter.check("k2")  # buckets are per key
    clock[0] += 10
    limiter.check("k1")


def test_rate_limit_of_zero_disables_the_limit(settings):
    settings.MCP_RATE_LIMIT_PER_MINUTE = 0
    limiter = limits.RateLimiter()
    for _ in range(1000):
        limiter.check("k")


def test_source_size_limit_counts_utf8_bytes(settings):
    settings.MCP_MAX_SOURCE_BYTES = 10
    limits.check_source_size("x" * 10)
    with pytest.raises(PayloadTooLarge) as refused:
        limits.check_source_size("é" * 6)  # 12 bytes
    assert refused.value.extra == {"size": 12, "limit": 10}


def test_source_size_limit_defaults_to_the_site_wide_setting(settings):
    settings.MCP_MAX_SOURCE_BYTES = None
    settings.FORTRANSPIRE_MAX_SOURCE_BYTES = 1234
    assert limits.limit_setting("MCP_MAX_SOURCE_BYTES") == 1234


def test_tenant_job_cap_queues_briefly_then_refuses(settings):
    settings.MCP_TENANT_MAX_CONCURRENT_JOBS = 1
    settings.MCP_JOB_QUEUE_TIMEOUT_S = 0.2
    slots = limits.TenantJobSlots()
    events: list[str] = []

    async def scenario():
        release = anyio.Event()

        async def long_job():
            async with slots.slot("t1"):
                events.append("first running")
                await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_job)
            await anyio.sleep(0.01)
            with pytest.raises(RateLimited) as refused:
                async with slots.slot("t1"):
                    events.append("second ran")
            events.append(f"second refused retry_after={refused.value.retry_after}")
            async with slots.slot("t2"):  # another tenant is not affected
                events.append("other tenant ran")
            release.set()
        async with slots.slot("t1"):  # the slot is free again
            events.append("third ran")

    anyio.run(scenario)
    assert events == [
        "first running",
        "second refused retry_after=5",
        "other tenant ran",
        "third ran",
    ]
    assert slots.running("t1") == 0


def test_queued_job_starts_when_a_slot_frees(settings):
    settings.MCP_TENANT_MAX_CONCURRENT_JOBS = 1
    settings.MCP_JOB_QUEUE_TIMEOUT_S = 5
    slots = limits.TenantJobSlots()
    order: list[str] = []

    async def job(name: str, hold: float):
        async with slots.slot("t"):
            order.append(f"{name} start")
            await anyio.sleep(hold)
            order.append(f"{name} end")

    async def scenario():
        async with anyio.create_task_group() as tg:
            tg.start_soon(job, "a", 0.05)
            await anyio.sleep(0.01)
            tg.start_soon(job, "b", 0)

    anyio.run(scenario)
    assert order == ["a start", "a end", "b start", "b end"]
