"""The sandbox's own start-up overhead per run: bubblewrap vs a bare subprocess, same command.

    .venv/bin/python benchmarks/sandbox_overhead.py          # writes benchmarks/results/sandbox_overhead.json
    .venv/bin/python benchmarks/sandbox_overhead.py --quick  # 5 rounds instead of 20

Each round runs, interleaved (so load from other processes hits both alike):
- ``/usr/bin/true`` as a bare ``subprocess.run`` and through ``run_sandboxed`` (namespaces, mounts,
  uid switch, rlimits, chown of the work directory, pipes read to the end);
- ``python -I -c pass`` both ways, the smallest step a verification runs.

The overhead is the median of the sandboxed wall times minus the median of the bare ones, over
``ROUNDS`` rounds (20). Target: under 50 ms. The CPU time of the child processes is recorded too
(what the sandbox costs the machine; wall time on an oversubscribed machine is mostly waiting for
a core at each of the sandbox's process hand-offs), with the load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
ROUNDS = 20
TARGET_MS = 50.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _bare(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child processes)."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(argv, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def _sandboxed(argv: list[str], cwd: Path) -> tuple[float, float]:
    from kernels.engine.sandbox import run_sandboxed

    cpu0, t0 = _children_cpu(), time.perf_counter()
    res = run_sandboxed(argv, cwd=cwd, timeout_s=60, memory_mb=1024)
    elapsed = time.perf_counter() - t0
    if not res.ok:
        raise RuntimeError(f"sandboxed {argv} failed: {res.describe_failure()}")
    return elapsed, _children_cpu() - cpu0


def measure(rounds: int) -> dict:
    from kernels.engine import sandbox

    probe = sandbox.probe(force=True)
    if not probe.ok:
        raise SystemExit(f"the sandbox is unavailable here: {probe.reason}")
    commands = {"true": ["/usr/bin/true"], "python": [sys.executable, "-I", "-c", "pass"]}
    out: dict = {"commands": {}}
    with sandbox.sandbox_tempdir(prefix="bench-") as work:
        for argv in commands.values():  # warm the page cache for both
            _bare(argv, work)
            _sandboxed(argv, work)
        samples = {name: {"bare": [], "sandboxed": []} for name in commands}
        for _ in range(rounds):
            for name, argv in commands.items():
                samples[name]["bare"].append(_bare(argv, work))
                samples[name]["sandboxed"].append(_sandboxed(argv, work))
    for name, s in samples.items():
        bare = statistics.median(w for w, _ in s["bare"]) * 1000
        boxed = statistics.median(w for w, _ in s["sandboxed"]) * 1000
        bare_cpu = statistics.median(c for _, c in s["bare"]) * 1000
        boxed_cpu = statistics.median(c for _, c in s["sandboxed"]) * 1000
        out["commands"][name] = {
            "argv": commands[name],
            "bare_median_ms": round(bare, 2),
            "sandboxed_median_ms": round(boxed, 2),
            "overhead_ms": round(boxed - bare, 2),
            # CPU time the child processes used (bwrap, setpriv, prlimit and the command): what
            # the sandbox costs the machine, much less sensitive to load than wall time.
            "bare_cpu_median_ms": round(bare_cpu, 2),
            "sandboxed_cpu_median_ms": round(boxed_cpu, 2),
            "overhead_cpu_ms": round(boxed_cpu - bare_cpu, 2),
            "bare_ms": [round(w * 1000, 2) for w, _ in s["bare"]],
            "sandboxed_ms": [round(w * 1000, 2) for w, _ in s["sandboxed"]],
        }
    out["overhead_ms"] = out["commands"]["true"]["overhead_ms"]
    out["target_ms"] = TARGET_MS
    out["within_target"] = out["overhead_ms"] < TARGET_MS
    out["mode"] = probe.mode
    out["bwrap"] = probe.bwrap_version
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 20")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else ROUNDS
    load_start = os.getloadavg()
    result = measure(rounds)
    result.update(
        {
            "benchmark": "sandbox_overhead",
            "rounds": rounds,
            "statistic": "median",
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "command": "benchmarks/sandbox_overhead.py" + (" --quick" if args.quick else ""),
        }
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "sandbox_overhead-quick.json" if args.quick else "sandbox_overhead.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    for cmd, r in result["commands"].items():
        print(
            f"{cmd:>7}: bare {r['bare_median_ms']:.1f} ms, sandboxed {r['sandboxed_median_ms']:.1f}"
            f" ms, overhead {r['overhead_ms']:.1f} ms wall, {r['overhead_cpu_ms']:.1f} ms CPU"
            f" (median of {rounds})"
        )
    print(
        f"overhead {result['overhead_ms']:.1f} ms, target < {TARGET_MS:.0f} ms: "
        f"{'met' if result['within_target'] else 'NOT met'}; load {result['load_average_start']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
