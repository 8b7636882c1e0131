"""OAuth 2 authorisation code: Connect, the provider's answer at the callback, and only then an instance."""

from __future__ import annotations

import json

import pytest
from django.contrib.messages import get_messages
from werkzeug import Response

from instances.models import CredentialCheck, Instance, OAuthAuthorization
from patchworks_site.models import Role
from tests.oauth_helpers import callback, connect, provider_connector, query

pytestmark = pytest.mark.django_db


def shown_messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def sandbox(company, sandbox_listing, install, live_server):
    connector = install(sandbox_listing, company)
    return connector, connector.auth_methods.get(key="authorization_code"), f"{live_server.url}/sandbox/api"


def consent(client, authorize_url: str, decision: str = "allow"):
    """Answer the Sandbox's consent page as its demo account; the redirect back to the dashboard."""
    path = authorize_url.split("://", 1)[1].split("/", 1)[1]
    page = client.get("/" + path)
    assert page.status_code == 200
    assert "asks for access to your Sandbox account" in page.content.decode()
    data = {**query(authorize_url), "username": "sandbox", "password": "sandbox-secret", "decision": decision}
    response = client.post("/sandbox/api/oauth/authorize", data)
    assert response.status_code == 302
    return response["Location"]


def test_connect_sends_the_browser_to_the_authorise_page_with_state_and_pkce_and_saves_nothing(admin_client, sandbox):
    connector, method, base = sandbox
    url = connect(
        admin_client, connector, {"base_url": base, "client_id": "sandbox-app", "client_secret": "sandbox-app-secret"}, auth_method=method
    )
    params = query(url)
    assert url.startswith(f"{base}/oauth/authorize?")
    assert params["response_type"] == "code" and params["client_id"] == "sandbox-app"
    assert params["scope"] == "orders products"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["redirect_uri"] == "http://testserver/instances/oauth/callback/"
    assert "sandbox-app-secret" not in url
    assert not Instance.objects.exists()
    pending = OAuthAuthorization.objects.get(state=params["state"])
    assert "sandbox-app-secret" not in pending.secrets_ciphertext  # kept encrypted until the callback
    assert pending.get_secrets()["client_secret"] == "sandbox-app-secret"


def test_the_whole_dance_against_the_sandbox_saves_a_checked_instance_with_encrypted_tokens(admin_client, sandbox):
    connector, method, base = sandbox
    url = connect(
        admin_client,
        connector,
        {"base_url": base, "client_id": "sandbox-app", "client_secret": "sandbox-app-secret"},
        name="Sandbox app",
        auth_method=method,
    )
    back = consent(admin_client, url)
    assert back.startswith("http://testserver/instances/oauth/callback/?")
    response = admin_client.get(back.removeprefix("http://testserver"))
    assert response.status_code == 302, response.content.decode()[:2000]
    instance = Instance.objects.get(name="Sandbox app")
    assert response["Location"].startswith("/connectors/?highlight=instance-")
    assert instance.auth_method == method and instance.last_check_ok is True
    secrets = instance.get_secrets()
    assert set(secrets) == {"client_secret", "access_token", "refresh_token"}
    assert secrets["access_token"] not in instance.secrets_ciphertext
    assert instance.token_refresh_due_at is not None
    check = instance.checks.get()
    assert check.ok and check.request_url == f"{base}/me"
    stored = json.dumps([check.request_headers, check.response_body, check.request_url])
    assert secrets["access_token"] not in stored and "[redacted]" in json.dumps(check.request_headers)
    # The state was used once and nothing secret stays with it.
    pending = OAuthAuthorization.objects.get()
    assert pending.used_at is not None and pending.secrets_ciphertext == ""
    # The manage connectors page shows it authenticated.
    page = admin_client.get("/connectors/").content.decode()
    assert "Sandbox app" in page and "Authenticated" in page


def test_denied_consent_saves_nothing_and_the_wizard_resumes_at_the_credentials_step(admin_client, sandbox):
    connector, method, base = sandbox
    url = connect(
        admin_client, connector, {"base_url": base, "client_id": "sandbox-app", "client_secret": "sandbox-app-secret"}, auth_method=method
    )
    back = consent(admin_client, url, decision="deny")
    assert "error=access_denied" in back
    response = admin_client.get(back.removeprefix("http://testserver"))
    assert response.status_code == 302
    assert "step=credentials" in response["Location"]
    assert shown_messages(response) == ["Access was not allowed at Sandbox, so nothing was saved. Use Connect again to retry."]
    page = admin_client.get(response["Location"]).content.decode()
    assert "Access was not allowed" in page and 'value="sandbox-app"' in page  # the typed client id is kept
    assert not Instance.objects.exists()


