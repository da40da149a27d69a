"""CLI command ``doctor``: is this host fit to run untrusted Fortran? Checks the tools and the sandbox.

``fortranspire doctor [--json]`` reports gfortran's and bubblewrap's versions, whether the sandbox
can create its namespaces, and what code inside it actually sees: its uid, its capabilities,
its namespaces (compared with ours), the network (a port we listen on, an outside address),
``$FORTRANSPIRE_HOME``, the project source, ``/root``, ``/etc/shadow`` and this process in
``/proc``. Exit status 0 when every check passes, 1 otherwise. Runs without Django.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

# Runs inside the sandbox (python -I -c): reports what the sandboxed code can see and reach.
_INSIDE = r"""
import json, os, socket, sys
cfg = json.loads(sys.argv[1])
facts = {"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid()}
status = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    status[key] = value.strip()
facts["caps"] = {k: status.get(k) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")}
facts["no_new_privs"] = status.get("NoNewPrivs")
facts["seccomp"] = status.get("Seccomp")
facts["namespaces"] = {n: os.readlink("/proc/self/ns/" + n) for n in cfg["namespaces"]}
def connect(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((host, port))
        return "connected"
    except OSError as exc:
        return type(exc).__name__ + ": " + str(exc)
    finally:
        s.close()
facts["local_port"] = connect("127.0.0.1", cfg["port"])
facts["outside_address"] = connect("192.0.2.1", 80)
facts["interfaces"] = [ln.split(":")[0].strip() for ln in open("/proc/net/dev").readlines()[2:]]
facts["visible"] = {p: os.path.exists(p) for p in cfg["paths"]}
facts["host_pid_visible"] = os.path.exists("/proc/%d" % cfg["pid"])
print(json.dumps(facts))
"""

_NAMESPACES = ("user", "pid", "net", "ipc", "uts", "cgroup", "mnt")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``doctor``; sets ``handler`` via set_defaults."""
    p = sub.add_parser(
        "doctor",
        help="check gfortran, bubblewrap and the sandbox's isolation (non-zero exit on failure)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks()
    ok = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        print("all checks passed" if ok else "some checks FAILED: untrusted code will not run")
    return 0 if ok else 1


def _version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else None


def run_checks() -> list[Check]:
    from kernels.engine import sandbox

    checks: list[Check] = []
    gfortran = _version(["gfortran", "--version"])
    checks.append(
        Check(
            "gfortran",
            gfortran is not None,
            gfortran or "not installed: 'make system-deps' or 'apt-get install gfortran'",
        )
    )
    bwrap = _version([sandbox.BWRAP, "--version"])
    checks.append(
        Check(
            "bubblewrap",
            bwrap is not None,
            bwrap or "not installed: 'make system-deps' or 'apt-get install bubblewrap'",
        )
    )
    probe = sandbox.probe(force=True)
    checks.append(
        Check("namespaces", probe.ok, probe.mode if probe.ok else probe.reason or "failed")
    )
    if not probe.ok:
        return checks

    home = os.path.realpath(
        os.environ.get("FORTRANSPIRE_HOME") or os.path.join(os.getcwd(), ".fortranspire")
    )
    # The project's files (its directory may exist inside, empty, as a mount point for .venv).
    project = str(Path(sandbox.__file__).resolve())
    hidden = [
        home,
        project,
        "/root/.bash_history",
        "/etc/shadow",
        "/etc/passwd",
        "/home",
        "/var/run",
    ]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        with sandbox.sandbox_tempdir(prefix="doctor-") as work:
            cfg = {
                "namespaces": _NAMESPACES,
                "port": listener.getsockname()[1],
                "paths": hidden,
                "pid": os.getpid(),
            }
            inside = sandbox.run_sandboxed(
                [sys.executable, "-I", "-c", _INSIDE, json.dumps(cfg)],
                cwd=work,
                timeout_s=60,
                memory_mb=1024,
            )
            compile_check = _gfortran_inside(work) if gfortran else None
    finally:
        listener.close()
    if not inside.ok:
        checks.append(Check("inside", False, inside.describe_failure()))
        return checks
    facts = json.loads(inside.stdout.strip().splitlines()[-1])

    checks.append(
        Check(
            "uid inside",
            facts["uid"] != 0 and facts["euid"] != 0 and facts["uid"] == sandbox.SANDBOX_UID,
            f"uid {facts['uid']}, gid {facts['gid']}",
        )
    )
    caps = facts["caps"]
    no_caps = all(int(v or "0", 16) == 0 for v in caps.values())
    checks.append(
        Check(
            "capabilities",
            no_caps and facts["no_new_privs"] == "1",
            f"effective {caps['CapEff']}, bounding {caps['CapBnd']}, "
            f"no_new_privs {facts['no_new_privs']}",
        )
    )
    if sandbox.seccomp_filter() is not None:
        checks.append(
            Check(
                "seccomp filter",
                facts["seccomp"] == "2",
                "filtering (ptrace, bpf, io_uring, keyrings, mounts... refused)"
                if facts["seccomp"] == "2"
                else f"not loaded (Seccomp: {facts['seccomp']})",
            )
        )
    ours = {n: os.readlink(f"/proc/self/ns/{n}") for n in _NAMESPACES}
    shared = [n for n in _NAMESPACES if facts["namespaces"][n] == ours[n]]
    checks.append(
        Check(
            "own namespaces",
            not shared,
            "shares " + ", ".join(shared) + " with the host" if shared else ", ".join(_NAMESPACES),
        )
    )
    reached = [
        what
        for what, result in (
            ("127.0.0.1 (a port open outside)", facts["local_port"]),
            ("192.0.2.1:80", facts["outside_address"]),
        )
        if result == "connected"
    ]
    checks.append(
        Check(
            "network unreachable",
            not reached and facts["interfaces"] in ([], ["lo"]),
            "reached " + ", ".join(reached)
            if reached
            else f"interfaces {facts['interfaces']}; local port: {facts['local_port']}",
        )
    )
    visible = [p for p, seen in facts["visible"].items() if seen]
    checks.append(
        Check(
            "FORTRANSPIRE_HOME and host files invisible",
            not visible,
            "visible: " + ", ".join(visible) if visible else f"none of {', '.join(hidden)}",
        )
    )
    checks.append(
        Check(
            "host processes invisible",
            not facts["host_pid_visible"],
            f"/proc/{os.getpid()} (this process) "
            + ("is visible" if facts["host_pid_visible"] else "is not visible"),
        )
    )
    if compile_check is not None:
        checks.append(compile_check)
    return checks


def _gfortran_inside(work: Path) -> Check:
    """Compile and run a two-line program in the sandbox: the whole toolchain is visible there."""
    from kernels.engine import sandbox

    (work / "doctor.f90").write_text("program doctor\n  print '(a)', 'fortran ok'\nend program\n")
    built = sandbox.run_sandboxed(
        ["gfortran", "doctor.f90", "-o", "doctor"], cwd=work, timeout_s=60, memory_mb=2048
    )
    if not built.ok:
        return Check("gfortran inside", False, built.describe_failure())
    ran = sandbox.run_sandboxed(["./doctor"], cwd=work, timeout_s=20, memory_mb=256)
    return Check(
        "gfortran inside",
        ran.ok and ran.stdout.strip() == "fortran ok",
        "compiles and runs" if ran.ok else ran.describe_failure(),
    )
