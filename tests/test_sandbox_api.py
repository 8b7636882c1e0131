import base64

import pytest


@pytest.fixture
def api(client, db):
    return client


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_credentials_are_accepted(api):
    response = api.get("/sandbox/api/me", headers=basic("sandbox", "sandbox-secret"))
    assert response.status_code == 200
    assert response.json() == {"account": "Sandbox Retail", "authenticated_with": "basic"}


@pytest.mark.parametrize(
    "headers", [basic("sandbox", "wrong"), basic("other", "sandbox-secret"), {"X-Api-Key": "nope"}, {"Authorization": "Bearer nope"}, {}]
)
def test_anything_else_gets_401_with_a_json_error(api, headers):
    response = api.get("/sandbox/api/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_the_api_token_is_accepted(api):
    assert api.get("/sandbox/api/orders", headers={"X-Api-Key": "sandbox-token"}).json()["meta"]["total"] == 240


def test_client_credentials_give_a_bearer_token(api):
    token = api.post(
        "/sandbox/api/oauth/token",
        {"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-client-secret"},
    ).json()["access_token"]
    response = api.get("/sandbox/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.json()["authenticated_with"] == "oauth2_client_credentials"


def test_a_wrong_client_secret_is_refused(api):
    response = api.post(
        "/sandbox/api/oauth/token",
        {"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "guess"},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_unknown_paths_need_credentials_too(api):
    assert api.get("/sandbox/api/secret-admin").status_code == 401
    assert api.get("/sandbox/api/secret-admin", headers={"X-Api-Key": "sandbox-token"}).status_code == 404


def credentials_step(client, connector, method) -> str:
    """The credentials step of the wizard as first shown (GET), its HTML."""
    from tests.wizard_helpers import settings_data, state_from

    url = f"/instances/new/{connector.pk}/"
    response = client.post(url, {"step": "name", "state": "", "name": "Main"})
    response = client.post(url, {"step": "settings", "state": state_from(response), **settings_data()})
    response = client.post(url, {"step": "auth", "state": state_from(response), "auth_method": method.pk})
    return client.get(response["Location"]).content.decode()


def test_a_new_sandbox_instance_defaults_to_the_address_the_dashboard_is_served_on(
    admin_client, company, sandbox_listing, install, settings
):
    # `manage.py runserver 8080` without PORT or SANDBOX_BASE_URL: the wizard's own host.
    settings.SANDBOX_BASE_URL_CONFIGURED = False
    connector = install(sandbox_listing, company)
    page = credentials_step(admin_client, connector, connector.auth_methods.get(key="token"))
    assert 'value="http://testserver/sandbox/api"' in page and "127.0.0.1:8000" not in page


@pytest.mark.parametrize("version", ["1.0.0", None])  # the first published version and the newest
def test_with_port_set_the_sandbox_address_follows_it(admin_client, company, sandbox_listing, install, settings, version):
    # `PORT=8080 make run`: settings derive SANDBOX_BASE_URL from PORT.
    settings.SANDBOX_BASE_URL_CONFIGURED = True
    settings.SANDBOX_BASE_URL = "http://127.0.0.1:8080/sandbox/api"
    connector = install(sandbox_listing, company, version=version)
    page = credentials_step(admin_client, connector, connector.auth_methods.get(key="token"))
    assert 'value="http://127.0.0.1:8080/sandbox/api"' in page
    # An instance that never had the variable set calls the same address.
    from instances.outbound.client import InstanceClient

    client = InstanceClient(connector, connector.auth_methods.get(key="token"), {}, {"api_token": "sandbox-token"})
    assert client.url_for("/me") == "http://127.0.0.1:8080/sandbox/api/me"
