"""Benchmark: what keeping connections alive saves the instance client.

What it measures
----------------
The time per request of N sequential GETs (default 2000) against a local
threaded HTTP/1.1 server that keeps connections alive (tests/raw_server.py's
KeepAliveServer, the one the tests use, run in a process of its own so that it
does not compete with the client for the GIL), for four ways of sending:

* ``requests.get``            a new connection for every request;
* ``requests.Session``        one session, its connection reused;
* ``instance client, before`` ``sending.send`` with OUTBOUND_KEEP_ALIVE
                              off: a fresh pinned adapter (so a new connection)
                              per request, as the client did before connections
                              were kept;
* ``instance client, after``  ``sending.send`` as configured by default:
                              kept-alive connections pinned to the approved IP.

Both instance client variants do everything a real call does (SSRF resolve and
check, pinning, the total deadline and its watchdog, bounded reading, JSON
parsing, cleaning the record). ``send`` needs no database: the client is built
with no connector and no secrets (what ``send`` reads of the instance is its
secret values, to keep them from following a redirect).

The four variants run in alternating rounds (so a change in machine load
affects all alike), after a warm-up; the script prints the mean and median
microseconds per request, the connections each server accepted (warm-up
included), and the ratios.

How to run (from the project root)::

    .venv/bin/python -m benchmarks.connection_reuse          # N=2000
    .venv/bin/python -m benchmarks.connection_reuse -n 500 --rounds 4
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "patchworks_site.settings",
        "DEBUG": "1",
        "OUTBOUND_ALLOW_LOOPBACK": "1",
        "CREDENTIAL_KEYS": "bench-1:a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",
        "CREDENTIAL_KEY_FILE": "/nonexistent/credential-keys",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
)

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402

from instances.outbound import (
    sending,  # noqa: E402
    transport,  # noqa: E402
)
from tests.raw_server import KeepAliveServer  # noqa: E402


def plain_get(url: str) -> Callable[[], None]:
    def send() -> None:
        response = requests.get(url, timeout=5)
        assert response.status_code == 200 and response.json()

    return send


def plain_session(url: str) -> Callable[[], None]:
    session = requests.Session()

    def send() -> None:
        response = session.get(url, timeout=5)
        assert response.status_code == 200 and response.json()

    return send


def instance_client(url: str, keep_alive: bool) -> Callable[[], None]:
    def send() -> None:
        settings.OUTBOUND_KEEP_ALIVE = keep_alive
        exchange = sending.send("GET", url)
        assert exchange.response_status == 200 and exchange.json and not exchange.error, exchange.error

    return send


def _serve(pipe) -> None:
    server = KeepAliveServer()
    pipe.send(server.port)
    pipe.recv()  # until the benchmark is done
    pipe.send(server.connections)
    server.stop()


class ServerProcess:
    """A KeepAliveServer in its own process, so that it does not share the GIL with the client."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        self.port = self.pipe.recv()

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> int:
        """Stop the server; the number of connections it accepted."""
        self.pipe.send("stop")
        connections = self.pipe.recv()
        self.process.join(timeout=5)
        return connections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per variant (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds the requests are split into")
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()

    servers = {name: ServerProcess() for name in ("get", "session", "before", "after")}
    variants = {
        "requests.get (new connection each)": ("get", plain_get(servers["get"].url_for("/me"))),
        "requests.Session (reused)": ("session", plain_session(servers["session"].url_for("/me"))),
        "instance client, before (no keep-alive)": ("before", instance_client(servers["before"].url_for("/me"), False)),
        "instance client, after (kept alive)": ("after", instance_client(servers["after"].url_for("/me"), True)),
    }
    timings: dict[str, list[float]] = {name: [] for name in variants}
    per_round = max(1, args.n // args.rounds)
    for _, send in variants.values():
        for _ in range(args.warmup):
            send()
    for _ in range(args.rounds):
        for name, (_, send) in variants.items():
            samples = timings[name]
            for _ in range(per_round):
                started = time.perf_counter()
                send()
                samples.append(time.perf_counter() - started)
    transport.adapters.clear()
    connections = {key: server.stop() for key, server in servers.items()}

    print(f"{per_round * args.rounds} sequential GETs per variant against a local HTTP/1.1 keep-alive server "
          f"(Python {sys.version.split()[0]}, requests {requests.__version__})")
    print(f"{'variant':42} {'mean µs':>9} {'median µs':>10} {'connections':>12}")
    means, medians = {}, {}
    for name, (key, _) in variants.items():
        samples = timings[name]
        means[name], medians[name] = statistics.fmean(samples) * 1e6, statistics.median(samples) * 1e6
        print(f"{name:42} {means[name]:9.0f} {medians[name]:10.0f} {connections[key]:12d}")
    get, session, before, after = variants

    def ratio(slow: str, fast: str) -> str:
        return f"{means[slow] / means[fast]:.2f}x (mean), {medians[slow] / medians[fast]:.2f}x (median)"

    print()
    print(f"instance client, before / after:              {ratio(before, after)}")
    print(f"requests.get / requests.Session:              {ratio(get, session)}")
    print(f"instance client, after / requests.Session:    {ratio(after, session)}")


if __name__ == "__main__":
    main()
