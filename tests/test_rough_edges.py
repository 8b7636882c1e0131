"""Rough edges a new user met: each one is a test of what the page shows or what the database holds."""

from __future__ import annotations

import re

import pytest

from connectors.models import Connector
from flows.models import ProcessFlow, Shape
from marketplace import catalog
from marketplace.models import Installation
from patchworks_site.models import Role
from tests.test_connector_updates import modify

# The Sandbox's newest catalog version: what "install alongside" and "update available" offer.
LATEST = max(
    (entry.manifest["version"] for entry in catalog.iter_catalog() if entry.slug == "sandbox"),
    key=lambda version: tuple(int(part) for part in version.split(".")),
)


@pytest.fixture
def old_sandbox(company, sandbox_listing, install):
    return install(sandbox_listing, company, version="1.0.0")


# --- install alongside -------------------------------------------------------------


def test_a_copy_installed_alongside_is_named_with_its_version_and_is_not_modified(admin_client, admin_user, old_sandbox):
    modify(old_sandbox, admin_user)
    page = admin_client.get(f"/marketplace/updates/{old_sandbox.pk}/").content.decode()
    assert f"It is named <strong>Sandbox ({LATEST})</strong>" in page
    admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "alongside"})
    copy = Connector.objects.get(company=old_sandbox.company, version=LATEST)
    assert copy.name == f"Sandbox ({LATEST})"
    assert copy.installation.is_modified is False
    assert copy.installation.update_available is False


def test_the_old_connector_links_to_the_copy_instead_of_offering_the_update_again(admin_client, admin_user, old_sandbox):
    modify(old_sandbox, admin_user)
    admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "alongside"})
    copy = Connector.objects.get(company=old_sandbox.company, version=LATEST)
    manage = admin_client.get("/connectors/").content.decode()
    assert 'data-testid="update-available"' not in manage
    note = re.search(r'data-testid="alongside-note">(.*?)</span>', manage, re.S).group(1)
    assert f"version {LATEST} is installed alongside as" in note
    assert f'href="/connectors/{copy.pk}/">Sandbox ({LATEST})</a>' in note
    detail = admin_client.get(f"/connectors/{old_sandbox.pk}/").content.decode()
    assert "A newer copy is installed alongside" in detail and f'href="/connectors/{copy.pk}/"' in detail


def test_the_same_version_cannot_be_installed_alongside_twice(admin_client, admin_user, old_sandbox):
    modify(old_sandbox, admin_user)
    admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "alongside"})
    page = admin_client.get(f"/marketplace/updates/{old_sandbox.pk}/").content.decode()
    assert 'value="alongside"' not in page
    assert f"Version {LATEST} is already installed alongside" in page and 'value="overwrite"' in page
    response = admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "alongside"})
    assert response.status_code == 422
    assert f"already installed alongside as Sandbox ({LATEST})" in response.content.decode()
    assert Connector.objects.filter(company=old_sandbox.company).count() == 2


def test_overwriting_keeps_the_connectors_name(admin_client, admin_user, old_sandbox):
    modify(old_sandbox, admin_user)
    Connector.objects.filter(pk=old_sandbox.pk).update(name="Sandbox (EU)")
    admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "overwrite"})
    old_sandbox.refresh_from_db()
    assert (old_sandbox.name, old_sandbox.version) == ("Sandbox (EU)", LATEST)
    assert Installation.objects.get(connector=old_sandbox).is_modified is False


# --- update available for roles that cannot apply it -----------------------------------


@pytest.mark.parametrize("role", [Role.READ_ONLY, Role.USER])
def test_roles_that_cannot_update_see_update_available_as_information_with_who_applies_it(
    role, client_for, make_user, company, old_sandbox
):
    client = client_for(make_user(company, role))
    manage = client.get("/connectors/").content.decode()
    hint = re.search(r'data-testid="update-available">(.*?)</span>', manage, re.S).group(1)
    assert f"update available: version {LATEST}" in hint
    assert "an Administrator or Manager applies updates" in hint
    assert f"/marketplace/updates/{old_sandbox.pk}/" not in manage
    detail = client.get(f"/connectors/{old_sandbox.pk}/").content.decode()
    assert "An Administrator or Manager applies updates." in detail and "alert-info" in detail


def test_an_administrator_still_gets_the_update_button(admin_client, old_sandbox):
    manage = admin_client.get("/connectors/").content.decode()
    assert f'href="/marketplace/updates/{old_sandbox.pk}/" data-testid="update-available"' in manage


# --- connector builder ---------------------------------------------------------------


def _ids(page: str) -> list[str]:
    return re.findall(r'\sid="([^"]+)"', page)


def test_editing_an_authentication_method_has_unique_ids_and_labels_for_each_field(admin_client, company, make_connector):
    connector = make_connector(company)
    page = admin_client.get(f"/connectors/{connector.pk}/build/auth/?edit=token").content.decode()
    ids = _ids(page)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    # Each Name field has its own label pointing at it.
    assert re.search(r'<label\s+for="id_name"', page) and re.search(r'<label\s+for="id_new_auth_name"', page)
    assert 'id="id_name"' in page and 'id="id_new_auth_name"' in page


