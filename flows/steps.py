"""The run page's steps: the records each shape took in and passed on in each page, and every request it made.

Keeping: the shapes hand the run's Recorder (flows.execution.Execution.recorder)
each page of records and each exchange as they go. Both are redacted at once
(every secret of the run's instances, tokens obtained during the run included,
in every spelling; sensitive header, query and field names), cut to
FLOW_PAYLOAD_BODY_MAX_BYTES and held in memory until the page's checkpoint
commit writes them (one bulk_create per model in that transaction). A page a
resumed run redoes was therefore never stored by the attempt that lost it, and
the unique constraints on (shape run, page, ...) say so to the database. Past
FLOW_RUN_PAYLOADS_MAX_BYTES per run nothing more is kept (the run goes on).

Reading: a page's records are stored as JSON Lines, so a body cut at the cap
still reads record by record; `records_page` searches and pages them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db import DataError, connection, models, transaction
from django.utils import timezone

from flows.models import FlowRun, FlowRunPayload, FlowRunRequest, FlowRunShape
from flows.shapes import bounds, storable_json
from instances import redaction
from instances.outbound import Exchange, clean_text
from instances.outbound.exchange import RECORDED_HEADER_CHARS

logger = logging.getLogger(__name__)

RECORDS_PER_SCREEN = 50
PAGES_PER_SCREEN = 20
MESSAGE_CHARS = 600
# One encoder for every record (json.dumps with options builds a new one per call).
ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


def body_cap_text() -> str:
    return bounds.size_text(settings.FLOW_PAYLOAD_BODY_MAX_BYTES)


def run_cap_text() -> str:
    return bounds.size_text(settings.FLOW_RUN_PAYLOADS_MAX_BYTES)


def cut(text: str, limit: int, variants: list[str]) -> tuple[str, bool]:
    """`text` (already redacted) within `limit` bytes of UTF-8, leaving no first part of a secret at the cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text, False
    return redaction.scrub_cut(raw[:limit].decode("utf-8", errors="ignore"), variants), True


