"""The sandbox: every compile and run of untrusted or generated code goes through :func:`run_sandboxed`.

User Fortran (cpp, gfortran, the compiled original), generated numba code, LLM-written code and
the profiling harness all run here. The sandbox is built on bubblewrap (``bwrap``) and must hold
even when every check before it (the Fortran scanner, the LLM answer check) missed something.

What each run gets
------------------
- **Identity:** real host uid/gid 65534 (``nobody``) inside a new user namespace that maps only
  65534 -> 65534, no capabilities (effective, permitted, inheritable, ambient *and* bounding set
  empty), ``no_new_privs``, and nested user namespaces disabled (``--disable-userns``).
- **Namespaces:** new user, pid, net, ipc, uts, cgroup and mount namespaces; ``--die-with-parent``
  and ``--new-session`` (no TIOCSTI into our terminal). The command runs under bwrap's own pid 1:
  when the command exits (or the run is killed) pid 1 exits and the kernel kills everything left
  in the pid namespace, so a ``setsid`` child cannot outlive its run.
- **Filesystem** (a fresh tmpfs root, everything read-only except the work directory):
  ``/usr`` and the merged-usr links (``/bin``, ``/lib``, ``/lib64``, ``/sbin``), ``/etc/ld.so.cache``
  (library lookup), the Python interpreter (``sys.base_prefix``) and the virtualenv
  (``sys.prefix``, its site-packages), a new ``/proc`` for the new pid namespace, bwrap's minimal
  ``/dev`` (null, zero, full, random, urandom, tty, shm, pts), a private tmpfs ``/tmp``, and
  exactly one writable directory: the run's own work directory, bound at its host path. GPU runs
  also get the ``/dev/nvidia*`` nodes, read-only ``/sys`` and ``$CUDA_HOME`` when they exist.
  Nothing else: not ``$FORTRANSPIRE_HOME`` (SECRET_KEY, the database and its socket), ``/root``,
  ``/home``, ``/etc`` (``shadow``, ``passwd``...), ``/var``, ``/run``, the project source, nor any
  other run's directory.
- **Seccomp** (x86_64): a filter refuses (EPERM) the kernel interfaces no compiler, kernel or
  port needs and exploits favour: ptrace and process_vm_*, bpf, io_uring, userfaultfd,
  perf_event_open, keyrings, mount/namespace calls, module and machine administration; the x32
  and i386 ABIs kill the process (:func:`seccomp_filter`).
- **Network:** none (an empty network namespace: no interface but a down loopback).
- **Limits** (``prlimit`` right before the command): CPU seconds, address space (data segment for
  GPU runs: the CUDA driver maps huge virtual ranges), file size, processes, open files, no core
  dumps; plus a wall timeout enforced here, and capped stdout/stderr.
- **Environment:** a short allow-list (PATH, LANG, LC_ALL, TZ; CUDA variables for GPU runs),
  HOME/TMPDIR/NUMBA_CACHE_DIR inside the work directory.

Why two bubblewrap layers when the server runs as root
------------------------------------------------------
Run as root, ``bwrap --unshare-user --uid 65534`` maps the sandbox's uid 65534 to the *caller's*
uid, root: the child would own every root file it can see, only without capabilities. Instead the
outer bwrap (privileged: it can bind the interpreter from a 0700 ``/root``) builds the namespaces
and the filesystem, ``setpriv`` becomes the real host uid 65534 with every capability and the
bounding set dropped and ``no_new_privs`` set, and an inner, unprivileged bwrap adds the user
namespace (65534 -> 65534) with nested user namespaces disabled. As non-root a single
unprivileged bwrap does all of it (``--unshare-user --uid 65534``; the host uid is then the
server's own, which is what an unprivileged service can offer).

No fallback
-----------
If bubblewrap is missing or cannot create its namespaces, nothing runs:
:func:`run_sandboxed` raises :class:`SandboxUnavailable`, whose message says why and how to fix
it; callers turn it into a ``failed`` kernel, ``/health`` reports ``"sandbox": "unavailable"`` and
``fortranspire doctor`` exits non-zero.

Work directories
----------------
:func:`sandbox_tempdir` makes them 0700 under one dedicated parent (:func:`sandbox_root`, 0700,
owned by the server; ``$FORTRANSPIRE_SANDBOX_DIR`` moves it), named after the creating process
so :func:`sweep_stale_workdirs` (run by ``serve`` at start-up) can remove what a killed process
left behind. ``run_sandboxed`` refuses a ``cwd`` outside that parent.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kernels.engine.report import SandboxError

SANDBOX_UID = 65534
SANDBOX_GID = 65534
BWRAP = "bwrap"

#: Only these reach the child; everything else (MISTRAL_API_KEY, DATABASE_URL, API_KEY, cloud
#: credentials...) is dropped. Callers add what a step needs through ``env=``.
_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ")
#: CUDA needs to find the driver and the toolkit; none of these carry secrets.
_GPU_PREFIXES = ("CUDA_", "NVIDIA_", "NUMBA_CUDA_", "LD_LIBRARY_PATH", "CUDA_HOME")
_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"

DEFAULT_OUTPUT_CAP = 1 << 20  # bytes kept per stream; the rest is drained and dropped
DEFAULT_FILE_MB = 512
DEFAULT_MAX_PROCESSES = 512  # threads count too (numba's pool); enough for any kernel, not a bomb

_FIX = (
    "Install bubblewrap ('make system-deps', or 'apt-get install bubblewrap') and allow it to "
    "create namespaces: run the server as root, or enable unprivileged user namespaces "
    "('sysctl kernel.unprivileged_userns_clone=1', 'sysctl user.max_user_namespaces=15000'; in a "
    "container, allow the unshare/mount syscalls). Check with 'fortranspire doctor'."
)


class SandboxUnavailable(SandboxError):
    """The sandbox cannot be set up here, so untrusted code does not run at all."""


@dataclass
class SandboxResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float = 0.0
    #: Always true for a run that happened: there is no unisolated mode any more. Kept because
    #: callers and reports read them.
    network_isolated: bool = True
    output_truncated: bool = False
    paths_hidden: bool = True

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
                "SIGABRT": "aborted",
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
    """The environment a sandboxed child sees: a short allow-list, HOME/TMPDIR in the work dir."""
    env = {k: os.environ[k] for k in _PASSED_THROUGH if k in os.environ}
    env["PATH"] = _SANDBOX_PATH  # the host's PATH may name directories the sandbox does not have
    env.setdefault("LANG", "C.UTF-8")
    if allow_gpu:
        env.update({k: v for k, v in os.environ.items() if k.startswith(_GPU_PREFIXES)})
    env["HOME"] = str(home)
    env["TMPDIR"] = str(home)
    # numba caches compiled code next to the module or under HOME: keep it inside the work dir.
    env["NUMBA_CACHE_DIR"] = str(Path(home) / ".numba_cache")
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


# --------------------------------------------------------------------------------------------
# Work directories


def sandbox_root() -> Path:
    """The dedicated parent of every run's work directory: 0700 and owned by this process's user.

    ``$FORTRANSPIRE_SANDBOX_DIR``, else ``<tmp>/fortranspire-sandbox-<uid>``. A pre-existing
    directory owned by someone else (planted in a shared /tmp to read runs) is refused.
    """
    configured = os.environ.get("FORTRANSPIRE_SANDBOX_DIR")
    path = Path(
        configured or os.path.join(tempfile.gettempdir(), f"fortranspire-sandbox-{os.geteuid()}")
    )
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=bool(configured))
    st = path.lstat()
    if not path.is_dir() or path.is_symlink() or st.st_uid != os.geteuid():
        raise SandboxUnavailable(
            f"the sandbox directory {path} is not a directory owned by uid {os.geteuid()}; "
            "remove it or set FORTRANSPIRE_SANDBOX_DIR to a private directory"
        )
    if st.st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)
    return path.resolve()


@contextlib.contextmanager
def sandbox_tempdir(prefix: str = "run-") -> Iterator[Path]:
    """A fresh private work directory (0700, under :func:`sandbox_root`), removed on exit.

    Its name carries the creating process's pid, so a sweep can tell leftovers from live runs.
    """
    root = sandbox_root()
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in prefix)[:40]
    path = root / f"{safe}{os.getpid()}-{secrets.token_hex(6)}"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        _remove_tree(path)


def sweep_stale_workdirs(*, max_age_s: float = 24 * 3600) -> int:
    """Remove work directories whose creating process is gone (or older than ``max_age_s``).

    ``serve`` calls this at start-up: a killed server or worker leaves its runs' files (a
    tenant's source) behind. Returns the number removed.
    """
    root = sandbox_root()
    removed = 0
    now = time.time()
    for entry in root.iterdir():
        pid = _creator_pid(entry.name)
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        if pid is not None and pid != os.getpid() and _pid_alive(pid) and age < max_age_s:
            continue
        if pid == os.getpid() and age < max_age_s:
            continue
        if entry.is_dir() and not entry.is_symlink():
            _remove_tree(entry)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def _creator_pid(name: str) -> int | None:
    parts = name.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return int(parts[1])
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(func, p, _exc):
        # A child may have left read-only files or directories behind.
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _inside_root(path: str) -> bool:
    root = str(sandbox_root())
    return path == root or path.startswith(root + os.sep)


def _hand_to_sandbox_user(top: str) -> None:
    """As root: give the work tree to uid 65534 so the unprivileged child can write in it.

    Symlinks are not followed (``lchown``, ``os.walk`` default), and a child cannot have made a
    hard link to a host file: only the work dir is writable and every other mount is a
    different mount (EXDEV).
    """
    os.lchown(top, SANDBOX_UID, SANDBOX_GID)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(dirpath, name), SANDBOX_UID, SANDBOX_GID)


# --------------------------------------------------------------------------------------------
# The bubblewrap command line


def _privileged() -> bool:
    return os.geteuid() == 0


@functools.cache
def _python_binds() -> tuple[tuple[str, str], ...]:
    """(host source, path inside) for the interpreter, the virtualenv and its site-packages."""
    import site
    import sysconfig

    wanted = [sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
    wanted += list(site.getsitepackages())
    wanted += [
        sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")
    ]
    binds: list[tuple[str, str]] = []
    for target in wanted:
        if not target or not os.path.isdir(target) or _covered(target, binds):
            continue
        binds = [b for b in binds if not _is_under(b[1], target)]
        binds.append((os.path.realpath(target), os.path.abspath(target)))
    return tuple(binds)


def _is_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def _covered(path: str, binds: Sequence[tuple[str, str]]) -> bool:
    return _is_under(path, "/usr") or any(_is_under(path, dest) for _, dest in binds)


def _forbidden_sources() -> list[str]:
    """Host paths no bind may contain: the project source and the server's state."""
    project = str(Path(__file__).resolve().parents[2])
    home = os.environ.get("FORTRANSPIRE_HOME") or os.path.join(os.getcwd(), ".fortranspire")
    return [project, os.path.realpath(home)]


