"""How the instance client reaches an address the SSRF guard approved.

Connections are pinned: they dial the approved IP whatever DNS says later, and
TLS still verifies the certificate against the host name. They are kept alive
per worker process in a bounded cache of adapters keyed by (scheme, host, port,
IP), so a connection is only ever reused for the IP it was opened to, and the
adapters of IPs that a fresh resolve no longer returns are dropped.

Every exchange also has a total deadline. Socket timeouts apply to each
``recv`` separately, so a server dripping one byte a second never trips them;
a single watchdog thread shuts the socket of an exchange down at its deadline,
which wakes the blocked read at once. The deadline holds the socket itself, not
only the connection: when an answer says the connection closes after it
(``Connection: close``, HTTP/1.0, a body delimited by the close), http.client
detaches the socket from the connection and hands it to the response alone.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

MAX_CACHED_ADAPTERS = 64  # distinct (scheme, host, port, IP) kept alive per worker process
CONNECTIONS_PER_HOST = 10  # idle connections kept per adapter (one per concurrent thread)


# --- the total deadline ------------------------------------------------------------

_ownership = threading.Lock()  # who may shut a connection down: the exchange using it now


class Deadline:
    """The deadline of one exchange (first request, redirects, body)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self.reused_connection = False  # the latest request went over a kept-alive connection
        self.read_timeout: float | None = None  # set by the client: the longest wait for the next bytes
        self._connection: HTTPConnection | None = None
        self._sock: socket.socket | None = None  # the socket the answer is read from
        self._finished = False

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.expired or self.remaining() <= 0

    def attach(self, connection: HTTPConnection, sock: socket.socket, *, reused: bool) -> None:
        with _ownership:
            connection._deadline_owner = self  # type: ignore[attr-defined]
            self._connection = connection
            self._sock = sock
            self.reused_connection = reused
            if self.expired:
                _shutdown(sock)

    def reading_from(self, connection: HTTPConnection, sock: socket.socket) -> None:
        """Note the socket the answer will be read from (TLS-wrapped by now), before reading it."""
        with _ownership:
            if getattr(connection, "_deadline_owner", None) is not self:
                return
            self._sock = sock
            if self.expired:
                _shutdown(sock)

    def fire(self) -> None:
        with _ownership:
            if self._finished:
                return
            self.expired = True
            connection, sock = self._connection, self._sock
            if connection is None:
                return
            owned = getattr(connection, "_deadline_owner", None) is self
            if owned and connection.sock is not None:
                _shutdown(connection.sock)
            # After "Connection: close" the connection has let go of the socket (its
            # `sock` is None) and only this exchange's response reads from it. A socket
            # still on a connection that serves another exchange now is left alone.
            if sock is not None and (owned or sock is not connection.sock):
                _shutdown(sock)

    def finish(self) -> None:
        with _ownership:
            self._finished = True
            if self._connection is not None and getattr(self._connection, "_deadline_owner", None) is self:
                self._connection._deadline_owner = None  # type: ignore[attr-defined]
            self._connection = None
            self._sock = None


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown on purpose: ssl.SSLSocket.shutdown also drops its
    # TLS state, which the thread blocked in a read is still using.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _Watchdog:
    """One daemon thread firing the deadlines that passed (a heap, earliest first)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: Deadline) -> None:
        with self._wake:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="outbound-deadlines", daemon=True)
                self._thread.start()
            # Exchanges that finished in time leave their entry behind: drop them lazily.
            while self._heap and self._heap[0][2]._finished:
                heapq.heappop(self._heap)
            heapq.heappush(self._heap, (deadline.at, next(self._counter), deadline))
            if self._heap[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, deadline = heapq.heappop(self._heap)
            deadline.fire()

    def _after_fork(self) -> None:
        self._heap = []
        self._wake = threading.Condition()
        self._thread = None


_watchdog = _Watchdog()
_current: ContextVar[Deadline | None] = ContextVar("outbound_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Bound everything sent and read inside the block to `seconds` in total."""
    current = Deadline(seconds)
    token = _current.set(current)
    _watchdog.watch(current)
    try:
        yield current
    finally:
        current.finish()
        _current.reset(token)


