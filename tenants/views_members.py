"""Dashboard: the workspace's members (owners only). Add (generated password shown once),
change role, remove; the last owner can neither leave nor be demoted (tenants.services)."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from fortranspire_site.errors import ApplicationError
from tenants import selectors, services
from tenants.access import owner_required
from tenants.models import Membership


class MemberAddForm(forms.Form):
    username = forms.CharField(
        max_length=150, label="Username", help_text="a new account; its password is generated"
    )
    role = forms.ChoiceField(choices=Membership.ROLES, initial=Membership.ROLE_MEMBER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.ROLES)


def _members_page(request, form, *, added=None, error: str = "", status: int = 200):
    return render(
        request,
        "dashboard/members.html",
        {
            "form": form,
            "members": selectors.membership_list(tenant=request.tenant),
            "roles": Membership.ROLES,
            "added": added,
            "error": error,
            "nav": "members",
        },
        status=status,
    )


@owner_required
@never_cache
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _members_page(request, MemberAddForm())
    form = MemberAddForm(request.POST)
    if not form.is_valid():
        return _members_page(request, form, status=400)
    try:
        membership, password = services.member_add(
            tenant=request.tenant,
            username=form.cleaned_data["username"],
            role=form.cleaned_data["role"],
            actor=request.user,
        )
    except ApplicationError as exc:
        form.add_error("username", exc.message)
        return _members_page(request, form, status=exc.status)
    return _members_page(
        request,
        MemberAddForm(),
        added={"membership": membership, "password": password},
        status=201,
    )


@owner_required
@require_POST
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        return _members_page(request, MemberAddForm(), error="choose owner or member", status=400)
    try:
        services.member_role_change(
            tenant=request.tenant,
            membership_id=membership_id,
            role=form.cleaned_data["role"],
            actor=request.user,
        )
    except ApplicationError as exc:
        return _members_page(request, MemberAddForm(), error=exc.message, status=exc.status)
    return redirect("dashboard_members")


@owner_required
@require_POST
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:
    try:
        services.member_remove(
            tenant=request.tenant, membership_id=membership_id, actor=request.user
        )
    except ApplicationError as exc:
        return _members_page(request, MemberAddForm(), error=exc.message, status=exc.status)
    return redirect("dashboard_members")
