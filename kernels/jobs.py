"""The one job service: every long piece of work (translate, profile, ask_agent) from every
channel (REST, MCP, dashboard) is accepted here, run by a worker and waited for here.

- ``job_submit`` checks the request, applies the tenant's concurrency cap, writes the
  ``queued`` KernelRun and hands its id to a worker.
- Workers run ``job_execute``: claim the run (``running``), run the engine with progress
  stored on the row and published to waiting clients, record the outcome.
  - Without REDIS_URL, workers are threads of this process (FORTRANSPIRE_JOB_WORKERS).
  - With REDIS_URL, they are Celery workers on queues ``cpu`` and ``gpu`` (kernels.tasks), with
    acks_late and reject-on-worker-lost: a job whose worker died is delivered again, taken
    over once its heartbeat is stale, and finished ``interrupted`` after MAX_ATTEMPTS.
- ``job_wait`` (async) waits for the final state, forwarding progress as it arrives through
  the channel layer (channels_redis across processes, a local notifier in-process); the row is
  re-read regularly too, so a lost message only delays, never loses, the answer.
- ``job_sweep_at_startup``: runs left unfinished by a process that died become ``interrupted``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import close_old_connections, connections, transaction
from django_tenants.utils import tenant_context

from fortranspire_site.errors import (
    ApplicationError,
    RateLimited,
    ServiceUnavailable,
    ValidationFailed,
)
from kernels import limits, selectors, services
from kernels.models import KernelRun
from tenants.models import ApiKey, Tenant

logger = logging.getLogger(__name__)

STAGES = ("parse", "analyse", "generate", "verify")
HEARTBEAT_S = 5.0
# A running job whose heartbeat is older than this may be taken over by another worker.
HEARTBEAT_STALE_S = 30.0
MAX_ATTEMPTS = 2
# How often a waiting client re-reads the row even without a notification.
WAIT_POLL_S = 1.0
PENDING_EVENT_WAIT_S = 0.05  # for events still in a channel layer when the run is seen finished

# Tests set this to run jobs in the submitting thread (inside their rolled-back transaction).
RUN_INLINE = False


def _uses_celery() -> bool:
    return bool(settings.REDIS_URL)


def _group(run_id: str) -> str:
    return f"job.{run_id}"


# --------------------------------------------------------------------------------------------
# Accepting a job


def job_submit(
    *,
    tenant: Tenant,
    kind: str,
    channel: str,
    tool: str,
    source: str,
    params: dict[str, Any],
    api_key: ApiKey | None = None,
    user: Any = None,
) -> KernelRun:
    """Check, admit (tenant cap) and queue one job; returns its ``queued`` (or finished) run.

    ``params`` are the kind's options (see services.translate_params / profile_params /
    agent.ask_params), already checked by the caller's ``job_*_submit`` helper below.
    """
    source = services.source_check(source) if source or kind != "ask" else ""
    with transaction.atomic():
        limits.tenant_job_admit(tenant=tenant)
        run = services.kernel_run_accept(
            tenant=tenant,
            kind=kind,
            channel=channel,
            tool=tool,
            source=source,
            params=params,
            target=params.get("target", ""),
            api_key=api_key,
            user=user,
        )
    _dispatch(tenant, run)
    if RUN_INLINE:
        run = selectors.kernel_run_get(tenant=tenant, run_id=run.id)
    return run


def job_translate_submit(
    *,
    tenant: Tenant,
    source: str,
    channel: str,
    tool: str,
    target: str = "cpu",
    kernel: str | None = None,
    verify: bool = True,
    sizes: Any = None,
    seed: int = 0,
    allow_llm: bool = False,
    filename: str = "input.f90",
    api_key: ApiKey | None = None,
    user: Any = None,
    files: dict[str, str] | None = None,
    include_dirs: list[str] | None = None,
    defines: dict[str, str | None] | None = None,
) -> KernelRun:
    params = services.translate_params(
        target=target,
        kernel=kernel,
        verify=verify,
        sizes=sizes,
        seed=seed,
        allow_llm=allow_llm,
        filename=filename,
        files=files,
        include_dirs=include_dirs,
        defines=defines,
    )
    if params["files"] is not None:
        source = services.project_source_text(params["files"])
    return job_submit(
        tenant=tenant,
        kind="translate",
        channel=channel,
        tool=tool,
        source=source,
        params=params,
        api_key=api_key,
        user=user,
    )


def job_profile_submit(
    *,
    tenant: Tenant,
    source: str,
    channel: str,
    tool: str,
    sizes: Any = None,
    measure: bool = False,
    api_key: ApiKey | None = None,
    user: Any = None,
) -> KernelRun:
    return job_submit(
        tenant=tenant,
        kind="profile",
        channel=channel,
        tool=tool,
        source=source,
        params=services.profile_params(sizes=sizes, measure=measure),
        api_key=api_key,
        user=user,
    )


def job_ask_submit(
    *,
    tenant: Tenant,
    question: str,
    channel: str,
    source: str | None = None,
    run_id: str | None = None,
    api_key: ApiKey | None = None,
    user: Any = None,
) -> KernelRun:
    from kernels.agent import ask_params
    from tenants.llm_credentials import llm_config_required

    params, source = ask_params(question=question, source=source, run_id=run_id)
    # Refused now (with how to configure a key) rather than after a trip through the queue.
    llm_config_required(tenant=tenant, purpose="agent")
    return job_submit(
        tenant=tenant,
        kind="ask",
        channel=channel,
        tool="ask_agent",
        source=source,
        params=params,
        api_key=api_key,
        user=user,
    )


# --------------------------------------------------------------------------------------------
# Workers


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = max(1, int(settings.FORTRANSPIRE_JOB_WORKERS))
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        return _pool


def _dispatch(tenant: Tenant, run: KernelRun) -> None:
    schema, run_id = tenant.schema_name, str(run.id)
    if RUN_INLINE:
        job_execute(tenant_schema=schema, run_id=run_id)
        return
    if _uses_celery():
        from kernels.tasks import run_job

        queue = "gpu" if run.target == "gpu" else "cpu"

        def send() -> None:
            run_job.apply_async(args=[schema, run_id], queue=queue)

    else:

        def send() -> None:
            _executor().submit(_execute_in_pool, schema, run_id)

    # After the queued row is committed, so a worker never looks for a row it cannot see.
    transaction.on_commit(send)


def _execute_in_pool(schema: str, run_id: str) -> None:
    try:
        job_execute(tenant_schema=schema, run_id=run_id)
    except Exception:  # noqa: BLE001 - recorded on the run; the pool thread must live on
        logger.exception("job %s crashed", run_id)
    finally:
        connections.close_all()  # pool threads live on: give their connection back


class _Progress:
    """The engine's progress callback for one run: stored on the row, published to waiters."""

    def __init__(self, tenant: Tenant, run: KernelRun) -> None:
        self.tenant, self.run_id = tenant, str(run.id)
        self.last_write = 0.0
        self.last_stage = ""

    def __call__(self, stage: str, done: int, total: int, message: str) -> None:
        # Every step reaches the waiting clients (each finished stage carries its duration);
        # only the row is written at most once per interval within a stage.
        job_event_publish(
            self.run_id,
            {"event": "progress", "stage": stage, "done": done, "total": total, "message": message},
        )
        now = time.monotonic()
        if (
            stage == self.last_stage
            and done < total
            and now - self.last_write < services.PROGRESS_WRITE_INTERVAL_S
        ):
            return
        self.last_write, self.last_stage = now, stage
        try:
            services.kernel_run_progress(
                tenant=self.tenant,
                run_id=self.run_id,
                stage=stage,
                done=done,
                total=total,
                message=message,
            )
        except Exception:  # noqa: BLE001 - progress must never break the job
            logger.warning("progress of %s not stored", self.run_id, exc_info=True)


