"""One module per shape kind, each providing a Stage class flows.execution streams pages through.

A page is a list of items (the records of one response page, or what a shape
made of them). Execution (flows.execution) hands every page a stage passes on to the next stage
before it asks for more, so at most one page per shape is held at a time. A
stage records what it did on its FlowRunShape row (created when the stage gets
its first page, or when it finishes without any) and raises ShapeFailed to
stop the run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from flows import dates
from flows.models import FlowRun, FlowRunShape, Shape, ShapeStatus
from instances import redaction
from instances.outbound import clean_text

# Per shape, at most this many error messages, warnings and failed exchanges are stored.
MAX_RECORDED_FAILURES = 20
MESSAGE_CHARS = 300
SAMPLE_ITEMS = 3
SAMPLE_BYTES = 16 * 1024
# A test step shows more of what came out of the shape it tests (and what a send shape would have sent).
TEST_SAMPLE_ITEMS = 10
TEST_SAMPLE_BYTES = 64 * 1024
NOT_SENT = "not sent: test step"


class ShapeFailed(Exception):
    """The shape cannot go on; the message (already redacted) becomes the run's failure reason."""


MISSING = object()

# A \u0000 escape in JSON text that is not itself an escaped backslash followed by "u0000".
NUL_ESCAPE_RE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def storable_json(text: str) -> str:
    """JSON text a jsonb column accepts: NUL (raw or escaped) and lone surrogates become U+FFFD."""
    text = clean_text(text)
    if "\\u0000" not in text:
        return text
    return NUL_ESCAPE_RE.sub(lambda m: m.group(1) + "\\ufffd", text)


def value_at(data: object, path: str) -> object:
    """The value at the dotted `path` of `data` (digits index lists), or MISSING."""
    current = data
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def set_value_at(data: dict, path: str, value: object) -> None:
    """Set the dotted `path` of `data` to `value`, making the objects on the way."""
    parts = path.split(".")
    current = data
    for part in parts[:-1]:
        if not isinstance(current.get(part), dict):
            current[part] = {}
        current = current[part]
    current[parts[-1]] = value


@dataclass
class Context:
    """What every stage of one run shares."""

    run: FlowRun
    reference_time: datetime
    last_success: datetime | None
    since: datetime | None
    # Between requests: raises when the run must stop (a stop request, a lost lease, past its duration).
    # In memory only: the lease renewal reads the stop request (flows.execution.Heartbeat).
    check: Callable[[], None]
    clients: dict = field(default_factory=dict)  # instance pk -> InstanceClient
    # The run's progress as the shapes see it (flows.execution.Progress): the page in progress,
    # sends acknowledged, idempotency origin. None outside a run (tests of one shape).
    progress: object = None
    # A test step ("test step" in the editor): send shapes record what they would send and send nothing.
    test: bool = False
    _secrets: tuple[str, ...] = field(default=(), init=False, repr=False)
    _variants: list[str] = field(default_factory=list, init=False, repr=False)

    @property
    def variants(self) -> list[str]:
        """Every secret the run's clients hold or have obtained so far, in every spelling it may appear in.

        Read afresh each time: a client obtains tokens during the run (a client
        credentials token at its first request, a refresh after a 401), and they
        are secrets from that moment. Rebuilt only when the secrets changed.
        """
        secrets = tuple(secret for client in self.clients.values() for secret in client.secret_values)
        if secrets != self._secrets:
            self._variants = redaction.secret_variants(list(secrets))
            self._secrets = secrets
        return self._variants

    @property
    def sample_items(self) -> int:
        return TEST_SAMPLE_ITEMS if self.test else SAMPLE_ITEMS

    @property
    def sample_bytes(self) -> int:
        return TEST_SAMPLE_BYTES if self.test else SAMPLE_BYTES

    def redact(self, text: str, *, limit: int | None = None) -> str:
        if limit is None:
            return redaction.scrub_text(text, self.variants)
        return redaction.truncate(text, limit, self.variants)

    def placeholders(self, instance) -> dict[str, str]:
        """The run's placeholders, written in `instance`'s time zone with its date format."""

        def moment(value: datetime | None) -> str:
            return dates.format(value, instance.date_format, instance.time_zone) if value else ""

        return {
            "since": moment(self.since),
            "run_time": moment(self.reference_time),
            "last_success": moment(self.last_success),
            "instance.time_zone": instance.time_zone,
            "instance.date_format": instance.date_format,
        }


