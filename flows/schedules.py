"""Trigger schedules: each kind is a 5-field cron expression in UTC, evaluated by the scheduler tick."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from croniter import croniter
from django.db import transaction
from django.db.models import F

from flows.models import FlowRun, FlowSchedule, ProcessFlow, RunTrigger, ScheduleKind
from flows.queueing import queue_run

logger = logging.getLogger(__name__)

# Divisors of 60, so "every N minutes" is evenly spaced across the hour boundary.
MINUTE_INTERVALS = (1, 2, 5, 10, 15, 20, 30)


def cron_for(kind: str, *, every: int | None = None, minute: int = 0, hour: int = 0, day: int = 1, cron: str = "") -> str:
    """The cron expression of a schedule kind with its fields (already validated by the form)."""
    match kind:
        case ScheduleKind.MINUTES:
            return "* * * * *" if every == 1 else f"*/{every} * * * *"
        case ScheduleKind.HOURLY:
            return f"{minute} * * * *"
        case ScheduleKind.DAILY:
            return f"{minute} {hour} * * *"
        case ScheduleKind.MONTHLY:
            return f"{minute} {hour} {day} * *"
        case ScheduleKind.ADVANCED:
            return " ".join(cron.split())
    raise ValueError(f"unknown schedule kind {kind!r}")


def describe(kind: str, *, every: int | None = None, minute: int = 0, hour: int = 0, day: int = 1, cron: str = "") -> str:
    match kind:
        case ScheduleKind.MINUTES:
            return "every minute" if every == 1 else f"every {every} minutes"
        case ScheduleKind.HOURLY:
            return f"hourly at minute {minute}"
        case ScheduleKind.DAILY:
            return f"daily at {hour:02d}:{minute:02d} UTC"
        case ScheduleKind.MONTHLY:
            return f"monthly on day {day} at {hour:02d}:{minute:02d} UTC"
    return f"cron {cron_for(kind, cron=cron)} (UTC)"


def cron_error(expression: str) -> str | None:
    """Why a 5-field cron expression is not valid, or None."""
    fields = expression.split()
    if len(fields) != 5:
        return "Enter 5 fields: minute hour day-of-month month day-of-week (e.g. 30 6 * * 1-5)."
    if not croniter.is_valid(" ".join(fields)):
        return "This is not a valid cron expression."
    try:
        next_after(" ".join(fields), datetime.now(UTC))
    except Exception:  # croniter raises several kinds for impossible dates (e.g. 30 February)
        return "This cron expression never runs."
    return None


def next_after(expression: str, moment: datetime) -> datetime:
    """The first time strictly after `moment` the expression fires (UTC)."""
    return croniter(expression, moment.astimezone(UTC)).get_next(datetime)


def create_schedule(flow: ProcessFlow, kind: str, *, now: datetime, **fields) -> FlowSchedule:
    expression = cron_for(kind, **fields)
    return FlowSchedule.objects.create(
        flow=flow,
        kind=kind,
        cron=expression,
        description=describe(kind, **fields),
        next_run_at=next_after(expression, now),
    )


def enqueue_due(now: datetime) -> list[FlowRun]:
    """Enqueue a run for every schedule due at `now` (called by the scheduler tick with the clock).

    Missed due times (workers down) are folded into one run. A schedule of a
    disabled flow just moves on. A schedule whose flow has a run queued or
    running enqueues nothing: the skip is logged and counted on the schedule.
    """
    runs: list[FlowRun] = []
    due = FlowSchedule.objects.filter(next_run_at__lte=now).select_related("flow")
    for schedule in due:
        following = next_after(schedule.cron, now)
        with transaction.atomic():
            # Only one tick claims a due time, even with several schedulers ticking at once.
            claimed = FlowSchedule.objects.filter(pk=schedule.pk, next_run_at=schedule.next_run_at).update(
                next_run_at=following
            )
            if not claimed or not schedule.flow.enabled:
                continue
            # Serialises ticks that handle two schedules of the same flow at once.
            ProcessFlow.objects.select_for_update().filter(pk=schedule.flow_id).first()
            if FlowRun.objects.filter(flow=schedule.flow).active().exists():
                FlowSchedule.objects.filter(pk=schedule.pk).update(
                    skipped_count=F("skipped_count") + 1, last_skipped_at=now
                )
                logger.warning(
                    "Schedule %s (%s) of process flow %s skipped at %s: a run of the flow is still queued or running.",
                    schedule.pk, schedule.description, schedule.flow_id, now.isoformat(),
                )
                continue
            FlowSchedule.objects.filter(pk=schedule.pk).update(last_run_at=now)
            runs.append(queue_run(schedule.flow, RunTrigger.SCHEDULE, now=now, schedule=schedule))
    return runs