@contextmanager
def _heartbeat(tenant: Tenant, run_id: str):
    """Touch the run every HEARTBEAT_S while it runs: a stale heartbeat means a dead worker."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                services.kernel_run_heartbeat(tenant=tenant, run_id=run_id)
            except Exception:  # noqa: BLE001
                logger.warning("heartbeat of %s failed", run_id, exc_info=True)
            finally:
                close_old_connections()
        connections.close_all()

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def job_execute(*, tenant_schema: str, run_id: str) -> str:
    """Run one accepted job on this worker; returns the claim decision (run/done/busy/...)."""
    from tenants.selectors import tenant_get

    tenant = tenant_get(slug=tenant_schema)
    decision, run = services.kernel_run_claim(
        tenant=tenant,
        run_id=run_id,
        worker=services.this_process(),
        stale_after_s=HEARTBEAT_STALE_S,
        max_attempts=MAX_ATTEMPTS,
    )
    if decision != "run":
        if decision in ("done", "interrupted"):
            job_event_publish(run_id, {"event": "finished"})
        return decision
    job_event_publish(run_id, {"event": "progress", "stage": "", "message": "starting"})
    try:
        with _heartbeat(tenant, run_id):
            _RUNNERS[run.kind](tenant, run, _Progress(tenant, run))
    except ApplicationError as exc:
        # The run is finished (failed) by the recorder; keep how the edges must show it.
        _failure_store(tenant, run_id, exc)
    except Exception:  # noqa: BLE001 - recorded as failed by the recorder
        logger.exception("job %s failed", run_id)
    finally:
        job_event_publish(run_id, {"event": "finished"})
    return "run"


def _failure_store(tenant: Tenant, run_id: str, exc: ApplicationError) -> None:
    with tenant_context(tenant):
        run = KernelRun.objects.filter(pk=run_id).only("progress").first()
        if run is None:
            return
        extra = {k: v for k, v in exc.extra.items() if k != "run_id"}
        progress = {
            **(run.progress or {}),
            "failure": {"status": exc.status, "code": exc.code, "extra": extra},
        }
        KernelRun.objects.filter(pk=run_id).update(progress=progress)


def _caller_objects(run: KernelRun) -> dict[str, Any]:
    api_key = ApiKey.objects.filter(pk=run.api_key_id).first() if run.api_key_id else None
    user = get_user_model().objects.filter(pk=run.user_id).first() if run.user_id else None
    return {"api_key": api_key, "user": user}


def _run_translate(tenant: Tenant, run: KernelRun, progress: _Progress) -> None:
    services.kernel_translate(
        tenant=tenant,
        source=run.source,
        channel=run.channel,
        tool=run.tool,
        progress=progress,
        run=run,
        **_caller_objects(run),
        **run.params,
    )


def _run_profile(tenant: Tenant, run: KernelRun, progress: _Progress) -> None:
    services.kernel_profile(
        tenant=tenant,
        source=run.source,
        channel=run.channel,
        tool=run.tool,
        progress=progress,
        run=run,
        **_caller_objects(run),
        **run.params,
    )


def _run_ask(tenant: Tenant, run: KernelRun, progress: _Progress) -> None:
    from kernels.agent import agent_ask

    agent_ask(
        tenant=tenant,
        question=run.params["question"],
        source=run.source or None,
        run_id=run.params.get("run_id"),
        channel=run.channel,
        progress=progress,
        run=run,
        **_caller_objects(run),
    )


_RUNNERS: dict[str, Callable[[Tenant, KernelRun, _Progress], None]] = {
    "translate": _run_translate,
    "profile": _run_profile,
    "ask": _run_ask,
}


# --------------------------------------------------------------------------------------------
# Progress events: the channel layer across processes (Redis), a local notifier otherwise


class _LocalNotifier:
    """In-process stand-in for a channel-layer group: the workers are threads of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = {}

    def publish(self, run_id: str, event: dict) -> None:
        with self._lock:
            listeners = list(self._listeners.get(run_id, ()))
        for loop, queue in listeners:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the waiter's loop is gone
                pass

    def subscribe(self, run_id: str, queue: asyncio.Queue) -> None:
        with self._lock:
            self._listeners.setdefault(run_id, []).append((asyncio.get_running_loop(), queue))

    def unsubscribe(self, run_id: str, queue: asyncio.Queue) -> None:
        with self._lock:
            kept = [(lp, q) for lp, q in self._listeners.get(run_id, []) if q is not queue]
            if kept:
                self._listeners[run_id] = kept
            else:
                self._listeners.pop(run_id, None)


