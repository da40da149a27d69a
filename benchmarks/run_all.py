"""Run every benchmark in benchmarks/ (``make bench``); each writes its own benchmarks/results/*.json.

    .venv/bin/python benchmarks/run_all.py              # all of them
    .venv/bin/python benchmarks/run_all.py --quick      # pass --quick to those that accept it
    .venv/bin/python benchmarks/run_all.py translate_speed cpu_vs_gfortran   # a subset

A benchmark is any ``benchmarks/*.py`` (other than this file and ``_private`` helpers) that
defines a top-level ``main()``; that is checked on the source (``ast``), not by importing it. Each
one runs as its own subprocess, ``python benchmarks/NAME.py``, so a crash, a GPU that is missing
or an argv parser in one does not affect the others, and timings are not disturbed by what the
previous one left in memory. The summary goes to benchmarks/results/run_all.json.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
TIMEOUT_S = 3600


def discover() -> list[Path]:
    """Benchmark scripts that define ``main()``, in name order."""
    found = []
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.name == Path(__file__).name or path.name.startswith("_"):
            continue
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError:
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            found.append(path)
    return found


def _accepts_quick(path: Path) -> bool:
    return "--quick" in path.read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run every benchmark in benchmarks/")
    parser.add_argument("names", nargs="*", help="only these benchmarks (file stems)")
    parser.add_argument("--quick", action="store_true", help="pass --quick where supported")
    args = parser.parse_args(argv)

    scripts = discover()
    if args.names:
        unknown = set(args.names) - {p.stem for p in scripts}
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        scripts = [p for p in scripts if p.stem in args.names]

    rows = []
    for path in scripts:
        argv_ = [sys.executable, str(path)]
        if args.quick and _accepts_quick(path):
            argv_.append("--quick")
        print(f"== {path.stem}", flush=True)
        start = time.monotonic()
        try:
            done = subprocess.run(argv_, cwd=BENCH_DIR.parent, timeout=TIMEOUT_S)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = -1
        elapsed = time.monotonic() - start
        rows.append({"benchmark": path.stem, "exit_code": code, "seconds": round(elapsed, 2)})
        print(f"== {path.stem}: exit {code} in {elapsed:.1f} s\n", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "run_all.json").write_text(json.dumps({"quick": args.quick, "runs": rows}, indent=2))
    failed = [r["benchmark"] for r in rows if r["exit_code"] != 0]
    print("all benchmarks done" if not failed else f"failed or missed target: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
