"""OAuth clients as a tenant sees them: who is connected, and revoking one. Plus the housekeeping
that keeps open registration bounded.

DOT's tables live in the public schema and one client may connect to several tenants (a Client
ID Metadata Document URL is the same everywhere), so a client belongs to a tenant through its
tokens: each access token, refresh token and authorization code carries the RFC 8707 resource it
was issued for, and that resource is on one tenant's host.

Dashboard and API call ``oauth_client_list(tenant=...)`` and ``oauth_client_revoke(...)``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_grant_model,
    get_refresh_token_model,
)
from oauth2_provider.settings import oauth2_settings

from fortranspire_site.errors import NotFound
from tenants.models import ApiKey, Tenant
from tenants.selectors import normalise_host
from tenants.services import audit


def _tenant_hosts(tenant: Tenant) -> set[str]:
    return {normalise_host(d.domain) for d in tenant.domains.all()}


def resource_hosts(resources: list[str] | None) -> set[str]:
    """The host names (port dropped) of a token's RFC 8707 resources."""
    return {normalise_host(urlsplit(r).netloc) for r in (resources or []) if r}


def bound_to_tenant(resources: list[str] | None, hosts: set[str]) -> bool:
    """A token belongs to a tenant when it is restricted to resources on that tenant's hosts
    only; an unrestricted token (no resource) belongs to no tenant and is accepted nowhere."""
    found = resource_hosts(resources)
    return bool(found) and found <= hosts


def _tenant_tokens(tenant: Tenant, client_id: str | None = None):
    """This tenant's live access tokens, refresh tokens and codes (optionally of one client)."""
    hosts = _tenant_hosts(tenant)
    rows = {}
    for name, model in (
        ("access", get_access_token_model()),
        ("refresh", get_refresh_token_model()),
        ("grant", get_grant_model()),
    ):
        query = model.objects.select_related("application", "user")
        if client_id is not None:
            query = query.filter(application__client_id=client_id)
        if name == "refresh":
            query = query.filter(revoked__isnull=True)
        rows[name] = [row for row in query if bound_to_tenant(row.resource, hosts)]
    return rows


def oauth_client_list(*, tenant: Tenant) -> list[dict[str, Any]]:
    """The OAuth clients holding a live token or code for ``tenant``, newest use first."""
    with schema_context(get_public_schema_name()):
        rows = _tenant_tokens(tenant)
        now = timezone.now()
        clients: dict[str, dict[str, Any]] = {}
        for kind, items in rows.items():
            for row in items:
                app = row.application
                if app is None:
                    continue
                entry = clients.setdefault(
                    app.client_id,
                    {
                        "client_id": app.client_id,
                        "name": app.name or app.client_id,
                        "registration": app.registration_source,
                        "redirect_hosts": sorted(
                            {urlsplit(u).netloc for u in app.redirect_uris.split()}
                        ),
                        "users": set(),
                        "scopes": set(),
                        "active_access_tokens": 0,
                        "active_refresh_tokens": 0,
                        "last_used_at": None,
                        "registered_at": app.created,
                    },
                )
                if row.user is not None:
                    entry["users"].add(row.user.get_username())
                entry["scopes"].update((getattr(row, "scope", "") or "").split())
                if kind == "access" and row.expires > now:
                    entry["active_access_tokens"] += 1
                if kind == "refresh":
                    entry["active_refresh_tokens"] += 1
                used = getattr(row, "updated", None) or getattr(row, "created", None)
                if used and (entry["last_used_at"] is None or used > entry["last_used_at"]):
                    entry["last_used_at"] = used
    result = []
    for entry in clients.values():
        entry["users"] = sorted(entry["users"])
        entry["scopes"] = sorted(entry["scopes"])
        for key in ("last_used_at", "registered_at"):
            entry[key] = entry[key].isoformat() if entry[key] else None
        result.append(entry)
    result.sort(key=lambda e: e["last_used_at"] or "", reverse=True)
    return result


