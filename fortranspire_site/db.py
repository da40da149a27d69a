"""Where the database lives: DATABASE_URL when set, otherwise an embedded PostgreSQL (pgserver).

The embedded server is started lazily, on the first connection Django opens (see
``fortranspire_site.pgembedded``), so commands and tests that never touch the database never pay
for it. Data lives under ``$FORTRANSPIRE_HOME/pgdata`` (default ``./.fortranspire``).

PostgreSQL refuses to run as root. pgserver 0.1.4 handles that itself: as root it creates a
``pgserver`` system user, chowns PGDATA to it and runs initdb/pg_ctl as that user. The server
listens on a Unix socket only (no TCP port to collide with), and pgserver serialises start-up
across processes with a file lock and keeps a list of the processes using the server; the last
one to exit stops it.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

_lock = threading.Lock()
_embedded: dict | None = None


def fortranspire_home() -> Path:
    """The state directory: ``$FORTRANSPIRE_HOME`` or ``./.fortranspire``."""
    return Path(os.environ.get("FORTRANSPIRE_HOME") or Path.cwd() / ".fortranspire").resolve()


def database_url() -> str | None:
    return os.environ.get("DATABASE_URL") or None


def parse_database_url(url: str) -> dict:
    """``postgres://user:pass@host:port/name?sslmode=..`` -> Django's DATABASES entry fields."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql", "pgsql"):
        raise ValueError(f"DATABASE_URL must be a postgres:// URL, got scheme {parsed.scheme!r}")
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    host = unquote(parsed.hostname or "") or query.pop("host", "")
    return {
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
        "OPTIONS": query,
    }


def database_settings() -> dict:
    """The ``DATABASES['default']`` entry. Cheap: never starts a server."""
    base = {
        "ENGINE": "django_tenants.postgresql_backend",
        "CONN_MAX_AGE": 0,
        "ATOMIC_REQUESTS": False,
    }
    url = database_url()
    if url:
        return {**base, **parse_database_url(url), "EMBEDDED": False}
    # HOST is filled in by ensure_embedded_server() when the first connection opens.
    return {
        **base,
        "NAME": "fortranspire",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": "",
        "PORT": "",
        "OPTIONS": {},
        "EMBEDDED": True,
        "EMBEDDED_DBNAME": "fortranspire",
    }


def _prune_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that died without their atexit hook (SIGKILL, OOM).

    pgserver stops the server when the last registered process exits; a stale pid would keep it
    running forever, so forget pids that no longer exist.
    """
    import psutil

    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [p for p in pids if psutil.pid_exists(p)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def ensure_embedded_server() -> dict:
    """Start (or attach to) the embedded PostgreSQL; idempotent, thread- and process-safe.

    Returns ``{"host": socket_dir, "port": "5432", "user": "postgres", "uri": ...}``.
    """
    global _embedded
    with _lock:
        if _embedded is not None:
            return _embedded
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver.postgres_server import PostgresServer

            home = fortranspire_home()
            home.mkdir(parents=True, exist_ok=True)
            pgdata = home / "pgdata"
            # pgserver's get_server() creates PGDATA with exist_ok=False *before* it takes its
            # inter-process lock, so concurrent first starts (make run + CLI + tests) race on the
            # mkdir. Creating it here is safe: whether to initdb is decided under that lock, from
            # PG_VERSION, not from the directory's existence.
            pgdata.mkdir(exist_ok=True)
            if (pgdata / "PG_VERSION").exists():
                with PostgresServer._lock:
                    _prune_dead_handles(pgdata)
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
            info = server.get_postmaster_info()
        _embedded = {
            "host": str(info.socket_dir) if info.socket_dir else (info.hostname or "127.0.0.1"),
            "port": str(info.port or 5432),
            "user": "postgres",
            "uri": server.get_uri(),
            "pgdata": str(pgdata),
        }
        return _embedded


def ensure_database_exists(name: str) -> None:
    """Create the application database on the embedded server if it is missing."""
    import psycopg

    info = ensure_embedded_server()
    with psycopg.connect(
        host=info["host"], port=info["port"], user=info["user"], dbname="postgres", autocommit=True
    ) as conn:
        # Several processes may start at once (make run, a test, a CLI call): serialise the
        # check-then-create, and still treat "already exists" as success.
        conn.execute("SELECT pg_advisory_lock(hashtext('fortranspire.create_database'))")
        try:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                try:
                    conn.execute(f'CREATE DATABASE "{name}"')
                except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                    pass
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('fortranspire.create_database'))")
