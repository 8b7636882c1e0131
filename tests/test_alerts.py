"""Alerts: the rules page and who may change it, the streak rules, emails through a real SMTP server, the alerts page."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from werkzeug import Response

from alerts.models import Alert, AlertChannel, AlertEvent, AlertKind, AlertRule, Delivery, DeliveryStatus
from flows import execution, queueing, signals
from flows.models import FlowRun, FlowRunShape, RunStatus, RunTrigger
from instances import rechecks
from patchworks_site.models import AuditEntry, Role
from tests.alert_helpers import alert_tasks, email_channel, empty_queue, rule, smtp_server, webhook_channel, work_off  # noqa: F401 (fixtures)
from tests.flow_helpers import API_TOKEN, receive_then_send_flow, shop_connector
from tests.test_secret_canaries import Canaries, _summary, find_leaks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def instance(company, make_connector, make_instance, httpserver):
    return make_instance(shop_connector(make_connector, company, httpserver.url_for("/api")), "Shop - UK", {"api_token": API_TOKEN})


@pytest.fixture
def flow(company, instance):
    return receive_then_send_flow(company, instance)


def run_once(flow, httpserver, *, fail: bool, trigger: str = RunTrigger.MANUAL) -> FlowRun:
    """One real run of the flow against the test server: the orders endpoint answers 503 (fail) or one order."""
    httpserver.clear()
    if fail:
        httpserver.expect_request("/api/orders").respond_with_json({"error": "maintenance"}, status=503)
    else:
        httpserver.expect_request("/api/orders").respond_with_json({"orders": [{"id": 1}]})
        httpserver.expect_request("/api/imports").respond_with_json({"ok": True})
    run = execution.execute(queueing.queue_run(flow, trigger).pk)
    assert run.status == (RunStatus.FAILED if fail else RunStatus.SUCCESS), run.failure_reason
    return run


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.FLOW_RETRY_DELAY_SECONDS = 0
    settings.DASHBOARD_URL = "https://patchworks.example.com"


# --- the rules page and who may change it ----------------------------------------------


def test_an_administrator_adds_an_email_channel_and_a_rule_on_the_rules_page(admin_client, company):
    page = admin_client.get("/settings/company/").content.decode()
    assert 'href="/alerts/rules/"' in page and "set up alert rules" in page
    empty = admin_client.get("/alerts/rules/").content.decode()
    assert "No alert rules yet: nobody is told when a run fails." in empty
    assert "Add an email or webhook channel first" in empty

    response = admin_client.post("/alerts/rules/", {
        "section": "email", "email-name": "Operations", "email-recipients": "ops@acme.example, night@acme.example",
    })
    assert response.status_code == 302
    channel = AlertChannel.objects.get()
    assert (channel.company, channel.kind, channel.recipient_list) == (company, "email", ["ops@acme.example", "night@acme.example"])

    response = admin_client.post("/alerts/rules/", {
        "section": "rule", "rule-event": AlertEvent.FAILURE_STREAK, "rule-threshold": "3",
        "rule-channels": [channel.pk], "rule-enabled": "on",
    }, follow=True)
    page = response.content.decode()
    assert 'Rule &quot;A flow failed 3 times in a row&quot; added.' in page
    added = AlertRule.objects.get()
    assert (added.event, added.threshold, list(added.channels.all()), added.enabled) == (
        AlertEvent.FAILURE_STREAK, 3, [channel], True)
    assert AuditEntry.objects.filter(company=company, object_type="alert rule", action="added").exists()


@pytest.mark.parametrize("event, threshold, error", [
    (AlertEvent.FAILURE_STREAK, "", "Enter failed runs in a row (N): 2 to 100."),
    (AlertEvent.FAILURE_STREAK, "1", "Failed runs in a row (N) must be 2 to 100."),
    (AlertEvent.LIMIT_WAIT, "0", "Ensure this value is greater than or equal to 1."),
    (AlertEvent.LIMIT_WAIT, "1441", "Minutes waited (M) must be 1 to 1,440."),
])
def test_the_rule_form_needs_a_sensible_n_or_m(admin_client, company, event, threshold, error):
    channel = email_channel(company)
    response = admin_client.post("/alerts/rules/", {
        "section": "rule", "rule-event": event, "rule-threshold": threshold, "rule-channels": [channel.pk],
    })
    assert response.status_code == 422
    assert error in response.content.decode()
    assert not AlertRule.objects.exists()


def test_a_rule_needs_a_channel_of_the_company_and_email_addresses_are_checked(admin_client, company, other_company):
    foreign, own = email_channel(other_company, "Theirs"), email_channel(company)
    response = admin_client.post("/alerts/rules/", {"section": "rule", "rule-event": AlertEvent.RUN_FAILED,
                                                    "rule-channels": [foreign.pk]})
    assert response.status_code == 422
    assert f"Select a valid choice. {foreign.pk} is not one of the available choices." in response.content.decode()
    response = admin_client.post("/alerts/rules/", {"section": "email", "email-name": "Ops", "email-recipients": "ops@, b@x.io"})
    assert response.status_code == 422 and "&quot;ops@&quot; is not an email address." in response.content.decode()
    assert not AlertRule.objects.exists() and list(AlertChannel.objects.filter(company=company)) == [own]


def test_a_rule_cannot_be_added_before_there_is_a_channel_and_the_page_says_so(admin_client):
    response = admin_client.post("/alerts/rules/", {"section": "rule", "rule-event": AlertEvent.RUN_FAILED})
    assert response.status_code == 422
    assert "Add an email channel or a webhook first: a rule sends to channels." in response.content.decode()
    assert not AlertRule.objects.exists()


def test_a_rule_that_does_not_use_a_threshold_keeps_none(admin_client, company):
    channel = email_channel(company)
    admin_client.post("/alerts/rules/", {"section": "rule", "rule-event": AlertEvent.RUN_FAILED, "rule-threshold": "7",
                                         "rule-channels": [channel.pk], "rule-enabled": "on"})
    assert AlertRule.objects.get().threshold is None


@pytest.mark.parametrize("role", [Role.USER, Role.READ_ONLY, Role.MANAGER])
def test_only_administrators_change_alert_rules_others_see_them(client_for, make_user, company, role):
    channel = email_channel(company)
    existing = rule(company, AlertEvent.RUN_FAILED, channel)
    client = client_for(make_user(company, role))
    page = client.get("/alerts/rules/").content.decode()
    assert "Only Administrators can change alert rules and channels." in page
    assert "A run failed" in page and "Operations" in page and "ops@acme.example" in page
    assert 'data-testid="rule-form"' not in page and "add email channel" not in page
    assert "Only Administrators can change alert rules." in client.get(f"/alerts/rules/{existing.pk}/").content.decode()
    attempts = [
        ("/alerts/rules/", {"section": "email", "email-name": "Mine", "email-recipients": "me@acme.example"}),
        ("/alerts/rules/", {"section": "rule", "rule-event": AlertEvent.RUN_FAILED, "rule-channels": [channel.pk]}),
        (f"/alerts/rules/{existing.pk}/", {"event": AlertEvent.RUN_IN_DOUBT, "channels": [channel.pk]}),
        (f"/alerts/rules/{existing.pk}/remove/", {}),
        (f"/alerts/channels/{channel.pk}/remove/", {}),
    ]
    for url, data in attempts:
        response = client.post(url, data)
        assert response.status_code == 403, url
        assert "Only Administrators can change alert rules and channels" in response.content.decode()
    assert list(AlertRule.objects.values_list("event", flat=True)) == [AlertEvent.RUN_FAILED]
    assert AlertChannel.objects.count() == 1


def test_an_administrator_edits_and_removes_a_rule_and_a_channel(admin_client, company):
    ops, night = email_channel(company), email_channel(company, "Night shift", "night@acme.example")
    existing = rule(company, AlertEvent.RUN_FAILED, ops)
    response = admin_client.post(f"/alerts/rules/{existing.pk}/", {
        "event": AlertEvent.LIMIT_WAIT, "threshold": "15", "channels": [ops.pk, night.pk],
    })
    assert response.status_code == 302
    existing.refresh_from_db()
    assert (existing.event, existing.threshold, existing.enabled, existing.channels.count()) == (AlertEvent.LIMIT_WAIT, 15, False, 2)
    admin_client.post(f"/alerts/channels/{ops.pk}/remove/")
    assert list(existing.channels.all()) == [night]
    admin_client.post(f"/alerts/rules/{existing.pk}/remove/")
    assert not AlertRule.objects.exists()


def test_another_company_s_rules_channels_alerts_and_deliveries_are_not_found(client_for, make_user, company, other_company):
    theirs = email_channel(other_company, "Theirs")
    their_rule = rule(other_company, AlertEvent.RUN_FAILED, theirs)
    alert = Alert.objects.create(company=other_company, rule=their_rule, event=AlertEvent.RUN_FAILED, subject="x", text="y")
    delivery = Delivery.objects.create(alert=alert, channel=theirs, channel_name="Theirs", channel_kind="email",
                                       status=DeliveryStatus.FAILED, attempts=5)
    client = client_for(make_user(company, Role.ADMINISTRATOR))
    assert client.get(f"/alerts/rules/{their_rule.pk}/").status_code == 404
    assert client.post(f"/alerts/rules/{their_rule.pk}/", {"event": AlertEvent.RUN_IN_DOUBT}).status_code == 404
    assert client.post(f"/alerts/rules/{their_rule.pk}/remove/").status_code == 404
    assert client.post(f"/alerts/channels/{theirs.pk}/remove/").status_code == 404
    assert client.get(f"/alerts/{alert.pk}/").status_code == 404
    assert client.post(f"/alerts/deliveries/{delivery.pk}/send-again/").status_code == 404
    listing = client.get("/alerts/").content.decode()
    assert "No alerts yet" in listing and "Theirs" not in listing
    assert AlertRule.objects.filter(pk=their_rule.pk).exists() and Delivery.objects.get().status == DeliveryStatus.FAILED


# --- the streak rules ------------------------------------------------------------------


def test_a_flow_failing_three_times_then_succeeding_sends_one_alert_and_one_recovered(
    company, flow, httpserver, empty_queue, smtp_server
):
    channel = email_channel(company)
    failed_rule = rule(company, AlertEvent.RUN_FAILED, channel)
    runs = [run_once(flow, httpserver, fail=True) for _ in range(3)]
    work_off()
    ok = run_once(flow, httpserver, fail=False)
    work_off()

    alerts = list(Alert.objects.order_by("created_at", "id"))
    assert [(a.kind, a.run_id, a.rule_id) for a in alerts] == [
        (AlertKind.ALERT, runs[0].pk, failed_rule.pk), (AlertKind.RECOVERED, ok.pk, failed_rule.pk),
    ]
    assert [message["Subject"] for message in smtp_server.messages] == [
        f'[Patchworks] "Orders to ERP" run {runs[0].pk} failed',
        f'[Patchworks] Recovered: "Orders to ERP" succeeded again (run {ok.pk})',
    ]
    recovered_text = smtp_server.messages[1].get_content()
    assert "succeeded again after 3 failed runs in a row" in recovered_text
    assert f"https://patchworks.example.com/flows/runs/{ok.pk}/" in recovered_text
    assert Delivery.objects.counts() == {"pending": 0, "delivered": 2, "failed": 0}


def test_a_failure_streak_rule_alerts_once_at_the_n_th_failure_and_not_for_shorter_streaks(
    company, flow, httpserver, empty_queue, mailoutbox
):
    streak_rule = rule(company, AlertEvent.FAILURE_STREAK, email_channel(company), threshold=3)
    for fail in (True, True, False):  # two failures, then a success: no alert, nothing recovered
        run_once(flow, httpserver, fail=fail)
    work_off()
    assert not Alert.objects.exists()

    runs = [run_once(flow, httpserver, fail=True) for _ in range(6)]
    work_off()
    (alert,) = Alert.objects.all()
    assert (alert.rule, alert.run_id, alert.kind) == (streak_rule, runs[2].pk, AlertKind.ALERT)
    assert alert.subject == f'"Orders to ERP" failed 3 times in a row (run {runs[2].pk})'
    assert "No further alert is sent for this flow until it succeeds again" in alert.text
    run_once(flow, httpserver, fail=False)
    work_off()
    assert list(Alert.objects.order_by("id").values_list("kind", flat=True)) == [AlertKind.ALERT, AlertKind.RECOVERED]
    assert len(mailoutbox) == 2


def test_test_runs_never_alert_and_a_stopped_run_neither_fails_nor_recovers_a_flow(
    company, flow, httpserver, empty_queue, mailoutbox
):
    rule(company, AlertEvent.RUN_FAILED, email_channel(company))
    run_once(flow, httpserver, fail=True, trigger=RunTrigger.TEST)
    assert alert_tasks(work_off()) and not Alert.objects.exists()  # the task ran and found nothing to say
    failed = run_once(flow, httpserver, fail=True)
    stopped = queueing.queue_run(flow, RunTrigger.MANUAL)
    assert queueing.request_stop(stopped) == "stopped"
    work_off()
    assert list(Alert.objects.values_list("run", "kind")) == [(failed.pk, AlertKind.ALERT)]
    assert len(mailoutbox) == 1


def test_a_run_failed_by_the_reaper_after_its_last_worker_was_lost_alerts_too(company, flow, empty_queue, mailoutbox, settings):
    rule(company, AlertEvent.RUN_FAILED, email_channel(company))
    now = timezone.now()
    run = FlowRun.objects.create(
        company=company, flow=flow, trigger=RunTrigger.SCHEDULE, status=RunStatus.RUNNING, queued_at=now, reference_time=now,
        started_at=now, lease_owner="lost-worker", lease_expires_at=now - timedelta(seconds=1),
        attempt=settings.FLOW_RUN_MAX_ATTEMPTS,
    )
    assert queueing.reap_expired_leases(now) == 1
    work_off()
    (message,) = mailoutbox
    assert message.subject == f'[Patchworks] "Orders to ERP" run {run.pk} failed'
    assert "Worker lost on each of" in message.body


def test_each_concluded_run_is_counted_once_however_often_its_task_runs(company, flow, httpserver, empty_queue):
    rule(company, AlertEvent.FAILURE_STREAK, email_channel(company), threshold=2)
    run = run_once(flow, httpserver, fail=True)
    for _ in range(3):
        signals.announce_concluded(run.pk, run.status)
    work_off()
    assert not Alert.objects.exists()  # one failure, counted once: no streak of 2


def test_a_run_that_waited_longer_than_m_minutes_for_limits_alerts_once_per_streak(company, flow, empty_queue, mailoutbox):
    rule(company, AlertEvent.LIMIT_WAIT, email_channel(company), threshold=10)

    def concluded(rate_ms: int, pool_ms: int) -> FlowRun:
        now = timezone.now()
        run = FlowRun.objects.create(company=company, flow=flow, trigger=RunTrigger.SCHEDULE, status=RunStatus.SUCCESS,
                                     queued_at=now, reference_time=now, started_at=now, finished_at=now)
        FlowRunShape.objects.create(run=run, position=0, shape_name="Shop - UK → List orders", status="success",
                                    started_at=now, rate_limit_wait_ms=rate_ms, pool_wait_ms=pool_ms)
        signals.announce_concluded(run.pk, run.status)
        work_off()
        return run

    concluded(5 * 60_000, 4 * 60_000)  # 9 minutes: not longer than 10
    assert not Alert.objects.exists()
    slow = concluded(9 * 60_000, 2 * 60_000)  # 11 minutes (a park counts in its shape's rate-limit wait)
    concluded(20 * 60_000, 0)  # the same streak: no second alert
    back = concluded(0, 0)
    assert list(Alert.objects.order_by("id").values_list("run", "kind")) == [
        (slow.pk, AlertKind.ALERT), (back.pk, AlertKind.RECOVERED)]
    assert mailoutbox[0].subject == f'[Patchworks] "Orders to ERP" run {slow.pk} waited 11 minutes for limits'
    assert "longer than 10 minutes" in mailoutbox[0].body


def test_a_run_with_sends_in_doubt_alerts_with_what_to_check(company, flow, empty_queue, mailoutbox):
    rule(company, AlertEvent.RUN_IN_DOUBT, email_channel(company))
    now = timezone.now()
    run = FlowRun.objects.create(
        company=company, flow=flow, trigger=RunTrigger.SCHEDULE, status=RunStatus.SUCCESS, queued_at=now,
        reference_time=now, finished_at=now,
        in_doubt=[{"shape": "Shape 2 (Shop - UK → Import order)", "what": "Page 3, batch 1", "ids": ["A-1", "A-2"], "at": now.isoformat()}],
    )
    signals.announce_concluded(run.pk, run.status)
    work_off()
    (message,) = mailoutbox
    assert message.subject == f'[Patchworks] "Orders to ERP" run {run.pk} left 1 send in doubt'
    assert "- Shape 2 (Shop - UK → Import order): Page 3, batch 1 (ids: A-1, A-2)" in message.body


def test_a_failed_credential_re_check_alerts_once_and_a_passing_one_recovers(
    company, instance, httpserver, empty_queue, mailoutbox
):
    rule(company, AlertEvent.CREDENTIALS_FAILED, email_channel(company))
    httpserver.expect_request("/api/me").respond_with_json({"error": "invalid token"}, status=401)
    for _ in range(3):
        rechecks.run_due_checks(timezone.now() + timedelta(days=2 + _))
        work_off()
    httpserver.clear()
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    rechecks.run_due_checks(timezone.now() + timedelta(days=9))
    work_off()
    assert [m.subject for m in mailoutbox] == [
        '[Patchworks] The credentials of "Shop - UK" failed their re-check',
        '[Patchworks] Recovered: the credentials of "Shop - UK" pass their check again',
    ]
    assert 'The credentials were refused: 401 Unauthorized. The API said: "invalid token".' in mailoutbox[0].body
    assert f"https://patchworks.example.com/instances/{instance.pk}/" in mailoutbox[0].body


def test_check_now_that_fails_alerts_like_a_re_check_and_one_that_passes_recovers(
    company, instance, httpserver, empty_queue, mailoutbox, admin_client
):
    rule(company, AlertEvent.CREDENTIALS_FAILED, email_channel(company))
    httpserver.expect_request("/api/me").respond_with_json({"error": "invalid token"}, status=401)
    assert admin_client.post(f"/instances/{instance.pk}/check/").status_code == 302
    work_off()
    httpserver.clear()
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    assert admin_client.post(f"/instances/{instance.pk}/check/").status_code == 302
    work_off()
    assert [m.subject for m in mailoutbox] == [
        '[Patchworks] The credentials of "Shop - UK" failed their re-check',
        '[Patchworks] Recovered: the credentials of "Shop - UK" pass their check again',
    ]
    assert 'The credentials were refused: 401 Unauthorized. The API said: "invalid token".' in mailoutbox[0].body


def test_a_run_s_end_queues_alert_work_only_for_a_company_with_an_enabled_rule_about_runs(
    company, other_company, flow, httpserver, empty_queue
):
    channel = email_channel(company)
    rule(other_company, AlertEvent.RUN_FAILED, email_channel(other_company))  # another company's rule counts not
    paused = rule(company, AlertEvent.RUN_FAILED, channel)
    paused.enabled = False
    paused.save()
    rule(company, AlertEvent.CREDENTIALS_FAILED, channel)  # about credentials, not runs

    run_once(flow, httpserver, fail=True)
    assert alert_tasks(work_off()) == [] and not Alert.objects.exists()

    paused.enabled = True
    paused.save()
    run = run_once(flow, httpserver, fail=True)
    assert alert_tasks(work_off())[0] == ("run_concluded", (run.pk,))
    assert Alert.objects.filter(rule=paused).count() == 1


# --- email through a real SMTP server ----------------------------------------------------


def test_an_alert_email_reaches_the_smtp_server_with_subject_recipients_and_the_failure_reason(
    company, flow, httpserver, empty_queue, smtp_server
):
    rule(company, AlertEvent.RUN_FAILED, email_channel(company, recipients="ops@acme.example\nnight@acme.example"))
    run = run_once(flow, httpserver, fail=True)
    assert smtp_server.received == [] and not Alert.objects.exists()  # the run only queued a task
    tasks = alert_tasks(work_off())
    delivery = Delivery.objects.get()
    assert tasks == [("run_concluded", (run.pk,)), ("deliver", (delivery.pk, 1))]
    ((recipients, message),) = smtp_server.received
    assert sorted(recipients) == ["night@acme.example", "ops@acme.example"]
    assert message["Subject"] == f'[Patchworks] "Orders to ERP" run {run.pk} failed'
    assert message["From"] == "Patchworks alerts <alerts@patchworks.example>"
    body = message.get_content()
    assert f'Run {run.pk} of the process flow "Orders to ERP" (manual) failed:' in body
    assert run.failure_reason in body and "503" in run.failure_reason
    assert (delivery.status, delivery.attempts, delivery.attempt_log.get().ok) == (DeliveryStatus.DELIVERED, 1, True)


def test_a_mail_server_that_is_down_is_retried_and_the_attempts_are_recorded(
    company, flow, httpserver, empty_queue, settings
):
    settings.MAILERS = {"default": {  # nothing listens on port 9
        "BACKEND": "django.core.mail.backends.smtp.EmailBackend", "OPTIONS": {"host": "127.0.0.1", "port": 9, "timeout": 2},
    }}
    settings.ALERT_DELIVERY_ATTEMPTS = 3
    rule(company, AlertEvent.RUN_FAILED, email_channel(company))
    run = run_once(flow, httpserver, fail=True)
    work_off()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 3)
    errors = list(delivery.attempt_log.values_list("number", "ok", "error"))
    assert [(n, ok) for n, ok, _ in errors] == [(1, False), (2, False), (3, False)]
    assert all(re.match(r"The mail server could not be reached \(ConnectionRefusedError", e) for _, _, e in errors)
    assert FlowRun.objects.get(pk=run.pk).status == RunStatus.FAILED


# --- the alerts page -----------------------------------------------------------------------


def test_the_alerts_page_has_an_empty_state_that_leads_to_the_rules(client_for, make_user, company):
    page = client_for(make_user(company, Role.READ_ONLY)).get("/alerts/").content.decode()
    assert "No alerts yet" in page and "No alert rules are set up, so nobody is told when a run fails." in page
    assert 'href="/alerts/rules/"' in page


def test_the_alerts_page_lists_alerts_newest_first_with_delivery_status_per_channel_in_pages(
    client_for, make_user, company
):
    channel = email_channel(company)
    now = timezone.now()
    for number in range(30):
        alert = Alert.objects.create(company=company, event=AlertEvent.RUN_FAILED, subject=f"Alert {number:02}",
                                     text="...", created_at=now - timedelta(minutes=30 - number))
        newest = number == 29
        Delivery.objects.create(alert=alert, channel=channel, channel_name="Operations", channel_kind="email",
                                status=DeliveryStatus.FAILED if newest else DeliveryStatus.DELIVERED,
                                attempts=5 if newest else 1, last_error="refused")
    client = client_for(make_user(company, Role.READ_ONLY))
    first = client.get("/alerts/").content.decode()
    subjects = re.findall(r"Alert (\d\d)", first)
    assert subjects == [f"{n:02}" for n in range(29, 4, -1)]
    assert "30 alerts, newest first" in first and "Page 1 of 2" in first
    assert re.search(r"Operations <span[^>]*>\(email\)</span>: <span class=\"badge text-bg-danger\"[^>]*>failed</span> "
                     r"<span[^>]*>5 attempts</span>", first)
    second = client.get("/alerts/?page=2").content.decode()
    assert re.findall(r"Alert (\d\d)", second) == ["04", "03", "02", "01", "00"]


def test_alerts_older_than_the_retention_go_with_their_deliveries(company, settings):
    settings.ALERT_RETENTION_DAYS = 30
    channel = email_channel(company)
    now = timezone.now()
    for days in (31, 29):
        alert = Alert.objects.create(company=company, event=AlertEvent.RUN_FAILED, subject=f"{days} days old", text="...",
                                     created_at=now - timedelta(days=days))
        Delivery.objects.create(alert=alert, channel=channel, channel_name="Operations", channel_kind="email")
    assert Alert.objects.delete_old(now) == 1
    assert list(Alert.objects.values_list("subject", flat=True)) == ["29 days old"]
    assert Delivery.objects.count() == 1


def test_the_alert_page_shows_every_attempt_and_administrators_may_send_a_failed_one_again(
    client_for, make_user, company, empty_queue, mailoutbox
):
    channel = email_channel(company)
    alert = Alert.objects.create(company=company, event=AlertEvent.RUN_FAILED, subject="Run 7 failed", text="Run 7 failed.")
    delivery = Delivery.objects.create(alert=alert, channel=channel, channel_name="Operations", channel_kind="email",
                                       status=DeliveryStatus.FAILED, attempts=1, last_error="down")
    delivery.attempt_log.create(number=1, started_at=timezone.now(), duration_ms=12, error="The mail server could not be reached.")
    reader = client_for(make_user(company, Role.READ_ONLY))
    page = reader.get(f"/alerts/{alert.pk}/").content.decode()
    assert "Run 7 failed." in page and "The mail server could not be reached." in page and "12 ms" in page
    assert "send again" not in page
    assert reader.post(f"/alerts/deliveries/{delivery.pk}/send-again/").status_code == 403

    admin = client_for(make_user(company, Role.ADMINISTRATOR))
    assert "send again" in admin.get(f"/alerts/{alert.pk}/").content.decode()
    assert admin.post(f"/alerts/deliveries/{delivery.pk}/send-again/").status_code == 302
    work_off()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 2)
    assert [m.subject for m in mailoutbox] == ["[Patchworks] Run 7 failed"]


# --- no secret in any alert ----------------------------------------------------------------


def _echoing_api(httpserver, canary: str) -> None:
    """The orders endpoint refuses the token and repeats it back: plain, Base64, URL-encoded, JSON-escaped."""
    body = {"error": f"bad token {canary}", "b64": base64.b64encode(canary.encode()).decode(),
            "url": quote(canary, safe=""), "json": json.dumps(canary)}
    httpserver.expect_request("/api/orders").respond_with_json(body, status=401, headers={"X-Echo": quote(canary, safe="")})


def test_a_credential_planted_in_an_instance_appears_in_no_alert_email_or_webhook(
    company, make_connector, make_instance, httpserver, empty_queue, smtp_server
):
    canaries = Canaries()
    token = canaries.new("alert-token")
    instance = make_instance(shop_connector(make_connector, company, httpserver.url_for("/api")), "Shop - UK", {"api_token": token})
    flow = receive_then_send_flow(company, instance)
    _echoing_api(httpserver, token)
    received = []
    httpserver.expect_request("/hook").respond_with_handler(
        lambda request: received.append(request.get_data(as_text=True) + json.dumps(dict(request.headers))) or Response("", 204))
    channel, _ = webhook_channel(company, httpserver.url_for("/hook"))
    rule(company, AlertEvent.RUN_FAILED, email_channel(company), channel)
    rule(company, AlertEvent.FAILURE_STREAK, email_channel(company, "Night", "night@acme.example"), channel, threshold=2)

    for _ in range(2):
        run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
        work_off()
    assert run.status == RunStatus.FAILED and "401" in run.failure_reason
    assert len(smtp_server.received) == 2 and len(received) == 2
    texts = [message.as_string() for message in smtp_server.messages] + [message.get_content() for message in smtp_server.messages]
    texts += received + [f"{a.subject}\n{a.text}\n{json.dumps(a.details, ensure_ascii=False)}" for a in Alert.objects.all()]
    index = canaries.index()
    leaks = [leak for text in texts for leak in find_leaks(text, index)]
    assert not leaks, _summary(leaks)


def test_a_failure_reason_that_somehow_held_a_secret_is_scrubbed_again_before_it_is_sent(
    company, instance, flow, empty_queue, mailoutbox
):
    """A second line of defence: alerts redact with the secrets of the flow's instances whatever the run row says."""
    rule(company, AlertEvent.RUN_FAILED, email_channel(company))
    now = timezone.now()
    leaked = f"Shape 1: the API said token={API_TOKEN} / {base64.b64encode(API_TOKEN.encode()).decode()} / {quote(API_TOKEN)}"
    run = FlowRun.objects.create(company=company, flow=flow, trigger=RunTrigger.MANUAL, status=RunStatus.FAILED,
                                 queued_at=now, reference_time=now, finished_at=now, failure_reason=leaked)
    signals.announce_concluded(run.pk, run.status)
    work_off()
    (message,) = mailoutbox
    alert = Alert.objects.get()
    for text in (message.body, message.subject, alert.text, json.dumps(alert.details)):
        assert API_TOKEN not in text and base64.b64encode(API_TOKEN.encode()).decode() not in text
    assert "Shape 1: the API said token=[redacted] / [redacted] / [redacted]" in message.body


