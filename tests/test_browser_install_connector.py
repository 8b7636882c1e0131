"""A new user logs in, finds connectors & instances, and installs a connector from the marketplace."""

import pytest
from playwright.sync_api import expect

from marketplace import catalog
from patchworks_site.models import Company, Role, User

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_new_user_installs_a_connector_and_sees_it_on_the_manage_connectors_page(page, log_in):
    catalog.load_catalog()
    company = Company.objects.create(name="Acme Retail")
    User.objects.create_user("newbie", password="pw-for-tests", company=company, role=Role.ADMINISTRATOR)

    log_in("newbie")
    page.get_by_role("button", name="process flows").click()
    page.get_by_role("link", name="connectors & instances").click()
    expect(page.get_by_role("heading", name="Manage connectors")).to_be_visible()
    expect(page.get_by_test_id("empty-state")).to_contain_text("No connectors yet")

    page.get_by_role("link", name="add new connector").first.click()
    expect(page.get_by_role("heading", name="Marketplace")).to_be_visible()
    page.get_by_label("Search the marketplace").fill("sandbox")
    expect(page.get_by_test_id("listing").filter(has_text="Stripe")).to_have_count(0)
    page.get_by_role("link", name="Sandbox", exact=True).click()
    expect(page.get_by_test_id("versions")).to_contain_text("1.5.0")
    page.get_by_role("button", name="install").click()

    page.wait_for_url("**/connectors/**")
    expect(page.get_by_role("alert").first).to_contain_text("Sandbox 1.5.0 is installed")
    card = page.get_by_test_id("connector").filter(has_text="Sandbox")
    expect(card).to_be_visible()
    expect(card).to_contain_text("prebuilt")
    expect(card.get_by_role("link", name="add new instance")).to_be_visible()
    assert company.connectors.get().name == "Sandbox"