def _check_binds(binds: Sequence[tuple[str, str]]) -> None:
    for src, _dest in binds:
        for secret in _forbidden_sources():
            if _is_under(secret, src):
                raise SandboxUnavailable(
                    f"the sandbox would have to expose {src}, which contains {secret}; install "
                    "the virtualenv outside the project and the state directory"
                )


def _dirs_for(dest: str, made: set[str]) -> list[str]:
    """``--perms 0755 --dir`` for each missing parent of ``dest`` (bwrap makes them 0700 otherwise)."""
    out: list[str] = []
    parts = Path(dest).parts[1:-1]
    cur = "/"
    for part in parts:
        cur = os.path.join(cur, part)
        if cur in made or cur in ("/usr", "/tmp", "/proc", "/dev"):
            continue
        made.add(cur)
        out += ["--perms", "0755", "--dir", cur]
    return out


def _gpu_args() -> list[str]:
    """Device nodes, sysfs and the CUDA toolkit for runs that may use the GPU (when present)."""
    out: list[str] = []
    for node in sorted(glob.glob("/dev/nvidia*")):
        out += ["--dev-bind", node, node]
    if os.path.isdir("/sys"):
        out += ["--ro-bind", "/sys", "/sys"]
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if (
        cuda_home
        and os.path.isdir(cuda_home)
        and not _is_under(os.path.realpath(cuda_home), "/usr")
    ):
        out += ["--ro-bind", os.path.realpath(cuda_home), cuda_home]
    return out


