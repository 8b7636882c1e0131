"""Benchmark: each dashboard page of the load test, one request at a time, in one process.

The load test (benchmarks/load.py) measures the pages under 50 users, which
depends on how busy the machine is. This script measures the same pages on the
same rows (200 connectors x 10 instances, the marketplace, 20 process flows,
a finished run with 100 pages of stored records and requests; PostgreSQL, DEBUG off) with django.test.Client, sequentially: per page the
median and p90 wall time, the median CPU time and the number of queries. The
pages alternate, so a change in machine load affects them alike; comparing two
versions of the code is best done as a ratio of two runs made one after the other.

    .venv/bin/python -m benchmarks.pages [--timed 200] [--warmup 5] [--profile "manage connectors"]
    .venv/bin/python -m benchmarks.pages --runs [--timed 100]
    .venv/bin/python -m benchmarks.pages --compare main [--page "manage connectors"] [--rounds 7] [--timed 60]

``--compare REV`` measures one page (the manage connectors page by default) of
the code at git revision REV (extracted with ``git archive``) and of this
checkout side by side, on the same seeded database: each round runs one
process per version (their order alternating), each timing ``--timed``
requests after the warm-up; it prints the median CPU per request of each
version per round, their ratio (this checkout / REV), and the median ratio.

``--runs`` measures the pages of runs on a company with 500 process flows and
100,000 runs (bulk inserts, spread over 60 days, a tenth of them failed): the
flows list, the run log's first page and its page 1,000 (reached by its keyset
cursor, as the "older" link would after 999 pages).

``BENCH_DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/pw_bench_pages``; the
name must contain "bench": the database is created and dropped). ``--profile PAGE``
prints the cProfile of 50 requests of that page (cumulative time, top 40).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import manage_connectors as bench  # the seeding and the throwaway database

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/pw_bench_pages"


def seed() -> tuple:
    """The load test's rows: 200 connectors x 10 instances, the whole marketplace, 20 process flows."""
    from django.db import connection

    from connectors.models import Connector
    from marketplace import catalog

    catalog.load_catalog()
    templates = bench.make_templates()
    shape = bench.seed_shape(templates, 200, 10)
    company, user = shape["company"], shape["user"]
    instances = bench.seed_flows(company)
    seed_run(company)
    sandbox = Connector.objects.filter(company=company, installation__isnull=False).order_by("pk").first()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return user, instances, sandbox


