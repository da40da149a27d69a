"""Dashboard: the run history with search, filters and pages; deleting it (owners, confirmed)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from fortranspire_site.errors import ApplicationError
from kernels import selectors, services
from tenants.access import member_required, owner_required

PAGE_SIZE = 25
DELETE_CONFIRMATION = "delete"


@member_required
@never_cache
@require_GET
def runs(request: HttpRequest) -> HttpResponse:
    filters = {
        "kernel": request.GET.get("kernel", "").strip()[:63],
        "status": request.GET.get("status", ""),
        "target": request.GET.get("target", ""),
        "channel": request.GET.get("channel", ""),
    }
    try:
        page = max(1, int(request.GET.get("page", 1)))
    except ValueError:
        page = 1
    error = ""
    try:
        found, total = selectors.kernel_run_search(
            tenant=request.tenant, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, **filters
        )
    except ApplicationError as exc:
        found, total, error = [], 0, exc.message
    pages = max(1, -(-total // PAGE_SIZE))
    query = urlencode({k: v for k, v in filters.items() if v})
    return render(
        request,
        "dashboard/runs.html",
        {
            "runs": found,
            "total": total,
            "page": page,
            "pages": pages,
            "filters": filters,
            "query": query,
            "statuses": selectors.RUN_STATUSES,
            "targets": selectors.RUN_TARGETS,
            "channels": selectors.RUN_CHANNELS,
            "error": error,
            "nav": "runs",
        },
        status=400 if error else 200,
    )


@owner_required
@never_cache
@require_http_methods(["GET", "POST"])
def runs_delete(request: HttpRequest) -> HttpResponse:
    """GET: what will be deleted and a form that needs the word typed; POST: delete."""
    count = selectors.kernel_run_count(tenant=request.tenant)
    context = {"count": count, "word": DELETE_CONFIRMATION, "nav": "runs"}
    if request.method == "GET":
        return render(request, "dashboard/runs_delete.html", context)
    if request.POST.get("confirm", "").strip().lower() != DELETE_CONFIRMATION:
        context["error"] = f"type {DELETE_CONFIRMATION!r} to confirm"
        return render(request, "dashboard/runs_delete.html", context, status=400)
    services.kernel_run_delete_all(tenant=request.tenant, actor=request.user)
    return redirect("/runs/?deleted=1")