def _limit_args(
    *, cpu_s: int, memory_bytes: int, use_data_limit: bool, fsize: int, nofile: int, nproc: int
) -> list[str]:
    mem = f"--data={memory_bytes}" if use_data_limit else f"--as={memory_bytes}"
    return [
        "/usr/bin/prlimit",
        f"--cpu={cpu_s}:{cpu_s + 2}",  # SIGXCPU first, SIGKILL two seconds later
        mem,
        f"--fsize={fsize}",
        f"--nofile={nofile}",
        f"--nproc={nproc}",
        "--core=0",
        "--",
    ]


def bwrap_command(
    argv: Sequence[str],
    *,
    workdir: str,
    limits: Sequence[str],
    allow_gpu: bool = False,
    ro_paths: Sequence[str] = (),
    rw_paths: Sequence[str] = (),
    seccomp_fd: int | None = None,
) -> list[str]:
    """The full command line that runs ``argv`` sandboxed in ``workdir`` (see the module doc).

    ``seccomp_fd`` is a readable file descriptor holding :func:`seccomp_filter`'s program; the
    bwrap that execs the command loads it (the outer, privileged one still needs mount & co).
    """
    privileged = _privileged()
    seccomp = ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
    cmd = [BWRAP]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    if privileged:
        cmd += ["--unshare-cgroup", "--cap-add", "CAP_SETUID,CAP_SETGID"]
    else:
        cmd += ["--unshare-cgroup-try", "--unshare-user", "--disable-userns"]
        cmd += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), *seccomp]
    cmd += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for link in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(link):
            cmd += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            cmd += ["--ro-bind", link, link]
    made: set[str] = set()
    cmd += ["--perms", "0755", "--dir", "/etc"]
    made.add("/etc")
    if os.path.exists("/etc/ld.so.cache"):
        cmd += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    # Debian's alternatives links (cc, f95...) when a tool is reached through them.
    if os.path.isdir("/etc/alternatives"):
        cmd += ["--ro-bind", "/etc/alternatives", "/etc/alternatives"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    binds = [*_python_binds(), *((os.path.realpath(p), os.path.abspath(p)) for p in ro_paths)]
    _check_binds(binds)
    for src, dest in binds:
        cmd += _dirs_for(dest, made)
        cmd += ["--ro-bind", src, dest]
        made.add(dest)
    if allow_gpu:
        cmd += _gpu_args()
    writable = [(p, p) for p in rw_paths]
    _check_binds(writable)
    for src, dest in writable:
        cmd += _dirs_for(dest, made)
        cmd += ["--bind", src, dest]
        made.add(dest)
    cmd += _dirs_for(workdir, made)
    cmd += ["--bind", workdir, workdir, "--chdir", workdir]
    cmd += ["--"]
    if privileged:
        cmd += [
            "/usr/bin/setpriv",
            f"--reuid={SANDBOX_UID}",
            f"--regid={SANDBOX_GID}",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            _bwrap_path(),
            "--unshare-user",
            "--disable-userns",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_GID),
            "--die-with-parent",
            *seccomp,
            "--bind",
            "/",
            "/",
            "--chdir",
            workdir,
            "--",
        ]
    cmd += list(limits)
    cmd += list(argv)
    return cmd


