"""The tenant dashboard: runs history, a run's report and code, a form to translate a source.

Only members of the host's tenant get in; the views call kernels.services / selectors (through
kernels.dashboard_jobs for the htmx path) and never write the ORM themselves.

Translating has two paths that record the same KernelRun:
- htmx (``HX-Request`` header): the POST starts a job in a worker thread and answers at once
  with a progress card that polls ``/jobs/<id>/`` until the result card replaces it;
- plain POST (no JavaScript): the translation runs in the request, then redirects to the run.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.exceptions import RequestDataTooBig
from django.core.validators import ProhibitNullCharactersValidator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from fortranspire_site.errors import ApplicationError, RateLimited, ServiceUnavailable
from kernels import dashboard_jobs, inputs, jobs, selectors, services
from kernels.uploads import ARCHIVE_SUFFIXES, FORTRAN_SUFFIXES, sources_from_uploads
from kernels.views.shaping import fmt_number, profile_context
from tenants import selectors as tenant_selectors
from tenants.access import is_htmx as _is_htmx
from tenants.access import member_required
from tenants.llm_credentials import llm_credential_status

PAGE_SIZE = 25
CONNECTION_TEST_KEY = "connection test"  # the name kernels.views.connect gives its probe key


def _max_source_bytes() -> int:
    return settings.FORTRANSPIRE_MAX_SOURCE_BYTES


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files under one name (``<input type=file multiple>``); cleans to a list."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data if d]
        return [single(data, initial)] if data else []


UPLOAD_ACCEPT = ",".join(
    sorted({*FORTRAN_SUFFIXES, *(s.upper() for s in FORTRAN_SUFFIXES), *ARCHIVE_SUFFIXES})
)
SIZES_HELP = "array extents for verification, NAME=VALUE, comma separated"


def parse_sizes(text: str) -> dict[str, int] | None:
    """``"n=64, m=32"`` -> ``{"n": 64, "m": 32}``; forms.ValidationError on a bad item."""
    try:
        return inputs.sizes_parse(text or "")
    except ApplicationError as exc:
        raise forms.ValidationError(exc.message) from None


class SourcesForm(forms.Form):
    """Fortran to work on: pasted text, or files and archives (several make one project)."""

    source = forms.CharField(
        required=False,
        strip=False,
        label="Fortran source",
        widget=forms.Textarea(
            attrs={"rows": 14, "spellcheck": "false", "placeholder": "subroutine ... end"}
        ),
    )
    upload = MultipleFileField(
        required=False,
        label="or files",
        help_text="one or several Fortran files, or a .zip / .tar.gz of them",
        widget=MultipleFileInput(attrs={"accept": UPLOAD_ACCEPT}),
    )
    sizes = forms.CharField(
        required=False,
        max_length=500,
        widget=forms.TextInput(attrs={"placeholder": "n=64, m=32", "size": 18}),
        help_text=SIZES_HELP,
    )

    too_large = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The job service's own check (kernels.inputs) says where a NUL character is.
        self.fields["source"].validators = [
            v
            for v in self.fields["source"].validators
            if not isinstance(v, ProhibitNullCharactersValidator)
        ]

    def clean_sizes(self) -> dict[str, int] | None:
        return parse_sizes(self.cleaned_data.get("sizes") or "")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        limit = _max_source_bytes()
        uploads = data.get("upload") or []
        source = data.get("source") or ""
        data["files"] = None
        filename = "input.f90"
        if uploads:
            try:
                found = sources_from_uploads(uploads, limit_bytes=limit)
            except ApplicationError as exc:
                self.too_large = exc.status == 413
                raise forms.ValidationError(exc.message) from None
            if len(found.files) == 1:
                ((filename, source),) = found.files.items()
                filename = filename.rsplit("/", 1)[-1]
            else:
                # Several files form one project (modules visible across files): they go to
                # the engine as they are, never concatenated.
                data["files"] = found.files
                source = ""
            data["skipped"] = found.skipped
        if data["files"] is None:
            if not source.strip():
                raise forms.ValidationError("paste Fortran source or choose a file")
            if "\x00" in source:
                try:
                    inputs.source_check(source, max_bytes=limit)
                except ApplicationError as exc:
                    raise forms.ValidationError(exc.message) from None
            size = len(source.encode("utf-8", errors="replace"))
            if size > limit:
                self.too_large = True
                raise forms.ValidationError(
                    f"the source is {size} bytes; the limit is {limit} bytes"
                )
        data["source"] = source
        data["filename"] = filename
        return data

    def engine_input(self) -> dict[str, Any]:
        """The service's keyword arguments for the sources: ``files`` only when there are several."""
        data = self.cleaned_data
        if data["files"] is not None:
            return {"files": data["files"], "filename": "project"}
        return {"source": data["source"], "filename": data["filename"]}


