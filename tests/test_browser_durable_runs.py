"""A run followed in the browser while its worker is killed: running, then resumed as attempt 2, then success.

The flow reads orders in pages of two from the shop and sends each page as one
batch to the Sandbox's Create order (Idempotency-Key header), served by the
live server behind a proxy that holds the Sandbox's answer to page 2: the
Sandbox has stored that batch when the worker is killed with kill -9. Another
worker resumes the run from page 2 and sends the batch again with the same key,
and the Sandbox's received orders page shows each order once. Screenshots of
each step go to /tmp/durable-shots/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from flows.models import FlowRun, RunStatus
from patchworks_site.models import Role
from sandbox.models import SandboxReceivedOrder
from tests.durable_helpers import kill, make_workers
from tests.flow_helpers import connection, flow_of
from tests.test_durable_runs import api, sandbox, shop  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/durable-shots")


@pytest.fixture
def workers(tmp_path, settings, live_server):
    pool = make_workers("sqlite", tmp_path, settings)
    yield pool
    pool.close()


def test_the_run_page_follows_a_run_whose_worker_is_killed_to_its_resumed_success(
    page, log_in, make_user, company, workers, api, sandbox, shop  # noqa: F811
):
    SHOTS.mkdir(exist_ok=True)
    sandbox_instance, proxy = sandbox
    api()
    flow = flow_of(company, connection(shop, "list_orders"), connection(sandbox_instance, "create_order", send_as="batch"),
                   name="Shop orders to the Sandbox")
    hold = proxy.hold_when(lambda body: isinstance(body, list) and body[0]["id"] == 3)
    make_user(company, Role.ADMINISTRATOR, "operator")
    log_in("operator")

    page.goto(f"/flows/{flow.pk}/")
    page.get_by_role("button", name="run now").click()
    page.wait_for_url("**/flows/runs/*/")
    status = page.get_by_test_id("run-status").first
    expect(status).to_have_text("queued")
    page.screenshot(path=SHOTS / "1-queued.png", full_page=True)
    run = FlowRun.objects.get(flow=flow)

    victim = workers.start()
    expect(status).to_have_text("running", timeout=30_000)
    assert hold.arrived.wait(60), workers.logs()
    # Page 1 is done (its counts are on the page); the Sandbox stored page 2 and holds its answer.
    shape_rows = page.get_by_test_id("shape-run")
    expect(shape_rows.nth(1)).to_contain_text("2 items in · 2 out")
    page.screenshot(path=SHOTS / "2-running-page-2-in-flight.png", full_page=True)
    kill(victim)
    hold.release.set()
    # Attempt 2 is held at page 3 for a moment, so the page can be seen running it.
    page_3 = proxy.hold_when(lambda body: isinstance(body, list) and body[0]["id"] == 5)
    workers.start()

    attempts = page.get_by_test_id("run-attempts")
    assert page_3.arrived.wait(60), workers.logs()
    expect(attempts).to_contain_text("attempt 2: resumed from page 2", timeout=30_000)
    expect(status).to_have_text("running")
    expect(shape_rows.nth(1)).to_contain_text("4 items in · 4 out")
    page.screenshot(path=SHOTS / "3-running-attempt-2.png", full_page=True)
    page_3.release.set()
    expect(status).to_have_text("success", timeout=60_000)
    expect(attempts).to_contain_text("attempt 2: resumed from page 2")
    expect(shape_rows.nth(0)).to_contain_text("0 items in · 6 out")
    expect(shape_rows.nth(1)).to_contain_text("6 items in · 6 out")
    page.screenshot(path=SHOTS / "4-success.png", full_page=True)
    run.refresh_from_db()
    assert (run.status, run.attempt) == (RunStatus.SUCCESS, 2), run.failure_reason

    # The batch of page 2 went twice with one key; the Sandbox stored it once.
    keys = [key for key, body, _, _ in proxy.posts() if body[0]["id"] == 3]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert sorted(SandboxReceivedOrder.objects.values_list("reference", flat=True)) == [f"SO-{n}" for n in range(1, 7)]
    page.goto("/sandbox/received-orders/")
    expect(page.get_by_text("6 orders received")).to_be_visible()
    expect(page.get_by_test_id("duplicate-count")).to_have_text(re.compile(r"0 duplicates: each order reference is here once"))
    page.screenshot(path=SHOTS / "5-sandbox-received-orders.png", full_page=True)
