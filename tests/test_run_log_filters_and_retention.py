"""Run log filters (instance, warnings, date range) and the company's retention and run duration settings."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from flows.models import FlowRun, FlowRunShape, ProcessFlow, RunStatus, RunTrigger, Shape
from patchworks_site.models import Company, Role


@pytest.fixture
def instances(company, make_connector, make_instance):
    connector = make_connector(company, name="Shop API")
    return make_instance(connector, "Shop - UK"), make_instance(connector, "Shop - US"), make_instance(connector, "Unused")


def flow_with(company, instance, name):
    flow = ProcessFlow.objects.create(company=company, name=name)
    Shape.objects.create(flow=flow, instance=instance, endpoint=instance.connector.endpoints.get())
    return flow


def run(flow, day, hour=12, warnings=(), shape_warnings=()):
    at = datetime(2026, 3, day, hour, tzinfo=UTC)
    made = FlowRun.objects.create(company=flow.company, flow=flow, status=RunStatus.SUCCESS, trigger=RunTrigger.MANUAL,
                                  queued_at=at, reference_time=at, warnings=list(warnings))
    if shape_warnings:
        FlowRunShape.objects.create(run=made, position=0, shape_name="s", started_at=at, warnings=list(shape_warnings))
    return made


def shown(client, query, url="/flows/runs/"):
    page = client.get(url + query).content.decode()
    return page, {int(n) for n in re.findall(r'<a href="/flows/runs/(\d+)/">Run ', page)}


def test_filter_by_instance_warnings_and_dates(admin_client, company, instances):
    uk, us, unused = instances
    uk_flow, us_flow = flow_with(company, uk, "UK orders"), flow_with(company, us, "US orders")
    a = run(uk_flow, 1, warnings=["slow"])
    b = run(uk_flow, 2, hour=0)
    c = run(us_flow, 2, hour=23, shape_warnings=["item skipped"])
    d = run(us_flow, 3)

    page, runs = shown(admin_client, "")
    assert runs == {a.pk, b.pk, c.pk, d.pk}
    # Only instances used in connection shapes are offered.
    assert "Shop - UK" in page and "Shop - US" in page and "Unused" not in page
    assert "Logs are kept 7 days, payload samples 72 hours" in page

    assert shown(admin_client, f"?instance={uk.pk}")[1] == {a.pk, b.pk}
    assert shown(admin_client, "?warnings=yes")[1] == {a.pk, c.pk}
    assert shown(admin_client, "?warnings=no")[1] == {b.pk, d.pk}
    assert shown(admin_client, "?queued_from=2026-03-02&queued_to=2026-03-02")[1] == {b.pk, c.pk}
    assert shown(admin_client, "?queued_from=2026-03-02")[1] == {b.pk, c.pk, d.pk}
    assert shown(admin_client, f"?queued_to=2026-03-02&instance={us.pk}&warnings=yes")[1] == {c.pk}
    assert shown(admin_client, f"?instance={us.pk}", url=f"/flows/{uk_flow.pk}/runs/")[1] == set()
    page, runs = shown(admin_client, "?queued_from=2026-03-05")
    assert runs == set() and "No runs match these filters." in page


@pytest.mark.parametrize("query, message", [
    ("?queued_from=yesterday", "Queued from: Enter a valid date."),
    ("?queued_from=2026-03-03&queued_to=2026-03-01", "Queued to: Choose a date on or after the from date."),
    ("?warnings=maybe", "Warnings: Select a valid choice."),
    ("?instance=abc", "Instance: Select a valid choice."),
    ("?queued_to=2026-02-30", "Queued to: Enter a valid date."),
])
def test_bad_filter_values_show_an_error_and_are_not_applied(admin_client, company, instances, query, message):
    flow = flow_with(company, instances[0], "UK orders")
    made = {run(flow, 1).pk, run(flow, 2).pk}
    response = admin_client.get("/flows/runs/" + query)
    page = response.content.decode()
    assert response.status_code == 200
    assert "These filters were not applied" in page and message in page
    assert shown(admin_client, query)[1] == made


def test_another_company_s_instance_is_not_a_filter(admin_client, company, other_company, make_connector, make_instance):
    foreign = make_instance(make_connector(other_company, name="Globex API"), "Globex")
    flow_with(other_company, foreign, "Theirs")
    page = admin_client.get(f"/flows/runs/?instance={foreign.pk}").content.decode()
    assert "Instance: Select a valid choice." in page and "Globex" not in page


def test_administrators_change_retention_others_see_it(client_for, make_user, company):
    admin = client_for(make_user(company, Role.ADMINISTRATOR))
    page = admin.get("/settings/company/").content.decode()
    assert 'name="run_log_retention_days" value="7"' in page and 'name="payload_retention_hours" value="72"' in page
    response = admin.post("/settings/company/", {"run_log_retention_days": "30", "payload_retention_hours": "24"})
    assert response["Location"] == "/settings/company/"
    company.refresh_from_db()
    assert (company.run_log_retention_days, company.payload_retention_hours) == (30, 24)
    assert "Logs are kept 30 days, payload samples 24 hours" in admin.get("/flows/runs/").content.decode()

    for role in (Role.MANAGER, Role.USER, Role.READ_ONLY):
        client = client_for(make_user(company, role))
        page = client.get("/settings/company/").content.decode()
        assert "30 days" in page and "24 hours" in page and "save retention" not in page
        assert client.post("/settings/company/", {"run_log_retention_days": "1", "payload_retention_hours": "1"}).status_code == 403
    company.refresh_from_db()
    assert (company.run_log_retention_days, company.payload_retention_hours) == (30, 24)


@pytest.mark.parametrize("data, error", [
    ({"run_log_retention_days": "0", "payload_retention_hours": "72"}, "Ensure this value is greater than or equal to 1."),
    ({"run_log_retention_days": "91", "payload_retention_hours": "72"}, "Ensure this value is less than or equal to 90."),
    ({"run_log_retention_days": "7", "payload_retention_hours": "721"}, "Ensure this value is less than or equal to 720."),
    ({"run_log_retention_days": "7", "payload_retention_hours": "lots"}, "Enter a whole number."),
    ({"run_log_retention_days": "", "payload_retention_hours": "72"}, "This field is required."),
])
def test_bad_retention_values_are_refused_and_nothing_saved(admin_client, company, data, error):
    response = admin_client.post("/settings/company/", data)
    assert response.status_code == 422 and error in response.content.decode()
    company = Company.objects.get(pk=company.pk)
    assert (company.run_log_retention_days, company.payload_retention_hours) == (7, 72)


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
@pytest.mark.parametrize("of_flow", [False, True], ids=["all-flows", "one-flow"])
@pytest.mark.parametrize("query, expected, message", [
    ("?queued_to=9999-12-31", "all", ""),
    ("?queued_from=9999-12-31", "none", ""),
    ("?queued_from=9999-12-31&queued_to=9999-12-31", "none", ""),
    ("?queued_from=0001-01-01", "all", ""),
    ("?queued_to=0001-01-01", "none", ""),
    ("?queued_from=0001-01-01&queued_to=9999-12-31", "all", ""),
    ("?queued_to=10000-01-01", "all", "Queued to: Enter a valid date."),
    ("?queued_from=0000-12-31", "all", "Queued from: Enter a valid date."),
    ("?queued_to=9999-12-32", "all", "Queued to: Enter a valid date."),
    ("?queued_from=9999-12-31&queued_to=0001-01-01", "all", "Queued to: Choose a date on or after the from date."),
])
def test_the_first_and_last_representable_days_filter_without_an_error_page(
    client_for, make_user, company, instances, htmx, of_flow, query, expected, message,
):
    """The day after 9999-12-31 does not exist: the bound is open-ended there, never an overflow."""
    flow = flow_with(company, instances[0], "UK orders")
    made = {run(flow, 1).pk, run(flow, 2).pk}
    url = f"/flows/{flow.pk}/runs/" if of_flow else "/flows/runs/"
    client = client_for(make_user(company, Role.READ_ONLY))
    response = client.get(url + query, headers={"HX-Request": "true"} if htmx else {})
    page = response.content.decode()
    assert response.status_code == 200
    assert {int(n) for n in re.findall(r'<a href="/flows/runs/(\d+)/">Run ', page)} == (made if expected == "all" else set())
    if message:
        assert "These filters were not applied" in page and message in page
    else:
        assert "These filters were not applied" not in page


def test_administrators_set_the_maximum_run_duration_within_the_platform_ceiling(
    client_for, make_user, company, settings
):
    settings.FLOW_RUN_MAX_DURATION_CEILING_MINUTES = 360
    admin = client_for(make_user(company, Role.ADMINISTRATOR))
    page = admin.get("/settings/company/").content.decode()
    assert 'name="max_run_duration_minutes" value="60"' in page and "1 to 360 minutes (6 hours" in page
    response = admin.post("/settings/company/", {"section": "run_duration", "max_run_duration_minutes": "361"})
    assert response.status_code == 422
    assert "Ensure this value is less than or equal to 360." in response.content.decode()
    response = admin.post("/settings/company/", {"section": "run_duration", "max_run_duration_minutes": "90",
                                                 "time_zone": "Mars/Olympus"})
    assert response.status_code == 422
    assert "&quot;Mars/Olympus&quot; is not a time zone. Use an IANA name such as Europe/London or UTC." in (
        response.content.decode()
    )
    response = admin.post("/settings/company/", {"section": "run_duration", "max_run_duration_minutes": "90",
                                                 "time_zone": "Europe/London"}, follow=True)
    assert "Run settings saved: a run is stopped after 90 minutes, the company&#x27;s maximum run duration; " in (
        response.content.decode()
    )
    company.refresh_from_db()
    assert (company.max_run_duration_minutes, company.run_log_retention_days, company.time_zone) == (
        90, 7, "Europe/London"
    )

    reader = client_for(make_user(company, Role.READ_ONLY))
    page = reader.get("/settings/company/").content.decode()
    assert "90 minutes, the company&#x27;s maximum run duration" in page and "save run settings" not in page
    assert "Europe/London" in page
    assert reader.post("/settings/company/", {"section": "run_duration", "max_run_duration_minutes": "5"}).status_code == 403
    company.refresh_from_db()
    assert company.max_run_duration_minutes == 90
