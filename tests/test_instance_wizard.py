import base64

import pytest
from django.core import signing

from instances.models import ConnectionPool, CredentialCheck, Instance
from patchworks_site.models import Role
from tests.manifest_parts import basic_method
from tests.wizard_helpers import run_wizard, settings_data, state_from


@pytest.fixture
def api_connector(company, make_connector, httpserver):
    """A custom connector whose API is played by pytest-httpserver, with two auth methods."""
    return make_connector(
        company,
        name="Shop API",
        base_url=httpserver.url_for("/api"),
        concurrency_limit=4,
        variables=[{"key": "region", "label": "Region", "default": "eu", "advanced": True}],
        auth_methods=[
            {
                "key": "token", "name": "API token", "type": "token",
                "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
                "headers": {"X-Api-Key": "{{api_token}}"},
                "test_request": {"path": "/me"},
            },
            basic_method(name="Login"),
        ],
    )


def test_valid_credentials_create_the_instance_and_land_on_the_manage_page(admin_client, api_connector, httpserver):
    httpserver.expect_request("/api/me", headers={"X-Api-Key": "good-token"}).respond_with_json({"shop": "ok"})
    response = run_wizard(admin_client, api_connector, name="Shop API - UK", credentials={"api_token": "good-token", "region": "eu"})

    instance = Instance.objects.get(connector=api_connector)
    assert response.status_code == 302
    assert response["Location"] == f"/connectors/?highlight=instance-{instance.pk}#instance-{instance.pk}"
    assert instance.name == "Shop API - UK"
    assert (instance.time_zone, instance.date_format, instance.rate_limit_amount, instance.rate_limit_unit) == (
        "Europe/London", "%d/%m/%Y", 30, "minute",
    )
    assert instance.get_secrets() == {"api_token": "good-token"}
    assert instance.values == {"region": "eu"}
    assert instance.last_check_ok is True
    page = admin_client.get(response["Location"]).content.decode()
    assert "Shop API - UK" in page and "Authenticated" in page and "highlight" in page


def test_refused_credentials_show_the_reason_and_create_nothing(admin_client, api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({"message": "Invalid API key"}, status=401)
    response = run_wizard(admin_client, api_connector, credentials={"api_token": "bad-token"})

    body = response.content.decode()
    assert response.status_code == 422
    assert "The credentials were refused: 401 Unauthorized." in body
    assert "Invalid API key" in body
    assert "bad-token" not in body  # a secret is never rendered back
    assert not Instance.objects.exists()
    check = CredentialCheck.objects.get()
    assert check.ok is False and check.instance is None and check.response_status == 401


def test_the_auth_step_is_skipped_with_an_explanation_when_there_is_one_method(admin_client, company, make_connector, httpserver):
    connector = make_connector(company, base_url=httpserver.url_for(""))
    response = admin_client.post(f"/instances/new/{connector.pk}/", {"step": "name", "state": "", "name": "Only"})
    response = admin_client.post(f"/instances/new/{connector.pk}/", {"step": "settings", "state": state_from(response), **settings_data()})
    assert "step=credentials" in response["Location"]
    page = admin_client.get(response["Location"]).content.decode()
    assert "has one authentication method" in page and "API token" in page


def test_the_chosen_auth_method_decides_the_credential_fields(admin_client, api_connector, httpserver):
    basic = api_connector.auth_methods.get(key="basic")
    expected = "Basic " + base64.b64encode(b"shopkeeper:pa55word").decode()
    httpserver.expect_request("/api/me", headers={"Authorization": expected}).respond_with_json({})
    response = run_wizard(admin_client, api_connector, auth_method=basic, credentials={"username": "shopkeeper", "password": "pa55word"})
    assert response.status_code == 302
    instance = Instance.objects.get()
    assert instance.auth_method == basic
    assert instance.values["username"] == "shopkeeper"
    assert instance.get_secrets() == {"password": "pa55word"}


def test_credential_fields_mark_required_hide_secrets_and_group_advanced(admin_client, api_connector):
    url = f"/instances/new/{api_connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "X"})
    response = admin_client.post(url, {"step": "settings", "state": state_from(response), **settings_data()})
    response = admin_client.post(
        url, {"step": "auth", "state": state_from(response), "auth_method": api_connector.auth_methods.get(key="token").pk}
    )
    page = admin_client.get(response["Location"]).content.decode()
    assert 'type="password" name="var_api_token"' in page
    assert "API token<span class=\"asteriskField\">*</span>" in page
    assert "<summary" in page and "advanced" in page
    assert 'name="var_region" value="eu"' in page  # defaults are filled


def test_a_duplicate_name_is_refused_at_the_first_step(admin_client, api_connector, make_instance):
    make_instance(api_connector, "Shop API - UK")
    response = admin_client.post(f"/instances/new/{api_connector.pk}/", {"step": "name", "state": "", "name": "shop api - uk"})
    assert response.status_code == 422
    assert "already has an instance called" in response.content.decode()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("time_zone", "Mars/Base", "is not a time zone"),
        ("date_format", "YYYY-MM-DD", "must contain at least one directive"),
        ("date_format", "%Q", "unknown directive &quot;%Q&quot;"),
        ("rate_limit_amount", "0", "greater than or equal to 1"),
        ("rate_limit_amount", "99999999999", "less than or equal to 1000000"),
        ("rate_limit_amount", "ten", "Enter a whole number"),
        ("rate_limit_unit", "fortnight", "Select a valid choice"),
    ],
)
def test_bad_settings_get_a_clear_error(admin_client, api_connector, field, value, message):
    url = f"/instances/new/{api_connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "X"})
    response = admin_client.post(url, {"step": "settings", "state": state_from(response), **settings_data(**{field: value})})
    assert response.status_code == 422
    assert message in response.content.decode()


