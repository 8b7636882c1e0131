import pytest

from instances.models import ConnectionPool, CredentialCheck, Instance
from patchworks_site.models import Role
from tests.manifest_parts import basic_method


@pytest.fixture
def connector(company, make_connector, httpserver):
    return make_connector(
        company,
        name="Shop API",
        base_url=httpserver.url_for("/api"),
        concurrency_limit=3,
        auth_methods=[
            {
                "key": "token", "name": "API token", "type": "token",
                "variables": [
                    {"key": "account", "label": "Account"},
                    {"key": "api_token", "label": "API token", "required": True, "secret": True},
                ],
                "headers": {"X-Api-Key": "{{api_token}}", "X-Account": "{{account}}"},
                "test_request": {"path": "/me"},
            },
            basic_method(name="Login"),
        ],
    )


@pytest.fixture
def instance(connector, make_instance):
    return make_instance(connector, "Shop API - UK", secrets={"api_token": "stored-token-9876"}, values={"account": "acme"})


def form_data(instance, **overrides) -> dict:
    data = {
        "name": instance.name,
        "time_zone": instance.time_zone,
        "date_format": instance.date_format,
        "rate_limit_amount": instance.rate_limit_amount,
        "rate_limit_unit": instance.rate_limit_unit,
        "connection_pool": instance.connection_pool_id or "",
        "auth_method": instance.auth_method_id,
        "var_account": instance.values.get("account", ""),
        "var_api_token": "",
    }
    data.update(overrides)
    return data


def test_the_settings_page_shows_details_tabs_and_only_the_last_four_characters_of_secrets(admin_client, instance):
    page = admin_client.get(f"/instances/{instance.pk}/").content.decode()
    for label in (">details<", ">authentication<", ">request<", ">response<", "save instance details"):
        assert label in page
    assert "Set (ends in 9876)" in page
    assert "stored-token" not in page


def test_saving_details_without_touching_authentication_makes_no_request(admin_client, instance, httpserver):
    response = admin_client.post(f"/instances/{instance.pk}/", form_data(instance, name="Shop API - GB", rate_limit_amount="7"))
    assert response.status_code == 302
    instance.refresh_from_db()
    assert (instance.name, instance.rate_limit_amount) == ("Shop API - GB", 7)
    assert instance.get_secrets() == {"api_token": "stored-token-9876"}  # blank keeps the stored value
    assert httpserver.log == []
    assert not CredentialCheck.objects.exists()


def test_changed_credentials_are_checked_first_and_saved_when_valid(admin_client, instance, httpserver):
    httpserver.expect_request("/api/me", headers={"X-Api-Key": "new-token-1234"}).respond_with_json({"ok": True})
    response = admin_client.post(f"/instances/{instance.pk}/", form_data(instance, var_api_token="new-token-1234"))
    assert response.status_code == 302
    instance.refresh_from_db()
    assert instance.get_secrets() == {"api_token": "new-token-1234"}
    assert instance.last_check_ok is True
    page = admin_client.get(f"/instances/{instance.pk}/?tab=response").content.decode()
    assert "The new credentials were checked and are valid." in page


