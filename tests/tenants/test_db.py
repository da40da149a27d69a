"""The database bootstrap: DATABASE_URL parsing and the embedded PostgreSQL."""

from __future__ import annotations

import pytest

from fortranspire_site import db


def test_database_url_is_parsed_into_django_settings():
    parsed = db.parse_database_url("postgres://app:s%40cret@db.internal:6543/fsp?sslmode=require")
    assert parsed == {
        "NAME": "fsp",
        "USER": "app",
        "PASSWORD": "s@cret",
        "HOST": "db.internal",
        "PORT": "6543",
        "OPTIONS": {"sslmode": "require"},
    }


def test_database_url_takes_precedence_over_the_embedded_server(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/n")
    config = db.database_settings()
    assert config["EMBEDDED"] is False and config["HOST"] == "h"
    assert config["ENGINE"] == "django_tenants.postgresql_backend"
    monkeypatch.delenv("DATABASE_URL")
    assert db.database_settings()["EMBEDDED"] is True


def test_non_postgres_database_url_is_refused():
    with pytest.raises(ValueError):
        db.parse_database_url("mysql://u@h/n")


def test_embedded_server_start_is_idempotent_and_keeps_data_under_fortranspire_home(
    settings, django_db_blocker
):
    if not settings.DATABASES["default"].get("EMBEDDED"):
        pytest.skip("DATABASE_URL is set: the embedded server is not used")
    first = db.ensure_embedded_server()
    second = db.ensure_embedded_server()
    assert first == second
    assert first["pgdata"] == str(db.fortranspire_home() / "pgdata")
    # Tests never share ./.fortranspire with a `make run` server.
    assert not first["pgdata"].startswith(str(settings.BASE_DIR / ".fortranspire"))


def test_generated_secret_key_is_persisted_privately_and_reused(tmp_path, monkeypatch):
    import stat

    from fortranspire_site.settings import _persistent_secret_key

    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    first = _persistent_secret_key(tmp_path / "home")
    second = _persistent_secret_key(tmp_path / "home")
    assert first == second and len(first) >= 50
    mode = stat.S_IMODE((tmp_path / "home" / "secret_key").stat().st_mode)
    assert mode == 0o600
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    assert _persistent_secret_key(tmp_path / "home") == "from-the-environment"


@pytest.fixture
def private_tmp():
    """A temp dir outside pytest's basetemp, which a concurrent pytest run may prune under us."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="fsp-db-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_concurrent_first_starts_share_one_server_and_one_database(private_tmp):
    """Three processes starting a fresh embedded server at once (make run + CLI + tests)."""
    import json
    import os
    import subprocess
    import sys

    tmp_path = private_tmp
    script = (
        "import json, psycopg\n"
        "from fortranspire_site import db\n"
        "info = db.ensure_embedded_server()\n"
        "db.ensure_database_exists('fortranspire')\n"
        "with psycopg.connect(host=info['host'], port=info['port'], user='postgres',"
        " dbname='fortranspire') as c:\n"
        "    pid = c.execute('select pg_postmaster_start_time()::text').fetchone()[0]\n"
        "print(json.dumps({'started': pid}))\n"
    )
    env = {**os.environ, "FORTRANSPIRE_HOME": str(tmp_path / "home")}
    env.pop("DATABASE_URL", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(tmp_path),
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _out, err in outputs]
    assert all(json.loads(out.strip().splitlines()[-1])["started"] for out, _err in outputs)
    # The last process to exit stops the server: nothing keeps running after the test.
    assert json.loads((tmp_path / "home" / "pgdata" / ".handle_pids.json").read_text()) == []
