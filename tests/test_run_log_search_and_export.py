"""The run log's search, company-time-zone dates, keyset pages and CSV export."""

from __future__ import annotations

import csv
import io
import re
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from flows.models import FlowRun, FlowRunShape, ProcessFlow, RunStatus, RunTrigger
from flows.run_log import PAGE_SIZE
from patchworks_site.models import Role

RUN_LINK = re.compile(r'<a href="/flows/runs/(\d+)/">Run ')
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def make_run(flow, at=START, status=RunStatus.SUCCESS, **fields):
    return FlowRun.objects.create(company=flow.company, flow=flow, status=status,
                                  trigger=fields.pop("trigger", RunTrigger.MANUAL), queued_at=at, reference_time=at,
                                  **fields)


def shown(client, url):
    response = client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    return page, [int(n) for n in RUN_LINK.findall(page)]


def link(page, name):
    match = re.search(rf'data-testid="{name}" href="([^"]+)"', page)
    return match[1].replace("&amp;", "&") if match else None


def exported(client, url):
    response = client.get(url)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()
    return text, list(csv.reader(io.StringIO(text)))


@pytest.fixture
def flows(company, other_company):
    return (ProcessFlow.objects.create(company=company, name="Orders to ERP"),
            ProcessFlow.objects.create(company=company, name="Stock sync"),
            ProcessFlow.objects.create(company=other_company, name="Orders to ERP"))


def test_search_finds_flow_names_failure_reasons_and_request_urls_of_the_company_only(admin_client, flows):
    orders, stock, foreign = flows
    by_name = make_run(orders)
    by_reason = make_run(stock, status=RunStatus.FAILED, failure_reason="The ERP answered 503 Service Unavailable")
    by_url = make_run(stock, status=RunStatus.FAILED, failure_reason="Step 2 failed")
    FlowRunShape.objects.create(run=by_url, position=1, shape_name="send", started_at=START, failed_exchanges=[
        {"method": "POST", "url": "https://erp.example.com/api/v2/Imports?token=[redacted]", "status": 500}])
    make_run(foreign, failure_reason="The ERP answered 503", status=RunStatus.FAILED)
    FlowRunShape.objects.create(run=make_run(foreign), position=0, shape_name="x", started_at=START,
                                failed_exchanges=[{"url": "https://erp.example.com/api/v2/imports"}])

    assert shown(admin_client, "/flows/runs/?q=orders+to")[1] == [by_name.pk]
    assert shown(admin_client, "/flows/runs/?q=service+unavail")[1] == [by_reason.pk]
    assert shown(admin_client, "/flows/runs/?q=api/v2/imports")[1] == [by_url.pk]
    assert sorted(shown(admin_client, "/flows/runs/?q=erp")[1]) == [by_name.pk, by_reason.pk, by_url.pk]
    page, runs = shown(admin_client, "/flows/runs/?q=nothing+like+this")
    assert runs == [] and "No runs match these filters." in page
    # Search and filters together, and within one flow.
    assert sorted(shown(admin_client, "/flows/runs/?q=erp&status=failed")[1]) == [by_reason.pk, by_url.pk]
    assert shown(admin_client, f"/flows/{orders.pk}/runs/?q=503")[1] == []
    assert admin_client.get("/flows/runs/", {"q": "a\x00b"}).status_code == 400
    assert admin_client.get("/flows/runs/export.csv", {"q": "a\x00b"}).status_code == 400


