"""Public-schema models: who the tenants are, who may act for them, and what they were told.

Writes go through ``tenants.services``; these classes only hold data and invariants that must
hold whoever writes (a published privacy notice never changes).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_tenants.models import DomainMixin, TenantMixin

SCOPES = ("translate", "profile", "agent", "history")
OWNER_SCOPE = "owner"
ALL_SCOPES = (*SCOPES, OWNER_SCOPE)


class Tenant(TenantMixin):
    """One customer organisation; its slug is its PostgreSQL schema name."""

    name = models.CharField(max_length=200, blank=True)
    retention_days = models.PositiveIntegerField(
        default=90, help_text="Kernel runs older than this are deleted by `fortranspire purge`."
    )
    created_at = models.DateTimeField(default=timezone.now)

    # Schemas are created by tenants.services.tenant_create, which also cleans up on failure.
    auto_create_schema = True
    auto_drop_schema = True

    class Meta:
        ordering = ["schema_name"]

    @property
    def slug(self) -> str:
        return self.schema_name

    def __str__(self) -> str:
        return self.schema_name


class Domain(DomainMixin):
    class Meta:
        ordering = ["domain"]


class Membership(models.Model):
    ROLE_OWNER = "owner"
    ROLE_MEMBER = "member"
    ROLES = [(ROLE_OWNER, "Owner"), (ROLE_MEMBER, "Member")]

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=ROLES, default=ROLE_MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"


class ApiKey(models.Model):
    """A bearer key bound to one tenant. Only the SHA-256 digest of the raw key is stored."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    # The first characters of the raw key ("fsp_" + 8): enough to recognise a key in a list,
    # far too few to guess the rest.
    prefix = models.CharField(max_length=16, db_index=True)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])


class PrivacyNoticeImmutable(Exception):
    pass


class PrivacyNotice(models.Model):
    """What a workspace tells its users about their data. A published version never changes.

    ``tenant`` None is the platform's own notice (the public host, and workspaces that have not
    published theirs). Versions count per tenant from 1; version 0 is the tenant's one draft.
    """

    DRAFT_VERSION = 0

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="privacy_notices"
    )
    version = models.PositiveIntegerField()
    body = models.TextField()
    sub_processors = models.JSONField(default=list, blank=True)
    data_residency = models.CharField(max_length=200, blank=True)
    retention_policy = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "version"], name="privacy_notice_unique_tenant_version"
            ),
            models.UniqueConstraint(
                fields=["version"],
                condition=models.Q(tenant__isnull=True),
                name="privacy_notice_unique_platform_version",
            ),
        ]

    def __str__(self) -> str:
        state = "published" if self.published_at else "draft"
        return f"Privacy notice v{self.version} ({state})"

    def save(self, *args, **kwargs) -> None:
        # Enforced here rather than only in the service so the admin and shell cannot rewrite
        # what tenants already agreed to; a change means a new version.
        if self.pk is not None:
            stored = type(self).objects.filter(pk=self.pk).values("published_at").first()
            if stored and stored["published_at"] is not None:
                raise PrivacyNoticeImmutable(
                    f"privacy notice v{self.version} is published and cannot change; "
                    "publish a new version instead"
                )
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self.published_at is not None:
            raise PrivacyNoticeImmutable("a published privacy notice cannot be deleted")
        return super().delete(*args, **kwargs)


class AuditLog(models.Model):
    """Who did what to keys, notices and tenants. Kept when the tenant itself is deleted."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=200, blank=True)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_logs"
    )
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} {self.target}"


class LlmCredential(models.Model):
    """A tenant's own Mistral key, Fernet-encrypted (see tenants.llm_credentials)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="llm_credential")
    encrypted_api_key = models.TextField(blank=True)
    model = models.CharField(max_length=100, default="codestral-latest")
    endpoint_override = models.CharField(max_length=300, blank=True)
    fallback_enabled = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "LLM credential"

    def __str__(self) -> str:
        return f"LLM credential for {self.tenant}"