@pytest.mark.parametrize("step", ["details", "variables", "auth", "endpoints"])
def test_every_builder_step_has_unique_ids(step, admin_client, company, make_connector):
    connector = make_connector(company)
    page = admin_client.get(f"/connectors/{connector.pk}/build/{step}/").content.decode()
    ids = _ids(page)
    assert len(ids) == len(set(ids))


def test_every_builder_step_but_the_last_has_next_step(admin_client, company, make_connector):
    connector = make_connector(company)
    expected = {"details": "variables", "variables": "auth", "auth": "endpoints"}
    for step, following in expected.items():
        page = admin_client.get(f"/connectors/{connector.pk}/build/{step}/").content.decode()
        assert f'href="/connectors/{connector.pk}/build/{following}/" data-testid="next-step"' in page
    last = admin_client.get(f"/connectors/{connector.pk}/build/endpoints/").content.decode()
    assert 'data-testid="next-step"' not in last
    assert 'data-testid="ready-to-use"' in last and f'href="/instances/new/{connector.pk}/"' in last


DETAILS = {"name": "Warehouse API", "version": "1", "base_url": "https://api.example.com", "protocol": "HTTP",
           "date_format": "%Y-%m-%d", "rate_limit_amount": 60, "rate_limit_unit": "minute", "time_zone": "UTC",
           "colour": "blue"}


def test_the_last_step_says_what_is_still_missing(admin_client, company):
    admin_client.post("/connectors/new/", {**DETAILS, "system_type": "WMS"})
    connector = Connector.objects.get(company=company, name="Warehouse API")
    page = admin_client.get(f"/connectors/{connector.pk}/build/endpoints/").content.decode()
    missing = page.split('data-testid="still-missing"')[1].split("</div>")[0]
    assert "cannot be used yet" in missing
    assert f'href="/connectors/{connector.pk}/build/auth/">at least one authentication method</a>' in missing
    assert f'href="/connectors/{connector.pk}/build/endpoints/">at least one endpoint</a>' in missing


def test_a_new_connector_has_no_default_system_type(admin_client):
    page = admin_client.get("/connectors/new/").content.decode()
    select = page.split('name="system_type"')[1].split("</select>")[0]
    assert re.search(r'<option value=""[^>]*>Choose a system type</option>', select)
    assert "selected" not in select.replace('<option value="" selected>', "")
    response = admin_client.post("/connectors/new/", DETAILS)
    assert response.status_code == 422
    assert "Choose the system type." in response.content.decode()
    assert not Connector.objects.filter(name="Warehouse API").exists()


def test_http_methods_read_in_capitals_in_the_builder(admin_client, company, make_connector):
    connector = make_connector(company)
    for url in (f"/connectors/{connector.pk}/build/endpoints/", f"/connectors/{connector.pk}/build/auth/?edit=token"):
        page = admin_client.get(url).content.decode()
        assert re.search(r'<option value="GET"[^>]*>GET</option>', page)
        assert re.search(r'<option value="POST"[^>]*>POST</option>', page)
        assert ">Get<" not in page and ">Post<" not in page
    page = admin_client.get(f"/connectors/{connector.pk}/build/endpoints/").content.decode()
    assert re.search(r'<option value="receive"[^>]*>receive</option>', page)


# --- wizard ----------------------------------------------------------------------------


def test_the_wizard_names_each_authentication_method_once(admin_client, company, sandbox_listing, install):
    from connectors.models import AuthMethod

    connector = install(sandbox_listing, company)
    labels = {m.key: str(m) for m in AuthMethod.objects.filter(connector=connector)}
    for label in labels.values():
        assert label.count("OAuth 2") <= 1, label
    assert "OAuth 2 client credentials" in labels.values()
    assert "API token (Token-based)" in labels.values()


# --- remove dialog -----------------------------------------------------------------------


@pytest.fixture
def used_instance(company, make_connector, make_instance):
    instance = make_instance(make_connector(company), "Busy shop")
    flow = ProcessFlow.objects.create(company=company, name="Orders to ERP", enabled=True)
    Shape.objects.create(flow=flow, instance=instance, endpoint=instance.connector.endpoints.first())
    return instance


def test_after_a_refusal_the_dialog_offers_no_confirm_box_or_remove_button(admin_client, used_instance):
    response = admin_client.post(
        f"/instances/{used_instance.pk}/remove/", {"confirm": "confirm"}, headers={"HX-Request": "true"}
    )
    body = response.content.decode()
    assert response.status_code == 409
    assert "Busy shop is used in process flows" in body and "Orders to ERP" in body
    assert 'name="confirm"' not in body and "btn-danger" not in body and "<form" not in body
    assert ">close</a>" in body


