"""Test step in a browser: press it on a map, watch the card poll until the worker is done, then use the sample.

The run the button queues is executed by the test (as a worker would, flows.execution.execute) while the page
polls; the card then shows the mapped records, and the map's "from input field" inputs offer the paths of the
records that entered the map. axe-core finds no serious or critical violation in the editor's new states.
"""

from __future__ import annotations

import json

import pytest
from huey.contrib.djhuey import HUEY
from playwright.sync_api import expect

from flows import execution
from flows.models import FlowRun, RunStatus, RunTrigger
from patchworks_site.models import Role
from tests.flow_helpers import connection, connector, flow_of, instance, map_shape  # noqa: F401 - fixtures
from tests.test_browser_accessibility import Audit, a11y_page  # noqa: F401 - fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ORDERS = [
    {"id": 7, "customer": {"email": "ann@example.com"}, "lines": [{"sku": "A-1", "qty": 2}]},
    {"id": 8, "customer": {"email": "bob@example.com"}, "lines": [{"sku": "B-7", "qty": 1}]},
]


def _log_in(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/connectors/")


def test_a_test_step_on_a_map_shows_its_sample_and_the_map_offers_its_paths(a11y_page, make_user, company,  # noqa: F811
                                                                           instance, httpserver):  # noqa: F811
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    flow = flow_of(company, connection(instance, "list_orders"),
                   map_shape({"target": "email", "source": "customer.email"}), connection(instance, "import_order"),
                   name="Orders to ERP")
    mapping = flow.shapes.get(position=1)
    make_user(company, Role.USER, "tess")
    page = a11y_page
    audit = Audit(page)
    _log_in(page, "tess")
    page.goto(f"/flows/{flow.pk}/")

    page.get_by_role("button", name="test step 2").click()
    card = page.locator(f"#test-result-{mapping.pk}")
    expect(card.get_by_test_id("test-step-progress")).to_contain_text("Testing step 2")
    expect(card.get_by_test_id("test-step-progress")).to_contain_text("waiting for a worker")
    audit("flow editor, test step in progress")
    run = FlowRun.objects.get(test_shape=mapping, trigger=RunTrigger.TEST)
    HUEY.flush()  # the queue's copy of the task: this test is the worker
    assert execution.execute(run.pk).status == RunStatus.SUCCESS

    # The card's next poll (every second) shows the records that came out of the map.
    expect(card.get_by_test_id("test-step-records")).to_be_visible()
    expect(card).to_contain_text("Records out of this step: 2")
    records = json.loads(card.get_by_test_id("test-step-records").inner_text())
    assert records == [{"email": "ann@example.com"}, {"email": "bob@example.com"}]
    expect(card.get_by_test_id("test-step-progress")).to_have_count(0)
    audit("flow editor, test step result")

    # The map's settings: "from input field" offers the paths of the records that entered the map.
    page.get_by_role("link", name="edit step 2").click()
    source = page.get_by_label("Row 1: From input field", exact=True)
    expect(source).to_have_attribute("list", f"source-paths-{mapping.pk}")
    offered = source.evaluate("input => Array.from(input.list.options, option => option.value)")
    assert offered == ["customer", "customer.email", "id", "lines", "lines.0", "lines.0.qty", "lines.0.sku"]
    audit("flow editor, map settings offering the test step's paths")
    page.get_by_label("Row 2: Output field", exact=True).fill("sku")
    page.get_by_label("Row 2: From input field", exact=True).fill("lines.0.sku")
    page.get_by_role("button", name="save step 2").click()
    expect(page.get_by_text("2 fields: email ← customer.email, sku ← lines.0.sku")).to_be_visible()
    mapping.refresh_from_db()
    assert mapping.config["fields"][1] == {"target": "sku", "source": "lines.0.sku", "constant": "", "convert_date": False}

    # The send shape: what it would send, and that it was not sent.
    page.get_by_role("button", name="test step 3").click()
    send_card = page.locator(f"#test-result-{flow.shapes.get(position=2).pk}")
    expect(send_card.get_by_test_id("test-step-progress")).to_be_visible()
    HUEY.flush()
    execution.execute(FlowRun.objects.get(test_shape__position=2).pk)
    expect(send_card.get_by_test_id("not-sent")).to_have_text("not sent: test step")
    expect(send_card.get_by_test_id("would-send")).to_have_count(2)
    expect(send_card.get_by_test_id("would-send").first).to_contain_text(f"POST {httpserver.url_for('/api/imports')}")
    audit("flow editor, test step of a send shape")
    # Nothing was ever sent to the API.
    assert [request.path for request, _ in httpserver.log] == ["/api/orders", "/api/orders"]
    audit.assert_clean()
