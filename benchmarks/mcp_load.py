"""Load test of the MCP bridge: concurrent sessions on both transports, 1 and 2 workers.

    .venv/bin/python benchmarks/mcp_load.py            # full run, writes benchmarks/results/mcp-load.json
    .venv/bin/python benchmarks/mcp_load.py --quick    # smaller numbers, a smoke run

Servers under test are ``fortranspire serve`` subprocesses (lifespan on, embedded PostgreSQL in a
throw-away FORTRANSPIRE_HOME), started one after the other on the same database:

- ``1 worker, stateful``: one process, Streamable HTTP with sessions (the default);
- ``1 worker, stateless``: ``FORTRANSPIRE_MCP_STATELESS=1`` (no sessions, JSON answers for
  non-streaming requests, cached tools/list);
- ``2 workers, stateless``: ``serve --workers 2``.

For each, Streamable HTTP tools/list latency at C clients (open loop, 1 request/s each: p99) and
saturated throughput (closed loop), side by side in one run, with the load average recorded
before and after each (client and server share the machine's cores; other work on the machine
shows up there). Then, on the 1-worker stateful server only, the legacy figures:

1. tools/list latency with C concurrent clients (Streamable HTTP and SSE), each an initialized
   MCP SDK ClientSession. Two regimes:
   - open loop: every client sends one tools/list per second (C requests/s offered), which is
     what "C concurrent clients" of an assistant looks like;
   - closed loop: every client sends the next request as soon as it has the answer, which
     measures the saturated throughput (requests/s) of the single server process.
2. A small translate (verify=False) from every client at once, on both transports.
3. SSE sessions held: open S sessions (GET /sse + initialize), keep them all open, then check a
   tools/list on the held sessions still answers; records the server's RSS.

The per-key rate limit is disabled for the server under test (FORTRANSPIRE_RATE_LIMIT_PER_MINUTE=0)
because every simulated client shares one key. Client and server share the machine's cores, so
latencies include client-side overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOSTNAME = "bench.localhost"
SMALL_KERNEL = """\
subroutine axpy(n, a, x, y)
  integer, intent(in) :: n
  real, intent(in) :: a, x(n)
  real, intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = a * x(i) + y(i)
  end do
