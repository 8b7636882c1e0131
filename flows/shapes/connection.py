"""Connection shapes: one instance and one endpoint of its connector, called through the instance client.

A receive endpoint is read page by page (its pagination style, see `Pages`)
and every non-empty page is passed on before the next is requested. A send
endpoint sends each incoming item (or each incoming page as one batch, per the
shape's `send_as`) and passes the answers on. Items the API refuses are errors
of the shape (partial success); when none is accepted the shape fails. With
`allow_unsuccessful` a 4xx/5xx answer is a warning instead and the run goes on.

The shape's config (see the contract in Shape's docstring):
``timeout`` seconds per request (1-120), ``retries`` (0-2) on a transport
error, 5xx or 429 the client gave up on (paused as the outbound client's one
retry policy says: exponential with jitter, the API's Retry-After honoured),
``allow_unsuccessful``, ``send_as``
("item" | "batch") and ``parameters`` (values for the endpoint's declared
request parameters; ``{{since}}``, ``{{run_time}}``, ``{{last_success}}``,
``{{instance.time_zone}}``, ``{{instance.date_format}}`` and the instance's
variables are filled in).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urljoin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings

from connectors.manifest import PLACEHOLDER_RE
from connectors.models import BodyEncoding, Direction
from flows import dates, durability, parameters
from flows.shapes import (
    MAX_RECORDED_FAILURES,
    MESSAGE_CHARS,
    MISSING,
    NOT_SENT,
    Context,
    ShapeFailed,
    Stage,
    bounds,
    value_at,
)
from instances.outbound import ClientError, Exchange, InstanceClient, retry

DEFAULT_TIMEOUT = 30
MAX_TIMEOUT = 120
MAX_RETRIES = 2
# A next link seen before ends the pages (a loop); a checkpoint keeps the last this many.
MAX_SEEN_LINKS = 50
LINK_NEXT_RE = re.compile(r'<\s*([^>]*)\s*>\s*;[^,]*\brel\s*=\s*"?[^",]*\bnext\b', re.IGNORECASE)


def records_of(data: object) -> tuple[list, str]:
    """The records in a response body: a top-level list, or the first list value of an object."""
    if isinstance(data, list):
        return data, ""
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, list):
                return value, ""
        return [data], "The response holds no list of records; it was passed on as one item."
    return [], "The response is not JSON; nothing was passed on."


def settings_of(shape) -> tuple[dict, list[str]]:
    """The shape's connection settings with defaults filled in, and what is wrong with them."""
    config = shape.config if isinstance(shape.config, dict) else {}
    problems = []

    def number(key: str, default: int, low: int, high: int) -> int:
        value = config.get(key, default)
        if value in (None, ""):
            return default
        try:
            value = int(value)
        except (TypeError, ValueError):
            value = None
        if value is None or not low <= value <= high:
            problems.append(f"{key} must be a whole number from {low} to {high}.")
            return default
        return value

    timeout, retries = number("timeout", DEFAULT_TIMEOUT, 1, MAX_TIMEOUT), number("retries", 0, 0, MAX_RETRIES)
    parameters = config.get("parameters") or {}
    if not isinstance(parameters, dict):
        problems.append("parameters must be a set of name: value pairs.")
        parameters = {}
    send_as = config.get("send_as") or "item"
    if send_as not in ("item", "batch"):
        problems.append('send_as must be "item" or "batch".')
        send_as = "item"
    return {
        "timeout": timeout,
        "retries": retries,
        "allow_unsuccessful": bool(config.get("allow_unsuccessful", False)),
        "send_as": send_as,
        "parameters": {str(k): "" if v is None else str(v) for k, v in parameters.items()},
    }, problems


def fill(template: str, values: dict[str, str]) -> str:
    """``{{placeholders}}`` replaced by their values; one without a value becomes empty text."""
    return PLACEHOLDER_RE.sub(lambda m: str(values.get(m.group(1), "") or ""), template)


