"""The run page, step by step: each page's records in and out and every request, stored redacted and capped.

The third party is a real HTTP server (tests/test_run_checkpoints.Shop: 8 orders in pages of 3).
"""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from flows import execution, queueing, retention
from flows.models import FlowRun, FlowRunPayload, FlowRunRequest, FlowRunShape, RunStatus, RunTrigger
from patchworks_site.models import Role
from tests.flow_helpers import (  # noqa: F401 - fixtures
    API_TOKEN,
    connection,
    connector,
    flow_of,
    instance,
    json_response,
)
from tests.test_run_checkpoints import Shop, batch_flow, keyed, lose_the_worker, paginated  # noqa: F401 - fixture


def run_of(flow) -> FlowRun:
    return execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)


def text_of(response) -> str:
    return html.unescape(response.content.decode())


def step_url(run: FlowRun, shape_run: FlowRunShape) -> str:
    return f"/flows/runs/{run.pk}/steps/{shape_run.pk}/"


@pytest.fixture
def read_only(client_for, make_user, company):
    return client_for(make_user(company, Role.READ_ONLY))


@pytest.fixture
def shop_run(company, paginated, httpserver) -> FlowRun:
    Shop(httpserver)
    run = run_of(batch_flow(company, paginated))
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    return run


def one_big_page(instance, httpserver, count: int = 120) -> FlowRun:
    httpserver.expect_request("/api/orders").respond_with_json(
        {"orders": [{"id": n, "sku": f"SKU-{n:03d}"} for n in range(1, count + 1)]}
    )
    run = run_of(flow_of(instance.company, connection(instance, "list_orders")))
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    return run


# --- what is kept ------------------------------------------------------------------------------


def test_each_page_of_a_step_keeps_what_came_in_and_went_out_and_every_request(shop_run):
    receive, send = shop_run.shape_runs.all()
    assert [(p.page, p.direction, p.records) for p in receive.payloads.all()] == [
        (1, "out", 3), (2, "out", 3), (3, "out", 2)]
    assert [(p.page, p.direction, p.records) for p in send.payloads.all()] == [
        (1, "in", 3), (1, "out", 3), (2, "in", 3), (2, "out", 3), (3, "in", 2), (3, "out", 2)]
    # Page 4 answered no records: its request is kept, the pages end there.
    assert [(r.page, r.request_method, r.response_status) for r in receive.stored_requests.all()] == [
        (1, "GET", 200), (2, "GET", 200), (3, "GET", 200), (4, "GET", 200)]
    assert [json.loads(line)["id"] for line in receive.payloads.get(page=2).body.splitlines()] == [4, 5, 6]
    assert [(r.page, r.request_method) for r in send.stored_requests.all()] == [(1, "POST"), (2, "POST"), (3, "POST")]
    assert shop_run.payload_bytes == sum(FlowRunPayload.objects.filter(run=shop_run).values_list("size", flat=True)) + \
        sum(FlowRunRequest.objects.filter(run=shop_run).values_list("size", flat=True))


def test_a_read_only_user_sees_each_page_s_records_and_requests(shop_run, read_only):
    receive, send = shop_run.shape_runs.all()
    run_page = text_of(read_only.get(f"/flows/runs/{shop_run.pk}/"))
    assert run_page.count('data-testid="step-details"') == 2
    assert f'href="{step_url(shop_run, send)}"' in run_page
    assert "customer-5@example.com" not in run_page  # the records load on demand

    step = text_of(read_only.get(step_url(shop_run, receive)))
    assert step.count('data-testid="step-page"') == 4
    assert "Went out: 3 records" in step and "Went out: 2 records" in step
    assert re.search(r"<code>GET</code> <span[^>]*>http://[^<]*/api/orders\?[^<]*page=2", step)

    payload = receive.payloads.get(page=2)
    records = text_of(read_only.get(f"/flows/runs/{shop_run.pk}/payloads/{payload.pk}/"))
    assert '"customer": "customer-5@example.com"' in records  # pretty-printed JSON
    assert records.count('class="small border rounded p-2 bg-body-tertiary mb-2 payload-record"') == 3
    assert 'role="search"' in records

    posted = send.stored_requests.get(page=2)
    shown = text_of(read_only.get(f"/flows/runs/{shop_run.pk}/requests/{posted.pk}/"))
    assert 'data-testid="request-pane"' in shown and 'data-testid="response-pane"' in shown
    assert "<code>POST</code>" in shown and '"customer": "customer-4@example.com"' in shown
    assert re.search(r'data-testid="response-code">201<', shown)
    assert "Authorization" in shown and "[redacted]" in shown and API_TOKEN not in shown
    assert "attempt 1" in shown and "ms for the rate limit" in shown and "ms for the connection pool" in shown


