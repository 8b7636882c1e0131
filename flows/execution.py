"""Executing one flow run on a worker.

A worker claims the run with one conditional UPDATE (queued -> running), so a
run is never executed twice, however many workers receive its task. While it
runs, the worker holds a lease that a heartbeat thread renews; a worker that is
killed stops renewing it and the scheduler tick fails the run ("worker lost").
Pages stream through the shapes (one module per shape kind in flows.shapes,
see Execution), and every request goes through the one instance client (SSRF
guard, rate limit, connection pool, redaction).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, DataError, connection
from django.utils import timezone
from huey.contrib.djhuey import db_task

from flows.models import FlowRun, FlowRunShape, RunStatus, Shape, ShapeKind, ShapeStatus
from flows.shapes import Context, ShapeFailed, Stage, bounds
from flows.shapes import connection as connection_shape
from flows.shapes import filter as filter_shape
from flows.shapes import map as map_shape
from instances.models import Instance
from instances.outbound import InstanceClient

logger = logging.getLogger(__name__)

class StopRequested(Exception):
    pass


class LeaseLost(Exception):
    """Another party (the reaper) took the run away from this worker: write nothing more."""


class DurationExceeded(Exception):
    """The run has taken longer than its company allows (the message says how long that is)."""


# Failures with a cause that can be named, though no shape raised them on purpose.
NAMED_FAILURES = (DataError, RecursionError, MemoryError)


def overdue_reason(company) -> str:
    """The failure reason of a run of `company` that took longer than it may."""
    reason = f"The run was stopped after {company.run_duration_text}."
    if company.max_run_duration_minutes <= settings.FLOW_RUN_MAX_DURATION_CEILING_MINUTES:
        reason += " An Administrator can change it on the company settings page."
    return reason


def named_failure(exc: BaseException) -> str | None:
    """Why the run stopped, for an exception of NAMED_FAILURES (None for others)."""
    if isinstance(exc, DataError):
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return f"the database refused to store the run's data ({detail}). The run stopped."
    if isinstance(exc, RecursionError):
        return (
            "the data is nested too deeply to process (a record may nest at most "
            f"{settings.FLOW_MAX_RECORD_DEPTH} levels, FLOW_MAX_RECORD_DEPTH). The run stopped."
        )
    if isinstance(exc, MemoryError):
        return (
            "the worker ran out of memory. Pages may hold at most "
            f"{bounds.size_text(settings.FLOW_MAX_PAGE_BYTES)} after a shape (FLOW_MAX_PAGE_BYTES); "
            "a lower bound, or smaller pages from the endpoint, keeps runs within the worker's memory."
        )
    return None


@dataclass
class Outcome:
    status: str
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.FLOW_RUN_LEASE_SECONDS)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{secrets.token_hex(4)}"


def renew_lease(run_pk: int, owner: str) -> bool:
    """Extend the lease; False when the run is no longer this worker's."""
    return bool(
        FlowRun.objects.filter(pk=run_pk, status=RunStatus.RUNNING, lease_owner=owner).update(
            lease_expires_at=timezone.now() + lease_duration()
        )
    )


class Heartbeat(threading.Thread):
    """Renews the lease while a long request is in flight (between requests Execution renews it too)."""

    def __init__(self, run_pk: int, owner: str):
        super().__init__(name=f"flow-run-{run_pk}-heartbeat", daemon=True)
        self.run_pk, self.owner = run_pk, owner
        self.done = threading.Event()

    def run(self) -> None:
        interval = settings.FLOW_RUN_LEASE_SECONDS / 3
        try:
            while not self.done.wait(interval):
                try:
                    renew_lease(self.run_pk, self.owner)
                except DatabaseError:
                    logger.warning("Could not renew the lease of flow run %s.", self.run_pk, exc_info=True)
        finally:
            connection.close()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=1)


def claim(run_pk: int, owner: str) -> bool:
    now = timezone.now()
    return bool(
        FlowRun.objects.filter(pk=run_pk, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, started_at=now, lease_owner=owner, lease_expires_at=now + lease_duration()
        )
    )


@db_task()
def execute_run(run_pk: int) -> None:
    """The huey task that executes one flow run on a worker.

    It lives beside the code it runs, below flows.queueing (which hands runs to it)
    and flows.tasks (the periodic jobs, which import flows.queueing), so imports
    run one way: tasks -> queueing -> execution. flows.tasks imports this module,
    so huey's autodiscovery registers the task.
    """
    execute(run_pk)


