"""The schedule form in a browser: the fields and the preview follow the chosen frequency before anything is saved."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from flows.models import FlowSchedule, ProcessFlow
from patchworks_site.models import Role
from tests.test_browser_accessibility import Audit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_preview_changes_as_the_frequency_changes_and_an_impossible_day_is_refused(
    page, log_in, make_user, company
):
    company.time_zone = "Europe/Paris"
    company.save()
    make_user(company, Role.ADMINISTRATOR, "sam")
    flow = ProcessFlow.objects.create(company=company, name="Nightly stock")
    log_in("sam")
    page.goto(f"/flows/{flow.pk}/")
    audit = Audit(page)

    fields = page.get_by_test_id("schedule-fields")
    preview = page.get_by_test_id("schedule-preview")
    expect(fields.get_by_label("Hour (UTC)")).to_be_visible()  # daily, the default
    expect(fields.get_by_label("Every")).to_have_count(0)
    expect(preview.get_by_test_id("schedule-description")).to_have_text("Runs daily at 00:00 UTC.")
    daily_times = preview.get_by_test_id("schedule-times").inner_text()
    assert "Europe/Paris" in daily_times and "00:00 UTC" in daily_times

    page.get_by_label("Frequency").select_option("minutes")
    expect(fields.get_by_label("Every")).to_be_visible()  # the fieldset was swapped
    expect(fields.get_by_label("Hour (UTC)")).to_have_count(0)
    expect(preview.get_by_test_id("schedule-description")).to_contain_text("every 15 minutes")
    expect(preview.locator("li")).to_have_count(5)
    assert preview.get_by_test_id("schedule-times").inner_text() != daily_times
    audit("schedule form: every 15 minutes")

    fields.get_by_label("Every").select_option("5")
    expect(preview.get_by_test_id("schedule-description")).to_contain_text("every 5 minutes")

    page.get_by_label("Frequency").select_option("advanced")
    expect(preview).to_contain_text("Enter a value")  # the advanced fields came with their preview ...
    expect(fields).not_to_have_class(re.compile(r"htmx-(added|settling)"))  # ... and htmx took them up: keys count
    page.get_by_label("Cron expression (UTC)").press_sequentially("0 9 30 2 *")  # 30 February never comes
    expect(preview).to_contain_text("never")
    audit("schedule form: an impossible cron expression")
    page.get_by_role("button", name="add schedule").click()
    expect(page.get_by_text("No preview:").first).to_be_visible()
    assert not FlowSchedule.objects.filter(flow=flow).exists()

    page.get_by_label("Cron expression (UTC)").fill("30 6 * * 1-5")
    page.keyboard.press("Tab")  # a change, as leaving the field makes
    expect(preview.get_by_test_id("schedule-times").locator("li")).to_have_count(5)
    page.get_by_role("button", name="add schedule").click()
    expect(page.get_by_test_id("schedule")).to_have_count(1)
    assert FlowSchedule.objects.get(flow=flow).cron == "30 6 * * 1-5"
    audit.assert_clean()
