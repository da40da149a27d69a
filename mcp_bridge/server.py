"""The MCPServer instance and its tool registry (the single source for the connector manifest)."""

from __future__ import annotations

import inspect

from mcp.server.mcpserver import MCPServer

from mcp_bridge.tools import TOOLS

SERVER_NAME = "fortranspire"
INSTRUCTIONS = (
    "fortranspire ports Fortran HPC kernels (stencils, loop nests) to Python: numba CPU code "
    "(translate_kernel) and numba.cuda GPU kernels (translate_kernel_gpu). Every port is verified "
    "against the original compiled with gfortran; report max_abs_err/max_ulp to the user. Use "
    "profile_kernels first on a large file to pick the hot kernels, list_kernel_runs / "
    "get_kernel_run to recall earlier ports, and ask_agent for explanations or hard cases."
)


def build_server() -> MCPServer:
    """A fresh MCPServer with the six tools registered."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        server_version = version("fortranspire")
    except PackageNotFoundError:
        server_version = "0.0.0"
    server = MCPServer(
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
