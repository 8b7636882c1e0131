"""What makes a run durable: its checkpoint, its idempotency keys, parks and the fingerprint of its shapes.

A run records where it is after each page its receive shape has passed all the
way down the line (flows.execution commits it with the shapes' counters and
the lease renewal, one commit per page). The checkpoint holds positions only:

``segment``  the index of the segment in progress (a receive shape and the shapes after it);
``page``     how many pages of that segment's receive shape are done;
``source``   the receive shape's pagination state for its next page (page number,
             offset, cursor or next link);
``sent``     {shape position: sends acknowledged} within the page in progress;
``in_flight`` {"position", "index", "what", "ids"}: a send of an API without idempotency
             keys that went out and whose answer was not recorded yet;
``stages``   {shape position: counters a shape needs to go on (items accepted, ...)};
             a park adds the retry it interrupted and when it began;
``counts``   {shape position: the row's counters (items in/out, pages, requests, retries,
             waits) when the page was done}: the rows show counters moving within a page,
             so a resume starts from these.

A worker that resumes the run (a lost worker's next attempt, the end of a
park, or a retry from the checkpoint) reads the page in progress again and
sends again what was not acknowledged. Every send carries an idempotency key
that depends only on the run's origin, the shape and the batch (its records'
ids, or its position), so an API that honours keys stores a repeated send
once. For an API without keys, the one send that was in flight is *in doubt*:
it is not sent again, and the run page names its records.

A send acknowledged before is not made again, but what the API answered to it
still goes on to the shapes after it: those answers are kept sealed
(flows.models.FlowRunAnswer, see `seal_answers`) in the same commit as the
acknowledgement, for the sends whose answers another shape takes in, until the
page is done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from flows.models import Shape
from instances import crypto

# A wait shorter than this is slept on the worker; a longer one parks the run (a park costs a
# trip through the queue and reading the page in progress again).
PARK_AFTER_SECONDS = 5.0
# The most record ids named for one send in doubt (the run page lists them).
MAX_IDS_IN_DOUBT = 1000


@dataclass(frozen=True)
class Replayed:
    """A send an earlier stretch of the run made on the page in progress, and what the API answered to it then."""

    answers: list


class Parked(Exception):
    """The run's next request may only go at `until` (UTC): give the worker back and resume then.

    `reason` completes "waiting for ..." ("the rate limit of Shopify - UK").
    """

    def __init__(self, until: datetime, reason: str):
        super().__init__(f"waiting for {reason} until {until:%Y-%m-%d %H:%M:%S} UTC")
        self.until, self.reason = until, reason


def fingerprint(shapes: list[Shape]) -> str:
    """A digest of what the run's shapes are: a checkpoint is only valid for the shapes it was made with."""
    parts = [
        [shape.pk, shape.position, shape.kind, shape.instance_id, shape.endpoint_id, shape.config]
        for shape in shapes
    ]
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def record_id(item: object) -> str | None:
    """The id a record names itself by (`id`, else `reference`), when it is a plain value."""
    if isinstance(item, dict):
        for key in ("id", "reference"):
            value = item.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
                return str(value)
    return None


def ids_of(items: list) -> list[str] | None:
    """The ids of `items` when every one has one, else None."""
    ids = [record_id(item) for item in items]
    return None if any(i is None for i in ids) else ids  # type: ignore[return-value]


def idempotency_key(origin: int, shape_pk: int | None, page: int, index: int, items: list) -> str:
    """The key one send carries, the same for the same batch of the same run across resumes and retries.

    From the records' ids when every record has one (so a page that shifted
    since still maps each batch to its key), else from the batch's position:
    page number of the segment and index of the send within the page.
    """
    ids = ids_of(items)
    what = ["ids", *ids] if ids is not None else ["position", page, index]
    digest = hashlib.sha256(json.dumps([origin, shape_pk, *what], separators=(",", ":")).encode()).hexdigest()
    return f"pw-{origin}-{digest[:40]}"


def _answers_binding(origin: int, segment: int, page: int, position: int, index: int) -> str:
    # The run's idempotency origin, not its id: a retry from the checkpoint takes the answers over.
    return f"flow-run-answers:{origin}:{segment}:{page}:{position}:{index}"


def seal_answers(answers: list, origin: int, segment: int, page: int, position: int, index: int) -> str:
    """The answers to one send as they are stored (FlowRunAnswer.body): encrypted, bound to the send's place."""
    text = json.dumps(answers, separators=(",", ":"))
    return crypto.encrypt({"answers": text}, _answers_binding(origin, segment, page, position, index))


def open_answers(body: str, origin: int, segment: int, page: int, position: int, index: int) -> list | None:
    """What `seal_answers` stored; None when it does not open (a rotated-out key, tampering): the send then
    counts as before answers were kept, and the shapes after it do not get them."""
    try:
        text = crypto.decrypt(body, _answers_binding(origin, segment, page, position, index)).get("answers")
        answers = json.loads(text) if isinstance(text, str) else None
    except (crypto.CredentialDecryptError, ValueError):
        return None
    return answers if isinstance(answers, list) else None
