"""Filter, map and send shapes, request parameters, retries and the run log, against a real HTTP server."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from werkzeug import Request, Response

from flows import execution, queueing, retention
from flows.models import FlowRun, FlowRunShape, RunStatus, RunTrigger, ShapeStatus
from tests.flow_helpers import (  # noqa: F401 - fixtures
    API_TOKEN,
    connection,
    connector,
    endpoint_of,
    filter_shape,
    flow_of,
    instance,
    json_response,
    map_shape,
    shop_connector,
)
from tests.raw_server import raw_server  # noqa: F401 - fixture

REFERENCE = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def quick_retries(settings):
    settings.FLOW_RETRY_DELAY_SECONDS = 0


def run_flow(flow, *, now: datetime = REFERENCE) -> FlowRun:
    return execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL, now=now).pk)


def posted(httpserver, path: str = "/api/imports") -> list:
    return [json.loads(r.data) for r, _ in httpserver.log if r.path == path]


def accept_imports(httpserver):
    httpserver.expect_request("/api/imports", method="POST").respond_with_handler(
        lambda request: json_response({"imported": json.loads(request.data)}, status=201)
    )


# --- {{since}} and friends --------------------------------------------------------------


def test_since_is_written_in_each_instance_s_zone_and_format(company, connector, make_instance, httpserver):
    """The same moment (reference time minus 24 hours) goes out as two different strings."""
    connector.endpoints.filter(key="list_orders").update(request_parameters=[
        {"name": "updated_since", "location": "query", "required": False, "default": "{{since}}",
         "label": "Updated since"},
        {"name": "X-Zone", "location": "header", "required": False, "default": "{{instance.time_zone}}",
         "label": "Zone"},
    ])
    london = make_instance(connector, "London", {"api_token": API_TOKEN},
                           time_zone="Europe/London", date_format="%d/%m/%Y %H:%M")
    tokyo = make_instance(connector, "Tokyo", {"api_token": API_TOKEN},
                          time_zone="Asia/Tokyo", date_format="%Y-%m-%dT%H:%M:%S%z")
    httpserver.expect_request("/api/orders").respond_with_json([])
    rule = {"field": "updated_at", "comparison": "in_last", "value": "24", "unit": "hours"}
    for city in (london, tokyo):
        run = run_flow(flow_of(company, connection(city, "list_orders"), filter_shape(rule), name=city.name))
        assert run.status == RunStatus.SUCCESS, run.failure_reason
    (london_request, _), (tokyo_request, _) = httpserver.log
    # 2026-06-30 12:00 UTC
    assert london_request.args["updated_since"] == "30/06/2026 13:00"
    assert tokyo_request.args["updated_since"] == "2026-06-30T21:00:00+0900"
    assert (london_request.headers["X-Zone"], tokyo_request.headers["X-Zone"]) == ("Europe/London", "Asia/Tokyo")


def test_shape_parameters_override_defaults_and_empty_optional_ones_are_not_sent(company, instance, httpserver):
    endpoint_of(instance, "list_orders", request_parameters=[
        {"name": "since", "location": "query", "required": False, "default": "{{last_success}}", "label": "Since"},
        {"name": "run", "location": "query", "required": False, "default": "", "label": "Run"},
        {"name": "shop", "location": "query", "required": True, "default": "{{shop_id}}", "label": "Shop"},
    ])
    httpserver.expect_request("/api/orders").respond_with_json([])
    flow = flow_of(company, connection(instance, "list_orders", parameters={"run": "{{run_time}}", "shop": "42"}))
    run = run_flow(flow)
    assert run.status == RunStatus.SUCCESS
    (request, _), = httpserver.log
    # No successful run yet: last_success is empty and the optional parameter is left out.
    assert dict(request.args) == {"run": "2026-07-01T12:00:00+0000", "shop": "42"}
    # The next run knows the last success.
    httpserver.clear_log()
    run_flow(flow, now=REFERENCE + timedelta(hours=1))
    (request, _), = httpserver.log
    assert request.args["since"] == "2026-07-01T12:00:00+0000"


# --- filter ------------------------------------------------------------------------------


def test_a_filter_reads_dates_in_the_source_instance_s_format_and_zone(company, connector, make_instance, httpserver):
    instance = make_instance(connector, "New York", {"api_token": API_TOKEN},
                             time_zone="America/New_York", date_format="%m/%d/%Y %I:%M %p")
    items = [
        {"id": 1, "updated": "07/01/2026 06:30 AM"},  # 10:30 UTC: within the last 2 hours of 12:00 UTC
        {"id": 2, "updated": "07/01/2026 05:30 AM"},  # 09:30 UTC: too old (it would pass if read as UTC)
        {"id": 3, "updated": "2026-07-01T11:00:00Z"},  # ISO 8601 fallback
        {"id": 4, "updated": "soon"},
        {"id": 5},
    ]
    httpserver.expect_request("/api/orders").respond_with_json({"orders": items})
    accept_imports(httpserver)
    flow = flow_of(
        company, connection(instance, "list_orders"),
        filter_shape({"field": "updated", "comparison": "in_last", "value": "2", "unit": "hours"}),
        connection(instance, "import_order"),
    )
    run = run_flow(flow)
    assert run.status == RunStatus.SUCCESS
    assert [item["id"] for item in posted(httpserver)] == [1, 3]
    filter_run = run.shape_runs.get(position=1)
    assert (filter_run.shape_name, filter_run.items_in, filter_run.items_out) == ("filter", 5, 2)
    assert run.warnings == [
        'Shape 2 (filter): 1 date value(s) could not be read and did not match, e.g. "soon" is not a date in the '
        "format %m/%d/%Y %I:%M %p or ISO 8601."
    ]


def test_a_retry_filters_with_the_original_reference_time(company, instance, httpserver):
    items = [{"id": 1, "updated_at": "2026-07-01T11:30:00+0000"}, {"id": 2, "updated_at": "2026-07-01T10:30:00+0000"}]
    httpserver.expect_request("/api/orders").respond_with_json(items)
    httpserver.expect_request("/api/imports").respond_with_json({"message": "down"}, status=500)
    flow = flow_of(
        company, connection(instance, "list_orders"),
        filter_shape({"field": "updated_at", "comparison": "in_last", "value": "60", "unit": "minutes"}),
        connection(instance, "import_order"),
    )
    first = run_flow(flow)
    assert first.status == RunStatus.FAILED
    httpserver.clear_log()
    httpserver.clear()
    httpserver.expect_request("/api/orders").respond_with_json(items)
    accept_imports(httpserver)
    retry = execution.execute(queueing.retry_run(first).pk)
    assert retry.status == RunStatus.SUCCESS
    assert [item["id"] for item in posted(httpserver)] == [1]  # relative to 12:00, not to now


def test_match_any_and_the_other_comparisons(company, instance, httpserver):
    items = [
        {"id": 1, "status": "paid", "total": "9.5", "tags": ["vip"]},
        {"id": 2, "status": "open", "total": "100", "tags": []},
        {"id": 3, "status": "open", "total": "20", "note": ""},
    ]
    httpserver.expect_request("/api/orders").respond_with_json(items)
    accept_imports(httpserver)
    flows = {
        "all": filter_shape({"field": "status", "comparison": "equals", "value": "open"},
                            {"field": "total", "comparison": "greater_than", "value": "50"}),
        "any": filter_shape({"field": "tags", "comparison": "contains", "value": "vip"},
                            {"field": "note", "comparison": "is_empty", "value": ""}, match="any"),
        "numbers": filter_shape({"field": "total", "comparison": "less_than", "value": "10"}),
        "not": filter_shape({"field": "status", "comparison": "not_equals", "value": "open"}),
    }
    got = {}
    for name, shape in flows.items():
        httpserver.clear_log()
        run = run_flow(flow_of(company, connection(instance, "list_orders"), shape,
                               connection(instance, "import_order"), name=name))
        got[name] = [item["id"] for item in posted(httpserver)]
        assert run.status == RunStatus.SUCCESS
    # is_empty: a missing field is empty too.
    assert got == {"all": [2], "any": [1, 2, 3], "numbers": [1], "not": [1]}


# --- map ---------------------------------------------------------------------------------


def test_a_map_renames_nests_sets_constants_and_converts_dates_between_instances(
    company, connector, make_instance, httpserver,
):
    london = make_instance(connector, "London", {"api_token": API_TOKEN},
                           time_zone="Europe/London", date_format="%d/%m/%Y %H:%M")
    tokyo = make_instance(connector, "Tokyo", {"api_token": API_TOKEN},
                          time_zone="Asia/Tokyo", date_format="%Y-%m-%dT%H:%M:%S%z")
    items = [
        {"id": 1, "placed": "01/07/2026 13:00", "customer": {"email": "a@example.com"}},
        {"id": 2, "placed": "not a date", "customer": {"email": "b@example.com"}},
        {"id": 3, "placed": "25/12/2026 09:00"},
    ]
    httpserver.expect_request("/api/orders").respond_with_json(items)
    accept_imports(httpserver)
    flow = flow_of(
        company, connection(london, "list_orders"),
        map_shape(
            {"target": "reference", "source": "id", "constant": "", "convert_date": False},
            {"target": "buyer.email", "source": "customer.email", "constant": "", "convert_date": False},
            {"target": "channel", "source": "", "constant": "web", "convert_date": False},
            {"target": "placed_at", "source": "placed", "constant": "", "convert_date": True},
        ),
        connection(tokyo, "import_order"),
    )
    run = run_flow(flow)
    assert run.status == RunStatus.PARTIAL_SUCCESS
    assert posted(httpserver) == [
        {"reference": 1, "buyer": {"email": "a@example.com"}, "channel": "web", "placed_at": "2026-07-01T21:00:00+0900"},
        {"reference": 3, "channel": "web", "placed_at": "2026-12-25T18:00:00+0900"},  # GMT in winter
    ]
    mapped = run.shape_runs.get(position=1)
    assert (mapped.status, mapped.items_in, mapped.items_out) == (ShapeStatus.PARTIAL_SUCCESS, 3, 2)
    assert mapped.errors == [
        'Item 2: field "placed": "not a date" is not a date in the format %d/%m/%Y %H:%M or ISO 8601; '
        "it was not passed on."
    ]


def test_keep_unmapped_starts_from_the_item(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1, "a": {"b": 2}}])
    accept_imports(httpserver)
    run = run_flow(flow_of(
        company, connection(instance, "list_orders"),
        map_shape({"target": "a.c", "source": "a.b", "constant": "", "convert_date": False}, keep_unmapped=True),
        connection(instance, "import_order"),
    ))
    assert run.status == RunStatus.SUCCESS
    assert posted(httpserver) == [{"id": 1, "a": {"b": 2, "c": 2}}]


# --- send --------------------------------------------------------------------------------


def test_send_as_batch_posts_each_page_as_one_list(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_handler(
        lambda request: json_response({"1": [{"id": 1}, {"id": 2}], "2": [{"id": 3}]}.get(request.args["page"], []))
    )
    httpserver.expect_request("/api/imports").respond_with_handler(
        lambda request: json_response([{"ok": item["id"]} for item in json.loads(request.data)], status=201)
    )
    endpoint_of(instance, "list_orders", pagination={"style": "page_number", "page_parameter": "page"})
    run = run_flow(flow_of(company, connection(instance, "list_orders"),
                           connection(instance, "import_order", send_as="batch")))
    assert run.status == RunStatus.SUCCESS
    assert posted(httpserver) == [[{"id": 1}, {"id": 2}], [{"id": 3}]]
    send = run.shape_runs.get(position=1)
    assert (send.items_in, send.items_out, send.requests) == (3, 3, 2)


def test_form_encoded_sends_and_body_parameters(company, instance, httpserver):
    endpoint_of(instance, "import_order", body_encoding="form", request_parameters=[
        {"name": "source", "location": "body", "required": False, "default": "patchworks", "label": "Source"},
    ])
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1, "lines": [1, 2]}])
    httpserver.expect_request("/api/imports").respond_with_json({}, status=201)
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    assert run.status == RunStatus.SUCCESS
    (request, _), = [entry for entry in httpserver.log if entry[0].path == "/api/imports"]
    assert request.content_type == "application/x-www-form-urlencoded"
    assert parse_qs(request.get_data(as_text=True)) == {"id": ["1"], "lines": ["[1, 2]"], "source": ["patchworks"]}


def test_retries_resend_after_a_5xx_and_are_counted(company, instance, httpserver):
    answers = iter([503, 502, 201, 201])
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}, {"id": 2}])
    httpserver.expect_request("/api/imports").respond_with_handler(lambda request: json_response({}, next(answers)))
    run = run_flow(flow_of(company, connection(instance, "list_orders"),
                           connection(instance, "import_order", retries=2)))
    assert run.status == RunStatus.SUCCESS
    send = run.shape_runs.get(position=1)
    assert (send.requests, send.retries, send.items_out) == (4, 2, 2)


def test_without_retries_a_5xx_is_final(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    httpserver.expect_request("/api/imports").respond_with_json({"message": "busy"}, status=503)
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    assert run.status == RunStatus.FAILED
    assert run.shape_runs.get(position=1).requests == 1


def test_a_4xx_is_not_retried(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    httpserver.expect_request("/api/imports").respond_with_json({"message": "bad"}, status=422)
    run = run_flow(flow_of(company, connection(instance, "list_orders"),
                           connection(instance, "import_order", retries=2)))
    assert run.status == RunStatus.FAILED
    assert (run.shape_runs.get(position=1).requests, run.shape_runs.get(position=1).retries) == (1, 0)


def test_allow_unsuccessful_turns_refusals_into_warnings(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}, {"id": 2}])
    httpserver.expect_request("/api/imports").respond_with_json({"message": "duplicate"}, status=409)
    run = run_flow(flow_of(company, connection(instance, "list_orders"),
                           connection(instance, "import_order", allow_unsuccessful=True)))
    assert run.status == RunStatus.PARTIAL_SUCCESS and run.failure_reason == ""
    send = run.shape_runs.get(position=1)
    assert send.status == ShapeStatus.PARTIAL_SUCCESS and send.errors == []
    assert send.warnings == [
        'Item 1: The API answered 409 Conflict. The API said: "duplicate".',
        'Item 2: The API answered 409 Conflict. The API said: "duplicate".',
    ]
    assert len(send.failed_exchanges) == 2


def test_allow_unsuccessful_on_a_receive_ends_its_pages_with_a_warning(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"message": "no orders here"}, status=404)
    run = run_flow(flow_of(company, connection(instance, "list_orders", allow_unsuccessful=True),
                           connection(instance, "import_order")))
    assert run.status == RunStatus.PARTIAL_SUCCESS
    assert run.warnings == [
        'Shape 1 (Shop - UK → List orders): Page 1: The API answered 404 Not Found. The API said: "no orders here". '
        "The pages end here.",
        "Shape 2 (Shop - UK → Import order): Nothing to send: no items came from the previous shape.",
    ]


def test_the_shape_timeout_bounds_each_request(company, instance, httpserver):
    def slow(request: Request) -> Response:
        threading.Event().wait(2.5)
        return json_response([])

    httpserver.expect_request("/api/orders").respond_with_handler(slow)
    run = run_flow(flow_of(company, connection(instance, "list_orders", timeout=1)))
    assert run.status == RunStatus.FAILED
    assert "within 1 seconds" in run.failure_reason, run.failure_reason


# --- stopping, waiting, the run log --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_stop_request_is_honoured_between_pages(company, instance, httpserver):
    flow = flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order"))
    endpoint_of(instance, "list_orders", pagination={"style": "page_number", "page_parameter": "page"})
    run = queueing.queue_run(flow, RunTrigger.MANUAL)

    def orders(request: Request) -> Response:
        queueing.request_stop(run)  # pressed while page 1 is on its way
        db_connection.close()
        return json_response([{"id": int(request.args["page"])}])

    httpserver.expect_request("/api/orders").respond_with_handler(orders)
    accept_imports(httpserver)
    run = execution.execute(run.pk)
    assert (run.status, run.failure_reason) == (RunStatus.STOPPED, "Stopped by a user.")
    # Page 1's item was being handed on; nothing more was requested.
    assert [r.path for r, _ in httpserver.log] == ["/api/orders"]
    assert [s.status for s in run.shape_runs.all()] == [ShapeStatus.STOPPED, ShapeStatus.STOPPED]


def test_time_waited_for_the_rate_limit_is_recorded_and_a_close_throttle_is_waited_out(
    company, instance, httpserver, settings,
):
    settings.OUTBOUND_RATE_LIMIT_MAX_WAIT = 0.0  # the limit throttles instead of waiting inside the client
    instance.rate_limit_amount, instance.rate_limit_unit = 1, "second"
    instance.save()
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}, {"id": 2}])
    accept_imports(httpserver)
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    send = run.shape_runs.get(position=1)
    assert send.requests == 2 and len(posted(httpserver)) == 2
    # The throttles the shape waited out itself count as waits for the rate limit (they were not counted at all).
    assert send.rate_limit_wait_ms > 0

    settings.OUTBOUND_RATE_LIMIT_MAX_WAIT = 5.0
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    waited = sum(s.rate_limit_wait_ms for s in run.shape_runs.all())
    assert run.status == RunStatus.SUCCESS and waited >= 500


def test_a_far_throttle_parks_the_run_and_it_resumes_from_its_checkpoint(company, instance, httpserver, settings):
    """A send the rate limit allows only in a minute: the run gives its worker back and resumes then."""
    settings.OUTBOUND_RATE_LIMIT_MAX_WAIT = 0.0
    instance.rate_limit_amount, instance.rate_limit_unit = 1, "minute"
    instance.save()
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    accept_imports(httpserver)
    flow = flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order"))
    run = run_flow(flow)
    assert run.status == RunStatus.WAITING, run.failure_reason
    assert run.park_reason == "the rate limit of Shop - UK"
    assert timezone.now() < run.parked_until <= timezone.now() + timedelta(seconds=61)
    assert run.lease_owner == "" and run.parks == 1
    assert [s.status for s in run.shape_runs.all()] == [ShapeStatus.RUNNING, ShapeStatus.RUNNING]
    assert posted(httpserver) == []
    assert execution.execute(run.pk) is None  # too early: nothing happens
    # The minute is over.
    instance.rate_limit_amount = 1000
    instance.save()
    FlowRun.objects.filter(pk=run.pk).update(parked_until=timezone.now())
    run = execution.execute(run.pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert [item["id"] for item in posted(httpserver)] == [1]  # sent once
    receive, send = run.shape_runs.all()
    assert (receive.pages, receive.items_out, send.items_in, send.items_out) == (1, 1, 1, 1)


def test_a_run_that_would_park_more_than_its_most_fails_saying_why(company, instance, httpserver, settings):
    settings.OUTBOUND_RATE_LIMIT_MAX_WAIT = 0.0
    settings.FLOW_RUN_MAX_PARKS = 2
    instance.rate_limit_amount, instance.rate_limit_unit = 1, "minute"
    instance.save()
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    accept_imports(httpserver)
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    for parks in (1, 2):
        assert (run.status, run.parks) == (RunStatus.WAITING, parks)
        FlowRun.objects.filter(pk=run.pk).update(parked_until=timezone.now())
        run = execution.execute(run.pk)
    assert run.status == RunStatus.FAILED and run.parks == 2
    assert run.failure_reason.startswith(
        "The run waited 2 times (FLOW_RUN_MAX_PARKS) and would have to wait again, for the rate limit of Shop - UK."
    )
    assert [s.status for s in run.shape_runs.all()] == [ShapeStatus.FAILED, ShapeStatus.FAILED]
    assert posted(httpserver) == []


def test_payload_samples_are_redacted_and_the_instance_is_marked_used(company, instance, httpserver):
    items = [{"id": n, "note": f"token {API_TOKEN}"} for n in range(5)]
    httpserver.expect_request("/api/orders").respond_with_json(items)
    accept_imports(httpserver)
    assert instance.last_used_by_run_at is None
    run = run_flow(flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")))
    receive, send = run.shape_runs.all()
    assert receive.payload_sample == {"in": [], "out": [{"id": n, "note": "token [redacted]"} for n in range(3)]}
    assert [item["id"] for item in send.payload_sample["in"]] == [0, 1, 2]
    assert len(send.payload_sample["out"]) == 3
    assert API_TOKEN not in json.dumps([receive.payload_sample, send.payload_sample])
    instance.refresh_from_db()
    assert instance.last_used_by_run_at is not None


def test_a_big_item_is_cut_in_the_sample(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1, "blob": "x" * 40000}])
    run = run_flow(flow_of(company, connection(instance, "list_orders")))
    sample = run.shape_runs.get().payload_sample
    assert len(json.dumps(sample)) <= 16 * 1024 and sample["text"].startswith('{"in": [], "out": [{"id": 1')


# --- validation ----------------------------------------------------------------------------


def test_validation_names_every_broken_shape_before_any_request(company, instance, httpserver):
    endpoint_of(instance, "list_orders", request_parameters=[
        {"name": "shop", "location": "query", "required": True, "default": "", "label": "Shop id"},
    ])
    flow = flow_of(
        company,
        connection(instance, "list_orders"),
        filter_shape({"field": "", "comparison": "equals", "value": "x"},
                     {"field": "a", "comparison": "resembles", "value": "x"},
                     {"field": "b", "comparison": "in_last", "value": "-3", "unit": "weeks"}),
        map_shape(),
        {"kind": "connection", "instance": None, "endpoint": None, "config": {}},
        connection(instance, "import_order", timeout=500, send_as="stream"),
    )
    run = run_flow(flow)
    assert run.status == RunStatus.FAILED
    assert run.failure_reason == " ".join([
        'Shape 1 (Shop - UK → List orders): the required parameter "Shop id" has no value. Set it on the shape.',
        "Shape 2 (filter): rule 1: the field path is empty or has an empty part.",
        'Shape 2 (filter): rule 2: unknown comparison "resembles".',
        'Shape 2 (filter): rule 3: in_last needs a positive number, not "-3".',
        "Shape 2 (filter): rule 3: in_last needs a unit (minutes, hours or days).",
        "Shape 3 (map): it has no fields. Add a field or remove the shape.",
        "Shape 4 (no instance → missing endpoint): it has no instance. Choose an instance for this shape.",
        "Shape 5 (Shop - UK → Import order): timeout must be a whole number from 1 to 120.",
        'Shape 5 (Shop - UK → Import order): send_as must be "item" or "batch".',
    ])
    assert httpserver.log == [] and not run.shape_runs.exists()


def test_a_filter_without_rules_and_date_maps_without_instances_are_refused(company, instance, httpserver):
    flow = flow_of(
        company,
        map_shape({"target": "when", "source": "at", "constant": "", "convert_date": True}),
        connection(instance, "list_orders"),
        {"kind": "filter", "config": {"match": "most"}},
    )
    run = run_flow(flow)
    assert run.failure_reason == " ".join([
        "Shape 1 (map): it converts dates but no connection shape comes before it to say how they are read.",
        'Shape 3 (filter): match must be "all" or "any", not "most".',
        "Shape 3 (filter): it has no rules. Add a rule or remove the shape.",
    ])



@pytest.mark.parametrize("amount", ["1000000000000", "1e308", "100001"])
def test_an_in_last_rule_further_back_than_a_date_can_go_is_refused_before_any_request(
    company, instance, httpserver, amount
):
    """A rule stored without the form (an import, the admin) fails the run by name, never with an overflow."""
    flow = flow_of(
        company,
        connection(instance, "list_orders"),
        filter_shape({"field": "updated_at", "comparison": "in_last", "value": amount, "unit": "days"}),
    )
    run = run_flow(flow)
    assert run.status == "failed"
    assert run.failure_reason == f"Shape 2 (filter): rule 1: in_last may go back at most 100,000 days, not {amount}."
    assert httpserver.log == []

# --- retention ---------------------------------------------------------------------------


def test_retention_deletes_old_runs_and_clears_old_payload_samples(company, other_company, instance):
    now = datetime(2026, 7, 20, 12, 0, tzinfo=UTC)
    company.run_log_retention_days, company.payload_retention_hours = 7, 72
    company.save()
    other_company.run_log_retention_days = 30
    other_company.save()
    flow = flow_of(company, connection(instance, "list_orders"))
    other_flow = flow_of(other_company, name="Other")

    def finished_run(the_flow, age: timedelta, status=RunStatus.SUCCESS) -> FlowRun:
        at = now - age
        run = FlowRun.objects.create(company=the_flow.company, flow=the_flow, trigger=RunTrigger.MANUAL,
                                     queued_at=at, reference_time=at, started_at=at,
                                     finished_at=None if status == RunStatus.RUNNING else at, status=status)
        FlowRunShape.objects.create(run=run, position=0, shape_name="s", started_at=at, payload_sample={"in": [1]})
        return run

    old = finished_run(flow, timedelta(days=7, minutes=1))
    kept = finished_run(flow, timedelta(days=6))
    recent = finished_run(flow, timedelta(hours=71))
    running = finished_run(flow, timedelta(days=30), status=RunStatus.RUNNING)
    other = finished_run(other_flow, timedelta(days=8))

    cleaned = retention.clean_up(now)

    assert (cleaned.runs, cleaned.samples) == (1, 3)
    assert not FlowRun.objects.filter(pk=old.pk).exists()
    assert set(FlowRun.objects.values_list("pk", flat=True)) == {kept.pk, recent.pk, running.pk, other.pk}
    samples = dict(FlowRunShape.objects.values_list("run_id", "payload_sample"))
    assert samples == {kept.pk: None, recent.pk: {"in": [1]}, running.pk: None, other.pk: None}


def test_retention_deletes_old_runs_in_batches_and_keeps_runs_written_meanwhile(company, settings, monkeypatch):
    settings.FLOW_RUN_DELETE_BATCH = 3
    now = timezone.now()
    flow = flow_of(company, name="Busy")

    def run_at(at: datetime) -> FlowRun:
        return FlowRun.objects.create(company=company, flow=flow, trigger=RunTrigger.SCHEDULE, queued_at=at,
                                      reference_time=at, started_at=at, finished_at=at, status=RunStatus.SUCCESS)

    old = [run_at(now - timedelta(days=8, minutes=n)) for n in range(7)]
    for run in old:
        FlowRunShape.objects.create(run=run, position=0, shape_name="s", started_at=run.started_at)
    kept = run_at(now - timedelta(days=6))
    written = []
    delete_payloads = retention.delete_payloads

    def a_worker_writes_a_run_before_each_batch(cleaned, **where):
        if "run__in" in where:  # the batch about to go
            written.append(run_at(timezone.now()))
        delete_payloads(cleaned, **where)

    monkeypatch.setattr(retention, "delete_payloads", a_worker_writes_a_run_before_each_batch)
    with CaptureQueriesContext(db_connection) as queries:
        cleaned = retention.clean_up(now)

    assert cleaned.run_batches == [3, 3, 1] and cleaned.runs == 7 and len(written) == 3
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('DELETE FROM "flows_flowrun" ')]
    assert len(deletes) == 3
    # The oldest went first (old[6] finished first), and every run written meanwhile is still there.
    first_batch = {int(pk) for pk in re.search(r"IN \(([0-9, ]+)\)", deletes[0])[1].split(",")}
    assert first_batch == {run.pk for run in old[4:]}
    assert set(FlowRun.objects.values_list("pk", flat=True)) == {kept.pk, *(run.pk for run in written)}
    assert not FlowRunShape.objects.exists()
    assert cleaned.longest_batch_seconds > 0


def test_retention_s_queries_do_not_grow_with_the_companies_that_share_its_settings(company, settings):
    from patchworks_site.models import Company

    settings.FLOW_RUN_DELETE_BATCH = 1000
    now = timezone.now()

    def companies_with_an_expired_run(count: int, first: int) -> set[int]:
        kept = set()
        for n in range(first, first + count):
            owner = Company.objects.create(name=f"Tenant {n}")
            flow = flow_of(owner, name=f"Flow {n}")
            for age, keep in ((timedelta(days=8), False), (timedelta(days=4), True)):  # 4 days: its sample goes
                run = FlowRun.objects.create(company=owner, flow=flow, trigger=RunTrigger.SCHEDULE,
                                             queued_at=now - age, reference_time=now - age, started_at=now - age,
                                             finished_at=now - age, status=RunStatus.SUCCESS)
                FlowRunShape.objects.create(run=run, position=0, shape_name="s", started_at=now - age,
                                            payload_sample={"in": [n]})
                if keep:
                    kept.add(run.pk)
        return kept

    def cleaned_with_queries() -> tuple[retention.Cleaned, int]:
        with CaptureQueriesContext(db_connection) as queries:
            cleaned = retention.clean_up(now)
        return cleaned, len(queries.captured_queries)

    kept = companies_with_an_expired_run(3, 0)
    few, few_queries = cleaned_with_queries()
    kept |= companies_with_an_expired_run(30, 3)
    many, many_queries = cleaned_with_queries()

    assert (few.runs, few.samples, few.run_batches) == (3, 3, [3])
    assert (many.runs, many.samples, many.run_batches) == (30, 30, [30])  # one batch for 30 companies
    assert many_queries == few_queries  # not a round of queries per company
    assert set(FlowRun.objects.values_list("pk", flat=True)) == kept
    assert not FlowRunShape.objects.filter(payload_sample__isnull=False).exists()


def test_time_waited_for_a_pool_slot_is_recorded(company, connector, instance, httpserver):
    from instances.models import ConnectionPool
    from instances.outbound import limits

    pool = ConnectionPool.objects.create(company=company, name="Storefront", limit=1, timeout_seconds=10)
    pool.connectors.add(connector)
    instance.connection_pool = pool
    instance.save()
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # another request of the pool is in flight for a while
        with limits.pool_slot(pool):
            held.set()
            release.wait(1.0)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        run = run_flow(flow_of(company, connection(instance, "list_orders")))
    finally:
        release.set()
        holder.join()
    assert run.status == RunStatus.SUCCESS
    receive = run.shape_runs.get()
    assert receive.pool_wait_ms >= 300 and receive.rate_limit_wait_ms < 300


def test_a_transport_error_is_retried(company, make_connector, make_instance, raw_server):
    def script(conn) -> None:
        conn.read_request()
        if server.connections == 1:
            conn.reset()  # the first attempt: the connection is reset
            return
        body = b'[{"id": 1}]'
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    server = raw_server(script)
    instance = make_instance(shop_connector(make_connector, company, server.url_for("/api")), "Raw",
                             {"api_token": API_TOKEN})
    run = run_flow(flow_of(company, connection(instance, "list_orders", retries=1)))
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    receive = run.shape_runs.get()
    assert (receive.requests, receive.retries, receive.items_out) == (2, 1, 1)


def test_a_receive_shape_after_others_starts_again_once_they_are_done(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}, {"id": 2}])
    accept_imports(httpserver)
    run = run_flow(flow_of(
        company, connection(instance, "list_orders"), connection(instance, "import_order"),
        connection(instance, "list_orders"), connection(instance, "import_order"),
    ))
    assert run.status == RunStatus.SUCCESS
    assert [r.path for r, _ in httpserver.log] == ["/api/orders", "/api/imports", "/api/imports"] * 2
    counts = [(s.position, s.items_in, s.items_out) for s in run.shape_runs.all()]
    # What the first send passed on is counted as the second receive's items in; it goes no further.
    assert counts == [(0, 0, 2), (1, 2, 2), (2, 2, 2), (3, 2, 2)]


def test_the_retention_task_runs_hourly():
    from flows import tasks

    assert tasks.clean_up_runs.task_class().validate_datetime(datetime(2026, 7, 1, 5, 17))
    assert not tasks.clean_up_runs.task_class().validate_datetime(datetime(2026, 7, 1, 5, 18))


def test_an_instance_whose_date_format_cannot_write_dates_fails_validation(company, instance, httpserver):
    instance.date_format = "%Y-%Q"
    instance.save()
    run = run_flow(flow_of(company, connection(instance, "list_orders")))
    assert run.status == RunStatus.FAILED and httpserver.log == []
    assert run.failure_reason == (
        "Shape 1 (Shop - UK → List orders): the instance's date settings cannot write the run's dates: "
        'unknown directive "%Q" in the date format "%Y-%Q".'
    )


# --- cost per item ----------------------------------------------------------------------


def test_each_item_sent_costs_one_database_query_at_most(company, instance, httpserver):
    """Per item sent to an API without idempotency keys: its in-flight mark and its acknowledgement.

    The stop request is read by the lease renewal, not per request; the client
    reads the connector's variables once, not on every request.
    """
    from django.test.utils import CaptureQueriesContext

    accept_imports(httpserver)

    def queries_for(count: int) -> int:
        httpserver.expect_request("/api/orders").respond_with_json([{"id": n} for n in range(count)])
        flow = flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order"),
                       name=f"{count} orders")
        with CaptureQueriesContext(db_connection) as queries:
            run = run_flow(flow)
        assert run.status == RunStatus.SUCCESS, run.failure_reason
        assert run.shape_runs.get(position=1).items_out == count
        return len(queries)

    few = queries_for(5)
    httpserver.clear()
    accept_imports(httpserver)
    many = queries_for(25)
    assert len(posted(httpserver)) == 25
    assert (many - few) / 20 <= 2, (few, many)
