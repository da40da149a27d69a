"""Reads from the public schema. Every function works from any schema and any thread."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django_tenants.utils import get_public_schema_name, schema_context

from fortranspire_site.errors import NotFound
from tenants.models import ApiKey, Domain, Membership, PrivacyNotice, Tenant


def normalise_host(host: str) -> str:
    """``Demo.Localhost:8000`` -> ``demo.localhost`` (IPv6 literals keep their brackets)."""
    host = (host or "").strip().lower().rstrip(".")
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    return host.split(":", 1)[0]


def tenant_for_host(host: str) -> Tenant | None:
    """The tenant whose domain is ``host`` (port ignored), or None (unknown or public host)."""
    hostname = normalise_host(host)
    if not hostname or hostname in settings.PUBLIC_HOSTS:
        return None
    with schema_context(get_public_schema_name()):
        domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
        return domain.tenant if domain else None


def tenant_domains() -> set[str]:
    with schema_context(get_public_schema_name()):
        return set(Domain.objects.values_list("domain", flat=True))


def tenant_get(*, slug: str) -> Tenant:
    with schema_context(get_public_schema_name()):
        tenant = Tenant.objects.filter(schema_name=slug).first()
    if tenant is None or slug == get_public_schema_name():
        raise NotFound(f"no tenant {slug!r}")
    return tenant


def tenant_list() -> list[Tenant]:
    with schema_context(get_public_schema_name()):
        return list(
            Tenant.objects.exclude(schema_name=get_public_schema_name()).prefetch_related("domains")
        )


def api_key_list(*, tenant: Tenant) -> list[ApiKey]:
    with schema_context(get_public_schema_name()):
        return list(ApiKey.objects.filter(tenant=tenant).order_by("-created_at"))


def api_key_get_by_prefix(*, prefix: str, tenant: Tenant | None = None) -> ApiKey:
    """One key by its display prefix (``fsp_xxxxxxxx``); the full raw key also works."""
    prefix = (prefix or "").strip()[:16]
    with schema_context(get_public_schema_name()):
        keys = ApiKey.objects.select_related("tenant").filter(prefix=prefix)
        if tenant is not None:
            keys = keys.filter(tenant=tenant)
        found = list(keys[:2])
    if not found:
        raise NotFound(f"no API key with prefix {prefix!r}")
    if len(found) > 1:
        raise NotFound(f"prefix {prefix!r} matches several keys; pass --tenant")
    return found[0]


def membership_role(*, user: AbstractBaseUser, tenant: Tenant) -> str | None:
    """'owner', 'member' or None. Superusers count as owners everywhere."""
    if user is None or not user.is_authenticated or tenant is None or not tenant.pk:
        return None
    if user.is_superuser:
        return Membership.ROLE_OWNER
    with schema_context(get_public_schema_name()):
        return (
            Membership.objects.filter(user=user, tenant=tenant)
            .values_list("role", flat=True)
            .first()
        )


def privacy_notice_current(*, tenant: Tenant | None = None) -> PrivacyNotice | None:
    """The latest published notice of ``tenant``, else the platform's (a higher version wins)."""
    with schema_context(get_public_schema_name()):
        published = PrivacyNotice.objects.filter(published_at__isnull=False).order_by("-version")
        if tenant is not None and tenant.pk:
            own = published.filter(tenant=tenant).first()
            if own is not None:
                return own
        return published.filter(tenant=None).first()


def privacy_notice_history(*, tenant: Tenant) -> list[PrivacyNotice]:
    with schema_context(get_public_schema_name()):
        return list(
            PrivacyNotice.objects.filter(tenant=tenant, published_at__isnull=False).order_by(
                "-version"
            )
        )


def privacy_notice_draft(*, tenant: Tenant) -> PrivacyNotice | None:
    with schema_context(get_public_schema_name()):
        return PrivacyNotice.objects.filter(
            tenant=tenant, version=PrivacyNotice.DRAFT_VERSION, published_at=None
        ).first()


def membership_list(*, tenant: Tenant) -> list[Membership]:
    with schema_context(get_public_schema_name()):
        return list(
            Membership.objects.filter(tenant=tenant)
            .select_related("user")
            .order_by("-role", "user__username")  # owners first
        )


def membership_get(*, tenant: Tenant, membership_id: int) -> Membership:
    with schema_context(get_public_schema_name()):
        membership = (
            Membership.objects.select_related("user")
            .filter(tenant=tenant, pk=membership_id)
            .first()
        )
    if membership is None:
        raise NotFound("no such member in this workspace")
    return membership


def api_key_get(*, tenant: Tenant, key_id: int) -> ApiKey:
    with schema_context(get_public_schema_name()):
        key = ApiKey.objects.select_related("tenant").filter(tenant=tenant, pk=key_id).first()
    if key is None:
        raise NotFound("no such API key in this workspace")
    return key
