"""Durable runs with real worker processes (`manage.py run_huey`) killed with kill -9, on both queue engines.

Each test places the kill by holding one request in the third party's API
(tests.durable_helpers.OrdersAPI.hold_when) and kills the worker while it
waits: between a page and its checkpoint, or between a send the API stored and
its answer. Another worker, started after the kill, resumes the run once the
lease runs out (FLOW_RUN_LEASE_SECONDS 3, watched every 0.5 s). The run's rows,
the run and retry pages and what the API stored say what happened.

The last tests run a flow in this process with parks made short (a wait over
half a second parks the run): what a park keeps for the resume.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone
from werkzeug import Request, Response

from flows import durability, execution, queueing, retention
from flows.models import FlowRun, FlowRunAnswer, RunStatus, RunTrigger, Shape
from sandbox.models import SandboxAccount, SandboxReceivedOrder
from tests.durable_helpers import (
    KEY_FIELD,
    KEY_HEADER,
    LEASE_SECONDS,
    ORDERS,
    PER_PAGE,
    OrdersAPI,
    SandboxProxy,
    finished,
    kill,
    make_workers,
    queue,
    wait_for,
)
from tests.flow_helpers import API_TOKEN, connection, endpoint_of, flow_of, json_response, shop_connector
from tests.test_engine_workers import on_committed_rows

pytestmark = on_committed_rows

ALL_ONCE = Counter({n: 1 for n in range(1, 7)})


def this_pass_engine() -> str:
    """The queue engine of this suite pass: Redis when REDIS_URL is set (the CI's second pass), else SQLite."""
    return "redis" if os.environ.get("REDIS_URL") else "sqlite"


@pytest.fixture(params=["sqlite", "redis"])
def workers(request, tmp_path, settings):
    # Each pass of the suite proves these on its own queue engine: the embedded SQLite queue in the
    # first pass, Redis in the second (tests/test_engine_workers.py runs both engines in both).
    if request.param != this_pass_engine():
        pytest.skip(f"durable runs on the {request.param} queue are proved in the pass that uses it")
    pool = make_workers(request.param, tmp_path, settings)
    yield pool
    pool.close()


@pytest.fixture
def api(workers, httpserver):
    """The third party: orders in pages of two and an import endpoint that honours idempotency keys.

    Set up after the workers, so its held requests are let go before the workers are stopped.
    """
    made: list = []

    def make(**options) -> OrdersAPI:
        made.append(OrdersAPI(httpserver, **options))
        return made[-1]

    yield make
    for orders_api in made:
        orders_api.release_all()


@pytest.fixture
def shop(company, make_connector, make_instance, httpserver):
    """The shop's instance: paged orders, and imports whose API takes an Idempotency-Key header."""
    instance = make_instance(shop_connector(make_connector, company, httpserver.url_for("/api")), "Shop - UK",
                             {"api_token": API_TOKEN})
    endpoint_of(instance, "list_orders", records_path="orders", pagination={
        "style": "page_number", "page_parameter": "page", "limit_parameter": "per_page", "limit": PER_PAGE,
    })
    endpoint_of(instance, "import_order", idempotency_key_in="header", idempotency_key_name=KEY_HEADER)
    return instance


def orders_flow(company, instance, name: str = "Orders to ERP", **send):
    return flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order", **send),
                   name=name)


def is_order(number: int):
    """The POST of order `number`, alone or first of a batch."""
    def matches(body) -> bool:
        first = body[0] if isinstance(body, list) and body else body
        return isinstance(first, dict) and first.get("id") == number
    return matches


def lose_worker_at(hold, workers, run: FlowRun) -> None:
    """Kill the worker once `hold` holds its request, then start another (which resumes the run)."""
    victim = workers.processes[-1] if workers.processes else workers.start()
    assert hold.arrived.wait(60), f"the held request never came; worker logs:\n{workers.logs()[-6000:]}"
    assert FlowRun.objects.get(pk=run.pk).status == RunStatus.RUNNING
    kill(victim)
    hold.release.set()