class TranslateForm(SourcesForm):
    target = forms.ChoiceField(
        choices=[("cpu", "CPU (numba njit/prange)"), ("gpu", "GPU (numba.cuda)")]
    )
    kernel = forms.CharField(
        required=False,
        max_length=63,
        help_text="only this subroutine",
        widget=forms.TextInput(attrs={"size": 14, "placeholder": "all"}),
    )
    verify = forms.BooleanField(required=False, initial=True, label="verify against gfortran")
    allow_llm = forms.BooleanField(
        required=False,
        label="LLM fallback",
        help_text="let the tenant's Mistral model try kernels the translator does not cover",
    )

    field_order = ["source", "upload", "target", "kernel", "sizes", "verify", "allow_llm"]


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def get_initial(self) -> dict[str, Any]:
        # /login/?username=alice prefills the name (links from sign-up and member pages).
        return {"username": self.request.GET.get("username", "")[:150]}


# ---- shaping a report for the templates -------------------------------------------------------


def _source_lines(source: str) -> list[str]:
    return source.expandtabs(4).splitlines()


def _diagnostics_view(diagnostics: list[dict], lines: list[str]) -> list[dict]:
    """Each diagnostic with the offending source line and a caret under its column."""
    shaped = []
    for d in diagnostics or []:
        line = int(d.get("line") or 0)
        column = int(d.get("column") or 0)
        item = {"line": line, "column": column, "message": d.get("message", "")}
        if 1 <= line <= len(lines):
            item["excerpt"] = lines[line - 1]
            item["caret"] = " " * max(0, column - 1) + "^"
        shaped.append(item)
    return shaped


def _coverage_view(coverage: Any) -> dict | None:
    """``{loops, loops_run, lines, lines_run}`` as "3/4 loops ran" figures, when reported."""
    if not isinstance(coverage, dict):
        return None
    shaped = {}
    for what in ("loops", "lines"):
        total, ran = coverage.get(what), coverage.get(f"{what}_run")
        if isinstance(total, int) and isinstance(ran, int):
            shaped[what] = {"ran": ran, "total": total, "complete": ran >= total}
    return shaped or None


def _kernel_view(k: dict, lines: list[str]) -> dict:
    sizes = k.get("sizes") or {}
    return {
        "name": k.get("name", ""),
        "status": k.get("status", ""),
        "device": k.get("device", ""),
        "parallel_loops": k.get("parallel_loops", 0),
        "llm_calls": k.get("llm_calls", 0),
        "max_abs_err": fmt_number(k.get("max_abs_err")),
        "max_rel_err": fmt_number(k.get("max_rel_err")),
        "max_ulp": fmt_number(k.get("max_ulp")),
        "sizes": ", ".join(f"{n}={v}" for n, v in sizes.items()),
        "line": k.get("line", 0),
        "entry": k.get("entry", ""),
        "arguments": [
            {
                "name": a.get("name", ""),
                "passed": a.get("passed"),
                "max_abs_err": fmt_number(a.get("max_abs_err")),
                "max_rel_err": fmt_number(a.get("max_rel_err")),
                "max_ulp": fmt_number(a.get("max_ulp")),
                "tolerance": a.get("tolerance", ""),
            }
            for a in k.get("arguments") or []
        ],
        "coverage": _coverage_view(k.get("coverage")),
        "file": k.get("file", ""),
        "diagnostics": _diagnostics_view(k.get("diagnostics") or [], lines),
        "notes": list(k.get("notes") or []),
        "code": k.get("code", ""),
    }


