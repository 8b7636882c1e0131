"""In Chromium: a run page's step opened page by page, its records searched, a request's response read; axe on each state."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from flows import execution, queueing
from flows.models import RunStatus, RunTrigger
from patchworks_site.models import Role
from tests.flow_helpers import connector, instance  # noqa: F401 - fixtures
from tests.test_browser_accessibility import Audit, _log_in, a11y_page  # noqa: F401 - fixture
from tests.test_run_checkpoints import Shop, batch_flow, paginated  # noqa: F401 - fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_step_shows_each_page_s_records_and_requests_and_its_records_can_be_searched(
    a11y_page, company, paginated, httpserver, make_user
):
    page = a11y_page
    Shop(httpserver)
    run = execution.execute(queueing.queue_run(batch_flow(company, paginated), RunTrigger.MANUAL).pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    user = make_user(company, Role.READ_ONLY)
    audit = Audit(page)
    _log_in(page, user.username, "pw-for-tests")
    page.wait_for_url("**/connectors/")

    page.goto(f"/flows/runs/{run.pk}/")
    receive = page.get_by_test_id("shape-run").first
    receive.get_by_text("Step by step: records and requests of each page").click()
    pages = receive.get_by_test_id("step-page")
    expect(pages).to_have_count(4)
    audit("run page, a step opened")

    first = pages.first
    first.get_by_text("Went out: 3 records").click()
    records = first.get_by_test_id("payload-records")
    expect(records).to_contain_text('"customer": "customer-1@example.com"')
    expect(records.locator("pre")).to_have_count(3)
    # htmx wires up what it swapped in (this search form) when the swap settles, a settle delay after the
    # records show: typing before that would go unheard, as it could not for a person.
    expect(page.locator(".htmx-settling, .htmx-request")).to_have_count(0)

    search = first.get_by_label("Search the records")
    search.fill("customer-2@")
    expect(records.locator("pre")).to_have_count(1)
    expect(records).to_contain_text("1 of 3 records contain “customer-2@”")
    expect(records).not_to_contain_text("customer-1@example.com")
    expect(search).to_be_focused()  # only the results were swapped
    audit("run page, a page's records searched")

    first.get_by_test_id("step-request").locator("summary").click()
    request = first.get_by_test_id("run-request")
    expect(request.get_by_test_id("response-pane")).to_contain_text('"customer": "customer-3@example.com"')
    expect(request.get_by_test_id("response-code")).to_have_text("200")
    request.get_by_role("tab", name="request").click()
    expect(request.get_by_test_id("request-pane")).to_contain_text("Authorization")
    expect(request.get_by_test_id("request-pane")).to_contain_text("[redacted]")
    expect(request.get_by_test_id("request-pane")).to_contain_text(re.compile(r"/api/orders\?.*page=1"))
    audit("run page, a request's request tab")

    # Without htmx the same views are pages of their own.
    page.goto(f"/flows/runs/{run.pk}/requests/{run.stored_requests.order_by('pk').first().pk}/")
    expect(page.get_by_test_id("response-pane")).to_be_visible()
    audit("a request's own page")
    page.goto(f"/flows/runs/{run.pk}/payloads/{run.payloads.order_by('pk').first().pk}/?q=customer-3")
    expect(page.get_by_test_id("payload-records").locator("pre")).to_have_count(1)
    audit("a page's records, searched, on their own page")
    audit.assert_clean()
