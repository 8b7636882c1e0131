"""From an event (a run concluded, credentials re-checked) to alerts: the streak rules.

Runs on the task workers only (alerts.tasks). For every enabled rule of the
company that the event concerns, the rule's streak for that flow (or
instance) is locked and moved on: a bad event counts, and the count reaching
the rule's streak length opens ONE alert; a good event ends the streak, with
one "recovered" message if it had alerted. A flow failing 100 times in a row
therefore sends one alert, then one "recovered". Test runs never alert; a
stopped run neither fails nor recovers a flow. Each event is counted once per
rule (`AlertStreak.last_event`), so a task that runs twice changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.utils import timezone

from alerts import messages
from alerts.models import (
    Alert,
    AlertEvent,
    AlertKind,
    AlertRule,
    AlertStreak,
    Delivery,
    DeliveryStatus,
)
from flows.models import FlowRun, RunStatus, RunTrigger
from instances.models import Instance

logger = logging.getLogger(__name__)


@dataclass
class Step:
    """One event as a rule sees it: bad (counts towards an alert) or good (ends a streak)."""

    bad: bool
    key: int  # ordering of events: an event not newer than the last counted one is ignored
    flow_id: int | None = None
    instance_id: int | None = None
    facts: dict = field(default_factory=dict)


def run_step(rule: AlertRule, run: FlowRun, waited_ms: int) -> Step | None:
    """What the concluded `run` is for `rule`; None when it does not count (a stopped run for failure rules)."""
    if rule.event in (AlertEvent.RUN_FAILED, AlertEvent.FAILURE_STREAK):
        if run.status == RunStatus.FAILED:
            bad = True
        elif run.status in (RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS):
            bad = False
        else:
            return None
    elif rule.event == AlertEvent.LIMIT_WAIT:
        bad = waited_ms > (rule.threshold or 0) * 60_000
    elif rule.event == AlertEvent.RUN_IN_DOUBT:
        bad = bool(run.in_doubt)
    else:
        return None
    return Step(bad=bad, key=run.pk, flow_id=run.flow_id)


def run_concluded(run_pk: int) -> list[Alert]:
    """The alerts (and recovered messages) the concluded run `run_pk` leads to, their deliveries queued."""
    run = FlowRun.objects.select_related("flow", "company").filter(pk=run_pk).first()
    if run is None or run.trigger == RunTrigger.TEST or run.is_active:
        return []
    rules = list(AlertRule.objects.for_company(run.company_id).about_runs())
    if not rules:
        return []
    waited_ms = run.limit_wait_ms()
    alerts = []
    for rule in rules:
        step = run_step(rule, run, waited_ms)
        if step is not None:
            alerts += advance(rule, step, lambda kind, streak, rule=rule: messages.for_run(rule, kind, run, streak, waited_ms))
    return alerts


def credentials_rechecked(instance_pk: int) -> list[Alert]:
    """The alerts the instance's latest re-check leads to (read from the instance: its last check)."""
    instance = Instance.objects.select_related("company", "connector").filter(pk=instance_pk).first()
    if instance is None or instance.last_checked_at is None or instance.last_check_ok is None:
        return []
    rules = list(AlertRule.objects.for_company(instance.company_id).filter(enabled=True, event=AlertEvent.CREDENTIALS_FAILED))
    bad = not instance.last_check_ok or instance.needs_reauth
    step = Step(bad=bad, key=int(instance.last_checked_at.timestamp() * 1_000_000), instance_id=instance.pk)
    alerts = []
    for rule in rules:
        alerts += advance(rule, step, lambda kind, streak, rule=rule: messages.for_instance(rule, kind, instance))
    return alerts


def _locked_streak(rule: AlertRule, step: Step) -> AlertStreak:
    subject = {"flow_id": step.flow_id} if step.flow_id else {"instance_id": step.instance_id}
    streak = AlertStreak.objects.select_for_update().filter(rule=rule, **subject).first()
    if streak is None:
        try:
            with transaction.atomic():
                AlertStreak.objects.create(rule=rule, **subject)
        except IntegrityError:
            pass  # another worker created it meanwhile
        streak = AlertStreak.objects.select_for_update().get(rule=rule, **subject)
    return streak


def advance(rule: AlertRule, step: Step, compose) -> list[Alert]:
    """Move the rule's streak on by `step`; the alert it opens or the recovered message that closes it, if any.

    `compose(kind, streak)` returns an unsaved Alert (subject, text, details) for the message.
    """
    with transaction.atomic():
        streak = _locked_streak(rule, step)
        if step.key <= streak.last_event:
            return []  # counted already (a repeated task), or older than what was counted
        streak.last_event = step.key
        kind = None
        if step.bad:
            streak.count += 1
            if not streak.alerted and streak.count >= rule.streak_length:
                kind = AlertKind.ALERT
        elif streak.alerted:
            kind = AlertKind.RECOVERED
        alert = None
        if kind is not None:
            alert = compose(kind, streak)  # with the streak as it stands (a recovered message says how long it was)
            alert.company_id, alert.rule, alert.event, alert.kind = rule.company_id, rule, rule.event, kind
            alert.save()
            queue_deliveries(alert, rule)
        if step.bad:
            streak.alerted = streak.alerted or kind == AlertKind.ALERT
        else:
            streak.count, streak.alerted = 0, False
        streak.save(update_fields=["count", "alerted", "last_event"])
    return [alert] if alert else []


def queue_deliveries(alert: Alert, rule: AlertRule) -> list[Delivery]:
    """One pending delivery per channel of the rule (alerts.tasks hands them to the queue once committed)."""
    return [
        Delivery.objects.create(
            alert=alert, channel=channel, channel_name=channel.name, channel_kind=channel.kind,
            status=DeliveryStatus.PENDING, next_attempt_at=timezone.now(),
        )
        for channel in rule.channels.all()
    ]
