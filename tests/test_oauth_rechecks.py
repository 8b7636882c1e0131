"""Authentication that stays healthy: scheduled re-checks, check now, and status changes in the audit log."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from instances import checks, rechecks
from instances.models import CheckSchedule, Instance
from patchworks_site.models import AuditEntry, Role
from tests.oauth_helpers import provider_connector

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(company, make_connector, httpserver):
    return make_connector(company, base_url=httpserver.url_for("").rstrip("/"))


def checked(instance: Instance, minutes_ago: float | None, ok: bool | None = True) -> Instance:
    when = None if minutes_ago is None else timezone.now() - timedelta(minutes=minutes_ago)
    Instance.objects.filter(pk=instance.pk).update(last_checked_at=when, last_check_ok=ok if when else None)
    return Instance.objects.get(pk=instance.pk)


def test_due_instances_follow_each_companys_interval(api, make_instance, other_company, make_connector, httpserver):
    never = checked(make_instance(api, "Never checked"), None)
    stale = checked(make_instance(api, "Checked yesterday"), 25 * 60)
    fresh = checked(make_instance(api, "Checked an hour ago"), 60)
    other = make_connector(other_company, name="Other API", base_url=api.base_url)
    checked(make_instance(other, "Other company"), 30)
    CheckSchedule.objects.create(company=other_company, interval_minutes=0)  # never re-checked automatically
    assert {i.name for i in rechecks.due_instances()} == {never.name, stale.name}
    CheckSchedule.objects.create(company=api.company, interval_minutes=15)
    assert {i.name for i in rechecks.due_instances()} == {never.name, stale.name, fresh.name}


def test_the_command_re_checks_due_instances_and_records_each_check(api, make_instance, httpserver):
    httpserver.expect_request("/me").respond_with_json({"id": 1})
    due = checked(make_instance(api, "Due"), 2 * 24 * 60)
    recent = checked(make_instance(api, "Recent"), 5)
    out = StringIO()
    call_command("recheck_instances", stdout=out)
    assert "Acme Retail / Due: Authenticated: the API answered 200 OK." in out.getvalue()
    assert "1 instance(s) re-checked." in out.getvalue()
    due.refresh_from_db()
    assert due.last_checked_at > timezone.now() - timedelta(minutes=1) and due.checks.get().ok
    assert not recent.checks.exists()


def test_the_task_workers_re_check_due_instances_every_five_minutes(api, make_instance, httpserver):
    from flows import tasks

    httpserver.expect_request("/me").respond_with_json({"id": 1})
    due = checked(make_instance(api, "Due"), 2 * 24 * 60)
    assert tasks.recheck_credentials.task_class().validate_datetime(timezone.now().replace(minute=10)) is True
    assert tasks.recheck_credentials.task_class().validate_datetime(timezone.now().replace(minute=11)) is False

    tasks.recheck_credentials.call_local()

    due.refresh_from_db()
    assert due.last_checked_at > timezone.now() - timedelta(minutes=1) and due.checks.get().ok


def test_a_status_change_is_written_to_the_audit_log(api, make_instance, httpserver):
    httpserver.expect_request("/me").respond_with_json({"message": "token revoked"}, status=401)
    instance = checked(make_instance(api, "Main"), 2 * 24 * 60, ok=True)
    rechecks.run_due_checks()
    entry = AuditEntry.objects.get(object_type="instance", object_id=str(instance.pk), changes__has_key="authentication status")
    assert entry.user is None  # done by the schedule, not by someone
    assert entry.changes["authentication status"].startswith("Authenticated → Failed: The credentials were refused: 401")
    # No change, no entry.
    checked(instance, 2 * 24 * 60, ok=False)
    rechecks.run_due_checks()
    entries = AuditEntry.objects.filter(object_type="instance", object_id=str(instance.pk), changes__has_key="authentication status")
    assert entries.count() == 1


def test_a_failed_refresh_is_written_to_the_audit_log(company, httpserver, make_instance):
    connector = provider_connector(company, httpserver.url_for("").rstrip("/"))
    httpserver.expect_request("/token", method="POST").respond_with_json({"error": "invalid_grant"}, status=400)
    instance = make_instance(
        connector, secrets={"client_secret": "s-123456", "access_token": "a-123456", "refresh_token": "r-123456"},
        values={"client_id": "app"}, token_refresh_due_at=timezone.now() - timedelta(seconds=1),
    )
    checked(instance, 60, ok=True)
    checks.recheck(Instance.objects.get(pk=instance.pk))
    entry = AuditEntry.objects.get(object_type="instance", object_id=str(instance.pk), changes__has_key="authentication status")
    assert entry.changes["authentication status"].startswith("Authenticated → Re-authentication needed: ")


def test_check_now_on_the_manage_page_checks_and_comes_back(admin_client, api, make_instance, httpserver):
    httpserver.expect_request("/me").respond_with_json({"id": 1})
    instance = make_instance(api, "Main")
    page = admin_client.get("/connectors/").content.decode()
    assert "Not checked" in page and 'data-testid="check-now"' in page
    response = admin_client.post(f"/instances/{instance.pk}/check/", {"next": "manage"}, follow=True)
    assert response.redirect_chain[-1][0].startswith("/connectors/?highlight=instance-")
    page = response.content.decode()
    assert "Main: Authenticated: the API answered 200 OK." in page
    assert "Authenticated" in page and 'data-testid="last-checked">checked' in page


def test_read_only_users_see_no_check_now_button_and_cannot_post_it(company, make_user, client_for, api, make_instance):
    instance = make_instance(api, "Main")
    client = client_for(make_user(company, Role.READ_ONLY))
    assert 'data-testid="check-now"' not in client.get("/connectors/").content.decode()
    assert client.post(f"/instances/{instance.pk}/check/", {"next": "manage"}).status_code == 403


def test_administrators_choose_the_interval(admin_client, company, make_user, client_for):
    assert "change how often" in admin_client.get("/connectors/").content.decode()
    response = admin_client.post("/instances/check-schedule/", {"interval_minutes": "60"}, follow=True)
    assert "Credentials are now re-checked every hour." in response.content.decode()
    assert CheckSchedule.objects.get(company=company).interval_minutes == 60
    assert admin_client.post("/instances/check-schedule/", {"interval_minutes": "7"}).status_code == 422
    manager = client_for(make_user(company, Role.MANAGER))
    assert manager.get("/instances/check-schedule/").status_code == 403
