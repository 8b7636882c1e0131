"""Queueing, stopping, retrying and reaping flow runs (the database row is the source of truth)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from flows import execution, signals
from flows import metrics as flow_metrics
from flows.models import (
    FlowRun,
    FlowRunAnswer,
    FlowRunShape,
    FlowSchedule,
    ProcessFlow,
    RunStatus,
    RunTrigger,
    Shape,
    ShapeStatus,
    worker_process,
)

logger = logging.getLogger(__name__)

WORKER_LOST = "Worker lost: the worker running this flow stopped answering (its lease expired)."
# A parked run still waiting this long after its park ended is handed to the queue again.
PARK_GRACE = timedelta(seconds=30)


def worker_lost_reason(attempts: int, lost_at: datetime, page: int | None) -> str:
    """Why a run failed after its last attempt's worker was lost too."""
    where = f" Retry resumes it from page {page}." if page else ""
    return (
        f"Worker lost on each of {attempts} attempt{'s' if attempts != 1 else ''} (FLOW_RUN_MAX_ATTEMPTS): the last "
        f"worker running this flow stopped answering at {lost_at:%H:%M:%S} UTC (its lease expired).{where}"
    )
# A run still queued this long after its task was handed to the queue is handed again
# (the queue may have lost it: Redis flushed, queue file removed, enqueue failed).
REQUEUE_AFTER = timedelta(minutes=5)


def enqueue(run: FlowRun) -> None:
    """Hand the run to a worker once the transaction that created it has committed.

    A failed hand-over (queue unreachable) is logged, not raised: the run row
    stays queued and the scheduler tick hands it over again (requeue_stale).
    """
    transaction.on_commit(lambda: execution.hand_over(run.pk), robust=True)


def company_saved(sender, instance, created: bool, **kwargs) -> None:
    """post_save of a Company: once committed, its queued runs follow its (maybe new) maximum of concurrent runs."""
    if not created and not kwargs.get("raw"):
        company_id = instance.pk
        transaction.on_commit(lambda: execution.company_changed(company_id), robust=True)


def tasks_in_queue() -> int | None:
    """Tasks waiting in the queue, due or scheduled (None when the queue cannot say: unreachable)."""
    from huey.contrib.djhuey import HUEY

    try:
        return HUEY.pending_count() + HUEY.scheduled_count()
    except Exception:
        logger.warning("Could not count the tasks in the queue.", exc_info=True)
        return None


def requeue_stale(now: datetime | None = None) -> int:
    """Hand queued runs whose task seems lost to the queue again (a duplicate is harmless: runs are claimed once).

    Every queued or parked run stands for one task in the queue. A run still
    queued 5 minutes after its hand-over may just be in a backlog, its task
    behind thousands of others: handing it again every 5 minutes (and from
    every worker's watcher) would grow the queue with the backlog. So only the
    queue's shortfall is handed again: as many runs as there are more queued
    and parked runs than tasks in the queue, those handed over longest ago
    first (a deferred run is handed again each time it is put back, so a run
    whose task ended has the oldest hand-over). When the queue cannot be
    counted, every stale run is handed again.
    """
    now = now or timezone.now()
    stale = FlowRun.objects.filter(
        Q(status=RunStatus.QUEUED)
        & (Q(enqueued_at__lt=now - REQUEUE_AFTER) | Q(enqueued_at__isnull=True, queued_at__lt=now - REQUEUE_AFTER))
        | Q(status=RunStatus.WAITING, parked_until__lt=now - PARK_GRACE, enqueued_at__lt=now - PARK_GRACE)
    ).order_by(F("enqueued_at").asc(nulls_first=True), "queued_at", "pk")
    if not stale.exists():
        return 0
    present = tasks_in_queue()
    if present is not None:
        shortfall = FlowRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.WAITING]).count() - present
        if shortfall <= 0:
            return 0
        stale = stale[:shortfall]
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
    from_checkpoint: bool = False,
    test_shape: Shape | None = None,
) -> FlowRun:
    """A new queued run. A retry from the checkpoint takes over the original's checkpoint and idempotency keys."""
    now = now or timezone.now()
    resume = from_checkpoint and retry_of is not None and bool(retry_of.checkpoint)
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
            from_checkpoint=resume,
            origin_run_id=retry_of.idempotency_origin if resume else None,
            checkpoint=retry_of.checkpoint if resume else {},
            shapes_fingerprint=retry_of.shapes_fingerprint if resume else "",
            test_shape=test_shape,
        )
        if resume:  # the answers kept for the page in progress go with the checkpoint
            FlowRunAnswer.objects.filter(run=retry_of).update(run=run)
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
    # A test step is not in the way of a real run (it sends nothing).
    return FlowRun.objects.real().filter(flow_id=flow_pk).active().order_by("queued_at", "id").first()


