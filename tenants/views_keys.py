"""Dashboard: the workspace's API keys (owners only). Create (raw key shown once), list, revoke.

Revoking goes through tenants.services.api_key_revoke, whose save fires the ApiKey post_save
signal that empties the MCP verifier's cache in this process (mcp_bridge.auth), so the next
MCP or API call with the key is refused at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from fortranspire_site.errors import ApplicationError
from tenants import selectors, services
from tenants.access import owner_required
from tenants.models import ALL_SCOPES, SCOPES

SCOPE_HELP = {
    "translate": "translate_kernel, translate_kernel_gpu, POST /api/v1/translate",
    "profile": "profile_kernels, POST /api/v1/profile",
    "agent": "ask_agent (uses the workspace's Mistral key)",
    "history": "list_kernel_runs, get_kernel_run, GET /api/v1/runs",
    "owner": "owner actions over the API, e.g. DELETE /api/v1/runs",
}


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name", help_text="e.g. le-chat, ci")
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in ALL_SCOPES],
        initial=list(SCOPES),
        widget=forms.CheckboxSelectMultiple,
        label="Scopes",
    )
    expires_on = forms.DateField(
        required=False,
        label="Expires on",
        help_text="optional; the key stops working at the start of that day (UTC)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean_expires_on(self):
        day = self.cleaned_data.get("expires_on")
        if day is not None and day <= timezone.now().date():
            raise forms.ValidationError("choose a day after today")
        return day

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        return datetime.combine(day, time.min, tzinfo=UTC) if day else None


def _keys_page(request: HttpRequest, form: ApiKeyForm, *, created=None, status: int = 200):
    keys = selectors.api_key_list(tenant=request.tenant)
    now = timezone.now()
    active = [k for k in keys if k.is_active]
    inactive = [k for k in keys if not k.is_active]
    return render(
        request,
        "dashboard/keys.html",
        {
            "form": form,
            "active_keys": active,
            "inactive_keys": inactive,
            "created": created,
            "scope_help": SCOPE_HELP,
            "soon": now + timedelta(days=7),
            "nav": "keys",
        },
        status=status,
    )


@owner_required
@never_cache
@require_http_methods(["GET", "POST"])
def keys(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _keys_page(request, ApiKeyForm())
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, form, status=400)
    try:
        key, raw_key = services.api_key_create(
            tenant=request.tenant,
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_at=form.expires_at(),
            created_by=request.user,
        )
    except ApplicationError as exc:
        form.add_error(None, exc.message)
        return _keys_page(request, form, status=exc.status)
    # Rendered in the POST's own answer, never stored: reloading the page cannot show it again.
    return _keys_page(request, ApiKeyForm(), created={"key": key, "raw": raw_key}, status=201)


@owner_required
@require_POST
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    try:
        key = selectors.api_key_get(tenant=request.tenant, key_id=key_id)
    except ApplicationError as exc:
        return render(request, "404.html", {"message": exc.message}, status=404)
    services.api_key_revoke(key=key, actor=request.user)
    return redirect("dashboard_keys")
