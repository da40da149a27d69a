"""Real-code evaluation: translate kernels of public Fortran mini-apps as a user would, whole files.

The code is NOT in this repository: pass the git directories of snapshots you fetched, and the
files are read with ``git --git-dir=DIR show HEAD:path`` (nothing is checked out or copied here):

    .venv/bin/python benchmarks/real_code_eval.py \\
        --repo seismic_cpml=/path/to/seismic_cpml/.git \\
        --repo cloverleaf=/path/to/CloverLeaf_Serial/.git \\
        --repo prk=/path/to/ParRes-Kernels/.git \\
        --repo heat=/path/to/heat-equation/.git \\
        [--only NAME] [--target cpu|gpu] [-o benchmarks/results/real_code_eval.json]

Each case is one translation, as given (no --size, no edits): a file, or a project of several
files (modules across files, the PRK headers). The figure reported is the share of kernels that
are ``verified`` with every DO loop run in the reference (``coverage.loops_run == loops``).
Cases whose repository is not given are skipped and listed as such.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (case name, repository key, [source paths], [include dirs], {defines})
CASES: list[tuple[str, str, list[str], list[str], dict[str, str | None]]] = [
    *[
        (f"cloverleaf_{name}", "cloverleaf", [f"{name}.f90"], [], {})
        for name in (
            "accelerate_kernel",
            "PdV_kernel",
            "flux_calc_kernel",
            "ideal_gas_kernel",
            "viscosity_kernel",
            "revert_kernel",
            "reset_field_kernel",
            "calc_dt_kernel",
            "field_summary_kernel",
            "advec_cell_kernel",
            "advec_mom_kernel",
            "initialise_chunk_kernel",
        )
    ],
    # update_halo_kernel USEs data_module: given with its file, as a user would.
    ("cloverleaf_update_halo_kernel", "cloverleaf", ["update_halo_kernel.f90", "data.f90"], [], {}),
    ("prk_stencil", "prk", ["FORTRAN/stencil.F90", "FORTRAN/prk_mod.F90"], [], {"RADIUS": "2"}),
    ("prk_nstream", "prk", ["FORTRAN/nstream.F90", "FORTRAN/prk_mod.F90"], [], {}),
    ("prk_transpose", "prk", ["FORTRAN/transpose.F90", "FORTRAN/prk_mod.F90"], [], {}),
    ("prk_p2p", "prk", ["FORTRAN/p2p.F90", "FORTRAN/prk_mod.F90"], [], {}),
    ("heat_serial_core", "heat",
     ["2d/serial/fortran/core.F90", "2d/serial/fortran/heat_mod.F90"], [], {}),
    ("seismic_CPML_2D_isotropic_second_order", "seismic_cpml",
     ["seismic_CPML_2D_isotropic_second_order.f90"], [], {}),
    ("seismic_CPML_2D_pressure_second_order", "seismic_cpml",
     ["seismic_CPML_2D_pressure_second_order.f90"], [], {}),
    ("seismic_PML_Collino_2D_isotropic", "seismic_cpml",
     ["seismic_PML_Collino_2D_isotropic.f90"], [], {}),
]  # fmt: skip


def read_file(git_dir: str, path: str) -> str:
    done = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"],
        capture_output=True,
        check=True,
    )
    return done.stdout.decode("utf-8", errors="replace")


def run_case(case, repos: dict[str, str], budget_s: float, target: str = "cpu") -> dict:
    from kernels.engine import translate_project
    from kernels.engine.project import project_from_texts
    from kernels.engine.report import EngineError

    name, repo, paths, include_dirs, defines = case
    out: dict = {
        "case": name,
        "repo": repo,
        "files": paths,
        "budget_s": budget_s,
        "target": target,
    }
    if repo not in repos:
        out["skipped"] = f"repository {repo} not given (--repo {repo}=GIT_DIR)"
        return out
    files = {p: read_file(repos[repo], p) for p in paths}
    started = time.monotonic()
    try:
        project = project_from_texts(files, include_dirs=include_dirs, defines=defines)
        result = translate_project(project, target=target, time_budget_s=budget_s)
    except EngineError as exc:
        out["error"] = {"type": type(exc).__name__, "message": _reason(exc.message)}
        out["seconds"] = round(time.monotonic() - started, 1)
        return out
    out["seconds"] = round(time.monotonic() - started, 1)
    out["kernels"] = [
        {
            "name": k.name,
            "file": k.file,
            "status": k.status,
            "coverage": k.coverage,
            "sizes": k.sizes,
            "device": k.device,
            # The reason only: quoted source text (third-party code) is cut off.
            "first_diagnostic": _reason(k.diagnostics[0].message) if k.diagnostics else "",
        }
        for k in result.kernels
    ]
    return out


def _reason(message: str) -> str:
    return message.split(" (")[0].split("\n")[0][:160]


def summarise(cases: list[dict]) -> dict:
    kernels = [k for c in cases for k in c.get("kernels", [])]
    by_status: dict[str, int] = {}
    for k in kernels:
        by_status[k["status"]] = by_status.get(k["status"], 0) + 1
    full = [
        k
        for k in kernels
        if k["status"] == "verified"
        and k["coverage"] is not None
        and k["coverage"]["loops_run"] == k["coverage"]["loops"]
    ]
    return {
        "cases_run": sum(1 for c in cases if "skipped" not in c),
        "cases_refused": sum(1 for c in cases if "error" in c),
        "kernels": len(kernels),
        "by_status": by_status,
        "verified_every_loop_run": len(full),
        "share_verified_every_loop_run": round(len(full) / len(kernels), 3) if kernels else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", action="append", default=[], metavar="KEY=GIT_DIR")
    parser.add_argument("--only", action="append", default=[], metavar="CASE")
    parser.add_argument(
        "--budget", type=float, default=600.0, help="seconds per case (the engine's default)"
    )
    parser.add_argument(
        "--target",
        choices=("cpu", "gpu"),
        default="cpu",
        help="gpu: numba.cuda ports, verified on the CUDA simulator when there is no GPU",
    )
    parser.add_argument(
        "--reuse",
        metavar="JSON",
        help="an earlier output of this script: its cases are taken as they are, not rerun",
    )
    parser.add_argument(
        "-o", "--output", default=str(Path(__file__).parent / "results" / "real_code_eval.json")
    )
    args = parser.parse_args(argv)
    repos = dict(item.split("=", 1) for item in args.repo)
    chosen = [c for c in CASES if not args.only or c[0] in args.only]
    earlier = {}
    if args.reuse:
        earlier = {c["case"]: c for c in json.loads(Path(args.reuse).read_text())["cases"]}
    results = []
    for case in chosen:
        print(f"[{case[0]}] ...", file=sys.stderr, flush=True)
        res = earlier.get(case[0]) or run_case(case, repos, args.budget, args.target)
        statuses = [k["status"] for k in res.get("kernels", [])]
        print(
            f"[{case[0]}] {res.get('skipped') or res.get('error') or statuses}",
            file=sys.stderr,
            flush=True,
        )
        results.append(res)
        payload = {  # written after every case, so an interrupted run still leaves its figures
            "load_average": os.getloadavg(),
            "summary": summarise(results),
            "cases": results,
        }
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps(summarise(results), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
