"""Jobs and limits across real processes: web servers and Celery workers started as
subprocesses on the test database, then killed with SIGKILL.

The Redis tests use the machine's Redis (REDIS_URL, default the local service on database 15)
and skip, with the reason, when it does not answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.live_server import free_port

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"

SAXPY = """\
subroutine saxpy(n, a, x, y)
  integer, intent(in) :: n
  real(8), intent(in) :: a, x(n)
  real(8), intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = a * x(i) + y(i)
  end do
end subroutine saxpy
"""

pytestmark = pytest.mark.django_db(transaction=True)


def _redis_skip_reason() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {REDIS_URL} is unreachable (set REDIS_URL): {exc}"
    return None


needs_redis = pytest.mark.skipif(
    _redis_skip_reason() is not None, reason=_redis_skip_reason() or ""
)


def _env(**extra: str) -> dict[str, str]:
    """A child process on this test's database (committed data: transactional tests)."""
    from django.db import connection

    connection.ensure_connection()
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@/{db['NAME']}?host={db['HOST']}&port={db['PORT']}",
        FORTRANSPIRE_TESTING="1",
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="WARNING",
        **extra,
    )
    return env


@contextmanager
def web_process(**env: str):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "fortranspire_site.asgi:application"]
        + ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"],
        cwd=ROOT,
        env=_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the web process did not start") from None
                time.sleep(0.2)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def celery_workers(count: int, **env: str):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "fortranspire_site.celery", "worker"]
            + ["-Q", "cpu", "--concurrency", "1", "--loglevel", "WARNING"]
            + ["-n", f"test{n}-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT,
            env=_env(REDIS_URL=REDIS_URL, **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _request(port: int, method: str, path: str, key: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={
            "Host": "a.localhost",
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _request_ignoring_errors(*args) -> None:
    try:
        _request(*args)
    except OSError:  # the server was killed under it
        pass


def _wait_for_run(tenant, predicate, timeout_s: float = 120):
    from django_tenants.utils import tenant_context

    from kernels.models import KernelRun

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with tenant_context(tenant):
            run = KernelRun.objects.order_by("-created_at").first()
        if run is not None and predicate(run):
            return run
        time.sleep(0.1)
    raise AssertionError(f"no run reached the state in {timeout_s} s (last: {run and run.status})")


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_a_web_process_killed_mid_job_leaves_an_interrupted_run_and_no_sandbox(tenant_a, make_key):
    key = make_key(tenant_a)
    with web_process() as (proc, port):
        threading.Thread(
            target=_request_ignoring_errors,
            args=(port, "POST", "/api/v1/translate", key, {"source": SAXPY, "sizes": {"n": 40}}),
            daemon=True,
        ).start()
        run = _wait_for_run(tenant_a, lambda r: r.status == "running" and r.stage == "verify")
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert run.worker.endswith(f":{proc.pid}")

    with web_process():  # start-up sweep
        run = _wait_for_run(tenant_a, lambda r: r.finished, timeout_s=10)
    assert run.status == "interrupted"
    assert str(proc.pid) in run.error
    deadline = time.monotonic() + 10
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(children) == []


@needs_redis
def test_a_celery_worker_killed_mid_job_never_loses_the_run(tenant_a, settings):
    from fortranspire_site.celery import app
    from kernels import jobs

    settings.REDIS_URL = REDIS_URL
    app.conf.update(broker_url=REDIS_URL, result_backend=REDIS_URL, task_always_eager=False)
    try:
        with celery_workers(2, FORTRANSPIRE_JOB_REDELIVER_S="10"):
            submitted = jobs.job_translate_submit(
                tenant=tenant_a,
                source=SAXPY,
                channel="api",
                tool="translate_kernel",
                sizes={"n": 40},
            )
            running = _wait_for_run(
                tenant_a, lambda r: r.status == "running" and r.stage in ("generate", "verify")
            )
            victim = int(running.worker.rsplit(":", 1)[1])
            os.kill(victim, signal.SIGKILL)
            final = _wait_for_run(tenant_a, lambda r: r.finished, timeout_s=240)
    finally:
        app.conf.update(task_always_eager=True)
    assert final.id == submitted.id
    assert final.status in ("verified", "interrupted"), final.error
    if final.status == "verified":
        assert final.attempts == 2 and final.worker != running.worker
    else:
        assert running.worker in final.error


@needs_redis
def test_two_web_processes_share_a_keys_rate_limit_and_see_a_revocation_at_once(
    tenant_a, make_key, settings
):
    from kernels.limits import rate_limit_reset
    from tenants.models import ApiKey
    from tenants.services import api_key_revoke

    settings.REDIS_URL = REDIS_URL  # this process revokes the key: it publishes the change
    rate_limit_reset()
    key = make_key(tenant_a, scopes=["history", "translate"])
    env = {
        "REDIS_URL": REDIS_URL,
        "FORTRANSPIRE_RATE_LIMIT_BURST": "4",
        "FORTRANSPIRE_RATE_LIMIT_PER_MINUTE": "1",
    }
    with web_process(**env) as (_, port1), web_process(**env) as (_, port2):
        codes = [
            _request(port, "GET", "/api/v1/runs", key)[0] for port in (port1, port2, port1, port2)
        ]
        assert codes == [200] * 4
        refused = [_request(port, "GET", "/api/v1/runs", key) for port in (port1, port2)]
        assert [status for status, _ in refused] == [429, 429]
        assert all(body["error"] == "rate_limited" for _, body in refused)

        # Revocation: both processes have the key cached for MCP; revoke it in this process.
        fresh = make_key(tenant_a, scopes=["history"])
        mcp = [_mcp_list_runs(port, fresh) for port in (port1, port2)]
        assert mcp == [200, 200]
        api_key_revoke(key=ApiKey.objects.get(prefix=fresh[:12]))
        time.sleep(0.3)
        assert [_mcp_list_runs(port, fresh) for port in (port1, port2)] == [401, 401]
    rate_limit_reset()


def _mcp_list_runs(port: int, key: str) -> int:
    """Status of an MCP initialize with ``key`` (401 once the key is refused)."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/mcp",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Host": "a.localhost",
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
