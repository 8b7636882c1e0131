"""A whole process flow built and run in the browser, the way a new user would.

Sandbox orders (a London instance) → filter (updated in the last 24 hours) → map → Sandbox Create order on a
New York instance with a US date format. The flow is built by clicking on the flow pages, **run now** queues it,
a real worker process (`manage.py run_huey`) runs it against the Sandbox API served by the live server, and the
run page follows it from queued to running to success. The Sandbox's received orders page shows the result.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from flows.models import FlowRun, ProcessFlow, RunStatus, ShapeKind
from patchworks_site.models import Role
from sandbox import data as sandbox_data
from sandbox.models import SandboxAccount, SandboxReceivedOrder
from tests.test_engine_workers import Workers

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

US_FORMAT = "%m/%d/%Y %H:%M"


@pytest.fixture
def worker_pool(tmp_path, live_server):
    pool = Workers("sqlite", tmp_path)
    pool.env["SANDBOX_BASE_URL"] = f"{live_server.url}/sandbox/api"  # the live server is this deployment's Sandbox
    yield pool
    pool.close()


@pytest.fixture
def sandbox_instances(live_server, company, sandbox_listing, install, make_instance, settings):
    """Two instances of the Sandbox 1.5.0 connector, in London (ISO dates) and in New York (US dates).

    Both hold the company's Sandbox account key, as an Administrator issued it, so what they send is the company's.
    """
    settings.SANDBOX_BASE_URL = f"{live_server.url}/sandbox/api"
    connector = install(sandbox_listing, company)
    assert connector.version == "1.5.0"
    token = connector.auth_methods.get(key="token")
    secrets = {"api_token": "sandbox-token", "account_key": SandboxAccount.objects.for_company(company.pk).issue_key()}
    values = {"base_url": f"{live_server.url}/sandbox/api"}
    london = make_instance(connector, "Sandbox - London", secrets, auth_method=token,
                           values=values, time_zone="Europe/London")
    new_york = make_instance(connector, "Sandbox - New York", secrets, auth_method=token,
                             values=values, time_zone="America/New_York", date_format=US_FORMAT)
    # The catalog's 120 a minute would make the ~120 sends take a minute; 20 a second (a sliding window)
    # makes them take at least 5 s: long enough for the run page, refreshing every 2 s, to show it running.
    for instance in (london, new_york):
        instance.rate_limit_amount, instance.rate_limit_unit = 20, "second"
        instance.save()
    return london, new_york


def _fill_row(page, row: int, **fields: str) -> None:
    for label, value in fields.items():
        page.get_by_label(f"Row {row}: {label}", exact=True).fill(value)


def test_a_new_user_builds_runs_and_checks_a_sandbox_flow(page, log_in, make_user, company, sandbox_instances,
                                                          worker_pool):
    london, new_york = sandbox_instances
    make_user(company, Role.USER, "newbie")
    log_in("newbie")

    # A new process flow.
    page.goto("/flows/")
    page.get_by_label("Name").fill("Sandbox orders to New York")
    page.get_by_role("button", name="create process flow").click()
    expect(page.get_by_role("heading", name=re.compile("Sandbox orders to New York"))).to_be_visible()
    flow = ProcessFlow.objects.get(company=company, name="Sandbox orders to New York")

    # Step 1: receive the London instance's orders, only those updated since the filter's earliest moment.
    page.get_by_label("Instance and endpoint").select_option(f"{london.pk}:{london.connector.endpoints.get(key='list_orders').pk}")
    page.get_by_role("button", name="add connection shape").click()
    expect(page.get_by_text("Connection shape added: Sandbox - London → List orders.")).to_be_visible()
    page.get_by_role("link", name="edit step 1").click()
    panel = page.locator("#shape-panel")
    expect(panel.get_by_text("Step 1: connection shape")).to_be_visible()
    panel.get_by_label("Updated since").fill("{{since}}")
    panel.get_by_role("button", name="save step 1").click()
    expect(page.get_by_text("Step 1 (connection) saved.")).to_be_visible()

    # Step 2: keep orders updated in the last 24 hours.
    page.get_by_role("button", name="add filter shape").click()
    page.wait_for_url("**/shapes/*/")
    _fill_row(page, 1, Field="updated_at", Value="24")
    page.get_by_label("Row 1: Comparison").select_option("in_last")
    page.get_by_label("Row 1: Unit").select_option("hours")
    page.get_by_role("button", name="save step 2").click()
    page.wait_for_url(f"**/flows/{flow.pk}/")
    expect(page.get_by_text("Keeps items where updated_at in the last 24 hours")).to_be_visible()

    # Step 3: map the order to what the New York side expects, its update time in US format.
    page.get_by_role("button", name="add map shape").click()
    page.wait_for_url("**/shapes/*/")
    mapping = [("reference", "number"), ("customer", "customer.name"), ("total", "total"), ("updated", "updated_at")]
    # A new map passes items on unchanged ("Keep unmapped fields" is ticked): only the mapped fields are wanted.
    # The form offers three empty rows: save three fields, and the shape comes back with new empty rows.
    expect(page.get_by_label("Keep unmapped fields")).to_be_checked()
    page.get_by_label("Keep unmapped fields").uncheck()
    for row, (target, source) in enumerate(mapping[:3], start=1):
        _fill_row(page, row, **{"Output field": target, "From input field": source})
    page.get_by_role("button", name="save step 3").click()
    page.wait_for_url(f"**/flows/{flow.pk}/")
    page.get_by_role("link", name="edit step 3").click()
    panel = page.locator("#shape-panel")
    expect(panel.get_by_label("Row 3: Output field", exact=True)).to_have_value("total")
    target, source = mapping[3]
    _fill_row(panel, 4, **{"Output field": target, "From input field": source})
    panel.get_by_label("Row 4: Convert date").check()
    panel.get_by_role("button", name="save step 3").click()
    # The first save's message is still on the page: wait for the reloaded list with the fourth field.
    expect(page.locator("#shape-list").get_by_test_id("shape-summary").nth(2)).to_contain_text(
        "updated ← updated_at (date)")
    expect(page.locator("#shape-panel")).to_be_empty()

    # Step 4: send each order to the New York instance.
    create_order = new_york.connector.endpoints.get(key="create_order")
    page.get_by_label("Instance and endpoint").select_option(f"{new_york.pk}:{create_order.pk}")
    page.get_by_role("button", name="add connection shape").click()
    expect(page.get_by_text("Connection shape added: Sandbox - New York → Create order.")).to_be_visible()

    expect(page.get_by_test_id("shape-kind")).to_have_text(["connection", "filter", "map", "connection"])
    shapes = list(flow.shapes.order_by("position"))
    assert [s.kind for s in shapes] == [ShapeKind.CONNECTION, ShapeKind.FILTER, ShapeKind.MAP, ShapeKind.CONNECTION]
    assert shapes[0].config["parameters"] == {"updated_since": "{{since}}"}
    assert shapes[1].config["rules"] == [{"field": "updated_at", "comparison": "in_last", "value": "24",
                                          "unit": "hours"}]
    assert shapes[2].config["keep_unmapped"] is False
    assert [(f["target"], f["source"], f["convert_date"]) for f in shapes[2].config["fields"]] == [
        ("reference", "number", False), ("customer", "customer.name", False), ("total", "total", False),
        ("updated", "updated_at", True),
    ]

    # Run now: the run page shows it queued (no worker yet), then running, then success — by itself (htmx).
    page.get_by_role("button", name="run now").click()
    page.wait_for_url("**/flows/runs/*/")
    status = page.get_by_test_id("run-status").first
    expect(status).to_have_text("queued")
    expect(page.get_by_text("Waiting for a worker.")).to_be_visible()
    run = FlowRun.objects.get(flow=flow)
    worker_pool.start()
    expect(status).to_have_text("running", timeout=30_000)
    expect(status).to_have_text("success", timeout=60_000)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS, f"{run.failure_reason}\n{worker_pool.logs()}"

    # The counts on the page: orders received, kept by the filter, mapped, sent.
    receive, keep, remap, send = run.shape_runs.order_by("position")
    received = receive.items_out
    # 12 minutes apart, newest first: the last 24 hours hold 120 of the Sandbox's 240 orders (121 when the run
    # was queued exactly on a 10-minute mark). updated_since already asked the Sandbox for just those.
    # Two pages of at most 100 hold them; page numbers go on until an empty page.
    assert received in (120, 121) and receive.requests == 3, (received, receive.requests)
    assert (keep.items_in, keep.items_out, remap.items_out, send.items_in, send.items_out, send.requests) == (
        received, received, received, received, received, received)
    shape_rows = page.get_by_test_id("shape-run")
    expect(shape_rows).to_have_count(4)
    expect(shape_rows.nth(0)).to_contain_text("Sandbox - London → List orders")
    expect(shape_rows.nth(0)).to_contain_text(f"0 items in · {received} out · {receive.pages} pages · 3 requests")
    expect(shape_rows.nth(1)).to_contain_text(f"{received} items in · {received} out")
    expect(shape_rows.nth(2)).to_contain_text(f"{received} items in · {received} out")
    expect(shape_rows.nth(3)).to_contain_text("Sandbox - New York → Create order")
    expect(shape_rows.nth(3)).to_contain_text(f"{received} items in · {received} out · 0 pages · {received} requests")

    # The run log lists it; its detail opens from there.
    page.get_by_role("link", name="run log").first.click()
    row = page.get_by_test_id("run-row").filter(has_text=f"Run {run.pk}")
    expect(row.get_by_test_id("run-status")).to_have_text("success")
    row.get_by_role("link", name=f"Run {run.pk}").click()
    expect(page.get_by_role("heading", name=f"Run {run.pk} of Sandbox orders to New York success")).to_be_visible()
    # A sample of what the last shape sent: mapped fields only, the date in New York's US format.
    sent_sample = page.get_by_test_id("shape-run").nth(3).get_by_test_id("payload-sample")
    sent_sample.get_by_text("Sample items").click()
    sample_in = sent_sample.locator("pre").first
    expect(sample_in).to_contain_text(re.compile(r'"updated": "\d\d/\d\d/\d{4} \d\d:\d\d"'))
    expect(sample_in).not_to_contain_text("updated_at")

    # What the Sandbox received, in the order it was sent: the newest order first, with its update time written
    # in New York time in the US format — read back, it is the Sandbox's newest order at the run's anchor.
    sent = [s.body for s in SandboxReceivedOrder.objects.order_by("id")]
    assert len(sent) == received
    assert set(sent[0]) == {"reference", "customer", "total", "updated"}
    assert re.fullmatch(r"\d\d/\d\d/\d{4} \d\d:\d\d", sent[0]["updated"]), sent[0]
    anchor = datetime.strptime(sent[0]["updated"], US_FORMAT).replace(tzinfo=ZoneInfo("America/New_York"))
    assert abs(anchor - run.queued_at) < timedelta(minutes=20), (anchor, run.queued_at)
    newest = sandbox_data.order(0, anchor.astimezone(UTC))
    assert sent[0] == {"reference": newest["number"], "customer": newest["customer"]["name"],
                       "total": newest["total"], "updated": sent[0]["updated"]}

    page.goto("/sandbox/received-orders/")
    expect(page.get_by_role("heading", name="Orders the Sandbox received")).to_be_visible()
    expect(page.get_by_text(f"{received} orders received")).to_be_visible()
    last_sent = page.get_by_test_id("received-order").first  # newest received first
    expect(last_sent.get_by_test_id("reference")).to_have_text(sent[-1]["reference"])
    expect(last_sent.get_by_test_id("customer")).to_have_text(sent[-1]["customer"])
    expect(last_sent.get_by_test_id("total")).to_have_text(sent[-1]["total"])
    last_sent.get_by_text("JSON").click()
    expect(last_sent.locator("pre")).to_contain_text(f'"updated": "{sent[-1]["updated"]}"')
    # The newest order, sent first, is the last one received: at the end of the last page.
    for number in (2, 3):
        page.get_by_role("link", name="Next").click()
        expect(page.get_by_text(f"Page {number} of 3")).to_be_visible()
    first_sent = page.get_by_test_id("received-order").last
    expect(first_sent.get_by_test_id("reference")).to_have_text(newest["number"])
    expect(first_sent.get_by_test_id("customer")).to_have_text(newest["customer"]["name"])
    first_sent.get_by_text("JSON").click()
    expect(first_sent.locator("pre")).to_contain_text(f'"updated": "{anchor:%m/%d/%Y %H:%M}"')
