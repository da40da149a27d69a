"""The six MCP tools. Thin edges: check scope and limits, call a kernels service off the event
loop, shape the answer (structured content + a text rendering). They never touch the ORM.

Every call leaves a KernelRun behind: the services record successful and failed jobs
themselves; refusals that happen before a service runs (scope, rate limit, size, job cap) are
recorded here through ``kernels.services.kernel_run_record``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import Field

from fortranspire_site.errors import (
    ApplicationError,
    AuthenticationFailed,
    PermissionDenied,
    ValidationFailed,
)
from kernels.limits import rate_limit_check
from mcp_bridge.auth import TOOL_SCOPES, TenantAccessToken
from mcp_bridge.hosts import run_db

logger = logging.getLogger(__name__)

STAGES = ("parse", "analyse", "generate", "verify")

LLM_SETUP_HELP = (
    "ask_agent is not available on this server yet (no LLM engine installed); the deterministic "
    "translate and profile tools work without one."
)

SourceArg = Annotated[
    str,
    Field(
        description="Fortran 90+ source text (free form) holding one or more subroutines/functions."
    ),
]
KernelArg = Annotated[
    str | None,
    Field(
        description="Name of the one subroutine to port; all kernels in the source when omitted."
    ),
]
VerifyArg = Annotated[
    bool,
    Field(
        description="Run the port and the gfortran-compiled original on the same random inputs and compare."
    ),
]
FilesArg = Annotated[
    dict[str, str] | None,
    Field(
        description="Instead of source: a project of several files {name: text} (modules visible "
        "across files, headers for #include); each kernel reports its file. Pass source='' then."
    ),
]
IncludeDirsArg = Annotated[
    list[str] | None,
    Field(description="Directories among the file names searched by #include and include."),
]
DefinesArg = Annotated[
    dict[str, str | None] | None,
    Field(description='Preprocessor macros, e.g. {"N": "64", "USE_FAST_PATH": null}.'),
]
SizesArg = Annotated[
    dict[str, int] | None,
    Field(
        description='Values for size arguments/parameters used when verifying, e.g. {"n": 1000}.'
    ),
]


# --------------------------------------------------------------------------------------------
# plumbing shared by the tools


def caller(ctx: Context) -> TenantAccessToken:
    """The access token the transport authenticated for this request (tenant + key + scopes)."""
    request = getattr(ctx.request_context, "request", None)
    scope = getattr(request, "scope", None) or {}
    user = scope.get("user")
    token = user.access_token if isinstance(user, AuthenticatedUser) else None
    if not isinstance(token, TenantAccessToken) or token.tenant is None:
        raise AuthenticationFailed(
            "This tool needs an API key sent as 'Authorization: Bearer <key>'."
        )
    return token


def error_result(error: ApplicationError) -> CallToolResult:
    data = error.to_dict()
    text = error.message
    retry_after = data.get("retry_after")
    if retry_after is not None:
        text += f" (retry_after={retry_after}s)"
    return CallToolResult(
        content=[TextContent(type="text", text=f"{data['error']}: {text}")],
        structured_content=data,
        is_error=True,
    )


def _engine_error_to_application(exc: Exception) -> ApplicationError | None:
    from kernels.engine.report import EngineError

    if isinstance(exc, EngineError):
        return ValidationFailed(
            exc.message, extra={"diagnostics": exc.to_dict().get("diagnostics", [])}
        )
    return None


class _ProgressReporter:
    """Job progress (from kernels.jobs.job_wait) as MCP progress notifications.

    MCP requires progress to increase, so stage k of the four maps onto [k, k + 0.9] by its own
    done/total (total 4); an update that would not move forward is dropped.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.last = -1.0

    async def __call__(self, stage: str, done: int, total: int, message: str) -> None:
        if not stage:
            return
        index = STAGES.index(stage) if stage in STAGES else len(STAGES) - 1
        fraction = min(max((done / total) if total else 1.0, 0.0), 1.0)
        value = index + 0.9 * fraction
        if value <= self.last:
            return
        self.last = value
        try:
            await self.ctx.report_progress(
                value, float(len(STAGES)), f"{stage}: {message}" if message else stage
            )
        except Exception:  # progress must never break the job (client gone)
            logger.debug("progress notification failed", exc_info=True)


