"""Reuse what was already proven: per-tenant result cache and per-tenant numba caches.

Three caches, all scoped to one tenant and all invalidated by ``engine.version.ENGINE_VERSION``:

- **Result cache.** A translation whose every kernel was verified is stored (it is a KernelRun
  anyway) with ``cache_key``: the hash of the source files, the options, the sizes, the seed, the
  target (and the device it ran on) and the engine version. An identical request of the same
  tenant is answered from that run at once: the stored report with ``cached: true`` on each
  kernel and ``original_run_id`` naming the run that holds the proof. Nothing is compiled or run.
  The lookup runs in the tenant's own schema, so another tenant never sees the entry.
- **numba cache.** The deterministic backend's ports are compiled by numba with ``cache=True``
  into ``$FORTRANSPIRE_CACHE_DIR/numba/<ENGINE_VERSION>/<tenant schema>``, so verifying the same
  code again (a new seed, other sizes) loads machine code instead of compiling for seconds. The
  directory is given only to the port's sandbox of that tenant, and only for code the translator
  wrote: LLM answers are verified without it, because whatever sits in the cache is loaded and run
  later without being compiled again.
- **Reference builds.** The gfortran build of the original (with its wrapper), content-addressed
  by what gfortran reads (:mod:`kernels.engine.reference_cache`), in
  ``$FORTRANSPIRE_CACHE_DIR/gfortran/<ENGINE_VERSION>/<tenant schema>``: a verification with a new
  seed runs the same library on new inputs instead of compiling again. The library is the
  tenant's code: it only runs in the sandbox, and no sandbox sees this directory.

After a verification the service also asks for a warm port sandbox for the tenant's next one
(:mod:`kernels.engine.spare_ports`, ``settings.FORTRANSPIRE_SPARE_PORTS``): bound to that
tenant's numba cache only, and given only to that tenant's verifications.

:func:`cached_or_run` is the one place the service calls the engine through.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django_tenants.utils import tenant_context

from kernels import engine
from kernels.engine.pipeline import device_for
from kernels.engine.project import project_from_texts
from kernels.engine.report import ProgressCallback, TranslationResult
from kernels.engine.spare_ports import SPARE_PORTS
from kernels.engine.version import ENGINE_VERSION
from kernels.models import KernelRun
from tenants.models import Tenant

logger = logging.getLogger(__name__)

_pruned_versions = threading.Event()


def result_cache_key(
    *,
    sources: Mapping[str, str],
    target: str,
    sizes: Mapping[str, int] | None,
    seed: int,
    options: Mapping[str, Any],
) -> str:
    """The content address of one translation request (sha256 hex).

    ``sources`` maps each file name to its text (the name decides fixed or free form and is
    reported back); ``options`` holds everything else that changes the answer (kernel, verify,
    LLM fallback allowed, ...).
    """
    payload = {
        "engine": ENGINE_VERSION,
        "sources": sorted(
            (name, hashlib.sha256(text.encode("utf-8")).hexdigest())
            for name, text in sources.items()
        ),
        "target": target,
        "device": device_for(target),
        "sizes": sorted((k.lower(), int(v)) for k, v in (sizes or {}).items()),
        "seed": int(seed),
        "options": sorted((k, options[k]) for k in options),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def numba_cache_dir(tenant: Tenant) -> Path:
    """The tenant's numba cache for this engine version (created 0700; older versions removed)."""
    return _tenant_cache(tenant, "numba")


def reference_cache_dir(tenant: Tenant) -> Path:
    """The tenant's gfortran builds of its originals for this engine version (0700; older
    versions removed). Apart from the numba cache: that one is bound into the port's sandbox,
    and no sandbox may write where reference builds are kept."""
    return _tenant_cache(tenant, "gfortran")


_CACHES = ("numba", "gfortran")