def test_a_wrong_client_secret_is_refused_at_the_token_endpoint_and_nothing_is_saved(admin_client, sandbox):
    connector, method, base = sandbox
    url = connect(
        admin_client, connector, {"base_url": base, "client_id": "sandbox-app", "client_secret": "wrong-secret"}, auth_method=method
    )
    response = admin_client.get(consent(admin_client, url).removeprefix("http://testserver"))
    assert "step=credentials" in response["Location"]
    [message] = shown_messages(response)
    assert message.startswith("The token request was refused: 401 Unauthorized.")
    assert "Unknown client id or wrong client secret" in message and message.endswith("Nothing was saved.")
    assert not Instance.objects.exists()
    check = CredentialCheck.objects.get()  # the refused exchange is kept for review, redacted
    assert not check.ok and "wrong-secret" not in json.dumps([check.request_headers, check.request_body])


def test_a_wrong_state_is_refused(admin_client, sandbox):
    response = callback(admin_client, code="anything", state="not-a-state-we-issued")
    assert response.status_code == 400
    assert "does not match a Connect step you started" in response.content.decode()
    assert not Instance.objects.exists()


def test_a_state_is_used_once(admin_client, sandbox):
    connector, method, base = sandbox
    url = connect(
        admin_client, connector, {"base_url": base, "client_id": "sandbox-app", "client_secret": "sandbox-app-secret"}, auth_method=method
    )
    back = consent(admin_client, url).removeprefix("http://testserver")
    assert admin_client.get(back).status_code == 302
    again = admin_client.get(back)
    assert again.status_code == 400 and "was already used" in again.content.decode()
    assert Instance.objects.count() == 1


def test_a_state_is_bound_to_the_user_who_started_connect(admin_client, sandbox, make_user, company, client_for):
    connector, method, base = sandbox
    url = connect(
        admin_client, connector, {"base_url": base, "client_id": "sandbox-app", "client_secret": "sandbox-app-secret"}, auth_method=method
    )
    back = consent(admin_client, url).removeprefix("http://testserver")
    colleague = client_for(make_user(company, Role.MANAGER))
    response = colleague.get(back)
    assert response.status_code == 400 and "does not match" in response.content.decode()
    assert not Instance.objects.exists()
    assert admin_client.get(back).status_code == 302  # still usable by its owner
    assert Instance.objects.count() == 1


def test_an_expired_connect_step_saves_nothing(admin_client, sandbox):
    connector, method, base = sandbox
    url = connect(
        admin_client, connector, {"base_url": base, "client_id": "sandbox-app", "client_secret": "sandbox-app-secret"}, auth_method=method
    )
    from datetime import timedelta

    from django.utils import timezone

    OAuthAuthorization.objects.update(created_at=timezone.now() - timedelta(hours=1))
    response = admin_client.get(consent(admin_client, url).removeprefix("http://testserver"))
    assert "has expired" in shown_messages(response)[0]
    assert not Instance.objects.exists()


# --- a provider played by pytest-httpserver: its error cases --------------------


@pytest.fixture
def provider(company, httpserver):
    return provider_connector(company, httpserver.url_for("").rstrip("/"))


def started(admin_client, provider) -> dict[str, str]:
    return query(connect(admin_client, provider, {"client_id": "app-1", "client_secret": "app-secret-123"}))


def test_a_token_endpoint_500_is_a_clear_message_and_nothing_is_saved(admin_client, provider, httpserver):
    httpserver.expect_request("/token", method="POST").respond_with_data("boom", status=500)
    params = started(admin_client, provider)
    response = callback(admin_client, code="c-1", state=params["state"])
    assert shown_messages(response) == [
        'The token request was refused: 500 Internal Server Error. The API said: "boom". Nothing was saved.'
    ]
    assert not Instance.objects.exists()


def test_a_garbage_token_response_is_a_clear_message(admin_client, provider, httpserver):
    httpserver.expect_request("/token", method="POST").respond_with_data("<html>not a token</html>", content_type="text/html")
    params = started(admin_client, provider)
    response = callback(admin_client, code="c-1", state=params["state"])
    assert shown_messages(response)[0].startswith("The token endpoint did not return a usable access token")
    assert not Instance.objects.exists()


def test_a_reused_code_refused_by_the_provider_is_reported_in_its_words(admin_client, provider, httpserver):
    httpserver.expect_request("/token", method="POST").respond_with_json(
        {"error": "invalid_grant", "error_description": "Authorization code already used"}, status=400
    )
    params = started(admin_client, provider)
    response = callback(admin_client, code="c-used", state=params["state"])
    [message] = shown_messages(response)
    assert "400 Bad Request" in message and "Authorization code already used" in message
    assert not Instance.objects.exists()


