"""The dashboard's workspace pages with the Django test client: who may open what (members,
owners, strangers from another tenant), and what each page does to the data behind it."""

from __future__ import annotations

import re

import pytest
from django.core.cache import cache
from django.test import Client

from kernels import dashboard_jobs
from kernels.services import kernel_run_record
from kernels.views import connect as connect_views
from tenants import selectors as tenant_selectors
from tenants import services as tenant_services
from tenants.llm_credentials import llm_credential_status
from tenants.models import ApiKey, Membership

PASSWORD = "pw-pages-test-123"
SAXPY = """\
subroutine saxpy(n, a, x, y)
  integer, intent(in) :: n
  real, intent(in) :: a
  real, intent(in) :: x(n)
  real, intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = a * x(i) + y(i)
  end do
end subroutine saxpy
"""

# Every dashboard page of a tenant host, and whether only owners may open it.
PAGES = [
    ("/", False),
    ("/runs/", False),
    ("/profile/", False),
    ("/usage/", False),
    ("/connect/", False),
    ("/runs/delete/", True),
    ("/settings/keys/", True),
    ("/settings/members/", True),
    ("/settings/llm/", True),
    ("/settings/privacy/", True),
]
# Owner-only POST actions (the ids need not exist: the role is checked first).
OWNER_POSTS = [
    "/runs/delete/",
    "/settings/keys/",
    "/settings/keys/1/revoke/",
    "/settings/members/",
    "/settings/members/1/role/",
    "/settings/members/1/remove/",
    "/settings/llm/",
    "/settings/llm/delete/",
    "/settings/privacy/",
    "/connect/test/",
]


def _user(django_user_model, tenant, username, role):
    user = django_user_model.objects.create_user(username, password=PASSWORD)
    tenant_services.membership_set(tenant=tenant, user=user, role=role)
    return user


def _client(host: str, user=None) -> Client:
    client = Client(HTTP_HOST=host)
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def owner_a(tenant_a, django_user_model):
    return _user(django_user_model, tenant_a, "owner-a", "owner")


@pytest.fixture
def member_a(tenant_a, django_user_model):
    return _user(django_user_model, tenant_a, "member-a", "member")


@pytest.fixture
def owner_b(tenant_b, django_user_model):
    return _user(django_user_model, tenant_b, "owner-b", "owner")


@pytest.fixture
def owner(owner_a):
    return _client("a.localhost", owner_a)


@pytest.fixture
def member(member_a):
    return _client("a.localhost", member_a)


# ---- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url,owner_only", PAGES)
def test_every_page_refuses_an_owner_of_another_tenant(url, owner_only, tenant_a, owner_b):
    response = _client("a.localhost", owner_b).get(url)
    assert response.status_code == 403
    assert "Not a member" in response.content.decode()


@pytest.mark.parametrize("url,owner_only", PAGES)
def test_every_page_sends_anonymous_visitors_to_the_login_form(url, owner_only, tenant_a):
    response = _client("a.localhost").get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("url,owner_only", PAGES)
def test_members_open_member_pages_and_get_403_on_owner_pages(url, owner_only, member, owner):
    response = member.get(url)
    assert response.status_code == (403 if owner_only else 200)
    assert owner.get(url).status_code == 200


@pytest.mark.parametrize("url", OWNER_POSTS)
def test_owner_actions_are_refused_to_members_on_the_server(url, member, tenant_a, owner_a):
    keys_before = len(tenant_selectors.api_key_list(tenant=tenant_a))
    response = member.post(url, {"name": "x", "scopes": ["history"], "username": "newbie"})
    assert response.status_code == 403
    assert "Owners only" in response.content.decode()
    assert len(tenant_selectors.api_key_list(tenant=tenant_a)) == keys_before
    assert [m.user.username for m in tenant_selectors.membership_list(tenant=tenant_a)] == [
        "owner-a",
        "member-a",
    ]


def test_nav_shows_settings_only_to_owners(owner, member):
    assert "/settings/keys/" in owner.get("/").content.decode()
    page = member.get("/").content.decode()
    assert "/settings/keys/" not in page and "/usage/" in page


# ---- sign-up -----------------------------------------------------------------------------------


