"""Outbound HTTP to a URL a tenant chose (the LLM endpoint override), without SSRF.

A host name is resolved once, every address it resolves to must be a global one (unless the
operator allowed private endpoints), and the connection goes to the address that was checked:
the request's URL is rewritten to that IP while the Host header and TLS SNI (and so the
certificate check) keep the name. A DNS answer that changes between the check and the connect
(rebinding) therefore gets nothing.

Spellings such as ``127.1``, ``2130706433``, ``0x7f000001``, ``0``, ``localhost.`` or
``::ffff:127.0.0.1`` are caught because the check looks at what the resolver returns, never at
the host string. Errors say only that the endpoint is not allowed or not reachable: no address,
port or errno that would make the error text a port scanner.
"""

from __future__ import annotations

import ipaddress
import socket

import httpx2


class EndpointRefused(Exception):
    """The endpoint resolves to an address the server must not connect to (or to none)."""


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in (ip.ipv4_mapped, ip.sixtofour, (ip.teredo or (None, None))[1]):
            if embedded is not None:
                return _is_public(embedded)
    return ip.is_global and not ip.is_multicast


def resolve_checked(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses ``host`` resolves to, every one of them checked; EndpointRefused else."""
    host = host.strip("[]")
    name = host.lower().rstrip(".")
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        # RFC 6761: such names are loopback whatever a resolver says (or fails to say).
        raise EndpointRefused(
            "the LLM endpoint resolves to a loopback, private or reserved address, "
            "which is not allowed here"
        )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise EndpointRefused("the LLM endpoint's host name does not resolve") from None
    addresses = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if not allow_private and not _is_public(ip):
            raise EndpointRefused(
                "the LLM endpoint resolves to a loopback, private or reserved address, "
                "which is not allowed here"
            )
        addresses.append(str(ip))
    if not addresses:
        raise EndpointRefused("the LLM endpoint's host name does not resolve")
    return addresses


class PinnedTransport(httpx2.HTTPTransport):
    """Connects to the checked address of the request's host, keeping its name for Host/SNI."""

    def __init__(self, *, allow_private: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.allow_private = allow_private

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = resolve_checked(host, port, allow_private=self.allow_private)
        # The Host header was set from the name when the request was built; SNI and the
        # certificate check use the name too, while the socket goes to a checked address.
        request.extensions = {**request.extensions, "sni_hostname": host}
        for index, address in enumerate(addresses):
            request.url = url.copy_with(host=address)
            try:
                return super().handle_request(request)
            except httpx2.ConnectError:
                if index == len(addresses) - 1:
                    raise
        raise AssertionError("unreachable")  # resolve_checked returns at least one address


def pinned_client(*, allow_private: bool, timeout_s: float) -> httpx2.Client:
    return httpx2.Client(
        transport=PinnedTransport(allow_private=allow_private),
        timeout=timeout_s,
        follow_redirects=False,  # a redirect would be a second, unchecked destination
    )
