"""The tenant dashboard with the Django test client: htmx partials, progress jobs, errors, limits,
downloads and tenant isolation. Asserts on the HTML the views send back."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

import kernels.engine
from kernels import dashboard_jobs, jobs, services
from kernels.engine.report import ArgError, KernelResult, TranslationResult
from kernels.selectors import kernel_run_list
from kernels.services import kernel_run_record
from tenants import services as tenant_services

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"
HTMX = {"HTTP_HX_REQUEST": "true"}
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


@pytest.fixture
def inline_jobs(monkeypatch):
    """Jobs run in the request's thread, inside the test's rolled-back transaction."""
    monkeypatch.setattr(jobs, "RUN_INLINE", True)


class DeferredDispatch:
    """Keeps submitted jobs queued instead of handing them to a worker."""

    def __init__(self):
        self.submitted = []

    def __call__(self, tenant, run):
        self.submitted.append(run.id)


@pytest.fixture
def deferred_jobs(monkeypatch) -> DeferredDispatch:
    dispatch = DeferredDispatch()
    monkeypatch.setattr(jobs, "_dispatch", dispatch)
    return dispatch


def _fake_result(source, **kwargs) -> TranslationResult:
    progress = kwargs.get("progress")
    for stage in ("parse", "analyse", "generate", "verify"):
        if progress:
            progress(stage, 0, 1, f"{stage} saxpy")
            progress(stage, 1, 1, "done")
    return TranslationResult(
        file=kwargs.get("filename", "input.f90"),
        target=kwargs["target"],
        kernels=[
            KernelResult(
                name="saxpy",
                status="verified",
                device="cpu",
                code="import numba\n\n\n@numba.njit\ndef saxpy(n, a, x, y):\n    pass\n",
                max_abs_err=2.5e-7,
                max_rel_err=1.25e-7,
                max_ulp=1.0,
                parallel_loops=1,
                entry="saxpy",
                arguments=[ArgError("y", 2.5e-7, 1.25e-7, 1.0, True, "rtol=1e-5")],
                sizes={"n": 64},
            )
        ],
    )


@pytest.fixture
def fake_engine(monkeypatch) -> list[dict]:
    """translate_source replaced by a quick fake; returns the kwargs of every call."""
    calls: list[dict] = []

    def translate_source(source, **kwargs):
        calls.append({"source": source, **kwargs})
        return _fake_result(source, **kwargs)

    monkeypatch.setattr(kernels.engine, "translate_source", translate_source, raising=False)
    return calls


def _member(django_user_model, tenant, username, role="member"):
    user = django_user_model.objects.create_user(username, password="pw-for-tests-123")
    tenant_services.membership_set(tenant=tenant, user=user, role=role)
    return user


@pytest.fixture
def alice(tenant_a, tenant_client, django_user_model):
    """A logged-in member's client on a.localhost."""
    user = _member(django_user_model, tenant_a, "alice")
    client = tenant_client(tenant_a)
    client.force_login(user)
    client.user = user
    return client


def _job_id(html: str) -> str:
    match = re.search(r'hx-get="/jobs/([0-9a-f]+)/"', html)
    assert match, html
    return match.group(1)


def test_dashboard_page_loads_htmx_and_a_form_that_falls_back_to_a_plain_post(alice):
    html = alice.get("/").content.decode()
    assert "/static/kernels/htmx.min.js" in html
    form = re.search(r'<form id="translate-form"[^>]*>', html).group(0)
    assert 'method="post"' in form and 'action="/translate/"' in form  # works without JS
    assert 'hx-post="/translate/"' in form and 'hx-target="#result"' in form
    assert 'id="runs-body"' in html


def test_vendored_htmx_is_served_with_its_license_header(alice):
    response = alice.get("/static/kernels/htmx.min.js")
    body = b"".join(response.streaming_content)
    assert response.status_code == 200
    assert b"Zero-Clause BSD" in body[:600] and b"htmx" in body