def execute(run_pk: int) -> FlowRun | None:
    """Run the flow run `run_pk` if it is still queued; None when another worker has it or it was stopped."""
    owner = worker_name()
    if not claim(run_pk, owner):
        logger.info("Flow run %s is not queued any more; nothing to do.", run_pk)
        return None
    run = FlowRun.objects.select_related("flow", "company").get(pk=run_pk)
    heartbeat = Heartbeat(run_pk, owner)
    heartbeat.start()
    try:
        outcome = Execution(run, owner).run()
    except LeaseLost:
        logger.warning("Flow run %s was taken from this worker (lease expired); its result is dropped.", run_pk)
        return None
    except Exception as exc:
        logger.exception("Flow run %s failed with an unexpected error.", run_pk)
        named = named_failure(exc)
        reason = f"The run: {named}" if named else "An unexpected error stopped the run; it has been logged."
        outcome = Outcome(RunStatus.FAILED, reason)
        FlowRunShape.objects.filter(run_id=run_pk, status=ShapeStatus.RUNNING).update(
            status=ShapeStatus.FAILED, finished_at=timezone.now()
        )
    finally:
        heartbeat.stop()
    FlowRun.objects.filter(pk=run_pk, status=RunStatus.RUNNING, lease_owner=owner).update(
        status=outcome.status,
        failure_reason=outcome.reason,
        warnings=outcome.warnings,
        finished_at=timezone.now(),
        lease_expires_at=None,
    )
    run.refresh_from_db()
    return run


def stages_for(shapes: list[Shape], ctx: Context) -> list[Stage]:
    """One stage per shape; filters and maps learn the instances around them (for their dates)."""
    connections = [(i, s.instance) for i, s in enumerate(shapes) if s.kind == ShapeKind.CONNECTION and s.instance_id]

    def before(position: int):
        return next((inst for i, inst in reversed(connections) if i < position), None)

    def after(position: int):
        return next((inst for i, inst in connections if i > position), None)

    stages: list[Stage] = []
    for position, shape in enumerate(shapes):
        if shape.kind == ShapeKind.FILTER:
            stages.append(filter_shape.Filter(shape, position, ctx, source=before(position)))
        elif shape.kind == ShapeKind.MAP:
            stages.append(map_shape.Map(shape, position, ctx, source=before(position), target=after(position)))
        else:
            stages.append(connection_shape.Connection(shape, position, ctx))
    return stages


def validate(run: FlowRun, stages: list[Stage]) -> list[str]:
    """Why the flow cannot run, found before any request is made; each problem names its shape."""
    if not any(stage.shape.kind == ShapeKind.CONNECTION for stage in stages):
        return ["The flow has no connection shapes."]
    problems = []
    for stage in stages:
        if stage.shape.kind not in ShapeKind.values:
            problems.append(f'{stage.label}: unknown kind of shape "{stage.shape.kind}".')
            continue
        problems += [f"{stage.label}: {problem}" for problem in stage.problems()]
    return problems


def last_success(run: FlowRun):
    """The reference time of the flow's last successful run before this one (None if none)."""
    return (
        FlowRun.objects.filter(flow_id=run.flow_id, status=RunStatus.SUCCESS, reference_time__lte=run.reference_time)
        .exclude(pk=run.pk).order_by("-reference_time").values_list("reference_time", flat=True).first()
    )


def context_for(run: FlowRun, shapes: list[Shape], checkpoint) -> Context:
    """The run's placeholders and one client per instance used.

    The secrets of them all, tokens they obtain during the run included, redact every text (Context.variants).
    """
    success = last_success(run)
    bounds = [
        filter_shape.earliest(shape.config, run.reference_time, success)
        for shape in shapes if shape.kind == ShapeKind.FILTER
    ]
    bounds = [b for b in bounds if b is not None]
    ctx = Context(run=run, reference_time=run.reference_time, last_success=success,
                  since=min(bounds) if bounds else None, checkpoint=checkpoint)
    for shape in shapes:
        if shape.instance_id and shape.instance_id not in ctx.clients:
            ctx.clients[shape.instance_id] = InstanceClient.for_instance(shape.instance)
    return ctx


