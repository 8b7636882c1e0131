"""Benchmark: process flow runs on real workers against the Sandbox served by a real server.

What it measures
----------------
The flow: *receive* (Sandbox "List orders", ``count`` orders in pages of ``per_page``
100, page-number pagination) → *filter* (updated_at in the last 10,000 days: every
order passes, each date is parsed) → *map* (reference, customer, total, updated
with convert_date) → *send* ("Create order", POST /orders). Pages stream: each
page goes through filter, map and send before the next one is requested.

**Throughput**, for each task-engine mode:

* ``sqlite``: 1 worker process (``manage.py run_huey``, 2 task threads) on the
  embedded SQLite queue;
* ``redis``: 2 worker processes on Redis (``REDIS_URL=redis://127.0.0.1:6379/<db>``,
  the first empty database from 15 down, or ``--redis-url``), as on several hosts.

it prints records/s of ``--big-runs`` runs of ``--count`` orders sent as batch
(one POST per page) queued at once (records = orders received; time from queueing
the first to the last run finishing), records/s of one run of ``--item-count``
orders sent as item (one POST per order), the workers' peak RSS (``VmHWM``) and
the **enqueue → start latency** p50/p95 over ``--latency-runs`` one-order runs
queued one after the other on idle workers (``started_at - queued_at``: the
hand-over on commit, the queue and the worker's polling -- SqliteHuey polls with
a back-off when idle; Redis blocks).

**Memory**: for each of ``--memory-counts`` a fresh worker (SQLite queue, one
task thread) does a one-order warm-up run, then one run of that many orders:
``VmHWM`` after the warm-up and after the run, and the growth. The runtime
holds one page per shape, so the growth must not follow the record count.

**Against a bare loop** (``--ratio`` runs only this): the product's records/s
divided by those of the plainest client making the same HTTP calls, as a median
of ``--ratio-pairs`` (5) pairs measured alternately in one invocation (product,
bare, product, bare, ...), ``--count`` orders sent as batch:

* *product*: one run queued (``queueing.queue_run``, as the Run button does) to
  one worker process (``run_huey``, SQLite queue, warmed up by a one-order run);
  timed from before queueing until this process sees the run finished (polled
  every 10 ms). It includes the hand-over (shown apart: the worker's polling of
  the SQLite queue backs off while it is idle, during the bare loop; ``--ratio-queue
  redis`` uses a Redis queue, which wakes the worker at once), reading the
  flow, every page's GET, parsing the JSON, filter (each date parsed), map,
  building the POST body, the POSTs, the outbound checks (SSRF guard, rate limit,
  pool slot, deadlines, redaction of what is kept) and the run's bookkeeping in
  the database.
* *bare*: one ``requests.Session`` (kept alive across all pairs, its connection
  opened before the first pair) replaying the calls the product made in a
  recorded run (executed once in this process before the pairs): the same
  method, URL with its query (``count``, ``page``, ``per_page``), headers (the
  API key, User-Agent, Accept, Content-Type) and POST bodies, byte for byte,
  in the same order, one after the other; each answer is read and its JSON
  parsed. Nothing else: no filter or map (the bodies are already built), no
  database, no queue.

Each pair also shows the CPU seconds of the worker process during the product
run and of the bare loop: on a shared machine they vary less than the wall
time, and say how much of the difference is the worker's own work.

Both serve the same records to the same Sandbox server, so the Sandbox's own
time is in both (gunicorn's sync workers close every connection, so both sides
open one per request; both post the same orders, which the Sandbox stores,
keeping each account's newest within SANDBOX_MAX_ORDERS_PER_ACCOUNT);
the ratio is the share of the bare loop's speed the product keeps. Records =
orders received.

``--profile COUNT[:item|batch]`` runs one flow run in this process instead,
under cProfile (``--profile-callees REGEX`` for what chosen functions call),
times the Sandbox alone (GET /me beside POST /orders) and runs it again under
tracemalloc (peak traced memory, the largest allocations still held).

Set-up: a throwaway database (PostgreSQL ``pw_flow_bench`` on 127.0.0.1 by
default, created and dropped by the script -- see benchmarks/manage_connectors.py;
``BENCH_DATABASE_URL`` picks another, ``--sqlite`` a temporary SQLite file), the
Sandbox served by gunicorn (4 sync workers, DEBUG off) on a free port of
127.0.0.1, one company with a connector made from the Sandbox's orders endpoints
(``count`` is a request parameter each flow sets; a rate limit of 100,000
requests/s, so the benchmark measures the runner, not the limit) and two
instances: "Bench UK" (Europe/London, ISO dates) and "Bench US"
(America/New_York, ``%m/%d/%Y %H:%M``). Workers, gunicorn and the queues are
stopped and removed at the end; Redis keys are namespaced per invocation and
deleted.

How to run (from the project root)
----------------------------------
::

    .venv/bin/python -m benchmarks.flow_run --quick      # 1,000 orders, 200 as item, memory at 1,000 and 3,000
    .venv/bin/python -m benchmarks.flow_run              # 10,000 orders, 1,000 as item, memory at 1k/10k/30k
    .venv/bin/python -m benchmarks.flow_run --profile 300:item
    .venv/bin/python -m benchmarks.flow_run --ratio --count 10000   # only the comparison with the bare loop

Options: ``--count 10000 --item-count 1000 --per-page 100 --big-runs 2 --latency-runs 30
--memory-counts 1000,10000,30000 --modes sqlite,redis --ratio-pairs 5 --ratio-queue sqlite --sqlite
--redis-url redis://127.0.0.1:6379/9 --timeout 900``.
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

from benchmarks import manage_connectors as bench  # the throwaway database and the test credential key
from tests.processes import stop_all

PROJECT_DIR = Path(__file__).resolve().parent.parent

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/pw_flow_bench"
SANDBOX_TOKEN = "sandbox-token"
RATE_LIMIT = 100_000  # requests per second per instance: far above what is reached, so not what is measured
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
        "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",  # no alert email leaves a benchmark
        "SECURE_SSL_REDIRECT": "0",
        "STATIC_ROOT": str(tmp / "static"),
        "OUTBOUND_ALLOW_LOOPBACK": "1",  # the Sandbox is on 127.0.0.1
        "SANDBOX_ENABLED": "1",  # served with DEBUG off too: the Sandbox is the API the flows call
        "SANDBOX_RATE_LIMIT_PER_SECOND": "1000000",  # its own limit is not what is measured
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


def connector_manifest(per_page: int) -> dict:
    """The Sandbox's orders endpoints; `count` is a request parameter, so every flow sets its own size.

    The rate limit is far above what two workers can send, so the runner is what is measured, not the limit.
    """
    return {
        "name": "Bench Sandbox",
        "description": "The Sandbox's orders, for the flow run benchmark.",
        "system_type": "Other",
        "version": "bench",
        "base_url": "{{base_url}}",
        "date_format": "%Y-%m-%dT%H:%M:%S%z",
        "time_zone": "UTC",
        "rate_limit": {"amount": RATE_LIMIT, "unit": "second"},
        "variables": [{"key": "base_url", "label": "Sandbox API URL", "required": True}],
        "auth_methods": [{
            "key": "token", "name": "API token", "type": "token",
            "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
            "headers": {"X-Api-Key": "{{api_token}}"},
            "test_request": {"method": "GET", "path": "/me", "expected_status": [200]},
        }],
        "endpoints": [
            {"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET",
             "path": "/orders", "records_path": "orders",
             "request_parameters": [{"name": "count", "location": "query", "required": True, "default": "1"}],
             "pagination": {"style": "page_number", "page_parameter": "page", "limit_parameter": "per_page",
                            "limit": per_page, "first_page": 1}},
            {"key": "create_order", "name": "Create order", "entity": "Order", "direction": "send", "method": "POST",
             "path": "/orders", "idempotency": {"in": "header", "name": "Idempotency-Key"}},
        ],
    }


@dataclass
class World:
    company: object
    source: object
    target: object
    endpoints: dict
    flows: dict = field(default_factory=dict)  # (count, send_as) -> ProcessFlow

    def flow(self, count: int, send_as: str = "batch"):
        """The flow receive (`count` orders) → filter → map → send (`send_as`), made on first use."""
        key = (count, send_as)
        if key not in self.flows:
            self.flows[key] = build_flow(self, count, send_as)
        return self.flows[key]


def seed(base_url: str, per_page: int) -> World:
    from connectors import editing
    from connectors import manifest as manifests
    from connectors.models import Connector, ConnectorChange
    from instances.models import Instance
    from patchworks_site.models import Company

    company = Company.objects.create(name="Flow Bench Ltd")
    manifest = manifests.validate(connector_manifest(per_page))
    connector = Connector(company=company)
    editing.save_definition(connector, manifest, action=ConnectorChange.Action.CREATED, summary="created")
    method = connector.auth_methods.get(key="token")

    def instance(name: str, **fields) -> Instance:
        obj = Instance.with_connector_defaults(connector, name=name, auth_method=method,
                                               values={"base_url": base_url}, **fields)
        obj.set_secrets({"api_token": SANDBOX_TOKEN})
        obj.save()
        return obj

    return World(
        company=company,
        source=instance("Bench UK", time_zone="Europe/London"),
        target=instance("Bench US", time_zone="America/New_York", date_format="%m/%d/%Y %H:%M"),
        endpoints={e.key: e for e in connector.endpoints.all()},
    )


def build_flow(world: World, count: int, send_as: str):
    """receive → filter (every order passes, each date parsed) → map (a date converted) → send."""
    from flows.models import ProcessFlow, Shape, ShapeKind

    flow = ProcessFlow.objects.create(company=world.company, name=f"Bench: {count} orders, {send_as}", enabled=True)
    connection = {"timeout": 60, "retries": 0, "allow_unsuccessful": False, "send_as": send_as, "parameters": {}}
    plain = {"constant": "", "convert_date": False}
    shapes = [
        Shape(kind=ShapeKind.CONNECTION, instance=world.source, endpoint=world.endpoints["list_orders"],
              config={**connection, "parameters": {"count": str(count)}}),
        Shape(kind=ShapeKind.FILTER, config={"match": "all", "rules": [
            {"field": "updated_at", "comparison": "in_last", "value": "10000", "unit": "days"}]}),
        Shape(kind=ShapeKind.MAP, config={"keep_unmapped": False, "fields": [
            {"target": "reference", "source": "number", **plain},
            {"target": "customer", "source": "customer.name", **plain},
            {"target": "total", "source": "total", **plain},
            {"target": "updated", "source": "updated_at", **plain, "convert_date": True},
        ]}),
        Shape(kind=ShapeKind.CONNECTION, instance=world.target, endpoint=world.endpoints["create_order"],
              config=connection),
    ]
    for position, shape in enumerate(shapes):
        shape.flow, shape.position = flow, position
    Shape.objects.bulk_create(shapes)
    return flow


# --- workers and runs -------------------------------------------------------------------------


class Mode:
    """One task-engine set-up: its queue, its worker processes."""

    def __init__(self, name: str, processes: int, env: dict[str, str], tmp: Path, redis_url: str = "",
                 code_dir: Path = PROJECT_DIR):
        from huey.contrib.djhuey import HUEY
        from huey.storage import RedisStorage, SqliteStorage

        self.name, self.count, self.redis_url = name, processes, redis_url
        self.code_dir = code_dir  # whose manage.py the workers run (another revision's, to compare)
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
            self.processes.append(subprocess.Popen([sys.executable, "manage.py", "run_huey"], cwd=self.code_dir,
                                                   env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def cpu_seconds(self) -> float:
        """The CPU time (user + system) the worker processes have used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for process in self.processes:
            try:
                fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total

    def memory_mib(self, field_name: str = "VmHWM") -> float:
        """The largest `field_name` (VmHWM: peak RSS, VmRSS: RSS now) of the worker processes, in MiB."""
        values = []
        for process in self.processes:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith(f"{field_name}:"):
                    values.append(int(line.split()[1]) / 1024)
        return max(values, default=float("nan"))

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.tmp.glob(f"{self.queue_name}-worker-*.log")))

    def close(self) -> None:
        stop_all(self.processes, timeout=15)
        self.huey.storage.flush_all()
        self.huey.storage = self.original_storage
        if self.redis_url:
            import redis

            client = redis.Redis.from_url(self.redis_url)
            for key in client.scan_iter(match=f"*{self.queue_name}*"):
                client.delete(key)