def test_invalid_credentials_are_not_saved_and_nothing_else_is_either(admin_client, instance, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({"error": "bad key"}, status=403)
    response = admin_client.post(
        f"/instances/{instance.pk}/", form_data(instance, name="Renamed", var_api_token="wrong-token")
    )
    body = response.content.decode()
    assert response.status_code == 422
    assert "Only valid credentials can be saved." in body and "403 Forbidden" in body and "bad key" in body
    assert "wrong-token" not in body
    instance.refresh_from_db()
    assert instance.name == "Shop API - UK"
    assert instance.get_secrets() == {"api_token": "stored-token-9876"}
    assert CredentialCheck.objects.get().instance == instance  # the attempt shows in the history


def test_a_changed_non_secret_auth_field_triggers_a_check(admin_client, instance, httpserver):
    httpserver.expect_request("/api/me", headers={"X-Account": "globex", "X-Api-Key": "stored-token-9876"}).respond_with_json({})
    response = admin_client.post(f"/instances/{instance.pk}/", form_data(instance, var_account="globex"))
    assert response.status_code == 302
    assert len(httpserver.log) == 1
    instance.refresh_from_db()
    assert instance.values["account"] == "globex"


def test_switching_auth_method_needs_the_new_methods_credentials(admin_client, instance, connector, httpserver):
    basic = connector.auth_methods.get(key="basic")
    response = admin_client.post(f"/instances/{instance.pk}/", form_data(instance, auth_method=basic.pk))
    assert response.status_code == 422
    assert "This field is required." in response.content.decode()
    httpserver.expect_request("/api/me").respond_with_json({})
    response = admin_client.post(
        f"/instances/{instance.pk}/", form_data(instance, auth_method=basic.pk, var_username="me", var_password="pw-123")
    )
    assert response.status_code == 302
    instance.refresh_from_db()
    assert instance.auth_method == basic and instance.get_secrets() == {"password": "pw-123"}


def test_the_request_and_response_tabs_show_the_latest_check_and_history(admin_client, instance, httpserver):
    httpserver.expect_ordered_request("/api/me").respond_with_json({"error": "expired"}, status=401, headers={"X-Request-Id": "req-1"})
    httpserver.expect_ordered_request("/api/me").respond_with_json({"hello": "world"}, headers={"X-Request-Id": "req-2"})
    admin_client.post(f"/instances/{instance.pk}/check/")
    admin_client.post(f"/instances/{instance.pk}/check/")
    page = admin_client.get(f"/instances/{instance.pk}/?tab=response").content.decode()
    response_pane = page.split('data-testid="response-pane"')[1]
    assert 'data-testid="response-code">200<' in response_pane
    assert "req-2" in response_pane and "hello" in response_pane
    assert "Earlier checks" in response_pane and "401" in response_pane
    request_pane = page.split('data-testid="request-pane"')[1].split('data-testid="response-pane"')[0]
    assert f"{httpserver.url_for('/api/me')}" in request_pane
    assert "X-Api-Key" in request_pane and "[redacted]" in request_pane
    assert "stored-token-9876" not in page


def test_check_credentials_updates_the_status_on_the_manage_page(admin_client, instance, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({}, status=500)
    response = admin_client.post(f"/instances/{instance.pk}/check/", follow=True)
    assert "Unexpected answer from the API: 500 Internal Server Error" in response.content.decode()
    instance.refresh_from_db()
    assert instance.last_check_ok is False
    assert "Failed" in admin_client.get("/connectors/").content.decode()


def test_the_pool_can_be_removed_and_only_this_connectors_pools_are_accepted(admin_client, instance, company, connector, make_connector):
    pool = ConnectionPool.objects.create(company=company, name="Shop pool", limit=2)
    pool.connectors.add(connector)
    other_pool = ConnectionPool.objects.create(company=company, name="Elsewhere", limit=2)
    Instance.objects.filter(pk=instance.pk).update(connection_pool=pool)
    instance.refresh_from_db()
    page = admin_client.get(f"/instances/{instance.pk}/").content.decode()
    assert "Remove connection pool" in page and "Shop pool" in page
    response = admin_client.post(f"/instances/{instance.pk}/", form_data(instance, connection_pool=other_pool.pk))
    assert response.status_code == 422
    response = admin_client.post(f"/instances/{instance.pk}/", form_data(instance, connection_pool=""))
    assert response.status_code == 302
    instance.refresh_from_db()
    assert instance.connection_pool is None


def test_read_only_users_can_view_but_not_save(make_user, company, client_for, instance):
    client = client_for(make_user(company, Role.READ_ONLY))
    page = client.get(f"/instances/{instance.pk}/").content.decode()
    assert "save instance details" not in page and "<fieldset disabled>" in page
    assert client.post(f"/instances/{instance.pk}/", form_data(instance, name="Nope")).status_code == 403
    assert client.post(f"/instances/{instance.pk}/check/").status_code == 403


def test_a_flow_using_the_instance_picks_up_changes(admin_client, instance, connector):
    from flows.models import ProcessFlow, Shape

    flow = ProcessFlow.objects.create(company=instance.company, name="Orders", enabled=True)
    Shape.objects.create(flow=flow, instance=instance, endpoint=connector.endpoints.first())
    admin_client.post(f"/instances/{instance.pk}/", form_data(instance, name="Shop API - Renamed"))
    assert "Shop API - Renamed" in admin_client.get(f"/flows/{flow.pk}/").content.decode()