def _bwrap_path() -> str:
    """bwrap's absolute path (the inner layer runs with PATH of the sandbox, so it must be under /usr)."""
    found = shutil.which(BWRAP, path=_SANDBOX_PATH) or shutil.which(BWRAP)
    return os.path.realpath(found) if found else "/usr/bin/bwrap"


# --------------------------------------------------------------------------------------------
# Seccomp: a deny-list of kernel interfaces no kernel, compiler or port uses

# x86_64 numbers. Refused with EPERM: exploit surface (bpf, io_uring, userfaultfd,
# perf_event_open, keyrings), other processes' memory (ptrace, process_vm_*), mounts and
# namespaces (already refused to an unprivileged uid; refused here before any permission check
# is reached), and machine administration. The x32 ABI and every non-x86_64 ABI are refused too.
_SECCOMP_DENIED_X86_64 = {
    "ptrace": 101,
    "syslog": 103,
    "personality": 135,
    "vhangup": 153,
    "pivot_root": 155,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_EPERM = 1


@functools.cache
def seccomp_filter() -> bytes | None:
    """The classic-BPF seccomp program bwrap loads (``--seccomp FD``); None off x86_64.

    ``struct sock_filter`` entries (u16 code, u8 jt, u8 jf, u32 k) over ``struct seccomp_data``
    (nr at offset 0, arch at offset 4).
    """
    import platform
    import struct

    if platform.machine() != "x86_64":
        return None
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    errno = 0x00050000 | _EPERM
    denied = sorted(_SECCOMP_DENIED_X86_64.values())
    prog: list[tuple[int, int, int, int]] = [
        (ld_abs, 0, 0, 4),  # arch
        (jeq, 1, 0, _AUDIT_ARCH_X86_64),
        (ret, 0, 0, kill),  # i386 (int 0x80) or any other ABI: no way around the list
        (ld_abs, 0, 0, 0),  # syscall number
    ]
    deny_at = len(prog) + 1 + len(denied) + 1  # after the x32 check, the list and ALLOW
    prog.append((jge, deny_at - len(prog) - 1, 0, _X32_SYSCALL_BIT))
    for nr in denied:
        prog.append((jeq, deny_at - len(prog) - 1, 0, nr))
    prog.append((ret, 0, 0, allow))
    prog.append((ret, 0, 0, errno))
    assert len(prog) - 1 == deny_at
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


# --------------------------------------------------------------------------------------------
# Probe


@dataclass
class SandboxProbe:
    ok: bool
    reason: str = ""
    mode: str = ""  # 'root: outer bwrap + setpriv + inner bwrap' | 'user: unprivileged bwrap'
    bwrap_version: str = ""
    checked_at: float = field(default_factory=time.monotonic)


_probe_lock = threading.Lock()
_probe_cache: SandboxProbe | None = None
_FAILED_PROBE_TTL_S = 30.0  # a failure is re-checked soon (someone may be fixing it)


def probe(*, force: bool = False) -> SandboxProbe:
    """Can this host run the sandbox? Runs ``true`` in it once; success is cached for the process."""
    global _probe_cache
    with _probe_lock:
        cached = _probe_cache
        if (
            cached is not None
            and not force
            and (cached.ok or time.monotonic() - cached.checked_at < _FAILED_PROBE_TTL_S)
        ):
            return cached
        _probe_cache = _run_probe()
        return _probe_cache


def status() -> str:
    """``"ok"`` or ``"unavailable"``, as ``/health`` reports it."""
    return "ok" if probe().ok else "unavailable"


def _run_probe() -> SandboxProbe:
    mode = "root: bwrap, setpriv to uid 65534, inner bwrap" if _privileged() else "user: bwrap"
    exe = shutil.which(BWRAP)
    if exe is None:
        return SandboxProbe(False, f"bubblewrap ({BWRAP}) is not installed. {_FIX}", mode)
    version = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    for tool in ("/usr/bin/prlimit", *(["/usr/bin/setpriv"] if _privileged() else [])):
        if not os.access(tool, os.X_OK):
            return SandboxProbe(False, f"{tool} (util-linux) is missing. {_FIX}", mode, version)
    try:
        with sandbox_tempdir(prefix="probe-") as work:
            result = _start(
                ["/usr/bin/id", "-u"],
                cwd=str(work),
                timeout_s=30,
                limits=_limit_args(
                    cpu_s=10,
                    memory_bytes=256 << 20,
                    use_data_limit=False,
                    fsize=1 << 20,
                    nofile=64,
                    nproc=DEFAULT_MAX_PROCESSES,
                ),
                env=scrubbed_env(home=work),
                input_later=False,
                allow_gpu=False,
                ro_paths=(),
                rw_paths=(),
                max_output_bytes=4096,
            )._collect(None, None)
    except (OSError, SandboxUnavailable) as exc:
        return SandboxProbe(False, f"cannot start bubblewrap: {exc}. {_FIX}", mode, version)
    if not result.ok:
        detail = _some_lines(result.stderr or result.stdout, 3) or f"exit {result.returncode}"
        return SandboxProbe(
            False, f"bubblewrap cannot create its namespaces here: {detail}. {_FIX}", mode, version
        )
    if result.stdout.strip() != str(SANDBOX_UID):
        return SandboxProbe(
            False,
            f"the sandboxed probe ran as uid {result.stdout.strip()!r}, not {SANDBOX_UID}",
            mode,
            version,
        )
    return SandboxProbe(True, "", mode, version)


def require_sandbox() -> None:
    """Raise :class:`SandboxUnavailable` (with the reason and the fix) unless the sandbox works."""
    p = probe()
    if not p.ok:
        raise SandboxUnavailable(
            f"untrusted code cannot run: the sandbox is unavailable: {p.reason}"
        )


# --------------------------------------------------------------------------------------------
# Running


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
    max_processes: int = DEFAULT_MAX_PROCESSES,
    ro_paths: Sequence[str | os.PathLike[str]] = (),
    rw_paths: Sequence[str | os.PathLike[str]] = (),
) -> SandboxResult:
    """Run ``argv`` in the sandbox with ``cwd`` as its only writable directory.

    Never raises for the child's failures (they come back in the result); raises
    :class:`SandboxUnavailable` when the sandbox cannot be set up, and ``ValueError`` for a
    ``cwd`` that is not a work directory from :func:`sandbox_tempdir`.

    ``memory_mb`` bounds the address space (RLIMIT_AS); with ``allow_gpu`` it bounds the data
    segment instead, because the CUDA driver maps huge virtual ranges. ``cpu_s`` defaults to
    twice the wall timeout (a parallel child burns CPU on several cores). ``env`` adds variables
    to the scrubbed environment. ``ro_paths`` are extra host directories or files shown
    read-only at their own path (e.g. include directories the user gave). ``rw_paths`` are
    existing host directories shown read-write at their own path: a tenant's numba cache, given
    only to the runs of that tenant's translator-written ports. ``isolate_network`` must stay
    True: there is no networked mode.
    """
    started = start_sandboxed(
        argv,
        cwd=cwd,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        env=env,
        input_later=stdin is not None,
        allow_gpu=allow_gpu,
        cpu_s=cpu_s,
        isolate_network=isolate_network,
        max_output_bytes=max_output_bytes,
        max_file_mb=max_file_mb,
        max_open_files=max_open_files,
        max_processes=max_processes,
        ro_paths=ro_paths,
        rw_paths=rw_paths,
    )
    return started.finish(stdin)


