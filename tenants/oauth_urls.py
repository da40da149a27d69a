"""OAuth 2.1 endpoints of a tenant host, under /oauth/ (names as DOT reverses them)."""

from django.urls import path
from oauth2_provider.views import DynamicClientRegistrationManagementView

from tenants import oauth_views

app_name = "oauth2_provider"

urlpatterns = [
    path("authorize/", oauth_views.TenantAuthorizationView.as_view(), name="authorize"),
    path("token/", oauth_views.TenantTokenView.as_view(), name="token"),
    path("revoke/", oauth_views.TenantRevokeTokenView.as_view(), name="revoke-token"),
    path("register/", oauth_views.TenantClientRegistrationView.as_view(), name="dcr-register"),
    path(
        "register/<str:client_id>/",
        DynamicClientRegistrationManagementView.as_view(),
        name="dcr-register-management",
    ),
]
