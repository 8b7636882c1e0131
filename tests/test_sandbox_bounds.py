"""The public Sandbox API's bounds: off in production, storage, delay, rate and login attempts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

from django.conf import settings as django_settings

from patchworks_site.models import Role
from sandbox.models import SandboxAccount, SandboxReceivedOrder
from tests.test_settings import GOOD_SECRET_KEY, KEY

TOKEN = {"X-Api-Key": "sandbox-token"}
CALLBACK = "http://testserver/instances/oauth/callback/"


def an_address() -> str:
    """A client address of its own, so counters in the cache never meet another test's."""
    return f"198.51.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def post(client, body, key: str | None = None, address: str = "127.0.0.1"):
    headers = {**TOKEN, **({"X-Sandbox-Account": key} if key else {})}
    return client.post("/sandbox/api/orders", json.dumps(body), content_type="application/json", headers=headers,
                       REMOTE_ADDR=address)


# --- off unless turned on ------------------------------------------------------------------------------------------


def test_with_the_sandbox_off_its_api_consent_page_and_pages_are_not_found(client, settings, company, make_user):
    settings.SANDBOX_ENABLED = False
    client.force_login(make_user(company, Role.ADMINISTRATOR))
    for method, url in [("get", "/sandbox/api/me"), ("get", "/sandbox/api/orders"), ("post", "/sandbox/api/orders"),
                        ("post", "/sandbox/api/oauth/token"), ("get", "/sandbox/api/oauth/authorize"),
                        ("get", "/sandbox/api/anything"), ("get", "/sandbox/received-orders/"),
                        ("post", "/sandbox/account/rotate/")]:
        assert getattr(client, method)(url, headers=TOKEN).status_code == 404, url
    assert "Sandbox: received orders" not in client.get("/connectors/").content.decode()
    settings.SANDBOX_ENABLED = True
    assert client.get("/sandbox/api/me", headers=TOKEN).status_code == 200
    assert "Sandbox: received orders" in client.get("/connectors/").content.decode()


