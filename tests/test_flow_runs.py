"""Flow execution: connection shapes in order through the instance client, against a real HTTP server."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from werkzeug import Request, Response

from flows import execution, queueing
from flows.models import FlowRun, FlowRunShape, RunStatus, RunTrigger, ShapeStatus
from patchworks_site.models import Role
from tests.flow_helpers import API_TOKEN, receive_then_send_flow, shop_connector

ORDERS = [{"id": 1, "total": "9.99"}, {"id": 2, "total": "20.00"}, {"id": 3, "total": "5.00"}]


@pytest.fixture
def instance(company, make_connector, make_instance, httpserver):
    return make_instance(shop_connector(make_connector, company, httpserver.url_for("/api")), "Shop - UK", {"api_token": API_TOKEN})


@pytest.fixture
def flow(company, instance):
    return receive_then_send_flow(company, instance)


def sent_items(httpserver) -> list:
    return [json.loads(request.data) for request, _ in httpserver.log if request.path == "/api/imports"]


def test_a_run_receives_the_records_and_sends_each_one_as_json(flow, httpserver, admin_user):
    httpserver.expect_request("/api/orders", method="GET").respond_with_json({"meta": {"count": 3}, "orders": ORDERS})
    httpserver.expect_request("/api/imports", method="POST").respond_with_json({"accepted": True}, status=201)

    run = queueing.queue_run(flow, RunTrigger.MANUAL, user=admin_user)
    assert run.status == RunStatus.QUEUED and run.reference_time == run.queued_at
    run = execution.execute(run.pk)

    assert run.status == RunStatus.SUCCESS and run.failure_reason == ""
    assert run.started_at <= run.finished_at and run.lease_expires_at is None
    assert sent_items(httpserver) == ORDERS
    assert all(request.headers["Authorization"] == f"Bearer {API_TOKEN}" for request, _ in httpserver.log)
    receive, send = run.shape_runs.all()
    assert (receive.shape_name, receive.status, receive.items_in, receive.items_out, receive.pages, receive.requests) == (
        "Shop - UK → List orders", ShapeStatus.SUCCESS, 0, 3, 1, 1,
    )
    assert (send.shape_name, send.status, send.items_in, send.items_out, send.requests) == (
        "Shop - UK → Import order", ShapeStatus.SUCCESS, 3, 3, 3,
    )
    assert send.errors == [] and send.failed_exchanges == []


def test_a_top_level_list_is_the_payload(flow, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json(ORDERS[:2])
    httpserver.expect_request("/api/imports").respond_with_json({})
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert run.status == RunStatus.SUCCESS
    assert sent_items(httpserver) == ORDERS[:2]


def test_a_refused_receive_fails_the_run_naming_the_shape_and_keeps_the_redacted_exchange(flow, httpserver):
    # The API echoes the token back: it must not be stored.
    httpserver.expect_request("/api/orders").respond_with_json(
        {"message": f"token {API_TOKEN} is not allowed here"}, status=403
    )
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)

    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith("Shape 1 (Shop - UK → List orders): The API answered 403 Forbidden.")
    assert API_TOKEN not in run.failure_reason
    (receive,) = run.shape_runs.all()  # the send shape never started
    assert receive.status == ShapeStatus.FAILED
    (exchange,) = receive.failed_exchanges
    assert exchange["response_status"] == 403 and exchange["request_url"].endswith("/api/orders")
    stored = json.dumps([receive.failed_exchanges, receive.errors, run.failure_reason])
    assert API_TOKEN not in stored and "[redacted]" in stored
    assert sent_items(httpserver) == []


def test_items_the_api_refuses_make_a_partial_success(flow, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})

    def import_order(request: Request) -> Response:
        item = json.loads(request.data)
        if item["id"] == 2:
            return Response(json.dumps({"message": "total is invalid"}), status=409, content_type="application/json")
        return Response(json.dumps({"imported": item["id"]}), status=201, content_type="application/json")

    httpserver.expect_request("/api/imports", method="POST").respond_with_handler(import_order)
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)

    assert run.status == RunStatus.PARTIAL_SUCCESS
    send = run.shape_runs.get(position=1)
    assert (send.status, send.items_in, send.items_out, send.requests) == (ShapeStatus.PARTIAL_SUCCESS, 3, 2, 3)
    assert send.errors == ['Item 2: The API answered 409 Conflict. The API said: "total is invalid".']
    assert [e["request_body"] for e in send.failed_exchanges] == [json.dumps(ORDERS[1])]


def test_when_every_item_is_refused_the_run_fails(flow, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    httpserver.expect_request("/api/imports").respond_with_json({"message": "down"}, status=503)
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith("Shape 2 (Shop - UK → Import order): none of the 3 item(s) was accepted.")


def test_nothing_to_send_is_a_warning(flow, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": []})
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert run.status == RunStatus.SUCCESS
    assert run.warnings == ["Shape 2 (Shop - UK → Import order): Nothing to send: no items came from the previous shape."]
    assert sent_items(httpserver) == []


def test_a_shape_whose_endpoint_was_removed_fails_the_run_before_any_request(flow, httpserver):
    shape = flow.shapes.get(position=1)
    shape.endpoint, shape.missing_endpoint = None, "Import order (POST /imports)"
    shape.save()
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert run.status == RunStatus.FAILED
    assert run.failure_reason == (
        "Shape 2 (Shop - UK → missing endpoint Import order (POST /imports)): its endpoint was removed by a "
        "connector update. Choose another endpoint for this shape."
    )
    assert httpserver.log == [] and not run.shape_runs.exists()


def test_a_flow_without_shapes_fails_at_once(company, httpserver):
    from flows.models import ProcessFlow

    run = execution.execute(queueing.queue_run(ProcessFlow.objects.create(company=company, name="Empty"), RunTrigger.MANUAL).pk)
    assert (run.status, run.failure_reason) == (RunStatus.FAILED, "The flow has no connection shapes.")


@pytest.mark.django_db(transaction=True)
def test_a_stop_request_stops_the_run_before_its_next_request(flow, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    run = queueing.queue_run(flow, RunTrigger.MANUAL)

    def import_order(request: Request) -> Response:
        queueing.request_stop(run)  # a user presses stop while the first item is in flight
        connection.close()  # this server thread's own connection
        return Response("{}", status=201, content_type="application/json")

    httpserver.expect_request("/api/imports").respond_with_handler(import_order)
    run = execution.execute(run.pk)
    assert (run.status, run.failure_reason) == (RunStatus.STOPPED, "Stopped by a user.")
    assert len(sent_items(httpserver)) == 1
    assert run.shape_runs.get(position=1).status == ShapeStatus.STOPPED


def test_stopping_a_queued_run_means_it_never_starts(flow, httpserver):
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    assert queueing.request_stop(run) == "stopped"
    assert execution.execute(run.pk) is None
    run.refresh_from_db()
    assert run.status == RunStatus.STOPPED and run.started_at is None and httpserver.log == []
    assert queueing.request_stop(run) is None


def test_a_run_is_claimed_once(flow):
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    assert execution.claim(run.pk, "worker-a") is True
    assert execution.claim(run.pk, "worker-b") is False
    run.refresh_from_db()
    assert (run.status, run.lease_owner) == (RunStatus.RUNNING, "worker-a")


def test_a_run_whose_lease_expired_is_queued_again_as_its_next_attempt(flow):
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    execution.claim(run.pk, "worker-a")
    now = timezone.now()
    assert queueing.reap_expired_leases(now) == 0  # the lease is still valid
    assert queueing.reap_expired_leases(now + execution.lease_duration() + timedelta(seconds=1)) == 1
    run.refresh_from_db()
    assert (run.status, run.attempt, run.lease_owner, run.failure_reason) == (RunStatus.QUEUED, 2, "", "")
    assert run.attempts[0]["number"] == 2 and run.attempts[0]["cause"] == "worker lost"
    # The worker that lost its lease writes nothing more.
    assert execution.renew_lease(run.pk, "worker-a") is False


def test_a_run_keeps_the_host_and_process_that_ran_it_and_staff_see_which_worker_was_lost(
    flow, httpserver, settings, company, make_user, client_for
):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    httpserver.expect_request("/api/imports", method="POST").respond_with_json({}, status=201)
    settings.HOST_NAME = "host-a"
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    assert execution.claim(run.pk, execution.worker_name())
    assert queueing.reap_expired_leases(timezone.now() + execution.lease_duration() + timedelta(seconds=1)) == 1
    settings.HOST_NAME = "host-b"  # another host's worker resumes it

    run = execution.execute(run.pk)
    assert run.status == RunStatus.SUCCESS
    assert run.worker == f"host-b:{os.getpid()}" and run.lease_owner.startswith(f"host-b:{os.getpid()}:")
    assert run.attempts[0]["lost_worker"] == f"host-a:{os.getpid()}"
    staff = make_user(company, Role.USER)
    staff.is_staff = True
    staff.save()
    page = client_for(staff).get(f"/flows/runs/{run.pk}/").content.decode()
    assert f"host-b:{os.getpid()} <span" in page
    assert "after the worker was lost at " in page and f"(worker host-a:{os.getpid()})" in page
    not_staff = client_for(make_user(company, Role.USER)).get(f"/flows/runs/{run.pk}/").content.decode()
    assert "after the worker was lost at " in not_staff and "host-a" not in not_staff and "host-b" not in not_staff


def test_a_run_fails_as_worker_lost_once_its_attempts_are_used_up(flow, settings):
    settings.FLOW_RUN_MAX_ATTEMPTS = 2
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    for owner in ("worker-a", "worker-b"):
        assert execution.claim(run.pk, owner)
        assert queueing.reap_expired_leases(timezone.now() + execution.lease_duration() + timedelta(seconds=1)) == 1
        run.refresh_from_db()
    assert (run.status, run.attempt) == (RunStatus.FAILED, 2)
    assert run.failure_reason.startswith("Worker lost on each of 2 attempts (FLOW_RUN_MAX_ATTEMPTS)")


def _running_shape(run) -> FlowRunShape:
    return FlowRunShape.objects.create(run=run, position=0, shape_name="connection", started_at=timezone.now())


def test_a_worker_lost_run_and_its_running_shapes_fail_together(flow, settings):
    settings.FLOW_RUN_MAX_ATTEMPTS = 1
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    execution.claim(run.pk, "worker-a")
    shape_run = _running_shape(run)
    assert queueing.reap_expired_leases(timezone.now() + execution.lease_duration() + timedelta(seconds=1)) == 1
    run.refresh_from_db()
    shape_run.refresh_from_db()
    assert (run.status, shape_run.status) == (RunStatus.FAILED, ShapeStatus.FAILED)
    assert shape_run.finished_at == run.finished_at


def test_a_worker_that_renews_its_lease_while_the_reaper_looks_keeps_its_run_and_its_shapes(flow, monkeypatch):
    """The reaper read the run as lost, then the worker renewed: neither the run nor its shapes are failed."""
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    execution.claim(run.pk, "worker-a")
    shape_run = _running_shape(run)
    later = timezone.now() + execution.lease_duration() + timedelta(seconds=1)

    def read_then_renew(rows):
        found = [*rows]
        FlowRun.objects.filter(pk=run.pk).update(lease_expires_at=later + execution.lease_duration())
        return found

    monkeypatch.setattr(queueing, "list", read_then_renew, raising=False)
    assert queueing.reap_expired_leases(later) == 0
    run.refresh_from_db()
    shape_run.refresh_from_db()
    assert (run.status, shape_run.status) == (RunStatus.RUNNING, ShapeStatus.RUNNING)


def test_two_watchers_that_find_one_lost_run_resume_it_once(flow, monkeypatch, django_capture_on_commit_callbacks):
    """Every worker process watches leases: the one that reads the lost run second neither resumes nor hands it over."""
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    execution.claim(run.pk, "worker-a")
    later = timezone.now() + execution.lease_duration() + timedelta(seconds=1)

    def read_then_another_watcher_resumes(rows):
        found = [*rows]
        FlowRun.objects.filter(pk=run.pk).update(
            status=RunStatus.QUEUED, attempt=2, attempts=[{"number": 2, "cause": "worker lost"}], lease_owner="",
            lease_expires_at=None,
        )
        return found

    monkeypatch.setattr(queueing, "list", read_then_another_watcher_resumes, raising=False)
    with django_capture_on_commit_callbacks() as handed_over:
        assert queueing.reap_expired_leases(later) == 0
    assert handed_over == []
    run.refresh_from_db()
    assert (run.status, run.attempt, len(run.attempts)) == (RunStatus.QUEUED, 2, 1)

def test_a_retry_keeps_the_original_reference_time(flow, httpserver, admin_user):
    httpserver.expect_request("/api/orders").respond_with_json({"message": "down"}, status=500)
    first = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL, now=timezone.now() - timedelta(hours=2)).pk)
    assert first.status == RunStatus.FAILED
    retry = queueing.retry_run(first, admin_user)
    assert (retry.trigger, retry.retry_of, retry.reference_time) == (RunTrigger.RETRY, first, first.reference_time)
    assert retry.queued_at > first.queued_at
    assert retry.trigger_text == f"retry of run {first.pk}, resumed from its checkpoint"
    assert queueing.retry_run(FlowRun.objects.create(
        company=flow.company, flow=flow, trigger=RunTrigger.MANUAL, queued_at=timezone.now(), reference_time=timezone.now()
    )) is None  # a queued run is not retried


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_keeps_the_lease_of_a_request_that_outlasts_it(flow, httpserver, settings):
    settings.FLOW_RUN_LEASE_SECONDS = 0.6
    reaped = []

    def slow_orders(request: Request) -> Response:
        time.sleep(1.5)  # more than twice the lease: only the heartbeat keeps it alive
        reaped.append(queueing.reap_expired_leases())
        connection.close()
        return Response(json.dumps({"orders": []}), content_type="application/json")

    httpserver.expect_request("/api/orders").respond_with_handler(slow_orders)
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert reaped == [0]
    assert run.status == RunStatus.SUCCESS


def test_queued_runs_whose_task_was_lost_are_handed_to_the_queue_again(flow, django_capture_on_commit_callbacks):
    from huey.contrib.djhuey import HUEY

    HUEY.flush()
    now = timezone.now()
    lost = queueing.queue_run(flow, RunTrigger.MANUAL, now=now - queueing.REQUEUE_AFTER - timedelta(seconds=1))
    fresh = queueing.queue_run(flow, RunTrigger.MANUAL, now=now)
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.requeue_stale(now) == 1
    assert [task.args for task in HUEY.pending()] == [(lost.pk,)]
    lost.refresh_from_db()
    assert lost.enqueued_at >= now and fresh.enqueued_at is None
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.requeue_stale(now + timedelta(seconds=1)) == 0  # just handed over
    HUEY.flush()


def test_a_backlog_whose_tasks_are_in_the_queue_is_not_handed_again_only_the_queue_s_shortfall_is(
    flow, django_capture_on_commit_callbacks
):
    from huey.contrib.djhuey import HUEY

    HUEY.flush()
    now = timezone.now()
    long_ago = now - queueing.REQUEUE_AFTER - timedelta(minutes=1)
    with django_capture_on_commit_callbacks(execute=True):
        backlog = [queueing.queue_run(flow, RunTrigger.MANUAL, now=long_ago) for _ in range(4)]
    for n, run in enumerate(backlog):  # handed over one second apart, the first longest ago
        FlowRun.objects.filter(pk=run.pk).update(enqueued_at=long_ago + timedelta(seconds=n))
    assert HUEY.pending_count() == 4  # each run's task waits behind a backlog, none lost

    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.requeue_stale(now) == 0
    assert HUEY.pending_count() == 4  # not one task more per run every 5 minutes

    HUEY.dequeue()  # one task lost (a worker took it and died before its claim, say)
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.requeue_stale(now) == 1
    assert HUEY.pending_count() == 4
    assert [task.args for task in HUEY.pending()][-1] == (backlog[0].pk,)  # the one handed over longest ago

    HUEY.flush()  # the queue lost everything (Redis flushed)
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.requeue_stale(now) == 3  # the three still stale; the first was just handed over
    assert sorted(task.args[0] for task in HUEY.pending()) == sorted(run.pk for run in backlog[1:])
    HUEY.flush()


def test_an_attempt_lost_before_its_first_commit_says_when_it_began(flow, settings):
    """The watcher fills in when an attempt began (its claim) if its worker was lost before writing it."""
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    later = lambda: timezone.now() + execution.lease_duration() + timedelta(seconds=1)  # noqa: E731
    assert execution.claim(run.pk, "worker-a")
    assert queueing.reap_expired_leases(later()) == 1
    assert execution.claim(run.pk, "worker-b")  # attempt 2 is claimed, and its worker dies at once
    claimed_at = FlowRun.objects.get(pk=run.pk).stretch_started_at
    assert queueing.reap_expired_leases(later()) == 1
    run.refresh_from_db()
    assert [entry["number"] for entry in run.attempts] == [2, 3]
    assert run.attempts[0]["resumed_at"] == claimed_at.isoformat() and run.attempts[1]["resumed_at"] is None
