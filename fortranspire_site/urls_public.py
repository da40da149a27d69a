"""URLs on the public host (localhost): landing page, sign-up, operator admin, health, privacy."""

from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import path, re_path

from fortranspire_site import views
from tenants import views_signup

handler404 = "fortranspire_site.views.page_not_found"
handler500 = "fortranspire_site.views.server_error"

admin.site.site_header = "fortranspire operators"
admin.site.site_title = "fortranspire"

urlpatterns = [
    path("", views.landing, name="landing"),
    path("signup/", views_signup.signup, name="signup"),
    path("health", views.health, name="health"),
    # uvicorn serves no static files; admin CSS/JS come from here (insecure=True: DEBUG is off).
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
    path("privacy", views.privacy, name="privacy"),
    path("admin/", admin.site.urls),
]