def start_sandboxed(
    argv: list[str],
    *,
    cwd: str | os.PathLike[str],
    timeout_s: float,
    memory_mb: int,
    env: Mapping[str, str] | None = None,
    input_later: bool = False,
    allow_gpu: bool = False,
    cpu_s: float | None = None,
    isolate_network: bool = True,
    max_output_bytes: int = DEFAULT_OUTPUT_CAP,
    max_file_mb: int = DEFAULT_FILE_MB,
    max_open_files: int = 256,
    max_processes: int = DEFAULT_MAX_PROCESSES,
    ro_paths: Sequence[str | os.PathLike[str]] = (),
    rw_paths: Sequence[str | os.PathLike[str]] = (),
) -> SandboxProcess:
    """Start ``argv`` in the sandbox now and collect it later (:meth:`SandboxProcess.finish`).

    The same sandbox as :func:`run_sandboxed` (which is ``start_sandboxed(...).finish(stdin)``),
    for a child that can do useful work before its input exists: the port's harness imports
    numba while the translator is still parsing. ``input_later`` gives the child a stdin pipe
    that :meth:`~SandboxProcess.finish` writes and closes (otherwise stdin is ``/dev/null``).
    ``timeout_s`` counts from now; nothing enforces it until ``finish`` is called, so the caller
    must call ``finish`` or ``kill`` (use it as a context manager).

    bubblewrap's ``--die-with-parent`` follows the *thread* that started the child: start it on
    a thread that lives until the child is finished.
    """
    if not isolate_network:
        raise ValueError("the sandbox has no network mode; isolate_network must be True")
    workdir = os.path.realpath(os.fspath(cwd))
    if not _inside_root(workdir) or workdir == str(sandbox_root()) or not os.path.isdir(workdir):
        raise ValueError(
            f"run_sandboxed needs a work directory from sandbox_tempdir(), not {os.fspath(cwd)}"
        )
    require_sandbox()
    cpu_limit = math.ceil(cpu_s if cpu_s is not None else max(2 * timeout_s, timeout_s + 5))
    limits = _limit_args(
        cpu_s=max(1, cpu_limit),
        memory_bytes=memory_mb * 1024 * 1024,
        use_data_limit=allow_gpu,
        fsize=max_file_mb * 1024 * 1024,
        nofile=max_open_files,
        nproc=max_processes,
    )
    child_env = scrubbed_env(home=workdir, extra=env, allow_gpu=allow_gpu)
    argv = [str(a) for a in argv]
    program = _resolve_program(argv[0] if argv else "", workdir, ro_paths)
    if program is None:
        return SandboxProcess.already_done(
            SandboxResult(
                127,
                "",
                f"sandbox: cannot execute {argv[0] if argv else '(nothing)'}: not found "
                "inside the sandbox\n",
                False,
            )
        )
    return _start(
        [program, *argv[1:]],
        cwd=workdir,
        timeout_s=timeout_s,
        limits=limits,
        env=child_env,
        input_later=input_later,
        allow_gpu=allow_gpu,
        ro_paths=[os.fspath(p) for p in ro_paths],
        rw_paths=[os.path.realpath(os.fspath(p)) for p in rw_paths],
        max_output_bytes=max_output_bytes,
    )


