"""Writes to the public schema: tenants, API keys, privacy notices. Each write leaves an AuditLog row.

Every function is keyword-only, runs in one transaction, and raises ApplicationError (never a
bare IntegrityError) for anything the caller got wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from fortranspire_site.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    ValidationFailed,
)
from tenants.models import (
    ALL_SCOPES,
    SCOPES,
    ApiKey,
    AuditLog,
    Domain,
    Membership,
    PrivacyNotice,
    Tenant,
)

KEY_PREFIX = "fsp_"
KEY_SECRET_BYTES = 32  # 256 bits from secrets
DISPLAY_PREFIX_LEN = len(KEY_PREFIX) + 8
# token_urlsafe(32) is 43 characters of the URL-safe base64 alphabet.
RAW_KEY_RE = re.compile(r"^fsp_[A-Za-z0-9_-]{43}$")
SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
LAST_USED_GRANULARITY = timedelta(minutes=1)


def _actor_fields(actor: AbstractBaseUser | ApiKey | str | None) -> dict:
    if actor is None:
        return {"actor": None, "actor_label": "system"}
    if isinstance(actor, str):
        return {"actor": None, "actor_label": actor[:150]}
    if isinstance(actor, ApiKey):
        return {"actor": None, "actor_label": f"key {actor.prefix}"}
    return {"actor": actor if actor.pk else None, "actor_label": str(actor)[:150]}


def audit(
    *,
    action: str,
    target: str = "",
    tenant: Tenant | None = None,
    actor: AbstractBaseUser | ApiKey | str | None = None,
    details: dict | None = None,
) -> AuditLog:
    """Append one audit row. Callers run it inside their own transaction."""
    with schema_context(get_public_schema_name()):
        return AuditLog.objects.create(
            action=action,
            target=target[:200],
            tenant=tenant if (tenant is not None and tenant.pk) else None,
            details=details or {},
            **_actor_fields(actor),
        )


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Tenants


def _validate_slug(slug: str) -> str:
    slug = (slug or "").strip()
    if not SLUG_RE.match(slug):
        raise ValidationFailed(
            f"invalid tenant slug {slug!r}: use 1-40 characters, lower-case letters, digits and "
            "underscores, starting with a letter (it becomes a PostgreSQL schema name)"
        )
    if slug in settings.RESERVED_TENANT_SLUGS or slug.startswith("pg_"):
        raise ValidationFailed(f"tenant slug {slug!r} is reserved")
    return slug


def _validate_domain(domain: str) -> str:
    domain = (domain or "").strip().lower().rstrip(".")
    if not DOMAIN_RE.match(domain) or "." not in domain and domain != "localhost":
        raise ValidationFailed(f"invalid domain {domain!r}")
    if domain in settings.PUBLIC_HOSTS:
        raise ValidationFailed(f"domain {domain!r} is the public site")
    return domain


def tenant_create(
    *,
    slug: str,
    domain: str,
    name: str | None = None,
    retention_days: int | None = None,
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> Tenant:
    """Create the tenant row, its schema (migrated) and its primary domain, or nothing at all."""
    slug = _validate_slug(slug)
    domain = _validate_domain(domain)
    if Tenant.objects.filter(schema_name=slug).exists():
        raise Conflict(f"tenant {slug!r} already exists")
    if Domain.objects.filter(domain=domain).exists():
        raise Conflict(f"domain {domain!r} is already used by another tenant")

    connection.set_schema_to_public()
    tenant = Tenant(schema_name=slug, name=name or slug)
    if retention_days is not None:
        tenant.retention_days = retention_days
    try:
        with transaction.atomic():
            # Saving creates and migrates the schema (PostgreSQL DDL is transactional, so a failed
            # migration rolls the schema back together with the row).
            tenant.save(verbosity=0)
            Domain.objects.create(domain=domain, tenant=tenant, is_primary=True)
            audit(
                action="tenant.create",
                target=slug,
                tenant=tenant,
                actor=actor,
                details={"domain": domain},
            )
    except IntegrityError as exc:
        _drop_schema_if_orphaned(slug)
        raise Conflict(f"tenant {slug!r} or domain {domain!r} already exists") from exc
    except Exception:
        _drop_schema_if_orphaned(slug)
        raise
    finally:
        connection.set_schema_to_public()
    return tenant


def _drop_schema_if_orphaned(slug: str) -> None:
    """After a failed create: a schema with no tenant row must not linger."""
    if Tenant.objects.filter(schema_name=slug).exists():
        return
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{slug}" CASCADE')


def tenant_delete(*, slug: str, actor: AbstractBaseUser | ApiKey | str | None = None) -> None:
    """Drop the tenant's schema and every public row that belongs to it (audit rows stay)."""
    tenant = Tenant.objects.filter(schema_name=slug).first()
    if tenant is None or slug == get_public_schema_name():
        raise NotFound(f"no tenant {slug!r}")
    connection.set_schema_to_public()
    with transaction.atomic():
        audit(
            action="tenant.delete",
            target=slug,
            tenant=None,
            actor=actor,
            details={"domains": list(tenant.domains.values_list("domain", flat=True))},
        )
        # Cascades remove domains, memberships, keys and the LLM credential; auto_drop_schema
        # drops the schema with its kernel runs.
        tenant.delete(force_drop=True)


