"""Sending one delivery (an alert to one channel), on a task worker, with retries and backoff.

Each attempt is claimed first (`attempts` moves from n-1 to n in one
conditional UPDATE), so a task handed over twice sends once. The attempt is
recorded whatever happens: the HTTP status (webhooks), the error, how long it
took. A failed attempt that may succeed later (a timeout, a 5xx, a mail
server that is down) is tried again after ALERT_RETRY_DELAY_SECONDS, doubling
each time, until ALERT_DELIVERY_ATTEMPTS; one that cannot (a 4xx, an address
the SSRF guard refuses, a removed channel) fails at once. Nothing here ever
touches the run or instance the alert is about.

Webhooks are signed: `X-Patchworks-Timestamp` is the Unix time of the attempt
and `X-Patchworks-Signature` is `sha256=` + hex HMAC-SHA256, keyed with the
webhook's secret, of `timestamp + "." + body` (the exact bytes sent).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import timezone
from huey.contrib.djhuey import db_task

from alerts import messages
from alerts.models import ChannelKind, Delivery, DeliveryAttempt, DeliveryStatus
from instances.crypto import CredentialDecryptError
from instances.outbound import send_request
from patchworks_site import metrics

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Patchworks-Signature"
TIMESTAMP_HEADER = "X-Patchworks-Timestamp"
# A pending delivery whose next attempt is this late is handed to the queue again (its task was lost).
STALE_AFTER = timedelta(minutes=2)


@dataclass
class Result:
    ok: bool
    error: str = ""
    status_code: int | None = None
    retryable: bool = True


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Patchworks-Signature value: sha256=<hex HMAC-SHA256 of timestamp + "." + body>."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_body(delivery: Delivery) -> bytes:
    return json.dumps(messages.payload(delivery.alert), separators=(",", ":"), sort_keys=True).encode()


def send_webhook(delivery: Delivery) -> Result:
    channel = delivery.channel
    try:
        secret = channel.get_secret()
    except CredentialDecryptError as exc:
        return Result(False, f"The webhook's secret could not be decrypted: {exc}.", retryable=False)
    body = webhook_body(delivery)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "X-Patchworks-Event": delivery.alert.event,
        "X-Patchworks-Delivery": str(delivery.pk),
    }
    exchange = send_request(
        "POST", channel.url, headers=headers, data=body.decode(), timeout=settings.ALERT_WEBHOOK_TIMEOUT,
        allow_cross_origin_redirects=False,
    )
    status = exchange.response_status
    if exchange.error.startswith("Blocked: the API redirected to"):
        # The client words it for endpoints (their "follow redirects" setting); a webhook never follows one.
        target = exchange.error.removeprefix("Blocked: the API redirected to ").split(",", 1)[0]
        return Result(False, f"Blocked: the webhook redirected to {target}; alerts do not follow redirects to other sites.",
                      status, retryable=False)
    if exchange.error:
        # A refused address is refused again; a host name that did not resolve may resolve later.
        refused = exchange.error.startswith("Blocked") and "could not be resolved" not in exchange.error
        return Result(False, exchange.error, status, retryable=not refused)
    if status is not None and 200 <= status < 300:
        return Result(True, status_code=status)
    return Result(False, f"The webhook answered {exchange.status_text()}.", status,
                  retryable=status is None or status >= 500 or status in (408, 429))


def send_email(delivery: Delivery) -> Result:
    alert = delivery.alert
    recipients = delivery.channel.recipient_list
    if not recipients:
        return Result(False, "The channel has no email addresses.", retryable=False)
    message = EmailMessage(subject=messages.SUBJECT_PREFIX + alert.subject, body=alert.text, to=recipients)
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(sorted(exc.recipients))
        return Result(False, f"The mail server refused the recipients: {refused}.", retryable=False)
    except smtplib.SMTPResponseException as exc:
        # 4xx: try again later; 5xx: the server will not take it.
        return Result(False, f"The mail server answered {exc.smtp_code}: {_text(exc.smtp_error)}",
                      retryable=exc.smtp_code < 500)
    except (smtplib.SMTPException, OSError) as exc:
        return Result(False, f"The mail server could not be reached ({exc.__class__.__name__}: {_text(str(exc))}).")
    return Result(True)


def _text(value: bytes | str) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())[:300]


@db_task()
def deliver(delivery_pk: int, number: int) -> None:
    """The huey task making attempt `number` of a delivery (alerts.tasks imports it, so workers register it)."""
    attempt(delivery_pk, number)


def attempt(delivery_pk: int, number: int) -> Delivery | None:
    """Make attempt `number` of the delivery; None when it is not due (sent, given up, or taken by another task)."""
    now = timezone.now()
    claimed = Delivery.objects.filter(pk=delivery_pk, status=DeliveryStatus.PENDING, attempts=number - 1).update(
        attempts=number, next_attempt_at=now + STALE_AFTER + timedelta(seconds=settings.ALERT_WEBHOOK_TIMEOUT),
    )
    if not claimed:
        return None
    delivery = Delivery.objects.select_related("alert__company", "channel").get(pk=delivery_pk)
    started = time.monotonic()
    if delivery.channel is None:
        result = Result(False, "The channel was removed.", retryable=False)
    else:
        try:
            result = send_webhook(delivery) if delivery.channel.kind == ChannelKind.WEBHOOK else send_email(delivery)
        except Exception as exc:  # noqa: BLE001 - a delivery that breaks is recorded, never raised into the worker
            logger.exception("Alert delivery %s failed unexpectedly.", delivery_pk)
            result = Result(False, f"An unexpected error stopped the delivery ({exc.__class__.__name__}); it has been logged.")
    duration_ms = int((time.monotonic() - started) * 1000)
    record(delivery, number, now, duration_ms, result)
    return delivery


def record(delivery: Delivery, number: int, started_at, duration_ms: int, result: Result) -> None:
    """Store the attempt and what follows: delivered, failed for good, or the next attempt queued."""
    retry = not result.ok and result.retryable and number < settings.ALERT_DELIVERY_ATTEMPTS
    now = timezone.now()
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery, number=number, started_at=started_at, duration_ms=duration_ms, ok=result.ok,
            status_code=result.status_code, error=result.error[:500],
        )
        if result.ok:
            fields = {"status": DeliveryStatus.DELIVERED, "delivered_at": now, "next_attempt_at": None, "last_error": ""}
        elif retry:
            delay = delivery.retry_delay()
            fields = {"next_attempt_at": now + delay, "last_error": result.error[:500]}
            transaction.on_commit(
                lambda: deliver.schedule(args=(delivery.pk, number + 1), delay=delay.total_seconds()), robust=True
            )
        else:
            fields = {"status": DeliveryStatus.FAILED, "next_attempt_at": None, "last_error": result.error[:500]}
        Delivery.objects.filter(pk=delivery.pk, attempts=number).update(**fields)
    if "status" in fields:  # delivered, or failed for good (an attempt to be retried is neither yet)
        metrics.count_alert("delivered" if result.ok else "failed")
    for name, value in fields.items():
        setattr(delivery, name, value)


def send_again(delivery: Delivery) -> bool:
    """A failed delivery back to pending, its next attempt queued (a user's "send again"); False if not failed."""
    with transaction.atomic():
        updated = Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.FAILED, channel__isnull=False).update(
            status=DeliveryStatus.PENDING, next_attempt_at=timezone.now(), last_error="",
        )
        if updated:
            number = delivery.attempts + 1
            transaction.on_commit(lambda: deliver(delivery.pk, number), robust=True)
    return bool(updated)


def requeue_stale(now=None) -> int:
    """Hand pending deliveries whose task seems lost (their next attempt long overdue) to the queue again."""
    now = now or timezone.now()
    stale = Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lt=now - STALE_AFTER)
    count = 0
    for pk, attempts in stale.values_list("pk", "attempts"):
        if Delivery.objects.filter(pk=pk, status=DeliveryStatus.PENDING, attempts=attempts).update(next_attempt_at=now):
            deliver(pk, attempts + 1)
            count += 1
    if count:
        logger.warning("%d alert deliveries handed to the queue again.", count)
    return count
