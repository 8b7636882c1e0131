"""Alert webhooks: signed POSTs through the SSRF guard, retries with backoff, every attempt recorded, a write-only secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from django.utils import timezone
from werkzeug import Request, Response

from alerts.models import AlertChannel, AlertEvent, Delivery, DeliveryStatus
from flows import signals
from flows.models import FlowRun, ProcessFlow, RunStatus, RunTrigger
from patchworks_site.models import AuditEntry, Role
from tests.alert_helpers import alert_tasks, empty_queue, rule, webhook_channel, work_off  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def verify(secret: str, request: Request, tolerance: int = 300) -> dict:
    """What a receiver does: check the timestamp is recent and the signature matches, then read the event."""
    timestamp = request.headers["X-Patchworks-Timestamp"]
    assert abs(time.time() - int(timestamp)) <= tolerance
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + request.get_data(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, request.headers["X-Patchworks-Signature"])
    return json.loads(request.get_data())


@pytest.fixture
def flow(company) -> ProcessFlow:
    return ProcessFlow.objects.create(company=company, name="Orders to ERP")


def failed_run(flow: ProcessFlow, reason: str = "Shape 1 (Shop - UK → List orders): The API answered 503.") -> FlowRun:
    now = timezone.now()
    run = FlowRun.objects.create(company=flow.company, flow=flow, trigger=RunTrigger.SCHEDULE, status=RunStatus.FAILED,
                                 queued_at=now, reference_time=now, started_at=now, finished_at=now, failure_reason=reason)
    signals.announce_concluded(run.pk, run.status)
    return run


def test_a_webhook_receives_the_event_signed_with_hmac_sha256_over_timestamp_and_body(
    company, flow, httpserver, empty_queue, settings
):
    settings.DASHBOARD_URL = "https://patchworks.example.com"
    channel, secret = webhook_channel(company, httpserver.url_for("/hooks/patchworks"))
    failed_rule = rule(company, AlertEvent.RUN_FAILED, channel)
    received = []

    def receiver(request: Request) -> Response:
        received.append((dict(request.headers), verify(secret, request)))
        return Response("ok", status=204)

    httpserver.expect_request("/hooks/patchworks", method="POST").respond_with_handler(receiver)
    run = failed_run(flow)
    work_off()

    ((headers, event),) = received
    assert headers["Content-Type"] == "application/json" and headers["X-Patchworks-Event"] == "run_failed"
    assert headers["X-Patchworks-Signature"].startswith("sha256=")
    delivery = Delivery.objects.get()
    assert headers["X-Patchworks-Delivery"] == str(delivery.pk)
    assert (event["type"], event["kind"], event["company"]) == ("run_failed", "alert", "Acme Retail")
    assert event["subject"] == f'"Orders to ERP" run {run.pk} failed'
    assert event["flow"] == {"id": flow.pk, "name": "Orders to ERP", "url": f"https://patchworks.example.com/flows/{flow.pk}/"}
    assert event["run"]["failure_reason"] == "Shape 1 (Shop - UK → List orders): The API answered 503."
    assert (event["run"]["id"], event["run"]["status"], event["run"]["trigger"]) == (run.pk, "failed", "schedule")
    assert event["id"] == delivery.alert_id and delivery.alert.rule == failed_rule
    (attempt,) = delivery.attempt_log.all()
    assert (delivery.status, attempt.number, attempt.ok, attempt.status_code, attempt.error) == (
        DeliveryStatus.DELIVERED, 1, True, 204, "")


def test_a_tampered_body_or_another_secret_does_not_verify():
    from alerts.delivery import sign

    body = b'{"type":"run_failed"}'
    good = sign("whsec_right", "1700000000", body)
    assert good == "sha256=" + hmac.new(b"whsec_right", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("whsec_right", "1700000000", body + b" ") != good
    assert sign("whsec_right", "1700000001", body) != good
    assert sign("whsec_wrong", "1700000000", body) != good


def test_a_failing_webhook_is_retried_with_backoff_and_every_attempt_is_recorded(
    company, flow, httpserver, empty_queue, settings
):
    settings.ALERT_RETRY_DELAY_SECONDS = 30
    channel, _ = webhook_channel(company, httpserver.url_for("/hook"))
    rule(company, AlertEvent.RUN_FAILED, channel)
    answers = iter([Response("down", status=503), Response("still down", status=502), Response("", status=200)])
    httpserver.expect_request("/hook", method="POST").respond_with_handler(lambda request: next(answers))
    failed_run(flow)
    tasks = work_off()

    delivery = Delivery.objects.get()
    delivers = [task for task in tasks if task.name.endswith("deliver")]
    assert [task.args for task in delivers] == [(delivery.pk, 1), (delivery.pk, 2), (delivery.pk, 3)]
    # Attempt 2 was due 30 s after attempt 1, attempt 3 60 s after attempt 2 (huey's eta, UTC).
    attempts = list(delivery.attempt_log.all())
    first_gap = (delivers[1].eta - attempts[0].started_at.replace(tzinfo=None)).total_seconds()
    second_gap = (delivers[2].eta - attempts[1].started_at.replace(tzinfo=None)).total_seconds()
    assert 30 <= first_gap < 40 and 60 <= second_gap < 70
    assert [(a.number, a.ok, a.status_code, a.error) for a in attempts] == [
        (1, False, 503, "The webhook answered 503 Service Unavailable."),
        (2, False, 502, "The webhook answered 502 Bad Gateway."),
        (3, True, 200, ""),
    ]
    assert (delivery.status, delivery.attempts, delivery.last_error) == (DeliveryStatus.DELIVERED, 3, "")


def test_a_webhook_that_keeps_failing_is_given_up_and_the_run_is_left_as_it_was(
    company, flow, httpserver, empty_queue, settings
):
    settings.ALERT_DELIVERY_ATTEMPTS = 3
    channel, _ = webhook_channel(company, httpserver.url_for("/hook"))
    rule(company, AlertEvent.RUN_FAILED, channel)
    httpserver.expect_request("/hook").respond_with_data("nope", status=500)
    run = failed_run(flow)
    before = FlowRun.objects.filter(pk=run.pk).values().get()
    work_off()

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 3)
    assert delivery.last_error == "The webhook answered 500 Internal Server Error."
    assert FlowRun.objects.filter(pk=run.pk).values().get() == before


def test_a_client_error_is_not_retried(company, flow, httpserver, empty_queue):
    channel, _ = webhook_channel(company, httpserver.url_for("/hook"))
    rule(company, AlertEvent.RUN_FAILED, channel)
    httpserver.expect_request("/hook").respond_with_data("gone", status=410)
    failed_run(flow)
    work_off()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        DeliveryStatus.FAILED, 1, "The webhook answered 410 Gone.")


def test_a_webhook_to_a_loopback_address_is_refused_by_the_ssrf_guard_unless_loopback_is_allowed(
    company, flow, httpserver, empty_queue, settings
):
    settings.OUTBOUND_ALLOW_LOOPBACK = False
    channel, _ = webhook_channel(company, httpserver.url_for("/hook"))
    rule(company, AlertEvent.RUN_FAILED, channel)
    httpserver.expect_request("/hook").respond_with_data("", status=200)
    failed_run(flow)
    work_off()

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1)  # never retried: it would be refused again
    assert delivery.last_error.startswith('Blocked: "localhost" resolves to a loopback address')
    assert httpserver.log == []


def test_a_webhook_redirecting_to_a_private_address_is_refused(company, flow, httpserver, empty_queue):
    channel, _ = webhook_channel(company, httpserver.url_for("/hook"))
    rule(company, AlertEvent.RUN_FAILED, channel)
    httpserver.expect_request("/hook").respond_with_data("", status=307, headers={"Location": "http://10.0.0.7/internal"})
    failed_run(flow)
    work_off()
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error == "Blocked: the webhook redirected to http://10.0.0.7:80; alerts do not follow redirects to other sites."


def test_the_webhook_form_refuses_private_addresses_and_loopback_when_not_allowed(admin_client, settings):
    response = admin_client.post("/alerts/rules/", {"section": "webhook", "webhook-name": "Internal",
                                                    "webhook-url": "http://10.1.2.3/hook"})
    assert response.status_code == 422
    assert "10.1.2.3 is a private network address; alerts cannot be sent there." in response.content.decode()
    settings.OUTBOUND_ALLOW_LOOPBACK = False
    response = admin_client.post("/alerts/rules/", {"section": "webhook", "webhook-name": "Local",
                                                    "webhook-url": "http://127.0.0.1:9000/hook"})
    assert "127.0.0.1 is a loopback address; alerts cannot be sent there." in response.content.decode()
    assert not AlertChannel.objects.exists()


def test_the_signing_secret_is_shown_once_then_only_its_last_four_characters(admin_client, company):
    response = admin_client.post("/alerts/rules/", {"section": "webhook", "webhook-name": "Pager",
                                                    "webhook-url": "https://hooks.example.com/patchworks"})
    page = response.content.decode()
    channel = AlertChannel.objects.get()
    secret = channel.get_secret()
    assert response.status_code == 200 and secret.startswith("whsec_") and len(secret) > 40
    assert f'value="{secret}"' in page and "Copy it now" in page
    assert secret not in channel.secret_ciphertext and channel.secret_ciphertext.startswith("v1:")

    later = admin_client.get("/alerts/rules/").content.decode()
    assert secret not in later and secret[:12] not in later
    assert f"signing secret: set, ending in &hellip;{secret[-4:]}" in later
    entry = AuditEntry.objects.get(company=company, object_type="alert channel")
    assert secret not in json.dumps(entry.changes) and entry.changes["secret_ciphertext"] == "set"


def test_the_secret_of_one_company_s_webhook_does_not_decrypt_as_another_s(company, other_company):
    from instances.crypto import CredentialDecryptError

    ours, _ = webhook_channel(company, "https://hooks.example.com/a")
    theirs, _ = webhook_channel(other_company, "https://hooks.example.com/b")
    theirs.secret_ciphertext = ours.secret_ciphertext
    with pytest.raises(CredentialDecryptError):
        theirs.get_secret()


def test_a_read_only_user_sees_webhooks_but_neither_adds_nor_removes_them(client_for, make_user, company):
    channel, secret = webhook_channel(company, "https://hooks.example.com/x")
    client = client_for(make_user(company, Role.READ_ONLY))
    page = client.get("/alerts/rules/").content.decode()
    assert "https://hooks.example.com/x" in page and secret not in page
    assert client.post("/alerts/rules/", {"section": "webhook", "webhook-name": "Mine",
                                          "webhook-url": "https://hooks.example.com/y"}).status_code == 403
    assert client.post(f"/alerts/channels/{channel.pk}/remove/").status_code == 403
    assert list(AlertChannel.objects.values_list("url", flat=True)) == ["https://hooks.example.com/x"]


def test_a_pending_delivery_whose_task_was_lost_is_handed_to_the_queue_again(company, flow, httpserver, empty_queue):
    from alerts import delivery as deliveries

    channel, _ = webhook_channel(company, httpserver.url_for("/hook"))
    rule(company, AlertEvent.RUN_FAILED, channel)
    httpserver.expect_request("/hook").respond_with_data("", status=200)
    failed_run(flow)
    tasks = alert_tasks(work_off())
    assert [name for name, _ in tasks] == ["run_concluded", "deliver"]
    delivery = Delivery.objects.get()
    # Pretend the worker holding attempt 2 was lost: pending, its next attempt long overdue, no task queued.
    overdue = timezone.now() - deliveries.STALE_AFTER * 2
    Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.PENDING, next_attempt_at=overdue)
    assert deliveries.requeue_stale() == 1
    assert deliveries.requeue_stale() == 0  # handed over once, not on every tick
    assert alert_tasks(work_off()) == [("deliver", (delivery.pk, 2))]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 2)


def test_an_administrator_gives_a_webhook_a_new_secret_shown_once_and_the_old_one_stops_verifying(
    client_for, make_user, company, other_company
):
    from alerts.delivery import sign

    channel, old = webhook_channel(company, "https://hooks.example.com/x")
    reader = client_for(make_user(company, Role.READ_ONLY))
    assert reader.post(f"/alerts/channels/{channel.pk}/new-secret/").status_code == 403
    outsider = client_for(make_user(other_company, Role.ADMINISTRATOR))
    assert outsider.post(f"/alerts/channels/{channel.pk}/new-secret/").status_code == 404
    channel.refresh_from_db()
    assert channel.get_secret() == old

    admin = client_for(make_user(company, Role.ADMINISTRATOR))
    page = admin.post(f"/alerts/channels/{channel.pk}/new-secret/").content.decode()
    channel.refresh_from_db()
    new = channel.get_secret()
    assert new != old and f'value="{new}"' in page and "has a new signing secret" in page
    assert sign(old, "1700000000", b"{}") != sign(new, "1700000000", b"{}")
    assert new not in admin.get("/alerts/rules/").content.decode()
