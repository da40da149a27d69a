"""Load test of the MCP bridge: concurrent sessions on both transports, 1 and 2 workers.

    .venv/bin/python benchmarks/mcp_load.py            # full run, writes benchmarks/results/mcp-load.json
    .venv/bin/python benchmarks/mcp_load.py --quick    # smaller numbers, a smoke run

Servers under test are ``fortranspire serve`` subprocesses (lifespan on, embedded PostgreSQL in a
throw-away FORTRANSPIRE_HOME), started one after the other on the same database:

- ``1 worker, stateful``: one process, Streamable HTTP with sessions (the default);
- ``1 worker, stateless``: ``FORTRANSPIRE_MCP_STATELESS=1`` (no sessions, JSON answers for
  non-streaming requests, cached tools/list);
- ``2 workers, stateless``: ``serve --workers 2``.

For each, Streamable HTTP tools/list latency at C clients (open loop, 1 request/s each on a fixed
schedule: p99) and saturated throughput (closed loop), side by side in one run, with the load
average recorded before and after each (client and server share the machine's cores; other work
on the machine shows up there). These clients are :class:`LightClient`: one asyncio process
(uvloop) with one keep-alive connection per client, sending the bytes the SDK client sends, the
Bearer key on every request, and checking every answer. The MCP SDK's ClientSession costs a few
ms of CPU per request itself; 100 of them on the same two cores measured mostly the client.
Each row also gives the server's CPU per request (closed loop) and the client's own CPU per
request, and how late the open-loop client sent against its schedule (``send_lag_p99_ms``).
Then, on the 1-worker stateful server only, the legacy figures with SDK ClientSessions:

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


# ----------------------------------------------------------------------------------------------
# the light client: what the tools/list comparison between worker configurations uses

PROTOCOL_VERSION = "2025-11-25"  # what the SDK client negotiates with this server
INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-load", "version": "1"},
        },
    },
    separators=(",", ":"),
).encode()
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
TOOLS_LIST = b'{"jsonrpc":"2.0","id":%d,"method":"tools/list"}'
EXPECTED_TOOLS = 6


class LightClient:
    """One MCP client on one keep-alive HTTP/1.1 connection, with none of the SDK's machinery.

    The SDK's ClientSession (httpx, anyio streams, pydantic models per message) costs a few ms
    of CPU per request; 100 of them on the server's two cores measured mostly themselves. This
    client sends the requests the SDK client sends (same method, body, headers: captured from
    it): initialize, notifications/initialized, then tools/list, each with the Bearer key, the
    negotiated ``Mcp-Protocol-Version`` and, when the server hands one out (stateful mode), the
    ``Mcp-Session-Id``. Answers are read whole (Content-Length, or chunked for the SSE answers of
    stateful mode) and checked: status 200, this request's id, and the same listing as the
    first answer, which is parsed in full (six tools); later ones are compared by length.
    """

    last_connect_s = 0.0

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.session_headers = b""
        self.next_id = 1
        self.reference_length: int | None = None  # len(answer) - len(id) of the first listing

    @classmethod
    async def connect_all(cls, port: int, key: str, n: int) -> list[LightClient]:
        """n initialized clients (50 handshakes at a time); failures are left out and printed."""
        gate = asyncio.Semaphore(50)
        started = time.perf_counter()

        async def one() -> LightClient | None:
            client = cls(port, key)
            async with gate:
                try:
                    await client.open()
                    return client
                except Exception as exc:  # noqa: BLE001 - counted by the caller
                    print(f"  client open failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    await client.close()
                    return None

        opened = await asyncio.gather(*(one() for _ in range(n)))
        cls.last_connect_s = time.perf_counter() - started
        return [c for c in opened if c is not None]

    async def open(self) -> None:
        """Connect, initialize, and list the tools once (the answer every later one must match)."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        status, headers, body = await self._round_trip(self._post(INITIALIZE))
        answer = _json_of(body)
        if status != 200 or "result" not in answer:
            raise RuntimeError(f"initialize: HTTP {status} {body[:200]!r}")
        version = answer["result"]["protocolVersion"].encode()
        session = headers.get(b"mcp-session-id")
        self.session_headers = b"Mcp-Protocol-Version: %s\r\n" % version + (
            b"Mcp-Session-Id: %s\r\n" % session if session else b""
        )
        status, _, body = await self._round_trip(self._post(INITIALIZED, self.session_headers))
        if status != 202:
            raise RuntimeError(f"notifications/initialized: HTTP {status} {body[:200]!r}")
        if not await self.tools_list():
            raise RuntimeError("the first tools/list failed")

    async def reconnect(self) -> None:
        """After a failed round trip: a fresh connection (or none, and the next request fails)."""
        await self.close()
        self.reader = self.writer = None
        try:
            await self.open()
        except Exception:  # noqa: BLE001 - the next round trip reports it
            pass

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass

    def _post(self, body: bytes, extra: bytes = b"") -> bytes:
        return (
            b"POST /mcp HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
            b"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
            b"%sContent-Length: %d\r\n\r\n%s"
        ) % (HOSTNAME.encode(), self.port, self.key.encode(), extra, len(body), body)

    async def _round_trip(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        if self.reader is None or self.writer is None:
            raise ConnectionError("not connected")
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            chunks = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                chunks.append((await self.reader.readexactly(size + 2))[:-2])
            await self.reader.readexactly(2)
            body = b"".join(chunks)
        else:
            raise RuntimeError(f"HTTP {status} answer with no length: {head!r}")
        return status, headers, body

    async def tools_list(self) -> bool:
        """One tools/list round trip; whether the answer was the right listing."""
        request_id = self.next_id
        self.next_id += 1
        status, _, body = await self._round_trip(
            self._post(TOOLS_LIST % request_id, self.session_headers)
        )
        if status != 200 or b'"id":%d,' % request_id not in body[:120]:
            return False
        length = len(body) - len(b"%d" % request_id)
        if self.reference_length is None:
            answer = _json_of(body)
            tools = answer.get("result", {}).get("tools", [])
            if answer.get("id") != request_id or len(tools) != EXPECTED_TOOLS:
                return False
            self.reference_length = length
        return length == self.reference_length


def _json_of(body: bytes) -> dict[str, Any]:
    """A JSON-RPC answer sent as JSON, or as the data of an SSE event (stateful mode)."""
    if body.startswith(b"{"):
        return json.loads(body)
    data = [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]
    return json.loads(b"".join(data))


async def light_open_loop(
    pool: list[LightClient], seconds: float, rate_per_client: float
) -> dict[str, Any]:
    """Every client sends one tools/list per 1/rate s on a fixed schedule (random phase).

    Latency is from the send to the whole answer. ``send_lag`` is how late the client sent
    against its schedule: when it grows, the client (or the machine) is the bottleneck.
    """
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    period = 1 / rate_per_client
    start = time.perf_counter() + 0.05
    stop = start + seconds

    async def run(client: LightClient) -> None:
        nonlocal errors
        due = start + random.random() * period
        while due < stop:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            lags.append(sent - due)
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    ok = await client.tools_list()
            except Exception:  # noqa: BLE001 - counted; the connection is in an unknown state
                ok = False
                await client.reconnect()
            if ok:
                latencies.append(time.perf_counter() - sent)
            else:
                errors += 1
            due += period

    cpu = time.process_time()
    await asyncio.gather(*(run(c) for c in pool))
    out = summary(latencies, errors, time.perf_counter() - start)
    out["send_lag_p99_ms"] = round(1000 * (percentile(lags, 99) or 0), 2)
    out["client_cpu_ms_per_request"] = _per_request_ms(time.process_time() - cpu, out)
    return out


async def light_closed_loop(pool: list[LightClient], seconds: float) -> dict[str, Any]:
    """Every client sends its next tools/list as soon as it has the answer (saturation)."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def run(client: LightClient) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    ok = await client.tools_list()
            except Exception:  # noqa: BLE001 - counted; the connection is in an unknown state
                ok = False
                await client.reconnect()
            if ok:
                latencies.append(time.perf_counter() - sent)
            else:
                errors += 1

    cpu = time.process_time()
    wall = time.perf_counter()
    await asyncio.gather(*(run(c) for c in pool))
    out = summary(latencies, errors, time.perf_counter() - wall)
    out["client_cpu_ms_per_request"] = _per_request_ms(time.process_time() - cpu, out)
    return out


def _per_request_ms(cpu_s: float, result: dict[str, Any]) -> float | None:
    answered = result["requests"] + result["errors"]
    return round(1000 * cpu_s / answered, 3) if answered else None


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


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of the server process and its worker processes."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


LIGHT_CLIENT_NOTE = (
    "workers: tools/list from LightClient (this script): one asyncio process (uvloop) holding "
    "one keep-alive HTTP/1.1 connection per client, sending the SDK client's request bytes "
    "(Bearer key on every request), each client opened with initialize, "
    "notifications/initialized and one checked tools/list before the timed phases; "
    "http/sse/sse_hold: the MCP SDK ClientSession (heavier: its CPU shows in those "
    "latencies). Client and server share this machine's cores; load_avg is os.getloadavg() "
    "before and after each server's run (other work on the machine included)."
)


def run_light(coro) -> Any:
    """Run the light client's coroutine on uvloop (uvicorn[standard] installs it), the lighter
    event loop, so the client takes as little of the shared cores as it can."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def run_tools_list(
    port: int, key: str, clients: int, seconds: float, server_pid: int
) -> dict[str, Any]:
    """Streamable HTTP tools/list from ``clients`` light clients: open loop (1/s each), then
    saturated (closed loop).

    ``server_cpu_ms_per_request`` (server and worker processes' CPU over the closed loop, per
    answered request) does not depend on how busy the machine is, unlike the latencies;
    ``client_cpu_ms_per_request`` is this process's own CPU per request (it shares the cores).
    """
    pool = await LightClient.connect_all(port, key, clients)
    try:
        row: dict[str, Any] = {
            "clients": clients,
            "sessions_opened": len(pool),
            "open_failures": clients - len(pool),
            "session_open_s": round(LightClient.last_connect_s, 2),
        }
        row["tools_list_open_loop_1rps"] = await light_open_loop(pool, seconds, 1.0)
        cpu_before = server_cpu_s(server_pid)
        row["tools_list_closed_loop"] = closed = await light_closed_loop(pool, seconds)
        used = server_cpu_s(server_pid) - cpu_before
        row["server_cpu_ms_per_request"] = (
            round(1000 * used / closed["requests"], 3) if closed["requests"] else None
        )
    finally:
        await asyncio.gather(*(c.close() for c in pool), return_exceptions=True)
    return row


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
        "note": LIGHT_CLIENT_NOTE,
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
            row = run_light(run_tools_list(port, key, args.clients, args.seconds, server.pid))
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
            "server_cpu_ms_per_request": row["server_cpu_ms_per_request"],
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