def _resolve_program(name: str, workdir: str, ro_paths: Sequence) -> str | None:
    """The program's path as the sandbox sees it, or None when the sandbox would not find it."""
    if not name:
        return None
    if "/" not in name:
        return shutil.which(name, path=_SANDBOX_PATH)
    path = name if os.path.isabs(name) else os.path.join(workdir, name)
    visible = ["/usr", "/bin", "/sbin", "/lib", "/lib64", workdir]
    visible += [dest for _, dest in _python_binds()]
    visible += [os.path.abspath(os.fspath(p)) for p in ro_paths]
    if any(_is_under(os.path.abspath(path), v) for v in visible) and os.path.exists(path):
        return name
    return None


def _start(
    argv: list[str],
    *,
    cwd: str,
    timeout_s: float,
    limits: Sequence[str],
    env: Mapping[str, str],
    input_later: bool,
    allow_gpu: bool,
    ro_paths: Sequence[str],
    rw_paths: Sequence[str],
    max_output_bytes: int,
) -> SandboxProcess:
    if _privileged():
        for top in (cwd, *rw_paths):
            _hand_to_sandbox_user(top)
    program = seccomp_filter()
    seccomp_r = None
    if program is not None:
        seccomp_r, seccomp_w = os.pipe()
        os.write(seccomp_w, program)  # a few hundred bytes: far below the pipe's buffer
        os.close(seccomp_w)
    cmd = bwrap_command(
        argv,
        workdir=cwd,
        limits=limits,
        allow_gpu=allow_gpu,
        ro_paths=ro_paths,
        rw_paths=rw_paths,
        seccomp_fd=seccomp_r,
    )
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE if input_later else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # our own process group: a timeout kills bwrap and all
            close_fds=True,
            pass_fds=(seccomp_r,) if seccomp_r is not None else (),
        )
    except FileNotFoundError as exc:
        raise SandboxUnavailable(f"bubblewrap is not installed ({exc}). {_FIX}") from exc
    finally:
        if seccomp_r is not None:
            os.close(seccomp_r)
    return SandboxProcess(proc, start=start, timeout_s=timeout_s, max_output_bytes=max_output_bytes)