class Connection(Stage):
    RESUMED = (*Stage.RESUMED, "accepted", "sent_items", "item_number", "sent_requests", "retrying", "in_doubt_items")
    # Kept in the checkpoint when the run parks (see park_state): the retry a park interrupted, and when the
    # park began, so the resumed request counts as that retry and the park counts as time waited.
    PARKED = ("retrying", "parked_since")

    def __init__(self, shape, position: int, ctx: Context):
        super().__init__(shape, position, ctx)
        self.config, self.config_problems = settings_of(shape)
        self.client: InstanceClient | None = None
        self.query: dict[str, str] = {}
        self.headers: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self.sent_requests = 0
        self.accepted = 0
        self.sent_items = 0
        self.last_problem = ""
        self.item_number = 0
        self.retrying = 0  # the retry a park interrupted, taken up again on resume
        self.parked_since = ""  # when a park for the instance's rate limit began (ISO), counted on resume
        self.in_doubt_items = 0
        self.not_sent = [0, 0]  # a test step: requests and items it would have sent
        self.in_page_total = 0
        self.keyed = False  # whether the send in flight carries an idempotency key
        self.next_source: dict | None = None  # a receive shape's pagination state for its next page
        self._page, self._send_index = -1, 0

    @property
    def name(self) -> str:
        shape = self.shape
        instance = shape.instance.name if shape.instance_id else "no instance"
        target = shape.endpoint.name if shape.endpoint_id else f"missing endpoint {shape.missing_endpoint}".strip()
        return f"{instance} → {target}"

    @property
    def receives(self) -> bool:
        return self.shape.endpoint.direction == Direction.RECEIVE

    # --- before any request ----------------------------------------------------

    def problems(self) -> list[str]:
        shape, run = self.shape, self.ctx.run
        if not shape.instance_id:
            return ["it has no instance. Choose an instance for this shape."]
        if shape.instance.company_id != run.company_id:
            return ["the instance is not one of this company's."]
        if shape.endpoint_id is None:
            return ["its endpoint was removed by a connector update. Choose another endpoint for this shape."]
        if shape.endpoint.connector_id != shape.instance.connector_id:
            return ["the endpoint does not belong to the instance's connector."]
        problems = list(self.config_problems)
        endpoint = shape.endpoint
        if not self.receives and self.config["send_as"] == "batch" and endpoint.body_encoding == BodyEncoding.FORM:
            problems.append("a batch is sent as a JSON list, but the endpoint sends form data. Send items one by one.")
        self.client = self.ctx.clients[shape.instance_id]
        try:
            placeholders = self.ctx.placeholders(shape.instance)
        except dates.DateError as exc:
            return [*problems, f"the instance's date settings cannot write the run's dates: {exc}."]
        values = {**self.client.values, **placeholders}
        self.query = {str(k): fill(str(v), values) for k, v in (endpoint.parameters or {}).items()}
        self.query = {k: v for k, v in self.query.items() if v != ""}
        # A value set on the shape (not the endpoint's default) never carries a secret (flows/parameters.py).
        secrets = parameters.secret_keys(endpoint.connector_id, self.client.secrets)
        for declared in endpoint.request_parameters or []:
            name = str(declared.get("name", ""))
            if not name:
                continue
            given = self.config["parameters"].get(name, "")
            if used := parameters.secrets_used(given, secrets):
                refused = parameters.refusal(str(declared.get("location") or "query"), name, used)
                problems.append(refused[0].lower() + refused[1:] + " Set another value on the shape.")
                continue
            value = fill(given if given != "" else str(declared.get("default") or ""), values)
            if value == "":
                if declared.get("required"):
                    problems.append(
                        f'the required parameter "{declared.get("label") or name}" has no value. '
                        "Set it on the shape."
                    )
                continue
            target = {"header": self.headers, "body": self.body}.get(declared.get("location") or "query", self.query)
            target[name] = value
        return problems

    # --- requests ------------------------------------------------------------

    def call(self, *, url: str | None = None, params: dict | None = None, headers: dict | None = None, **body) -> Exchange:
        """One request with the shape's timeout and retries; waits out a rate limit throttle (see wait_until)."""
        endpoint, record = self.shape.endpoint, self.open()
        policy = retry.for_shape(self.config["retries"])
        attempt, self.retrying = self.retrying, 0
        while True:
            self.ctx.check()
            self.sent_requests += 1
            record.requests += 1
            kwargs = {"headers": self.call_headers(headers), "params": params or {}, "timeout": self.config["timeout"], **body}
            kwargs["allow_cross_origin_redirects"] = endpoint.follow_redirects_to_other_origins
            self.client.on_wait = self.heard_wait
            try:
                if url:
                    exchange = self.client.request_url(endpoint.method, url, **kwargs)
                else:
                    exchange = self.client.request(endpoint.method, endpoint.path, **kwargs)
            except ClientError as exc:
                record.requests -= 1
                raise ShapeFailed(self.ctx.redact(f"The request could not be built: {exc}.")) from exc
            record.rate_limit_wait_ms += exchange.rate_limit_wait_ms
            record.pool_wait_ms += exchange.pool_wait_ms
            if exchange.throttled_until is not None:
                record.requests -= 1  # nothing was sent
                self.wait_until(exchange.throttled_until)
                continue
            keep_request = getattr(self.ctx.progress, "keep_request", None)
            if keep_request is not None:
                keep_request(self, exchange, attempt + 1)
            if policy.allows(attempt) and self.retryable(exchange):
                seconds = policy.pause(attempt, headers=exchange.response_headers)
                attempt += 1
                record.retries += 1
                if seconds > max(settings.OUTBOUND_RATE_LIMIT_MAX_WAIT, durability.PARK_AFTER_SECONDS):
                    self.retrying = attempt
                    until = datetime.now(UTC) + timedelta(seconds=seconds)
                    raise durability.Parked(until, f"{self.shape.instance.name}'s API to be ready again (it answered "
                                                   f"{exchange.status_text() if exchange.response_status else 'nothing'})")
                self.doing(f"waiting {seconds:.0f} s before retry {attempt} of {policy.retries}", now_or_never=True)
                self.pause(seconds)
                continue
            return exchange

    @staticmethod
    def retryable(exchange: Exchange) -> bool:
        status = exchange.response_status
        if status is None:
            # Transport errors; not a refused destination or credentials to enter again.
            return bool(exchange.error) and not exchange.error.startswith(("Blocked", "Re-authentication"))
        return status >= 500 or status == 429

    def pause(self, seconds: float) -> None:
        """Sleep (at most OUTBOUND_RATE_LIMIT_MAX_WAIT), checking for a stop request at least every second."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 1.0))
            self.ctx.check()

    def wait_until(self, until: datetime) -> None:
        """The instance's rate limit lets the request go only at `until`, further than a worker waits.

        The client throttles a request only when its wait would be longer than
        OUTBOUND_RATE_LIMIT_MAX_WAIT, so the run parks: it gives its worker
        back and is queued again for that moment (flows.execution), and the
        limit holds exactly meanwhile, since nothing was taken from it.
        """
        seconds = (until - datetime.now(UTC)).total_seconds()
        if seconds <= durability.PARK_AFTER_SECONDS:
            started = time.monotonic()
            self.doing(f"waiting for the rate limit of {self.shape.instance.name} until {self.company_time(until)}",
                       now_or_never=True)
            self.pause(max(seconds, 0.05))
            self.open().rate_limit_wait_ms += int((time.monotonic() - started) * 1000)  # counted like the client's waits
            return
        self.parked_since = datetime.now(UTC).isoformat()
        raise durability.Parked(until, f"the rate limit of {self.shape.instance.name}")

    def resume(self, record, state: dict) -> None:
        """Go on after an earlier stretch; the time parked for the rate limit counts as time waited for it."""
        super().resume(record, state)
        if self.parked_since:
            try:
                since = datetime.fromisoformat(self.parked_since)
            except ValueError:
                since = None
            if since is not None and since.tzinfo is not None:
                record.rate_limit_wait_ms += max(0, int((datetime.now(UTC) - since).total_seconds() * 1000))
            self.parked_since = ""

    def heard_wait(self, what: str, seconds: float | None) -> None:
        """The client is about to wait before a request: say so on the run page (see limits.TimeWaited)."""
        instance = self.shape.instance
        if what == "pool":
            pool = instance.connection_pool
            self.doing(f'waiting for a slot of connection pool "{pool.name}" (all {pool.limit:,} in use)')
        elif seconds is not None and seconds >= 0.5:
            until = datetime.now(UTC) + timedelta(seconds=seconds)
            self.doing(f"waiting for the rate limit of {instance.name} until {self.company_time(until)}")

    def company_time(self, moment: datetime) -> str:
        """`moment` as the run page shows it: the company's time of day and time zone."""
        zone = self.ctx.run.company.time_zone or "UTC"
        try:
            local = moment.astimezone(ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError):
            local, zone = moment.astimezone(UTC), "UTC"
        return f"{local:%H:%M:%S} ({zone})"

    def failure(self, exchange: Exchange) -> str | None:
        """Why the request failed (redacted), keeping the redacted exchange; None when it succeeded."""
        if not exchange.error and exchange.response_status and 200 <= exchange.response_status < 300:
            return None
        if exchange.error:
            message = exchange.error
        else:
            message = f"The API answered {exchange.status_text()}."
            detail = exchange.api_message()
            if detail:
                message += f' The API said: "{detail.rstrip(".")}".'
        message = self.ctx.redact(self.client.redact(message), limit=MESSAGE_CHARS)
        if exchange.response_status == 409 and self.keyed and not self.receives:
            message += (
                " The API refused this send's idempotency key: it was first used with another body "
                "(the records changed since this run, or the run it retries, first sent them). "
                "Run the flow again from the start to send them with new keys."
            )
        record = self.open()
        if len(record.failed_exchanges) < MAX_RECORDED_FAILURES:
            stored = self.client.record_of(exchange, message)
            record.failed_exchanges.append(stored)
        return message

    def allowed(self, exchange: Exchange) -> bool:
        """An unsuccessful status the shape lets through (a warning, the run goes on)."""
        return self.config["allow_unsuccessful"] and exchange.response_status is not None and not exchange.error

    # --- receive -------------------------------------------------------------

    def pages(self) -> Iterator[list]:
        """The endpoint's pages of records, each passed on before the next is requested."""
        self.open()
        progress = self.ctx.progress
        yield from Pages(self).pages(progress.source_state(self.position) if progress is not None else None)

    # --- send ----------------------------------------------------------------

    def doing(self, text: str, **kwargs) -> None:
        if self.ctx.test and text.startswith("sending"):
            text = "preparing (not sending, test step)" + text.removeprefix("sending")
        if self.ctx.progress is not None:
            self.ctx.progress.doing(f"{self.label}: {text}", **kwargs)

    def process(self, page: list) -> Iterator[list]:
        self.in_page_total = self.sent_items + len(page)
        self.count_in(page)
        self.answers = bounds.PageSize(len(page), "The API's answers to one page are too large to pass on.")
        if self.config["send_as"] == "batch":
            out = self.send_batch(page)
            self.count_out(out)
        else:
            out = []
            for item in page:
                if (answer := self.send_item(item)) is not MISSING:
                    out.append(answer)
                    self.count_out([answer], keep=False)  # item by item, so the run page's figures move as items go
            if out:
                self.keep(out, "out")
        if out:
            yield out

    def body_for(self, item: object) -> dict:
        encoding = self.shape.endpoint.body_encoding
        if encoding == BodyEncoding.FORM:
            if not isinstance(item, dict):
                raise ValueError("an item sent as form data must be an object")
            form = {str(k): v if isinstance(v, str) else _json_text(v) for k, v in item.items()}
            return {"data": {**form, **self.body}}
        if self.body and isinstance(item, dict):
            item = {**item, **self.body}
        return {"json_body": item}

    def send_item(self, item: object) -> object:
        self.item_number += 1
        self.sent_items += 1
        try:
            body = self.body_for(item)
        except ValueError as exc:
            self.error(f"Item {self.item_number}: {exc}.")
            self.last_problem = str(exc)
            return MISSING
        size = bounds.json_size(item)
        if size > settings.FLOW_MAX_REQUEST_BYTES:
            self.oversized(f"Item {self.item_number}", size)
            return MISSING
        what = f"Item {self.item_number}"
        self.doing(f"sending item {self.item_number:,} of {self.in_page_total:,} received so far")
        exchange = self.deliver([item], what, **body)
        if isinstance(exchange, durability.Replayed):
            return exchange.answers[0] if exchange.answers else MISSING
        if exchange is None:
            return MISSING
        problem = self.failure(exchange)
        if problem:
            self.refused(what, problem, exchange)
            self.acknowledged(1, 0, 0)
            return MISSING
        self.accepted += 1
        answer = exchange.json if exchange.json is not None else {}
        self.answers.add(len(exchange.response_body))
        bounds.check_depth([answer], f"the answer to item {self.item_number}")
        self.acknowledged(1, 1, 1, [answer])
        return answer

    # --- delivery: idempotency keys, acknowledgements, sends in doubt -----------

    @property
    def idempotent(self) -> bool:
        """Whether each send carries a key: a header always can; a body field only in an item's object.

        A batch is a JSON list, which has no field to carry it: sent to an endpoint
        that takes its key in the body, a batch is treated as an API without keys.
        """
        endpoint = self.shape.endpoint
        where = getattr(endpoint, "idempotency_key_in", "none")
        if not getattr(endpoint, "idempotency_key_name", "") or where not in ("header", "body"):
            return False
        return where == "header" or self.config["send_as"] == "item"

    def deliver(self, items: list, what: str, **body) -> Exchange | durability.Replayed | None:
        """Send one item or batch, unless a stretch of the run before this one already did.

        On a resumed page, a send acknowledged before is not sent again (it is
        counted as it was, and what the API answered then, when it was kept,
        goes on as a Replayed); the one send of an API without idempotency keys
        that was in flight when the worker was lost is *in doubt*: not sent
        again, named on the run page. Otherwise the send carries the run's
        idempotency key for it (as the endpoint declares), or, without keys,
        is marked in flight in the checkpoint before it goes.
        """
        if self.ctx.test:
            self.would_send(items, what, **body)
            return None
        progress = self.ctx.progress
        index = self.next_send_index()
        if progress is not None:
            earlier = progress.earlier_send(self.position, index)
            if earlier is not None:
                return self.count_earlier(earlier, items, what)
        endpoint = self.shape.endpoint
        headers = None
        self.keyed = False
        if progress is not None and self.idempotent:
            key = durability.idempotency_key(progress.origin, self.shape.pk, progress.page, index, items)
            name, self.keyed = endpoint.idempotency_key_name, True
            if endpoint.idempotency_key_in == "header":
                headers = {**self.headers, name: key}
            elif isinstance(body.get("json_body"), dict):
                body["json_body"] = {**body["json_body"], name: key}
            elif isinstance(body.get("data"), dict):
                body["data"] = {**body["data"], name: key}
            else:  # an item that is no object has no field for the key
                self.keyed = False
        if progress is not None and not self.keyed:
            progress.in_flight(self.position, index, what, durability.ids_of(items))
        self._requests_before = self.open().requests
        try:
            return self.call(params=self.query, headers=headers, **body)
        except durability.Parked:
            if progress is not None:
                progress.in_flight_mark = None  # throttled before it went, or answered: not in doubt
            raise

    def would_send(self, items: list, what: str, **body) -> None:
        """A test step sends nothing: keep the request it would have made (redacted with the sample)."""
        self.not_sent[0] += 1
        self.not_sent[1] += len(items)
        if len(self.sample_sends) >= self.ctx.sample_items:
            return
        endpoint = self.shape.endpoint
        try:
            url = self.client.url_for(endpoint.path)
        except ClientError as exc:
            url = f"{endpoint.path} (the URL could not be built: {exc})"
        if self.query:
            url += ("&" if "?" in url else "?") + urlencode(self.query)
        request = {"what": what, "method": endpoint.method, "url": url, "note": NOT_SENT}
        if self.headers:
            request["headers"] = dict(self.headers)
        if isinstance(body.get("json_body"), list) and len(body["json_body"]) > self.ctx.sample_items:
            # A batch: its first items show what it holds, within the sample's size.
            request["body"] = body["json_body"][: self.ctx.sample_items]
            request["batch_items"] = len(body["json_body"])
        elif "json_body" in body:
            request["body"] = body["json_body"]
        elif "data" in body:
            request["form"] = body["data"]
        self.sample_sends.append(request)

    def next_send_index(self) -> int:
        page = self.ctx.progress.page if self.ctx.progress is not None else 0
        if page != self._page:
            self._page, self._send_index = page, 0
        index = self._send_index
        self._send_index += 1
        return index

    def acknowledged(self, items: int, accepted: int, answers: int, answered: list | None = None) -> None:
        """The send just made is done (accepted or refused): remember it, so a resume does not make it again
        (and `answered`, what the API answered, so that a resume still passes it on).

        Without idempotency keys the acknowledgement is written at once (it
        clears the send's in-flight mark); with keys it is written with the
        page, since sending again is harmless.
        """
        if self.ctx.progress is not None:
            requests = self.open().requests - getattr(self, "_requests_before", 0)
            self.ctx.progress.acknowledged(
                self.position, [items, accepted, answers, requests], durable=not self.keyed, answers=answered
            )

    def count_earlier(self, earlier, items: list, what: str) -> durability.Replayed | None:
        """Count a send an earlier stretch of the run made (or left in doubt) as it was; its answers, when kept.

        Kept answers go on like fresh ones, and are counted out where they are passed on.
        """
        record = self.open()
        if earlier.in_doubt:
            self.partial = True
            self.warn(
                f"{what}: in doubt. It was being sent when the worker was lost, and the API takes no "
                "idempotency key, so it was not sent again; check whether the API stored it."
            )
            self.ctx.progress.note_in_doubt(self.label, what, durability.ids_of(items))
            self.in_doubt_items += len(items)
            return None
        self.accepted += earlier.accepted
        record.requests += earlier.requests
        if earlier.answered is not None:
            self.answers.add(bounds.json_size(earlier.answered), earlier.items)
            return durability.Replayed(earlier.answered)
        record.items_out += earlier.answers
        return None

    def call_headers(self, headers: dict | None) -> dict:
        return dict(self.headers) if headers is None else dict(headers)

    def send_batch(self, page: list) -> list:
        """The page in as few requests as FLOW_MAX_BATCH_RECORDS and FLOW_MAX_REQUEST_BYTES allow."""
        self.item_number += 1
        self.sent_items += len(page)
        number = self.item_number

        def oversized(index: int, size: int) -> None:
            self.oversized(f"Page {number}, item {index + 1}", size)

        parts = bounds.batches(page, oversized)
        out: list = []
        for part, (items, _) in enumerate(parts, start=1):
            what = f"Page {number} ({len(items)} items)" if len(parts) == 1 else (
                f"Page {number}, batch {part} of {len(parts)} ({len(items)} items)"
            )
            self.doing(f"sending {what[0].lower()}{what[1:]}")
            exchange = self.deliver(items, what, json_body=items)
            if isinstance(exchange, durability.Replayed):
                out += exchange.answers
                continue
            if exchange is None:
                continue
            problem = self.failure(exchange)
            if problem:
                self.refused(what, problem, exchange)
                self.acknowledged(len(items), 0, 0)
                continue
            self.accepted += len(items)
            answers = self.answer_of(exchange, f"the answer to {what[0].lower()}{what[1:]}", len(items))
            out += answers
            self.acknowledged(len(items), len(items), len(answers), answers)
        return out

    def answer_of(self, exchange: Exchange, what: str, sent: int) -> list:
        """The items an accepted request (of `sent` items) passes on, within the bounds of a page and of depth."""
        data = exchange.json
        self.answers.add(len(exchange.response_body), sent)
        answer = data if isinstance(data, list) else [data if data is not None else {}]
        bounds.check_depth(answer, what)
        return answer

    def oversized(self, what: str, size: int) -> None:
        limit = settings.FLOW_MAX_REQUEST_BYTES
        problem = (
            f"its JSON is {bounds.size_text(size)}, more than the {bounds.size_text(limit)} a request body may hold "
            "(FLOW_MAX_REQUEST_BYTES); it was not sent"
        )
        self.last_problem = problem
        self.error(f"{what}: {problem}.")

    def refused(self, what: str, problem: str, exchange: Exchange) -> None:
        self.last_problem = problem
        if self.allowed(exchange):
            self.partial = True
            self.warn(f"{what}: {problem}")
        else:
            self.error(f"{what}: {problem}")

    def finish(self) -> None:
        record = self.open()
        if self.receives:
            return
        if not record.items_in:
            self.warn("Nothing to send: no items came from the previous shape.")
        elif self.ctx.test:
            requests, items = self.not_sent
            self.warn(f"Not sent (test step): {requests:,} request(s) with {items:,} item(s) would have been sent.")
        elif not self.accepted and not self.in_doubt_items and not self.config["allow_unsuccessful"]:
            raise ShapeFailed(
                f"none of the {self.sent_items} item(s) was accepted. Last error: {self.last_problem}"
            )


