"""HTML and probe endpoints: health, host resolution, privacy page, dashboard, both admins."""

from __future__ import annotations

import pytest
from django.test import Client

import kernels.engine
from kernels.engine.report import KernelResult, TranslationResult
from kernels.selectors import kernel_run_list
from kernels.services import kernel_run_record
from tenants import selectors, services


@pytest.mark.parametrize("host", ["a.localhost", "a.localhost:8000", "localhost", "127.0.0.1"])
def test_health_is_200_without_a_token_on_tenant_and_public_hosts(tenant_a, tenant_client, host):
    response = tenant_client(host).get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "channel_layer": "ok",
        "sandbox": "ok",
    }


def test_health_is_503_when_the_channel_layer_is_down(tenant_a, client_a, monkeypatch):
    from fortranspire_site import views

    async def broken_round_trip():
        raise ConnectionError("redis is gone")

    monkeypatch.setattr(views, "_channel_layer_round_trip", broken_round_trip)
    response = client_a.get("/health")
    assert response.status_code == 503
    assert response.json()["channel_layer"] == "down" and response.json()["database"] == "ok"


def test_health_is_503_when_the_database_is_down(tenant_a, client_a, monkeypatch):
    from fortranspire_site import views

    class BrokenConnection:
        def cursor(self):
            raise ConnectionError("database is gone")

    monkeypatch.setattr(views, "connection", BrokenConnection())
    response = client_a.get("/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "degraded",
        "database": "down",
        "channel_layer": "ok",
        "sandbox": "ok",
    }


@pytest.mark.parametrize("host", ["nobody.localhost", "evil.example.com"])
def test_unknown_host_gets_a_404_page_not_a_traceback(db, tenant_client, host):
    response = tenant_client(host).get("/api/v1/me")
    assert response.status_code == 404
    assert b"Not found" in response.content and b"Traceback" not in response.content


def test_localhost_is_the_public_site_with_landing_page_and_admin(public_client):
    landing = public_client.get("/")
    assert landing.status_code == 200 and b"fortranspire" in landing.content
    admin = public_client.get("/admin/")
    assert admin.status_code == 302 and "/admin/login/" in admin["Location"]
    # The tenant API does not exist on the public host.
    assert public_client.get("/api/v1/me").status_code == 404


def test_public_privacy_page_shows_the_latest_published_version(client_a, public_client):
    services.privacy_notice_publish(body="The OLD notice text.")
    latest = services.privacy_notice_publish(body="The NEW notice text.", data_residency="EU")
    for client in (client_a, public_client):
        page = client.get("/privacy")
        assert page.status_code == 200
        html = page.content.decode()
        assert "The NEW notice text." in html and "The OLD notice text." not in html
        assert f"version {latest.version}" in html


def _member(django_user_model, tenant, username, role="member"):
    user = django_user_model.objects.create_user(username, password="pw-for-tests-123")
    services.membership_set(tenant=tenant, user=user, role=role)
    return user


def test_dashboard_requires_login_and_membership_of_this_tenant(
    tenant_a, tenant_b, tenant_client, django_user_model
):
    run = kernel_run_record(
        tenant=tenant_a, channel="cli", status="verified", source="dash", kernel_names=["heat"]
    )
    user = _member(django_user_model, tenant_a, "alice")
    anonymous = tenant_client(tenant_a).get("/")
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]

    on_a = tenant_client(tenant_a)
    on_a.force_login(user)
    page = on_a.get("/")
    assert page.status_code == 200 and str(run.id) in page.content.decode()
    assert on_a.get(f"/runs/{run.id}/").status_code == 200

    on_b = tenant_client(tenant_b)
    on_b.force_login(user)
    assert on_b.get("/").status_code == 403


def test_dashboard_translate_records_a_dashboard_run(
    tenant_a, tenant_client, django_user_model, monkeypatch
):
    def translate_source(source, **kwargs):
        return TranslationResult(
            file="input.f90",
            target=kwargs["target"],
            kernels=[
                KernelResult(
                    name="k", status="translated", device="cpu", code="def k():\n    pass\n"
                )
            ],
        )

    monkeypatch.setattr(kernels.engine, "translate_source", translate_source, raising=False)
    user = _member(django_user_model, tenant_a, "bob")
    client = tenant_client(tenant_a)
    client.force_login(user)
    response = client.post("/translate/", {"source": "subroutine k\nend", "target": "cpu"})
    assert response.status_code == 302
    run = kernel_run_list(tenant=tenant_a, limit=1)[0]
    assert (run.channel, run.username, run.status) == ("dashboard", "bob", "translated")
    assert response["Location"] == f"/runs/{run.id}/"


