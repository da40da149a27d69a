"""The translator's stages end to end: security check -> parse -> analyse -> generate -> verify.

``find_kernels`` stops after the frontend; ``translate_source`` runs everything and returns the
JSON-shaped :class:`report.TranslationResult`. Covered patterns make no LLM call; an unsupported
kernel goes to ``llm_fallback`` when the caller passes one. ``find_project_kernels`` and
``translate_project`` do the same for a :class:`project.Project` of several files.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from kernels.engine import ir, security
from kernels.engine.frontend import parse_project
from kernels.engine.project import (
    Project,
    parameter_definitions,
    prepared_sources,
    single_file,
    with_parameters,
)
from kernels.engine.report import (
    TIMING_STAGES,
    Diagnostic,
    EngineError,
    KernelResult,
    ProgressCallback,
    TranslationResult,
)
from kernels.engine.sandbox import SandboxUnavailable
from kernels.engine.spare_ports import SPARE_PORTS
from kernels.engine.verify import MAX_VERIFY_S, PortSandbox


def find_kernels(
    source: str, *, filename: str = "input.f90", allowed_includes: Collection[str] = ()
) -> list[ir.Kernel]:
    """Parse ``source`` into IR kernels (subroutines, functions, extracted program loop nests).

    Raises FortranSyntaxError (with line/column) for malformed Fortran and
    ForbiddenStatementError when the whole file is refused; program units holding a forbidden
    statement are left out (see :func:`find_kernels_and_exclusions` to learn which).
    """
    return find_kernels_and_exclusions(
        source, filename=filename, allowed_includes=allowed_includes
    )[0]


def find_kernels_and_exclusions(
    source: str, *, filename: str = "input.f90", allowed_includes: Collection[str] = ()
) -> tuple[list[ir.Kernel], list[security.ExcludedUnit]]:
    """:func:`find_kernels`, plus the program units the security scan excluded and why."""
    kernels, excluded = find_project_kernels_and_exclusions(
        single_file(source, filename), allowed_includes=allowed_includes
    )
    return kernels, [unit for _, unit in excluded]


def find_project_kernels(project: Project) -> list[ir.Kernel]:
    """The kernels of every source of ``project`` (modules visible across its files)."""
    return find_project_kernels_and_exclusions(project)[0]


def find_project_kernels_and_exclusions(
    project: Project, *, allowed_includes: Collection[str] = ()
) -> tuple[list[ir.Kernel], list[tuple[str, security.ExcludedUnit]]]:
    """The kernels of every source of ``project``, and the units excluded (with their file)."""
    prepared, excluded = prepared_sources(project, allowed_includes=allowed_includes)
    _fparser_never_reads_files()
    parsed = parse_project(prepared)
    for k in parsed.kernels:
        k.notes = list(parsed.notes.get(k.name, k.notes))
        if k.origin == "extracted":
            k.notes.extend(project.notes.get(k.file, []))
    return parsed.kernels, excluded


def _fparser_never_reads_files() -> None:
    """fparser's reader follows ``INCLUDE 'path'`` lines itself, in this (server) process, by any
    path (``/etc/passwd``, another tenant's upload): outside the sandbox. Make it treat every
    INCLUDE as a plain statement instead; the frontend then reports it, and the only reader of
    included files left is gfortran, in the sandbox, which sees the upload and nothing else.
    """
    import fparser.common.readfortran as readfortran

    readfortran._IS_INCLUDE_LINE = _NEVER_MATCHES


_NEVER_MATCHES = re.compile(r"(?!)").match


def excluded_result(unit: security.ExcludedUnit, device: str, file: str = "") -> KernelResult:
    """A refused program unit as a ``failed`` kernel entry whose diagnostics say why."""
    kr = KernelResult(
        name=unit.unit.name, status="failed", device=device, line=unit.unit.first_line, file=file
    )
    kr.diagnostics = list(unit.diagnostics)
    kr.notes.append(unit.reason() + "; nothing of it was compiled or run")
    return kr


def device_for(target: str) -> str:
    """Where a port for ``target`` runs here: ``cpu``, ``gpu`` or ``simulator``."""
    if target == "cpu":
        return "cpu"
    # Under NUMBA_ENABLE_CUDASIM the simulator reports itself as an available device; that is
    # not a GPU, and verification must then run in the simulator too.
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return "simulator"
    try:
        from numba import cuda

        return "gpu" if cuda.is_available() else "simulator"
    except Exception:  # noqa: BLE001 - any CUDA import problem means no GPU
        return "simulator"


def _diagnostics(kernel: ir.Kernel) -> list[Diagnostic]:
    out = []
    seen = set()
    for u in kernel.unsupported:
        key = (u.line, u.column, u.construct)
        if key in seen:
            continue
        seen.add(key)
        msg = f"unsupported: {u.construct}"
        if u.text:
            msg += f" ({u.text.splitlines()[0][:120]})"
        out.append(Diagnostic(u.line, u.column, msg))
    return out


def translate_source(
    source: str,
    *,
    filename: str = "input.f90",
    target: str = "cpu",
    kernel: str | None = None,
    verify: bool = True,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    llm_fallback: Any = None,
    time_budget_s: float | None = None,
    allowed_includes: Collection[str] = (),
    numba_cache_dir: str | os.PathLike[str] | None = None,
    reference_cache_dir: str | os.PathLike[str] | None = None,
) -> TranslationResult:
    """Translate every kernel of ``source`` (or only ``kernel``) and verify it against gfortran.

    ``time_budget_s`` (default ``$FORTRANSPIRE_MAX_RUN_S``, 600 s) bounds the whole call: each
    verification's sandbox timeout is cut to what is left, and kernels reached after the budget is
    spent are reported ``failed`` with the reason instead of keeping a request busy for minutes.

    ``numba_cache_dir`` is a directory owned by one tenant where numba keeps the compiled ports of
    the deterministic backend between verifications (see :func:`verify.verify_against_gfortran`);
    LLM answers never get it. ``reference_cache_dir`` is the same tenant's cache of gfortran
    builds of the originals (:mod:`kernels.engine.reference_cache`). Each kernel's ``timings_ms``
    says where the time went, and every finished stage is reported through ``progress`` with its
    duration.
    """
    return translate_project(
        single_file(source, filename),
        target=target,
        kernel=kernel,
        verify=verify,
        sizes=sizes,
        seed=seed,
        progress=progress,
        llm_fallback=llm_fallback,
        time_budget_s=time_budget_s,
        allowed_includes=allowed_includes,
        numba_cache_dir=numba_cache_dir,
        reference_cache_dir=reference_cache_dir,
    )


def translate_project(
    project: Project,
    *,
    target: str = "cpu",
    kernel: str | None = None,
    verify: bool = True,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    llm_fallback: Any = None,
    time_budget_s: float | None = None,
    allowed_includes: Collection[str] = (),
    numba_cache_dir: str | os.PathLike[str] | None = None,
    reference_cache_dir: str | os.PathLike[str] | None = None,
) -> TranslationResult:
    """Translate the kernels of every source of ``project`` (see :func:`translate_source`).

    Each kernel is reported with the ``file`` it is in; the result's ``file`` names the project.
    With verification, the first port's sandbox starts now and warms up while the source is
    parsed (:class:`verify.PortSandbox`); each verification starts the next one.
    """
    if target not in ("cpu", "gpu"):
        raise EngineError(f"unknown target {target!r}: use 'cpu' or 'gpu'")
    budget = time_budget_s if time_budget_s is not None else _default_time_budget()
    deadline = time.monotonic() + budget
    device = device_for(target)
    ports = _PortsAhead(device=device, numba_cache_dir=numba_cache_dir, deadline=deadline)
    if verify:
        ports.start_next()
    try:
        return _translate_project(
            project,
            target=target,
            device=device,
            kernel=kernel,
            verify=verify,
            sizes=sizes,
            seed=seed,
            progress=progress,
            llm_fallback=llm_fallback,
            budget=budget,
            deadline=deadline,
            allowed_includes=allowed_includes,
            numba_cache_dir=numba_cache_dir,
            reference_cache_dir=reference_cache_dir,
            ports=ports,
        )
    finally:
        ports.close()


class _PortsAhead:
    """At most one port sandbox started ahead of the verification that will use it: a spare
    kept warm for this tenant since its last request (:mod:`kernels.engine.spare_ports`), or one
    started now."""

    def __init__(
        self, *, device: str, numba_cache_dir: str | os.PathLike[str] | None, deadline: float
    ) -> None:
        self._device = device
        self._numba_cache_dir = numba_cache_dir
        self._deadline = deadline
        self._ready: PortSandbox | None = None

    def start_next(self) -> None:
        left = self._deadline - time.monotonic()
        if self._ready is not None or left < 1.0:
            return
        self._ready = SPARE_PORTS.take(device=self._device, numba_cache_dir=self._numba_cache_dir)
        if self._ready is not None:
            return
        try:
            self._ready = PortSandbox.start(
                device=self._device, numba_cache_dir=self._numba_cache_dir, timeout_s=left
            )
        except SandboxUnavailable:
            pass  # the verification itself reports it, with the reason and the fix

    def take(self) -> PortSandbox | None:
        ready, self._ready = self._ready, None
        return ready

    def close(self) -> None:
        if self._ready is not None:
            self._ready.close()
            self._ready = None


def _translate_project(
    project: Project,
    *,
    target: str,
    device: str,
    kernel: str | None,
    verify: bool,
    sizes: dict[str, int] | None,
    seed: int,
    progress: ProgressCallback | None,
    llm_fallback: Any,
    budget: float,
    deadline: float,
    allowed_includes: Collection[str],
    numba_cache_dir: str | os.PathLike[str] | None,
    reference_cache_dir: str | os.PathLike[str] | None,
    ports: _PortsAhead,
) -> TranslationResult:
    filename = project.label

    def report(stage: str, done: int, total: int, message: str) -> None:
        if progress is not None:
            progress(stage, done, total, message)

    report("parse", 0, 1, f"parsing {filename}")
    started = time.perf_counter()
    kernels, excluded = find_project_kernels_and_exclusions(
        project, allowed_includes=allowed_includes
    )
    parse_ms = _ms_since(started)
    report("parse", 1, 1, f"{len(kernels)} kernel(s) found; parse {parse_ms:.0f} ms")
    if kernel is not None:
        wanted = kernel.lower()
        chosen = [k for k in kernels if k.name == wanted]
        excluded = [e for e in excluded if e[1].unit.name == wanted]
        if not chosen and not excluded:
            names = ", ".join(k.name for k in kernels) or "none"
            raise EngineError(f"no kernel named {kernel!r} in {filename}; kernels: {names}")
        kernels = chosen
    result = TranslationResult(file=filename, target=target)
    result.kernels.extend(excluded_result(e, device, file) for file, e in excluded)
    total = len(kernels)

    from kernels.engine.analysis import analyse

    analyses = {}
    analyse_ms: dict[str, float] = {}
    for n, k in enumerate(kernels):
        report("analyse", n, total, f"analysing {k.name}")
        if not k.unsupported:
            started = time.perf_counter()
            analyses[k.name] = analyse(k)
            analyse_ms[k.name] = _ms_since(started)
            report("analyse", n + 1, total, f"{k.name}: analyse {analyse_ms[k.name]:.0f} ms")
    report("analyse", total, total, "analysis done")

    reparsed: dict[tuple[tuple[str, int], ...], list[ir.Kernel]] = {}  # by PARAMETER values
    for n, k in enumerate(kernels):
        kr = KernelResult(name=k.name, status="translated", device=device, line=k.line, file=k.file)
        kr.notes = list(k.notes)
        kr.diagnostics = _diagnostics(k)
        kr.timings_ms["parse"] = parse_ms
        if k.name in analyse_ms:
            kr.timings_ms["analyse"] = analyse_ms[k.name]
        result.kernels.append(kr)
        report("generate", n, total, f"generating {k.name}")
        generated = None
        if not k.unsupported:
            started = time.perf_counter()
            try:
                generated = _generate(k, target, analyses.get(k.name))
            except Exception as exc:  # noqa: BLE001 - any codegen gap becomes a diagnostic
                from kernels.engine.backends.common import CodegenError

                line = exc.line if isinstance(exc, CodegenError) else k.line
                msg = (
                    exc.message if isinstance(exc, CodegenError) else f"{type(exc).__name__}: {exc}"
                )
                kr.diagnostics.append(Diagnostic(line or k.line, 1, f"unsupported: {msg}"))
                k.unsupported.append(ir.Unsupported(msg, line or k.line, 1, ""))
            kr.timings_ms["generate"] = _ms_since(started)
            report(
                "generate", n + 1, total, f"{k.name}: generate {kr.timings_ms['generate']:.0f} ms"
            )
        if generated is None:
            kr.status = "unsupported"
            if llm_fallback is not None and time.monotonic() < deadline:
                report("generate", n, total, f"{k.name}: asking the LLM fallback")
                try:
                    updated = llm_fallback(
                        kernel=k, result=kr, target=target, sizes=sizes, seed=seed
                    )
                except SandboxUnavailable as exc:
                    kr.status = "failed"
                    kr.diagnostics.append(Diagnostic(k.line, 1, exc.message))
                    updated = None
                except Exception as exc:  # noqa: BLE001 - the deterministic result still stands
                    msg = exc.message if isinstance(exc, EngineError) else str(exc)
                    kr.notes.append(f"LLM fallback failed: {type(exc).__name__}: {msg}")
                    updated = None
                if updated is not None:
                    result.kernels[-1] = updated
            continue
        kr.code = generated.code
        kr.entry = generated.entry
        kr.parallel_loops = generated.parallel_loops
        kr.notes.extend(generated.notes)
        if target == "gpu":
            kr.gpu_model = gpu_model_report(k, generated, sizes)
        if not verify:
            kr.status = "translated"
            continue
        remaining = deadline - time.monotonic()
        if remaining < 1.0:
            kr.status = "failed"
            kr.diagnostics.append(
                Diagnostic(
                    k.line,
                    1,
                    f"not verified: this request's time budget of {budget:g} s ran out "
                    "(translate fewer kernels with --kernel, or raise FORTRANSPIRE_MAX_RUN_S)",
                )
            )
            continue
        steps = len(VERIFY_STAGES)
        report("verify", n * steps, total * steps, f"verifying {k.name} against gfortran")

        finished: list[str] = []

        def stage_done(
            stage: str, ms: float, *, n: int = n, name: str = k.name, finished=finished
        ) -> None:
            # Each finished stage moves the progress forward (the two sides finish in any
            # order), so a client sees where the time goes while it waits.
            finished.append(stage)
            steps = len(VERIFY_STAGES)
            report(
                "verify",
                n * steps + len(finished),
                total * steps,
                f"{name}: {_label(stage)} {ms:.0f} ms",
            )

        run_kernel, run_code = k, generated
        sized = shrink_parameters_for_run(
            project,
            k,
            target=target,
            device=device,
            sizes=sizes,
            reparsed=reparsed,
            allowed_includes=allowed_includes,
        )
        kr.notes.extend(sized.notes)
        if sized.kernel is not None:
            run_kernel, run_code = sized.kernel, sized.generated
        port = ports.take()
        if n + 1 < total:
            ports.start_next()  # the next kernel's, warming up while this one is verified
        _verify_into(
            kr,
            run_kernel,
            run_code,
            sizes=sizes,
            seed=seed,
            device=device,
            timeout_s=min(MAX_VERIFY_S, remaining),
            numba_cache_dir=numba_cache_dir,
            reference_cache_dir=reference_cache_dir,
            port=port,
            on_stage=stage_done,
        )
        kr.sizes.update(sized.values)  # the run's sizes, PARAMETERs set for it included
    report("verify", total, total, "done")
    return result


#: The stages verification reports, in TIMING_STAGES order.
VERIFY_STAGES = TIMING_STAGES[3:]


def _label(stage: str) -> str:
    return stage.replace("_", " ")


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)


def _generate(k: ir.Kernel, target: str, analysis):
    if target == "gpu":
        from kernels.engine.backends.cuda import generate_cuda

        return generate_cuda(k)
    from kernels.engine.backends.cpu import generate_cpu

    return generate_cpu(k, analysis)


def gpu_model_of(k: ir.Kernel, sizes: dict[str, int] | None) -> dict[str, Any]:
    """The GPU traffic model of ``k``'s CUDA port (analysed kernel), for ``profile --target gpu``."""
    from kernels.engine.backends.common import CodegenError

    try:
        generated = _generate(k, "gpu", None)
    except CodegenError as exc:
        return {"reason": f"no GPU port: {exc.message} (line {exc.line})"}
    return gpu_model_report(k, generated, sizes)


def gpu_model_report(k: ir.Kernel, generated, sizes: dict[str, int] | None) -> dict[str, Any]:
    """The GPU traffic model of a port at the sizes its verification runs with."""
    from kernels.engine import gpu_model
    from kernels.engine.verify import PlanError, plan_run

    plan = generated.launch_plan
    try:
        run = plan_run(k, sizes)
    except PlanError as exc:
        return gpu_model.evaluate(plan, {}, shapes={}).to_dict() | {"reason": str(exc)}
    env: dict[str, int | float] = {
        n: c.value
        for n, c in k.constants.items()
        if isinstance(c.value, (int, float)) and not isinstance(c.value, bool)
    }
    env.update(run.sizes)
    env.update({key: v for key, v in run.scalars.items() if isinstance(v, (int, float))})
    shapes = {a.name: a.shape for a in run.args if a.is_array}
    return gpu_model.evaluate(plan, env, shapes=shapes).to_dict() | {"sizes": dict(run.sizes)}


@dataclass
class SizedRun:
    """The kernel and port a verification runs when PARAMETERs were shrunk for it."""

    kernel: ir.Kernel | None = None  # None: the kernel as given
    generated: Any = None
    notes: list[str] = field(default_factory=list)
    values: dict[str, int] = field(default_factory=dict)  # the PARAMETERs' values for the run


def shrink_parameters_for_run(
    project: Project,
    k: ir.Kernel,
    *,
    target: str,
    device: str,
    sizes: dict[str, int] | None = None,
    reparsed: dict[tuple[tuple[str, int], ...], list[ir.Kernel]] | None = None,
    allowed_includes: Collection[str] = (),
) -> SizedRun:
    """The kernel with smaller PARAMETER sizes, when a run at its own would not fit its budget.

    The rule for which constants may shrink is :mod:`kernels.engine.sizes`'s (sizes only, never
    a number in floating-point arithmetic). The new values are written into the project's text
    and the project is parsed again, so that the original compiled by gfortran and the port
    generated for the run see the same values, constants derived from them included. The first
    plan (smallest first) whose loops can all run and whose work fits the budget is used;
    ``--size NAME=VALUE`` sets a PARAMETER's value for the run itself. The delivered port is
    the one generated from the kernel as given. ``reparsed`` keeps the parsed projects by
    PARAMETER values between the kernels of one translation.
    """
    from kernels.engine import sizes as sizing
    from kernels.engine.verify import PlanError, check_run_bytes, plan_run

    reparsed = {} if reparsed is None else reparsed

    given = {name.lower(): int(v) for name, v in (sizes or {}).items()}
    simulator = device == "simulator"
    consts = sizing.integer_constants(k)
    used = sizing.constants_used(k)
    asked = {n: v for n, v in given.items() if n in consts}
    if not consts:
        return SizedRun()
    budget = sizing.work_budget(device)
    load = sizing.work(k, sizing.infer(k, given, simulator=simulator))
    why = ""
    if load > budget:
        why = (
            f"a run at its PARAMETER values takes ~{load:,} statement executions, more than "
            f"the {budget:,} a {device} run is given"
        )
    else:
        try:
            plan = plan_run(k, given)
        except (PlanError, ir.NotConstant, ValueError):
            plan = None  # verification reports that itself
        try:
            if plan is not None:
                check_run_bytes(plan)
        except PlanError as exc:
            why = str(exc)
    if not why and not asked:
        return SizedRun()

    refused, numbers = _unshrinkable(project, k, consts)
    # Said of the constants that size something; a constant computed from another follows it.
    role = sizing.roles(k, consts)
    notes = [
        f"PARAMETER {n} = {consts[n]} not shrunk: {r}"
        for n, r in refused.items()
        if role.get(n) in ("upper", "count", "offset") and not r.startswith("it is computed")
    ]
    shrinkable = [n for n in consts if n not in refused]
    plans = sizing.parameter_plans(k, shrinkable, simulator=simulator) if why else [{}]
    plans = [{**plan, **{n: v for n, v in asked.items() if n in shrinkable}} for plan in plans]
    plans = [plan for plan in plans if plan]
    base_score = sizing.candidates(k, given, simulator=simulator)[0].score
    chosen: tuple[dict[str, int], ir.Kernel, int] | None = None
    for plan in plans:
        key = tuple(sorted(plan.items()))
        if key not in reparsed:
            try:
                shrunk = with_parameters(project, plan, consts)
                reparsed[key] = find_project_kernels_and_exclusions(
                    shrunk, allowed_includes=allowed_includes
                )[0]
            except EngineError as exc:
                notes.append(f"PARAMETERs not shrunk: the shrunk source does not parse ({exc})")
                return SizedRun(notes=notes)
        k2 = next((x for x in reparsed[key] if x.name == k.name and x.line == k.line), None)
        if k2 is None or k2.unsupported:
            continue
        # Only integer sizes may have changed (a REAL computed from a shrunk one, which the
        # text did not show, would change the numbers): else these values are not used.
        changed = {
            n
            for n, c in k.constants.items()
            if n in used and (n not in k2.constants or k2.constants[n].value != c.value)
        }
        if changed - set(consts) or changed & numbers:
            continue
        best = sizing.candidates(k2, given, simulator=simulator)[0]
        if best.score > base_score:
            continue  # a loop cannot run (or a subscript leaves its bounds) at these values
        run_load = sizing.work(k2, best.values)
        if chosen is None or run_load < chosen[2]:
            chosen = (plan, k2, run_load)
        if run_load <= budget:
            chosen = (plan, k2, run_load)
            break
    if chosen is None:
        if why:
            notes.append(
                f"verified at the PARAMETER values as given ({why}): no smaller sizes keep every loop running"
            )
        return SizedRun(notes=notes)
    plan, k2, run_load = chosen
    try:
        generated = _generate(k2, target, _analysis_for(k2, target))
    except Exception as exc:  # noqa: BLE001 - the run then uses the kernel as given
        notes.append(f"PARAMETERs not shrunk: the port at smaller sizes failed ({exc})")
        return SizedRun(notes=notes)
    run = {"cpu": "CPU", "gpu": "GPU"}.get(device, device)
    notes.extend(
        f"PARAMETER {n} = {consts[n]} {'shrunk' if v < consts[n] else 'set'} to {v} for the "
        f"{run} run"
        for n, v in plan.items()
    )
    followed = [
        f"{n} {c.value} -> {k2.constants[n].value}"
        for n, c in k.constants.items()
        if n in consts and n not in plan and k2.constants[n].value != c.value
    ]
    notes.append(
        f"why: {why or '--size asked for it'}; {', '.join(plan)} "
        f"{'is' if len(plan) == 1 else 'are'} used only as sizes (extents, loop bounds, trip "
        "counts, subscripts), the original and the port ran with the same values"
        + (
            f", and the PARAMETERs computed from them followed ({', '.join(followed)})"
            if followed
            else ""
        )
        + f"; the run took ~{run_load:,} statement executions; the delivered port keeps the "
        "values as written"
    )
    return SizedRun(k2, generated, notes, dict(plan))


def _unshrinkable(
    project: Project, k: ir.Kernel, consts: dict[str, int]
) -> tuple[dict[str, str], set[str]]:
    """The integer constants of ``k`` that must keep their value, and why (see
    :func:`kernels.engine.sizes.parameter_float_uses` for the rule); and the integer constants
    the kernel uses as numbers (in floating-point arithmetic), which must never change."""
    from kernels.engine import sizes as sizing

    definitions = parameter_definitions(project)
    refused: dict[str, str] = {}
    for n, value in consts.items():
        if any(d.name == n and d.value == value and d.columns for d in definitions):
            continue
        if any(d.name == n and d.mentions & set(consts) for d in definitions):
            refused[n] = "it is computed from other PARAMETERs (it follows them when they shrink)"
        else:
            refused[n] = "its value is not an integer literal in the given files"
    # Constants computed from another follow it: each one the kernel refers to must be an
    # integer used only as a size (one it never refers to may change: it is not in the run).
    used = sizing.constants_used(k)
    derived: dict[str, set[str]] = {n: set() for n in consts}
    for n in consts:
        frontier = {n}
        while frontier:
            new = {d.name for d in definitions if d.mentions & frontier} - derived[n] - {n}
            derived[n] |= new
            frontier = new
    for n, names in derived.items():
        for d in sorted(names & used):
            c = k.constants.get(d)
            declared = [x.integer for x in definitions if x.name == d]
            integer = c.type.base == "integer" if c is not None else False not in declared
            if not integer:
                refused.setdefault(n, f"the non-integer PARAMETER {d} is computed from it")
    tracked = set(consts) | {d for names in derived.values() for d in names & used}
    uses = sizing.parameter_float_uses(k, sorted(tracked))
    for n in consts:
        for name in [n, *sorted(derived[n])]:
            if name in uses:
                via = "" if name == n else f" (through PARAMETER {name})"
                refused.setdefault(n, uses[name] + via)
    return refused, set(uses)


def _analysis_for(k: ir.Kernel, target: str):
    from kernels.engine.analysis import analyse

    return analyse(k)  # both backends read the loops' annotations


def _default_time_budget() -> float:
    try:
        return max(1.0, float(os.environ.get("FORTRANSPIRE_MAX_RUN_S", "600")))
    except ValueError:
        return 600.0


def _verify_into(
    kr: KernelResult,
    k: ir.Kernel,
    generated,
    *,
    sizes,
    seed,
    device,
    timeout_s: float = MAX_VERIFY_S,
    numba_cache_dir=None,
    reference_cache_dir=None,
    port: PortSandbox | None = None,
    on_stage=None,
) -> None:
    from kernels.engine.verify import verify_against_gfortran  # looked up here: tests replace it

    t0 = time.perf_counter()
    try:
        rep = verify_against_gfortran(
            k,
            generated,
            sizes=sizes,
            seed=seed,
            device=device,
            timeout_s=timeout_s,
            numba_cache_dir=numba_cache_dir,
            reference_cache_dir=reference_cache_dir,
            port=port,
            on_stage=on_stage,
        )
    except EngineError as exc:
        kr.status = "failed"
        kr.diagnostics.append(Diagnostic(k.line, 1, f"verification failed: {exc.message}"))
        return
    finally:
        if port is not None:
            port.close()  # verification closes it too; this covers one that never got that far
    kr.timings_ms.update((s, rep.timings_ms[s]) for s in VERIFY_STAGES if s in rep.timings_ms)
    if rep.numba_cache_hit:
        kr.notes.append("numba: the compiled port was loaded from this tenant's cache")
    if rep.reference_cache_hit:
        kr.notes.append("gfortran: the original's build was loaded from this tenant's cache")
    kr.status = rep.status
    kr.arguments = list(rep.arguments)
    kr.max_abs_err = rep.max_abs_err
    kr.max_rel_err = rep.max_rel_err
    kr.max_ulp = rep.max_ulp
    kr.sizes = dict(rep.sizes or {})
    kr.coverage = rep.coverage.to_dict() if rep.coverage is not None else None
    if getattr(rep, "device", None):
        kr.device = rep.device
    if rep.message:
        kr.notes.append(rep.message)
        if rep.status != "verified":
            kr.diagnostics.append(Diagnostic(k.line, 1, rep.message))
    kr.notes.append(f"verified in {time.perf_counter() - t0:.2f} s")
