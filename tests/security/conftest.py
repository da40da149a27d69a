"""The live MCP server fixture (``mcp_live``) for the MCP-path attack test, shared with tests/mcp_bridge."""

from tests.mcp_bridge.conftest import mcp_live  # noqa: F401 - re-exported as a fixture here
