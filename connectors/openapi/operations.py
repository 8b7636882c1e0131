"""One operation of an OpenAPI document in manifest terms: entity, direction,
records path, pagination, request parameters, body encoding, idempotency key and name.

Each is read only where the document makes it clear; otherwise the manifest's
default stays and the user fills it in.
"""

from __future__ import annotations

import re
from typing import Any

from connectors.openapi.document import RawOperation, resolve
from connectors.openapi.naming import (
    LABEL_MAX,
    NAME_MAX,
    as_text,
    clip,
    entity_name,
    humanise,
    looks_plural,
    split_words,
)
from connectors.schema import (
    HEADER_NAME_RE,
    IDEMPOTENCY_DEFAULT,
    MAX_PAGE_SIZE,
    MAX_PAIR_NAME,
    MAX_PAIR_VALUE,
    MAX_PAIRS,
    PAGINATION_DEFAULT,
)

# Header parameters the client sets itself or that belong to the auth method.
IGNORED_HEADERS = {"accept", "content-type", "authorization", "user-agent", "content-length"}
# Names vendors document for an idempotency key: headers (lower case; Stripe, Xero,
# Zendesk and others use Idempotency-Key, PayPal PayPal-Request-Id) and top-level
# JSON body fields (Square).
IDEMPOTENCY_HEADERS = frozenset({"idempotency-key", "x-idempotency-key", "paypal-request-id"})
IDEMPOTENCY_BODY_FIELDS = ("idempotency_key",)
RECEIVE_VERBS = {"search", "list", "query", "find", "lookup"}
VERSION_SEGMENT = re.compile(r"^(v\d+(\.\d+)*|\d[\d.-]*)$", re.IGNORECASE)


def tag_of(operation: dict) -> str:
    tags = operation.get("tags")
    return str(tags[0]) if isinstance(tags, list) and tags else ""


def server_url(server: Any) -> str:
    return str(server.get("url") or "").rstrip("/") if isinstance(server, dict) else ""


def entity_of(path: str, tag: str, tags_informative: bool) -> str:
    """A singular entity: the last plural-looking path segment, else the tag, else the last segment."""
    literals = [
        re.sub(r"\.\w+$", "", s) for s in path.split("/")
        if s and "{" not in s and not VERSION_SEGMENT.match(s)
    ]
    for segment in reversed(literals):
        words = split_words(segment)
        if words and looks_plural(words[-1]):
            return entity_name(segment)
    if tag and tags_informative:
        return entity_name(tag)
    for segment in reversed(literals):
        if split_words(segment):
            return entity_name(segment)
    return entity_name(tag) if tag else "Resource"


def direction_of(op: RawOperation) -> str:
    """GET receives; a POST that searches, lists or queries receives too; everything else sends."""
    if op.method == "GET":
        return "receive"
    if op.method == "POST":
        operation_words = [w.lower() for w in split_words(str(op.operation.get("operationId") or ""))]
        summary_words = [w.lower() for w in split_words(str(op.operation.get("summary") or ""))]
        last_segment = op.path.rstrip("/").rsplit("/", 1)[-1].lower()
        if (
            last_segment in ("search", "query")
            or (operation_words and operation_words[0] in RECEIVE_VERBS)
            or (summary_words and summary_words[0] in RECEIVE_VERBS)
            or "search" in operation_words
        ):
            return "receive"
    return "send"


# Pagination recognised from query parameter names (only when it is clear).
PAGE_PARAMETERS = ("page", "page_number", "pageNumber")
PAGE_SIZE_PARAMETERS = ("per_page", "page_size", "pageSize", "limit", "perPage", "size", "pagesize")
OFFSET_PARAMETERS = ("offset",)
LIMIT_PARAMETERS = ("limit",)
CURSOR_PARAMETERS = (
    "cursor", "page_token", "pageToken", "next_token", "nextToken", "continuation_token", "continuationToken",
    "starting_after", "after", "page_cursor",
)
# Response fields that hold the next page's token, best first.
CURSOR_FIELDS = (
    "next_cursor", "nextCursor", "next_page_token", "nextPageToken", "next_token", "nextToken",
    "continuation_token", "continuationToken", "next_page", "cursor", "after", "next",
)
RECORD_LIST_NAMES = ("data", "items", "results", "records", "entries", "elements", "values")
NOT_RECORD_LISTS = {"errors", "warnings", "links", "messages_errors"}  # lists beside the records, lower-cased
# Response fields that hold the next page's URL (Twilio's next_page_uri, JSON:API's links.next).
NEXT_URL_FIELDS = ("next_page_uri", "next_page_url", "nextPageUrl", "next_url", "nextLink", "next_link")


