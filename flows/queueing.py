"""Queueing, stopping, retrying and reaping flow runs (the database row is the source of truth)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from flows import execution
from flows.models import FlowRun, FlowRunShape, FlowSchedule, ProcessFlow, RunStatus, RunTrigger, ShapeStatus

logger = logging.getLogger(__name__)

WORKER_LOST = "Worker lost: the worker running this flow stopped answering (its lease expired)."
# A run still queued this long after its task was handed to the queue is handed again
# (the queue may have lost it: Redis flushed, queue file removed, enqueue failed).
REQUEUE_AFTER = timedelta(minutes=5)


def enqueue(run: FlowRun) -> None:
    """Hand the run to a worker once the transaction that created it has committed.

    A failed hand-over (queue unreachable) is logged, not raised: the run row
    stays queued and the scheduler tick hands it over again (requeue_stale).
    """
    def hand_over() -> None:
        FlowRun.objects.filter(pk=run.pk).update(enqueued_at=timezone.now())
        execution.execute_run(run.pk)

    transaction.on_commit(hand_over, robust=True)


def requeue_stale(now: datetime | None = None) -> int:
    """Hand queued runs whose task seems lost to the queue again (a duplicate is harmless: runs are claimed once)."""
    now = now or timezone.now()
    stale = FlowRun.objects.filter(status=RunStatus.QUEUED).filter(
        Q(enqueued_at__lt=now - REQUEUE_AFTER) | Q(enqueued_at__isnull=True, queued_at__lt=now - REQUEUE_AFTER)
    )
    count = 0
    for run in stale.only("pk"):
        enqueue(run)
        count += 1
    if count:
        logger.warning("%d queued flow run(s) handed to the queue again.", count)
    return count


def queue_run(
    flow: ProcessFlow,
    trigger: str,
    *,
    now: datetime | None = None,
    user=None,
    schedule: FlowSchedule | None = None,
    retry_of: FlowRun | None = None,
) -> FlowRun:
    now = now or timezone.now()
    with transaction.atomic():
        run = FlowRun.objects.create(
            company_id=flow.company_id,
            flow=flow,
            trigger=trigger,
            triggered_by=user if getattr(user, "pk", None) else None,
            schedule=schedule,
            retry_of=retry_of,
            queued_at=now,
            reference_time=retry_of.reference_time if retry_of else now,
        )
        enqueue(run)
    return run


@dataclass(frozen=True)
class Queued:
    """What a click on run now or retry led to: a new run, or the run that was already there.

    `existing` says which run that is when nothing was queued: "pending" (a run of
    the flow is still queued or running) or "retry" (the run was already retried).
    """

    run: FlowRun
    existing: str = ""

    @property
    def created(self) -> bool:
        return not self.existing


def _lock_flow(flow_pk: int) -> FlowRun | None:
    """Lock the flow's row (as the scheduler does) and return its run still queued or running, if any.

    Inside the caller's transaction: a second request for the same flow waits
    here until the first has committed its run, then sees it. (On SQLite every
    transaction starts IMMEDIATE, which serialises writers the same way.)
    """
    ProcessFlow.objects.select_for_update().filter(pk=flow_pk).first()
    return FlowRun.objects.filter(flow_id=flow_pk).active().order_by("queued_at", "id").first()


def run_now(flow: ProcessFlow, user=None) -> Queued:
    """A manual run, unless the flow already has one queued or running (then that one)."""
    with transaction.atomic():
        pending = _lock_flow(flow.pk)
        if pending is not None:
            return Queued(pending, existing="pending")
        return Queued(queue_run(flow, RunTrigger.MANUAL, user=user))


def retry_run(run: FlowRun, user=None) -> FlowRun | None:
    """The run's retry (see request_retry); None when the run cannot be retried."""
    queued = request_retry(run, user)
    return queued.run if queued else None


def request_retry(run: FlowRun, user=None) -> Queued | None:
    """A new run of the same flow with the original's reference time; None when the run cannot be retried.

    A run is retried once: retrying it again leads to its retry. While the flow
    has a run queued or running, no retry is queued either (that run is returned).
    """
    if not run.can_retry:
        return None
    with transaction.atomic():
        pending = _lock_flow(run.flow_id)
        retry = FlowRun.objects.filter(retry_of=run).order_by("id").first()
        if retry is not None:
            return Queued(retry, existing="retry")
        if pending is not None:
            return Queued(pending, existing="pending")
        return Queued(queue_run(run.flow, RunTrigger.RETRY, user=user, retry_of=run))


def request_stop(run: FlowRun) -> str | None:
    """Stop a queued run at once, or ask a running one to stop before its next request.

    Returns the new state ("stopped", "stopping") or None when the run already ended.
    """
    now = timezone.now()
    if FlowRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.STOPPED, stop_requested=True, finished_at=now, failure_reason="Stopped before it started."
    ):
        return "stopped"
    if FlowRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(stop_requested=True):
        return "stopping"
    return None


def reap_expired_leases(now: datetime | None = None) -> int:
    """Fail running runs whose worker stopped renewing the lease (killed, crashed, host gone)."""
    now = now or timezone.now()
    lost = list(
        FlowRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).values_list("pk", "lease_owner")
    )
    reaped = 0
    for pk, owner in lost:
        # The run and its shapes change in one commit, so no page ever shows a failed run with
        # a shape still running; conditional on the same owner and an expired lease, so a
        # worker that renewed meanwhile keeps its run and its shapes alike.
        with transaction.atomic():
            failed = FlowRun.objects.filter(
                pk=pk, status=RunStatus.RUNNING, lease_owner=owner, lease_expires_at__lt=now
            ).update(status=RunStatus.FAILED, finished_at=now, failure_reason=WORKER_LOST)
            if failed:
                FlowRunShape.objects.filter(run_id=pk, status=ShapeStatus.RUNNING).update(
                    status=ShapeStatus.FAILED, finished_at=now
                )
        reaped += failed
    if reaped:
        logger.warning("%d flow run(s) failed: worker lost.", reaped)
    return reaped


def reap_overdue(now: datetime | None = None) -> int:
    """Fail running runs past their company's maximum run duration, even when their worker is stuck.

    The worker stops such a run itself at its next checkpoint; this catches a
    worker that never gets there (its heartbeat keeps the lease alive). The
    update is conditional on the run still running with the same owner, so a
    worker that finished meanwhile keeps its result; one that is still going
    loses its lease and writes nothing more.
    """
    now = now or timezone.now()
    running = FlowRun.objects.filter(status=RunStatus.RUNNING, started_at__isnull=False).select_related("company")
    reaped = 0
    for run in running:
        company = run.company
        if run.started_at + company.run_duration_limit > now:
            continue
        reason = execution.overdue_reason(company)
        with transaction.atomic():  # the run and its shapes in one commit
            failed = FlowRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, lease_owner=run.lease_owner).update(
                status=RunStatus.FAILED, finished_at=now, failure_reason=reason, lease_expires_at=None
            )
            if failed:
                FlowRunShape.objects.filter(run_id=run.pk, status=ShapeStatus.RUNNING).update(
                    status=ShapeStatus.STOPPED, finished_at=now
                )
        reaped += failed
    if reaped:
        logger.warning("%d flow run(s) failed: past their maximum run duration.", reaped)
    return reaped
