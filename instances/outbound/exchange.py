"""What a request of the outbound client was and what came back.

The data types (Exchange, CheckResult, ClientError), storable text and
records, ``{{placeholder}}`` filling and the wording of an API's answer
(`Exchange.status_text()`, `Exchange.api_message()`), shared by the client
(`client.py`) and its token flows (`auth.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from urllib.parse import quote

from connectors.manifest import PLACEHOLDER_RE
from instances import redaction

RECORDED_HEADER_CHARS = 4 * 1024  # store at most this much of each header
RECORDED_BODY_CHARS = 16 * 1024  # and at most this much of a body


class ClientError(Exception):
    """A request could not be built (e.g. a required value is missing)."""


def clean_text(value: str) -> str:
    """`value` without NUL characters or lone surrogates, which databases refuse to store."""
    if value.isascii() and "\x00" not in value:
        return value
    return value.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "\N{REPLACEMENT CHARACTER}")


def clean_headers(headers: dict[str, str], limit: int | None = RECORDED_HEADER_CHARS) -> dict[str, str]:
    """Headers as storable text, each value at most `limit` characters long."""
    cleaned = {}
    for name, value in headers.items():
        value = clean_text(str(value))
        if limit is not None and len(value) > limit:
            value = value[:limit] + "\N{HORIZONTAL ELLIPSIS}"
        cleaned[clean_text(str(name))] = value
    return cleaned


@dataclass
class Exchange:
    """One HTTP request and what came back (or the error instead)."""

    request_method: str
    request_url: str
    request_headers: dict[str, str]
    request_body: str = ""
    response_status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""
    response_truncated: bool = False
    duration_ms: int = 0
    error: str = ""
    json: object = None
    final_url: str = ""  # where the last hop went (not recorded: redirects may point anywhere)
    throttled_until: datetime | None = None  # the rate limit allows the request only then: reschedule it
    rate_limit_note: str = ""  # 429 answers met and retried on the way
    # Time spent waiting for the instance's rate limit and for a slot of its
    # connection pool before the request went (429 retries included).
    rate_limit_wait_ms: int = 0
    pool_wait_ms: int = 0

    def clean(self) -> None:
        """Make every text field storable (no NUL, no lone surrogate), headers included.

        Nothing is cut here: redaction must see whole values (see checks).
        """
        for name in ("request_url", "request_body", "response_body", "error", "final_url"):
            setattr(self, name, clean_text(getattr(self, name)))
        self.request_headers = clean_headers(self.request_headers, limit=None)
        self.response_headers = clean_headers(self.response_headers, limit=None)

    def as_record(self) -> dict:
        return {
            "request_method": self.request_method,
            "request_url": clean_text(self.request_url),
            "request_headers": clean_headers(self.request_headers, limit=None),
            "request_body": clean_text(self.request_body),
            "response_status": self.response_status,
            "response_headers": clean_headers(self.response_headers, limit=None),
            # Whole: redaction runs before the body and headers are cut for storage (see checks).
            "response_body": clean_text(self.response_body),
            "response_truncated": self.response_truncated,
            "duration_ms": self.duration_ms,
            "error": clean_text(self.error),
            "rate_limit_note": self.rate_limit_note,
        }

    def status_text(self) -> str:
        """The answer's status with its phrase ("404 Not Found")."""
        return status_text(self.response_status or 0)

    def api_message(self) -> str:
        """The API's own error message, when its answer carries one (not redacted)."""
        return api_message(self)

    def redacted_record(self, secret_values: list[str], message: str = "") -> dict:
        """The exchange as it may be stored: redacted whole with `secret_values`, then cut and made storable."""
        return storable(redaction.redact_exchange(
            {**self.as_record(), "message": message}, secret_values,
            body_limit=RECORDED_BODY_CHARS, header_limit=RECORDED_HEADER_CHARS,
        ))


def storable(record: dict) -> dict:
    """A recorded exchange with every string (dict keys and values too) made storable."""
    def clean(value):
        if isinstance(value, str):
            return clean_text(value)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        return value

    return {key: clean(value) for key, value in record.items()}


@dataclass
class CheckResult:
    ok: bool
    message: str
    exchange: Exchange


def fill_placeholders(template: str, values: dict[str, str], *, quote_values: bool = False) -> str:
    """Substitute ``{{key}}`` placeholders; a missing value is a ClientError."""

    def substitute(match: re.Match) -> str:
        key = match.group(1)
        if key not in values or values[key] == "":
            raise ClientError(f'no value for "{key}"')
        value = str(values[key])
        return quote(value, safe="") if quote_values else value

    return PLACEHOLDER_RE.sub(substitute, template)


def status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def api_message(exchange: Exchange) -> str:
    """The vendor's own error message, when the body carries one."""
    data = exchange.json
    if isinstance(data, dict):
        for key in ("error_description", "message", "error_message", "detail", "title", "error", "errors"):
            value = data.get(key)
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, dict):
                value = value.get("detail") or value.get("message") or value.get("title")
            if isinstance(value, str) and value.strip():
                return clean_text(value.strip())  # JSON may escape NUL and lone surrogates
    text = exchange.response_body.strip()
    # Only plain text is quoted: markup is noise, and a JSON document without a
    # message field may hold anything (a token under an unexpected name, ...).
    if text and text[0] not in "<{[":
        return text
    return ""
