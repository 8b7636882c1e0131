"""OAuth 2 authorisation code in a real browser: Connect, consent at the Sandbox, back, refresh, check now."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from instances.models import CredentialCheck, Instance
from marketplace import catalog
from marketplace.models import Listing
from patchworks_site.models import Company, Role, User

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TOKEN_LIFETIME = 4  # seconds; refreshed one second before it expires


@pytest.fixture
def sandbox(live_server, settings):
    settings.SANDBOX_ACCESS_TOKEN_LIFETIME = TOKEN_LIFETIME
    settings.SANDBOX_BASE_URL_CONFIGURED = False  # the wizard's own host: the live server
    for entry in catalog.iter_catalog():
        if entry.slug == "sandbox":
            catalog.publish(entry.slug, entry.manifest, entry.changelog)
    company = Company.objects.create(name="Acme Retail")
    User.objects.create_user("newcomer", password="pw-for-tests", company=company, role=Role.ADMINISTRATOR)
    return catalog.install(Listing.objects.get(slug="sandbox").latest_version, company)


def start_wizard(page) -> None:
    card = page.get_by_test_id("connector").filter(has_text="Sandbox")
    card.get_by_role("link", name="add new instance").click()
    page.get_by_label("Name").fill("Sandbox - App")
    page.get_by_role("button", name="next step").click()
    page.get_by_role("button", name="next step").click()
    page.get_by_label("OAuth 2 authorisation code (Sandbox app)").check()
    page.get_by_role("button", name="next step").click()


def test_a_new_user_connects_a_sandbox_instance_and_sees_its_token_refreshed(page, log_in, live_server, sandbox):
    log_in("newcomer")
    start_wizard(page)
    # The credentials step: the redirect URI to register, and Connect instead of a token field.
    expect(page.get_by_test_id("redirect-uri")).to_have_value(f"{live_server.url}/instances/oauth/callback/")
    expect(page.get_by_label(re.compile("access token", re.I))).to_have_count(0)
    expect(page.get_by_label(re.compile(r"^\s*Client ID"))).to_have_value("sandbox-app")
    page.get_by_label(re.compile(r"^\s*Client secret")).fill("sandbox-app-secret")
    page.get_by_role("button", name="Connect").click()

    # The Sandbox's consent page: log in as its demo account and allow.
    page.wait_for_url("**/sandbox/api/oauth/authorize?**")
    expect(page.get_by_text("asks for access to your Sandbox account")).to_be_visible()
    page.get_by_label("Sandbox username").fill("sandbox")
    page.get_by_label("Sandbox password").fill("sandbox-secret")
    page.get_by_role("button", name="Allow access").click()

    # Back in the dashboard: the instance is saved, checked and authenticated.
    page.wait_for_url("**/connectors/?highlight=instance-*")
    expect(page.get_by_role("alert").first).to_contain_text('Instance "Sandbox - App" is connected')
    row = page.get_by_test_id("instance").filter(has_text="Sandbox - App")
    expect(row.get_by_test_id("auth-status")).to_have_text("Authenticated")
    instance = Instance.objects.get(name="Sandbox - App")
    first_token = instance.get_secrets()["access_token"]

    time.sleep(TOKEN_LIFETIME)  # past the access token's lifetime
    row.get_by_test_id("check-now").click()
    page.wait_for_url("**/connectors/?highlight=instance-*")
    expect(page.get_by_role("alert").first).to_contain_text("Sandbox - App: Authenticated: the API answered 200 OK.")
    instance.refresh_from_db()
    assert instance.get_secrets()["access_token"] != first_token
    assert CredentialCheck.objects.filter(instance=instance, message="Access token refreshed.", ok=True).count() == 1

    # The request and response tabs show the check, and the refresh before it.
    page.get_by_role("link", name="Settings for instance Sandbox - App").click()
    page.get_by_role("tab", name="request").click()
    expect(page.get_by_test_id("request-pane")).to_contain_text("/sandbox/api/me")
    expect(page.get_by_test_id("request-pane")).to_contain_text("[redacted]")
    page.get_by_role("tab", name="response").click()
    expect(page.get_by_test_id("response-pane")).to_contain_text('"authenticated_with": "oauth2_authorization_code"')
    history = page.get_by_test_id("check-history")
    expect(history).to_contain_text("Access token refreshed.")
    assert first_token not in page.content()


def test_a_failed_refresh_shows_re_authentication_needed_and_reconnect_connects_again(page, log_in, live_server, sandbox):
    log_in("newcomer")
    start_wizard(page)
    page.get_by_label(re.compile(r"^\s*Client secret")).fill("sandbox-app-secret")
    page.get_by_role("button", name="Connect").click()
    page.get_by_label("Sandbox username").fill("sandbox")
    page.get_by_label("Sandbox password").fill("sandbox-secret")
    page.get_by_role("button", name="Allow access").click()
    page.wait_for_url("**/connectors/?highlight=instance-*")
    instance = Instance.objects.get(name="Sandbox - App")
    # The provider no longer honours the refresh token (revoked at its end).
    instance.set_secrets({**instance.get_secrets(), "refresh_token": "revoked-at-the-provider"})
    Instance.objects.filter(pk=instance.pk).update(secrets_ciphertext=instance.secrets_ciphertext)

    time.sleep(TOKEN_LIFETIME)
    row = page.get_by_test_id("instance").filter(has_text="Sandbox - App")
    row.get_by_test_id("check-now").click()
    page.wait_for_url("**/connectors/?highlight=instance-*")
    expect(page.get_by_role("alert").first).to_contain_text("Re-authentication needed: the access token could not be refreshed")
    expect(row.get_by_test_id("auth-status")).to_have_text("Re-authentication needed")

    row.get_by_test_id("reconnect-link").click()
    expect(page.get_by_test_id("reauth-needed")).to_contain_text("Reconnect on the authentication tab.")
    page.get_by_test_id("reconnect").click()  # the stored client secret is used: nothing to type
    page.get_by_label("Sandbox username").fill("sandbox")
    page.get_by_label("Sandbox password").fill("sandbox-secret")
    page.get_by_role("button", name="Allow access").click()
    page.wait_for_url(f"**/instances/{instance.pk}/")
    expect(page.get_by_role("alert").first).to_contain_text("is connected again")
    expect(page.get_by_test_id("auth-status")).to_have_text("Authenticated")
    instance.refresh_from_db()
    assert instance.reauth_reason == "" and instance.get_secrets()["refresh_token"] != "revoked-at-the-provider"