@pytest.fixture
def public(db):
    cache.clear()
    yield Client(HTTP_HOST="localhost", REMOTE_ADDR="192.0.2.10")
    cache.clear()


def _signup(client, slug="acme", username="acme-owner", **overrides):
    data = {
        "name": "Acme Research",
        "slug": slug,
        "username": username,
        "password": "Tr1cky-Passphrase",
        "password2": "Tr1cky-Passphrase",
        **overrides,
    }
    return client.post("/signup/", data)


def test_signup_creates_the_workspace_its_owner_and_a_privacy_notice(public):
    response = _signup(public)
    assert response.status_code == 201, response.content.decode()[:2000]
    tenant = tenant_selectors.tenant_get(slug="acme")
    assert tenant.name == "Acme Research"
    assert tenant_selectors.tenant_for_host("acme.localhost") == tenant
    [membership] = tenant_selectors.membership_list(tenant=tenant)
    assert (membership.user.username, membership.role) == ("acme-owner", "owner")
    notice = tenant_selectors.privacy_notice_current(tenant=tenant)
    assert notice.tenant == tenant and notice.version == 1
    page = response.content.decode()
    link = re.search(r'href="(http://acme\.localhost(:\d+)?/login/token/\?t=[^"]+)"', page)
    assert link, page

    # The link, opened on the new host: a confirmation, then a POST that logs in once.
    path = link.group(1).split("acme.localhost", 1)[1].split("/", 1)[1]
    workspace = Client(HTTP_HOST="acme.localhost")
    token = re.search(r"t=([^&]+)$", path).group(1)
    from urllib.parse import unquote

    token = unquote(token)
    confirm = workspace.get("/login/token/", {"t": token})
    assert confirm.status_code == 200 and "Continue as acme-owner" in confirm.content.decode()
    landed = workspace.post("/login/token/", {"t": token}, follow=True)
    assert landed.status_code == 200
    body = landed.content.decode()
    assert "First steps" in body and "Welcome to Acme Research" in body
    # Spent: the same link cannot log in a second browser.
    again = Client(HTTP_HOST="acme.localhost").post("/login/token/", {"t": token})
    assert again.status_code == 401 and "already used" in again.content.decode()


def test_a_signin_link_is_refused_on_another_workspace(public, tenant_a):
    _signup(public)
    tenant = tenant_selectors.tenant_get(slug="acme")
    owner = tenant_selectors.membership_list(tenant=tenant)[0].user
    token = tenant_services.login_token_make(user=owner, tenant=tenant)
    response = Client(HTTP_HOST="a.localhost").post("/login/token/", {"t": token})
    assert response.status_code == 401
    assert "another workspace" in response.content.decode()


@pytest.mark.parametrize(
    "slug,message",
    [
        ("admin", "reserved"),
        ("mail", "reserved"),
        ("ab", "3-30 characters"),
        ("Acme!", "3-30 characters"),
        ("acme_co", "3-30 characters"),
        ("9lives", "3-30 characters"),
        ("x", "3-30 characters"),
    ],
)
def test_signup_refuses_bad_and_reserved_slugs(public, slug, message):
    response = _signup(public, slug=slug)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not tenant_selectors.tenant_for_host(f"{slug}.localhost")


def test_signup_refuses_a_taken_slug_and_a_taken_username(public, tenant_a, owner_a):
    assert _signup(public, slug="acme").status_code == 201
    taken = _signup(public, slug="acme", username="someone-else")
    assert taken.status_code == 400
    assert "is taken" in taken.content.decode().replace("&#x27;", "'")
    response = _signup(public, slug="fresh", username="owner-a")
    assert response.status_code == 409
    assert "taken" in response.content.decode()
    assert not tenant_selectors.tenant_for_host("fresh.localhost")


def test_signup_is_throttled_per_address(public, settings):
    settings.SIGNUP_PER_HOUR = 2
    assert _signup(public, slug="ab").status_code == 400
    assert _signup(public, slug="ab").status_code == 400
    response = _signup(public, slug="ab")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    other = Client(HTTP_HOST="localhost", REMOTE_ADDR="192.0.2.99")
    assert _signup(other, slug="ab").status_code == 400


