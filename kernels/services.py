"""The only writer of KernelRun: run the engine for a tenant and record what happened.

Each function enters the tenant's schema itself (``tenant_context``) so it is safe to call from
any thread, e.g. an MCP tool via ``sync_to_async``; nothing here relies on a search_path that a
middleware set earlier on a shared connection.

A run's life: ``kernel_run_accept`` (queued) -> ``kernel_run_claim`` (running, on a worker) ->
``kernel_run_progress`` ... -> ``kernel_run_finish`` (an outcome, or ``interrupted``). The job
service (kernels.jobs) drives it; ``kernel_translate`` / ``kernel_profile`` run one job body
and record it through :func:`engine_run_recorded`, the one place that turns engine outcomes
into a finished run (or an error carrying ``run_id``).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import tenant_context

from fortranspire_site.errors import ApplicationError, ServiceUnavailable, ValidationFailed
from kernels import inputs
from kernels.engine import llm
from kernels.engine import report as engine_report
from kernels.models import KernelRun
from tenants.llm_credentials import llm_config_for
from tenants.models import ApiKey, Tenant

logger = logging.getLogger(__name__)

CHANNELS = tuple(c for c, _ in KernelRun.CHANNELS)
STATUSES = tuple(s for s, _ in KernelRun.STATUSES)
T = TypeVar("T")
# Progress is written to the row at most this often (stage changes always are).
PROGRESS_WRITE_INTERVAL_S = 0.5


def this_process() -> str:
    """``host:pid``: who accepted or runs a job, so a sweep can tell whether it is still alive."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _check_tenant(tenant: Tenant) -> None:
    if tenant is None or not tenant.pk or tenant.schema_name == "public":
        raise ValidationFailed("kernel runs belong to a tenant")


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise ValidationFailed(f"channel must be one of {', '.join(CHANNELS)}")


def source_check(source: Any) -> str:
    return inputs.source_check(source, max_bytes=settings.FORTRANSPIRE_MAX_SOURCE_BYTES)


def _caller_fields(api_key: ApiKey | None, user: AbstractBaseUser | None) -> dict:
    fields: dict[str, Any] = {}
    if api_key is not None:
        fields["api_key_id"] = api_key.pk
        fields["api_key_prefix"] = api_key.prefix or ""
    if user is not None and getattr(user, "is_authenticated", False):
        fields["user_id"] = user.pk
        fields["username"] = user.get_username()[:150]
    return fields


