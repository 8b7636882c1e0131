"""Checkpoints, resumes, idempotency keys and sends in doubt, in one process against a real HTTP server.

A lost worker is played by the reaper taking the run away in the middle of a
request (its lease made to look expired): the worker's next commit finds the
run is not its own any more and stops, as a killed worker would have, and the
run's next attempt resumes from the checkpoint. tests/test_durable_runs.py does
the same with real worker processes and kill -9.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from werkzeug import Request, Response

from flows import execution, queueing
from flows.models import FlowRun, RunStatus, RunTrigger
from tests.flow_helpers import connection, connector, endpoint_of, flow_of, instance, json_response  # noqa: F401 - fixtures

PER_PAGE = 3
TOTAL = 8  # pages of 3, 3, 2, then an empty page


def order(n: int) -> dict:
    return {"id": n, "total": f"{n}.00", "customer": f"customer-{n}@example.com"}


class Shop:
    """The API: pages of orders (a page may be made to fail) and an import endpoint that may honour keys."""

    def __init__(self, httpserver, *, honour_keys: bool = True):
        self.httpserver, self.honour_keys = httpserver, honour_keys
        self.failing_pages: dict[int, int] = {}  # page -> status
        self.stored: list[int] = []
        self.keys: dict[str, object] = {}
        self.posts: list[tuple[str, object]] = []
        self.on_post = None
        httpserver.expect_request("/api/orders").respond_with_handler(self.orders)
        httpserver.expect_request("/api/imports", method="POST").respond_with_handler(self.imports)

    def orders(self, request: Request) -> Response:
        page = int(request.args["page"])
        if page in self.failing_pages:
            return json_response({"message": "cursor expired"}, status=self.failing_pages[page])
        ids = range((page - 1) * PER_PAGE + 1, min(page * PER_PAGE, TOTAL) + 1)
        return json_response({"orders": [order(n) for n in ids]})

    def imports(self, request: Request) -> Response:
        body = json.loads(request.data)
        key = request.headers.get("Idempotency-Key", "")
        self.posts.append((key, body))
        items = body if isinstance(body, list) else [body]
        if self.on_post is not None:
            self.on_post(items)
        if self.honour_keys and key and key in self.keys:
            if self.keys[key] != body:
                return json_response({"message": "Keys for idempotent requests can only be used with the same body"},
                                     status=409)
            return json_response([{"ok": True}] * len(items) if isinstance(body, list) else {"ok": True}, status=201)
        self.keys[key] = body
        self.stored += [item["id"] for item in items]
        return json_response([{"ok": True}] * len(items) if isinstance(body, list) else {"ok": True}, status=201)

    def pages_read(self) -> list[str]:
        return [r.args["page"] for r, _ in self.httpserver.log if r.path == "/api/orders"]


@pytest.fixture
def paginated(instance):
    endpoint_of(instance, "list_orders", pagination={
        "style": "page_number", "page_parameter": "page", "limit_parameter": "per_page", "limit": PER_PAGE,
    })
    return instance


def keyed(instance) -> None:
    endpoint_of(instance, "import_order", idempotency_key_in="header", idempotency_key_name="Idempotency-Key")


def batch_flow(company, instance, send_as: str = "batch"):
    return flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order", send_as=send_as))


def lose_the_worker(run_pk: int) -> None:
    """What a killed worker leaves: the lease runs out and the reaper queues the next attempt.

    Called in the server's thread, on its own database connection (so the test commits its rows).
    """
    try:
        FlowRun.objects.filter(pk=run_pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert queueing.reap_expired_leases() == 1
    finally:
        db_connection.close()


def test_a_retry_from_the_checkpoint_reads_from_the_page_that_failed_and_sends_nothing_twice(
    company, paginated, httpserver
):
    shop = Shop(httpserver)
    shop.failing_pages = {3: 503}
    first = execution.execute(queueing.queue_run(batch_flow(company, paginated), RunTrigger.MANUAL).pk)
    assert first.status == RunStatus.FAILED
    assert (first.checkpoint["page"], first.resumed_from_page) == (2, 3)
    assert shop.stored == [1, 2, 3, 4, 5, 6]

    shop.failing_pages = {}
    retry = queueing.retry_run(first)
    assert (retry.from_checkpoint, retry.resumed_from_page, retry.origin_run_id) == (True, 3, first.pk)
    retry = execution.execute(retry.pk)
    assert retry.status == RunStatus.SUCCESS, retry.failure_reason
    assert shop.pages_read() == ["1", "2", "3", "3", "4"]  # the retry starts at page 3
    assert shop.stored == [1, 2, 3, 4, 5, 6, 7, 8]  # each order once
    receive, send = retry.shape_runs.all()
    assert (receive.pages, receive.items_out, send.items_in) == (2, 2, 2)


def test_a_checkpoint_holds_positions_not_payloads(company, paginated, httpserver):
    Shop(httpserver)
    run = execution.execute(queueing.queue_run(batch_flow(company, paginated), RunTrigger.MANUAL).pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    text = json.dumps(run.checkpoint)
    assert set(run.checkpoint) <= {"segment", "page", "source", "stages", "counts", "sent", "in_flight"}
    assert "customer-" not in text and "total" not in text and "api_token" not in text


def test_each_page_is_one_update_of_the_run_and_one_of_its_shapes(company, paginated, httpserver, settings):
    """Counters, checkpoint and lease go in one commit per page: nothing is written per request."""
    Shop(httpserver)
    flow = batch_flow(company, paginated)
    keyed(paginated)

    def updates(total: int) -> tuple[int, int]:
        global TOTAL
        before, TOTAL = TOTAL, total
        try:
            with CaptureQueriesContext(db_connection) as queries:
                run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
        finally:
            TOTAL = before
        assert run.status == RunStatus.SUCCESS, run.failure_reason
        sql = [q["sql"] for q in queries.captured_queries]
        return (sum(s.startswith('UPDATE "flows_flowrun"') for s in sql),
                sum('UPDATE "flows_flowrunshape"' in s for s in sql))  # one executemany for all rows

    few, many = updates(3 * PER_PAGE), updates(13 * PER_PAGE)  # 3 and 13 pages
    assert (many[0] - few[0], many[1] - few[1]) == (10, 10)


@pytest.mark.django_db(transaction=True)
def test_a_resumed_attempt_sends_the_batch_in_flight_again_with_the_same_key_and_the_api_stores_it_once(
    company, paginated, httpserver, client_for, make_user
):
    shop = Shop(httpserver)
    keyed(paginated)
    run = queueing.queue_run(batch_flow(company, paginated), RunTrigger.MANUAL)

    def lost_after_storing(items):
        if items[0]["id"] == 4 and len(shop.posts) == 2:  # page 2's batch reached the API: the worker dies
            lose_the_worker(run.pk)

    shop.on_post = lost_after_storing
    assert execution.execute(run.pk) is None  # the first attempt writes nothing more
    run.refresh_from_db()
    assert (run.status, run.attempt, run.checkpoint["page"]) == (RunStatus.QUEUED, 2, 1)
    assert run.attempts[0]["from_page"] == 2

    shop.on_post = None
    run = execution.execute(run.pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    keys = [key for key, _ in shop.posts]
    assert keys[1] == keys[2] and len(set(keys)) == 3  # page 2's batch went twice, with one key
    assert all(key.startswith(f"pw-{run.pk}-") for key in keys)
    assert shop.stored == [1, 2, 3, 4, 5, 6, 7, 8]  # stored once
    assert run.attempts[0]["resumed_at"]
    receive, send = run.shape_runs.all()
    assert (receive.pages, receive.items_out, send.items_in, send.items_out) == (4, 8, 8, 8)
    from patchworks_site.models import Role

    page = client_for(make_user(company, Role.READ_ONLY)).get(f"/flows/runs/{run.pk}/").content.decode()
    assert "attempt 2: resumed from page 2 after the worker was lost at " in page


def test_keys_follow_the_records_so_a_retry_repeats_them_and_running_again_from_the_start_does_not(
    company, paginated, httpserver
):
    shop = Shop(httpserver)
    keyed(paginated)
    shop.failing_pages = {3: 500}
    first = execution.execute(queueing.queue_run(batch_flow(company, paginated), RunTrigger.MANUAL).pk)
    first_keys = [key for key, _ in shop.posts]
    shop.failing_pages = {}
    again = execution.execute(queueing.retry_run(first, from_checkpoint=False).pk)
    assert again.status == RunStatus.SUCCESS and not again.from_checkpoint
    again_keys = [key for key, _ in shop.posts][len(first_keys):]
    assert len(again_keys) == 3 and not set(again_keys) & set(first_keys)  # a new delivery: new keys
    assert shop.stored == [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.django_db(transaction=True)
def test_a_send_without_idempotency_that_was_in_flight_is_in_doubt_and_not_sent_again(
    company, paginated, httpserver, client_for, make_user
):
    from patchworks_site.models import Role

    shop = Shop(httpserver, honour_keys=False)
    run = queueing.queue_run(batch_flow(company, paginated, send_as="item"), RunTrigger.MANUAL)

    def lost_during_order_5(items):
        if items[0]["id"] == 5:
            lose_the_worker(run.pk)

    shop.on_post = lost_during_order_5
    assert execution.execute(run.pk) is None
    shop.on_post = None
    run = execution.execute(run.pk)
    assert run.status == RunStatus.PARTIAL_SUCCESS, run.failure_reason
    assert shop.stored == [1, 2, 3, 4, 5, 6, 7, 8]  # order 5 reached the API once; 4 was acknowledged, not resent
    assert [(d["shape"], d["what"], d["ids"]) for d in run.in_doubt] == [
        ("Shape 2 (Shop - UK → Import order)", "Item 5", ["5"])
    ]
    send = run.shape_runs.get(position=1)
    assert any("Item 5: in doubt" in warning for warning in send.warnings)
    page = client_for(make_user(company, Role.READ_ONLY)).get(f"/flows/runs/{run.pk}/").content.decode()
    assert "In doubt" in page and "Item 5: record 5" in page.replace(", record", ": record")


def test_a_page_the_api_no_longer_serves_after_a_resume_fails_with_a_clear_message(company, paginated, httpserver):
    shop = Shop(httpserver)
    shop.failing_pages = {3: 503}
    first = execution.execute(queueing.queue_run(batch_flow(company, paginated), RunTrigger.MANUAL).pk)
    shop.failing_pages = {3: 404}
    retry = execution.execute(queueing.retry_run(first).pk)
    assert retry.status == RunStatus.FAILED
    assert "The run resumed here, at page 3: the API may no longer serve that page" in retry.failure_reason
    assert "Run the flow again from the start." in retry.failure_reason


def test_a_flow_edited_since_refuses_to_resume_and_says_so(company, paginated, httpserver, client_for, make_user):
    from patchworks_site.models import Role

    shop = Shop(httpserver)
    shop.failing_pages = {3: 503}
    flow = batch_flow(company, paginated)
    first = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    shape = flow.shapes.get(position=1)
    shape.config = {**shape.config, "timeout": 20}
    shape.save()
    operator = client_for(make_user(company, Role.MANAGER))
    page = operator.get(f"/flows/runs/{first.pk}/retry/").content.decode()
    assert "The flow was changed after run" in page and "run again from the start" in page
    response = operator.post(f"/flows/runs/{first.pk}/retry/", {"from": "checkpoint"}, follow=True)
    assert "cannot resume" in response.content.decode()
    assert not FlowRun.objects.filter(retry_of=first).exists()
    # A resume of the run itself (a lost worker's next attempt) is refused the same way.
    FlowRun.objects.filter(pk=first.pk).update(status=RunStatus.QUEUED, finished_at=None, attempt=2)
    resumed = execution.execute(first.pk)
    assert resumed.status == RunStatus.FAILED
    assert resumed.failure_reason.startswith("The flow was changed after this run started")
    shop.failing_pages = {}
    response = operator.post(f"/flows/runs/{first.pk}/retry/", {"from": "start"}, follow=True)
    again = FlowRun.objects.get(retry_of=first)
    assert not again.from_checkpoint and f"runs run {first.pk} again from the start" in response.content.decode()


def test_the_retry_page_says_what_each_way_will_do(company, paginated, httpserver, client_for, make_user):
    from patchworks_site.models import Role

    shop = Shop(httpserver)
    keyed(paginated)
    shop.failing_pages = {3: 503}
    first = execution.execute(queueing.queue_run(batch_flow(company, paginated), RunTrigger.MANUAL).pk)
    admin = client_for(make_user(company, Role.ADMINISTRATOR))
    page = admin.get(f"/flows/runs/{first.pk}/retry/").content.decode()
    assert "Resumes from <strong>page 3</strong>" in page and "(6 items already delivered)" in page
    assert "sends repeat run" in page and "the receiving API may store them a second time" in page
    reader = client_for(make_user(company, Role.READ_ONLY))
    assert reader.get(f"/flows/runs/{first.pk}/retry/").status_code == 403
    shop.failing_pages = {}
    response = admin.post(f"/flows/runs/{first.pk}/retry/", {"from": "checkpoint"}, follow=True)
    retry = FlowRun.objects.get(retry_of=first)
    assert f"Run {retry.pk} resumes run {first.pk} from page 3." in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_run_says_what_it_is_doing_now_while_it_sends(company, paginated, httpserver, monkeypatch, client_for,
                                                          make_user):
    from patchworks_site.models import Role

    monkeypatch.setattr(execution, "ACTIVITY_EVERY_SECONDS", 0)
    shop = Shop(httpserver)
    run = queueing.queue_run(batch_flow(company, paginated, send_as="item"), RunTrigger.MANUAL)
    seen = []

    def look(items):
        if items[0]["id"] == 5:  # the second item of page 2 is being sent: what does the run page say?
            try:
                page = client_for(make_user(company, Role.READ_ONLY)).get(f"/flows/runs/{run.pk}/").content.decode()
                seen.append(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page)))
            finally:
                db_connection.close()

    shop.on_post = look
    run = execution.execute(run.pk)
    assert run.status == RunStatus.SUCCESS and run.activity == ""
    assert "Now: Shape 2 (Shop - UK → Import order): sending item 5 of 6 received so far" in seen[0]
