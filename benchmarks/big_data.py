"""Benchmark: the pages of one company on a big database against a small one, and retention while runs are written.

What it measures
----------------
Two throwaway PostgreSQL databases are seeded with bulk SQL (INSERT ... SELECT
over generate_series, copying template rows made through the real install and
manifest code, so seeding takes minutes, not hours):

* big: 10,000 companies x 100 instances (10 connectors x 10 instances each,
  1,000,000 instances), 1,000 process flows for the measured company and one
  flow for each other company, 1,000,000 runs: 200,000 of the measured company's
  (so the run log's page 1,000 exists), the rest spread over the other companies;
  a fifth of the runs finished more than the 7 days of run log retention ago;
* small: the same measured company (10 connectors x 10 instances) with 25 flows
  (one page of the flows list) and 3,000 runs, in 10 companies.

Pages (a logged-in Administrator of the measured company; django.test.Client,
DEBUG off, so the time is the server's: middleware, view, SQL, templates):
the manage connectors page, the run log's first page, a deep page (page
1,000 on the big database, reached by its keyset cursor as the "older" link
would after 999 pages; page 100 on the small one, the deepest it has) and its
first page "queued to" a day three days back (the date jump), the flows list
and an instance's settings page. Each round starts one process per
database (their order alternating), which times every page `--timed` times,
the pages interleaved; the script prints per page and database the median and
p95 over all rounds and the ratio of the big database's median to the small
one's (the target is at most 1.5).

Retention: then, on the big database, flows.retention.clean_up deletes the old
runs (200,000) in batches while `--writers` processes insert new runs (each with
lock_timeout 1 s) and a process reads the run log; it prints the number of
batches and the longest batch transaction, the writers' longest and p99 insert,
the longest lock wait seen in pg_locks, and checks that every run the writers
inserted is still there, that every old run went and no other run did.

How to run (from the project root)
----------------------------------
::

    .venv/bin/python -m benchmarks.big_data            # the full scale: about 10 minutes on 2 cores
    .venv/bin/python -m benchmarks.big_data --quick    # 1,000 companies x 10 instances, 100,000 runs

``BENCH_DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/pw_bench_big``) names
the big database; the small one is the same name with ``_small``. Both names must contain
"bench": the script creates them and drops them at the end. ``--rounds`` (default 6) and
``--timed`` (default 20 requests per page and round) set the number of measurements;
``--no-retention`` skips the retention part.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import manage_connectors as bench  # the throwaway database, Django set-up and seeding

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/pw_bench_big"
PAGES = ["manage connectors", "run log page 1", "run log deep page", "run log date jump", "flows list",
         "instance settings"]
TARGET_RATIO = 1.5


@dataclass(frozen=True)
class Scale:
    companies: int
    connectors: int  # per company
    instances: int  # per connector
    flows: int  # of the measured company
    runs: int  # all runs
    measured_runs: int  # the measured company's
    deep_page: int  # the run log page measured as the deep one
    old_share: float = 0.2  # runs that finished before the retention period


FULL = Scale(companies=10_000, connectors=10, instances=10, flows=1_000, runs=1_000_000, measured_runs=200_000,
             deep_page=1_000)
QUICK = Scale(companies=1_000, connectors=2, instances=5, flows=1_000, runs=100_000, measured_runs=40_000,
              deep_page=1_000)
SMALL = Scale(companies=10, connectors=10, instances=10, flows=25, runs=4_000, measured_runs=3_000, deep_page=100)
SMALL_QUICK = Scale(companies=10, connectors=2, instances=5, flows=25, runs=4_000, measured_runs=3_000,
                    deep_page=100)


# --- seeding --------------------------------------------------------------------------------------


def clone(model, *, where: str, source: str = "", **overrides: str) -> str:
    """INSERT INTO model's table SELECT from its rows `t` (joined to `source`) WHERE `where`, with SQL
    expressions for some columns (`overrides`, by column name) and every other column copied."""
    from django.db import connection

    quote = connection.ops.quote_name
    table = model._meta.db_table
    columns = [field.column for field in model._meta.concrete_fields if not field.primary_key]
    values = [overrides.get(column, f"t.{quote(column)}") for column in columns]
    return (f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) "
            f"SELECT {', '.join(values)} FROM {quote(table)} t {source} WHERE {where}")


def run_sql(sql: str, params: list | None = None) -> int:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.rowcount


def seed(scale: Scale) -> dict:
    """The measured company (its instances through the real code), the other companies and the runs in bulk SQL.

    Returns what the measuring processes need: the user and the URL of each page.
    """
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from connectors.models import AuthMethod, Connector, Endpoint
    from flows import run_log
    from flows.models import FlowRun, ProcessFlow, RunStatus, RunTrigger
    from instances.models import Instance
    from marketplace import catalog
    from patchworks_site.models import Company

    started = time.perf_counter()
    catalog.load_catalog()
    templates = bench.make_templates()
    shape = bench.seed_shape(templates, scale.connectors, scale.instances)
    company, user = shape["company"], shape["user"]
    instances = bench.seed_flows(company, count=min(20, scale.flows))
    ProcessFlow.objects.bulk_create(
        ProcessFlow(company=company, name=f"Bulk flow {n:04d}", enabled=n % 3 != 0) for n in range(scale.flows - 20)
    )
    now = timezone.now()
    template_run = FlowRun.objects.create(
        company=company, flow=company.process_flows.order_by("pk").first(), status=RunStatus.SUCCESS,
        trigger=RunTrigger.SCHEDULE, queued_at=now, reference_time=now, started_at=now, finished_at=now)
    print(f"  measured company: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    # The other companies: copies of the measured one's row, connectors, auth methods, endpoints and instances.
    others = scale.companies - 2  # the measured company and the templates' company exist already
    run_sql(clone(Company, where="t.id = %s", source="CROSS JOIN generate_series(1, %s) g",
                  name="'Company ' || lpad(g::text, 6, '0')"), [others, company.pk])
    first_other = Company.objects.filter(name__startswith="Company ").order_by("pk").values_list("pk", flat=True)[0]
    chunk = max(1, 100_000 // (scale.connectors * scale.instances))
    for low in range(first_other, first_other + others, chunk):
        high = min(low + chunk, first_other + others) - 1
        # Fresh statistics, or the planner joins the growing tables by nested loops (quadratic time).
        run_sql("ANALYZE connectors_connector, connectors_authmethod, connectors_endpoint, instances_instance")
        companies = "JOIN patchworks_site_company c ON c.id BETWEEN %s AND %s"
        run_sql(clone(Connector, where="t.company_id = %s", source=companies, company_id="c.id"),
                [low, high, company.pk])
        connectors = ("JOIN connectors_connector tc ON tc.id = t.connector_id AND tc.company_id = %s "
                      "JOIN connectors_connector nc ON nc.name = tc.name AND nc.company_id BETWEEN %s AND %s")
        for model in (AuthMethod, Endpoint):
            run_sql(clone(model, where="TRUE", source=connectors, connector_id="nc.id"), [company.pk, low, high])
        run_sql(clone(
            Instance, where="TRUE",
            source=connectors + (" JOIN connectors_authmethod tm ON tm.id = t.auth_method_id"
                                 " JOIN connectors_authmethod nm ON nm.connector_id = nc.id AND nm.key = tm.key"),
            company_id="nc.company_id", connector_id="nc.id", auth_method_id="nm.id", uid="gen_random_uuid()",
            connection_pool_id="NULL"), [company.pk, low, high])
        print(f"  companies up to {high - first_other + 1}/{others}: {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    run_sql(clone(ProcessFlow, where="t.id = %s ORDER BY c.id",
                  source="JOIN patchworks_site_company c ON c.id >= %s", company_id="c.id"),
            [first_other, template_run.flow_id])

    # The runs: the measured company's over its flows, the rest over the other companies' flows. A fifth
    # finished more than the 7 days of run log retention ago (8 to 14 days); the rest in the last 6 days.
    queued = (f"now() - CASE WHEN g %% {round(1 / scale.old_share)} = 0 "
              "THEN interval '8 days' + random() * interval '6 days' ELSE random() * interval '6 days' END")
    failed = "Shape 2 (ERP → Import order): The API answered 503 Service Unavailable."

    def insert_runs(count: int, flow_of: str, company_of: str) -> None:
        for low in range(0, count, 100_000):
            high = min(low + 100_000, count)
            run_sql(clone(
                FlowRun, where="t.id = %s",
                source=f"CROSS JOIN (SELECT g, {queued} AS at FROM generate_series(%s, %s) g) x",
                flow_id=flow_of, company_id=company_of, queued_at="x.at", reference_time="x.at",
                started_at="x.at + interval '1 second'", finished_at="x.at + interval '4 seconds'",
                status="CASE WHEN x.g %% 10 = 0 THEN 'failed' ELSE 'success' END",
                failure_reason="CASE WHEN x.g %% 10 = 0 THEN %s ELSE '' END",
            ), [failed, low + 1, high, template_run.pk])

    flow_ids = list(ProcessFlow.objects.filter(company=company).order_by("pk").values_list("pk", flat=True))
    insert_runs(scale.measured_runs, f"(ARRAY{flow_ids})[1 + x.g %% {len(flow_ids)}]", str(company.pk))
    first_flow = ProcessFlow.objects.filter(company_id=first_other).values_list("pk", flat=True)[0]
    # The other companies' flows were inserted in company order: flow first_flow + n is company first_other + n's.
    insert_runs(scale.runs - scale.measured_runs - 1, f"{first_flow} + x.g %% {others}",
                f"{first_other} + x.g %% {others}")
    print(f"  runs: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    assert ProcessFlow.objects.filter(pk=first_flow + others - 1, company_id=first_other + others - 1).exists()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"  vacuum analyze: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    ordered = FlowRun.objects.filter(company=company).order_by("-queued_at", "-id")
    deep_edge = ordered[(scale.deep_page - 1) * run_log.PAGE_SIZE - 1]
    counts = {"companies": Company.objects.count(), "instances": Instance.objects.count(),
              "flows": ProcessFlow.objects.count(), "runs": FlowRun.objects.count(),
              "measured company's runs": FlowRun.objects.filter(company=company).count(),
              "measured company's flows": len(flow_ids),
              "measured company's instances": Instance.objects.filter(company=company).count(),
              "seconds": round(time.perf_counter() - started)}
    return {
        "user": user.pk, "counts": counts,
        "urls": {
            "manage connectors": ["/connectors/"],
            "run log page 1": ["/flows/runs/"],
            "run log deep page": [f"/flows/runs/?before={run_log.cursor_of(deep_edge)}"],
            # "Queued to" a day: the newest runs of that day and older, the jump a user makes to a date.
            "run log date jump": [f"/flows/runs/?queued_to={(now - timedelta(days=3)).date().isoformat()}"],
            "flows list": ["/flows/"],
            "instance settings": [f"/instances/{pk}/" for pk in instances[:20]],
        },
    }


# --- measuring -------------------------------------------------------------------------------------


def measure(user_pk: int, urls: dict[str, list[str]], timed: int, warmup: int) -> dict[str, list[float]]:
    """Each page `timed` times after `warmup`, the pages interleaved: the milliseconds of each request."""
    from django.test import Client

    from patchworks_site.models import User

    client = Client()
    client.force_login(User.objects.get(pk=user_pk))
    rng = random.Random(3)
    for name in PAGES:
        for n in range(warmup):
            bench.get_ok(client, urls[name][n % len(urls[name])])
    times: dict[str, list[float]] = {name: [] for name in PAGES}
    for _ in range(timed):
        for name in PAGES:
            url = rng.choice(urls[name])
            start = time.perf_counter()
            bench.get_ok(client, url)
            times[name].append((time.perf_counter() - start) * 1000)
    return times


# --- retention while runs are written -------------------------------------------------------------


def write_runs(n: int, flows: list[tuple[int, int]], stop, results) -> None:
    """A worker process: inserts finished runs (lock_timeout 1 s) until `stop`; puts its run ids and latencies."""
    from django.db import connection
    from django.utils import timezone

    from flows.models import FlowRun, RunStatus, RunTrigger

    rng = random.Random(n)
    pks: list[int] = []
    latencies: list[float] = []
    error = ""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '1s'")
        while not stop.is_set():
            flow, company = rng.choice(flows)
            at = timezone.now()
            start = time.perf_counter()
            run = FlowRun.objects.create(company_id=company, flow_id=flow, status=RunStatus.SUCCESS,
                                         trigger=RunTrigger.SCHEDULE, queued_at=at, reference_time=at,
                                         started_at=at, finished_at=at)
            latencies.append((time.perf_counter() - start) * 1000)
            pks.append(run.pk)
            time.sleep(0.005)
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        error = f"writer {n}: {exc!r}"
    connection.close()
    results.put({"pks": pks, "latencies": latencies, "error": error})


def read_run_log(user_pk: int, stop, results) -> None:
    """A web process: reads the measured company's run log, one request every 50 ms, until `stop`."""
    from django.db import connection
    from django.test import Client

    from patchworks_site.models import User

    client = Client()
    client.force_login(User.objects.get(pk=user_pk))
    times: list[float] = []
    error = ""
    try:
        while not stop.is_set():
            start = time.perf_counter()
            bench.get_ok(client, "/flows/runs/")
            times.append((time.perf_counter() - start) * 1000)
            time.sleep(0.05)
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        error = f"reader: {exc!r}"
    connection.close()
    results.put({"reads": times, "error": error})


