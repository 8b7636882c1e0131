"""What the run page says while a run goes: counters that move item by item, waits said and counted.

The API's handler runs in the server's thread while the run waits for its
answer, so it can read the run page as an operator would at that moment.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from flows import execution, queueing
from flows.models import FlowRun, RunStatus, RunTrigger
from instances.models import ConnectionPool
from instances.outbound import limits
from patchworks_site.models import Role
from tests.flow_helpers import connection, connector, flow_of, instance, json_response  # noqa: F401 - fixtures
from tests.test_run_checkpoints import Shop, batch_flow, paginated  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)


def page_text(client, run_pk: int) -> str:
    html = client.get(f"/flows/runs/{run_pk}/").content.decode()
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", html)))


def test_the_send_shape_counts_each_item_as_it_goes_not_once_the_page_is_done(
    company, paginated, httpserver, monkeypatch, client_for, make_user
):
    monkeypatch.setattr(execution, "ACTIVITY_EVERY_SECONDS", 0)
    shop = Shop(httpserver)
    run = queueing.queue_run(batch_flow(company, paginated, send_as="item"), RunTrigger.MANUAL)
    viewer = client_for(make_user(company, Role.READ_ONLY))
    seen = []

    def look(items):
        if items[0]["id"] == 6:  # the last item of page 2 is being sent
            try:
                seen.append(page_text(viewer, run.pk))
            finally:
                db_connection.close()

    shop.on_post = look
    run = execution.execute(run.pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    # Page 1 (3 orders) is done and items 4 and 5 of page 2 were answered: 5 out, not the 3 of the last page done.
    assert "6 items in · 5 out" in seen[0]
    receive, send = run.shape_runs.all()
    assert (send.items_in, send.items_out, send.requests) == (8, 8, 8)


def test_a_resume_counts_from_the_last_page_done_not_from_the_figures_shown_mid_page(
    company, paginated, httpserver, monkeypatch
):
    """The rows show counters mid-page; a lost worker's next attempt must not count that page twice."""
    monkeypatch.setattr(execution, "ACTIVITY_EVERY_SECONDS", 0)
    shop = Shop(httpserver, honour_keys=True)
    from tests.test_run_checkpoints import keyed, lose_the_worker

    keyed(paginated)
    run = queueing.queue_run(batch_flow(company, paginated, send_as="item"), RunTrigger.MANUAL)
    lost = []

    def look(items):
        if items[0]["id"] == 6 and not lost:
            lost.append(True)
            lose_the_worker(run.pk)

    shop.on_post = look
    assert execution.execute(run.pk) is None or FlowRun.objects.get(pk=run.pk).status == RunStatus.QUEUED
    run = execution.execute(run.pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert run.attempt == 2
    receive, send = run.shape_runs.all()
    assert (receive.items_out, send.items_in, send.items_out) == (8, 8, 8)
    assert sorted(shop.stored) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_run_waiting_for_a_pool_slot_says_so_on_its_page(company, instance, httpserver, monkeypatch, client_for,
                                                             make_user):
    monkeypatch.setattr(execution, "ACTIVITY_EVERY_SECONDS", 0)
    pool = ConnectionPool.objects.create(company=company, name="ERP pair", limit=1, timeout_seconds=60)
    instance.connection_pool = pool
    instance.save()
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    httpserver.expect_request("/api/imports", method="POST").respond_with_json({"ok": True}, status=201)
    run = queueing.queue_run(
        flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order")), RunTrigger.MANUAL
    )
    viewer = client_for(make_user(company, Role.READ_ONLY))
    held, release, seen = threading.Event(), threading.Event(), []

    def hold_the_only_slot() -> None:
        with limits.pool_slot(pool):
            held.set()
            release.wait(60)

    def watch() -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if "waiting for a slot" in FlowRun.objects.get(pk=run.pk).activity:
                    seen.append(page_text(viewer, run.pk))
                    return
                time.sleep(0.05)
        finally:
            release.set()
            db_connection.close()

    holder = threading.Thread(target=hold_the_only_slot)
    holder.start()
    assert held.wait(10)
    watcher = threading.Thread(target=watch)
    watcher.start()
    run = execution.execute(run.pk)
    watcher.join()
    holder.join()
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert 'Now: Shape 1 (Shop - UK → List orders): waiting for a slot of connection pool "ERP pair" (all 1 in use)' in seen[0]
    assert run.shape_runs.get(position=0).pool_wait_ms > 0


def test_the_time_a_run_was_parked_for_the_rate_limit_counts_as_waited(company, instance, httpserver, settings):
    settings.OUTBOUND_RATE_LIMIT_MAX_WAIT = 0.0
    instance.rate_limit_amount, instance.rate_limit_unit = 1, "minute"
    instance.save()
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    httpserver.expect_request("/api/imports", method="POST").respond_with_json({"ok": True}, status=201)
    flow = flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order"))
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert run.status == RunStatus.WAITING, run.failure_reason
    assert run.checkpoint["stages"]["1"]["parked_since"]
    # The minute is over (the park is made to have begun a minute ago).
    instance.rate_limit_amount = 1000
    instance.save()
    checkpoint = run.checkpoint
    checkpoint["stages"]["1"]["parked_since"] = (timezone.now() - timedelta(seconds=60)).isoformat()
    FlowRun.objects.filter(pk=run.pk).update(parked_until=timezone.now(), checkpoint=checkpoint)
    run = execution.execute(run.pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    send = run.shape_runs.get(position=1)
    assert send.rate_limit_wait_ms >= 60_000
    assert (send.items_in, send.items_out, send.requests) == (1, 1, 1)
    assert "parked_since" not in run.checkpoint["stages"].get("1", {})


def test_a_wait_for_the_rate_limit_inside_the_client_is_said_with_the_company_time(
    company, instance, httpserver, monkeypatch, settings
):
    monkeypatch.setattr(execution, "ACTIVITY_EVERY_SECONDS", 0)
    settings.OUTBOUND_RATE_LIMIT_MAX_WAIT = 5.0
    company.time_zone = "Asia/Kolkata"
    company.save()
    instance.rate_limit_amount, instance.rate_limit_unit = 1, "second"
    instance.save()
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}, {"id": 2}])
    said = []

    def imports(request):
        said.append(FlowRun.objects.get(pk=run.pk).activity)
        db_connection.close()
        return json_response({"ok": True}, status=201)

    httpserver.expect_request("/api/imports", method="POST").respond_with_handler(imports)
    run = queueing.queue_run(
        flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order", send_as="item")),
        RunTrigger.MANUAL,
    )
    run = execution.execute(run.pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    # The second item waited for the limit of 1 a second; the run said so until it went.
    assert re.fullmatch(
        r"Shape 2 \(Shop - UK → Import order\): waiting for the rate limit of Shop - UK until "
        r"\d\d:\d\d:\d\d \(Asia/Kolkata\)", said[1]
    ), said