def test_htmx_gets_the_step_the_records_and_the_request_as_fragments(shop_run, read_only):
    receive, _ = shop_run.shape_runs.all()
    request = receive.stored_requests.first()
    payload = receive.payloads.first()
    fragments = {
        step_url(shop_run, receive): f"step-{receive.pk}",
        f"/flows/runs/{shop_run.pk}/payloads/{payload.pk}/": f"payload-{payload.pk}",
        f"/flows/runs/{shop_run.pk}/requests/{request.pk}/": f"request-{request.pk}",
    }
    for url, target in fragments.items():
        response = read_only.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET=target)
        assert response.status_code == 200 and "<html" not in response.content.decode(), url


def test_the_records_are_searched_on_the_server_and_shown_fifty_at_a_time(instance, httpserver, read_only):
    run = one_big_page(instance, httpserver)
    payload = FlowRunPayload.objects.get(run=run)
    url = f"/flows/runs/{run.pk}/payloads/{payload.pk}/"
    first = text_of(read_only.get(url))
    assert first.count("payload-record\"") == 50 and "120 records, showing 1–50." in first
    assert '"sku": "SKU-050"' in first and '"sku": "SKU-051"' not in first
    last = text_of(read_only.get(url, {"page": 3}))
    assert last.count("payload-record\"") == 20 and '"sku": "SKU-120"' in last

    found = read_only.get(url, {"q": "sku-11"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET=f"payload-{payload.pk}-results")
    found = text_of(found)
    assert "<html" not in found and 'role="search"' not in found  # the results only: the search box keeps focus
    assert "10 of 120 records contain “sku-11”" in found
    assert re.findall(r'"sku": "(SKU-\d+)"', found) == [f"SKU-{n}" for n in range(110, 120)]
    nothing = text_of(read_only.get(url, {"q": "no such thing"}))
    assert "No record contains “no such thing”." in nothing


# --- limits ----------------------------------------------------------------------------------------


def test_a_body_longer_than_the_cap_is_cut_and_says_where(instance, httpserver, read_only, settings):
    settings.FLOW_PAYLOAD_BODY_MAX_BYTES = 2048
    run = one_big_page(instance, httpserver)
    payload = FlowRunPayload.objects.get(run=run)
    assert payload.truncated and payload.records == 120 and payload.size <= 2048
    kept = [json.loads(line) for line in payload.body.splitlines()]  # cut between records: each still reads
    assert kept[0] == {"id": 1, "sku": "SKU-001"} and 40 < len(kept) < 120
    request = FlowRunRequest.objects.get(run=run)
    assert request.response_truncated and len(request.response_body.encode()) <= 2048
    records = text_of(read_only.get(f"/flows/runs/{run.pk}/payloads/{payload.pk}/"))
    assert "truncated at 2 KB" in records
    shown = text_of(read_only.get(f"/flows/runs/{run.pk}/requests/{request.pk}/"))
    assert "truncated at 2 KB" in shown


def test_past_the_run_s_cap_nothing_more_is_kept_and_the_run_goes_on(company, paginated, httpserver, read_only,
                                                                     settings):
    settings.FLOW_RUN_PAYLOADS_MAX_BYTES = 1500
    shop = Shop(httpserver)
    run = run_of(batch_flow(company, paginated))
    assert run.status == RunStatus.SUCCESS and shop.stored == [1, 2, 3, 4, 5, 6, 7, 8]
    assert run.payloads_capped and 0 < run.payload_bytes <= 1500
    stored = sum(FlowRunPayload.objects.filter(run=run).values_list("size", flat=True)) + sum(
        FlowRunRequest.objects.filter(run=run).values_list("size", flat=True))
    assert stored == run.payload_bytes
    receive, _ = run.shape_runs.all()
    assert receive.pages == 4 and not receive.payloads.filter(page=3).exists()
    page = text_of(read_only.get(f"/flows/runs/{run.pk}/"))
    assert "Payloads were not kept beyond 1.46 KB for this run (FLOW_RUN_PAYLOADS_MAX_BYTES); the run itself went on." in page


@pytest.mark.django_db(transaction=True)  # each page's commit is a transaction of its own, as on a worker
def test_a_page_whose_records_the_database_refuses_is_left_out_and_the_run_goes_on(company, paginated, httpserver,
                                                                                  monkeypatch):
    """The page's commit is refused as a whole, then made again with its records on their own: only they are lost."""
    from django.db import DataError

    from flows import steps

    insert_rows = steps.insert_rows

    def refusing_page_2(rows):
        if rows and rows[0].page == 2:
            raise DataError("invalid byte sequence for encoding")
        insert_rows(rows)

    monkeypatch.setattr(steps, "insert_rows", refusing_page_2)
    shop = Shop(httpserver)
    run = run_of(batch_flow(company, paginated))
    assert run.status == RunStatus.SUCCESS and shop.stored == [1, 2, 3, 4, 5, 6, 7, 8]
    receive, send = run.shape_runs.all()
    assert (receive.items_out, receive.pages, send.items_in, send.items_out) == (8, 4, 8, 8)
    assert sorted(set(FlowRunPayload.objects.filter(run=run).values_list("page", flat=True))) == [1, 3]
    assert sorted(set(FlowRunRequest.objects.filter(run=run).values_list("page", flat=True))) == [1, 3, 4]
    assert run.payload_bytes == sum(FlowRunPayload.objects.filter(run=run).values_list("size", flat=True)) + sum(
        FlowRunRequest.objects.filter(run=run).values_list("size", flat=True))

# --- retention ---------------------------------------------------------------------------------------


def test_retention_deletes_the_payloads_in_batches_and_keeps_the_run(shop_run, read_only, settings):
    settings.FLOW_PAYLOAD_DELETE_BATCH = 3
    assert (FlowRunPayload.objects.count(), FlowRunRequest.objects.count()) == (9, 7)
    old = timezone.now() - timedelta(hours=73)
    FlowRunPayload.objects.update(created_at=old)
    FlowRunRequest.objects.update(created_at=old)
    FlowRunShape.objects.update(started_at=old)
    with CaptureQueriesContext(db_connection) as queries:
        cleaned = retention.clean_up()
    assert (cleaned.payloads, cleaned.requests, cleaned.runs) == (9, 7, 0)
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert sum('"flows_flowrunpayload"' in sql for sql in deletes) == 3  # 3 + 3 + 3
    assert sum('"flows_flowrunrequest"' in sql for sql in deletes) == 3  # 3 + 3 + 1
    assert all(sql.count("%s") <= 3 or sql.count(",") <= 2 for sql in deletes)
    assert not any('"flows_flowrun"' in sql or '"flows_flowrunshape"' in sql for sql in deletes)
    assert not any(q["sql"].startswith('UPDATE "flows_flowrun"') for q in queries.captured_queries)
    assert FlowRun.objects.filter(pk=shop_run.pk).exists() and shop_run.shape_runs.count() == 2
    receive, _ = shop_run.shape_runs.all()
    step = text_of(read_only.get(step_url(shop_run, receive)))
    assert "were deleted after 72 hours, the company's payload retention" in step


def test_a_run_past_the_log_retention_loses_its_payloads_in_batches_first(shop_run, settings):
    settings.FLOW_PAYLOAD_DELETE_BATCH = 4
    later = timezone.now() + timedelta(days=8)
    FlowRunPayload.objects.update(created_at=timezone.now() + timedelta(days=7))  # not yet expired
    FlowRunRequest.objects.update(created_at=timezone.now() + timedelta(days=7))
    with CaptureQueriesContext(db_connection) as queries:
        cleaned = retention.clean_up(later)
    assert (cleaned.runs, cleaned.payloads, cleaned.requests) == (1, 9, 7)
    sql = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert sum('"flows_flowrunpayload"' in s for s in sql) >= 3 and not FlowRunPayload.objects.exists()


# --- who sees what ------------------------------------------------------------------------------------


def test_another_company_gets_404_for_the_run_its_steps_payloads_and_requests(
    shop_run, client_for, make_user, other_company, company
):
    receive, _ = shop_run.shape_runs.all()
    payload, request = receive.payloads.first(), receive.stored_requests.first()
    urls = [f"/flows/runs/{shop_run.pk}/", step_url(shop_run, receive),
            f"/flows/runs/{shop_run.pk}/payloads/{payload.pk}/", f"/flows/runs/{shop_run.pk}/requests/{request.pk}/"]
    stranger = client_for(make_user(other_company, Role.ADMINISTRATOR))
    for url in urls:
        assert stranger.get(url).status_code == 404, url
        assert stranger.get(url, HTTP_HX_REQUEST="true").status_code == 404, url
    # The stranger's own run does not open this company's rows either.
    own_flow = flow_of(other_company, name="Elsewhere")
    own_run = queueing.queue_run(own_flow, RunTrigger.MANUAL)
    for url in (f"/flows/runs/{own_run.pk}/steps/{receive.pk}/", f"/flows/runs/{own_run.pk}/payloads/{payload.pk}/",
                f"/flows/runs/{own_run.pk}/requests/{request.pk}/"):
        assert stranger.get(url).status_code == 404, url


# --- the page stays fast ----------------------------------------------------------------------------------


def seed_pages(run: FlowRun, shape_run: FlowRunShape, pages: int) -> None:
    FlowRunPayload.objects.bulk_create(
        FlowRunPayload(run=run, shape_run=shape_run, page=n, direction="out", records=1, body=json.dumps({"id": n}), size=9)
        for n in range(1, pages + 1))
    FlowRunRequest.objects.bulk_create(
        FlowRunRequest(run=run, shape_run=shape_run, page=n, number=1, request_method="GET",
                       request_url=f"https://api.example.com/orders?page={n}", response_status=200, ok=True)
        for n in range(1, pages + 1))


def test_the_run_page_and_a_step_cost_the_same_queries_for_3_or_100_pages(company, instance, read_only):
    counts = []
    for pages in (3, 100):
        run = queueing.queue_run(flow_of(company, connection(instance, "list_orders"), name=f"{pages} pages"),
                                 RunTrigger.MANUAL)
        shape_run = FlowRunShape.objects.create(run=run, position=0, shape_name="List orders",
                                                started_at=timezone.now(), pages=pages, requests=pages)
        seed_pages(run, shape_run, pages)
        with CaptureQueriesContext(db_connection) as page_queries:
            run_page = read_only.get(f"/flows/runs/{run.pk}/")
        with CaptureQueriesContext(db_connection) as step_queries:
            step = text_of(read_only.get(step_url(run, shape_run)))
        assert run_page.status_code == 200 and step.count('data-testid="step-page"') == min(pages, 20)
        assert '{"id": ' not in run_page.content.decode()  # no payload body on the run page
        counts.append((len(page_queries), len(step_queries)))
    assert counts[0] == counts[1], counts
    assert "Later pages" in step and "Pages 1–20 of 100" in step


@pytest.mark.django_db(transaction=True)
def test_a_page_redone_after_a_lost_worker_is_shown_once(company, paginated, httpserver):
    shop = Shop(httpserver)
    keyed(paginated)
    run = queueing.queue_run(batch_flow(company, paginated), RunTrigger.MANUAL)

    def lost_after_storing(items):
        if items[0]["id"] == 4 and len(shop.posts) == 2:  # page 2's batch reached the API: the worker dies
            lose_the_worker(run.pk)

    shop.on_post = lost_after_storing
    assert execution.execute(run.pk) is None
    assert set(FlowRunPayload.objects.filter(run=run).values_list("page", flat=True)) == {1}
    shop.on_post = None
    run = execution.execute(run.pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert shop.pages_read() == ["1", "2", "2", "3", "4"]  # page 2 was read twice ...
    receive, send = run.shape_runs.all()
    # ... and is kept once, from the attempt that finished it.
    assert list(receive.stored_requests.values_list("page", flat=True)) == [1, 2, 3, 4]
    assert list(send.payloads.values_list("page", "direction")) == [
        (1, "in"), (1, "out"), (2, "in"), (2, "out"), (3, "in"), (3, "out")]
    assert list(send.stored_requests.values_list("page", flat=True)) == [1, 2, 3]


def test_the_run_log_search_finds_a_run_by_a_stored_request_s_url(shop_run, company, read_only, instance):
    other = queueing.queue_run(flow_of(company, connection(instance, "list_orders"), name="Quiet"), RunTrigger.MANUAL)
    found = text_of(read_only.get("/flows/runs/", {"q": "per_page=3"}))
    assert f'href="/flows/runs/{shop_run.pk}/"' in found and f'href="/flows/runs/{other.pk}/"' not in found


def test_a_header_carrying_a_value_the_connector_marks_secret_is_stored_masked(company, make_connector, make_instance,
                                                                              httpserver, read_only):
    pin = "pin-4417-secret"
    shop = make_connector(company, name="Pin API", base_url=httpserver.url_for("/api"), auth_methods=[{
        "key": "pin", "name": "Shop PIN", "type": "token",
        "variables": [{"key": "shop_pin", "label": "Shop PIN", "required": True, "secret": True}],
        "headers": {"X-Shop-Pin": "{{shop_pin}}"}, "test_request": {"path": "/me"},
    }])
    instance = make_instance(shop, "Pin", {"shop_pin": pin})
    httpserver.expect_request("/api/orders").respond_with_json({"orders": [{"id": 1, "echo": f"you sent {pin}"}]})
    run = run_of(flow_of(company, connection(instance, "list_orders")))
    request = FlowRunRequest.objects.get(run=run)
    assert request.request_headers["X-Shop-Pin"] == "[redacted]"
    assert pin not in request.response_body and pin not in FlowRunPayload.objects.get(run=run).body
    shown = text_of(read_only.get(f"/flows/runs/{run.pk}/requests/{request.pk}/"))
    assert "X-Shop-Pin" in shown and pin not in shown
