"""Bounds on a run's data and duration: each run that passes one fails with a message naming the shape and the bound."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.utils import timezone as django_timezone
from werkzeug import Request, Response

from flows import execution, queueing, shapes, tasks
from flows.models import FlowRun, FlowRunShape, RunStatus, RunTrigger, ShapeStatus
from flows.shapes import map as map_shape_module
from tests.flow_helpers import (  # noqa: F401 - fixtures
    API_TOKEN,
    connection,
    connector,
    endpoint_of,
    flow_of,
    instance,
    json_response,
    map_shape,
)


def run_flow(flow) -> FlowRun:
    return execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)


def bodies(httpserver, path: str = "/api/imports") -> list[bytes]:
    return [request.data for request, _ in httpserver.log if request.path == path]


def echo_imports(httpserver) -> None:
    httpserver.expect_request("/api/imports", method="POST").respond_with_handler(
        lambda request: json_response([{"ok": item["id"]} for item in json.loads(request.data)], status=201)
    )


# --- bytes per page ----------------------------------------------------------------------------


def test_a_map_that_multiplies_a_page_fails_the_run_naming_the_shape_and_the_bound(company, instance, httpserver):
    """Tiny records, 50 constants of 500 characters each, a batch send: the page would grow to 75 MB."""
    httpserver.expect_request("/api/orders").respond_with_json([{"id": n} for n in range(3000)])
    echo_imports(httpserver)
    constants = [{"target": f"note_{n}", "constant": chr(65 + n % 26) * 500} for n in range(50)]
    run = run_flow(flow_of(company, connection(instance, "list_orders"), map_shape(*constants),
                           connection(instance, "import_order", send_as="batch")))
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith("Shape 2 (map): a page would grow to about 73.4 MB (8 MB after 328 of its ")
    assert "3,000 items), more than the 8 MB a page may hold after a shape " \
        "(FLOW_MAX_PAGE_BYTES). Map fewer or shorter values, or have the endpoint send smaller pages." in (
        run.failure_reason
    )
    assert bodies(httpserver) == []  # nothing was sent
    statuses = dict(run.shape_runs.values_list("position", "status"))
    assert statuses == {0: ShapeStatus.STOPPED, 1: ShapeStatus.FAILED}


def test_a_received_page_larger_than_the_bound_fails_the_receive_shape(company, instance, httpserver, settings):
    settings.FLOW_MAX_PAGE_BYTES = 10_000
    httpserver.expect_request("/api/orders").respond_with_json([{"id": n, "name": "x" * 100} for n in range(200)])
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith("Shape 1 (Shop - UK → List orders): a page grew to 29.4 KB, ")
    assert "more than the 9.77 KB a page may hold after a shape (FLOW_MAX_PAGE_BYTES)" in run.failure_reason


def test_answers_to_a_page_larger_than_the_bound_fail_the_send_shape(company, instance, httpserver, settings):
    settings.FLOW_MAX_PAGE_BYTES = 50_000
    httpserver.expect_request("/api/orders").respond_with_json([{"id": n} for n in range(20)])
    httpserver.expect_request("/api/imports").respond_with_json({"echo": "y" * 10_000}, status=201)
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith(
        "Shape 2 (Shop - UK → Import order): a page would grow to about 196 KB (48.9 KB after 5 of its 20 items), "
    )
    assert "(FLOW_MAX_PAGE_BYTES). The API's answers to one page are too large to pass on." in run.failure_reason
    assert len(bodies(httpserver)) == 5  # the fifth answer crossed the bound


# --- records and bytes per request --------------------------------------------------------------


@pytest.mark.parametrize("records, most_records, most_bytes", [(25, 10, 1_000_000), (25, 1000, 300), (7, 7, 10_000)])
def test_a_batch_send_splits_a_page_within_the_records_and_bytes_per_request(
    company, instance, httpserver, settings, records, most_records, most_bytes
):
    settings.FLOW_MAX_BATCH_RECORDS, settings.FLOW_MAX_REQUEST_BYTES = most_records, most_bytes
    page = [{"id": n, "name": f"order {n:03d}", "note": "z" * 20} for n in range(records)]
    httpserver.expect_request("/api/orders").respond_with_json(page)
    echo_imports(httpserver)
    run = run_flow(flow_of(company, connection(instance, "list_orders"),
                           connection(instance, "import_order", send_as="batch")))
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    sent = bodies(httpserver)
    per_request = min(most_records, (most_bytes - 2) // (len(json.dumps(page[0])) + 2))
    assert len(sent) == math.ceil(records / per_request)
    assert all(len(body) <= most_bytes and len(json.loads(body)) <= most_records for body in sent)
    assert [item for body in sent for item in json.loads(body)] == page  # every record once, in order
    send = run.shape_runs.get(position=1)
    assert (send.items_in, send.items_out, send.requests) == (records, records, len(sent))


def test_an_item_larger_than_a_request_body_is_refused_and_the_rest_sent(company, instance, httpserver, settings):
    settings.FLOW_MAX_REQUEST_BYTES = 1000
    page = [{"id": 1}, {"id": 2, "blob": "b" * 2000}, {"id": 3}]
    httpserver.expect_request("/api/orders").respond_with_json(page)
    echo_imports(httpserver)
    run = run_flow(flow_of(company, connection(instance, "list_orders"),
                           connection(instance, "import_order", send_as="batch")))
    assert run.status == RunStatus.PARTIAL_SUCCESS
    assert [json.loads(body) for body in bodies(httpserver)] == [[{"id": 1}, {"id": 3}]]
    send = run.shape_runs.get(position=1)
    assert send.errors == [
        "Page 1, item 2: its JSON is 1.97 KB, more than the 1,000 bytes a request body may hold "
        "(FLOW_MAX_REQUEST_BYTES); it was not sent."
    ]


def test_an_item_sent_alone_is_held_to_the_bytes_per_request_too(company, instance, httpserver, settings):
    settings.FLOW_MAX_REQUEST_BYTES = 1000
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1, "blob": "b" * 2000}])
    echo_imports(httpserver)
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    assert run.status == RunStatus.FAILED
    assert run.failure_reason == (
        "Shape 2 (Shop - UK → Import order): none of the 1 item(s) was accepted. Last error: its JSON is 1.97 KB, "
        "more than the 1,000 bytes a request body may hold (FLOW_MAX_REQUEST_BYTES); it was not sent"
    )
    assert bodies(httpserver) == []


# --- depth -------------------------------------------------------------------------------------


def nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def test_a_deeply_nested_record_fails_the_run_naming_the_depth_bound(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_data(
        '[{"id": 1}, ' + nested(900) + "]", content_type="application/json"
    )
    echo_imports(httpserver)
    run = run_flow(flow_of(company, connection(instance, "list_orders"),
                           map_shape({"target": "copy", "source": "a"}), connection(instance, "import_order")))
    assert run.status == RunStatus.FAILED
    assert run.failure_reason == (
        "Shape 1 (Shop - UK → List orders): record 2 of page 1 is nested more than 64 levels deep, the most a "
        "record may be (FLOW_MAX_RECORD_DEPTH). The run stopped before the record was processed."
    )
    assert bodies(httpserver) == []


def test_a_deeply_nested_answer_fails_the_send_shape(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    httpserver.expect_request("/api/imports").respond_with_data(nested(100), content_type="application/json")
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith(
        "Shape 2 (Shop - UK → Import order): record 1 of the answer to item 1 is nested more than 64 levels deep"
    )


def test_records_and_answers_as_deep_as_the_bound_pass_and_deeper_ones_do_not(company, instance, httpserver):
    """The bound is FLOW_MAX_RECORD_DEPTH levels, counted from the record: the record itself is level 1."""
    deep = {"64": nested(64), "65": nested(65)}
    httpserver.expect_request("/api/orders").respond_with_handler(
        lambda request: Response("[" + deep[request.args["depth"]] + "]", content_type="application/json")
    )
    httpserver.expect_request("/api/imports").respond_with_handler(
        lambda request: Response(request.data, content_type="application/json")
    )
    results = {}
    for depth in deep:
        endpoint_of(instance, "list_orders", parameters={"depth": depth})
        run = run_flow(flow_of(company, connection(instance, "list_orders"),
                               connection(instance, "import_order", send_as="batch"), name=f"Depth {depth}"))
        results[depth] = (run.status, "FLOW_MAX_RECORD_DEPTH" in run.failure_reason)
    assert results == {"64": (RunStatus.SUCCESS, False), "65": (RunStatus.FAILED, True)}
    assert [json.loads(body) for body in bodies(httpserver)] == [[json.loads(nested(64))]]


def test_a_map_target_deeper_than_the_bound_is_refused_before_any_request(company, instance, httpserver):
    run = run_flow(flow_of(company, connection(instance, "list_orders"),
                           map_shape({"target": ".".join(["x"] * 100), "constant": "1"})))
    assert run.status == RunStatus.FAILED
    assert run.failure_reason == (
        "Shape 2 (map): field 1: the target path nests 100 levels deep, more than the 64 a record may "
        "(FLOW_MAX_RECORD_DEPTH)."
    )
    assert httpserver.log == []


# --- storing what an API sends -----------------------------------------------------------------


def test_a_nul_in_a_record_is_stored_as_a_replacement_character(company, instance, httpserver):
    """PostgreSQL's jsonb refuses \\u0000: the sample keeps the record with U+FFFD in its place."""
    httpserver.expect_request("/api/orders").respond_with_data(
        '[{"id": 1, "name": "Ada\\u0000Lovelace", "k\\u0000": "\\\\u0000 typed"}]', content_type="application/json"
    )
    echo_imports(httpserver)
    run = run_flow(flow_of(company, connection(instance, "list_orders"),
                           connection(instance, "import_order", send_as="batch")))
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    received = FlowRunShape.objects.get(run=run, position=0)
    assert received.payload_sample["out"] == [{"id": 1, "name": "Ada\ufffdLovelace", "k\ufffd": "\\u0000 typed"}]
    assert json.loads(bodies(httpserver)[0]) == [{"id": 1, "name": "Ada\x00Lovelace", "k\x00": "\\u0000 typed"}]


