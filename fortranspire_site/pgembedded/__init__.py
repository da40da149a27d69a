"""PostgreSQL backend that starts the embedded server on first connect (django-tenants' ORIGINAL_BACKEND)."""