def run_now(flow: ProcessFlow, user=None) -> Queued:
    """A manual run, unless the flow already has one queued or running (then that one)."""
    with transaction.atomic():
        pending = _lock_flow(flow.pk)
        if pending is not None:
            return Queued(pending, existing="pending")
        return Queued(queue_run(flow, RunTrigger.MANUAL, user=user))


def queue_test_step(shape: Shape, user=None) -> Queued:
    """A test step: the flow run up to `shape` on one page of real data, sending nothing (trigger "test").

    While a test of the same shape is still queued or running, that one is returned (a second click
    does not queue another).
    """
    with transaction.atomic():
        ProcessFlow.objects.select_for_update().filter(pk=shape.flow_id).first()
        pending = FlowRun.objects.filter(flow_id=shape.flow_id, test_shape=shape).active().order_by("id").first()
        if pending is not None:
            return Queued(pending, existing="pending")
        return Queued(queue_run(shape.flow, RunTrigger.TEST, user=user, test_shape=shape))


def retry_run(run: FlowRun, user=None, *, from_checkpoint: bool = True) -> FlowRun | None:
    """The run's retry (see request_retry); None when the run cannot be retried."""
    queued = request_retry(run, user, from_checkpoint=from_checkpoint)
    return queued.run if queued else None


def request_retry(run: FlowRun, user=None, *, from_checkpoint: bool = True) -> Queued | None:
    """A new run of the same flow with the original's reference time; None when the run cannot be retried.

    From the checkpoint (the default) it resumes where the run stopped, with the
    run's idempotency keys; otherwise it runs again from the first page, as a
    new delivery (new keys). A run is retried once: retrying it again leads to
    its retry. While the flow has a run queued or running, no retry is queued
    either (that run is returned).
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
        run.refresh_from_db(fields=["checkpoint", "shapes_fingerprint", "origin_run_id"])
        return Queued(queue_run(run.flow, RunTrigger.RETRY, user=user, retry_of=run, from_checkpoint=from_checkpoint))


def concluded_without_worker(run_pk: int, status: str) -> None:
    """This process ended the run in its worker's stead (a reaper) or before a worker took it up (a stop): once
    that commits, tell the apps above (signals.run_concluded) and count the end in the runs' histograms."""
    signals.announce_concluded(run_pk, status)
    transaction.on_commit(lambda: flow_metrics.observe_ended_without_worker(run_pk, status), robust=True)