def tenant_update(
    *,
    tenant: Tenant,
    name: str | None = None,
    retention_days: int | None = None,
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> Tenant:
    changes = {}
    if name is not None:
        tenant.name = name
        changes["name"] = name
    if retention_days is not None:
        if retention_days < 1:
            raise ValidationFailed("retention_days must be at least 1")
        tenant.retention_days = retention_days
        changes["retention_days"] = retention_days
    with transaction.atomic():
        tenant.save(update_fields=list(changes) or None)
        audit(
            action="tenant.update",
            target=tenant.schema_name,
            tenant=tenant,
            actor=actor,
            details=changes,
        )
    return tenant


def membership_set(
    *,
    tenant: Tenant,
    user: AbstractBaseUser,
    role: str = Membership.ROLE_MEMBER,
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> Membership:
    if role not in dict(Membership.ROLES):
        raise ValidationFailed(f"role must be one of {', '.join(dict(Membership.ROLES))}")
    with transaction.atomic():
        membership, _ = Membership.objects.update_or_create(
            tenant=tenant, user=user, defaults={"role": role}
        )
        audit(
            action="membership.set",
            target=str(user),
            tenant=tenant,
            actor=actor,
            details={"role": role},
        )
    return membership


# ---------------------------------------------------------------------------------------------
# API keys


def _validate_scopes(scopes: list[str] | tuple[str, ...] | None) -> list[str]:
    if scopes is None:
        return list(SCOPES)
    cleaned = []
    for scope in scopes:
        scope = str(scope).strip()
        if not scope:
            continue
        if scope not in ALL_SCOPES:
            raise ValidationFailed(
                f"unknown scope {scope!r}; valid scopes: {', '.join(ALL_SCOPES)}"
            )
        if scope not in cleaned:
            cleaned.append(scope)
    if not cleaned:
        raise ValidationFailed("a key needs at least one scope")
    return cleaned


def api_key_create(
    *,
    tenant: Tenant,
    name: str,
    scopes: list[str] | None,
    expires_at: datetime | None = None,
    created_by: AbstractBaseUser | None = None,
) -> tuple[ApiKey, str]:
    """Mint a key. The raw key is returned once and never stored; only its SHA-256 is kept."""
    if tenant is None or not tenant.pk or tenant.schema_name == get_public_schema_name():
        raise ValidationFailed("keys belong to a tenant")
    name = (name or "").strip() or "key"
    if len(name) > 100:
        raise ValidationFailed("key name is longer than 100 characters")
    scopes = _validate_scopes(scopes)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed("expires_at is in the past")
    raw_key = KEY_PREFIX + secrets.token_urlsafe(KEY_SECRET_BYTES)
    with transaction.atomic():
        key = ApiKey.objects.create(
            tenant=tenant,
            name=name,
            prefix=raw_key[:DISPLAY_PREFIX_LEN],
            digest=hash_key(raw_key),
            scopes=scopes,
            expires_at=expires_at,
            created_by=created_by if (created_by is not None and created_by.pk) else None,
        )
        audit(
            action="api_key.create",
            target=key.prefix,
            tenant=tenant,
            actor=created_by,
            details={
                "name": name,
                "scopes": scopes,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return key, raw_key


def api_key_revoke(*, key: ApiKey, actor: AbstractBaseUser | ApiKey | str | None = None) -> ApiKey:
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().get(pk=key.pk)
        if locked.revoked_at is None:
            locked.revoked_at = timezone.now()
            locked.save(update_fields=["revoked_at"])
        audit(action="api_key.revoke", target=locked.prefix, tenant=locked.tenant, actor=actor)
    key.revoked_at = locked.revoked_at
    return locked


def _env_api_key(tenant: Tenant, raw_key: str) -> ApiKey | None:
    """Backward compatibility: the API_KEY environment variable is a key of the default tenant."""
    env_key = os.environ.get("API_KEY")
    if not env_key or tenant.schema_name != settings.DEFAULT_TENANT_SLUG:
        return None
    if not hmac.compare_digest(env_key.encode(), raw_key.encode()):
        return None
    # Not saved: it has no row, so nothing about it can leak from the database.
    return ApiKey(
        tenant=tenant, name="API_KEY environment variable", prefix="env", scopes=list(SCOPES)
    )


def api_key_authenticate(*, raw_key: str, tenant: Tenant) -> ApiKey:
    """The key behind ``raw_key`` if it is valid for ``tenant``; AuthenticationFailed otherwise.

    The message never says which check failed for a well-formed key, so a caller cannot learn
    whether a key exists on another tenant.
    """
    raw_key = (raw_key or "").strip()
    if tenant is None or tenant.schema_name == get_public_schema_name():
        raise AuthenticationFailed("API keys are only valid on a tenant's host")
    env_key = _env_api_key(tenant, raw_key)
    if env_key is not None:
        return env_key
    # Checked before hashing or touching the database, so malformed input costs nothing.
    if not RAW_KEY_RE.match(raw_key):
        raise AuthenticationFailed("malformed API key (expected fsp_ followed by 43 characters)")
    with schema_context(get_public_schema_name()):
        key = ApiKey.objects.select_related("tenant").filter(digest=hash_key(raw_key)).first()
        if key is None or key.tenant_id != tenant.pk or not key.is_active:
            raise AuthenticationFailed("invalid, expired or revoked API key for this host")
        now = timezone.now()
        # Written at most once a minute: a hot key must not turn every request into a write.
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_GRANULARITY:
            # Conditional UPDATE: of many concurrent requests in the same minute, one writes.
            stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_GRANULARITY)
            ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
    return key


# ---------------------------------------------------------------------------------------------
# Privacy notices


def privacy_notice_publish(
    *,
    body: str,
    sub_processors: list[str] | None = None,
    data_residency: str = "",
    retention_policy: str = "",
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> PrivacyNotice:
    """Publish a new version; it supersedes the previous one, which stays unchanged."""
    body = (body or "").strip()
    if not body:
        raise ValidationFailed("a privacy notice needs a body")
    with schema_context(get_public_schema_name()), transaction.atomic():
        # Locks the table so two publishers cannot both take version N+1.
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {PrivacyNotice._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")
        last = PrivacyNotice.objects.order_by("-version").values_list("version", flat=True).first()
        notice = PrivacyNotice.objects.create(
            version=(last or 0) + 1,
            body=body,
            sub_processors=list(sub_processors or []),
            data_residency=data_residency,
            retention_policy=retention_policy,
            published_at=timezone.now(),
        )
        audit(action="privacy_notice.publish", target=f"v{notice.version}", actor=actor)
    return notice
