"""The translator's stages end to end: security check -> parse -> analyse -> generate -> verify.

``find_kernels`` stops after the frontend; ``translate_source`` runs everything and returns the
JSON-shaped :class:`report.TranslationResult`. Covered patterns make no LLM call; an unsupported
kernel goes to ``llm_fallback`` when the caller passes one.
"""

from __future__ import annotations

import os
import time
from pathlib import PurePath
from typing import Any

from kernels.engine import ir
from kernels.engine.report import (
    Diagnostic,
    EngineError,
    KernelResult,
    ProgressCallback,
    TranslationResult,
)


def _check_forbidden(source: str, filename: str) -> None:
    try:
        from kernels.engine import security
    except ImportError:  # pragma: no cover - provided by the VERIFY helper
        return
    fixed = PurePath(filename).suffix.lower() in (".f", ".for", ".f77", ".ftn")
    try:
        security.check_forbidden(source, fixed_form=fixed)
    except TypeError:  # older signature without fixed_form
        security.check_forbidden(source)


def find_kernels(source: str, *, filename: str = "input.f90") -> list[ir.Kernel]:
    """Parse ``source`` into IR kernels (subroutines, functions, extracted program loop nests).

    Raises FortranSyntaxError (with line/column) for malformed Fortran and
    ForbiddenStatementError for statements that touch the outside world.
    """
    _check_forbidden(source, filename)
    from kernels.engine.frontend import parse_file

    parsed = parse_file(source, filename=filename)
    for k in parsed.kernels:
        k.notes = list(parsed.notes.get(k.name, k.notes))
    return parsed.kernels


def _device_for(target: str) -> str:
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
) -> TranslationResult:
    """Translate every kernel of ``source`` (or only ``kernel``) and verify it against gfortran.

    ``time_budget_s`` (default ``$FORTRANSPIRE_MAX_RUN_S``, 600 s) bounds the whole call: each
    verification's sandbox timeout is cut to what is left, and kernels reached after the budget is
    spent are reported ``failed`` with the reason instead of keeping a request busy for minutes.
    """
    if target not in ("cpu", "gpu"):
        raise EngineError(f"unknown target {target!r}: use 'cpu' or 'gpu'")

    def report(stage: str, done: int, total: int, message: str) -> None:
        if progress is not None:
            progress(stage, done, total, message)

    budget = time_budget_s if time_budget_s is not None else _default_time_budget()
    deadline = time.monotonic() + budget
    report("parse", 0, 1, f"parsing {filename}")
    kernels = find_kernels(source, filename=filename)
    report("parse", 1, 1, f"{len(kernels)} kernel(s) found")
    if kernel is not None:
        wanted = kernel.lower()
        chosen = [k for k in kernels if k.name == wanted]
        if not chosen:
            names = ", ".join(k.name for k in kernels) or "none"
            raise EngineError(f"no kernel named {kernel!r} in {filename}; kernels: {names}")
        kernels = chosen
    device = _device_for(target)
    result = TranslationResult(file=filename, target=target)
    total = len(kernels)

    from kernels.engine.analysis import analyse

    analyses = {}
    for n, k in enumerate(kernels):
        report("analyse", n, total, f"analysing {k.name}")
        if not k.unsupported:
            analyses[k.name] = analyse(k)
    report("analyse", total, total, "analysis done")

    for n, k in enumerate(kernels):
        kr = KernelResult(name=k.name, status="translated", device=device, line=k.line)
        kr.notes = list(k.notes)
        kr.diagnostics = _diagnostics(k)
        result.kernels.append(kr)
        report("generate", n, total, f"generating {k.name}")
        generated = None
        if not k.unsupported:
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
        if generated is None:
            kr.status = "unsupported"
            if llm_fallback is not None and time.monotonic() < deadline:
                report("generate", n, total, f"{k.name}: asking the LLM fallback")
                try:
                    updated = llm_fallback(
                        kernel=k, result=kr, target=target, sizes=sizes, seed=seed
                    )
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
        report("verify", n, total, f"verifying {k.name} against gfortran")
        _verify_into(
            kr, k, generated, sizes=sizes, seed=seed, device=device, timeout_s=min(120.0, remaining)
        )
    report("verify", total, total, "done")
    return result


def _generate(k: ir.Kernel, target: str, analysis):
    if target == "gpu":
        from kernels.engine.backends.cuda import generate_cuda

        return generate_cuda(k)
    from kernels.engine.backends.cpu import generate_cpu

    return generate_cpu(k, analysis)


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


def _default_time_budget() -> float:
    try:
        return max(1.0, float(os.environ.get("FORTRANSPIRE_MAX_RUN_S", "600")))
    except ValueError:
        return 600.0


def _verify_into(
    kr: KernelResult, k: ir.Kernel, generated, *, sizes, seed, device, timeout_s: float = 120.0
) -> None:
    try:
        from kernels.engine.verify import verify_against_gfortran
    except ImportError:
        kr.status = "translated"
        kr.notes.append("verification unavailable (kernels.engine.verify is missing)")
        return
    t0 = time.perf_counter()
    try:
        rep = verify_against_gfortran(
            k, generated, sizes=sizes, seed=seed, device=device, timeout_s=timeout_s
        )
    except EngineError as exc:
        kr.status = "failed"
        kr.diagnostics.append(Diagnostic(k.line, 1, f"verification failed: {exc.message}"))
        return
    kr.status = rep.status
    kr.arguments = list(rep.arguments)
    kr.max_abs_err = rep.max_abs_err
    kr.max_rel_err = rep.max_rel_err
    kr.max_ulp = rep.max_ulp
    kr.sizes = dict(rep.sizes or {})
    if getattr(rep, "device", None):
        kr.device = rep.device
    if rep.message:
        kr.notes.append(rep.message)
        if rep.status != "verified":
            kr.diagnostics.append(Diagnostic(k.line, 1, rep.message))
    kr.notes.append(f"verified in {time.perf_counter() - t0:.2f} s")
