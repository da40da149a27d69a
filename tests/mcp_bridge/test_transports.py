"""The MCP bridge over real HTTP (uvicorn in a thread), on both transports, with the SDK client."""

from __future__ import annotations

import anyio
import pytest

from tests.mcp_bridge.support import SAXPY

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

TOOL_NAMES = {
    "translate_kernel",
    "translate_kernel_gpu",
    "profile_kernels",
    "ask_agent",
    "list_kernel_runs",
    "get_kernel_run",
}
CLI_KERNEL_FIELDS = {
    "name",
    "status",
    "max_abs_err",
    "max_rel_err",
    "max_ulp",
    "llm_calls",
    "parallel_loops",
    "device",
    "code",
    "diagnostics",
}


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_client_initializes_lists_six_tools_and_ports_saxpy(
    mcp_live, tenant_a, make_key, transport
):
    key = make_key(tenant_a)

    async def scenario():
        async with mcp_live.session(transport, "a.localhost", key) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            result = await session.call_tool(
                "translate_kernel", {"source": SAXPY, "sizes": {"n": 257}}
            )
            return session, tools, result

    _session, tools, result = anyio.run(scenario)
    assert set(tools) == TOOL_NAMES
    for tool in tools.values():
        assert tool.description and len(tool.description) > 40
        assert tool.input_schema["type"] == "object"
    assert tools["translate_kernel"].input_schema["required"] == ["source"]
    assert set(tools["translate_kernel"].input_schema["properties"]) == {
        "source",
        "files",
        "include_dirs",
        "defines",
        "kernel",
        "verify",
        "sizes",
    }
    assert tools["get_kernel_run"].input_schema["required"] == ["run_id"]

    assert not result.is_error, result.content
    data = result.structured_content
    assert data["target"] == "cpu" and data["run_id"]
    (kernel,) = data["kernels"]
    assert CLI_KERNEL_FIELDS <= set(kernel)
    assert kernel["name"] == "saxpy"
    assert kernel["status"] == "verified", (kernel["diagnostics"], kernel.get("notes"))
    assert kernel["device"] == "cpu"
    assert kernel["parallel_loops"] == 1
    assert kernel["llm_calls"] == 0
    assert kernel["max_abs_err"] is not None and kernel["max_abs_err"] <= 1e-5
    assert "saxpy" in result.content[0].text and "verified" in result.content[0].text


def test_progress_notifications_follow_the_translation_stages(mcp_live, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["translate"])
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async def scenario():
        async with mcp_live.session("http", "a.localhost", key) as session:
            return await session.call_tool(
                "translate_kernel",
                {"source": SAXPY, "sizes": {"n": 64}},
                progress_callback=on_progress,
            )

    result = anyio.run(scenario)
    assert not result.is_error, result.content
    assert len(updates) >= 3
    values = [u[0] for u in updates]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert all(total == 4.0 for _, total, _ in updates)
    stages = [msg.split(":")[0] for _, _, msg in updates]
    for stage in ("parse", "analyse", "generate", "verify"):
        assert stage in stages
    assert stages.index("parse") < stages.index("generate") < stages.index("verify")


def test_tool_without_its_scope_is_refused_on_both_transports(mcp_live, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["history"])

    async def over_sse():
        async with mcp_live.session("sse", "a.localhost", key) as session:
            refused = await session.call_tool("translate_kernel", {"source": SAXPY})
            allowed = await session.call_tool("list_kernel_runs", {})
            return refused, allowed

    refused, allowed = anyio.run(over_sse)
    assert refused.is_error
    assert refused.structured_content["error"] == "insufficient_scope"
    assert refused.structured_content["scope"] == "translate"
    assert not allowed.is_error

    # Streamable HTTP answers the tools/call POST itself with 403 insufficient_scope.
    with mcp_live.http("a.localhost", key) as http:
        response = http.post(
            "/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "profile_kernels", "arguments": {"source": SAXPY}},
            },
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_scope"' in challenge and 'scope="profile"' in challenge
    assert response.json()["id"] == 7


