"""Selectors: how much a tenant leans on the LLM, computed from its KernelRun history.

- a histogram of LLM calls per kernel translation (bucket 0 is the deterministic pipeline);
- tokens and calls, split into fallback (translations) and ask_agent;
- an alert on every kernel (same source SHA-256 + kernel name) that needed more than
  ``ALERT_THRESHOLD`` calls across all its attempts: a pattern the pipeline should learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django_tenants.utils import tenant_context

from fortranspire_site.errors import ValidationFailed
from kernels.models import KernelRun
from tenants.models import Tenant

ALERT_THRESHOLD = 6  # more calls than this across attempts raises the alert
MAX_DAYS = 3660
HISTOGRAM_BUCKETS = ("0", "1", "2", "3", "4", "5+")


@dataclass
class KernelUsage:
    """One kernel (source SHA-256 + name) over every run that translated it."""

    kernel: str
    source_sha256: str
    attempts: int = 0
    llm_calls: int = 0
    llm_tokens: int = 0
    last_status: str = ""
    last_run_id: str = ""
    last_seen: datetime | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def alert(self) -> bool:
        return self.llm_calls > ALERT_THRESHOLD

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "source_sha256": self.source_sha256,
            "attempts": self.attempts,
            "llm_calls": self.llm_calls,
            "llm_tokens": self.llm_tokens,
            "last_status": self.last_status,
            "last_run_id": self.last_run_id,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "alert": self.alert,
            "reasons": list(self.reasons),
        }


@dataclass
class LlmUsage:
    since: datetime | None
    runs: int = 0
    kernel_translations: int = 0
    histogram: dict[str, int] = field(default_factory=lambda: dict.fromkeys(HISTOGRAM_BUCKETS, 0))
    fallback_calls: int = 0
    fallback_tokens: int = 0
    agent_runs: int = 0
    agent_calls: int = 0
    agent_tokens: int = 0
    kernels: dict[tuple[str, str], KernelUsage] = field(default_factory=dict)

    @property
    def alerts(self) -> list[KernelUsage]:
        flagged = [k for k in self.kernels.values() if k.alert]
        return sorted(flagged, key=lambda k: (-k.llm_calls, k.kernel))

    def to_dict(self, *, top: int = 20) -> dict[str, Any]:
        with_llm = [k for k in self.kernels.values() if k.llm_calls]
        with_llm.sort(key=lambda k: (-k.llm_calls, k.kernel))
        return {
            "since": self.since.isoformat() if self.since else None,
            "runs": self.runs,
            "kernel_translations": self.kernel_translations,
            "calls_per_kernel_histogram": dict(self.histogram),
            "llm_calls": self.fallback_calls + self.agent_calls,
            "llm_tokens": self.fallback_tokens + self.agent_tokens,
            "fallback": {"calls": self.fallback_calls, "tokens": self.fallback_tokens},
            "agent": {
                "runs": self.agent_runs,
                "calls": self.agent_calls,
                "tokens": self.agent_tokens,
            },
            "alert_threshold": ALERT_THRESHOLD,
            "alerts": [k.to_dict() for k in self.alerts],
            "top_kernels": [k.to_dict() for k in with_llm[:top]],
        }


def _bucket(calls: int) -> str:
    return str(calls) if calls < 5 else "5+"


def llm_usage_summary(*, tenant: Tenant, days: int | None = None) -> LlmUsage:
    """Usage over the tenant's history (the last ``days`` days when given)."""
    if days is not None:
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise ValidationFailed(f"days must be between 1 and {MAX_DAYS}")
    since = timezone.now() - timedelta(days=days) if days else None
    usage = LlmUsage(since=since)
    with tenant_context(tenant):
        runs = KernelRun.objects.order_by("created_at")
        if since is not None:
            runs = runs.filter(created_at__gte=since)
        rows = runs.values_list(
            "id",
            "created_at",
            "tool",
            "status",
            "source_sha256",
            "llm_calls",
            "llm_tokens",
            "report",
        )
        for run_id, created_at, tool, status, sha, calls, tokens, report in rows.iterator(
            chunk_size=200
        ):
            usage.runs += 1
            if tool == "ask_agent":  # its translate/verify tools are recorded as translations
                usage.agent_runs += 1
                usage.agent_calls += calls or 0
                usage.agent_tokens += tokens or 0
                continue
            if status == "ok":  # a profile lists kernels too, but translated none
                continue
            kernels = (report or {}).get("kernels") if isinstance(report, dict) else None
            if not isinstance(kernels, list):
                continue
            for entry in kernels:
                if not isinstance(entry, dict) or "name" not in entry:
                    continue
                _count_kernel(usage, entry, sha or "", str(run_id), created_at)
    return usage


def _count_kernel(
    usage: LlmUsage, entry: dict[str, Any], sha: str, run_id: str, created_at: datetime
) -> None:
    calls = int(entry.get("llm_calls") or 0)
    tokens = int(entry.get("llm_tokens") or 0)
    usage.kernel_translations += 1
    usage.histogram[_bucket(calls)] += 1
    usage.fallback_calls += calls
    usage.fallback_tokens += tokens
    key = (sha, str(entry["name"]))
    k = usage.kernels.get(key)
    if k is None:
        k = usage.kernels[key] = KernelUsage(kernel=key[1], source_sha256=sha)
    k.attempts += 1
    k.llm_calls += calls
    k.llm_tokens += tokens
    k.last_status = str(entry.get("status") or "")
    k.last_run_id = run_id
    k.last_seen = created_at
    # What the pipeline could not do, so whoever teaches it the pattern knows where to look.
    reasons = [
        d.get("message", "")
        for d in entry.get("diagnostics") or []
        if isinstance(d, dict) and not str(d.get("message", "")).startswith("LLM fallback")
    ]
    if reasons:
        k.reasons = reasons[:5]


def llm_usage_alerts(*, tenant: Tenant, days: int | None = None) -> list[KernelUsage]:
    return llm_usage_summary(tenant=tenant, days=days).alerts


def llm_usage_admin_summary(*, tenant: Tenant, days: int | None = None) -> str:
    """A plain-text summary for the operator admin (read-only field on the LLM credential)."""
    usage = llm_usage_summary(tenant=tenant, days=days)
    histogram = "  ".join(f"{bucket}: {n}" for bucket, n in usage.histogram.items())
    lines = [
        f"calls per kernel translation: {histogram}",
        f"fallback: {usage.fallback_calls} calls, {usage.fallback_tokens} tokens; "
        f"ask_agent: {usage.agent_runs} runs, {usage.agent_calls} calls, {usage.agent_tokens} tokens",
    ]
    alerts = usage.alerts
    if alerts:
        lines.append(f"ALERT: {len(alerts)} kernel(s) needed more than {ALERT_THRESHOLD} calls:")
        lines += [
            f"  {k.kernel} (source {k.source_sha256[:12]}): {k.llm_calls} calls over "
            f"{k.attempts} attempts, last {k.last_status}"
            + (f"; {k.reasons[0]}" if k.reasons else "")
            for k in alerts[:20]
        ]
    else:
        lines.append(f"no kernel needed more than {ALERT_THRESHOLD} calls")
    return "\n".join(lines)
