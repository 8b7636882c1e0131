"""The schedule form on the process flow page: the chosen frequency's fields, the description, the preview."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.utils import timezone

from flows import schedules
from flows.models import FlowSchedule, ProcessFlow, ScheduleKind

FIELD_NAMES = ("every", "day", "hour", "minute", "cron")


@pytest.fixture
def flow(company) -> ProcessFlow:
    return ProcessFlow.objects.create(company=company, name="Orders to ERP", enabled=True)


@pytest.fixture
def fixed_now(monkeypatch):
    """The clock of the preview: 23 October 2026, a few days before the clocks go back in London."""
    moment = datetime(2026, 10, 23, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: moment)
    return moment


def inputs(html: str) -> set[str]:
    return set(re.findall(r'name="(every|day|hour|minute|cron)"', html))


@pytest.mark.parametrize(
    "kind, names",
    [("minutes", {"every"}), ("hourly", {"minute"}), ("daily", {"hour", "minute"}),
     ("monthly", {"day", "hour", "minute"}), ("advanced", {"cron"})],
)
def test_the_fieldset_partial_of_each_frequency_has_only_its_fields(admin_client, flow, kind, names):
    response = admin_client.get(f"/flows/{flow.pk}/schedules/form/", {"kind": kind}, headers={
        "HX-Request": "true", "HX-Target": "schedule-fields"})
    html = response.content.decode()
    assert response.status_code == 200
    assert inputs(html) == names
    assert 'id="schedule-fields"' in html and 'hx-swap-oob="true"' in html  # the preview follows the frequency
    assert "<html" not in html


def test_the_flow_page_shows_the_default_frequency_s_fields_and_a_choose_button_without_javascript(admin_client, flow):
    html = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    assert inputs(html) == {"hour", "minute"}
    assert f'hx-get="/flows/{flow.pk}/schedules/form/"' in html and 'hx-trigger="change"' in html
    assert '<noscript><button class="btn btn-outline-secondary btn-sm mb-2" type="submit" name="action" value="choose">' in html
    chosen = admin_client.post(f"/flows/{flow.pk}/schedules/", {"kind": "monthly", "action": "choose", "hour": "6"})
    assert chosen.status_code == 200 and inputs(chosen.content.decode()) == {"day", "hour", "minute"}
    assert not FlowSchedule.objects.exists()


GARBAGE = {"every": "7", "day": "99", "hour": "-3", "minute": "x", "cron": "not a cron"}


@pytest.mark.parametrize(
    "data, cron, description",
    [
        ({"kind": "minutes", "every": "15"}, "*/15 * * * *", "every 15 minutes"),
        ({"kind": "hourly", "minute": "5"}, "5 * * * *", "hourly at minute 5"),
        ({"kind": "daily", "hour": "6", "minute": "30"}, "30 6 * * *", "daily at 06:30 UTC"),
        ({"kind": "monthly", "day": "31", "hour": "2", "minute": "0"}, "0 2 31 * *",
         "monthly on day 31 at 02:00 UTC — months without a day 31 are skipped"),
        ({"kind": "advanced", "cron": "0 9 * * 1-5"}, "0 9 * * 1-5", "cron 0 9 * * 1-5 (UTC)"),
    ],
)
def test_the_plain_post_uses_only_the_chosen_frequency_s_fields(admin_client, flow, data, cron, description):
    posted = {**GARBAGE, **data, "action": "add"}
    response = admin_client.post(f"/flows/{flow.pk}/schedules/", posted, follow=True)
    assert f"Schedule added: {description}. Next run" in response.content.decode()
    schedule = FlowSchedule.objects.get(flow=flow)
    assert (schedule.cron, schedule.description) == (cron, description)


def test_the_preview_shows_five_runs_in_the_company_time_zone_and_utc_across_the_clock_change(
    admin_client, company, flow, fixed_now
):
    company.time_zone = "Europe/London"
    company.save()
    data = {"kind": "daily", "hour": "6", "minute": "30", "action": "preview", **{"every": "7", "cron": "x"}}
    response = admin_client.post(f"/flows/{flow.pk}/schedules/", data)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Runs daily at 06:30 UTC." in html
    times = re.findall(r"<li><time datetime=\"[^\"]+\">([^<]+)</time></li>", html)
    # British Summer Time ends on Sunday 25 October 2026: 06:30 UTC is 07:30 before and 06:30 after.
    assert times == [
        "Sat 24 Oct 2026, 07:30 Europe/London · 06:30 UTC",
        "Sun 25 Oct 2026, 06:30 Europe/London · 06:30 UTC",
        "Mon 26 Oct 2026, 06:30 Europe/London · 06:30 UTC",
        "Tue 27 Oct 2026, 06:30 Europe/London · 06:30 UTC",
        "Wed 28 Oct 2026, 06:30 Europe/London · 06:30 UTC",
    ]
    assert "Schedules are stored and run in UTC." in html
    assert 'name="hour" value="6"' in html and 'name="minute" value="30"' in html  # the form stays filled
    assert not FlowSchedule.objects.exists()


def test_the_htmx_preview_follows_the_fields(admin_client, company, flow, fixed_now):
    response = admin_client.get(f"/flows/{flow.pk}/schedules/form/", {"kind": "minutes", "every": "20", "hour": "x"},
                                headers={"HX-Request": "true", "HX-Target": "schedule-preview"})
    html = response.content.decode()
    assert "Runs every 20 minutes." in html and 'name="every"' not in html
    assert re.findall(r"<time datetime=\"[^\"]+\">([^<]+)</time>", html) == [
        "Fri 23 Oct 2026, 12:20 UTC", "Fri 23 Oct 2026, 12:40 UTC", "Fri 23 Oct 2026, 13:00 UTC",
        "Fri 23 Oct 2026, 13:20 UTC", "Fri 23 Oct 2026, 13:40 UTC"]
    bad = admin_client.get(f"/flows/{flow.pk}/schedules/form/", {"kind": "advanced", "cron": "0 0 30 2 *"},
                           headers={"HX-Request": "true", "HX-Target": "schedule-preview"}).content.decode()
    assert "No preview: never runs: February has no day 30." in bad


@pytest.mark.parametrize(
    "data, reason",
    [
        ({"kind": "advanced", "cron": "0 0 30 2 *"}, "never runs: February has no day 30."),
        ({"kind": "advanced", "cron": "0 0 31 4,6,9,11 *"}, "never runs: none of April, June, September, November has a day 31."),
        ({"kind": "advanced", "cron": "61 * * * *"}, "minute 61 is out of range 0–59."),
        ({"kind": "advanced", "cron": "0 24 * * *"}, "hour 24 is out of range 0–23."),
        ({"kind": "advanced", "cron": "0 0 * 13 *"}, "month 13 is out of range 1–12."),
        ({"kind": "advanced", "cron": "   "}, "Enter a value for this schedule."),
        ({"kind": "advanced", "cron": "0 9 * *"}, "Enter 5 fields"),
    ],
)
@pytest.mark.parametrize("action", ["add", "preview"])
def test_an_impossible_schedule_is_refused_with_the_reason_and_nothing_saved(admin_client, flow, data, reason, action):
    response = admin_client.post(f"/flows/{flow.pk}/schedules/", {**data, "action": action})
    assert response.status_code == 422
    assert reason in response.content.decode()
    assert not FlowSchedule.objects.exists()


def test_a_schedule_that_only_runs_in_leap_years_is_accepted_and_never_runs_is_bounded():
    assert schedules.cron_error("0 0 29 2 *") is None
    assert schedules.cron_error("").startswith("Enter a cron expression")
    # Day of the month OR day of the week (the cron rule): every Monday of February runs.
    assert schedules.cron_error("0 0 29 2 1") is None


@pytest.mark.parametrize(
    "kind, fields, text",
    [
        (ScheduleKind.MINUTES, {"every": 1}, "every minute"),
        (ScheduleKind.MINUTES, {"every": 15}, "every 15 minutes"),
        (ScheduleKind.HOURLY, {"minute": 0}, "hourly at minute 0"),
        (ScheduleKind.DAILY, {"hour": 6, "minute": 30}, "daily at 06:30 UTC"),
        (ScheduleKind.MONTHLY, {"day": 28, "hour": 2, "minute": 0}, "monthly on day 28 at 02:00 UTC"),
        (ScheduleKind.MONTHLY, {"day": 29, "hour": 2, "minute": 0},
         "monthly on day 29 at 02:00 UTC — months without a day 29 are skipped"),
        (ScheduleKind.MONTHLY, {"day": 31, "hour": 2, "minute": 0},
         "monthly on day 31 at 02:00 UTC — months without a day 31 are skipped"),
        (ScheduleKind.ADVANCED, {"cron": "0  9 * * 1-5"}, "cron 0 9 * * 1-5 (UTC)"),
    ],
)
def test_the_description_of_each_frequency(kind, fields, text):
    assert schedules.describe(kind, **fields) == text
