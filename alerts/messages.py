"""What an alert says: subject, plain text (emails) and details (the webhook's JSON), never a secret.

The words come from rows that are redacted when written (a run's failure
reason, an instance's last check message). As a second line of defence every
text is scrubbed again with the secrets of the instances involved (plain,
URL-, Base64- and JSON-escaped forms: instances.redaction via the client).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.template.loader import render_to_string
from django.urls import reverse

from alerts.models import Alert, AlertEvent, AlertKind, AlertRule, AlertStreak
from flows.models import FlowRun, Shape
from instances.crypto import CredentialDecryptError
from instances.models import Instance
from instances.outbound import InstanceClient

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "[Patchworks] "  # before the subject of every alert email
MAX_REASON_CHARS = 1000
# "Recovered: "Orders" succeeded again": what the good event that ends a streak was.
RECOVERED_WORDS = {
    AlertEvent.RUN_FAILED: "succeeded again",
    AlertEvent.FAILURE_STREAK: "succeeded again",
    AlertEvent.LIMIT_WAIT: "ran without waiting long for limits",
    AlertEvent.RUN_IN_DOUBT: "ran with no sends in doubt",
}


def link(name: str, *args) -> str:
    """An absolute link to a dashboard page (DASHBOARD_URL), or its path when no address is configured."""
    return settings.DASHBOARD_URL.rstrip("/") + reverse(name, args=args)


def minutes_text(ms: int) -> str:
    minutes = ms / 60_000
    return f"{minutes:.0f} minute{'s' if round(minutes) != 1 else ''}" if minutes >= 1 else f"{ms / 1000:.0f} seconds"


class Scrubber:
    """Redacts text with the secrets of `instances` (each read once)."""

    def __init__(self, instances: list[Instance]):
        self.clients = []
        for instance in instances:
            try:
                self.clients.append(InstanceClient.for_instance(instance))
            except CredentialDecryptError:
                logger.warning("Instance %s: credentials not decryptable; its secrets are not searched for.", instance.pk)

    def __call__(self, text: str) -> str:
        for client in self.clients:
            text = client.redact(text)
        return text

    def structure(self, value):
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {key: self.structure(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.structure(item) for item in value]
        return value


def _compose(scrub: Scrubber, subject: str, template: str, context: dict, details: dict, **links) -> Alert:
    text = render_to_string(template, context).strip() + "\n"
    return Alert(subject=scrub(subject)[:200], text=scrub(text), details=scrub.structure(details), **links)


def for_run(rule: AlertRule, kind: str, run: FlowRun, streak: AlertStreak, waited_ms: int) -> Alert:
    flow = run.flow
    instances = list(
        Instance.objects.filter(pk__in=Shape.objects.filter(flow=flow).exclude(instance=None).values("instance"))
        .select_related("connector", "auth_method")
    )
    recovered = kind == AlertKind.RECOVERED
    event = rule.event
    if recovered:
        subject = f'Recovered: "{flow.name}" {RECOVERED_WORDS[event]} (run {run.pk})'
    elif event == AlertEvent.FAILURE_STREAK:
        subject = f'"{flow.name}" failed {streak.count} times in a row (run {run.pk})'
    elif event == AlertEvent.LIMIT_WAIT:
        subject = f'"{flow.name}" run {run.pk} waited {minutes_text(waited_ms)} for limits'
    elif event == AlertEvent.RUN_IN_DOUBT:
        count = len(run.in_doubt) if isinstance(run.in_doubt, list) else 0
        subject = f'"{flow.name}" run {run.pk} left {count} send{"s" if count != 1 else ""} in doubt'
    else:
        subject = f'"{flow.name}" run {run.pk} failed'
    in_doubt = [entry for entry in run.in_doubt if isinstance(entry, dict)][:10] if isinstance(run.in_doubt, list) else []
    context = {
        "rule": rule, "kind": kind, "recovered": recovered, "event": event, "events": AlertEvent, "run": run,
        "flow": flow, "streak": streak, "waited": minutes_text(waited_ms), "threshold": rule.threshold,
        "reason": run.failure_reason[:MAX_REASON_CHARS], "in_doubt": in_doubt,
        "run_url": link("flows:run", run.pk), "flow_url": link("flows:detail", flow.pk),
        "alerts_url": link("alerts:list"),
    }
    details = {
        "flow": {"id": flow.pk, "name": flow.name, "url": context["flow_url"]},
        "run": {
            "id": run.pk, "status": run.status, "trigger": run.trigger, "url": context["run_url"],
            "failure_reason": context["reason"], "limit_wait_ms": waited_ms,
            "sends_in_doubt": len(run.in_doubt) if isinstance(run.in_doubt, list) else 0,
            "queued_at": run.queued_at.isoformat(), "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        },
        "failures_in_a_row": streak.count if event in (AlertEvent.RUN_FAILED, AlertEvent.FAILURE_STREAK) else None,
    }
    return _compose(Scrubber(instances), subject, "alerts/message_run.txt", context, details, flow=flow, run=run)


def for_instance(rule: AlertRule, kind: str, instance: Instance) -> Alert:
    recovered = kind == AlertKind.RECOVERED
    if recovered:
        subject = f'Recovered: the credentials of "{instance.name}" pass their check again'
    else:
        subject = f'The credentials of "{instance.name}" failed their re-check'
    url = link("instances:settings", instance.pk)
    context = {
        "instance": instance, "recovered": recovered, "reason": instance.last_check_message,
        "reauth": instance.reauth_reason, "url": url, "alerts_url": link("alerts:list"),
    }
    details = {
        "instance": {
            "id": instance.pk, "name": instance.name, "connector": instance.connector.name, "url": url,
            "check_ok": bool(instance.last_check_ok), "check_message": instance.last_check_message,
            "reauthentication_needed": instance.needs_reauth,
            "checked_at": instance.last_checked_at.isoformat() if instance.last_checked_at else None,
        },
    }
    return _compose(Scrubber([instance]), subject, "alerts/message_instance.txt", context, details, instance=instance)


def payload(alert: Alert) -> dict:
    """The webhook's JSON event."""
    return {
        "id": alert.pk, "type": alert.event, "kind": alert.kind, "created_at": alert.created_at.isoformat(),
        "company": alert.company.name, "subject": alert.subject, "text": alert.text, **alert.details,
    }
