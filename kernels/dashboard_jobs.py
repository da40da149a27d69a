"""Dashboard translation jobs: run kernel_translate in a worker thread and let htmx poll progress.

A translation with verification takes seconds (gfortran compile + two runs), so the dashboard
posts the form, gets a job id back at once and polls ``/jobs/<id>/`` to show the engine's stage
(parse / analyse / generate / verify). The job itself only calls ``kernels.services``, which
records the KernelRun exactly as the synchronous path does.

The registry lives in this process's memory: a job is polled on the server that started it. With
several uvicorn workers behind a balancer the no-JavaScript form (synchronous) still works and a
poll that lands on another worker says the job is unknown and points to the run history.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connections

from fortranspire_site.errors import ApplicationError, RateLimited

STAGES = ("parse", "analyse", "generate", "verify")
JOB_KINDS = ("translate", "profile")
# kernel_profile reports parse, analyse (the cost model) and, when measuring, profile.
PROFILE_STAGES = ("parse", "analyse", "profile")
# Finished jobs are kept this long so a slow poll still finds its result; the run itself is in
# the history forever (or until the tenant's retention purge).
KEEP_FINISHED_S = 15 * 60
# Each job holds its source and report (up to a few MB): bound how many finished ones stay.
MAX_KEPT_FINISHED = 200
# A member cannot queue more than this many unfinished jobs: each one may compile and run
# Fortran for up to the sandbox's time limit, and the worker pool is shared by every tenant.
MAX_PENDING_PER_USER = 2

# Tests set this to run jobs in the request's own thread (and its rolled-back transaction).
RUN_INLINE = False


@dataclass
class DashboardJob:
    id: str
    tenant_schema: str
    user_id: int
    target: str
    filename: str
    source: str
    verify: bool
    kind: str = "translate"
    measure: bool = False
    state: str = "queued"  # queued | running | done | error
    stage: str = ""
    done: int = 0
    total: int = 0
    message: str = "waiting for a worker"
    stages_seen: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    run_id: str | None = None
    report: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # {"message", "status", "diagnostics": [...]}

    @property
    def finished(self) -> bool:
        return self.state in ("done", "error")

    @property
    def elapsed_s(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return max(0.0, end - self.created_at)

    def steps(self) -> list[dict[str, str]]:
        """The four engine stages with 'done' / 'current' / 'pending' / 'skipped' for the stepper."""
        names = PROFILE_STAGES if self.kind == "profile" else STAGES
        current = names.index(self.stage) if self.stage in names else -1
        steps = []
        for index, name in enumerate(names):
            if (name == "verify" and not self.verify) or (name == "profile" and not self.measure):
                state = "skipped"
            elif self.finished or index < current:
                state = "done"
            elif index == current:
                state = "current"
            else:
                state = "pending"
            steps.append({"name": name, "state": state})
        return steps

    def percent(self) -> int:
        """A rough overall percentage: each stage is a quarter, split by its done/total."""
        if self.finished:
            return 100
        names = PROFILE_STAGES if self.kind == "profile" else STAGES
        if self.stage not in names:
            return 0
        optional = self.measure if self.kind == "profile" else self.verify
        stages = names if optional else names[:-1]
        index = stages.index(self.stage) if self.stage in stages else len(stages) - 1
        part = self.done / self.total if self.total else 0.0
        return int(100 * (index + min(1.0, part)) / len(stages))


_lock = threading.Lock()
_jobs: dict[str, DashboardJob] = {}
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            workers = int(getattr(settings, "FORTRANSPIRE_DASHBOARD_WORKERS", 2))
            _pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="dash-job")
        return _pool


def _prune(now: float) -> None:
    finished = sorted(
        (j for j in _jobs.values() if j.finished_at is not None), key=lambda j: j.finished_at
    )
    expired = [j for j in finished if now - j.finished_at > KEEP_FINISHED_S]
    overflow = finished[: max(0, len(finished) - MAX_KEPT_FINISHED)]
    for job in (*expired, *overflow):
        _jobs.pop(job.id, None)


def job_start(
    *,
    tenant,
    user,
    source: str = "",
    target: str = "cpu",
    kernel: str | None = None,
    verify: bool = True,
    sizes: dict[str, int] | None = None,
    filename: str = "input.f90",
    allow_llm: bool = False,
    files: dict[str, str] | None = None,
    kind: str = "translate",
    measure: bool = False,
) -> DashboardJob:
    """Register a job and hand it to the worker pool (or run it now when RUN_INLINE).

    ``kind`` is ``translate`` (kernel_translate) or ``profile`` (kernel_profile, with
    ``measure``); ``files`` (several sources forming one project) is passed on only when given.
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"kind must be one of {JOB_KINDS}")
    now = time.monotonic()
    with _lock:
        _prune(now)
        pending = sum(
            1
            for j in _jobs.values()
            if j.user_id == user.pk and j.tenant_schema == tenant.schema_name and not j.finished
        )
        if pending >= MAX_PENDING_PER_USER:
            raise RateLimited(
                f"you already have {pending} translations running; wait for one to finish",
                retry_after=5,
            )
        job = DashboardJob(
            id=uuid.uuid4().hex,
            tenant_schema=tenant.schema_name,
            user_id=user.pk,
            target=target,
            filename=filename,
            source=source,
            verify=verify,
            kind=kind,
            measure=measure,
        )
        _jobs[job.id] = job
    params = {
        "tenant": tenant,
        "user": user,
        "source": source,
        "target": target,
        "kernel": kernel,
        "verify": verify,
        "sizes": sizes,
        "filename": filename,
        "allow_llm": allow_llm,
        "measure": measure,
    }
    if files is not None:
        params["files"] = files
    if RUN_INLINE:
        job_run(job, params)
    else:
        _executor().submit(_run_in_worker, job, params)
    return job