@pytest.mark.parametrize("key_in", ["header", "body"])
def test_a_kill_between_a_page_and_its_checkpoint_resumes_from_that_page_and_stores_each_order_once(
    workers, api, company, shop, key_in
):
    if key_in == "body":
        endpoint_of(shop, "import_order", idempotency_key_in="body", idempotency_key_name=KEY_FIELD)
    orders_api = api(key_in=key_in)
    # Page 2 is being sent: order 3 went (and was stored), order 4 is on its way when the worker dies.
    hold = orders_api.hold_when(is_order(4), stored=False)
    run = queue(orders_flow(company, shop))
    workers.start()
    lose_worker_at(hold, workers, run)
    assert FlowRun.objects.get(pk=run.pk).checkpoint["page"] == 1  # page 2 was never committed
    workers.start()

    run = finished(run, workers)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert run.attempt == 2
    (attempt,) = run.attempts
    assert (attempt["number"], attempt["cause"], attempt["from_page"]) == (2, "worker lost", 2)
    assert attempt["resumed_at"] >= attempt["lost_at"]
    assert orders_api.pages == ["1", "2", "2", "3", "4"]  # page 2 read again, page 1 not
    # Order 3 was sent twice with one key; the API stored it once. Every order is stored exactly once.
    (key, again) = orders_api.keys_of(3)
    assert key == again and key.startswith(f"pw-{run.pk}-")
    assert orders_api.replays == 1
    assert orders_api.stored_ids() == ALL_ONCE
    keys = [key for key, _ in orders_api.posts]
    assert len(set(keys)) == 6
    receive, send = run.shape_runs.order_by("position")
    assert (send.status, send.items_in, send.items_out, send.requests) == ("success", 6, 6, 6)
    assert (receive.status, receive.items_out) == ("success", 6)


@pytest.fixture
def sandbox(live_server, company, sandbox_listing, install, make_instance, httpserver, settings, workers):
    """The Sandbox 1.5.0's Create order (Idempotency-Key header), reached through a proxy that can hold its answers."""
    settings.SANDBOX_BASE_URL = f"{live_server.url}/sandbox/api"
    workers.env["SANDBOX_BASE_URL"] = settings.SANDBOX_BASE_URL
    connector = install(sandbox_listing, company)
    create_order = connector.endpoints.get(key="create_order")
    assert (create_order.idempotency_key_in, create_order.idempotency_key_name) == ("header", KEY_HEADER)
    proxy = SandboxProxy(httpserver, live_server.url)
    secrets = {"api_token": "sandbox-token", "account_key": SandboxAccount.objects.for_company(company.pk).issue_key()}
    instance = make_instance(connector, "Sandbox - London", secrets, auth_method=connector.auth_methods.get(key="token"),
                             values={"base_url": httpserver.url_for("/sandbox/api")})
    yield instance, proxy
    proxy.release_all()


def test_a_kill_between_a_send_and_its_answer_sends_the_batch_again_with_the_same_key_and_the_sandbox_stores_it_once(
    workers, api, sandbox, company, shop
):
    sandbox_instance, proxy = sandbox
    api()
    flow = flow_of(company, connection(shop, "list_orders"), connection(sandbox_instance, "create_order", send_as="batch"))
    # The Sandbox stores page 2's batch; its answer never reaches the worker.
    hold = proxy.hold_when(lambda body: isinstance(body, list) and body[0]["id"] == 3)
    run = queue(flow)
    workers.start()
    lose_worker_at(hold, workers, run)
    assert SandboxReceivedOrder.objects.filter(reference="SO-3").count() == 1
    workers.start()

    run = finished(run, workers)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert run.attempts[0]["from_page"] == 2
    posts = proxy.posts()
    batches = [[order["id"] for order in body] for _, body, _, _ in posts]
    assert batches == [[1, 2], [3, 4], [3, 4], [5, 6]]
    (_, first), (_, second) = [(b, p) for b, p in zip(batches, posts, strict=True) if b == [3, 4]]
    assert first[0] == second[0] and first[0].startswith(f"pw-{run.pk}-")  # the same key
    assert (first[2], first[3], second[2], second[3]) == (201, None, 201, "true")  # the Sandbox replayed it
    assert len({key for key, _, _, _ in posts}) == 3
    references = Counter(SandboxReceivedOrder.objects.values_list("reference", flat=True))
    assert references == Counter({f"SO-{n}": 1 for n in range(1, 7)})
    assert run.shape_runs.get(position=1).items_out == 6


