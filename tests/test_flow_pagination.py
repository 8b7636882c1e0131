"""Receive endpoints read page by page in each pagination style, against a real HTTP server."""

from __future__ import annotations

import json

from werkzeug import Request, Response

from flows import execution, queueing
from flows.models import RunStatus, RunTrigger, ShapeStatus
from tests.flow_helpers import API_TOKEN, connection, connector, endpoint_of, flow_of, instance, json_response  # noqa: F401 - fixtures

TOTAL = 7


def order(n: int) -> dict:
    return {"id": n, "total": f"{n}.00"}


def run_receive_and_send(company, instance, **endpoint_fields):
    endpoint_of(instance, "list_orders", **endpoint_fields)
    flow = flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order"))
    return execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)


def sent(httpserver) -> list:
    return [json.loads(r.data)["id"] for r, _ in httpserver.log if r.path == "/api/imports"]


def gets(httpserver) -> list:
    return [r for r, _ in httpserver.log if r.path.startswith("/api/orders")]


def accept_imports(httpserver):
    httpserver.expect_request("/api/imports", method="POST").respond_with_json({"ok": True}, status=201)


def test_page_number_pages_until_an_empty_page(company, instance, httpserver):
    def orders(request: Request) -> Response:
        page, per_page = int(request.args["page"]), int(request.args["per_page"])
        assert request.args["status"] == "open"  # fixed parameters go with every page
        ids = range((page - 1) * per_page + 1, min(page * per_page, TOTAL) + 1)
        return json_response({"data": {"orders": [order(n) for n in ids]}})

    httpserver.expect_request("/api/orders").respond_with_handler(orders)
    accept_imports(httpserver)
    run = run_receive_and_send(
        company, instance, parameters={"status": "open"}, records_path="data.orders",
        pagination={"style": "page_number", "page_parameter": "page", "limit_parameter": "per_page", "limit": 3,
                    "first_page": 1},
    )
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert [r.args["page"] for r in gets(httpserver)] == ["1", "2", "3", "4"]
    assert sent(httpserver) == list(range(1, TOTAL + 1))
    receive, send = run.shape_runs.all()
    assert (receive.pages, receive.requests, receive.items_out) == (4, 4, TOTAL)
    assert (send.items_in, send.items_out, send.requests) == (TOTAL, TOTAL, TOTAL)


def test_limit_offset_pages_by_the_records_received(company, instance, httpserver):
    def orders(request: Request) -> Response:
        offset, limit = int(request.args["offset"]), int(request.args["limit"])
        return json_response([order(n) for n in range(offset + 1, min(offset + limit, TOTAL) + 1)])

    httpserver.expect_request("/api/orders").respond_with_handler(orders)
    accept_imports(httpserver)
    run = run_receive_and_send(company, instance, pagination={
        "style": "limit_offset", "limit_parameter": "limit", "offset_parameter": "offset", "limit": 4,
    })
    assert run.status == RunStatus.SUCCESS
    assert [r.args["offset"] for r in gets(httpserver)] == ["0", "4", "7"]
    assert sent(httpserver) == list(range(1, TOTAL + 1))


def test_a_cursor_is_sent_back_until_the_api_gives_none(company, instance, httpserver):
    def orders(request: Request) -> Response:
        start = int(request.args.get("after", "0"))
        ids = list(range(start + 1, min(start + 3, TOTAL) + 1))
        following = str(ids[-1]) if ids[-1] < TOTAL else None
        return json_response({"items": [order(n) for n in ids], "meta": {"next_cursor": following}})

    httpserver.expect_request("/api/orders").respond_with_handler(orders)
    accept_imports(httpserver)
    run = run_receive_and_send(company, instance, records_path="items", pagination={
        "style": "cursor", "cursor_path": "meta.next_cursor", "cursor_parameter": "after",
    })
    assert run.status == RunStatus.SUCCESS
    assert [r.args.get("after") for r in gets(httpserver)] == [None, "3", "6"]
    assert sent(httpserver) == list(range(1, TOTAL + 1))


def test_a_next_url_field_is_followed_and_relative_links_resolve_against_the_base_url(company, instance, httpserver):
    def orders(request: Request) -> Response:
        page = int(request.args.get("page", "1"))
        links = {"next": f"/api/orders/more?page={page + 1}" if page < 3 else None}
        if page == 2:
            links["next"] = "more?page=3"  # relative to the base URL
        return json_response({"orders": [order(page)], "links": links})

    httpserver.expect_request("/api/orders").respond_with_handler(orders)
    httpserver.expect_request("/api/orders/more").respond_with_handler(orders)
    httpserver.expect_request("/api/more").respond_with_handler(orders)
    accept_imports(httpserver)
    run = run_receive_and_send(company, instance, pagination={"style": "next_url", "next_url_path": "links.next"})
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    paths = [r.full_path for r, _ in httpserver.log if r.path != "/api/imports"]
    assert paths == ["/api/orders?", "/api/orders/more?page=2", "/api/more?page=3"]
    assert sent(httpserver) == [1, 2, 3]
    # Every page carries the credentials.
    assert all(r.headers["Authorization"] == f"Bearer {API_TOKEN}" for r, _ in httpserver.log)


