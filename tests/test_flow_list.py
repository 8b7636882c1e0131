"""The process flows list: each flow's last run, next scheduled run and last 24 hours; search, filter, pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from flows.models import FlowRun, FlowSchedule, ProcessFlow, RunStatus, RunTrigger, Shape, ShapeKind

FLOW_ROW = re.compile(r'<li class="list-group-item" data-testid="flow">(.*?)</li>', re.S)


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split()).replace(" ,", ",").replace(" .", ".")


def flow_rows(client, **query) -> dict[str, str]:
    """The flows the list shows, by name, as the text a user reads on each row (in page order)."""
    response = client.get("/flows/", query)
    assert response.status_code == 200
    rows = {}
    for html in FLOW_ROW.findall(response.content.decode()):
        text = text_of(html)
        rows[re.search(r'href="/flows/\d+/">([^<]*)</a>', html).group(1)] = text
    return rows


def make_run(flow: ProcessFlow, status: str, ago: timedelta = timedelta(minutes=5), started: bool = True) -> FlowRun:
    queued_at = timezone.now() - ago
    return FlowRun.objects.create(
        company=flow.company, flow=flow, status=status, trigger=RunTrigger.SCHEDULE, queued_at=queued_at,
        reference_time=queued_at, started_at=queued_at if started else None,
        finished_at=None if status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING) else queued_at,
    )


def make_flow(company, name: str, enabled: bool = True) -> ProcessFlow:
    return ProcessFlow.objects.create(company=company, name=name, enabled=enabled)


def schedule(flow: ProcessFlow, next_run_at: datetime) -> FlowSchedule:
    return FlowSchedule.objects.create(flow=flow, kind="daily", cron="30 6 * * *", description="Daily at 06:30",
                                       next_run_at=next_run_at)


def test_a_flow_never_run_says_so_and_shows_no_runs_in_the_last_24_hours(admin_client, company):
    make_flow(company, "Orders to ERP")
    row = flow_rows(admin_client)["Orders to ERP"]
    assert "Last run: never run" in row
    assert "No schedule" in row
    assert "Last 24 hours: 0 succeeded 0 failed" in row


def test_the_last_run_shows_its_status_and_links_to_it(admin_client, company):
    flow = make_flow(company, "Orders to ERP")
    make_run(flow, RunStatus.FAILED, ago=timedelta(hours=3))
    last = make_run(flow, RunStatus.SUCCESS, ago=timedelta(hours=2))
    page = admin_client.get("/flows/").content.decode()
    assert f'<a href="/flows/runs/{last.pk}/">run {last.pk}</a>' in page
    assert 'data-testid="run-status">success</span>' in page
    assert f"Last run: success run {last.pk}, 2 h" in flow_rows(admin_client)["Orders to ERP"]


def test_a_last_failed_run_shows_failed(admin_client, company):
    flow = make_flow(company, "Orders to ERP")
    make_run(flow, RunStatus.SUCCESS, ago=timedelta(hours=3))
    failed = make_run(flow, RunStatus.FAILED, ago=timedelta(minutes=30))
    page = admin_client.get("/flows/").content.decode()
    assert '<span class="badge text-bg-danger" data-testid="run-status">failed</span>' in page
    assert f"Last run: failed run {failed.pk}, 30 min" in flow_rows(admin_client)["Orders to ERP"]


def test_a_running_run_is_the_last_run_shown(admin_client, company):
    flow = make_flow(company, "Orders to ERP")
    make_run(flow, RunStatus.FAILED, ago=timedelta(hours=1))
    running = make_run(flow, RunStatus.RUNNING, ago=timedelta(minutes=2))
    page = admin_client.get("/flows/").content.decode()
    assert 'text-bg-primary" data-testid="run-status"><span class="spinner-border' in page
    assert f"Last run: running run {running.pk}, 2 min" in flow_rows(admin_client)["Orders to ERP"]


def test_the_next_run_is_the_earliest_schedule_in_the_company_time_zone_with_utc_beside(admin_client, company):
    company.time_zone = "Europe/London"
    company.save()
    flow = make_flow(company, "Orders to ERP")
    schedule(flow, datetime(2027, 7, 2, 6, 30, tzinfo=UTC))
    schedule(flow, datetime(2027, 7, 1, 6, 30, tzinfo=UTC))  # the earliest: 07:30 in London (summer time)
    row = flow_rows(admin_client)["Orders to ERP"]
    assert "Next run: 1 Jul 2027, 07:30 Europe/London (06:30 UTC)" in row


def test_a_next_run_on_another_day_in_utc_gives_the_utc_date_too(admin_client, company):
    company.time_zone = "Asia/Tokyo"
    company.save()
    schedule(make_flow(company, "Orders to ERP"), datetime(2027, 1, 4, 22, 30, tzinfo=UTC))
    row = flow_rows(admin_client)["Orders to ERP"]
    assert "Next run: 5 Jan 2027, 07:30 Asia/Tokyo (4 Jan 2027, 22:30 UTC)" in row


def test_in_utc_the_next_run_is_not_repeated(admin_client, company):
    flow = make_flow(company, "Orders to ERP")
    schedule(flow, datetime(2027, 7, 1, 6, 30, tzinfo=UTC))
    row = flow_rows(admin_client)["Orders to ERP"]
    assert "Next run: 1 Jul 2027, 06:30 UTC" in row and "(06:30 UTC)" not in row


def test_a_disabled_flow_says_its_schedules_are_paused(admin_client, company):
    flow = make_flow(company, "Orders to ERP", enabled=False)
    schedule(flow, datetime(2027, 7, 1, 6, 30, tzinfo=UTC))
    row = flow_rows(admin_client)["Orders to ERP"]
    assert "Schedules paused: the flow is disabled" in row and "Next run" not in row
    assert "disabled" in row.split("Last run")[0]


def test_the_24_hour_counts_leave_out_older_and_unfinished_runs(admin_client, company):
    flow = make_flow(company, "Orders to ERP")
    for status in (RunStatus.SUCCESS, RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS, RunStatus.FAILED,
                   RunStatus.STOPPED, RunStatus.RUNNING):
        make_run(flow, status, ago=timedelta(hours=2))
    for status in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.FAILED):
        make_run(flow, status, ago=timedelta(hours=25))
    make_flow(company, "Quiet flow")
    rows = flow_rows(admin_client)
    assert "Last 24 hours: 3 succeeded 1 failed" in rows["Orders to ERP"]
    assert "Last 24 hours: 0 succeeded 0 failed" in rows["Quiet flow"]


def test_shape_counts_do_not_multiply_with_runs_and_schedules(admin_client, company, make_connector, make_instance):
    instance = make_instance(make_connector(company))
    flow = make_flow(company, "Orders to ERP")
    Shape.objects.create(flow=flow, position=0, instance=instance, endpoint=instance.connector.endpoints.first())
    Shape.objects.create(flow=flow, position=1, instance=instance, endpoint=None, missing_endpoint="Gone")
    Shape.objects.create(flow=flow, position=2, kind=ShapeKind.FILTER)
    for _ in range(4):
        make_run(flow, RunStatus.FAILED)
    schedule(flow, datetime(2027, 7, 1, 6, 30, tzinfo=UTC))
    schedule(flow, datetime(2027, 7, 2, 6, 30, tzinfo=UTC))
    row = flow_rows(admin_client)["Orders to ERP"]
    assert "1 needs attention 3 shapes enabled" in row
    assert "Last 24 hours: 0 succeeded 4 failed" in row


def test_search_by_name_ignores_case_and_an_empty_result_offers_to_clear(admin_client, company):
    for name in ("Orders to ERP", "Stock from WMS", "Refund orders"):
        make_flow(company, name)
    assert list(flow_rows(admin_client, q="ORDERS")) == ["Orders to ERP", "Refund orders"]
    page = admin_client.get("/flows/", {"q": "invoices"}).content.decode()
    assert "No process flow matches &ldquo;invoices&rdquo;." in page
    assert '<a href="/flows/">clear the search</a>' in page
    assert 'value="invoices"' in page  # the search box keeps what was typed


def test_no_flows_at_all_is_another_empty_state_without_the_search(admin_client, company):
    page = admin_client.get("/flows/").content.decode()
    assert "No process flows yet." in page and 'role="search"' not in page
    assert "No process flows yet." in admin_client.get("/flows/", {"q": "x"}).content.decode()


def test_the_failing_filter_reads_the_last_finished_run(admin_client, company):
    failing = make_flow(company, "Failing")
    make_run(failing, RunStatus.SUCCESS, ago=timedelta(hours=2))
    make_run(failing, RunStatus.FAILED, ago=timedelta(hours=1))
    running_after_failure = make_flow(company, "Running after a failure")
    make_run(running_after_failure, RunStatus.FAILED, ago=timedelta(hours=1))
    make_run(running_after_failure, RunStatus.RUNNING, ago=timedelta(minutes=1))
    recovered = make_flow(company, "Recovered")
    make_run(recovered, RunStatus.FAILED, ago=timedelta(hours=2))
    make_run(recovered, RunStatus.SUCCESS, ago=timedelta(hours=1))
    make_flow(company, "Never run")
    stopped = make_flow(company, "Stopped")
    make_run(stopped, RunStatus.STOPPED)

    assert list(flow_rows(admin_client, status="failing")) == ["Failing", "Running after a failure"]
    assert list(flow_rows(admin_client, status="failing", q="running")) == ["Running after a failure"]
    page = admin_client.get("/flows/", {"status": "failing"}).content.decode()
    assert '<option value="failing" selected>' in page and ">clear</a>" in page
    page = admin_client.get("/flows/", {"status": "failing", "q": "Recovered"}).content.decode()
    assert "No process flow matches &ldquo;Recovered&rdquo; with this filter." in page


@pytest.mark.parametrize("status", ["nope", "FAILING", "failing\x00", ""])
def test_an_unknown_filter_value_is_ignored(admin_client, company, status):
    make_flow(company, "Orders to ERP")
    assert list(flow_rows(admin_client, status=status)) == ["Orders to ERP"]


def test_a_nul_character_in_the_search_is_a_400(admin_client, company):
    assert admin_client.get("/flows/", {"q": "a\x00b"}).status_code == 400


def test_the_list_is_paginated_by_25_keeping_the_search(admin_client, company):
    ProcessFlow.objects.bulk_create(ProcessFlow(company=company, name=f"Flow {n:02}") for n in range(30))
    make_flow(company, "Other")
    first = flow_rows(admin_client, q="flow")
    assert len(first) == 25 and next(iter(first)) == "Flow 00"
    page = admin_client.get("/flows/", {"q": "flow"}).content.decode()
    assert "Page 1 of 2" in page and 'href="?q=flow&amp;page=2"' in page
    assert list(flow_rows(admin_client, q="flow", page="2")) == [f"Flow {n:02}" for n in range(25, 30)]
    assert len(flow_rows(admin_client, page="junk")) == 25


def test_another_companys_flows_are_never_shown(admin_client, company, other_company):
    make_flow(company, "Ours")
    theirs = make_flow(other_company, "Theirs failing")
    make_run(theirs, RunStatus.FAILED)
    assert list(flow_rows(admin_client)) == ["Ours"]
    assert flow_rows(admin_client, q="Theirs") == {}
    assert flow_rows(admin_client, status="failing") == {}
    page = admin_client.get("/flows/", {"q": "Theirs"}).content.decode()
    assert "Theirs failing" not in page and "No process flow matches &ldquo;Theirs&rdquo;." in page


def _flows_with_runs(company, flows: int, runs_each: int) -> None:
    now = timezone.now()
    created = ProcessFlow.objects.bulk_create(ProcessFlow(company=company, name=f"Flow {n:02}", enabled=n % 2 == 0)
                                              for n in range(flows))
    statuses = [RunStatus.FAILED, RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS, RunStatus.RUNNING]  # newest first
    FlowRun.objects.bulk_create(
        FlowRun(company=company, flow=flow, status=statuses[n % len(statuses)], trigger=RunTrigger.SCHEDULE,
                queued_at=now - timedelta(hours=n), reference_time=now - timedelta(hours=n))
        for flow in created for n in range(runs_each)
    )
    FlowSchedule.objects.bulk_create(
        FlowSchedule(flow=flow, kind="daily", cron="0 6 * * *", description="Daily", next_run_at=now + timedelta(hours=n))
        for flow in created for n in range(2)
    )
    Shape.objects.bulk_create(Shape(flow=flow, position=n, kind=ShapeKind.FILTER) for flow in created for n in range(3))


@pytest.mark.parametrize("query", [{}, {"status": "failing", "q": "flow"}])
def test_the_number_of_queries_does_not_grow_with_flows_and_runs(admin_client, company, other_company, query):
    admin_client.get("/flows/")  # session and user loaded once, as on every later page

    _flows_with_runs(company, flows=3, runs_each=2)
    with CaptureQueriesContext(connection) as few:
        rows = flow_rows(admin_client, **query)
    assert len(rows) >= 1

    ProcessFlow.objects.for_company(company).delete()
    _flows_with_runs(company, flows=30, runs_each=40)
    _flows_with_runs(other_company, flows=5, runs_each=10)
    with CaptureQueriesContext(connection) as many:
        rows = flow_rows(admin_client, **query)
    assert len(rows) == 25
    assert len(many) == len(few), [q["sql"][:200] for q in many.captured_queries]
