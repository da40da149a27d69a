"""URLs on a tenant's host: dashboard, API, privacy page, health, read-only admin of runs."""

from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path

from fortranspire_site import views
from kernels.admin import tenant_admin_site
from kernels.api import api
from kernels.views import connect, profile, runs, translate, usage
from tenants import oauth_views, views_keys, views_llm, views_members, views_privacy, views_signup

handler404 = "fortranspire_site.views.page_not_found"
handler500 = "fortranspire_site.views.server_error"
# dashboard: oversized form bodies get a 413 card
handler400 = "kernels.views.translate.bad_request"

urlpatterns = [
    path("", translate.dashboard, name="dashboard"),
    path("runs/", runs.runs, name="dashboard_runs"),
    path("runs/delete/", runs.runs_delete, name="dashboard_runs_delete"),
    path("runs/<str:run_id>/", translate.run_detail, name="run_detail"),
    path("runs/<str:run_id>/code.py", translate.run_code_download, name="run_code_download"),
    path("runs/<str:run_id>/profile.png", profile.profile_png, name="run_profile_png"),
    path("translate/", translate.translate, name="dashboard_translate"),
    path("profile/", profile.profile, name="dashboard_profile"),
    path("jobs/<str:job_id>/", translate.job_status, name="dashboard_job"),
    path("usage/", usage.usage, name="dashboard_usage"),
    path("connect/", connect.connect, name="dashboard_connect"),
    path("connect/test/", connect.connect_test, name="dashboard_connect_test"),
    path(
        "connect/oauth/<path:client_id>/revoke/",
        connect.connect_oauth_revoke,
        name="dashboard_oauth_revoke",
    ),
    path("settings/keys/", views_keys.keys, name="dashboard_keys"),
    path("settings/keys/<int:key_id>/revoke/", views_keys.key_revoke, name="dashboard_key_revoke"),
    path("settings/members/", views_members.members, name="dashboard_members"),
    path(
        "settings/members/<int:membership_id>/role/",
        views_members.member_role,
        name="dashboard_member_role",
    ),
    path(
        "settings/members/<int:membership_id>/remove/",
        views_members.member_remove,
        name="dashboard_member_remove",
    ),
    path("settings/llm/", views_llm.llm_settings, name="dashboard_llm"),
    path("settings/llm/delete/", views_llm.llm_delete, name="dashboard_llm_delete"),
    path("settings/privacy/", views_privacy.privacy_edit, name="dashboard_privacy"),
    path("login/", translate.LoginView.as_view(), name="login"),
    path("login/token/", views_signup.login_with_token, name="login_token"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("privacy", views.privacy, name="privacy"),
    path("health", views.health, name="health"),
    # uvicorn serves no static files; admin CSS/JS come from here (insecure=True: DEBUG is off).
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
    path("api/v1/", api.urls),
    path("admin/", tenant_admin_site.urls),
    # OAuth 2.1 authorization server (issuer = this origin) and the MCP server card.
    path(
        ".well-known/oauth-authorization-server",
        oauth_views.TenantServerMetadataView.as_view(),
        name="oauth-server-metadata",
    ),
    path(".well-known/openid-configuration", oauth_views.no_openid_configuration),
    path(".well-known/mcp/server-card.json", views.mcp_server_card, name="mcp_server_card"),
    path("oauth/", include("tenants.oauth_urls")),
]
