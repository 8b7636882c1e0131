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