def queue(flow) -> int:
    from flows import queueing
    from flows.models import RunTrigger

    return queueing.queue_run(flow, RunTrigger.MANUAL).pk


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


def sent(run) -> int:
    """The items the run's last (send) shape took in."""
    last = max(run.shape_runs.all(), key=lambda s: s.position, default=None)
    return last.items_in if last else 0


@dataclass
class Timed:
    runs: int = 0
    records: int = 0
    seconds: float = 0.0
    failed: int = 0
    handover: float = 0.0  # the longest wait from queued to started, seconds

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def timed_runs(mode: Mode, flow, runs: int, timeout: float, poll: float = 0.05) -> Timed:
    """`runs` runs of `flow` queued at once: records = orders received, time from the first queued to the last done."""
    from flows.models import RunStatus

    started = time.perf_counter()
    pks = [queue(flow) for _ in range(runs)]
    finished = wait_for(pks, timeout, mode, poll=poll)
    timed = Timed(runs=len(finished), seconds=time.perf_counter() - started)
    timed.records = sum(received(run) for run in finished)
    timed.handover = max(((r.started_at - r.queued_at).total_seconds() for r in finished if r.started_at), default=0)
    for run in finished:
        if run.status != RunStatus.SUCCESS or sent(run) != received(run):
            timed.failed += 1
            print(f"  {mode.label}: run {run.pk} ended {run.status} (received {received(run)}, sent {sent(run)}): "
                  f"{run.failure_reason[:200]}", file=sys.stderr)
    return timed


