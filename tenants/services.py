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
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from fortranspire_site.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
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
# Sign-up slugs are one DNS label as well as a schema name: no underscores, no hyphens.
SIGNUP_SLUG_RE = re.compile(r"^[a-z][a-z0-9]{2,29}$")
USERNAME_RE = re.compile(r"^[\w.@+-]{3,150}$")
MAX_NOTICE_CHARS = 50_000
LOGIN_TOKEN_MAX_AGE_S = 300
DEFAULT_SUB_PROCESSORS = ["Mistral AI (only when the workspace enables the LLM fallback)"]
DEFAULT_TENANT_PRIVACY_BODY = (
    "This workspace keeps the Fortran sources you submit, the generated code and the "
    "verification reports in its own database schema, visible only to its members and to "
    "API keys its owners create. Sources are sent to Mistral AI only when an owner enables "
    "the LLM fallback with the workspace's own key. Owners can delete the history at any time."
)


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


def _clean_notice_fields(
    body: str, sub_processors: list[str] | None, data_residency: str, retention_policy: str
) -> dict:
    body = (body or "").strip()
    if not body:
        raise ValidationFailed("a privacy notice needs a body")
    if len(body) > MAX_NOTICE_CHARS:
        raise ValidationFailed(f"the notice is longer than {MAX_NOTICE_CHARS} characters")
    processors = [str(p).strip()[:200] for p in (sub_processors or []) if str(p).strip()]
    return {
        "body": body,
        "sub_processors": processors[:50],
        "data_residency": (data_residency or "").strip()[:200],
        "retention_policy": (retention_policy or "").strip()[:5000],
    }


