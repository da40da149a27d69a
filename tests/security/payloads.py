"""Attack payloads and the outside world they aim at, shared by the security tests.

A :class:`Targets` is what an attacker would go for on the host: the server's process (this
pytest process), its state directory with SECRET_KEY, the database socket and port, a canary
process and a canary file outside, another run's work directory, the network. The payloads
probe each and print one report line, ``FSP-REPORT k=v;k=v...``, so a test can assert on what the
sandboxed code could and could not do. Every probe prints ``no`` when the attack failed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPORT = "FSP-REPORT"


@dataclass
class Targets:
    server_pid: int
    secret_file: str
    state_dir: str
    db_socket: str
    db_port: int
    canary_pid: int
    canary_file: str
    canary_text: str
    other_run: str
    project_file: str
    listen_port: int
    sleep_token: str  # ``sleep <token>``: a process that must not outlive the run


def parse_report(text: str) -> dict[str, str]:
    """The ``FSP-REPORT`` line in ``text`` as a dict (AssertionError when there is none)."""
    found = re.findall(rf"{REPORT} (uid=\S+)", text)
    assert found, f"no attack report in: {text[-2000:]}"
    return dict(item.split("=", 1) for item in found[-1].split(";") if "=" in item)


def shell_probe(t: Targets) -> str:
    """One shell command line that probes every target and prints the report to stderr."""
    checks = {
        "uid": "id -u",
        "proc": f"test -e /proc/{t.server_pid} && echo yes || echo no",
        "environ": f"cat /proc/{t.server_pid}/environ >/dev/null 2>&1 && echo yes || echo no",
        "secret": f"cat {t.secret_file} >/dev/null 2>&1 && echo yes || echo no",
        "state": f"ls {t.state_dir} >/dev/null 2>&1 && echo yes || echo no",
        "dbsock": f"test -e {t.db_socket} && echo yes || echo no",
        "shadow": "cat /etc/shadow >/dev/null 2>&1 && echo yes || echo no",
        "other": f"ls {t.other_run} >/dev/null 2>&1 && echo yes || echo no",
        "kill": f"kill -9 {t.canary_pid} >/dev/null 2>&1 && echo yes || echo no",
        "canary": f"echo pwned > {t.canary_file} 2>/dev/null && echo yes || echo no",
        "source": f"echo pwned >> {t.project_file} 2>/dev/null && echo yes || echo no",
        "ifaces": "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,",
    }
    parts = [f"{k}=$({cmd})" for k, cmd in checks.items()]
    report = ";".join(parts)
    return f'setsid sleep {t.sleep_token} >/dev/null 2>&1 & echo "{REPORT} {report}" 1>&2'


def fortran_bind_c_kernel(t: Targets, name: str = "evil") -> str:
    """A subroutine reaching libc through ``bind(C)`` (system, kill, open): the scanner refuses
    it; these tests switch the scanner off to show the sandbox holds on its own. The GOTO makes
    it a kernel the translator does not support, so translate hands it to the LLM fallback,
    whose verification runs this original."""
    command = shell_probe(t).replace('"', '""')
    return f"""subroutine {name}(n, x)
  use iso_c_binding
  implicit none
  integer, intent(in) :: n
  real(8), intent(inout) :: x(n)
  interface
    function c_system(cmd) bind(C, name="system") result(rc)
      import :: c_char, c_int
      character(kind=c_char), dimension(*) :: cmd
      integer(c_int) :: rc
    end function
    function c_kill(pid, sig) bind(C, name="kill") result(rc)
      import :: c_int
      integer(c_int), value :: pid, sig
      integer(c_int) :: rc
    end function
    function c_open(path, flags) bind(C, name="open") result(fd)
      import :: c_char, c_int
      character(kind=c_char), dimension(*) :: path
      integer(c_int), value :: flags
      integer(c_int) :: fd
    end function
    function c_getuid() bind(C, name="getuid") result(uid)
      import :: c_int
      integer(c_int) :: uid
    end function
  end interface
  integer :: i
  integer(c_int) :: rc, fd_secret, fd_source, killed
  fd_secret = c_open("{t.secret_file}" // c_null_char, 0)
  fd_source = c_open("{t.project_file}" // c_null_char, 1)
  killed = c_kill(int({t.canary_pid}, c_int), 9_c_int)
  write (0, '(a,i0,a,i0,a,i0,a,i0)') "FSP-LIBC getuid=", c_getuid(), ";open_secret=", &
    fd_secret, ";open_source=", fd_source, ";kill=", killed
  rc = c_system("{command}" // c_null_char)
  do i = 1, n
    if (x(i) < 0.75d0) goto 10
    x(i) = 2.0d0 * x(i)
10  continue
  end do
  stop 3
end subroutine {name}
"""


def python_probe(t: Targets) -> str:
    """A Python port (what an LLM answer could be) that attacks at import time and reports in the
    exception it raises: what the generated-code path would run if the answer check missed it."""
    cfg = json.dumps(asdict(t))
    return f'''import json, os, socket, subprocess
_t = json.loads({cfg!r})
_r = {{}}
def _try(key, fn):
    try:
        fn()
        _r[key] = "yes"
    except Exception as exc:
        _r[key] = "no"
_r["uid"] = str(os.getuid())
_r["proc"] = "yes" if os.path.exists("/proc/%d" % _t["server_pid"]) else "no"
_try("environ", lambda: open("/proc/%d/environ" % _t["server_pid"], "rb").read())
_try("secret", lambda: open(_t["secret_file"]).read())
_try("state", lambda: os.listdir(_t["state_dir"]))
def _unix():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(_t["db_socket"])
_try("dbsock", _unix)
_try("dbtcp", lambda: socket.create_connection(("127.0.0.1", _t["db_port"]), timeout=2))
_try("net", lambda: socket.create_connection(("127.0.0.1", _t["listen_port"]), timeout=2))
_try("outside", lambda: socket.create_connection(("192.0.2.1", 80), timeout=2))
_try("kill", lambda: os.kill(_t["canary_pid"], 9))
_try("canary", lambda: open(_t["canary_file"], "w").write("pwned"))
_try("source", lambda: open(_t["project_file"], "a").write("pwned"))
_try("other", lambda: os.listdir(_t["other_run"]))
_try("shadow", lambda: open("/etc/shadow").read())
subprocess.Popen(["setsid", "sleep", _t["sleep_token"]])
raise RuntimeError("{REPORT} " + ";".join("%s=%s" % kv for kv in _r.items()))

def clamp_goto(n, x):
    pass
'''


def processes_running(cmdline: str) -> list[int]:
    """Host processes whose command line is exactly ``cmdline`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if args == cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def none_left(cmdline: str, wait_s: float = 5) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not processes_running(cmdline):
            return True
        time.sleep(0.05)
    return False


class Outside:
    """The host side of an attack: canaries, a listening port, a fake state dir and DB socket.

    ``state_dir``/``secret_file``/``db_socket`` default to a private stand-in; the API tests
    point them at the real embedded database and SECRET_KEY.
    """

    def __init__(
        self,
        tmp: Path,
        *,
        state_dir: str | None = None,
        db_socket: str | None = None,
        db_port: int | None = None,
        secret_file: str | None = None,
    ) -> None:
        from kernels.engine import sandbox

        self._sandbox = sandbox
        self.tmp = tmp
        if state_dir is None:
            home = tmp / "state"
            home.mkdir()
            (home / "secret_key").write_text("the-real-secret-key")
            state_dir, secret_file = str(home), str(home / "secret_key")
        self.state_dir = state_dir
        self.secret_file = secret_file or str(Path(state_dir) / "secret_key")
        self.unix_server = None
        if db_socket is None:
            db_socket = str(tmp / ".s.PGSQL.5432")
            self.unix_server = socket.socket(socket.AF_UNIX)
            self.unix_server.bind(db_socket)
            self.unix_server.listen(1)
        self.db_socket = db_socket
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.db_port = db_port or self.listener.getsockname()[1]
        self.canary_file = tmp / "canary.txt"
        self.canary_text = "untouched"
        self.canary_file.write_text(self.canary_text)
        self.canary = subprocess.Popen(["sleep", "600"])
        self._other = sandbox.sandbox_tempdir(prefix="other-tenant-")
        self.other_run = self._other.__enter__()
        (self.other_run / "tenant_b_source.f90").write_text("tenant B's secret kernel")
        self.project_file = str(Path(sandbox.__file__).resolve().parents[2] / "pyproject.toml")
        self.project_before = Path(self.project_file).read_bytes()
        self.sleep_token = f"{os.getpid() % 1000 + 1000}.{time.time_ns() % 10**6}"

    def targets(self) -> Targets:
        return Targets(
            server_pid=os.getpid(),
            secret_file=self.secret_file,
            state_dir=self.state_dir,
            db_socket=self.db_socket,
            db_port=self.db_port,
            canary_pid=self.canary.pid,
            canary_file=str(self.canary_file),
            canary_text=self.canary_text,
            other_run=str(self.other_run),
            project_file=self.project_file,
            listen_port=self.listener.getsockname()[1],
            sleep_token=self.sleep_token,
        )

    def assert_untouched(self) -> None:
        """Everything outside is as it was: canary alive, files unchanged, no survivor."""
        assert self.canary.poll() is None, "the canary process outside was killed"
        assert self.canary_file.read_text() == self.canary_text
        assert Path(self.project_file).read_bytes() == self.project_before
        assert (self.other_run / "tenant_b_source.f90").exists()
        assert none_left(f"sleep {self.sleep_token}"), "a process started inside outlived the run"

    def close(self) -> None:
        self.canary.kill()
        self.canary.wait()
        self.listener.close()
        if self.unix_server is not None:
            self.unix_server.close()
        self._other.__exit__(None, None, None)
        for pid in processes_running(f"sleep {self.sleep_token}"):
            os.kill(pid, 9)  # only if a test failed: the survivor must not outlive the suite


def assert_report_contained(report: dict[str, str]) -> None:
    """Every attack in an FSP-REPORT failed."""
    assert report["uid"] not in ("0", ""), report
    assert report["uid"] == "65534", report
    # "source" is judged on the host (Outside.assert_untouched) when the server runs as root;
    # as non-root the empty mount-point directories bwrap makes inside belong to the sandbox
    # user, so a file may appear there, in the sandbox's own tmpfs, with the project untouched.
    keys = ["source"] if os.geteuid() == 0 else []
    for key in keys + [
        "proc",
        "environ",
        "secret",
        "state",
        "dbsock",
        "dbtcp",
        "net",
        "outside",
        "shadow",
        "other",
        "kill",
        "canary",
    ]:
        if key in report:
            assert report[key] == "no", f"{key}: the attack worked ({report})"
    if "ifaces" in report:
        assert report["ifaces"].strip(",") in ("", "lo"), report