def schema_of(document: dict, value: Any, depth: int = 0) -> dict:
    """A schema with its `$ref` followed and a single allOf (or all of them) merged; {} when unusable."""
    value = resolve(document, value)
    if not isinstance(value, dict):
        return {}
    parts = value.get("allOf") if isinstance(value.get("allOf"), list) else []
    if not parts or depth > 5:
        return value
    merged: dict = {"type": value.get("type"), "properties": dict(value.get("properties") or {})}
    for part in parts:
        part = schema_of(document, part, depth + 1)
        if part.get("type") and not merged["type"]:
            merged["type"] = part["type"]
        if isinstance(part.get("properties"), dict):
            merged["properties"].update(part["properties"])
    return merged


def is_array(document: dict, schema: Any) -> bool:
    schema = schema_of(document, schema)
    return schema.get("type") == "array" or "items" in schema and "properties" not in schema


def success_schema(document: dict, op: RawOperation) -> dict:
    """The JSON schema of the first 2xx response (200 first), or {}."""
    responses = op.operation.get("responses") if isinstance(op.operation.get("responses"), dict) else {}
    for code in ["200"] + sorted(str(c) for c in responses if str(c).startswith("2") and str(c) != "200"):
        response = resolve(document, responses.get(code) or responses.get(int(code)) if code.isdigit() else None)
        content = response.get("content") if isinstance(response, dict) and isinstance(response.get("content"), dict) else {}
        for media_type, media in content.items():
            if "json" in str(media_type) and isinstance(media, dict):
                return schema_of(document, media.get("schema"))
    return {}


def records_path_of(document: dict, schema: dict) -> str:
    """Where the list of records is: "" for a top-level list, else an object's one array property (or an obvious one)."""
    if not schema or is_array(document, schema):
        return ""
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    arrays = [
        name for name, value in properties.items()
        if is_array(document, value) and str(name).lower() not in NOT_RECORD_LISTS
    ]
    if len(arrays) == 1:
        return arrays[0] if re.fullmatch(r"[A-Za-z0-9_-]+", str(arrays[0])) else ""
    named = [name for name in arrays if name in RECORD_LIST_NAMES]
    if len(named) == 1:
        return named[0]
    if not arrays:
        # {"data": {"items": [...]}}: one object property holding exactly one array.
        nested = [
            (name, records_path_of(document, schema_of(document, value)))
            for name, value in properties.items() if name in RECORD_LIST_NAMES
        ]
        nested = [(name, path) for name, path in nested if path]
        if len(nested) == 1:
            return f"{nested[0][0]}.{nested[0][1]}"
    return ""


def find_field(document: dict, schema: dict, names: tuple[str, ...], depth: int = 0) -> str:
    """A dotted path to the first of `names` in `schema` (breadth first, three levels deep), or ""."""
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    for name in names:
        if name in properties and not is_array(document, properties[name]):
            return name
    if depth >= 2:
        return ""
    for name, value in properties.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)) or is_array(document, value):
            continue
        found = find_field(document, schema_of(document, value), names, depth + 1)
        if found:
            return f"{name}.{found}"
    return ""


def page_size(parameter: dict | None) -> int:
    """The page size to ask for: the parameter's maximum, else its default; 0 when the document says neither."""
    schema = parameter.get("schema") if parameter and isinstance(parameter.get("schema"), dict) else {}
    for key in ("maximum", "default"):
        value = schema.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_PAGE_SIZE:
            return value
    return 0


def pagination_of(document: dict, op: RawOperation, response: dict) -> dict:
    """The pagination the query parameters (and response) make clear; style none otherwise."""
    query = {str(p.get("name")): p for p in op.parameters if p.get("in") == "query" and p.get("name")}
    result = dict(PAGINATION_DEFAULT)
    next_url = find_field(document, response, NEXT_URL_FIELDS)
    links = schema_of(document, (response.get("properties") or {}).get("links")) if response else {}
    if not next_url and schema_of(document, (links.get("properties") or {}).get("next")).get("type") == "string":
        next_url = "links.next"
    if next_url:
        result.update(style="next_url", next_url_path=next_url)
        return result
    page = next((n for n in PAGE_PARAMETERS if n in query), None)
    if page and schema_of(document, query[page].get("schema")).get("type") == "string":
        page = None  # a page token (Stripe's search): a cursor, if the response says where the next one is
    size = next((n for n in PAGE_SIZE_PARAMETERS if n in query), None)
    offset = next((n for n in OFFSET_PARAMETERS if n in query), None)
    cursor = next((n for n in CURSOR_PARAMETERS + PAGE_PARAMETERS if n in query and n != page), None)
    if page and not offset and not cursor:
        result.update(style="page_number", page_parameter=page)
        schema = query[page].get("schema") if isinstance(query[page].get("schema"), dict) else {}
        if schema.get("minimum") == 0 or schema.get("default") == 0:
            result["first_page"] = 0
        limit = page_size(query.get(size)) if size else 0
        if limit:
            result.update(limit_parameter=size, limit=limit)
        return result
    if offset and not page and not cursor:
        limit_name = next((n for n in LIMIT_PARAMETERS + PAGE_SIZE_PARAMETERS if n in query), None)
        limit = page_size(query.get(limit_name)) if limit_name else 0
        if limit:
            result.update(style="limit_offset", offset_parameter=offset, limit_parameter=limit_name, limit=limit)
        return result
    if cursor and not page and not offset:
        path = find_field(document, response, CURSOR_FIELDS)
        if path:
            result.update(style="cursor", cursor_parameter=cursor, cursor_path=path)
    return result


