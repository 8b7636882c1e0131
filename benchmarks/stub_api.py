"""The base of the benchmarks' stub third-party APIs: a threaded HTTP/1.1 server in the benchmark's process.

Python's http.server writes a response's headers and body separately: without
``disable_nagle_algorithm`` Nagle's algorithm and delayed ACKs add about 40 ms
to each kept-alive answer, which would swamp what a benchmark measures.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JsonHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, Nagle off, no request log; ``answer()`` sends JSON."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def answer(self, status: int, body: object) -> None:
        """Send `body` (bytes as they are, anything else as JSON) with its length."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StubServer:
    """Serves a JsonHandler subclass on a free port of 127.0.0.1 from a daemon thread; ``url`` is its base."""

    def serve(self, handler: type[BaseHTTPRequestHandler], path: str = "/api") -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128  # a wave of runs connects at once
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
