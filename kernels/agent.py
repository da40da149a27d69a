"""ask_agent and the LLM fallback, for one tenant: credentials in, KernelRun history out.

- :func:`agent_ask` runs the Mistral function-calling loop (``kernels.engine.llm.run_agent``)
  over local tools that go through the same services as every other edge, so each translation
  or profile the agent does is itself a KernelRun, and records the conversation as one more.

The tools run with the tenant of the request bound in a closure: the model can name a run id or
pass source, but never a tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fortranspire_site.errors import (
    ApplicationError,
    RateLimited,
    ServiceUnavailable,
    ValidationFailed,
)
from kernels import selectors, services
from kernels.engine import llm
from kernels.engine.report import ProgressCallback
from kernels.models import KernelRun
from kernels.services import llm_fallback_for  # noqa: F401 - the agent's public neighbour
from tenants.llm_credentials import llm_config_required
from tenants.models import ApiKey, Tenant

MAX_QUESTION_CHARS = 4000
AGENT_MAX_STEPS = 6
CODE_CHARS_FOR_MODEL = 2500
SOURCE_CHARS_FOR_MODEL = 4000


class LlmProviderError(ApplicationError):
    """Mistral refused or failed the request in a way retrying now will not fix."""

    status = 502
    code = "llm_provider_error"


def llm_error_to_application_error(
    exc: llm.LlmError, *, extra: dict | None = None
) -> ApplicationError:
    """Map a provider failure to what the edges know how to show (status codes, retry_after)."""
    extra = {"llm_error": exc.kind, **(extra or {})}
    if isinstance(exc, llm.LlmRateLimited):
        return RateLimited(exc.message, retry_after=int(exc.retry_after or 30), extra=extra)
    if isinstance(exc, (llm.LlmUnavailable, llm.LlmTimeout)):
        return ServiceUnavailable(exc.message, extra=extra)
    return LlmProviderError(exc.message, extra=extra)


# --------------------------------------------------------------------------------------------
# The service


def ask_params(
    *, question: Any, source: Any = None, run_id: Any = None
) -> tuple[dict[str, Any], str]:
    """The checked options of an ask_agent job: (params, source)."""
    if not isinstance(question, str) or not question.strip():
        raise ValidationFailed("question must be a non-empty string")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValidationFailed(f"question is longer than {MAX_QUESTION_CHARS} characters")
    if source is not None and not (isinstance(source, str) and not source.strip()):
        source = services.source_check(source)
    else:
        source = ""
    if run_id is not None and not isinstance(run_id, str):
        raise ValidationFailed("run_id must be a string")
    return {"question": question, "run_id": run_id or None}, source


def agent_ask(
    *,
    tenant: Tenant,
    question: str,
    source: str | None = None,
    run_id: str | None = None,
    api_key: ApiKey | None = None,
    progress: ProgressCallback | None = None,
    channel: str = "mcp",
    user: Any = None,
    chat_factory: Callable[[llm.LlmConfig], llm.ChatClient] = llm.MistralChat,
    run: KernelRun | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Answer ``question`` with Mistral function calling over the engine and the history.

    Returns (KernelRun, {answer, trace, llm_calls, llm_tokens, stopped, run_id}). Raises
    LlmNotConfigured (with how to configure a key) when the tenant has none, and maps provider
    failures to RateLimited / ServiceUnavailable / LlmProviderError after recording the run.
    """
    params, source = ask_params(question=question, source=source, run_id=run_id)
    config = llm_config_required(tenant=tenant, purpose="agent")

    context_lines = []
    if run_id:
        earlier = selectors.kernel_run_get(tenant=tenant, run_id=run_id)  # NotFound elsewhere
        context_lines.append(
            f"The question is about kernel run {earlier.id} ({earlier.tool or earlier.channel}, "
            f"status {earlier.status}, kernels {', '.join(earlier.kernel_names or []) or '-'}); "
            "call get_kernel_run to read it."
        )
        if not source and earlier.source:
            source = earlier.source
    if source:
        context_lines.append(
            "Fortran source supplied with the question (tools use it when you omit `source`):\n"
            f"```fortran\n{_clip(source, SOURCE_CHARS_FOR_MODEL)}\n```"
        )

    session = _AgentSession(
        tenant=tenant, source=source or None, api_key=api_key, user=user, channel=channel
    )
    chat = chat_factory(config)
    run = services.kernel_run_start_inline(
        tenant=tenant,
        run=run,
        kind="ask",
        channel=channel,
        tool="ask_agent",
        source=source or "",
        target="",
        params=params,
        api_key=api_key,
        user=user,
    )

    def call() -> llm.AgentResult:
        try:
            return llm.run_agent(
                chat,
                question=question,
                tools=session.tools(),
                context="\n\n".join(context_lines),
                max_steps=AGENT_MAX_STEPS,
                progress=progress,
                trace=session.trace_so_far,
            )
        except llm.LlmError as exc:
            services.kernel_run_finish(
                tenant=tenant,
                run=run,
                status="failed",
                source=source or "",
                report={"question": question, "trace": session.trace_so_far, "model": config.model},
                llm_calls=getattr(chat, "calls", 0),
                llm_tokens=getattr(chat, "total_tokens", 0),
                error=f"{exc.kind}: {exc.message}",
            )
            raise llm_error_to_application_error(exc, extra={"run_id": str(run.id)}) from exc

    def outcome(result) -> dict[str, Any]:
        return {
            "status": "ok",
            "source": source or "",
            "kernel_names": sorted(session.kernel_names),
            "report": {
                "question": question,
                "model": config.model,
                "context_run_id": run_id,
                **result.to_dict(),
            },
            "llm_calls": result.llm_calls,
            "llm_tokens": result.llm_tokens,
        }

    result = services.engine_run_recorded(tenant=tenant, run=run, call=call, outcome=outcome)
    return run, {**result.to_dict(), "run_id": str(run.id)}


