"""CLI command ``translate``: runs the engine only (no Django, no database).

``fortranspire translate FILE [FILE ...] [-I DIR]... [-D NAME[=VALUE]]... [--target cpu|gpu]
[--kernel NAME] [--no-verify] [--size N=V]... [--seed S] [--json] [-o DIR]``

- All FILEs form one project: a module defined in any of them is visible to all, in any order.
  ``-I`` directories are searched by ``#include`` and ``include``; ``-D`` defines macros for the
  preprocessor. The files and directories are read here, once; the preprocessor runs in the
  sandbox on their text, so nothing else can be read. Each kernel's ``file`` is its FILE as given.

- ``--json`` prints exactly one JSON object, ``TranslationResult.to_dict()``:
  ``{"file", "target", "kernels": [...]}`` (on a parse/forbidden error: ``kernels`` is empty and
  an ``error`` object is added).
- ``-o DIR`` writes one ``<kernel>.py`` per translated kernel plus ``report.json``; files are
  written to a temporary directory first and moved into place, so DIR never holds half a result.
- Exit codes: 0 every kernel verified (or translated with ``--no-verify``), 1 otherwise,
  2 usage, missing file, parse or forbidden-statement errors (printed as ``FILE:LINE:COL: message``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_NOT_VERIFIED, EXIT_USAGE = 0, 1, 2


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``translate`` (``profile`` lives in cli_profile); sets ``handler`` via set_defaults."""
    p = sub.add_parser(
        "translate",
        help="port the kernels of a Fortran file to numba and verify them against gfortran",
        description="Port each kernel of FILE to numba (CPU) or numba.cuda (GPU) code and verify "
        "it against the original compiled with gfortran on the same random inputs.",
    )
    p.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        help="Fortran sources (.f90, .F90, .f, .F): all of them form one project",
    )
    p.add_argument(
        "-I",
        dest="include_dirs",
        metavar="DIR",
        action="append",
        default=[],
        help="directory searched by #include and include (repeatable)",
    )
    p.add_argument(
        "-D",
        dest="defines",
        metavar="NAME[=VALUE]",
        action="append",
        default=[],
        help="preprocessor macro (repeatable)",
    )
    p.add_argument("--target", choices=("cpu", "gpu"), default="cpu", help="code to generate")
    p.add_argument("--kernel", metavar="NAME", help="translate only this kernel")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the gfortran comparison (status 'translated')",
    )
    p.add_argument(
        "--size",
        metavar="NAME=VALUE",
        action="append",
        type=parse_size,
        default=[],
        help="value of an integer argument during verification (repeatable), e.g. --size n=37",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random verification inputs")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-o", "--output", metavar="DIR", help="write <kernel>.py files and report.json")
    p.set_defaults(handler=translate_command)


def parse_size(text: str) -> tuple[str, int | float]:
    """``n=37`` -> ('n', 37); a value with a point or exponent becomes a float (real scalars)."""
    from fortranspire_site.errors import ValidationFailed
    from kernels.inputs import size_item_parse

    try:
        return size_item_parse(text)
    except ValidationFailed as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def translate_command(args: argparse.Namespace) -> int:
    from kernels.engine.report import EngineError

    args.file = " ".join(args.files)
    for name in args.files:
        if not Path(name).is_file():
            _error(f"{name}: no such file")
            return EXIT_USAGE
    for name in args.include_dirs:
        if not Path(name).is_dir():
            _error(f"-I {name}: no such directory")
            return EXIT_USAGE

    from kernels.engine import translate_project
    from kernels.engine.project import parse_defines, project_from_paths

    try:
        project = project_from_paths(
            args.files, include_dirs=args.include_dirs, defines=parse_defines(args.defines)
        )
    except EngineError as exc:
        _error(exc.message)
        return EXIT_USAGE

    progress = None if args.json else _stderr_progress
    path = Path(args.files[0])
    try:
        result = translate_project(
            project,
            target=args.target,
            kernel=args.kernel,
            verify=not args.no_verify,
            sizes=dict(args.size) or None,
            seed=args.seed,
            progress=progress,
        )
    except EngineError as exc:
        _print_engine_error(args, getattr(exc, "file", None) or str(path), exc)
        return EXIT_USAGE
    except Exception as exc:  # an engine bug must still end in a message, not a traceback
        _error(f"{args.file}: internal error: {type(exc).__name__}: {exc}")
        if args.json:
            print(json.dumps(_error_payload(args, "InternalError", str(exc), [])))
        return EXIT_NOT_VERIFIED

    payload = result.to_dict()
    if args.output:
        try:
            write_outputs(Path(args.output), payload)
        except OSError as exc:
            _error(f"{args.output}: cannot write results: {exc}")
            return EXIT_NOT_VERIFIED
    if args.json:
        print(json.dumps(payload, indent=None, default=_json_default))
    else:
        _print_table(args.file, payload)

    if not result.kernels:
        if not args.json:
            which = f"no kernel named {args.kernel!r}" if args.kernel else "no kernel found"
            _error(f"{args.file}: {which}")
        return EXIT_USAGE if args.kernel else EXIT_NOT_VERIFIED
    accepted = {"verified"} | ({"translated"} if args.no_verify else set())
    return EXIT_OK if all(k.status in accepted for k in result.kernels) else EXIT_NOT_VERIFIED