class SandboxProcess:
    """A child started by :func:`start_sandboxed`; :meth:`finish` collects it, :meth:`kill`
    ends it unused. Either happens once; leaving the ``with`` block kills what was not finished.
    """

    def __init__(
        self,
        proc: subprocess.Popen | None,
        *,
        start: float,
        timeout_s: float,
        max_output_bytes: int = DEFAULT_OUTPUT_CAP,
        result: SandboxResult | None = None,
    ):
        self._proc = proc
        self._start = start
        self._deadline = start + timeout_s
        self._cap = max_output_bytes
        self._result = result
        self._lock = threading.Lock()

    @classmethod
    def already_done(cls, result: SandboxResult) -> SandboxProcess:
        return cls(None, start=time.monotonic(), timeout_s=0.0, result=result)

    @property
    def started_at(self) -> float:
        """``time.monotonic()`` when the child was started."""
        return self._start

    @property
    def running(self) -> bool:
        """The child is alive and has been neither finished nor killed."""
        with self._lock:
            return self._result is None and self._proc is not None and self._proc.poll() is None

    def finish(
        self, stdin: str | bytes | None = None, *, timeout_s: float | None = None
    ) -> SandboxResult:
        """Send ``stdin`` and EOF, wait for the child to end and return what it did.

        ``timeout_s`` counts from now and can only bring the deadline set at the start closer.
        Raises :class:`SandboxUnavailable` when bubblewrap itself failed (see
        :func:`run_sandboxed`).
        """
        result = self._collect(stdin, timeout_s)
        if result.returncode == 1 and result.stderr.startswith("bwrap:"):
            # bwrap itself failed (or the child imitates it): re-check the sandbox before
            # trusting either reading. A child cannot fake a failed probe.
            again = probe(force=True)
            if not again.ok:
                raise SandboxUnavailable(
                    "untrusted code cannot run: the sandbox is unavailable: " + again.reason
                )
        return result

    def kill(self) -> None:
        """End the child (and everything it started) without waiting for it to finish."""
        with self._lock:
            if self._result is not None or self._proc is None:
                return
            _kill_group(self._proc)
            self._proc.wait()
            self._close_pipes()
            self._result = SandboxResult(-signal.SIGKILL, "", "", False, self._elapsed())

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    def _elapsed(self) -> float:
        return time.monotonic() - self._start

    def _close_pipes(self) -> None:
        assert self._proc is not None
        for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def _collect(self, stdin: str | bytes | None, timeout_s: float | None) -> SandboxResult:
        with self._lock:
            if self._result is not None:
                return self._result
            proc = self._proc
            assert proc is not None
            if timeout_s is not None:
                self._deadline = min(self._deadline, time.monotonic() + timeout_s)
            deadline = self._deadline
            if proc.stdin is not None:
                data = stdin.encode() if isinstance(stdin, str) else stdin or b""
                threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True).start()
            # Both pipes are drained here, in this thread (no reader threads to start and
            # schedule): they reach EOF when every process of the sandbox has gone, which its
            # pid namespace ensures.
            out, err = _Capped(self._cap), _Capped(self._cap)
            timed_out = not _drain({proc.stdout: out, proc.stderr: err}, deadline)
            if not timed_out:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
            if timed_out:
                # Killing bwrap kills the sandbox's pid 1 (--die-with-parent), which ends its
                # namespace.
                _kill_group(proc)
                proc.wait()
            _kill_group(proc)
            self._close_pipes()
            self._result = SandboxResult(
                returncode=_signal_status(proc.returncode),
                stdout=out.text(),
                stderr=err.text(),
                timed_out=timed_out,
                duration_s=self._elapsed(),
                output_truncated=out.truncated or err.truncated,
            )
            return self._result


