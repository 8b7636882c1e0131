"""Alerts: a company's notification rules, their channels, the alerts sent and every delivery attempt.

A rule says which event alerts (a run failed, a flow failed N times in a row,
a credential re-check failed, a run waited long for limits, a run left sends
in doubt) and to which channels (email addresses, webhooks). An `AlertStreak`
per rule and flow (or instance) makes it one alert per streak of bad events
and one "recovered" message when the next good one comes. Each alert has one
`Delivery` per channel, sent by the task workers with retries, and one
`DeliveryAttempt` per try.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from flows.models import FlowRun, ProcessFlow
from instances import crypto
from instances.models import Instance
from patchworks_site.models import Company


class AlertEvent(models.TextChoices):
    RUN_FAILED = "run_failed", "A run failed"
    FAILURE_STREAK = "failure_streak", "A flow failed several times in a row"
    CREDENTIALS_FAILED = "credentials_failed", "A credential re-check failed (re-authentication needed)"
    LIMIT_WAIT = "limit_wait", "A run waited long for rate limits and connection pools"
    RUN_IN_DOUBT = "run_in_doubt", "A run left sends in doubt"


# Events about a flow's runs (the rest are about an instance's credentials).
RUN_EVENTS = (AlertEvent.RUN_FAILED, AlertEvent.FAILURE_STREAK, AlertEvent.LIMIT_WAIT, AlertEvent.RUN_IN_DOUBT)


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"


class AlertChannelQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> AlertChannelQuerySet:
        return self.filter(company=company)


class AlertChannel(models.Model):
    """Where alerts go: email addresses, or a webhook URL with its own signing secret (write-only)."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="alert_channels")
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    name = models.CharField(max_length=80)
    # Email: the addresses, one per line.
    recipients = models.TextField(blank=True)
    # Webhook: where the signed POST goes, and its secret (encrypted like instance credentials).
    url = models.URLField(max_length=500, blank=True)
    secret_ciphertext = models.TextField(blank=True, editable=False)
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AlertChannelQuerySet.as_manager()

    class Meta:
        ordering = ["kind", "name", "id"]
        constraints = [models.UniqueConstraint(fields=["company", "name"], name="alert_channel_name_per_company")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display().lower()})"

    @property
    def _aad(self) -> str:
        return f"alert-webhook:{self.company_id}:{self.uid}"

    @property
    def recipient_list(self) -> list[str]:
        return [line.strip() for line in self.recipients.splitlines() if line.strip()]

    @property
    def target_text(self) -> str:
        """What the channel sends to, as the rules page shows it."""
        return ", ".join(self.recipient_list) if self.kind == ChannelKind.EMAIL else self.url

    def new_secret(self) -> str:
        """Generate, store (encrypted) and return a new signing secret; it is shown to the user this once."""
        secret = "whsec_" + secrets.token_urlsafe(32)
        self.secret_ciphertext = crypto.encrypt({"secret": secret}, self._aad)
        return secret

    def get_secret(self) -> str:
        return crypto.decrypt(self.secret_ciphertext, self._aad).get("secret", "")

    @property
    def secret_hint(self) -> str:
        """The last 4 characters of the secret (all that is ever shown after creation)."""
        return self.get_secret()[-4:]


class AlertRuleQuerySet(models.QuerySet):
    def for_company(self, company: Company | int) -> AlertRuleQuerySet:
        return self.filter(company=company)

    def about_runs(self) -> AlertRuleQuerySet:
        """The enabled rules about runs (a run's end may set them off)."""
        return self.filter(enabled=True, event__in=RUN_EVENTS)