def request_stop(run: FlowRun) -> str | None:
    """Stop a queued or parked run at once, or ask a running one to stop before its next request.

    Returns the new state ("stopped", "stopping") or None when the run already ended.
    """
    now = timezone.now()
    with transaction.atomic():  # the run and its shapes in one commit
        current = FlowRun.objects.filter(pk=run.pk).values_list("status", "started_at").first()
        reason = "Stopped before it started." if current and current[1] is None else "Stopped by a user."
        if FlowRun.objects.filter(pk=run.pk, status__in=(RunStatus.QUEUED, RunStatus.WAITING)).update(
            status=RunStatus.STOPPED, stop_requested=True, finished_at=now, failure_reason=reason,
            parked_until=None, lease_owner="", lease_expires_at=None,
        ):
            FlowRunShape.objects.filter(run_id=run.pk, status=ShapeStatus.RUNNING).update(
                status=ShapeStatus.STOPPED, finished_at=now
            )
            concluded_without_worker(run.pk, RunStatus.STOPPED)
            return "stopped"
    if FlowRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(stop_requested=True):
        return "stopping"
    return None


def reap_expired_leases(now: datetime | None = None) -> int:
    """Resume running runs whose worker stopped renewing the lease (killed, crashed, host gone).

    Such a run is queued again as its next attempt and any worker resumes it
    from its checkpoint; once FLOW_RUN_MAX_ATTEMPTS attempts have lost their
    worker, it fails saying so. The run and its shapes change in one commit,
    conditional on the same owner and an expired lease, so a worker that
    renewed meanwhile keeps its run and its shapes alike.
    """
    now = now or timezone.now()
    lost = list(
        FlowRun.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).values_list(
            "pk", "lease_owner", "lease_expires_at", "attempt", "attempts", "checkpoint", "stretch_started_at"
        )
    )
    resumed = failed = 0
    for pk, owner, expired_at, attempt, attempts, checkpoint, stretch_started_at in lost:
        attempts = [dict(entry) for entry in attempts or [] if isinstance(entry, dict)]
        if attempts and not attempts[-1].get("resumed_at") and stretch_started_at:
            # That attempt's worker was lost before its first commit: it began when it claimed the run.
            attempts[-1]["resumed_at"] = stretch_started_at.isoformat()
        lost_at = expired_at - execution.lease_duration()  # its last renewal
        page = FlowRun.page_to_resume(checkpoint)
        lost_run = FlowRun.objects.filter(pk=pk, status=RunStatus.RUNNING, lease_owner=owner, lease_expires_at__lt=now)
        with transaction.atomic():
            if attempt < settings.FLOW_RUN_MAX_ATTEMPTS:
                entry = {"number": attempt + 1, "cause": "worker lost", "lost_at": lost_at.isoformat(),
                         "resumed_at": None, "from_page": page, "lost_worker": worker_process(owner)}
                if lost_run.update(status=RunStatus.QUEUED, attempt=attempt + 1, attempts=[*attempts, entry],
                                   lease_owner="", lease_expires_at=None, enqueued_at=now, activity=""):
                    resumed += 1
                    transaction.on_commit(lambda pk=pk: execution.hand_over(pk), robust=True)
                continue
            reason = worker_lost_reason(attempt, lost_at, page)
            if lost_run.update(status=RunStatus.FAILED, finished_at=now, failure_reason=reason, lease_expires_at=None,
                               attempts=attempts):
                failed += 1
                concluded_without_worker(pk, RunStatus.FAILED)
                transaction.on_commit(lambda pk=pk: execution.hand_over_next_of(pk), robust=True)
                FlowRunShape.objects.filter(run_id=pk, status=ShapeStatus.RUNNING).update(
                    status=ShapeStatus.FAILED, finished_at=now
                )
    if resumed:
        logger.warning("%d flow run(s) lost their worker and were queued to resume from their checkpoint.", resumed)
    if failed:
        logger.warning("%d flow run(s) failed: worker lost on their last attempt.", failed)
    return resumed + failed


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
        if (run.stretch_started_at or run.started_at) + company.run_duration_limit > now:
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
                concluded_without_worker(run.pk, RunStatus.FAILED)
                transaction.on_commit(lambda company_id=run.company_id: execution.hand_over_next(company_id), robust=True)
        reaped += failed
    if reaped:
        logger.warning("%d flow run(s) failed: past their maximum run duration.", reaped)
    return reaped
