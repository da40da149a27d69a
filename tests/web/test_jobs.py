"""The job service (kernels.jobs) and the limits every channel shares (kernels.limits)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
from django_tenants.utils import tenant_context

from fortranspire_site.errors import RateLimited
from kernels import jobs, limits, services
from kernels.engine.report import KernelResult, TranslationResult
from kernels.models import KernelRun

SAXPY = """\
subroutine saxpy(n, a, x, y)
  integer, intent(in) :: n
  real, intent(in) :: a, x(n)
  real, intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = a * x(i) + y(i)
  end do
end subroutine saxpy
"""


@pytest.fixture
def fake_engine(monkeypatch):
    import kernels.engine

    def translate_source(source, *, progress=None, **kwargs):
        for stage in ("parse", "analyse", "generate"):
            if progress:
                progress(stage, 1, 1, stage)
        return TranslationResult(
            file="input.f90",
            target=kwargs["target"],
            kernels=[KernelResult(name="saxpy", status="translated", device="cpu", code="x=1")],
        )

    monkeypatch.setattr(kernels.engine, "translate_source", translate_source)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _queued(tenant, **fields) -> KernelRun:
    run = services.kernel_run_accept(
        tenant=tenant,
        kind="translate",
        channel="api",
        tool="translate_kernel",
        source=SAXPY,
        params=services.translate_params(target="cpu", verify=False),
    )
    if fields:
        with tenant_context(tenant):
            KernelRun.objects.filter(pk=run.pk).update(**fields)
            run.refresh_from_db()
    return run


def test_a_job_goes_from_queued_through_running_to_its_outcome(tenant_a, fake_engine):
    states: list[str] = []
    original = services.kernel_run_claim

    def claim(**kwargs):
        with tenant_context(tenant_a):
            states.append(KernelRun.objects.get(pk=kwargs["run_id"]).status)
        return original(**kwargs)

    jobs_claim = pytest.MonkeyPatch()
    jobs_claim.setattr(services, "kernel_run_claim", claim)
    try:
        run = jobs.job_translate_submit(
            tenant=tenant_a, source=SAXPY, channel="api", tool="translate_kernel", verify=False
        )
    finally:
        jobs_claim.undo()
    assert states == ["queued"]
    assert run.status == "translated" and run.attempts == 1
    assert run.progress["stages"] == ["parse", "analyse", "generate"]
    assert run.started_at <= run.finished_at
    assert jobs.job_outcome(run)["run_id"] == str(run.id)


def test_progress_sent_just_before_the_run_finished_still_reaches_the_waiter(tenant_a, monkeypatch):
    # The last stages of a verification end within milliseconds of each other and of the run:
    # the waiter sees the run finished with their events still queued, and passes them on.
    finished = SimpleNamespace(finished=True)
    stages = [f"stage {k}" for k in range(5)]

    def reload_after_the_last_stages(tenant, run_id):
        for k, stage in enumerate(stages):
            jobs.job_event_publish(
                run_id,
                {"event": "progress", "stage": "verify", "done": k, "total": 5, "message": stage},
            )
        return finished

    monkeypatch.setattr(jobs, "_run_reload", reload_after_the_last_stages)
    seen: list[str] = []

    async def wait():
        return await jobs.job_wait(
            tenant=tenant_a, run_id="r-1", on_progress=lambda *event: seen.append(event[3])
        )

    assert asyncio.run(wait()) is finished
    assert seen == stages


def test_an_engine_error_is_raised_again_from_the_run_with_its_diagnostics(tenant_a):
    run = jobs.job_translate_submit(
        tenant=tenant_a,
        source="subroutine s(\n  x = \nend\n",
        channel="api",
        tool="translate_kernel",
        verify=False,
    )
    assert run.status == "failed"
    with pytest.raises(Exception) as raised:
        jobs.job_outcome(run)
    assert raised.value.status == 400
    assert raised.value.extra["run_id"] == str(run.id)
    assert raised.value.extra["diagnostics"][0]["line"] >= 1


def test_a_job_on_a_live_worker_is_left_to_it_and_a_dead_workers_job_is_taken_over(tenant_a):
    from django.utils import timezone

    host = socket.gethostname()
    run = _queued(
        tenant_a,
        status="running",
        worker=f"{host}:1",  # pid 1 is alive
        heartbeat_at=timezone.now(),
        attempts=1,
    )
    decision, _ = services.kernel_run_claim(
        tenant=tenant_a, run_id=run.id, worker="me:2", stale_after_s=30, max_attempts=2
    )
    assert decision == "busy"

    dead = _queued(
        tenant_a,
        status="running",
        worker=f"{host}:{_dead_pid()}",
        heartbeat_at=timezone.now(),
        attempts=1,
    )
    decision, claimed = services.kernel_run_claim(
        tenant=tenant_a, run_id=dead.id, worker="me:2", stale_after_s=30, max_attempts=2
    )
    assert decision == "run" and claimed.attempts == 2 and claimed.worker == "me:2"


def test_a_job_lost_on_workers_too_often_ends_interrupted_with_the_reason(tenant_a):
    run = _queued(tenant_a, status="running", worker="elsewhere:9", attempts=2)
    decision, lost = services.kernel_run_claim(
        tenant=tenant_a, run_id=run.id, worker="me:2", stale_after_s=30, max_attempts=2
    )
    assert decision == "interrupted" and lost.status == "interrupted"
    assert "stopped 2 time(s)" in lost.error and "elsewhere:9" in lost.error
    again, _ = services.kernel_run_claim(
        tenant=tenant_a, run_id=run.id, worker="me:3", stale_after_s=30, max_attempts=2
    )
    assert again == "done"


def test_startup_sweep_interrupts_only_runs_of_dead_processes_of_this_host(tenant_a):
    host = socket.gethostname()
    dead = _queued(tenant_a, status="running", worker=f"{host}:{_dead_pid()}")
    dead_queued = _queued(tenant_a, worker=f"{host}:{_dead_pid()}")
    alive = _queued(tenant_a, status="running")  # this process
    other_host = _queued(tenant_a, status="running", worker="another-host:12")

    swept = services.kernel_runs_interrupt_dead(tenants=[tenant_a])

    assert swept == {tenant_a.schema_name: 2}
    with tenant_context(tenant_a):
        status = {r.pk: r for r in KernelRun.objects.all()}
    assert status[dead.pk].status == status[dead_queued.pk].status == "interrupted"
    assert "stopped" in status[dead.pk].error and status[dead.pk].finished_at
    assert status[alive.pk].status == "running"
    assert status[other_host.pk].status == "running"


def test_tenant_job_cap_counts_queued_and_running_runs_of_that_tenant_only(
    tenant_a, tenant_b, settings, monkeypatch
):
    settings.FORTRANSPIRE_TENANT_MAX_CONCURRENT_JOBS = 2
    monkeypatch.setattr(jobs, "_dispatch", lambda tenant, run: None)
    submit = dict(channel="api", tool="translate_kernel", source=SAXPY, verify=False)
    jobs.job_translate_submit(tenant=tenant_a, **submit)
    jobs.job_translate_submit(tenant=tenant_a, **submit)
    with pytest.raises(RateLimited) as refused:
        jobs.job_translate_submit(tenant=tenant_a, **submit)
    assert refused.value.retry_after == 5 and refused.value.extra["cap"] == 2
    assert jobs.job_translate_submit(tenant=tenant_b, **submit).status == "queued"


def test_token_bucket_allows_the_burst_then_says_when_to_retry(settings, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    settings.FORTRANSPIRE_RATE_LIMIT_BURST = 2
    settings.FORTRANSPIRE_RATE_LIMIT_PER_MINUTE = 6  # one token every 10 s
    limits.rate_limit_check(key="k1")
    limits.rate_limit_check(key="k1")
    with pytest.raises(RateLimited) as refused:
        limits.rate_limit_check(key="k1")
    assert refused.value.retry_after == 10 and refused.value.status == 429
    limits.rate_limit_check(key="k2")  # buckets are per key
    now[0] += 10
    limits.rate_limit_check(key="k1")


def test_rate_limit_of_zero_disables_the_limit(settings):
    settings.FORTRANSPIRE_RATE_LIMIT_PER_MINUTE = 0
    for _ in range(200):
        limits.rate_limit_check(key="k")


def test_rest_api_answers_429_with_retry_after_once_the_keys_bucket_is_empty(
    client_a, tenant_a, make_key, auth_headers, settings
):
    settings.FORTRANSPIRE_RATE_LIMIT_BURST = 2
    settings.FORTRANSPIRE_RATE_LIMIT_PER_MINUTE = 1
    headers = auth_headers(make_key(tenant_a))
    assert [client_a.get("/api/v1/runs", **headers).status_code for _ in range(2)] == [200, 200]
    refused = client_a.get("/api/v1/runs", **headers)
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert refused.json()["error"] == "rate_limited"


@pytest.mark.parametrize(
    ("source", "line", "column", "what"),
    [
        ("subroutine s\n  x = 1\x00\nend\n", 2, 8, "NUL"),
        ("subroutine s\n  ! caf\udce9\nend\n", 2, 8, "surrogate"),
    ],
)
def test_nul_and_lone_surrogates_are_refused_with_their_position_on_the_api(
    client_a, tenant_a, make_key, auth_headers, source, line, column, what
):
    import json

    body = json.dumps({"source": source, "verify": False})  # ensure_ascii keeps \\udce9 as is
    response = client_a.post(
        "/api/v1/translate",
        data=body,
        content_type="application/json",
        **auth_headers(make_key(tenant_a)),
    )
    assert response.status_code == 400, response.content
    data = response.json()
    assert (data["line"], data["column"]) == (line, column)
    assert what in data["message"]


def test_wrong_api_keys_from_one_address_lock_it_out_even_for_a_right_key(
    client_a, tenant_a, make_key, auth_headers, settings
):
    settings.AXES_FAILURE_LIMIT = 5
    good = make_key(tenant_a)
    statuses = [
        client_a.get("/api/v1/me", **auth_headers(f"fsp_wrong{i:030d}")).status_code
        for i in range(5)
    ]
    assert statuses == [401] * 4 + [429]  # the guess that reaches the limit is refused too
    locked = client_a.get("/api/v1/me", **auth_headers(good))
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 0
    assert locked.json()["error"] == "rate_limited"


def test_dashboard_password_guessing_is_locked_out_before_the_right_password(
    tenant_a, tenant_client, django_user_model, settings
):
    settings.AXES_FAILURE_LIMIT = 5
    django_user_model.objects.create_user("victim", password="the-right-password-123")
    client = tenant_client(tenant_a)
    for _ in range(5):
        client.post("/login/", {"username": "victim", "password": "guess"})
    response = client.post("/login/", {"username": "victim", "password": "the-right-password-123"})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