def test_names_are_escaped_and_length_limited(admin_client, api_connector):
    url = f"/instances/new/{api_connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "x" * 121})
    assert response.status_code == 422 and "at most 120 characters" in response.content.decode()
    response = admin_client.post(url, {"step": "name", "state": "", "name": "<script>alert(1)</script>"})
    page = admin_client.get(response["Location"]).content.decode()
    assert "<script>alert(1)</script>" not in page


def test_a_tampered_wizard_state_is_refused(admin_client, api_connector):
    url = f"/instances/new/{api_connector.pk}/"
    response = admin_client.post(url, {"step": "settings", "state": "forged:state", **settings_data()})
    assert response.status_code == 400
    assert "changed or damaged" in response.content.decode()


def test_a_state_for_another_connector_is_refused(admin_client, api_connector, make_connector, company):
    other = make_connector(company, name="Other")
    state = signing.dumps({"connector": other.pk, "name": "X"}, salt="instances.new-instance-wizard", compress=True)
    response = admin_client.post(f"/instances/new/{api_connector.pk}/", {"step": "settings", "state": state, **settings_data()})
    assert response.status_code == 400
    assert "belongs to another connector" in response.content.decode()


def test_a_pool_or_method_of_another_connector_is_refused(admin_client, api_connector, company, make_connector):
    other = make_connector(company, name="Other", concurrency_limit=2)
    foreign_pool = ConnectionPool.objects.create(company=company, name="Other pool", limit=2)
    foreign_pool.connectors.add(other)
    ConnectionPool.objects.create(company=company, name="Shop pool", limit=2).connectors.add(api_connector)
    url = f"/instances/new/{api_connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "X"})
    state = state_from(response)
    response = admin_client.post(url, {"step": "settings", "state": state, **settings_data(connection_pool=foreign_pool.pk)})
    assert response.status_code == 422 and "Select a valid choice" in response.content.decode()
    response = admin_client.post(url, {"step": "settings", "state": state, **settings_data()})
    response = admin_client.post(url, {"step": "auth", "state": state_from(response), "auth_method": other.auth_methods.first().pk})
    assert response.status_code == 422
    assert "Choose one of this connector&#x27;s authentication methods." in response.content.decode()


def test_pools_are_offered_only_when_the_connector_has_a_concurrency_limit(admin_client, company, api_connector, make_connector):
    ConnectionPool.objects.create(company=company, name="Shop pool", limit=2).connectors.add(api_connector)
    url = f"/instances/new/{api_connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "X"})
    assert "Shop pool" in admin_client.get(response["Location"]).content.decode()
    no_limit = make_connector(company, name="No limit")
    response = admin_client.post(f"/instances/new/{no_limit.pk}/", {"step": "name", "state": "", "name": "X"})
    assert "Connection pool" not in admin_client.get(response["Location"]).content.decode()


def test_the_chosen_pool_is_saved(admin_client, company, api_connector, httpserver):
    pool = ConnectionPool.objects.create(company=company, name="Shop pool", limit=2)
    pool.connectors.add(api_connector)
    httpserver.expect_request("/api/me").respond_with_json({})
    run_wizard(admin_client, api_connector, settings=settings_data(connection_pool=pool.pk), credentials={"api_token": "t0ken"})
    assert Instance.objects.get().connection_pool == pool