def test_operator_can_turn_signup_off(public, settings):
    settings.SIGNUP_ENABLED = False
    assert public.get("/signup/").status_code == 403
    assert _signup(public).status_code == 403
    assert "/signup/" not in public.get("/").content.decode()
    assert not tenant_selectors.tenant_for_host("acme.localhost")


# ---- API keys ----------------------------------------------------------------------------------


def test_owner_creates_a_key_shown_once_and_revocation_is_immediate(owner, tenant_a):
    response = owner.post(
        "/settings/keys/",
        {"name": "ci", "scopes": ["translate", "history"], "expires_on": "2099-01-01"},
    )
    assert response.status_code == 201
    raw = re.search(r'id="raw-key">(fsp_[A-Za-z0-9_-]{43})<', response.content.decode()).group(1)
    # Shown once: the list shows the prefix only.
    listing = owner.get("/settings/keys/").content.decode()
    assert raw not in listing and raw[:12] in listing
    key = ApiKey.objects.get(prefix=raw[:12])
    assert key.scopes == ["translate", "history"] and key.expires_at.year == 2099

    api = Client(HTTP_HOST="a.localhost", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/me").status_code == 200
    assert owner.post(f"/settings/keys/{key.pk}/revoke/").status_code == 302
    assert api.get("/api/v1/me").status_code == 401


def test_revoking_a_key_clears_the_mcp_verifiers_cache(owner, tenant_a, make_key):
    from mcp_bridge.auth import TenantKeyVerifier, connect_key_signals

    connect_key_signals()  # done by the ASGI app at start-up (mcp_bridge.app)
    raw = make_key(tenant_a, scopes=["history"])
    verifier = TenantKeyVerifier()
    # A check cached moments ago, as a busy MCP session would have it.
    verifier._cache[(tenant_a.pk, "digest")] = (object(), 0.0)
    key = ApiKey.objects.get(prefix=raw[:12])
    assert owner.post(f"/settings/keys/{key.pk}/revoke/").status_code == 302
    assert verifier._cache == {}


def test_key_form_refuses_a_past_expiry_and_no_scope(owner, tenant_a):
    response = owner.post("/settings/keys/", {"name": "x", "expires_on": "2001-01-01"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "choose a day after today" in page and "This field is required" in page
    assert tenant_selectors.api_key_list(tenant=tenant_a) == []


def test_owner_cannot_revoke_another_tenants_key(owner, tenant_b, make_key):
    raw = make_key(tenant_b)
    key = ApiKey.objects.get(prefix=raw[:12])
    assert owner.post(f"/settings/keys/{key.pk}/revoke/").status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


# ---- members -----------------------------------------------------------------------------------


def test_owner_adds_a_member_with_a_password_shown_once(owner, tenant_a):
    response = owner.post("/settings/members/", {"username": "carol", "role": "member"})
    assert response.status_code == 201
    password = re.search(r'id="new-password">([^<]+)<', response.content.decode()).group(1)
    carol = Client(HTTP_HOST="a.localhost")
    assert carol.login(username="carol", password=password)
    assert carol.get("/").status_code == 200
    assert carol.get("/settings/keys/").status_code == 403
    assert password not in owner.get("/settings/members/").content.decode()


def test_owner_changes_roles_but_the_last_owner_stays(owner, tenant_a, owner_a, member_a):
    mine = Membership.objects.get(user=owner_a, tenant=tenant_a)
    response = owner.post(f"/settings/members/{mine.pk}/role/", {"role": "member"})
    assert response.status_code == 409 and "last owner" in response.content.decode()
    assert owner.post(f"/settings/members/{mine.pk}/remove/").status_code == 409

    theirs = Membership.objects.get(user=member_a, tenant=tenant_a)
    assert owner.post(f"/settings/members/{theirs.pk}/role/", {"role": "owner"}).status_code == 302
    assert owner.post(f"/settings/members/{mine.pk}/role/", {"role": "member"}).status_code == 302
    assert tenant_selectors.membership_role(user=owner_a, tenant=tenant_a) == "member"
    # Now a member: the owner pages are closed to them.
    assert owner.get("/settings/members/").status_code == 403


def test_owner_removes_a_member_who_then_gets_403(owner, member, tenant_a, member_a):
    theirs = Membership.objects.get(user=member_a, tenant=tenant_a)
    assert owner.post(f"/settings/members/{theirs.pk}/remove/").status_code == 302
    assert member.get("/").status_code == 403


def test_adding_a_taken_username_is_a_form_error(owner, owner_b):
    response = owner.post("/settings/members/", {"username": "owner-b", "role": "member"})
    assert response.status_code == 409 and "taken" in response.content.decode()


# ---- LLM settings ------------------------------------------------------------------------------


def test_llm_key_is_write_only_and_shows_its_last_four_characters(owner, tenant_a):
    response = owner.post(
        "/settings/llm/",
        {"api_key": "sk-secret-value-WXYZ", "model": "codestral-latest", "fallback_enabled": "on"},
    )
    assert response.status_code == 302
    page = owner.get("/settings/llm/").content.decode()
    assert "sk-secret-value" not in page and "…WXYZ" in page
    status = llm_credential_status(tenant=tenant_a)
    assert status.key_source == "tenant" and status.fallback_enabled
    # Saving without a key keeps the stored one.
    owner.post("/settings/llm/", {"api_key": "", "model": "mistral-large-latest"})
    status = llm_credential_status(tenant=tenant_a)
    assert status.key_source == "tenant" and status.model == "mistral-large-latest"
    assert not status.fallback_enabled
    assert owner.post("/settings/llm/delete/").status_code == 302
    assert llm_credential_status(tenant=tenant_a).key_source == "none"


def test_llm_settings_refuse_a_first_save_without_a_key(owner, tenant_a):
    response = owner.post("/settings/llm/", {"api_key": "", "model": "codestral-latest"})
    assert response.status_code == 400 and "needs an api_key" in response.content.decode()


# ---- privacy notice ----------------------------------------------------------------------------


def test_privacy_draft_preview_publish_and_public_page(owner, tenant_a, tenant_b):
    tenant_services.privacy_notice_publish(body="Platform notice text")
    form = {"body": "Draft text of Tenant A", "data_residency": "EU", "sub_processors": "Mistral"}
    assert owner.post("/settings/privacy/", {**form, "action": "save"}).status_code == 302
    page = owner.get("/settings/privacy/").content.decode()
    assert 'id="preview"' in page and "Draft text of Tenant A" in page
    # A draft is not public.
    public_a = Client(HTTP_HOST="a.localhost").get("/privacy").content.decode()
    assert "Draft text" not in public_a and "Platform notice text" in public_a

    response = owner.post("/settings/privacy/", {**form, "action": "publish"})
    assert response.status_code == 302 and "published=1" in response["Location"]
    form["body"] = "Second version"
    owner.post("/settings/privacy/", {**form, "action": "publish"})
    public_a = Client(HTTP_HOST="a.localhost").get("/privacy").content.decode()
    assert "Second version" in public_a and "version 2" in public_a
    # Tenant B still shows the platform's notice; the history lists both versions.
    assert (
        "Platform notice text" in Client(HTTP_HOST="b.localhost").get("/privacy").content.decode()
    )
    history = [n.version for n in tenant_selectors.privacy_notice_history(tenant=tenant_a)]
    assert history == [2, 1]
    assert tenant_selectors.privacy_notice_draft(tenant=tenant_a) is None


# ---- runs --------------------------------------------------------------------------------------


def _record(tenant, names, status="verified", target="cpu", channel="api"):
    return kernel_run_record(
        tenant=tenant,
        channel=channel,
        status=status,
        source="x",
        target=target,
        kernel_names=names,
        duration_ms=100,
    )


def test_runs_search_filters_and_pages(member, tenant_a):
    for i in range(30):
        _record(tenant_a, [f"heat{i}"], status="verified" if i % 2 else "mismatch")
    _record(tenant_a, ["saxpy"], target="gpu", channel="mcp")
    page = member.get("/runs/", {"kernel": "SAXPY"}).content.decode()
    assert "1 run match" in page and "saxpy" in page
    page = member.get("/runs/", {"status": "mismatch"}).content.decode()
    assert "15 runs match" in page
    page = member.get("/runs/", {"target": "gpu", "channel": "mcp"}).content.decode()
    assert "1 run match" in page
    first = member.get("/runs/").content.decode()
    assert "31 runs" in first and "page 1 of 2" in first and "page=2" in first
    second = member.get("/runs/", {"page": 2}).content.decode()
    assert second.count('class="status status-') == 6
    bad = member.get("/runs/", {"status": "nonsense"})
    assert bad.status_code == 400 and "status must be one of" in bad.content.decode()


def test_deleting_history_needs_the_typed_confirmation(owner, tenant_a):
    _record(tenant_a, ["k"])
    page = owner.get("/runs/delete/").content.decode()
    assert "all 1 run" in page
    assert owner.post("/runs/delete/", {"confirm": "yes"}).status_code == 400
    assert owner.post("/runs/delete/", {"confirm": "delete"}).status_code == 302
    assert "0 runs" in owner.get("/runs/").content.decode()


# ---- usage -------------------------------------------------------------------------------------


def test_usage_shows_verified_share_latency_and_the_llm_alert(member, tenant_a):
    for status in ("verified", "verified", "verified", "mismatch"):
        _record(tenant_a, ["k"], status=status)
    kernel_run_record(
        tenant=tenant_a,
        channel="mcp",
        status="verified",
        source="src",
        target="cpu",
        kernel_names=["hard"],
        llm_calls=7,
        report={"kernels": [{"name": "hard", "status": "verified", "llm_calls": 7}]},
    )
    page = member.get("/usage/").content.decode()
    assert 'id="llm-alert"' in page and "<code>hard</code>: 7 calls" in page
    assert re.search(r'id="m-verified">80 %<', page)
    assert re.search(r'id="m-latency">100 ms<', page)
    assert page.count("<svg") == 3


# ---- profile -----------------------------------------------------------------------------------


def test_profile_without_javascript_lands_on_the_run_with_ranking_and_png(member, tenant_a):
    response = member.post("/profile/", {"source": SAXPY, "sizes": "n=1000"})
    assert response.status_code == 302
    page = member.get(response["Location"]).content.decode()
    assert "Hotspots" in page and "<code>saxpy</code>" in page
    png_url = re.search(r'src="(/runs/[^"]+/profile\.png)"', page).group(1)
    png = member.get(png_url)
    assert png["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")


def test_profile_with_htmx_runs_a_profile_job(member, tenant_a, monkeypatch):
    response = member.post("/profile/", {"source": SAXPY}, HTTP_HX_REQUEST="true")
    assert response.status_code == 202
    job_id = re.search(r'id="job-([0-9a-f]+)"', response.content.decode()).group(1)
    done = member.get(f"/jobs/{job_id}/", HTTP_HX_REQUEST="true").content.decode()
    assert "profile-result" in done and "saxpy" in done and "profile.png" in done


# ---- uploads -----------------------------------------------------------------------------------


def _project_zip():
    import io
    import zipfile

    from django.core.files.uploadedfile import SimpleUploadedFile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("src/mod.f90", "module m\nend module m\n")
        archive.writestr("src/main.F90", SAXPY)
        archive.writestr("README.md", "not fortran")
    return SimpleUploadedFile("project.zip", buffer.getvalue())


def test_translate_passes_several_uploaded_files_as_one_project(member, tenant_a, monkeypatch):
    from fortranspire_site.errors import ValidationFailed

    seen = {}

    def fake_job_start(**kwargs):
        seen.update(kwargs)
        raise ValidationFailed("stopped by the test")

    monkeypatch.setattr(dashboard_jobs, "job_start", fake_job_start)
    response = member.post("/translate/", {"upload": _project_zip(), "target": "cpu"})
    assert response.status_code == 400 and "stopped by the test" in response.content.decode()
    assert seen["files"] == {"src/mod.f90": "module m\nend module m\n", "src/main.F90": SAXPY}
    assert "source" not in seen


def test_a_two_file_project_uploaded_without_javascript_verifies_with_each_kernels_file(
    member, tenant_a
):
    import io
    import zipfile
    from pathlib import Path

    from django.core.files.uploadedfile import SimpleUploadedFile

    project = Path(__file__).resolve().parents[1] / "fixtures" / "projects" / "two_file_module"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(project.glob("*.f90"), reverse=True):  # the USEing file first
            archive.writestr(f"src/{path.name}", path.read_text())
    upload = SimpleUploadedFile("project.zip", buffer.getvalue())
    response = member.post("/translate/", {"upload": upload, "target": "cpu", "verify": "on"})
    assert response.status_code == 302, response.content.decode()[:500]
    run_id = response["Location"].rstrip("/").split("/")[-1]
    from kernels import selectors

    run = selectors.kernel_run_get(tenant=tenant_a, run_id=run_id)
    kernels = run.report["kernels"]
    assert run.status == "verified" and run.channel == "dashboard"
    assert {k["file"] for k in kernels} == {"src/field_kernels.f90", "src/grid_common.f90"}
    assert all(k["coverage"]["loops_run"] == k["coverage"]["loops"] > 0 for k in kernels)


def test_translate_refuses_an_archive_that_escapes_its_folder(member, tenant_a):
    import io
    import zipfile

    from django.core.files.uploadedfile import SimpleUploadedFile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../evil.f90", SAXPY)
    upload = SimpleUploadedFile("evil.zip", buffer.getvalue())
    response = member.post("/translate/", {"upload": upload, "target": "cpu"})
    assert response.status_code == 400
    assert "points outside the archive" in response.content.decode().replace("&#x27;", "'")


# ---- connect -----------------------------------------------------------------------------------


def test_connect_page_shows_both_mcp_urls(member):
    page = member.get("/connect/").content.decode()
    assert "http://a.localhost/mcp" in page and "http://a.localhost/sse" in page
    assert "No OAuth clients are connected." in page


def test_connection_test_uses_a_temporary_key_and_revokes_it(owner, tenant_a, monkeypatch):
    seen = {}

    def fake_probe(*, base, host, key):
        seen.update(base=base, host=host, key=key)
        assert tenant_services.api_key_authenticate(raw_key=key, tenant=tenant_a)
        return [
            connect_views.ProbeResult(
                transport="Streamable HTTP", path="/mcp", ok=True, tools=["translate_kernel"]
            ),
            connect_views.ProbeResult(transport="SSE", path="/sse", error="ConnectError: x"),
        ]

    monkeypatch.setattr(connect_views, "probe_mcp", fake_probe)
    response = owner.post("/connect/test/", HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert 'data-status="failed"' in page and "translate_kernel" in page and "ConnectError" in page
    assert seen["host"] == "a.localhost"
    [key] = tenant_selectors.api_key_list(tenant=tenant_a)
    assert key.name == "connection test" and key.scopes == ["history"]
    assert key.revoked_at is not None


# ---- report figures ----------------------------------------------------------------------------


def test_result_card_shows_inconclusive_coverage_and_the_simulator_note(rf):
    from django.template.loader import render_to_string

    from kernels.views.translate import _result_context

    report = {
        "kernels": [
            {
                "name": "halo",
                "status": "inconclusive",
                "device": "simulator",
                "coverage": {"loops": 3, "loops_run": 2, "lines": 10, "lines_run": 8},
            }
        ]
    }
    result = _result_context(source="", report=report)
    html = render_to_string("dashboard/_result.html", {"result": result}, request=rf.get("/"))
    assert "2/3 loops ran" in html and "8/10 lines ran" in html
    assert "Inconclusive: some loop never ran" in html
    assert "CUDA <strong>simulator</strong>" in html
    assert 'class="status status-inconclusive"' in html


def test_measured_timings_are_shown_when_asked(member, tenant_a, monkeypatch):
    from kernels.engine import profile as engine_profile

    asked = {}

    def fake_profile(source, *, sizes=None, measure=False, progress=None, **kwargs):
        asked["measure"] = measure
        timing = {"status": "ok", "median_s": 0.0021, "speedup_vs_gfortran": 1.8}
        return {
            "file": "input.f90",
            "measured": measure,
            "machine": {},
            "stream": {},
            "kernels": [
                {
                    "name": "saxpy",
                    "rank": 1,
                    "share": 1.0,
                    "measured": {"gfortran": timing, "numba_prange": timing},
                }
            ],
        }

    monkeypatch.setattr(engine_profile, "profile_source", fake_profile)
    response = member.post("/profile/", {"source": SAXPY, "measure": "on"})
    page = member.get(response["Location"]).content.decode()
    assert asked["measure"] is True
    assert "Measured timings" in page and "numba prange" in page and "2.1 ms" in page
