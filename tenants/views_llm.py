"""Dashboard: the workspace's Mistral settings (owners only). The key is write-only: the page
shows whether one is stored and its last four characters, never the key itself."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from fortranspire_site.errors import ApplicationError
from tenants import llm_credentials
from tenants.access import owner_required


class LlmSettingsForm(forms.Form):
    api_key = forms.CharField(
        required=False,
        label="Mistral API key",
        help_text="leave empty to keep the stored key",
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "size": 40}),
    )
    model = forms.CharField(max_length=100, label="Model", initial="codestral-latest")
    fallback_enabled = forms.BooleanField(
        required=False,
        label="Use the LLM fallback for kernels the translator does not cover",
    )


def _key_hint(tenant) -> str:
    """The stored key's last four characters (decrypted here, only to show them)."""
    credential = llm_credentials.llm_credential_get(tenant=tenant)
    if credential is None or not credential.encrypted_api_key:
        return ""
    try:
        raw = llm_credentials.llm_credential_decrypt(credential=credential)
    except ApplicationError:
        return "????"
    return raw[-4:]


def _page(request, form, *, error: str = "", saved: bool = False, status: int = 200):
    status_obj = llm_credentials.llm_credential_status(tenant=request.tenant)
    return render(
        request,
        "dashboard/llm.html",
        {
            "form": form,
            "llm": status_obj,
            "key_hint": _key_hint(request.tenant),
            "error": error,
            "saved": saved,
            "nav": "llm",
        },
        status=status,
    )


@owner_required
@never_cache
@require_http_methods(["GET", "POST"])
def llm_settings(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        current = llm_credentials.llm_credential_status(tenant=request.tenant)
        form = LlmSettingsForm(
            initial={"model": current.model, "fallback_enabled": current.fallback_enabled}
        )
        return _page(request, form, saved=request.GET.get("saved") == "1")
    form = LlmSettingsForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    data = form.cleaned_data
    try:
        llm_credentials.llm_credential_set(
            tenant=request.tenant,
            api_key=data["api_key"] or None,
            model=data["model"],
            fallback_enabled=data["fallback_enabled"],
            actor=request.user,
        )
    except ApplicationError as exc:
        return _page(request, form, error=exc.message, status=exc.status)
    return redirect("/settings/llm/?saved=1")


@owner_required
@require_POST
def llm_delete(request: HttpRequest) -> HttpResponse:
    llm_credentials.llm_credential_delete(tenant=request.tenant, actor=request.user)
    return redirect("dashboard_llm")
