"""OAuth 2 access tokens are refreshed before they expire and once on a 401, by one worker at a time."""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from werkzeug import Response

from instances import checks
from instances.models import CredentialCheck, Instance
from instances.outbound.client import InstanceClient
from tests.oauth_helpers import callback, provider_connector, provider_url, query

TOKENS = {"client_secret": "app-secret-123", "access_token": "at-1-abcdef", "refresh_token": "rt-1-abcdef"}


@pytest.fixture
def provider(company, httpserver):
    return provider_connector(company, httpserver.url_for("").rstrip("/"))


@pytest.fixture
def connected(provider, make_instance):
    def make(due_in: float = 3600, **secrets) -> Instance:
        return make_instance(
            provider, "App", secrets={**TOKENS, **secrets}, values={"client_id": "app-1"},
            token_refresh_due_at=timezone.now() + timedelta(seconds=due_in),
        )

    return make


def rotating_token_endpoint(httpserver, issued: list[str], *, delay: float = 0.0):
    """A token endpoint whose refresh tokens work once: rt-N gives at-(N+1) and rt-(N+1)."""

    def handler(request):
        token = request.form.get("refresh_token", "")
        issued.append(token)
        time.sleep(delay)
        if request.form.get("grant_type") != "refresh_token" or not token.startswith(f"rt-{len(issued)}-"):
            return Response(json.dumps({"error": "invalid_grant", "error_description": "refresh token already used"}),
                            status=400, content_type="application/json")
        n = len(issued) + 1
        body = {"access_token": f"at-{n}-abcdef", "refresh_token": f"rt-{n}-abcdef", "expires_in": 3600, "token_type": "Bearer"}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/token", method="POST").respond_with_handler(handler)


def bearer_me(httpserver):
    def handler(request):
        if request.headers.get("Authorization") == "Bearer at-1-abcdef" and request.args.get("expired"):
            return Response("{}", status=401, content_type="application/json")
        return Response(json.dumps({"seen": request.headers.get("Authorization")}), content_type="application/json")

    httpserver.expect_request("/me").respond_with_handler(handler)


@pytest.mark.django_db
def test_a_token_due_for_refresh_is_refreshed_before_the_request_and_stored_encrypted(connected, httpserver):
    issued: list[str] = []
    rotating_token_endpoint(httpserver, issued)
    bearer_me(httpserver)
    instance = connected(due_in=-1)
    result, check = checks.recheck(instance)
    assert result.ok, result.message
    assert issued == ["rt-1-abcdef"]
    assert check.request_headers["Authorization"] == "[redacted]"
    instance.refresh_from_db()
    assert instance.get_secrets() == {"client_secret": "app-secret-123", "access_token": "at-2-abcdef", "refresh_token": "rt-2-abcdef"}
    assert "at-2-abcdef" not in instance.secrets_ciphertext
    assert instance.token_refresh_due_at > timezone.now() + timedelta(minutes=58)
    refresh = CredentialCheck.objects.get(message="Access token refreshed.")
    assert refresh.ok and refresh.instance == instance and refresh.request_url.endswith("/token")
    stored = json.dumps([refresh.request_headers, refresh.request_body, refresh.response_body])
    for secret in ("rt-1-abcdef", "rt-2-abcdef", "at-2-abcdef", "app-secret-123"):
        assert secret not in stored
    assert "[redacted]" in refresh.response_body


@pytest.mark.django_db
def test_a_token_not_yet_due_is_used_as_it_is(connected, httpserver):
    issued: list[str] = []
    rotating_token_endpoint(httpserver, issued)
    bearer_me(httpserver)
    exchange = InstanceClient.for_instance(connected()).request("GET", "/me")
    assert exchange.json == {"seen": "Bearer at-1-abcdef"} and issued == []


@pytest.mark.django_db
def test_a_401_refreshes_once_and_sends_again(connected, httpserver):
    issued: list[str] = []
    rotating_token_endpoint(httpserver, issued)
    bearer_me(httpserver)
    exchange = InstanceClient.for_instance(connected()).request("GET", "/me", params={"expired": "1"})
    assert exchange.response_status == 200 and exchange.json == {"seen": "Bearer at-2-abcdef"}
    assert issued == ["rt-1-abcdef"]


@pytest.mark.django_db
def test_rotated_refresh_tokens_are_kept_so_the_next_refresh_uses_the_new_one(connected, httpserver):
    issued: list[str] = []
    rotating_token_endpoint(httpserver, issued)
    bearer_me(httpserver)
    instance = connected(due_in=-1)
    InstanceClient.for_instance(instance).request("GET", "/me")
    Instance.objects.filter(pk=instance.pk).update(token_refresh_due_at=timezone.now() - timedelta(seconds=1))
    exchange = InstanceClient.for_instance(Instance.objects.get(pk=instance.pk)).request("GET", "/me")
    assert issued == ["rt-1-abcdef", "rt-2-abcdef"]
    assert exchange.json == {"seen": "Bearer at-3-abcdef"}


