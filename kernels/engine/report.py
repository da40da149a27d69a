"""What the engine hands back: result dataclasses and the one exception family it raises.

The JSON shape produced by :meth:`TranslationResult.to_dict` is the public contract shared by
the CLI (``--json``), the ninja API and the MCP translate tools (which add ``run_id``). Keep the
field names exactly as DESIGN.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

# ``verified`` needs matching outputs AND every DO loop of the kernel run in the reference;
# ``inconclusive``: the outputs match but some loop never ran at the sizes tried.
STATUSES = ("verified", "inconclusive", "translated", "mismatch", "unsupported", "failed")
DEVICES = ("cpu", "gpu", "simulator")
TARGETS = ("cpu", "gpu")

# progress(stage, done, total, message): stages are parse, analyse, generate, verify, profile
ProgressCallback = Callable[[str, int, int, str], None]

#: The stages a kernel's ``timings_ms`` reports, in the order they happen. ``parse`` is the
#: file's parse (shared by its kernels). With verification, the port's sandbox is started with the
#: request, or was kept warm since the tenant's last one (``port_start``: what is left of its
#: interpreter start, numpy/numba import and numba warm-up once the request takes it, running
#: while parse, analyse and generate run); then the gfortran side (``gfortran_compile``: a few
#: milliseconds when the tenant's cached build is loaded, ``reference_run``) and the numba side
#: (``numba_compile``: a load when the tenant's numba cache has the port, ``port_run``) run
#: concurrently. A kernel's wall time is then about max(parse + analyse + generate + the gfortran
#: side, max(port_start, parse + analyse + generate) + the numba side) + compare.
TIMING_STAGES = (
    "parse",
    "analyse",
    "generate",
    "port_start",
    "gfortran_compile",
    "reference_run",
    "numba_compile",
    "port_run",
    "compare",
)


@dataclass
class Diagnostic:
    line: int
    column: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "message": self.message}


@dataclass
class ArgError:
    """Comparison of one INTENT(OUT/INOUT) argument between gfortran and the port."""

    name: str
    max_abs_err: float
    max_rel_err: float
    max_ulp: float
    passed: bool
    tolerance: str = ""


@dataclass
class KernelResult:
    name: str
    status: str
    device: str
    file: str = ""  # the file the kernel is in, as the user named it
    code: str = ""
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    max_ulp: float | None = None
    llm_calls: int = 0
    parallel_loops: int = 0
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Beyond the contract: extra detail a reader wants, carried in the JSON too.
    line: int = 0
    entry: str = ""  # the Python function to call in ``code``
    arguments: list[ArgError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    llm_tokens: int = 0  # prompt + completion tokens the LLM fallback spent on this kernel
    # {loops, loops_run, lines, lines_run} of the reference run; None when nothing was run.
    coverage: dict[str, int] | None = None
    # GPU target: modeled traffic and launches per time step (kernels.engine.gpu_model).
    gpu_model: dict[str, Any] | None = None
    # Milliseconds per stage of TIMING_STAGES that ran for this kernel (a stage that did not run
    # is absent). A cached answer reports only the lookup, under ``cache``.
    timings_ms: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "file": self.file,
            "status": self.status,
            "coverage": dict(self.coverage) if self.coverage is not None else None,
            "max_abs_err": self.max_abs_err,
            "max_rel_err": self.max_rel_err,
            "max_ulp": self.max_ulp,
            "llm_calls": self.llm_calls,
            "parallel_loops": self.parallel_loops,
            "device": self.device,
            "code": self.code,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "line": self.line,
            "entry": self.entry,
            "arguments": [asdict(a) for a in self.arguments],
            "notes": list(self.notes),
            "sizes": dict(self.sizes),
            "llm_tokens": self.llm_tokens,
            "timings_ms": dict(self.timings_ms),
            "cached": self.cached,
        }
        if self.gpu_model is not None:
            out["gpu_model"] = dict(self.gpu_model)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KernelResult:
        """Rebuild a result from :meth:`to_dict`'s output (a stored report)."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["diagnostics"] = [Diagnostic(**d) for d in data.get("diagnostics") or []]
        values["arguments"] = [ArgError(**a) for a in data.get("arguments") or []]
        return cls(**values)


@dataclass
class TranslationResult:
    file: str
    target: str
    kernels: list[KernelResult] = field(default_factory=list)
    # Set when this result is a stored proof served again (kernels.result_cache): the run that
    # produced it.
    original_run_id: str | None = None

    @property
    def ok(self) -> bool:
        """True when every kernel is verified (or translated when verification was skipped)."""
        return bool(self.kernels) and all(
            k.status in ("verified", "translated") for k in self.kernels
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "file": self.file,
            "target": self.target,
            "kernels": [k.to_dict() for k in self.kernels],
        }
        if self.original_run_id is not None:
            data["cached"] = True
            data["original_run_id"] = self.original_run_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TranslationResult:
        return cls(
            file=data["file"],
            target=data["target"],
            kernels=[KernelResult.from_dict(k) for k in data.get("kernels") or []],
            original_run_id=data.get("original_run_id"),
        )


class EngineError(Exception):
    """Base of every error the engine raises on purpose. Edges map it to exit 2 / HTTP 400 / tool error."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None):
        super().__init__(message)
        self.message = message
        self.diagnostics = diagnostics or []

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }


class FortranSyntaxError(EngineError):
    """Malformed Fortran: carries the line and column fparser reported."""


class ForbiddenStatementError(EngineError):
    """The source touches the outside world (OPEN, EXECUTE_COMMAND_LINE, SYSTEM, file I/O)."""


class SandboxError(EngineError):
    """A sandboxed step failed: compiler error, time or memory limit, crash."""