def request_parameters_of(document: dict, op: RawOperation, skip: set[str], key_for) -> list[dict]:
    """Query and header parameters (path ones are in the path) as declared request parameters.

    A required parameter gets the document's default, first enum value or
    example, else a {{placeholder}} that becomes a connector variable; an
    optional one only the document's default (an example is not sent unasked).
    Parameters the client or the pagination sets are left out.
    """
    found: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for p in op.parameters:
        location, name = p.get("in"), str(p.get("name") or "")
        if location not in ("query", "header") or not name or len(name) > MAX_PAIR_NAME or name in skip:
            continue
        if location == "header" and (name.lower() in IGNORED_HEADERS or not HEADER_NAME_RE.match(name)):
            continue
        ident = (location, name.lower() if location == "header" else name)
        if ident in seen:
            continue
        seen.add(ident)
        schema = schema_of(document, p.get("schema"))
        enum = schema.get("enum") if isinstance(schema.get("enum"), list) else []
        required = p.get("required") is True
        default = as_text(schema.get("default"))
        if required and default is None:
            default = (as_text(enum[0]) if enum else None) or as_text(p.get("example")) or as_text(schema.get("example"))
            if default is None:
                default = "{{" + key_for(name) + "}}"
        default = default or ""
        if len(default) > MAX_PAIR_VALUE or any(ch in default for ch in "\r\n\x00") or "{{" in default and "}}" not in default:
            default = ""
        found.append({"name": name, "location": location, "required": required, "default": default,
                      "label": clip(humanise(name), LABEL_MAX)})
    found.sort(key=lambda item: not item["required"])  # required ones first, kept when there are too many
    return found[:MAX_PAIRS]


def body_encoding_of(document: dict, op: RawOperation) -> str:
    """form when the request body is only URL-encoded form data (Stripe), else json."""
    if op.method == "GET":
        return "json"  # no body is sent (Stripe declares form bodies even on GETs)
    body = resolve(document, op.operation.get("requestBody"))
    content = body.get("content") if isinstance(body, dict) and isinstance(body.get("content"), dict) else {}
    types = [str(t).lower() for t in content]
    if any("x-www-form-urlencoded" in t for t in types) and not any("json" in t for t in types):
        return "form"
    return "json"


def idempotency_of(document: dict, op: RawOperation, taken_headers: set[str]) -> dict:
    """Where a send operation takes an idempotency key, when the document names one; else not sent.

    A header already sent by an authentication method (`taken_headers`, lower
    case) is left alone; a body field is read only from a JSON request body.
    """
    for p in op.parameters:
        name = str(p.get("name") or "")
        if p.get("in") == "header" and name.lower() in IDEMPOTENCY_HEADERS and name.lower() not in taken_headers:
            return {"in": "header", "name": name}
    if body_encoding_of(document, op) == "json":
        body = resolve(document, op.operation.get("requestBody"))
        content = body.get("content") if isinstance(body, dict) and isinstance(body.get("content"), dict) else {}
        media = next((value for kind, value in content.items() if "json" in str(kind).lower()), None)
        schema = schema_of(document, media.get("schema")) if isinstance(media, dict) else {}
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        for name in IDEMPOTENCY_BODY_FIELDS:
            if name in properties:
                return {"in": "body", "name": name}
    return dict(IDEMPOTENCY_DEFAULT)


def operation_name(op: RawOperation) -> str:
    summary = " ".join(str(op.operation.get("summary") or "").split()).rstrip(".")
    operation_id = str(op.operation.get("operationId") or "")
    name = summary or (humanise(operation_id) if operation_id else f"{op.method} {op.path}")
    if op.operation.get("deprecated") is True:
        name = f"{clip(name, NAME_MAX - 13)} (deprecated)"
    return clip(name, NAME_MAX)

