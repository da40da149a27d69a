"""API keys: format, hashed storage, refusal of revoked/expired/foreign/malformed keys, audit."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from fortranspire_site.errors import AuthenticationFailed, ValidationFailed
from kernels.services import kernel_run_record
from tenants import services
from tenants.models import ApiKey, AuditLog


def test_new_key_has_typed_prefix_and_256_bits_and_only_its_digest_is_stored(tenant_a):
    key, raw = services.api_key_create(tenant=tenant_a, name="ci", scopes=["translate"])
    assert re.fullmatch(r"fsp_[A-Za-z0-9_-]{43}", raw)  # 43 base64url chars = 258 bits >= 256
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.digest == services.hash_key(raw) and len(stored.digest) == 64
    assert stored.prefix == raw[:12]
    assert raw not in (stored.digest, stored.prefix, stored.name)


def _every_text_value_in_the_database() -> list[str]:
    """Every value of every text-like column of every table, in every schema we own."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT table_schema, table_name, column_name FROM information_schema.columns
            WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
              AND data_type IN ('text', 'character varying', 'jsonb', 'json', 'character')
            """
        )
        columns = cursor.fetchall()
        values = []
        for schema, table, column in columns:
            cursor.execute(f'SELECT "{column}"::text FROM "{schema}"."{table}"')
            values.extend(v for (v,) in cursor.fetchall() if v)
    return values


def test_raw_key_appears_nowhere_in_the_database(tenant_a, tenant_b):
    key, raw = services.api_key_create(tenant=tenant_a, name="secret-check", scopes=["history"])
    services.api_key_authenticate(raw_key=raw, tenant=tenant_a)
    kernel_run_record(tenant=tenant_a, channel="api", status="ok", source="x", api_key=key)
    services.api_key_revoke(key=key)

    values = _every_text_value_in_the_database()
    assert values, "the scan found no text at all; it is not looking at the right database"
    assert any(key.prefix in v for v in values)  # proves the scan sees the key's own table
    assert not [v for v in values if raw in v]
    assert not [v for v in values if raw[12:] in v]  # not even the secret part


def test_valid_key_authenticates_on_its_own_tenant(tenant_a, make_key):
    raw = make_key(tenant_a, scopes=["translate", "history"])
    key = services.api_key_authenticate(raw_key=raw, tenant=tenant_a)
    assert key.tenant_id == tenant_a.pk and key.scopes == ["translate", "history"]


def test_key_from_another_tenant_is_refused(tenant_a, tenant_b, make_key):
    raw = make_key(tenant_a)
    with pytest.raises(AuthenticationFailed):
        services.api_key_authenticate(raw_key=raw, tenant=tenant_b)


def test_revoked_key_is_refused(tenant_a):
    key, raw = services.api_key_create(tenant=tenant_a, name="r", scopes=None)
    services.api_key_revoke(key=key, actor="test")
    with pytest.raises(AuthenticationFailed):
        services.api_key_authenticate(raw_key=raw, tenant=tenant_a)


def test_expired_key_is_refused(tenant_a):
    key, raw = services.api_key_create(
        tenant=tenant_a, name="e", scopes=None, expires_at=timezone.now() + timedelta(hours=1)
    )
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(AuthenticationFailed):
        services.api_key_authenticate(raw_key=raw, tenant=tenant_a)


@pytest.mark.parametrize(
    "raw", ["", "fsp_", "fsp_short", "sk-" + "x" * 43, "fsp_" + "x" * 42 + "!", "fsp_" + "x" * 44]
)
def test_malformed_key_is_refused_without_a_database_query(
    tenant_a, raw, django_assert_num_queries
):
    with django_assert_num_queries(0), pytest.raises(AuthenticationFailed) as info:
        services.api_key_authenticate(raw_key=raw, tenant=tenant_a)
    assert "malformed" in info.value.message


def test_well_formed_unknown_key_is_refused(tenant_a):
    with pytest.raises(AuthenticationFailed):
        services.api_key_authenticate(raw_key="fsp_" + "A" * 43, tenant=tenant_a)


def test_last_used_at_is_written_at_most_once_a_minute(tenant_a, make_key):
    raw = make_key(tenant_a)
    first = services.api_key_authenticate(raw_key=raw, tenant=tenant_a).last_used_at
    assert first is not None
    again = services.api_key_authenticate(raw_key=raw, tenant=tenant_a)
    assert ApiKey.objects.get(pk=again.pk).last_used_at == first

    ApiKey.objects.filter(pk=again.pk).update(last_used_at=first - timedelta(minutes=2))
    services.api_key_authenticate(raw_key=raw, tenant=tenant_a)
    assert ApiKey.objects.get(pk=again.pk).last_used_at > first - timedelta(minutes=1)


@pytest.mark.parametrize("scopes", [["translate", "root"], [], ["  "]])
def test_unknown_or_empty_scopes_are_refused(tenant_a, scopes):
    with pytest.raises(ValidationFailed):
        services.api_key_create(tenant=tenant_a, name="bad", scopes=scopes)
    assert not ApiKey.objects.filter(name="bad").exists()


def test_key_create_and_revoke_leave_audit_rows(tenant_a):
    key, _raw = services.api_key_create(tenant=tenant_a, name="audited", scopes=["profile"])
    services.api_key_revoke(key=key, actor="ops")
    actions = list(
        AuditLog.objects.filter(target=key.prefix)
        .order_by("at")
        .values_list("action", "actor_label")
    )
    assert actions == [("api_key.create", "system"), ("api_key.revoke", "ops")]


def test_api_key_env_var_is_accepted_for_the_default_tenant_only(
    tenant_a, tenant_b, settings, monkeypatch
):
    settings.DEFAULT_TENANT_SLUG = "a"
    legacy = "legacy-key-from-the-environment"
    monkeypatch.setenv("API_KEY", legacy)
    key = services.api_key_authenticate(raw_key=legacy, tenant=tenant_a)
    assert key.pk is None and "translate" in key.scopes
    with pytest.raises(AuthenticationFailed):
        services.api_key_authenticate(raw_key=legacy, tenant=tenant_b)
    monkeypatch.delenv("API_KEY")
    with pytest.raises(AuthenticationFailed):
        services.api_key_authenticate(raw_key=legacy, tenant=tenant_a)
