"""Benchmark: how flow runs scale with concurrent runs on real workers, against an API with a fixed latency.

What it measures
----------------
A stub third-party API (a ``ThreadingHTTPServer`` in this process, HTTP/1.1
keep-alive, Nagle off) answers ``GET /api/orders?page=N&per_page=50`` after
``--latency`` (0.1) s with 50 orders; pages 1 to ``--pages`` (20) hold orders,
the next one is empty (where page-number pagination stops), so a run makes
``pages + 1`` requests. ``--send`` adds a send shape (``POST /api/imports``,
one request per page, answered after the same latency).

The connector is an ordinary one, made from a manifest (receive endpoint with
page-number pagination, ``per_page`` 50; a rate limit far above what is sent,
so the limit is not what is measured). The flows are spread over 8 companies
(one connector and instance each, at most 8 concurrent runs each), so no
company's maximum holds concurrency back.

For each level of concurrency (``--levels``, default ``1:1x1,8:2x4,16:2x8,32:4x8``:
concurrent runs : worker processes x threads), fresh ``manage.py run_huey``
workers on a Redis queue (Redis database ``--redis-url``, default 7; rate
limits and pool slots in Redis too, so the processes share them) get a warm-up
(one one-page run per thread), then ``--flows`` (64) runs are queued at once.
Levels run interleaved, ``--rounds`` (2) times: 1, 8, 16, 32, 32, 16, 8, 1.

Per level it prints (medians over the rounds):

* records/s: orders received ÷ (first run queued → last run finished);
* the ratio to level 1 (the targets: ≥ 7.5× at 8, ≥ 14× at 16, ≥ 24× at 32);
* product ms per request, the time the product adds to each request beyond
  the API's latency (target ≤ 3 ms), three ways:
  ``runs``: Σ (run finished − started) ÷ requests − latency: what each run spends
  per request as the workers measured it, bookkeeping included;
  ``wall``: wall time × concurrency ÷ requests − latency, hand-over and the
  last wave's idle workers included;
  ``client``: mean ``duration_ms`` of the stored requests − latency (the client's
  own exchange: SSRF guard, limits, sending, reading);
* the median worker RSS (peak, ``VmHWM``) and the memory per concurrent run
  (Σ workers' peak RSS ÷ concurrency);
* the load average when the level started and the CPU seconds of the workers
  and of this process (the stub and the benchmark's polling) per request;
* per round: the busiest second at the stub and how many queued runs were left
  without a task and handed to the queue again (see wait_for), and where the
  wall time went besides the runs (Timeline: queued → first start, a worker
  thread's gap between two runs, its idle tail at the end).

``--floor`` measures after each level the plainest client making the same
requests in the same processes × threads (benchmarks/scale_floor.py: a
``requests.Session`` per thread, each answer's JSON parsed; no database, queue,
rate limit or bookkeeping) and prints both side by side: its time per request
over the latency is what this machine and the stub take before the product
does anything, and its ratios are the most the levels could give.

``--rate-limit N/second`` runs instead the flows of one company (maximum 64
concurrent runs; the ceiling is raised for the benchmark) against one instance
limited to N requests per second, at the highest level: the busiest 1 s window
of arrivals at the stub must be ≤ N and every run successful; it prints the
busiest window, the utilisation (requests/s ÷ N) and the runs' outcome.

``--compare REV`` runs each level twice, with workers of the git revision REV
(extracted with ``git archive``; it must have the same migrations) and with this
checkout's, alternated, and prints per level the worker CPU per request,
records/s and the product's time per request of both, and the ratios.

``--profile`` executes one run in this process (no worker) under cProfile and
prints this process's CPU time per request (the stub's included) and the top functions.

Set-up: a throwaway PostgreSQL database (``pw_scale_bench``, created and
dropped; ``BENCH_DATABASE_URL`` picks another), as benchmarks/flow_run.py.

How to run (from the project root)
----------------------------------
::

    .venv/bin/python -m benchmarks.scale                 # 2 rounds of 1, 8, 16, 32: about 6.5 minutes
    .venv/bin/python -m benchmarks.scale --quick         # 1 round, 32 flows of 10 pages: about 1.5 minutes
    .venv/bin/python -m benchmarks.scale --floor         # and the plainest client beside it: about 20 minutes
    .venv/bin/python -m benchmarks.scale --rate-limit 50/second
    .venv/bin/python -m benchmarks.scale --levels 32:1x32,32:2x16,32:4x8 --rounds 1   # worker models at 32
    .venv/bin/python -m benchmarks.scale --profile
    .venv/bin/python -m benchmarks.scale --compare main --levels 1:1x1,32:4x8 --rounds 2   # old workers vs new
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from benchmarks import manage_connectors as bench
from benchmarks.flow_run import PROJECT_DIR, Mode, base_env, load_average, setup_django, table
from benchmarks.stub_api import JsonHandler, StubServer

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/pw_scale_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/7"
TOKEN = "scale-bench-token"
PER_PAGE = 50
COMPANIES = 8
CEILING = 64  # FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING for the benchmark's processes
UNLIMITED = 100_000  # requests per second: far above what is sent


class StubAPI(StubServer):
    """Pages of orders after a fixed latency; every arrival timestamped (the system-wide monotonic clock)."""

    def __init__(self, latency: float, pages: int):
        self.arrivals: list[float] = []
        self.lock = threading.Lock()
        outer = self
        bodies = {n: json.dumps({"orders": [
            {"id": (n - 1) * PER_PAGE + i, "reference": f"SO-{n}-{i}", "customer": {"name": f"Customer {i}"},
             "total": f"{i}.50", "updated_at": "2026-01-02T10:00:00+00:00"} for i in range(PER_PAGE)]}).encode()
            for n in range(1, pages + 1)}
        empty = json.dumps({"orders": []}).encode()
        self.default_pages = pages

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with outer.lock:
                    outer.arrivals.append(time.monotonic())
                query = parse_qs(urlsplit(self.path).query)
                page = int(query.get("page", ["1"])[0])
                last = int(query.get("pages", [str(pages)])[0])
                time.sleep(latency)
                self.answer(200, bodies.get(page, empty) if page <= last else empty)

            def do_POST(self) -> None:  # noqa: N802
                with outer.lock:
                    outer.arrivals.append(time.monotonic())
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(latency)
                self.answer(201, b'{"ok": true}')

        self.serve(Handler)

    def reset(self) -> None:
        with self.lock:
            self.arrivals = []


def manifest(base_url: str, rate: int) -> dict:
    return {
        "name": "Stub shop", "system_type": "Other", "version": "bench", "base_url": base_url,
        "rate_limit": {"amount": rate, "unit": "second"},
        "auth_methods": [{
            "key": "token", "name": "API token", "type": "token",
            "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
            "headers": {"Authorization": "Bearer {{api_token}}"}, "test_request": {"path": "/me"},
        }],
        "endpoints": [
            {"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET",
             "path": "/orders", "records_path": "orders",
             "request_parameters": [{"name": "pages", "location": "query", "required": False}],
             "pagination": {"style": "page_number", "page_parameter": "page", "limit_parameter": "per_page",
                            "limit": PER_PAGE, "first_page": 1}},
            {"key": "import_orders", "name": "Import orders", "entity": "Order", "direction": "send",
             "method": "POST", "path": "/imports"},
        ],
    }


@dataclass
class World:
    flows: list = field(default_factory=list)  # the measured flows, round-robin over the companies
    warm: list = field(default_factory=list)  # one one-page flow per company


def seed(base_url: str, companies: int, flows: int, pages: int, send: bool, rate: int, max_runs: int) -> World:
    from connectors import manifest as manifests
    from connectors.models import Connector
    from flows.models import ProcessFlow, Shape, ShapeKind
    from instances.models import Instance
    from patchworks_site.models import Company

    world = World()
    per_company: list[tuple] = []
    for n in range(companies):
        company = Company.objects.create(name=f"Scale {n + 1} Ltd", max_concurrent_runs=max_runs)
        connector = manifests.apply(manifests.validate(manifest(base_url, rate)), connector=Connector(company=company))
        instance = Instance.with_connector_defaults(connector, name=f"Shop {n + 1}",
                                                    auth_method=connector.auth_methods.get())
        instance.set_secrets({"api_token": TOKEN})
        instance.save()
        per_company.append((company, instance, {e.key: e for e in connector.endpoints.all()}))

    def flow(company, instance, endpoints, name: str, flow_pages: int):
        made = ProcessFlow.objects.create(company=company, name=name, enabled=True)
        config = {"timeout": 30, "retries": 0, "send_as": "batch"}
        Shape.objects.create(flow=made, kind=ShapeKind.CONNECTION, instance=instance, position=0,
                             endpoint=endpoints["list_orders"], config={**config, "parameters": {"pages": str(flow_pages)}})
        if send:
            Shape.objects.create(flow=made, kind=ShapeKind.CONNECTION, instance=instance, position=1,
                                 endpoint=endpoints["import_orders"], config=config)
        return made

    for n in range(flows):
        company, instance, endpoints = per_company[n % companies]
        world.flows.append(flow(company, instance, endpoints, f"Orders {n + 1}", pages))
    for company, instance, endpoints in per_company:
        world.warm.append(flow(company, instance, endpoints, "Warm-up", 1))
    return world


def queue_all(flows) -> list[int]:
    from django.db import transaction

    from flows import queueing
    from flows.models import RunTrigger

    with transaction.atomic():  # handed to the workers together, on commit
        return [queueing.queue_run(flow, RunTrigger.MANUAL).pk for flow in flows]


STRANDED_LOOKS = 6  # looks 0.5 s apart


def wait_for(pks: list[int], timeout: float, mode: Mode, workers: int) -> int:
    """Wait for the runs; hand stranded ones to the queue again. Returns how many were handed again.

    A task whose own run another task took, and which then loses the race for
    each of the turns it tries (flows.execution.claim_fairly), would end without
    a run: a queued run would be left without a task until the scheduler's
    requeue (5 minutes). Should queued runs and idle workers be seen together
    for STRANDED_LOOKS looks in a row (3 s; a worker between two runs is idle
    for milliseconds), such runs are handed to the queue again here (a
    duplicate task is harmless: runs are claimed once) and counted, since
    that would be a defect of the hand-over.
    """
    from flows import execution
    from flows.models import ACTIVE_STATUSES, FlowRun, RunStatus

    deadline = time.monotonic() + timeout
    runs = FlowRun.objects.filter(pk__in=pks)
    handed, looks, next_look = 0, 0, time.monotonic() + 0.5
    while runs.filter(status__in=ACTIVE_STATUSES).exists():
        if time.monotonic() > deadline:
            states = list(runs.values_list("status", "activity")[:5])
            raise SystemExit(f"{mode.label}: runs did not finish in {timeout:g} s ({states}). Logs:\n{mode.logs()}")
        if time.monotonic() > next_look:
            next_look = time.monotonic() + 0.5
            idle = workers - FlowRun.objects.filter(status=RunStatus.RUNNING).count()
            queued = list(runs.filter(status=RunStatus.QUEUED).order_by("queued_at", "pk").values_list("pk", flat=True))
            stranded = min(idle, len(queued))
            looks = looks + 1 if stranded > 0 else 0
            if looks >= STRANDED_LOOKS:
                for pk in queued[:stranded]:
                    execution.hand_over(pk)
                handed += stranded
                looks = 0
        time.sleep(0.02)
    return handed


@dataclass
class Version:
    """--compare: the workers' code, another revision's (extracted by git archive) or this checkout's."""

    name: str
    code_dir: Path


