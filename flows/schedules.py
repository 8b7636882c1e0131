"""Trigger schedules: each kind is a 5-field cron expression in UTC, evaluated by the scheduler tick."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from croniter import CroniterBadDateError, croniter
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
            # February has 29 days only in leap years, so from day 29 on some months are skipped.
            skipped = f" — months without a day {day} are skipped" if day >= 29 else ""
            return f"monthly on day {day} at {hour:02d}:{minute:02d} UTC{skipped}"
    return f"cron {cron_for(kind, cron=cron)} (UTC)"


# (name, lowest, highest) of the five cron fields; day of the week 7 is Sunday as 0 is.
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of the month", 1, 31), ("month", 1, 12), ("day of the week", 0, 7))
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December")
MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# A schedule with no run in this many years is refused (29 February comes every 4 years; croniter stops here).
NEVER_YEARS = 5


def _range_error(fields: list[str]) -> str | None:
    """The first number outside its field's range (steps such as */15 are not values)."""
    for text, (name, low, high) in zip(fields, CRON_FIELDS, strict=True):
        for part in text.split(","):
            for number in re.findall(r"\d+", part.split("/")[0]):
                if not low <= int(number) <= high:
                    return f"{name} {number} is out of range {low}–{high}."
    return None


def _month_days_error(expression: str) -> str | None:
    """Days of the month that none of the chosen months has (only when the day of the week is *)."""
    minutes, hours, days, months, weekdays = croniter.expand(expression)[0]
    if days == ["*"] or months == ["*"] or weekdays != ["*"]:
        return None
    if min(days) <= max(MONTH_DAYS[m - 1] for m in months):
        return None
    names = [MONTH_NAMES[m - 1] for m in months]
    if len(names) == 1:
        return f"never runs: {names[0]} has no day {min(days)}."
    return f"never runs: none of {', '.join(names)} has a day {min(days)}."


def cron_error(expression: str) -> str | None:
    """Why a 5-field cron expression is not valid or never runs, or None."""
    fields = expression.split()
    if not fields:
        return "Enter a cron expression: minute hour day-of-month month day-of-week (e.g. 30 6 * * 1-5)."
    if len(fields) != 5:
        return "Enter 5 fields: minute hour day-of-month month day-of-week (e.g. 30 6 * * 1-5)."
    expression = " ".join(fields)
    if not croniter.is_valid(expression):
        return _range_error(fields) or "This is not a valid cron expression."
    problem = _month_days_error(expression)
    if problem:
        return problem
    try:
        croniter(expression, datetime.now(UTC), max_years_between_matches=NEVER_YEARS).get_next(datetime)
    except CroniterBadDateError:
        return f"never runs: no run within the next {NEVER_YEARS} years."
    return None


def upcoming(expression: str, now: datetime, count: int = 5) -> list[datetime]:
    """The next `count` times (UTC) the expression fires after `now`: the preview before saving."""
    times = croniter(expression, now.astimezone(UTC), max_years_between_matches=NEVER_YEARS)
    return [times.get_next(datetime) for _ in range(count)]


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
            if FlowRun.objects.real().filter(flow=schedule.flow).active().exists():  # a test step does not count
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
