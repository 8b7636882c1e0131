"""A company's Sandbox account key: issued by an Administrator and shown once, then an ordinary instance secret."""

from __future__ import annotations

import io
import json
import re

from django.core.management import call_command
from werkzeug import Request, Response

from flows import execution, queueing
from flows.models import ProcessFlow, RunStatus, RunTrigger, Shape
from instances import checks
from instances.models import CredentialCheck
from instances.outbound import transport
from patchworks_site.models import AuditEntry, Role
from sandbox.models import SandboxAccount, SandboxReceivedOrder

TOKEN = {"X-Api-Key": "sandbox-token"}


def post_order(client, reference: str, key: str | None):
    headers = {**TOKEN, **({"X-Sandbox-Account": key} if key is not None else {})}
    return client.post("/sandbox/api/orders", json.dumps({"reference": reference}), content_type="application/json",
                       headers=headers)


def issue_key(client, confirm: bool = True) -> str:
    """Issue a new key as the logged-in Administrator: the key shown on the page."""
    response = client.post("/sandbox/account/rotate/", {"confirm": "yes"} if confirm else {})
    page = response.content.decode()
    assert response.status_code == 200 and "it will not be shown again" in page
    return re.search(r'value="([^"]+)"[^>]*data-testid="issued-key-value"', page).group(1)


def sandbox_instance(install, make_instance, sandbox_listing, company, base_url: str, key: str = "", name="Sandbox"):
    connector = install(sandbox_listing, company)
    secrets = {"api_token": "sandbox-token", **({"account_key": key} if key else {})}
    instance = make_instance(connector, name, secrets, auth_method=connector.auth_methods.get(key="token"),
                             values={"base_url": base_url}, rate_limit_amount=100, rate_limit_unit="second")
    return connector, instance


def round_trip(company, connector, instance):
    """Run a flow that lists the Sandbox's orders and sends them back; the run."""
    flow = ProcessFlow.objects.create(company=company, name=f"Round trip {instance.pk}", enabled=True)
    for position, key in enumerate(("list_orders", "create_order")):
        Shape.objects.create(flow=flow, position=position, instance=instance, endpoint=connector.endpoints.get(key=key))
    try:
        return execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    finally:
        transport.adapters.clear()


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


# --- the key is an instance secret -------------------------------------------------------------------------------


def test_an_instance_given_the_key_sends_it_and_what_its_flow_sends_is_the_companys_alone(
        live_server, client, company, make_user, sandbox_listing, install, make_instance):
    client.force_login(make_user(company, Role.ADMINISTRATOR))
    key = issue_key(client, confirm=False)
    connector, instance = sandbox_instance(install, make_instance, sandbox_listing, company,
                                           f"{live_server.url}/sandbox/api", key)
    result, check = checks.recheck(instance)
    run = round_trip(company, connector, instance)
    assert result.ok and run.status == RunStatus.SUCCESS, (result.message, run.failure_reason)
    account = SandboxAccount.objects.get(company=company)
    assert SandboxReceivedOrder.objects.filter(account=account.account).count() == 240
    assert not SandboxReceivedOrder.objects.filter(account="").exists()
    assert len(key) >= 40 and account.key_hash != key
    # Sent, but stored nowhere in plain: redacted in the check, encrypted in the instance.
    stored = CredentialCheck.objects.get(pk=check.pk)
    assert "X-Sandbox-Account" in json.dumps(stored.request_headers)
    assert key not in json.dumps([stored.request_headers, stored.request_url, stored.response_body])
    out = io.StringIO()
    call_command("dumpdata", "flows", "instances", "sandbox", stdout=out)
    assert key not in out.getvalue()


def test_an_instance_without_the_key_sends_no_account_header_and_its_orders_are_anonymous(
        live_server, company, sandbox_listing, install, make_instance):
    connector, instance = sandbox_instance(install, make_instance, sandbox_listing, company,
                                           f"{live_server.url}/sandbox/api")
    result, check = checks.recheck(instance)
    assert result.ok, result.message
    assert "X-Sandbox-Account" not in json.dumps(CredentialCheck.objects.get(pk=check.pk).request_headers)
    run = round_trip(company, connector, instance)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert SandboxReceivedOrder.objects.filter(account="").count() == 240


