"""Benchmark: a connection pool held across worker processes, and a killed holder's slot coming back.

What it measures
----------------
A local HTTP server (a thread of this process) holds every request 200 ms and
counts the requests in flight. A pool of 5 slots serves 3 instances; 4 worker
processes (forked, sharing nothing but the limits store) each run one thread
per instance that sends requests back to back for 10 s, so 12 requests always
want the 5 slots. Printed: the most requests in flight at the server (must be
<= 5), throughput (arrivals at the server in the first 10 s from the first
one) beside the ideal 5 / 0.2 s = 25 per second, and the median and p99 wait
for a slot.

For scale, 5 plain threads without any pool run against the same server first.

Then a process takes the pool's only slot (pool of 1) and is killed with
SIGKILL; printed is the time until a waiting request gets the slot (the lease,
``--lease`` seconds, 5 by default here, 30 in production settings, bounds it).

How to run (from the project root)
----------------------------------
::

    .venv/bin/python -m benchmarks.pool                  # Redis and the embedded store
    .venv/bin/python -m benchmarks.pool --backend sqlite --lease 30

Redis is BENCH_REDIS_URL (default redis://127.0.0.1:6379/14); keys carry a
fresh prefix. The embedded store is a temporary file.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests  # noqa: E402

from benchmarks.rate_limit import FORK, ArrivalServer, open_store  # sets Django up
from instances.outbound import limits  # noqa: E402

SLOTS, HOLD, INSTANCES, PROCESSES = 5, 0.2, 3, 4


def worker(index, backend, prefix, path, url, until, queue) -> None:
    store = open_store(backend, prefix, path)
    waits: list[float] = []
    done = [0]

    def loop(instance: int) -> None:
        session = requests.Session()
        while time.monotonic() < until:
            asked = time.monotonic()
            with limits.hold_slot("bench-pool", "Bench pool", SLOTS, 30, owner=f"i{instance}", store_=store):
                waits.append(time.monotonic() - asked)
                session.get(url, timeout=10)
            done[0] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(INSTANCES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put((done[0], waits))


def holder(backend, prefix, path, lease, ready) -> None:
    with limits.hold_slot("bench-kill", "Fragile pool", 1, 30, lease=lease, store_=open_store(backend, prefix, path)):
        ready.set()
        time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["redis", "sqlite", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--lease", type=float, default=5)
    args = parser.parse_args()

    server = ArrivalServer(hold=HOLD)
    path = str(Path(tempfile.mkdtemp(prefix="pw-bench-")) / "limits.sqlite3")
    backends = ["redis", "sqlite"] if args.backend == "both" else [args.backend]
    print(f"connection pool benchmark: {os.cpu_count()} CPUs; pool of {SLOTS}, {INSTANCES} instances, "
          f"{PROCESSES} processes, server holds each request {HOLD * 1000:.0f} ms")
    # What this machine reaches with no pool at all: 5 threads sending back to back.
    server.reset()
    until = time.monotonic() + args.seconds / 2

    def plain() -> None:
        session = requests.Session()
        while time.monotonic() < until:
            session.get(server.url, timeout=10)

    threads = [threading.Thread(target=plain) for _ in range(SLOTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    arrivals = sorted(server.arrivals)
    base = sum(1 for a in arrivals if a < arrivals[0] + args.seconds / 2) / (args.seconds / 2)
    print(
        f"  baseline without a pool (5 plain threads, {args.seconds / 2:g} s): "
        f"{base:.1f}/s = {100 * base / (SLOTS / HOLD):.1f}% of the ideal"
    )
    for backend in backends:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        print(f"\n[{backend}]")
        server.reset()
        queue = FORK.Queue()
        until = time.monotonic() + args.seconds
        processes = [
            FORK.Process(target=worker, args=(i, backend, prefix, path, server.url, until, queue)) for i in range(PROCESSES)
        ]
        started = time.monotonic()
        for p in processes:
            p.start()
        results = [queue.get(timeout=args.seconds + 60) for _ in processes]
        elapsed = time.monotonic() - started
        for p in processes:
            p.join(10)
        done = sum(n for n, _ in results)
        waits = sorted(w for _, ws in results for w in ws)
        ideal = SLOTS / HOLD
        arrivals = sorted(server.arrivals)
        # Throughput where the API sees it: arrivals in the run's first `seconds` from the first one.
        rate = sum(1 for a in arrivals if a < arrivals[0] + args.seconds) / args.seconds
        verdict = "OK" if server.max_in_flight <= SLOTS else "OVER THE LIMIT"
        print(
            f"  max in flight at the server {server.max_in_flight} / {SLOTS} ({verdict}); {done} requests in {elapsed:.1f} s; "
            f"throughput {rate:.1f}/s = {100 * rate / ideal:.1f}% of the ideal {ideal:g}/s; "
            f"wait for a slot: median {1000 * statistics.median(waits):.0f} ms, p99 {1000 * waits[int(0.99 * (len(waits) - 1))]:.0f} ms",
            flush=True,
        )
        store = open_store(backend, prefix, path)
        assert store.pool_usage("bench-pool") == ([], []), "every slot and place in the queue was given back"

        ready = FORK.Event()
        victim = FORK.Process(target=holder, args=(backend, prefix, path, args.lease, ready))
        victim.start()
        ready.wait(10)
        time.sleep(args.lease / 2)  # the heartbeat has renewed the lease by now or will soon
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        victim.join(5)
        with limits.hold_slot("bench-kill", "Fragile pool", 1, args.lease + 30, lease=args.lease, store_=store):
            back = time.monotonic() - killed
        print(f"  a SIGKILLed holder's slot came back after {back:.2f} s (lease {args.lease:g} s)", flush=True)
    server.stop()


if __name__ == "__main__":
    main()