@dataclass
class Level:
    concurrency: int
    processes: int
    threads: int

    @property
    def label(self) -> str:
        return f"{self.concurrency} ({self.processes}×{self.threads})"


@dataclass
class Timeline:
    """Where the wall time goes besides the runs, in seconds (from the runs' start and end times).

    `start`: the runs queued → the first one started; `gap`: mean time a worker thread
    took between the end of one run and the start of its next (conclusion's
    after-work, hand-over, claim); `tail`: mean time a worker thread stood idle
    at the end, its last run over while others still ran.
    """

    start: float
    gap: float
    tail: float

    @classmethod
    def of(cls, queued_at, runs: list[tuple[str, object, object]]) -> Timeline:
        by_thread: dict[str, list[tuple]] = {}
        for worker, started, finished in runs:
            by_thread.setdefault(worker.rsplit(":", 1)[0], []).append((started, finished))
        end = max(finished for _, _, finished in runs)
        gaps = [(b[0] - a[1]).total_seconds() for spans in by_thread.values()
                for a, b in zip(sorted(spans), sorted(spans)[1:])]
        tails = [(end - max(f for _, f in spans)).total_seconds() for spans in by_thread.values()]
        return cls(start=(min(started for _, started, _ in runs) - queued_at).total_seconds(),
                   gap=statistics.mean(gaps) if gaps else 0.0, tail=statistics.mean(tails))


