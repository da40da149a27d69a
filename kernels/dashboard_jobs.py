"""The dashboard's view of the job service: htmx posts a translation and polls its run.

A job IS its KernelRun (kernels.jobs): ``job_start`` submits one and ``job_get`` reads it back
as a :class:`DashboardJob` for the progress card (stage stepper, percentage, result). Any web
process can answer a poll, and a job survives the process that accepted it (or ends
``interrupted``), so the card never points at a run that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from fortranspire_site.errors import ApplicationError, NotFound, ValidationFailed
from kernels import jobs, selectors
from kernels.jobs import STAGES
from kernels.models import KernelRun

JOB_KINDS = ("translate", "profile")
# kernel_profile reports parse, analyse (the cost model) and, when measuring, profile.
PROFILE_STAGES = ("parse", "analyse", "profile")


@dataclass
class DashboardJob:
    """What the progress and result cards show about one run."""

    run: KernelRun

    @property
    def id(self) -> str:
        return self.run.id.hex

    @property
    def run_id(self) -> str:
        return str(self.run.id)

    @property
    def source(self) -> str:
        return self.run.source

    @property
    def target(self) -> str:
        return self.run.target

    @property
    def filename(self) -> str:
        return (self.run.params or {}).get("filename", "input.f90")

    @property
    def verify(self) -> bool:
        return bool((self.run.params or {}).get("verify", True))

    @property
    def kind(self) -> str:
        return self.run.kind

    @property
    def measure(self) -> bool:
        return bool((self.run.params or {}).get("measure", False))

    @property
    def state(self) -> str:
        """queued | running | done | error"""
        if not self.run.finished:
            return self.run.status
        return "done" if self.run.status not in ("failed", "interrupted") else "error"

    @property
    def finished(self) -> bool:
        return self.run.finished

    @property
    def stage(self) -> str:
        return self.run.stage

    @property
    def done(self) -> int:
        return int((self.run.progress or {}).get("done") or 0)

    @property
    def total(self) -> int:
        return int((self.run.progress or {}).get("total") or 0)

    @property
    def message(self) -> str:
        if self.state == "error":
            return self.run.error
        return str((self.run.progress or {}).get("message") or "")

    @property
    def stages_seen(self) -> list[str]:
        return list((self.run.progress or {}).get("stages") or [])

    @property
    def elapsed_s(self) -> float:
        end = self.run.finished_at or timezone.now()
        return max(0.0, (end - self.run.created_at).total_seconds())

    @property
    def report(self) -> dict[str, Any] | None:
        return self.run.report if self.state == "done" else None

    @property
    def error(self) -> dict[str, Any] | None:
        if self.state != "error":
            return None
        failure = jobs.job_failure_error(self.run)
        return {
            "message": failure.message,
            "status": failure.status,
            "diagnostics": list(failure.extra.get("diagnostics") or []),
        }

    def steps(self) -> list[dict[str, str]]:
        """The engine stages with 'done' / 'current' / 'pending' / 'skipped' for the stepper."""
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
        """A rough overall percentage: each stage is a share, split by its done/total."""
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
    """Submit a translation or profile for a member (the rate limit and the tenant's job cap
    apply exactly as on REST and MCP)."""
    from kernels.limits import rate_limit_check

    if kind not in JOB_KINDS:
        raise ValueError(f"kind must be one of {JOB_KINDS}")
    if files is not None and kind == "profile":
        raise ValidationFailed("profile one file at a time; translate takes several")
    rate_limit_check(key=f"user:{tenant.schema_name}:{user.pk}")
    if kind == "profile":
        run = jobs.job_profile_submit(
            tenant=tenant,
            source=source,
            channel="dashboard",
            tool="dashboard-profile",
            sizes=sizes,
            measure=measure,
            user=user,
        )
    else:
        run = jobs.job_translate_submit(
            tenant=tenant,
            source=source,
            channel="dashboard",
            tool="dashboard",
            target=target,
            kernel=kernel,
            verify=verify,
            sizes=sizes,
            allow_llm=allow_llm,
            filename=filename,
            user=user,
            files=files,
        )
    return DashboardJob(run)


def job_get(*, job_id: str, tenant, user) -> DashboardJob | None:
    """The job if this user started it on this tenant; None otherwise (no hint it exists)."""
    try:
        run = selectors.kernel_run_get(tenant=tenant, run_id=job_id)
    except (NotFound, ApplicationError):
        return None
    if run.user_id != user.pk or not run.kind:
        return None
    return DashboardJob(run)
