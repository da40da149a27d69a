"""Host -> tenant -> schema, for every HTTP request (first in MIDDLEWARE)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.template.loader import render_to_string
from django_tenants.middleware.main import TenantMainMiddleware
from django_tenants.utils import get_public_schema_name

from tenants.models import Tenant


def public_tenant() -> Tenant:
    """The public site as a tenant object: no row needed, only the schema name matters."""
    return Tenant(schema_name=get_public_schema_name(), name="public")


def unknown_host_response(request: HttpRequest, hostname: str = "") -> HttpResponse:
    html = render_to_string("404.html", {"reason": "unknown_host", "hostname": hostname})
    return HttpResponseNotFound(html)


class TenantHostMiddleware(TenantMainMiddleware):
    """django-tenants' middleware, plus: the public hosts need no Domain row, and an unknown host
    gets our 404 page instead of Http404 bubbling through a urlconf that does not apply."""

    def get_tenant(self, domain_model, hostname: str) -> Tenant:
        if hostname in settings.PUBLIC_HOSTS:
            return public_tenant()
        return super().get_tenant(domain_model, hostname)

    def no_tenant_found(self, request: HttpRequest, hostname: str) -> HttpResponse:
        return unknown_host_response(request, hostname)

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        from fortranspire_site.middleware import DATABASE_DOWN, database_unavailable_response

        try:
            response = super().process_request(request)
        except DATABASE_DOWN:
            # No tenant can be found without the database: /health says which part is down,
            # every other path gets the 503 JSON answer.
            if request.path == "/health":
                from fortranspire_site.views import health

                return health(request)
            return database_unavailable_response()
        if response is not None and response.status_code == 404 and not response.content:
            # DisallowedHost: django-tenants answers an empty 404; give it a body.
            return unknown_host_response(request)
        return response