def job_get(*, job_id: str, tenant, user) -> DashboardJob | None:
    """The job if it belongs to this user on this tenant; None otherwise (no hint it exists)."""
    with _lock:
        job = _jobs.get(str(job_id))
    if job is None or job.tenant_schema != tenant.schema_name or job.user_id != user.pk:
        return None
    return job


def _run_in_worker(job: DashboardJob, params: dict[str, Any]) -> None:
    try:
        job_run(job, params)
    finally:
        # Pool threads live on: give their database connection back after each job.
        connections.close_all()


def job_run(job: DashboardJob, params: dict[str, Any]) -> None:
    """Run the translation for ``job``, recording progress and the outcome on it."""
    from kernels import services

    def progress(stage: str, done: int, total: int, message: str) -> None:
        with _lock:
            job.state = "running"
            job.stage, job.done, job.total, job.message = stage, done, total, message
            if stage not in job.stages_seen:
                job.stages_seen.append(stage)

    with _lock:
        job.state = "running"
        job.message = "starting"
    try:
        if job.kind == "profile":
            run, report = services.kernel_profile(
                tenant=params["tenant"],
                source=params["source"],
                channel="dashboard",
                sizes=params["sizes"],
                measure=params["measure"],
                user=params["user"],
                progress=progress,
                tool="dashboard-profile",
            )
        else:
            sources = {"files": params["files"]} if "files" in params else {}
            run, result = services.kernel_translate(
                tenant=params["tenant"],
                source=params["source"],
                target=params["target"],
                channel="dashboard",
                kernel=params["kernel"],
                verify=params["verify"],
                sizes=params["sizes"],
                user=params["user"],
                tool="dashboard",
                progress=progress,
                allow_llm=params["allow_llm"],
                filename=params["filename"],
                **sources,
            )
            report = result.to_dict()
    except ApplicationError as exc:
        outcome = {
            "state": "error",
            "run_id": exc.extra.get("run_id"),
            "error": {
                "message": exc.message,
                "status": exc.status,
                "diagnostics": list(exc.extra.get("diagnostics") or []),
            },
        }
    except Exception:  # noqa: BLE001 - a bug must reach the user as a message, not a silent hang
        import logging

        logging.getLogger(__name__).exception("dashboard job %s crashed", job.id)
        outcome = {
            "state": "error",
            "run_id": None,
            "error": {
                "message": "internal error while translating; the operators have been told",
                "status": 500,
                "diagnostics": [],
            },
        }
    else:
        outcome = {"state": "done", "run_id": str(run.id), "report": report}
    with _lock:
        job.run_id = outcome.get("run_id")
        job.report = outcome.get("report")
        job.error = outcome.get("error")
        job.message = "finished" if outcome["state"] == "done" else job.error["message"]
        job.finished_at = time.monotonic()
        job.state = outcome["state"]


def job_forget_all() -> None:
    """Drop every job (tests)."""
    with _lock:
        _jobs.clear()
