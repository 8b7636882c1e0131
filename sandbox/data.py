"""The Sandbox API's data: generated orders and products, and the orders it received.

Orders and products are generated deterministically and lazily: record i is
computed from i (and, for orders, the anchor time), so a page costs
O(per_page) however many records there are, and nothing is held in memory.

Order i was last updated at ``anchor - i * 12 minutes`` (newest first). The
anchor is "now" floored to 10 minutes unless the caller pins it with
``as_of``. Because updated_at falls with i, the orders updated since a moment
are exactly the first m of the list, and m is computed arithmetically.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import transaction
from django.db.models import Count, QuerySet, Sum

from sandbox.models import SandboxIdempotencyKey, SandboxReceivedOrder

ORDER_STEP = timedelta(minutes=12)
ANCHOR_ROUNDING = timedelta(minutes=10)
DEFAULT_ORDER_COUNT = 240
DEFAULT_PRODUCT_COUNT = 60
MAX_COUNT = 100_000
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH = 5_000
DEFAULT_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
MAX_HEADER_LENGTH = 64
EARLIEST_ANCHOR = datetime(1980, 1, 1, tzinfo=UTC)
REFERENCE_LENGTH = 255

FIRST_NAMES = ["Ada", "Grace", "Alan", "Katherine", "Edsger", "Barbara", "Donald", "Margaret", "Tim", "Radia",
               "Linus", "Frances", "Dennis", "Hedy", "Ken", "Sophie"]
LAST_NAMES = ["Lovelace", "Hopper", "Turing", "Johnson", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Berners-Lee",
              "Perlman", "Torvalds", "Allen", "Ritchie", "Lamarr", "Thompson", "Wilson"]
CURRENCIES = ["GBP", "EUR", "USD"]
STATUSES = ["pending", "paid", "paid", "shipped", "shipped", "delivered", "refunded"]
PRODUCT_WORDS = ["T-shirt", "mug", "hoodie", "notebook", "sticker pack", "cap", "tote bag", "water bottle"]
PRODUCT_COLOURS = ["red", "blue", "green", "black", "white", "purple", "orange", "grey"]


class StorageFull(Exception):
    """Orders the Sandbox will not store (answered with `status` and this message)."""

    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


class InvalidInput(ValueError):
    """A request parameter the Sandbox refuses (answered as 400 with this message)."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