def test_back_keeps_what_was_entered(admin_client, api_connector):
    url = f"/instances/new/{api_connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "Keep me"})
    response = admin_client.post(url, {"step": "settings", "state": state_from(response), **settings_data(time_zone="Asia/Tokyo")})
    page = admin_client.get(response["Location"]).content.decode()
    back = page.split('class="btn btn-outline-secondary" href="')[1].split('"')[0].replace("&amp;", "&")
    assert "step=settings" in back
    settings_page = admin_client.get(back).content.decode()
    assert 'value="Asia/Tokyo"' in settings_page
    name_back = settings_page.split('class="btn btn-outline-secondary" href="')[1].split('"')[0].replace("&amp;", "&")
    assert 'value="Keep me"' in admin_client.get(name_back).content.decode()


def test_refreshing_a_step_shows_it_again_and_skipping_ahead_is_not_possible(admin_client, api_connector):
    url = f"/instances/new/{api_connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "Refresh"})
    for _ in range(2):  # a refresh shows the same step again, nothing lost
        page = admin_client.get(response["Location"]).content.decode()
        assert "Step 2 of 4: Settings" in page
    assert not Instance.objects.exists()
    page = admin_client.get(f"{url}?step=credentials").content.decode()
    assert "Step 1 of" in page  # no name yet: back to the first step


def test_resubmitting_the_last_step_does_not_create_a_duplicate(admin_client, api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({})
    url = f"/instances/new/{api_connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "Once"})
    response = admin_client.post(url, {"step": "settings", "state": state_from(response), **settings_data()})
    response = admin_client.post(
        url, {"step": "auth", "state": state_from(response), "auth_method": api_connector.auth_methods.get(key="token").pk}
    )
    final = {"step": "credentials", "state": state_from(response), "var_api_token": "t0ken"}
    assert admin_client.post(url, final).status_code == 302
    again = admin_client.post(url, final)
    assert again.status_code == 422
    assert "already has an instance called" in again.content.decode()
    assert Instance.objects.count() == 1


def test_credentials_are_never_kept_in_the_session_or_the_state(admin_client, api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({}, status=401)
    response = run_wizard(admin_client, api_connector, credentials={"api_token": "super-secret-token"})
    state = response.context["state"]
    assert "super-secret-token" not in str(signing.loads(state, salt="instances.new-instance-wizard"))
    assert "super-secret-token" not in str(dict(admin_client.session))


def test_htmx_steps_swap_in_place_and_push_the_step_url(admin_client, api_connector):
    response = admin_client.post(
        f"/instances/new/{api_connector.pk}/", {"step": "name", "state": "", "name": "Swap"}, headers={"HX-Request": "true"}
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<div id="wizard"')
    assert "Step 2 of 4" in body
    assert "step=settings" in response["HX-Push-Url"]


def test_htmx_success_redirects_the_browser(admin_client, api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({})
    url = f"/instances/new/{api_connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "Htmx"})
    response = admin_client.post(url, {"step": "settings", "state": state_from(response), **settings_data()})
    response = admin_client.post(
        url, {"step": "auth", "state": state_from(response), "auth_method": api_connector.auth_methods.get(key="token").pk}
    )
    response = admin_client.post(
        url, {"step": "credentials", "state": state_from(response), "var_api_token": "x1y2z3"}, headers={"HX-Request": "true"}
    )
    instance = Instance.objects.get()
    assert response["HX-Redirect"] == f"/connectors/?highlight=instance-{instance.pk}#instance-{instance.pk}"


def test_the_date_preview_shows_now_in_the_chosen_zone_and_format(admin_client):
    tokyo = admin_client.get("/instances/date-preview/", {"date_format": "%Y", "time_zone": "Asia/Tokyo"}).content.decode()
    assert tokyo.startswith("Now: 20")
    unknown = admin_client.get("/instances/date-preview/", {"date_format": "%Q", "time_zone": "UTC"}).content.decode()
    assert "unknown directive" in unknown
    nowhere = admin_client.get("/instances/date-preview/", {"date_format": "%Y", "time_zone": "Nowhere"}).content.decode()
    assert "Choose a time zone" in nowhere


def test_read_only_users_cannot_open_the_wizard(make_user, company, client_for, api_connector):
    client = client_for(make_user(company, Role.READ_ONLY))
    assert client.get(f"/instances/new/{api_connector.pk}/").status_code == 403


def test_the_sandbox_connector_accepts_its_documented_credentials_end_to_end(admin_client, company, sandbox_listing, install, live_server):
    connector = install(sandbox_listing, company)
    token = connector.auth_methods.get(key="token")
    response = run_wizard(
        admin_client, connector, auth_method=token,
        credentials={"base_url": f"{live_server.url}/sandbox/api", "api_token": "sandbox-token"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Instance.objects.get().last_check_ok is True
