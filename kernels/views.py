"""The tenant dashboard: runs history, a run's report and code, a form to translate a source.

Only members of the host's tenant get in; the views call kernels.services / selectors and never
write the ORM themselves.
"""

from __future__ import annotations

from functools import wraps

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from fortranspire_site.errors import ApplicationError
from kernels import selectors, services
from tenants.auth import caller_for_user

PAGE_SIZE = 25


def member_required(view):
    """Logged in AND a member of this host's tenant (a user of tenant A is a stranger on B)."""

    @wraps(view)
    @login_required
    def wrapper(request: HttpRequest, *args, **kwargs):
        caller = caller_for_user(user=request.user, tenant=request.tenant)
        if caller is None:
            return render(request, "dashboard/forbidden.html", {}, status=403)
        request.caller = caller
        return view(request, *args, **kwargs)

    return wrapper


class TranslateForm(forms.Form):
    source = forms.CharField(widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false"}))
    target = forms.ChoiceField(
        choices=[("cpu", "CPU (numba njit/prange)"), ("gpu", "GPU (numba.cuda)")]
    )
    kernel = forms.CharField(required=False, max_length=63, help_text="only this subroutine")
    verify = forms.BooleanField(required=False, initial=True)


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True


@member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    try:
        page = max(0, int(request.GET.get("page", 0)))
    except ValueError:
        page = 0
    runs = selectors.kernel_run_list(
        tenant=request.tenant, limit=PAGE_SIZE, offset=page * PAGE_SIZE
    )
    return render(
        request,
        "dashboard/index.html",
        {"runs": runs, "form": TranslateForm(), "page": page, "has_next": len(runs) == PAGE_SIZE},
    )


@member_required
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    try:
        run = selectors.kernel_run_get(tenant=request.tenant, run_id=run_id)
    except ApplicationError as exc:
        return render(
            request, "404.html", {"reason": "not_found", "message": exc.message}, status=404
        )
    return render(request, "dashboard/run_detail.html", {"run": run})


@member_required
@require_http_methods(["POST"])
def translate(request: HttpRequest) -> HttpResponse:
    form = TranslateForm(request.POST)
    if not form.is_valid():
        runs = selectors.kernel_run_list(tenant=request.tenant, limit=PAGE_SIZE)
        return render(request, "dashboard/index.html", {"runs": runs, "form": form}, status=400)
    data = form.cleaned_data
    try:
        run, _result = services.kernel_translate(
            tenant=request.tenant,
            source=data["source"],
            target=data["target"],
            channel="dashboard",
            kernel=data["kernel"] or None,
            verify=data["verify"],
            user=request.user,
            tool="dashboard",
        )
    except ApplicationError as exc:
        run_id = exc.extra.get("run_id")
        if run_id:
            return redirect("run_detail", run_id=run_id)
        form.add_error(None, exc.message)
        runs = selectors.kernel_run_list(tenant=request.tenant, limit=PAGE_SIZE)
        return render(
            request, "dashboard/index.html", {"runs": runs, "form": form}, status=exc.status
        )
    return redirect("run_detail", run_id=str(run.id))
