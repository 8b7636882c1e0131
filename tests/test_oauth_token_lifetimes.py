"""An OAuth 2 token answer's expires_in, however absurd, never loses the tokens it came with."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone
from werkzeug import Response

from instances import checks
from instances.models import CredentialCheck, Instance
from tests.oauth_helpers import callback, connect, provider_connector, query

pytestmark = pytest.mark.django_db

# Raw JSON for "expires_in": too large for a date, not a number, not positive, or missing.
ABSURD_EXPIRES_IN = [
    "1" + "0" * 30,  # 10**30
    "1e308",
    "1" * 400,
    "Infinity",
    "-Infinity",
    "NaN",
    '"abc"',
    '"NaN"',
    '"1e999"',
    "-5",
    "0",
    "true",
    "null",
    "[3600]",
    '{"s": 3600}',
    None,  # missing
]
ONE_YEAR = timedelta(days=365)


def token_body(expires_in: str | None, **tokens: str) -> str:
    fields = [f'"{k}": "{v}"' for k, v in tokens.items()] + ['"token_type": "Bearer"']
    if expires_in is not None:
        fields.append(f'"expires_in": {expires_in}')
    return "{" + ", ".join(fields) + "}"


@pytest.fixture
def provider(company, httpserver):
    return provider_connector(company, httpserver.url_for("").rstrip("/"))


@pytest.mark.parametrize("expires_in", ABSURD_EXPIRES_IN)
def test_the_callback_saves_the_tokens_whatever_expires_in_says(admin_client, provider, httpserver, expires_in):
    httpserver.expect_request("/token", method="POST").respond_with_data(
        token_body(expires_in, access_token="at-1-abcdef", refresh_token="rt-1-abcdef"), content_type="application/json"
    )
    httpserver.expect_request("/me", headers={"Authorization": "Bearer at-1-abcdef"}).respond_with_json({"id": 7})
    params = query(connect(admin_client, provider, {"client_id": "app-1", "client_secret": "app-secret-123"}))

    response = callback(admin_client, code="c-1", state=params["state"])

    assert response.status_code == 302 and response["Location"].startswith("/connectors/")
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        'Instance "Main" is connected, authenticated and ready to use in process flows.'
    ]
    instance = Instance.objects.get()
    assert instance.get_secrets() == {
        "client_secret": "app-secret-123", "access_token": "at-1-abcdef", "refresh_token": "rt-1-abcdef"
    }
    due = instance.token_refresh_due_at
    assert due is None or due <= timezone.now() + ONE_YEAR


def test_a_huge_expires_in_is_cut_to_the_longest_token_lifetime(admin_client, provider, httpserver, settings):
    settings.OAUTH_MAX_TOKEN_LIFETIME = 86400
    httpserver.expect_request("/token", method="POST").respond_with_data(
        token_body("1e308", access_token="at-1-abcdef", refresh_token="rt-1-abcdef"), content_type="application/json"
    )
    httpserver.expect_request("/me").respond_with_json({"id": 7})
    params = query(connect(admin_client, provider, {"client_id": "app-1", "client_secret": "app-secret-123"}))
    callback(admin_client, code="c-1", state=params["state"])
    due = Instance.objects.get().token_refresh_due_at
    assert timezone.now() + timedelta(hours=23) < due <= timezone.now() + timedelta(days=1)


@pytest.fixture
def due_instance(provider, make_instance):
    return make_instance(
        provider, "App", values={"client_id": "app-1"},
        secrets={"client_secret": "app-secret-123", "access_token": "at-1-abcdef", "refresh_token": "rt-1-abcdef"},
        token_refresh_due_at=timezone.now() - timedelta(seconds=1),
    )


def me(httpserver):
    httpserver.expect_request("/me").respond_with_handler(
        lambda request: Response(json.dumps({"seen": request.headers.get("Authorization")}), content_type="application/json")
    )


@pytest.mark.parametrize("expires_in", ABSURD_EXPIRES_IN)
def test_a_refresh_keeps_the_rotated_refresh_token_whatever_expires_in_says(due_instance, httpserver, expires_in):
    httpserver.expect_request("/token", method="POST").respond_with_data(
        token_body(expires_in, access_token="at-2-abcdef", refresh_token="rt-2-abcdef"), content_type="application/json"
    )
    me(httpserver)

    result, _ = checks.recheck(due_instance)

    assert result.ok, result.message
    instance = Instance.objects.get(pk=due_instance.pk)
    assert instance.get_secrets()["refresh_token"] == "rt-2-abcdef"
    assert instance.get_secrets()["access_token"] == "at-2-abcdef"
    assert "rt-2-abcdef" not in instance.secrets_ciphertext  # stored encrypted
    assert instance.reauth_reason == ""
    due = instance.token_refresh_due_at
    assert due is None or due <= timezone.now() + ONE_YEAR


def test_a_refresh_answer_without_a_usable_access_token_still_keeps_its_rotated_refresh_token(due_instance, httpserver):
    # The provider has spent rt-1: losing rt-2 as well would leave nothing to refresh with.
    httpserver.expect_request("/token", method="POST").respond_with_json(
        {"refresh_token": "rt-2-abcdef", "token_type": "Bearer", "expires_in": 3600}
    )
    me(httpserver)

    result, _ = checks.recheck(due_instance)

    assert not result.ok
    assert "did not return a usable access token" in result.message
    instance = Instance.objects.get(pk=due_instance.pk)
    assert instance.get_secrets()["refresh_token"] == "rt-2-abcdef"
    assert "rt-2-abcdef" not in instance.secrets_ciphertext
    failed = CredentialCheck.objects.filter(instance=instance, ok=False).latest("pk")
    assert "rt-2-abcdef" not in json.dumps([failed.response_body, failed.message])
