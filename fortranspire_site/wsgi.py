"""WSGI entry point (no MCP, no websockets): ``gunicorn fortranspire_site.wsgi``. Prefer asgi."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fortranspire_site.settings")

application = get_wsgi_application()