class Recorder:
    """What one stretch of a run keeps for the run page, until the next checkpoint writes it."""

    def __init__(self, run: FlowRun):
        self.run = run
        self.payloads: list[FlowRunPayload] = []
        self.requests: list[FlowRunRequest] = []
        self.written = run.payload_bytes  # stored by earlier commits (earlier stretches included)
        self.pending = 0
        self.capped = self.capped_written = run.payloads_capped
        self.batches: dict[tuple[int, int, str], int] = {}
        self.numbers: dict[tuple[int, int], int] = {}
        self._variants: tuple[list[str] | None, list[str]] = (None, [])
        self._last_page: tuple | None = None  # (items, variants, text, truncated) of the last page written

    # --- keeping --------------------------------------------------------------------------

    def room_for(self, size: int) -> bool:
        """Whether `size` more bytes fit under the run's cap; once one does not, nothing more is kept."""
        if self.capped:
            return False
        if self.written + self.pending + size > settings.FLOW_RUN_PAYLOADS_MAX_BYTES:
            self.capped = True
            return False
        self.pending += size
        return True

    def json_variants(self, variants: list[str]) -> list[str]:
        """`variants` as they read inside JSON text, rebuilt only when the run's secrets changed."""
        if self._variants[0] is not variants:
            self._variants = (variants, redaction.in_json_text(variants))
        return self._variants[1]

    def keep_records(self, record: FlowRunShape, page: int, direction: str, items: list, variants: list[str]) -> None:
        """One page (or batch) of records `record`'s shape took in or passed on, redacted, as JSON Lines."""
        if self.capped:
            return
        key = (record.pk, page, direction)
        self.batches[key] = batch = self.batches.get(key, 0) + 1
        if self._last_page is not None and self._last_page[0] is items and self._last_page[1] is variants:
            # What one shape passed on is what the next one took in: the same list, written once.
            text, truncated = self._last_page[2:]
        else:
            text, truncated = self.records_text(items, variants)
            self._last_page = (items, variants, text, truncated)
        size = len(text.encode())
        if not self.room_for(size):
            return
        self.payloads.append(FlowRunPayload(
            run_id=self.run.pk, shape_run=record, page=page, batch=batch, direction=direction, records=len(items),
            body=text, size=size, truncated=truncated, created_at=timezone.now(),
        ))

    def records_text(self, items: list, variants: list[str]) -> tuple[str, bool]:
        """`items` as redacted JSON Lines within FLOW_PAYLOAD_BODY_MAX_BYTES (cut between records), and if cut."""
        text = "\n".join(map(ENCODER.encode, items))
        # A secret never spans lines: json.dumps escapes line breaks inside strings.
        text = storable_json(redaction.scrub_text(text, self.json_variants(variants)))
        limit = settings.FLOW_PAYLOAD_BODY_MAX_BYTES
        if len(text.encode()) <= limit:
            return text, False
        kept, size = [], 0
        for line in text.split("\n"):
            size += len(line.encode()) + 1
            if size > limit:
                break
            kept.append(line)
        # A record larger than the cap alone is kept cut (it then reads as text, not JSON).
        return ("\n".join(kept) if kept else cut(text.split("\n", 1)[0], limit, self.json_variants(variants))[0]), True

    def keep_request(self, record: FlowRunShape, page: int, exchange: Exchange, attempt: int,
                     variants: list[str]) -> None:
        """One request and its answer, redacted whole, then cut to the body cap."""
        if self.capped:
            return
        key = (record.pk, page)
        self.numbers[key] = number = self.numbers.get(key, 0) + 1
        ok = not exchange.error and exchange.response_status is not None and 200 <= exchange.response_status < 300
        message = exchange.error or (exchange.status_text() if exchange.response_status else "no answer")
        limit = settings.FLOW_PAYLOAD_BODY_MAX_BYTES
        stored = redaction.redact_exchange(
            {**exchange.as_record(), "message": message}, [], variants=variants, body_limit=limit,
            header_limit=RECORDED_HEADER_CHARS,
        )
        request_body, request_cut = cut(stored["request_body"], limit, variants)
        response_body, response_cut = cut(stored["response_body"], limit, variants)
        headers_in = {clean_text(k): clean_text(v) for k, v in stored["request_headers"].items()}
        headers_out = {clean_text(k): clean_text(v) for k, v in stored["response_headers"].items()}
        url = clean_text(stored["request_url"])
        size = sum(len(text.encode()) for text in (url, request_body, response_body, json.dumps(headers_in),
                                                   json.dumps(headers_out), stored["error"]))
        if not self.room_for(size):
            return
        self.requests.append(FlowRunRequest(
            run_id=self.run.pk, shape_run=record, page=page, number=number, attempt=attempt,
            request_method=exchange.request_method[:10], request_url=url, request_headers=headers_in,
            request_body=clean_text(request_body), request_truncated=request_cut,
            response_status=exchange.response_status, response_headers=headers_out,
            response_body=clean_text(response_body),
            response_truncated=response_cut or bool(stored.get("response_truncated")),
            ok=ok, message=clean_text(stored["message"])[:MESSAGE_CHARS], error=clean_text(stored["error"]),
            rate_limit_note=clean_text(redaction.scrub_text(exchange.rate_limit_note, variants))[:300],
            duration_ms=max(exchange.duration_ms, 0), rate_limit_wait_ms=max(exchange.rate_limit_wait_ms, 0),
            pool_wait_ms=max(exchange.pool_wait_ms, 0), size=size, created_at=timezone.now(),
        ))

    # --- the checkpoint ----------------------------------------------------------------------

    def fields(self, *, page_done: bool) -> dict:
        """The run's fields a commit writes: with the page's rows (page_done) or without them."""
        if page_done:
            return {"payload_bytes": self.written + self.pending, "payloads_capped": self.capped}
        return {"payload_bytes": self.written, "payloads_capped": self.capped_written}

    def write(self, *, alone: bool = True) -> None:
        """Store what was kept since the last checkpoint, inside the checkpoint's transaction.

        `alone` (a savepoint of its own): what the database refuses to store is
        left out (and logged), since the run page's steps never stop a run.
        Without it a refusal fails the whole commit, which is then made again
        with `alone` (flows.execution.Execution.commit).
        """
        if not self.payloads and not self.requests:
            return
        if not alone:
            insert_rows(self.payloads)
            insert_rows(self.requests)
            return
        try:
            with transaction.atomic():
                insert_rows(self.payloads)
                insert_rows(self.requests)
        except DataError:
            logger.warning("Flow run %s: the database refused a page's records or requests; they were not kept.",
                           self.run.pk, exc_info=True)
            self.pending = 0

    def written_now(self) -> None:
        """The checkpoint's transaction committed: what it held is stored."""
        self.written += self.pending
        self.capped_written = self.capped
        self.payloads, self.requests, self.pending = [], [], 0

    def drop(self) -> None:
        """Forget what the page in progress kept: it is done again when the run resumes (a park)."""
        self.payloads, self.requests, self.pending = [], [], 0
        self.capped = self.capped_written
        self.batches, self.numbers = {}, {}


