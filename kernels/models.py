"""Tenant-schema models: the history of kernel runs. Only kernels.services writes them."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class KernelRun(models.Model):
    CHANNELS = [("cli", "CLI"), ("api", "API"), ("mcp", "MCP"), ("dashboard", "Dashboard")]
    # Job states come first: a run is ``queued`` when accepted, ``running`` on a worker, then
    # one of the outcomes below, or ``interrupted`` when the process running it died.
    JOB_STATES = ("queued", "running")
    STATUSES = [
        ("queued", "queued"),
        ("running", "running"),
        ("interrupted", "interrupted"),
        ("verified", "verified"),
        ("inconclusive", "inconclusive"),
        ("translated", "translated"),
        ("mismatch", "mismatch"),
        ("unsupported", "unsupported"),
        ("failed", "failed"),
        ("ok", "ok"),
    ]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The caller. Keys and users live in the public schema; we copy what identifies them so the
    # history stays readable after a key is revoked or deleted.
    api_key_id = models.BigIntegerField(null=True, blank=True)
    api_key_prefix = models.CharField(max_length=16, blank=True)
    user_id = models.BigIntegerField(null=True, blank=True)
    username = models.CharField(max_length=150, blank=True)
    channel = models.CharField(max_length=16, choices=CHANNELS)
    tool = models.CharField(max_length=64, blank=True)
    source = models.TextField(blank=True)
    source_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    target = models.CharField(max_length=16, blank=True)
    kernel_names = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=STATUSES)
    report = models.JSONField(default=dict, blank=True)
    generated_code = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    llm_calls = models.PositiveIntegerField(default=0)
    llm_tokens = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # The job: what to run (kind + params, plain JSON for the broker) and how far it got.
    KINDS = [("translate", "translate"), ("profile", "profile"), ("ask", "ask")]
    kind = models.CharField(max_length=16, choices=KINDS, blank=True)
    params = models.JSONField(default=dict, blank=True)
    stage = models.CharField(max_length=32, blank=True)
    progress = models.JSONField(default=dict, blank=True)  # {done, total, message, stages}
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # host:pid of the process that accepted (in-process pool) or runs (Celery worker) the job.
    worker = models.CharField(max_length=128, blank=True, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Set on a fresh, fully verified translation: the key under which kernels.result_cache serves
    # it again to an identical request of the same tenant (blank otherwise).
    cache_key = models.CharField(max_length=64, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        names = ", ".join(self.kernel_names or []) or "-"
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.tool or self.channel} {names} {self.status}"

    @property
    def caller(self) -> str:
        if self.api_key_prefix:
            return f"key {self.api_key_prefix}"
        if self.username:
            return f"user {self.username}"
        return self.channel

    @property
    def finished(self) -> bool:
        return self.status not in self.JOB_STATES

    def to_dict(self, *, include_source: bool = False, include_report: bool = False) -> dict:
        """The JSON summary the API and MCP tools return."""
        data = {
            "id": str(self.id),
            "created_at": self.created_at.isoformat(),
            "channel": self.channel,
            "tool": self.tool,
            "caller": self.caller,
            "target": self.target,
            "kernel_names": list(self.kernel_names or []),
            "status": self.status,
            "source_sha256": self.source_sha256,
            "duration_ms": self.duration_ms,
            "llm_calls": self.llm_calls,
            "llm_tokens": self.llm_tokens,
            "error": self.error,
            "stage": self.stage,
            "progress": dict(self.progress or {}),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }
        if include_source:
            data["source"] = self.source
            data["generated_code"] = self.generated_code
        if include_report:
            data["report"] = self.report
        return data
