"""Who may open a dashboard page: members of the host's tenant, and for some pages its owners.

Both checks run on the server for every request; hiding a link is only a courtesy. A user of
tenant A is a stranger on B's host: 403, whatever their role on A.
"""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from tenants.auth import caller_for_user
from tenants.models import OWNER_SCOPE


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _login_response(request: HttpRequest) -> HttpResponse:
    if is_htmx(request):
        # A 302 would be followed by the XHR and the login page swapped into a card:
        # make the whole page go to the login form instead.
        response = HttpResponse(status=401)
        response["HX-Redirect"] = f"{settings.LOGIN_URL}?next=/"
        return response
    return redirect_to_login(request.get_full_path())


def _forbidden(request: HttpRequest, reason: str) -> HttpResponse:
    return render(request, "dashboard/forbidden.html", {"reason": reason}, status=403)


def member_required(view):
    """Logged in AND a member of this host's tenant; sets ``request.caller`` and ``is_owner``."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return _login_response(request)
        tenant = getattr(request, "tenant", None)
        if tenant is None or not tenant.pk:
            return _forbidden(request, "not_member")
        caller = caller_for_user(user=request.user, tenant=tenant)
        if caller is None:
            return _forbidden(request, "not_member")
        request.caller = caller
        request.is_owner = OWNER_SCOPE in caller.scopes
        return view(request, *args, **kwargs)

    return wrapper


def owner_required(view):
    """member_required, and the member is an owner of this tenant (403 otherwise)."""

    @wraps(view)
    def owner_only(request: HttpRequest, *args, **kwargs):
        if not request.is_owner:
            return _forbidden(request, "not_owner")
        return view(request, *args, **kwargs)

    return member_required(owner_only)