@dataclass
class PerRequest:
    """Requests made at a level, and the time they took beyond the API's latency (ms per request)."""

    level: Level
    requests: int
    seconds: float  # the first run queued (told to go) → the last one finished
    run_seconds: float  # Σ (run finished − started)
    latency: float

    @property
    def ms_runs(self) -> float:
        return (self.run_seconds / self.requests - self.latency) * 1000

    @property
    def ms_wall(self) -> float:
        return (self.seconds * self.level.concurrency / self.requests - self.latency) * 1000


@dataclass
class Measured(PerRequest):
    records: int
    client_ms: float  # mean duration_ms of the stored requests
    failed: int
    worker_rss: list[float]  # MiB, peak, per worker process
    worker_cpu: float
    own_cpu: float
    load: str
    busiest_second: int
    handed: int  # stranded runs handed to the queue again
    timeline: Timeline
    version: str = ""  # --compare: whose workers ran the level

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds

    @property
    def mib_per_run(self) -> float:
        return sum(self.worker_rss) / self.level.concurrency


def peak_rss(mode: Mode) -> list[float]:
    values = []
    for process in mode.processes:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                values.append(int(line.split()[1]) / 1024)
    return values


def measure(level: Level, world: World, args, env: dict[str, str], tmp: Path, api: StubAPI,
            version: Version | None = None) -> Measured:
    from django.db.models import Avg, F, Sum
    from django.utils import timezone

    from flows.models import FlowRun, FlowRunRequest, FlowRunShape, RunStatus

    load = load_average()
    code_dir = version.code_dir if version is not None else PROJECT_DIR
    mode = Mode("redis", level.processes, {**env, "HUEY_WORKERS": str(level.threads)}, tmp, args.redis_url, code_dir)
    try:
        mode.start()
        # One one-page run per thread: imports, connections to the database, Redis and the API.
        warm = queue_all([world.warm[n % len(world.warm)] for n in range(level.concurrency)])
        wait_for(warm, args.timeout, mode, level.concurrency)
        failed_warm = FlowRun.objects.filter(pk__in=warm).exclude(status=RunStatus.SUCCESS).first()
        if failed_warm:
            raise SystemExit(f"A warm-up run ended {failed_warm.status}: {failed_warm.failure_reason}\n{mode.logs()}")
        time.sleep(0.5)
        api.reset()
        cpu, own = mode.cpu_seconds(), time.process_time()
        started, queued_at = time.perf_counter(), timezone.now()
        pks = queue_all(world.flows)
        handed = wait_for(pks, args.timeout, mode, level.concurrency)
        seconds = time.perf_counter() - started
        worker_cpu, own_cpu = mode.cpu_seconds() - cpu, time.process_time() - own
        rss = peak_rss(mode)
    finally:
        mode.close()
    runs = FlowRun.objects.filter(pk__in=pks)
    failed = runs.exclude(status=RunStatus.SUCCESS)
    for run in failed[:3]:
        print(f"  run {run.pk} ended {run.status}: {run.failure_reason[:200]}", file=sys.stderr)
    records = FlowRunShape.objects.filter(run__in=runs, position=0).aggregate(n=Sum("items_out"))["n"] or 0
    stored = FlowRunRequest.objects.filter(run__in=runs)
    run_seconds = runs.aggregate(s=Sum(F("finished_at") - F("started_at")))["s"].total_seconds()
    from benchmarks.rate_limit import max_in_window

    return Measured(
        level=level, records=records, requests=stored.count(), seconds=seconds, run_seconds=run_seconds,
        client_ms=stored.aggregate(ms=Avg("duration_ms"))["ms"] or 0.0, failed=failed.count(),
        worker_rss=rss, worker_cpu=worker_cpu, own_cpu=own_cpu, load=load,
        busiest_second=max_in_window(list(api.arrivals), 1.0), latency=args.latency, handed=handed,
        timeline=Timeline.of(queued_at, list(runs.values_list("lease_owner", "started_at", "finished_at"))),
        version=version.name if version is not None else "",
    )


