"""A database that cannot be reached is a 503 with a JSON body on every host, never a 500 page.

Tenant lookup (the first middleware) and any view may be the first to touch the database;
both paths answer :func:`database_unavailable_response`. ``/health`` still answers with which
part is down (fortranspire_site.views.health).
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

DATABASE_DOWN = (OperationalError, InterfaceError)
RETRY_AFTER_S = 5


def database_unavailable_response() -> JsonResponse:
    response = JsonResponse(
        {
            "error": "unavailable",
            "message": "the database is unavailable; retry shortly",
            "part": "database",
            "retry_after": RETRY_AFTER_S,
        },
        status=503,
    )
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


class DatabaseUnavailableMiddleware:
    """Turns a view's lost database connection into the 503 JSON answer."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_DOWN):
            logger.warning("database unavailable during %s", request.path, exc_info=exception)
            return database_unavailable_response()
        return None


# Scripts only from this origin (htmx is served from /static); inline style attributes are
# used by the templates and htmx's indicator styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'; object-src 'none'"
)


class ContentSecurityPolicyMiddleware:
    """Every HTML page (dashboard, login, admin) carries the Content-Security-Policy."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
