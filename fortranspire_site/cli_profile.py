"""CLI command ``profile``: static cost model, hotspot ranking, optional measurement and plot.

``fortranspire profile FILE [--measure] [--size N=V]... [--json] [--plot PATH]``
runs on the engine alone (no Django, no database). Without ``--size``, ``--measure`` picks per
kernel sizes whose working set exceeds the last-level cache, within the sandbox's byte cap
(``FORTRANSPIRE_MAX_RUN_BYTES``), and prints them with the timings. Exit codes follow
``translate``: 0 when the profile was produced (and every requested measurement ran), 1 when a
measured variant failed, no kernel was found or the engine hit an internal error, 2 for usage
errors, unreadable files, parse errors and forbidden statements.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``profile``; sets ``handler`` via set_defaults."""
    p = sub.add_parser(
        "profile",
        help="rank the kernels of a Fortran file by estimated cost; optionally time them",
        description=(
            "Static cost model per kernel (trip count, flops, bytes, arithmetic intensity, "
            "parallelism), ranked by estimated cost. --measure probes the machine (STREAM "
            "copy/triad, FMA peak on 1 and all threads) and times gfortran -O3 -march=native "
            "(with -fopenmp too when the original has OpenMP directives), numba serial and "
            "prange at 1..N threads (and numba.cuda on a GPU), at sizes past the last-level "
            "cache unless --size is given."
        ),
    )
    p.add_argument("file", help="Fortran source file (.f90/.f/.F90)")
    p.add_argument("--measure", action="store_true", help="time the kernels (sandboxed)")
    p.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value of a size argument (repeatable), e.g. --size n=512",
    )
    p.add_argument(
        "--target",
        choices=("cpu", "gpu"),
        default="cpu",
        help="gpu: add each kernel's modeled GPU traffic and launches per time step (gpu_model)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--plot", metavar="PATH", help="write a roofline + timings chart (PNG)")
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="minimum timed calls per variant (default 5); more are taken until the median "
        "settles or the time limit is spent",
    )

    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="time limit in seconds for all measurement steps together (default 300)",
    )
    p.set_defaults(handler=handle_profile)


def parse_sizes(items: list[str]) -> dict[str, int]:
    """``["n=64", "m=32"]`` -> ``{"n": 64, "m": 32}``; raises ValueError on malformed items."""
    from fortranspire_site.errors import ValidationFailed
    from kernels.inputs import sizes_parse

    try:
        return sizes_parse(items) or {}
    except ValidationFailed as exc:
        raise ValueError(f"--size: {exc.message}") from None


def handle_profile(args: argparse.Namespace) -> int:
    from kernels.engine.profile import profile_source
    from kernels.engine.report import EngineError

    try:
        sizes = parse_sizes(args.size)
    except ValueError as exc:
        print(f"fortranspire: error: {exc}", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print("fortranspire: error: --repeats must be at least 1", file=sys.stderr)
        return 2

    path = Path(args.file)
    try:
        source = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        print(f"fortranspire: error: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2

    with _terminal_progress(enabled=sys.stderr.isatty()) as progress:
        try:
            result = profile_source(
                source,
                filename=path.name,
                sizes=sizes or None,
                measure=args.measure,
                repeats=args.repeats,
                progress=progress,
                timeout_s=args.timeout,
                target=args.target,
            )
        except EngineError as exc:
            # Same shape as translate: diagnostics on stderr, an ``error`` object in the JSON.
            for d in exc.diagnostics or [None]:
                line, col = (d.line, d.column) if d is not None else (1, 1)
                msg = d.message if d is not None else exc.message
                print(f"{path}:{line}:{col}: {msg}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": args.file, "kernels": [], "error": exc.to_dict()}))
            return 2
        except Exception as exc:  # an engine bug must still end in a message, not a traceback
            message = f"internal error: {type(exc).__name__}: {exc}"
            print(f"fortranspire: error: {args.file}: {message}", file=sys.stderr)
            if args.json:
                error = {"error": "InternalError", "message": message, "diagnostics": []}
                print(json.dumps({"file": args.file, "kernels": [], "error": error}))
            return 1

    data = result.to_dict()
    if args.plot:
        from kernels.engine.plot import write_plot

        try:
            write_plot(result, args.plot)
        except OSError as exc:
            print(f"fortranspire: error: cannot write {args.plot}: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(data, indent=2, default=_json_default))
    else:
        _print_table(data)
        if args.plot:
            print(f"chart written to {args.plot}")
    if not data["kernels"]:
        print(f"fortranspire: error: {args.file}: no kernel found", file=sys.stderr)
        return 1
    failed = [
        (k["name"], v)
        for k in data["kernels"]
        for v, t in (k.get("measured") or {}).items()
        if t.get("status") == "failed"
    ]
    return 1 if failed else 0


def _json_default(value: Any) -> Any:
    # numpy scalars can slip into sizes and timings; JSON gets their plain value.
    return value.item() if hasattr(value, "item") else str(value)


class _terminal_progress:
    """A rich progress bar on stderr that doubles as the engine's ProgressCallback."""

    def __init__(self, *, enabled: bool, console: Any = None):
        self.enabled = enabled
        self._console = console
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _terminal_progress | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<8}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self._console or Console(stderr=True),
            transient=True,
        )
        self._progress.__enter__()
        return self

    def __call__(self, stage: str, done: int, total: int, message: str) -> None:
        task = self._tasks.get(stage)
        if task is None:
            task = self._progress.add_task(message, total=max(total, 1), stage=stage)
            self._tasks[stage] = task
        self._progress.update(task, completed=done, total=max(total, 1), description=message)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}{unit}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:.3g}{unit}"
    return f"{value}{unit}"


