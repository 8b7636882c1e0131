"""The Sandbox's Idempotency-Key on POST /orders, honoured the way Stripe honours it.

Why: process flows retry and resume their sends, and a run must deliver each
batch "effectively once". Every send of a run carries an idempotency key that
stays the same for the same batch, and the Sandbox, like a real API that
supports the header, answers a repeat with the first answer instead of storing
the batch again. So the Sandbox is where that promise can be checked.

- A key not seen before (for the account, within KEY_LIFETIME): the request is
  processed, and if it stored orders, the key, a SHA-256 of the request body
  and the answer (status and body) are written in the transaction that stores
  the orders: a request stored both or neither.
- The same key and the same body: the first answer, byte for byte, with
  ``Idempotent-Replayed: true``; nothing is stored.
- The same key and another body: 409 ``idempotency_key_reused``.
- Two requests with the same key at once: the unique constraint on (account,
  key) holds the second one's insert until the first commits (PostgreSQL), or
  its transaction waits for the first's (SQLite, whose transactions begin
  IMMEDIATE); its insert then fails and it replays the first answer. Only if
  the winner's row cannot be read (it expired meanwhile) does it get 409
  ``idempotency_key_in_use``.

The body is compared as canonical JSON (request_hash): the same orders sent
with other spacing or key order are the same request. Keys are scoped to the
Sandbox account, at most MAX_KEY_LENGTH characters, and live 24 hours like
Stripe's; each account keeps at most as many keys (and bytes of answers) as it
keeps orders. An absent or empty header: the request is processed as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse

from sandbox import data
from sandbox.models import SandboxIdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
KEY_LIFETIME = timedelta(hours=24)


class KeyRefused(Exception):
    """A request the Sandbox refuses because of its Idempotency-Key (answered with `status` and this message)."""

    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def key_of(request: HttpRequest) -> str:
    """The request's Idempotency-Key ("" without one); KeyRefused (400) when it is too long."""
    key = request.headers.get(HEADER, "")
    if not key.strip():
        return ""
    if len(key) > MAX_KEY_LENGTH:
        raise KeyRefused(400, "invalid_idempotency_key",
                         f"The {HEADER} header is {len(key):,} characters long; a key is at most {MAX_KEY_LENGTH} "
                         "characters (a UUID is a good key).")
    return key


def request_hash(body: object) -> str:
    """SHA-256 (hex) of the parsed body as canonical JSON: sorted keys, no spaces, ASCII escapes."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def earlier_answer(account: str, key: str, body_hash: str, now: datetime | None = None) -> HttpResponse | None:
    """The first answer given to `key` (replayed), None if the key is unused or expired; KeyRefused for another body."""
    now = now or datetime.now(UTC)
    row = SandboxIdempotencyKey.objects.filter(account=account, key=key, created_at__gte=now - KEY_LIFETIME).first()
    if row is None:
        return None
    if not hmac.compare_digest(row.request_hash, body_hash):
        raise KeyRefused(409, "idempotency_key_reused",
                         f"This {HEADER} was already used with a different request body. Send the same body to get "
                         "the first answer again, or use a new key for a new request.")
    response = HttpResponse(row.response_body, status=row.status_code, content_type="application/json")
    response[REPLAYED_HEADER] = "true"
    return response


def answer_once(account: str, key: str, body_hash: str, store: Callable[[], HttpResponse],
                now: datetime | None = None) -> HttpResponse:
    """store()'s answer, with the key recorded in the same transaction; the first answer if another request won.

    store() stores the orders (with `key` on each) and returns the 2xx answer,
    or raises (data.StorageFull, data.InvalidInput): then nothing is kept, the
    key included, so the client may send it again.
    """
    now = now or datetime.now(UTC)
    inserted = False
    try:
        with transaction.atomic():
            # An expired row of the key gives way to the new request (the key is new again after 24 hours).
            SandboxIdempotencyKey.objects.filter(account=account, key=key, created_at__lt=now - KEY_LIFETIME).delete()
            # Inserted first, so a concurrent request with the key waits here rather than storing its orders.
            row = SandboxIdempotencyKey.objects.create(
                account=account, key=key, request_hash=body_hash, status_code=0, response_body="", created_at=now)
            inserted = True
            response = store()
            if not 200 <= response.status_code < 300:
                transaction.set_rollback(True)
                return response
            row.status_code, row.response_body = response.status_code, response.content.decode()
            row.size = len(response.content)
            row.save(update_fields=["status_code", "response_body", "size"])
            drop_expired_and_oldest(account, now)
    except IntegrityError:
        if inserted:  # not the key's constraint
            raise
        earlier = earlier_answer(account, key, body_hash)
        if earlier is None:
            raise KeyRefused(409, "idempotency_key_in_use",
                             f"A request with this {HEADER} is still being processed; retry it in a moment.") from None
        return earlier
    return response


def drop_expired_and_oldest(account: str, now: datetime) -> None:
    """Forget keys older than KEY_LIFETIME (every account's), and the account's oldest beyond its storage bounds."""
    SandboxIdempotencyKey.objects.filter(created_at__lt=now - KEY_LIFETIME).delete()
    data.drop_oldest(SandboxIdempotencyKey.objects.filter(account=account))