async def _run_job(ctx: Context, submit: Callable[[], Any]) -> dict[str, Any]:
    """Submit a job through the job service and wait for it, streaming progress."""
    from kernels import jobs

    run = await run_db(submit)
    if not run.finished:
        run = await jobs.job_wait(
            tenant=run_tenant(ctx), run_id=str(run.id), on_progress=_ProgressReporter(ctx)
        )
    return jobs.job_outcome(run)


def run_tenant(ctx: Context):
    return caller(ctx).tenant


def rate_key(token: TenantAccessToken) -> str:
    """The same bucket as the key's REST calls (kernels.api.rate_key)."""
    if token.api_key is not None:
        return f"key:{token.api_key.pk}"
    return f"client:{token.client_id}"


def _record_refusal(
    token: TenantAccessToken | None,
    tool: str,
    error: ApplicationError | str,
    started: float,
    source: str = "",
) -> None:
    """Record a call that never reached a service (so the history shows refusals too)."""
    if token is None:
        return
    from kernels.services import kernel_run_record

    message = error.message if isinstance(error, ApplicationError) else str(error)
    try:
        kernel_run_record(
            tenant=token.tenant,
            channel="mcp",
            tool=tool,
            status="failed",
            source=source,
            error=message,
            duration_ms=int((time.monotonic() - started) * 1000),
            api_key=token.api_key,
            user=token.user,
        )
    except Exception:
        logger.exception("could not record the refused %s call", tool)


def _record_success(
    token: TenantAccessToken, tool: str, started: float, report: dict | None = None
) -> None:
    from kernels.services import kernel_run_record

    try:
        kernel_run_record(
            tenant=token.tenant,
            channel="mcp",
            tool=tool,
            status="ok",
            duration_ms=int((time.monotonic() - started) * 1000),
            api_key=token.api_key,
            user=token.user,
            report=report or {},
        )
    except Exception:
        logger.exception("could not record the %s call", tool)


async def _guarded(
    ctx: Context,
    tool: str,
    body: Callable[[TenantAccessToken], Any],
    *,
    source: str | None = None,
    service_records: bool = True,
) -> CallToolResult:
    """Rate limit and scope checks around ``body``; errors become tool errors.

    Jobs (translate, profile, ask) go through kernels.jobs, which checks the input and the
    tenant's job cap and records the run from acceptance on.

    ``service_records``: the service called by ``body`` writes the KernelRun itself on success,
    and on engine failures (its error then carries ``run_id``). Every other outcome is recorded
    here, so each call leaves exactly one KernelRun.
    """
    started = time.monotonic()
    token: TenantAccessToken | None = None
    try:
        token = caller(ctx)
        # First, so that refused calls count against the key too.
        await run_db(rate_limit_check, key=rate_key(token))
        needed = TOOL_SCOPES[tool]
        if needed not in token.scopes:
            raise PermissionDenied(
                f"This API key or access token lacks the '{needed}' scope that {tool} needs. "
                "Create a key with that scope in the dashboard, or reconnect and approve it.",
                extra={"scope": needed},
            )
        result = await body(token)
        if not service_records:
            await run_db(_record_success, token, tool, started)
        return result
    except ApplicationError as exc:
        if "run_id" not in exc.extra:
            await run_db(_record_refusal, token, tool, exc, started, source or "")
        return error_result(exc)
    except Exception as exc:
        converted = _engine_error_to_application(exc)
        if converted is None:
            logger.exception("%s failed", tool)
            converted = ApplicationError(f"{tool} failed: {type(exc).__name__}: {exc}")
            converted.code = "internal_error"
        await run_db(_record_refusal, token, tool, converted, started, source or "")
        return error_result(converted)


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def structured_result(data: dict, *extra: Any) -> CallToolResult:
    """A successful result: ``data`` as structuredContent (it follows the tool's outputSchema)
    and the same JSON as text, for clients that read only text; ``extra`` content (a chart)
    goes after it."""
    return CallToolResult(
        content=[TextContent(type="text", text=_json_text(data)), *extra],
        structured_content=data,
    )


# --------------------------------------------------------------------------------------------
# the tools


