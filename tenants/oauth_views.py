"""The OAuth 2.1 authorization server of every tenant host, on django-oauth-toolkit (DOT).

DOT does the protocol: RFC 8414 metadata, RFC 7591 registration, Client ID Metadata Documents,
authorization code + PKCE, refresh rotation, RFC 7009 revocation, RFC 8707 resource indicators,
checksum-only token storage. What is ours is the multi-tenant policy around it:

- the issuer is the tenant's origin (DOT derives it from the request), and only tenant hosts
  serve these endpoints;
- every token is bound to this tenant's MCP resource: an authorization request without
  ``resource`` gets ``<origin>/mcp``, and a resource on another origin is refused
  (``invalid_target``), so a token issued here is only accepted on this host;
- only members of the tenant may approve, and they pick the scopes on the consent page;
- open registration is bounded (per-IP rate, cap on stored clients, unused clients expire) and
  redirect URIs must be https or http on a loopback address.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from oauth2_provider.views import (
    AuthorizationView,
    DynamicClientRegistrationView,
    OAuthServerMetadataView,
    RevokeTokenView,
    TokenView,
)

from tenants.models import SCOPES
from tenants.oauth_services import oauth_clients_expire_unused, oauth_registered_client_count
from tenants.selectors import membership_role

MCP_RESOURCE_PATHS = ("/mcp", "/sse")
LOOPBACK_NAMES = {"localhost"}


def tenant_origin(request: HttpRequest) -> str:
    """``scheme://host[:port]`` as the client addressed this tenant (the issuer)."""
    return f"{request.scheme}://{request.get_host()}"


def _is_tenant_host(request: HttpRequest) -> bool:
    tenant = getattr(request, "tenant", None)
    return tenant is not None and tenant.pk is not None


