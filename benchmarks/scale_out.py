"""Benchmark: two hosts that share only PostgreSQL and Redis run 40 flows, one host's workers are killed, and the
other finishes everything, each order stored once, the limits held across both.

What it measures
----------------
Two "hosts" on this machine. Each is a copy of the release (the project without
its tests, docs and local files) in a temporary directory of its own, started as
production starts: ``python -m patchworks_site.serve_prod --no-migrate`` from
that directory, with an environment of its own (``HOSTNAME`` scale-out-host-1 or
-2, its port, HOME and TMPDIR in its directory, its Prometheus directory):
gunicorn with one web process and ``WORKERS=2`` task workers of
``--threads`` (2) threads. Nothing on disk is shared; the hosts share the
throwaway PostgreSQL database, one Redis database (task queue, cache and
sessions, rate limits and connection pools), SECRET_KEY and CREDENTIAL_KEYS.
Migrations run once, from this process, before the hosts start.

A stub third-party API in this process (``ThreadingHTTPServer``, keep-alive)
serves pages of orders (``GET /api/orders``, page-number pagination: ``--pages``
pages of ``--per-page`` orders per flow, then an empty page) after ``--latency``
and stores batches (``POST /api/imports``) after ``--send-latency``. It honours
the ``Idempotency-Key`` header as Stripe does: the same key with the same body
gets the first answer again and stores nothing. Every order has its own id
(flow, page, position). Each of the ``--flows`` (40) flows receives its pages and
sends each one as a batch, both through one instance with a rate limit of
``--rate-limit`` requests a second and a connection pool of ``--pool``.

Steps:

1. log in through host 1's gunicorn (``requests.Session``; the hosts stand behind
   a TLS proxy: ``X-Forwarded-Proto: https``), then GET the process flows page from
   host 2 with a new session that carries only that session's cookies;
2. queue one run of each flow with **run now**, alternately through host 1 and host 2;
3. once ``--kill-after`` (a quarter) of the runs have ended and host 1 has ended a
   run and holds two running ones, ``kill -9`` both of host 1's task workers. Its
   launcher then stops its gunicorn and exits 1 (what systemd would restart);
   host 2's workers find the expired leases and resume those runs from their
   checkpoints;
4. wait for every run to end, scrape host 2's ``/metrics``, stop host 2 (SIGTERM to
   its launcher).

Checks (a failed one makes the exit status 1):

* every run succeeded;
* every order was stored exactly once at the stub (duplicates 0, missing 0, none
  unknown), and no run executed twice: a run never resumed read each page once
  and sent each batch once; a resumed run read at most one page again and sent at
  most one batch again per lost attempt, that batch with its first idempotency
  key (replayed by the stub, not stored); no key came with another body;
* the busiest 1 s window of requests at the stub held at most the rate limit, and
  at most the pool's limit were in flight at once;
* host 1's workers held running runs when killed; each was resumed as its next
  attempt and ended by host 2, and every run that ended after the kill ended on
  host 2;
* the user logged in on host 1 saw the logged-in page on host 2 (and a request
  without the cookie was sent to the login page);
* a scrape of host 2's ``/metrics`` (its gunicorn) counts the successful runs
  that host 2's task workers ended: the host's processes share one metrics
  directory, which serve_prod gives them;
* both hosts ended runs (one queue), and neither wrote a database, queue or limits
  file of its own (no ``*.sqlite3`` in its directory).

It prints the runs, seconds from the first run queued to the last one ended,
requests at the stub, the busiest window against the limit, the most in flight
against the pool, the rate-limit and pool waits, resumed runs and kill →
resumed (seconds from the kill to each resumed attempt's start), duplicates and
replayed sends, the runs each host ended before the kill and in all (the host
of each run's last worker, from the run rows: ``lease_owner`` is
host:pid:thread:token, and a resumed attempt names the worker it lost), what
each host wrote to its directory and the load average.

How to run (from the project root)
----------------------------------
::

    .venv/bin/python -m benchmarks.scale_out            # 40 flows of 5 pages of 20 orders (under a minute)
    .venv/bin/python -m benchmarks.scale_out --quick    # 40 flows of 2 pages of 10 orders (the test's run)

PostgreSQL: ``BENCH_DATABASE_URL`` (default
``postgres://postgres@127.0.0.1:5432/pw_scaleout_bench``, created and dropped).
Redis: ``--redis-url`` (default: the first empty database from 15 down); its
keys are namespaced per invocation and removed at the end. ``--keep`` keeps the
hosts' directories and logs.

Options: ``--flows 40 --pages 5 --per-page 20 --rate-limit 20 --pool 3 --latency 0.02 --send-latency 0.15
--threads 2 --lease 5 --kill-after 0.25 --timeout 300``.

Figures measured
----------------
2 cores shared with other work, PostgreSQL 15, Redis 7;
``.venv/bin/python -m benchmarks.scale_out`` (48 s in all, both hosts ready in
about 12–20 s; load average 2.0 at the start, 3.4 at the end): 40 runs, all
succeeded, 25.0 s from the first run queued to the last one ended; 444 requests
at the stub (243 page reads, 201 batches); busiest 1 s window 20 (limit 20/s);
at most 3 in flight (pool 3); host 1's two workers killed once 10 runs had ended,
holding 4 runs, which host 2 resumed 5.2–6.1 s after the kill (lease 5 s) from
pages 4 and 5; 4,000 orders stored once, duplicates 0, one batch sent again with
its key and replayed; runs ended: host 1 4, host 2 36, and host 2's ``/metrics``
counted its 36. ``--quick`` (the test): 800 orders, 11–12 s of runs, 35–50 s in
all at load averages 3–5, every check passed in each of about ten runs.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import fnmatch
import hashlib
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from benchmarks import flow_run, scale
from benchmarks import manage_connectors as bench
from benchmarks.stub_api import JsonHandler, StubServer

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/pw_scaleout_bench"
HOST_NAMES = ("scale-out-host-1", "scale-out-host-2")
WORKERS = 2  # task worker processes per host
USERNAME = "scale-out"
TOKEN = "scale-out-token"
METRICS_TOKEN = secrets.token_urlsafe(24)
# What a host's copy of the release leaves out: at the top, what is not shipped; anywhere, what is local state.
NOT_SHIPPED = {".git", ".venv", "venv", ".ci", "docs", "tests", "benchmarks", "staticfiles", "media", "test-results",
               "screenshots", ".pytest_cache", ".ruff_cache", ".prometheus-multiproc"}
LOCAL_FILES = ("__pycache__", "*.pyc", "*.sqlite3", "*.sqlite3-*", ".credential-keys", ".test-*", ".env", "*.log")


# --- the third party ---------------------------------------------------------------------------


class StubAPI(StubServer):
    """Pages of orders per flow and a batch import that honours idempotency keys; counts everything it gets."""

    def __init__(self, latency: float, send_latency: float):
        self.lock = threading.Lock()
        self.arrivals: list[float] = []  # every request, monotonic clock
        self.in_flight = self.most_in_flight = 0
        self.reads: Counter = Counter()  # (flow, page) -> GETs
        self.posts: list[tuple[int, str, tuple[str, ...]]] = []  # (flow, idempotency key, order ids) of every POST
        self.stored: Counter = Counter()  # order id -> times stored
        self.answers: dict[str, str] = {}  # idempotency key -> digest of its first body
        self.replays = self.conflicts = self.refused = self.checks = 0
        outer = self

        class Handler(JsonHandler):
            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):  # a killed worker's connection
                    self.close_connection = True

            def arrive(self) -> bool:
                with outer.lock:
                    outer.arrivals.append(time.monotonic())
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                        outer.refused += 1
                        return False
                return True

            def leave(self) -> None:
                with outer.lock:
                    outer.in_flight -= 1

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                try:
                    if not self.arrive():
                        return self.answer(401, {"error": "bad token"})
                    url = urlsplit(self.path)
                    if url.path.endswith("/me"):  # the scheduled credential re-check (every 5 minutes)
                        with outer.lock:
                            outer.checks += 1
                        return self.answer(200, {"ok": True})
                    query = {k: v[0] for k, v in parse_qs(url.query).items()}
                    flow, page = int(query["flow"]), int(query["page"])
                    per_page, pages = int(query["per_page"]), int(query["pages"])
                    with outer.lock:
                        outer.reads[(flow, page)] += 1
                    orders = [{"id": order_id(flow, page, i), "flow": flow, "total": f"{i}.50"}
                              for i in range(per_page)] if page <= pages else []
                    time.sleep(latency)
                    self.answer(200, {"orders": orders})
                finally:
                    self.leave()

            def do_POST(self) -> None:  # noqa: N802
                try:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    if not self.arrive():
                        return self.answer(401, {"error": "bad token"})
                    status, answer = outer.store(self.headers.get("Idempotency-Key", ""), json.loads(body))
                    time.sleep(send_latency)  # stored first: a worker killed now never reads the answer
                    self.answer(status, answer)
                finally:
                    self.leave()

        self.serve(Handler)

    def store(self, key: str, body: object) -> tuple[int, dict]:
        items = body if isinstance(body, list) else [body]
        ids = tuple(str(item.get("id")) for item in items if isinstance(item, dict))
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        flow = int(items[0].get("flow", 0)) if items and isinstance(items[0], dict) else 0
        with self.lock:
            self.posts.append((flow, key, ids))
            if key and key in self.answers:
                if self.answers[key] != digest:
                    self.conflicts += 1
                    return 409, {"error": "idempotency key reused with another body"}
                self.replays += 1
                return 201, {"stored": list(ids), "replayed": True}
            self.stored.update(ids)
            if key:
                self.answers[key] = digest
            return 201, {"stored": list(ids)}

    def requests_made(self) -> tuple[int, int, int]:
        """Page reads, batches sent and credential checks."""
        return sum(self.reads.values()), len(self.posts), self.checks


def order_id(flow: int, page: int, position: int) -> str:
    return f"{flow}-{page}-{position}"


# --- the seed ----------------------------------------------------------------------------------


def manifest(base_url: str, rate: int, per_page: int) -> dict:
    """benchmarks/scale.py's stub shop: List orders takes the flow and its page count, Import orders a key header."""
    made = scale.manifest(base_url, rate)
    made["name"] = "Scale-out shop"
    receive, send = made["endpoints"]
    receive["request_parameters"] = [{"name": "flow", "location": "query", "required": True},
                                     {"name": "pages", "location": "query", "required": True}]
    receive["pagination"]["limit"] = per_page
    send["idempotency"] = {"in": "header", "name": "Idempotency-Key"}
    return made