def _json_text(value: object) -> str:
    return json.dumps(value)


class Pages:
    """A receive endpoint's pages, in its pagination style.

    Stops on an empty page, a missing next link/cursor, a link or cursor that
    repeats, or the page cap (the endpoint's max_pages, else FLOW_MAX_PAGES),
    which is a warning when more pages were there.
    """

    def __init__(self, stage: Connection):
        self.stage = stage
        endpoint = stage.shape.endpoint
        self.pagination = endpoint.pagination or {}
        self.style = self.pagination.get("style") or "none"
        self.records_path = (endpoint.records_path or "").strip()
        self.cap = int(self.pagination.get("max_pages") or 0) or settings.FLOW_MAX_PAGES

    def option(self, key: str, default: object = "") -> object:
        value = self.pagination.get(key)
        return default if value in (None, "") else value

    def records(self, exchange: Exchange) -> list | None:
        """The page's records; None when the page is no page of records (stop)."""
        stage = self.stage
        data = exchange.json
        if self.records_path:
            found = value_at(data, self.records_path)
            if found is MISSING or not isinstance(found, list):
                what = "no list" if found is MISSING else "no list but a single value"
                raise ShapeFailed(
                    f'The response holds {what} at the records path "{self.records_path}"; '
                    "check the endpoint's records path."
                )
            return found
        records, warning = records_of(data)
        if warning:
            if self.style != "none" and isinstance(data, dict):
                # An object without records on a paginated endpoint: the end, not an item.
                stage.warn("The response holds no list of records; the endpoint's pages end here.")
                return None
            stage.warn(warning)
        return records

    def resolve(self, link: str) -> str:
        """A next page link: relative ones against the connector's base URL."""
        return urljoin(self.stage.client.url_for("").rstrip("/") + "/", link.strip())

    def next_link(self, exchange: Exchange) -> str | None:
        if self.style == "next_url":
            value = value_at(exchange.json, str(self.option("next_url_path", "links.next")))
            return self.resolve(value) if isinstance(value, str) and value.strip() else None
        header = next((v for k, v in exchange.response_headers.items() if k.lower() == "link"), "")
        match = LINK_NEXT_RE.search(header)
        return self.resolve(match.group(1)) if match and match.group(1).strip() else None

    def start(self) -> dict:
        return {"page_number": int(self.option("first_page", 1)), "offset": 0, "cursor": None, "url": None,
                "count": 0, "seen": []}

    def pages(self, resume_at: dict | None = None) -> Iterator[list]:
        """The pages, from the first or from `resume_at` (a pagination state a checkpoint kept).

        Before each page is passed on, `stage.next_source` is set to the state
        of the page after it (None: no more pages), which the run's checkpoint
        keeps once the page has gone all the way down the line.
        """
        stage, record = self.stage, self.stage.record
        state = {**self.start(), **resume_at} if resume_at else self.start()
        resumed = bool(resume_at)
        while True:
            params = dict(stage.query)
            style = self.style
            if style == "page_number":
                params[str(self.option("page_parameter", "page"))] = str(state["page_number"])
            limit = int(self.option("limit", 0))
            if style in ("page_number", "limit_offset") and limit:
                params[str(self.option("limit_parameter", "limit"))] = str(limit)
            if style == "limit_offset":
                params[str(self.option("offset_parameter", "offset"))] = str(state["offset"])
            if style == "cursor" and state["cursor"] is not None:
                params[str(self.option("cursor_parameter", "cursor"))] = state["cursor"]
            stage.doing(f"reading page {state['count'] + 1:,}")
            if state["url"]:  # a next link carries its own query
                exchange = stage.call(url=state["url"])
            else:
                exchange = stage.call(params=params)
            problem = stage.failure(exchange)
            if problem:
                if stage.allowed(exchange):
                    stage.partial = True
                    stage.warn(f"Page {state['count'] + 1}: {problem} The pages end here.")
                    return
                if resumed:
                    problem += (
                        f" The run resumed here, at page {state['count'] + 1}: the API may no longer serve that page "
                        "(a cursor or a next link can expire). Run the flow again from the start."
                    )
                raise ShapeFailed(problem)
            resumed = False
            state["count"] += 1
            record.pages += 1
            records = self.records(exchange)
            if not records:
                stage.next_source = None
                return
            bounds.check_depth(records, f"page {state['count']:,}")
            bounds.PageSize(len(records), "Have the endpoint send fewer records per page.").add(
                len(exchange.response_body), len(records)
            )
            following, warning = self.following(state, exchange, records)
            stage.next_source = following
            stage.count_out(records)
            yield records
            if warning:
                stage.warn(warning)
            if following is None:
                return
            state = following

    def following(self, state: dict, exchange: Exchange, records: list) -> tuple[dict | None, str]:
        """The state of the page after this one (None: this was the last), and why the pages end, if they end early."""
        style = self.style
        state = {**state, "seen": list(state["seen"])}
        if style == "none":
            return None, ""
        if style in ("next_url", "link_header"):
            url = self.next_link(exchange)
            if url is None:
                return None, ""
            if url in state["seen"]:
                return None, "The next page link repeats an earlier one; the pages end here."
            state["seen"] = [*state["seen"][-(MAX_SEEN_LINKS - 1):], url]
            state["url"] = url
        elif style == "page_number":
            state["page_number"] += 1
        elif style == "limit_offset":
            state["offset"] += len(records)
        elif style == "cursor":
            token = value_at(exchange.json, str(self.option("cursor_path", "next_cursor")))
            if token in (MISSING, None, "") or isinstance(token, (dict, list)):
                return None, ""
            if str(token) == state["cursor"]:
                return None, "The next page cursor repeats the previous one; the pages end here."
            state["cursor"] = str(token)
        if state["count"] >= self.cap:
            return None, (
                f"Stopped after {state['count']} pages, the most one run reads from this endpoint; "
                "more pages may be available."
            )
        return state, ""