def test_htmx_post_answers_at_once_with_a_progress_card_that_polls_the_job(
    alice, fake_engine, deferred_jobs
):
    response = alice.post("/translate/", {"source": SAXPY, "target": "cpu"}, **HTMX)
    assert response.status_code == 202
    html = response.content.decode()
    job_id = _job_id(html)
    assert 'hx-trigger="load delay:400ms"' in html
    assert "<progress" in html and "queued" in html
    assert "<html" not in html  # a partial, not a page
    assert len(deferred_jobs.submitted) == 1 and fake_engine == []  # nothing ran yet

    poll = alice.get(f"/jobs/{job_id}/", **HTMX)
    assert poll.status_code == 200 and f'hx-get="/jobs/{job_id}/"' in poll.content.decode()
    assert poll["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db(transaction=True)
def test_job_endpoint_shows_the_engine_stage_then_the_result_card(alice, tenant_a, monkeypatch):
    """A real worker thread: the progress card names the current stage while it runs."""
    reached_verify, release = threading.Event(), threading.Event()

    def translate_source(source, *, progress, **kwargs):
        for stage in ("parse", "analyse", "generate"):
            progress(stage, 1, 1, f"{stage} done")
        progress("verify", 0, 1, "verifying saxpy against gfortran")
        reached_verify.set()
        assert release.wait(10)
        return _fake_result(source, **kwargs)

    monkeypatch.setattr(kernels.engine, "translate_source", translate_source, raising=False)
    response = alice.post("/translate/", {"source": SAXPY, "target": "cpu", "verify": "on"}, **HTMX)
    job_id = _job_id(response.content.decode())
    assert reached_verify.wait(10)

    running = alice.get(f"/jobs/{job_id}/", **HTMX).content.decode()
    assert 'data-job-state="running"' in running
    assert '<li class="step step-done">parse</li>' in running
    assert '<li class="step step-current">verify</li>' in running
    assert "verifying saxpy against gfortran" in running
    assert f'hx-get="/jobs/{job_id}/"' in running

    release.set()
    deadline = time.monotonic() + 10
    job = dashboard_jobs.job_get(job_id=job_id, tenant=tenant_a, user=alice.user)
    while not job.finished and time.monotonic() < deadline:
        time.sleep(0.05)
        job = dashboard_jobs.job_get(job_id=job_id, tenant=tenant_a, user=alice.user)
    done = alice.get(f"/jobs/{job_id}/", **HTMX).content.decode()
    assert "hx-trigger" not in done.split('id="runs-body"')[0]  # polling stops
    assert 'class="status big status-verified">verified' in done
    assert "2.5e-07" in done and "1.25e-07" in done  # max abs / rel error
    assert '<pre class="code"><code>import numba' in done
    assert 'hx-swap-oob="true"' in done  # the history table refreshes too


def test_htmx_translate_of_saxpy_with_the_real_engine_is_verified_and_recorded(
    alice, tenant_a, inline_jobs
):
    response = alice.post(
        "/translate/", {"source": SAXPY, "target": "cpu", "verify": "on", "sizes": "n=50"}, **HTMX
    )
    html = response.content.decode()
    assert response.status_code == 200, html
    assert 'class="status big status-verified">verified' in html
    assert "parallel loops" in html and "max ULP" in html
    run = kernel_run_list(tenant=tenant_a, limit=1)[0]
    assert (run.channel, run.username, run.status) == ("dashboard", "alice", "verified")
    assert f'href="/runs/{run.id}/code.py"' in html
    # The out-of-band history rows already list the new run.
    assert f'href="/runs/{run.id}/"' in html.split('id="runs-body"')[1]


def test_syntax_error_shows_line_and_column_with_the_source_line_never_a_500(
    alice, tenant_a, inline_jobs
):
    source = (FIXTURES / "syntax_error.f90").read_text()
    response = alice.post("/translate/", {"source": source, "target": "cpu"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="status big status-failed">failed' in html
    assert "line 10, column 12" in html
    assert "  10 |     a(i) = (a(i) + 1.0d0 * 2.0d0" in html
    assert "     |            ^" in html  # caret under column 12
    run = kernel_run_list(tenant=tenant_a, limit=1)[0]
    assert run.status == "failed" and run.channel == "dashboard"

    detail = alice.get(f"/runs/{run.id}/").content.decode()
    assert "line 10, column 12" in detail and '<span class="bad">' in detail


def test_plain_post_with_a_syntax_error_keeps_the_source_and_shows_line_column(alice):
    source = (FIXTURES / "syntax_error.f90").read_text()
    response = alice.post("/translate/", {"source": source, "target": "cpu"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "<html" in html and "line 10, column 12" in html
    assert "subroutine broken(n, a)" in html.split("<textarea")[1]  # the form keeps the source


def test_plain_post_redirects_to_a_run_page_with_metrics_code_and_download(alice, fake_engine):
    response = alice.post(
        "/translate/", {"source": SAXPY, "target": "cpu", "verify": "on", "sizes": "n=64"}
    )
    assert response.status_code == 302
    page = alice.get(response["Location"]).content.decode()
    assert "status-verified" in page and "2.5e-07" in page and "rtol=1e-5" in page
    assert '<pre class="code"><code>import numba' in page
    run_id = response["Location"].strip("/").split("/")[-1]
    assert f'href="/runs/{run_id}/code.py"' in page
    assert fake_engine[0]["sizes"] == {"n": 64} and fake_engine[0]["verify"] is True


def test_generated_code_downloads_as_a_python_attachment(alice, tenant_a):
    code = "def heat(n):\n    return n\n"
    run = kernel_run_record(
        tenant=tenant_a,
        channel="dashboard",
        status="verified",
        source="x",
        target="cpu",
        kernel_names=["heat"],
        generated_code=code,
        report={"kernels": [{"name": "heat", "status": "verified", "code": code}]},
    )
    whole = alice.get(f"/runs/{run.id}/code.py")
    assert whole.status_code == 200 and whole.content.decode() == code
    assert whole["Content-Type"].startswith("text/x-python")
    assert whole["Content-Disposition"] == 'attachment; filename="heat_cpu.py"'
    one = alice.get(f"/runs/{run.id}/code.py?kernel=heat")
    assert one.status_code == 200 and one.content.decode() == code
    assert alice.get(f"/runs/{run.id}/code.py?kernel=nope").status_code == 404

    empty = kernel_run_record(tenant=tenant_a, channel="cli", status="failed", source="x")
    assert alice.get(f"/runs/{empty.id}/code.py").status_code == 404


def test_source_over_the_size_limit_is_refused_with_413_and_no_run(alice, tenant_a, settings):
    settings.FORTRANSPIRE_MAX_SOURCE_BYTES = 200
    big = SAXPY + "! padding\n" * 20
    partial = alice.post("/translate/", {"source": big, "target": "cpu"}, **HTMX)
    assert partial.status_code == 413
    assert "the limit is 200 bytes" in partial.content.decode()
    page = alice.post("/translate/", {"source": big, "target": "cpu"})
    assert page.status_code == 413 and "the limit is 200 bytes" in page.content.decode()
    upload = SimpleUploadedFile("big.f90", big.encode())
    too_big_file = alice.post("/translate/", {"upload": upload, "target": "cpu"}, **HTMX)
    assert too_big_file.status_code == 413
    assert kernel_run_list(tenant=tenant_a) == []


@pytest.mark.parametrize("htmx", [True, False])
def test_request_body_over_djangos_limit_gets_a_413_message_not_a_bare_400(
    tenant_a, django_user_model, settings, htmx
):
    # With CSRF checks on (as for a browser) the middleware reads the body before the view.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    client = Client(HTTP_HOST="a.localhost", enforce_csrf_checks=True)
    client.force_login(_member(django_user_model, tenant_a, "erin"))
    client.get("/")
    token = client.cookies["csrftoken"].value
    headers = {"HTTP_X_CSRFTOKEN": token, **(HTMX if htmx else {})}
    response = client.post(
        "/translate/",
        {"source": "x" * 5000, "target": "cpu", "csrfmiddlewaretoken": token},
        **headers,
    )
    html = response.content.decode()
    assert response.status_code == 413
    assert "the request is too large; sources are limited to" in html
    assert ("<html" in html) is not htmx


def test_uploaded_file_is_translated_under_its_own_name(alice, fake_engine):
    upload = SimpleUploadedFile("my kernel.F90", SAXPY.encode())
    response = alice.post("/translate/", {"upload": upload, "target": "gpu"})
    assert response.status_code == 302
    assert fake_engine[0]["filename"] == "my_kernel.F90"  # .F90 keeps the preprocessor on
    assert fake_engine[0]["target"] == "gpu" and fake_engine[0]["source"] == SAXPY


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "", "target": "cpu"}, "paste Fortran source or choose a file"),
        ({"source": SAXPY, "target": "cpu", "sizes": "n=abc"}, "is not NAME=VALUE"),
        ({"source": SAXPY, "target": "tpu"}, "Select a valid choice"),
    ],
)
def test_invalid_form_comes_back_as_an_error_card(alice, fake_engine, fields, message):
    response = alice.post("/translate/", fields, **HTMX)
    assert response.status_code == 400
    assert message in response.content.decode() and "error-card" in response.content.decode()
    assert fake_engine == []


def test_the_tenant_job_cap_refuses_a_third_queued_translation(
    alice, fake_engine, deferred_jobs, settings
):
    settings.FORTRANSPIRE_TENANT_MAX_CONCURRENT_JOBS = 2
    for _ in range(2):
        assert (
            alice.post("/translate/", {"source": SAXPY, "target": "cpu"}, **HTMX).status_code == 202
        )
    refused = alice.post("/translate/", {"source": SAXPY, "target": "cpu"}, **HTMX)
    assert refused.status_code == 429 and refused["Retry-After"] == "5"
    assert "already has 2 jobs queued or running" in refused.content.decode()


def test_unknown_job_is_a_404_card(alice):
    response = alice.get("/jobs/0123456789abcdef/", **HTMX)
    assert response.status_code == 404 and "no such translation job" in response.content.decode()


def test_another_tenants_user_gets_403_and_cannot_see_jobs(
    alice, tenant_a, tenant_b, tenant_client, django_user_model, fake_engine, deferred_jobs
):
    run = kernel_run_record(
        tenant=tenant_a, channel="cli", status="verified", source="s", generated_code="x = 1\n"
    )
    job_id = _job_id(
        alice.post("/translate/", {"source": SAXPY, "target": "cpu"}, **HTMX).content.decode()
    )
    bob = _member(django_user_model, tenant_b, "bob")
    stranger = tenant_client(tenant_a)
    stranger.force_login(bob)
    for url in ("/", f"/runs/{run.id}/", f"/runs/{run.id}/code.py", f"/jobs/{job_id}/"):
        assert stranger.get(url, **HTMX).status_code == 403, url
    post = stranger.post("/translate/", {"source": SAXPY, "target": "cpu"}, **HTMX)
    assert post.status_code == 403 and len(deferred_jobs.submitted) == 1

    # On his own tenant, bob is a member, but alice's job (and run) are not there.
    on_b = tenant_client(tenant_b)
    on_b.force_login(bob)
    assert on_b.get(f"/jobs/{job_id}/", **HTMX).status_code == 404
    assert on_b.get(f"/runs/{run.id}/code.py").status_code == 404
    # Another member of tenant A does not see alice's job either.
    carol = _member(django_user_model, tenant_a, "carol")
    colleague = tenant_client(tenant_a)
    colleague.force_login(carol)
    assert colleague.get(f"/jobs/{job_id}/", **HTMX).status_code == 404


def test_anonymous_visitor_is_sent_to_login(tenant_a, tenant_client):
    for url in ("/", "/jobs/abc/", "/runs/abc/code.py"):
        response = tenant_client(tenant_a).get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url


def test_llm_fallback_checkbox_hands_the_tenants_fallback_to_the_engine(
    alice, fake_engine, monkeypatch
):
    fallback = object()
    monkeypatch.setattr(services, "llm_fallback_for", lambda tenant: fallback)
    alice.post("/translate/", {"source": SAXPY, "target": "cpu"})
    alice.post("/translate/", {"source": SAXPY, "target": "cpu", "allow_llm": "on"})
    assert [call["llm_fallback"] for call in fake_engine] == [None, fallback]


def test_a_finished_job_is_its_run_in_the_history(alice, tenant_a, fake_engine):
    options = {"source": SAXPY, "target": "cpu", "kernel": None, "verify": False, "sizes": None}
    job = dashboard_jobs.job_start(tenant=tenant_a, user=alice.user, **options)
    assert job.state == "done" and job.finished
    again = dashboard_jobs.job_get(job_id=job.id, tenant=tenant_a, user=alice.user)
    assert again.run_id == job.run_id
    run = kernel_run_list(tenant=tenant_a, limit=1)[0]
    assert str(run.id) == job.run_id and run.status == "verified"
    assert run.progress["stages"] == ["parse", "analyse", "generate", "verify"]
    assert run.started_at is not None and run.finished_at >= run.started_at


def test_expired_session_on_an_htmx_poll_sends_the_whole_page_to_login(tenant_a, tenant_client):
    response = tenant_client(tenant_a).get("/jobs/0123456789abcdef/", **HTMX)
    assert response.status_code == 401 and response["HX-Redirect"] == "/login/?next=/"