def insert_rows(rows: list[models.Model]) -> None:
    """INSERT `rows` (of one model) with one executemany, their primary keys left to the database.

    bulk_create sends PostgreSQL one array per column (INSERT ... UNNEST),
    which the driver quotes element by element in Python: for bodies of tens
    of kilobytes that cost more than the rest of a page's bookkeeping.
    """
    if not rows:
        return
    meta = rows[0]._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    values = [[field.get_db_prep_save(getattr(row, field.attname), connection) for field in fields] for row in rows]
    with connection.cursor() as cursor:
        if len(values) == 1:  # executemany's pipeline costs more than the one row it sends
            cursor.execute(sql, values[0])
        else:
            cursor.executemany(sql, values)


# --- reading -------------------------------------------------------------------------------------


@dataclass
class Records:
    page: Page  # of (number, pretty JSON text)
    total: int
    matched: int


def records_page(payload: FlowRunPayload, query: str, number: str | int | None) -> Records:
    """The payload's records containing `query` (case-insensitive, in their JSON), RECORDS_PER_SCREEN a screen."""
    lines = payload.body.split("\n") if payload.body else []
    needle = query.casefold()
    found = [(n, line) for n, line in enumerate(lines, start=1) if not needle or needle in line.casefold()]
    screen = Paginator(found, RECORDS_PER_SCREEN).get_page(number)
    screen.object_list = [(n, pretty(line)) for n, line in screen.object_list]
    return Records(screen, len(lines), len(found))


def pretty(line: str) -> str:
    try:
        return json.dumps(json.loads(line), indent=2, ensure_ascii=False)
    except ValueError:
        return line


@dataclass
class StepPage:
    number: int
    payloads: list[FlowRunPayload]
    requests: list[FlowRunRequest]


def step_pages(shape_run: FlowRunShape, number: str | int | None) -> tuple[Page, list[StepPage]]:
    """The shape's pages, PAGES_PER_SCREEN a screen, with their payloads and requests (bodies not loaded).

    Four queries whatever the number of pages: the page numbers, then this
    screen's payloads and requests.
    """
    numbers = sorted(
        set(shape_run.payloads.order_by().values_list("page", flat=True).distinct())
        | set(shape_run.stored_requests.order_by().values_list("page", flat=True).distinct())
    )
    screen = Paginator(numbers, PAGES_PER_SCREEN).get_page(number)
    shown = list(screen.object_list)
    payloads = shape_run.payloads.filter(page__in=shown).defer("body").order_by("page", "batch", "direction")
    requests = shape_run.stored_requests.filter(page__in=shown).only(
        "id", "run_id", "shape_run_id", "page", "number", "attempt", "request_method", "request_url",
        "response_status", "ok", "duration_ms", "rate_limit_wait_ms", "pool_wait_ms", "error",
    ).order_by("page", "number")
    by_page = {n: StepPage(n, [], []) for n in shown}
    for payload in payloads:
        by_page[payload.page].payloads.append(payload)
    for request in requests:
        by_page[request.page].requests.append(request)
    return screen, list(by_page.values())