def test_history_is_isolated_between_tenants(mcp_live, tenant_a, tenant_b, make_key):
    key_a = make_key(tenant_a)
    key_b = make_key(tenant_b)

    async def scenario():
        async with mcp_live.session("http", "a.localhost", key_a) as a:
            await a.call_tool("translate_kernel", {"source": SAXPY, "verify": False})
            runs_a = (await a.call_tool("list_kernel_runs", {"limit": 50})).structured_content[
                "runs"
            ]
        async with mcp_live.session("sse", "b.localhost", key_b) as b:
            runs_b = (await b.call_tool("list_kernel_runs", {"limit": 50})).structured_content[
                "runs"
            ]
            peek = await b.call_tool("get_kernel_run", {"run_id": runs_a[0]["id"]})
        return runs_a, runs_b, peek

    runs_a, runs_b, peek = anyio.run(scenario)
    assert [r["tool"] for r in runs_a] == ["translate_kernel"]
    assert runs_b == []
    assert peek.is_error and peek.structured_content["error"] == "not_found"


def test_every_call_records_a_kernel_run_with_tool_key_status_and_duration(
    mcp_live, tenant_a, make_key, settings
):
    from kernels.selectors import kernel_run_list

    settings.FORTRANSPIRE_RATE_LIMIT_BURST = 3
    settings.FORTRANSPIRE_RATE_LIMIT_PER_MINUTE = 1
    key = make_key(tenant_a, scopes=["translate", "history"])

    async def scenario():
        async with mcp_live.session("sse", "a.localhost", key) as session:
            first = await session.call_tool("translate_kernel", {"source": SAXPY, "verify": False})
            second = await session.call_tool("list_kernel_runs", {})
            third = await session.call_tool(
                "profile_kernels", {"source": SAXPY}
            )  # no 'profile' scope
            limited = await session.call_tool("list_kernel_runs", {})  # 4th call, burst is 3
            return first, second, third, limited

    first, second, third, limited = anyio.run(scenario)
    assert third.is_error and limited.is_error
    assert limited.structured_content["error"] == "rate_limited"
    assert limited.structured_content["retry_after"] >= 1
    assert "retry_after=" in limited.content[0].text

    runs = list(reversed(kernel_run_list(tenant=tenant_a, limit=10)))
    assert [r.tool for r in runs] == [
        "translate_kernel",
        "list_kernel_runs",
        "profile_kernels",
        "list_kernel_runs",
    ]
    assert all(r.channel == "mcp" and r.api_key_prefix == key[:12] for r in runs)
    assert runs[1].status == "ok"
    assert runs[2].status == "failed" and "profile" in runs[2].error
    assert runs[3].status == "failed" and "rate limit" in runs[3].error
    assert all(r.duration_ms >= 0 and r.llm_calls == 0 for r in runs)


def test_source_over_the_size_limit_is_a_clear_tool_error(mcp_live, tenant_a, make_key, settings):
    settings.FORTRANSPIRE_MAX_SOURCE_BYTES = 2_000
    key = make_key(tenant_a)
    big = SAXPY + "! padding\n" * 400

    async def scenario():
        async with mcp_live.session("http", "a.localhost", key) as session:
            return await session.call_tool("translate_kernel", {"source": big})

    result = anyio.run(scenario)
    assert result.is_error
    assert result.structured_content["error"] == "payload_too_large"
    assert result.structured_content["limit"] == 2_000
    assert "2000 bytes" in result.content[0].text


def test_ask_agent_without_an_llm_explains_how_to_configure_one(mcp_live, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["agent"])

    async def scenario():
        async with mcp_live.session("http", "a.localhost", key) as session:
            return await session.call_tool(
                "ask_agent", {"question": "Why is my loop not parallel?"}
            )

    result = anyio.run(scenario)
    assert result.is_error
    assert result.structured_content["error"] == "llm_not_configured"
    assert "Mistral" in result.content[0].text


def test_profile_kernels_returns_the_ranking_and_a_png_chart(mcp_live, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["profile"])

    async def scenario():
        async with mcp_live.session("sse", "a.localhost", key) as session:
            return await session.call_tool(
                "profile_kernels", {"source": SAXPY, "sizes": {"n": 4096}}
            )

    result = anyio.run(scenario)
    assert not result.is_error, result.content
    data = result.structured_content
    assert data["run_id"]
    assert [k["name"] for k in data["kernels"]] == ["saxpy"]
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    import base64

    assert base64.b64decode(images[0].data).startswith(b"\x89PNG")
    assert "saxpy" in result.content[0].text


def test_gpu_tool_returns_the_cli_shape_for_the_gpu_target(mcp_live, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["translate"])

    async def scenario():
        async with mcp_live.session("http", "a.localhost", key) as session:
            return await session.call_tool(
                "translate_kernel_gpu", {"source": SAXPY, "verify": False}
            )

    result = anyio.run(scenario)
    assert not result.is_error, result.content
    data = result.structured_content
    assert data["target"] == "gpu" and data["run_id"]
    (kernel,) = data["kernels"]
    assert CLI_KERNEL_FIELDS <= set(kernel)
    assert kernel["status"] == "translated"
    assert kernel["device"] in ("gpu", "simulator")
    assert "cuda" in kernel["code"]