def _print_table(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    table = Table(title=f"{data['file']}: kernels by estimated cost")
    columns = ("#", "kernel", "line", "trip count", "flop/it", "flops", "bytes", "flop/byte")
    for col in (*columns, "parallel", "share"):
        table.add_column(col, justify="left" if col in ("kernel", "parallel") else "right")
    for k in data["kernels"]:
        table.add_row(
            str(k["rank"]),
            k["name"],
            str(k["line"]),
            _fmt(k["trip_count"]),
            _fmt(k["flops_per_iter"]),
            _fmt(k["flops"]),
            _fmt(k["bytes"]),
            _fmt(k["intensity"]),
            "yes" if k["parallel"] else "no",
            f"{100 * k['share']:.1f}%",
        )
    console.print(table)
    for k in data["kernels"]:
        console.print(f"[bold]{k['name']}[/bold] (sizes {k['sizes']})", highlight=False)
        console.print(f"  trip count = {k['trip_count_symbolic']}", highlight=False)
        console.print(f"  bytes      = {k.get('bytes_symbolic', '')}", highlight=False)
        console.print(f"  {k['reason']}", highlight=False)
        if len(k.get("nests", [])) > 1:
            for n in sorted(k["nests"], key=lambda n: -n.get("share", 0.0)):
                console.print(
                    f"    nest at line {n['line']:<5} {100 * n.get('share', 0.0):5.1f}%  "
                    f"{n['trip_count_symbolic']} = {_fmt(n['trip_count'])} points, "
                    f"{n['flops_per_iter']} flop + {_fmt(n['bytes_per_iter'])} B per point"
                    + ("" if n["parallel"] else "  (sequential)"),
                    highlight=False,
                )
        for note in k.get("notes", []):
            console.print(f"  note: {note}", highlight=False)
        if k.get("gpu_model") is not None:
            console.print(f"  {_gpu_model_text(k['gpu_model'])}", highlight=False)
    _print_measured(console, data)


def _gpu_model_text(model: dict[str, Any]) -> str:
    """One line of the GPU model (profile --target gpu)."""
    if model.get("bytes_per_step") is None:
        return f"gpu model: {model.get('reason', 'not available')}"
    fraction = model.get("predicted_copy_bandwidth_fraction") or 0.0
    return (
        f"gpu model: {_fmt(model['bytes_per_step'])} B per step "
        f"(minimum {_fmt(model['min_bytes_per_step'])}, ratio {model['bytes_ratio']}), "
        f"{model['launches_per_step']} launch(es) per step, host launch cost "
        f"{1e6 * model['host_launch_cost_per_step_s']:.0f} us ({model['launch_cost_source']}), "
        f"predicted {100 * fraction:.0f}% of copy bandwidth"
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.3g} ms"


def _print_measured(console: Any, data: dict[str, Any]) -> None:
    from rich.table import Table

    machine = data.get("machine") or {}
    stream = data.get("stream") or {}
    if not data.get("measured"):
        return
    caches = ", ".join(
        f"L{c['level']} {c['type'].lower()} {c['size_kib']} KiB" for c in machine.get("caches", [])
    )
    console.print(
        f"machine: {machine.get('cpu')}, {machine.get('cores')} cores; caches: {caches or '?'}",
        highlight=False,
    )
    if stream.get("error"):
        console.print(f"machine probe failed: {stream['error']}", highlight=False)
    elif stream:
        console.print(
            f"measured ceilings: STREAM triad {stream.get('triad_serial_gbs')} GB/s (1 thread), "
            f"{stream.get('triad_parallel_gbs')} GB/s ({stream.get('threads')} threads); "
            f"FMA peak {stream.get('fma_serial_gflops')} GFLOP/s (1 thread), "
            f"{stream.get('fma_parallel_gflops')} GFLOP/s ({stream.get('threads')} threads); "
            f"STREAM arrays {stream.get('working_set_mib')} MiB"
            + ("" if stream.get("exceeds_llc") else " (inside the last-level cache)"),
            highlight=False,
        )
        for w in stream.get("warnings", []):
            console.print(f"warning: {w}", highlight=False)
    sizes = Table(title="sizes timed")
    for col in ("kernel", "sizes", "working set", "of LLC", "OpenMP in original", "notes"):
        sizes.add_column(col)
    for k in data["kernels"]:
        ms = k.get("measure_sizes") or {}
        omp = k.get("openmp") or {}
        llc = machine.get("llc_mib")
        ws = ms.get("working_set_mib")
        sizes.add_row(
            k["name"],
            ", ".join(f"{n}={v}" for n, v in (ms.get("sizes") or {}).items()),
            f"{ws} MiB" if ws is not None else "-",
            f"{ws / llc:.2g}x" if ws is not None and llc else "-",
            f"yes (line {', '.join(map(str, omp['lines']))})" if omp.get("directives") else "no",
            f"{ms.get('source', '')}; " + "; ".join(ms.get("notes", [])),
        )
    console.print(sizes)
    timings = Table(
        title="measured: median of adaptive repeats, its 95% interval; spread = IQR/median"
    )
    for col in (
        "kernel",
        "variant",
        "thr",
        "median",
        "interval",
        "n",
        "spread",
        "GFLOP/s",
        "GB/s",
        "% STREAM",
        "vs gfortran",
        "compared with",
    ):
        timings.add_column(col, overflow="fold")
    warnings: list[str] = []
    for k in data["kernels"]:
        for variant, t in (k.get("measured") or {}).items():
            if t.get("status") not in ("ok", "model"):
                warnings.append(f"{k['name']} {variant}: {t.get('status')}: {t.get('message')}")
                continue
            ok = t.get("status") == "ok"
            timings.add_row(
                k["name"],
                variant + ("" if ok else " (model)"),
                _fmt(t.get("threads")),
                _ms(t.get("median_s")),
                f"{_ms(t.get('ci_low_s'))}..{_ms(t.get('ci_high_s'))}" if ok else "-",
                _fmt(t.get("repeats")) if ok else "-",
                _fmt(t.get("spread_pct"), "%"),
                _fmt(t.get("gflops")),
                _fmt(t.get("bandwidth_gbs")),
                _fmt(t.get("stream_pct"), "%"),
                _fmt(t.get("speedup_vs_gfortran"), "x"),
                t.get("compared_with", "") or t.get("message", ""),
            )
            warnings += [f"{k['name']} {variant}: {w}" for w in t.get("warnings") or []]
    console.print(timings)
    scaling = Table(title="thread scaling (speed-up and efficiency against 1 thread)")
    for col in ("kernel", "variant", "threads", "median", "speed-up", "efficiency", "vs -fopenmp"):
        scaling.add_column(col)
    rows = 0
    for k in data["kernels"]:
        for variant, t in (k.get("measured") or {}).items():
            for r in t.get("scaling") or []:
                rows += 1
                scaling.add_row(
                    k["name"],
                    variant,
                    str(r["threads"]),
                    _ms(r.get("median_s")),
                    _fmt(r.get("speedup"), "x"),
                    _fmt(r.get("efficiency")),
                    _fmt(r.get("vs_gfortran_omp"), "x"),
                )
    if rows:
        console.print(scaling)
    for w in warnings:
        console.print(f"- {w}", highlight=False)
