"""Dashboard: profile a Fortran file: hotspot ranking, roofline + timings PNG, measured timings.

Same two paths as translate: with htmx the POST starts a ``profile`` job (kernels.dashboard_jobs)
and the progress card polls ``/jobs/<id>/``; without JavaScript the profile runs in the request
and the browser lands on the run's page. The chart is drawn from the stored report on demand.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from fortranspire_site.errors import ApplicationError, RateLimited, ServiceUnavailable
from kernels import dashboard_jobs, jobs, selectors
from kernels.engine.plot import render_plot_png
from kernels.views.translate import SourcesForm, _finished_run, _max_source_bytes
from tenants.access import is_htmx, member_required


class ProfileForm(SourcesForm):
    measure = forms.BooleanField(
        required=False,
        label="measure timings",
        help_text="compile and time gfortran and the numba ports (slower)",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("files"):
            raise forms.ValidationError(
                "profiling takes one Fortran file at a time; choose one file"
            )
        return data


def _page(request, form, *, result=None, error: str = "", status: int = 200):
    return render(
        request,
        "dashboard/profile.html",
        {
            "form": form,
            "profile": result,
            "error": error,
            "max_source_bytes": _max_source_bytes(),
            "nav": "profile",
        },
        status=status,
    )


def _form_errors(form: forms.Form) -> str:
    return "; ".join(e for errors in form.errors.values() for e in errors)


@member_required
@never_cache
@vary_on_headers("HX-Request")
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request, ProfileForm())
    form = ProfileForm(request.POST, request.FILES)
    if not form.is_valid():
        status = 413 if form.too_large else 400
        if is_htmx(request):
            return render(
                request,
                "dashboard/_error_card.html",
                {"message": _form_errors(form)},
                status=status,
            )
        return _page(request, form, error=_form_errors(form), status=status)
    data = form.cleaned_data
    options = {
        "source": data["source"],
        "filename": data["filename"],
        "sizes": data["sizes"],
        "measure": data["measure"],
    }
    # A job either way, so the rate limit and the job cap apply as on REST and MCP; without
    # JavaScript the request waits for it and lands on the run page (or the job's page).
    try:
        job = dashboard_jobs.job_start(
            tenant=request.tenant, user=request.user, kind="profile", **options
        )
    except ApplicationError as exc:
        if not is_htmx(request):
            return _page(request, form, error=exc.message, status=exc.status)
        response = render(
            request, "dashboard/_error_card.html", {"message": exc.message}, status=exc.status
        )
        if isinstance(exc, RateLimited):
            response["Retry-After"] = str(exc.retry_after)
        return response
    if is_htmx(request):
        return render(request, "dashboard/_job.html", {"job": job}, status=202)
    try:
        run = _finished_run(request, job)
    except ServiceUnavailable:
        return redirect("dashboard_job", job_id=job.id)
    try:
        jobs.job_outcome(run)
    except ApplicationError as exc:
        return _page(request, form, error=exc.message, status=exc.status)
    return redirect("run_detail", run_id=str(run.id))


@member_required
@require_GET
def profile_png(request: HttpRequest, run_id: str) -> HttpResponse:
    """The roofline + timings chart of a profile run, drawn from its stored report."""
    try:
        run = selectors.kernel_run_get(tenant=request.tenant, run_id=run_id)
    except ApplicationError as exc:
        return render(request, "404.html", {"message": exc.message}, status=404)
    report = run.report or {}
    if run.status != "ok" or not report.get("kernels"):
        return render(request, "404.html", {"message": "this run has no profile"}, status=404)
    response = HttpResponse(render_plot_png(report), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response