def oauth_client_revoke(
    *,
    tenant: Tenant,
    client_id: str,
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> dict[str, int]:
    """Revoke every token and code ``client_id`` holds for ``tenant`` (other tenants keep theirs).

    The client must go through consent again to come back. Raises NotFound when it holds none.
    """
    with schema_context(get_public_schema_name()), transaction.atomic():
        rows = _tenant_tokens(tenant, client_id=client_id)
        if not any(rows.values()):
            raise NotFound(f"no OAuth client {client_id!r} is connected to this organisation")
        for refresh in rows["refresh"]:
            refresh.revoke()  # also deletes its access token
        for access in rows["access"]:
            get_access_token_model().objects.filter(pk=access.pk).delete()
        for grant in rows["grant"]:
            grant.delete()
        counts = {kind: len(items) for kind, items in rows.items()}
        audit(
            action="oauth_client.revoke",
            target=client_id,
            tenant=tenant,
            actor=actor,
            details=counts,
        )
    return counts


# ---- open registration housekeeping ---------------------------------------------------------


def oauth_registered_client_count() -> int:
    Application = get_application_model()
    with schema_context(get_public_schema_name()):
        return Application.objects.filter(
            registration_source__in=[
                Application.RegistrationSource.DCR,
                Application.RegistrationSource.CIMD,
            ]
        ).count()


def oauth_clients_expire_unused(*, older_than_s: int | None = None) -> int:
    """Delete self-registered clients that never got a code or a token within the TTL.

    The registration access token DCR hands out does not count as use. Returns how many went.
    """
    ttl = settings.OAUTH_UNUSED_CLIENT_TTL_S if older_than_s is None else older_than_s
    Application = get_application_model()
    AccessToken = get_access_token_model()
    RefreshToken = get_refresh_token_model()
    Grant = get_grant_model()
    registration_scope = oauth2_settings.DCR_REGISTRATION_SCOPE
    with schema_context(get_public_schema_name()):
        unused = (
            Application.objects.filter(
                registration_source__in=[
                    Application.RegistrationSource.DCR,
                    Application.RegistrationSource.CIMD,
                ],
                created__lt=timezone.now() - timedelta(seconds=ttl),
            )
            .exclude(Exists(Grant.objects.filter(application=OuterRef("pk"))))
            .exclude(Exists(RefreshToken.objects.filter(application=OuterRef("pk"))))
            .exclude(
                Exists(
                    AccessToken.objects.filter(application=OuterRef("pk")).exclude(
                        scope=registration_scope
                    )
                )
            )
        )
        ids = list(unused.values_list("pk", flat=True))
        Application.objects.filter(pk__in=ids).delete()
    return len(ids)


# ---- resource server side -------------------------------------------------------------------


def oauth_token_authenticate(*, raw_token: str, tenant: Tenant):
    """The live access token ``raw_token`` for ``tenant``, or raise AuthenticationFailed.

    Looked up by its SHA-256 checksum (the raw token is not stored). Refused when expired, when
    its client is gone, when it is not bound to this tenant's resource (a token of another
    tenant, or an unrestricted one such as DCR's registration token), or when its user is no
    longer a member of the tenant.
    """
    import hashlib

    from fortranspire_site.errors import AuthenticationFailed
    from tenants.selectors import membership_role

    refused = AuthenticationFailed("unknown, expired or revoked access token")
    if not raw_token or len(raw_token) > 512:
        raise refused
    checksum = hashlib.sha256(raw_token.encode("utf-8")).hexdigest()
    with schema_context(get_public_schema_name()):
        row = (
            get_access_token_model()
            .objects.select_related("application", "user")
            .filter(token_checksum=checksum)
            .first()
        )
        if row is None or row.application is None or row.is_expired():
            raise refused
        if not bound_to_tenant(row.resource, _tenant_hosts(tenant)):
            raise refused
        if row.user is None or membership_role(user=row.user, tenant=tenant) is None:
            raise refused
    return row
