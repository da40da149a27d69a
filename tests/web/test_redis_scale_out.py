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


@pytest.fixture
def celery_jobs(settings):
    """The job service in scale-out mode: Celery over Redis, progress over channels_redis."""
    from fortranspire_site.celery import app

    settings.REDIS_URL = REDIS_URL
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    app.conf.update(broker_url=REDIS_URL, result_backend=REDIS_URL, task_always_eager=False)
    yield app
    app.conf.update(task_always_eager=True)


def test_a_translation_job_runs_on_a_celery_worker_and_its_progress_reaches_the_waiter(
    transactional_db, tenant_a, celery_jobs
):
    from celery.contrib.testing.worker import start_worker

    from kernels import jobs

    seen: list[str] = []

    def on_progress(stage, done, total, message):
        seen.append(stage)

    with start_worker(
        celery_jobs, pool="solo", perform_ping_check=False, loglevel="WARNING", queues=["cpu"]
    ):
        run = jobs.job_translate_submit(
            tenant=tenant_a, source=SAXPY, channel="api", tool="translate_kernel", verify=False
        )
        assert run.status == "queued"
        finished = asyncio.run(
            jobs.job_wait(
                tenant=tenant_a, run_id=str(run.id), timeout_s=60, on_progress=on_progress
            )
        )

    assert finished.status == "translated", finished.error
    assert finished.kernel_names == ["saxpy"] and finished.attempts == 1
    assert finished.worker.endswith(f":{os.getpid()}")  # the worker thread of this process
    assert finished.progress["stages"][:3] == ["parse", "analyse", "generate"]
    assert "parse" in seen  # delivered through channels_redis, not read from the row
    assert jobs.job_outcome(finished)["kernels"][0]["status"] == "translated"
