"""``make demo``: a scripted walkthrough of what Le Chat does with fortranspire.

    .venv/bin/python -m mcp_bridge.demo [--port 8765] [--out demo]

1. starts the server (``fortranspire bootstrap-demo`` + ``serve``) on a throw-away database under
   ``demo/.home`` and adds a dashboard account to the demo organisation;
2. connects with the mcp SDK client exactly as Le Chat would: it knows only the URL
   ``http://demo.localhost:PORT/mcp``, gets the 401, discovers the authorization server,
   registers itself, and a scripted person logs in and approves the consent page (OAuth 2.1,
   PKCE);
3. ports the CPML demo kernel (tests/fixtures/fortran/cpml_elastic_2d.f90) with
   ``translate_kernel_gpu`` and ``translate_kernel`` (both verified against gfortran), then
   ``profile_kernels``;
4. writes ``demo/transcript.md`` and the roofline chart ``demo/roofline.png``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2

from mcp_bridge.oauth_client import OAuthConnection, Person

ROOT = Path(__file__).resolve().parents[1]
CPML = ROOT / "tests" / "fixtures" / "fortran" / "cpml_elastic_2d.f90"
HOST = "demo.localhost"
USERNAME = "demo-owner"
# Only ever used against the throw-away database under demo/.home, served on loopback.
PASSWORD = "fortranspire-demo-walkthrough"


class Transcript:
    def __init__(self) -> None:
        self.lines: list[str] = ["# fortranspire: the Le Chat walkthrough", ""]
        self.started = time.monotonic()

    def step(self, title: str) -> None:
        stamp = time.monotonic() - self.started
        self.lines += [f"## [{stamp:6.1f} s] {title}", ""]
        print(f"[{stamp:6.1f} s] {title}", flush=True)

    def note(self, text: str) -> None:
        self.lines += [text, ""]
        print(f"    {text}", flush=True)

    def block(self, text: str, language: str = "") -> None:
        self.lines += [f"```{language}", text.rstrip(), "```", ""]

    def write(self, path: Path) -> None:
        path.write_text("\n".join(self.lines))


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fortranspire_site.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"fortranspire {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _wait_for_health(port: int, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            response = httpx2.get(
                f"http://127.0.0.1:{port}/health", headers={"Host": f"{HOST}:{port}"}, timeout=2
            )
            if response.status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not answer /health in time")


def _kernel_lines(result: dict) -> list[str]:
    lines = []
    for kernel in result["kernels"]:
        lines.append(
            f"{kernel['name']}: {kernel['status']} on {kernel['device']}, "
            f"max_abs_err={kernel.get('max_abs_err')}, max_ulp={kernel.get('max_ulp')}, "
            f"parallel_loops={kernel.get('parallel_loops')}, llm_calls={kernel.get('llm_calls')}"
        )
    return lines


async def walkthrough(base_url: str, out: Path, transcript: Transcript) -> None:
    source = CPML.read_text()
    connection = OAuthConnection(base_url, Person(USERNAME, PASSWORD), client_name="Le Chat (demo)")
    transcript.step(f"Connect to {base_url}/mcp with OAuth 2.1 (no key pasted anywhere)")
    async with connection.session("http") as session:
        info = connection.storage.client_info
        tokens = connection.storage.tokens
        transcript.note(
            f"registered as client {info.client_id} (RFC 7591), consent approved by "
            f"{USERNAME}; scopes granted: {tokens.scope}; refresh token issued: "
            f"{bool(tokens.refresh_token)}"
        )
        transcript.note(f"authorize URL the person followed: {connection.authorize_urls[0]}")
        tools = await session.list_tools()
        transcript.step("tools/list")
        transcript.note(", ".join(t.name for t in tools.tools))

        for tool in ("translate_kernel_gpu", "translate_kernel"):
            transcript.step(f"{tool} on {CPML.name} (verified against gfortran)")
            started = time.monotonic()
            result = await session.call_tool(tool, {"source": source})
            elapsed = time.monotonic() - started
            if result.is_error:
                transcript.note(f"error: {result.content[0].text}")
                continue
            data = result.structured_content
            transcript.note(f"{elapsed:.1f} s, run_id {data['run_id']}")
            for line in _kernel_lines(data):
                transcript.note(line)
            transcript.block(data["kernels"][0]["code"], "python")

        transcript.step(f"profile_kernels on {CPML.name}")
        result = await session.call_tool("profile_kernels", {"source": source})
        data = result.structured_content
        for kernel in data.get("kernels", []):
            transcript.note(
                f"#{kernel.get('rank')} {kernel['name']}: share {kernel.get('share')}, "
                f"intensity {kernel.get('intensity')} flop/byte, {kernel.get('bound')}-bound"
            )
        images = [c for c in result.content if getattr(c, "type", "") == "image"]
        if images:
            (out / "roofline.png").write_bytes(base64.b64decode(images[0].data))
            transcript.note("roofline chart: demo/roofline.png")
        else:
            transcript.note("the server drew no chart")
        transcript.block(json.dumps({k: v for k, v in data.items() if k != "kernels"}, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=ROOT / "demo")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "FORTRANSPIRE_HOME": str(out / ".home"),
        "PYTHONPATH": str(ROOT),
        # The demo's one client makes a handful of calls; keep the defaults otherwise.
        "LOG_LEVEL": "WARNING",
    }
    transcript = Transcript()
    transcript.step("Start the server (embedded PostgreSQL under demo/.home)")
    transcript.note(_cli(env, "bootstrap-demo").strip().splitlines()[0])
    _cli(
        env,
        "member",
        "add",
        "--tenant",
        "demo",
        USERNAME,
        "--role",
        "owner",
        "--password",
        PASSWORD,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "fortranspire_site.cli", "serve", "--port", str(args.port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_health(args.port, server)
        anyio.run(walkthrough, f"http://{HOST}:{args.port}", out, transcript)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        transcript.write(out / "transcript.md")
        print(f"transcript: {out / 'transcript.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