@dataclass
class Floor(PerRequest):
    """--floor: the plainest client (benchmarks/scale_floor.py) making the same requests in the same processes × threads."""

    cpu: float
    load: str
    pages_per_run: int  # pages of orders; each run makes one request more

    @property
    def records_per_second(self) -> float:
        return self.requests * self.pages_per_run / (self.pages_per_run + 1) * PER_PAGE / self.seconds


def measure_floor(level: Level, args, api: StubAPI) -> Floor:
    """The floor at `level`: its processes started and connected before the clock starts, then all told to go."""
    load = load_average()
    shares = [args.flows // level.processes + (1 if n < args.flows % level.processes else 0)
              for n in range(level.processes)]
    processes = [subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scale_floor", api.url, str(share), str(args.pages), str(level.threads)],
        cwd=PROJECT_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for share in shares]
    try:
        for process in processes:
            if process.stdout.readline().strip() != "ready":
                raise SystemExit(f"The floor's process {process.pid} did not start.")
        started = time.perf_counter()
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [json.loads(process.stdout.readline()) for process in processes]
        seconds = time.perf_counter() - started
    finally:
        for process in processes:
            process.kill()
            process.wait()
    return Floor(level=level, requests=sum(r["requests"] for r in results), seconds=seconds,
                 run_seconds=sum(r["run_seconds"] for r in results), cpu=sum(r["cpu"] for r in results), load=load,
                 latency=args.latency, pages_per_run=args.pages)


