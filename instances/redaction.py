"""Redaction of recorded requests and responses, applied before anything is stored.

Two rules: values of sensitive names (headers, query parameters, JSON and form
fields such as Authorization, cookies, tokens, keys, passwords) are replaced,
and the instance's own secret values (and the OAuth tokens the client obtained
with them) are replaced wherever they appear, plain, URL-encoded, Base64-encoded
or escaped inside a JSON string. Text is redacted before it is cut for storage,
and a cut that falls inside a secret leaves none of its first 8+ characters.

Every text derived from a third party's answer goes through here before it is
stored or shown: recorded exchanges, check messages, flash messages, a run's
payload samples, warnings and failure reasons. A token is a secret from the
moment it is obtained (a token endpoint's whole answer is searched for them,
see token_answer_secrets), so the secrets are read again for every text.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

REDACTED = "[redacted]"
SENSITIVE_NAME = re.compile(
    r"authorization|cookie|token|secret|passw|api[-_]?key|apikey|signature|session|credential|private[-_]?key|client[-_]?assertion",
    re.IGNORECASE,
)
MIN_SECRET_LENGTH = 3
# A cut (size truncation) that ends inside a secret: this many of its first
# characters are enough to call it a leak.
MIN_CUT_PREFIX = 8
# "key": "value" in JSON text; the value's closing quote may be cut off.
JSON_STRING_MEMBER = re.compile(r'("(?:[^"\\]|\\.)*")(\s*:\s*)"(?:[^"\\]|\\.)*(?:"|\Z)')


# A word every match of SENSITIVE_NAME holds (api-key, apikey and private_key hold "key").
SENSITIVE_WORDS = ("authorization", "cookie", "token", "secret", "passw", "key", "signature", "session", "credential",
                   "assertion")


def names_nothing_sensitive(text: str) -> bool:
    """No name like a secret's anywhere in `text`, and no \\uXXXX escape (JSON) that could spell one.

    Other JSON escapes decode to characters no sensitive name holds, so a JSON
    text passing this has no sensitive key once parsed either. Words in the
    case-folded text, not SENSITIVE_NAME: its search costs more than parsing the
    text. İ and ı, which the regular expression matches as i, fold to other letters.
    """
    if "\\u" in text or "\u0130" in text or "\u0131" in text:
        return False
    folded = text.casefold()
    return not any(word in folded for word in SENSITIVE_WORDS)


@functools.lru_cache(maxsize=4096)  # a page of records repeats the same few field names thousands of times
def is_sensitive(name: str) -> bool:
    return bool(SENSITIVE_NAME.search(name))


def secret_variants(secrets: list[str]) -> list[str]:
    """Every spelling of each secret that could show up on the wire, longest first."""
    variants: set[str] = set()
    values = [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH]
    for value in {form for secret in values for form in _mangled(secret)}:
        variants |= {value, quote(value, safe=""), quote_plus(value)}
        for raw in _encodings(value):
            variants |= {
                base64.b64encode(raw).decode(),
                base64.urlsafe_b64encode(raw).decode(),
                base64.b64encode(raw).decode().rstrip("="),
            }
            variants |= _base64_fragments(raw)
        variants |= _json_escaped(value)
    # Basic auth sends base64("user:secret"): cover any pairing with the secrets.
    for first in values:
        for second in values:
            if first != second:
                variants.add(base64.b64encode(f"{first}:{second}".encode()).decode())
    return sorted(variants, key=len, reverse=True)


MIN_BASE64_FRAGMENT = 6


def _encodings(value: str) -> list[bytes]:
    """The bytes a secret goes out as: UTF-8, and Latin-1 (how HTTP header values are sent) where that differs."""
    raw = [value.encode()]
    try:
        latin1 = value.encode("latin-1")
    except UnicodeEncodeError:
        return raw
    return raw if latin1 == raw[0] else [*raw, latin1]


def in_json_text(variants: list[str]) -> list[str]:
    """`variants`, and each as it reads inside a string of a JSON document written with json.dumps.

    Scrubbing a JSON document's text with these is scrubbing every string
    (keys included) of the structure with `variants`: a value that was itself
    JSON-escaped by an API reads escaped twice in the document.
    """
    forms = set(variants)
    for variant in variants:
        forms.add(json.dumps(variant, ensure_ascii=False)[1:-1])
        forms.add(json.dumps(variant)[1:-1])
    return sorted(forms, key=len, reverse=True)


# Fields of a token answer that are never secret (the others are when their name says so).
TOKEN_ANSWER_PLAIN = frozenset(
    {"token_type", "expires_in", "expires_at", "ext_expires_in", "refresh_expires_in", "scope", "issued_token_type"}
)
# What a token endpoint answers under these names is a credential whatever the name says.
TOKEN_ANSWER_SECRETS = frozenset({"access_token", "refresh_token", "id_token"})


def token_answer_secrets(answer: object, depth: int = 0) -> list[str]:
    """The secrets in a token endpoint's answer: its tokens and every string field named like a secret.

    Nested objects are searched too (a few levels), since some providers wrap the token.
    """
    found: list[str] = []
    if not isinstance(answer, dict) or depth > 3:
        return found
    for key, value in answer.items():
        name = str(key).lower()
        if isinstance(value, dict):
            found += token_answer_secrets(value, depth + 1)
        elif isinstance(value, str) and value and name not in TOKEN_ANSWER_PLAIN and (
            name in TOKEN_ANSWER_SECRETS or is_sensitive(name)
        ):
            found.append(value)
    return found


def _mangled(value: str) -> set[str]:
    """The value, and how it reads after common mangling by a server or a decoder.

    UTF-8 bytes decoded as Latin-1 is how HTTP headers, and bodies sent without a
    charset, are read; backslashes doubled is how repr() and C-style escaping
    write it; URL-encoded is how OAuth 1 puts its token into the Authorization
    header, which an API may echo encoded once more. Each is then encoded like
    the value itself.
    """
    return {value, value.replace("\\", "\\\\"), value.encode().decode("latin-1"), quote(value, safe="")}


def _json_escaped(value: str) -> set[str]:
    """The value as it appears inside a JSON string, in the escapings servers use.

    json.dumps (\\uXXXX for non-ASCII, lower-case hex), the same with upper-case
    hex, UTF-8 kept as is, "\\/" for "/" (PHP), and "<", ">", "&" as \\u003c...
    (Go's encoder).
    """
    ascii_form = json.dumps(value)[1:-1]
    forms = {ascii_form, json.dumps(value, ensure_ascii=False)[1:-1]}
    forms.add(re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m[1].upper(), ascii_form))
    forms |= {f.replace("/", "\\/") for f in list(forms)}
    html_safe = ascii_form.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    forms |= {html_safe, html_safe.replace("/", "\\/")}
    forms.discard(value)
    return forms


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
            fragments.add(fragment.replace("/", "\\/"))  # how PHP's JSON encoder writes "/"
    return fragments


def scrub_text(text: str, variants: list[str]) -> str:
    for variant in variants:
        if variant in text:
            text = text.replace(variant, REDACTED)
    return text


def scrub_cut(text: str, variants: list[str]) -> str:
    """`text` was cut short: a trailing first part (>= 8 characters) of any secret spelling goes too."""
    for variant in variants:
        for length in range(min(len(variant) - 1, len(text)), MIN_CUT_PREFIX - 1, -1):
            if text.endswith(variant[:length]):
                return text[:-length] + REDACTED
    return text


def truncate(text: str, limit: int, variants: list[str]) -> str:
    """`text` redacted, then cut to `limit` characters without leaving part of a secret at the cut."""
    text = scrub_text(text, variants)
    if len(text) <= limit:
        return text
    return scrub_cut(text[:limit], variants)


def _redact_structure(value, variants: list[str] = ()):
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_sensitive(str(k)) and v not in (None, "") else _redact_structure(v, variants))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_structure(v, variants) for v in value]
    if isinstance(value, str) and variants:
        # Parsed, so any JSON escaping of a secret is undone: the plain spelling matches.
        return scrub_text(value, variants)
    return value


def redact_body(body: str, content_type: str = "", variants: list[str] = ()) -> str:
    """Sensitive fields of a JSON or form body replaced, and secret values in its strings; other text unchanged."""
    if not body:
        return body
    stripped = body.lstrip()
    if stripped[:1] in "{[":
        if names_nothing_sensitive(body):
            # Parsing would change nothing but the strings holding a secret, which every caller scrubs in the
            # text, escaped forms included (see secret_variants). Most pages of records are like this.
            return body
        try:
            return json.dumps(_redact_structure(json.loads(body), variants), ensure_ascii=False)
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


def redact_exchange(
    exchange: dict, secrets: list[str], *, body_limit: int | None = None, header_limit: int | None = None,
    variants: list[str] | None = None,
) -> dict:
    """A redacted copy of a recorded exchange (see client.Exchange.as_record).

    Bodies and header values are redacted whole, then cut to `body_limit` /
    `header_limit` characters; a body the client already cut
    (``response_truncated``) is treated as cut too. `variants` (secret_variants
    of `secrets`, computed once by a caller redacting many exchanges) replaces `secrets`.
    """
    if variants is None:
        variants = secret_variants(secrets)

    def header(value: str) -> str:
        value = scrub_text(value, variants)
        if header_limit is not None and len(value) > header_limit:
            value = scrub_cut(value[:header_limit], variants) + "\N{HORIZONTAL ELLIPSIS}"
        return value

    out = dict(exchange)
    out["request_url"] = scrub_text(redact_url(exchange["request_url"]), variants)
    out["request_headers"] = {k: header(v) for k, v in redact_headers(exchange["request_headers"]).items()}
    out["request_body"] = scrub_text(
        redact_body(exchange["request_body"], _content_type(exchange["request_headers"]), variants), variants
    )
    out["response_headers"] = {k: header(v) for k, v in redact_headers(exchange["response_headers"]).items()}
    body = redact_body(exchange["response_body"], _content_type(exchange["response_headers"]), variants)
    body = scrub_text(body, variants)
    if exchange.get("response_truncated"):
        body = scrub_cut(body, variants)
    if body_limit is not None and len(body) > body_limit:
        body = scrub_cut(body[:body_limit], variants)
        out["response_truncated"] = True
    out["response_body"] = body
    out["error"] = scrub_text(exchange["error"], variants)
    out["message"] = scrub_text(exchange.get("message", ""), variants)
    return out


def _content_type(headers: dict[str, str]) -> str:
    return next((v for k, v in headers.items() if k.lower() == "content-type"), "")
