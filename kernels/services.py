"""The only writer of KernelRun: run the engine for a tenant and record what happened.

Each function enters the tenant's schema itself (``tenant_context``) so it is safe to call from
any thread, e.g. an MCP tool via ``sync_to_async``; nothing here relies on a search_path that a
middleware set earlier on a shared connection.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import tenant_context

from fortranspire_site.errors import PayloadTooLarge, ValidationFailed
from kernels.models import KernelRun
from tenants.models import ApiKey, Tenant

logger = logging.getLogger(__name__)

CHANNELS = tuple(c for c, _ in KernelRun.CHANNELS)
TARGETS = ("cpu", "gpu")
MAX_SIZE_VALUE = 1 << 24


def _check_tenant(tenant: Tenant) -> None:
    if tenant is None or not tenant.pk or tenant.schema_name == "public":
        raise ValidationFailed("kernel runs belong to a tenant")


def _check_source(source: Any) -> str:
    if not isinstance(source, str) or not source.strip():
        raise ValidationFailed("source must be non-empty Fortran text")
    limit = getattr(settings, "FORTRANSPIRE_MAX_SOURCE_BYTES", 1_048_576)
    if len(source.encode("utf-8", errors="replace")) > limit:
        raise PayloadTooLarge(f"source is larger than {limit} bytes")
    return source


def _check_files(files: Any) -> dict[str, str]:
    """``{name: Fortran text}`` of a multi-file project, within the same byte limit as a source."""
    if not isinstance(files, dict) or not files:
        raise ValidationFailed("files must be a non-empty object of NAME: Fortran text")
    for name, text in files.items():
        if not isinstance(name, str) or not name.strip() or not isinstance(text, str):
            raise ValidationFailed("files must map file names to Fortran text")
    limit = getattr(settings, "FORTRANSPIRE_MAX_SOURCE_BYTES", 1_048_576)
    if sum(len(t.encode("utf-8", errors="replace")) for t in files.values()) > limit:
        raise PayloadTooLarge(f"the files are larger than {limit} bytes together")
    return dict(files)


def project_source_text(files: dict[str, str]) -> str:
    """The files of a project as one text for the run record (each under a header comment)."""
    return "\n".join(f"! ---- {name} ----\n{text}" for name, text in files.items())


def _check_sizes(sizes: Any) -> dict[str, int] | None:
    if sizes is None:
        return None
    if not isinstance(sizes, dict):
        raise ValidationFailed("sizes must be an object of NAME: positive integer")
    cleaned = {}
    for name, value in sizes.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, int):
            raise ValidationFailed(f"size {name!r} must be an integer")
        if not 0 < value <= MAX_SIZE_VALUE:
            raise ValidationFailed(f"size {name}={value} is out of range (1..{MAX_SIZE_VALUE})")
        cleaned[name] = value
    return cleaned


def _caller_fields(api_key: ApiKey | None, user: AbstractBaseUser | None) -> dict:
    fields: dict[str, Any] = {}
    if api_key is not None:
        fields["api_key_id"] = api_key.pk
        fields["api_key_prefix"] = api_key.prefix or ""
    if user is not None and getattr(user, "is_authenticated", False):
        fields["user_id"] = user.pk
        fields["username"] = user.get_username()[:150]
    return fields


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
    """Store one run in the tenant's schema, in one transaction."""
    _check_tenant(tenant)
    if channel not in CHANNELS:
        raise ValidationFailed(f"channel must be one of {', '.join(CHANNELS)}")
    if status not in dict(KernelRun.STATUSES):
        raise ValidationFailed(f"unknown run status {status!r}")
    with tenant_context(tenant), transaction.atomic():
        return KernelRun.objects.create(
            channel=channel,
            tool=tool[:64],
            source=source,
            source_sha256=hashlib.sha256(source.encode("utf-8")).hexdigest() if source else "",
            target=target,
            kernel_names=list(kernel_names or []),
            status=status,
            report=report or {},
            generated_code=generated_code,
            duration_ms=max(0, int(duration_ms)),
            llm_calls=max(0, int(llm_calls)),
            llm_tokens=max(0, int(llm_tokens)),
            error=error,
            cache_key=cache_key,
            **_caller_fields(api_key, user),
        )


def overall_status(statuses: list[str]) -> str:
    """The worst kernel status names the run (failed > mismatch > unsupported > inconclusive > translated)."""
    for status in ("failed", "mismatch", "unsupported", "inconclusive", "translated", "verified"):
        if status in statuses:
            return status
    return "failed"


