"""The TCP latency/fault proxy against a tiny local HTTP server."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from marketlake.errors import ConfigError
from marketlake.testing.proxy import TcpProxy


class Echo(BaseHTTPRequestHandler):
    """POST echoes the body; GET answers ``hello``. Records complete request bodies."""

    protocol_version = "HTTP/1.1"
    received: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        self._reply(b"hello")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Echo.received.append(len(body))
        self._reply(body)

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    Echo.received = []
    yield srv
    srv.shutdown()
    srv.server_close()


def request(proxy: TcpProxy, method: str, body: bytes | None = None) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request(method, "/", body=body)
        return conn.getresponse().read()
    finally:
        conn.close()


def test_bytes_pass_through_unchanged(server: ThreadingHTTPServer) -> None:
    body = os.urandom(3 << 20)
    host, port = server.server_address[:2]
    with TcpProxy(str(host), int(port)) as proxy:
        assert request(proxy, "POST", body) == body
        assert request(proxy, "GET") == b"hello"
        assert Echo.received == [len(body)]
    assert proxy.stats.connections == 2
    assert proxy.stats.bytes_up > len(body) and proxy.stats.bytes_down > len(body)
    assert proxy.stats.drops == proxy.stats.resets == 0


def test_latency_is_added_each_way(server: ThreadingHTTPServer) -> None:
    host, port = server.server_address[:2]
    with TcpProxy(str(host), int(port), latency_up=0.04, latency_down=0.03) as proxy:
        for _ in range(3):
            t0 = time.monotonic()
            assert request(proxy, "GET") == b"hello"
            assert time.monotonic() - t0 >= 0.07  # a lower bound only: at least one round trip


def test_drop_after_bytes_breaks_the_request(server: ThreadingHTTPServer) -> None:
    host, port = server.server_address[:2]
    proxy = TcpProxy.for_url(f"http://{host!s}:{port}", drop_after_bytes=10_000).start()
    try:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            request(proxy, "POST", os.urandom(1 << 20))
        assert proxy.stats.drops == 1
        assert all(n < 1 << 20 for n in Echo.received)  # never a complete body
        proxy.drop_after_bytes = None  # faults can be switched off while running
        assert request(proxy, "POST", b"x" * 50_000) == b"x" * 50_000
    finally:
        proxy.stop()


def test_reset_probability(server: ThreadingHTTPServer) -> None:
    host, port = server.server_address[:2]
    with TcpProxy(str(host), int(port), reset_probability=1.0) as proxy:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            request(proxy, "GET")
        assert proxy.stats.resets == 1
        proxy.reset_probability = 0.0
        assert request(proxy, "GET") == b"hello"
    with pytest.raises(ConfigError):
        TcpProxy("127.0.0.1", 1, reset_probability=2.0)
