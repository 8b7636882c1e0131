"""Run now, stop, retry, schedules on the flow page, the run log and the run page."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from flows import execution, queueing
from flows.models import FlowRun, FlowSchedule, ProcessFlow, RunStatus, RunTrigger
from patchworks_site.models import Role
from tests.flow_helpers import API_TOKEN, receive_then_send_flow, shop_connector


@pytest.fixture
def instance(company, make_connector, make_instance, httpserver):
    return make_instance(shop_connector(make_connector, company, httpserver.url_for("/api")), "Shop - UK", {"api_token": API_TOKEN})


@pytest.fixture
def flow(company, instance):
    return receive_then_send_flow(company, instance)


@pytest.fixture
def empty_queue():
    HUEY.flush()
    yield HUEY
    HUEY.flush()


def make_run(flow: ProcessFlow, status: str = RunStatus.SUCCESS, **fields) -> FlowRun:
    now = fields.pop("queued_at", timezone.now())
    return FlowRun.objects.create(
        company=flow.company, flow=flow, status=status, trigger=fields.pop("trigger", RunTrigger.MANUAL),
        queued_at=now, reference_time=now, **fields,
    )


def test_run_now_queues_a_run_for_a_worker_once_committed_and_shows_it(
    admin_client, admin_user, flow, httpserver, empty_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(f"/flows/{flow.pk}/run/")
    run = FlowRun.objects.get()
    assert len(callbacks) == 1
    assert response["Location"] == f"/flows/runs/{run.pk}/"
    assert (run.status, run.trigger, run.triggered_by, run.company) == (RunStatus.QUEUED, RunTrigger.MANUAL, admin_user, flow.company)
    # The queue holds one task for that run: the worker gets the primary key only.
    (task,) = empty_queue.pending()
    assert (task.name.rsplit(".", 1)[-1], task.args) == ("execute_run", (run.pk,))

    page = admin_client.get(response["Location"]).content.decode()
    assert f"Run {run.pk} of &quot;Orders to ERP&quot; is queued." in page
    assert 'hx-trigger="every 2s"' in page and "Waiting for a worker." in page
    assert f"manual by {admin_user}" in page


def test_run_now_works_on_a_disabled_flow_and_says_so(admin_client, flow):
    flow.enabled = False
    flow.save()
    detail = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    assert "The flow is disabled: <strong>run now</strong> still runs it, its schedules do not." in detail
    page = admin_client.post(f"/flows/{flow.pk}/run/", follow=True).content.decode()
    assert "The flow is disabled: this manual run goes ahead, but its schedules do not run." in page
    assert FlowRun.objects.get().status == RunStatus.QUEUED


def test_the_run_page_shows_the_timeline_and_stops_polling_when_the_run_ends(admin_client, flow, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"message": f"bad token {API_TOKEN}"}, status=401)
    run = queueing.queue_run(flow, RunTrigger.MANUAL)
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "run-timeline"}
    fragment = admin_client.get(f"/flows/runs/{run.pk}/", **htmx).content.decode()
    assert "<html" not in fragment and 'hx-trigger="every 2s"' in fragment

    execution.execute(run.pk)
    fragment = admin_client.get(f"/flows/runs/{run.pk}/", **htmx).content.decode()
    assert "<html" not in fragment and "hx-trigger=\"every" not in fragment  # no more polling
    assert "Shape 1 (Shop - UK → List orders): The API answered 401 Unauthorized." in fragment
    assert "Failed request 1: GET http://" in fragment and API_TOKEN not in fragment
    assert "1 request" in fragment and "retry" in fragment


def test_the_run_page_shows_payload_samples_until_retention_clears_them(admin_client, flow):
    run = make_run(flow, started_at=timezone.now(), finished_at=timezone.now())
    now = timezone.now()
    sent = run.shape_runs.create(position=0, shape_name="Shop - UK → Import order", status="success", started_at=now,
                                 items_in=1, items_out=1, requests=1,
                                 payload_sample={"in": [{"reference": "SB-1 <b>"}], "out": [{"ok": True}]})
    filtered = run.shape_runs.create(position=1, shape_name="filter", status="success", started_at=now, items_in=1)
    page = admin_client.get(f"/flows/runs/{run.pk}/").content.decode()
    assert page.count('data-testid="payload-sample"') == 1
    assert "&quot;reference&quot;: &quot;SB-1 &lt;b&gt;&quot;" in page and "&quot;ok&quot;: true" in page  # JSON, escaped
    assert "1 item in · 1 out · 0 pages · 1 request" in page
    assert "1 item in · 0 out\n" in page and "0 requests" not in page  # no request counters on a filter
    sent.payload_sample = None
    sent.save()
    assert 'data-testid="payload-sample"' not in admin_client.get(f"/flows/runs/{run.pk}/").content.decode()
    assert filtered.sample_texts == []


def test_stop_a_queued_run_and_ask_a_running_one_to_stop(admin_client, flow):
    queued, running, done = make_run(flow, RunStatus.QUEUED), make_run(flow, RunStatus.RUNNING), make_run(flow)
    page = admin_client.post(f"/flows/runs/{queued.pk}/stop/", follow=True).content.decode()
    assert f"Run {queued.pk} was stopped before it started." in page
    page = admin_client.post(f"/flows/runs/{running.pk}/stop/", follow=True).content.decode()
    assert f"Run {running.pk} stops before its next request." in page and "stopping…" in page
    page = admin_client.post(f"/flows/runs/{done.pk}/stop/", follow=True).content.decode()
    assert f"Run {done.pk} has already ended." in page
    statuses = {r.pk: (r.status, r.stop_requested) for r in FlowRun.objects.all()}
    assert statuses == {queued.pk: (RunStatus.STOPPED, True), running.pk: (RunStatus.RUNNING, True), done.pk: (RunStatus.SUCCESS, False)}


def test_retry_a_failed_run_with_its_original_queued_at(admin_client, admin_user, flow):
    failed = make_run(flow, RunStatus.FAILED, queued_at=timezone.now() - timedelta(days=1))
    response = admin_client.post(f"/flows/runs/{failed.pk}/retry/")
    retry = FlowRun.objects.exclude(pk=failed.pk).get()
    assert response["Location"] == f"/flows/runs/{retry.pk}/"
    assert (retry.trigger, retry.retry_of, retry.reference_time, retry.triggered_by) == (
        RunTrigger.RETRY, failed, failed.queued_at, admin_user
    )
    page = admin_client.get(response["Location"]).content.decode()
    assert f'retry of <a href="/flows/runs/{failed.pk}/">run {failed.pk}</a>' in page
    assert "the original run's queued-at" in page

    ok = make_run(flow)
    page = admin_client.post(f"/flows/runs/{ok.pk}/retry/", follow=True).content.decode()
    assert f"Only failed or stopped runs can be retried; run {ok.pk} is success." in page
    assert FlowRun.objects.count() == 3


def test_the_run_log_is_newest_first_filtered_and_paginated(admin_client, company, flow, instance):
    other = receive_then_send_flow(company, instance, name="Stock sync")
    start = timezone.now() - timedelta(hours=1)
    for n in range(30):
        make_run(flow, RunStatus.SUCCESS if n % 2 else RunStatus.FAILED, queued_at=start + timedelta(minutes=n))
    scheduled = make_run(other, RunStatus.PARTIAL_SUCCESS, trigger=RunTrigger.SCHEDULE, queued_at=start + timedelta(minutes=40))

    page = admin_client.get("/flows/runs/").content.decode()
    assert "Newest first" in page and page.count('data-testid="run-row"') == 25
    assert page.index(f"Run {scheduled.pk}<") < page.index("Orders to ERP</a>")
    older = re.search(r'data-testid="older" href="\?([^"]+)"', page)[1].replace("&amp;", "&")
    page2 = admin_client.get(f"/flows/runs/?{older}").content.decode()
    assert page2.count('data-testid="run-row"') == 6 and 'data-testid="older"' not in page2

    assert admin_client.get("/flows/runs/?status=failed").content.decode().count('data-testid="run-row"') == 15
    filtered = admin_client.get(f"/flows/runs/?trigger=schedule&flow={other.pk}").content.decode()
    assert filtered.count('data-testid="run-row"') == 1 and f"Run {scheduled.pk}<" in filtered
    assert "No runs match these filters." in admin_client.get("/flows/runs/?trigger=retry").content.decode()
    # An unknown filter value is ignored, not an error.
    assert 'data-testid="older"' in admin_client.get("/flows/runs/?status=bogus&flow=999999").content.decode()

    of_flow = admin_client.get(f"/flows/{other.pk}/runs/").content.decode()
    assert of_flow.count('data-testid="run-row"') == 1 and "Runs of Stock sync" in of_flow


def test_another_company_s_runs_flows_and_schedules_are_not_found(client_for, make_user, other_company, flow):
    run = make_run(flow, RunStatus.FAILED)
    schedule = FlowSchedule.objects.create(flow=flow, kind="hourly", cron="0 * * * *", description="hourly", next_run_at=timezone.now())
    outsider = client_for(make_user(other_company))
    for url in (f"/flows/runs/{run.pk}/", f"/flows/{flow.pk}/runs/"):
        assert outsider.get(url).status_code == 404
    for url in (f"/flows/runs/{run.pk}/stop/", f"/flows/runs/{run.pk}/retry/", f"/flows/{flow.pk}/run/",
                f"/flows/{flow.pk}/schedules/", f"/flows/{flow.pk}/schedules/{schedule.pk}/remove/"):
        assert outsider.post(url, {"kind": "hourly", "minute": "5"}).status_code == 404
    assert "No runs yet." in outsider.get("/flows/runs/").content.decode()
    assert FlowRun.objects.count() == 1 and FlowSchedule.objects.count() == 1


def test_read_only_users_see_runs_but_cannot_run_stop_retry_or_schedule(client_for, make_user, company, flow):
    failed, queued = make_run(flow, RunStatus.FAILED), make_run(flow, RunStatus.QUEUED)
    viewer = client_for(make_user(company, Role.READ_ONLY))
    assert viewer.get(f"/flows/runs/{failed.pk}/").status_code == 200
    detail = viewer.get(f"/flows/{flow.pk}/").content.decode()
    assert "> run now</button>" not in detail and "add schedule" not in detail
    for url in (f"/flows/{flow.pk}/run/", f"/flows/runs/{queued.pk}/stop/", f"/flows/runs/{failed.pk}/retry/",
                f"/flows/{flow.pk}/schedules/"):
        assert viewer.post(url, {"kind": "hourly", "minute": "5"}).status_code == 403
    assert FlowRun.objects.count() == 2 and not FlowSchedule.objects.exists()
    user = client_for(make_user(company, Role.USER))
    assert user.post(f"/flows/runs/{queued.pk}/stop/").status_code == 302


def test_posts_need_the_csrf_token(admin_user, flow):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(f"/flows/{flow.pk}/run/").status_code == 403
    assert not FlowRun.objects.exists()


def test_add_and_remove_schedules_and_see_the_next_run(admin_client, flow):
    for data, description in [
        ({"kind": "minutes", "every": "15"}, "every 15 minutes"),
        ({"kind": "hourly", "minute": "5"}, "hourly at minute 5"),
        ({"kind": "daily", "hour": "6", "minute": "30"}, "daily at 06:30 UTC"),
        ({"kind": "monthly", "day": "1", "hour": "2", "minute": "0"}, "monthly on day 1 at 02:00 UTC"),
        ({"kind": "advanced", "cron": " 0  9 * * 1-5 "}, "cron 0 9 * * 1-5 (UTC)"),
    ]:
        page = admin_client.post(f"/flows/{flow.pk}/schedules/", data, follow=True).content.decode()
        assert f"Schedule added: {description}. Next run" in page
    assert FlowSchedule.objects.filter(flow=flow).count() == 5
    soonest = FlowSchedule.objects.order_by("next_run_at").first()
    page = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    assert f"Next scheduled run: <time datetime=\"{soonest.next_run_at.isoformat()}" in page.replace("+00:00", "+00:00")
    assert page.count('data-testid="schedule"') == 5

    admin_client.post(f"/flows/{flow.pk}/schedules/{soonest.pk}/remove/")
    assert FlowSchedule.objects.filter(flow=flow).count() == 4

    flow.enabled = False
    flow.save()
    assert "No scheduled run while the flow is disabled." in admin_client.get(f"/flows/{flow.pk}/").content.decode()


@pytest.mark.parametrize(
    "data, field_error",
    [
        ({"kind": "advanced", "cron": "61 * * * *"}, "minute 61 is out of range 0–59."),
        ({"kind": "advanced", "cron": "0 9 * *"}, "Enter 5 fields: minute hour day-of-month month day-of-week"),
        ({"kind": "advanced", "cron": "0 0 30 2 *"}, "never runs: February has no day 30."),
        ({"kind": "advanced", "cron": ""}, "Enter a value for this schedule."),
        ({"kind": "daily", "hour": "24", "minute": "0"}, "Ensure this value is less than or equal to 23."),
        ({"kind": "minutes", "every": "7"}, "Select a valid choice. 7 is not one of the available choices."),
        ({"kind": "monthly", "day": "", "hour": "1", "minute": "0"}, "Enter a value for this schedule."),
        ({"kind": "yearly"}, "Select a valid choice. yearly is not one of the available choices."),
    ],
)
def test_a_bad_schedule_is_refused_with_a_clear_message_and_nothing_saved(admin_client, flow, data, field_error):
    response = admin_client.post(f"/flows/{flow.pk}/schedules/", data)
    assert response.status_code == 422
    assert field_error in response.content.decode()
    assert not FlowSchedule.objects.exists()


def test_an_unreachable_queue_leaves_the_run_queued_for_the_next_tick_instead_of_an_error(
    admin_client, flow, empty_queue, django_capture_on_commit_callbacks, caplog
):
    # The queue starts empty (another test's tasks would stand for this run's in the sweep's count).
    from huey.storage import RedisStorage

    original = HUEY.storage
    HUEY.storage = RedisStorage(name="unreachable", url="redis://127.0.0.1:1/0?socket_connect_timeout=1")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(f"/flows/{flow.pk}/run/")
    finally:
        HUEY.storage = original
    run = FlowRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/flows/runs/{run.pk}/"
    assert run.status == RunStatus.QUEUED
    assert "Error calling" in caplog.text  # logged by Django's robust on-commit handling
    # The scheduler tick hands it over again once the queue is back.
    assert queueing.requeue_stale(run.queued_at + queueing.REQUEUE_AFTER + timedelta(seconds=1)) == 1


# --- one pending run per flow -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.RUNNING])
def test_run_now_while_a_run_is_pending_links_to_it_instead_of_queuing_another(admin_client, flow, empty_queue, status):
    pending = make_run(flow, status)
    response = admin_client.post(f"/flows/{flow.pk}/run/")
    assert response["Location"] == f"/flows/{flow.pk}/"
    page = admin_client.get(response["Location"]).content.decode()
    assert (f'This process flow already has a run {status}: <a href="/flows/runs/{pending.pk}/">run {pending.pk}</a>'
            in page)
    assert "No other run was queued." in page
    for _ in range(5):
        admin_client.post(f"/flows/{flow.pk}/run/")
    assert list(FlowRun.objects.values_list("pk", flat=True)) == [pending.pk]
    assert not HUEY.pending()

    # Once it has ended, run now queues again.
    FlowRun.objects.filter(pk=pending.pk).update(status=RunStatus.SUCCESS, finished_at=timezone.now())
    response = admin_client.post(f"/flows/{flow.pk}/run/")
    new = FlowRun.objects.exclude(pk=pending.pk).get()
    assert response["Location"] == f"/flows/runs/{new.pk}/" and new.status == RunStatus.QUEUED


def test_run_now_twice_keeps_one_pending_run(admin_client, flow, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        first = admin_client.post(f"/flows/{flow.pk}/run/")
        second = admin_client.post(f"/flows/{flow.pk}/run/", follow=True)
    run = FlowRun.objects.get()
    assert first["Location"] == f"/flows/runs/{run.pk}/"
    assert f'<a href="/flows/runs/{run.pk}/">run {run.pk}</a>' in second.content.decode()
    assert FlowRun.objects.filter(flow=flow, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).count() == 1


def test_retrying_a_run_twice_makes_one_retry_and_links_to_it(admin_client, flow):
    failed = make_run(flow, RunStatus.FAILED, queued_at=timezone.now() - timedelta(days=1))
    admin_client.post(f"/flows/runs/{failed.pk}/retry/")
    retry = FlowRun.objects.get(retry_of=failed)
    # The retry ran and failed too: retrying the original again still leads to its one retry.
    FlowRun.objects.filter(pk=retry.pk).update(status=RunStatus.FAILED, finished_at=timezone.now())
    for _ in range(3):
        response = admin_client.post(f"/flows/runs/{failed.pk}/retry/")
        assert response["Location"] == f"/flows/runs/{failed.pk}/"
    page = admin_client.get(response["Location"]).content.decode()
    assert f'Run {failed.pk} was already retried: <a href="/flows/runs/{retry.pk}/">run {retry.pk}</a>.' in page
    assert f"retried as run {retry.pk}" in page and f'action="/flows/runs/{failed.pk}/retry/"' not in page
    assert FlowRun.objects.count() == 2
    # The retry itself can be retried, once.
    admin_client.post(f"/flows/runs/{retry.pk}/retry/")
    admin_client.post(f"/flows/runs/{retry.pk}/retry/")
    assert FlowRun.objects.filter(retry_of=retry).count() == 1 and FlowRun.objects.count() == 3


def test_retry_while_the_flow_has_a_pending_run_links_to_that_run(admin_client, flow):
    failed, pending = make_run(flow, RunStatus.FAILED), make_run(flow, RunStatus.RUNNING)
    response = admin_client.post(f"/flows/runs/{failed.pk}/retry/", follow=True)
    page = response.content.decode()
    assert f'already has a run running: <a href="/flows/runs/{pending.pk}/">run {pending.pk}</a>' in page
    assert f"Retry run {failed.pk} once it has finished." in page
    assert FlowRun.objects.count() == 2


def test_a_flow_name_in_the_pending_message_is_escaped(admin_client, company, instance):
    flow = receive_then_send_flow(company, instance, name='<img src=x onerror="alert(1)">')
    make_run(flow, RunStatus.QUEUED)
    page = admin_client.post(f"/flows/{flow.pk}/run/", follow=True).content.decode()
    assert "already has a run queued" in page and '<img src=x onerror="alert(1)">' not in page


@pytest.mark.django_db(transaction=True)
def test_simultaneous_run_now_and_retry_posts_make_one_run(client_for, admin_user, flow):
    """Eight clicks at once, as run now and as retry of one failed run: one new run, whichever won."""
    failed = make_run(flow, RunStatus.FAILED)
    start = threading.Barrier(8)
    statuses: list[int] = []

    def click(url: str) -> None:
        try:
            client = client_for(admin_user)
            start.wait(10)
            statuses.append(client.post(url).status_code)
        finally:
            connections.close_all()

    urls = [f"/flows/{flow.pk}/run/", f"/flows/runs/{failed.pk}/retry/"] * 4
    threads = [threading.Thread(target=click, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [302] * 8
    assert FlowRun.objects.exclude(pk=failed.pk).count() == 1
    assert FlowRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).count() == 1