@pytest.mark.django_db
def test_a_failed_refresh_marks_re_authentication_needed_with_a_reconnect_button(
    connected, httpserver, admin_client
):
    httpserver.expect_request("/token", method="POST").respond_with_json(
        {"error": "invalid_grant", "error_description": "refresh token revoked"}, status=400
    )
    instance = connected(due_in=-1)
    result, _ = checks.recheck(instance)
    assert not result.ok
    assert result.message.startswith("Re-authentication needed: the access token could not be refreshed")
    assert "refresh token revoked" in result.message
    instance.refresh_from_db()
    assert instance.reauth_reason.startswith("Re-authentication needed")
    assert instance.get_secrets()["refresh_token"] == "rt-1-abcdef"  # nothing half-saved
    page = admin_client.get("/connectors/").content.decode()
    assert "Re-authentication needed" in page
    assert f'href="/instances/{instance.pk}/?tab=authentication" data-testid="reconnect-link">reconnect</a>' in page
    # Flow runs (any request through the client) now fail with that message, without asking the provider again.
    calls = len(httpserver.log)
    exchange = InstanceClient.for_instance(Instance.objects.get(pk=instance.pk)).request("GET", "/orders")
    assert exchange.error == instance.reauth_reason and len(httpserver.log) == calls


@pytest.mark.django_db
def test_an_instance_without_a_refresh_token_keeps_using_its_access_token(connected, httpserver):
    bearer_me(httpserver)
    instance = connected(due_in=-1, refresh_token="")
    exchange = InstanceClient.for_instance(instance).request("GET", "/me")
    # Without a refresh token the stored access token is all there is: it is sent as it is.
    assert exchange.json == {"seen": "Bearer at-1-abcdef"}
    assert [r.path for r, _ in httpserver.log] == ["/me"]


@pytest.mark.django_db
def test_reconnect_from_the_authentication_tab_saves_new_tokens_and_clears_re_authentication(
    connected, httpserver, admin_client
):
    instance = connected()
    Instance.objects.filter(pk=instance.pk).update(reauth_reason="Re-authentication needed: the access token could not be refreshed.")
    httpserver.expect_request("/token", method="POST").respond_with_json(
        {"access_token": "at-new-123", "refresh_token": "rt-new-123", "expires_in": 600, "token_type": "Bearer"}
    )
    httpserver.expect_request("/me").respond_with_json({"id": 1})
    data = {
        "name": "App renamed", "time_zone": "UTC", "date_format": "%Y-%m-%d", "rate_limit_amount": "10",
        "rate_limit_unit": "second", "auth_method": instance.auth_method_id, "var_client_id": "app-1", "connect": "1",
    }
    response = admin_client.post(f"/instances/{instance.pk}/", data)
    params = query(provider_url(response))
    instance.refresh_from_db()
    assert instance.name == "App" and instance.reauth_reason  # nothing saved before the provider answered
    response = callback(admin_client, code="c-9", state=params["state"])
    assert response.status_code == 302 and response["Location"] == f"/instances/{instance.pk}/"
    instance.refresh_from_db()
    assert instance.name == "App renamed" and instance.reauth_reason == "" and instance.last_check_ok is True
    assert instance.get_secrets() == {"client_secret": "app-secret-123", "access_token": "at-new-123", "refresh_token": "rt-new-123"}
    [token_request] = [r for r, _ in httpserver.log if r.path == "/token"]
    assert token_request.headers["Authorization"].startswith("Basic ")  # the stored client secret was used


def _refresh_in_a_worker(pk: int, results) -> None:
    connections.close_all()
    try:
        exchange = InstanceClient.for_instance(Instance.objects.get(pk=pk)).request("GET", "/me")
        results.put((exchange.response_status, exchange.json, exchange.error))
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_refreshing_at_once_spend_the_refresh_token_only_once(connected, httpserver):
    issued: list[str] = []
    rotating_token_endpoint(httpserver, issued, delay=0.5)
    bearer_me(httpserver)
    instance = connected(due_in=-1)
    connections.close_all()  # the forked workers open their own connections
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_refresh_in_a_worker, args=(instance.pk, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    answers = [results.get(timeout=5) for _ in workers]
    assert issued == ["rt-1-abcdef"]  # one refresh, although both workers found the token due
    assert answers == [(200, {"seen": "Bearer at-2-abcdef"}, "")] * 2
    assert Instance.objects.get(pk=instance.pk).get_secrets()["refresh_token"] == "rt-2-abcdef"
    assert CredentialCheck.objects.filter(message="Access token refreshed.").count() == 1
