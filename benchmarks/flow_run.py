"""Benchmark: process flow runs on real workers against the Sandbox served by a real server.

What it measures
----------------
For each task-engine mode, in one invocation:

* ``sqlite``: 1 worker process (``manage.py run_huey``) on the embedded SQLite queue;
* ``redis``: 2 worker processes on Redis (``REDIS_URL=redis://127.0.0.1:6379/<db>``,
  the first empty database from 15 down, or ``--redis-url``), as on several hosts.

it prints, as one table:

* **records/s**: ``--big-runs`` runs of the flow
  *receive* (Sandbox "List orders", ``count`` orders, ``per_page`` 100) → *filter*
  (updated_at in the last 120 days: every order passes, each date is parsed) →
  *map* (reference, customer, total, updated with convert_date) → *send* ("Create
  order", send_as batch) are queued at once; records = the orders the receive
  shapes passed on, divided by the time from queueing the first to the last run
  finishing;
* **peak RSS** of each worker process (``VmHWM`` of ``/proc/<pid>/status``, read
  just before the worker is stopped), the largest of them;
* **enqueue → start latency** p50/p95 over ``--latency-runs`` small runs (one
  order) queued one after the other on idle workers: ``started_at - queued_at``
  of each run row, i.e. the hand-over on commit, the queue and the worker's
  polling (SqliteHuey polls with a back-off up to 10 s when idle; Redis blocks).

The runtime is detected, so the script works with today's runner and the
paginated streaming one alike:

* when the manifest accepts ``pagination`` (page_number, ``page``/``per_page``)
  the receive endpoint pages through all ``count`` orders; otherwise it asks for
  one page of ``per_page`` orders (the query is in the endpoint's path);
* a first probe run tries the four-shape flow; when the runner cannot run filter
  or map shapes yet, the flows become receive → send (one request per item) and
  the table says so.

Set-up: a throwaway database (PostgreSQL ``pw_flow_bench`` on 127.0.0.1 by
default, created and dropped by the script -- see benchmarks/manage_connectors.py;
``BENCH_DATABASE_URL`` picks another, ``--sqlite`` a temporary SQLite file), the
Sandbox served by gunicorn (4 sync workers, DEBUG off) on a free port of
127.0.0.1, one company with a connector made from the Sandbox's endpoints (a high
rate limit, so the benchmark measures the runner, not the limit) and two
instances: "Bench UK" (Europe/London, ISO dates) and "Bench US"
(America/New_York, ``%m/%d/%Y %H:%M``). Workers, gunicorn and the queue are
stopped and removed at the end; Redis keys are namespaced per invocation and
deleted.

How to run (from the project root)
----------------------------------
::

    .venv/bin/python benchmarks/flow_run.py --quick      # 1,000 orders, 2 big runs, 10 latency runs
    .venv/bin/python benchmarks/flow_run.py              # 10,000 orders, 2 big runs, 30 latency runs

Options: ``--count 10000 --per-page 100 --big-runs 2 --latency-runs 30
--modes sqlite,redis --sqlite --redis-url redis://127.0.0.1:6379/9 --timeout 900``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
sys.path[:0] = [str(PROJECT_DIR), str(BENCH_DIR)]

import manage_connectors as bench  # noqa: E402 - the throwaway database and the test credential key

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/pw_flow_bench"
SANDBOX_TOKEN = "sandbox-token"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_redis_url(base: str = "redis://127.0.0.1:6379") -> str:
    """The first empty Redis database from 15 down (others may share the server)."""
    import redis

    for db in range(15, 0, -1):
        url = f"{base}/{db}"
        if redis.Redis.from_url(url, socket_connect_timeout=1).dbsize() == 0:
            return url
    raise SystemExit("No empty Redis database (1-15) found; pass --redis-url.")


# --- Django, the Sandbox server and the seed ------------------------------------------------


def base_env(database_url: str, tmp: Path) -> dict[str, str]:
    """What every process of the benchmark shares: DEBUG off as in production, the throwaway database."""
    return {
        "DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "patchworks_site.settings",
        "DATABASE_URL": database_url,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "flow-bench-only-" + uuid.uuid4().hex * 2,
        "CREDENTIAL_KEYS": os.environ.get("CREDENTIAL_KEYS") or bench.TEST_CREDENTIAL_KEYS,
        "CREDENTIAL_KEY_FILE": "/nonexistent/credential-keys",
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "SECURE_SSL_REDIRECT": "0",
        "STATIC_ROOT": str(tmp / "static"),
        "OUTBOUND_ALLOW_LOOPBACK": "1",  # the Sandbox is on 127.0.0.1
        "LIMITS_STORE_PATH": str(tmp / "limits.sqlite3"),
        "LOG_LEVEL": "WARNING",
        "HUEY_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def setup_django(env: dict[str, str]) -> None:
    for name in ("REDIS_URL", "HUEY_SQLITE_PATH"):
        os.environ.pop(name, None)
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def start_sandbox(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    gunicorn = BIN / "gunicorn"
    command = (
        [str(gunicorn), "patchworks_site.wsgi", "-b", f"127.0.0.1:{port}", "-w", "4", "--log-level", "warning"]
        if gunicorn.exists()
        else [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    )
    process = subprocess.Popen(command, cwd=PROJECT_DIR, env={**os.environ, **env},
                               stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/sandbox/api/me"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"The Sandbox server stopped:\n{log.read_text()}")
        try:
            request = urllib.request.Request(url, headers={"X-Api-Key": SANDBOX_TOKEN})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"The Sandbox server did not answer in 60 s:\n{log.read_text()}")


def connector_manifest(count: int, per_page: int, paginated: bool) -> dict:
    """The Sandbox's orders endpoints, with a high rate limit so the runner is what is measured."""
    if paginated:
        list_orders = {
            "path": "/orders", "parameters": {"count": str(count)}, "records_path": "orders",
            "pagination": {"style": "page_number", "page_parameter": "page", "limit_parameter": "per_page",
                           "limit": per_page, "first_page": 1},
        }
    else:  # today's runner: one page, the query in the path
        list_orders = {"path": f"/orders?count={count}&per_page={per_page}"}
    return {
        "name": "Bench Sandbox",
        "description": "The Sandbox's orders, for the flow run benchmark.",
        "system_type": "Other",
        "version": "bench",
        "base_url": "{{base_url}}",
        "date_format": "%Y-%m-%dT%H:%M:%S%z",
        "time_zone": "UTC",
        "rate_limit": {"amount": 100000, "unit": "second"},
        "variables": [{"key": "base_url", "label": "Sandbox API URL", "required": True}],
        "auth_methods": [{
            "key": "token", "name": "API token", "type": "token",
            "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
            "headers": {"X-Api-Key": "{{api_token}}"},
            "test_request": {"method": "GET", "path": "/me", "expected_status": [200]},
        }],
        "endpoints": [
            {"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET",
             **list_orders},
            {"key": "list_one_order", "name": "List one order", "entity": "Order", "direction": "receive",
             "method": "GET", "path": "/orders?count=1&per_page=1"},
            {"key": "create_order", "name": "Create order", "entity": "Order", "direction": "send", "method": "POST",
             "path": "/orders"},
        ],
    }


