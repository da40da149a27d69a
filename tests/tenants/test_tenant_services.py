"""Tenants: creation, bad input, deletion, isolation, retention, privacy notices, bootstrap."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_exists, tenant_context

from fortranspire_site.errors import Conflict, NotFound, ValidationFailed
from kernels.models import KernelRun
from kernels.selectors import kernel_run_get, kernel_run_list
from kernels.services import kernel_run_purge, kernel_run_record
from tenants import selectors, services
from tenants.models import (
    ApiKey,
    AuditLog,
    Domain,
    LlmCredential,
    Membership,
    PrivacyNotice,
    PrivacyNoticeImmutable,
    Tenant,
)


def test_tenant_create_makes_a_migrated_schema_and_primary_domain(db):
    tenant = services.tenant_create(slug="acme", domain="Acme.Localhost")
    assert schema_exists("acme")
    assert tenant.domains.get().domain == "acme.localhost"
    assert selectors.tenant_for_host("acme.localhost:8000") == tenant
    with tenant_context(tenant):
        assert KernelRun.objects.count() == 0  # the tenant table exists in the new schema
    assert AuditLog.objects.filter(action="tenant.create", target="acme").exists()


@pytest.mark.parametrize(
    "slug",
    [
        "public",
        "www",
        "admin",
        "api",
        "Acme",
        "1acme",
        "acme-corp",
        "pg_acme",
        "",
        "a" * 41,
        'ac"me',
        "acme;drop",
        "ac me",
        "information_schema",
    ],
)
def test_invalid_or_reserved_slug_is_refused_and_creates_nothing(db, slug):
    tenants_before = Tenant.objects.count()
    with pytest.raises(ValidationFailed):
        services.tenant_create(slug=slug, domain="fresh.localhost")
    assert Tenant.objects.count() == tenants_before
    assert not Domain.objects.filter(domain="fresh.localhost").exists()


@pytest.mark.parametrize("domain", ["", "bad domain", "-x.localhost", "localhost", "a..b"])
def test_invalid_domain_is_refused(db, domain):
    with pytest.raises(ValidationFailed):
        services.tenant_create(slug="fresh", domain=domain)
    assert not schema_exists("fresh")


def test_duplicate_slug_or_domain_is_a_conflict_and_leaves_nothing_half_created(tenant_a):
    with pytest.raises(Conflict):
        services.tenant_create(slug="a", domain="other.localhost")
    with pytest.raises(Conflict):
        services.tenant_create(slug="other", domain="a.localhost")
    assert not Domain.objects.filter(domain="other.localhost").exists()
    assert not Tenant.objects.filter(schema_name="other").exists()
    assert not schema_exists("other")


def test_failed_schema_migration_deletes_the_tenant_row(db, monkeypatch):
    def broken_create_schema(self, *args, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{self.schema_name}"')
        raise RuntimeError("migration exploded")

    monkeypatch.setattr(Tenant, "create_schema", broken_create_schema)
    with pytest.raises(RuntimeError):
        services.tenant_create(slug="broken", domain="broken.localhost")
    assert not Tenant.objects.filter(schema_name="broken").exists()
    assert not Domain.objects.filter(domain="broken.localhost").exists()
    assert not schema_exists("broken")


def test_tenant_delete_drops_the_schema_and_every_public_row(db, django_user_model):
    tenant = services.tenant_create(slug="doomed", domain="doomed.localhost")
    user = django_user_model.objects.create_user("owner1", password="pw-12345678")
    services.membership_set(tenant=tenant, user=user, role="owner")
    services.api_key_create(tenant=tenant, name="k", scopes=["translate"])
    LlmCredential.objects.create(tenant=tenant)
    kernel_run_record(tenant=tenant, channel="cli", status="ok", source="x")
    tenant_pk = tenant.pk

    services.tenant_delete(slug="doomed")

    assert not schema_exists("doomed")
    assert not Tenant.objects.filter(pk=tenant_pk).exists()
    assert not Domain.objects.filter(tenant_id=tenant_pk).exists()
    assert not Membership.objects.filter(tenant_id=tenant_pk).exists()
    assert not ApiKey.objects.filter(tenant_id=tenant_pk).exists()
    assert not LlmCredential.objects.filter(tenant_id=tenant_pk).exists()
    assert selectors.tenant_for_host("doomed.localhost") is None
    # The audit trail of the deletion outlives the tenant.
    assert AuditLog.objects.filter(action="tenant.delete", target="doomed").exists()


def test_deleting_an_unknown_tenant_is_not_found(db):
    with pytest.raises(NotFound):
        services.tenant_delete(slug="never_existed")


def test_run_of_tenant_a_is_invisible_from_tenant_b_through_the_orm(tenant_a, tenant_b):
    run = kernel_run_record(tenant=tenant_a, channel="api", status="verified", source="A-only")
    assert run.id in [r.id for r in kernel_run_list(tenant=tenant_a)]
    assert run.id not in [r.id for r in kernel_run_list(tenant=tenant_b)]
    with tenant_context(tenant_b):
        assert not KernelRun.objects.filter(pk=run.id).exists()
    with pytest.raises(NotFound):
        kernel_run_get(tenant=tenant_b, run_id=run.id)


def test_purge_deletes_runs_older_than_each_tenants_retention(tenant_a, tenant_b):
    Tenant.objects.filter(pk=tenant_a.pk).update(retention_days=7)
    Tenant.objects.filter(pk=tenant_b.pk).update(retention_days=30)
    now = timezone.now()
    runs = {}
    for tenant, label in ((tenant_a, "a"), (tenant_b, "b")):
        for age in (1, 10, 40):
            run = kernel_run_record(
                tenant=tenant, channel="cli", status="ok", source=f"{label}{age}"
            )
            with tenant_context(tenant):
                KernelRun.objects.filter(pk=run.id).update(created_at=now - timedelta(days=age))
            runs[(label, age)] = run.id

    deleted = kernel_run_purge(now=now)

    assert deleted["a"] == 2 and deleted["b"] == 1
    remaining_a = {r.id for r in kernel_run_list(tenant=tenant_a)}
    remaining_b = {r.id for r in kernel_run_list(tenant=tenant_b)}
    assert remaining_a == {runs[("a", 1)]}
    assert remaining_b == {runs[("b", 1)], runs[("b", 10)]}


def test_published_privacy_notice_is_immutable_and_a_new_version_supersedes_it(db):
    first = services.privacy_notice_publish(body="v-one body", data_residency="EU")
    second = services.privacy_notice_publish(body="v-two body", sub_processors=["Mistral AI"])
    assert second.version == first.version + 1
    assert selectors.privacy_notice_current().pk == second.pk

    first.body = "rewritten history"
    with pytest.raises(PrivacyNoticeImmutable):
        first.save()
    with pytest.raises(PrivacyNoticeImmutable):
        first.delete()
    assert PrivacyNotice.objects.get(pk=first.pk).body == "v-one body"
    assert AuditLog.objects.filter(action="privacy_notice.publish").count() >= 2


def test_empty_privacy_notice_is_refused(db):
    with pytest.raises(ValidationFailed):
        services.privacy_notice_publish(body="   ")


def test_bootstrap_demo_twice_creates_one_tenant_and_prints_one_key(db, settings):
    from fortranspire_site.cli_admin import bootstrap_demo

    settings.DEFAULT_TENANT_SLUG = "demo"
    first_out, second_out = io.StringIO(), io.StringIO()
    first = bootstrap_demo(out=first_out)
    second = bootstrap_demo(out=second_out)

    assert Tenant.objects.filter(schema_name="demo").count() == 1
    assert Domain.objects.filter(domain="demo.localhost").count() == 1
    assert first["raw_key"] and first["raw_key"].startswith("fsp_")
    assert first_out.getvalue().strip().splitlines()[-1] == first["raw_key"]
    assert second["raw_key"] is None and second["existing_key"] == first["raw_key"][:12]
    assert first["raw_key"] not in second_out.getvalue()
    assert selectors.privacy_notice_current() is not None
    demo = Tenant.objects.get(schema_name="demo")
    assert services.api_key_authenticate(raw_key=first["raw_key"], tenant=demo).name == "demo"
