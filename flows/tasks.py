"""Huey's periodic jobs for the flows: they take primary keys; the rows say what to do.

The run task itself, execute_run, sits beside the code it runs in flows.execution:
flows.queueing hands runs to it and this module imports flows.queueing, so
imports run one way (tasks -> queueing -> execution) with no circle. Huey's
autodiscovery imports this module, which registers every task of the flows.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, lock_task, on_startup

from flows import queueing, retention, schedules
from flows.execution import execute_run  # noqa: F401 (registered with huey when the worker imports this module)
from flows.periodic import once_per_period
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
@once_per_period(60)
def tick() -> None:
    tick_now()


logger = logging.getLogger(__name__)
_watching = threading.Lock()


def watch_once() -> None:
    """Resume runs whose worker was lost; hand parked runs whose task seems lost to the queue again."""
    now = timezone.now()
    queueing.reap_expired_leases(now)
    queueing.requeue_stale(now)


def watch(stop: threading.Event | None = None) -> None:
    """Every FLOW_WATCH_INTERVAL_SECONDS, watch_once: a lost worker's run resumes within its lease and this.

    The minute tick is too coarse for that; every worker process runs this
    (each reap is conditional on the lease it saw, so two processes never
    resume one run twice).
    """
    stop = stop or threading.Event()
    while not stop.wait(settings.FLOW_WATCH_INTERVAL_SECONDS):
        close_old_connections()
        try:
            watch_once()
        except DatabaseError:
            logger.warning("Could not look for lost flow runs.", exc_info=True)
            connection.close()


@on_startup()
def start_watching() -> None:
    """Start the watcher once per worker process (huey calls this in each of its worker threads)."""
    if _watching.acquire(blocking=False):
        threading.Thread(target=watch, name="flow-run-watch", daemon=True).start()


@db_periodic_task(crontab(minute="*/5"))
@once_per_period(5 * 60)
@lock_task("recheck-credentials")
def recheck_credentials() -> None:
    """Re-check stored credentials whose company's re-check interval has passed.

    Locked: a long round of checks is never run twice at once by two workers.
    """
    rechecks.run_due_checks()


@db_periodic_task(crontab(minute="17"))
@once_per_period(60 * 60)
@lock_task("clean-up-runs")
def clean_up_runs() -> None:
    """Hourly: delete run logs and clear payload samples past their company's retention."""
    retention.clean_up()
