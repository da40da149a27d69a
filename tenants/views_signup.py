"""Self-service sign-up on the public host, and the one-time hop onto the new workspace's host.

Session cookies belong to one host, so the owner created on ``localhost`` is not logged in on
``acme.localhost``. The sign-up answer links to ``/login/token/?t=...`` on the new host: a
signed token (5 minutes, spent by the login it performs; tenants.services.login_token_make).
Opening the link shows a "Continue as <user>" button; only that same-host POST (CSRF-checked)
logs in, so a link pasted into someone else's browser cannot silently log them into our account.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from fortranspire_site.errors import ApplicationError
from tenants import services
from tenants.throttle import client_address, throttle_hit


class SignupForm(forms.Form):
    name = forms.CharField(max_length=200, label="Organisation name")
    slug = forms.CharField(
        max_length=30,
        label="Address",
        help_text="3-30 lower-case letters and digits; becomes your workspace's host name",
        widget=forms.TextInput(attrs={"autocapitalize": "none", "spellcheck": "false"}),
    )
    username = forms.CharField(max_length=150, label="Your username")
    password = forms.CharField(
        label="Password",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="at least 8 characters, not a common password",
    )
    password2 = forms.CharField(
        label="Password again",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_slug(self) -> str:
        try:
            return services.signup_slug_validate(self.cleaned_data["slug"])
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None

    def clean(self):
        data = super().clean()
        if data.get("password") and data.get("password") != data.get("password2"):
            self.add_error("password2", "the two passwords differ")
        return data


def _workspace_origin(request: HttpRequest, slug: str) -> str:
    port = request.get_port()
    default = "443" if request.is_secure() else "80"
    suffix = "" if port in ("", default) else f":{port}"
    return f"{request.scheme}://{slug}.{settings.TENANT_DOMAIN_SUFFIX}{suffix}"


@never_cache
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.SIGNUP_ENABLED:
        return render(request, "public/signup_closed.html", {}, status=403)
    if request.method == "GET":
        return render(request, "public/signup.html", {"form": SignupForm(), "suffix": _suffix()})
    form = SignupForm(request.POST)
    context = {"form": form, "suffix": _suffix()}
    try:
        # Counted before validation: probing slugs is throttled as much as creating them.
        throttle_hit(
            bucket="signup",
            key=client_address(request),
            limit=settings.SIGNUP_PER_HOUR,
            window_s=3600,
        )
    except ApplicationError as exc:
        context["error"] = exc.message
        response = render(request, "public/signup.html", context, status=429)
        response["Retry-After"] = str(exc.extra.get("retry_after", 60))
        return response
    if not form.is_valid():
        return render(request, "public/signup.html", context, status=400)
    data = form.cleaned_data
    try:
        tenant, owner = services.organisation_signup(
            name=data["name"],
            slug=data["slug"],
            username=data["username"],
            password=data["password"],
        )
    except ApplicationError as exc:
        context["error"] = exc.message
        return render(request, "public/signup.html", context, status=exc.status)
    origin = _workspace_origin(request, tenant.schema_name)
    token = services.login_token_make(user=owner, tenant=tenant)
    return render(
        request,
        "public/signup_done.html",
        {
            "tenant": tenant,
            "owner": owner,
            "origin": origin,
            "token": token,
            "max_age_min": services.LOGIN_TOKEN_MAX_AGE_S // 60,
        },
        status=201,
    )


def _suffix() -> str:
    return settings.TENANT_DOMAIN_SUFFIX


@never_cache
@require_http_methods(["GET", "POST"])
def login_with_token(request: HttpRequest) -> HttpResponse:
    """On the workspace's host: confirm (GET), then log in with the one-time token (POST)."""
    token = request.POST.get("t") if request.method == "POST" else request.GET.get("t")
    try:
        user = services.login_token_consume(token=token or "", tenant=request.tenant)
    except ApplicationError as exc:
        return render(
            request,
            "registration/login_token.html",
            {"error": exc.message, "username": ""},
            status=exc.status,
        )
    if request.method == "GET":
        return render(request, "registration/login_token.html", {"token": token, "username": user})
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return redirect("/?welcome=1")