def test_the_date_range_is_in_the_company_s_time_zone(admin_client, company, flows):
    orders = flows[0]
    late = make_run(orders, at=datetime(2026, 7, 14, 23, 30, tzinfo=UTC))  # 00:30 on 15 July in London (BST)
    day_before = make_run(orders, at=datetime(2026, 7, 14, 22, 59, tzinfo=UTC))  # 23:59 on 14 July in London

    # The default zone is UTC.
    page, runs = shown(admin_client, "/flows/runs/?queued_from=2026-07-15")
    assert runs == [] and "Queued from (UTC)" in page
    company.time_zone = "Europe/London"
    company.save()
    page, runs = shown(admin_client, "/flows/runs/?queued_from=2026-07-15&queued_to=2026-07-15")
    assert runs == [late.pk]
    assert "Queued from (Europe/London)" in page and "Queued to (Europe/London)" in page and "(UTC)" not in page
    assert shown(admin_client, "/flows/runs/?queued_to=2026-07-14")[1] == [day_before.pk]
    rows = exported(admin_client, "/flows/runs/export.csv?queued_from=2026-07-15")[1]
    assert [row[0] for row in rows[1:]] == [str(late.pk)]
    # The ends of the calendar stay usable in a zone ahead of UTC.
    assert sorted(shown(admin_client, "/flows/runs/?queued_from=0001-01-01&queued_to=9999-12-31")[1]) == sorted(
        [late.pk, day_before.pk])


