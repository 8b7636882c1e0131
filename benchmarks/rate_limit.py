"""Benchmark: rate limits held across worker processes, measured where the API sees them.

What it measures
----------------
A local HTTP server (a thread of this process) timestamps every arrival with
the system-wide monotonic clock. Worker processes (forked, sharing nothing but
the limits store), each with 4 threads, send GET requests as fast as the
limiter lets them:

* ``one instance``   4 processes share one instance limited to 50 per second, for 10 s;
* ``shared limit``   2 instances in one shared rate limit (2 processes each), 50 per second, 10 s;
* ``per minute``     4 processes, 100 per "minute", with the minute shortened to
                     6 s (``--minute-seconds``) and run for 2 minutes of that clock.

For each it prints: requests sent, the largest number of arrivals in ANY sliding
window of the unit (must be <= the limit), utilisation (arrivals within the run
divided by limit x duration / unit), and the median and p99 wait of the
requests that were queued. Then the overhead per request (µs, one process, a
limit so high nobody waits, the quickest of 10 interleaved rounds) beside plain ``requests`` and beside
``requests-ratelimiter`` (pyrate-limiter's in-memory bucket, one process only).
With ``--compare-pyrate`` the "one instance" workload also runs on
pyrate-limiter's own RedisBucket (blocking acquire) for comparison.

How to run (from the project root)
----------------------------------
::

    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python -m benchmarks.rate_limit                  # Redis and the embedded store
    .venv/bin/python -m benchmarks.rate_limit --backend sqlite --compare-pyrate

Redis is BENCH_REDIS_URL (default redis://127.0.0.1:6379/14); keys carry a
fresh prefix and expire on their own. The embedded store is a temporary file.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "patchworks_site.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("CREDENTIAL_KEYS", "bench-1:a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=")

import django  # noqa: E402

django.setup()

import requests  # noqa: E402

from benchmarks.stub_api import JsonHandler, StubServer  # noqa: E402
from instances.outbound import limits  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
FORK = multiprocessing.get_context("fork")


class ArrivalServer(StubServer):
    """A keep-alive HTTP server that timestamps arrivals (and can hold each request a while)."""

    def __init__(self, hold: float = 0.0):
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        lock = threading.Lock()
        outer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                with lock:
                    outer.arrivals.append(time.monotonic())
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                if hold:
                    time.sleep(hold)
                with lock:
                    outer.in_flight -= 1
                self.answer(200, b"{}")

        self.serve(Handler, "/work")

    def reset(self) -> None:
        self.arrivals, self.in_flight, self.max_in_flight = [], 0, 0

    def stop(self) -> None:
        self.close()


def max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best = start = 0
    for end, at in enumerate(stamps):
        while at - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def open_store(backend: str, prefix: str, path: str) -> limits.Store:
    return limits.RedisStore(REDIS_URL, prefix) if backend == "redis" else limits.SQLiteStore(path, prefix)


THREADS = 4  # concurrent requests per worker process, as a threaded worker or a flow runner has


def worker(backend, prefix, path, url, bucket, amount, unit, until, waits_queue) -> None:
    store = open_store(backend, prefix, path)
    waits: list[float] = []

    def loop() -> None:
        session = requests.Session()
        while time.monotonic() < until:
            with limits.rate_limited(bucket, amount, unit, store_=store) as ticket:
                session.get(url, timeout=10)
            waits.append(ticket.waited)

    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    waits_queue.put(waits)


def pyrate_worker(prefix, url, amount, until, waits_queue) -> None:
    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket
    from redis import Redis

    bucket = RedisBucket.init([Rate(amount, Duration.SECOND)], Redis.from_url(REDIS_URL), f"{prefix}:pyrate")
    limiter = Limiter(bucket)
    waits: list[float] = []

    def loop() -> None:
        session = requests.Session()
        while time.monotonic() < until:
            started = time.monotonic()
            limiter.try_acquire("one-instance", blocking=True)
            waits.append(time.monotonic() - started)
            session.get(url, timeout=10)

    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    waits_queue.put(waits)


def run(server, label, targets, amount, window, seconds) -> dict:
    server.reset()
    queue = FORK.Queue()
    processes = [FORK.Process(target=target, args=(*args, queue)) for target, args in targets]
    for p in processes:
        p.start()
    waits = [w for _ in processes for w in queue.get(timeout=seconds + 120)]
    for p in processes:
        p.join(30)
    arrivals = sorted(server.arrivals)
    within = [a for a in arrivals if a < arrivals[0] + seconds]
    ideal = amount * seconds / window
    queued = sorted(w for w in waits if w > 0.0005)
    row = {
        "label": label,
        "sent": len(arrivals),
        "max_window": max_in_window(arrivals, window),
        "limit": amount,
        "utilisation": len(within) / ideal,
        "median_wait": statistics.median(queued) if queued else 0.0,
        "p99_wait": queued[int(0.99 * (len(queued) - 1))] if queued else 0.0,
        "queued": len(queued),
    }
    verdict = "OK" if row["max_window"] <= amount else "OVER THE LIMIT"
    print(
        f"  {label:<44} sent {row['sent']:>5}  max in any {window:g} s window {row['max_window']:>4} / {amount} ({verdict})  "
        f"utilisation {100 * row['utilisation']:.1f}%  queued {row['queued']}: median wait {1000 * row['median_wait']:.0f} ms, "
        f"p99 {1000 * row['p99_wait']:.0f} ms",
        flush=True,
    )
    return row


def overhead(server, backend, prefix, path, n: int = 1000) -> dict[str, float]:
    from requests_ratelimiter import LimiterSession

    store = open_store(backend, prefix, path)
    session = requests.Session()
    limited = LimiterSession(per_second=10**7)
    for _ in range(50):  # warm up connections and scripts
        session.get(server.url)
        limited.get(server.url)
        with limits.rate_limited("overhead", 10**9, "second", store_=store):
            pass
    timings: dict[str, list[float]] = {"plain": [], "ours": [], "requests-ratelimiter": []}
    rounds = 10
    for _ in range(rounds):  # interleaved rounds, so a change in machine load hits all alike
        started = time.perf_counter()
        for _ in range(n // rounds):
            session.get(server.url)
        timings["plain"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(n // rounds):
            with limits.rate_limited("overhead", 10**9, "second", store_=store):
                session.get(server.url)
        timings["ours"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(n // rounds):
            limited.get(server.url)
        timings["requests-ratelimiter"].append(time.perf_counter() - started)
    # The quickest round of each: the least disturbed by other work on the machine.
    per = {k: min(v) / (n // rounds) * 1e6 for k, v in timings.items()}
    print(
        f"  overhead per request ({rounds} rounds of {n // rounds} sequential requests, one process, quickest round): "
        f"plain requests {per['plain']:.0f} µs; "
        f"ours +{per['ours'] - per['plain']:.0f} µs; requests-ratelimiter (in-memory, one process) "
        f"+{per['requests-ratelimiter'] - per['plain']:.0f} µs",
        flush=True,
    )
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["redis", "sqlite", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--minute-seconds", type=float, default=6, help="length of the shortened minute")
    parser.add_argument("--compare-pyrate", action="store_true", help="also run pyrate-limiter's RedisBucket")
    args = parser.parse_args()

    server = ArrivalServer()
    workdir = tempfile.mkdtemp(prefix="pw-bench-")
    path = str(Path(workdir) / "limits.sqlite3")
    backends = ["redis", "sqlite"] if args.backend == "both" else [args.backend]
    print(f"rate limit benchmark: {os.cpu_count()} CPUs, margin {limits.settings.RATE_LIMIT_MARGIN_SECONDS * 1000:g} ms per window")
    for backend in backends:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        print(f"\n[{backend}]")
        until = time.monotonic() + args.seconds
        common = (backend, prefix, path, server.url)
        run(server, f"one instance, 4 processes, {args.rate}/s, {args.seconds:g} s",
            [(worker, (*common, "one-instance", args.rate, "second", until)) for _ in range(4)],
            args.rate, 1, args.seconds)
        group = (limits.rate_bucket(SimpleNamespace(rate_limit_group="Storefront", company_id=1, uid=n)) for n in (1, 2))
        first, second = group
        assert first == second  # two instances, one shared rate limit
        until = time.monotonic() + args.seconds
        run(server, f"2 instances in one shared limit, {args.rate}/s",
            [(worker, (*common, bucket, args.rate, "second", until)) for bucket in (first, first, second, second)],
            args.rate, 1, args.seconds)
        limits.WINDOW_SECONDS["minute"] = args.minute_seconds  # inherited by the forked workers
        until = time.monotonic() + 2 * args.minute_seconds
        run(server, f"per minute (minute = {args.minute_seconds:g} s), 100/min, 4 processes",
            [(worker, (*common, "per-minute", 100, "minute", until)) for _ in range(4)],
            100, args.minute_seconds, 2 * args.minute_seconds)
        limits.WINDOW_SECONDS["minute"] = 60
        overhead(server, backend, prefix, path)
    if args.compare_pyrate:
        print("\n[pyrate-limiter 4.5 RedisBucket, blocking try_acquire, for comparison]")
        until = time.monotonic() + args.seconds
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        run(server, f"one instance, 4 processes, {args.rate}/s, {args.seconds:g} s",
            [(pyrate_worker, (prefix, server.url, args.rate, until)) for _ in range(4)],
            args.rate, 1, args.seconds)
    server.stop()


if __name__ == "__main__":
    main()
