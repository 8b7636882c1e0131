"""The alert rules page and the alerts page in a browser: set up by an Administrator, read by Read-only, axe-clean."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from alerts.models import Alert, AlertChannel, AlertEvent, AlertRule, Delivery, DeliveryStatus
from flows.models import ProcessFlow
from patchworks_site.models import Role
from tests.test_browser_accessibility import Audit, a11y_page  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/connectors/")


def test_an_administrator_sets_up_alerts_and_a_read_only_user_reads_them(a11y_page, make_user, company):
    page = a11y_page
    audit = Audit(page)
    make_user(company, Role.ADMINISTRATOR, "ada")
    make_user(company, Role.READ_ONLY, "rita")
    log_in(page, "ada")

    page.goto("/settings/company/")
    page.get_by_role("link", name="set up alert rules").click()
    expect(page.get_by_role("heading", name="Alert rules")).to_be_visible()
    expect(page.get_by_test_id("no-rules")).to_contain_text("No alert rules yet")
    audit("alert rules, empty")

    page.get_by_text("Add an email channel").click()
    page.locator("#id_email-name").fill("Operations")
    page.get_by_label("Email addresses").fill("not-an-address")
    page.get_by_role("button", name="add email channel").click()
    expect(page.get_by_text('"not-an-address" is not an email address.')).to_be_visible()
    audit("alert rules, email channel error")
    page.get_by_label("Email addresses").fill("ops@acme.example")
    page.get_by_role("button", name="add email channel").click()
    expect(page.get_by_test_id("channel")).to_contain_text("ops@acme.example")

    page.get_by_text("Add a webhook").click()
    page.locator("#id_webhook-name").fill("On-call pager")
    page.get_by_label("URL").fill("https://hooks.example.com/patchworks")
    page.get_by_role("button", name="add webhook").click()
    secret = page.get_by_label("Secret", exact=True).input_value()
    assert secret == AlertChannel.objects.get(kind="webhook").get_secret()
    audit("alert rules, new webhook secret")

    page.get_by_label("When").select_option(AlertEvent.FAILURE_STREAK)
    page.get_by_role("button", name="add rule").click()
    expect(page.get_by_text("Choose at least one channel")).to_be_visible()
    expect(page.get_by_text("Enter failed runs in a row (N): 2 to 100.")).to_be_visible()
    audit("alert rules, rule errors")
    page.get_by_label("N or M").fill("3")
    page.get_by_label("Operations (email)").check()
    page.get_by_label("On-call pager (webhook)").check()
    page.get_by_role("button", name="add rule").click()
    expect(page.get_by_test_id("rule")).to_contain_text("A flow failed 3 times in a row")
    expect(page.get_by_test_id("new-secret")).to_have_count(0)
    assert secret not in page.content()
    audit("alert rules with a rule")
    assert AlertRule.objects.get().channels.count() == 2

    # Alerts as the workers leave them: one delivered, one still failing after its retries.
    flow = ProcessFlow.objects.create(company=company, name="Orders to ERP")
    alert = Alert.objects.create(company=company, rule=AlertRule.objects.get(), event=AlertEvent.FAILURE_STREAK, flow=flow,
                                 subject='"Orders to ERP" failed 3 times in a row (run 12)',
                                 text="The process flow \"Orders to ERP\" failed 3 times in a row.")
    for channel in AlertChannel.objects.all():
        failed = channel.kind == "webhook"
        delivery = Delivery.objects.create(alert=alert, channel=channel, channel_name=channel.name, channel_kind=channel.kind,
                                           status=DeliveryStatus.FAILED if failed else DeliveryStatus.DELIVERED,
                                           attempts=2 if failed else 1)
        for number in range(1, delivery.attempts + 1):
            delivery.attempt_log.create(number=number, started_at=timezone.now(), duration_ms=40, ok=not failed,
                                        status_code=503 if failed else None,
                                        error="The webhook answered 503 Service Unavailable." if failed else "")
    page.goto("/alerts/")
    expect(page.get_by_test_id("alert")).to_contain_text("failed 3 times in a row")
    expect(page.get_by_test_id("delivery").filter(has_text="On-call pager")).to_contain_text("failed")
    audit("alerts")
    page.get_by_role("link", name='"Orders to ERP" failed 3 times in a row (run 12)').click()
    expect(page.get_by_test_id("attempt").filter(has_text="HTTP 503")).to_have_count(2)
    audit("alert detail")
    page.get_by_role("button", name="send again").click()
    expect(page.get_by_text("Sending to On-call pager again.")).to_be_visible()

    page.context.clear_cookies()
    log_in(page, "rita")
    page.goto("/alerts/rules/")
    expect(page.get_by_test_id("read-only-note")).to_have_text("Only Administrators can change alert rules and channels.")
    expect(page.get_by_role("button", name="add rule")).to_have_count(0)
    audit("alert rules, read-only")
    page.goto("/alerts/")
    expect(page.get_by_test_id("alert")).to_have_count(1)
    audit.assert_clean()


def test_the_alerts_page_empty_state_is_accessible(a11y_page, make_user, company):
    make_user(company, Role.USER, "uma")
    page = a11y_page
    audit = Audit(page)
    log_in(page, "uma")
    page.goto("/alerts/")
    expect(page.get_by_test_id("empty-state")).to_contain_text("No alert rules are set up")
    audit("alerts, empty")
    audit.assert_clean()
