"""What the flow editor shows of a test step: the run (trigger "test") up to one shape, and that shape's sample.

A test step is an ordinary FlowRun (flows.queueing.queue_test_step) that
flows.execution stops after its shape, on one page, with send shapes keeping
what they would have sent instead of sending it. Its sample is the shape's
payload sample, redacted like any run's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db.models import OuterRef, Subquery

from flows import durability
from flows.models import FlowRun, FlowRunShape, RunTrigger, Shape, ShapeKind
from flows.shapes.map import source_paths


def _pretty(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@dataclass
class StepSample:
    """A test run of one shape, as its card in the editor shows it."""

    run: FlowRun
    shape_run: FlowRunShape | None  # the tested shape's row (None when the run stopped before it)
    expanded: bool = False
    stale: bool = False  # the flow's shapes were edited, added, removed or moved since the test ran

    @property
    def sample(self) -> dict:
        sample = self.shape_run.payload_sample if self.shape_run is not None else None
        return sample if isinstance(sample, dict) else {}

    @property
    def records(self) -> list:
        return list(self.sample.get("out") or [])

    @property
    def records_text(self) -> str:
        return _pretty(self.records) if self.records else ""

    @property
    def sends(self) -> list[dict]:
        """The requests a send shape would have made, each with its body as indented JSON."""
        sends = []
        for send in self.sample.get("sends") or []:
            if isinstance(send, dict):
                body = send.get("body", send.get("form"))
                sends.append({**send, "body_text": "" if body is None else _pretty(body)})
        return sends

    @property
    def cut_text(self) -> str:
        """A sample too large to keep whole is stored as cut text (see Stage.payload_sample)."""
        return str(self.sample.get("text") or "")

    @property
    def paths(self) -> list[str]:
        """For a map: the dotted paths of the records that entered it (what its source field offers), sorted.

        Sorted, since the stored sample (jsonb) does not keep the API's order of keys.
        """
        if self.shape_run is None or self.run.test_shape is None or self.run.test_shape.kind != ShapeKind.MAP:
            return []
        return sorted(source_paths([item for item in self.sample.get("in") or [] if isinstance(item, (dict, list))]))

    @property
    def messages(self) -> list[str]:
        """The tested shape's errors (why items failed), then the warnings of every shape up to it.

        The shapes before it count: a send shape before it sent nothing, so no answers came on.
        """
        errors = self.shape_run.errors if self.shape_run is not None else []
        return [*errors, *self.run.warnings]


def _tested_row(run: FlowRun) -> FlowRunShape | None:
    rows = list(run.shape_runs.all())
    return next((row for row in rows if row.shape_id == run.test_shape_id), None)


def of_run(run: FlowRun, shapes: list[Shape] | None = None, *, expanded: bool = True) -> StepSample:
    """The test step `run`; with the flow's `shapes` (all of them, in order) it knows whether they changed since."""
    stale = bool(shapes is not None and run.shapes_fingerprint and not run.is_active
                 and run.shapes_fingerprint != durability.fingerprint(shapes))
    return StepSample(run, _tested_row(run), expanded, stale)


def latest_per_shape(shapes: list[Shape], *, expanded_run: int | None = None) -> dict[int, StepSample]:
    """The newest test step of each of the flow's `shapes` (three queries however many shapes there are)."""
    pks = [shape.pk for shape in shapes]
    newest = (FlowRun.objects.filter(test_shape=OuterRef("pk"), trigger=RunTrigger.TEST)
              .order_by("-queued_at", "-id").values("pk")[:1])
    run_pks = [pk for pk in Shape.objects.filter(pk__in=pks).annotate(run=Subquery(newest))
               .values_list("run", flat=True) if pk is not None]
    runs = FlowRun.objects.filter(pk__in=run_pks).select_related("test_shape", "triggered_by").prefetch_related("shape_runs")
    return {run.test_shape_id: of_run(run, shapes, expanded=run.pk == expanded_run) for run in runs}


def latest(shape: Shape) -> StepSample | None:
    """The shape's newest test step, or None."""
    run = (FlowRun.objects.filter(test_shape=shape, trigger=RunTrigger.TEST).select_related("test_shape")
           .order_by("-queued_at", "-id").first())
    return of_run(run) if run is not None else None
