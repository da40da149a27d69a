"""Celery tasks: workers of the job service (kernels.jobs) when REDIS_URL is set.

A job travels as (tenant schema, run id): the queued KernelRun holds everything else, so the
message is tiny and a job is never only in the broker. Queues: ``cpu`` and ``gpu`` (GPU nodes
run ``celery -A fortranspire_site.celery worker -Q gpu``).
"""

from __future__ import annotations

from celery.signals import worker_ready

from fortranspire_site.celery import app


@app.task(name="kernels.tasks.ping")
def ping() -> str:
    """Round-trip check for the broker and a worker."""
    return "pong"


@app.task(
    name="kernels.tasks.run_job",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def run_job(self, tenant_schema: str, run_id: str) -> str:
    """Run one accepted job. Delivered again if this worker dies before it is done."""
    from kernels import jobs

    decision = jobs.job_execute(tenant_schema=tenant_schema, run_id=run_id)
    if decision == "busy":
        # Another worker holds it and looked alive: look again once its heartbeat could be
        # stale, so the job is taken over (or found finished) rather than dropped.
        raise self.retry(countdown=jobs.HEARTBEAT_STALE_S)
    return decision


@worker_ready.connect
def _sweep_on_worker_start(**_kwargs) -> None:
    from kernels.jobs import job_sweep_at_startup

    job_sweep_at_startup()


@app.task(name="kernels.tasks.purge")
def purge() -> dict[str, int]:
    """Nightly retention purge (schedule it with celery beat or cron: `fortranspire purge`)."""
    from kernels.services import kernel_run_purge

    return kernel_run_purge()