class AlertRule(models.Model):
    """When to alert and where to. `threshold`: N runs in a row (failure streak) or M minutes (limit wait)."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="alert_rules")
    event = models.CharField(max_length=30, choices=AlertEvent.choices)
    threshold = models.PositiveIntegerField(null=True, blank=True)
    channels = models.ManyToManyField(AlertChannel, related_name="rules")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AlertRuleQuerySet.as_manager()

    class Meta:
        ordering = ["event", "threshold", "id"]

    def __str__(self) -> str:
        return self.description

    @property
    def description(self) -> str:
        if self.event == AlertEvent.FAILURE_STREAK:
            return f"A flow failed {self.threshold} times in a row"
        if self.event == AlertEvent.LIMIT_WAIT:
            return f"A run waited longer than {self.threshold} minute{'s' if self.threshold != 1 else ''} for limits"
        return self.get_event_display()

    @property
    def streak_length(self) -> int:
        """How many bad events in a row open an alert."""
        return (self.threshold or 1) if self.event == AlertEvent.FAILURE_STREAK else 1


class AlertKind(models.TextChoices):
    ALERT = "alert", "alert"
    RECOVERED = "recovered", "recovered"


class AlertQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> AlertQuerySet:
        return self.filter(company=company)

    def delete_old(self, now=None) -> int:
        """Delete alerts (with their deliveries and attempts) older than ALERT_RETENTION_DAYS; how many went."""
        cutoff = (now or timezone.now()) - timedelta(days=settings.ALERT_RETENTION_DAYS)
        return self.filter(created_at__lt=cutoff).delete()[1].get("alerts.Alert", 0)


class Alert(models.Model):
    """One message: an alert, or the "recovered" that closes its streak. Its text holds no secret."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="alerts")
    rule = models.ForeignKey(AlertRule, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts")
    event = models.CharField(max_length=30, choices=AlertEvent.choices)
    kind = models.CharField(max_length=10, choices=AlertKind.choices, default=AlertKind.ALERT)
    flow = models.ForeignKey(ProcessFlow, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    run = models.ForeignKey(FlowRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    instance = models.ForeignKey(Instance, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    subject = models.CharField(max_length=200)
    text = models.TextField()
    # What the webhook's JSON carries beside the text (names, ids, statuses, links), redacted like the text.
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["company", "-created_at"])]

    def __str__(self) -> str:
        return self.subject


class AlertStreak(models.Model):
    """Where a rule stands for one flow (or instance): bad events in a row, and whether it alerted."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="streaks")
    flow = models.ForeignKey(ProcessFlow, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    count = models.PositiveIntegerField(default=0)
    alerted = models.BooleanField(default=False)
    # The newest event counted (a run's pk, a re-check's time in microseconds): each is counted once.
    last_event = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rule", "flow"], condition=models.Q(flow__isnull=False), name="alert_streak_per_flow"),
            models.UniqueConstraint(
                fields=["rule", "instance"], condition=models.Q(instance__isnull=False), name="alert_streak_per_instance"
            ),
        ]


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "sending"
    DELIVERED = "delivered", "delivered"
    FAILED = "failed", "failed"


class DeliveryQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> DeliveryQuerySet:
        return self.filter(alert__company=company)

    def counts(self) -> dict[str, int]:
        """Deliveries by status ({"pending": 0, "delivered": 12, "failed": 1}): what metrics count."""
        found = dict(self.order_by().values_list("status").annotate(n=models.Count("pk")))
        return {status: found.get(status, 0) for status in DeliveryStatus.values}


class Delivery(models.Model):
    """One alert sent to one channel; retried with backoff by the task workers until delivered or given up."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(AlertChannel, on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries")
    channel_name = models.CharField(max_length=120)
    channel_kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When the next attempt is due (pending only); a pending delivery long past it is handed to the queue again.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["channel_kind", "channel_name", "id"]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.alert} → {self.channel_name}"

    @property
    def can_send_again(self) -> bool:
        return self.status == DeliveryStatus.FAILED and self.channel_id is not None

    def retry_delay(self) -> timedelta:
        """How long after attempt `self.attempts` the next one goes: doubling from ALERT_RETRY_DELAY_SECONDS."""
        return timedelta(seconds=settings.ALERT_RETRY_DELAY_SECONDS * 2 ** max(self.attempts - 1, 0))


class DeliveryAttempt(models.Model):
    """One try at a delivery: the HTTP status (webhooks), the error, how long it took."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    ok = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["number", "id"]

    def __str__(self) -> str:
        return f"{self.delivery}: attempt {self.number}"