@dataclass
class World:
    password: str
    flows: dict[int, int]  # flow pk -> its number (the stub's `flow` parameter)
    max_runs: int


def seed(api_url: str, args) -> World:
    from connectors import manifest as manifests
    from connectors.models import Connector
    from flows.models import ProcessFlow, Shape, ShapeKind
    from instances.models import ConnectionPool, Instance
    from patchworks_site.models import Company, Role, User

    max_runs = len(HOST_NAMES) * WORKERS * args.threads  # every worker thread may hold a run
    company = Company.objects.create(name="Scale-out Ltd", max_concurrent_runs=max_runs)
    password = secrets.token_urlsafe(16)
    User.objects.create_user(username=USERNAME, password=password, company=company, role=Role.USER)
    connector = manifests.apply(manifests.validate(manifest(api_url, args.rate_limit, args.per_page)),
                                connector=Connector(company=company))
    pool = ConnectionPool.objects.create(company=company, name="Shop API", limit=args.pool, timeout_seconds=120)
    pool.connectors.add(connector)
    instance = Instance.with_connector_defaults(connector, name="Shop", auth_method=connector.auth_methods.get(),
                                                connection_pool=pool)
    instance.set_secrets({"api_token": TOKEN})
    instance.save()
    endpoints = {e.key: e for e in connector.endpoints.all()}
    flows = {}
    for number in range(1, args.flows + 1):
        flow = ProcessFlow.objects.create(company=company, name=f"Orders {number}", enabled=True)
        config = {"timeout": 30, "retries": 0, "send_as": "batch"}
        Shape.objects.create(flow=flow, kind=ShapeKind.CONNECTION, instance=instance, position=0,
                             endpoint=endpoints["list_orders"],
                             config={**config, "parameters": {"flow": str(number), "pages": str(args.pages)}})
        Shape.objects.create(flow=flow, kind=ShapeKind.CONNECTION, instance=instance, position=1,
                             endpoint=endpoints["import_orders"], config=config)
        flows[flow.pk] = number
    return World(password=password, flows=flows, max_runs=max_runs)