def test_owner_session_can_delete_history_but_a_member_session_cannot(
    tenant_a, tenant_client, django_user_model
):
    kernel_run_record(tenant=tenant_a, channel="cli", status="ok", source="x")
    member = _member(django_user_model, tenant_a, "mia")
    owner = _member(django_user_model, tenant_a, "olga", role="owner")
    for user, expected in ((member, 403), (owner, 200)):
        client = Client(HTTP_HOST="a.localhost", enforce_csrf_checks=False)
        client.force_login(user)
        assert client.delete("/api/v1/runs").status_code == expected
    assert kernel_run_list(tenant=tenant_a) == []


def test_tenant_admin_shows_runs_read_only_to_members(tenant_a, tenant_client, django_user_model):
    run = kernel_run_record(tenant=tenant_a, channel="mcp", status="verified", source="adm")
    user = _member(django_user_model, tenant_a, "carol")
    client = tenant_client(tenant_a)
    client.force_login(user)
    listing = client.get("/admin/kernels/kernelrun/")
    assert listing.status_code == 200 and str(run.id) in listing.content.decode()
    assert client.get("/admin/kernels/kernelrun/add/").status_code == 403
    change = client.post(f"/admin/kernels/kernelrun/{run.id}/delete/", {"post": "yes"})
    assert change.status_code == 403
    assert kernel_run_list(tenant=tenant_a)[0].id == run.id


def test_operator_admin_lists_keys_by_prefix_never_the_digest(
    tenant_a, public_client, django_user_model
):
    key, _raw = services.api_key_create(tenant=tenant_a, name="listed", scopes=["history"])
    admin_user = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    public_client.force_login(admin_user)
    listing = public_client.get("/admin/tenants/apikey/").content.decode()
    assert key.prefix in listing and key.digest not in listing
    detail = public_client.get(f"/admin/tenants/apikey/{key.pk}/change/").content.decode()
    assert key.digest not in detail

    response = public_client.post(
        "/admin/tenants/apikey/",
        {"action": "revoke_keys", "_selected_action": [key.pk]},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None


@pytest.fixture
def operator(public_client, django_user_model):
    admin_user = django_user_model.objects.create_superuser("operator", password="pw-op-12345")
    public_client.force_login(admin_user)
    return public_client


def test_operator_admin_publishes_a_notice_as_a_new_version(operator):
    response = operator.post(
        "/admin/tenants/privacynotice/add/",
        {
            "body": "Published from the admin.",
            "sub_processors": '["Mistral AI"]',
            "data_residency": "EU",
            "retention_policy": "90 days",
        },
    )
    assert response.status_code == 302, response.content[:500]
    current = selectors.privacy_notice_current()
    assert current.body == "Published from the admin." and current.published_at is not None
    # A published notice opens read-only: no editable body field.
    page = operator.get(f"/admin/tenants/privacynotice/{current.pk}/change/").content.decode()
    assert 'name="body"' not in page


def test_operator_admin_llm_key_is_write_only(operator, tenant_a):
    secret = "mistral-secret-key-123456"
    response = operator.post(
        "/admin/tenants/llmcredential/add/",
        {
            "tenant": tenant_a.pk,
            "model": "codestral-latest",
            "endpoint_override": "",
            "api_key": secret,
        },
    )
    assert response.status_code == 302, response.content[:500]
    from tenants.models import LlmCredential

    credential = LlmCredential.objects.get(tenant=tenant_a)
    assert credential.encrypted_api_key and secret not in credential.encrypted_api_key
    page = operator.get(f"/admin/tenants/llmcredential/{credential.pk}/change/").content.decode()
    assert secret not in page and credential.encrypted_api_key not in page


def test_operator_admin_refuses_a_private_llm_endpoint_as_a_form_error(operator, tenant_a):
    response = operator.post(
        "/admin/tenants/llmcredential/add/",
        {
            "tenant": tenant_a.pk,
            "model": "codestral-latest",
            "endpoint_override": "http://127.0.0.1:9000",
            "api_key": "k-123456789",
        },
    )
    assert response.status_code == 200  # the form comes back with the error
    from tenants.models import LlmCredential

    assert not LlmCredential.objects.filter(tenant=tenant_a).exists()


def test_member_logs_in_with_the_form_and_lands_on_the_dashboard(
    tenant_a, tenant_client, django_user_model
):
    _member(django_user_model, tenant_a, "dora")
    client = tenant_client(tenant_a)
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": "dora", "password": "pw-for-tests-123"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    wrong = tenant_client(tenant_a).post("/login/", {"username": "dora", "password": "nope"})
    assert wrong.status_code == 200 and b"errorlist" in wrong.content