async def _translate(
    ctx: Context,
    tool: str,
    target: str,
    source: str,
    kernel: str | None,
    verify: bool,
    sizes: dict | None,
    files: dict[str, str] | None = None,
    include_dirs: list[str] | None = None,
    defines: dict[str, str | None] | None = None,
) -> CallToolResult:
    async def body(token: TenantAccessToken) -> CallToolResult:
        from kernels.jobs import job_translate_submit

        data = await _run_job(
            ctx,
            lambda: job_translate_submit(
                tenant=token.tenant,
                source=source,
                files=files,
                include_dirs=include_dirs,
                defines=defines,
                channel="mcp",
                tool=tool,
                target=target,
                kernel=kernel,
                verify=verify,
                sizes=sizes,
                api_key=token.api_key,
                user=token.user,
            ),
        )
        return structured_result(data)

    if files is not None:
        from kernels.services import project_source_text

        source = project_source_text(files)
    return await _guarded(ctx, tool, body, source=source)


async def translate_kernel(
    source: SourceArg,
    ctx: Context,
    kernel: KernelArg = None,
    verify: VerifyArg = True,
    sizes: SizesArg = None,
    files: FilesArg = None,
    include_dirs: IncludeDirsArg = None,
    defines: DefinesArg = None,
) -> CallToolResult:
    """Port Fortran kernels to Python with numba (CPU, @njit + prange) and verify the port.

    The deterministic compiler pipeline (parse -> analyse -> generate) needs no LLM. With
    verify=true each kernel is compiled with gfortran and both versions run on the same random
    inputs; every INTENT(OUT/INOUT) argument is compared. Returns the CLI JSON shape
    ({file, target, kernels: [{name, status, max_abs_err, max_rel_err, max_ulp, llm_calls,
    parallel_loops, device, code, diagnostics, coverage}]}) plus run_id for get_kernel_run.
    Status is verified, inconclusive, translated, mismatch, unsupported or failed; verified means
    the outputs match and every DO loop ran in the reference (coverage.loops_run == coverage.loops),
    inconclusive that some loop never ran at the sizes tried (pass sizes so that it runs).
    """
    return await _translate(
        ctx, "translate_kernel", "cpu", source, kernel, verify, sizes, files, include_dirs, defines
    )


async def translate_kernel_gpu(
    source: SourceArg,
    ctx: Context,
    kernel: KernelArg = None,
    verify: VerifyArg = True,
    sizes: SizesArg = None,
    files: FilesArg = None,
    include_dirs: IncludeDirsArg = None,
    defines: DefinesArg = None,
) -> CallToolResult:
    """Port Fortran kernels to numba.cuda GPU kernels (plus a host driver) and verify the port.

    Same inputs and result shape as translate_kernel; device says where verification ran
    (gpu, or simulator when the server has no GPU). Returns the CLI JSON shape plus run_id.
    """
    return await _translate(
        ctx,
        "translate_kernel_gpu",
        "gpu",
        source,
        kernel,
        verify,
        sizes,
        files,
        include_dirs,
        defines,
    )


def _profile_image(data: dict) -> tuple[dict, ImageContent | None]:
    """Pull a PNG chart out of the profile dict (bytes or base64) into an ImageContent."""
    import base64

    for key in ("chart_png", "plot_png", "png"):
        raw = data.get(key)
        if raw:
            rest = {k: v for k, v in data.items() if k != key}
            encoded = (
                base64.b64encode(raw).decode() if isinstance(raw, bytes | bytearray) else str(raw)
            )
            return rest, ImageContent(type="image", data=encoded, mime_type="image/png")
    return data, None


def _profile_chart(data: dict) -> bytes | None:
    """The profile's roofline/timing chart as PNG bytes (None if it cannot be drawn)."""
    try:
        from kernels.engine.plot import render_plot_png

        return render_plot_png(data)
    except Exception:  # a missing chart must not fail the profile itself
        logger.warning("profile chart could not be rendered", exc_info=True)
        return None