def test_a_next_link_to_another_origin_is_not_followed(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json(
        {"orders": [order(1)], "links": {"next": "https://attacker.example/steal?page=2"}}
    )
    accept_imports(httpserver)
    run = run_receive_and_send(company, instance, pagination={"style": "next_url", "next_url_path": "links.next"})
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith("Shape 1 (Shop - UK → List orders): The request could not be built: the address")
    assert "https://attacker.example:443" in run.failure_reason and "it was not requested" in run.failure_reason
    # The first page went on before the next was asked for; the send shape is stopped with the run.
    assert sent(httpserver) == [1]
    receive, send = run.shape_runs.all()
    assert (receive.status, send.status) == (ShapeStatus.FAILED, ShapeStatus.STOPPED)


def test_a_link_header_is_followed(company, instance, httpserver):
    base = httpserver.url_for("/api/orders")

    def orders(request: Request) -> Response:
        page = int(request.args.get("page", "1"))
        link = f'<{base}?page={page + 1}>; rel="next", <{base}?page=1>; rel="first"' if page < 2 else f'<{base}?page=1>; rel="first"'
        return json_response([order(page)], headers={"Link": link})

    httpserver.expect_request("/api/orders").respond_with_handler(orders)
    accept_imports(httpserver)
    run = run_receive_and_send(company, instance, pagination={"style": "link_header"})
    assert run.status == RunStatus.SUCCESS
    assert [r.args.get("page") for r in gets(httpserver)] == [None, "2"]
    assert sent(httpserver) == [1, 2]


def test_the_page_cap_stops_with_a_warning(company, instance, httpserver, settings):
    settings.FLOW_MAX_PAGES = 3
    httpserver.expect_request("/api/orders").respond_with_handler(
        lambda request: json_response([order(int(request.args["page"]))])
    )
    accept_imports(httpserver)
    run = run_receive_and_send(company, instance, pagination={"style": "page_number", "page_parameter": "page"})
    assert run.status == RunStatus.SUCCESS
    assert len(gets(httpserver)) == 3 and sent(httpserver) == [1, 2, 3]
    assert run.warnings == [
        "Shape 1 (Shop - UK → List orders): Stopped after 3 pages, the most one run reads from this endpoint; "
        "more pages may be available."
    ]
    # An endpoint's own max_pages wins.
    httpserver.clear_log()
    run = run_receive_and_send(
        company, instance, pagination={"style": "page_number", "page_parameter": "page", "max_pages": 2}
    )
    assert len(gets(httpserver)) == 2 and "Stopped after 2 pages" in run.warnings[0]


def test_a_missing_records_path_fails_the_shape_clearly(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"data": {"items": [order(1)]}})
    run = run_receive_and_send(company, instance, records_path="data.orders")
    assert run.status == RunStatus.FAILED
    assert run.failure_reason == (
        'Shape 1 (Shop - UK → List orders): The response holds no list at the records path "data.orders"; '
        "check the endpoint's records path."
    )


def test_a_repeating_cursor_ends_the_pages_with_a_warning(company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": [order(1)], "next": "abc"})
    accept_imports(httpserver)
    run = run_receive_and_send(company, instance, pagination={"style": "cursor", "cursor_path": "next",
                                                              "cursor_parameter": "cursor"})
    assert run.status == RunStatus.SUCCESS
    assert len(gets(httpserver)) == 2
    assert run.warnings == [
        "Shape 1 (Shop - UK → List orders): The next page cursor repeats the previous one; the pages end here."
    ]


def test_memory_holds_one_page_per_shape_pages_are_sent_before_the_next_is_read(company, instance, httpserver):
    """The order of requests shows the streaming: page 1's items are sent before page 2 is asked for."""
    httpserver.expect_request("/api/orders").respond_with_handler(
        lambda request: json_response([order(int(request.args["page"]))] if request.args["page"] != "3" else [])
    )
    accept_imports(httpserver)
    run = run_receive_and_send(company, instance, pagination={"style": "page_number", "page_parameter": "page"})
    assert run.status == RunStatus.SUCCESS
    order_of_requests = [(r.path, r.args.get("page")) for r, _ in httpserver.log]
    assert order_of_requests == [
        ("/api/orders", "1"), ("/api/imports", None), ("/api/orders", "2"), ("/api/imports", None),
        ("/api/orders", "3"),
    ]
