"""Benchmark: fair shares of the workers between two companies, one of them with a big backlog.

What it measures
----------------
Company A ("Backlog Ltd") queues ``--a-runs`` (300) short runs at once; company
B ("Steady Ltd") queues one run every ``--b-every`` (2) seconds until A's
backlog has drained. Each run is receive → send against a local stub API (a
threaded HTTP server in this process): the GET answers after ``--hold`` (0.3) s
with one order, the POST at once, so a run holds its worker about 0.3 s. One
``manage.py run_huey`` process with 2 worker threads (``--threads``) executes
them, on the SQLite queue (``--queue sqlite``, as ``make run``) or on Redis
(``--queue redis --redis-url redis://127.0.0.1:6379/<db>``).

It prints B's enqueue → start latency (``started_at - queued_at``: median, p95,
max), the most of A's runs running at once (sampled every 100 ms, and from the
rows' start and end times) against A's maximum (``--a-max``, the company
setting), A's throughput (runs per second, from its first queued to its last
finished) and the load average at the start and the end.

The targets: B's p95 ≤ 2 s while A drains; A never above its maximum.

Set-up: a throwaway database (PostgreSQL ``pw_fairness_bench`` on 127.0.0.1,
created and dropped by the script; ``BENCH_DATABASE_URL`` picks another,
``--sqlite`` a temporary SQLite file), as benchmarks/flow_run.py.

Run: ``python -m benchmarks.fairness`` (``--sqlite`` for SQLite throughout).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import manage_connectors as bench
from benchmarks.flow_run import Mode, base_env, load_average, setup_django
from benchmarks.stub_api import JsonHandler, StubServer

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/pw_fairness_bench"
TOKEN = "fairness-bench-token"


class StubAPI(StubServer):
    """GET /api/orders answers one order after `hold` seconds; POST /api/imports answers 201 at once."""

    def __init__(self, hold: float):
        hold_for = hold

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                time.sleep(hold_for)
                self.answer(200, {"orders": [{"id": 1, "reference": "SO-1"}]})

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.answer(201, {"ok": True})

        self.serve(Handler)


def manifest(base_url: str) -> dict:
    return {
        "name": "Stub shop", "system_type": "Other", "version": "bench", "base_url": base_url,
        "rate_limit": {"amount": 100_000, "unit": "second"},
        "auth_methods": [{
            "key": "token", "name": "API token", "type": "token",
            "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
            "headers": {"Authorization": "Bearer {{api_token}}"}, "test_request": {"path": "/me"},
        }],
        "endpoints": [
            {"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET",
             "path": "/orders", "records_path": "orders"},
            {"key": "import_order", "name": "Import order", "entity": "Order", "direction": "send", "method": "POST",
             "path": "/imports"},
        ],
    }


def company_flow(name: str, max_runs: int, base_url: str):
    """A company with one flow: receive (one order) → send."""
    from connectors import manifest as manifests
    from connectors.models import Connector
    from flows.models import ProcessFlow, Shape, ShapeKind
    from instances.models import Instance
    from patchworks_site.models import Company

    company = Company.objects.create(name=name, max_concurrent_runs=max_runs)
    connector = manifests.apply(manifests.validate(manifest(base_url)), connector=Connector(company=company))
    instance = Instance.with_connector_defaults(connector, name=f"{name} shop", auth_method=connector.auth_methods.get())
    instance.set_secrets({"api_token": TOKEN})
    instance.save()
    flow = ProcessFlow.objects.create(company=company, name=f"{name} orders", enabled=True)
    for position, key in enumerate(("list_orders", "import_order")):
        Shape.objects.create(flow=flow, kind=ShapeKind.CONNECTION, instance=instance, position=position,
                             endpoint=connector.endpoints.get(key=key), config={"timeout": 30, "retries": 0})
    return company, flow


def most_at_once(intervals) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = most = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def measure(args, env: dict[str, str], tmp: Path, api: StubAPI) -> None:
    from django.db import connection, transaction

    from flows import queueing
    from flows.models import ACTIVE_STATUSES, FlowRun, RunStatus, RunTrigger

    a_company, a_flow = company_flow("Backlog Ltd", args.a_max, api.url)
    b_company, b_flow = company_flow("Steady Ltd", args.a_max, api.url)
    env = {**env, "HUEY_WORKERS": str(args.threads)}
    mode = Mode(args.queue, 1, env, tmp, args.redis_url if args.queue == "redis" else "")
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(FlowRun.objects.filter(company=a_company, status=RunStatus.RUNNING).count())
            time.sleep(0.1)
        connection.close()

    load_start = load_average()
    mode.start()
    try:
        time.sleep(args.warm_up)  # the worker process starts
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with transaction.atomic():
            a_runs = [queueing.queue_run(a_flow, RunTrigger.MANUAL).pk for _ in range(args.a_runs)]
        a_pending = FlowRun.objects.filter(pk__in=a_runs, status__in=ACTIVE_STATUSES)
        b_runs: list[int] = []
        deadline = time.monotonic() + args.timeout
        while a_pending.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"A's runs did not drain in {args.timeout:g} s. Worker logs:\n{mode.logs()}")
            with transaction.atomic():
                b_runs.append(queueing.queue_run(b_flow, RunTrigger.MANUAL).pk)
            time.sleep(args.b_every)
        while FlowRun.objects.filter(pk__in=b_runs, status__in=ACTIVE_STATUSES).exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"B's runs did not finish. Worker logs:\n{mode.logs()}")
            time.sleep(0.1)
        done.set()
        sampler.join()
        load_end = load_average()
    finally:
        done.set()
        mode.close()

    a_rows = list(FlowRun.objects.filter(pk__in=a_runs).values("status", "queued_at", "started_at", "finished_at"))
    b_rows = list(FlowRun.objects.filter(pk__in=b_runs).values("status", "queued_at", "started_at"))
    failed = [row["status"] for row in a_rows + b_rows if row["status"] != RunStatus.SUCCESS]
    waits = [(row["started_at"] - row["queued_at"]).total_seconds() for row in b_rows]
    span = (max(r["finished_at"] for r in a_rows) - min(r["queued_at"] for r in a_rows)).total_seconds()
    rows_most = most_at_once([(r["started_at"], r["finished_at"]) for r in a_rows])
    print(f"Fairness: {args.a_runs} runs of A (maximum {args.a_max} concurrent) and 1 run of B every "
          f"{args.b_every:g} s; 1 run_huey process, {args.threads} threads, {mode.label.split(', ')[1]}; "
          f"runs hold their worker ~{args.hold:g} s")
    print(f"  B enqueue → start ({len(waits)} runs): median {statistics.median(waits):.2f} s, "
          f"p95 {percentile(waits, 0.95):.2f} s, max {max(waits):.2f} s")
    print(f"  B's waits, longest first: {', '.join(f'{w:.2f}' for w in sorted(waits, reverse=True)[:8])} s")
    print(f"  A running at once: at most {max(samples, default=0)} sampled every 100 ms ({len(samples)} samples), "
          f"{rows_most} by the rows' start and end times; maximum {a_company.concurrent_run_limit}")
    print(f"  A throughput: {len(a_rows) / span:.2f} runs/s ({len(a_rows)} runs in {span:.1f} s)")
    print(f"  runs not successful: {len(failed)}")
    print(f"  load average (1, 5, 15 min): {load_start} at the start, {load_end} at the end "
          f"({os.cpu_count()} CPUs)")
    del b_company


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a-runs", type=int, default=300)
    parser.add_argument("--a-max", type=int, default=4, help="company A's (and B's) maximum of concurrent runs")
    parser.add_argument("--b-every", type=float, default=2.0, help="seconds between B's runs")
    parser.add_argument("--hold", type=float, default=0.3, help="seconds the stub API takes to list orders")
    parser.add_argument("--threads", type=int, default=2, help="worker threads of the run_huey process")
    parser.add_argument("--queue", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis-url", default="", help="an empty Redis database, for --queue redis")
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite database instead of PostgreSQL")
    parser.add_argument("--warm-up", type=float, default=3.0, help="seconds the worker gets to start")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if args.queue == "redis" and not args.redis_url:
        parser.error("--queue redis needs --redis-url (an empty database)")
    database_url = None if args.sqlite else os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    tmp = Path(tempfile.mkdtemp(prefix="pw-fairness-bench-"))
    api = StubAPI(args.hold)
    try:
        with bench.ThrowawayDatabase(database_url) as database:
            env = base_env(database.url, tmp)
            (tmp / "static").mkdir()
            setup_django(env)
            print(f"Database: {database.label}", file=sys.stderr)
            measure(args, env, tmp, api)
            from django.db import connections

            connections.close_all()
    finally:
        api.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