@pytest.mark.parametrize("key_in, send_as, what, ids, named", [
    ("none", "item", "Item 3", ["3"], "record 3"),
    # A batch is a JSON list: it has no field for a body key, so it is sent as to an API without keys.
    ("body", "batch", "Page 2 (2 items)", ["3", "4"], "records 3, 4"),
])
def test_without_idempotency_keys_the_send_in_flight_is_in_doubt_and_not_sent_again(
    workers, api, company, shop, admin_client, key_in, send_as, what, ids, named
):
    endpoint_of(shop, "import_order", idempotency_key_in=key_in, idempotency_key_name=KEY_FIELD if key_in != "none" else "")
    orders_api = api(keys=False)
    hold = orders_api.hold_when(is_order(3), stored=True)  # stored; the answer is lost with the worker
    run = queue(orders_flow(company, shop, send_as=send_as))
    workers.start()
    lose_worker_at(hold, workers, run)
    assert FlowRun.objects.get(pk=run.pk).checkpoint["in_flight"]["ids"] == ids
    workers.start()

    run = finished(run, workers)
    assert run.status == RunStatus.PARTIAL_SUCCESS, run.failure_reason
    assert run.attempts[0]["from_page"] == 2
    (doubt,) = run.in_doubt
    assert (doubt["shape"], doubt["what"], doubt["ids"]) == ("Shape 2 (Shop - UK → Import order)", what, ids)
    assert all(key is None for key, _ in orders_api.posts)
    assert all(KEY_FIELD not in order for order in orders_api.stored)
    assert len([body for _, body in orders_api.posts if is_order(3)(body)]) == 1  # not sent again
    assert orders_api.stored_ids() == ALL_ONCE
    send = run.shape_runs.get(position=1)
    assert any(f"{what}: in doubt" in warning for warning in send.warnings)

    page = admin_client.get(reverse("flows:run", args=[run.pk])).content.decode()
    assert 'data-testid="in-doubt"' in page and "In doubt" in page
    assert f"Shape 2 (Shop - UK → Import order), {what}: {named}" in page


def test_a_lost_worker_s_acknowledged_sends_still_pass_their_answers_on(
    workers, api, company, shop, make_connector, make_instance, httpserver
):
    """Shop (no keys) → ERP: the worker is lost while order 4's answer is on its way. Order 3, acknowledged
    before it on that page, is not sent again, and its answer still reaches the ERP; order 4 is in doubt."""
    endpoint_of(shop, "import_order", idempotency_key_in="none", idempotency_key_name="")
    orders_api = api(keys=False)
    erp = make_instance(make_connector(company, name="ERP API", base_url=httpserver.url_for("/erp"),
                                       rate_limit={"amount": 1000, "unit": "second"}, endpoints=[
        {"key": "import_answer", "name": "Import answer", "entity": "Order", "direction": "send", "method": "POST",
         "path": "/answers"}]), "ERP", {"api_token": f"{API_TOKEN}-erp"})
    erp_received: list = []

    def answers(request: Request) -> Response:
        erp_received.append(json.loads(request.data))
        return json_response({"ok": True}, status=201)

    httpserver.expect_request("/erp/answers", method="POST").respond_with_handler(answers)
    hold = orders_api.hold_when(is_order(4), stored=True)
    run = queue(flow_of(company, connection(shop, "list_orders"), connection(shop, "import_order"),
                        connection(erp, "import_answer")))
    workers.start()
    lose_worker_at(hold, workers, run)
    assert FlowRunAnswer.objects.filter(run=run, page=2).count() == 1  # order 3's, kept with its acknowledgement
    workers.start()

    run = finished(run, workers)
    assert run.status == RunStatus.PARTIAL_SUCCESS, run.failure_reason
    assert [doubt["ids"] for doubt in run.in_doubt] == [["4"]]
    assert orders_api.stored_ids() == ALL_ONCE
    assert erp_received == [{"stored": [n]} for n in (1, 2, 3, 5, 6)]
    assert run.shape_runs.get(position=2).items_in == 5
    assert not FlowRunAnswer.objects.filter(run=run).exists()


