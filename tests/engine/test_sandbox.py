"""The sandbox runs untrusted steps in bubblewrap under limits: identity, time, memory, files,
environment, network, filesystem view, work directories; and refuses to run without bubblewrap."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from kernels.engine import sandbox
from kernels.engine.sandbox import (
    SandboxUnavailable,
    run_sandboxed,
    sandbox_root,
    sandbox_tempdir,
    scrubbed_env,
)
from tests.security.payloads import none_left, processes_running

PY = sys.executable


@pytest.fixture
def work() -> Path:
    with sandbox_tempdir(prefix="test-") as d:
        yield d


def _py(code: str, workdir: Path, **kwargs) -> sandbox.SandboxResult:
    kwargs.setdefault("timeout_s", 30)
    kwargs.setdefault("memory_mb", 1024)
    return run_sandboxed([PY, "-I", "-c", code], cwd=workdir, **kwargs)


def test_command_output_and_exit_status_come_back(work: Path) -> None:
    result = _py("import sys; print('hello'); print('oops', file=sys.stderr); sys.exit(3)", work)
    assert result.returncode == 3
    assert result.stdout.strip() == "hello"
    assert result.stderr.strip() == "oops"
    assert not result.timed_out


def test_child_runs_as_uid_65534_without_capabilities(work: Path) -> None:
    code = (
        "import os, json\n"
        "st = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "print(json.dumps([os.getuid(), os.geteuid(), os.getgid(), st['CapEff'].strip(),"
        " st['CapBnd'].strip(), st['NoNewPrivs'].strip()]))\n"
    )
    uid, euid, gid, cap_eff, cap_bnd, nnp = json.loads(_py(code, work).stdout)
    assert (uid, euid, gid) == (65534, 65534, 65534)
    assert int(cap_eff, 16) == 0 and int(cap_bnd, 16) == 0
    assert nnp == "1"


def test_a_seccomp_filter_refuses_the_kernel_interfaces_no_port_needs(work: Path) -> None:
    if sandbox.seccomp_filter() is None:
        pytest.skip("the seccomp filter is written for x86_64 only")
    code = (
        "import ctypes, json\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "calls = {'ptrace': (101, 0, 0, 0, 0), 'bpf': (321, 0, 0, 0),"
        " 'io_uring_setup': (425, 1, 0), 'keyctl': (250, 0, 0, 0, 0), 'unshare': (272, 0)}\n"
        "out = {}\n"
        "for name, (nr, *args) in calls.items():\n"
        "    ctypes.set_errno(0)\n"
        "    out[name] = (libc.syscall(nr, *args), ctypes.get_errno())\n"
        "st = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "out['mode'] = st['Seccomp'].strip()\n"
        "print(json.dumps(out))\n"
    )
    seen = json.loads(_py(code, work).stdout)
    assert seen.pop("mode") == "2"
    assert seen == {name: [-1, 1] for name in seen}  # every one: -1, EPERM


def test_files_the_child_writes_belong_to_the_sandbox_user(work: Path) -> None:
    assert _py("open('made.txt', 'w').write('x')", work).ok
    owner = (work / "made.txt").stat().st_uid
    assert owner == (65534 if os.geteuid() == 0 else os.geteuid())


def test_wall_timeout_kills_the_whole_sandbox(work: Path) -> None:
    # The child starts a grandchild in its own session that would outlive it: the timeout ends
    # the sandbox's pid namespace, so nothing of it is left on the host.
    token = _unique_sleep()
    code = (
        "import subprocess, time\n"
        f"p = subprocess.Popen(['setsid', 'sleep', '{token}'])\n"
        "time.sleep(300)\n"
    )
    result = _py(code, work, timeout_s=2)
    assert result.timed_out
    assert result.duration_s < 10
    assert none_left(f"sleep {token}")


def test_children_die_with_the_run_when_it_exits_normally(work: Path) -> None:
    token = _unique_sleep()
    code = f"import subprocess\nsubprocess.Popen(['setsid', 'sleep', '{token}'])\nprint('left')\n"
    result = _py(code, work)
    assert result.ok and result.stdout.strip() == "left"
    assert none_left(f"sleep {token}")


def _unique_sleep() -> str:
    """A ``sleep`` duration no other test run on this machine uses (they run in parallel)."""
    return f"{300 + os.getpid() % 1000}.{time.time_ns() % 10**6:06d}"


def test_memory_limit_stops_a_large_allocation(work: Path) -> None:
    result = _py("x = bytearray(1500 * 1024 * 1024)\nprint('allocated')", work, memory_mb=400)
    assert result.returncode != 0
    assert "allocated" not in result.stdout
    assert "MemoryError" in result.stderr or result.returncode < 0


def test_cpu_time_limit_stops_a_busy_loop(work: Path) -> None:
    result = _py("while True: pass", work, timeout_s=30, cpu_s=1)
    assert result.returncode < 0 and not result.timed_out
    assert "CPU-time limit" in result.describe_failure()


def test_process_limit_stops_a_fork_bomb(work: Path) -> None:
    code = (
        "import os, sys\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        if os.fork() == 0:\n"
        "            import time; time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as exc:\n"
        "    print('refused after', n, exc.errno)\n"
        "    sys.exit(0)\n"
        "print('forked', n)\n"
    )
    result = _py(code, work, max_processes=20)
    assert result.stdout.startswith("refused after"), result.stdout + result.stderr


def test_environment_is_scrubbed_of_secrets(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db/x")
    monkeypatch.setenv("API_KEY", "fsp_live_secret")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    result = _py(code, work, env={"NUMBA_NUM_THREADS": "2"})
    seen = json.loads(result.stdout)
    assert "MISTRAL_API_KEY" not in seen and "DATABASE_URL" not in seen and "API_KEY" not in seen
    assert "secret" not in result.stdout
    assert seen["HOME"] == str(work)
    assert seen["NUMBA_NUM_THREADS"] == "2"


def test_scrubbed_env_keeps_only_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    env = scrubbed_env(home="/tmp/h")
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR", "NUMBA_CACHE_DIR"}


def test_network_is_unreachable(work: Path) -> None:
    # Listen on a local port so that, without isolation, the connection would succeed.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = (
            "import socket\n"
            "s = socket.socket(); s.settimeout(2)\n"
            f"print('connected' if s.connect_ex(('127.0.0.1', {port})) == 0 else 'refused')\n"
            "print([l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]])\n"
        )
        result = _py(code, work)
        assert result.stdout.split() == ["refused", "['lo']"]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # and the same connection from outside the sandbox does work
    finally:
        server.close()


def test_only_the_allow_listed_filesystem_is_visible(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "state"
    home.mkdir()
    (home / "secret_key").write_text("do-not-leak")
    monkeypatch.setenv("FORTRANSPIRE_HOME", str(home))
    project_file = Path(sandbox.__file__).resolve()
    paths = [str(home / "secret_key"), str(project_file), "/etc/shadow", "/root/.bashrc", "/home"]
    code = (
        "import json, os\n"
        f"print(json.dumps({{p: os.path.exists(p) for p in {paths!r}}}))\n"
        "print(sorted(os.listdir('/')))\n"
    )
    result = _py(code, work)
    seen, top = result.stdout.strip().splitlines()
    assert json.loads(seen) == {p: False for p in paths}
    assert set(eval(top)) <= {"bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr"} | {
        Path(p).parts[1] for p in (sys.prefix, sys.base_prefix, str(work))
    }
    assert (home / "secret_key").read_text() == "do-not-leak"


def test_system_directories_are_read_only(work: Path) -> None:
    code = (
        "import os\n"
        "for p in ('/usr/evil', '/etc/evil', os.path.join(os.path.dirname(os.__file__), 'evil')):\n"
        "    try:\n"
        "        open(p, 'w').write('x'); print('wrote', p)\n"
        "    except OSError as exc:\n"
        "        print('refused', exc.errno)\n"
    )
    result = _py(code, work)
    assert "wrote" not in result.stdout
    assert result.stdout.count("refused") == 3


def test_work_directory_outside_the_sandbox_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sandbox_tempdir"):
        run_sandboxed(["true"], cwd=tmp_path, timeout_s=5, memory_mb=256)


def test_work_directories_are_private(work: Path) -> None:
    assert (work.stat().st_mode & 0o777) == 0o700
    root = sandbox_root()
    assert (root.stat().st_mode & 0o777) == 0o700
    assert root.stat().st_uid == os.geteuid()


def test_another_runs_directory_is_invisible(work: Path) -> None:
    with sandbox_tempdir(prefix="other-") as other:
        (other / "tenant_source.f90").write_text("secret kernel")
        code = f"import os; print(os.path.exists({str(other)!r}), sorted(os.listdir('..')))"
        result = _py(code, work)
    visible, siblings = result.stdout.strip().split(" ", 1)
    assert visible == "False"
    assert other.name not in siblings


def test_output_is_capped(work: Path) -> None:
    result = _py("import sys; sys.stdout.write('x' * 3_000_000)", work, max_output_bytes=1000)
    assert result.returncode == 0
    assert result.output_truncated
    assert len(result.stdout) < 1100


def test_file_size_limit_applies(work: Path) -> None:
    code = "open('big', 'wb').write(b'0' * (3 * 1024 * 1024))"
    result = _py(code, work, max_file_mb=1)
    assert result.returncode != 0
    assert (work / "big").stat().st_size <= 1024 * 1024


def test_stdin_is_fed_to_the_child(work: Path) -> None:
    result = _py("import sys; print(sys.stdin.read().upper())", work, stdin="abc")
    assert result.stdout.strip() == "ABC"


def test_missing_program_is_reported_not_raised(work: Path) -> None:
    result = run_sandboxed(["no-such-program-xyz"], cwd=work, timeout_s=5, memory_mb=256)
    assert result.returncode == 127
    assert "cannot execute" in result.stderr


def test_a_program_outside_the_sandbox_view_cannot_be_run(work: Path) -> None:
    result = run_sandboxed([str(Path(sandbox.__file__))], cwd=work, timeout_s=5, memory_mb=256)
    assert result.returncode == 127


def test_without_bubblewrap_nothing_runs(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", "no-such-bwrap-xyz")
    monkeypatch.setattr(sandbox, "_probe_cache", None)
    (work / "ran").unlink(missing_ok=True)
    with pytest.raises(SandboxUnavailable, match="bubblewrap") as info:
        run_sandboxed(["touch", "ran"], cwd=work, timeout_s=5, memory_mb=256)
    assert "make system-deps" in info.value.message
    assert not (work / "ran").exists()
    assert sandbox.status() == "unavailable"
    monkeypatch.setattr(sandbox, "_probe_cache", None)


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


def test_sweep_removes_directories_of_dead_processes_only(work: Path) -> None:
    dead = sandbox_root() / "verify-999999999-abcdef"
    dead.mkdir(mode=0o700)
    (dead / "left.f90").write_text("a tenant's source")
    removed = sandbox.sweep_stale_workdirs()
    assert removed >= 1
    assert not dead.exists()
    assert work.exists()  # ours: this process is alive


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start the command as another user")
def test_the_unprivileged_command_line_gives_uid_65534_without_capabilities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a server not running as root gets: one unprivileged bwrap. Checked here by starting
    # that command line as uid 1000 (without the interpreter, which lives in a 0700 /root).
    import shutil
    import subprocess
    import tempfile

    monkeypatch.setattr(sandbox, "_privileged", lambda: False)
    monkeypatch.setattr(sandbox, "_python_binds", lambda: ())
    top = Path(tempfile.mkdtemp(prefix="fsp-unprivileged-", dir="/tmp"))  # uid 1000 must reach it
    top.chmod(0o755)
    work = top / "w"
    work.mkdir(mode=0o700)
    os.chown(work, 1000, 1000)
    limits = sandbox._limit_args(
        cpu_s=10, memory_bytes=1 << 30, use_data_limit=False, fsize=1 << 20, nofile=64, nproc=64
    )
    script = "id -u; grep -E 'CapEff|CapBnd|NoNewPrivs' /proc/self/status; touch made; ls /proc"
    cmd = sandbox.bwrap_command(["/bin/sh", "-c", script], workdir=str(work), limits=limits)
    try:
        out = subprocess.run(
            ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", *cmd],
            cwd=work,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
            timeout=60,
        )
        made_by = (work / "made").stat().st_uid if (work / "made").exists() else None
    finally:
        shutil.rmtree(top)
    lines = out.stdout.split()
    assert out.returncode == 0, out.stderr
    assert lines[0] == "65534"
    assert "CapEff:" in lines and lines[lines.index("CapEff:") + 1] == "0000000000000000"
    assert lines[lines.index("CapBnd:") + 1] == "0000000000000000"
    assert lines[lines.index("NoNewPrivs:") + 1] == "1"
    assert made_by == 1000  # the host sees the server's own uid
    assert str(os.getpid()) not in lines  # host processes are invisible


# --------------------------------------------------------------------------------------------
# Started ahead: the input comes later


def test_a_child_started_ahead_works_before_its_input_and_reads_it_when_finished(
    work: Path,
) -> None:
    code = (
        "import sys, time\n"
        "open('warm', 'w').write('done')\n"  # work done before the input exists
        "print('got ' + sys.stdin.read().strip())\n"
    )
    with sandbox.start_sandboxed(
        [PY, "-I", "-c", code], cwd=work, timeout_s=30, memory_mb=1024, input_later=True
    ) as child:
        deadline = time.monotonic() + 20
        while not (work / "warm").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (work / "warm").read_text() == "done"
        result = child.finish("the spec\n")
    assert result.ok and result.stdout.strip() == "got the spec"
    assert result.duration_s >= 0


def test_a_child_started_ahead_and_never_used_is_killed_with_everything_it_started(
    work: Path,
) -> None:
    token = _unique_sleep()
    code = (
        "import subprocess, sys\n"
        f"subprocess.Popen(['setsid', 'sleep', '{token}'])\n"
        "sys.stdin.read()\n"
    )
    with sandbox.start_sandboxed(
        [PY, "-I", "-c", code], cwd=work, timeout_s=60, memory_mb=1024, input_later=True
    ):
        deadline = time.monotonic() + 20
        while not processes_running(f"sleep {token}") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_running(f"sleep {token}")
    assert none_left(f"sleep {token}")


def test_finish_can_only_shorten_the_deadline_set_at_the_start(work: Path) -> None:
    with sandbox.start_sandboxed(
        [PY, "-I", "-c", "import time; time.sleep(60)"],
        cwd=work,
        timeout_s=120,
        memory_mb=1024,
    ) as child:
        result = child.finish(timeout_s=1)
    assert result.timed_out
    assert result.duration_s < 10