# --- the hosts ---------------------------------------------------------------------------------


def copy_release(target: Path) -> None:
    """The project as a host installs it: no tests, docs or benchmarks, and none of a checkout's local files."""
    def ignored(directory: str, names: list[str]) -> set[str]:
        top = Path(directory) == PROJECT_DIR
        return {name for name in names
                if (top and name in NOT_SHIPPED) or any(fnmatch.fnmatch(name, p) for p in LOCAL_FILES)}

    shutil.copytree(PROJECT_DIR, target, ignore=ignored)


def die_with_this_process() -> None:
    """In a host's launcher before exec (Linux): SIGTERM when this benchmark dies, so no host outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Host:
    name: str
    directory: Path
    port: int
    env: dict[str, str]
    launcher: subprocess.Popen | None = None
    shipped: set[str] = field(default_factory=set)  # the release's files as copied
    exit_code: int | None = None

    @property
    def release(self) -> Path:
        return self.directory / "release"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        """Its output (what systemd's journal would keep), beside its directory."""
        return self.directory.with_suffix(".log")

    def prepare(self) -> None:
        copy_release(self.release)
        for name in ("home", "tmp"):
            (self.directory / name).mkdir()
        self.shipped = {str(p.relative_to(self.directory)) for p in self.directory.rglob("*")}

    def start(self) -> None:
        self.launcher = subprocess.Popen(
            [sys.executable, "-m", "patchworks_site.serve_prod", "--no-migrate"], cwd=self.release, env=self.env,
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, preexec_fn=die_with_this_process,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def children(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in re.findall(r"started (web|worker \d+) \(pid (\d+)\)", self.output())}

    def worker_pids(self) -> list[int]:
        return [pid for name, pid in self.children().items() if name.startswith("worker")]

    def ready(self) -> bool:
        if self.launcher.poll() is not None:
            raise SystemExit(f"{self.name} stopped before it was ready (exit {self.launcher.returncode}):\n"
                             f"{self.output()[-4000:]}")
        if self.output().count("Huey consumer started") < WORKERS:
            return False
        try:
            return requests.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, timeout: float) -> None:
        """SIGTERM to the launcher (it stops its children gracefully); then whatever is left is killed."""
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.terminate()
            try:
                self.launcher.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait()
        if self.launcher is not None and self.exit_code is None:
            self.exit_code = self.launcher.returncode
        for pid in self.children().values():
            if alive(pid) and is_ours(pid):
                os.kill(pid, signal.SIGKILL)

    def written(self) -> dict[str, int]:
        """Files the host wrote to its directory, by where (bytecode counted apart)."""
        where: Counter = Counter()
        for path in self.directory.rglob("*"):
            relative = path.relative_to(self.directory)
            if path.is_dir() or str(relative) in self.shipped:
                continue
            parts = relative.parts
            if "__pycache__" in parts:
                where["release/**/__pycache__ (bytecode)"] += 1
            else:
                where["/".join(parts[:2]) + ("/" if len(parts) > 2 else "")] += 1
        return dict(sorted(where.items()))


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def is_ours(pid: int) -> bool:
    """The process is still one of a host's (gunicorn or run_huey), not a later process given the same pid."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return False
    return "gunicorn" in command or "run_huey" in command


def make_hosts(tmp: Path, database_url: str, redis_url: str, namespace: str, shared: dict[str, str], args) -> list[Host]:
    hosts = []
    for name in HOST_NAMES:
        directory = tmp / name
        directory.mkdir()
        port = flow_run.free_port()
        # Only what a host's own environment file would hold: nothing of this process's environment but PATH and locale.
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ} | shared | {
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "HOSTNAME": name,
            "HOME": str(directory / "home"), "TMPDIR": str(directory / "tmp"),
            "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "1", "WORKERS": str(WORKERS),
            "WORKER_THREADS": str(args.threads), "STOP_TIMEOUT": "15",
            "HUEY_NAME": namespace, "LIMITS_KEY_PREFIX": namespace,
            "FLOW_RUN_LEASE_SECONDS": str(args.lease), "FLOW_WATCH_INTERVAL_SECONDS": "1",
            "OUTBOUND_ALLOW_LOOPBACK": "1",  # the stub API is on 127.0.0.1
            "LOG_LEVEL": "WARNING", "HUEY_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
        }
        hosts.append(Host(name=name, directory=directory, port=port, env=env))
    return hosts


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"Timed out after {timeout:g} s waiting for {what}.")


# --- the browser -------------------------------------------------------------------------------


class Browser(requests.Session):
    """A browser behind the proxy that ends TLS for the hosts (X-Forwarded-Proto: https).

    The hosts' cookies are Secure; between the proxy and the hosts the requests are plain HTTP, so the cookies
    are kept as not Secure here to be sent back (requests makes a new cookie jar per request: a policy would not stay).
    """

    def __init__(self, cookies: Iterable[http.cookiejar.Cookie] = ()):
        super().__init__()
        self.headers["X-Forwarded-Proto"] = "https"
        for cookie in cookies:
            self.cookies.set_cookie(copy.copy(cookie))

    def send(self, request, **kwargs):
        response = super().send(request, **kwargs)
        for cookie in self.cookies:
            cookie.secure = False
        return response


def log_in(host: Host, password: str) -> requests.Session:
    session = Browser()
    form = session.get(f"{host.url}/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    if form.status_code != 200 or token is None:
        raise SystemExit(f"{host.name}: the login page answered {form.status_code}:\n{form.text[:2000]}")
    answer = session.post(f"{host.url}/login/", data={"csrfmiddlewaretoken": token.group(1), "username": USERNAME,
                                                       "password": password},
                          headers={"Origin": f"https://127.0.0.1:{host.port}"}, allow_redirects=False, timeout=30)
    if answer.status_code != 302 or "sessionid" not in session.cookies:
        raise SystemExit(f"{host.name}: logging in answered {answer.status_code}:\n{answer.text[:2000]}")
    return session


def logged_in_page(session: requests.Session, host: Host) -> bool:
    page = session.get(f"{host.url}/flows/", allow_redirects=False, timeout=30)
    return page.status_code == 200 and USERNAME in page.text and "Log out" in page.text


def run_now(session: requests.Session, host: Host, flow_pk: int) -> int:
    answer = session.post(f"{host.url}/flows/{flow_pk}/run/", allow_redirects=False, timeout=60,
                          headers={"X-CSRFToken": session.cookies["csrftoken"],
                                   "Origin": f"https://127.0.0.1:{host.port}"})
    queued = re.search(r"/flows/runs/(\d+)/", answer.headers.get("Location", ""))
    if answer.status_code != 302 or queued is None:
        raise SystemExit(f"{host.name}: run now answered {answer.status_code}:\n{answer.text[:2000]}")
    return int(queued.group(1))


# --- the runs ----------------------------------------------------------------------------------


def runs_in_metrics(host: Host) -> float:
    """The successful runs /metrics on the host's gunicorn counts (its workers write to the host's metrics directory)."""
    scrape = requests.get(f"{host.url}/metrics", timeout=30, headers={
        "Authorization": f"Bearer {METRICS_TOKEN}", "X-Forwarded-Proto": "https"})
    found = re.search(r'^patchworks_flow_run_duration_seconds_count\{status="success"\} (\S+)$', scrape.text, re.M)
    return float(found.group(1)) if scrape.status_code == 200 and found else -1.0


def host_of(worker: str) -> str:
    """The host of a worker process (host:pid)."""
    return worker.rsplit(":", 1)[0] if worker else ""


@dataclass
class Kill:
    at: datetime
    pids: list[int]
    held: list[int]  # the runs the host's workers were running


def kill_workers(host: Host, run_pks: list[int]) -> Kill:
    from django.utils import timezone

    from flows.models import FlowRun, RunStatus

    def held() -> set[int]:
        running = FlowRun.objects.filter(pk__in=run_pks, status=RunStatus.RUNNING, lease_owner__startswith=f"{host.name}:")
        return set(running.values_list("pk", flat=True))

    pids = host.worker_pids()
    at = timezone.now()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in pids), 30, f"{host.name}'s workers to die")
    # Read once they are gone: the runs whose lease a dead worker holds (one ended in the last instant is not lost).
    return Kill(at=at, pids=pids, held=sorted(held()))


def wait_for_runs(run_pks: list[int], hosts: list[Host], args, kill_when) -> tuple[float, Kill | None]:
    """Poll until every run ended; kill host 1's workers on the way. Returns (when the last run ended, the kill)."""
    from flows.models import ACTIVE_STATUSES, FlowRun

    deadline = time.monotonic() + args.timeout
    kill = None
    runs = FlowRun.objects.filter(pk__in=run_pks)
    while runs.filter(status__in=ACTIVE_STATUSES).exists():
        if time.monotonic() > deadline:
            states = Counter(runs.values_list("status", flat=True))
            waiting = list(runs.filter(status__in=ACTIVE_STATUSES).values_list("pk", "status", "enqueued_at",
                                                                                "lease_owner", "activity")[:10])
            raise SystemExit(f"The runs did not end in {args.timeout:g} s ({dict(states)}; not ended: {waiting}). "
                             "Host logs:\n"
                             + "\n".join(f"--- {h.name}\n{h.output()[-3000:]}" for h in hosts))
        if kill is None and kill_when():
            kill = kill_workers(hosts[0], run_pks)
            print(f"  killed {hosts[0].name}'s task workers (pids {kill.pids}) holding runs {kill.held}",
                  file=sys.stderr)
        time.sleep(0.1)
    return time.monotonic(), kill


