"""Malformed query-string and form parameters are a 400, a 404 or a field error — never a 500."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from connectors.models import Connector
from flows.models import ProcessFlow
from instances.models import ConnectionPool, Instance
from patchworks_site.params import object_id

HUGE_ID = "1" * 30


@pytest.fixture
def connector(company, make_connector):
    return make_connector(company, name="Shop API", concurrency_limit=5)


@pytest.fixture
def instance(connector, make_instance):
    return make_instance(connector, "Shop API - UK")


@pytest.fixture
def pool(company, connector):
    pool = ConnectionPool.objects.create(company=company, name="Storefront", limit=3)
    pool.connectors.add(connector)
    return pool


SEARCH_PAGES = ["/connectors/", "/marketplace/", "/instances/pools/", "/audit/", "/flows/", "/flows/runs/"]


@pytest.mark.parametrize("url", SEARCH_PAGES)
def test_a_nul_character_in_a_search_is_a_400_on_every_search_page(admin_client, url):
    response = admin_client.get(url, {"q": "a\x00b"})
    assert response.status_code == 400
    assert response.status_code == admin_client.get(url, {"q": "a\x00b"}, headers={"HX-Request": "true"}).status_code


@pytest.mark.parametrize("url", SEARCH_PAGES)
@pytest.mark.parametrize("page", ["abc", "0", "-1", "", HUGE_ID, "1e3", "²", "1\x00"])
def test_a_junk_page_number_shows_a_page(admin_client, url, page):
    response = admin_client.get(url, {"page": page})
    assert response.status_code == 200


@pytest.mark.parametrize("url", SEARCH_PAGES)
def test_an_unknown_filter_value_is_ignored(admin_client, url):
    response = admin_client.get(url, {"system_type": "Nope\x00", "action": HUGE_ID})
    assert response.status_code == 200


@pytest.mark.parametrize("value", ["instance-²", "instance-٣", f"instance-{HUGE_ID}", "instance-", "connector--1", "\x00"])
def test_a_malformed_highlight_on_the_manage_page_is_ignored(admin_client, instance, value):
    response = admin_client.get("/connectors/", {"highlight": value})
    assert response.status_code == 200
    assert "Shop API - UK" in response.content.decode()


def test_a_valid_highlight_still_marks_the_row(admin_client, instance):
    page = admin_client.get("/connectors/", {"highlight": f"instance-{instance.pk}"}).content.decode()
    assert f'id="instance-{instance.pk}"' in page and "highlight" in page


@pytest.mark.parametrize("value", ["²", HUGE_ID, "abc", "\x00"])
def test_a_malformed_highlight_on_the_pools_page_is_ignored(admin_client, pool, value):
    response = admin_client.get("/instances/pools/", {"highlight": value})
    assert response.status_code == 200 and "Storefront" in response.content.decode()


@pytest.mark.parametrize("value", ["abc", HUGE_ID, "²", "-1", "\x00", ""])
def test_a_malformed_auth_method_on_the_htmx_settings_fragment_shows_the_current_method(admin_client, instance, value):
    response = admin_client.get(
        f"/instances/{instance.pk}/", {"auth_method": value}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert 'name="var_api_token"' in response.content.decode()


@pytest.mark.parametrize("tab", ["junk", "\x00", HUGE_ID])
def test_an_unknown_settings_tab_opens_the_details(admin_client, instance, tab):
    assert admin_client.get(f"/instances/{instance.pk}/", {"tab": tab}).status_code == 200


@pytest.mark.parametrize("query", [{"step": "junk"}, {"state": "junk\x00"}, {"step": "credentials", "state": HUGE_ID}])
def test_junk_wizard_parameters_restart_the_wizard(admin_client, connector, query):
    response = admin_client.get(f"/instances/new/{connector.pk}/", query)
    assert response.status_code == 200


@pytest.mark.parametrize("query", [{"date_format": "%Y\x00%m", "time_zone": "UTC"}, {"date_format": "%Y", "time_zone": "\x00"},
                                   {"date_format": "%" * 500, "time_zone": "Europe/London" * 50}])
def test_the_date_preview_explains_junk_instead_of_failing(admin_client, query):
    response = admin_client.get("/instances/date-preview/", query)
    assert response.status_code == 200
    assert not response.content.decode().startswith("Now:")


@pytest.mark.parametrize("url", [
    "/connectors/{huge}/", "/connectors/{huge}/history/", "/connectors/{pk}/history/{huge}/", "/connectors/{huge}/manifest/",
    "/connectors/{huge}/build/details/", "/connectors/{huge}/icon/", "/instances/{huge}/", "/instances/new/{huge}/",
    "/instances/pools/{huge}/", "/flows/{huge}/", "/marketplace/updates/{huge}/",
])
def test_an_id_too_large_for_the_database_is_a_404(admin_client, connector, url):
    assert admin_client.get(url.format(huge=HUGE_ID, pk=connector.pk)).status_code == 404


def test_a_30_digit_connector_id_in_a_pool_form_is_a_field_error(admin_client, connector):
    before = ConnectionPool.objects.count()
    response = admin_client.post("/instances/pools/new/", {
        "name": "Warehouse", "limit": "2", "timeout_seconds": "30", "connectors": [str(connector.pk), HUGE_ID],
    })
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert ConnectionPool.objects.count() == before


@pytest.mark.parametrize("value", [HUGE_ID, "abc", "²", "\x00"])
def test_a_malformed_pool_or_auth_method_in_the_instance_settings_is_a_field_error(admin_client, instance, pool, value):
    data = {
        "name": instance.name, "time_zone": "UTC", "date_format": "%Y", "rate_limit_amount": "5",
        "rate_limit_unit": "second", "connection_pool": value, "auth_method": value, "var_api_token": "",
    }
    response = admin_client.post(f"/instances/{instance.pk}/", data)
    assert response.status_code == 422
    instance.refresh_from_db()
    assert instance.connection_pool_id is None and instance.date_format != "%Y"


@pytest.mark.parametrize("value", [HUGE_ID, "abc", f"{HUGE_ID}:{HUGE_ID}", "\x00"])
def test_a_malformed_connection_shape_target_is_a_field_error(admin_client, company, instance, value):
    flow = ProcessFlow.objects.create(company=company, name="Orders")
    response = admin_client.post(f"/flows/{flow.pk}/", {"target": value})
    assert response.status_code == 422
    assert flow.shapes.count() == 0


def test_a_5000_digit_integer_in_an_uploaded_manifest_names_its_field(admin_client, connector):
    from connectors import manifest as manifests

    text = manifests.dumps(manifests.export(connector)).replace("amount: 5", "amount: " + "9" * 5000)
    upload = SimpleUploadedFile("big.yaml", text.encode(), content_type="application/yaml")
    before = Connector.objects.count()
    response = admin_client.post("/connectors/import/", {"file": upload})
    assert response.status_code == 422
    assert "rate_limit.amount: must be at most 1000000" in response.content.decode()
    assert Connector.objects.count() == before


def test_a_nul_character_in_a_form_field_is_a_field_error(admin_client, instance):
    response = admin_client.post("/flows/", {"name": "Orders\x00"})
    assert response.status_code == 422 and "Null characters are not allowed" in response.content.decode()
    assert ProcessFlow.objects.count() == 0
    assert Instance.objects.count() == 1


def test_the_parameter_helpers_accept_only_ascii_digits():
    assert object_id("42") == 42
    assert [object_id(v) for v in ("²", "٣", "", "-1", "4 2", "1" * 19, None)] == [None] * 7


@pytest.mark.parametrize("token", ["Ā-token", "token\r\nX-Injected: 1"])
def test_a_credential_that_cannot_be_sent_in_a_header_is_a_field_error(admin_client, connector, token):
    from urllib.parse import parse_qs, urlsplit

    state = ""
    for data in ({"step": "name", "name": "Fuzz"},
                 {"step": "settings", "time_zone": "UTC", "date_format": "%Y", "rate_limit_amount": "5", "rate_limit_unit": "second"}):
        response = admin_client.post(f"/instances/new/{connector.pk}/", {**data, "state": state})
        state = parse_qs(urlsplit(response["Location"]).query)["state"][0]
    response = admin_client.post(f"/instances/new/{connector.pk}/", {"step": "credentials", "state": state, "var_api_token": token})
    assert response.status_code == 422
    body = response.content.decode()
    assert "This value may only use Latin-1 characters" in body or "This value must not contain line breaks" in body
    assert Instance.objects.count() == 0


def test_the_400_page_says_what_was_wrong(admin_client, settings):
    settings.DEBUG = False
    response = admin_client.get("/connectors/", {"q": "a\x00b"})
    assert response.status_code == 400
    assert "a NUL character in a search" in response.content.decode()
