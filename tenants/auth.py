"""Who is calling, for the HTTP edges: API keys (Bearer) and dashboard sessions, bound to the
tenant of the Host header. Services receive the resulting Caller's key/user, never the request."""

from __future__ import annotations

from dataclasses import dataclass, field

from axes.backends import AxesStandaloneBackend
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from fortranspire_site.errors import AuthenticationFailed, PermissionDenied
from tenants.models import OWNER_SCOPE, SCOPES, ApiKey, Membership, Tenant
from tenants.selectors import membership_role
from tenants.services import api_key_authenticate


@dataclass
class Caller:
    tenant: Tenant
    scopes: frozenset[str] = field(default_factory=frozenset)
    api_key: ApiKey | None = None
    user: AbstractBaseUser | None = None

    @property
    def label(self) -> str:
        if self.api_key is not None:
            return f"key {self.api_key.prefix}"
        if self.user is not None:
            return f"user {self.user.get_username()}"
        return "anonymous"

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise PermissionDenied(
                f"this {'key' if self.api_key is not None else 'account'} lacks the "
                f"{scope!r} scope",
                extra={"required_scope": scope},
            )


def request_tenant(request: HttpRequest) -> Tenant:
    tenant = getattr(request, "tenant", None)
    if tenant is None or tenant.pk is None:
        raise AuthenticationFailed("this host serves no tenant")
    return tenant


def caller_for_key(*, raw_key: str, tenant: Tenant) -> Caller:
    key = api_key_authenticate(raw_key=raw_key, tenant=tenant)
    return Caller(tenant=tenant, scopes=frozenset(key.scopes or []), api_key=key)


def caller_for_user(*, user: AbstractBaseUser, tenant: Tenant) -> Caller | None:
    """A logged-in member acts with every scope; owners also get 'owner'."""
    role = membership_role(user=user, tenant=tenant)
    if role is None:
        return None
    scopes = set(SCOPES)
    if role == Membership.ROLE_OWNER:
        scopes.add(OWNER_SCOPE)
    return Caller(tenant=tenant, scopes=frozenset(scopes), user=user)


# What django-axes counts wrong API keys under: one "username" for every key, so guesses from
# one address are counted together whichever key they try.
API_KEY_CREDENTIALS = {"username": "<api key>"}
API_KEY_LOCKOUT_RETRY_S = 15 * 60


class ApiKeyBearer(HttpBearer):
    """``Authorization: Bearer fsp_...``, valid only on the host of the key's tenant.

    Wrong keys are failed logins for django-axes: after AXES_FAILURE_LIMIT of them from one
    address, even a right key is refused (429) until the cool-off has passed.
    """

    def authenticate(self, request: HttpRequest, token: str) -> Caller:
        # Checked before hashing: a locked-out address costs one lookup, no key comparison.
        api_key_guessing_check(request)
        try:
            return caller_for_key(raw_key=token, tenant=request_tenant(request))
        except AuthenticationFailed:
            api_key_guess_record(request)
            raise


def api_key_guessing_check(request: HttpRequest) -> None:
    """RateLimited when this address has sent too many wrong keys (REST and MCP alike)."""
    from axes.handlers.proxy import AxesProxyHandler

    from fortranspire_site.errors import RateLimited

    if AxesProxyHandler.is_locked(request, API_KEY_CREDENTIALS):
        raise RateLimited(
            "too many wrong API keys from this address; try again later",
            retry_after=API_KEY_LOCKOUT_RETRY_S,
        )


def api_key_guess_record(request: HttpRequest) -> None:
    """Count one wrong key (or access token) from this request's address."""
    from django.contrib.auth.signals import user_login_failed

    user_login_failed.send(sender=ApiKeyBearer, credentials=API_KEY_CREDENTIALS, request=request)


def request_from_address(address: str, *, path: str, user_agent: str = "") -> HttpRequest:
    """A bare HttpRequest carrying what django-axes keys on, for callers outside Django's
    request cycle (the MCP apps answer before any Django view runs)."""
    request = HttpRequest()
    request.method = "POST"
    request.path = request.path_info = path
    request.META["REMOTE_ADDR"] = address
    request.META["HTTP_USER_AGENT"] = user_agent[:255]
    return request


class TenantSession(SessionAuth):
    """A dashboard session of a member of the host's tenant (CSRF-checked by ninja)."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Caller | None:
        user = getattr(request, "user", None)
        tenant = getattr(request, "tenant", None)
        if user is None or not user.is_authenticated or tenant is None or tenant.pk is None:
            return None
        return caller_for_user(user=user, tenant=tenant)


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' lock-out check for logins that come with a request (the login form, the
    admin, OAuth). Without a request (``Client.login`` in tests, management commands) there is
    no address to count, so it stays out of the way instead of refusing."""

    def authenticate(self, request=None, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