class Stage:
    """A shape in a run: takes pages, passes pages on, keeps its counters on its FlowRunShape.

    The counters are written by flows.execution, once per page for every shape
    (`dirty` says which rows changed). What a shape needs to go on after a
    resume is named in RESUMED: counts only, kept in the run's checkpoint.
    """

    RESUMED: tuple[str, ...] = ("partial",)

    def __init__(self, shape: Shape, position: int, ctx: Context):
        self.shape, self.position, self.ctx = shape, position, ctx
        self.record: FlowRunShape | None = None
        self.partial = False  # items refused, or unsuccessful answers allowed through
        self.finished = False
        self.sample_in: list = []
        self.sample_out: list = []
        self.sample_sends: list = []  # a test step's send shape: the requests it would have made
        self._sampled = (0, 0, 0)
        self.dirty = False
        self.json_written: tuple | None = None  # the row's JSON fields as last written (see execution.json_changed)

    # --- naming ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.shape.kind

    @property
    def label(self) -> str:
        return f"Shape {self.position + 1} ({self.name})"

    # --- to implement ------------------------------------------------------

    def problems(self) -> list[str]:
        """Why the shape cannot run (checked before any request)."""
        return []

    def process(self, page: list) -> Iterator[list]:
        """The pages made of one incoming page."""
        raise NotImplementedError

    def finish(self) -> None:
        """No more pages will come (may raise ShapeFailed)."""

    # --- bookkeeping -------------------------------------------------------

    def open(self) -> FlowRunShape:
        if self.record is None:
            self.record = FlowRunShape.objects.create(
                run=self.ctx.run, position=self.position, shape=self.shape, shape_name=self.name[:400],
                started_at=timezone.now(),
            )
        return self.record

    def count_in(self, page: list) -> None:
        """Count a page this stage received (items_in) and keep its first items as the input sample."""
        self.open().items_in += len(page)
        self.keep(page, "in")
        most = self.ctx.sample_items
        if len(self.sample_in) < most:
            self.sample_in += page[: most - len(self.sample_in)]

    def count_out(self, page: list, *, keep: bool = True) -> None:
        """Count a page this stage passed on (items_out) and keep its first items as the output sample.

        `keep`: hand the page to the run page's steps too (False for items counted one by one, which
        are handed over as one page once it is done).
        """
        self.open().items_out += len(page)
        if keep:
            self.keep(page, "out")
        most = self.ctx.sample_items
        if len(self.sample_out) < most:
            self.sample_out += page[: most - len(self.sample_out)]

    def keep(self, page: list, direction: str) -> None:
        """Hand the page to the run's recorder for the run page's steps (flows.steps); no-op outside a run."""
        keep_records = getattr(self.ctx.progress, "keep_records", None)
        if keep_records is not None:
            keep_records(self, direction, page)

    def warn(self, message: str) -> None:
        record = self.open()
        if len(record.warnings) < MAX_RECORDED_FAILURES:
            record.warnings.append(self.ctx.redact(message, limit=MESSAGE_CHARS * 2))

    def error(self, message: str) -> None:
        record = self.open()
        self.partial = True
        if len(record.errors) < MAX_RECORDED_FAILURES:
            record.errors.append(self.ctx.redact(message, limit=MESSAGE_CHARS * 2))

    def payload_sample(self) -> dict:
        """The first items in and out (and a test step's sends not made), redacted with every secret of the flow,
        at most SAMPLE_BYTES of JSON (TEST_SAMPLE_BYTES for a test step)."""
        sample = {"in": list(self.sample_in), "out": list(self.sample_out)}
        if self.sample_sends:
            sample["sends"] = list(self.sample_sends)
        # Scrubbing the JSON text with these scrubs every string of the items (keys too), however escaped.
        variants = redaction.in_json_text(self.ctx.variants)
        most_bytes = self.ctx.sample_bytes
        while True:
            text = storable_json(redaction.scrub_text(json.dumps(sample, default=str, ensure_ascii=False), variants))
            if len(text.encode()) <= most_bytes:
                try:
                    return json.loads(text)
                except ValueError:
                    return {"text": text}
            longer = max(sample, key=lambda side: len(sample[side]))
            if sum(len(items) for items in sample.values()) <= 1:
                cut = redaction.scrub_cut(text[: most_bytes // 4], variants)
                return {"text": cut + "\N{HORIZONTAL ELLIPSIS}"}
            sample[longer] = sample[longer][:-1]

    def save(self) -> None:
        """Mark the counters for the run's next commit (flows.execution writes every shape's at once)."""
        record = self.open()
        sampled = (len(self.sample_in), len(self.sample_out), len(self.sample_sends))
        if sampled != self._sampled:
            record.payload_sample = self.payload_sample()
            self._sampled = sampled
        self.dirty = True

    def close(self, status: str) -> None:
        record = self.open()
        if status == ShapeStatus.SUCCESS and (record.errors or self.partial):
            status = ShapeStatus.PARTIAL_SUCCESS
        record.status = status
        record.finished_at = timezone.now()
        self.finished = True
        self.save()

    # --- resuming ------------------------------------------------------------

    def resume(self, record: FlowRunShape, state: dict) -> None:
        """Go on with `record` (written by an earlier stretch of the run) and the counts kept in the checkpoint."""
        self.record = record
        self.finished = record.status != ShapeStatus.RUNNING
        for name in dict.fromkeys((*self.RESUMED, *self.PARKED)):
            if name in state and isinstance(state[name], type(getattr(self, name))):
                setattr(self, name, state[name])
        if record.payload_sample:  # the sample of the first pages is kept
            most = self.ctx.sample_items
            self.sample_in = [None] * most
            self.sample_out = [None] * most
            self.sample_sends = [None] * most
            self._sampled = (most, most, most)

    def state(self) -> dict:
        return {name: getattr(self, name) for name in self.RESUMED}

    # Names of what the stage keeps when the run parks mid-page (see park_state).
    PARKED: tuple[str, ...] = ()

    def park_state(self) -> dict:
        """What the checkpoint keeps of this stage when the run parks in the middle of a page.

        A park keeps the checkpoint of the last page done, but the request it
        interrupted (its retry, when the park began) is taken up on resume.
        """
        return {name: getattr(self, name) for name in self.PARKED if getattr(self, name)}