def parse_levels(text: str) -> list[Level]:
    levels = []
    for part in text.split(","):
        concurrency, _, mix = part.strip().partition(":")
        processes, _, threads = mix.partition("x")
        level = Level(int(concurrency), int(processes), int(threads))
        if level.processes * level.threads != level.concurrency:
            raise SystemExit(f"--levels: {part} is not processes × threads = concurrent runs")
        levels.append(level)
    return levels


def floor_report(results: list[Measured], floors: list[Floor], args) -> None:
    """--floor: per level, the product's figures beside the floor's, and what the product adds over the floor."""
    print()
    print("Floor: the same requests made by the plainest client (requests.Session per thread, each answer's JSON "
          "parsed; no database, queue, limit or bookkeeping) in the same processes × threads, measured after the "
          "product at each level; medians.")
    rows = []
    base_product = statistics.median(m.records_per_second for m in results if m.level == results[0].level)
    base_floor = statistics.median(f.records_per_second for f in floors if f.level == floors[0].level)
    for label in dict.fromkeys(m.level.label for m in results):
        ms = [m for m in results if m.level.label == label]
        fs = [f for f in floors if f.level.label == label]

        def med(values) -> float:
            return statistics.median(list(values))

        product_runs, floor_runs = med(m.ms_runs for m in ms), med(f.ms_runs for f in fs)
        product_wall, floor_wall = med(m.ms_wall for m in ms), med(f.ms_wall for f in fs)
        rows.append([
            label, f"{med(m.records_per_second for m in ms) / base_product:.2f}×",
            f"{med(f.records_per_second for f in fs) / base_floor:.2f}×",
            f"{product_runs:.2f}", f"{floor_runs:.2f}", f"{product_runs - floor_runs:.2f}",
            f"{product_wall:.2f}", f"{floor_wall:.2f}",
            f"{med(f.cpu / f.requests * 1000 for f in fs):.2f}", " / ".join(f.load.split()[0] for f in fs),
        ])
    table(["concurrent (proc×thr)", "product ratio to 1", "floor ratio to 1", "product ms/req runs",
           "floor ms/req runs", "product − floor", "product ms/req wall", "floor ms/req wall",
           "floor client CPU ms/req", "load (1 min) at the floor"], rows)


