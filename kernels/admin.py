"""Read-only admin of a tenant's KernelRuns, served on the tenant's own host at /admin/.

A separate AdminSite: the operator site on the public host has no KernelRun table (it lives in
tenant schemas), and tenant members are not staff, so the site checks membership instead.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest

from kernels.models import KernelRun
from tenants.selectors import membership_role


class TenantAdminSite(admin.AdminSite):
    site_header = "fortranspire: kernel runs"
    site_title = "fortranspire"
    index_title = "History"

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        tenant = getattr(request, "tenant", None)
        return bool(user.is_active and membership_role(user=user, tenant=tenant))


tenant_admin_site = TenantAdminSite(name="tenant_admin")
# Members are not staff; the default admin login form would turn them away.
tenant_admin_site.login_form = AuthenticationForm


class ReadOnlyMemberAdmin(admin.ModelAdmin):
    def has_module_permission(self, request: HttpRequest) -> bool:
        return tenant_admin_site.has_permission(request)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return tenant_admin_site.has_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(KernelRun, site=tenant_admin_site)
class KernelRunAdmin(ReadOnlyMemberAdmin):
    list_display = (
        "created_at",
        "channel",
        "tool",
        "kernel_names",
        "target",
        "status",
        "duration_ms",
        "llm_calls",
        "api_key_prefix",
        "username",
    )
    list_filter = ("status", "channel", "target")
    search_fields = ("source_sha256", "tool", "api_key_prefix", "username")
    readonly_fields = [f.name for f in KernelRun._meta.fields]
    date_hierarchy = "created_at"
