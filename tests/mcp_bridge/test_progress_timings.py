"""A client waiting on translate_kernel sees each verification stage with its duration."""

from __future__ import annotations

import re
import shutil

import anyio
import pytest

from tests.mcp_bridge.support import SAXPY

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed"),
]


def test_every_stage_reaches_the_client_with_its_time_and_the_result_carries_them(
    mcp_live, tenant_a, make_key, settings, tmp_path
):
    settings.FORTRANSPIRE_CACHE_DIR = tmp_path
    key = make_key(tenant_a, scopes=["translate"])
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async def scenario():
        async with mcp_live.session("http", "a.localhost", key) as session:
            return await session.call_tool(
                "translate_kernel",
                {"source": SAXPY, "sizes": {"n": 64}},
                progress_callback=on_progress,
            )

    result = anyio.run(scenario)
    assert not result.is_error, result.content
    timed = {}
    for message in messages:
        match = re.match(r"(\w+): saxpy: ([a-z ]+) (\d+) ms$", message)
        if match:
            timed[match.group(2)] = int(match.group(3))
    for stage in ("analyse", "generate", "gfortran compile", "reference run", "numba compile"):
        assert stage in timed, (stage, messages)
    assert {"port run", "compare"} <= set(timed), messages
    kernel = result.structured_content["kernels"][0]
    assert kernel["status"] == "verified"
    assert set(kernel["timings_ms"]) >= {"parse", "numba_compile", "port_run", "compare"}
    assert round(kernel["timings_ms"]["numba_compile"]) == timed["numba compile"]
