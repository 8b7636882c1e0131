"""Redaction of recorded requests and responses, applied before anything is stored.

Two rules: values of sensitive names (headers, query parameters, JSON and form
fields such as Authorization, cookies, tokens, keys, passwords) are replaced,
and the instance's own secret values are replaced wherever they appear, plain,
URL-encoded or Base64-encoded.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

REDACTED = "[redacted]"
SENSITIVE_NAME = re.compile(
    r"authorization|cookie|token|secret|passw|api[-_]?key|apikey|signature|session|credential|private[-_]?key|client[-_]?assertion",
    re.IGNORECASE,
)
MIN_SECRET_LENGTH = 3
# "key": "value" in JSON text; the value's closing quote may be cut off.
JSON_STRING_MEMBER = re.compile(r'("(?:[^"\\]|\\.)*")(\s*:\s*)"(?:[^"\\]|\\.)*(?:"|\Z)')


def is_sensitive(name: str) -> bool:
    return bool(SENSITIVE_NAME.search(name))


def secret_variants(secrets: list[str]) -> list[str]:
    """Every spelling of each secret that could show up on the wire, longest first."""
    variants: set[str] = set()
    values = [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH]
    for value in values:
        raw = value.encode()
        variants |= {
            value,
            quote(value, safe=""),
            quote_plus(value),
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode(),
            base64.b64encode(raw).decode().rstrip("="),
        }
        variants |= _base64_fragments(raw)
    # Basic auth sends base64("user:secret"): cover any pairing with the secrets.
    for first in values:
        for second in values:
            if first != second:
                variants.add(base64.b64encode(f"{first}:{second}".encode()).decode())
    return sorted(variants, key=len, reverse=True)


MIN_BASE64_FRAGMENT = 6


def _base64_fragments(raw: bytes) -> set[str]:
    """The Base64 characters that encode only `raw`, at each of the 3 byte alignments.

    base64("user:secret") does not contain base64("secret") unless len("user:")
    is a multiple of 3, and the user name is usually not a secret we know. The
    characters made only of the secret's bits are the same whatever precedes or
    follows it, so redacting them hides the secret inside any Base64 blob.
    """
    fragments: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + raw).decode()
        start = -(-8 * shift // 6)  # first character holding no padding bits
        end = 8 * (shift + len(raw)) // 6  # last character holding only secret bits
        fragment = encoded[start:end]
        if len(fragment) >= MIN_BASE64_FRAGMENT:
            urlsafe = fragment.replace("+", "-").replace("/", "_")
            fragments |= {fragment, urlsafe, quote(fragment, safe=""), quote(urlsafe, safe="")}
    return fragments


def scrub_text(text: str, variants: list[str]) -> str:
    for variant in variants:
        if variant in text:
            text = text.replace(variant, REDACTED)
    return text


def _redact_structure(value):
    if isinstance(value, dict):
        return {k: (REDACTED if is_sensitive(str(k)) and v not in (None, "") else _redact_structure(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_structure(v) for v in value]
    return value


def redact_body(body: str, content_type: str = "") -> str:
    """Sensitive fields of a JSON or form body replaced; other text unchanged."""
    if not body:
        return body
    stripped = body.lstrip()
    if stripped[:1] in "{[":
        try:
            return json.dumps(_redact_structure(json.loads(body)), ensure_ascii=False)
        except (ValueError, RecursionError):
            # Not parseable (or nested too deeply), typically a large body cut short for storage: still
            # redact the string values of sensitive keys.
            return JSON_STRING_MEMBER.sub(
                lambda m: f'{m[1]}{m[2]}"{REDACTED}"' if is_sensitive(m[1]) else m[0], body
            )
    if "x-www-form-urlencoded" in content_type or (re.fullmatch(r"[^\s=&]+=[^\s&]*(&[^\s=&]+=[^\s&]*)*", stripped)):
        pairs = parse_qsl(body, keep_blank_values=True)
        return urlencode([(k, REDACTED if is_sensitive(k) else v) for k, v in pairs], safe="[]")
    return body


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    query = urlencode(
        [(k, REDACTED if is_sensitive(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="[]",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: (REDACTED if is_sensitive(k) else v) for k, v in headers.items()}


def redact_exchange(exchange: dict, secrets: list[str]) -> dict:
    """A redacted copy of a recorded exchange (see client.Exchange.as_record)."""
    variants = secret_variants(secrets)
    out = dict(exchange)
    out["request_url"] = scrub_text(redact_url(exchange["request_url"]), variants)
    out["request_headers"] = {
        k: scrub_text(v, variants) for k, v in redact_headers(exchange["request_headers"]).items()
    }
    out["request_body"] = scrub_text(
        redact_body(exchange["request_body"], exchange["request_headers"].get("Content-Type", "")), variants
    )
    out["response_headers"] = {
        k: scrub_text(v, variants) for k, v in redact_headers(exchange["response_headers"]).items()
    }
    out["response_body"] = scrub_text(
        redact_body(exchange["response_body"], exchange["response_headers"].get("Content-Type", "")), variants
    )
    out["error"] = scrub_text(exchange["error"], variants)
    out["message"] = scrub_text(exchange.get("message", ""), variants)
    return out
