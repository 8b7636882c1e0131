"""Fair shares between companies: each company's maximum of concurrent runs, and turns at the workers.

In-process tests drive flows.execution.execute as a worker's task would (the
task's run may give its turn to another company's run); the last tests run
three real `run_huey` processes against one queue and sample the database.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import pytest
from django.db import transaction
from django.utils import timezone
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from flows import execution, queueing
from flows.models import FlowRun, RunStatus, RunTrigger
from patchworks_site.models import Role
from tests.durable_helpers import FINISHED, make_workers, wait_for
from tests.flow_helpers import API_TOKEN, receive_then_send_flow, shop_connector
from tests.test_engine_workers import on_committed_rows

ORDERS = [{"id": 1}, {"id": 2}]


@pytest.fixture
def api():
    """The third party, answering several workers at once; each list of orders takes `hold` seconds."""
    server = HTTPServer(threaded=True)
    server.start()
    state = {"hold": 0.0}

    def orders(request: Request) -> Response:
        time.sleep(state["hold"])
        return Response(json.dumps({"orders": ORDERS}), content_type="application/json")

    server.expect_request("/api/orders").respond_with_handler(orders)
    server.expect_request("/api/imports", method="POST").respond_with_json({"ok": True}, status=201)
    yield server, state
    server.clear()
    server.stop()


@pytest.fixture
def flows_of(make_connector, make_instance, api):
    server, _ = api

    def make(company, count: int = 1):
        connector = shop_connector(make_connector, company, server.url_for("/api"))
        instance = make_instance(connector, f"Shop of {company.name}", {"api_token": API_TOKEN})
        return [receive_then_send_flow(company, instance, name=f"{company.name} flow {n}") for n in range(count)]

    return make


def queue(flow) -> FlowRun:
    return queueing.queue_run(flow, RunTrigger.MANUAL)


def started_order(*runs: FlowRun) -> list[int]:
    return list(FlowRun.objects.filter(pk__in=[r.pk for r in runs], started_at__isnull=False)
                .order_by("started_at", "id").values_list("pk", flat=True))


def test_a_run_over_its_company_s_maximum_stays_queued_and_its_page_and_the_run_log_say_why(
    company, flows_of, admin_client
):
    company.max_concurrent_runs = 1
    company.save()
    first, second = flows_of(company, 2)
    going = queue(first)
    assert execution.claim(going.pk, "worker-a")
    held = queue(second)

    assert execution.execute(held.pk) is None
    held.refresh_from_db()
    assert (held.status, held.started_at, held.deferrals) == (RunStatus.QUEUED, None, 1)
    page = admin_client.get(f"/flows/runs/{held.pk}/").content.decode()
    assert "Queued: Acme Retail is at its limit of 1 concurrent run." in page
    log = admin_client.get("/flows/runs/").content.decode()
    assert "queued: Acme Retail is at its limit of 1 concurrent run" in log
    # The running run's page says nothing of the kind.
    assert "at its limit" not in admin_client.get(f"/flows/runs/{going.pk}/").content.decode()


def test_a_deferred_run_can_be_stopped_and_then_never_starts(company, flows_of):
    company.max_concurrent_runs = 1
    company.save()
    first, second = flows_of(company, 2)
    assert execution.claim(queue(first).pk, "worker-a")
    held = queue(second)
    execution.execute(held.pk)

    assert queueing.request_stop(held) == "stopped"
    FlowRun.objects.filter(flow=first).update(status=RunStatus.SUCCESS, finished_at=timezone.now())
    assert execution.execute(held.pk) is None
    held.refresh_from_db()
    assert (held.status, held.started_at, held.failure_reason) == (RunStatus.STOPPED, None, "Stopped before it started.")


def test_a_company_at_its_maximum_does_not_hold_up_another_company_s_run(company, other_company, flows_of):
    company.max_concurrent_runs = 1
    company.save()
    first, second = flows_of(company, 2)
    (theirs,) = flows_of(other_company)
    assert execution.claim(queue(first).pk, "worker-a")
    held = queue(second)
    other = queue(theirs)

    # The task of the held run comes first; it gives its turn to the other company's run ...
    assert execution.execute(held.pk) is None
    other.refresh_from_db()
    held.refresh_from_db()
    assert other.status == RunStatus.SUCCESS, other.failure_reason
    assert held.status == RunStatus.QUEUED and "at its limit of 1 concurrent run" in held.activity
    # ... and the other run's own task, coming later, finds nothing left to do while the company is at its maximum.
    assert execution.execute(other.pk) is None
    held.refresh_from_db()
    assert held.status == RunStatus.QUEUED


def test_companies_take_turns_so_one_company_s_backlog_does_not_starve_another(company, other_company, flows_of):
    mine = flows_of(company, 4)
    (theirs,) = flows_of(other_company)
    assert execution.claim(queue(mine[0]).pk, "worker-a")  # one of the company's runs is going
    backlog = [queue(flow) for flow in mine[1:]]
    late = queue(theirs)  # queued after the whole backlog

    # Tasks come in the order they were queued, but the other company (no run going) has the first turn ...
    for run in [*backlog, late]:
        execution.execute(run.pk)
    assert started_order(*backlog, late) == [late.pk, *(run.pk for run in backlog)]
    # ... and every run ran once, the backlog oldest first.
    assert set(FlowRun.objects.filter(pk__in=[r.pk for r in [*backlog, late]]).values_list("status", flat=True)) == {
        RunStatus.SUCCESS
    }


def test_a_task_whose_run_was_taken_still_starts_a_waiting_run_when_it_loses_races_for_its_turns(
    company, other_company, flows_of, monkeypatch
):
    """Each task stands for one queued run: one that started nothing would leave a run without a task."""
    mine = flows_of(company, 3)
    (theirs,) = flows_of(other_company)
    taken = queue(mine[0])
    assert execution.claim(taken.pk, "worker-a")  # its run was started by another worker's task
    waiting = [queue(mine[1]), queue(mine[2]), queue(theirs)]
    real_claim_turn, claims = execution.claim_turn, []

    def racing(company_id: int, owner: str, *, wait: bool = True) -> int | None:
        claims.append(company_id)
        if len(claims) <= 2:  # twice, another worker starts the run of the turn first
            assert real_claim_turn(company_id, "worker-x") is not None
            return None
        return real_claim_turn(company_id, owner, wait=wait)

    monkeypatch.setattr(execution, "claim_turn", racing)
    started = execution.claim_fairly(taken.pk, "worker-b")
    # ... and the task still starts the run that waits, rather than ending with nothing done.
    assert len(claims) == 3 and started in {run.pk for run in waiting}
    assert set(FlowRun.objects.filter(pk__in=[run.pk for run in waiting]).values_list("status", flat=True)) == {
        RunStatus.RUNNING}
    assert FlowRun.objects.get(pk=started).lease_owner.startswith("worker-b")


def test_a_task_whose_run_is_started_by_another_worker_while_it_claims_it_starts_a_waiting_run(
    company, flows_of, monkeypatch
):
    own, later = flows_of(company, 2)
    mine, waiting = queue(own), queue(later)
    real_claim_turn = execution.claim_turn

    def raced(company_id: int, owner: str, *, wait: bool = True) -> int | None:
        if owner == "worker-b" and FlowRun.objects.get(pk=mine.pk).status == RunStatus.QUEUED:
            assert real_claim_turn(company_id, "worker-a") == mine.pk  # another worker's task got there first
            return None
        return real_claim_turn(company_id, owner, wait=wait)

    monkeypatch.setattr(execution, "claim_turn", raced)
    assert execution.claim_fairly(mine.pk, "worker-b") == waiting.pk
    assert FlowRun.objects.get(pk=waiting.pk).status == RunStatus.RUNNING


def test_workers_that_read_the_same_turns_start_the_company_s_runs_one_after_another_not_the_same_one(
    company, flows_of
):
    runs = [queue(flow) for flow in flows_of(company, 3)]
    # Three tasks read the turns at once; each claims from the company once it holds the company's row.
    started = [execution.claim_turn(company.pk, f"worker-{n}") for n in range(3)]
    assert started == [run.pk for run in runs]  # oldest first, none lost
    assert execution.claim_turn(company.pk, "worker-3") is None  # nothing left


@pytest.mark.django_db(transaction=True)
def test_a_company_whose_row_another_worker_is_claiming_from_is_passed_over_for_the_next_turn(
    company, other_company, flows_of
):
    from django.db import connection

    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip("SKIP LOCKED is PostgreSQL's: on SQLite claims are serialised by IMMEDIATE transactions")
    (mine,) = flows_of(company)
    queue(mine)
    locked, release = threading.Event(), threading.Event()

    def another_worker_claims() -> None:
        try:
            with transaction.atomic():
                execution.under_maximum(company.pk, wait=True)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=another_worker_claims)
    holder.start()
    try:
        assert locked.wait(10)
        assert execution.claim_turn(company.pk, "worker-b", wait=False) is None  # at once, not after its claim
    finally:
        release.set()
        holder.join(10)
    assert execution.claim_turn(company.pk, "worker-b", wait=False) is not None


def test_a_task_that_keeps_losing_races_hands_the_run_whose_turn_it_is_to_the_queue(
    company, flows_of, monkeypatch
):
    first, second = flows_of(company, 2)
    taken = queue(first)
    assert execution.claim(taken.pk, "worker-a")
    waiting = queue(second)
    claims = []

    def always_lost(company_id: int, owner: str, *, wait: bool = True) -> None:
        claims.append(company_id)  # another worker holds the company's row each time, and starts nothing

    monkeypatch.setattr(execution, "claim_turn", always_lost)
    handed = []
    monkeypatch.setattr(execution, "hand_over", lambda run_pk, at=None: handed.append(run_pk))
    assert execution.claim_fairly(taken.pk, "worker-b") is None
    assert len(claims) == execution.TURN_ROUNDS
    # The run still waiting gets a task again instead of waiting minutes for the stale-task sweep.
    assert handed == [waiting.pk]
    assert FlowRun.objects.get(pk=waiting.pk).status == RunStatus.QUEUED


def test_a_run_whose_task_went_to_another_company_is_handed_over_when_its_company_leaves_its_maximum(
    company, other_company, flows_of, monkeypatch
):
    company.max_concurrent_runs = 2
    company.save()
    first, second, third = flows_of(company, 3)
    (theirs,) = flows_of(other_company)
    going = queue(first)
    assert execution.claim(going.pk, "worker-a")
    waiting, other = queue(second), queue(theirs)
    # The waiting run's task takes the other company's turn (it has no run going); the company is under its
    # maximum, so the waiting run is not deferred: the other run's task stands for it now.
    assert execution.claim_fairly(waiting.pk, "worker-b") == other.pk
    later = queue(third)
    assert execution.claim(later.pk, "worker-c")  # the company reaches its maximum meanwhile
    # That task comes: its run started, the company at its maximum has no turn, nobody else waits: it ends.
    assert execution.claim_fairly(other.pk, "worker-d") is None
    waiting.refresh_from_db()
    assert (waiting.status, waiting.deferrals) == (RunStatus.QUEUED, 0)  # and no task stands for it any more
    handed = []
    monkeypatch.setattr(execution, "hand_over", lambda run_pk, at=None: handed.append(run_pk))

    FlowRun.objects.filter(pk=going.pk).update(status=RunStatus.SUCCESS, finished_at=timezone.now())
    execution.hand_over_next_of(going.pk)

    assert handed == [waiting.pk]  # at once, not minutes later by the stale-task sweep


def test_a_run_s_end_hands_nothing_over_while_its_company_is_below_its_maximum(company, flows_of, monkeypatch):
    company.max_concurrent_runs = 3
    company.save()
    first, second = flows_of(company, 2)
    going = queue(first)
    assert execution.claim(going.pk, "worker-a")
    queue(second)  # its own task is in the queue
    handed = []
    monkeypatch.setattr(execution, "hand_over", lambda run_pk, at=None: handed.append(run_pk))

    FlowRun.objects.filter(pk=going.pk).update(status=RunStatus.SUCCESS, finished_at=timezone.now())
    execution.hand_over_next_of(going.pk)

    assert handed == []  # a second task would only find its run started


def test_raising_the_maximum_hands_over_at_once_as_many_waiting_runs_as_it_frees_slots(
    client_for, make_user, company, flows_of, monkeypatch, django_capture_on_commit_callbacks
):
    company.max_concurrent_runs = 1
    company.save()
    flows = flows_of(company, 4)
    going = queue(flows[0])
    assert execution.claim(going.pk, "worker-a")
    waiting = [queue(flow) for flow in flows[1:]]  # held back; their tasks may have ended (give_turn)
    execution.defer(waiting[0].pk)
    assert FlowRun.objects.get(pk=waiting[2].pk).activity == "queued: Acme Retail is at its limit of 1 concurrent run"
    handed = []
    monkeypatch.setattr(execution, "hand_over", lambda run_pk, at=None: handed.append(run_pk))
    admin = client_for(make_user(company, Role.ADMINISTRATOR))
    sent = {"section": "run_duration", "max_run_duration_minutes": "60", "time_zone": "UTC"}

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post("/settings/company/", {**sent, "max_concurrent_runs": "2"}, follow=True)
    assert response.status_code == 200 and handed == [waiting[0].pk]  # one slot freed
    assert execution.claim(waiting[0].pk, "worker-b")
    handed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post("/settings/company/", {**sent, "max_concurrent_runs": "2", "time_zone": "Europe/Paris"})
    assert handed == []  # saved, but no slot is free
    assert FlowRun.objects.get(pk=waiting[2].pk).activity == "queued: Acme Retail is at its limit of 2 concurrent runs"

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post("/settings/company/", {**sent, "max_concurrent_runs": "3"}, follow=True)
    assert "at most 3 runs go at once" in response.content.decode()
    assert handed == [waiting[1].pk]  # the slot freed goes to the oldest waiting run at once, not minutes later
    assert FlowRun.objects.get(pk=waiting[2].pk).activity == ""  # no longer held back by the maximum

    handed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        admin.post("/settings/company/", {**sent, "max_concurrent_runs": "4", "time_zone": "Europe/London"})
    assert handed == [waiting[1].pk, waiting[2].pk]  # still waiting: handed again (a duplicate task is harmless)

    handed.clear()
    for run in waiting[1:]:
        assert execution.claim(run.pk, "worker-c")
    with django_capture_on_commit_callbacks(execute=True):
        admin.post("/settings/company/", {**sent, "max_concurrent_runs": "4", "time_zone": "UTC"})
    assert handed == []  # at its maximum again


def test_a_parked_run_resuming_counts_toward_the_maximum_and_waits_for_a_free_slot(company, flows_of):
    company.max_concurrent_runs = 1
    company.save()
    first, second = flows_of(company, 2)
    parked = queue(first)
    assert execution.claim(parked.pk, "worker-a")
    FlowRun.objects.filter(pk=parked.pk).update(status=RunStatus.WAITING, lease_owner="", lease_expires_at=None,
                                                parked_until=timezone.now(), park_reason="the rate limit of Shop")
    going = queue(second)
    assert execution.claim(going.pk, "worker-b")  # the park freed the company's slot

    assert execution.execute(parked.pk) is None  # its park is over, but the slot is taken
    parked.refresh_from_db()
    assert (parked.status, parked.deferrals) == (RunStatus.WAITING, 1)
    FlowRun.objects.filter(pk=going.pk).update(status=RunStatus.SUCCESS, finished_at=timezone.now())
    run = execution.execute(parked.pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason


def test_test_steps_neither_count_toward_the_maximum_nor_wait_for_it(company, flows_of):
    company.max_concurrent_runs = 1
    company.save()
    first, second = flows_of(company, 2)
    assert execution.claim(queue(first).pk, "worker-a")
    test = queueing.queue_test_step(second.shapes.get(position=0)).run
    run = execution.execute(test.pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason


def test_administrators_set_the_maximum_of_concurrent_runs_within_the_platform_ceiling(
    client_for, make_user, company, settings
):
    settings.FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING = 10
    admin = client_for(make_user(company, Role.ADMINISTRATOR))
    page = admin.get("/settings/company/").content.decode()
    assert 'name="max_concurrent_runs" value="4"' in page and "1 to 10. At most this many" in page
    sent = {"section": "run_duration", "max_run_duration_minutes": "60", "time_zone": "UTC"}
    response = admin.post("/settings/company/", {**sent, "max_concurrent_runs": "11"})
    assert response.status_code == 422
    assert ("At most 10 runs of a company can go at once on this platform (FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING). "
            "Enter 1 to 10.") in response.content.decode()
    response = admin.post("/settings/company/", {**sent, "max_concurrent_runs": "0"})
    assert response.status_code == 422 and "At least 1 run must be able to go at once." in response.content.decode()
    response = admin.post("/settings/company/", {**sent, "max_concurrent_runs": "two"})
    assert response.status_code == 422 and "Enter a whole number." in response.content.decode()
    company.refresh_from_db()
    assert company.max_concurrent_runs == 4

    response = admin.post("/settings/company/", {**sent, "max_concurrent_runs": "2"}, follow=True)
    assert "at most 2 runs go at once" in response.content.decode()
    company.refresh_from_db()
    assert company.max_concurrent_runs == 2

    for role in (Role.MANAGER, Role.USER, Role.READ_ONLY):
        other = client_for(make_user(company, role))
        page = other.get("/settings/company/").content.decode()
        assert 'data-testid="concurrent-runs-value">2<' in page and 'name="max_concurrent_runs"' not in page
        assert other.post("/settings/company/", {**sent, "max_concurrent_runs": "9"}).status_code == 403
    company.refresh_from_db()
    assert company.max_concurrent_runs == 2


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one moment (one that ends as another starts does not overlap it)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda event: (event[0], event[1]))
    now = most = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


@on_committed_rows
@pytest.mark.parametrize("engine", ["sqlite", "redis"])
def test_three_worker_processes_keep_a_company_within_its_maximum_while_another_company_s_run_starts(
    engine, tmp_path, settings, company, other_company, flows_of, api
):
    _, state = api
    state["hold"] = 0.4  # each run holds its worker a little while
    company.max_concurrent_runs = 2
    company.save()
    backlog_flows = flows_of(company, 10)
    (theirs,) = flows_of(other_company)
    workers = make_workers(engine, tmp_path, settings)
    try:
        with transaction.atomic():
            backlog = [queue(flow) for flow in backlog_flows]
        with transaction.atomic():
            late = queue(theirs)
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(FlowRun.objects.filter(company=company, status=RunStatus.RUNNING).count())
                time.sleep(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for _ in range(3):
                workers.start(threads=1)
            wait_for(lambda: FlowRun.objects.filter(pk__in=[r.pk for r in [*backlog, late]], status__in=FINISHED)
                     .count() == len(backlog) + 1,
                     lambda: f"the runs to finish; worker logs:\n{workers.logs()[-6000:]}", timeout=120)
        finally:
            done.set()
            sampler.join()
    finally:
        workers.close()

    runs = FlowRun.objects.filter(pk__in=[r.pk for r in backlog])
    assert set(runs.values_list("status", flat=True)) == {RunStatus.SUCCESS}
    late.refresh_from_db()
    assert late.status == RunStatus.SUCCESS, late.failure_reason
    # No sampled moment, and no moment the rows record, had more of the company's runs going than its maximum.
    assert samples and max(samples) <= 2
    assert most_at_once(list(runs.values_list("started_at", "finished_at"))) <= 2
    # The other company's run, queued after the whole backlog, started while the backlog still waited.
    assert late.started_at < max(runs.values_list("started_at", flat=True))
    # Some of the backlog waited for the company's maximum and said so meanwhile.
    assert runs.filter(deferrals__gt=0).exists()
