"""Shared fixtures: a real PostgreSQL (embedded pgserver unless DATABASE_URL is set) with two
tenants whose schemas are created ONCE per test run.

Database
    Settings detect pytest and keep the embedded server under ``$FORTRANSPIRE_TEST_HOME``
    (default ``/tmp/fortranspire-test-<uid>``), never ``./.fortranspire``. Each pytest process gets
    its own test database ``test_fortranspire_<pid>`` so parallel runs do not collide.

Tenants
    ``tenant_a`` -> schema ``a`` on host ``a.localhost``; ``tenant_b`` -> ``b`` on ``b.localhost``.
    Both schemas are created and migrated once, in ``django_db_setup``. The fixtures work with
    ``db`` (each test in a rolled-back transaction) and with ``transactional_db`` / live servers
    (data is committed, so uvicorn in another thread sees it). Django flushes the public tables
    after a transactional test; the fixtures then re-create the tenant rows (the schema survives,
    so this is cheap) and empty the tenant's history so every test starts from a clean tenant.

Helpers
    ``make_key(tenant, scopes=[...], name=..., expires_at=None) -> raw key`` (the default scopes
    are translate, profile, agent, history).
    ``tenant_client(tenant_or_host) -> django.test.Client`` whose requests carry that Host;
    ``client_a`` / ``client_b`` / ``public_client`` are ready-made ones.
    ``auth_headers(raw_key) -> {"HTTP_AUTHORIZATION": "Bearer ..."}`` for the Django client.

Example (an MCP test against uvicorn in a thread)::

    @pytest.mark.django_db(transaction=True)
    def test_x(tenant_a, make_key):
        key = make_key(tenant_a, scopes=["translate"])
        # ... start uvicorn on fortranspire_site.asgi:application, send Host: a.localhost
"""

from __future__ import annotations

import os

import pytest

TEST_TENANTS = {"a": "a.localhost", "b": "b.localhost"}


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix) -> None:
    """One test database per pytest process: helpers and CI may run several suites at once."""
    from django.conf import settings

    for alias in settings.DATABASES:
        test = settings.DATABASES[alias].setdefault("TEST", {})
        if not test.get("NAME"):
            test["NAME"] = f"test_fortranspire_{os.getpid()}"


def _drop_stale_test_databases() -> None:
    """Databases left by killed runs (their pid is gone) would pile up in the embedded server."""
    import psutil
    from django.conf import settings
    from django.db import connection

    if not settings.DATABASES["default"].get("EMBEDDED"):
        return
    with connection._nodb_cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test_fortranspire_%%'")
        for (name,) in cursor.fetchall():
            suffix = name.rsplit("_", 1)[-1]
            if (
                suffix.isdigit()
                and int(suffix) != os.getpid()
                and not psutil.pid_exists(int(suffix))
            ):
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')


def ensure_test_tenant(slug: str):
    """The tenant row + domain for ``slug``, creating the (migrated) schema only the first time."""
    from django.db import connection
    from django_tenants.utils import schema_exists, tenant_context

    from kernels.models import KernelRun
    from tenants.models import Domain, Tenant
    from tenants.services import tenant_create

    connection.set_schema_to_public()
    domain = Domain.objects.select_related("tenant").filter(domain=TEST_TENANTS[slug]).first()
    if domain is not None:
        return domain.tenant
    had_schema = schema_exists(slug)
    tenant = tenant_create(slug=slug, domain=TEST_TENANTS[slug], name=f"Tenant {slug.upper()}")
    if had_schema:
        # The row was flushed by a transactional test but its schema kept old runs.
        with tenant_context(tenant):
            KernelRun.objects.all().delete()
    connection.set_schema_to_public()
    assert Tenant.objects.filter(schema_name=slug).exists()
    return tenant


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database, with the schemas of tenants a and b created once for the whole run."""
    with django_db_blocker.unblock():
        try:
            _drop_stale_test_databases()
        except Exception:  # noqa: BLE001 - housekeeping only
            pass
        for slug in TEST_TENANTS:
            ensure_test_tenant(slug)


def _reset_schema():
    from django.db import connection

    # A tenant request leaves the connection on the tenant's search_path; put it back so the
    # next test (and Django's flush after a transactional test) starts on public.
    connection.set_schema_to_public()


@pytest.fixture
def tenant_a(db):
    tenant = ensure_test_tenant("a")
    yield tenant
    _reset_schema()


@pytest.fixture
def tenant_b(db):
    tenant = ensure_test_tenant("b")
    yield tenant
    _reset_schema()


@pytest.fixture
def make_key(db):
    """``make_key(tenant, scopes=None, name="test", expires_at=None) -> raw key``."""
    from tenants.services import api_key_create

    def _make_key(tenant, scopes=None, name: str = "test", expires_at=None) -> str:
        _key, raw = api_key_create(
            tenant=tenant,
            name=name,
            scopes=list(scopes) if scopes is not None else None,
            expires_at=expires_at,
        )
        return raw

    return _make_key


@pytest.fixture
def auth_headers():
    def _headers(raw_key: str) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"}

    return _headers


@pytest.fixture
def tenant_client(db):
    """``tenant_client(tenant_or_host) -> Client`` sending that Host on every request."""
    from django.test import Client

    def _client(tenant_or_host) -> Client:
        if isinstance(tenant_or_host, str):
            host = tenant_or_host
        else:
            host = tenant_or_host.domains.get(is_primary=True).domain
        return Client(HTTP_HOST=host)

    yield _client
    _reset_schema()


@pytest.fixture
def client_a(tenant_a, tenant_client):
    return tenant_client(tenant_a)


@pytest.fixture
def client_b(tenant_b, tenant_client):
    return tenant_client(tenant_b)


@pytest.fixture
def public_client(tenant_client):
    return tenant_client("localhost")


@pytest.fixture(autouse=True)
def _jobs_inline_unless_committed(request, monkeypatch):
    """Jobs run in the submitting thread for tests inside a rolled-back transaction (a worker
    thread could not see their rows); tests with committed data (transactional_db, live
    servers) get the real worker pool."""
    marker = request.node.get_closest_marker("django_db")
    committed = "transactional_db" in request.fixturenames or (
        marker is not None and marker.kwargs.get("transaction")
    )
    if not committed:
        from kernels import jobs

        monkeypatch.setattr(jobs, "RUN_INLINE", True)
    from kernels import limits

    limits.rate_limit_reset()
