"""The instances guide, step by step, in a real browser against the built-in Sandbox API."""

import re

import pytest
from playwright.sync_api import expect

from flows.models import ProcessFlow, Shape
from instances.models import Instance
from marketplace import catalog
from marketplace.models import Listing
from patchworks_site.models import Company, Role, User

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sandbox(live_server):
    for entry in catalog.iter_catalog():
        if entry.slug == "sandbox":
            catalog.publish(entry.slug, entry.manifest, entry.changelog)
    company = Company.objects.create(name="Acme Retail")
    User.objects.create_user("operator", password="pw-for-tests", company=company, role=Role.ADMINISTRATOR)
    return catalog.install(Listing.objects.get(slug="sandbox").latest_version, company)


def open_manage_connectors(page) -> None:
    """Step 1: process flows > connectors & instances."""
    page.get_by_role("button", name="process flows").click()
    page.get_by_role("link", name="connectors & instances").click()
    expect(page.get_by_role("heading", name="Manage connectors")).to_be_visible()


def add_instance(page, live_server, name: str, password: str) -> None:
    card = page.get_by_test_id("connector").filter(has_text="Sandbox")
    card.get_by_role("link", name="add new instance").click()  # step 3
    page.get_by_label("Name").fill(name)  # step 4
    page.get_by_role("button", name="next step").click()
    expect(page.get_by_label("Time zone")).to_have_value("UTC")  # step 5: defaults from the connector
    page.get_by_label("Time zone").fill("Europe/London")
    expect(page.locator("#date-preview")).to_contain_text("Now: ")
    page.get_by_role("button", name="next step").click()
    page.get_by_label("Username and password").check()  # step 6
    page.get_by_role("button", name="next step").click()
    page.get_by_label(re.compile(r"^\s*Username\*?\s*$")).fill("sandbox")  # step 7
    page.get_by_label(re.compile(r"^\s*Password\*?\s*$")).fill(password)
    page.get_by_text("advanced").click()
    page.get_by_label("Sandbox API URL").fill(f"{live_server.url}/sandbox/api")
    page.get_by_role("button", name="next step").click()


def test_adding_an_instance_with_invalid_then_valid_credentials(page, log_in, live_server, sandbox):
    log_in("operator")
    open_manage_connectors(page)
    add_instance(page, live_server, "Sandbox - UK", "not-the-password")
    expect(page.get_by_test_id("wizard-error")).to_contain_text("The credentials were refused: 401 Unauthorized")
    assert not Instance.objects.exists()

    page.get_by_label(re.compile(r"^\s*Password\*?\s*$")).fill("sandbox-secret")
    page.get_by_role("button", name="next step").click()
    page.wait_for_url("**/connectors/?highlight=instance-*")  # step 8
    row = page.get_by_test_id("instance").filter(has_text="Sandbox - UK")
    expect(row).to_have_class("instance-row highlight")
    expect(row.get_by_test_id("auth-status")).to_have_text("Authenticated")
    instance = Instance.objects.get()
    assert (instance.time_zone, instance.get_secrets()) == ("Europe/London", {"password": "sandbox-secret"})


def test_updating_an_instance_and_reading_the_request_and_response_tabs(page, log_in, live_server, sandbox):
    log_in("operator")
    add_instance(page, live_server, "Sandbox - UK", "sandbox-secret")
    page.wait_for_url("**/connectors/?highlight=*")
    page.get_by_role("link", name="Settings for instance Sandbox - UK").click()  # step 3: the cog
    expect(page.get_by_role("heading", name="Sandbox - UK")).to_be_visible()  # step 4
    page.get_by_label("Rate limit amount").fill("42")
    page.get_by_role("tab", name="authentication").click()  # step 5
    expect(page.get_by_label(re.compile(r"^\s*Password\*?\s*$"))).to_have_value("")
    page.get_by_label(re.compile(r"^\s*Password\*?\s*$")).fill("wrong-password")
    page.get_by_role("button", name="save instance details").click()  # step 6
    expect(page.get_by_test_id("settings-error")).to_contain_text("Only valid credentials can be saved")
    assert Instance.objects.get().rate_limit_amount != 42

    page.get_by_role("tab", name="authentication").click()
    page.get_by_label(re.compile(r"^\s*Password\*?\s*$")).fill("sandbox-secret")
    page.get_by_role("tab", name="details").click()
    page.get_by_label("Rate limit amount").fill("42")
    page.get_by_role("button", name="save instance details").click()
    expect(page.get_by_role("alert").first).to_contain_text("Instance details saved.")
    assert Instance.objects.get().rate_limit_amount == 42

    page.get_by_role("tab", name="request").click()
    request_pane = page.get_by_test_id("request-pane")
    expect(request_pane).to_contain_text("/sandbox/api/me")
    expect(request_pane).to_contain_text("[redacted]")
    page.get_by_role("tab", name="response").click()
    response_pane = page.get_by_test_id("response-pane")
    expect(response_pane.get_by_test_id("response-code").first).to_have_text("200")
    expect(response_pane.get_by_test_id("response-body").first).to_contain_text("Sandbox Retail")
    expect(response_pane.get_by_test_id("check-history")).to_contain_text("401")
    expect(page.locator("body")).not_to_contain_text("sandbox-secret")


def test_removing_an_instance_by_typing_confirm_and_being_stopped_while_a_flow_uses_it(page, log_in, live_server, sandbox):
    log_in("operator")
    add_instance(page, live_server, "Sandbox - UK", "sandbox-secret")
    page.wait_for_url("**/connectors/?highlight=*")
    instance = Instance.objects.get()
    flow = ProcessFlow.objects.create(company=instance.company, name="Nightly orders", enabled=False)
    shape = Shape.objects.create(flow=flow, instance=instance, endpoint=sandbox.endpoints.get(key="list_orders"))

    page.get_by_role("link", name="Settings for instance Sandbox - UK").click()  # step 3
    page.get_by_test_id("trash").click()  # step 3: the trash icon
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Type confirm to proceed").fill("confirm")  # step 4
    dialog.get_by_role("button", name="remove").click()
    expect(dialog.get_by_test_id("in-use")).to_contain_text("Nightly orders")  # step 5: update these first
    assert Instance.objects.filter(pk=instance.pk).exists()

    dialog.get_by_role("link", name="Nightly orders").click()
    page.get_by_role("button", name="Remove step 1").click()
    page.get_by_role("button", name="remove step 1", exact=True).click()
    expect(page.get_by_role("alert").first).to_contain_text("Step 1 removed")
    assert not Shape.objects.filter(pk=shape.pk).exists()

    page.goto(f"/instances/{instance.pk}/")
    page.get_by_test_id("trash").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Type confirm to proceed").fill("confirm")
    dialog.get_by_role("button", name="remove").click()
    page.wait_for_url("**/connectors/")  # otherwise it is removed immediately
    expect(page.get_by_role("alert").first).to_contain_text("was removed")
    assert not Instance.objects.exists()