async def profile_kernels(
    source: SourceArg, ctx: Context, sizes: SizesArg = None
) -> CallToolResult:
    """Find the kernels in Fortran source and rank them by estimated cost (static analysis).

    For each kernel: loop nests, flop and byte counts as formulas of the sizes, arithmetic
    intensity, whether the hot loops are parallel, and the estimated share of the run time, so
    you know which kernel to port first. Returns the profile as structured content plus a PNG
    chart when available, and run_id.
    """

    async def body(token: TenantAccessToken) -> CallToolResult:
        from kernels.jobs import job_profile_submit

        data = await _run_job(
            ctx,
            lambda: job_profile_submit(
                tenant=token.tenant,
                source=source,
                channel="mcp",
                tool="profile_kernels",
                sizes=sizes,
                api_key=token.api_key,
                user=token.user,
            ),
        )
        chart = None
        if not any(k in data for k in ("chart_png", "plot_png", "png")):
            chart = await anyio.to_thread.run_sync(_profile_chart, data)
        data, image = _profile_image(data)
        if image is None and chart:
            _, image = _profile_image({"chart_png": chart})
        return structured_result(data, *([image] if image is not None else []))

    return await _guarded(ctx, "profile_kernels", body, source=source)


async def ask_agent(
    question: Annotated[
        str, Field(description="What you want to know or have done, in plain language.")
    ],
    ctx: Context,
    source: Annotated[
        str | None, Field(description="Fortran source the question is about (optional).")
    ] = None,
    run_id: Annotated[
        str | None,
        Field(description="id of an earlier kernel run to discuss (from list_kernel_runs)."),
    ] = None,
) -> CallToolResult:
    """Ask the fortranspire agent (Mistral) about porting Fortran: explain a port, why a loop
    is not parallel, how to restructure a kernel, or fix a run that did not verify. It can use
    an earlier run (run_id) and proposes code that is verified like any other port.
    Needs an LLM configured for the organisation; otherwise returns an error saying how.
    """

    async def body(token: TenantAccessToken) -> CallToolResult:
        from kernels.jobs import job_ask_submit

        answer = await _run_job(
            ctx,
            lambda: job_ask_submit(
                tenant=token.tenant,
                question=question,
                source=source,
                run_id=run_id,
                channel="mcp",
                api_key=token.api_key,
                user=token.user,
            ),
        )
        return structured_result(dict(answer))

    return await _guarded(ctx, "ask_agent", body, source=source or "")


async def list_kernel_runs(
    ctx: Context,
    limit: Annotated[
        int, Field(ge=1, le=100, description="How many runs to return (newest first).")
    ] = 20,
    offset: Annotated[int, Field(ge=0, description="How many of the newest runs to skip.")] = 0,
) -> CallToolResult:
    """List this organisation's earlier kernel runs (newest first): tool, kernels, status,
    timing and llm_calls, so you can recall earlier ports and fetch one with get_kernel_run.
    """

    async def body(token: TenantAccessToken) -> CallToolResult:
        from kernels.selectors import kernel_run_list

        runs = await run_db(
            lambda: [
                r.to_dict()
                for r in kernel_run_list(tenant=token.tenant, limit=limit, offset=offset)
            ]
        )
        return structured_result(
            {"runs": runs, "limit": limit, "offset": offset, "count": len(runs)}
        )

    return await _guarded(ctx, "list_kernel_runs", body, service_records=False)


async def get_kernel_run(
    run_id: Annotated[
        str, Field(description="The run id returned by a translate tool or list_kernel_runs.")
    ],
    ctx: Context,
) -> CallToolResult:
    """Fetch one earlier kernel run of this organisation: its source, the full report (the
    translate result with errors per argument) and the generated code.
    """

    async def body(token: TenantAccessToken) -> CallToolResult:
        from kernels.selectors import kernel_run_get

        data = await run_db(
            lambda: kernel_run_get(tenant=token.tenant, run_id=run_id).to_dict(
                include_source=True, include_report=True
            )
        )
        return structured_result(data)

    return await _guarded(ctx, "get_kernel_run", body, service_records=False)


READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
JOB = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)

TOOLS: list[tuple[Callable[..., Any], str, ToolAnnotations]] = [
    (translate_kernel, "Translate Fortran kernels to numba (CPU)", JOB),
    (translate_kernel_gpu, "Translate Fortran kernels to numba.cuda (GPU)", JOB),
    (profile_kernels, "Profile Fortran kernels", JOB),
    (
        ask_agent,
        "Ask the porting agent",
        ToolAnnotations(read_only_hint=False, open_world_hint=True),
    ),
    (list_kernel_runs, "List earlier kernel runs", READ_ONLY),
    (get_kernel_run, "Get one kernel run", READ_ONLY),
]