def _result_context(
    *,
    source: str,
    report: dict | None = None,
    error: dict | None = None,
    run=None,
    run_id: str | None = None,
) -> dict:
    """What ``dashboard/_result.html`` shows: the kernels of a report, or an error."""
    lines = _source_lines(source)
    report = report or {}
    if error is None and report.get("error"):
        # A failed run stores the engine error as its report.
        error = {"message": report.get("message", ""), "diagnostics": report.get("diagnostics")}
    kernels = [_kernel_view(k, lines) for k in report.get("kernels") or []]
    if error is not None:
        status = "failed"
    elif run is not None:
        status = run.status
    else:
        status = (
            services.overall_status([k["status"] for k in kernels]) if kernels else "unsupported"
        )
    return {
        "status": status,
        "run": run,
        "run_id": str(run.id) if run is not None else run_id,
        "kernels": kernels,
        "error": None
        if error is None
        else {
            "message": error.get("message", ""),
            "diagnostics": _diagnostics_view(error.get("diagnostics") or [], lines),
        },
        "has_code": any(k["code"] for k in kernels),
    }


def _form_error_context(form: TranslateForm) -> dict:
    messages = []
    for field, errors in form.errors.items():
        label = "" if field == "__all__" else f"{form.fields[field].label or field}: "
        messages.extend(f"{label}{e}" for e in errors)
    return _result_context(source="", error={"message": "; ".join(messages)})


def _run_get_or_none(request: HttpRequest, run_id: str | None):
    if not run_id:
        return None
    try:
        return selectors.kernel_run_get(tenant=request.tenant, run_id=run_id)
    except ApplicationError:
        return None


def _first_steps(request: HttpRequest) -> list[dict] | None:
    """The onboarding checklist for owners; None once every step is done."""
    tenant = request.tenant
    keys = tenant_selectors.api_key_list(tenant=tenant)
    _, mcp_runs = selectors.kernel_run_search(tenant=tenant, channel="mcp", limit=1)
    _, profiles = selectors.kernel_run_search(tenant=tenant, status="ok", limit=1)
    steps = [
        {
            "label": "Create an API key",
            "href": "/settings/keys/",
            "done": any(k.name != CONNECTION_TEST_KEY for k in keys),
        },
        {
            "label": "Set your Mistral key (optional LLM fallback)",
            "href": "/settings/llm/",
            "done": llm_credential_status(tenant=tenant).configured,
        },
        {
            "label": "Translate a first kernel (below)",
            "href": "#translate-form",
            "done": selectors.kernel_run_count(tenant=tenant) > profiles,
        },
        {"label": "Profile a file", "href": "/profile/", "done": profiles > 0},
        {
            "label": "Connect Le Chat and test the connection",
            "href": "/connect/",
            "done": mcp_runs > 0 or any(k.name == CONNECTION_TEST_KEY for k in keys),
        },
        {
            "label": "Add a teammate",
            "href": "/settings/members/",
            "done": len(tenant_selectors.membership_list(tenant=tenant)) > 1,
        },
    ]
    return None if all(s["done"] for s in steps) else steps


def _index(request: HttpRequest, form: TranslateForm, *, result=None, status: int = 200):
    try:
        page = max(0, int(request.GET.get("page", 0)))
    except ValueError:
        page = 0
    runs = selectors.kernel_run_list(
        tenant=request.tenant, limit=PAGE_SIZE, offset=page * PAGE_SIZE
    )
    context = {
        "runs": runs,
        "form": form,
        "page": page,
        "has_next": len(runs) == PAGE_SIZE,
        "result": result,
        "max_source_bytes": _max_source_bytes(),
        "first_steps": _first_steps(request) if request.is_owner else None,
        "welcome": request.GET.get("welcome") == "1",
        "nav": "translate",
    }
    return render(request, "dashboard/index.html", context, status=status)


# ---- views --------------------------------------------------------------------------------


# never_cache: Back from a run page must show the history as it is now, not the copy the
# browser kept from before the last translation.
@member_required
@never_cache
def dashboard(request: HttpRequest) -> HttpResponse:
    return _index(request, TranslateForm())


