"""Run compilers and untrusted code (user Fortran, generated or LLM-written Python) in a subprocess.

Every child gets: CPU-time, address-space (or data) limits, an open-file and file-size limit, no
core dumps, its own session (a timeout kills the whole process group, grandchildren included), a
private network namespace where the OS allows it, a scrubbed environment and capped output.

Limits are applied by a tiny launcher (``python -I -S -c ...``) that execs the real command,
rather than by ``preexec_fn``: ``preexec_fn`` is unsafe when the parent has threads, which it
does under uvicorn/Channels and in the Celery worker.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Only these reach the child; everything else (MISTRAL_API_KEY, DATABASE_URL, API_KEY, cloud
#: credentials...) is dropped. Callers add what a step needs through ``env=``.
_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ")
#: CUDA needs to find the driver and the toolkit; none of these carry secrets.
_GPU_PREFIXES = ("CUDA_", "NVIDIA_", "NUMBA_CUDA_", "LD_LIBRARY_PATH", "CUDA_HOME")

DEFAULT_OUTPUT_CAP = 1 << 20  # bytes kept per stream; the rest is drained and dropped
DEFAULT_FILE_MB = 512

_LAUNCHER = r"""
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
status = os.fdopen(cfg["status_fd"], "w")
def lim(which, value, hard=None):
    try:
        resource.setrlimit(which, (value, value if hard is None else hard))
    except (ValueError, OSError):
        hard = resource.getrlimit(which)[1]
        if hard != resource.RLIM_INFINITY and value > hard:
            resource.setrlimit(which, (hard, hard))
lim(resource.RLIMIT_CORE, 0)
lim(resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 2)  # SIGXCPU first, SIGKILL later
lim(resource.RLIMIT_NOFILE, cfg["nofile"])
lim(resource.RLIMIT_FSIZE, cfg["fsize"])
lim(resource.RLIMIT_DATA if cfg["use_data_limit"] else resource.RLIMIT_AS, cfg["memory"])
isolated = hidden = 0
CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUSER = 0x00020000, 0x40000000, 0x10000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 0x40000
try:
    libc = ctypes.CDLL(None, use_errno=True)
except Exception:
    libc = None
flags = (CLONE_NEWNET if cfg["isolate_net"] else 0) | (CLONE_NEWNS if cfg["hide"] else 0)
if libc is not None and flags:
    # Root gets the namespaces directly; elsewhere a user namespace grants them, if allowed.
    if libc.unshare(flags) == 0 or libc.unshare(CLONE_NEWUSER | flags) == 0:
        isolated = int(bool(flags & CLONE_NEWNET))
        if flags & CLONE_NEWNS and libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0:
            # An empty tmpfs over each hidden directory (the server's state: SECRET_KEY, the
            # database files); private propagation keeps these mounts out of the host.
            hidden = 1
            for path in cfg["hide"]:
                if os.path.isdir(path) and libc.mount(
                    b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                    b"size=64k,mode=0",
                ) != 0:
                    hidden = 0
status.write("%d%d" % (isolated, hidden))
status.close()
argv = cfg["argv"]
try:
    os.execvpe(argv[0], argv, os.environ)
except OSError as exc:
    sys.stderr.write("sandbox: cannot execute %s: %s\n" % (argv[0], exc))
    os._exit(127)
