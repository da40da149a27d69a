"""Load benchmark of the job service on Celery + Redis, with a worker killed halfway.

    .venv/bin/python benchmarks/jobs_load.py            # writes benchmarks/results/jobs-load.json
    .venv/bin/python benchmarks/jobs_load.py --jobs 12  # a smaller smoke run

Set-up (all subprocesses of this script): one web process (uvicorn, REDIS_URL set, so every job
goes to Celery), two Celery worker processes (queue ``cpu``, one job at a time each), a fresh
database on the machine's PostgreSQL (DATABASE_URL, default 127.0.0.1:5432) and a Redis database
of its own (REDIS_URL, default the local service, database 14).

Load: N translations (default 60) from 3 tenants at once, two thirds over the REST API and one
third over MCP (Streamable HTTP), of mixed sizes: 1, 3 or 8 kernels per source, and every fifth
request verified against gfortran (sizes n=16..64). When half of the requests have finished,
the worker process that is running a job is killed with SIGKILL.

Reports throughput (jobs/s), p50/p95 latency, requests answered, runs lost (accepted requests
whose KernelRun is missing or never finished: must be 0), runs interrupted, runs run twice (the
killed worker's job redelivered to the other one), and the load average next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from mcp_load import _free_port, open_session, percentile  # noqa: E402

TENANTS = ("bench1", "bench2", "bench3")


def kernel(i: int) -> str:
    return f"""
subroutine k{i}(n, a, x, y)
  integer, intent(in) :: n
  real(8), intent(in) :: a, x(n)
  real(8), intent(inout) :: y(n)
  integer :: j
  do j = 1, n
    y(j) = a * x(j) + y(j) * {i + 1}.0d0
  end do
end subroutine k{i}
"""


def source(kernels: int) -> str:
    return "".join(kernel(i) for i in range(kernels))


def prepare(env: dict[str, str]) -> dict[str, str]:
    """Fresh database, migrated, with three tenants and a key for each; returns slug -> key."""
    script = f"""
import django, os
django.setup()
from django.core.management import call_command
call_command("migrate_schemas", "--shared", verbosity=0)
from tenants.services import tenant_create, api_key_create
for slug in {list(TENANTS)!r}:
    tenant = tenant_create(slug=slug, domain=f"{{slug}}.localhost")
    _, raw = api_key_create(tenant=tenant, name="bench", scopes=None)
    print(slug, raw)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"database set-up failed:\n{done.stderr[-3000:]}")
    return dict(line.split() for line in done.stdout.splitlines() if line.startswith("bench"))