_local = _LocalNotifier()


def job_event_publish(run_id: str, event: dict) -> None:
    """Tell the clients waiting for ``run_id`` (a progress step, or that it finished)."""
    if not _uses_celery():
        _local.publish(run_id, event)
        return
    from channels.layers import get_channel_layer

    try:
        async_to_sync(get_channel_layer().group_send)(
            _group(run_id), {"type": "job.event", **event}
        )
    except Exception:  # noqa: BLE001 - waiters also re-read the row; an event may be lost
        logger.warning("job event for %s not sent", run_id, exc_info=True)


async def job_wait(
    *,
    tenant: Tenant,
    run_id: str,
    timeout_s: float | None = None,
    on_progress: Callable[[str, int, int, str], Any] | None = None,
) -> KernelRun:
    """Wait for the run's final state; ``on_progress(stage, done, total, message)`` may be async.

    Raises ServiceUnavailable when the run is not finished within ``timeout_s`` (the run goes
    on and can be read later with its id).
    """
    timeout_s = float(settings.FORTRANSPIRE_JOB_WAIT_S if timeout_s is None else timeout_s)
    deadline = time.monotonic() + timeout_s
    get = sync_to_async(_run_reload, thread_sensitive=False)
    queue: asyncio.Queue = asyncio.Queue()
    layer = channel = None
    if _uses_celery():
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(_group(run_id), channel)
    else:
        _local.subscribe(run_id, queue)

    async def deliver(event: dict | None) -> None:
        if event and event.get("event") == "progress" and on_progress is not None:
            outcome = on_progress(
                event.get("stage", ""),
                int(event.get("done") or 0),
                int(event.get("total") or 0),
                str(event.get("message") or ""),
            )
            if asyncio.iscoroutine(outcome):
                await outcome

    try:
        while True:
            run = await get(tenant, run_id)
            if run.finished:
                # The last stages often finish within milliseconds of each other and of the run:
                # what they published before it finished still reaches the caller, in order.
                for event in await _pending_events(layer, channel, queue):
                    await deliver(event)
                return run
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceUnavailable(
                    f"the job is still {run.status} after {timeout_s:g} s; "
                    f"read it later with its run id",
                    extra={"run_id": run_id, "job_status": run.status},
                )
            await deliver(await _next_event(layer, channel, queue, min(left, WAIT_POLL_S)))
    finally:
        if layer is not None:
            await layer.group_discard(_group(run_id), channel)
        else:
            _local.unsubscribe(run_id, queue)