def retention(user_pk: int, writers: int) -> dict:
    """clean_up on the seeded database while `writers` processes insert runs and one reads the run log.

    Each in its own process, as huey workers and gunicorn workers are (threads of one process would
    measure the interpreter's lock rather than the database's).
    """
    import multiprocessing
    from datetime import timedelta

    from django.db import connection, connections
    from django.utils import timezone

    from flows import retention as retention_job
    from flows.models import FlowRun, ProcessFlow
    from patchworks_site.models import User

    now = timezone.now()
    company = User.objects.get(pk=user_pk).company_id
    old = FlowRun.objects.filter(finished_at__lt=now - timedelta(days=7))
    old_count, total_before = old.count(), FlowRun.objects.count()
    flows = list(ProcessFlow.objects.filter(company=company).values_list("pk", "company_id")[:50])
    flows += list(ProcessFlow.objects.exclude(company=company).order_by("?").values_list("pk", "company_id")[:200])
    connections.close_all()  # the processes are forked: none may share this one's connection
    fork = multiprocessing.get_context("fork")
    stop, results = fork.Event(), fork.Queue()
    processes = [fork.Process(target=write_runs, args=(n, flows, stop, results)) for n in range(writers)]
    processes.append(fork.Process(target=read_run_log, args=(user_pk, stop, results)))
    for process in processes:
        process.start()
    lock_waits: list[float] = []
    watching = threading.Event()

    def watch_locks() -> None:
        # The longest any backend has been waiting for a lock, sampled every 50 ms.
        with connection.cursor() as cursor:
            while not watching.is_set():
                cursor.execute("SELECT coalesce(max(extract(epoch FROM now() - a.query_start)), 0) "
                               "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted")
                lock_waits.append(float(cursor.fetchone()[0]))
                time.sleep(0.05)
        connection.close()

    watcher = threading.Thread(target=watch_locks)
    watcher.start()
    time.sleep(2)
    start = time.perf_counter()
    cleaned = retention_job.clean_up()
    seconds = time.perf_counter() - start
    time.sleep(2)
    stop.set()
    watching.set()
    reports = [results.get() for _ in processes]
    for process in processes:
        process.join()
    watcher.join()
    written = [pk for report in reports for pk in report.get("pks", [])]
    latencies = sorted(t for report in reports for t in report.get("latencies", []))
    reads = sorted(t for report in reports for t in report.get("reads", []))
    kept = sum(FlowRun.objects.filter(pk__in=written[n:n + 10_000]).count() for n in range(0, len(written), 10_000))
    return {
        "old runs": old_count, "deleted": cleaned.runs, "batches": len(cleaned.run_batches),
        "largest batch": max(cleaned.run_batches, default=0),
        "longest batch ms": round(cleaned.longest_batch_seconds * 1000, 1), "clean_up seconds": round(seconds, 1),
        "runs inserted meanwhile": len(written), "inserted runs kept": kept,
        "old runs left": old.count(), "runs after": FlowRun.objects.count(),
        "runs expected after": total_before - old_count + len(written),
        "insert p50 ms": round(statistics.median(latencies), 1) if latencies else None,
        "insert p99 ms": round(bench.percentile(latencies, 99), 1) if latencies else None,
        "insert max ms": round(latencies[-1], 1) if latencies else None,
        "run log reads": len(reads),
        "run log read p50 ms": round(statistics.median(reads), 1) if reads else None,
        "run log read max ms": round(reads[-1], 1) if reads else None,
        "longest lock wait seen ms": round(max(lock_waits, default=0) * 1000, 1),
        "errors": [report["error"] for report in reports if report["error"]],
    }


