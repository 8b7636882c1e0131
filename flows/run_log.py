"""The run log's search, keyset pages and CSV export.

Pages are keyset pages on (queued_at, id), newest first: a page after the
thousandth costs what the first costs (no OFFSET, no COUNT), using the
FlowRun (company, -queued_at) and (flow, -queued_at) indexes, which the
cursor's plain bound on queued_at lets PostgreSQL enter at the cursor rather
than read from the newest run (benchmarks/big_data.py measures page 1,000
of 200,000 runs against a small database's). A cursor reads
`20260301T120000.000000Z_42` (the queued-at time in UTC and the run id of the
page's edge); a malformed one is ignored and the newest page is shown, as a
junk page number is elsewhere.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Exists, OuterRef, Q, QuerySet

from flows.models import FlowRun, FlowRunRequest, FlowRunShape

PAGE_SIZE = 25
EXPORT_CHUNK_SIZE = 500
_CURSOR_RE = re.compile(r"([0-9]{8}T[0-9]{6}\.[0-9]{6})Z_([0-9]{1,18})")
_CURSOR_FORMAT = "%Y%m%dT%H%M%S.%f"


def search(runs: QuerySet, q: str) -> QuerySet:
    """Runs whose flow name, failure reason, a failed request's (redacted) record or a stored request's URL
    contains `q`.

    The failed requests' records are searched as JSON text (`icontains` casts
    jsonb to text on PostgreSQL), so the URLs they hold are found; the stored
    requests (flows.steps) by their URL, per run through its index. Both are
    redacted when recorded, so no secret can be probed for.
    """
    if not q:
        return runs
    with_exchange = FlowRunShape.objects.filter(failed_exchanges__icontains=q).values("run")
    with_request = FlowRunRequest.objects.filter(run=OuterRef("pk"), request_url__icontains=q)
    return runs.filter(Q(flow__name__icontains=q) | Q(failure_reason__icontains=q) | Q(pk__in=with_exchange)
                       | Exists(with_request))


def cursor_of(run: FlowRun) -> str:
    return f"{run.queued_at.astimezone(UTC).strftime(_CURSOR_FORMAT)}Z_{run.pk}"


def parse_cursor(value: str | None) -> tuple[datetime, int] | None:
    """(queued_at, id) of a cursor, or None when it is missing or malformed."""
    match = _CURSOR_RE.fullmatch(value or "")
    if not match:
        return None
    try:
        at = datetime.strptime(match[1], _CURSOR_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return at, int(match[2])


@dataclass
class Page:
    runs: list[FlowRun]
    newer: str | None  # cursor for the `after` link, None on the newest page
    older: str | None  # cursor for the `before` link, None on the oldest page


def page(runs: QuerySet, *, before: str | None = None, after: str | None = None) -> Page:
    """One page of `runs` (any filters applied), older than `before` or newer than `after`."""
    if (edge := parse_cursor(after)) is not None:
        at, pk = edge
        # The plain bound (queued_at >= at) lets the index start at the cursor; the OR settles ties.
        newer = list(runs.filter(Q(queued_at__gt=at) | Q(queued_at=at, pk__gt=pk), queued_at__gte=at)
                     .order_by("queued_at", "id")[:PAGE_SIZE + 1])
        if len(newer) > PAGE_SIZE:
            shown = newer[:PAGE_SIZE][::-1]
            return Page(shown, cursor_of(shown[0]), cursor_of(shown[-1]))
        # Fewer than a page of newer runs: that is the newest page.
    elif (edge := parse_cursor(before)) is not None:
        at, pk = edge
        older = list(runs.filter(Q(queued_at__lt=at) | Q(queued_at=at, pk__lt=pk), queued_at__lte=at)
                     .order_by("-queued_at", "-id")[:PAGE_SIZE + 1])
        shown = older[:PAGE_SIZE]
        if shown:
            return Page(shown, cursor_of(shown[0]), cursor_of(shown[-1]) if len(older) > PAGE_SIZE else None)
        # Nothing older (e.g. the runs were deleted meanwhile): the newest page.
    first = list(runs.order_by("-queued_at", "-id")[:PAGE_SIZE + 1])
    shown = first[:PAGE_SIZE]
    return Page(shown, None, cursor_of(shown[-1]) if len(first) > PAGE_SIZE else None)


# --- CSV export -------------------------------------------------------------------------------------

CSV_HEADER = ["run id", "flow", "status", "trigger", "queued at", "started at", "finished at",
              "duration seconds", "attempt", "failure reason", "warnings"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """The cell as text, with a leading quote when a spreadsheet would read it as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _iso(at: datetime | None) -> str:
    return at.astimezone(UTC).isoformat() if at else ""


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a generator."""

    def write(self, value: str) -> str:
        return value


def csv_lines(runs: QuerySet) -> Iterator[str]:
    """The header and one line per run, read from the database in chunks (no payloads, no request records)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    columns = ("id", "flow__name", "status", "trigger", "queued_at", "started_at", "finished_at", "attempt",
               "failure_reason", "warnings")
    for row in runs.order_by("-queued_at", "-id").values_list(*columns).iterator(chunk_size=EXPORT_CHUNK_SIZE):
        pk, flow, status, trigger, queued, started, finished, attempt, reason, warnings = row
        duration = (finished - started).total_seconds() if started and finished else ""
        cells = [pk, flow, status, trigger, _iso(queued), _iso(started), _iso(finished), duration, attempt,
                 reason, len(warnings or [])]
        yield writer.writerow([safe_cell(cell) for cell in cells])