def _llm_fallback_for(tenant: Tenant):
    try:
        from kernels.agent import llm_fallback_for
    except ImportError:
        return None
    return llm_fallback_for(tenant)


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
    files: dict[str, str] | None = None,
    include_dirs: list[str] | None = None,
    defines: dict[str, str | None] | None = None,
):
    """Translate (and verify) ``source`` for ``tenant``; returns (KernelRun, TranslationResult).

    ``files`` (``{name: text}``) instead of ``source`` translates a multi-file project, with
    ``include_dirs`` (directories among the names) and ``defines`` for the preprocessor.
    Engine errors (syntax, forbidden statements, sandbox) are recorded as a failed run and raised
    as ValidationFailed carrying the diagnostics and the run id.
    """
    _check_tenant(tenant)
    if files is not None:
        files = _check_files(files)
        source = project_source_text(files)
    else:
        source = _check_source(source)
    if target not in TARGETS:
        raise ValidationFailed(f"target must be one of {', '.join(TARGETS)}")
    if channel not in CHANNELS:
        raise ValidationFailed(f"channel must be one of {', '.join(CHANNELS)}")
    sizes = _check_sizes(sizes)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValidationFailed("seed must be an integer")

    from kernels.engine import report as engine_report
    from kernels.result_cache import cached_or_run

    llm_fallback = _llm_fallback_for(tenant) if allow_llm else None
    caller = {"api_key": api_key, "user": user}
    started = time.monotonic()
    try:
        result, cache_key = cached_or_run(
            tenant=tenant,
            source=source,
            filename=filename,
            target=target,
            kernel=kernel,
            verify=verify,
            sizes=sizes,
            seed=seed,
            progress=progress,
            llm_fallback=llm_fallback,
            files=files,
            include_dirs=include_dirs,
            defines=defines,
        )
    except engine_report.EngineError as exc:
        duration_ms = int((time.monotonic() - started) * 1000)
        run = kernel_run_record(
            tenant=tenant,
            channel=channel,
            tool=tool,
            status="failed",
            source=source,
            target=target,
            report=exc.to_dict(),
            duration_ms=duration_ms,
            error=exc.message,
            **caller,
        )
        raise ValidationFailed(
            exc.message,
            extra={"diagnostics": [d.to_dict() for d in exc.diagnostics], "run_id": str(run.id)},
        ) from exc
    duration_ms = int((time.monotonic() - started) * 1000)
    kernels = result.kernels
    code = "\n\n".join(f"# ---- {k.name} ----\n{k.code}" for k in kernels if k.code)
    run = kernel_run_record(
        tenant=tenant,
        channel=channel,
        tool=tool,
        status=overall_status([k.status for k in kernels]) if kernels else "unsupported",
        source=source,
        target=target,
        kernel_names=[k.name for k in kernels],
        report=result.to_dict(),
        generated_code=code,
        duration_ms=duration_ms,
        llm_calls=sum(k.llm_calls for k in kernels),
        llm_tokens=sum(getattr(k, "llm_tokens", 0) for k in kernels),
        error="" if kernels else "no kernel found in the source",
        cache_key=cache_key,
        **caller,
    )
    return run, result


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
):
    """Rank the kernels in ``source`` by cost; returns (KernelRun, profile dict)."""
    _check_tenant(tenant)
    source = _check_source(source)
    if channel not in CHANNELS:
        raise ValidationFailed(f"channel must be one of {', '.join(CHANNELS)}")
    sizes = _check_sizes(sizes)

    from kernels.engine import report as engine_report
    from kernels.engine.profile import profile_source

    caller = {"api_key": api_key, "user": user}
    started = time.monotonic()
    try:
        profile = profile_source(source, sizes=sizes, measure=measure, progress=progress)
    except engine_report.EngineError as exc:
        run = kernel_run_record(
            tenant=tenant,
            channel=channel,
            tool=tool or "profile",
            status="failed",
            source=source,
            report=exc.to_dict(),
            error=exc.message,
            duration_ms=int((time.monotonic() - started) * 1000),
            **caller,
        )
        raise ValidationFailed(
            exc.message,
            extra={"diagnostics": [d.to_dict() for d in exc.diagnostics], "run_id": str(run.id)},
        ) from exc
    data = profile.to_dict() if hasattr(profile, "to_dict") else dict(profile)
    names = [k.get("name", "") for k in data.get("kernels", []) if isinstance(k, dict)]
    run = kernel_run_record(
        tenant=tenant,
        channel=channel,
        tool=tool or "profile",
        status="ok",
        source=source,
        kernel_names=names,
        report=data,
        duration_ms=int((time.monotonic() - started) * 1000),
        **caller,
    )
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