def test_a_repeated_key_with_another_body_is_refused_and_the_shape_says_why(workers, api, company, shop):
    orders_api = api()
    hold = orders_api.hold_when(is_order(3), stored=True)
    run = queue(orders_flow(company, shop))
    workers.start()
    lose_worker_at(hold, workers, run)
    orders_api.orders[2]["total"] = "99.00"  # order 3 changed before the run resumed
    workers.start()

    run = finished(run, workers)
    assert run.status == RunStatus.PARTIAL_SUCCESS, run.failure_reason
    (first, second) = orders_api.keys_of(3)
    assert first == second
    send = run.shape_runs.get(position=1)
    (error,) = send.errors
    assert error.startswith("Item 3: The API answered 409")
    assert "The API refused this send's idempotency key: it was first used with another body" in error
    assert "Run the flow again from the start" in error
    assert (send.items_in, send.items_out) == (6, 5)
    assert orders_api.stored_ids() == ALL_ONCE
    assert [o["total"] for o in orders_api.stored if o["id"] == 3] == ["30.00"]  # the first body stays


def test_a_run_whose_flow_was_edited_before_it_resumed_fails_clearly_and_can_only_run_again_from_the_start(
    workers, api, company, shop, admin_client
):
    orders_api = api()
    hold = orders_api.hold_when(is_order(4), stored=False)
    flow = orders_flow(company, shop)
    run = queue(flow)
    workers.start()
    lose_worker_at(hold, workers, run)
    Shape.objects.filter(flow=flow, position=1).update(config={"timeout": 20})  # edited while no worker had it
    workers.start()

    run = finished(run, workers)
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith(
        "The flow was changed after this run started (shapes were edited, added, removed or moved), so it cannot "
        "resume from page 2")
    assert orders_api.pages == ["1", "2"]  # the resume read nothing

    url = reverse("flows:retry_run", args=[run.pk])
    page = admin_client.get(url).content.decode()
    assert f"The flow was changed after run {run.pk}" in page
    assert 'value="checkpoint"' not in page and 'value="start"' in page
    refused = admin_client.post(url, {"from": "checkpoint"}, follow=True)
    assert f"The flow was changed after run {run.pk}" in refused.content.decode()
    assert not FlowRun.objects.filter(retry_of=run).exists()

    admin_client.post(url, {"from": "start"})
    again = FlowRun.objects.get(retry_of=run)
    assert not again.from_checkpoint and again.checkpoint == {}
    again = finished(again, workers)
    assert again.status == RunStatus.SUCCESS, again.failure_reason
    assert orders_api.pages[2:] == ["1", "2", "3", "4"]
    # A new delivery: new keys, so orders 1-3 (stored by the first run) are stored again.
    assert orders_api.keys_of(1)[0] != orders_api.keys_of(1)[1]
    assert orders_api.stored_ids() == Counter({1: 2, 2: 2, 3: 2, 4: 1, 5: 1, 6: 1})


def test_a_run_fails_once_every_attempt_lost_its_worker(workers, api, company, shop):
    workers.env["FLOW_RUN_MAX_ATTEMPTS"] = "2"
    orders_api = api()
    hold = orders_api.hold_when(is_order(4), stored=False)
    run = queue(orders_flow(company, shop))
    workers.start()
    lose_worker_at(hold, workers, run)
    hold = orders_api.hold_when(is_order(4), stored=False)
    workers.start()  # resumes it as attempt 2, and is lost at the same place
    lose_worker_at(hold, workers, run)
    workers.start()

    run = finished(run, workers)
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith("Worker lost on each of 2 attempts (FLOW_RUN_MAX_ATTEMPTS)")
    assert run.failure_reason.endswith("Retry resumes it from page 2.")
    assert run.attempt == 2 and [a["from_page"] for a in run.attempts] == [2]
    assert [s.status for s in run.shape_runs.order_by("position")] == ["failed", "failed"]
    assert orders_api.pages == ["1", "2", "2"]


