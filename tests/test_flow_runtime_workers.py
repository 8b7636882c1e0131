"""A paginated receive -> filter -> map -> send flow run by a real worker process (`manage.py run_huey`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from django.db import transaction
from werkzeug import Request, Response

from flows import queueing
from flows.models import FlowRun, RunStatus, RunTrigger
from instances.models import Instance
from tests.flow_helpers import connection, endpoint_of, filter_shape, flow_of, map_shape
from tests.test_engine_workers import instance, on_committed_rows, wait_until, workers  # noqa: F401 - fixtures

TOTAL = 10


@on_committed_rows
def test_a_worker_streams_pages_through_filter_and_map_to_the_send_endpoint(workers, company, instance, httpserver):  # noqa: F811
    now = datetime.now(UTC)
    # Order n was updated n * 3 hours ago: orders 0-7 are within the last day.
    orders = [{"id": n, "updated_at": (now - timedelta(hours=3 * n)).isoformat(), "buyer": {"email": f"b{n}@example.com"}}
              for n in range(TOTAL)]

    def list_orders(request: Request) -> Response:
        page, size = int(request.args["page"]), int(request.args["per_page"])
        body = {"orders": orders[(page - 1) * size: page * size]}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/api/orders").respond_with_handler(list_orders)
    httpserver.expect_request("/api/imports", method="POST").respond_with_json({"ok": True}, status=201)
    endpoint_of(instance, "list_orders", records_path="orders", pagination={
        "style": "page_number", "page_parameter": "page", "limit_parameter": "per_page", "limit": 4,
    })
    flow = flow_of(
        company,
        connection(instance, "list_orders"),
        filter_shape({"field": "updated_at", "comparison": "in_last", "value": "1", "unit": "days"}),
        map_shape({"target": "reference", "source": "id", "constant": "", "convert_date": False},
                  {"target": "customer.email", "source": "buyer.email", "constant": "", "convert_date": False}),
        connection(instance, "import_order", send_as="item"),
    )
    with transaction.atomic():
        run = queueing.queue_run(flow, RunTrigger.MANUAL)
    workers.start()

    run = wait_until(lambda: FlowRun.objects.filter(pk=run.pk, status__in=[RunStatus.SUCCESS, RunStatus.FAILED,
                                                                            RunStatus.PARTIAL_SUCCESS]).first(),
                     what=f"the run to finish; worker logs:\n{workers.logs()}")
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    sent = [json.loads(r.data) for r, _ in httpserver.log if r.path == "/api/imports"]
    assert sent == [{"reference": n, "customer": {"email": f"b{n}@example.com"}} for n in range(8)]
    pages = [r.args["page"] for r, _ in httpserver.log if r.path == "/api/orders"]
    assert pages == ["1", "2", "3", "4"]
    counts = [(s.shape_name, s.items_in, s.items_out, s.pages, s.requests) for s in run.shape_runs.all()]
    assert counts == [
        ("Shop - UK → List orders", 0, TOTAL, 4, 4),
        ("filter", TOTAL, 8, 0, 0),
        ("map", 8, 8, 0, 0),
        ("Shop - UK → Import order", 8, 8, 0, 8),
    ]
    assert Instance.objects.get(pk=instance.pk).last_used_by_run_at is not None



@on_committed_rows
def test_one_lease_keeper_renews_the_leases_of_every_run_of_a_worker_process(workers, company, make_connector,  # noqa: F811
                                                                            make_instance):
    """Four runs wait on the API longer than their lease on one 4-thread worker: one thread renews all four leases,
    with one database connection (not a thread and a connection more per run), and none is taken as lost."""
    import threading
    import time

    from django.db import connection as db_connection
    from pytest_httpserver import HTTPServer

    from tests.flow_helpers import API_TOKEN, shop_connector
    from tests.test_engine_workers import LEASE_SECONDS

    arrived, release = [], threading.Event()

    def slow_orders(request: Request) -> Response:
        arrived.append(request.args.get("page"))
        release.wait(30)
        return Response(json.dumps({"orders": [{"id": len(arrived)}]}), content_type="application/json")

    api = HTTPServer(threaded=True)  # answers the four runs at once
    api.start()
    try:
        api.expect_request("/api/orders").respond_with_handler(slow_orders)
        slow = make_instance(shop_connector(make_connector, company, api.url_for("/api")), "Slow shop",
                             {"api_token": API_TOKEN})
        endpoint_of(slow, "list_orders", records_path="orders")
        runs = []
        for n in range(4):
            with transaction.atomic():
                runs.append(queueing.queue_run(flow_of(company, connection(slow, "list_orders"), name=f"Slow {n}"),
                                               RunTrigger.MANUAL))
        workers.start(threads=4)
        try:
            wait_until(lambda: len(arrived) == 4, what=f"four runs waiting on the API; worker logs:\n{workers.logs()}")
            blocked_until = time.monotonic() + LEASE_SECONDS * 1.4  # longer than the lease: only renewals keep them
            sessions = None
            while time.monotonic() < blocked_until:
                if db_connection.vendor == "postgresql":  # the most connections seen while the leases are renewed
                    sessions = max(sessions or 0, postgresql_connections_of(workers.processes[0].pid))
                time.sleep(0.25)
            assert FlowRun.objects.filter(pk__in=[r.pk for r in runs], status=RunStatus.RUNNING).count() == 4
        finally:
            release.set()
        done = [RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.PARTIAL_SUCCESS]
        wait_until(lambda: FlowRun.objects.filter(pk__in=[r.pk for r in runs], status__in=done).count() == 4,
                   what=f"the runs to end; worker logs:\n{workers.logs()}")
    finally:
        api.clear()
        api.stop()
    for run in FlowRun.objects.filter(pk__in=[r.pk for r in runs]):
        assert (run.status, run.attempt, run.attempts) == (RunStatus.SUCCESS, 1, []), run.failure_reason
    if sessions is not None:
        # The worker's four task threads, its lease keeper and the consumer's main thread (a heartbeat thread and a
        # connection per run made it 9).
        assert sessions <= 6, f"the worker process held {sessions} connections to PostgreSQL"


def postgresql_connections_of(pid: int) -> int:
    """How many TCP connections to port 5432 process `pid` holds (its socket inodes in /proc/net/tcp)."""
    import os
    from pathlib import Path

    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[2].endswith(":1538") and fields[9] in inodes:  # remote port 5432, this process's socket
                count += 1
    return count