# --------------------------------------------------------------------------------------------
# Local tools


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... [{len(text) - limit} more chars]"


_SOURCE_PROP = {
    "type": "string",
    "description": "Fortran source; omit to use the source given with the question or run.",
}
_TARGET_PROP = {
    "type": "string",
    "enum": ["cpu", "gpu"],
    "description": "cpu (numba) or gpu (numba.cuda)",
}
_KERNEL_PROP = {"type": "string", "description": "Only this kernel (subroutine name)."}
_SIZES_PROP = {
    "type": "object",
    "additionalProperties": {"type": "integer"},
    "description": 'Problem sizes for verification, e.g. {"n": 256}.',
}


class _AgentSession:
    """The tools of one ask_agent call, bound to its tenant and caller."""

    def __init__(
        self, *, tenant: Tenant, source: str | None, api_key: Any, user: Any, channel: str
    ):
        self.tenant = tenant
        self.source = source
        self.api_key = api_key
        self.user = user
        self.channel = channel
        self.kernel_names: set[str] = set()
        self.trace_so_far: list[dict[str, Any]] = []

    def _source(self, args: dict[str, Any]) -> str:
        source = args.get("source") or self.source
        if not source:
            raise ValidationFailed(
                "no Fortran source: pass `source`, or ask about a run (get_kernel_run) first"
            )
        if not isinstance(source, str):
            raise ValidationFailed("source must be a string")
        return source

    def tools(self) -> list[llm.AgentTool]:
        obj = "object"
        return [
            llm.AgentTool(
                "analyse",
                "Find the kernels in Fortran source: their arguments, loops, which loops are "
                "parallel and why not, reductions, private temporaries, unsupported constructs.",
                {"type": obj, "properties": {"source": _SOURCE_PROP}},
                self.analyse,
                lambda v: (
                    f"{len(v.get('kernels', []))} kernel(s): "
                    + ", ".join(k["name"] for k in v.get("kernels", []))
                ),
            ),
            llm.AgentTool(
                "translate",
                "Translate Fortran kernels to numba (cpu) or numba.cuda (gpu) and verify them "
                "against gfortran. Returns status, errors, and the generated code.",
                {
                    "type": obj,
                    "properties": {
                        "target": _TARGET_PROP,
                        "kernel": _KERNEL_PROP,
                        "verify": {"type": "boolean", "description": "default true"},
                        "allow_llm": {
                            "type": "boolean",
                            "description": "use the tenant's LLM fallback for unsupported kernels",
                        },
                        "source": _SOURCE_PROP,
                    },
                    "required": ["target"],
                },
                self.translate,
                _summarize_translation,
            ),
            llm.AgentTool(
                "verify",
                "Re-verify the port of the kernels against gfortran with chosen sizes and seed; "
                "returns per-argument max abs/rel error and ULP distance.",
                {
                    "type": obj,
                    "properties": {
                        "target": _TARGET_PROP,
                        "kernel": _KERNEL_PROP,
                        "sizes": _SIZES_PROP,
                        "seed": {"type": "integer"},
                        "source": _SOURCE_PROP,
                    },
                },
                self.verify,
                _summarize_translation,
            ),
            llm.AgentTool(
                "profile",
                "Rank the kernels by estimated cost (flops, bytes, arithmetic intensity); "
                "measure=true also times them.",
                {
                    "type": obj,
                    "properties": {
                        "measure": {"type": "boolean"},
                        "sizes": _SIZES_PROP,
                        "source": _SOURCE_PROP,
                    },
                },
                self.profile,
                lambda v: f"profiled {len(v.get('kernels', []) or [])} kernel(s)",
            ),
            llm.AgentTool(
                "get_kernel_run",
                "Read one earlier kernel run of this tenant (report, status, source) by id.",
                {
                    "type": obj,
                    "properties": {"run_id": {"type": "string"}},
                    "required": ["run_id"],
                },
                self.get_kernel_run,
                lambda v: (
                    f"run {v.get('id')}: {v.get('tool') or v.get('channel')} {v.get('status')}"
                ),
            ),
            llm.AgentTool(
                "list_kernel_runs",
                "List this tenant's most recent kernel runs (id, tool, kernels, status).",
                {
                    "type": obj,
                    "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": 20}},
                },
                self.list_kernel_runs,
                lambda v: f"{len(v.get('runs', []))} run(s)",
            ),
        ]

    # -- tool bodies: each goes through the same service/selector as the other edges --------

    def analyse(self, args: dict[str, Any]) -> dict[str, Any]:
        from kernels.engine import find_kernels
        from kernels.engine.analysis import analyse

        kernels = find_kernels(self._source(args))
        out = []
        for k in kernels:
            self.kernel_names.add(k.name)
            described = _describe_kernel(k)
            if not k.unsupported:  # the pipeline only analyses kernels it can represent fully
                described["loops"] = analyse(k).to_dict()["loops"]
            out.append(described)
        return {"kernels": out}

    def _translate(self, args: dict[str, Any], *, tool: str, verify: bool) -> dict[str, Any]:
        target = args.get("target") or "cpu"
        run, result = services.kernel_translate(
            tenant=self.tenant,
            source=self._source(args),
            target=target,
            channel=self.channel,
            kernel=args.get("kernel") or None,
            verify=verify,
            sizes=args.get("sizes") or None,
            seed=int(args.get("seed") or 0),
            api_key=self.api_key,
            user=self.user,
            tool=tool,
            allow_llm=bool(args.get("allow_llm", False)),
        )
        kernels = []
        for k in result.kernels:
            self.kernel_names.add(k.name)
            d = k.to_dict()
            d["code"] = _clip(d.get("code") or "", CODE_CHARS_FOR_MODEL)
            kernels.append(d)
        return {"run_id": str(run.id), "target": target, "kernels": kernels}

    def translate(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._translate(
            args, tool="ask_agent.translate", verify=args.get("verify", True) is not False
        )

    def verify(self, args: dict[str, Any]) -> dict[str, Any]:
        out = self._translate(args, tool="ask_agent.verify", verify=True)
        for k in out["kernels"]:
            k.pop("code", None)  # the figures are what matter here; keep the context small
        return out

    def profile(self, args: dict[str, Any]) -> dict[str, Any]:
        run, data = services.kernel_profile(
            tenant=self.tenant,
            source=self._source(args),
            channel=self.channel,
            sizes=args.get("sizes") or None,
            measure=bool(args.get("measure", False)),
            api_key=self.api_key,
            user=self.user,
        )
        return {"run_id": str(run.id), **(data if isinstance(data, dict) else {"profile": data})}

    def get_kernel_run(self, args: dict[str, Any]) -> dict[str, Any]:
        run = selectors.kernel_run_get(tenant=self.tenant, run_id=str(args.get("run_id") or ""))
        data = run.to_dict(include_source=True, include_report=True)
        if run.source and not self.source:
            self.source = run.source  # later tools can work on the run's source by default
        data["source"] = _clip(data.get("source") or "", SOURCE_CHARS_FOR_MODEL)
        data["generated_code"] = _clip(data.get("generated_code") or "", CODE_CHARS_FOR_MODEL)
        return data

    def list_kernel_runs(self, args: dict[str, Any]) -> dict[str, Any]:
        limit = args.get("limit") or 10
        limit = max(1, min(int(limit), 20))
        return {
            "runs": [
                r.to_dict() for r in selectors.kernel_run_list(tenant=self.tenant, limit=limit)
            ]
        }


def _describe_kernel(k: Any) -> dict[str, Any]:
    from kernels.engine import ir

    loops = [
        {"var": s.var, "line": s.line, "parallel": False, "reason": "not analysed"}
        for s in ir.walk(k.body)
        if isinstance(s, ir.Loop)
    ]
    return {
        "name": k.name,
        "line": k.line,
        "origin": k.origin,
        "arguments": [
            {"name": a.name, "type": str(a.type), "intent": a.intent, "rank": a.rank}
            for a in k.args
        ],
        "loops": loops,
        "unsupported": [{"line": u.line, "construct": u.construct} for u in k.unsupported],
    }


def _summarize_translation(value: dict[str, Any]) -> str:
    parts = []
    for k in value.get("kernels", []):
        text = f"{k['name']}: {k['status']}"
        if k.get("max_ulp") is not None:
            text += f" (max {k['max_ulp']:g} ULP)"
        parts.append(text)
    return f"{value.get('target', '')} " + ("; ".join(parts) or "no kernels")