@dataclass
class World:
    paginated: bool
    big_flow: object
    small_flow: object
    full_shapes: bool = True
    notes: list[str] = field(default_factory=list)


def seed(base_url: str, count: int, per_page: int) -> World:
    from connectors import editing
    from connectors import manifest as manifests
    from connectors.models import Connector, ConnectorChange
    from flows.models import ProcessFlow
    from instances.models import Instance
    from patchworks_site.models import Company

    company = Company.objects.create(name="Flow Bench Ltd")
    try:
        manifest = manifests.validate(connector_manifest(count, per_page, paginated=True))
        paginated = True
    except manifests.ManifestError:
        manifest = manifests.validate(connector_manifest(count, per_page, paginated=False))
        paginated = False
    connector = Connector(company=company)
    editing.save_definition(connector, manifest, action=ConnectorChange.Action.CREATED, summary="created")
    method = connector.auth_methods.get(key="token")

    def instance(name: str, **fields) -> Instance:
        obj = Instance.with_connector_defaults(connector, name=name, auth_method=method,
                                               values={"base_url": base_url}, **fields)
        obj.set_secrets({"api_token": SANDBOX_TOKEN})
        obj.save()
        return obj

    source = instance("Bench UK", time_zone="Europe/London")
    target = instance("Bench US", time_zone="America/New_York", date_format="%m/%d/%Y %H:%M")
    world = World(
        paginated=paginated,
        big_flow=ProcessFlow.objects.create(company=company, name="Bench: orders", enabled=True),
        small_flow=ProcessFlow.objects.create(company=company, name="Bench: one order", enabled=True),
    )
    world.endpoints = {e.key: e for e in connector.endpoints.all()}
    world.source, world.target = source, target
    if not paginated:
        world.notes.append(f"the manifest has no pagination yet: each big run receives one page of {per_page} orders")
    build_shapes(world, full=True)
    return world