"""


@dataclass
class SandboxResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float = 0.0
    network_isolated: bool = False
    output_truncated: bool = False
    paths_hidden: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe_failure(self, *, max_lines: int = 12, tail: bool = False) -> str:
        """A short human message for a failed run: timeout, signal, or the first stderr lines.

        ``tail`` keeps the last lines instead (a Python traceback ends with the error).
        """
        if self.timed_out:
            return f"timed out after {self.duration_s:.1f} s"
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            reason = {
                "SIGXCPU": "CPU-time limit reached",
                "SIGKILL": "killed (memory or time limit)",
                "SIGSEGV": "crashed (segmentation fault)",
                "SIGXFSZ": "file-size limit reached",
            }.get(name, f"killed by {name}")
            detail = _some_lines(self.stderr, max_lines, tail)
            return reason + (f": {detail}" if detail else "")
        detail = _some_lines(self.stderr or self.stdout, max_lines, tail)
        return detail or f"exit status {self.returncode}"


def _some_lines(text: str, n: int, tail: bool = False) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-n:] if tail else lines[:n])


def scrubbed_env(
    *, home: str | os.PathLike[str], extra: Mapping[str, str] | None = None, allow_gpu: bool = False
) -> dict[str, str]:
    """The environment a sandboxed child sees: a short allow-list, HOME/TMPDIR in the sandbox dir."""
    env = {k: os.environ[k] for k in _PASSED_THROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    if allow_gpu:
        env.update({k: v for k, v in os.environ.items() if k.startswith(_GPU_PREFIXES)})
    env["HOME"] = str(home)
    env["TMPDIR"] = str(home)
    # numba caches compiled code next to the module or under HOME: keep it inside the sandbox.
    env["NUMBA_CACHE_DIR"] = str(Path(home) / ".numba_cache")
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def run_sandboxed(
    argv: list[str],
    *,
    cwd: str | os.PathLike[str],
    timeout_s: float,
    memory_mb: int,
    env: Mapping[str, str] | None = None,
    stdin: str | bytes | None = None,
    allow_gpu: bool = False,
    cpu_s: float | None = None,
    isolate_network: bool = True,
    max_output_bytes: int = DEFAULT_OUTPUT_CAP,
    max_file_mb: int = DEFAULT_FILE_MB,
    max_open_files: int = 256,
    hide_paths: list[str | os.PathLike[str]] | None = None,
) -> SandboxResult:
    """Run ``argv`` in ``cwd`` under limits and return what happened; never raises for the child's failures.

    ``memory_mb`` bounds the address space (RLIMIT_AS); with ``allow_gpu`` it bounds the data
    segment instead, because the CUDA driver maps huge virtual ranges. ``cpu_s`` defaults to
    twice the wall timeout (a parallel child burns CPU on several cores). ``env`` adds variables
    to the scrubbed environment; nothing else from the parent's environment is passed.
    ``hide_paths`` (default: the server's state directory, see :func:`server_state_dirs`) are
    covered by an empty tmpfs in a private mount namespace where the OS allows it.
    """
    cwd = os.fspath(cwd)
    cpu_limit = math.ceil(cpu_s if cpu_s is not None else max(2 * timeout_s, timeout_s + 5))
    status_r, status_w = os.pipe()
    config = {
        "argv": [str(a) for a in argv],
        "status_fd": status_w,
        "cpu_s": cpu_limit,
        "nofile": max_open_files,
        "fsize": max_file_mb * 1024 * 1024,
        "memory": memory_mb * 1024 * 1024,
        "use_data_limit": allow_gpu,
        "isolate_net": isolate_network,
        "hide": [
            os.path.realpath(p)
            for p in (server_state_dirs() if hide_paths is None else hide_paths)
            # Never hide the directory the child works in.
            if not os.path.realpath(cwd).startswith(os.path.realpath(p) + os.sep)
        ],
    }
    child_env = scrubbed_env(home=cwd, extra=env, allow_gpu=allow_gpu)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(config)],
            cwd=cwd,
            env=child_env,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own process group: a timeout kills grandchildren too
            pass_fds=(status_w,),
            close_fds=True,
        )
    finally:
        os.close(status_w)

    out = _CappedReader(proc.stdout, max_output_bytes)
    err = _CappedReader(proc.stderr, max_output_bytes)
    if data is not None:
        threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True).start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        proc.wait()
    # The group may have left children holding the pipes open: kill it before joining readers.
    _kill_group(proc)
    out.join(5)
    err.join(5)
    duration = time.monotonic() - start
    with os.fdopen(status_r, "rb") as fh:
        flags = fh.read(2)
    isolated, hidden = flags[:1] == b"1", flags[1:2] == b"1"
    return SandboxResult(
        returncode=proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        duration_s=duration,
        network_isolated=isolated,
        paths_hidden=hidden,
        output_truncated=out.truncated or err.truncated,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _feed(pipe, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.write(data)
        pipe.close()


class _CappedReader:
    """Drains a pipe in a thread, keeping the first ``cap`` bytes (so a chatty child cannot fill memory)."""

    def __init__(self, pipe, cap: int):
        self._pipe = pipe
        self._cap = cap
        self._chunks: list[bytes] = []
        self._kept = 0
        self.truncated = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            while True:
                chunk = self._pipe.read1(65536) if hasattr(self._pipe, "read1") else b""
                if not chunk:
                    break
                room = self._cap - self._kept
                if room > 0:
                    self._chunks.append(chunk[:room])
                    self._kept += min(room, len(chunk))
                if len(chunk) > max(room, 0):
                    self.truncated = True
        with contextlib.suppress(OSError):
            self._pipe.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        text = b"".join(self._chunks).decode("utf-8", errors="replace")
        return text + ("\n[output truncated]" if self.truncated else "")


def server_state_dirs() -> list[str]:
    """Directories sandboxed code must not see: the server's state (``$FORTRANSPIRE_HOME``,
    default ``./.fortranspire``: SECRET_KEY, the embedded database) plus
    ``$FORTRANSPIRE_SANDBOX_HIDE`` (``os.pathsep``-separated)."""
    home = os.environ.get("FORTRANSPIRE_HOME") or os.path.join(os.getcwd(), ".fortranspire")
    extra = [p for p in os.environ.get("FORTRANSPIRE_SANDBOX_HIDE", "").split(os.pathsep) if p]
    return [home, *extra]


@contextlib.contextmanager
def sandbox_tempdir(prefix: str = "fortranspire-") -> Iterator[Path]:
    """A fresh private directory that is removed on exit, even when the body raises."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        _remove_tree(path)


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(func, p, _exc):
        # A child may have left read-only files or directories behind.
        with contextlib.suppress(OSError):
            os.chmod(p, 0o700)
            parent = os.path.dirname(p)
            os.chmod(parent, 0o700)
            func(p)

    shutil.rmtree(path, onexc=make_writable_and_retry) if sys.version_info >= (3, 12) else (
        shutil.rmtree(path, onerror=make_writable_and_retry)
    )
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