def test_retry_from_the_checkpoint_repeats_the_keys_and_run_again_from_the_start_sends_anew(
    workers, api, company, shop, admin_client
):
    workers.env["FLOW_RUN_MAX_ATTEMPTS"] = "1"  # a lost worker fails the run: the operator retries it
    orders_api = api()
    flow = orders_flow(company, shop)
    hold = orders_api.hold_when(is_order(3), stored=True)
    failed = queue(flow)
    workers.start()
    lose_worker_at(hold, workers, failed)
    workers.start()
    failed = finished(failed, workers)
    assert failed.status == RunStatus.FAILED and failed.failure_reason.startswith("Worker lost on each of 1 attempt ")

    url = reverse("flows:retry_run", args=[failed.pk])
    page = admin_client.get(url).content.decode()
    assert "Resumes from <strong>page 2</strong>: the pages before it are not read or sent again (2 items already delivered)" in page
    assert "sends repeat run" in page and "idempotency keys" in page
    assert "retry from page 2" in page
    assert "Reads every page again and sends every record again as a <strong>new delivery</strong>" in page
    assert f"Run {failed.pk} already delivered 2 items: the receiving API may store them a second time." in page

    admin_client.post(url, {"from": "checkpoint"})
    resumed = FlowRun.objects.get(retry_of=failed)
    assert (resumed.from_checkpoint, resumed.origin_run_id, resumed.resumed_from_page) == (True, failed.pk, 2)
    resumed = finished(resumed, workers)
    assert resumed.status == RunStatus.SUCCESS, resumed.failure_reason
    assert orders_api.pages == ["1", "2", "2", "3", "4"]
    first, again = orders_api.keys_of(3)
    assert first == again and first.startswith(f"pw-{failed.pk}-")  # the failed run's key, replayed by the API
    assert orders_api.stored_ids() == ALL_ONCE

    # Another run is lost the same way; this time the operator runs it again from the start.
    hold = orders_api.hold_when(is_order(3), stored=True)
    lost = queue(flow)
    lose_worker_at(hold, workers, lost)
    workers.start()
    lost = finished(lost, workers)
    assert lost.status == RunStatus.FAILED
    pages_before = len(orders_api.pages)
    admin_client.post(reverse("flows:retry_run", args=[lost.pk]), {"from": "start"})
    restarted = FlowRun.objects.get(retry_of=lost)
    assert not restarted.from_checkpoint
    restarted = finished(restarted, workers)
    assert restarted.status == RunStatus.SUCCESS, restarted.failure_reason
    assert orders_api.pages[pages_before:] == ["1", "2", "3", "4"]
    assert orders_api.keys_of(1)[-1].startswith(f"pw-{restarted.pk}-")  # new keys: a new delivery
    assert orders_api.stored_ids() == Counter({1: 3, 2: 3, 3: 3, 4: 2, 5: 2, 6: 2})


