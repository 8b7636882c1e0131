"""What retrying a failed or stopped run will do, said before the operator confirms (flows.views.retry_run)."""

from __future__ import annotations

from dataclasses import dataclass, field

from flows import durability
from flows.models import FlowRun, ShapeKind


@dataclass
class Plan:
    """The two ways to retry `run`, in words: resume from its checkpoint, or run again from the start."""

    run: FlowRun
    can_resume: bool = True
    resume_refusal: str = ""
    resume_page: int | None = None
    delivered: int = 0  # items the run's send shapes had accepted
    without_keys: list[str] = field(default_factory=list)  # send shapes whose API takes no idempotency key
    with_keys: list[str] = field(default_factory=list)


def plan(run: FlowRun) -> Plan:
    result = Plan(run=run, resume_page=run.resumed_from_page)
    shapes = list(run.flow.shapes.select_related("instance", "endpoint"))
    if run.checkpoint and run.shapes_fingerprint and durability.fingerprint(shapes) != run.shapes_fingerprint:
        result.can_resume = False
        result.resume_refusal = (
            f"The flow was changed after run {run.pk} (shapes were edited, added, removed or moved): its checkpoint "
            "belongs to the shapes it ran with, so it cannot resume. Run it again from the start."
        )
    sends = [shape for shape in shapes if shape.kind == ShapeKind.CONNECTION and shape.endpoint_id is not None
             and shape.endpoint.direction == "send"]
    for shape in sends:
        name = f"{shape.instance.name} → {shape.endpoint.name}" if shape.instance_id else shape.endpoint.name
        keyed = getattr(shape.endpoint, "idempotency_key_in", "none") in ("header", "body")
        (result.with_keys if keyed else result.without_keys).append(name)
    send_positions = {shape.position for shape in sends}
    result.delivered = sum(
        shape_run.items_out for shape_run in run.shape_runs.all() if shape_run.position in send_positions
    )
    return result