@member_required
@never_cache
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    try:
        run = selectors.kernel_run_get(tenant=request.tenant, run_id=run_id)
    except ApplicationError as exc:
        return render(
            request, "404.html", {"reason": "not_found", "message": exc.message}, status=404
        )
    if _is_profile_run(run):
        return render(
            request,
            "dashboard/run_detail.html",
            {
                "run": run,
                "profile": profile_context(report=run.report or {}, run=run),
                "source_lines": [
                    {"number": n, "text": text, "bad": False}
                    for n, text in enumerate(_source_lines(run.source), start=1)
                ],
                "nav": "runs",
            },
        )
    result = _result_context(source=run.source, report=run.report, run=run)
    if result["error"] is None and run.error:
        result["error"] = {"message": run.error, "diagnostics": []}
    bad_lines = {d["line"] for d in (result["error"] or {}).get("diagnostics", [])}
    for k in result["kernels"]:
        bad_lines.update(d["line"] for d in k["diagnostics"])
    source_lines = [
        {"number": n, "text": text, "bad": n in bad_lines}
        for n, text in enumerate(_source_lines(run.source), start=1)
    ]
    return render(
        request,
        "dashboard/run_detail.html",
        {"run": run, "result": result, "source_lines": source_lines, "nav": "runs"},
    )


