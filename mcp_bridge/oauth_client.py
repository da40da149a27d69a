"""An MCP client that connects the way Le Chat does: the mcp SDK's OAuthClientProvider, with a
scripted person who logs in on the tenant's login page and approves the consent form.

Used by ``make demo`` (mcp_bridge/demo.py) and the OAuth tests. Tenant hosts (demo.localhost)
do not resolve on every machine, so every request is sent to 127.0.0.1 while its URL, and so
its Host header, keeps the tenant's name.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

# Loopback, as a desktop client's would be; nothing listens there: the code is read off the
# consent page's redirect.
REDIRECT_URI = "http://127.0.0.1:8976/callback"


class LoopbackTransport(httpx2.AsyncBaseTransport):
    """Connects to 127.0.0.1 whatever the host name; the Host header keeps the name."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        # A copy: the client files cookies under the original request's URL.
        sent = httpx2.Request(
            request.method,
            request.url.copy_with(host="127.0.0.1"),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self.inner.handle_async_request(sent)

    async def aclose(self) -> None:
        await self.inner.aclose()


def loopback_client(**kwargs) -> httpx2.AsyncClient:
    kwargs.setdefault("timeout", httpx2.Timeout(60, read=120))
    return httpx2.AsyncClient(transport=LoopbackTransport(), **kwargs)


@dataclass
class MemoryStorage:
    tokens: OAuthToken | None = None
    client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def _hidden_inputs(html: str) -> dict[str, str]:
    fields = {}
    for tag in re.findall(r"<input[^>]*>", html):
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name and 'type="hidden"' in tag:
            fields[unescape(name.group(1))] = unescape(value.group(1)) if value else ""
    return fields


@dataclass
class Person:
    """Logs in and answers the consent page, like someone in a browser."""

    username: str
    password: str
    scopes: list[str] | None = None  # None: keep every requested scope ticked
    approve: bool = True
    pages: list[str] = field(default_factory=list)

    async def authorize(self, authorize_url: str) -> httpx2.Response:
        """Follow the authorize URL through login and consent; returns the final redirect."""
        async with loopback_client(follow_redirects=False) as browser:
            response = await browser.get(authorize_url)
            if response.status_code == 302 and "/login/" in response.headers["location"]:
                login_url = urljoin(authorize_url, response.headers["location"])
                page = await browser.get(login_url)
                form = _hidden_inputs(page.text)
                response = await browser.post(
                    login_url,
                    data={**form, "username": self.username, "password": self.password},
                    headers={"Referer": login_url},
                )
                if response.status_code != 302:
                    raise RuntimeError(f"login as {self.username!r} failed")
                response = await browser.get(urljoin(authorize_url, response.headers["location"]))
            if response.status_code != 200:
                return response
            self.pages.append(response.text)
            form = _hidden_inputs(response.text)
            requested = form.get("scope", "").split()
            data: dict[str, object] = {**form, "scopes": self.scopes or requested}
            if self.approve:
                data["allow"] = "Approve"
            return await browser.post(
                str(response.url), data=data, headers={"Referer": str(response.url)}
            )


def code_from(redirect: httpx2.Response) -> AuthorizationCodeResult:
    """The code and state the authorization server sent back to the client's redirect URI."""
    location = redirect.headers.get("location", "")
    if redirect.status_code != 302 or not location.startswith(REDIRECT_URI):
        raise RuntimeError(
            f"authorization did not redirect to the client (HTTP {redirect.status_code})"
        )
    query = parse_qs(urlsplit(location).query)
    return AuthorizationCodeResult(
        code=query.get("code", [None])[0],
        state=query.get("state", [None])[0],
        iss=query.get("iss", [None])[0],
    )


@dataclass
class OAuthConnection:
    """One client identity (its registration and tokens survive across sessions)."""

    base_url: str
    person: Person
    scope: str = "translate profile agent history"
    client_name: str = "Le Chat (test)"
    client_metadata_url: str | None = None  # a Client ID Metadata Document instead of DCR
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    authorize_urls: list[str] = field(default_factory=list)
    providers: dict[str, OAuthClientProvider] = field(default_factory=dict)

    def provider(self, transport: str = "http") -> OAuthClientProvider:
        """One provider per transport, kept like a client keeps its auth state."""
        if transport not in self.providers:
            self.providers[transport] = self._new_provider(transport)
        return self.providers[transport]

    def _new_provider(self, transport: str) -> OAuthClientProvider:
        pending: dict[str, str] = {}

        async def redirect_handler(url: str) -> None:
            self.authorize_urls.append(url)
            pending["url"] = url

        async def callback_handler() -> AuthorizationCodeResult:
            return code_from(await self.person.authorize(pending["url"]))

        path = "/mcp" if transport == "http" else "/sse"
        return OAuthClientProvider(
            server_url=f"{self.base_url}{path}",
            client_metadata=OAuthClientMetadata(
                client_name=self.client_name,
                redirect_uris=[REDIRECT_URI],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
                scope=self.scope,
            ),
            storage=self.storage,
            redirect_handler=redirect_handler,
            callback_handler=callback_handler,
            client_metadata_url=self.client_metadata_url,
        )

    @contextlib.asynccontextmanager
    async def session(self, transport: str = "http") -> AsyncIterator[ClientSession]:
        auth = self.provider(transport)
        if transport == "http":
            async with loopback_client(auth=auth) as client:
                async with streamable_http_client(f"{self.base_url}/mcp", http_client=client) as (
                    read,
                    write,
                ):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        yield session
        else:

            def factory(headers=None, timeout=None, auth=None) -> httpx2.AsyncClient:
                return loopback_client(headers=headers, auth=auth)

            async with sse_client(
                f"{self.base_url}/sse",
                auth=auth,
                timeout=30,
                sse_read_timeout=120,
                httpx_client_factory=factory,
            ) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    yield session