def report(results: list[Measured], args) -> None:
    by_label: dict[str, list[Measured]] = {}
    for m in results:
        by_label.setdefault(m.level.label, []).append(m)

    def median(values) -> float:
        return statistics.median(list(values))

    base = median(m.records_per_second for m in by_label.get(results[0].level.label, []))
    targets = {8: 7.5, 16: 14, 32: 24}
    print()
    print(f"Scale: {args.flows} runs of {args.pages} pages × {PER_PAGE} orders ({args.pages + 1} requests each, "
          f"{'receive → send' if args.send else 'receive only'}) per level; API latency {args.latency * 1000:g} ms; "
          f"Redis queue and limits; PostgreSQL; {os.cpu_count()} CPUs; medians of {args.rounds} round(s).")
    rows = []
    for label, ms in by_label.items():
        level = ms[0].level
        rps = median(m.records_per_second for m in ms)
        target = targets.get(level.concurrency)
        requests = median(m.requests for m in ms)
        rows.append([
            label, f"{rps:.0f}", f"{rps / base:.2f}×" + (f" (≥ {target:g})" if target else ""),
            f"{median(m.ms_runs for m in ms):.2f}", f"{median(m.ms_wall for m in ms):.2f}",
            f"{median(m.client_ms for m in ms) - args.latency * 1000:.2f}",
            f"{median(m.worker_cpu for m in ms) / requests * 1000:.2f}",
            f"{median(m.own_cpu for m in ms) / requests * 1000:.2f}",
            f"{median(statistics.median(m.worker_rss) for m in ms):.0f}",
            f"{median(m.mib_per_run for m in ms):.1f}",
            str(sum(m.failed for m in ms)), " / ".join(m.load.split()[0] for m in ms),
        ])
    table(["concurrent (proc×thr)", "records/s", "ratio to 1", "product ms/req runs", "wall", "client",
           "worker CPU ms/req", "bench process CPU ms/req", "median worker RSS MiB", "MiB per run", "failed",
           "load (1 min) per round"], rows)
    print("Per round, in order:")
    for m in results:
        print(f"  {m.level.label:>12}: {m.records_per_second:7.0f} records/s, {m.seconds:6.2f} s, "
              f"{m.requests} requests, product {m.ms_runs:.2f} ms/req (runs), "
              f"busiest second {m.busiest_second} requests, {m.handed} stranded runs handed again, load {m.load}")
        print(f"  {'':>12}  queued → first start {m.timeline.start * 1000:.0f} ms, a thread's gap between runs "
              f"{m.timeline.gap * 1000:.0f} ms, a thread's idle tail {m.timeline.tail * 1000:.0f} ms")