def test_another_origin_receives_the_key_only_when_it_was_entered_for_that_origin(
        httpserver, live_server, company, sandbox_listing, install, make_instance):
    seen = _imitation(httpserver)
    key = SandboxAccount.objects.for_company(company.pk).issue_key()
    # Entered for the deployment's Sandbox; then pointed at another host without entering the secrets again.
    connector, moved = sandbox_instance(install, make_instance, sandbox_listing, company,
                                        f"{live_server.url}/sandbox/api", key, name="Moved")
    moved.values = {"base_url": httpserver.url_for("/sandbox/api")}
    moved.save()
    result, _ = checks.recheck(moved)
    run = round_trip(company, connector, moved)
    assert not result.ok and run.status == RunStatus.FAILED
    assert seen == []  # refused before sending: the credentials were not entered for that host
    # A user who types the key for that other host sends it there: the key is theirs to give.
    _, typed = sandbox_instance(install, make_instance, sandbox_listing, company,
                                httpserver.url_for("/sandbox/api"), key, name="Typed")
    result, _ = checks.recheck(typed)
    assert result.ok, result.message
    assert seen and seen[-1].headers.get("X-Sandbox-Account") == key


def test_each_company_has_its_own_random_key(company, other_company):
    ours = SandboxAccount.objects.for_company(company.pk).issue_key()
    theirs = SandboxAccount.objects.for_company(other_company.pk).issue_key()
    assert ours != theirs
    assert SandboxAccount.objects.account_with_key(ours) == SandboxAccount.objects.get(company=company).account
    assert SandboxAccount.objects.account_with_key(theirs) == SandboxAccount.objects.get(company=other_company).account


# --- issuing and rotation ----------------------------------------------------------------------------------------


def test_a_new_key_refuses_the_old_one_and_what_was_received_stays(client, company, make_user):
    client.force_login(make_user(company, Role.ADMINISTRATOR))
    page = client.get("/sandbox/received-orders/").content.decode()
    assert 'data-testid="rotate-key"' in page and "No key is issued yet" in page
    old = issue_key(client, confirm=False)
    assert post_order(client, "BEFORE", old).status_code == 201

    new = issue_key(client)
    refused = post_order(client, "AFTER-OLD-KEY", old)
    assert refused.status_code == 401 and refused.json()["error"] == "unknown_account"
    assert "rotated" in refused.json()["error_description"]
    assert new != old and post_order(client, "AFTER", new).status_code == 201
    page = client.get("/sandbox/received-orders/").content.decode()
    assert "BEFORE" in page and "AFTER" in page and "AFTER-OLD-KEY" not in page
    assert [e.changes for e in AuditEntry.objects.filter(company=company, object_type="Sandbox account")] == [
        {"key": "changed"}, {"key": "changed"}]


def test_replacing_a_key_needs_the_confirmation_and_an_administrator(client, company, make_user):
    client.force_login(make_user(company, Role.ADMINISTRATOR))
    key = issue_key(client, confirm=False)
    response = client.post("/sandbox/account/rotate/", {}, follow=True)
    assert "tick the box to confirm" in response.content.decode() and key not in response.content.decode()
    for role in (Role.MANAGER, Role.USER, Role.READ_ONLY):
        client.force_login(make_user(company, role))
        assert 'data-testid="rotate-key"' not in client.get("/sandbox/received-orders/").content.decode()
        assert client.post("/sandbox/account/rotate/", {"confirm": "yes"}).status_code == 403
    assert client.get("/sandbox/account/rotate/").status_code == 405
    assert post_order(client, "STILL", key).status_code == 201


def test_the_issued_key_is_shown_once_and_on_no_page_after(
        client, company, make_user, sandbox_listing, install, make_instance):
    client.force_login(make_user(company, Role.ADMINISTRATOR))
    response = client.post("/sandbox/account/rotate/")
    assert "no-store" in response["Cache-Control"]
    key = re.search(r'value="([^"]+)"[^>]*data-testid="issued-key-value"', response.content.decode()).group(1)
    _, instance = sandbox_instance(install, make_instance, sandbox_listing, company, "http://127.0.0.1:1/sandbox/api", key)
    for url in ("/sandbox/received-orders/", f"/instances/{instance.pk}/",
                "/audit/", "/connectors/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert key not in response.content.decode(), url