def _claim(connection: HTTPConnection, sock: socket.socket, *, reused: bool) -> None:
    current = _current.get()
    if current is not None:
        current.attach(connection, sock, reused=reused)


def _reading(connection: HTTPConnection) -> None:
    current = _current.get()
    if current is not None and connection.sock is not None:
        current.reading_from(connection, connection.sock)


# --- pinned connections ------------------------------------------------------------


class _Pinned:
    """Mixed into urllib3's connection classes: dial the pinned IP, and note reuse."""

    pinned_ip = ""

    def _new_conn(self) -> socket.socket:
        # urllib3's `host` (the Host header of later requests on this connection) reads
        # _dns_host: dial the pinned IP, then put the host name back.
        host, self._dns_host = self._dns_host, self.pinned_ip
        try:
            sock = super()._new_conn()
        finally:
            self._dns_host = host
        _claim(self, sock, reused=False)
        return sock

    def request(self, *args, **kwargs) -> None:
        if self.sock is not None:
            _claim(self, self.sock, reused=True)
        super().request(*args, **kwargs)

    def getresponse(self):
        # The socket is final now (wrapped in TLS) and still on the connection; once
        # the head is read, http.client may hand it to the response alone.
        _reading(self)
        return super().getresponse()


class _PinnedHTTPConnection(_Pinned, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_Pinned, HTTPSConnection):
    pass


def _pinned_pool_classes(ip: str) -> dict[str, type]:
    """Connection pool classes whose connections dial `ip` whatever the host name."""
    http_connection = type("PinnedHTTPConnection", (_PinnedHTTPConnection,), {"pinned_ip": ip})
    https_connection = type("PinnedHTTPSConnection", (_PinnedHTTPSConnection,), {"pinned_ip": ip})
    return {
        "http": type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_connection}),
        "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_connection}),
    }


class PinnedAdapter(HTTPAdapter):
    """A requests adapter whose connections all go to one IP address; never retries."""

    def __init__(self, ip: str):
        self.ip = ip
        super().__init__(pool_connections=1, pool_maxsize=CONNECTIONS_PER_HOST, max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pinned_pool_classes(self.ip)


class AdapterCache:
    """Kept-alive pinned adapters of this worker process, least recently used dropped first."""

    def __init__(self, size: int = MAX_CACHED_ADAPTERS):
        self.size = size
        self._adapters: OrderedDict[tuple[str, str, int, str], PinnedAdapter] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, scheme: str, host: str, port: int, ip: str, resolved: list[str]) -> PinnedAdapter:
        """The adapter for `ip`; those of this host's IPs missing from `resolved` are dropped."""
        key = (scheme, host.lower(), port, ip)
        dropped: list[PinnedAdapter] = []
        with self._lock:
            for other in [k for k in self._adapters if k[:3] == key[:3] and k[3] not in resolved]:
                dropped.append(self._adapters.pop(other))
            adapter = self._adapters.get(key)
            if adapter is None:
                adapter = self._adapters[key] = PinnedAdapter(ip)
                while len(self._adapters) > self.size:
                    dropped.append(self._adapters.popitem(last=False)[1])
            else:
                self._adapters.move_to_end(key)
        for old in dropped:
            # Idle connections close now; one in use closes when its exchange ends.
            old.close()
        return adapter

    def keys(self) -> list[tuple[str, str, int, str]]:
        with self._lock:
            return list(self._adapters)

    def clear(self) -> None:
        with self._lock:
            adapters, self._adapters = list(self._adapters.values()), OrderedDict()
        for adapter in adapters:
            adapter.close()

    def _after_fork(self) -> None:
        # A child must not share its parent's sockets: forget them without closing.
        self._adapters = OrderedDict()
        self._lock = threading.Lock()


adapters = AdapterCache()

os.register_at_fork(after_in_child=lambda: (_watchdog._after_fork(), adapters._after_fork()))


def pinned_session(ip: str) -> requests.Session:
    """A requests session that ignores proxy settings and connects only to `ip`."""
    session = requests.Session()
    session.trust_env = False  # no proxies or .netrc from the environment
    session.proxies = {}
    adapter = PinnedAdapter(ip)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