def _setting_in_a_fresh_process(name: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DEBUG", "SANDBOX_"))}
    code = f"import django; django.setup(); from django.conf import settings; print(settings.{name})"
    result = subprocess.run([sys.executable, "-c", code], env={
        **clean, "DJANGO_SETTINGS_MODULE": "patchworks_site.settings", "SECRET_KEY": GOOD_SECRET_KEY,
        "CREDENTIAL_KEYS": KEY, "ALLOWED_HOSTS": "patchworks.example.com",
        "EMAIL_HOST": "smtp.example.com", "DEFAULT_FROM_EMAIL": "alerts@example.com", **env,
    }, capture_output=True, text=True, cwd=django_settings.BASE_DIR, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_sandbox_is_off_in_production_unless_a_setting_turns_it_on():
    assert _setting_in_a_fresh_process("SANDBOX_ENABLED", DEBUG="0") == "False"
    assert _setting_in_a_fresh_process("SANDBOX_ENABLED", DEBUG="0", SANDBOX_ENABLED="1") == "True"
    assert _setting_in_a_fresh_process("SANDBOX_ENABLED", DEBUG="1") == "True"


# --- storage -------------------------------------------------------------------------------------------------------


def test_each_account_keeps_its_newest_orders_within_its_byte_bound(client, settings, company):
    settings.SANDBOX_MAX_BYTES_PER_ACCOUNT = 2000
    key = SandboxAccount.objects.for_company(company.pk).issue_key()
    for n in range(5):
        assert post(client, {"reference": f"B-{n}", "notes": "x" * 550}, key).status_code == 201
    kept = SandboxReceivedOrder.objects.order_by("id")
    assert [o.body["reference"] for o in kept] == ["B-2", "B-3", "B-4"]
    assert sum(o.size for o in kept) <= 2000

    response = post(client, [{"reference": "HUGE", "notes": "x" * 1500}, {"notes": "y" * 1500}], key)
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    assert response.json()["error_description"] == (
        "A Sandbox account keeps at most 2,000 bytes of orders; this request holds 3,047 bytes.")
    assert not SandboxReceivedOrder.objects.filter(body__reference="HUGE").exists()


def test_past_the_overall_bound_new_orders_are_refused_with_a_clear_error(client, settings, company, other_company):
    settings.SANDBOX_MAX_STORED_BYTES = 3000
    ours = SandboxAccount.objects.for_company(company.pk).issue_key()
    theirs = SandboxAccount.objects.for_company(other_company.pk).issue_key()
    assert post(client, {"notes": "a" * 1200}, ours).status_code == 201
    assert post(client, {"notes": "b" * 1200}, theirs).status_code == 201
    response = post(client, {"reference": "ONE-TOO-MANY", "notes": "c" * 1200})
    assert response.status_code == 507
    assert response.json() == {"error": "sandbox_full", "error_description": (
        "The Sandbox is full: it stores at most 3,000 bytes of received orders in all. Try again later.")}
    assert SandboxReceivedOrder.objects.count() == 2


# --- delay_ms ------------------------------------------------------------------------------------------------------


def test_a_delay_beyond_the_bound_is_refused_without_waiting(client, settings):
    settings.SANDBOX_MAX_DELAY_MS = 50
    started = time.monotonic()
    for delay in (51, 10_000):
        response = client.get("/sandbox/api/orders", {"delay_ms": delay}, headers=TOKEN)
        assert response.status_code == 400
        assert response.json()["error_description"] == '"delay_ms" must be a whole number between 0 and 50.'
    assert time.monotonic() - started < 5  # nothing slept for 10 s
    assert client.get("/sandbox/api/orders", {"delay_ms": 50}, headers=TOKEN).status_code == 200


def test_the_default_delay_bound_is_two_seconds():
    assert _setting_in_a_fresh_process("SANDBOX_MAX_DELAY_MS", DEBUG="1") == "2000"


# --- rate limit per client -----------------------------------------------------------------------------------------


def test_an_account_has_its_own_rate_limit_whatever_its_address(client, settings, company):
    settings.SANDBOX_RATE_LIMIT_PER_SECOND = 3
    key = SandboxAccount.objects.for_company(company.pk).issue_key()
    answers = [client.get("/sandbox/api/me", headers={**TOKEN, "X-Sandbox-Account": key}, REMOTE_ADDR=an_address())
               for _ in range(10)]
    assert 429 in [a.status_code for a in answers]


def test_a_client_past_the_rate_limit_gets_429_with_retry_after_and_others_do_not(client, settings, db):
    settings.SANDBOX_RATE_LIMIT_PER_SECOND = 3
    busy, other = an_address(), an_address()
    answers = [client.get("/sandbox/api/me", headers=TOKEN, REMOTE_ADDR=busy) for _ in range(10)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and all(a.status_code in (200, 429) for a in answers)
    assert limited[0]["Retry-After"] == "1" and limited[0].json()["error"] == "rate_limited"
    assert "at most 3 requests a second" in limited[0].json()["error_description"]
    assert client.get("/sandbox/api/me", headers=TOKEN, REMOTE_ADDR=other).status_code == 200
    # Made-up account keys count against the address: they buy no extra requests.
    made_up = [client.get("/sandbox/api/me", headers={**TOKEN, "X-Sandbox-Account": uuid.uuid4().hex},
                          REMOTE_ADDR=busy).status_code for _ in range(10)]
    assert 429 in made_up
    # The token endpoint and unknown paths count too.
    token = [client.post("/sandbox/api/oauth/token", {"grant_type": "client_credentials"}, REMOTE_ADDR=busy)
             for _ in range(10)]
    assert any(a.status_code == 429 for a in token)


# --- login throttle on the consent page ----------------------------------------------------------------------------


def _consent(client, address: str, password: str):
    return client.post("/sandbox/api/oauth/authorize", {
        "response_type": "code", "client_id": "sandbox-app", "redirect_uri": CALLBACK, "state": "s",
        "username": "sandbox", "password": password, "decision": "allow",
    }, REMOTE_ADDR=address)


def test_after_five_wrong_logins_the_consent_page_refuses_logins_until_the_window_passes(client, settings):
    settings.SANDBOX_LOGIN_WINDOW_SECONDS = 2
    address = an_address()
    for _ in range(5):
        response = _consent(client, address, "guess")
        assert response.status_code == 401 and "Wrong username or password" in response.content.decode()
    refused = _consent(client, address, "sandbox-secret")  # even the right password
    assert refused.status_code == 429 and "Location" not in refused
    assert "Too many wrong logins to the Sandbox from your address" in refused.content.decode()
    assert _consent(client, an_address(), "sandbox-secret").status_code == 302  # another client is not locked out
    time.sleep(2.5)
    allowed = _consent(client, address, "sandbox-secret")
    assert allowed.status_code == 302 and allowed["Location"].startswith(CALLBACK + "?code=")
