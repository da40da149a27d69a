"""The sandbox runs untrusted steps under limits: time, memory, environment, network, temp dir."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from kernels.engine.sandbox import run_sandboxed, sandbox_tempdir, scrubbed_env

PY = sys.executable


def _py(code: str, workdir: Path, **kwargs) -> object:
    kwargs.setdefault("timeout_s", 20)
    kwargs.setdefault("memory_mb", 1024)
    return run_sandboxed([PY, "-c", code], cwd=workdir, **kwargs)


def test_command_output_and_exit_status_come_back(tmp_path: Path) -> None:
    result = _py(
        "import sys; print('hello'); print('oops', file=sys.stderr); sys.exit(3)", tmp_path
    )
    assert result.returncode == 3
    assert result.stdout.strip() == "hello"
    assert result.stderr.strip() == "oops"
    assert not result.timed_out


def test_wall_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    # The child starts a grandchild that would outlive it; both must be gone after the timeout.
    code = (
        "import subprocess, time\n"
        "p = subprocess.Popen(['sleep', '60'])\n"
        "open('grandchild.pid', 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    result = _py(code, tmp_path, timeout_s=1.5)
    assert result.timed_out
    assert result.duration_s < 10
    pid = int((tmp_path / "grandchild.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet counts as dead: it cannot run any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_memory_limit_stops_a_large_allocation(tmp_path: Path) -> None:
    result = _py("x = bytearray(1500 * 1024 * 1024)\nprint('allocated')", tmp_path, memory_mb=400)
    assert result.returncode != 0
    assert "allocated" not in result.stdout
    assert "MemoryError" in result.stderr or result.returncode < 0


def test_cpu_time_limit_stops_a_busy_loop(tmp_path: Path) -> None:
    result = _py("while True: pass", tmp_path, timeout_s=30, cpu_s=1)
    assert result.returncode < 0 and not result.timed_out
    assert "CPU-time limit" in result.describe_failure()


def test_environment_is_scrubbed_of_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db/x")
    monkeypatch.setenv("API_KEY", "fsp_live_secret")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    result = _py(code, tmp_path, env={"NUMBA_NUM_THREADS": "2"})
    import json

    seen = json.loads(result.stdout)
    assert "MISTRAL_API_KEY" not in seen and "DATABASE_URL" not in seen and "API_KEY" not in seen
    assert "secret" not in result.stdout
    assert seen["HOME"] == str(tmp_path)
    assert seen["NUMBA_NUM_THREADS"] == "2"


def test_scrubbed_env_keeps_only_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    env = scrubbed_env(home="/tmp/h")
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR", "NUMBA_CACHE_DIR"}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_network_is_unreachable_when_isolation_is_available(tmp_path: Path) -> None:
    # Listen on a local port so that, without isolation, the connection would succeed.
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", 5432))
    except OSError:
        server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = (
            "import socket\n"
            "s = socket.socket(); s.settimeout(2)\n"
            f"print('connected' if s.connect_ex(('127.0.0.1', {port})) == 0 else 'refused')\n"
        )
        result = _py(code, tmp_path)
        if not result.network_isolated:
            pytest.skip("this OS refuses unshare(CLONE_NEWNET) to us: no network isolation here")
        assert result.stdout.strip() == "refused"
        # and the same connection from outside the sandbox does work
        assert _port_open(port)
    finally:
        server.close()


def test_server_state_directory_is_hidden_from_sandboxed_code(tmp_path: Path, monkeypatch) -> None:
    # The server's state directory holds SECRET_KEY (which derives the key encrypting tenants'
    # LLM credentials) and the database files: sandboxed code must not read them.
    home = tmp_path / "state"
    home.mkdir()
    (home / "secret_key").write_text("do-not-leak")
    monkeypatch.setenv("FORTRANSPIRE_HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    result = run_sandboxed(["cat", str(home / "secret_key")], cwd=work, timeout_s=30, memory_mb=512)
    if not result.paths_hidden:
        pytest.skip("this OS refuses a private mount namespace to us: nothing can be hidden here")
    assert "do-not-leak" not in result.stdout
    assert result.returncode != 0
    assert (home / "secret_key").read_text() == "do-not-leak"  # hidden only inside the sandbox


def test_the_working_directory_is_never_hidden(tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_text("visible")
    result = run_sandboxed(
        ["cat", "input.txt"],
        cwd=tmp_path,
        timeout_s=30,
        memory_mb=512,
        hide_paths=[tmp_path.parent],
    )
    assert result.returncode == 0
    assert result.stdout == "visible"


def test_output_is_capped(tmp_path: Path) -> None:
    result = _py("import sys; sys.stdout.write('x' * 3_000_000)", tmp_path, max_output_bytes=1000)
    assert result.returncode == 0
    assert result.output_truncated
    assert len(result.stdout) < 1100


def test_file_size_limit_applies(tmp_path: Path) -> None:
    code = "open('big', 'wb').write(b'0' * (3 * 1024 * 1024))"
    result = _py(code, tmp_path, max_file_mb=1)
    assert result.returncode != 0
    assert (tmp_path / "big").stat().st_size <= 1024 * 1024


def test_stdin_is_fed_to_the_child(tmp_path: Path) -> None:
    result = _py("import sys; print(sys.stdin.read().upper())", tmp_path, stdin="abc")
    assert result.stdout.strip() == "ABC"


def test_missing_program_is_reported_not_raised(tmp_path: Path) -> None:
    result = run_sandboxed(["no-such-program-xyz"], cwd=tmp_path, timeout_s=5, memory_mb=256)
    assert result.returncode == 127
    assert "cannot execute" in result.stderr


def test_tempdir_is_removed_after_use() -> None:
    with sandbox_tempdir() as d:
        (d / "sub").mkdir()
        (d / "sub" / "f.txt").write_text("x")
        os.chmod(d / "sub", 0o500)  # a read-only directory left behind by a child
        kept = d
    assert not kept.exists()


def test_tempdir_is_removed_even_when_the_body_fails() -> None:
    with pytest.raises(RuntimeError), sandbox_tempdir() as d:
        (d / "f").write_text("x")
        kept = d
        raise RuntimeError("step failed")
    assert not kept.exists()
