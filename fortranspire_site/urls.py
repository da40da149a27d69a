"""URLs on a tenant's host: dashboard, API, privacy page, health, read-only admin of runs."""

from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path

from fortranspire_site import views
from kernels import views as dashboard
from kernels.admin import tenant_admin_site
from kernels.api import api
from tenants import oauth_views

handler404 = "fortranspire_site.views.page_not_found"
handler500 = "fortranspire_site.views.server_error"
handler400 = "kernels.views.bad_request"  # dashboard: oversized form bodies get a 413 card

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("runs/<str:run_id>/", dashboard.run_detail, name="run_detail"),
    path("runs/<str:run_id>/code.py", dashboard.run_code_download, name="run_code_download"),
    path("translate/", dashboard.translate, name="dashboard_translate"),
    path("jobs/<str:job_id>/", dashboard.job_status, name="dashboard_job"),
    path("login/", dashboard.LoginView.as_view(), name="login"),
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
