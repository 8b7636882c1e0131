"""The floor of benchmarks/scale.py: the plainest client making the same requests, in the same processes × threads.

One process of the floor (started by scale.py with ``python -m benchmarks.scale_floor
URL RUNS PAGES THREADS``): ``THREADS`` threads, each with its own
``requests.Session`` (kept alive), take "runs" from the process's share of ``RUNS``;
a run is what a flow run of scale.py requests: ``GET URL/orders?pages=PAGES&page=N&per_page=50``
for N = 1 … PAGES + 1, one after the other, each answer read and its JSON parsed.
Nothing else: no database, no queue, no rate limit, no bookkeeping.

Protocol on stdin/stdout, so that start-up is not timed: after imports and one
request per thread (connections open) it prints ``ready``; on a line from stdin
it runs, then prints one JSON line: Σ of the runs' durations, the requests made
and the process's CPU seconds during the runs.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time

import requests

PER_PAGE = 50


def main() -> None:
    url, runs, pages, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for n in range(runs):
        work.put(n)
    sessions = [requests.Session() for _ in range(threads)]
    for session in sessions:  # connections open before the clock starts, as the warmed-up workers' are
        session.get(f"{url}/orders", params={"pages": pages, "page": pages + 1, "per_page": PER_PAGE}, timeout=30)
    totals = {"run_seconds": 0.0, "requests": 0}
    lock = threading.Lock()

    def worker(session: requests.Session) -> None:
        while True:
            try:
                work.get_nowait()
            except queue.Empty:
                return
            started, made = time.perf_counter(), 0
            for page in range(1, pages + 2):
                answer = session.get(f"{url}/orders", params={"pages": pages, "page": page, "per_page": PER_PAGE},
                                     timeout=30)
                answer.raise_for_status()
                answer.json()
                made += 1
            with lock:
                totals["run_seconds"] += time.perf_counter() - started
                totals["requests"] += made

    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    pool = [threading.Thread(target=worker, args=(session,)) for session in sessions]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(json.dumps({**totals, "cpu": time.process_time() - cpu}), flush=True)


if __name__ == "__main__":
    main()