def compare_report(results: list[Measured], args, versions: list[Version]) -> None:
    """--compare: per level, each version's medians, and this checkout's figures as ratios of the other's."""
    old, new = (version.name for version in versions)
    print()
    print(f"Compare: {args.flows} runs of {args.pages} pages per level and version, the versions alternated "
          f"(A B B A ...), {args.rounds} round(s); worker CPU and product time per request, medians.")
    rows = []
    for label in dict.fromkeys(m.level.label for m in results):
        by_version = {name: [m for m in results if m.level.label == label and m.version == name] for name in (old, new)}

        def med(name: str, figure, by_version=by_version) -> float:
            return statistics.median(figure(m) for m in by_version[name])

        def cpu(m: Measured) -> float:
            return m.worker_cpu / m.requests * 1000

        rows.append([
            label,
            f"{med(old, cpu):.2f}", f"{med(new, cpu):.2f}", f"{med(new, cpu) / med(old, cpu):.3f}",
            f"{med(old, lambda m: m.records_per_second):.0f}", f"{med(new, lambda m: m.records_per_second):.0f}",
            f"{med(new, lambda m: m.records_per_second) / med(old, lambda m: m.records_per_second):.3f}",
            f"{med(old, lambda m: m.ms_runs):.2f}", f"{med(new, lambda m: m.ms_runs):.2f}",
            " / ".join(m.load.split()[0] for m in results if m.level.label == label),
            str(sum(m.failed for m in results if m.level.label == label)),
        ])
    table(["concurrent (proc×thr)", f"worker CPU ms/req {old}", "this checkout", "ratio",
           f"records/s {old}", "this checkout", "ratio", f"product ms/req {old}", "this checkout",
           "load (1 min) per measurement", "failed"], rows)


def rate_limit_mode(args, env, tmp: Path, api: StubAPI) -> None:
    amount, _, unit = args.rate_limit.partition("/")
    if unit not in ("second", "s", ""):
        raise SystemExit("--rate-limit takes N/second")
    rate = int(amount)
    world = seed(api.url, 1, args.flows, args.pages, args.send, rate, CEILING)
    level = parse_levels(args.levels)[-1]
    m = measure(level, world, args, env, tmp, api)
    seconds_of_arrivals = m.requests / rate
    ok = m.busiest_second <= rate and m.failed == 0
    print()
    print(f"Rate limit: one instance limited to {rate}/second; {args.flows} runs of {args.pages} pages "
          f"({m.requests} requests) of one company on {level.label} workers; load {m.load} at the start.")
    print(f"  busiest 1 s window at the API: {m.busiest_second} requests (limit {rate}); "
          f"runs not successful: {m.failed}; {m.seconds:.1f} s in all, {m.requests / m.seconds:.1f} requests/s "
          f"= {100 * seconds_of_arrivals / m.seconds:.0f}% of the limit (warm-up and hand-over included)")
    print("  OK" if ok else "  NOT OK")


def profile(args, world: World, env, tmp: Path) -> None:
    """One run executed in this thread under cProfile: its CPU time per request, the top functions."""
    import cProfile
    import pstats

    from flows import execution
    from flows.models import FlowRunRequest

    mode = Mode("redis", 0, env, tmp, args.redis_url)  # rate limits in Redis, as on the workers
    from django.conf import settings

    settings.REDIS_URL, settings.LIMITS_KEY_PREFIX = args.redis_url, mode.queue_name
    try:
        execution.execute(queue_all(world.warm[:1])[0])  # warm: imports, connections
        pk = queue_all(world.flows[:1])[0]
        profiler = cProfile.Profile()
        cpu, wall = time.process_time(), time.perf_counter()
        profiler.runcall(execution.execute, pk)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        requests = FlowRunRequest.objects.filter(run_id=pk).count()
        pk = queue_all(world.flows[:1])[0]
        plain_cpu = time.process_time()
        execution.execute(pk)
        plain_cpu = time.process_time() - plain_cpu
        print(f"\nProfile: one run, {requests} requests, {wall:.2f} s; this process's CPU (the stub's included) "
              f"{plain_cpu / requests * 1000:.2f} ms per request ({cpu / requests * 1000:.2f} under cProfile)")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile_lines)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(args.profile_lines)
    finally:
        mode.close()