# --- checks and report -------------------------------------------------------------------------


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append((name, bool(ok), detail))

    def figure(self, name: str, value: str) -> None:
        self.figures.append((name, value))

    @property
    def failed(self) -> list[str]:
        return [name for name, ok, _ in self.checks if not ok]


def executed_once(runs, api: StubAPI, world: World, pages: int) -> tuple[list[str], int]:
    """Per run, what the stub got against what one execution (plus one page per lost attempt) would send."""
    problems, resends = [], 0
    posts_of: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
    for flow, key, ids in api.posts:
        posts_of.setdefault(flow, []).append((key, ids))
    for run in runs:
        number = world.flows[run.flow_id]
        lost = run.attempt - 1
        reads = [api.reads[(number, page)] for page in range(1, pages + 2)]
        posts = posts_of.get(number, [])
        keys: dict[tuple[str, ...], set[str]] = {}
        for key, ids in posts:
            keys.setdefault(ids, set()).add(key)
        extra_reads, extra_posts = sum(reads) - len(reads), len(posts) - pages
        resends += max(extra_posts, 0)
        if min(reads) < 1 or not 0 <= extra_reads <= lost:
            problems.append(f"run {run.pk} (flow {number}, {run.attempt} attempt(s)) read its pages {reads} times")
        if len(keys) != pages or not 0 <= extra_posts <= lost or any(len(k) != 1 or "" in k for k in keys.values()):
            problems.append(f"run {run.pk} (flow {number}, {run.attempt} attempt(s)) sent {len(posts)} batches "
                            f"for {pages} pages, keys per batch {[len(k) for k in keys.values()]}")
    return problems, resends