@member_required
@require_GET
def run_code_download(request: HttpRequest, run_id: str) -> HttpResponse:
    """The generated Python as a .py attachment (the whole run, or ``?kernel=NAME``)."""
    try:
        run = selectors.kernel_run_get(tenant=request.tenant, run_id=run_id)
    except ApplicationError as exc:
        return render(
            request, "404.html", {"reason": "not_found", "message": exc.message}, status=404
        )
    wanted = request.GET.get("kernel", "").strip().lower()
    if wanted:
        kernels = [k for k in (run.report or {}).get("kernels") or [] if k.get("name") == wanted]
        code = kernels[0].get("code", "") if kernels else ""
        stem = wanted
    else:
        code = run.generated_code
        stem = "_".join(run.kernel_names or []) or f"run_{str(run.id)[:8]}"
    if not code:
        return render(
            request,
            "404.html",
            {"reason": "not_found", "message": "this run has no generated code"},
            status=404,
        )
    stem = re.sub(r"[^A-Za-z0-9_]", "_", stem)[:80] or "kernel"
    suffix = f"_{run.target}" if run.target else ""
    response = HttpResponse(code, content_type="text/x-python; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{stem}{suffix}.py"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _too_large_response(request: HttpRequest) -> HttpResponse:
    message = f"the request is too large; sources are limited to {_max_source_bytes()} bytes"
    result = _result_context(source="", error={"message": message})
    if _is_htmx(request):
        return render(request, "dashboard/_result.html", {"result": result}, status=413)
    return _index(request, TranslateForm(), result=result, status=413)


@member_required
@require_http_methods(["POST"])
@vary_on_headers("HX-Request")
def translate(request: HttpRequest) -> HttpResponse:
    try:
        form = TranslateForm(request.POST, request.FILES)
        valid = form.is_valid()
    except RequestDataTooBig:
        return _too_large_response(request)
    htmx = _is_htmx(request)
    if not valid:
        status = 413 if form.too_large else 400
        result = _form_error_context(form)
        if htmx:
            return render(request, "dashboard/_result.html", {"result": result}, status=status)
        return _index(request, form, result=result, status=status)
    data = form.cleaned_data
    options = {
        **form.engine_input(),
        "target": data["target"],
        "kernel": data["kernel"] or None,
        "verify": data["verify"],
        "sizes": data["sizes"],
        "allow_llm": data["allow_llm"],
    }
    # Every submission is a job, so the rate limit and the tenant's job cap apply as on REST
    # and MCP. htmx polls the job's card; without JavaScript the request waits for the job (as
    # REST does) and lands on the run page, or on the job's page if it is still running.
    try:
        job = dashboard_jobs.job_start(tenant=request.tenant, user=request.user, **options)
    except ApplicationError as exc:
        result = _result_context(source="", error={"message": exc.message})
        if not htmx:
            return _index(request, form, result=result, status=exc.status)
        response = render(request, "dashboard/_result.html", {"result": result}, status=exc.status)
        if isinstance(exc, RateLimited):
            response["Retry-After"] = str(exc.retry_after)
        return response
    if htmx:
        return _job_response(request, job, status=202)
    try:
        run = _finished_run(request, job)
    except ServiceUnavailable:
        return redirect("dashboard_job", job_id=job.id)
    try:
        jobs.job_outcome(run)
    except ApplicationError as exc:
        # The form comes back with the user's source and the error (line:column) above it.
        result = _result_context(
            source=data["source"] or "",
            error={"message": exc.message, "diagnostics": exc.extra.get("diagnostics")},
            run=run,
            run_id=str(run.id),
        )
        return _index(request, form, result=result, status=exc.status)
    return redirect("run_detail", run_id=str(run.id))


def _finished_run(request: HttpRequest, job):
    """The job's run once finished: at once when it already is (a fast job, or one run inline),
    else after waiting as REST does; ServiceUnavailable when it is still running then."""
    if job.finished:
        return selectors.kernel_run_get(tenant=request.tenant, run_id=job.id)
    return jobs.job_wait_sync(tenant=request.tenant, run_id=job.id)


def _is_profile_run(run) -> bool:
    return run.status == "ok" and bool((run.report or {}).get("kernels"))


def _job_response(request: HttpRequest, job, *, status: int = 200) -> HttpResponse:
    if not job.finished:
        return render(request, "dashboard/_job.html", {"job": job}, status=status)
    if job.kind == "profile":
        if job.error is not None:
            return render(
                request,
                "dashboard/_error_card.html",
                {"message": job.error["message"], "run_id": job.run_id},
            )
        run = _run_get_or_none(request, job.run_id)
        return render(
            request,
            "dashboard/_profile_result.html",
            {"profile": profile_context(report=job.report or {}, run=run, run_id=job.run_id)},
        )
    run = _run_get_or_none(request, job.run_id)
    result = _result_context(
        source=job.source, report=job.report, error=job.error, run=run, run_id=job.run_id
    )
    # The finished card also refreshes the history table (out-of-band swap).
    runs = selectors.kernel_run_list(tenant=request.tenant, limit=PAGE_SIZE)
    return render(
        request,
        "dashboard/_result.html",
        {"result": result, "runs": runs, "refresh_runs": True},
        status=200 if status == 202 else status,
    )


@member_required
@require_GET
@never_cache
@vary_on_headers("HX-Request")
def job_status(request: HttpRequest, job_id: str) -> HttpResponse:
    """htmx polls this: the progress card while the job runs, the result card once it is done."""
    job = dashboard_jobs.job_get(job_id=job_id, tenant=request.tenant, user=request.user)
    if job is None:
        message = "no such translation job (it may have finished long ago); see the run history"
        if _is_htmx(request):
            result = _result_context(source="", error={"message": message})
            return render(request, "dashboard/_result.html", {"result": result}, status=404)
        return render(request, "404.html", {"reason": "not_found", "message": message}, status=404)
    if not _is_htmx(request):
        if job.finished and job.run_id:
            return redirect("run_detail", run_id=job.run_id)
        return render(request, "dashboard/job.html", {"job": job})
    return _job_response(request, job)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400 of tenant hosts: an oversized form body gets the dashboard's 413 message.

    The CSRF middleware reads the POST body before any view runs, so a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE raises RequestDataTooBig there and lands here instead of in
    ``translate``.
    """
    if isinstance(exception, RequestDataTooBig):
        message = f"the request is too large; sources are limited to {_max_source_bytes()} bytes"
        status = 413
    else:
        message = "the request could not be understood"
        status = 400
    if _is_htmx(request):
        result = _result_context(source="", error={"message": message})
        return render(request, "dashboard/_result.html", {"result": result}, status=status)
    return render(
        request,
        "dashboard/error.html",
        {"title": "Request refused", "message": message},
        status=status,
    )