# --- hostile input ---------------------------------------------------------------------------

HOSTILE = ["", " ", "\x00", "a\x00b", "²", "9" * 5000, "x" * 2000, "<script>alert(1)</script>", "http://[::1", "ftp://x.io",
           "http://user:pw@hooks.example.com/", "http://169.254.169.254/latest", "a@b.c," * 30, "-1", "0", "1e3"]
hostile = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE))


@hypothesis_settings(max_examples=30, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(section=st.sampled_from(["rule", "email", "webhook", "", "nonsense"]), name=hostile, target=hostile,
       event=st.one_of(st.sampled_from(AlertEvent.values), hostile), threshold=hostile, channel=hostile)
def test_hostile_input_to_the_alert_forms_never_breaks_the_page(admin_client, company, section, name, target, event,
                                                                threshold, channel):
    before = (AlertRule.objects.count(), AlertChannel.objects.count())
    response = admin_client.post("/alerts/rules/", {
        "section": section, "email-name": name, "email-recipients": target, "webhook-name": name, "webhook-url": target,
        "rule-event": event, "rule-threshold": threshold, "rule-channels": [channel],
    })
    assert response.status_code in (200, 302, 422), response.status_code
    if response.status_code == 422:
        body = response.content.decode()
        assert "invalid-feedback" in body or "alert-danger" in body
        assert (AlertRule.objects.count(), AlertChannel.objects.count()) == before
