"""Huey's periodic jobs for the flows: they take primary keys; the rows say what to do.

The run task itself, execute_run, sits beside the code it runs in flows.execution:
flows.queueing hands runs to it and this module imports flows.queueing, so
imports run one way (tasks -> queueing -> execution) with no circle. Huey's
autodiscovery imports this module, which registers every task of the flows.
"""

from __future__ import annotations

from django.utils import timezone
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, lock_task

from flows import queueing, retention, schedules
from flows.execution import execute_run  # noqa: F401 (registered with huey when the worker imports this module)
from instances import rechecks


def tick_now() -> None:
    """Fail runs whose worker was lost or that took too long, hand lost tasks over again, then enqueue due schedules.

    Reaping first frees the flows of lost runs for their schedules.
    """
    now = timezone.now()
    queueing.reap_expired_leases(now)
    queueing.reap_overdue(now)
    queueing.requeue_stale(now)
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