def _sha256(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest() if source else ""


def kernel_run_record(
    *,
    tenant: Tenant,
    channel: str,
    status: str,
    source: str = "",
    target: str = "",
    tool: str = "",
    kernel_names: list[str] | None = None,
    report: dict | None = None,
    generated_code: str = "",
    duration_ms: int = 0,
    llm_calls: int = 0,
    llm_tokens: int = 0,
    error: str = "",
    cache_key: str = "",
    api_key: ApiKey | None = None,
    user: AbstractBaseUser | None = None,
) -> KernelRun:
    """Store one finished run (a refusal, a quick read) in the tenant's schema."""
    _check_tenant(tenant)
    _check_channel(channel)
    if status not in STATUSES:
        raise ValidationFailed(f"unknown run status {status!r}")
    now = timezone.now()
    with tenant_context(tenant), transaction.atomic():
        return KernelRun.objects.create(
            channel=channel,
            tool=tool[:64],
            # A refused source may hold what PostgreSQL cannot store (NUL, lone surrogates).
            source=_storable(source),
            source_sha256=_sha256(source),
            target=target,
            kernel_names=list(kernel_names or []),
            status=status,
            report=report or {},
            generated_code=generated_code,
            duration_ms=max(0, int(duration_ms)),
            llm_calls=max(0, int(llm_calls)),
            llm_tokens=max(0, int(llm_tokens)),
            error=error,
            finished_at=now if status not in KernelRun.JOB_STATES else None,
            cache_key=cache_key,
            **_caller_fields(api_key, user),
        )


def _storable(text: str) -> str:
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def kernel_run_accept(
    *,
    tenant: Tenant,
    kind: str,
    channel: str,
    tool: str,
    source: str,
    params: dict[str, Any],
    target: str = "",
    api_key: ApiKey | None = None,
    user: AbstractBaseUser | None = None,
) -> KernelRun:
    """The ``queued`` row of a job accepted for a worker: it exists before any work starts."""
    _check_tenant(tenant)
    _check_channel(channel)
    if kind not in dict(KernelRun.KINDS):
        raise ValidationFailed(f"unknown job kind {kind!r}")
    with tenant_context(tenant), transaction.atomic():
        return KernelRun.objects.create(
            kind=kind,
            channel=channel,
            tool=tool[:64],
            source=source,
            source_sha256=_sha256(source),
            target=target,
            status="queued",
            params=params,
            worker=this_process(),
            progress={"message": "waiting for a worker"},
            **_caller_fields(api_key, user),
        )


def kernel_run_claim(
    *, tenant: Tenant, run_id: str, worker: str, stale_after_s: float, max_attempts: int
) -> tuple[str, KernelRun | None]:
    """Move a queued run to ``running`` on ``worker``; returns (decision, run).

    decision: ``run`` (this worker runs it), ``done`` (already finished: a duplicate delivery),
    ``busy`` (another live worker runs it: try again later) or ``interrupted`` (it was lost on
    a worker too many times and is now finished as interrupted).
    """
    now = timezone.now()
    with tenant_context(tenant), transaction.atomic():
        run = KernelRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return "done", None
        if run.finished and run.status != "interrupted":
            return "done", run
        if run.status == "interrupted" and run.attempts >= max_attempts:
            return "done", run
        if run.status == "running" and run.worker != worker:
            fresh = run.heartbeat_at and (now - run.heartbeat_at).total_seconds() < stale_after_s
            if fresh and not _process_is_dead(run.worker):
                return "busy", run
        if run.attempts >= max_attempts:
            run.status = "interrupted"
            run.error = (
                f"the worker running this job stopped {run.attempts} time(s) "
                f"(last: {run.worker or 'unknown'}); not retried again"
            )
            run.finished_at = now
            run.save(update_fields=["status", "error", "finished_at"])
            return "interrupted", run
        run.status = "running"
        run.worker = worker
        run.attempts += 1
        run.started_at = run.started_at or now
        run.heartbeat_at = now
        run.error = ""
        run.progress = {**(run.progress or {}), "message": "starting"}
        run.save(
            update_fields=[
                "status",
                "worker",
                "attempts",
                "started_at",
                "heartbeat_at",
                "error",
                "progress",
            ]
        )
        return "run", run


def _process_is_dead(worker: str) -> bool:
    """True only when ``worker`` names a process on this host that no longer exists."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def kernel_run_progress(
    *, tenant: Tenant, run_id: str, stage: str, done: int, total: int, message: str
) -> None:
    """Store where a running job is; also its heartbeat."""
    with tenant_context(tenant):
        run = KernelRun.objects.filter(pk=run_id).only("progress").first()
        if run is None:
            return
        stages = list((run.progress or {}).get("stages") or [])
        if stage and stage not in stages:
            stages.append(stage)
        KernelRun.objects.filter(pk=run_id, status="running").update(
            stage=stage[:32],
            progress={"done": done, "total": total, "message": message[:300], "stages": stages},
            heartbeat_at=timezone.now(),
        )


def kernel_run_heartbeat(*, tenant: Tenant, run_id: str) -> None:
    with tenant_context(tenant):
        KernelRun.objects.filter(pk=run_id, status="running").update(heartbeat_at=timezone.now())


def kernel_run_finish(*, tenant: Tenant, run: KernelRun, status: str, **fields: Any) -> KernelRun:
    """Write a run's outcome (the fields of kernel_run_record) and mark it finished."""
    if status not in STATUSES or status in KernelRun.JOB_STATES:
        raise ValidationFailed(f"{status!r} is not a final run status")
    run.status = status
    run.finished_at = timezone.now()
    for name, value in fields.items():
        setattr(run, name, value)
    run.duration_ms = max(0, int(run.duration_ms))
    if run.started_at and not fields.get("duration_ms"):
        run.duration_ms = int((run.finished_at - run.started_at).total_seconds() * 1000)
    with tenant_context(tenant), transaction.atomic():
        # Progress was written by kernel_run_progress meanwhile; keep it, not our stale copy.
        stored = KernelRun.objects.filter(pk=run.pk).values_list("progress", "stage").first()
        if stored is not None:
            run.progress, run.stage = dict(stored[0] or {}), stored[1]
        run.progress["message"] = "finished" if status != "interrupted" else "interrupted"
        run.save()
    return run


def kernel_runs_interrupt_dead(*, tenants: list[Tenant] | None = None) -> dict[str, int]:
    """Finish as ``interrupted`` every unfinished run whose process on this host is gone.

    Called at start-up: a server killed mid-job leaves its runs ``running`` (in-process pool)
    or ``queued`` forever otherwise. Runs held by live processes or other hosts are left alone.
    """
    from tenants.selectors import tenant_list

    swept: dict[str, int] = {}
    for tenant in tenants if tenants is not None else tenant_list():
        count = 0
        with tenant_context(tenant):
            candidates = list(
                KernelRun.objects.filter(status__in=KernelRun.JOB_STATES).only(
                    "id", "worker", "status"
                )
            )
        for run in candidates:
            if not _process_is_dead(run.worker):
                continue
            with tenant_context(tenant), transaction.atomic():
                count += KernelRun.objects.filter(
                    pk=run.pk, status=run.status, worker=run.worker
                ).update(
                    status="interrupted",
                    finished_at=timezone.now(),
                    error=f"interrupted: the process running it ({run.worker}) stopped",
                )
        if count:
            swept[tenant.schema_name] = count
    return swept


def overall_status(statuses: list[str]) -> str:
    """The worst kernel status names the run (failed > mismatch > unsupported > ...)."""
    for status in ("failed", "mismatch", "unsupported", "inconclusive", "translated", "verified"):
        if status in statuses:
            return status
    return "failed"


def llm_fallback_for(tenant: Tenant) -> llm.LlmFallback | None:
    """The engine's ``llm_fallback`` for this tenant, or None (no key, or fallback switched off)."""
    config = llm_config_for(tenant=tenant, purpose="fallback")
    if config is None:
        return None
    return llm.make_llm_fallback(config)


def _disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def engine_run_recorded(
    *,
    tenant: Tenant,
    run: KernelRun,
    call: Callable[[], T],
    outcome: Callable[[T], dict[str, Any]],
) -> T:
    """Run the engine for ``run``, record the outcome on it, raise with ``run_id`` on failure.

    ``outcome(value)`` gives the finished run's fields (status, report, ...). Engine errors
    become ValidationFailed with their diagnostics; a full disk a ServiceUnavailable that says
    so; anything else a failed run and the error re-raised (a bug must not lose the run).
    """
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        value = call()
    except engine_report.EngineError as exc:
        kernel_run_finish(
            tenant=tenant,
            run=run,
            status="failed",
            report=exc.to_dict(),
            error=exc.message,
            duration_ms=elapsed(),
        )
        raise ValidationFailed(
            exc.message,
            extra={"diagnostics": [d.to_dict() for d in exc.diagnostics], "run_id": str(run.id)},
        ) from exc
    except ApplicationError as exc:
        if exc.extra.get("run_id") != str(run.id):  # else ``call`` recorded it already
            kernel_run_finish(
                tenant=tenant, run=run, status="failed", error=exc.message, duration_ms=elapsed()
            )
            exc.extra["run_id"] = str(run.id)
        raise
    except Exception as exc:
        if _disk_full(exc):
            message = "the server ran out of disk space while running this job; retry later"
            kernel_run_finish(
                tenant=tenant, run=run, status="failed", error=message, duration_ms=elapsed()
            )
            raise ServiceUnavailable(message, extra={"run_id": str(run.id)}) from exc
        logger.exception("run %s crashed", run.id)
        kernel_run_finish(
            tenant=tenant,
            run=run,
            status="failed",
            error=f"internal error: {type(exc).__name__}",
            duration_ms=elapsed(),
        )
        raise
    kernel_run_finish(tenant=tenant, run=run, duration_ms=elapsed(), **outcome(value))
    return value


def kernel_run_start_inline(
    *,
    tenant: Tenant,
    run: KernelRun | None,
    kind: str,
    channel: str,
    tool: str,
    source: str,
    target: str,
    params: dict,
    api_key: ApiKey | None,
    user: AbstractBaseUser | None,
) -> KernelRun:
    """The run to record into: the job's own (from a worker), or a new one for inline calls."""
    if run is not None:
        return run
    run = kernel_run_accept(
        tenant=tenant,
        kind=kind,
        channel=channel,
        tool=tool,
        source=source,
        target=target,
        params=params,
        api_key=api_key,
        user=user,
    )
    with tenant_context(tenant):
        KernelRun.objects.filter(pk=run.pk).update(
            status="running", started_at=timezone.now(), attempts=1
        )
    run.status = "running"
    return run


def project_files_check(files: Any) -> dict[str, str]:
    """``{name: Fortran text}`` of a multi-file project, within the same byte limit as a source."""
    if not isinstance(files, dict) or not files:
        raise ValidationFailed("files must be a non-empty object of NAME: Fortran text")
    for name, text in files.items():
        if not isinstance(name, str) or not name.strip() or not isinstance(text, str):
            raise ValidationFailed("files must map file names to Fortran text")
    source_check(project_source_text(files))  # the byte limit, on all the files together
    return dict(files)


def project_source_text(files: dict[str, str]) -> str:
    """The files of a project as one text for the run record (each under a header comment)."""
    return "\n".join(f"! ---- {name} ----\n{text}" for name, text in files.items())


def translate_params(
    *,
    target: str,
    kernel: str | None = None,
    verify: bool = True,
    sizes: Any = None,
    seed: int = 0,
    allow_llm: bool = False,
    filename: str = "input.f90",
    files: Any = None,
    include_dirs: Any = None,
    defines: Any = None,
) -> dict[str, Any]:
    """The checked, JSON-ready options of a translation (what a worker receives).

    ``files`` (``{name: text}``) makes it a multi-file project, with ``include_dirs`` (folders
    among the names) and ``defines`` (``{NAME: value or None}``) for the preprocessor.
    """
    if kernel is not None and (not isinstance(kernel, str) or len(kernel) > 63):
        raise ValidationFailed("kernel must be a subroutine name")
    if include_dirs is not None and (
        not isinstance(include_dirs, list) or not all(isinstance(d, str) for d in include_dirs)
    ):
        raise ValidationFailed("include_dirs must be a list of folder names")
    if defines is not None and (
        not isinstance(defines, dict)
        or not all(isinstance(v, str | None) for v in defines.values())
    ):
        raise ValidationFailed("defines must map macro names to a value or null")
    return {
        "files": project_files_check(files) if files is not None else None,
        "include_dirs": list(include_dirs or []),
        "defines": dict(defines or {}),
        "target": inputs.target_check(target),
        "kernel": kernel or None,
        "verify": bool(verify),
        "sizes": inputs.sizes_parse(sizes),
        "seed": inputs.seed_check(seed),
        "allow_llm": bool(allow_llm),
        "filename": str(filename or "input.f90")[:100],
    }


def kernel_translate(
    *,
    tenant: Tenant,
    source: str,
    target: str,
    channel: str,
    kernel: str | None = None,
    verify: bool = True,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    api_key: ApiKey | None = None,
    user: AbstractBaseUser | None = None,
    tool: str = "",
    progress=None,
    allow_llm: bool = False,
    filename: str = "input.f90",
    run: KernelRun | None = None,
    files: dict[str, str] | None = None,
    include_dirs: list[str] | None = None,
    defines: dict[str, str | None] | None = None,
):
    """Translate (and verify) ``source`` for ``tenant``; returns (KernelRun, TranslationResult).

    ``files`` (``{name: text}``) instead of ``source`` translates a multi-file project (its text
    for the record is :func:`project_source_text`), with ``include_dirs`` and ``defines``.

    ``run``: the job's row when a worker runs it; without it, one is created (inline callers
    such as the agent's tools). Engine errors (syntax, forbidden statements, sandbox) are
    recorded as a failed run and raised as ValidationFailed carrying diagnostics and run id.
    """
    _check_tenant(tenant)
    _check_channel(channel)
    if files is not None:
        source = project_source_text(files)
    source = source_check(source)
    params = translate_params(
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
    from kernels.result_cache import cached_or_run

    run = kernel_run_start_inline(
        tenant=tenant,
        run=run,
        kind="translate",
        channel=channel,
        tool=tool,
        source=source,
        target=params["target"],
        params=params,
        api_key=api_key,
        user=user,
    )

    def call():
        # The result cache may answer from an earlier verified run of this tenant.
        return cached_or_run(
            tenant=tenant,
            source=source,
            filename=params["filename"],
            target=params["target"],
            kernel=params["kernel"],
            verify=params["verify"],
            sizes=params["sizes"],
            seed=params["seed"],
            progress=progress,
            llm_fallback=llm_fallback_for(tenant) if params["allow_llm"] else None,
            files=params["files"],
            include_dirs=params["include_dirs"],
            defines=params["defines"],
        )

    def outcome(value) -> dict[str, Any]:
        result, cache_key = value
        kernels = result.kernels
        return {
            "cache_key": cache_key,
            "status": overall_status([k.status for k in kernels]) if kernels else "unsupported",
            "kernel_names": [k.name for k in kernels],
            "report": result.to_dict(),
            "generated_code": "\n\n".join(
                f"# ---- {k.name} ----\n{k.code}" for k in kernels if k.code
            ),
            "llm_calls": sum(k.llm_calls for k in kernels),
            "llm_tokens": sum(getattr(k, "llm_tokens", 0) for k in kernels),
            "error": "" if kernels else "no kernel found in the source",
        }

    result, _cache_key = engine_run_recorded(tenant=tenant, run=run, call=call, outcome=outcome)
    return run, result


def profile_params(*, sizes: Any = None, measure: bool = False) -> dict[str, Any]:
    return {"sizes": inputs.sizes_parse(sizes), "measure": bool(measure)}


def kernel_profile(
    *,
    tenant: Tenant,
    source: str,
    channel: str,
    sizes: dict[str, int] | None = None,
    measure: bool = False,
    api_key: ApiKey | None = None,
    user: AbstractBaseUser | None = None,
    progress=None,
    tool: str = "",
    run: KernelRun | None = None,
):
    """Rank the kernels in ``source`` by cost; returns (KernelRun, profile dict)."""
    _check_tenant(tenant)
    _check_channel(channel)
    source = source_check(source)
    params = profile_params(sizes=sizes, measure=measure)
    from kernels.engine.profile import profile_source

    run = kernel_run_start_inline(
        tenant=tenant,
        run=run,
        kind="profile",
        channel=channel,
        tool=tool or "profile",
        source=source,
        target="",
        params=params,
        api_key=api_key,
        user=user,
    )

    def call() -> dict:
        profile = profile_source(
            source, sizes=params["sizes"], measure=params["measure"], progress=progress
        )
        return profile.to_dict() if hasattr(profile, "to_dict") else dict(profile)

    def outcome(data: dict) -> dict[str, Any]:
        names = [k.get("name", "") for k in data.get("kernels", []) if isinstance(k, dict)]
        return {"status": "ok", "kernel_names": names, "report": data}

    data = engine_run_recorded(tenant=tenant, run=run, call=call, outcome=outcome)
    return run, data


def kernel_run_purge(
    *, now: datetime | None = None, tenant: Tenant | None = None
) -> dict[str, int]:
    """Delete runs older than each tenant's retention_days; returns {slug: deleted}."""
    from tenants.selectors import tenant_list

    now = now or timezone.now()
    tenants = [tenant] if tenant is not None else tenant_list()
    deleted: dict[str, int] = {}
    for t in tenants:
        cutoff = now - timedelta(days=t.retention_days)
        with tenant_context(t), transaction.atomic():
            count, _ = KernelRun.objects.filter(created_at__lt=cutoff).delete()
        deleted[t.schema_name] = count
    return deleted


def kernel_run_delete_all(*, tenant: Tenant, actor: AbstractBaseUser | str | None = None) -> int:
    """Really delete the tenant's whole history (owner-only at the edges)."""
    from tenants.services import audit

    _check_tenant(tenant)
    with tenant_context(tenant), transaction.atomic():
        count, _ = KernelRun.objects.all().delete()
    audit(
        action="kernel_runs.delete_all",
        target=tenant.schema_name,
        tenant=tenant,
        actor=actor,
        details={"deleted": count},
    )
    return count