def test_a_run_parks_on_a_per_minute_rate_limit_gives_its_worker_back_and_resumes_within_the_limit(
    workers, company, make_connector, make_instance, httpserver, admin_client
):
    """Four sends to instances allowing three a minute: the fourth parks the run for about a minute.

    A real minute, so it runs once per CI: on the Redis pass (the queue several hosts share); the
    SQLite pass proves parks in one process (tests/test_flow_runtime.py, test_run_checkpoints.py).

    One worker with one thread runs three flows: to the US (parks, then
    resumes), to Canada (parks, and is stopped meanwhile) and at home (no
    limit: it completes while the other two wait).
    """
    if workers.engine != "redis":
        pytest.skip("the minute-long park with real workers is proved on the Redis pass")
    company.time_zone = "America/New_York"
    company.save()
    workers.env["OUTBOUND_RATE_LIMIT_MAX_WAIT"] = "1"
    connector = shop_connector(make_connector, company, httpserver.url_for("/api"))
    tokens = {name: f"{API_TOKEN}-{name[-2:].lower()}" for name in ("Shop - UK", "Shop - US", "Shop - CA")}
    shops = {name: make_instance(connector, name, {"api_token": token}) for name, token in tokens.items()}
    for name in ("Shop - US", "Shop - CA"):
        shops[name].rate_limit_amount, shops[name].rate_limit_unit = 3, "minute"
        shops[name].save()
    named = {f"Bearer {token}": name for name, token in tokens.items()}
    sends: dict[str, list[float]] = {name: [] for name in tokens}

    def imports(request: Request) -> Response:
        sends[named[request.headers["Authorization"]]].append(time.monotonic())
        return json_response({"ok": True}, status=201)

    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS[:4]})
    httpserver.expect_request("/api/imports", method="POST").respond_with_handler(imports)

    def to(name: str):
        return flow_of(company, connection(shops["Shop - UK"], "list_orders"), connection(shops[name], "import_order"),
                       name=f"To {name}")

    parked = queue(to("Shop - US"))
    workers.start(threads=1)
    parked = wait_for(lambda: FlowRun.objects.filter(pk=parked.pk, status=RunStatus.WAITING).first(),
                      lambda: f"the run to park; worker logs:\n{workers.logs()[-6000:]}")
    assert parked.parked_until > timezone.now() + timedelta(seconds=30)
    assert (parked.park_reason, parked.lease_owner, len(sends["Shop - US"])) == ("the rate limit of Shop - US", "", 3)
    page = re.sub(r"<[^>]+>", "", admin_client.get(reverse("flows:run", args=[parked.pk])).content.decode())
    local = parked.parked_until.astimezone(ZoneInfo("America/New_York"))
    assert (f"Waiting for the rate limit of Shop - US until {local:%H:%M:%S} (America/New_York, company time). "
            "The run gave its worker back and resumes from page 1 then") in page

    stopping = queue(to("Shop - CA"))
    stopping = wait_for(lambda: FlowRun.objects.filter(pk=stopping.pk, status=RunStatus.WAITING).first(),
                        lambda: f"the second run to park; worker logs:\n{workers.logs()[-6000:]}")
    # The worker's one thread is free: a run without a limit completes while both wait.
    free = finished(queue(to("Shop - UK")), workers)
    assert free.status == RunStatus.SUCCESS, free.failure_reason
    assert FlowRun.objects.get(pk=parked.pk).status == RunStatus.WAITING

    # Stop during a park: stopped at once, and nothing more is sent for it.
    answer = admin_client.post(reverse("flows:stop_run", args=[stopping.pk]), follow=True)
    assert f"Run {stopping.pk} was stopped while it waited." in answer.content.decode()
    its_park = stopping.parked_until
    stopping.refresh_from_db()
    assert (stopping.status, stopping.failure_reason, stopping.parked_until) == (
        RunStatus.STOPPED, "Stopped by a user.", None)

    parked = finished(parked, workers, timeout=150)
    assert parked.status == RunStatus.SUCCESS, parked.failure_reason
    assert (parked.parks, parked.parked_until) == (1, None)
    us = sends["Shop - US"]
    # Never more than three within a minute (as the API sees them: up to 2 s for a request's way to it).
    assert len(us) == 4 and us[3] - us[0] >= 58
    assert parked.shape_runs.get(position=1).items_out == 4
    wait_for(lambda: timezone.now() > its_park + timedelta(seconds=LEASE_SECONDS), "the stopped run's park to end")
    stopping.refresh_from_db()
    assert stopping.status == RunStatus.STOPPED and len(sends["Shop - CA"]) == 3
    assert stopping.shape_runs.get(position=1).status == "stopped"



# --- parks in one process (the park made short) ------------------------------------------------------------------


@pytest.fixture
def short_parks(settings, monkeypatch):
    """A wait over half a second parks the run (a worker sleeps at most 0.2 s for a rate limit)."""
    settings.OUTBOUND_RATE_LIMIT_MAX_WAIT = 0.2
    monkeypatch.setattr(durability, "PARK_AFTER_SECONDS", 0.5)


def resume_when_due(run: FlowRun) -> FlowRun:
    """What huey does at the end of a park: run the task again once `parked_until` has passed."""
    wait_for(lambda: timezone.now() > run.parked_until, "the park to end", timeout=30)
    return execution.execute(run.pk)


