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


@pytest.mark.parametrize("headers", [basic("sandbox", "wrong"), basic("other", "sandbox-secret"), {"X-Api-Key": "nope"}, {"Authorization": "Bearer nope"}, {}])
def test_anything_else_gets_401_with_a_json_error(api, headers):
    response = api.get("/sandbox/api/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_the_api_token_is_accepted(api):
    assert api.get("/sandbox/api/orders", headers={"X-Api-Key": "sandbox-token"}).json()["count"] == 3


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