def test_without_javascript_the_refusal_reopens_the_dialog_on_the_refusal(admin_client, used_instance):
    response = admin_client.post(f"/instances/{used_instance.pk}/remove/", {"confirm": "confirm"})
    assert response["Location"].endswith("?remove=in-use")
    page = admin_client.get(response["Location"]).content.decode()
    dialog = page.split('id="remove-dialog"')[1]
    assert 'data-testid="in-use"' in dialog and 'name="confirm"' not in dialog
    # Opening the dialog afresh still asks for confirm (the refusal comes from trying).
    fresh = admin_client.get(f"/instances/{used_instance.pk}/?remove=1").content.decode().split('id="remove-dialog"')[1]
    assert 'name="confirm"' in fresh


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_removing_shows_progress_and_disables_the_button_until_done(page, log_in, company, make_user, make_connector, make_instance):
    from playwright.sync_api import expect

    from instances.models import Instance

    make_user(company, Role.ADMINISTRATOR, "operator")
    instance = make_instance(make_connector(company), "Slow shop")
    log_in("operator")
    page.goto(f"/instances/{instance.pk}/")
    held = []
    page.route("**/remove/", lambda route: held.append(route))  # the answer waits until the test releases it
    page.get_by_test_id("trash").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Type confirm to proceed").fill("confirm")
    dialog.get_by_role("button", name="remove").click()
    expect(dialog.get_by_test_id("removing")).to_be_visible()
    expect(dialog.get_by_test_id("removing")).to_contain_text("Removing Slow shop…")
    expect(dialog.get_by_role("button", name="remove")).to_be_disabled()
    assert Instance.objects.filter(pk=instance.pk).exists()
    page.evaluate("1")  # a round trip to the browser: lets the route handler run
    assert held, "the remove request was not sent"
    held[0].continue_()
    page.wait_for_url("**/connectors/")
    expect(page.get_by_role("alert").first).to_contain_text('Instance "Slow shop" was removed.')
    assert not Instance.objects.filter(pk=instance.pk).exists()


# --- process flow delete ---------------------------------------------------------------------


def test_the_flow_delete_control_is_a_button_with_a_name_and_state(admin_client, company):
    flow = ProcessFlow.objects.create(company=company, name="Nightly")
    page = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    control = re.search(r'<a [^>]*data-testid="delete-flow"[^>]*>', page).group(0)
    assert 'role="button"' in control and 'aria-label="Delete process flow"' in control
    assert 'aria-expanded="false"' in control and 'aria-controls="delete-flow"' in control
    assert "<summary" not in page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_flow_is_deleted_with_the_keyboard_through_its_delete_button(page, log_in, company, make_user):
    from playwright.sync_api import expect

    make_user(company, Role.ADMINISTRATOR, "operator")
    flow = ProcessFlow.objects.create(company=company, name="Nightly")
    log_in("operator")
    page.goto(f"/flows/{flow.pk}/")
    button = page.get_by_role("button", name="Delete process flow", exact=True)
    button.focus()
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-expanded", "true")
    box = page.get_by_label("Type confirm to delete this process flow and its connection shapes")
    expect(box).to_be_visible()
    box.focus()
    page.keyboard.type("confirm")
    page.keyboard.press("Enter")
    page.wait_for_url("**/flows/")
    assert not ProcessFlow.objects.filter(pk=flow.pk).exists()


# --- the time zone list is built once ------------------------------------------------------


def test_the_time_zone_list_is_not_rebuilt_per_request(admin_client, company, make_connector, make_instance, monkeypatch):
    import zoneinfo

    instance = make_instance(make_connector(company), "Zones")
    first = admin_client.get(f"/instances/{instance.pk}/").content.decode()
    assert '<option value="Europe/London">' in first and '<option value="America/New_York">' in first
    builder_url = f"/connectors/{instance.connector.pk}/build/details/"
    assert '<option value="Europe/London">' in admin_client.get(builder_url).content.decode()

    def fail() -> set[str]:
        raise AssertionError("the IANA time zone list was read again")

    monkeypatch.setattr(zoneinfo, "available_timezones", fail)
    again = admin_client.get(f"/instances/{instance.pk}/").content.decode()
    assert again.count("<option value=") == first.count("<option value=")
    assert '<option value="Europe/London">' in admin_client.get(builder_url).content.decode()


def test_without_javascript_the_flow_delete_link_opens_the_confirmation(admin_client, company):
    flow = ProcessFlow.objects.create(company=company, name="Nightly")
    page = admin_client.get(f"/flows/{flow.pk}/?delete=1").content.decode()
    assert re.search(r'class="collapse show[^"]*"[^>]*id="delete-flow"', page)
    assert 'aria-expanded="true"' in page


def test_the_admin_spells_http_methods_as_the_dashboard_does(company, make_user, client_for, sandbox_listing, install):
    staff = make_user(company, Role.ADMINISTRATOR, "root")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    install(sandbox_listing, company)
    client = client_for(staff)
    page = client.get("/admin/connectors/endpoint/").content.decode()
    assert "<td class=\"field-method\">GET</td>" in page
    assert ">Get<" not in page and ">Post<" not in page
    assert '<option value="POST">POST</option>' in client.get("/admin/connectors/endpoint/add/").content.decode()