@pytest.mark.django_db
def test_a_retry_that_parked_counts_against_the_shape_s_retries_when_it_resumes(
    company, make_connector, make_instance, httpserver, short_parks
):
    """The API answers order 3 with 503 and Retry-After 1 every time; the shape may retry once.

    The retry's pause parks the run; when it resumes, the retry it makes is the
    one allowed, and order 3 is refused: it is not retried (and parked) anew.
    """
    shop = make_instance(shop_connector(make_connector, company, httpserver.url_for("/api")), "Shop - UK",
                         {"api_token": API_TOKEN})
    sent: list[int] = []

    def imports(request: Request) -> Response:
        order = json.loads(request.data)["id"]
        sent.append(order)
        if order == 3:
            return json_response({"message": "try later"}, status=503, headers={"Retry-After": "1"})
        return json_response({"ok": True}, status=201)

    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS[:4]})
    httpserver.expect_request("/api/imports", method="POST").respond_with_handler(imports)
    flow = flow_of(company, connection(shop, "list_orders"), connection(shop, "import_order", retries=1))
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert (run.status, sent) == (RunStatus.WAITING, [1, 2, 3])
    assert run.park_reason.startswith("Shop - UK's API to be ready again")

    run = resume_when_due(run)
    assert run.status == RunStatus.PARTIAL_SUCCESS, (run.status, run.park_reason)
    assert sent == [1, 2, 3, 3, 4]
    send = run.shape_runs.get(position=1)
    assert send.items_out == 3 and send.errors[0].startswith("Item 3: The API answered 503")


@pytest.mark.django_db
def test_an_api_that_keeps_answering_429_does_not_keep_a_run_waiting_for_ever(
    company, make_connector, make_instance, httpserver, short_parks, settings
):
    """The client's 429 retries start again at each resume; FLOW_RUN_MAX_PARKS bounds the waits."""
    settings.FLOW_RUN_MAX_PARKS = 3
    shop = make_instance(shop_connector(make_connector, company, httpserver.url_for("/api")), "Shop - UK",
                         {"api_token": API_TOKEN})
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS[:1]})
    httpserver.expect_request("/api/imports", method="POST").respond_with_response(
        json_response({"message": "slow down"}, status=429, headers={"Retry-After": "1"}))
    flow = flow_of(company, connection(shop, "list_orders"), connection(shop, "import_order"))
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    for _ in range(6):
        if run.status != RunStatus.WAITING:
            break
        run = resume_when_due(run)
    assert (run.status, run.parks) == (RunStatus.FAILED, 3)
    assert run.failure_reason.startswith("The run waited 3 times (FLOW_RUN_MAX_PARKS) and would have to wait again")


def shop_to_erp(company, make_connector, make_instance, httpserver, *, refusals: int, key_in: str = "none",
                send_as: str = "item"):
    """Shop → import each order in the shop (which answers order 3 with 429 `refusals` times) → send each answer
    to the ERP. Returns the flow and what each side stored ("shop": orders, "erp": the shop's answers)."""
    connector = shop_connector(make_connector, company, httpserver.url_for("/api"))
    shop = make_instance(connector, "Shop - UK", {"api_token": f"{API_TOKEN}-shop"})
    erp = make_instance(connector, "ERP", {"api_token": f"{API_TOKEN}-erp"})
    endpoint_of(shop, "import_order", idempotency_key_in=key_in, idempotency_key_name=KEY_HEADER if key_in != "none" else "")
    received: dict[str, list] = {"shop": [], "erp": []}
    refused: list[int] = []

    def imports(request: Request) -> Response:
        who = "erp" if request.headers["Authorization"].endswith("-erp") else "shop"
        body = json.loads(request.data)
        items = body if isinstance(body, list) else [body]
        if who == "shop" and any(item["id"] == 3 for item in items) and len(refused) < refusals:
            refused.append(3)
            return json_response({"message": "slow down"}, status=429, headers={"Retry-After": "1"})
        received[who] += items
        if who == "erp":
            return json_response({"ok": True}, status=201)
        answers = [{"imported": item["id"], "receipt": f"rcpt-{item['id']}"} for item in items]
        return json_response(answers if isinstance(body, list) else answers[0], status=201)

    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS[:4]})
    httpserver.expect_request("/api/imports", method="POST").respond_with_handler(imports)
    flow = flow_of(company, connection(shop, "list_orders"), connection(shop, "import_order", send_as=send_as),
                   connection(erp, "import_order"))
    return flow, received


ANSWERS = [{"imported": n, "receipt": f"rcpt-{n}"} for n in (1, 2, 3, 4)]


