"""Reads of the tenant's KernelRun history; each enters the tenant's schema itself."""

from __future__ import annotations

import uuid

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