def revision(rev: str) -> str:
    return subprocess.run(["git", "-C", str(PROJECT_DIR), "rev-parse", "--short", rev], check=True,
                          capture_output=True, text=True).stdout.strip()


def extract(rev: str, tmp: Path) -> Path:
    """The code at `rev` (git archive) in a directory of its own."""
    code = tmp / "compared"
    code.mkdir()
    archive = subprocess.run(["git", "-C", str(PROJECT_DIR), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 32 flows of 10 pages")
    parser.add_argument("--flows", type=int, default=64, help="runs queued at once per level")
    parser.add_argument("--pages", type=int, default=20, help="pages of orders per run (one more, empty, ends it)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the stub API takes per request")
    parser.add_argument("--levels", default="1:1x1,8:2x4,16:2x8,32:4x8",
                        help="concurrent runs:processes x threads, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the levels (every other one reversed)")
    parser.add_argument("--send", action="store_true", help="each run also sends each page (one POST per page)")
    parser.add_argument("--rate-limit", default="", metavar="N/second",
                        help="only: one instance limited to N/second at the last level")
    parser.add_argument("--floor", action="store_true",
                        help="also, after each level, the plainest client making the same requests (the floor)")
    parser.add_argument("--profile", action="store_true", help="only: profile one run in this process")
    parser.add_argument("--profile-lines", type=int, default=25)
    parser.add_argument("--compare", default="", metavar="REV",
                        help="workers of the git revision REV (same migrations) against this checkout's, alternated")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.flows, args.pages = 1, min(args.flows, 32), min(args.pages, 10)
    levels = parse_levels(args.levels)
    order = [level for n in range(args.rounds) for level in (levels if n % 2 == 0 else levels[::-1])]

    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    tmp = Path(tempfile.mkdtemp(prefix="pw-scale-bench-"))
    api = StubAPI(args.latency, args.pages)
    try:
        with bench.ThrowawayDatabase(database_url) as database:
            env = base_env(database.url, tmp) | {
                "FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING": str(CEILING),
                # A run's stored pages and requests are what the run page shows: kept as in production.
            }
            (tmp / "static").mkdir()
            setup_django(env)
            print(f"Database: {database.label}; queue and limits: {args.redis_url}", file=sys.stderr)
            if args.rate_limit:
                rate_limit_mode(args, env, tmp, api)
            else:
                world = seed(api.url, COMPANIES, args.flows, args.pages, args.send, UNLIMITED, CEILING // COMPANIES)
                if args.profile:
                    profile(args, world, env, tmp)
                elif args.compare:
                    short = revision(args.compare)
                    name = short if args.compare.startswith(short) else f"{args.compare} ({short})"
                    versions = [Version(name, extract(args.compare, tmp)),
                                Version("this checkout", PROJECT_DIR)]
                    results = []
                    for n, level in enumerate(order):
                        pair = versions if n % 2 == 0 else versions[::-1]
                        for version in pair:
                            print(f"Level {level.label}, {version.name} ...", file=sys.stderr)
                            results.append(measure(level, world, args, env, tmp, api, version))
                    compare_report(results, args, versions)
                else:
                    results, floors = [], []
                    for n, level in enumerate(order, 1):
                        print(f"Level {level.label}, {n} of {len(order)} ...", file=sys.stderr)
                        results.append(measure(level, world, args, env, tmp, api))
                        if args.floor:
                            print(f"Level {level.label}, the floor ...", file=sys.stderr)
                            floors.append(measure_floor(level, args, api))
                    report(results, args)
                    if floors:
                        floor_report(results, floors, args)
            from django.db import connections

            connections.close_all()
    finally:
        api.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