end subroutine axpy
"""


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(latencies_s: list[float], errors: int, wall_s: float) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies_s]
    return {
        "requests": len(ms),
        "errors": errors,
        "p50_ms": round(percentile(ms, 50), 2) if ms else None,
        "p90_ms": round(percentile(ms, 90), 2) if ms else None,
        "p99_ms": round(percentile(ms, 99), 2) if ms else None,
        "max_ms": round(max(ms), 2) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        "requests_per_s": round(len(ms) / wall_s, 1) if wall_s > 0 else None,
        "wall_s": round(wall_s, 2),
    }


# ----------------------------------------------------------------------------------------------
# server under test


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_database(env: dict[str, str]) -> str:
    """Migrate a fresh embedded database, create the bench tenant and return a raw key."""
    script = f"""
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fortranspire_site.settings")
django.setup()
from django.core.management import call_command
call_command("migrate_schemas", "--shared", verbosity=0)
from tenants.models import Tenant
from tenants.services import tenant_create, api_key_create
tenant = Tenant.objects.filter(schema_name="bench").first() or tenant_create(slug="bench", domain="{HOSTNAME}")
_, raw = api_key_create(tenant=tenant, name="bench", scopes=None)
print(raw)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"database setup failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def start_server(env: dict[str, str], port: int, workers: int = 1) -> subprocess.Popen:
    """``fortranspire serve`` (uvicorn, keep-alive 30 s, access log off at level warning)."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fortranspire_site.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("server exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("server did not start in 120 s")


def stop_server(server: subprocess.Popen, home: Path) -> None:
    """Stop uvicorn, then the embedded PostgreSQL it started.

    SIGINT, not SIGTERM: uvicorn re-raises the signal after its graceful shutdown, and only a
    KeyboardInterrupt lets pgserver's atexit hook stop the database. Whatever is still running
    afterwards (a killed server) is stopped through postmaster.pid.
    """
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    pid_file = home / "pgdata" / "postmaster.pid"
    try:
        postmaster = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(postmaster, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


# ----------------------------------------------------------------------------------------------
# clients


_SSL_CONTEXT = None


def _client_factory(headers=None, timeout=None, auth=None):
    """httpx2 clients sharing one SSL context: building one costs ~30 ms of client CPU, which
    would otherwise dominate opening hundreds of sessions (and steal the server's cores)."""
    import ssl

    import httpx2

    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return httpx2.AsyncClient(
        headers=headers,
        timeout=timeout or httpx2.Timeout(120, read=600),
        auth=auth,
        verify=_SSL_CONTEXT,
    )


async def open_session(stack: AsyncExitStack, transport: str, base: str, headers: dict[str, str]):
    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client

    if transport == "http":
        client = await stack.enter_async_context(
            _client_factory(headers=headers, timeout=httpx2.Timeout(120, read=600))
        )
        read, write = await stack.enter_async_context(
            streamable_http_client(f"{base}/mcp", http_client=client)
        )
    else:
        read, write = await stack.enter_async_context(
            sse_client(
                f"{base}/sse",
                headers=headers,
                timeout=120,
                sse_read_timeout=600,
                httpx_client_factory=_client_factory,
            )
        )
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


async def with_sessions(n: int, transport: str, base: str, headers: dict[str, str], body):
    """Open n sessions (50 handshakes at a time), run ``body(sessions)``, then close them.

    Each session lives in its own task from open to close: the SDK transports use anyio task
    groups, which must be exited by the task that entered them.
    """
    gate = asyncio.Semaphore(50)
    sessions: list[Any] = []
    failures = 0
    settled = 0
    all_settled = asyncio.Event()
    release = asyncio.Event()

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == n:
            all_settled.set()

    async def holder() -> None:
        nonlocal failures
        opened = False
        try:
            async with AsyncExitStack() as stack:
                async with gate:
                    session = await open_session(stack, transport, base, headers)
                sessions.append(session)
                opened = True
                settle()
                await release.wait()
        except Exception as exc:  # noqa: BLE001 - counted and reported
            if not opened:
                failures += 1
                if failures <= 3:
                    print(f"  session open failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                settle()

    started = time.perf_counter()
    tasks = [asyncio.create_task(holder()) for _ in range(n)]
    await all_settled.wait()
    opened_s = time.perf_counter() - started
    try:
        return await body(sessions, failures, opened_s)
    finally:
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)


REQUEST_TIMEOUT_S = 60


async def timed(coro) -> tuple[float, bool]:
    """(seconds, ok) for one request; a request lost on the wire counts as an error, not a hang."""
    start = time.perf_counter()
    try:
        result = await asyncio.wait_for(coro, REQUEST_TIMEOUT_S)
        ok = not getattr(result, "is_error", False)
    except Exception:  # noqa: BLE001
        ok = False
    return time.perf_counter() - start, ok


async def open_loop(sessions, seconds: float, rate_per_client: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0

    async def client(session):
        nonlocal errors
        await asyncio.sleep(random.random() / rate_per_client)  # spread the first requests
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            elapsed, ok = await timed(session.list_tools())
            if ok:
                latencies.append(elapsed)
            else:
                errors += 1
            await asyncio.sleep(max(0.0, 1 / rate_per_client - (time.perf_counter() - started)))

    wall = time.perf_counter()
    await asyncio.gather(*(client(s) for s in sessions))
    return summary(latencies, errors, time.perf_counter() - wall)


async def closed_loop(sessions, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0

    async def client(session):
        nonlocal errors
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            elapsed, ok = await timed(session.list_tools())
            if ok:
                latencies.append(elapsed)
            else:
                errors += 1

    wall = time.perf_counter()
    await asyncio.gather(*(client(s) for s in sessions))
    return summary(latencies, errors, time.perf_counter() - wall)


async def translate_burst(sessions) -> dict[str, Any]:
    results = []

    async def one(session):
        start = time.perf_counter()
        try:
            result = await asyncio.wait_for(
                session.call_tool("translate_kernel", {"source": SMALL_KERNEL, "verify": False}),
                REQUEST_TIMEOUT_S,
            )
            ok = not result.is_error
            detail = None
            if result.is_error:
                err = result.structured_content or {}
                detail = f"{err.get('error')}: {str(err.get('message'))[:160]}"
            status = None
            if ok:
                status = (result.structured_content or {}).get("kernels", [{}])[0].get("status")
        except Exception as exc:  # noqa: BLE001
            ok, detail, status = False, type(exc).__name__, None
        results.append((time.perf_counter() - start, ok, detail, status))

    wall = time.perf_counter()
    await asyncio.gather(*(one(s) for s in sessions))
    wall = time.perf_counter() - wall
    out = summary([r[0] for r in results if r[1]], sum(1 for r in results if not r[1]), wall)
    out["error_kinds"] = sorted({str(r[2]) for r in results if not r[1]})
    out["kernel_statuses"] = sorted({str(r[3]) for r in results if r[1]})
    return out


async def run_transport(
    transport: str, base: str, headers: dict[str, str], clients: int, seconds: float
):
    async def body(sessions, failures, opened_s):
        print(f"[{transport}] {len(sessions)} sessions open in {opened_s:.1f}s ({failures} failed)")
        result: dict[str, Any] = {
            "clients": clients,
            "sessions_opened": len(sessions),
            "open_failures": failures,
        }
        result["session_open_s"] = round(opened_s, 2)
        result["tools_list_open_loop_1rps"] = await open_loop(sessions, seconds, 1.0)
        print(f"[{transport}] tools/list open loop: {result['tools_list_open_loop_1rps']}")
        result["tools_list_closed_loop"] = await closed_loop(sessions, seconds)
        print(f"[{transport}] tools/list closed loop: {result['tools_list_closed_loop']}")
        result["translate_burst_verify_false"] = await translate_burst(sessions)
        print(f"[{transport}] translate burst: {result['translate_burst_verify_false']}")
        return result

    return await with_sessions(clients, transport, base, headers, body)


async def run_tools_list(base: str, headers: dict[str, str], clients: int, seconds: float):
    """Streamable HTTP tools/list at ``clients`` sessions: open loop (1/s each), then saturated."""

    async def body(sessions, failures, opened_s):
        return {
            "clients": clients,
            "sessions_opened": len(sessions),
            "open_failures": failures,
            "session_open_s": round(opened_s, 2),
            "tools_list_open_loop_1rps": await open_loop(sessions, seconds, 1.0),
            "tools_list_closed_loop": await closed_loop(sessions, seconds),
        }

    return await with_sessions(clients, "http", base, headers, body)


async def hold_sse_sessions(
    base: str, headers: dict[str, str], target: int, server_pid: int
) -> dict[str, Any]:
    rss_before = rss_mb(server_pid)

    async def body(sessions, failures, opened_s):
        print(f"[sse-hold] {len(sessions)}/{target} SSE sessions open in {opened_s:.1f}s")
        await asyncio.sleep(2)
        # Every held session still answers: one tools/list each, 50 at a time.
        latencies: list[float] = []
        errors = 0
        gate = asyncio.Semaphore(50)

        async def probe(session):
            nonlocal errors
            async with gate:
                elapsed, ok = await timed(session.list_tools())
                if ok:
                    latencies.append(elapsed)
                else:
                    errors += 1

        wall = time.perf_counter()
        await asyncio.gather(*(probe(s) for s in sessions))
        result = {
            "target": target,
            "held": len(sessions),
            "open_failures": failures,
            "open_s": round(opened_s, 2),
            "all_answered_tools_list": errors == 0 and len(latencies) == len(sessions),
            "tools_list_while_held": summary(latencies, errors, time.perf_counter() - wall),
            "server_rss_mb_before": rss_before,
            "server_rss_mb_held": rss_mb(server_pid),
        }
        print(f"[sse-hold] {result}")
        return result

    return await with_sessions(target, "sse", base, headers, body)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients per transport")
    parser.add_argument(
        "--seconds", type=float, default=10, help="duration of each tools/list phase"
    )
    parser.add_argument(
        "--sse-sessions", type=int, default=500, help="SSE sessions to hold at once"
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 clients, 3 s phases, 100 SSE sessions"
    )
    parser.add_argument(
        "--tools-list-only",
        action="store_true",
        help="only the 1-vs-2-worker tools/list comparison (no translate burst, no SSE hold)",
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "mcp-load.json"))
    parser.add_argument(
        "--home", help="FORTRANSPIRE_HOME for the throw-away database (default: a temp dir)"
    )
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds, args.sse_sessions = 20, 3, 100

    home = (
        Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="fortranspire-mcp-bench-"))
    )
    env = {
        **os.environ,
        "FORTRANSPIRE_HOME": str(home),
        "FORTRANSPIRE_RATE_LIMIT_PER_MINUTE": "0",
        "DJANGO_SETTINGS_MODULE": "fortranspire_site.settings",
    }
    env.pop("DATABASE_URL", None)
    # SIGTERM (e.g. `timeout`) must still run the clean-up below: stop the server and its database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    key = prepare_database(env)
    results: dict[str, Any] = {
        "benchmark": "mcp_load",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "clients": args.clients,
            "seconds": args.seconds,
            "sse_sessions": args.sse_sessions,
        },
        "targets": {"sse_sessions_held": 500, "tools_list_p99_ms_at_100_clients": 50},
        "note": "client and server share this machine's cores; load_avg is os.getloadavg() "
        "before and after each server's run (other work on the machine included)",
        "workers": {},
    }
    configs = [
        ("1 worker, stateful", 1, False),
        ("1 worker, stateless", 1, True),
        ("2 workers, stateless", 2, True),
    ]
    for label, workers, stateless in configs:
        server_env = {**env, "FORTRANSPIRE_MCP_STATELESS": "1" if stateless else "0"}
        port = _free_port()
        server = start_server(server_env, port, workers)
        # glibc does not resolve *.localhost: connect to loopback and send the tenant's Host.
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}", "Host": f"{HOSTNAME}:{port}"}
        load_before = os.getloadavg()
        try:
            row = asyncio.run(run_tools_list(base, headers, args.clients, args.seconds))
            row["load_avg_before"] = [round(x, 2) for x in load_before]
            row["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
            print(f"[{label}] {row}", flush=True)
            results["workers"][label] = row
            if label == "1 worker, stateful" and not args.tools_list_only:
                for transport in ("http", "sse"):
                    results[transport] = asyncio.run(
                        run_transport(transport, base, headers, args.clients, args.seconds)
                    )
                results["sse_hold"] = asyncio.run(
                    hold_sse_sessions(base, headers, args.sse_sessions, server.pid)
                )
        finally:
            stop_server(server, home)
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)

    compared = {
        label: {
            "tools_list_p99_ms_open_loop": row["tools_list_open_loop_1rps"]["p99_ms"],
            "tools_list_saturated_rps": row["tools_list_closed_loop"]["requests_per_s"],
            "load_avg_before": row["load_avg_before"],
        }
        for label, row in results["workers"].items()
    }
    results["verdict"] = {"tools_list_http": compared}
    if "sse_hold" in results:
        held = results["sse_hold"]
        results["verdict"].update(
            {
                "sse_sessions_held": held["held"],
                "sse_target_met": held["held"] >= 500 and held["all_answered_tools_list"],
                "tools_list_p99_ms_open_loop": {
                    t: results[t]["tools_list_open_loop_1rps"]["p99_ms"] for t in ("http", "sse")
                },
            }
        )
    results["verdict"]["tools_list_p99_target_met_open_loop"] = {
        label: (c["tools_list_p99_ms_open_loop"] or 1e9) < 50 and args.clients >= 100
        for label, c in compared.items()
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["verdict"], indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