def seed_runs(company, flows: int = 500, runs: int = 100_000) -> dict:
    """`flows` process flows of `company` and `runs` runs over them (bulk inserts), and the run log's page 1,000."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from flows import run_log
    from flows.models import FlowRun, FlowSchedule, ProcessFlow, RunStatus, RunTrigger

    now = timezone.now()
    made = ProcessFlow.objects.bulk_create(
        ProcessFlow(company=company, name=f"Bulk flow {n:03d}", enabled=n % 3 != 0) for n in range(flows)
    )
    FlowSchedule.objects.bulk_create(
        FlowSchedule(flow=flow, kind="hourly", cron="0 * * * *", description="Every hour at minute 0",
                     next_run_at=now + timedelta(minutes=n % 60)) for n, flow in enumerate(made[::2])
    )
    rng = random.Random(7)
    batch = []
    for n in range(runs):
        at = now - timedelta(seconds=rng.randrange(60 * 86400))
        status = RunStatus.FAILED if n % 10 == 0 else RunStatus.SUCCESS
        batch.append(FlowRun(
            company=company, flow=made[n % flows], status=status, trigger=RunTrigger.SCHEDULE, queued_at=at,
            reference_time=at, started_at=at, finished_at=at + timedelta(seconds=3),
            failure_reason="Shape 2 (ERP → Import order): The API answered 503 Service Unavailable." if n % 10 == 0
            else "",
        ))
        if len(batch) == 5000:
            FlowRun.objects.bulk_create(batch)
            batch = []
    FlowRun.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    ordered = FlowRun.objects.filter(company=company).order_by("-queued_at", "-id")
    last_of_999 = ordered[999 * run_log.PAGE_SIZE - 1]
    return {
        "flows list (500 flows)": lambda: "/flows/",
        "run log page 1 (100k runs)": lambda: "/flows/runs/",
        "run log page 1,000": lambda: f"/flows/runs/?before={run_log.cursor_of(last_of_999)}",
    }


RUN_PAGES = 100
RECORDS_PER_PAGE = 50


def seed_run(company) -> None:
    """A finished run of the first flow: one receive shape that read RUN_PAGES pages of RECORDS_PER_PAGE orders,
    each page's records and its request stored as a run keeps them for the run page's steps (flows.steps)."""
    from django.utils import timezone

    from flows.models import FlowRun, FlowRunPayload, FlowRunRequest, FlowRunShape, RunStatus, RunTrigger

    flow = company.process_flows.order_by("name").first()
    now = timezone.now()
    run = FlowRun.objects.create(company=company, flow=flow, status=RunStatus.SUCCESS, trigger=RunTrigger.MANUAL,
                                 queued_at=now, reference_time=now, started_at=now, finished_at=now)
    shape_run = FlowRunShape.objects.create(run=run, position=0, shape_name="List orders", status="success",
                                            started_at=now, finished_at=now, pages=RUN_PAGES,
                                            requests=RUN_PAGES, items_out=RUN_PAGES * RECORDS_PER_PAGE)
    payloads, requests = [], []
    for page in range(1, RUN_PAGES + 1):
        records = [json.dumps({"id": page * 1000 + n, "customer": f"customer-{n}@example.com", "total": f"{n}.00",
                               "lines": [{"sku": f"SKU-{n:04d}", "quantity": n % 5 + 1}]})
                   for n in range(RECORDS_PER_PAGE)]
        body = "\n".join(records)
        payloads.append(FlowRunPayload(run=run, shape_run=shape_run, page=page, direction="out",
                                       records=RECORDS_PER_PAGE, body=body, size=len(body)))
        answer = json.dumps({"orders": [json.loads(r) for r in records]})
        requests.append(FlowRunRequest(
            run=run, shape_run=shape_run, page=page, number=1, request_method="GET",
            request_url=f"https://api.example.com/v1/orders?page={page}&limit={RECORDS_PER_PAGE}",
            request_headers={"Authorization": "[redacted]", "Accept": "application/json"}, response_status=200,
            response_headers={"Content-Type": "application/json"}, response_body=answer, ok=True, message="200 OK",
            duration_ms=120, size=len(answer)))
    FlowRunPayload.objects.bulk_create(payloads)
    FlowRunRequest.objects.bulk_create(requests)
    FlowRun.objects.filter(pk=run.pk).update(payload_bytes=sum(p.size + r.size for p, r in zip(payloads, requests)))


def pages(instances: list[int], sandbox) -> dict:
    from flows.models import FlowRunShape

    rng = random.Random(1)
    step = FlowRunShape.objects.filter(pages=RUN_PAGES, shape_name="List orders").order_by("pk").first()
    payload = step.payloads.order_by("page").first()
    request = step.stored_requests.order_by("page").first()
    return {
        "manage connectors": lambda: "/connectors/",
        "instance settings": lambda: f"/instances/{rng.choice(instances)}/",
        "wizard step 1 (name)": lambda: f"/instances/new/{sandbox.pk}/",
        "marketplace": lambda: "/marketplace/",
        "listing": lambda: "/marketplace/sandbox/",
        "process flows": lambda: "/flows/",
        f"run page ({RUN_PAGES} pages)": lambda: f"/flows/runs/{step.run_id}/",
        f"run step ({RUN_PAGES} pages)": lambda: f"/flows/runs/{step.run_id}/steps/{step.pk}/",
        "run step page records": lambda: f"/flows/runs/{step.run_id}/payloads/{payload.pk}/?q=customer-1",
        "run step request": lambda: f"/flows/runs/{step.run_id}/requests/{request.pk}/",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--timed", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile", default="", help="a page name: print its cProfile")
    parser.add_argument("--compare", default="", metavar="REV", help="a git revision: its code vs this checkout's")
    parser.add_argument("--page", default="manage connectors", help="the page --compare measures")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of --compare (one process per version each)")
    parser.add_argument("--runs", action="store_true", help="the pages of runs: 500 flows, 100,000 runs")
    parser.add_argument("--worker", nargs=2, metavar=("CODE_DIR", "USER_PK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker[0]), int(args.worker[1]), args)
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    if "bench" not in database_url.rsplit("/", 1)[-1]:
        raise SystemExit("This benchmark drops its database at the end: use a name containing 'bench'.")
    static_root = tempfile.mkdtemp(prefix="patchworks-pages-static-")
    try:
        with bench.ThrowawayDatabase(database_url) as db:
            print(f"Database: {db.label}")
            bench.setup_django(db.url, static_root)
            user, instances, sandbox = seed()
            if args.runs:
                return measure(user, seed_runs(user.company), args)
            if args.compare:
                return compare(db.url, user, args)
            return measure(user, pages(instances, sandbox), args)
    finally:
        shutil.rmtree(static_root, ignore_errors=True)


def measure(user, urls: dict, args) -> int:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(user)

    def get(url: str):
        response = client.get(url)
        assert response.status_code == 200, f"GET {url}: {response.status_code}"
        return response

    for url_of in urls.values():
        for _ in range(args.warmup):
            get(url_of())
    if args.profile:
        url_of = urls[args.profile]
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(50):
            get(url_of())
        profile.disable()
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(
            r"patchworks|connectors|instances|marketplace|flows|templatetags|loader_tags|crispy|widgets|forms", 40
        )
        stats.sort_stats("tottime").print_stats(25)
        return 0
    wall = {name: [] for name in urls}
    cpu = {name: [] for name in urls}
    for _ in range(args.timed):
        for name, url_of in urls.items():
            url = url_of()
            start, start_cpu = time.perf_counter(), time.process_time()
            get(url)
            wall[name].append((time.perf_counter() - start) * 1000)
            cpu[name].append((time.process_time() - start_cpu) * 1000)
    print(f"\n{args.timed} timed requests per page (after {args.warmup} warm-up), one process, DEBUG off\n")
    header = f"{'page':<26} {'median ms':>9} {'p90 ms':>7} {'CPU ms':>7} {'queries':>7} {'KB':>6}"
    print(header)
    print("-" * len(header))
    for name, url_of in urls.items():
        with CaptureQueriesContext(connection) as ctx:
            response = get(url_of())
        print(f"{name:<26} {statistics.median(wall[name]):>9.1f} {bench.percentile(wall[name], 90):>7.1f} "
              f"{statistics.median(cpu[name]):>7.1f} {len(ctx.captured_queries):>7} {len(response.content) / 1024:>6.1f}")
    print(f"\nLoad average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    return 0


def compare(database_url: str, user, args) -> int:
    """The page's CPU per request: the code at `args.compare` vs this checkout, one process per version a round."""
    from django.db import connections

    connections.close_all()
    project = Path(__file__).resolve().parent.parent
    old_code = Path(tempfile.mkdtemp(prefix="patchworks-pages-old-"))
    try:
        archive = subprocess.run(["git", "-C", str(project), "archive", args.compare], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_code)], input=archive, check=True)
        revision = subprocess.run(["git", "-C", str(project), "rev-parse", "--short", args.compare], check=True,
                                  capture_output=True, text=True).stdout.strip()
        versions = {f"{args.compare} ({revision})": old_code, "this checkout": project}
        cpu: dict[str, list[float]] = {name: [] for name in versions}
        ratios = []
        print(f"\n{args.page!r}: CPU ms per request, median of {args.timed} requests (after {args.warmup} warm-up) "
              f"per version and round, DEBUG off\n")
        names = list(versions)
        print(f"{'round':>5} {names[0]:>22} {names[1]:>15} {'ratio':>7}")
        for n in range(args.rounds):
            for name in names if n % 2 == 0 else reversed(names):
                command = [sys.executable, "-m", "benchmarks.pages", "--worker", str(versions[name]), str(user.pk),
                           "--page", args.page, "--timed", str(args.timed), "--warmup", str(args.warmup)]
                output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=project,
                                        env={**os.environ, "BENCH_DATABASE_URL": database_url}).stdout
                cpu[name].append(json.loads(output.strip().splitlines()[-1])["cpu_ms"])
            ratios.append(cpu[names[1]][-1] / cpu[names[0]][-1])
            print(f"{n + 1:>5} {cpu[names[0]][-1]:>22.2f} {cpu[names[1]][-1]:>15.2f} {ratios[-1]:>7.3f}")
        print(f"{'median':>5} {statistics.median(cpu[names[0]]):>22.2f} {statistics.median(cpu[names[1]]):>15.2f} "
              f"{statistics.median(ratios):>7.3f}")
        print(f"\nLoad average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    finally:
        shutil.rmtree(old_code, ignore_errors=True)
    return 0


def worker(code_dir: Path, user_pk: int, args) -> int:
    """One version of the code (`code_dir` first on the path) on the seeded database: prints its median CPU."""
    sys.path.insert(0, str(code_dir))
    static_root = tempfile.mkdtemp(prefix="patchworks-pages-static-")
    try:
        bench.setup_django(os.environ["BENCH_DATABASE_URL"], static_root)
        from django.test import Client

        from patchworks_site.models import User

        assert Path(sys.modules["patchworks_site"].__file__).is_relative_to(code_dir)
        from connectors.models import Connector
        from instances.models import Instance

        user = User.objects.get(pk=user_pk)
        client = Client()
        client.force_login(user)
        instances = list(Instance.objects.filter(company=user.company_id).order_by("pk").values_list("pk", flat=True))
        sandbox = Connector.objects.filter(company=user.company_id, installation__isnull=False).order_by("pk").first()
        url = pages(instances, sandbox)[args.page]()
        for _ in range(args.warmup):
            assert client.get(url).status_code == 200
        cpu = []
        for _ in range(args.timed):
            start = time.process_time()
            client.get(url)
            cpu.append((time.process_time() - start) * 1000)
        print(json.dumps({"cpu_ms": statistics.median(cpu)}))
    finally:
        shutil.rmtree(static_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