def privacy_notice_publish(
    *,
    body: str,
    sub_processors: list[str] | None = None,
    data_residency: str = "",
    retention_policy: str = "",
    tenant: Tenant | None = None,
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> PrivacyNotice:
    """Publish a new version (the platform's, or ``tenant``'s); earlier versions stay unchanged."""
    fields = _clean_notice_fields(body, sub_processors, data_residency, retention_policy)
    with schema_context(get_public_schema_name()), transaction.atomic():
        # Locks the table so two publishers cannot both take version N+1.
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {PrivacyNotice._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")
        last = (
            PrivacyNotice.objects.filter(tenant=tenant, published_at__isnull=False)
            .order_by("-version")
            .values_list("version", flat=True)
            .first()
        )
        notice = PrivacyNotice.objects.create(
            tenant=tenant, version=(last or 0) + 1, published_at=timezone.now(), **fields
        )
        audit(
            action="privacy_notice.publish",
            target=f"v{notice.version}",
            tenant=tenant,
            actor=actor,
        )
    return notice


def privacy_notice_draft_save(
    *,
    tenant: Tenant,
    body: str,
    sub_processors: list[str] | None = None,
    data_residency: str = "",
    retention_policy: str = "",
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> PrivacyNotice:
    """Create or overwrite the tenant's one draft (version 0; never shown on /privacy)."""
    fields = _clean_notice_fields(body, sub_processors, data_residency, retention_policy)
    with schema_context(get_public_schema_name()), transaction.atomic():
        draft, created = PrivacyNotice.objects.select_for_update().update_or_create(
            tenant=tenant,
            version=PrivacyNotice.DRAFT_VERSION,
            published_at=None,
            defaults=fields,
        )
        audit(
            action="privacy_notice.draft",
            target=tenant.schema_name,
            tenant=tenant,
            actor=actor,
            details={"created": created},
        )
    return draft


def privacy_notice_publish_draft(
    *, tenant: Tenant, actor: AbstractBaseUser | ApiKey | str | None = None
) -> PrivacyNotice:
    """Publish the tenant's draft as its next version; the draft is consumed."""
    with schema_context(get_public_schema_name()), transaction.atomic():
        draft = (
            PrivacyNotice.objects.select_for_update()
            .filter(tenant=tenant, version=PrivacyNotice.DRAFT_VERSION, published_at=None)
            .first()
        )
        if draft is None:
            raise NotFound("there is no draft to publish; save one first")
        notice = privacy_notice_publish(
            body=draft.body,
            sub_processors=draft.sub_processors,
            data_residency=draft.data_residency,
            retention_policy=draft.retention_policy,
            tenant=tenant,
            actor=actor,
        )
        draft.delete()
    return notice


# ---------------------------------------------------------------------------------------------
# Members


def _generated_password() -> str:
    # 16 URL-safe characters (96 bits): shown once to the owner who hands it over.
    return secrets.token_urlsafe(12)


def _validate_username(username: str) -> str:
    username = (username or "").strip()
    if not USERNAME_RE.match(username):
        raise ValidationFailed(
            "a username is 3-150 characters: letters, digits and @ . + - _ (no spaces)"
        )
    if get_user_model().objects.filter(username__iexact=username).exists():
        raise Conflict(f"the username {username!r} is taken; choose another")
    return username


def member_add(
    *,
    tenant: Tenant,
    username: str,
    role: str = Membership.ROLE_MEMBER,
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> tuple[Membership, str]:
    """A new account with a generated password, member of ``tenant``; returns (membership, password).

    Only new accounts: adding an existing username would let any owner enrol someone else's
    account into their workspace.
    """
    if role not in dict(Membership.ROLES):
        raise ValidationFailed(f"role must be one of {', '.join(dict(Membership.ROLES))}")
    password = _generated_password()
    with schema_context(get_public_schema_name()), transaction.atomic():
        username = _validate_username(username)
        user = get_user_model().objects.create_user(username=username, password=password)
        membership = Membership.objects.create(tenant=tenant, user=user, role=role)
        audit(
            action="membership.add",
            target=username,
            tenant=tenant,
            actor=actor,
            details={"role": role},
        )
    return membership, password


def _membership_locked(tenant: Tenant, membership_id: int) -> Membership:
    # Every owner row of the tenant is locked, so two owners demoting each other at once cannot
    # both pass the "another owner remains" check.
    owners = Membership.objects.select_for_update().filter(
        tenant=tenant, role=Membership.ROLE_OWNER
    )
    list(owners)
    membership = (
        Membership.objects.select_for_update()
        .select_related("user")
        .filter(tenant=tenant, pk=membership_id)
        .first()
    )
    if membership is None:
        raise NotFound("no such member in this workspace")
    return membership


def _is_last_owner(membership: Membership) -> bool:
    if membership.role != Membership.ROLE_OWNER:
        return False
    others = Membership.objects.filter(tenant=membership.tenant_id, role=Membership.ROLE_OWNER)
    return not others.exclude(pk=membership.pk).exists()


def member_role_change(
    *,
    tenant: Tenant,
    membership_id: int,
    role: str,
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> Membership:
    if role not in dict(Membership.ROLES):
        raise ValidationFailed(f"role must be one of {', '.join(dict(Membership.ROLES))}")
    with schema_context(get_public_schema_name()), transaction.atomic():
        membership = _membership_locked(tenant, membership_id)
        if role != Membership.ROLE_OWNER and _is_last_owner(membership):
            raise Conflict("the last owner cannot become a member; make someone else owner first")
        previous = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit(
            action="membership.role",
            target=str(membership.user),
            tenant=tenant,
            actor=actor,
            details={"from": previous, "to": role},
        )
    return membership


def member_remove(
    *,
    tenant: Tenant,
    membership_id: int,
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> None:
    """Take the account out of the workspace (the account itself stays: it may belong to others)."""
    with schema_context(get_public_schema_name()), transaction.atomic():
        membership = _membership_locked(tenant, membership_id)
        if _is_last_owner(membership):
            raise Conflict("the last owner cannot be removed")
        username = str(membership.user)
        membership.delete()
        audit(action="membership.remove", target=username, tenant=tenant, actor=actor)


# ---------------------------------------------------------------------------------------------
# Sign-up


def signup_slug_validate(slug: str) -> str:
    """A slug a new organisation may take: a schema name that is also one DNS label, not taken."""
    slug = (slug or "").strip().lower()
    if not SIGNUP_SLUG_RE.match(slug):
        raise ValidationFailed(
            "the address must be 3-30 characters: lower-case letters and digits, "
            "starting with a letter"
        )
    slug = _validate_slug(slug)
    if slug in settings.SIGNUP_RESERVED_SLUGS:
        raise ValidationFailed(f"{slug!r} is reserved; choose another")
    domain = f"{slug}.{settings.TENANT_DOMAIN_SUFFIX}"
    with schema_context(get_public_schema_name()):
        if (
            Tenant.objects.filter(schema_name=slug).exists()
            or Domain.objects.filter(domain=domain).exists()
        ):
            raise Conflict(f"{slug!r} is taken; choose another")
    return slug


def organisation_signup(
    *, name: str, slug: str, username: str, password: str
) -> tuple[Tenant, AbstractBaseUser]:
    """A new workspace on ``<slug>.<suffix>`` with its owner account and a first privacy notice.

    One transaction (PostgreSQL DDL included): a failure leaves no tenant, schema or account.
    """
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError as DjangoValidationError

    if not settings.SIGNUP_ENABLED:
        raise PermissionDenied("sign-up is closed on this server; ask the operator")
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed("the organisation name must be 1-200 characters")
    slug = signup_slug_validate(slug)
    User = get_user_model()
    with schema_context(get_public_schema_name()):
        username = _validate_username(username)
    try:
        validate_password(password, User(username=username))
    except DjangoValidationError as exc:
        raise ValidationFailed(" ".join(exc.messages)) from None
    domain = f"{slug}.{settings.TENANT_DOMAIN_SUFFIX}"
    connection.set_schema_to_public()
    try:
        with transaction.atomic():
            tenant = tenant_create(slug=slug, domain=domain, name=name, actor=f"signup {username}")
            owner = User.objects.create_user(username=username, password=password)
            Membership.objects.create(tenant=tenant, user=owner, role=Membership.ROLE_OWNER)
            platform = (
                PrivacyNotice.objects.filter(tenant=None, published_at__isnull=False)
                .order_by("-version")
                .first()
            )
            privacy_notice_publish(
                body=platform.body if platform else DEFAULT_TENANT_PRIVACY_BODY,
                sub_processors=platform.sub_processors if platform else DEFAULT_SUB_PROCESSORS,
                data_residency=platform.data_residency if platform else "",
                retention_policy=platform.retention_policy
                if platform
                else f"Kernel runs are deleted after {tenant.retention_days} days.",
                tenant=tenant,
                actor=owner,
            )
            audit(
                action="organisation.signup",
                target=slug,
                tenant=tenant,
                actor=owner,
                details={"domain": domain},
            )
    except IntegrityError as exc:
        raise Conflict(f"{slug!r} or {username!r} was taken meanwhile; try again") from exc
    finally:
        connection.set_schema_to_public()
    return tenant, owner


def _login_token_signer():
    from django.core.signing import TimestampSigner

    return TimestampSigner(salt="fortranspire.tenants.login-token")


def login_token_make(*, user: AbstractBaseUser, tenant: Tenant) -> str:
    """A link token that logs ``user`` in on ``tenant``'s host once, within LOGIN_TOKEN_MAX_AGE_S.

    Session cookies are per host, so the account made on the public host needs this hop. The
    token carries the user's last_login: logging in changes it, which spends the token.
    """
    last = user.last_login.isoformat() if user.last_login else ""
    return _login_token_signer().sign_object(
        {"u": user.pk, "t": tenant.schema_name, "l": last}, compress=True
    )


def login_token_consume(*, token: str, tenant: Tenant) -> AbstractBaseUser:
    """The user a token from :func:`login_token_make` names, if valid here; raise otherwise."""
    from django.core.signing import BadSignature

    try:
        data = _login_token_signer().unsign_object(token or "", max_age=LOGIN_TOKEN_MAX_AGE_S)
    except BadSignature:
        raise AuthenticationFailed("this sign-in link is invalid or has expired") from None
    if not isinstance(data, dict) or data.get("t") != tenant.schema_name:
        raise AuthenticationFailed("this sign-in link is for another workspace")
    with schema_context(get_public_schema_name()):
        user = get_user_model().objects.filter(pk=data.get("u"), is_active=True).first()
        member = user is not None and Membership.objects.filter(user=user, tenant=tenant).exists()
    if not member:
        raise AuthenticationFailed("this sign-in link is invalid or has expired")
    last = user.last_login.isoformat() if user.last_login else ""
    if last != data.get("l"):
        raise AuthenticationFailed("this sign-in link was already used; log in with your password")
    return user