async def _next_event(layer, channel, queue: asyncio.Queue, wait_s: float) -> dict | None:
    try:
        if layer is not None:
            return await asyncio.wait_for(layer.receive(channel), timeout=wait_s)
        return await asyncio.wait_for(queue.get(), timeout=wait_s)
    except TimeoutError:
        return None


async def _pending_events(layer, channel, queue: asyncio.Queue) -> list[dict]:
    """Events already sent and not yet read (a channel layer gets a moment to hand them over)."""
    events = []
    if layer is None:
        while not queue.empty():
            events.append(queue.get_nowait())
        return events
    while (event := await _next_event(layer, channel, queue, PENDING_EVENT_WAIT_S)) is not None:
        events.append(event)
    return events


def _run_reload(tenant: Tenant, run_id: str) -> KernelRun:
    close_old_connections()
    try:
        return selectors.kernel_run_get(tenant=tenant, run_id=run_id)
    finally:
        close_old_connections()


def job_wait_sync(*, tenant: Tenant, run_id: str, timeout_s: float | None = None) -> KernelRun:
    """job_wait for synchronous callers (the no-JavaScript dashboard form)."""
    return async_to_sync(job_wait)(tenant=tenant, run_id=run_id, timeout_s=timeout_s)


def job_outcome(run: KernelRun) -> dict[str, Any]:
    """The finished run's result as the edges return it (report + run_id), or the error it
    ended with raised as the same ApplicationError the service raised on the worker."""
    if run.status == "interrupted":
        raise ServiceUnavailable(
            run.error or "the job was interrupted; submit it again",
            extra={"run_id": str(run.id), "job_status": "interrupted"},
        )
    if run.status == "failed":
        raise job_failure_error(run)
    return {**(run.report or {}), "run_id": str(run.id)}


def job_failure_error(run: KernelRun) -> ApplicationError:
    failure = (run.progress or {}).get("failure") or {}
    extra = dict(failure.get("extra") or {})
    if not extra and isinstance(run.report, dict) and "diagnostics" in run.report:
        extra["diagnostics"] = run.report.get("diagnostics") or []
    extra["run_id"] = str(run.id)
    status = int(failure.get("status") or 400)
    message = run.error or "the job failed"
    if status == 429:
        return RateLimited(
            message, retry_after=int(extra.pop("retry_after", 30) or 30), extra=extra
        )
    error = ApplicationError(message, extra=extra)
    error.status = status
    error.code = str(failure.get("code") or ValidationFailed.code)
    return error


# --------------------------------------------------------------------------------------------
# Start-up


def job_sweep_at_startup() -> dict[str, int]:
    """Runs left ``queued``/``running`` by a process of this host that died are interrupted.

    Called once when a web process (in-process pool) or a Celery worker starts.
    """
    from kernels.engine import sandbox

    swept = services.kernel_runs_interrupt_dead()
    if swept:
        logger.warning("interrupted runs left by stopped processes: %s", swept)
    # The sandbox work directories of those runs (the tenant's source, build outputs).
    sandbox.sweep_stale_workdirs()
    return swept
