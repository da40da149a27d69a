"""Shared by the MCP bridge tests: a Fortran fixture and an SDK client for the live server.

Tenant hosts (a.localhost, b.localhost) are reached by connecting to 127.0.0.1 and sending the
tenant's Host header, so no resolver setup is needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx2
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

SAXPY = """\
! saxpy: a 1-D loop with no loop-carried dependence (one parallel loop), real(4) arithmetic.
subroutine saxpy(n, a, x, y)
  integer, intent(in) :: n
  real, intent(in) :: a
  real, intent(in) :: x(n)
  real, intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = a * x(i) + y(i)
  end do
end subroutine saxpy
"""


@dataclass
class LiveServer:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def host(self, hostname: str) -> str:
        return f"{hostname}:{self.port}"

    def headers(self, hostname: str, key: str | None = None) -> dict[str, str]:
        headers = {"Host": self.host(hostname)}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def http(self, hostname: str, key: str | None = None) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, headers=self.headers(hostname, key), timeout=30)

    @contextlib.asynccontextmanager
    async def session(
        self, transport: str, hostname: str, key: str, **session_kwargs
    ) -> AsyncIterator[ClientSession]:
        """An initialized MCP ClientSession over ``transport`` ('http' or 'sse')."""
        headers = self.headers(hostname, key)
        if transport == "http":
            async with httpx2.AsyncClient(
                headers=headers, timeout=httpx2.Timeout(60, read=120)
            ) as client:
                async with streamable_http_client(f"{self.url}/mcp", http_client=client) as (
                    read,
                    write,
                ):
                    async with ClientSession(read, write, **session_kwargs) as session:
                        await session.initialize()
                        yield session
        else:
            async with sse_client(
                f"{self.url}/sse", headers=headers, timeout=30, sse_read_timeout=120
            ) as (
                read,
                write,
            ):
                async with ClientSession(read, write, **session_kwargs) as session:
                    await session.initialize()
                    yield session
