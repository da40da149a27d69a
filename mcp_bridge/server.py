"""The MCPServer instance and its tool registry (the single source for the connector manifest)."""

from __future__ import annotations

import inspect
import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, TextContent
from mcp_types import Tool as MCPTool
from pydantic import ValidationError

from mcp_bridge.schemas import OUTPUT_SCHEMAS
from mcp_bridge.tools import TOOLS

SERVER_NAME = "fortranspire"
INSTRUCTIONS = (
    "fortranspire ports Fortran HPC kernels (stencils, loop nests) to Python: numba CPU code "
    "(translate_kernel) and numba.cuda GPU kernels (translate_kernel_gpu). Every port is verified "
    "against the original compiled with gfortran; report max_abs_err/max_ulp to the user. Use "
    "profile_kernels first on a large file to pick the hot kernels, list_kernel_runs / "
    "get_kernel_run to recall earlier ports, and ask_agent for explanations or hard cases."
)


def _field_name(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "arguments"


def argument_error_sentences(tool: str, error: ValidationError) -> str:
    """A pydantic ValidationError as sentences a person (or a model) can act on."""
    sentences = []
    for item in error.errors():
        field = _field_name(item.get("loc", ()))
        kind = item.get("type", "")
        if kind == "missing":
            sentences.append(f"The argument '{field}' is required.")
        elif kind == "extra_forbidden":
            sentences.append(f"{tool} takes no argument '{field}'.")
        else:
            message = str(item.get("msg", "is not valid")).rstrip(".")
            sentences.append(
                f"The argument '{field}' is not valid: {message[:1].lower()}{message[1:]}."
            )
    return f"{tool} was called with invalid arguments. " + " ".join(sentences)


class FortranspireServer(MCPServer):
    """MCPServer whose tools declare an outputSchema and whose argument errors read as sentences.

    The tools return CallToolResult themselves (structured content + the same JSON as text), so
    the SDK cannot derive their output schemas from return annotations; they come from
    mcp_bridge.schemas.
    """

    async def list_tools(self) -> list[MCPTool]:
        return [
            tool.model_copy(update={"output_schema": OUTPUT_SCHEMAS[tool.name]})
            for tool in await super().list_tools()
        ]

    async def call_tool(self, name: str, arguments: dict[str, Any], context=None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            text = argument_error_sentences(name, cause)
            data = {
                "error": "invalid_arguments",
                "message": text,
                "fields": sorted({_field_name(e.get("loc", ())) for e in cause.errors()}),
            }
            return CallToolResult(
                content=[TextContent(type="text", text=json.dumps(data, indent=2))],
                structured_content=data,
                is_error=True,
            )


def build_server() -> MCPServer:
    """A fresh MCPServer with the six tools registered."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        server_version = version("fortranspire")
    except PackageNotFoundError:
        server_version = "0.0.0"
    server = FortranspireServer(
        SERVER_NAME,
        title="fortranspire",
        description="Port Fortran kernels to numba CPU / numba.cuda GPU code, verified against gfortran.",
        instructions=INSTRUCTIONS,
        version=server_version,
        log_level="WARNING",
    )
    for fn, title, hints in TOOLS:
        server.add_tool(
            fn,
            title=title,
            # The docstring is what the model reads: strip the source indentation.
            description=inspect.cleandoc(fn.__doc__ or ""),
            annotations=hints,
            structured_output=False,
        )
    return server


mcp_server = build_server()
