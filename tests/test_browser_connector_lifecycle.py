"""Connector lifecycle in a real browser: the builder, then updates of a modified prebuilt connector."""

import re

import pytest
from playwright.sync_api import expect

from connectors.models import Connector
from flows.models import ProcessFlow, Shape
from instances.models import Instance
from marketplace import catalog
from marketplace.models import Listing
from patchworks_site.models import Company, Role, User

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def operator(live_server):
    company = Company.objects.create(name="Acme Retail")
    User.objects.create_user("builder", password="pw-for-tests", company=company, role=Role.MANAGER)
    return company


def test_building_a_custom_connector_and_adding_an_instance_to_it(page, log_in, operator, httpserver):
    httpserver.expect_request("/api/me", headers={"Authorization": "Bearer wh-secret-1"}).respond_with_json({"ok": True})
    log_in("builder")
    page.get_by_role("button", name="More ways to add a connector").click()
    page.get_by_role("link", name="build a connector").click()

    page.get_by_label("Name").fill("Warehouse API")  # basic details
    page.get_by_label("Version").fill("1.0")
    page.get_by_label("System type").select_option("WMS")
    page.get_by_label("Base URL").fill(httpserver.url_for("/api"))
    page.get_by_role("button", name="next step").click()
    expect(page.get_by_role("link", name="2. variables")).to_have_attribute("aria-current", "step")

    page.get_by_role("link", name="3. authentication methods").click()  # no variables needed
    page.get_by_label("Name").fill("API key")
    page.get_by_label("Type").select_option("token")
    page.get_by_role("button", name="add authentication method").click()
    expect(page.get_by_role("alert").first).to_contain_text("added")
    page.get_by_label("Test request path").fill("/me")
    page.get_by_role("button", name="save authentication method").click()
    expect(page.get_by_role("alert").first).to_contain_text("saved")

    page.get_by_role("link", name="4. endpoints").click()
    page.locator("#id_name").fill("List stock")
    page.get_by_label("Entity").fill("Stock")
    page.get_by_label("Direction").select_option("receive")
    page.get_by_label("Method").select_option("GET")
    page.get_by_role("textbox", name="Path*", exact=True).fill("/stock")
    # Only the chosen pagination style's fields show (all of them without JavaScript).
    expect(page.get_by_label("Page parameter")).to_be_hidden()
    page.get_by_label("Pagination").select_option("page_number")
    expect(page.get_by_label("Page parameter")).to_be_visible()
    expect(page.get_by_label("Next token path")).to_be_hidden()
    page.get_by_label("Pagination").select_option("none")
    page.get_by_role("button", name="add endpoint").click()
    expect(page.get_by_test_id("ready")).to_be_visible()
    page.get_by_role("button", name="Clone endpoint List stock").click()
    expect(page.get_by_test_id("builder-endpoint")).to_have_count(2)

    page.get_by_role("link", name="done").click()
    page.goto("/connectors/")
    card = page.get_by_test_id("connector").filter(has_text="Warehouse API")
    expect(card).to_contain_text("custom")
    card.get_by_role("link", name="add new instance").click()
    page.get_by_label("Name").fill("Warehouse - London")
    page.get_by_role("button", name="next step").click()
    page.get_by_role("button", name="next step").click()
    page.get_by_label(re.compile(r"^\s*API key\*?\s*$")).fill("wh-secret-1")
    page.get_by_role("button", name="next step").click()
    page.wait_for_url("**/connectors/?highlight=instance-*")
    row = page.get_by_test_id("instance").filter(has_text="Warehouse - London")
    expect(row.get_by_test_id("auth-status")).to_have_text("Authenticated")
    assert Instance.objects.get().connector.name == "Warehouse API"


def test_overwriting_a_modified_connector_keeps_instances_and_flows(page, log_in, operator):
    catalog.load_catalog()
    sandbox = catalog.install(Listing.objects.get(slug="sandbox").versions.get(version="1.0.0"), operator)
    instance = Instance.with_connector_defaults(sandbox, name="Sandbox - UK", auth_method=sandbox.auth_methods.get(key="token"))
    instance.set_secrets({"api_token": "sandbox-token"})
    instance.last_check_ok = True
    instance.save()
    flow = ProcessFlow.objects.create(company=operator, name="Orders sync", enabled=True)
    Shape.objects.create(flow=flow, instance=instance, endpoint=sandbox.endpoints.get(key="list_orders"))

    log_in("builder")
    page.get_by_role("link", name="Settings for connector Sandbox").click()
    page.get_by_role("link", name="modify").click()  # modify the prebuilt connector: add an endpoint
    page.get_by_role("link", name="4. endpoints").click()
    page.locator("#id_name").fill("List refunds")
    page.get_by_label("Entity").fill("Refund")
    page.get_by_role("textbox", name="Path*", exact=True).fill("/refunds")
    page.get_by_role("button", name="add endpoint").click()
    page.goto("/connectors/")
    card = page.get_by_test_id("connector").filter(has_text="Sandbox")
    expect(card.get_by_test_id("modified-info")).to_contain_text("last changed by builder")

    card.get_by_test_id("update-available").click()  # step 2: update available
    expect(page.get_by_test_id("impact-report")).to_contain_text("Orders sync")
    expect(page.get_by_test_id("update-choices")).to_contain_text("Existing instances do NOT need to be re-authenticated.")
    page.get_by_label("OVERWRITE the existing connector").check()  # steps 3-4
    page.get_by_role("button", name="apply update").click()
    expect(page.get_by_role("alert").first).to_contain_text("is now version 1.5.0")
    card = page.get_by_test_id("connector").filter(has_text="Sandbox")
    expect(card.get_by_test_id("auth-status")).to_have_text("Authenticated")
    expect(card.get_by_test_id("update-available")).to_have_count(0)
    sandbox.refresh_from_db()
    assert sandbox.version == "1.5.0" and not sandbox.endpoints.filter(key="list_refunds").exists()
    assert Shape.objects.get().instance == instance


def test_installing_an_update_alongside_shows_two_connectors(page, log_in, operator):
    catalog.load_catalog()
    sandbox = catalog.install(Listing.objects.get(slug="sandbox").versions.get(version="1.0.0"), operator)
    from connectors import editing, manifest

    edited = manifest.export(editing.fresh(sandbox))
    edited["description"] = "Our tweaked sandbox"
    editing.save_definition(sandbox, edited)
    log_in("builder")
    page.get_by_test_id("connector").filter(has_text="Sandbox").get_by_test_id("update-available").click()
    page.get_by_label("INSTALL alongside the existing connector").check()
    page.get_by_role("button", name="apply update").click()
    expect(page.get_by_role("alert").first).to_contain_text("re-configure the connection shapes")
    expect(page.get_by_test_id("connector").filter(has_text="Sandbox")).to_have_count(2)
    assert sorted(Connector.objects.values_list("version", flat=True)) == ["1.0.0", "1.5.0"]