@pytest.mark.django_db(transaction=True)  # a refused statement, as on a worker (autocommit)
@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="SQLite stores what PostgreSQL refuses")
def test_data_the_database_refuses_fails_the_run_naming_the_cause(company, instance, httpserver, monkeypatch):
    monkeypatch.setattr(shapes, "storable_json", lambda text: text)  # as before NULs were replaced
    httpserver.expect_request("/api/orders").respond_with_data(
        '[{"id": 1, "name": "Ada\\u0000Lovelace"}]', content_type="application/json"
    )
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith(
        "Shape 1 (Shop - UK → List orders): the database refused to store the run's data "
        "(unsupported Unicode escape sequence). The run stopped."
    )
    assert FlowRunShape.objects.get(run=run, position=0).payload_sample == {}


@pytest.mark.parametrize("error, reason", [
    (RecursionError("maximum recursion depth exceeded"),
     "Shape 2 (map): the data is nested too deeply to process (a record may nest at most 64 levels, "
     "FLOW_MAX_RECORD_DEPTH). The run stopped."),
    (MemoryError(),
     "Shape 2 (map): the worker ran out of memory. Pages may hold at most 8 MB after a shape (FLOW_MAX_PAGE_BYTES); "
     "a lower bound, or smaller pages from the endpoint, keeps runs within the worker's memory."),
])
def test_failures_with_a_known_cause_are_named_not_called_unexpected(
    company, instance, httpserver, monkeypatch, error, reason
):
    def build(self, item, size):
        raise error

    monkeypatch.setattr(map_shape_module.Map, "build", build)
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    run = run_flow(flow_of(company, connection(instance, "list_orders"), map_shape({"target": "id", "source": "id"})))
    assert (run.status, run.failure_reason) == (RunStatus.FAILED, reason)
    statuses = dict(run.shape_runs.values_list("position", "status"))
    assert statuses == {0: ShapeStatus.STOPPED, 1: ShapeStatus.FAILED}