def build_shapes(world: World, full: bool) -> None:
    """receive → filter → map → send, or receive → send for a runner without filter and map shapes."""
    from flows.models import Shape, ShapeKind

    connection = {"timeout": 60, "retries": 0, "allow_unsuccessful": False, "send_as": "item", "parameters": {}}
    plain = {"constant": "", "convert_date": False}
    for flow, receive_key in ((world.big_flow, "list_orders"), (world.small_flow, "list_one_order")):
        flow.shapes.all().delete()
        shapes = [Shape(kind=ShapeKind.CONNECTION, instance=world.source, endpoint=world.endpoints[receive_key],
                        config=connection)]
        if full:
            shapes += [
                Shape(kind=ShapeKind.FILTER, config={"match": "all", "rules": [
                    {"field": "updated_at", "comparison": "in_last", "value": "120", "unit": "days"}]}),
                Shape(kind=ShapeKind.MAP, config={"keep_unmapped": False, "fields": [
                    {"target": "reference", "source": "number", **plain},
                    {"target": "customer", "source": "customer.name", **plain},
                    {"target": "total", "source": "total", **plain},
                    {"target": "updated", "source": "updated_at", **plain, "convert_date": True},
                ]}),
            ]
        shapes.append(Shape(kind=ShapeKind.CONNECTION, instance=world.target, endpoint=world.endpoints["create_order"],
                            config={**connection, "send_as": "batch"}))
        for position, shape in enumerate(shapes):
            shape.flow, shape.position = flow, position
        Shape.objects.bulk_create(shapes)
    world.full_shapes = full


# --- workers and runs -------------------------------------------------------------------------


class Mode:
    """One task-engine set-up: its queue, its worker processes."""

    def __init__(self, name: str, processes: int, env: dict[str, str], tmp: Path, redis_url: str = ""):
        from huey.contrib.djhuey import HUEY
        from huey.storage import RedisStorage, SqliteStorage

        self.name, self.count, self.redis_url = name, processes, redis_url
        self.queue_name = f"pw-flow-bench-{uuid.uuid4().hex[:12]}"
        self.env = {**os.environ, **env, "HUEY_NAME": self.queue_name}
        self.env.pop("REDIS_URL", None)
        self.env.pop("HUEY_SQLITE_PATH", None)
        if redis_url:
            self.env |= {"REDIS_URL": redis_url, "LIMITS_KEY_PREFIX": self.queue_name}
            storage = RedisStorage(name=self.queue_name, url=redis_url)
            self.label = f"{processes} workers, Redis queue"
        else:
            self.env["HUEY_SQLITE_PATH"] = str(tmp / f"{self.queue_name}.sqlite3")
            storage = SqliteStorage(name=self.queue_name, filename=self.env["HUEY_SQLITE_PATH"])
            self.label = f"{processes} worker, SQLite queue"
        self.tmp = tmp
        self.huey = HUEY
        self.original_storage = HUEY.storage
        HUEY.storage = storage  # runs queued here go to this mode's queue
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        for n in range(self.count):
            log = (self.tmp / f"{self.queue_name}-worker-{n}.log").open("w")
            self.processes.append(subprocess.Popen([sys.executable, "manage.py", "run_huey"], cwd=PROJECT_DIR,
                                                   env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def peak_rss_mib(self) -> float:
        peaks = []
        for process in self.processes:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return max(peaks, default=float("nan"))

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.tmp.glob(f"{self.queue_name}-worker-*.log")))

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.huey.storage.flush_all()
        self.huey.storage = self.original_storage
        if self.redis_url:
            import redis

            client = redis.Redis.from_url(self.redis_url)
            for key in client.scan_iter(match=f"*{self.queue_name}*"):
                client.delete(key)


def queue(flow) -> int:
    from flows import runs
    from flows.models import RunTrigger

    return runs.queue_run(flow, RunTrigger.MANUAL).pk


def wait_for(run_pks: list[int], timeout: float, mode: Mode, poll: float = 0.05) -> list:
    from flows.models import ACTIVE_STATUSES, FlowRun

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not FlowRun.objects.filter(pk__in=run_pks, status__in=ACTIVE_STATUSES).exists():
            return list(FlowRun.objects.filter(pk__in=run_pks).prefetch_related("shape_runs"))
        time.sleep(poll)
    raise SystemExit(f"{mode.label}: runs {run_pks} did not finish in {timeout:g} s. Worker logs:\n{mode.logs()}")


def received(run) -> int:
    """The records the run's first (receive) shape passed on."""
    first = min(run.shape_runs.all(), key=lambda s: s.position, default=None)
    return first.items_out if first else 0