# --------------------------------------------------------------------------------------------
# Output


def _error(message: str) -> None:
    print(f"fortranspire: error: {message}", file=sys.stderr)


def _stderr_progress(stage: str, done: int, total: int, message: str) -> None:
    counter = f" {done}/{total}" if total else ""
    print(f"[{stage}{counter}] {message}", file=sys.stderr, flush=True)


def _json_default(value: Any) -> Any:
    # numpy scalars and paths can slip into notes/sizes; JSON gets their plain value.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _error_payload(
    args: argparse.Namespace, kind: str, message: str, diagnostics: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "file": args.file,
        "target": args.target,
        "kernels": [],
        "error": {"error": kind, "message": message, "diagnostics": diagnostics},
    }


def _print_engine_error(args: argparse.Namespace, filename: str, exc: Any) -> None:
    diagnostics = list(getattr(exc, "diagnostics", []) or [])
    if diagnostics:
        for d in diagnostics:
            print(f"{filename}:{d.line}:{d.column}: {d.message}", file=sys.stderr)
    else:
        print(f"{filename}:1:1: {exc}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                _error_payload(
                    args, type(exc).__name__, str(exc), [d.to_dict() for d in diagnostics]
                )
            )
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _print_table(filename: str, payload: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output would otherwise be wrapped at 80 columns, truncating kernel names.
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"{filename} -> {payload['target']}", show_lines=False)
    table.add_column("kernel", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for col in ("max abs err", "max rel err", "max ulp"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("device", no_wrap=True)
    table.add_column("parallel loops", justify="right")
    table.add_column("llm calls", justify="right")
    colours = {
        "verified": "green",
        "translated": "cyan",
        "inconclusive": "yellow",
        "mismatch": "red",
        "failed": "red",
    }
    for k in payload["kernels"]:
        status = k["status"]
        style = colours.get(status, "yellow")
        table.add_row(
            k["name"],
            f"[{style}]{status}[/{style}]",
            _fmt(k["max_abs_err"]),
            _fmt(k["max_rel_err"]),
            _fmt(k["max_ulp"]),
            k["device"],
            str(k["parallel_loops"]),
            str(k["llm_calls"]),
        )
    console.print(table)
    for k in payload["kernels"]:
        for d in k["diagnostics"]:
            console.print(
                f"{k.get('file') or filename}:{d['line']}:{d['column']}: [{k['name']}] "
                f"{d['message']}",
                highlight=False,
                markup=False,
            )


def _module_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-zA-Z0-9_]", "_", name) or "kernel"
    candidate, n = base, 2
    while candidate in taken or candidate == "report":
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate)
    return candidate


def write_outputs(directory: Path, payload: dict[str, Any]) -> list[Path]:
    """One ``<kernel>.py`` per kernel with code, plus ``report.json``; nothing half-written.

    Everything is written into a temporary directory next to ``directory`` first. A new
    directory is then renamed into place in one step; into an existing one each file is moved
    with ``os.replace`` (atomic per file), ``report.json`` last so it never describes missing files.
    """
    directory = directory.resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        taken: set[str] = set()
        names: list[str] = []
        for k in payload["kernels"]:
            if not k.get("code"):
                continue
            module = _module_name(k["name"], taken)
            (staging / f"{module}.py").write_text(k["code"])
            names.append(f"{module}.py")
        (staging / "report.json").write_text(json.dumps(payload, indent=2, default=_json_default))
        names.append("report.json")
        if not directory.exists():
            os.rename(staging, directory)
            return [directory / n for n in names]
        for n in names:
            os.replace(staging / n, directory / n)
        return [directory / n for n in names]
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