def warm_up(mode: Mode, world: World, timeout: float) -> None:
    """One one-order run: worker start-up, imports, first connections."""
    from flows.models import RunStatus

    warm = wait_for([queue(world.flow(1))], timeout, mode)[0]
    if warm.status != RunStatus.SUCCESS:
        raise SystemExit(f"{mode.label}: the warm-up run ended {warm.status}: {warm.failure_reason}\n{mode.logs()}")


@dataclass
class Result:
    mode: str
    batch: Timed = field(default_factory=Timed)
    item: Timed | None = None
    peak_rss_mib: float = float("nan")
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, p: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]


def measure(mode: Mode, world: World, args) -> Result:
    result = Result(mode.label)
    mode.start()
    warm_up(mode, world, args.timeout)
    result.batch = timed_runs(mode, world.flow(args.count, "batch"), args.big_runs, args.timeout)
    if args.item_count:
        result.item = timed_runs(mode, world.flow(args.item_count, "item"), 1, args.timeout)
    for _ in range(args.latency_runs):
        time.sleep(random.uniform(0, 0.2))  # not in step with the workers' polling
        run = wait_for([queue(world.flow(1))], args.timeout, mode, poll=0.01)[0]
        if run.started_at:
            result.latencies_ms.append((run.started_at - run.queued_at).total_seconds() * 1000)
    result.peak_rss_mib = mode.memory_mib("VmHWM")
    return result


