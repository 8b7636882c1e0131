"""The flows' figures for /metrics: runs by status and the task queue, read at scrape time; runs' ends, as they happen.

Registered with patchworks_site.metrics in FlowsConfig.ready. The runs and the
queue are shared by every host (one database, one Redis queue): every host
reports the same values, so aggregate them across hosts with max(), not sum().
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count, Sum
from huey.contrib.djhuey import HUEY
from prometheus_client.core import GaugeMetricFamily

from connectors.models import Direction
from flows.models import FlowRun, FlowRunShape, RunStatus, ShapeKind
from flows.shapes import Stage
from flows.shapes import connection as connection_shape
from patchworks_site import metrics


class RunsAndQueue:
    """One GROUP BY over the runs and huey's two counts (one round trip each to the queue)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = dict(FlowRun.objects.order_by().values_list("status").annotate(n=Count("pk")))
        runs = GaugeMetricFamily("patchworks_flow_runs", "Flow runs in the database, by status", labels=["status"])
        for status in RunStatus.values:
            runs.add_metric([status], counts.get(status, 0))
        yield runs
        yield GaugeMetricFamily(
            "patchworks_queue_pending_tasks", "Tasks in the task queue waiting for a worker", value=HUEY.pending_count()
        )
        yield GaugeMetricFamily(
            "patchworks_queue_scheduled_tasks", "Tasks the task queue's schedule holds for later (parked runs)",
            value=HUEY.scheduled_count(),
        )


def observe_ended_without_worker(run_pk: int, status: str) -> None:
    """A run that ended without a worker concluding it: failed by a reaper (its worker lost on its last attempt,
    or stuck past the maximum run duration) or stopped while queued or waiting. Its duration from its first
    start and the records its receive shapes had read; nothing for a run stopped before it ever started."""
    times = FlowRun.objects.filter(pk=run_pk).values_list("started_at", "finished_at").first()
    if times is None or None in times:
        return
    records = FlowRunShape.objects.filter(
        run_id=run_pk, shape__kind=ShapeKind.CONNECTION, shape__endpoint__direction=Direction.RECEIVE
    ).aggregate(records=Sum("items_out"))["records"]
    metrics.observe_run(status, (times[1] - times[0]).total_seconds(), records or 0)


def observe_end(run: FlowRun, status: str, stages: list[Stage], ended_at) -> None:
    """A run a worker concluded: its duration from its first start, and the records its receive shapes read."""
    started = run.started_at or ended_at
    records = sum(
        stage.record.items_out for stage in stages
        if isinstance(stage, connection_shape.Connection) and stage.receives and stage.record is not None
    )
    metrics.observe_run(status, (ended_at - started).total_seconds(), records)
