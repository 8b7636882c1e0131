"""Which names can carry an idempotency key: the rules the manifest schema and the model's clean() share.

A module of its own, below both connectors.schema and connectors.models, so
neither imports the other for it.
"""

from __future__ import annotations

import re

HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers an idempotency key may not be sent in: the ones the client sets itself
# (framing, host, body type, connection handling) and the ones that carry
# credentials or cookies. Compared in lower case.
RESERVED_KEY_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "www-authenticate", "proxy-authenticate",
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding", "connection", "keep-alive",
    "te", "trailer", "upgrade", "expect", "accept-encoding", "user-agent", "x-api-key", "x-auth-token", "api-key",
})
BODY_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def idempotency_name_error(where: str, name: str) -> str | None:
    """Why `name` cannot carry an idempotency key sent in `where` (header or body), or None."""
    if not name:
        example = "Idempotency-Key" if where == "header" else "idempotency_key"
        return f"required when the key is sent in a {where} (the name the API documents, e.g. {example})"
    if "{{" in name or "}}" in name:
        return "must be the fixed name the API documents, not a {{placeholder}} (each run makes the key itself)"
    if where == "header":
        if not HEADER_NAME_RE.match(name):
            return f'"{name[:60]}" is not a valid header name (letters, digits and -, no spaces)'
        if name.lower() in RESERVED_KEY_HEADERS:
            return f'"{name}" cannot carry the key: the client sets it itself or it carries credentials'
    elif not BODY_FIELD_RE.match(name):
        return f'"{name[:60]}" is not a body field name (a top-level JSON field: letters, digits, _ and -)'
    return None
