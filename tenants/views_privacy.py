"""Dashboard: the workspace's privacy notice (owners only). Edit a draft, preview it, publish it
as the next immutable version; /privacy shows the latest published one."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from fortranspire_site.errors import ApplicationError
from tenants import selectors, services
from tenants.access import owner_required


class PrivacyDraftForm(forms.Form):
    body = forms.CharField(
        label="Notice",
        max_length=services.MAX_NOTICE_CHARS,
        widget=forms.Textarea(attrs={"rows": 12}),
    )
    data_residency = forms.CharField(required=False, max_length=200, label="Data residency")
    retention_policy = forms.CharField(
        required=False,
        max_length=5000,
        label="Retention",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    sub_processors = forms.CharField(
        required=False,
        label="Sub-processors",
        help_text="one per line",
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def processors(self) -> list[str]:
        text = self.cleaned_data.get("sub_processors") or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


def _initial(notice) -> dict:
    if notice is None:
        return {}
    return {
        "body": notice.body,
        "data_residency": notice.data_residency,
        "retention_policy": notice.retention_policy,
        "sub_processors": "\n".join(notice.sub_processors or []),
    }


def _page(request, form, *, error: str = "", published=None, status: int = 200):
    tenant = request.tenant
    history = selectors.privacy_notice_history(tenant=tenant)
    return render(
        request,
        "dashboard/privacy_edit.html",
        {
            "form": form,
            "draft": selectors.privacy_notice_draft(tenant=tenant),
            "history": history,
            "next_version": (history[0].version if history else 0) + 1,
            "error": error,
            "published": published,
            "nav": "privacy",
        },
        status=status,
    )


@owner_required
@never_cache
@require_http_methods(["GET", "POST"])
def privacy_edit(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant
    if request.method == "GET":
        draft = selectors.privacy_notice_draft(tenant=tenant)
        source = draft or selectors.privacy_notice_current(tenant=tenant)
        published = None
        if request.GET.get("published", "").isdigit():
            published = int(request.GET["published"])
        return _page(request, PrivacyDraftForm(initial=_initial(source)), published=published)
    form = PrivacyDraftForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    action = request.POST.get("action", "save")
    try:
        services.privacy_notice_draft_save(
            tenant=tenant,
            body=form.cleaned_data["body"],
            sub_processors=form.processors(),
            data_residency=form.cleaned_data["data_residency"],
            retention_policy=form.cleaned_data["retention_policy"],
            actor=request.user,
        )
        if action == "publish":
            notice = services.privacy_notice_publish_draft(tenant=tenant, actor=request.user)
            return redirect(f"/settings/privacy/?published={notice.version}")
    except ApplicationError as exc:
        return _page(request, form, error=exc.message, status=exc.status)
    return redirect("/settings/privacy/#preview")