@dataclass
class Memory:
    count: int
    baseline_mib: float
    peak_mib: float
    timed: Timed

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.baseline_mib


def measure_memory(world: World, args, env: dict[str, str], tmp: Path) -> list[Memory]:
    """Per size a fresh worker (SQLite queue, one task thread): peak RSS after a warm-up run, then after one run."""
    rows = []
    for count in args.memory_counts:
        mode = Mode("sqlite", 1, {**env, "HUEY_WORKERS": "1"}, tmp)
        try:
            print(f"Memory: {count} orders on a fresh worker ...", file=sys.stderr)
            mode.start()
            warm_up(mode, world, args.timeout)
            baseline = mode.memory_mib("VmHWM")
            timed = timed_runs(mode, world.flow(count, "batch"), 1, args.timeout)
            rows.append(Memory(count, baseline, mode.memory_mib("VmHWM"), timed))
        finally:
            mode.close()
    return rows


@dataclass(frozen=True)
class Call:
    """One HTTP request as the product sent it: what the bare loop sends again."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def record_calls(flow, env: dict[str, str], tmp: Path) -> tuple[list[Call], int]:
    """Run `flow` once in this process and keep every request it sent, as sent (auth headers included)."""
    from flows import execution
    from flows.models import RunStatus
    from instances.outbound import sending

    calls: list[Call] = []
    original = sending._send_one

    def recording(method, url, headers, body, cookies, deadline):
        calls.append(Call(method, url, dict(headers), body))
        return original(method, url, headers, body, cookies, deadline)

    mode = Mode("sqlite", 0, env, tmp)  # a throwaway queue: the queued task is never picked up
    sending._send_one = recording
    try:
        run = execution.execute(queue(flow))
    finally:
        sending._send_one = original
        mode.close()
    if run.status != RunStatus.SUCCESS:
        raise SystemExit(f"The recorded run ended {run.status}: {run.failure_reason}")
    return calls, received(run)


def bare_loop(session, calls: list[Call]) -> float:
    """Seconds to send `calls` one after the other on `session`, reading each answer and parsing its JSON."""
    import json

    started = time.perf_counter()
    for call in calls:
        headers = call.headers
        if "Idempotency-Key" in headers:  # a new key, as each product run sends: the Sandbox stores, not replays
            headers = {**headers, "Idempotency-Key": uuid.uuid4().hex}
        response = session.request(call.method, call.url, headers=headers, data=call.body, timeout=60)
        if response.status_code >= 400:
            raise SystemExit(f"The bare loop: {call.method} {call.url} answered {response.status_code}")
        json.loads(response.content)
    return time.perf_counter() - started


@dataclass
class Pair:
    product: Timed
    bare_seconds: float
    product_cpu: float  # the worker's CPU seconds during the product run
    bare_cpu: float  # this process's CPU seconds during the bare loop

    @property
    def bare_records_per_second(self) -> float:
        return self.product.records / self.bare_seconds if self.bare_seconds else 0.0

    @property
    def ratio(self) -> float:
        return self.product.records_per_second / self.bare_records_per_second if self.bare_seconds else 0.0


def measure_ratio(world: World, args, env: dict[str, str], tmp: Path) -> tuple[list[Pair], int]:
    """Product runs on one worker and the bare loop over the recorded calls, alternately (see the docstring)."""
    import requests

    flow = world.flow(args.count, "batch")
    calls, records = record_calls(flow, env, tmp)
    redis_url = (args.redis_url or free_redis_url()) if args.ratio_queue == "redis" else ""
    mode = Mode(args.ratio_queue, 1, env, tmp, redis_url)
    pairs = []
    try:
        mode.start()
        warm_up(mode, world, args.timeout)
        with requests.Session() as session:
            get = next(call for call in calls if call.method == "GET")
            session.get(world.source.values["base_url"] + "/me", headers=get.headers, timeout=60).raise_for_status()
            for n in range(args.ratio_pairs):
                print(f"Ratio: pair {n + 1} of {args.ratio_pairs} ...", file=sys.stderr)
                cpu = mode.cpu_seconds()
                product = timed_runs(mode, flow, 1, args.timeout, poll=0.01)
                product_cpu = mode.cpu_seconds() - cpu
                if product.records != records:
                    raise SystemExit(f"The product run received {product.records} orders, the recorded one {records}")
                cpu = time.process_time()
                bare_seconds = bare_loop(session, calls)
                pairs.append(Pair(product, bare_seconds, product_cpu, time.process_time() - cpu))
    finally:
        mode.close()
    return pairs, len(calls)


def profile(world: World, args, env: dict[str, str], tmp: Path) -> None:
    """One run executed in this process (no worker) under cProfile, then one under tracemalloc (peak traced)."""
    import cProfile
    import gc
    import pstats
    import tracemalloc

    from flows import execution

    count, _, send_as = args.profile.partition(":")
    flow = world.flow(int(count), send_as or "batch")
    mode = Mode("sqlite", 0, env, tmp)  # a throwaway queue: the queued task is never picked up
    limits_url = ""
    if args.profile_redis_limits:  # rate limits and pool slots in Redis, as on the workers of the redis mode
        from django.conf import settings

        limits_url = args.redis_url or free_redis_url()
        settings.REDIS_URL, settings.LIMITS_KEY_PREFIX = limits_url, mode.queue_name
        print(f"Rate limits and pools in Redis ({limits_url})")
    try:
        pk = queue(flow)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        run = profiler.runcall(execution.execute, pk)
        seconds = time.perf_counter() - started
        print(f"\nProfile: {flow.name}: {run.status}, {received(run)} received in {seconds:.2f} s "
              f"({received(run) / seconds:.0f} records/s, under cProfile)")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(args.profile_lines)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile_lines)
        if args.profile_callees:
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_callees(args.profile_callees)
        server_timings(world)
        pk = queue(flow)
        tracemalloc.start(10)
        execution.execute(pk)
        current, peak = tracemalloc.get_traced_memory()
        gc.collect()  # what is still held, not garbage waiting for the cycle collector
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        held = sum(stat.size for stat in snapshot.statistics("filename"))
        print(f"tracemalloc: peak {peak / 2**20:.1f} MiB traced during the run, {current / 2**20:.1f} MiB at its end, "
              f"{held / 2**20:.2f} MiB still held after a garbage collection")
        for stat in snapshot.statistics("lineno")[:10]:
            print(f"  {stat}")
        if os.environ.get("BENCH_TRACEBACKS"):
            for stat in snapshot.statistics("traceback")[:3]:
                print(f"  {stat}")
                print("    " + "\n    ".join(stat.traceback.format()))
    finally:
        mode.close()
        if limits_url:
            import redis

            client = redis.Redis.from_url(limits_url)
            for key in client.scan_iter(match=f"*{mode.queue_name}*"):
                client.delete(key)


def server_timings(world: World, requests_each: int = 100) -> None:
    """The Sandbox's own cost: mean ms of a trivial GET /me beside POST /orders (one order, a page of 100)."""
    import json

    base = world.source.values["base_url"]
    order = {"reference": "R1", "customer": "A Customer", "total": "12.50", "updated": "01/02/2026 10:00"}

    def mean_ms(path: str, body: object | None = None) -> float:
        started = time.perf_counter()
        for _ in range(requests_each):
            data = json.dumps(body).encode() if body is not None else None
            request = urllib.request.Request(base + path, data=data, headers={
                "X-Api-Key": SANDBOX_TOKEN, "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
        return (time.perf_counter() - started) * 1000 / requests_each

    print(f"Sandbox alone ({requests_each} requests each, one connection per request): GET /me "
          f"{mean_ms('/me'):.1f} ms, POST /orders one order {mean_ms('/orders', order):.1f} ms, "
          f"a batch of 100 {mean_ms('/orders', [order] * 100):.1f} ms")


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(line(headers))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def print_ratio(pairs: list[Pair], calls: int, args) -> None:
    print()
    print(f"Against a bare loop: {args.count:,} orders sent as batch ({calls} HTTP calls); product = one run queued to"
          f" one worker ({args.ratio_queue} queue), queueing to finished (hand-over: queued → started);"
          " bare = one kept-alive requests.Session replaying the"
          " product's recorded calls (same URLs, headers, bodies), each answer's JSON parsed. Alternately, in order:")
    table(["pair", "product s", "of which hand-over s", "product rec/s", "bare s", "bare rec/s", "ratio",
           "worker CPU s", "bare CPU s"], [
        [str(n), f"{p.product.seconds:.2f}", f"{p.product.handover:.2f}", f"{p.product.records_per_second:.0f}",
         f"{p.bare_seconds:.2f}", f"{p.bare_records_per_second:.0f}", f"{p.ratio:.2f}", f"{p.product_cpu:.2f}",
         f"{p.bare_cpu:.2f}"]
        for n, p in enumerate(pairs, 1)
    ])
    print(f"Median ratio (product rec/s ÷ bare loop rec/s) of {len(pairs)}: "
          f"{statistics.median(p.ratio for p in pairs):.2f}; load average {load_average()}. CPU: the worker's during"
          " the product run (its own, not the Sandbox's or the database's) and the bare loop's; the median worker"
          f" CPU is {statistics.median(p.product_cpu for p in pairs):.2f} s against"
          f" {statistics.median(p.bare_cpu for p in pairs):.2f} s.")


def print_report(results: list[Result], memory: list[Memory], args, database: str, server: str) -> None:
    print()
    print(f"Flow run benchmark: {database}; Sandbox served by {server}; load average {args.load_at_start} at the"
          f" start, {load_average()} at the end")
    print(f"Flow: receive (Sandbox List orders, pages of {args.per_page}) → filter (updated_at in the last 10000 days:"
          " every order passes, each date parsed) → map (4 fields, one date converted) → send (Create order).")
    print(f"Rate limit of both instances: {RATE_LIMIT:,} requests/s, so the limit is not what is measured.")
    if results:
        print()
        print(f"Throughput: {args.big_runs} runs of {args.count:,} orders sent as batch (one POST per page) queued at"
              f" once; {args.item_count:,} orders sent as item (one POST per order), one run;"
              f" latency over {args.latency_runs} one-order runs queued one after the other.")
        rows = []
        for r in results:
            item = r.item
            rows.append([
                r.mode, str(r.batch.records), f"{r.batch.seconds:.1f}", f"{r.batch.records_per_second:.0f}",
                f"{item.records_per_second:.0f}" if item else "-", str(r.batch.failed + (item.failed if item else 0)),
                f"{r.peak_rss_mib:.0f}", f"{r.percentile(50):.0f}", f"{r.percentile(95):.0f}",
            ])
        table(["mode", "records", "seconds", "batch rec/s", "item rec/s", "failed", "peak RSS MiB",
               "latency p50 ms", "latency p95 ms"], rows)
    if memory:
        print()
        print("Memory: one fresh worker per size (SQLite queue, 1 task thread); VmHWM after a one-order warm-up run"
              " and after one run of the size, sent as batch.")
        table(["orders", "seconds", "records/s", "after warm-up MiB", "peak MiB", "growth MiB"], [
            [f"{m.count:,}", f"{m.timed.seconds:.1f}", f"{m.timed.records_per_second:.0f}", f"{m.baseline_mib:.1f}",
             f"{m.peak_mib:.1f}", f"{m.growth_mib:+.1f}"] for m in memory
        ])


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1,000 orders, 200 as item, 10 latency runs, memory at 1,000 and 3,000")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--item-count", type=int, default=1_000, help="orders of the send-as-item run (0: none)")
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("--big-runs", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--memory-counts", default="1000,10000,30000",
                        help="sizes of the memory runs, comma-separated (empty: none)")
    parser.add_argument("--modes", default="sqlite,redis", help="throughput modes (empty: none)")
    parser.add_argument("--ratio", action="store_true",
                        help="only the comparison with a bare requests.Session loop making the same calls")
    parser.add_argument("--ratio-pairs", type=int, default=5, help="product/bare pairs of the comparison (0: none)")
    parser.add_argument("--ratio-queue", choices=["sqlite", "redis"], default="sqlite",
                        help="the queue of the comparison's worker")
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite database instead of PostgreSQL")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--profile", default="", metavar="COUNT[:item|batch]",
                        help="only profile one run of COUNT orders in this process (cProfile, tracemalloc)")
    parser.add_argument("--profile-lines", type=int, default=25)
    parser.add_argument("--profile-redis-limits", action="store_true",
                        help="the profiled run keeps its rate limits and pool slots in Redis")
    parser.add_argument("--profile-callees", default="", help="a regular expression: print what these functions call")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for a batch of runs")
    args = parser.parse_args()
    if args.quick:
        args.count, args.latency_runs = min(args.count, 1000), min(args.latency_runs, 10)
        args.item_count, args.memory_counts = min(args.item_count, 200), "1000,3000"
    args.memory_counts = [int(c) for c in args.memory_counts.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - {"sqlite", "redis"}:
        parser.error("--modes takes sqlite and/or redis")
    if args.ratio:
        modes, args.memory_counts, args.ratio_pairs = [], [], max(args.ratio_pairs, 1)

    database_url = None if args.sqlite else os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    args.load_at_start = load_average()
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
            world = seed(f"http://127.0.0.1:{port}/sandbox/api", args.per_page)
            if args.profile:
                profile(world, args, env, tmp)
                modes, args.memory_counts, args.ratio_pairs = [], [], 0
            pairs, calls = measure_ratio(world, args, env, tmp) if args.ratio_pairs else ([], 0)
            results = []
            for name in modes:
                redis_url = (args.redis_url or free_redis_url()) if name == "redis" else ""
                mode = Mode(name, 2 if name == "redis" else 1, env, tmp, redis_url)
                try:
                    print(f"Measuring {mode.label} ...", file=sys.stderr)
                    results.append(measure(mode, world, args))
                finally:
                    mode.close()
            memory = measure_memory(world, args, env, tmp)
            if results or memory:
                print_report(results, memory, args, database.label, server_name)
            if pairs:
                print_ratio(pairs, calls, args)
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
