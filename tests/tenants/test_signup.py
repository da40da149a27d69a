"""Sign-up services: one transaction for the workspace, its schema, its owner and its notice;
the one-time sign-in token; members and the last-owner rule."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django_tenants.utils import schema_exists

from fortranspire_site.errors import (
    AuthenticationFailed,
    Conflict,
    PermissionDenied,
    ValidationFailed,
)
from tenants import selectors, services
from tenants.models import Membership, Tenant

PASSWORD = "Tr1cky-Passphrase"


def test_a_failed_signup_leaves_no_tenant_schema_or_account(db, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Membership.objects, "create", broken)
    with pytest.raises(RuntimeError):
        services.organisation_signup(
            name="Fail Co", slug="failco", username="fail-owner", password=PASSWORD
        )
    assert not Tenant.objects.filter(schema_name="failco").exists()
    assert not schema_exists("failco")
    assert not get_user_model().objects.filter(username="fail-owner").exists()


def test_signup_refuses_weak_passwords_and_closed_signup(db, settings):
    with pytest.raises(ValidationFailed, match="too short"):
        services.organisation_signup(name="W", slug="weakco", username="weak", password="abc")
    settings.SIGNUP_ENABLED = False
    with pytest.raises(PermissionDenied):
        services.organisation_signup(name="C", slug="closedco", username="c", password=PASSWORD)
    assert not Tenant.objects.filter(schema_name__in=["weakco", "closedco"]).exists()


def test_signin_token_works_once_and_only_for_its_workspace(db, tenant_b):
    tenant, owner = services.organisation_signup(
        name="Token Co", slug="tokenco", username="token-owner", password=PASSWORD
    )
    token = services.login_token_make(user=owner, tenant=tenant)
    with pytest.raises(AuthenticationFailed, match="another workspace"):
        services.login_token_consume(token=token, tenant=tenant_b)
    with pytest.raises(AuthenticationFailed, match="invalid or has expired"):
        services.login_token_consume(token=token[:-2] + "xx", tenant=tenant)
    assert services.login_token_consume(token=token, tenant=tenant) == owner
    from django.contrib.auth.models import update_last_login

    update_last_login(None, owner)  # what login() does
    with pytest.raises(AuthenticationFailed, match="already used"):
        services.login_token_consume(token=token, tenant=tenant)


def test_member_services_keep_one_owner_and_write_audit_rows(db, tenant_a):
    from tenants.models import AuditLog

    first, _ = services.member_add(tenant=tenant_a, username="first-owner", role="owner")
    second, password = services.member_add(tenant=tenant_a, username="second", role="member")
    assert len(password) >= 16
    with pytest.raises(Conflict):
        services.member_add(tenant=tenant_a, username="SECOND")
    with pytest.raises(Conflict, match="last owner"):
        services.member_remove(tenant=tenant_a, membership_id=first.pk)
    services.member_role_change(tenant=tenant_a, membership_id=second.pk, role="owner")
    services.member_remove(tenant=tenant_a, membership_id=first.pk)
    assert [m.user.username for m in selectors.membership_list(tenant=tenant_a)] == ["second"]
    actions = set(AuditLog.objects.filter(tenant=tenant_a).values_list("action", flat=True))
    assert {"membership.add", "membership.role", "membership.remove"} <= actions
