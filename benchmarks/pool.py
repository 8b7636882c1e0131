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

Then the kills, ``--kills`` times each (5 by default), with the default lease
(CONNECTION_POOL_LEASE_SECONDS, 9 s; ``--lease`` to try another) and waiters
whose timeout is the shortest a pool may have (the lease plus a third):

* a worker process holds both slots of a pool of 2 and is killed with SIGKILL
  at a random moment of its heartbeat, while two other processes wait for a
  slot (they have just queued). Printed: how long after the kill the second
  slot was taken (median, max), and how much of their timeout the waiters had
  left (min).
* this process holds a pool of 1, a waiter process queues at its head and a
  second one behind it; the head waiter is killed at a random moment of its
  renewals and the slot given back at once. Printed: how long the free slot
  stayed idle until the second waiter took it (median, max).

How to run (from the project root)
----------------------------------
::

    .venv/bin/python -m benchmarks.pool                  # Redis and the embedded store
    .venv/bin/python -m benchmarks.pool --backend sqlite --kills 10
    .venv/bin/python -m benchmarks.pool --kills-only      # only the kills

Redis is BENCH_REDIS_URL (default redis://127.0.0.1:6379/14); keys carry a
fresh prefix. The embedded store is a temporary file.
"""

from __future__ import annotations

import argparse
import os
import random
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
from instances.outbound.limits.store import pool_lease_seconds, shortest_pool_timeout, waiter_lease_seconds

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


def holder(backend, prefix, path, lease, held) -> None:
    """Hold both slots of the pool of 2 (one thread each) until killed."""
    store = open_store(backend, prefix, path)

    def hold() -> None:
        with limits.hold_slot("bench-kill", "Fragile pool", 2, 60, lease=lease, store_=store):
            held.put(time.monotonic())
            time.sleep(3600)

    for _ in range(2):
        threading.Thread(target=hold, daemon=True).start()
    time.sleep(3600)


def waiter(backend, prefix, path, key, limit, lease, timeout, taken) -> None:
    """Wait for a slot; put (when it was taken, how long it was waited for), or None after the timeout."""
    asked = time.monotonic()
    try:
        with limits.hold_slot(key, "Bench pool", limit, timeout, lease=lease, store_=open_store(backend, prefix, path)):
            taken.put((time.monotonic(), time.monotonic() - asked))
    except limits.PoolTimeout:
        taken.put(None)


def _queued(store, key: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(store.pool_usage(key)[1]) < count:
        assert time.monotonic() < deadline, "the waiters never queued"
        time.sleep(0.01)


def killed_holder(backend, prefix, path, lease, timeout) -> tuple[float, float | None]:
    """Kill a worker holding both slots of a pool of 2 while two waiters queue: (seconds until both
    slots were taken again, least headroom of a waiter before its timeout, None when one timed out)."""
    held, taken = FORK.Queue(), FORK.Queue()
    victim = FORK.Process(target=holder, args=(backend, prefix, path, lease, held))
    victim.start()
    held.get(timeout=30), held.get(timeout=30)
    time.sleep(random.uniform(0, lease / 3))  # the kill falls anywhere in the heartbeat's period
    waiters = [
        FORK.Process(target=waiter, args=(backend, prefix, path, "bench-kill", 2, lease, timeout, taken)) for _ in range(2)
    ]
    for p in waiters:
        p.start()
    _queued(open_store(backend, prefix, path), "bench-kill", 2)
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    victim.join(5)
    results = [taken.get(timeout=timeout + 30) for _ in waiters]
    for p in waiters:
        p.join(10)
    if None in results:
        return float("nan"), None
    return max(at for at, _ in results) - killed, min(timeout - waited for _, waited in results)


def killed_head_waiter(backend, prefix, path, lease) -> float:
    """Kill the waiter at the head of a pool of 1's queue and free the slot: seconds it stayed idle."""
    store = open_store(backend, prefix, path)
    taken = FORK.Queue()
    with limits.hold_slot("bench-head", "Bench pool", 1, 60, lease=lease, store_=store):
        head = FORK.Process(target=waiter, args=(backend, prefix, path, "bench-head", 1, lease, 3600, taken))
        head.start()
        _queued(store, "bench-head", 1)
        behind = FORK.Process(target=waiter, args=(backend, prefix, path, "bench-head", 1, lease, 3600, taken))
        behind.start()
        _queued(store, "bench-head", 2)
        time.sleep(random.uniform(0, waiter_lease_seconds(lease) / 3))  # anywhere between its renewals
        os.kill(head.pid, signal.SIGKILL)
        head.join(5)
    freed = time.monotonic()
    at, _ = taken.get(timeout=60)
    behind.join(10)
    return at - freed


def kills(backend: str, path: str, lease: float, times: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    timeout = shortest_pool_timeout(lease)
    back, headroom = [], []
    for _ in range(times):
        seconds, left = killed_holder(backend, prefix, path, lease, timeout)
        back.append(seconds)
        headroom.append(left)
    timed_out = sum(1 for left in headroom if left is None)
    print(
        f"  SIGKILLed holder of both slots (lease {lease:g} s, waiters' timeout {timeout:g} s), {times} kills: "
        f"slots taken again after median {statistics.median(back):.2f} s, max {max(back):.2f} s; "
        + (f"{timed_out} waiter runs TIMED OUT" if timed_out else f"least headroom before a waiter's timeout {min(headroom):.2f} s"),
        flush=True,
    )
    idle = [killed_head_waiter(backend, prefix, path, lease) for _ in range(times)]
    print(
        f"  SIGKILLed head waiter (its place a lease of {waiter_lease_seconds(lease):g} s), {times} kills: "
        f"free slot idle for median {statistics.median(idle):.2f} s, max {max(idle):.2f} s",
        flush=True,
    )
    store = open_store(backend, prefix, path)
    for key in ("bench-kill", "bench-head"):
        assert store.pool_usage(key) == ([], []), "every slot and place in the queue was given back or ran out"


def throughput(server, backend: str, prefix: str, path: str, seconds: float) -> None:
    server.reset()
    queue = FORK.Queue()
    until = time.monotonic() + seconds
    processes = [
        FORK.Process(target=worker, args=(i, backend, prefix, path, server.url, until, queue)) for i in range(PROCESSES)
    ]
    started = time.monotonic()
    for p in processes:
        p.start()
    results = [queue.get(timeout=seconds + 60) for _ in processes]
    elapsed = time.monotonic() - started
    for p in processes:
        p.join(10)
    done = sum(n for n, _ in results)
    waits = sorted(w for _, ws in results for w in ws)
    ideal = SLOTS / HOLD
    arrivals = sorted(server.arrivals)
    # Throughput where the API sees it: arrivals in the run's first `seconds` from the first one.
    rate = sum(1 for a in arrivals if a < arrivals[0] + seconds) / seconds
    verdict = "OK" if server.max_in_flight <= SLOTS else "OVER THE LIMIT"
    print(
        f"  max in flight at the server {server.max_in_flight} / {SLOTS} ({verdict}); {done} requests in {elapsed:.1f} s; "
        f"throughput {rate:.1f}/s = {100 * rate / ideal:.1f}% of the ideal {ideal:g}/s; "
        f"wait for a slot: median {1000 * statistics.median(waits):.0f} ms, p99 {1000 * waits[int(0.99 * (len(waits) - 1))]:.0f} ms",
        flush=True,
    )
    store = open_store(backend, prefix, path)
    assert store.pool_usage("bench-pool") == ([], []), "every slot and place in the queue was given back"


def baseline(server, seconds: float) -> None:
    """What this machine reaches with no pool at all: 5 threads sending back to back."""
    server.reset()
    until = time.monotonic() + seconds / 2

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
    base = sum(1 for a in arrivals if a < arrivals[0] + seconds / 2) / (seconds / 2)
    print(
        f"  baseline without a pool (5 plain threads, {seconds / 2:g} s): "
        f"{base:.1f}/s = {100 * base / (SLOTS / HOLD):.1f}% of the ideal"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["redis", "sqlite", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--lease", type=float, default=None, help="slot lease (default CONNECTION_POOL_LEASE_SECONDS)")
    parser.add_argument("--kills", type=int, default=5, help="kills of each kind per store")
    parser.add_argument("--kills-only", action="store_true", help="skip the throughput runs")
    args = parser.parse_args()
    lease = args.lease or pool_lease_seconds()

    server = ArrivalServer(hold=HOLD)
    path = str(Path(tempfile.mkdtemp(prefix="pw-bench-")) / "limits.sqlite3")
    backends = ["redis", "sqlite"] if args.backend == "both" else [args.backend]
    print(f"connection pool benchmark: {os.cpu_count()} CPUs; pool of {SLOTS}, {INSTANCES} instances, "
          f"{PROCESSES} processes, server holds each request {HOLD * 1000:.0f} ms")
    if not args.kills_only:
        baseline(server, args.seconds)
    for backend in backends:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        print(f"\n[{backend}]")
        if not args.kills_only:
            throughput(server, backend, prefix, path, args.seconds)
        kills(backend, path, lease, args.kills)
    server.stop()


if __name__ == "__main__":
    main()