# --- the two databases and the report ----------------------------------------------------------------


def child(role: str, database_url: str, args) -> int:
    """One step in its own process (Django is set up for one database): seed, measure or retention."""
    static_root = tempfile.mkdtemp(prefix="patchworks-big-static-")
    try:
        bench.setup_django(database_url, static_root)
        if role == "seed":
            result = seed(Scale(**json.loads(args.scale)))
        elif role == "measure":
            plan = json.loads(args.plan)
            result = measure(plan["user"], plan["urls"], args.timed, args.warmup)
        else:
            result = retention(json.loads(args.plan)["user"], args.writers)
        print(json.dumps(result))
    finally:
        shutil.rmtree(static_root, ignore_errors=True)
    return 0


def spawn(role: str, database_url: str, **extra: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.big_data", "--child", role, database_url]
    for name, value in extra.items():
        command += [f"--{name}", value]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent).stdout
    return json.loads(output.strip().splitlines()[-1])


def load_average() -> str:
    return f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1,000 companies x 10 instances, 100,000 runs")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--timed", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--no-retention", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("ROLE", "DATABASE_URL"), help=argparse.SUPPRESS)
    parser.add_argument("--scale", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args)
    big_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    small_url = big_url + "_small"
    if "bench" not in big_url.rsplit("/", 1)[-1]:
        raise SystemExit("This benchmark drops its databases at the end: use a name containing 'bench'.")
    scales = {"small": SMALL_QUICK if args.quick else SMALL, "big": QUICK if args.quick else FULL}
    print(f"Load average at the start: {load_average()}")
    with bench.ThrowawayDatabase(small_url) as small, bench.ThrowawayDatabase(big_url) as big:
        urls = {"small": small.url, "big": big.url}
        plans = {}
        for name in ("small", "big"):
            start = time.perf_counter()
            print(f"Seeding the {name} database ({scales[name]}) ...", flush=True)
            plans[name] = spawn("seed", urls[name], scale=json.dumps(scales[name].__dict__))
            print(f"  {plans[name]['counts']} in {time.perf_counter() - start:.0f} s", flush=True)
        times: dict[str, dict[str, list[float]]] = {name: {page: [] for page in PAGES} for name in urls}
        print(f"Load average before measuring: {load_average()}")
        for n in range(args.rounds):
            for name in ("small", "big") if n % 2 == 0 else ("big", "small"):
                result = spawn("measure", urls[name], plan=json.dumps(plans[name]), timed=str(args.timed),
                               warmup=str(args.warmup))
                for page in PAGES:
                    times[name][page] += result[page]
            print(f"  round {n + 1}/{args.rounds} done", flush=True)
        print(f"\nServer time per page (ms), {args.rounds} rounds x {args.timed} requests per page and database, "
              "DEBUG off, django.test.Client\n")
        header = (f"{'page':<20} {'small p50':>9} {'small p95':>9} {'big p50':>8} {'big p95':>8} "
                  f"{'big/small p50':>13}  target <= {TARGET_RATIO}")
        print(header)
        print("-" * len(header))
        worst = 0.0
        for page in PAGES:
            small_p50, big_p50 = (statistics.median(times[name][page]) for name in ("small", "big"))
            ratio = big_p50 / small_p50
            worst = max(worst, ratio)
            print(f"{page:<20} {small_p50:>9.1f} {bench.percentile(times['small'][page], 95):>9.1f} "
                  f"{big_p50:>8.1f} {bench.percentile(times['big'][page], 95):>8.1f} {ratio:>13.2f}  "
                  f"{'ok' if ratio <= TARGET_RATIO else 'NOT FLAT'}")
        print(f"\nDeep page: page {scales['big'].deep_page:,} on the big database, "
              f"page {scales['small'].deep_page} on the small one.")
        print(f"Load average after measuring: {load_average()}")
        if not args.no_retention:
            print(f"\nRetention on the big database while {args.writers} processes insert runs "
                  "(lock_timeout 1 s) and one reads the run log ...", flush=True)
            report = spawn("retention", urls["big"], plan=json.dumps(plans["big"]), writers=str(args.writers))
            for key, value in report.items():
                print(f"  {key}: {value}")
            lost = report["inserted runs kept"] != report["runs inserted meanwhile"]
            wrong = report["old runs left"] or report["runs after"] != report["runs expected after"]
            print("  every inserted run kept, every old run deleted, no other: "
                  f"{'NO' if lost or wrong or report['errors'] else 'yes'}")
        print(f"\nLoad average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
