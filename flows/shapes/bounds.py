"""Bounds on a run's data: bytes per page after a shape, depth of records, records and bytes per request.

One worker runs many companies' flows, so no run may make a page as large as
it likes (a map with long constants multiplies a page's size; a batch send
would build one body for the whole page). Sizes are estimated as the length of
the items' JSON, cheaply: scalars by their length, containers by one
json.dumps, counted item by item so that an oversized page stops the shape
after the item that crossed the bound, long before it is all built.
"""

from __future__ import annotations

import json

from django.conf import settings

from flows.shapes import ShapeFailed


def size_text(size: int) -> str:
    """A byte count for people: "900 bytes", "512 KB", "12.3 MB", "7.5 GB"."""
    if size < 1024:
        return f"{size:,} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:,.3g} KB".replace(".0 ", " ")
    if size < 1024 ** 3:
        return f"{size / 1024 ** 2:,.1f} MB".replace(".0 MB", " MB")
    return f"{size / 1024 ** 3:,.1f} GB".replace(".0 GB", " GB")


def json_size(value: object) -> int:
    """About how many bytes `value` takes as JSON (exact for containers, close for scalars)."""
    if isinstance(value, str):
        return len(value) + 2
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, (int, float)):
        return len(repr(value))
    return len(json.dumps(value, default=str))


def depth_over(value: object, limit: int) -> bool:
    """Whether objects and lists nest more than `limit` levels deep in `value` (walked without recursion)."""
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def check_depth(records: list, what: str) -> None:
    """ShapeFailed when one of `records` nests deeper than FLOW_MAX_RECORD_DEPTH (`what`: "page 2", "the answer")."""
    limit = settings.FLOW_MAX_RECORD_DEPTH
    for number, record in enumerate(records, start=1):
        if depth_over(record, limit):
            raise ShapeFailed(
                f"record {number:,} of {what} is nested more than {limit} levels deep, the most a record may be "
                f"(FLOW_MAX_RECORD_DEPTH). The run stopped before the record was processed."
            )


class PageSize:
    """The running size of one page a shape builds; ShapeFailed once it passes FLOW_MAX_PAGE_BYTES."""

    def __init__(self, items: int, hint: str = ""):
        self.items, self.hint = items, hint
        self.limit = settings.FLOW_MAX_PAGE_BYTES
        self.size = 2
        self.done = 0

    def add(self, size: int, items: int = 1) -> None:
        """`items` more items of the page, taking `size` bytes together."""
        self.size += size + 2
        self.done += items
        if self.size > self.limit:
            if self.done < self.items:  # stopped early: what the whole page would have been
                grew = (
                    f"would grow to about {size_text(self.size * self.items // self.done)} "
                    f"({size_text(self.size)} after {self.done:,} of its {self.items:,} items)"
                )
            else:
                grew = f"grew to {size_text(self.size)}"
            raise ShapeFailed(
                f"a page {grew}, more than the {size_text(self.limit)} a page may hold after a shape "
                f"(FLOW_MAX_PAGE_BYTES). {self.hint}".strip()
            )


def batches(page: list, on_oversized) -> list[tuple[list, int]]:
    """`page` cut into batches within FLOW_MAX_BATCH_RECORDS records and FLOW_MAX_REQUEST_BYTES bytes of JSON.

    Returns (items, body bytes) pairs; an item whose JSON alone is larger than
    a request body may be is not put in any batch: `on_oversized(index, size)`
    is called for it.
    """
    most_records, most_bytes = max(settings.FLOW_MAX_BATCH_RECORDS, 1), settings.FLOW_MAX_REQUEST_BYTES
    if len(page) <= most_records:
        whole = len(json.dumps(page))
        if whole <= most_bytes:
            return [(page, whole)] if page else []
    out: list[tuple[list, int]] = []
    current: list = []
    size = 2  # "[]"
    for index, item in enumerate(page):
        item_size = len(json.dumps(item))
        if item_size + 2 > most_bytes:
            on_oversized(index, item_size)
            continue
        extra = item_size + (2 if current else 0)  # ", " between items
        if current and (len(current) >= most_records or size + extra > most_bytes):
            out.append((current, size))
            current, size, extra = [], 2, item_size
        current.append(item)
        size += extra
    if current:
        out.append((current, size))
    return out