def _mix(*parts: int | str) -> int:
    """A stable pseudo-random number for the parts (the same every run, on every machine)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- parameters --------------------------------------------------------------------------


def text(params, name: str, default: str = "", max_length: int = 200) -> str:
    value = params.get(name, default)
    if "\x00" in value:
        raise InvalidInput("invalid_parameter", f'The "{name}" parameter contains a NUL character.')
    if len(value) > max_length:
        raise InvalidInput("invalid_parameter", f'The "{name}" parameter is longer than {max_length} characters.')
    return value.strip()


def integer(params, name: str, default: int, low: int, high: int) -> int:
    """`name` as a whole number between low and high; absent → default; anything else → InvalidInput."""
    value = text(params, name, max_length=20)
    if value == "":
        return default
    if not (value.isascii() and value.lstrip("-").isdigit()):
        raise InvalidInput("invalid_parameter", f'"{name}" must be a whole number between {low} and {high}.')
    number = int(value)
    if not low <= number <= high:
        raise InvalidInput("invalid_parameter", f'"{name}" must be a whole number between {low} and {high}.')
    return number


def anchor_from(params, now: datetime | None = None) -> datetime:
    """The moment order 0 was updated: `as_of` (ISO 8601, UTC when no offset is given) or now floored to 10 minutes."""
    value = text(params, "as_of", max_length=40)
    if not value:
        now = (now or datetime.now(UTC)).astimezone(UTC)
        floored = int(now.timestamp()) // int(ANCHOR_ROUNDING.total_seconds()) * int(ANCHOR_ROUNDING.total_seconds())
        return datetime.fromtimestamp(floored, UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("invalid_as_of", '"as_of" must be an ISO 8601 date and time in UTC, e.g. 2026-11-23T18:40:00Z.') from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC).replace(microsecond=0)
    except OverflowError:
        moment = EARLIEST_ANCHOR - timedelta(days=1)
    if moment < EARLIEST_ANCHOR:  # order i must stay a representable date for every i
        raise InvalidInput("invalid_as_of", f'"as_of" must be {EARLIEST_ANCHOR.year} or later.')
    return moment


def time_zone_from(headers) -> ZoneInfo:
    name = (headers.get("X-Sandbox-Time-Zone") or "UTC").strip()
    if "\x00" in name or len(name) > MAX_HEADER_LENGTH:
        raise InvalidInput("invalid_time_zone", "The X-Sandbox-Time-Zone header is not a time zone name.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            "invalid_time_zone",
            f'The X-Sandbox-Time-Zone header "{name}" is not a time zone name (e.g. UTC, Europe/London).',
        ) from None


def date_format_from(headers) -> str:
    fmt = headers.get("X-Sandbox-Date-Format") or DEFAULT_DATE_FORMAT
    if "\x00" in fmt or len(fmt) > MAX_HEADER_LENGTH or "%" not in fmt:
        raise InvalidInput("invalid_date_format", "The X-Sandbox-Date-Format header is not a strftime date format.")
    return fmt


def parse_moment(value: str, fmt: str, zone: ZoneInfo, name: str = "updated_since") -> datetime:
    """`value` read with the strftime format `fmt`; a time without an offset is in `zone`."""
    try:
        moment = datetime.strptime(value, fmt)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError, re.error):  # re.error: a format repeating a directive
        try:
            example = f" (e.g. {datetime.now(zone).strftime(fmt)})"
        except ValueError:
            example = ""
        raise InvalidInput(
            f"invalid_{name}",
            f'"{name}" must be a date in the format {fmt} in the time zone {zone.key}{example}; got "{value[:60]}".',
        ) from None


# --- orders --------------------------------------------------------------------------------


def order(i: int, anchor: datetime) -> dict:
    """Order i (0 = the most recently updated) of the list anchored at `anchor`.

    Identity comes from the moment of the order, so the same order (same id,
    same customer, same total) shows up at the same updated_at whatever the anchor.
    """
    updated_at = anchor - i * ORDER_STEP
    key = int(updated_at.timestamp()) // 60
    seed = _mix("order", key)
    first, last = FIRST_NAMES[seed % len(FIRST_NAMES)], LAST_NAMES[(seed >> 8) % len(LAST_NAMES)]
    cents = 500 + (seed >> 16) % 49_500
    created_at = updated_at - timedelta(minutes=(seed >> 32) % (3 * 24 * 60))
    return {
        "id": key,
        "number": f"SB-{key}",
        "customer": {"name": f"{first} {last}", "email": f"{first}.{last}@example.com".lower()},
        "total": f"{cents // 100}.{cents % 100:02d}",
        "currency": CURRENCIES[(seed >> 40) % len(CURRENCIES)],
        "status": STATUSES[(seed >> 48) % len(STATUSES)],
        "created_at": iso(created_at),
        "updated_at": iso(updated_at),
    }


def orders_matching(count: int, anchor: datetime, since: datetime | None) -> int:
    """How many of the first `count` orders were updated at or after `since` (they are a prefix of the list)."""
    if since is None:
        return count
    if since > anchor:
        return 0
    return min(count, int((anchor - since) // ORDER_STEP) + 1)


@dataclass
class Page:
    number: int
    size: int
    total: int

    @property
    def start(self) -> int:
        return (self.number - 1) * self.size

    @property
    def stop(self) -> int:
        return min(self.total, self.number * self.size)

    @property
    def has_next(self) -> bool:
        return self.number * self.size < self.total


def order_page(page: Page, anchor: datetime) -> list[dict]:
    return [order(i, anchor) for i in range(page.start, page.stop)]


# --- products ------------------------------------------------------------------------------


def product(i: int) -> dict:
    seed = _mix("product", i)
    cents = 199 + seed % 9_800
    return {
        "id": i + 1,
        "sku": f"PW-{i + 1:06d}",
        "name": f"Patchworks {PRODUCT_COLOURS[(seed >> 8) % len(PRODUCT_COLOURS)]} "
                f"{PRODUCT_WORDS[(seed >> 16) % len(PRODUCT_WORDS)]}",
        "price": f"{cents // 100}.{cents % 100:02d}",
        "stock": (seed >> 24) % 250,
    }


def cursor_for(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def offset_from(cursor: str) -> int:
    if not cursor:
        return 0
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        label, _, number = decoded.partition(":")
        if label != "offset" or not (number.isascii() and number.isdigit()) or int(number) > MAX_COUNT:
            raise ValueError
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("invalid_cursor", 'The "cursor" parameter is not one the Sandbox gave out (follow links.next).') from None


# --- received orders -------------------------------------------------------------------------


def _check_storable(value: object) -> None:
    """Refuse what the database cannot store as JSON: NUL characters and lone surrogates (walked without recursion)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidInput("invalid_order", "The order contains a NUL character.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput("invalid_order", "The order contains text that is not valid Unicode.") from None


def received_orders_from(body: object) -> list[dict]:
    """The orders of a POST body: one JSON object, or a non-empty list of them (a batch)."""
    orders = body if isinstance(body, list) else [body]
    if not orders:
        raise InvalidInput("invalid_order", "Send one order as a JSON object, or a non-empty JSON list of orders.")
    if len(orders) > MAX_BATCH:
        raise InvalidInput("invalid_order", f"Send at most {MAX_BATCH} orders in one batch.")
    for position, item in enumerate(orders):
        if not isinstance(item, dict):
            where = f" (item {position} of the list)" if isinstance(body, list) else ""
            raise InvalidInput("invalid_order", f"Each order must be a JSON object{where}.")
    _check_storable(orders)
    return orders


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size:,} bytes"


