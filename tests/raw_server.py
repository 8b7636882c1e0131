"""A raw-socket server playing a hostile third-party API.

pytest-httpserver speaks correct HTTP; this one says whatever a script tells it
to, byte by byte: nothing at all, a reply dripped slowly, garbage, a body cut
short, a reset. Every loop is bounded and the server stops by itself after
`lifetime` seconds even if a test forgets it.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest


class Conn:
    """One accepted connection, as a script sees it."""

    def __init__(self, sock: socket.socket, stopping: threading.Event):
        self.sock = sock
        self.stopping = stopping

    def read_request(self, limit: int = 64 * 1024) -> bytes:
        """Read until the end of the request head (bodies of the requests we get are small)."""
        data = b""
        self.sock.settimeout(5)
        try:
            while b"\r\n\r\n" not in data and len(data) < limit:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return data

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def drip(self, data: bytes, every: float, *, max_seconds: float = 10) -> None:
        """Send `data` one byte at a time, `every` seconds apart, until done, stopped or refused."""
        ends = time.monotonic() + max_seconds
        for byte in data:
            if self.stopping.is_set() or time.monotonic() > ends or not self.send(bytes([byte])):
                return
            self.stopping.wait(every)

    def hang(self, max_seconds: float = 10) -> None:
        self.stopping.wait(max_seconds)

    def reset(self) -> None:
        """Close with a TCP RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class RawServer:
    def __init__(self, script: Callable[[Conn], None], lifetime: float = 30):
        self.script = script
        self.stopping = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._ends = time.monotonic() + lifetime
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self.stopping.is_set() and time.monotonic() < self._ends:
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self.connections += 1
            thread = threading.Thread(target=self._handle, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)
        self.stopping.set()

    def _handle(self, sock: socket.socket) -> None:
        try:
            self.script(Conn(sock, self.stopping))
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=2)
        for thread in self._threads:
            thread.join(timeout=2)
        self.listener.close()


class KeepAliveServer:
    """A well-behaved threaded HTTP/1.1 server that keeps connections alive and counts them.

    GET answers ``{"path": ..., "cookie": ...}`` with a Content-Length; ``/set-cookie``
    also sets a cookie. `connections` counts the TCP connections it accepted.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30  # an idle kept-alive connection ends its thread after this

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes: without this, Nagle's
                # algorithm and the client's delayed ACK add 40 ms to every reply.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with owner._lock:
                    owner.connections += 1

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body = json.dumps({"path": self.path, "cookie": self.headers.get("Cookie")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if self.path.startswith("/set-cookie"):
                    self.send_header("Set-Cookie", "session=abc123; Path=/")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:
                pass

        self.connections = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url_for(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def raw_server():
    """Start RawServers with a script each; all are stopped after the test."""
    servers: list[RawServer] = []

    def start(script: Callable[[Conn], None]) -> RawServer:
        servers.append(RawServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def keepalive_server():
    """Start KeepAliveServers (host, port); all are stopped after the test."""
    servers: list[KeepAliveServer] = []

    def start(host: str = "127.0.0.1", port: int = 0) -> KeepAliveServer:
        servers.append(KeepAliveServer(host, port))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
