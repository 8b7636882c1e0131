"""A company's Sandbox account key: random, encrypted, rotatable, and sent only to the Sandbox this deployment serves."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from werkzeug import Request, Response

from flows import runner, runs
from flows.models import ProcessFlow, RunStatus, RunTrigger, Shape
from instances import checks, sandbox_accounts
from instances.outbound import transport
from instances.models import CredentialCheck
from patchworks_site.models import AuditEntry, Role, SandboxAccount, SandboxReceivedOrder

TOKEN = {"X-Api-Key": "sandbox-token"}


def post_order(client, reference: str, key: str | None):
    headers = {**TOKEN, **({"X-Sandbox-Account": key} if key is not None else {})}
    return client.post("/sandbox/api/orders", json.dumps({"reference": reference}), content_type="application/json",
                       headers=headers)


# --- only the deployment's own Sandbox gets the key --------------------------------------------------------------


def _imitation(httpserver) -> list[Request]:
    """A host answering like the Sandbox (/sandbox/api/...): every request it receives."""
    seen: list[Request] = []

    def answer(request: Request) -> Response:
        seen.append(request)
        if request.path.endswith("/orders") and request.method == "GET":
            orders = [{"id": 1, "number": "SB-1"}] if request.args.get("page", "1") == "1" else []
            body = {"orders": orders, "links": {"next": None}}
        elif request.method == "POST":
            body = {"id": 1}
        else:
            body = {"account": "Sandbox Retail", "authenticated_with": "token"}
        return Response(json.dumps(body), 200 if request.method != "POST" else 201, content_type="application/json")

    httpserver.expect_request("/sandbox/api/me").respond_with_handler(answer)
    httpserver.expect_request("/sandbox/api/orders").respond_with_handler(answer)
    return seen


@pytest.mark.parametrize("own", [
    "http://{host}:{other_port}/sandbox/api",  # same host, another port
    "http://{other_host}:{port}/sandbox/api",  # same port, another host name
    "https://{host}:{port}/sandbox/api",  # another scheme
    "http://{host}.:{port}/sandbox/api",  # a trailing dot
    "http://user@{host}:{port}/sandbox/api",  # user info
])
def test_a_sandbox_instance_on_another_origin_never_receives_the_account_key_on_check_or_in_a_run(
        httpserver, settings, company, sandbox_listing, install, make_instance, admin_client, own):
    host = httpserver.host
    other_host = "127.0.0.1" if host == "localhost" else "localhost"
    settings.SANDBOX_BASE_URL = own.format(host=host, other_host=other_host, port=httpserver.port,
                                           other_port=httpserver.port + 1)
    seen = _imitation(httpserver)
    connector = install(sandbox_listing, company)
    instance = make_instance(connector, "Sandbox elsewhere", {"api_token": "sandbox-token"},
                             auth_method=connector.auth_methods.get(key="token"),
                             values={"base_url": httpserver.url_for("/sandbox/api")})
    assert admin_client.post(f"/instances/{instance.pk}/check/").status_code in (200, 302)  # check now
    instance.refresh_from_db()
    assert instance.last_check_ok
    flow = ProcessFlow.objects.create(company=company, name="Imitation round trip", enabled=True)
    for position, key in enumerate(("list_orders", "create_order")):
        Shape.objects.create(flow=flow, position=position, instance=instance, endpoint=connector.endpoints.get(key=key))
    try:
        run = runner.execute(runs.queue_run(flow, RunTrigger.MANUAL).pk)
    finally:
        transport.adapters.clear()
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert {r.method for r in seen} == {"GET", "POST"} and len(seen) >= 3
    assert all("X-Sandbox-Account" not in r.headers for r in seen)
    key = sandbox_accounts.account_key(company.pk)
    assert not any(key in json.dumps([dict(r.headers), r.url, r.get_data(as_text=True)]) for r in seen)


def test_the_deployments_own_sandbox_gets_the_key_and_it_is_redacted_in_the_check(
        live_server, settings, company, sandbox_listing, install, make_instance):
    settings.SANDBOX_BASE_URL = f"{live_server.url}/sandbox/api"
    connector = install(sandbox_listing, company)
    instance = make_instance(connector, "Sandbox here", {"api_token": "sandbox-token"},
                             auth_method=connector.auth_methods.get(key="token"),
                             values={"base_url": settings.SANDBOX_BASE_URL})
    flow = ProcessFlow.objects.create(company=company, name="Sandbox send", enabled=True)
    instance.rate_limit_amount, instance.rate_limit_unit = 100, "second"
    instance.save()
    for position, key in enumerate(("list_orders", "create_order")):
        Shape.objects.create(flow=flow, position=position, instance=instance, endpoint=connector.endpoints.get(key=key))
    try:
        result, check = checks.recheck(instance)
        run = runner.execute(runs.queue_run(flow, RunTrigger.MANUAL).pk)
    finally:
        transport.adapters.clear()
    assert result.ok and run.status == RunStatus.SUCCESS, (result.message, run.failure_reason)
    account = SandboxAccount.objects.get(company=company)
    # What the run sent is in the company's account, under a random key held encrypted.
    assert SandboxReceivedOrder.objects.filter(account=account.account).count() == 240
    key = sandbox_accounts.account_key(company.pk)
    assert len(key) >= 40 and key not in account.key_ciphertext and account.key_hash != key
    stored = CredentialCheck.objects.get(pk=check.pk)
    assert "X-Sandbox-Account" in json.dumps(stored.request_headers)
    assert key not in json.dumps([stored.request_headers, stored.request_url, stored.response_body])
    # Nor is it anywhere in what the run stored.
    out = io.StringIO()
    call_command("dumpdata", "flows", "instances", stdout=out)
    assert key not in out.getvalue()


def test_each_company_has_its_own_random_key(company, other_company):
    ours, theirs = sandbox_accounts.account_key(company.pk), sandbox_accounts.account_key(other_company.pk)
    assert ours != theirs and sandbox_accounts.account_key(company.pk) == ours
    assert SandboxAccount.objects.account_with_key(ours) == SandboxAccount.objects.get(company=company).account


# --- rotation ------------------------------------------------------------------------------------------------------


def test_after_rotation_the_old_key_is_refused_and_what_was_received_stays(client, company, make_user):
    old = sandbox_accounts.account_key(company.pk)
    assert post_order(client, "BEFORE", old).status_code == 201
    client.force_login(make_user(company, Role.ADMINISTRATOR))
    page = client.get("/sandbox/received-orders/").content.decode()
    assert 'data-testid="rotate-key"' in page and "BEFORE" in page

    response = client.post("/sandbox/account/rotate/", {"confirm": "yes"}, follow=True)
    assert "The Sandbox account key was rotated" in response.content.decode()
    refused = post_order(client, "AFTER-OLD-KEY", old)
    assert refused.status_code == 401 and refused.json()["error"] == "unknown_account"
    assert "rotated" in refused.json()["error_description"]
    new = sandbox_accounts.account_key(company.pk)
    assert new != old and post_order(client, "AFTER", new).status_code == 201
    page = client.get("/sandbox/received-orders/").content.decode()
    assert "BEFORE" in page and "AFTER" in page and "AFTER-OLD-KEY" not in page
    entry = AuditEntry.objects.get(company=company, object_type="Sandbox account")
    assert entry.changes == {"key": "changed"}


def test_rotation_needs_the_confirmation_and_an_administrator(client, company, make_user):
    key = sandbox_accounts.account_key(company.pk)
    client.force_login(make_user(company, Role.ADMINISTRATOR))
    response = client.post("/sandbox/account/rotate/", {}, follow=True)
    assert "tick the box to confirm" in response.content.decode()
    for role in (Role.MANAGER, Role.USER, Role.READ_ONLY):
        client.force_login(make_user(company, role))
        assert 'data-testid="rotate-key"' not in client.get("/sandbox/received-orders/").content.decode()
        assert client.post("/sandbox/account/rotate/", {"confirm": "yes"}).status_code == 403
    assert client.get("/sandbox/account/rotate/").status_code == 405
    assert post_order(client, "STILL", key).status_code == 201


def test_the_key_is_shown_on_no_page(client, company, make_user, sandbox_listing, install, make_instance):
    key = sandbox_accounts.account_key(company.pk)
    connector = install(sandbox_listing, company)
    instance = make_instance(connector, "Sandbox", {"api_token": "sandbox-token"},
                             auth_method=connector.auth_methods.get(key="token"))
    client.force_login(make_user(company, Role.ADMINISTRATOR))
    client.post("/sandbox/account/rotate/", {"confirm": "yes"})
    key_after = sandbox_accounts.account_key(company.pk)
    for url in ("/sandbox/received-orders/", f"/instances/{instance.pk}/", "/audit/", "/connectors/"):
        page = client.get(url).content.decode()
        assert key not in page and key_after not in page, url