def store_received(orders: list[dict], now: datetime | None = None, account: str = "",
                   idempotency_key: str = "") -> list[SandboxReceivedOrder]:
    """Store the orders for `account`, keeping its newest within the per-account bounds (older ones are dropped).

    Each row records its reference (reference_of) and the Idempotency-Key of the
    request that sent it, so duplicates can be counted by either. StorageFull
    when the batch alone is beyond the account's byte bound, or when the Sandbox
    as a whole (orders and the answers kept for idempotency keys) would hold
    more than SANDBOX_MAX_STORED_BYTES.
    """
    now = now or datetime.now(UTC)
    sizes = [len(json.dumps(body, ensure_ascii=False).encode()) for body in orders]
    per_account = settings.SANDBOX_MAX_BYTES_PER_ACCOUNT
    if sum(sizes) > per_account:
        raise StorageFull(413, "too_large", f"A Sandbox account keeps at most {_megabytes(per_account)} of orders; "
                                            f"this request holds {_megabytes(sum(sizes))}.")
    with transaction.atomic():
        stored = ((SandboxReceivedOrder.objects.aggregate(total=Sum("size"))["total"] or 0)
                  + (SandboxIdempotencyKey.objects.aggregate(total=Sum("size"))["total"] or 0))
        if stored + sum(sizes) > settings.SANDBOX_MAX_STORED_BYTES:
            raise StorageFull(507, "sandbox_full", f"The Sandbox is full: it stores at most "
                                                   f"{_megabytes(settings.SANDBOX_MAX_STORED_BYTES)} of received orders "
                                                   "in all. Try again later.")
        rows = SandboxReceivedOrder.objects.bulk_create([
            SandboxReceivedOrder(received_at=now, account=account, body=body, size=size,
                                 reference=reference_of(body), idempotency_key=idempotency_key)
            for body, size in zip(orders, sizes)
        ])
        drop_oldest(SandboxReceivedOrder.objects.filter(account=account))
    return rows


def drop_oldest(kept: QuerySet) -> None:
    """Drop the oldest rows of `kept` beyond SANDBOX_MAX_ORDERS_PER_ACCOUNT rows or SANDBOX_MAX_BYTES_PER_ACCOUNT bytes.

    `kept` is one account's rows of a model with an increasing id and a `size` in bytes.
    """
    total = 0
    limit = settings.SANDBOX_MAX_ORDERS_PER_ACCOUNT
    for position, (pk, size) in enumerate(list(kept.order_by("-id").values_list("id", "size")[:limit + 1])):
        total += size
        if position >= limit or total > settings.SANDBOX_MAX_BYTES_PER_ACCOUNT:
            kept.filter(id__lte=pk).delete()
            return


def received_counts(received: QuerySet, listed: int = 10) -> dict:
    """How many orders `received` holds and how many references in it were received more than once.

    `duplicated` names up to `listed` of those references, most copies first, as
    (reference, copies): what an operator checks to see that each order arrived once.
    Orders without a reference are counted but cannot be duplicates.
    """
    repeated = (received.exclude(reference="").values("reference").annotate(copies=Count("id"))
                .filter(copies__gt=1).order_by("-copies", "reference"))
    return {
        "received": received.count(),
        "duplicate_references": repeated.count(),
        "duplicated": [(row["reference"], row["copies"]) for row in repeated[:listed]],
    }


def reference_of(body: object) -> str:
    """An order's reference: its first non-empty "reference", "number" or "id" (as text), else ""."""
    if not isinstance(body, dict):
        return ""
    value = next((body[k] for k in ("reference", "number", "id") if body.get(k) not in (None, "")), "")
    if isinstance(value, (dict, list)):
        return ""
    return str(value)[:REFERENCE_LENGTH]


def summary(body: object) -> dict:
    """What the received-orders page shows of an order: reference, customer, total (best effort, any shape)."""
    if not isinstance(body, dict):
        return {"reference": "", "customer": "", "total": ""}
    reference = reference_of(body)
    customer = body.get("customer", "")
    if isinstance(customer, dict):
        customer = customer.get("name") or customer.get("email") or ""
    total = body.get("total", "")
    if total not in ("", None) and body.get("currency"):
        total = f"{total} {body['currency']}"
    return {
        "reference": _short(reference),
        "customer": _short(customer),
        "total": _short(total),
    }


def _short(value: object, limit: int = 120) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    value = str(value)
    return value if len(value) <= limit else value[: limit - 1] + "…"