def evaluate(report: Report, run_pks: list[int], api: StubAPI, world: World, hosts: list[Host], kill: Kill | None,
             login: dict[str, bool], args, seconds: float) -> None:
    from django.db.models import Sum

    from flows.models import FlowRun, FlowRunShape, RunStatus

    runs = list(FlowRun.objects.filter(pk__in=run_pks).order_by("pk"))
    statuses = Counter(run.status for run in runs)
    succeeded = statuses.get(RunStatus.SUCCESS, 0)
    report.check("every run succeeded", succeeded == len(runs) == args.flows,
                 f"{succeeded} of {args.flows}" + ("" if succeeded == len(runs) else f" ({dict(statuses)})"))

    expected = {order_id(n, page, i) for n in world.flows.values() for page in range(1, args.pages + 1)
                for i in range(args.per_page)}
    duplicates = sum(count - 1 for count in api.stored.values() if count > 1)
    missing = len(expected - set(api.stored))
    unknown = len(set(api.stored) - expected)
    report.check("every order stored exactly once", duplicates == missing == unknown == 0,
                 f"{len(expected):,} orders: duplicates {duplicates}, missing {missing}, unknown {unknown}")
    problems, resends = executed_once(runs, api, world, args.pages)
    report.check("no run executed twice (stub: each page read and each batch sent once, "
                 "plus at most the page in flight per lost attempt, sent again with its key)",
                 not problems and api.conflicts == 0 and api.refused == 0,
                 "; ".join(problems[:5]) or f"batches sent again with their key: {resends} (replayed by the stub: "
                 f"{api.replays}); keys reused with another body: {api.conflicts}")

    from benchmarks.rate_limit import max_in_window

    busiest = max_in_window(list(api.arrivals), 1.0)
    report.check("rate limit held across both hosts", busiest <= args.rate_limit,
                 f"busiest 1 s window at the stub: {busiest} requests, limit {args.rate_limit}/s")
    report.check("connection pool held across both hosts", api.most_in_flight <= args.pool,
                 f"most requests in flight at the stub: {api.most_in_flight}, pool {args.pool}")

    ended_on = {run.pk: host_of(run.worker) for run in runs}
    first, second = hosts[0].name, hosts[1].name
    if kill is None:
        report.check(f"{first}'s workers were killed mid-run", False, "no moment came when they held a run")
    else:
        held = [run for run in runs if run.pk in kill.held]
        resumed = [run for run in held if run.attempt >= 2 and ended_on[run.pk] == second
                   and any(host_of(a.get("lost_worker", "")) == first for a in run.attempts)]
        report.check(f"{first}'s workers were killed mid-run, and {second} resumed every run they held",
                     held and len(resumed) == len(held),
                     f"runs held: {len(held)}, resumed on {second} from their checkpoints: {len(resumed)}")
        late = [run for run in runs if run.finished_at and run.finished_at > kill.at]
        report.check(f"{second} ended every run that ended after the kill",
                     late and all(ended_on[run.pk] == second for run in late),
                     f"{len(late)} runs ended after the kill: "
                     f"{dict(Counter(ended_on[run.pk] for run in late))}")
        resumes = [(datetime.fromisoformat(a["resumed_at"]) - kill.at).total_seconds()
                   for run in held for a in run.attempts if a.get("resumed_at")]
        pages = Counter(note["from_page"] for run in held for note in run.attempt_notes)
        before = Counter(ended_on[run.pk] for run in runs if run.finished_at and run.finished_at <= kill.at)
        report.figure("the kill", f"{first}'s {len(kill.pids)} task workers (kill -9) once {sum(before.values())} "
                                  f"runs had ended ({', '.join(f'{h.name}: {before.get(h.name, 0)}' for h in hosts)}),"
                                  f" holding {len(held)} running runs")
        if resumes:
            report.figure("kill → resumed on the other host",
                          f"{min(resumes):.1f}–{max(resumes):.1f} s (lease {args.lease:g} s, watch interval 1 s); "
                          "resumed from " + ", ".join(f"page {p} ×{n}" for p, n in sorted(pages.items())))
        report.figure(f"{first}'s launcher after the kill",
                      f"exit code {hosts[0].exit_code} (a task worker exited: it stopped its gunicorn, as systemd "
                      "would see it)")
    per_host = Counter(ended_on.values())
    report.check("both hosts ran runs from the one queue", all(per_host.get(h.name) for h in hosts),
                 ", ".join(f"{h.name}: {per_host.get(h.name, 0)}" for h in hosts))
    report.check(f"logged in on {first}, logged in on {second}", login.get("shared") and login.get("anonymous_sent"),
                 f"{second}'s process flows page with {first}'s session cookie: "
                 f"{'the logged-in page' if login.get('shared') else 'NOT the logged-in page'}; without it: "
                 f"{'the login page' if login.get('anonymous_sent') else 'NOT the login page'}")
    local = {h.name: sorted(str(p.relative_to(h.directory)) for p in h.directory.rglob("*.sqlite3*")) for h in hosts}
    report.check("no host kept a database, queue or limits file of its own", not any(local.values()),
                 "; ".join(f"{name}: {files}" for name, files in local.items() if files) or "no *.sqlite3 file")

    reads, posts, checks = api.requests_made()
    waits = FlowRunShape.objects.filter(run_id__in=run_pks).aggregate(rate=Sum("rate_limit_wait_ms"),
                                                                      pool=Sum("pool_wait_ms"))
    attempts = Counter(run.attempt for run in runs)
    report.figure("runs", f"{len(runs)} queued with run now through the web UI, alternately on each host; "
                          f"{succeeded} succeeded; attempts: "
                          + ", ".join(f"{n}×{count}" for n, count in sorted(attempts.items())))
    report.figure("seconds", f"{seconds:.1f} from the first run queued to the last one ended")
    report.figure("requests at the stub", f"{reads + posts + checks} ({reads} page reads, {posts} batches sent, "
                                          f"{checks} scheduled credential checks); {(reads + posts) / seconds:.1f}/s "
                                          f"against a limit of {args.rate_limit}/s")
    report.figure("busiest 1 s window", f"{busiest} (limit {args.rate_limit}/s)")
    report.figure("most in flight", f"{api.most_in_flight} (pool {args.pool})")
    report.figure("waits", f"rate limit {(waits['rate'] or 0) / 1000:.1f} s, pool {(waits['pool'] or 0) / 1000:.1f} s "
                           "(summed over the runs' shapes)")
    report.figure("resumed runs", f"{sum(1 for run in runs if run.attempt > 1)}")
    report.figure("duplicates", f"{sum(c - 1 for c in api.stored.values() if c > 1)} "
                                f"(batches sent again with their key and replayed: {api.replays})")
    report.figure("runs ended per host (last attempt's worker)",
                  ", ".join(f"{h.name}: {per_host.get(h.name, 0)}" for h in hosts))
    for host in hosts:
        report.figure(f"written by {host.name}", ", ".join(f"{where} {n}" for where, n in host.written().items()))


