"""Periodic jobs run once per period, however many task workers on however many hosts enqueue them.

Every huey consumer whose scheduler is on (the default of `manage.py run_huey`)
enqueues each periodic task whose crontab matches, at its own second of the
minute: three consumers enqueue the minute tick three times a minute. The first
execution in a period inserts its (job, period start) row and runs the job; the
others hit the unique constraint and return. The claims live in the database
rather than Redis: every host shares it, with or without Redis, and a test's
claims go with its transaction.

The period is taken from the execution time: a tick delayed past the minute
counts for the minute it runs in, so a job runs at most once per period and, as
long as some worker is free, at least once per period its crontab matches.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from flows.models import PeriodicJobRun

logger = logging.getLogger(__name__)

# Claims older than this (and older than two of their periods) are deleted by the job's next run.
KEEP_CLAIMS = timedelta(days=2)


def period_start(now: datetime, seconds: float) -> datetime:
    """The start of the period of `seconds` that `now` falls in, periods counted from the Unix epoch (UTC)."""
    stamp = now.timestamp()
    return datetime.fromtimestamp(stamp - stamp % seconds, tz=UTC)


def claim(job: str, seconds: float, now: datetime | None = None) -> datetime | None:
    """Claim the current period for `job`: its start if this caller is the first, None if another one was."""
    now = now or timezone.now()
    start = period_start(now, seconds)
    try:
        # A savepoint: a refused insert must not break a surrounding transaction.
        with transaction.atomic():
            PeriodicJobRun.objects.create(job=job, period_start=start, started_at=now, worker=_worker_name())
    except IntegrityError:
        return None
    PeriodicJobRun.objects.filter(job=job, period_start__lt=now - max(KEEP_CLAIMS, timedelta(seconds=2 * seconds))).delete()
    return start


def once_per_period(seconds: float, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the decorated job only in the first of its executions within each period of `seconds`."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        job = name or func.__name__

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            start = claim(job, seconds)
            if start is None:
                logger.debug("Periodic job %s already ran in this period: skipped.", job)
                return None
            logger.info("Periodic job %s runs for the period from %s.", job, start.isoformat())
            return func(*args, **kwargs)

        return guarded

    return decorate


def _worker_name() -> str:
    return f"{settings.HOST_NAME}:{os.getpid()}"[:200]
