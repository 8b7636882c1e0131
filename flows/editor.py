"""Editing the shapes of a process flow: adding, moving and removing them, and their one-line summaries.

Positions stay dense (0, 1, 2, ...) after every change: each change locks the
flow's shapes and renumbers them in one transaction, so two people reordering
at once cannot leave gaps or duplicates.
"""

from __future__ import annotations

from django.db import transaction

from connectors.models import Direction, Endpoint
from flows.models import ProcessFlow, Shape, ShapeKind
from instances.models import Instance

DEFAULT_CONFIG = {
    ShapeKind.CONNECTION: {"timeout": 30, "retries": 0, "allow_unsuccessful": False, "send_as": "item", "parameters": {}},
    ShapeKind.FILTER: {"match": "all", "rules": []},
    # A new map passes items on unchanged until output fields are added.
    ShapeKind.MAP: {"fields": [], "keep_unmapped": True},
}

COMPARISON_TEXT = {
    "equals": "=",
    "not_equals": "≠",
    "contains": "contains",
    "greater_than": ">",
    "less_than": "<",
    "is_empty": "is empty",
    "in_last": "in the last",
    "since_last_success": "since the last successful run",
}


def default_config(kind: str) -> dict:
    return {key: (dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value)
            for key, value in DEFAULT_CONFIG[kind].items()}


def _locked_shapes(flow: ProcessFlow) -> list[Shape]:
    return list(Shape.objects.select_for_update().filter(flow=flow).order_by("position", "id"))


def _renumber(shapes: list[Shape]) -> None:
    changed = []
    for position, shape in enumerate(shapes):
        if shape.position != position:
            shape.position = position
            changed.append(shape)
    if changed:
        Shape.objects.bulk_update(changed, ["position"])


def add_shape(flow: ProcessFlow, kind: str, instance: Instance | None = None, endpoint: Endpoint | None = None) -> Shape:
    """A new shape at the end of the flow, with the kind's default settings."""
    with transaction.atomic():
        shapes = _locked_shapes(flow)
        _renumber(shapes)
        return Shape.objects.create(
            flow=flow, kind=kind, instance=instance, endpoint=endpoint, position=len(shapes), config=default_config(kind)
        )


def move_shape(shape: Shape, direction: str) -> bool:
    """Swap the shape with its neighbour ("up" or "down"); False when it is already first or last."""
    with transaction.atomic():
        shapes = _locked_shapes(shape.flow)
        index = next((i for i, s in enumerate(shapes) if s.pk == shape.pk), None)
        if index is None:
            return False
        other = index - 1 if direction == "up" else index + 1
        if not 0 <= other < len(shapes):
            _renumber(shapes)
            return False
        shapes[index], shapes[other] = shapes[other], shapes[index]
        _renumber(shapes)
        return True


def remove_shape(shape: Shape) -> None:
    """Delete the shape; the ones after it move up, so positions stay dense."""
    with transaction.atomic():
        shapes = _locked_shapes(shape.flow)
        Shape.objects.filter(pk=shape.pk).delete()
        _renumber([s for s in shapes if s.pk != shape.pk])


def summary(shape: Shape) -> str:
    """One line saying what the shape does (shown in the flow's shape list)."""
    config = shape.config if isinstance(shape.config, dict) else {}
    if shape.kind == ShapeKind.FILTER:
        rules = [r for r in config.get("rules") or [] if isinstance(r, dict)]
        if not rules:
            return "No rules yet: every item passes."
        parts = []
        for rule in rules:
            comparison = rule.get("comparison", "")
            text = f'{rule.get("field", "")} {COMPARISON_TEXT.get(comparison, comparison)}'
            if comparison == "in_last":
                text += f' {rule.get("value", "")} {rule.get("unit", "")}'
            elif comparison not in ("is_empty", "since_last_success"):
                text += f' "{rule.get("value", "")}"'
            parts.append(text)
        joiner = " and " if config.get("match", "all") == "all" else " or "
        return "Keeps items where " + joiner.join(parts)
    if shape.kind == ShapeKind.MAP:
        fields = [f for f in config.get("fields") or [] if isinstance(f, dict)]
        if not fields:
            return "No output fields yet: items pass unchanged." if config.get("keep_unmapped") else "No output fields yet."
        parts = []
        for field in fields:
            source = field.get("source") or f'"{field.get("constant", "")}"'
            parts.append(f'{field.get("target", "")} ← {source}{" (date)" if field.get("convert_date") else ""}')
        more = " (other fields kept)" if config.get("keep_unmapped") else ""
        return f'{len(fields)} field{"s" if len(fields) != 1 else ""}: ' + ", ".join(parts) + more
    parts = [f'timeout {config.get("timeout", 30)} s']
    if config.get("retries"):
        parts.append(f'{config["retries"]} retr{"y" if config["retries"] == 1 else "ies"}')
    if config.get("allow_unsuccessful"):
        parts.append("unsuccessful statuses allowed")
    if shape.endpoint_id and shape.endpoint.direction == Direction.SEND:
        parts.append("sends a batch per page" if config.get("send_as") == "batch" else "sends each item")
    parameters = config.get("parameters") or {}
    if parameters:
        parts.append(", ".join(f"{name} = {value}" for name, value in parameters.items()))
    return " · ".join(parts)