@pytest.mark.django_db
@pytest.mark.parametrize("key_in, send_as, kept", [
    ("none", "item", 2),  # each send acknowledged in its own commit, its answer with it
    ("header", "item", 2),  # acknowledgements (and answers) written when the run parks
    ("header", "batch", 1),  # two batches of two: the second is told to wait
])
def test_the_answers_of_sends_made_before_a_park_still_reach_the_shapes_after_them(
    company, make_connector, make_instance, httpserver, short_parks, settings, key_in, send_as, kept
):
    settings.FLOW_MAX_BATCH_RECORDS = 2
    flow, received = shop_to_erp(company, make_connector, make_instance, httpserver, refusals=1, key_in=key_in,
                                 send_as=send_as)
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert run.status == RunStatus.WAITING and [o["id"] for o in received["shop"]] == [1, 2]
    assert received["erp"] == []  # the shop's answers go on once its page is done
    rows = list(FlowRunAnswer.objects.filter(run=run))
    assert len(rows) == kept
    assert not any("rcpt-" in row.body or "imported" in row.body for row in rows)  # sealed
    # Payload retention leaves a waiting run's answers alone: it needs them to go on.
    retention.clean_up(now=timezone.now() + timedelta(hours=company.payload_retention_hours + 1))
    assert FlowRunAnswer.objects.filter(run=run).count() == kept

    run = resume_when_due(run)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert [o["id"] for o in received["shop"]] == [1, 2, 3, 4]  # none sent twice
    assert received["erp"] == ANSWERS
    shop_send, erp_send = run.shape_runs.get(position=1), run.shape_runs.get(position=2)
    assert (shop_send.items_in, shop_send.items_out, erp_send.items_in, erp_send.items_out) == (4, 4, 4, 4)
    assert not FlowRunAnswer.objects.filter(run=run).exists()  # the page is done: nothing kept


def retried_to_the_end(failed: FlowRun, settings) -> FlowRun:
    """Retry `failed` from its checkpoint in this process, waiting out its parks; the retry, succeeded."""
    settings.FLOW_RUN_MAX_PARKS = 3  # the retry waits out the pause the 429 set
    retry = execution.execute(queueing.retry_run(failed).pk)
    while retry.status == RunStatus.WAITING:
        retry = resume_when_due(retry)
    assert retry.status == RunStatus.SUCCESS, (retry.failure_reason, retry.warnings)
    return retry


@pytest.mark.django_db
def test_a_retry_from_the_checkpoint_takes_over_the_answers_of_the_sends_before_it(
    company, make_connector, make_instance, httpserver, short_parks, settings
):
    """The run fails waiting at order 3 (no park left); its retry from the checkpoint sends 3 and 4 only,
    and the ERP gets all four answers (none of them in doubt: the send told to wait was not made)."""
    settings.FLOW_RUN_MAX_PARKS = 0
    flow, received = shop_to_erp(company, make_connector, make_instance, httpserver, refusals=1)
    failed = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert failed.status == RunStatus.FAILED and "FLOW_RUN_MAX_PARKS" in failed.failure_reason
    assert FlowRunAnswer.objects.filter(run=failed).count() == 2

    retry = retried_to_the_end(failed, settings)
    assert [o["id"] for o in received["shop"]] == [1, 2, 3, 4]
    assert received["erp"] == ANSWERS
    assert not FlowRunAnswer.objects.filter(run__in=[failed, retry]).exists()


@pytest.mark.django_db
def test_payload_retention_clears_the_answers_a_failed_run_kept(
    company, make_connector, make_instance, httpserver, short_parks, settings
):
    settings.FLOW_RUN_MAX_PARKS = 0
    flow, received = shop_to_erp(company, make_connector, make_instance, httpserver, refusals=1)
    failed = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert FlowRunAnswer.objects.filter(run=failed).count() == 2
    retention.clean_up(now=timezone.now() + timedelta(hours=company.payload_retention_hours - 1))
    assert FlowRunAnswer.objects.filter(run=failed).count() == 2  # not old enough yet

    cleaned = retention.clean_up(now=timezone.now() + timedelta(hours=company.payload_retention_hours + 1))
    assert not FlowRunAnswer.objects.filter(run=failed).exists() and cleaned.payloads >= 2
    # Retried from the checkpoint after that, the run still sends only what it had not sent; the answers it
    # no longer has are not passed on.
    retried_to_the_end(failed, settings)
    assert [o["id"] for o in received["shop"]] == [1, 2, 3, 4]
    assert received["erp"] == ANSWERS[2:]
