"""Which tenant a Host header belongs to, and the DNS-rebinding allow-list kept in step with it.

The tenants' domains live in the database. New tenants must work without a restart, so the
known set is re-read every MCP_TENANT_HOSTS_TTL_S seconds and a host that is not known yet is
looked up before it is refused.

The lookups every MCP request depends on (tenant by host, key and token checks) run on one
thread of their own, :data:`lookup_thread`, which keeps its database connection between them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
from mcp.server.transport_security import TransportSecuritySettings

from mcp_bridge.limits import limit_setting


def hostname_of(host_header: str | None) -> str:
    """'A.Localhost:8000' -> 'a.localhost'; '[::1]:80' -> '::1'."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _db_call(fn, /, *args, **kwargs):
    from django.db import close_old_connections

    # Worker threads outlive requests; Django only recycles connections on request signals.
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


async def run_db(fn, /, *args, **kwargs) -> Any:
    """Run blocking ORM / service code in a worker thread so the event loop stays free."""
    return await anyio.to_thread.run_sync(lambda: _db_call(fn, *args, **kwargs))


class LookupThread:
    """One thread, with one database connection kept open, for the bridge's hot lookups.

    ``run_db`` opens and closes a connection per call (CONN_MAX_AGE is 0 and its threads are
    shared with tools); a PostgreSQL connection costs ~5-10 ms and a server process per open.
    The lookups here are short single-row reads that every MCP request depends on: the tenant of
    a host and the re-checks of cached keys (mcp_bridge.auth), several per second per process
    under load. A connection that failed is closed and the next lookup opens a new one. The
    ASGI lifespan calls :meth:`stop` on shutdown, which closes the connection in its own thread.
    """

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    async def run(self, fn, /, *args, **kwargs) -> Any:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="mcp-lookups")
            executor = self._executor
        return await asyncio.wrap_future(executor.submit(self._call, fn, args, kwargs))

    @staticmethod
    def _call(fn, args: tuple, kwargs: dict) -> Any:
        from django.db import InterfaceError, OperationalError, connection

        # A kept connection may have gone (database restarted, idle timeout): then once more on
        # a new one. The lookups are reads (and one idempotent last-used stamp), safe to repeat.
        attempts = 2 if connection.connection is not None else 1
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except (InterfaceError, OperationalError):
                connection.close()
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Close the thread's connection (from that thread, which owns it) and end the thread."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        executor.submit(_close_this_threads_connection).result()
        executor.shutdown(wait=True)


def _close_this_threads_connection() -> None:
    from django.db import connection  # resolved per thread when used

    connection.close()


lookup_thread = LookupThread()


class TenantDirectory:
    """Host -> tenant, cached for a short TTL, plus the TransportSecuritySettings the SDK checks."""

    def __init__(self) -> None:
        self.security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=[], allowed_origins=[]
        )
        self._tenants: dict[str, tuple[Any, float]] = {}
        self._misses: dict[str, float] = {}
        self._domains: set[str] = set()
        self._domains_loaded = 0.0

    def clear(self) -> None:
        self._tenants.clear()
        self._misses.clear()
        self._domains.clear()
        self._domains_loaded = 0.0

    def cached(self, host_header: str | None) -> Any | None:
        """The tenant serving ``host_header`` if this process knows it now, without any lookup.

        None when the host is unknown, its entry is stale, the domain list is due a re-read
        (:meth:`resolve` does that work), or the header is not in a form the SDK's DNS-rebinding
        check admits (``name`` or ``name:port`` exactly as published in ``security``): whoever
        answers on this alone must not accept a Host the SDK would refuse.
        """
        ttl = limit_setting("MCP_TENANT_HOSTS_TTL_S")
        now = time.monotonic()
        if not host_header or now - self._domains_loaded > ttl:
            return None
        hostname = hostname_of(host_header)
        if ":" in hostname or hostname not in self._domains:
            return None  # IPv6 literals are bracketed in the allow-list: leave them to resolve()
        if host_header != hostname and not host_header.startswith(hostname + ":"):
            return None
        cached = self._tenants.get(hostname)
        if cached is None or now - cached[1] > ttl:
            return None
        return cached[0]

    async def resolve(self, host_header: str | None) -> Any | None:
        """The tenant serving ``host_header``, or None when no tenant has that domain."""
        hostname = hostname_of(host_header)
        if not hostname:
            return None
        ttl = limit_setting("MCP_TENANT_HOSTS_TTL_S")
        now = time.monotonic()
        if now - self._domains_loaded > ttl:
            await self._reload_domains(now)
        cached = self._tenants.get(hostname)
        if cached is not None and now - cached[1] <= ttl:
            return cached[0]
        # A short negative cache: unknown hosts are refused cheaply, yet a tenant created a
        # moment ago is found within a second.
        missed = self._misses.get(hostname)
        if missed is not None and now - missed < 1.0:
            return None
        from tenants.selectors import tenant_for_host

        tenant = await lookup_thread.run(tenant_for_host, hostname)
        if tenant is not None and getattr(tenant, "schema_name", None) == "public":
            tenant = None  # the public site is no tenant: it has no keys and no history
        if tenant is None:
            self._misses[hostname] = now
            if (
                len(self._misses) > 10_000
            ):  # a scanner spraying Host headers must not grow this forever
                self._misses.clear()
            return None
        self._misses.pop(hostname, None)
        self._tenants[hostname] = (tenant, now)
        if hostname not in self._domains:
            self._domains.add(hostname)
            self._publish()
        return tenant

    async def _reload_domains(self, now: float) -> None:
        from tenants.selectors import tenant_domains

        domains = {hostname_of(d) for d in await lookup_thread.run(tenant_domains)}
        self._domains = {d for d in domains if d}
        self._domains_loaded = now
        # Drop cached tenants whose domain went away (tenant deleted or domain moved).
        for hostname in list(self._tenants):
            if hostname not in self._domains:
                del self._tenants[hostname]
        self._publish()

    def _publish(self) -> None:
        hosts: list[str] = []
        origins: list[str] = []
        for domain in sorted(self._domains):
            name = f"[{domain}]" if ":" in domain else domain
            hosts += [name, f"{name}:*"]
            origins += [
                f"http://{name}",
                f"https://{name}",
                f"http://{name}:*",
                f"https://{name}:*",
            ]
        # The SDK transports hold this settings object by reference, so replacing the lists
        # updates their checks in place.
        self.security.allowed_hosts = hosts
        self.security.allowed_origins = origins


tenant_directory = TenantDirectory()
