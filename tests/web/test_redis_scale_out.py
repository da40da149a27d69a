"""Scale-out over Redis (REDIS_URL): channels_redis group messages and a Celery task round trip.

REDIS_URL picks the server; unset, the tests use the local service on a database of their own
(redis://127.0.0.1:6379/15) so the suite exercises scale-out wherever Redis runs. Skipped, with
the reason, when Redis does not answer.
"""

from __future__ import annotations

import asyncio
import os

import pytest

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"


def _redis_reachable() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {REDIS_URL} is unreachable (set REDIS_URL): {exc}"
    return None


_skip_reason = _redis_reachable()
pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(_skip_reason is not None, reason=_skip_reason or ""),
]


def test_channels_redis_group_send_reaches_a_member_channel():
    from channels_redis.core import RedisChannelLayer

    async def round_trip() -> dict:
        layer = RedisChannelLayer(hosts=[REDIS_URL])
        channel = await layer.new_channel()
        await layer.group_add("fortranspire-test", channel)
        await layer.group_send("fortranspire-test", {"type": "run.finished", "run_id": "r1"})
        message = await asyncio.wait_for(layer.receive(channel), timeout=5)
        await layer.group_discard("fortranspire-test", channel)
        await layer.flush()
        return message

    assert asyncio.run(round_trip()) == {"type": "run.finished", "run_id": "r1"}


def test_celery_task_runs_on_a_worker_through_redis():
    from celery.contrib.testing.worker import start_worker

    from fortranspire_site.celery import app
    from kernels.tasks import ping

    app.conf.update(broker_url=REDIS_URL, result_backend=REDIS_URL, task_always_eager=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            assert ping.delay().get(timeout=20) == "pong"
    finally:
        app.conf.update(task_always_eager=True)


SAXPY = """\
subroutine saxpy(n, a, x, y)
  integer, intent(in) :: n
  real(8), intent(in) :: a, x(n)
  real(8), intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = a * x(i) + y(i)
  end do
end subroutine saxpy
"""


def test_translate_task_on_a_worker_records_the_run_in_the_tenant(transactional_db, tenant_a):
    from celery.contrib.testing.worker import start_worker

    from fortranspire_site.celery import app
    from kernels.selectors import kernel_run_get
    from kernels.tasks import translate

    app.conf.update(broker_url=REDIS_URL, result_backend=REDIS_URL, task_always_eager=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            result = translate.delay(tenant_a.schema_name, SAXPY, sizes={"n": 37}).get(timeout=120)
    finally:
        app.conf.update(task_always_eager=True)

    assert [k["status"] for k in result["kernels"]] == ["verified"]
    run = kernel_run_get(tenant=tenant_a, run_id=result["run_id"])
    assert run.status == "verified"
    assert run.channel == "api"
    assert run.kernel_names == ["saxpy"]
