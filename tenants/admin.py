"""Operator admin on the public host. Writes that matter (tenant delete, key revoke, notice
publish, LLM key) go through the services so they are audited and consistent."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from fortranspire_site.errors import ApplicationError
from tenants import services
from tenants.models import (
    ApiKey,
    AuditLog,
    Domain,
    LlmCredential,
    Membership,
    PrivacyNotice,
    Tenant,
)


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("schema_name", "name", "retention_days", "created_at")
    search_fields = ("schema_name", "name")
    readonly_fields = ("schema_name", "created_at")
    fields = ("schema_name", "name", "retention_days", "created_at")
    inlines = [DomainInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Creating a tenant means creating and migrating a schema: `fortranspire tenant create`.
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).exclude(schema_name="public")

    def delete_model(self, request, obj: Tenant) -> None:
        services.tenant_delete(slug=obj.schema_name, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        # The bulk delete would skip Tenant.delete() and leave the schemas behind.
        for tenant in list(queryset):
            services.tenant_delete(slug=tenant.schema_name, actor=request.user)


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ("domain", "tenant", "is_primary")
    search_fields = ("domain",)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role", "tenant")
    autocomplete_fields = ()


@admin.action(description="Revoke selected keys")
def revoke_keys(modeladmin, request, queryset) -> None:
    for key in queryset:
        services.api_key_revoke(key=key, actor=request.user)
    messages.success(request, f"revoked {queryset.count()} key(s)")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    # The digest is never shown: it is all an attacker would need to test guesses offline.
    list_display = (
        "prefix",
        "name",
        "tenant",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    list_filter = ("tenant",)
    search_fields = ("prefix", "name")
    fields = (
        "prefix",
        "name",
        "tenant",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "created_by",
    )
    readonly_fields = fields
    actions = [revoke_keys]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # The raw key can be shown only once: `fortranspire key create` prints it.
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class PrivacyNoticeForm(forms.ModelForm):
    class Meta:
        model = PrivacyNotice
        fields = ("body", "sub_processors", "data_residency", "retention_policy")


@admin.register(PrivacyNotice)
class PrivacyNoticeAdmin(admin.ModelAdmin):
    form = PrivacyNoticeForm
    list_display = ("version", "published_at", "data_residency")

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.published_at is not None:
            return (
                "version",
                "body",
                "sub_processors",
                "data_residency",
                "retention_policy",
                "published_at",
            )
        return ()

    def save_model(self, request, obj: PrivacyNotice, form, change: bool) -> None:
        if change:
            return  # published versions are immutable; publishing a new one is an add
        notice = services.privacy_notice_publish(
            body=obj.body,
            sub_processors=obj.sub_processors,
            data_residency=obj.data_residency,
            retention_policy=obj.retention_policy,
            actor=request.user,
        )
        obj.pk = notice.pk
        obj.version = notice.version
        obj.published_at = notice.published_at

    def has_delete_permission(self, request, obj=None) -> bool:
        return obj is not None and obj.published_at is None


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ("at", "actor_label", "action", "target", "tenant")
    list_filter = ("action",)
    search_fields = ("action", "target", "actor_label")
    readonly_fields = ("at", "actor", "actor_label", "action", "target", "tenant", "details")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class LlmCredentialForm(forms.ModelForm):
    # Write-only: the stored key is never rendered back, not even encrypted.
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current key.",
    )

    class Meta:
        model = LlmCredential
        fields = ("tenant", "model", "endpoint_override", "fallback_enabled")

    def clean(self) -> dict:
        # The service's own validators, so a bad key/model/endpoint (e.g. an SSRF-prone private
        # address) is a form error shown next to the field, not a half-successful save.
        from tenants import llm_credentials as creds

        data = super().clean()
        checks = (
            ("api_key", "_validate_api_key"),
            ("model", "_validate_model"),
            ("endpoint_override", "_validate_endpoint"),
        )
        for field, validator_name in checks:
            validator = getattr(creds, validator_name, None)
            value = data.get(field)
            if validator is None or (field == "api_key" and value in (None, "")):
                continue
            try:
                validator(value)
            except ApplicationError as exc:
                self.add_error(field, exc.message)
        return data


@admin.register(LlmCredential)
class LlmCredentialAdmin(admin.ModelAdmin):
    form = LlmCredentialForm
    list_display = ("tenant", "model", "fallback_enabled", "key_is_set", "updated_at")

    @admin.display(boolean=True, description="key set")
    def key_is_set(self, obj: LlmCredential) -> bool:
        return bool(obj.encrypted_api_key)

    # Added by the LLM helper: calls-per-kernel histogram, tokens and the >6-calls alerts.
    readonly_fields = ("llm_usage",)

    @admin.display(description="LLM usage")
    def llm_usage(self, obj: LlmCredential) -> str:
        if obj is None or not obj.pk:
            return "-"
        from django.utils.html import format_html

        from kernels.llm_usage import llm_usage_admin_summary

        return format_html("<pre>{}</pre>", llm_usage_admin_summary(tenant=obj.tenant))

    def save_model(self, request, obj: LlmCredential, form, change: bool) -> None:
        # Through the LLM helper's service: it encrypts the key, validates the endpoint (SSRF)
        # and writes the audit row. Nothing is saved here directly.
        from tenants.llm_credentials import llm_credential_set

        raw = form.cleaned_data.get("api_key") or None
        try:
            saved = llm_credential_set(
                tenant=obj.tenant,
                api_key=raw,
                model=obj.model,
                endpoint=obj.endpoint_override,
                fallback_enabled=obj.fallback_enabled,
                actor=request.user,
            )
        except ApplicationError as exc:  # clean() ran the same checks; a race at most
            messages.error(request, f"not saved: {exc.message}")
            return
        obj.pk = saved.pk
