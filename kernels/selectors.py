"""Reads of the tenant's KernelRun history; each enters the tenant's schema itself."""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, TextField
from django.db.models.functions import Cast, TruncDate
from django.utils import timezone
from django_tenants.utils import tenant_context

from fortranspire_site.errors import NotFound, ValidationFailed
from kernels.models import KernelRun
from tenants.models import Tenant

MAX_LIMIT = 200


def kernel_run_list(*, tenant: Tenant, limit: int = 20, offset: int = 0) -> list[KernelRun]:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit must be between 1 and {MAX_LIMIT}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValidationFailed("offset must be >= 0")
    with tenant_context(tenant):
        return list(KernelRun.objects.order_by("-created_at")[offset : offset + limit])


def kernel_run_count(*, tenant: Tenant) -> int:
    with tenant_context(tenant):
        return KernelRun.objects.count()


def kernel_run_get(*, tenant: Tenant, run_id: str | uuid.UUID) -> KernelRun:
    try:
        key = uuid.UUID(str(run_id))
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"no kernel run {run_id!r}") from None
    with tenant_context(tenant):
        run = KernelRun.objects.filter(pk=key).first()
    if run is None:
        raise NotFound(f"no kernel run {run_id}")
    return run


RUN_STATUSES = tuple(s for s, _ in KernelRun.STATUSES)
RUN_CHANNELS = tuple(c for c, _ in KernelRun.CHANNELS)
RUN_TARGETS = ("cpu", "gpu")


def kernel_run_search(
    *,
    tenant: Tenant,
    kernel: str = "",
    status: str = "",
    target: str = "",
    channel: str = "",
    limit: int = 25,
    offset: int = 0,
) -> tuple[list[KernelRun], int]:
    """One page of runs matching the filters (empty = any), newest first, and the match count.

    ``kernel`` matches a substring of any kernel name (case-insensitive).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit must be between 1 and {MAX_LIMIT}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValidationFailed("offset must be >= 0")
    for value, allowed, what in (
        (status, RUN_STATUSES, "status"),
        (target, RUN_TARGETS, "target"),
        (channel, RUN_CHANNELS, "channel"),
    ):
        if value and value not in allowed:
            raise ValidationFailed(f"{what} must be one of {', '.join(allowed)}")
    kernel = (kernel or "").strip().lower()[:63]
    with tenant_context(tenant):
        runs = KernelRun.objects.order_by("-created_at")
        if status:
            runs = runs.filter(status=status)
        if target:
            runs = runs.filter(target=target)
        if channel:
            runs = runs.filter(channel=channel)
        if kernel:
            # kernel_names is a JSON list of lower-case names: match inside its text form.
            runs = runs.annotate(names_text=Cast("kernel_names", TextField())).filter(
                names_text__icontains=kernel
            )
        total = runs.count()
        return list(runs[offset : offset + limit]), total


@dataclass
class RunStats:
    days: int
    runs_per_day: list[tuple[date, int]]
    translations: int
    verified: int
    median_ms: int | None

    @property
    def verified_share(self) -> float | None:
        return self.verified / self.translations if self.translations else None


def kernel_run_stats(*, tenant: Tenant, days: int = 30, now: datetime | None = None) -> RunStats:
    """Runs per day over the last ``days`` days (zero days included), verified share of the
    translations and their median duration."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 366:
        raise ValidationFailed("days must be between 1 and 366")
    now = now or timezone.now()
    first_day = (now - timedelta(days=days - 1)).date()
    since = datetime.combine(first_day, time.min, tzinfo=UTC)
    with tenant_context(tenant):
        runs = KernelRun.objects.filter(created_at__gte=since)
        per_day = dict(
            runs.annotate(day=TruncDate("created_at", tzinfo=UTC))
            .values("day")
            .annotate(n=Count("id"))
            .values_list("day", "n")
        )
        translations = runs.exclude(tool__in=("profile", "dashboard-profile", "ask_agent"))
        translations = translations.exclude(status="ok")
        durations = sorted(translations.values_list("duration_ms", flat=True))
        verified = translations.filter(status="verified").count()
    series = [
        (first_day + timedelta(days=i), per_day.get(first_day + timedelta(days=i), 0))
        for i in range(days)
    ]
    return RunStats(
        days=days,
        runs_per_day=series,
        translations=len(durations),
        verified=verified,
        median_ms=int(statistics.median(durations)) if durations else None,
    )
