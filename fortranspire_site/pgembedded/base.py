"""Django's PostgreSQL backend, plus: start the embedded pgserver before the first connection.

django-tenants' backend subclasses this one (settings.ORIGINAL_BACKEND), so DATABASES keeps the
usual ``django_tenants.postgresql_backend`` ENGINE. Starting lazily keeps ``import settings``
cheap: engine-only commands and tests never start a database.
"""

from __future__ import annotations

import threading

from django.db.backends.postgresql.base import DatabaseWrapper as PostgresDatabaseWrapper

from fortranspire_site import db

_created: set[str] = set()
_created_lock = threading.Lock()


class DatabaseWrapper(PostgresDatabaseWrapper):
    def get_connection_params(self) -> dict:
        if self.settings_dict.get("EMBEDDED"):
            info = db.ensure_embedded_server()
            self.settings_dict["HOST"] = info["host"]
            self.settings_dict["PORT"] = info["port"]
            self.settings_dict["USER"] = self.settings_dict.get("USER") or info["user"]
            name = self.settings_dict.get("NAME")
            # Only the application database is created here; test databases are created (and
            # dropped) by Django's test runner, which must find them absent.
            if name and name == self.settings_dict.get("EMBEDDED_DBNAME"):
                with _created_lock:
                    if name not in _created:
                        db.ensure_database_exists(name)
                        _created.add(name)
        return super().get_connection_params()