@pytest.mark.parametrize(
    ("source", "what"),
    # A lone surrogate cannot be sent by the SDK client at all (it encodes JSON as UTF-8); the
    # server's check for it is the same one, tested on the REST API.
    [("subroutine s\n  x = 1\x00\nend\n", "NUL")],
)
def test_nul_or_lone_surrogate_is_an_invalid_request_tool_error_with_the_position(
    mcp_live, tenant_a, make_key, source, what
):
    from kernels.selectors import kernel_run_list

    key = make_key(tenant_a)

    async def scenario():
        async with mcp_live.session("http", "a.localhost", key) as session:
            return await session.call_tool("translate_kernel", {"source": source})

    result = anyio.run(scenario)
    assert result.is_error
    data = result.structured_content
    assert data["error"] == "invalid_request" and what in data["message"]
    assert (data["line"], data["column"]) == (2, 8)
    (run,) = kernel_run_list(tenant=tenant_a, limit=5)
    assert run.status == "failed" and what in run.error


# --------------------------------------------------------------------------------------------
# Scaling out: stateless Streamable HTTP, several worker processes


@pytest.fixture
def stateless_mode(monkeypatch):
    from mcp_bridge.app import STATELESS_ENV

    monkeypatch.setenv(STATELESS_ENV, "1")


@pytest.fixture
def mcp_live_stateless(stateless_mode, mcp_live):
    """The in-thread live server (``mcp_live``), built with Streamable HTTP in stateless mode."""
    return mcp_live


def _tools_list(http, request_id: int) -> dict:
    response = http.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": request_id, "method": "tools/list"},
        headers={
            "Accept": "application/json, text/event-stream",
            "Mcp-Protocol-Version": "2025-06-18",
        },
    )
    assert response.status_code == 200, response.text
    assert "mcp-session-id" not in response.headers  # stateless: no session
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_stateless_tools_list_is_served_from_one_cached_answer_with_each_id(
    mcp_live_stateless, tenant_a, make_key
):
    key = make_key(tenant_a)
    with mcp_live_stateless.http("a.localhost", key) as http:
        first = _tools_list(http, 7)  # through the SDK, kept
        second = _tools_list(http, "abc")  # from the cache
        third = _tools_list(http, 9)
    assert first["id"] == 7 and second["id"] == "abc" and third["id"] == 9
    assert first["result"] == second["result"] == third["result"]
    assert {t["name"] for t in second["result"]["tools"]} == TOOL_NAMES
    # Auth still runs first: the cached answer is no way around the key.
    with mcp_live_stateless.http("a.localhost") as anonymous:
        response = anonymous.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 401


def test_sse_and_stateless_http_work_side_by_side(mcp_live_stateless, tenant_a, make_key):
    key = make_key(tenant_a)

    async def scenario():
        out = {}
        for transport in ("sse", "http"):
            async with mcp_live_stateless.session(transport, "a.localhost", key) as session:
                tools = await session.list_tools()
                result = await session.call_tool("list_kernel_runs", {})
                out[transport] = ({t.name for t in tools.tools}, result.is_error)
        return out

    out = anyio.run(scenario)
    assert out == {"sse": (TOOL_NAMES, False), "http": (TOOL_NAMES, False)}


@pytest.mark.timeout(600)
def test_two_workers_serve_tool_calls_with_progress_statelessly(
    two_worker_server, tenant_a, make_key
):
    server, log = two_worker_server
    key = make_key(tenant_a, scopes=["translate", "history"])
    updates: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async def scenario():
        async with server.session("http", "a.localhost", key) as session:
            # Several requests: with two processes on one port, each may land on either.
            names = [{t.name for t in (await session.list_tools()).tools} for _ in range(6)]
            result = await session.call_tool(
                "translate_kernel",
                {"source": SAXPY, "sizes": {"n": 64}},
                progress_callback=on_progress,
            )
            return names, result

    names, result = anyio.run(scenario)
    assert all(n == TOOL_NAMES for n in names)
    assert not result.is_error, result.content
    assert result.structured_content["kernels"][0]["status"] == "verified"
    assert len(updates) >= 3 and updates == sorted(updates)
    text = log.read_text()
    assert "sticky routing" in text and "stateless" in text
    assert "Traceback" not in text, text[-3000:]  # e.g. the start-up sweep in each worker