def _tenant_cache(tenant: Tenant, kind: str) -> Path:
    path = Path(settings.FORTRANSPIRE_CACHE_DIR) / kind / ENGINE_VERSION / tenant.schema_name
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _pruned_versions.is_set():
        _pruned_versions.set()
        # What an older engine built may differ from what this one would: drop it.
        for name in _CACHES:
            root = Path(settings.FORTRANSPIRE_CACHE_DIR) / name
            for old in root.iterdir() if root.is_dir() else ():
                if old.name != ENGINE_VERSION and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
    return path


def cached_or_run(
    *,
    tenant: Tenant,
    source: str,
    filename: str,
    target: str,
    kernel: str | None,
    verify: bool,
    sizes: dict[str, int] | None,
    seed: int,
    progress: ProgressCallback | None = None,
    llm_fallback: Any = None,
    files: dict[str, str] | None = None,
    include_dirs: list[str] | None = None,
    defines: dict[str, str | None] | None = None,
) -> tuple[TranslationResult, str]:
    """Answer from the tenant's stored proof when there is one, else run the engine.

    Returns ``(result, cache_key)``; ``cache_key`` is non-empty only for a fresh result whose
    every kernel is verified, and the caller stores it on the run it records so the next
    identical request finds it. Engine errors propagate unchanged.
    """
    options: dict[str, Any] = {
        "kernel": (kernel or "").lower(),
        "verify": verify,
        "llm": llm_fallback is not None,
    }
    if include_dirs or defines:
        options["include_dirs"] = sorted(include_dirs or [])
        options["defines"] = dict(sorted((defines or {}).items()))
    key = result_cache_key(
        sources=files if files is not None else {filename: source},
        target=target,
        sizes=sizes,
        seed=seed,
        options=options,
    )
    if verify:
        started = time.perf_counter()
        stored = _stored_proof(tenant, key)
        if stored is not None:
            result = _served_from(stored, lookup_ms=(time.perf_counter() - started) * 1000.0)
            if progress is not None:
                progress("verify", 1, 1, f"answered from verified run {stored.pk} (cached)")
            return result, ""
    run_options: dict[str, Any] = {
        "target": target,
        "kernel": kernel,
        "verify": verify,
        "sizes": sizes,
        "seed": seed,
        "progress": progress,
        "llm_fallback": llm_fallback,
        "numba_cache_dir": numba_cache_dir(tenant) if verify and target == "cpu" else None,
        "reference_cache_dir": reference_cache_dir(tenant) if verify else None,
    }
    if files is not None:
        project = project_from_texts(files, include_dirs=include_dirs or [], defines=defines)
        result = engine.translate_project(project, **run_options)
    else:
        result = engine.translate_source(source, filename=filename, **run_options)
    if run_options["numba_cache_dir"] is not None:
        # This tenant's next verification finds its port's sandbox already warm.
        SPARE_PORTS.prepare(
            device=device_for(target),
            numba_cache_dir=run_options["numba_cache_dir"],
            keep=settings.FORTRANSPIRE_SPARE_PORTS,
        )
    proven = verify and bool(result.kernels) and all(k.status == "verified" for k in result.kernels)
    return result, key if proven else ""


def _stored_proof(tenant: Tenant, key: str) -> KernelRun | None:
    with tenant_context(tenant):
        return (
            KernelRun.objects.filter(cache_key=key, status="verified")
            .order_by("created_at")
            .first()
        )


def _served_from(run: KernelRun, *, lookup_ms: float) -> TranslationResult:
    result = TranslationResult.from_dict(run.report)
    result.original_run_id = str(run.pk)
    for k in result.kernels:
        k.cached = True
        # This request's time went into the lookup; the original stages are on the original run.
        k.timings_ms = {"cache": round(lookup_ms, 1)}
        served = f"served from verified run {run.pk} (same source, options and engine)"
        if k.llm_calls:
            served += f"; that run made {k.llm_calls} LLM call(s), this answer none"
        # Usage is counted per request: a cached answer spent no LLM call and no token.
        k.llm_calls = k.llm_tokens = 0
        k.notes = [served, *k.notes]
    return result