def test_a_provider_error_at_the_callback_is_shown_redacted(admin_client, provider):
    params = started(admin_client, provider)
    response = callback(admin_client, state=params["state"], error="server_error", error_description="secret app-secret-123 leaked")
    [message] = shown_messages(response)
    assert "reported an error" in message and "app-secret-123" not in message and "[redacted]" in message


def test_the_code_exchange_sends_the_code_verifier_and_redirect_uri_and_the_test_request_uses_the_token(
    admin_client, provider, httpserver
):
    def token(request):
        form = request.form
        assert form["grant_type"] == "authorization_code" and form["code"] == "c-1"
        assert form["redirect_uri"] == "http://testserver/instances/oauth/callback/"
        assert len(form["code_verifier"]) >= 43
        return Response(json.dumps({"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 3600, "token_type": "Bearer"}),
                        content_type="application/json")

    httpserver.expect_request("/token", method="POST").respond_with_handler(token)
    httpserver.expect_request("/me", headers={"Authorization": "Bearer at-1"}).respond_with_json({"id": 7})
    params = started(admin_client, provider)
    response = callback(admin_client, code="c-1", state=params["state"])
    assert response.status_code == 302 and response["Location"].startswith("/connectors/")
    instance = Instance.objects.get()
    assert instance.get_secrets() == {"client_secret": "app-secret-123", "access_token": "at-1", "refresh_token": "rt-1"}


def test_a_failing_test_request_after_a_good_token_saves_nothing(admin_client, provider, httpserver):
    httpserver.expect_request("/token", method="POST").respond_with_json({"access_token": "at-1", "token_type": "Bearer"})
    httpserver.expect_request("/me").respond_with_json({"error": "insufficient scope"}, status=403)
    params = started(admin_client, provider)
    response = callback(admin_client, code="c-1", state=params["state"])
    [message] = shown_messages(response)
    assert message.startswith("Connected, but the test request failed: The credentials were refused: 403 Forbidden.")
    assert not Instance.objects.exists()


def test_a_configured_redirect_uri_is_the_one_shown_and_sent(admin_client, sandbox, settings):
    settings.OAUTH_REDIRECT_URI = "https://dashboard.example.com/instances/oauth/callback/"
    connector, method, base = sandbox
    from tests.wizard_helpers import settings_data, state_from

    url = f"/instances/new/{connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "Main"})
    response = admin_client.post(url, {"step": "settings", "state": state_from(response), **settings_data()})
    response = admin_client.post(url, {"step": "auth", "state": state_from(response), "auth_method": method.pk})
    page = admin_client.get(response["Location"]).content.decode()
    assert 'value="https://dashboard.example.com/instances/oauth/callback/"' in page and 'data-copy-field="oauth-redirect-uri"' in page
    authorize = connect(
        admin_client,
        connector,
        {"base_url": base, "client_id": "sandbox-app", "client_secret": "x-secret"},
        auth_method=method,
        name="Other",
    )
    assert query(authorize)["redirect_uri"] == settings.OAUTH_REDIRECT_URI


def test_choosing_the_authorisation_code_method_on_the_authentication_tab_shows_connect(admin_client, sandbox, make_instance):
    connector, method, base = sandbox
    instance = make_instance(connector, auth_method=connector.auth_methods.get(key="token"), secrets={"api_token": "sandbox-token"})
    page = admin_client.get(f"/instances/{instance.pk}/", {"auth_method": method.pk}, headers={"HX-Request": "true"}).content.decode()
    assert 'data-testid="redirect-uri"' in page and "http://testserver/instances/oauth/callback/" in page
    assert 'data-testid="reconnect"' in page and "Connect</button>" in page
    token_page = admin_client.get(f"/instances/{instance.pk}/").content.decode()
    assert 'data-testid="redirect-uri"' not in token_page


def test_the_sandbox_sends_codes_only_to_the_dashboards_own_callback(client):
    base = {"response_type": "code", "client_id": "sandbox-app", "state": "s"}
    for foreign in ("https://evil.example/instances/oauth/callback/", "http://testserver/connectors/", "javascript:alert(1)"):
        response = client.get("/sandbox/api/oauth/authorize", {**base, "redirect_uri": foreign})
        assert response.status_code == 400 and "is not registered with the Sandbox" in response.content.decode()
    response = client.post("/sandbox/api/oauth/authorize", {
        **base, "redirect_uri": "https://evil.example/instances/oauth/callback/", "username": "sandbox",
        "password": "sandbox-secret", "decision": "allow",
    })
    assert response.status_code == 400 and "Location" not in response


def test_abandoned_connect_steps_are_forgotten_by_the_scheduled_re_check(admin_client, sandbox):
    from datetime import timedelta

    from django.utils import timezone

    from instances import rechecks

    connector, method, base = sandbox
    connect(
        admin_client, connector, {"base_url": base, "client_id": "sandbox-app", "client_secret": "sandbox-app-secret"}, auth_method=method
    )
    rechecks.run_due_checks()
    assert OAuthAuthorization.objects.count() == 1  # still within its 15 minutes
    OAuthAuthorization.objects.update(created_at=timezone.now() - timedelta(minutes=16))
    rechecks.run_due_checks()
    assert not OAuthAuthorization.objects.exists()


def test_the_consent_page_may_redirect_only_to_the_callbacks_origin(client, settings):
    settings.SANDBOX_BASE_URL = "http://127.0.0.1:8093/sandbox/api"  # reached as localhost too
    response = client.get("/sandbox/api/oauth/authorize", {
        "response_type": "code", "client_id": "sandbox-app", "state": "s",
        "redirect_uri": "http://localhost:8093/instances/oauth/callback/",
    })
    policy = response["Content-Security-Policy"]
    assert "form-action 'self' http://localhost:8093;" in policy or policy.endswith("form-action 'self' http://localhost:8093")
    assert "script-src 'self'" in policy
    assert "form-action 'self';" in client.get("/login/")["Content-Security-Policy"] + ";"


REGISTERED = "http://testserver/instances/oauth/callback/"


@pytest.mark.parametrize("redirect_uri", [
    "http://testserver:8080/instances/oauth/callback/",  # another port
    "http://testserver:80/instances/oauth/callback/",  # the default port spelled out
    "http://testserver./instances/oauth/callback/",  # a trailing dot
    "http://TESTSERVER/instances/oauth/callback/",  # another case in the host
    "http://testserver/instances/oauth/callback/#",  # an empty fragment
    "http://testserver/instances/oauth/callback/#frag",  # a fragment
    "http://testserver/Instances/OAuth/Callback/",  # another case in the path
    "http://testserver/instances/oauth/callback",  # no trailing slash
    "http://testserver//instances/oauth/callback/",  # a doubled slash
    "http://testserver/instances/oauth/callback/../callback/",  # a dot segment
    "http://testserver/instances/oauth/callback/%2e%2e/callback/",  # an encoded dot segment
    "http://testserver/instances/oauth/callback/;x",  # path parameters
    "http://testserver/instances/oauth/callback/?x=1",  # an extra query
    "http://testserver/instances/oauth/callback/?",  # an empty query
    "http://user@testserver/instances/oauth/callback/",  # user info
    "http://evil.example@testserver/instances/oauth/callback/",  # user info that looks like a host
    "https://testserver/instances/oauth/callback/",  # https instead of http
    "http://localhost:8001/instances/oauth/callback/",  # another port of the Sandbox's loopback address
    " http://testserver/instances/oauth/callback/",  # leading space
])
def test_the_sandbox_compares_redirect_uris_exactly(client, settings, redirect_uri):
    settings.SANDBOX_BASE_URL = "http://127.0.0.1:8000/sandbox/api"
    base = {"response_type": "code", "client_id": "sandbox-app", "state": "s"}
    response = client.get("/sandbox/api/oauth/authorize", {**base, "redirect_uri": redirect_uri})
    assert response.status_code == 400 and "is not registered with the Sandbox" in response.content.decode()
    response = client.post("/sandbox/api/oauth/authorize", {
        **base, "redirect_uri": redirect_uri, "username": "sandbox", "password": "sandbox-secret", "decision": "allow",
    })
    assert response.status_code == 400 and "Location" not in response


@pytest.mark.parametrize("redirect_uri", [
    REGISTERED,  # the callback on the origin the consent page is served on
    "http://127.0.0.1:8000/instances/oauth/callback/",  # on SANDBOX_BASE_URL's origin
    "http://localhost:8000/instances/oauth/callback/",  # the same loopback address by name
])
def test_the_registered_redirect_uris_get_the_code(client, settings, redirect_uri):
    settings.SANDBOX_BASE_URL = "http://127.0.0.1:8000/sandbox/api"
    response = client.post("/sandbox/api/oauth/authorize", {
        "response_type": "code", "client_id": "sandbox-app", "state": "s", "redirect_uri": redirect_uri,
        "username": "sandbox", "password": "sandbox-secret", "decision": "allow",
    })
    assert response.status_code == 302 and response["Location"].startswith(redirect_uri + "?code=")


def test_configured_redirect_uris_are_the_only_ones_registered(client, settings):
    settings.SANDBOX_REDIRECT_URIS = ["https://dash.example/instances/oauth/callback/"]
    base = {"response_type": "code", "client_id": "sandbox-app", "state": "s"}
    assert client.get("/sandbox/api/oauth/authorize", {**base, "redirect_uri": REGISTERED}).status_code == 400
    assert client.get("/sandbox/api/oauth/authorize", {
        **base, "redirect_uri": "https://dash.example/instances/oauth/callback/"}).status_code == 200