def print_report(report: Report, args, load_start: str, load_end: str) -> None:
    print()
    print(f"Scale out: {len(HOST_NAMES)} hosts on one machine ({os.cpu_count()} CPUs), each serve_prod with gunicorn "
          f"(1 web process) and {WORKERS} task workers × {args.threads} threads, sharing PostgreSQL and Redis only; "
          f"{args.flows} flows of {args.pages} pages × {args.per_page} orders, receive → send as batch through one "
          f"instance (rate limit {args.rate_limit}/s, pool {args.pool}); stub latency {args.latency * 1000:g} ms "
          f"(GET), {args.send_latency * 1000:g} ms (POST); lease {args.lease:g} s.")
    width = max(len(name) for name, _ in report.figures)
    for name, value in report.figures:
        print(f"  {name:<{width}}  {value}")
    print(f"  {'load average':<{width}}  {load_start} at the start, {load_end} at the end")
    print("Checks:")
    for name, ok, detail in report.checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print("All checks passed." if not report.failed else f"{len(report.failed)} check(s) FAILED.")


# --- main --------------------------------------------------------------------------------------


def clean_redis(redis_url: str, namespace: str, session_key: str | None) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"*{namespace}*"):
        client.delete(key)
    if session_key:
        client.delete(f":1:django.contrib.sessions.cached_db{session_key}")


def stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 pages of 10 orders per flow (what the test runs)")
    parser.add_argument("--flows", type=int, default=40)
    parser.add_argument("--pages", type=int, default=5, help="pages of orders per flow (one more, empty, ends it)")
    parser.add_argument("--per-page", type=int, default=20)
    parser.add_argument("--rate-limit", type=int, default=20, help="the instance's requests per second")
    parser.add_argument("--pool", type=int, default=3, help="the instance's connection pool: requests in flight")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the stub takes per page")
    parser.add_argument("--send-latency", type=float, default=0.15, help="seconds the stub takes per batch")
    parser.add_argument("--threads", type=int, default=2, help="WORKER_THREADS of each host's task workers")
    parser.add_argument("--lease", type=float, default=5, help="FLOW_RUN_LEASE_SECONDS")
    parser.add_argument("--kill-after", type=float, default=0.25, help="share of the runs ended before the kill")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the runs to end")
    parser.add_argument("--keep", action="store_true", help="keep the hosts' directories and logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.pages, args.per_page = min(args.pages, 2), min(args.per_page, 10)
    signal.signal(signal.SIGTERM, stop_on_sigterm)

    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    if not database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("Two hosts share one database: BENCH_DATABASE_URL must be PostgreSQL (postgres://...).")
    redis_url = args.redis_url or flow_run.free_redis_url()
    namespace = f"pw-scale-out-{uuid.uuid4().hex[:12]}"
    tmp = Path(tempfile.mkdtemp(prefix="scaleout-"))
    api = StubAPI(args.latency, args.send_latency)
    hosts: list[Host] = []
    session_key = None
    report = Report()
    load_start = flow_run.load_average()
    try:
        with bench.ThrowawayDatabase(database_url) as database:
            env = flow_run.base_env(database.url, tmp)
            flow_run.setup_django(env)  # migrates, once, before any host starts
            print(f"Database: {database.label}; Redis: {redis_url}; hosts in {tmp}", file=sys.stderr)
            world = seed(api.url, args)
            shared = {name: env[name] for name in ("DEBUG", "SECRET_KEY", "CREDENTIAL_KEYS", "EMAIL_BACKEND")}
            shared |= {"ALLOWED_HOSTS": "127.0.0.1,localhost", "METRICS_TOKEN": METRICS_TOKEN}
            hosts = make_hosts(tmp, database.url, redis_url, namespace, shared, args)
            try:
                started = time.monotonic()
                for host in hosts:
                    host.prepare()
                    host.start()
                for host in hosts:
                    wait_until(host.ready, 180, f"{host.name} to serve and its {WORKERS} workers to start")
                print(f"Both hosts ready in {time.monotonic() - started:.1f} s", file=sys.stderr)

                first, second = hosts
                on_first = log_in(first, world.password)
                session_key = on_first.cookies["sessionid"]
                on_second = Browser(c for c in on_first.cookies if c.name in ("sessionid", "csrftoken"))
                login = {"shared": logged_in_page(on_second, second),
                         "anonymous_sent": Browser().get(f"{second.url}/flows/", allow_redirects=False,
                                                         timeout=30).headers.get("Location", "").startswith("/login/")}

                from flows.models import FlowRun, RunStatus

                queued_at = time.monotonic()
                run_pks = [run_now(*((on_first, first) if n % 2 == 0 else (on_second, second)), flow_pk)
                           for n, flow_pk in enumerate(world.flows)]
                runs = FlowRun.objects.filter(pk__in=run_pks)

                def kill_when() -> bool:
                    ended = runs.filter(finished_at__isnull=False)
                    held = runs.filter(status=RunStatus.RUNNING, lease_owner__startswith=f"{first.name}:")
                    return (ended.count() >= args.kill_after * len(run_pks)
                            and ended.filter(lease_owner__startswith=f"{first.name}:").exists()
                            and held.count() >= 2)  # one of them may end as the kill comes

                ended_at, kill = wait_for_runs(run_pks, hosts, args, kill_when)
                if kill is not None:
                    wait_until(lambda: first.launcher.poll() is not None, 60, f"{first.name}'s launcher to stop")
                    first.exit_code = first.launcher.returncode
                ended_on_second = sum(1 for run in runs if host_of(run.worker) == second.name)
                # A worker counts a run once the transaction that ended it has committed: the last run's
                # count can come a moment after the run log shows it ended.
                scraped = runs_in_metrics(second)
                settle = time.monotonic() + 10
                while scraped < ended_on_second and time.monotonic() < settle:
                    time.sleep(0.2)
                    scraped = runs_in_metrics(second)
                for host in hosts:
                    host.stop(timeout=40)
                evaluate(report, run_pks, api, world, hosts, kill, login, args, ended_at - queued_at)
                ended_on_second = sum(1 for run in runs if host_of(run.worker) == second.name)
                report.check(f"a scrape of {second.name}'s gunicorn counts the runs its task workers ended",
                             scraped == ended_on_second,
                             f"patchworks_flow_run_duration_seconds_count {{status=\"success\"}}: {scraped:g}; "
                             f"runs whose last worker was on {second.name}: {ended_on_second}")
            finally:
                for host in hosts:
                    host.stop(timeout=40)
                if report.failed or not report.checks:
                    for host in hosts:
                        print(f"--- {host.name} (last lines of its log)\n{host.output()[-3000:]}", file=sys.stderr)
                from django.db import connections

                connections.close_all()
    finally:
        api.close()
        clean_redis(redis_url, namespace, session_key)
        if args.keep:
            print(f"Kept the hosts' directories and logs in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_report(report, args, load_start, flow_run.load_average())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
