"""Executing one flow run on a worker.

A worker claims the run with one conditional UPDATE (queued -> running), so a
run is never executed twice, however many workers receive its task. While it
runs, the worker holds a lease that a heartbeat thread renews; a worker that is
killed stops renewing it and the scheduler tick fails the run ("worker lost").
Shapes run in order (one module per shape kind in flows.shapes), and every
request goes through the one instance client (SSRF guard, rate limit,
connection pool, redaction).
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
from django.db import DatabaseError, connection
from django.utils import timezone

from flows.models import Shape, FlowRun, FlowRunShape, RunStatus, ShapeStatus
from flows.shapes import ShapeFailed, connection as connection_shape

logger = logging.getLogger(__name__)

class StopRequested(Exception):
    pass


class LeaseLost(Exception):
    """Another party (the reaper) took the run away from this worker: write nothing more."""


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
    """Renews the lease while a long request is in flight (between requests the runner renews it too)."""

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


def execute(run_pk: int) -> FlowRun | None:
    """Run the flow run `run_pk` if it is still queued; None when another worker has it or it was stopped."""
    owner = worker_name()
    if not claim(run_pk, owner):
        logger.info("Flow run %s is not queued any more; nothing to do.", run_pk)
        return None
    run = FlowRun.objects.select_related("flow").get(pk=run_pk)
    heartbeat = Heartbeat(run_pk, owner)
    heartbeat.start()
    try:
        outcome = Execution(run, owner).run()
    except LeaseLost:
        logger.warning("Flow run %s was taken from this worker (lease expired); its result is dropped.", run_pk)
        return None
    except Exception:
        logger.exception("Flow run %s failed with an unexpected error.", run_pk)
        outcome = Outcome(RunStatus.FAILED, "An unexpected error stopped the run; it has been logged.")
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


def shape_name(shape: Shape) -> str:
    target = shape.endpoint.name if shape.endpoint_id else f"missing endpoint {shape.missing_endpoint}".strip()
    return f"{shape.instance.name} → {target}"


def shape_label(position: int, shape: Shape) -> str:
    return f"Shape {position + 1} ({shape_name(shape)})"


def validate(run: FlowRun, shapes: list[Shape]) -> list[str]:
    """Why the flow cannot run, found before any request is made."""
    if not shapes:
        return ["The flow has no connection shapes."]
    problems = []
    for position, shape in enumerate(shapes):
        label = shape_label(position, shape)
        if shape.instance.company_id != run.company_id:
            problems.append(f"{label}: the instance is not one of this company's.")
        elif shape.endpoint_id is None:
            problems.append(
                f"{label}: its endpoint was removed by a connector update. Choose another endpoint for this shape."
            )
        elif shape.endpoint.connector_id != shape.instance.connector_id:
            problems.append(f"{label}: the endpoint does not belong to the instance's connector.")
    return problems


class Execution:
    def __init__(self, run: FlowRun, owner: str):
        self.run_obj, self.owner = run, owner

    def checkpoint(self) -> None:
        """Between requests: keep the lease and honour a stop request."""
        if not renew_lease(self.run_obj.pk, self.owner):
            raise LeaseLost()
        if FlowRun.objects.filter(pk=self.run_obj.pk, stop_requested=True).exists():
            raise StopRequested()

    def run(self) -> Outcome:
        shapes = list(
            self.run_obj.flow.shapes.select_related(
                "instance__connector", "instance__auth_method", "instance__connection_pool", "endpoint"
            )
        )
        problems = validate(self.run_obj, shapes)
        if problems:
            return Outcome(RunStatus.FAILED, " ".join(problems))
        bucket: list[list] = []  # the payloads the previous shape passed on
        warnings: list[str] = []
        partial = False
        for position, shape in enumerate(shapes):
            label = shape_label(position, shape)
            record = FlowRunShape.objects.create(
                run=self.run_obj, position=position, shape=shape, shape_name=shape_name(shape),
                started_at=timezone.now(), items_in=sum(len(p) for p in bucket),
            )
            try:
                self.checkpoint()
                bucket = connection_shape.run(shape, bucket, record, self.checkpoint)
            except StopRequested:
                self.finish_shape(record, ShapeStatus.STOPPED)
                return Outcome(RunStatus.STOPPED, "Stopped by a user.", warnings)
            except ShapeFailed as exc:
                record.errors = (record.errors + [str(exc)])[-connection_shape.MAX_RECORDED_FAILURES:]
                self.finish_shape(record, ShapeStatus.FAILED)
                return Outcome(RunStatus.FAILED, f"{label}: {exc}", warnings)
            # Errors without a failure: some items were refused, the others went on.
            partial = partial or bool(record.errors)
            self.finish_shape(record, ShapeStatus.PARTIAL_SUCCESS if record.errors else ShapeStatus.SUCCESS)
            warnings += [f"{label}: {w}" for w in record.warnings]
        return Outcome(RunStatus.PARTIAL_SUCCESS if partial else RunStatus.SUCCESS, "", warnings)

    @staticmethod
    def finish_shape(record: FlowRunShape, status: str) -> None:
        record.status = status
        record.finished_at = timezone.now()
        record.save()