# --- duration ----------------------------------------------------------------------------------


class Clock:
    """The runner's clock, moved forward by the test HTTP server while a page is on its way."""

    def __init__(self):
        self.ahead = timedelta(0)

    def now(self):
        return django_timezone.now() + self.ahead


def test_a_run_past_the_company_s_maximum_duration_is_stopped_at_its_next_request(
    company, instance, httpserver, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(execution, "timezone", clock)
    endpoint_of(instance, "list_orders", pagination={"style": "page_number", "page_parameter": "page"})

    def orders(request: Request) -> Response:
        clock.ahead = timedelta(minutes=61)  # page 1 took an hour
        return json_response([{"id": int(request.args["page"])}])

    httpserver.expect_request("/api/orders").respond_with_handler(orders)
    echo_imports(httpserver)
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    assert (run.status, run.failure_reason) == (
        RunStatus.FAILED,
        "The run was stopped after 1 hour, the company's maximum run duration. "
        "An Administrator can change it on the company settings page.",
    )
    assert [request.path for request, _ in httpserver.log] == ["/api/orders"]
    assert set(run.shape_runs.values_list("status", flat=True)) == {ShapeStatus.STOPPED}


def overdue_run(flow, started: timedelta) -> FlowRun:
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    now = django_timezone.now()
    FlowRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, started_at=now - started, lease_owner="stuck-worker",
        lease_expires_at=now + timedelta(seconds=30),  # its heartbeat still renews the lease
    )
    FlowRunShape.objects.create(run=run, position=0, shape=flow.shapes.first(), shape_name="receive",
                                started_at=now - started)
    return run


