"""Map shapes: build each output item from fields of the incoming one.

Config: ``{"fields": [{"target", "source", "constant", "convert_date"}], "keep_unmapped": false}``.
Fields are applied in order: `target` is a dotted output path, `source` a
dotted input path (a missing source leaves the target unset) or, when empty,
`constant` is written. With `convert_date` the value is read in the source
instance's date format and zone (nearest connection shape before the map) and
written in the target instance's (nearest connection shape after it). An item
whose date cannot be converted is refused (an error of the shape: partial
success), so that no wrongly dated item is sent on. `keep_unmapped` starts
each output item from a copy of the input item.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

from django.conf import settings

from flows import dates
from flows.shapes import MISSING, Context, Stage, bounds, set_value_at, value_at

SCALARS = (str, int, float, bool, type(None))


def fields_of(config: object) -> tuple[list[dict], bool, list[str]]:
    config = config if isinstance(config, dict) else {}
    problems = []
    fields = config.get("fields")
    if not isinstance(fields, list) or not fields:
        return [], False, ["it has no fields. Add a field or remove the shape."]
    clean = []
    for number, spec in enumerate(fields, start=1):
        if not isinstance(spec, dict):
            problems.append(f"field {number} is not a field.")
            continue
        target = str(spec.get("target") or "").strip()
        source = str(spec.get("source") or "").strip()
        if not target or any(not part for part in target.split(".")):
            problems.append(f"field {number}: the target path is empty or has an empty part.")
        if source and any(not part for part in source.split(".")):
            problems.append(f"field {number}: the source path has an empty part.")
        if target.count(".") >= settings.FLOW_MAX_RECORD_DEPTH:
            problems.append(
                f"field {number}: the target path nests {target.count('.') + 1:,} levels deep, more than the "
                f"{settings.FLOW_MAX_RECORD_DEPTH} a record may (FLOW_MAX_RECORD_DEPTH)."
            )
        constant = "" if spec.get("constant") is None else str(spec.get("constant"))
        clean.append({"target": target, "source": source, "constant": constant,
                      "convert_date": bool(spec.get("convert_date"))})
    return clean, bool(config.get("keep_unmapped")), problems


class Map(Stage):
    RESUMED = (*Stage.RESUMED, "item_number")

    def __init__(self, shape, position: int, ctx: Context, source=None, target=None):
        super().__init__(shape, position, ctx)
        self.source, self.target = source, target  # the instances dates are read in and written for
        self.fields, self.keep_unmapped, self.config_problems = fields_of(shape.config)
        self.item_number = 0
        # What each output item costs at least (constants and target names), for the page size bound.
        self.fixed_bytes = sum(
            len(f["target"]) + 4 + (0 if f["source"] else bounds.json_size(f["constant"])) for f in self.fields
        )

    def problems(self) -> list[str]:
        problems = list(self.config_problems)
        if any(f["convert_date"] and f["source"] for f in self.fields):
            if self.source is None:
                problems.append("it converts dates but no connection shape comes before it to say how they are read.")
            if self.target is None:
                problems.append("it converts dates but no connection shape comes after it to say how to write them.")
        return problems

    def build(self, item: object, size: bounds.PageSize) -> dict:
        """The output item; its estimated JSON size is added to `size` (ShapeFailed past the page bound)."""
        estimate = self.fixed_bytes
        out = {}
        if self.keep_unmapped and isinstance(item, dict):
            out = copy.deepcopy(item)
            estimate += bounds.json_size(item)
        for spec in self.fields:
            if not spec["source"]:
                set_value_at(out, spec["target"], spec["constant"])
                continue
            value = value_at(item, spec["source"])
            if value is MISSING:
                continue
            if spec["convert_date"] and value not in (None, ""):
                try:
                    moment = dates.parse(value, self.source.date_format, self.source.time_zone)
                    value = dates.format(moment, self.target.date_format, self.target.time_zone)
                except dates.DateError as exc:
                    raise ValueError(f'field "{spec["source"]}": {exc}') from exc
            estimate += bounds.json_size(value)
            # Containers are copied (an item may be used by two fields); JSON scalars are immutable.
            set_value_at(out, spec["target"], value if isinstance(value, SCALARS) else copy.deepcopy(value))
        size.add(estimate)
        return out

    def process(self, page: list) -> Iterator[list]:
        self.count_in(page)
        out = []
        size = bounds.PageSize(len(page), "Map fewer or shorter values, or have the endpoint send smaller pages.")
        for item in page:
            self.item_number += 1
            try:
                out.append(self.build(item, size))
            except ValueError as exc:
                self.error(f"Item {self.item_number}: {exc}; it was not passed on.")
        if out:
            self.count_out(out)
            yield out


# The most paths a map's source field offers from a test step's sample.
MAX_SOURCE_PATHS = 300


def source_paths(items: list) -> list[str]:
    """The dotted paths (this module's syntax: digits index lists) found in `items`, in the order first seen.

    Every object key and list element is a path (a value may be a container, which a map copies);
    of a list only its first element is followed, which stands for the others. At most MAX_SOURCE_PATHS.
    """

    def entries(prefix: str, node: object) -> list[tuple[str, object]]:
        if isinstance(node, dict):
            pairs = [(str(key), value) for key, value in node.items()]
        elif isinstance(node, list) and node:
            pairs = [("0", node[0])]
        else:
            return []
        # A key with a dot (or none at all) cannot be named by a dotted path.
        return [(f"{prefix}.{key}" if prefix else key, value) for key, value in reversed(pairs) if key and "." not in key]

    paths: dict[str, None] = {}
    stack = [entry for item in reversed(items) for entry in entries("", item)]
    while stack and len(paths) < MAX_SOURCE_PATHS:
        path, value = stack.pop()
        paths.setdefault(path, None)
        if path.count(".") + 1 < settings.FLOW_MAX_RECORD_DEPTH:
            stack.extend(entries(path, value))
    return list(paths)
