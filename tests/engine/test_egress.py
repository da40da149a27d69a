"""SSRF: a tenant's LLM endpoint may only reach global addresses, at the address checked."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from kernels.engine import egress, llm

INTERNAL_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "localhost",
    "localhost.",
    "0",
    "0.0.0.0",
    "::1",
    "[::1]",
    "::ffff:127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "fd00::1",
    "fe80::1",
]


@pytest.mark.parametrize("host", INTERNAL_SPELLINGS)
def test_every_spelling_of_an_internal_address_is_refused(host):
    with pytest.raises(egress.EndpointRefused, match="not allowed"):
        egress.resolve_checked(host, 443, allow_private=False)


def test_a_global_address_is_accepted_and_private_ones_only_when_the_operator_allows():
    assert egress.resolve_checked("1.1.1.1", 443, allow_private=False) == ["1.1.1.1"]
    assert egress.resolve_checked("127.1", 443, allow_private=True) == ["127.0.0.1"]


def test_a_name_resolving_to_one_internal_address_among_global_ones_is_refused(monkeypatch):
    def fake(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    monkeypatch.setattr(egress.socket, "getaddrinfo", fake)
    with pytest.raises(egress.EndpointRefused):
        egress.resolve_checked("llm.example.com", 443, allow_private=False)


class _Recorder(http.server.BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        type(self).hosts.append(self.headers.get("Host"))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    _Recorder.hosts = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_dns_rebinding_to_loopback_gets_no_connection(monkeypatch, recorder):
    """The name resolved to a global address when the endpoint was saved; now it is loopback."""
    real = socket.getaddrinfo

    def rebound(host, port, *args, **kwargs):
        return real("127.0.0.1" if host == "llm.rebind.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(egress.socket, "getaddrinfo", rebound)
    chat = llm.MistralChat(
        llm.LlmConfig(api_key="k", server_url=f"http://llm.rebind.test:{recorder}", max_attempts=1)
    )
    with pytest.raises(llm.LlmError, match="not allowed"):
        chat.complete([{"role": "user", "content": "hi"}])
    assert _Recorder.hosts == []  # nothing reached the loopback server


def test_the_connection_goes_to_the_checked_address_with_the_original_host_header(
    monkeypatch, recorder
):
    real = socket.getaddrinfo
    monkeypatch.setattr(
        egress.socket,
        "getaddrinfo",
        lambda host, port, *a, **k: real(
            "127.0.0.1" if host == "llm.pinned.test" else host, port, *a, **k
        ),
    )
    client = egress.pinned_client(allow_private=True, timeout_s=5)
    response = client.post(f"http://llm.pinned.test:{recorder}/v1/chat/completions", json={})
    assert response.status_code == 500
    assert _Recorder.hosts == [f"llm.pinned.test:{recorder}"]


def test_connection_errors_do_not_reveal_the_address_port_or_errno():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    chat = llm.MistralChat(
        llm.LlmConfig(
            api_key="k",
            server_url=f"http://127.0.0.1:{closed_port}",
            max_attempts=1,
            allow_private_endpoint=True,
        )
    )
    with pytest.raises(llm.LlmUnavailable) as failed:
        chat.complete([{"role": "user", "content": "hi"}])
    text = str(failed.value)
    assert str(closed_port) not in text and "127.0.0.1" not in text
    assert "refused" not in text.lower() and "errno" not in text.lower()