def create_database(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def wait_http(port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("web process did not start")


def api_translate(port: int, slug: str, key: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/translate",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Host": f"{slug}.localhost",
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=900) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def request_plan(jobs: int) -> list[dict[str, Any]]:
    plan = []
    for i in range(jobs):
        verify = i % 5 == 4
        body: dict[str, Any] = {"source": source((1, 3, 8)[i % 3]), "verify": verify, "seed": i}
        if verify:
            body["sizes"] = {"n": 16 * (1 + i % 4)}
        plan.append(
            {
                "index": i,
                "tenant": TENANTS[i % 3],
                "channel": "mcp" if i % 3 == 2 else "api",
                "body": body,
            }
        )
    return plan


def worker_pid_running_a_job(env: dict[str, str]) -> int | None:
    script = f"""
import django
django.setup()
from django_tenants.utils import tenant_context
from kernels.models import KernelRun
from tenants.selectors import tenant_get
for slug in {list(TENANTS)!r}:
    with tenant_context(tenant_get(slug=slug)):
        run = KernelRun.objects.filter(status="running").exclude(worker="").first()
        if run is not None:
            print(run.worker.rsplit(":", 1)[1])
            break
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    lines = done.stdout.split()
    return int(lines[0]) if lines else None


def runs_summary(env: dict[str, str], since: str) -> dict[str, Any]:
    script = f"""
import django, json
django.setup()
from django_tenants.utils import tenant_context
from kernels.models import KernelRun
from tenants.selectors import tenant_get
rows = []
for slug in {list(TENANTS)!r}:
    with tenant_context(tenant_get(slug=slug)):
        rows += [
            {{"id": str(r.id), "status": r.status, "attempts": r.attempts, "kind": r.kind}}
            for r in KernelRun.objects.filter(kind="translate")
        ]
print(json.dumps(rows))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


async def mcp_translate(port: int, slug: str, key: str, body: dict) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}", "Host": f"{slug}.localhost:{port}"}
    async with AsyncExitStack() as stack:
        session = await open_session(stack, "http", f"http://127.0.0.1:{port}", headers)
        arguments = {k: v for k, v in body.items() if k != "seed"}
        result = await session.call_tool("translate_kernel", arguments)
        data = result.structured_content or {}
        return (400 if result.is_error else 200), data


def _describe(exc: BaseException) -> str:
    """The innermost error of an exception group (the MCP client's task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14"
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "jobs-load.json"))
    args = parser.parse_args()

    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    database_url = create_database(args.database_url, "fortranspire_jobs_bench")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis_url,
        "DJANGO_SETTINGS_MODULE": "fortranspire_site.settings",
        "PYTHONPATH": str(ROOT),
        "FORTRANSPIRE_RATE_LIMIT_PER_MINUTE": "0",
        "FORTRANSPIRE_TENANT_MAX_CONCURRENT_JOBS": str(args.jobs),
        "FORTRANSPIRE_JOB_REDELIVER_S": "30",
        "LOG_LEVEL": "ERROR",
    }
    keys = prepare(env)
    port = _free_port()
    processes = []
    web = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "fortranspire_site.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env,
    )
    processes.append(web)
    workers = [
        start(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "fortranspire_site.celery",
                "worker",
                "-Q",
                "cpu",
                "--concurrency",
                "1",
                "-n",
                f"bench{n}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "ERROR",
            ],
            env,
        )
        for n in range(2)
    ]
    processes += workers
    load_before = os.getloadavg()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    killed: dict[str, Any] = {}
    try:
        wait_http(port)
        time.sleep(5)  # the workers connect to the broker
        plan = request_plan(args.jobs)

        def run_one(item: dict[str, Any]) -> None:
            t0 = time.perf_counter()
            key = keys[item["tenant"]]
            try:
                if item["channel"] == "api":
                    status, data = api_translate(port, item["tenant"], key, item["body"])
                else:
                    status, data = asyncio.run(
                        mcp_translate(port, item["tenant"], key, item["body"])
                    )
            except Exception as exc:  # noqa: BLE001
                status, data = 0, {"error": _describe(exc)}
            with lock:
                results.append(
                    {
                        "index": item["index"],
                        "channel": item["channel"],
                        "status": status,
                        "latency_s": time.perf_counter() - t0,
                        "run_id": data.get("run_id"),
                        "error": data.get("error"),
                    }
                )
                if len(results) >= len(plan) // 2 and not killed:
                    killed["at_done"] = len(results)
                    threading.Thread(target=kill_a_worker, daemon=True).start()

        def kill_a_worker() -> None:
            for _ in range(100):
                pid = worker_pid_running_a_job(env)
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed["pid"] = pid
                        killed["at_s"] = round(time.perf_counter() - wall, 1)
                    except ProcessLookupError:
                        continue
                    return
                time.sleep(0.2)

        wall = time.perf_counter()
        threads = [threading.Thread(target=run_one, args=(item,)) for item in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join(1800)
        wall = time.perf_counter() - wall
        load_after = os.getloadavg()
        runs = runs_summary(env, started_at)
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    answered = [r for r in results if r["status"] == 200]
    accepted_ids = {r["run_id"] for r in results if r["run_id"]}
    by_id = {r["id"]: r for r in runs}
    lost = [
        i for i in accepted_ids if i not in by_id or by_id[i]["status"] in ("queued", "running")
    ]
    unfinished = [r for r in runs if r["status"] in ("queued", "running")]
    latencies = [r["latency_s"] for r in answered]
    report = {
        "benchmark": "jobs_load",
        "started_at": started_at,
        "config": {
            "jobs": args.jobs,
            "tenants": len(TENANTS),
            "celery_workers": 2,
            "web_processes": 1,
        },
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
        "wall_s": round(wall, 1),
        "throughput_jobs_per_s": round(len(answered) / wall, 3) if wall else None,
        "latency_p50_s": round(percentile(latencies, 50) or 0, 2),
        "latency_p95_s": round(percentile(latencies, 95) or 0, 2),
        "answered_200": len(answered),
        "answered_other": sorted(
            {f"{r['status']}:{r['error']}" for r in results if r["status"] != 200}
        ),
        "requests_without_run_id": sum(1 for r in results if not r["run_id"]),
        "runs_recorded": len(runs),
        "runs_lost": len(lost) + len(unfinished),
        "runs_interrupted": sum(1 for r in runs if r["status"] == "interrupted"),
        "runs_redelivered": sum(1 for r in runs if r["attempts"] > 1),
        "worker_killed": killed,
        "statuses": {
            s: sum(1 for r in runs if r["status"] == s) for s in sorted({r["status"] for r in runs})
        },
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["runs_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