def _drain(pipes: dict, deadline: float) -> bool:
    """Read every pipe to EOF into its :class:`_Capped`; False when ``deadline`` passes first."""
    with selectors.DefaultSelector() as sel:
        for pipe, sink in pipes.items():
            sel.register(pipe, selectors.EVENT_READ, sink)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.add(chunk)
                else:
                    sel.unregister(key.fileobj)
    return True


def _signal_status(code: int) -> int:
    """bwrap's pid 1 reports a child killed by signal N as 128 + N: give it back as -N, as
    subprocess does (a program that really exits with 129..159 is read as a signal)."""
    if 128 < code < 160:
        return -(code - 128)
    return code


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _feed(pipe, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.write(data)
        pipe.close()


class _Capped:
    """Keeps the first ``cap`` bytes of a stream (so a chatty child cannot fill memory)."""

    def __init__(self, cap: int):
        self._cap = cap
        self._chunks: list[bytes] = []
        self._kept = 0
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self._cap - self._kept
        if room > 0:
            self._chunks.append(chunk[:room])
            self._kept += min(room, len(chunk))
        if len(chunk) > max(room, 0):
            self.truncated = True

    def text(self) -> str:
        text = b"".join(self._chunks).decode("utf-8", errors="replace")
        return text + ("\n[output truncated]" if self.truncated else "")
