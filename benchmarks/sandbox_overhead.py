"""The sandbox's own start-up overhead per run: bubblewrap vs a bare subprocess, same command.

    .venv/bin/python benchmarks/sandbox_overhead.py          # writes benchmarks/results/sandbox_overhead.json
    .venv/bin/python benchmarks/sandbox_overhead.py --quick  # 5 rounds instead of 20

Each round runs, interleaved (so load from other processes hits both alike):
- ``/usr/bin/true`` as a bare ``subprocess.run`` and through ``run_sandboxed`` (namespaces, mounts,
  uid switch, rlimits, chown of the work directory, pipes read to the end);
- ``python -I -c pass`` both ways, the smallest step a verification runs.

The overhead is the median of the sandboxed wall times minus the median of the bare ones, over
``ROUNDS`` rounds (20). Target: under 50 ms. The load average at start and end is recorded: on an
oversubscribed machine the wall time is mostly waiting for a core at each of the sandbox's process
hand-offs (bwrap, its pid 1, setpriv, the inner bwrap, prlimit), so the figure grows with the load.
(The children's CPU time is not reported: processes reaped inside the sandbox's pid namespace are
not all accounted to us, which makes it misleading.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def _bare(argv: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - t0


def _sandboxed(argv: list[str], cwd: Path) -> float:
    from kernels.engine.sandbox import run_sandboxed

    t0 = time.perf_counter()
    res = run_sandboxed(argv, cwd=cwd, timeout_s=60, memory_mb=1024)
    elapsed = time.perf_counter() - t0
    if not res.ok:
        raise RuntimeError(f"sandboxed {argv} failed: {res.describe_failure()}")
    return elapsed


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
        bare = statistics.median(s["bare"]) * 1000
        boxed = statistics.median(s["sandboxed"]) * 1000
        out["commands"][name] = {
            "argv": commands[name],
            "bare_median_ms": round(bare, 2),
            "sandboxed_median_ms": round(boxed, 2),
            "overhead_ms": round(boxed - bare, 2),
            "bare_ms": [round(x * 1000, 2) for x in s["bare"]],
            "sandboxed_ms": [round(x * 1000, 2) for x in s["sandboxed"]],
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
            f" ms, overhead {r['overhead_ms']:.1f} ms (median of {rounds})"
        )
    print(
        f"overhead {result['overhead_ms']:.1f} ms, target < {TARGET_MS:.0f} ms: "
        f"{'met' if result['within_target'] else 'NOT met'}; load {result['load_average_start']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
