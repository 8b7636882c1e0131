"""Huey tasks: they take primary keys; the rows say what to do (see flows.runner)."""

from __future__ import annotations

from django.utils import timezone
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, lock_task

from flows import retention, runs, schedules
from flows.engine import execute_run  # noqa: F401 (registered with huey when the worker imports this module)
from instances import rechecks


def tick_now() -> None:
    """Fail runs whose worker was lost or that took too long, hand lost tasks over again, then enqueue due schedules.

    Reaping first frees the flows of lost runs for their schedules.
    """
    now = timezone.now()
    runs.reap_expired_leases(now)
    runs.reap_overdue(now)
    runs.requeue_stale(now)
    schedules.enqueue_due(now)


@db_periodic_task(crontab(minute="*"))
def tick() -> None:
    tick_now()


@db_periodic_task(crontab(minute="*/5"))
@lock_task("recheck-credentials")
def recheck_credentials() -> None:
    """Re-check stored credentials whose company's re-check interval has passed.

    Locked: a long round of checks is never run twice at once by two workers.
    """
    rechecks.run_due_checks()


@db_periodic_task(crontab(minute="17"))
@lock_task("clean-up-runs")
def clean_up_runs() -> None:
    """Hourly: delete run logs and clear payload samples past their company's retention."""
    retention.clean_up()