def test_the_scheduler_tick_fails_runs_past_their_maximum_duration_even_with_a_stuck_worker(
    company, other_company, instance, settings
):
    flow = flow_of(company, connection(instance, "list_orders"))
    company.max_run_duration_minutes = 30
    company.save()
    overdue, within = overdue_run(flow, timedelta(minutes=31)), overdue_run(flow, timedelta(minutes=29))
    tasks.tick_now()
    overdue.refresh_from_db()
    within.refresh_from_db()
    assert (overdue.status, overdue.failure_reason) == (
        RunStatus.FAILED,
        "The run was stopped after 30 minutes, the company's maximum run duration. "
        "An Administrator can change it on the company settings page.",
    )
    assert overdue.shape_runs.get().status == ShapeStatus.STOPPED
    assert within.status == RunStatus.RUNNING
    # The worker that comes back to it finds the run is not its own any more.
    assert not execution.renew_lease(overdue.pk, "stuck-worker")


def test_the_platform_ceiling_caps_a_company_s_maximum_duration(company, instance, settings):
    settings.FLOW_RUN_MAX_DURATION_CEILING_MINUTES = 120
    company.max_run_duration_minutes = 600  # set before the ceiling was lowered
    company.save()
    run = overdue_run(flow_of(company, connection(instance, "list_orders")), timedelta(minutes=121))
    queueing.reap_overdue()
    run.refresh_from_db()
    assert run.failure_reason == (
        "The run was stopped after 2 hours, the platform's maximum run duration "
        "(FLOW_RUN_MAX_DURATION_CEILING_MINUTES)."
    )