@dataclass
class Result:
    mode: str
    runs: int = 0
    records: int = 0
    seconds: float = 0.0
    failed: int = 0
    peak_rss_mib: float = float("nan")
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def percentile(self, p: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]


def measure(mode: Mode, world: World, args, probe: bool) -> Result:
    from flows.models import RunStatus

    result = Result(mode.label)
    mode.start()
    # Warm-up (worker start-up, first connections); the first mode's also probes the runtime.
    warm = wait_for([queue(world.small_flow)], args.timeout, mode)[0]
    if warm.status != RunStatus.SUCCESS:
        if probe and world.full_shapes:
            world.notes.append(f"filter/map shapes did not run ({warm.failure_reason[:120]}): flows are receive → send")
            build_shapes(world, full=False)
            warm = wait_for([queue(world.small_flow)], args.timeout, mode)[0]
        if warm.status != RunStatus.SUCCESS:
            raise SystemExit(f"{mode.label}: the warm-up run ended {warm.status}: {warm.failure_reason}\n{mode.logs()}")

    started = time.perf_counter()
    pks = [queue(world.big_flow) for _ in range(args.big_runs)]
    finished = wait_for(pks, args.timeout, mode)
    result.seconds = time.perf_counter() - started
    result.runs = len(finished)
    result.records = sum(received(run) for run in finished)
    result.failed = sum(run.status not in (RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS) for run in finished)
    for run in finished:
        if run.status not in (RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS):
            print(f"  {mode.label}: run {run.pk} ended {run.status}: {run.failure_reason[:200]}", file=sys.stderr)

    for _ in range(args.latency_runs):
        time.sleep(random.uniform(0, 0.2))  # not in step with the workers' polling
        run = wait_for([queue(world.small_flow)], args.timeout, mode, poll=0.01)[0]
        if run.started_at:
            result.latencies_ms.append((run.started_at - run.queued_at).total_seconds() * 1000)
    result.peak_rss_mib = mode.peak_rss_mib()
    return result


def print_table(results: list[Result], world: World, args, database: str, server: str) -> None:
    print()
    print(f"Flow run benchmark: {database}; Sandbox served by {server}")
    flow = "receive → filter → map → send (batch)" if world.full_shapes else "receive → send"
    pages = f"{args.count} orders, pages of {args.per_page}" if world.paginated else f"one page of {args.per_page}"
    print(f"Big runs: {flow}, {pages}; {args.big_runs} queued at once. Latency: {args.latency_runs} one-order runs.")
    for note in world.notes:
        print(f"Note: {note}")
    headers = ["mode", "runs", "records", "seconds", "records/s", "failed", "peak RSS MiB", "latency p50 ms",
               "latency p95 ms"]
    rows = [[r.mode, str(r.runs), str(r.records), f"{r.seconds:.1f}", f"{r.records_per_second:.0f}", str(r.failed),
             f"{r.peak_rss_mib:.0f}", f"{r.percentile(50):.0f}", f"{r.percentile(95):.0f}"] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    print(line(headers))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 orders, 2 big runs, 10 latency runs")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("--big-runs", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--modes", default="sqlite,redis")
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite database instead of PostgreSQL")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for a batch of runs")
    args = parser.parse_args()
    if args.quick:
        args.count, args.latency_runs = min(args.count, 1000), min(args.latency_runs, 10)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - {"sqlite", "redis"}:
        parser.error("--modes takes sqlite and/or redis")

    database_url = None if args.sqlite else os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    tmp = Path(tempfile.mkdtemp(prefix="pw-flow-bench-"))
    server = None
    try:
        with bench.ThrowawayDatabase(database_url) as database:
            env = base_env(database.url, tmp)
            (tmp / "static").mkdir()
            setup_django(env)
            port = free_port()
            server = start_sandbox(env, port, tmp / "sandbox.log")
            server_name = "gunicorn (4 workers)" if (BIN / "gunicorn").exists() else "runserver"
            world = seed(f"http://127.0.0.1:{port}/sandbox/api", args.count, args.per_page)
            results = []
            for n, name in enumerate(modes):
                redis_url = (args.redis_url or free_redis_url()) if name == "redis" else ""
                mode = Mode(name, 2 if name == "redis" else 1, env, tmp, redis_url)
                try:
                    print(f"Measuring {mode.label} ...", file=sys.stderr)
                    results.append(measure(mode, world, args, probe=n == 0))
                finally:
                    mode.close()
            print_table(results, world, args, database.label, server_name)
            from django.db import connections

            connections.close_all()
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