def _not_here() -> JsonResponse:
    return JsonResponse(
        {"error": "not_found", "error_description": "OAuth is served on tenant hosts only."},
        status=404,
    )


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` may not be a redirect URI (None when it may): https, or http on loopback."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return f"{uri!r} is not a URL"
    if parts.fragment:
        return f"{uri!r} has a fragment; redirect URIs may not"
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname.lower()
        if host in LOOPBACK_NAMES:
            return None
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return f"{uri!r} uses http on a host that is not loopback; use https"
    return f"{uri!r} must be an https URL (http only on 127.0.0.1, [::1] or localhost)"


def resource_problem(resource: str, origin: str) -> str | None:
    """Why ``resource`` is not this tenant's MCP resource (None when it is)."""
    parts = urlsplit(resource)
    own = urlsplit(origin)
    if (parts.scheme, parts.netloc.lower()) != (own.scheme, own.netloc.lower()):
        return f"The resource {resource!r} is not served by this organisation ({origin})."
    if parts.path.rstrip("/") not in ("", *MCP_RESOURCE_PATHS) or parts.query or parts.fragment:
        return f"The resource {resource!r} is not an MCP endpoint of {origin} (/mcp or /sse)."
    return None


def _oauth_error(error: str, description: str, status: int = 400, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


# ---- metadata -------------------------------------------------------------------------------


class TenantServerMetadataView(OAuthServerMetadataView):
    """RFC 8414 metadata; DOT builds it from the request, so the issuer is the tenant origin."""

    def get(self, request, *args, **kwargs):
        if not _is_tenant_host(request):
            return _not_here()
        response = super().get(request, *args, **kwargs)
        data = json.loads(response.content)
        origin = tenant_origin(request)
        # Advertise what this server really accepts (DOT lists the PKCE methods it knows).
        data["code_challenge_methods_supported"] = ["S256"]
        data["scopes_supported"] = list(SCOPES)
        data["resource_documentation"] = f"{origin}/api/v1/docs"
        data["service_documentation"] = f"{origin}/.well-known/mcp/server-card.json"
        data["op_policy_uri"] = f"{origin}/privacy"
        result = JsonResponse(data)
        result["Cache-Control"] = "public, max-age=300"
        result["Access-Control-Allow-Origin"] = "*"
        return result


# ---- registration ---------------------------------------------------------------------------


def _client_ip(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


def registration_rate_limited(request: HttpRequest) -> int | None:
    """Seconds to wait when this IP registered too many clients this hour, else None.

    A fixed one-hour window in the Django cache (per process unless a shared cache is set).
    """
    limit = settings.OAUTH_REGISTRATIONS_PER_IP_PER_HOUR
    if limit <= 0:
        return None
    import time

    now = int(time.time())
    window = now // 3600
    key = f"oauth:dcr:{_client_ip(request)}:{window}"
    cache.add(key, 0, timeout=3600)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=3600)
        count = 1
    if count > limit:
        return (window + 1) * 3600 - now
    return None


class TenantClientRegistrationView(DynamicClientRegistrationView):
    """RFC 7591 registration, open to anyone, with the limits open registration needs."""

    def post(self, request, *args, **kwargs):
        if not _is_tenant_host(request):
            return _not_here()
        retry_after = registration_rate_limited(request)
        if retry_after is not None:
            return _oauth_error(
                "too_many_requests",
                "Too many client registrations from this address; try again later.",
                status=429,
                Retry_After=str(retry_after),
            )
        try:
            metadata = json.loads(request.body or b"{}")
        except ValueError:
            metadata = None
        if isinstance(metadata, dict):
            uris = metadata.get("redirect_uris")
            if isinstance(uris, list):
                for uri in uris:
                    problem = redirect_uri_problem(uri) if isinstance(uri, str) else None
                    if problem:
                        return _oauth_error("invalid_redirect_uri", problem)
        oauth_clients_expire_unused()
        if oauth_registered_client_count() >= settings.OAUTH_MAX_REGISTERED_CLIENTS:
            return _oauth_error(
                "temporarily_unavailable",
                "This server holds as many registered clients as it allows; try again later.",
                status=503,
                Retry_After="3600",
            )
        return super().post(request, *args, **kwargs)


# ---- authorization + consent ----------------------------------------------------------------


class TenantAuthorizationView(AuthorizationView):
    """Login with the tenant's dashboard account, then the consent page (templates/oauth)."""

    template_name = "oauth/consent.html"

    def dispatch(self, request, *args, **kwargs):
        if not _is_tenant_host(request):
            return _not_here()
        if (
            request.user.is_authenticated
            and membership_role(user=request.user, tenant=request.tenant) is None
        ):
            return render(request, "oauth/error.html", {"error": _NOT_A_MEMBER}, status=403)
        return super().dispatch(request, *args, **kwargs)

    def _refusal(self, request: HttpRequest, uris: list[str], resources: list[str]):
        for uri in uris:
            problem = redirect_uri_problem(uri)
            if problem:
                # Never redirect to a URI that failed the policy: show the error here.
                return {"error": "invalid_request", "description": problem}
        origin = tenant_origin(request)
        for resource in resources:
            problem = resource_problem(resource, origin)
            if problem:
                return {"error": "invalid_target", "description": problem}
        return None

    def get(self, request, *args, **kwargs):
        if "resource" not in request.GET:
            # RFC 8707: a token is always bound to this tenant's MCP resource.
            query = request.GET.copy()
            query["resource"] = f"{tenant_origin(request)}/mcp"
            request.GET = query
        refusal = self._refusal(
            request,
            [u for u in [request.GET.get("redirect_uri")] if u],
            request.GET.getlist("resource"),
        )
        if refusal:
            return render(request, "oauth/error.html", {"error": refusal}, status=400)
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        requested = set(self.oauth2_data.get("scopes") or kwargs.get("scopes") or [])
        descriptions = settings.OAUTH_SCOPE_DESCRIPTIONS
        context["scope_choices"] = [
            {"name": s, "description": descriptions[s], "requested": s in requested} for s in SCOPES
        ]
        redirect_uri = self.oauth2_data.get("redirect_uri") or ""
        context["redirect_host"] = urlsplit(redirect_uri).netloc
        context["tenant"] = self.request.tenant
        return context

    def post(self, request, *args, **kwargs):
        refusal = self._refusal(
            request,
            [u for u in [request.POST.get("redirect_uri")] if u],
            (request.POST.get("resource") or "").split(),
        )
        if refusal:
            return render(request, "oauth/error.html", {"error": refusal}, status=400)
        if not (request.POST.get("resource") or "").split():
            return render(
                request,
                "oauth/error.html",
                {"error": {"error": "invalid_target", "description": "No resource to bind to."}},
                status=400,
            )
        # The user picks among the requested scopes; the hidden field keeps what was asked.
        requested = (request.POST.get("scope") or "").split()
        chosen = [s for s in request.POST.getlist("scopes") if s in requested and s in SCOPES]
        data = request.POST.copy()
        if chosen:
            data["scope"] = " ".join(chosen)
        elif "allow" in data:
            # Nothing ticked: the same as denying (no token without a scope).
            del data["allow"]
        request.POST = data
        return super().post(request, *args, **kwargs)


_NOT_A_MEMBER = {
    "error": "access_denied",
    "description": "Your account is not a member of this organisation; ask one of its owners.",
}


# ---- token + revocation ---------------------------------------------------------------------


class TenantTokenView(TokenView):
    """The token endpoint; a ``resource`` for another origin is refused before DOT runs."""

    def post(self, request, *args, **kwargs):
        if not _is_tenant_host(request):
            return _not_here()
        origin = tenant_origin(request)
        for resource in request.POST.getlist("resource"):
            problem = resource_problem(resource, origin)
            if problem:
                return _oauth_error("invalid_target", problem)
        return super().post(request, *args, **kwargs)


class TenantRevokeTokenView(RevokeTokenView):
    def post(self, request, *args, **kwargs):
        if not _is_tenant_host(request):
            return _not_here()
        return super().post(request, *args, **kwargs)


def no_openid_configuration(request: HttpRequest) -> HttpResponse:
    """This server is OAuth only (no OpenID Connect): say so in JSON, not an HTML 404."""
    return _oauth_error(
        "not_found",
        "No OpenID Connect here; see /.well-known/oauth-authorization-server.",
        status=404,
    )