@pytest.mark.parametrize("of_flow", [False, True], ids=["all-flows", "one-flow"])
def test_keyset_pages_walk_older_and_newer_without_duplicates_or_gaps(admin_client, flows, of_flow):
    orders, stock, foreign = flows
    # 60 runs, pairs sharing a queued-at time (the id breaks the tie), plus runs of other flows/companies.
    made = [make_run(orders, at=START + timedelta(minutes=n // 2),
                     status=RunStatus.FAILED if n % 3 else RunStatus.SUCCESS) for n in range(60)]
    make_run(foreign, at=START + timedelta(minutes=5))
    if not of_flow:
        made.append(make_run(stock, at=START - timedelta(days=1)))
    newest_first = [run.pk for run in sorted(made, key=lambda r: (r.queued_at, r.pk), reverse=True)]
    base = f"/flows/{orders.pk}/runs/" if of_flow else "/flows/runs/"

    pages, url = [], base
    while url:
        page, runs = shown(admin_client, base + url if url.startswith("?") else url)
        pages.append(runs)
        url = link(page, "older")
    assert [len(p) for p in pages] == [PAGE_SIZE, PAGE_SIZE, len(made) - 2 * PAGE_SIZE]
    assert [pk for p in pages for pk in p] == newest_first
    assert 'data-testid="newer"' not in shown(admin_client, base)[0]

    # Back up from the last page with "newer".
    back, url = [], link(page, "newer")
    while url:
        page, runs = shown(admin_client, base + url)
        back.append(runs)
        url = link(page, "newer")
    assert back == pages[-2::-1]

    # The cursor keeps the filters and the search.
    page, runs = shown(admin_client, base + "?status=failed&q=orders")
    failed = [pk for pk in newest_first if FlowRun.objects.get(pk=pk).status == RunStatus.FAILED]
    assert runs == failed[:PAGE_SIZE]
    older = link(page, "older")
    assert "status=failed" in older and "q=orders" in older and "before=" in older
    assert shown(admin_client, base + older)[1] == failed[PAGE_SIZE:]
    export = link(page, "export-csv")
    assert "status=failed" in export and "before" not in export


@pytest.mark.parametrize("cursor", ["garbage", "20261301T000000.000000Z_1", "20260301T090000.000000Z_", "\x00",
                                    "20260301T090000.000000Z_99999999999999999999", "²", ""])
@pytest.mark.parametrize("name", ["before", "after"])
def test_a_malformed_cursor_shows_the_newest_page(admin_client, flows, cursor, name):
    runs = [make_run(flows[0], at=START + timedelta(minutes=n)) for n in range(PAGE_SIZE + 3)]
    page, shown_runs = shown(admin_client, "/flows/runs/?" + f"{name}={cursor}".replace("\x00", "%00"))
    assert shown_runs == [run.pk for run in runs[::-1][:PAGE_SIZE]]
    assert 'data-testid="newer"' not in page


def test_a_deep_page_costs_the_queries_of_the_first(admin_client, flows):
    FlowRun.objects.bulk_create(FlowRun(company=flows[0].company, flow=flows[0], status=RunStatus.SUCCESS,
                                        trigger=RunTrigger.MANUAL, queued_at=START + timedelta(seconds=n),
                                        reference_time=START) for n in range(PAGE_SIZE * 6))
    admin_client.get("/flows/runs/")  # warm the session and caches
    with CaptureQueriesContext(connection) as first:
        page = admin_client.get("/flows/runs/").content.decode()
    for _ in range(4):
        page = admin_client.get("/flows/runs/" + link(page, "older")).content.decode()
    with CaptureQueriesContext(connection) as deep:
        page = admin_client.get("/flows/runs/" + link(page, "older")).content.decode()
    assert len(RUN_LINK.findall(page)) == PAGE_SIZE and link(page, "older") is None
    assert len(deep) == len(first)
    assert not any("OFFSET" in q["sql"].upper() or "COUNT(" in q["sql"].upper() for q in deep.captured_queries)


def test_the_csv_export_is_streamed_filtered_escaped_and_of_the_company_only(
    client_for, make_user, company, other_company, make_connector, make_instance,
):
    canary = "CANARYCO-" + secrets.token_hex(12)
    instance = make_instance(make_connector(company), "Shop", secrets={"api_token": canary})
    formula = ProcessFlow.objects.create(company=company, name='=HYPERLINK("https://evil.example","click")')
    plain = ProcessFlow.objects.create(company=company, name="Stock sync")
    foreign = ProcessFlow.objects.create(company=other_company, name="Globex orders")
    failed = make_run(formula, status=RunStatus.FAILED, failure_reason="+1 item was refused", trigger=RunTrigger.SCHEDULE,
                      started_at=START + timedelta(seconds=5), finished_at=START + timedelta(seconds=95),
                      warnings=["slow", "-retried"], attempt=2)
    FlowRunShape.objects.create(run=failed, position=0, shape_name="send", started_at=START, payload_sample=[canary],
                                failed_exchanges=[{"url": f"https://x.example/?k={canary}", "body": canary}])
    ok = make_run(plain, at=START + timedelta(hours=1))
    make_run(foreign, failure_reason="Globex secret failure")
    assert instance.pk

    reader = client_for(make_user(company, Role.READ_ONLY))
    page = reader.get("/flows/runs/").content.decode()
    assert link(page, "export-csv") == "/flows/runs/export.csv"
    text, rows = exported(reader, "/flows/runs/export.csv")
    assert rows[0] == ["run id", "flow", "status", "trigger", "queued at", "started at", "finished at",
                       "duration seconds", "attempt", "failure reason", "warnings"]
    assert rows[1] == [str(ok.pk), "Stock sync", "success", "manual", "2026-03-01T10:00:00+00:00", "", "", "", "1", "", "0"]
    assert rows[2] == [str(failed.pk), '\'=HYPERLINK("https://evil.example","click")', "failed", "schedule",
                       "2026-03-01T09:00:00+00:00", "2026-03-01T09:00:05+00:00", "2026-03-01T09:01:35+00:00",
                       "90.0", "2", "'+1 item was refused", "2"]
    assert len(rows) == 3
    assert "Globex" not in text and canary not in text and canary[:12] not in text

    # Filters and search apply; one flow's export holds only its runs.
    assert [row[0] for row in exported(reader, "/flows/runs/export.csv?status=failed")[1][1:]] == [str(failed.pk)]
    assert [row[0] for row in exported(reader, "/flows/runs/export.csv?q=stock")[1][1:]] == [str(ok.pk)]
    assert [row[0] for row in exported(reader, f"/flows/{plain.pk}/runs/export.csv")[1][1:]] == [str(ok.pk)]
    # Another company's flow is not found; its users export only their own runs.
    assert reader.get(f"/flows/{foreign.pk}/runs/export.csv").status_code == 404
    outsider_text, outsider_rows = exported(client_for(make_user(other_company, Role.READ_ONLY)), "/flows/runs/export.csv")
    assert len(outsider_rows) == 2 and "Globex orders" in outsider_text and "HYPERLINK" not in outsider_text


@pytest.mark.parametrize("value, expected", [
    ("=1+1", "'=1+1"), ("+44", "'+44"), ("-3", "'-3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("plain", "plain"), ("a=b", "a=b"), (None, ""), (3, "3"),
])
def test_cells_that_a_spreadsheet_would_run_are_quoted(value, expected):
    from flows.run_log import safe_cell

    assert safe_cell(value) == expected