class Execution:
    """Streams pages through the shapes.

    The flow is cut into segments at every receive shape: the receive shape
    reads its pages one by one and each page goes through the shapes after it
    (filter, map, send, ...) before the next page is requested, so each shape
    holds at most one page. A receive shape after other shapes starts a new
    segment once the earlier segment is done: what reaches it is counted as its
    items in and goes no further (it fetches its own records, as it always
    did). Shapes before the first receive shape get no items.
    """

    def __init__(self, run: FlowRun, owner: str):
        self.run_obj, self.owner = run, owner
        company = run.company
        self.deadline = (run.started_at or timezone.now()) + company.run_duration_limit
        self.overdue_reason = overdue_reason(company)

    def checkpoint(self) -> None:
        """Between requests: keep the lease and honour a stop request.

        One UPDATE in the usual case (the run is this worker's and no stop was
        asked for); it runs before every request, so it is kept to one query.
        Past the company's maximum run duration the run stops here.
        """
        if timezone.now() >= self.deadline:
            raise DurationExceeded(self.overdue_reason)
        renewed = FlowRun.objects.filter(
            pk=self.run_obj.pk, status=RunStatus.RUNNING, lease_owner=self.owner, stop_requested=False
        ).update(lease_expires_at=timezone.now() + lease_duration())
        if renewed:
            return
        if not renew_lease(self.run_obj.pk, self.owner):
            raise LeaseLost()
        raise StopRequested()

    def run(self) -> Outcome:
        shapes = list(
            self.run_obj.flow.shapes.select_related(
                "instance__connector", "instance__auth_method", "instance__connection_pool", "endpoint"
            )
        )
        if not shapes:
            return Outcome(RunStatus.FAILED, "The flow has no connection shapes.")
        ctx = context_for(self.run_obj, shapes, self.checkpoint)
        stages = stages_for(shapes, ctx)
        problems = validate(self.run_obj, stages)
        if problems:
            return Outcome(RunStatus.FAILED, " ".join(problems))
        self.stages = stages
        try:
            self.checkpoint()
            for source, rest in self.segments(stages):
                self.run_segment(source, rest)
        except StopRequested:
            self.close_open(ShapeStatus.STOPPED)
            return Outcome(RunStatus.STOPPED, "Stopped by a user.", self.warnings())
        except DurationExceeded as exc:
            self.close_open(ShapeStatus.STOPPED)
            return Outcome(RunStatus.FAILED, str(exc), self.warnings())
        except (ShapeFailed, *NAMED_FAILURES) as exc:
            logger.info("Flow run %s failed: %r", self.run_obj.pk, exc, exc_info=not isinstance(exc, ShapeFailed))
            stage = getattr(exc, "stage", None)
            if stage is not None:
                if isinstance(exc, DataError) and stage.record is not None:
                    stage.record.payload_sample = {}  # what the database refused is not stored again
                stage.close(ShapeStatus.FAILED)
            self.close_open(ShapeStatus.STOPPED)
            label = stage.label if stage is not None else "The run"
            message = str(exc) if isinstance(exc, ShapeFailed) else named_failure(exc)
            return Outcome(RunStatus.FAILED, f"{label}: {message}", self.warnings())
        finally:
            self.mark_instances_used()
        partial = any(stage.record is not None and (stage.record.errors or stage.partial) for stage in stages)
        return Outcome(RunStatus.PARTIAL_SUCCESS if partial else RunStatus.SUCCESS, "", self.warnings())

    @staticmethod
    def segments(stages: list[Stage]) -> list[tuple[Stage | None, list[Stage]]]:
        segments: list[tuple[Stage | None, list[Stage]]] = [(None, [])]
        for stage in stages:
            if isinstance(stage, connection_shape.Connection) and stage.receives:
                segments.append((stage, []))
            else:
                segments[-1][1].append(stage)
        return [segment for segment in segments if segment[0] is not None or segment[1]]

    def run_segment(self, source: Stage | None, rest: list[Stage]) -> None:
        self.following = self.after([stage for stage in (source, *rest) if stage is not None])
        if source is not None:
            source.open()
            self.saved(source)
            for page in self.guarded(source, source.pages()):
                self.saved(source)
                self.push(rest, 0, page)
            self.finish(source)
        for stage in rest:
            self.finish(stage)

    def push(self, rest: list[Stage], index: int, page: list) -> None:
        """Hand `page` to rest[index] and every page it makes on down the line."""
        if index >= len(rest):
            if self.following is not None:
                self.following.open().items_in += len(page)
            return
        stage = rest[index]
        for out in self.guarded(stage, stage.process(page)):
            self.saved(stage)
            self.push(rest, index + 1, out)
        self.saved(stage)

    @staticmethod
    def saved(stage: Stage) -> None:
        """stage.save(), a failure to store (or to write the payload sample) tagged with the stage."""
        try:
            stage.save()
        except NAMED_FAILURES as exc:
            exc.stage = stage
            raise

    def after(self, rest: list[Stage]) -> Stage | None:
        """The shape after the segment's last one (a receive shape starting the next segment)."""
        if not rest:
            return None
        position = rest[-1].position + 1
        return self.stages[position] if position < len(self.stages) else None

    @staticmethod
    def guarded(stage: Stage, pages):
        """`pages` of `stage`, a ShapeFailed (or a failure with a name) it raises tagged with the stage."""
        try:
            yield from pages
        except (ShapeFailed, *NAMED_FAILURES) as exc:
            if not hasattr(exc, "stage"):
                exc.stage = stage
            raise

    def finish(self, stage: Stage) -> None:
        try:
            stage.finish()
            stage.close(ShapeStatus.SUCCESS)
        except (ShapeFailed, *NAMED_FAILURES) as exc:
            if not hasattr(exc, "stage"):
                exc.stage = stage
            raise

    def close_open(self, status: str) -> None:
        for stage in self.stages:
            if stage.record is not None and not stage.finished:
                stage.close(status)

    def warnings(self) -> list[str]:
        return [
            f"{stage.label}: {warning}"
            for stage in getattr(self, "stages", [])
            if stage.record is not None
            for warning in stage.record.warnings
        ]

    def mark_instances_used(self) -> None:
        """One UPDATE per connection shape that sent requests."""
        now = timezone.now()
        for stage in getattr(self, "stages", []):
            if isinstance(stage, connection_shape.Connection) and stage.sent_requests:
                Instance.objects.filter(pk=stage.shape.instance_id).update(last_used_by_run_at=now)
