"""The manifest: the one serialised form of a connector definition.

`validate()` checks a parsed YAML/JSON document against the schema below and
returns it normalised (every field present, defaults filled, fixed key order),
or raises `ManifestError` whose messages name the exact path, e.g.
``auth_methods[1].variables[0].key: required``.

`export()` writes a connector out as a normalised manifest and `apply()` makes a
connector match a manifest. Installing, overwriting and installing alongside
all go through `apply()`; a connector is "modified" when `export()` differs from
the manifest it was installed from.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any, Callable

import yaml
from django.db import transaction

from connectors import safe_loading

from connectors.models import (
    AuthMethod,
    AuthType,
    BodyEncoding,
    Colour,
    Connector,
    Direction,
    Endpoint,
    HttpMethod,
    PaginationStyle,
    Protocol,
    RateLimitUnit,
    SystemType,
    Variable,
)

KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
MAX_RATE_LIMIT = 1_000_000
MAX_CONCURRENCY = 1_000
# Size limits of a definition: generous for real APIs (the biggest catalog
# connector has 30 endpoints), small enough that every page showing a
# connector, its history and its diffs stays fast.
MAX_ENDPOINTS = 500
MAX_VARIABLES = 100  # connector-level
MAX_AUTH_METHODS = 20
MAX_AUTH_VARIABLES = 50  # per authentication method
MAX_PAIRS = 50  # headers, URL parameters, body parameters, endpoint parameters
MAX_PAIR_NAME = 200
MAX_PAIR_VALUE = 2048
MAX_STATUS_CODES = 20
MAX_PAGES = 100_000  # an endpoint's own page cap (0 = the platform's FLOW_MAX_PAGES)
MAX_PAGE_SIZE = 100_000
# Placeholders a flow run resolves in request parameter values besides the
# connector's and the instance's variables (see flows: since, run time, last
# successful run, and the instance's own time zone and date format).
RUN_PLACEHOLDERS = frozenset({"since", "run_time", "last_success", "instance.time_zone", "instance.date_format"})
MAX_ERRORS_SHOWN = 50
# The uploaded or edited text: a manifest at every limit above stays well below these.
MANIFEST_LIMITS = safe_loading.Limits(
    max_bytes=1024 * 1024, max_depth=16, max_nodes=100_000, allow_aliases=False, what="manifest"
)
# strftime directives accepted in a date format (portable across platforms).
DATE_DIRECTIVES = set("aAwdbBmyYHIpMSfzZjUWcxX%GuVe")


class ManifestError(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def date_format_error(value: str) -> str | None:
    """Why `value` is not a usable strftime date format, or None when it is."""
    if not value or not value.strip():
        return "must not be empty"
    if len(value) > 64:
        return "must be at most 64 characters"
    if "\x00" in value:
        return "must not contain NUL characters"
    directives = re.findall(r"%(.?)", value)
    if not directives:
        return "must contain at least one directive such as %Y or %d"
    for d in directives:
        if d not in DATE_DIRECTIVES:
            return f'unknown directive "%{d}"'
    return None


_TIME_ZONES: frozenset[str] | None = None


def is_time_zone(value: str) -> bool:
    global _TIME_ZONES
    if _TIME_ZONES is None:
        _TIME_ZONES = frozenset(zoneinfo.available_timezones())
    return value in _TIME_ZONES


# --- schema ---------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    kind: str  # str, int, bool, list, dict, obj, status_list
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    max_length: int = 0
    min_value: int | None = None
    max_value: int | None = None
    max_items: int = 0  # list, dict and status_list
    item: dict[str, Field] | None = None  # for obj and list-of-obj
    check: Callable[[Any], str | None] | None = None


def _key_check(value: str) -> str | None:
    if not KEY_RE.match(value):
        return "must start with a lowercase letter and contain only a-z, 0-9 and _ (max 64)"
    return None


def _path_check(value: str) -> str | None:
    if not value.startswith("/"):
        return 'must start with "/"'
    return None


def _url_check(value: str) -> str | None:
    if not re.match(r"^(https?://|\{\{)", value):
        return 'must start with "http://", "https://" or a {{variable}}'
    return None


def _optional_url_check(value: str) -> str | None:
    return _url_check(value) if value else None


HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def header_value_error(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value (Latin-1, no line breaks), or None."""
    if any(ch in value for ch in "\r\n\x00"):
        return "must not contain line breaks"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "may only use Latin-1 characters (it is sent in an HTTP header)"
    return None


def _headers_check(headers: dict[str, str]) -> str | None:
    for name, value in headers.items():
        if not HEADER_NAME_RE.match(name):
            return f'"{name[:60]}" is not a valid header name (letters, digits and -, no spaces)'
        problem = header_value_error(value)
        if problem:
            return f'the value of "{name[:60]}" {problem}'
    return None


DOTTED_PATH_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def _dotted_path_check(value: str) -> str | None:
    """A dotted path into a JSON response ("" allowed: the field is optional)."""
    if value and not DOTTED_PATH_RE.match(value):
        return "must be a dotted path of names (letters, digits, _ and -), e.g. data.items"
    return None


def _tz_check(value: str) -> str | None:
    return None if is_time_zone(value) else f'unknown time zone "{value}"'


VARIABLE = {
    "key": Field("str", required=True, max_length=64, check=_key_check),
    "label": Field("str", required=True, max_length=120),
    "alias": Field("str", default="", max_length=120),
    "default": Field("str", default="", max_length=1024),
    "required": Field("bool", default=False),
    "configurable": Field("bool", default=True),
    "advanced": Field("bool", default=False),
    "secret": Field("bool", default=False),
}

TEST_REQUEST = {
    "method": Field("str", default="GET", choices=tuple(HttpMethod.values)),
    "path": Field("str", required=True, max_length=500, check=_path_check),
    "expected_status": Field("status_list", default=[200], max_items=MAX_STATUS_CODES),
}

AUTH_METHOD = {
    "key": Field("str", required=True, max_length=64, check=_key_check),
    "name": Field("str", required=True, max_length=120),
    "type": Field("str", required=True, choices=tuple(AuthType.values)),
    "token_url": Field("str", default="", max_length=500, check=_optional_url_check),
    "authorize_url": Field("str", default="", max_length=500, check=_optional_url_check),
    "scope": Field("str", default="", max_length=500),
    "variables": Field("list", default=[], item=VARIABLE, max_items=MAX_AUTH_VARIABLES),
    "headers": Field("dict", default={}, max_items=MAX_PAIRS, check=_headers_check),
    "query_params": Field("dict", default={}, max_items=MAX_PAIRS),
    "body": Field("dict", default={}, max_items=MAX_PAIRS),
    "test_request": Field("obj", required=True, item=TEST_REQUEST),
}

PARAMETER_LOCATIONS = ("query", "header", "body")

REQUEST_PARAMETER = {
    "name": Field("str", required=True, max_length=MAX_PAIR_NAME),
    "location": Field("str", default="query", choices=PARAMETER_LOCATIONS),
    "required": Field("bool", default=False),
    "default": Field("str", default="", max_length=MAX_PAIR_VALUE),
    "label": Field("str", default="", max_length=120),  # "" becomes the name
}

# Pagination of a receive endpoint. Which keys a style uses (the others keep
# their defaults): PAGINATION_KEYS_BY_STYLE; checked in _check_pagination.
PAGINATION = {
    "style": Field("str", default=PaginationStyle.NONE.value, choices=tuple(PaginationStyle.values)),
    "next_url_path": Field("str", default="", max_length=200, check=_dotted_path_check),
    "page_parameter": Field("str", default="", max_length=MAX_PAIR_NAME),
    "limit_parameter": Field("str", default="", max_length=MAX_PAIR_NAME),
    "limit": Field("int", default=0, min_value=0, max_value=MAX_PAGE_SIZE),
    "offset_parameter": Field("str", default="", max_length=MAX_PAIR_NAME),
    "cursor_path": Field("str", default="", max_length=200, check=_dotted_path_check),
    "cursor_parameter": Field("str", default="", max_length=MAX_PAIR_NAME),
    "first_page": Field("int", default=1, min_value=0, max_value=1),
    "max_pages": Field("int", default=0, min_value=0, max_value=MAX_PAGES),
}
PAGINATION_DEFAULT = {name: spec.default for name, spec in PAGINATION.items()}
PAGINATION_KEYS_BY_STYLE = {
    PaginationStyle.NONE: (),
    PaginationStyle.NEXT_URL: ("next_url_path", "max_pages"),
    PaginationStyle.LINK_HEADER: ("max_pages",),
    PaginationStyle.PAGE_NUMBER: ("page_parameter", "limit_parameter", "limit", "first_page", "max_pages"),
    PaginationStyle.LIMIT_OFFSET: ("limit_parameter", "limit", "offset_parameter", "max_pages"),
    PaginationStyle.CURSOR: ("cursor_path", "cursor_parameter", "max_pages"),
}
# Keys a style cannot do without: (key, what it is, example).
PAGINATION_REQUIRED = {
    PaginationStyle.NEXT_URL: ("next_url_path",),
    PaginationStyle.PAGE_NUMBER: ("page_parameter",),
    PaginationStyle.LIMIT_OFFSET: ("offset_parameter", "limit_parameter"),
    PaginationStyle.CURSOR: ("cursor_path", "cursor_parameter"),
}

ENDPOINT = {
    "key": Field("str", required=True, max_length=64, check=_key_check),
    "name": Field("str", required=True, max_length=120),
    "entity": Field("str", required=True, max_length=80),
    "direction": Field("str", required=True, choices=tuple(Direction.values)),
    "method": Field("str", required=True, choices=tuple(HttpMethod.values)),
    "path": Field("str", required=True, max_length=500, check=_path_check),
    "parameters": Field("dict", default={}, max_items=MAX_PAIRS),
    "request_parameters": Field("list", default=[], item=REQUEST_PARAMETER, max_items=MAX_PAIRS),
    "body_encoding": Field("str", default=BodyEncoding.JSON.value, choices=tuple(BodyEncoding.values)),
    "records_path": Field("str", default="", max_length=200, check=_dotted_path_check),
    "pagination": Field("obj", default=PAGINATION_DEFAULT, item=PAGINATION),
    # Runs fail on a redirect to another origin unless the endpoint allows it.
    "follow_redirects_to_other_origins": Field("bool", default=False),
}

RATE_LIMIT = {
    "amount": Field("int", required=True, min_value=1, max_value=MAX_RATE_LIMIT),
    "unit": Field("str", required=True, choices=tuple(RateLimitUnit.values)),
}

CONNECTOR = {
    "name": Field("str", required=True, max_length=120),
    "description": Field("str", default="", max_length=5000),
    "system_type": Field("str", required=True, choices=tuple(SystemType.values)),
    "colour": Field("str", default="blue", choices=tuple(Colour.values)),
    "protocol": Field("str", default="HTTP", choices=tuple(Protocol.values)),
    "version": Field("str", required=True, max_length=40),
    "version_name": Field("str", default="", max_length=120),
    "base_url": Field("str", required=True, max_length=500, check=_url_check),
    "date_format": Field("str", default="%Y-%m-%dT%H:%M:%S%z", max_length=64, check=date_format_error),
    "rate_limit": Field("obj", required=True, item=RATE_LIMIT),
    "time_zone": Field("str", default="UTC", max_length=64, check=_tz_check),
    "concurrency_limit": Field("int", default=None, min_value=1, max_value=MAX_CONCURRENCY),
    "variables": Field("list", default=[], item=VARIABLE, max_items=MAX_VARIABLES),
    "auth_methods": Field("list", required=True, item=AUTH_METHOD, max_items=MAX_AUTH_METHODS),
    "endpoints": Field("list", required=True, item=ENDPOINT, max_items=MAX_ENDPOINTS),
}


INTEGER_TEXT_RE = re.compile(r"^\s*[-+]?[0-9][0-9_]*\s*$")


def _join(path: str, name: Any) -> str:
    name = str(name)[:80]
    return f"{path}.{name}" if path else name


def _number_text(value: int | float) -> str | None:
    """A number written as text; None for integers too long to be meant (and to convert)."""
    if isinstance(value, int) and value.bit_length() > 100:
        return None
    return str(value)


def _check_value(value: Any, spec: Field, path: str, errors: list[str]) -> Any:
    """Type-check one value; returns the normalised value (or None after an error)."""
    if spec.kind == "str":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = _number_text(value)  # YAML reads `version: 1.0` as a number
        if not isinstance(value, str):
            errors.append(f"{path}: must be a string")
            return None
        if "\x00" in value:
            errors.append(f"{path}: must not contain NUL characters")
            return None
        value = value.strip()
        if spec.required and not value:
            errors.append(f"{path}: required")
            return None
        if spec.max_length and len(value) > spec.max_length:
            errors.append(f"{path}: must be at most {spec.max_length} characters")
            return None
        if spec.choices and value not in spec.choices:
            errors.append(f"{path}: must be one of {', '.join(spec.choices)}")
            return None
    elif spec.kind == "int":
        if value is None and not spec.required:
            return None
        if isinstance(value, str) and INTEGER_TEXT_RE.match(value):
            # An integer too long to be read as a number (safe_loading.MAX_INT_DIGITS).
            limit = spec.min_value if value.lstrip().startswith("-") else spec.max_value
            word = "least" if value.lstrip().startswith("-") else "most"
            errors.append(f"{path}: must be at {word} {limit}" if limit is not None else f"{path}: number too large")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: must be a whole number")
            return None
        if spec.min_value is not None and value < spec.min_value:
            errors.append(f"{path}: must be at least {spec.min_value}")
            return None
        if spec.max_value is not None and value > spec.max_value:
            errors.append(f"{path}: must be at most {spec.max_value}")
            return None
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: must be true or false")
            return None
    elif spec.kind == "dict":
        if not isinstance(value, dict):
            errors.append(f"{path}: must be a mapping of names to text")
            return None
        if spec.max_items and len(value) > spec.max_items:
            errors.append(f"{path}: at most {spec.max_items} entries (found {len(value)})")
            return None
        clean = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k.strip():
                errors.append(f"{path}: names must be non-empty text")
                return None
            if len(k) > MAX_PAIR_NAME or "\x00" in k:
                errors.append(f"{path}: names must be at most {MAX_PAIR_NAME} characters, without NUL characters")
                return None
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = _number_text(v)
            if not isinstance(v, str):
                errors.append(f"{_join(path, k)}: must be text")
                return None
            if len(v) > MAX_PAIR_VALUE:
                errors.append(f"{_join(path, k)}: must be at most {MAX_PAIR_VALUE} characters")
                return None
            if "\x00" in v:
                errors.append(f"{_join(path, k)}: must not contain NUL characters")
                return None
            clean[k.strip()] = v
        value = clean
    elif spec.kind == "status_list":
        if not isinstance(value, list) or not value:
            errors.append(f"{path}: must be a non-empty list of HTTP status codes")
            return None
        if spec.max_items and len(value) > spec.max_items:
            errors.append(f"{path}: at most {spec.max_items} status codes (found {len(value)})")
            return None
        for i, code in enumerate(value):
            if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                errors.append(f"{path}[{i}]: must be an HTTP status code (100-599)")
                return None
    elif spec.kind == "obj":
        return _check_object(value, spec.item or {}, path, errors)
    elif spec.kind == "list":
        if not isinstance(value, list):
            errors.append(f"{path}: must be a list")
            return None
        if spec.max_items and len(value) > spec.max_items:
            errors.append(f"{path}: at most {spec.max_items} allowed (found {len(value)})")
            return None
        items = [_check_object(v, spec.item or {}, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        _check_unique_keys(items, path, errors)
        if spec.item is VARIABLE:
            _check_secret_defaults(items, path, errors)
        return items
    if spec.check and value is not None:
        problem = spec.check(value)
        if problem:
            errors.append(f"{path}: {problem}")
            return None
    return value


def _check_object(data: Any, schema: dict[str, Field], path: str, errors: list[str]) -> dict | None:
    if not isinstance(data, dict):
        errors.append(f"{path or 'manifest'}: must be a mapping")
        return None
    for unknown in sorted(set(map(str, data)) - set(schema)):
        errors.append(f"{_join(path, unknown)}: unknown field")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        field_path = _join(path, name)
        if name not in data or data[name] is None and (spec.kind != "int" or spec.default is not None):
            if spec.required:
                errors.append(f"{field_path}: required")
                out[name] = None
            else:
                default = spec.default
                out[name] = list(default) if isinstance(default, list) else (
                    dict(default) if isinstance(default, dict) else default
                )
            continue
        if data[name] is None and spec.required:
            errors.append(f"{field_path}: required")
            out[name] = None
            continue
        out[name] = _check_value(data[name], spec, field_path, errors)
    return out


def _check_unique_keys(items: list, path: str, errors: list[str]) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        key = item.get("key") if isinstance(item, dict) else None
        if not key:
            continue
        if key in seen:
            errors.append(f'{path}[{i}].key: duplicate key "{key}"')
        seen.add(key)


def _check_secret_defaults(items: list, path: str, errors: list[str]) -> None:
    """A secret has no default: the definition is exported and shown in plain, secrets only per instance."""
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("secret") and item.get("default"):
            errors.append(
                f"{path}[{i}].default: a secret variable cannot have a default value; "
                "each instance enters its own (the connector's definition is not encrypted)"
            )


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, dict):
        found: set[str] = set()
        for v in value.values():
            found |= _placeholders(v)
        return found
    if isinstance(value, str):
        return set(PLACEHOLDER_RE.findall(value))
    return set()


def _check_request_parameters(endpoint: dict, path: str, known: set[str], errors: list[str]) -> None:
    """Declared parameters: unique per location, valid header names, known placeholders; label defaults to name."""
    seen: set[tuple[str, str]] = set()
    for j, parameter in enumerate(endpoint["request_parameters"] or []):
        if not parameter or not parameter.get("name"):
            continue
        where = f"{path}.request_parameters[{j}]"
        name, location = parameter["name"], parameter["location"]
        if not parameter["label"]:
            parameter["label"] = name[:120]
        if (location, name.lower() if location == "header" else name) in seen:
            errors.append(f'{where}.name: duplicate {location} parameter "{name[:60]}"')
        seen.add((location, name.lower() if location == "header" else name))
        if location == "header":
            if not HEADER_NAME_RE.match(name):
                errors.append(f'{where}.name: "{name[:60]}" is not a valid header name (letters, digits and -, no spaces)')
            problem = header_value_error(parameter["default"])
            if problem:
                errors.append(f"{where}.default: {problem}")
        if location == "body" and endpoint["method"] == HttpMethod.GET:
            errors.append(f"{where}.location: a GET request has no body (use query or header)")
        for unknown in sorted(_placeholders(parameter["default"]) - known):
            errors.append(f'{where}.default: unknown variable "{{{{{unknown}}}}}"')


def _check_pagination(endpoint: dict, path: str, errors: list[str]) -> None:
    """The keys a pagination style needs are set, and only the ones it uses differ from their defaults."""
    pagination = endpoint["pagination"]
    if not pagination:
        return
    style = pagination["style"]
    where = f"{path}.pagination"
    if style != PaginationStyle.NONE and endpoint["direction"] == Direction.SEND:
        errors.append(f"{where}.style: only receive endpoints are paginated")
        return
    for key in PAGINATION_REQUIRED.get(style, ()):
        if not pagination[key]:
            errors.append(f"{where}.{key}: required for {style} pagination")
    if style == PaginationStyle.PAGE_NUMBER and pagination["limit"] and not pagination["limit_parameter"]:
        errors.append(f"{where}.limit_parameter: required when a limit is set")
    if style in (PaginationStyle.PAGE_NUMBER, PaginationStyle.LIMIT_OFFSET) and pagination["limit_parameter"] \
            and not pagination["limit"]:
        errors.append(f"{where}.limit: give the page size to send in {pagination['limit_parameter'][:60]}")
    used = PAGINATION_KEYS_BY_STYLE.get(style, ())
    for key, default in PAGINATION_DEFAULT.items():
        if key != "style" and key not in used and pagination[key] not in (default, None):
            errors.append(f"{where}.{key}: not used by {style} pagination (leave it out)")


def _check_semantics(m: dict, errors: list[str], *, draft: bool = False) -> None:
    """Rules across fields: required variables per auth type, known placeholders."""
    connector_keys = {v["key"] for v in m["variables"] or [] if v and v.get("key")}
    all_auth_keys: set[str] = set()
    for i, method in enumerate(m["auth_methods"] or []):
        if not method:
            continue
        path = f"auth_methods[{i}]"
        keys = {v["key"] for v in method["variables"] or [] if v and v.get("key")}
        all_auth_keys |= keys
        needed = {
            AuthType.BASIC: ("username", "password"),
            AuthType.OAUTH2_CLIENT_CREDENTIALS: ("client_id", "client_secret"),
        }.get(method["type"], ())
        for key in needed:
            if key not in keys:
                errors.append(f'{path}.variables: a {method["type"]} method needs a "{key}" variable')
        if method["type"] in (AuthType.OAUTH2_CLIENT_CREDENTIALS, AuthType.OAUTH2_AUTHORIZATION_CODE):
            if not method["token_url"]:
                errors.append(f"{path}.token_url: required for OAuth 2")
        if method["type"] == AuthType.OAUTH2_AUTHORIZATION_CODE and not method["authorize_url"]:
            errors.append(f"{path}.authorize_url: required for OAuth 2 (authorisation code)")
        if method["type"] == AuthType.TOKEN and not (method["headers"] or method["query_params"]):
            errors.append(f"{path}: a token method must send its token in headers or query_params")
        known = connector_keys | keys | {"access_token"}
        for field in ("headers", "query_params", "body", "token_url", "authorize_url"):
            for name in sorted(_placeholders(method[field]) - known):
                errors.append(f'{path}.{field}: unknown variable "{{{{{name}}}}}"')
        if method["test_request"]:
            for name in sorted(_placeholders(method["test_request"]["path"]) - known):
                errors.append(f'{path}.test_request.path: unknown variable "{{{{{name}}}}}"')
    for name in sorted(_placeholders(m["base_url"]) - connector_keys):
        errors.append(f'base_url: unknown variable "{{{{{name}}}}}" (declare it in variables)')
    for i, endpoint in enumerate(m["endpoints"] or []):
        if not endpoint:
            continue
        for name in sorted(_placeholders(endpoint["path"]) - connector_keys - all_auth_keys):
            errors.append(f'endpoints[{i}].path: unknown variable "{{{{{name}}}}}"')
        direction, method = endpoint["direction"], endpoint["method"]
        if direction == Direction.RECEIVE and method not in (HttpMethod.GET, HttpMethod.POST):
            errors.append(f"endpoints[{i}].method: a receive endpoint uses GET (or POST for searches)")
        if direction == Direction.SEND and method == HttpMethod.GET:
            errors.append(f"endpoints[{i}].method: a send endpoint uses POST, PUT, PATCH or DELETE")
        _check_request_parameters(endpoint, f"endpoints[{i}]", connector_keys | all_auth_keys | RUN_PLACEHOLDERS, errors)
        _check_pagination(endpoint, f"endpoints[{i}]", errors)
    if m["auth_methods"] == [] and not draft:
        errors.append("auth_methods: at least one authentication method is required")
    if m["endpoints"] == [] and not draft:
        errors.append("endpoints: at least one endpoint is required")


def validate(data: Any, *, draft: bool = False) -> dict:
    """The normalised manifest, or ManifestError listing every problem by path.

    A draft (a custom connector still in the builder) may have no
    authentication method or endpoint yet; it cannot get instances until it has.
    """
    errors: list[str] = []
    manifest = _check_object(data, CONNECTOR, "", errors)
    if manifest is not None and not errors:
        _check_semantics(manifest, errors, draft=draft)
    if errors:
        if len(errors) > MAX_ERRORS_SHOWN:
            errors = errors[:MAX_ERRORS_SHOWN] + [f"… and {len(errors) - MAX_ERRORS_SHOWN} more problems"]
        raise ManifestError(errors)
    return manifest  # type: ignore[return-value]


def parse(text: str, deadline: safe_loading.Deadline | None = None) -> Any:
    """YAML (or JSON, which is YAML) text as data; ManifestError saying where it is broken.

    The text is checked against MANIFEST_LIMITS (size, nesting, node count, no
    aliases) before the YAML is composed.
    """
    if "\x00" in text:
        raise ManifestError(["manifest: must not contain NUL characters"])
    size = len(text.encode("utf-8", errors="replace"))
    if size > MANIFEST_LIMITS.max_bytes:
        raise ManifestError([
            f"manifest: too large ({size / 1024:,.0f} KB); a manifest may be at most {MANIFEST_LIMITS.max_bytes // 1024:,} KB"
        ])
    try:
        return safe_loading.load_yaml(text, MANIFEST_LIMITS, deadline or safe_loading.Deadline())
    except safe_loading.DocumentError as exc:
        raise ManifestError([f"manifest: {exc.describe()}"]) from None


def loads(text: str, deadline: safe_loading.Deadline | None = None) -> dict:
    """Parse YAML (or JSON) text and validate it."""
    return validate(parse(text, deadline))


def dumps(manifest: dict | list) -> str:
    return yaml.dump(
        manifest, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False, allow_unicode=True, width=100
    )


# --- connector <-> manifest ------------------------------------------------


def _variable_dict(v: Variable) -> dict:
    return {
        "key": v.key,
        "label": v.label,
        "alias": v.alias,
        "default": v.default,
        "required": v.required,
        "configurable": v.configurable,
        "advanced": v.advanced,
        "secret": v.secret,
    }


def _request_parameter_dict(p: dict) -> dict:
    """A stored declared parameter in the manifest's key order."""
    return {name: p.get(name, "" if name == "label" else spec.default) for name, spec in REQUEST_PARAMETER.items()}


def _pagination_dict(stored: dict | None) -> dict:
    """Stored pagination in the manifest's key order; endpoints saved before pagination existed get the defaults."""
    stored = stored or {}
    return {name: stored.get(name, default) for name, default in PAGINATION_DEFAULT.items()}


def export(connector: Connector) -> dict:
    """The connector as a normalised manifest (uses prefetched relations when present)."""
    variables = list(connector.variables.all())
    return {
        "name": connector.name,
        "description": connector.description,
        "system_type": connector.system_type,
        "colour": connector.colour,
        "protocol": connector.protocol,
        "version": connector.version,
        "version_name": connector.version_name,
        "base_url": connector.base_url,
        "date_format": connector.date_format,
        "rate_limit": {"amount": connector.rate_limit_amount, "unit": connector.rate_limit_unit},
        "time_zone": connector.time_zone,
        "concurrency_limit": connector.concurrency_limit,
        "variables": [_variable_dict(v) for v in variables if v.auth_method_id is None],
        "auth_methods": [
            {
                "key": a.key,
                "name": a.name,
                "type": a.type,
                "token_url": a.token_url,
                "authorize_url": a.authorize_url,
                "scope": a.scope,
                "variables": [_variable_dict(v) for v in variables if v.auth_method_id == a.id],
                "headers": dict(a.headers),
                "query_params": dict(a.query_params),
                "body": dict(a.body),
                "test_request": {
                    "method": a.test_method,
                    "path": a.test_path,
                    "expected_status": list(a.test_expected_status),
                },
            }
            for a in connector.auth_methods.all()
        ],
        "endpoints": [
            {
                "key": e.key,
                "name": e.name,
                "entity": e.entity,
                "direction": e.direction,
                "method": e.method,
                "path": e.path,
                "parameters": dict(e.parameters),
                "request_parameters": [_request_parameter_dict(p) for p in e.request_parameters or []],
                "body_encoding": e.body_encoding,
                "records_path": e.records_path,
                "pagination": _pagination_dict(e.pagination),
                "follow_redirects_to_other_origins": e.follow_redirects_to_other_origins,
            }
            for e in connector.endpoints.all()
        ],
    }


def _sync_variables(connector: Connector, auth_method: AuthMethod | None, items: list[dict]) -> None:
    existing = {
        v.key: v
        for v in Variable.objects.filter(connector=connector, auth_method=auth_method)
    }
    for position, item in enumerate(items):
        variable = existing.pop(item["key"], None) or Variable(
            connector=connector, auth_method=auth_method, key=item["key"]
        )
        for name in ("label", "alias", "default", "required", "configurable", "advanced", "secret"):
            setattr(variable, name, item[name])
        variable.position = position
        variable.save()
    for stale in existing.values():
        stale.delete()


@transaction.atomic
def apply(manifest: dict, *, connector: Connector, user=None, detach_removed_endpoints: str = "") -> Connector:
    """Make `connector` (saved or new, company set) match the validated `manifest`.

    Children are matched by key and updated in place, so instances (auth
    methods) and connection shapes (endpoints) keep pointing at the same rows.
    Removing a child that is still in use raises ProtectedError and, being
    atomic, leaves the old definition intact — unless `detach_removed_endpoints`
    gives a reason: then connection shapes of a removed endpoint are kept and
    flagged with it (used by updates, where the platform removed the endpoint).
    """
    connector.name = manifest["name"]
    connector.description = manifest["description"]
    connector.system_type = manifest["system_type"]
    connector.colour = manifest["colour"]
    connector.protocol = manifest["protocol"]
    connector.version = manifest["version"]
    connector.version_name = manifest["version_name"]
    connector.base_url = manifest["base_url"]
    connector.date_format = manifest["date_format"]
    connector.rate_limit_amount = manifest["rate_limit"]["amount"]
    connector.rate_limit_unit = manifest["rate_limit"]["unit"]
    connector.time_zone = manifest["time_zone"]
    connector.concurrency_limit = manifest["concurrency_limit"]
    if user is not None:
        if connector.pk is None:
            connector.created_by = user
        connector.updated_by = user
    connector.save()

    _sync_variables(connector, None, manifest["variables"])

    methods = {a.key: a for a in connector.auth_methods.all()}
    for position, item in enumerate(manifest["auth_methods"]):
        method = methods.pop(item["key"], None) or AuthMethod(connector=connector, key=item["key"])
        for name in ("name", "type", "token_url", "authorize_url", "scope", "headers", "query_params", "body"):
            setattr(method, name, item[name])
        method.test_method = item["test_request"]["method"]
        method.test_path = item["test_request"]["path"]
        method.test_expected_status = item["test_request"]["expected_status"]
        method.position = position
        method.save()
        _sync_variables(connector, method, item["variables"])
    for stale in methods.values():
        stale.delete()

    endpoints = {e.key: e for e in connector.endpoints.all()}
    for position, item in enumerate(manifest["endpoints"]):
        endpoint = endpoints.pop(item["key"], None) or Endpoint(connector=connector, key=item["key"])
        for name in (
            "name", "entity", "direction", "method", "path", "parameters", "body_encoding", "records_path",
            "follow_redirects_to_other_origins",
        ):
            setattr(endpoint, name, item[name])
        endpoint.request_parameters = [dict(p) for p in item["request_parameters"]]
        endpoint.pagination = dict(item["pagination"])
        endpoint.position = position
        endpoint.save()
    for stale in endpoints.values():
        if detach_removed_endpoints:
            stale.connection_shapes.update(endpoint=None, missing_endpoint=f"{stale.name}: {detach_removed_endpoints}"[:300])
        stale.delete()
    return connector


# --- comparing manifests ------------------------------------------------------

SETTING_LABELS = {
    "name": "name", "description": "description", "system_type": "system type", "colour": "colour",
    "protocol": "protocol", "version": "version", "version_name": "version name", "base_url": "base URL",
    "date_format": "date format", "rate_limit": "rate limit", "time_zone": "time zone",
    "concurrency_limit": "concurrency limit",
}


@dataclass
class SectionChanges:
    added: list[str]
    removed: list[str]
    changed: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass
class ManifestComparison:
    settings: list[str]
    variables: SectionChanges
    auth_methods: SectionChanges
    endpoints: SectionChanges
    removed_endpoint_keys: set[str]
    changed_endpoint_keys: set[str]
    removed_auth_method_keys: set[str]

    def __bool__(self) -> bool:
        return bool(self.settings or self.variables or self.auth_methods or self.endpoints)

    def summary(self) -> str:
        parts = []
        for label, section in (("endpoint", self.endpoints), ("authentication method", self.auth_methods), ("variable", self.variables)):
            for verb, items in (("added", section.added), ("removed", section.removed), ("changed", section.changed)):
                if items:
                    parts.append(f"{label}{'s' if len(items) > 1 else ''} {verb}: {', '.join(items)}")
        if self.settings:
            parts.append("changed " + ", ".join(self.settings))
        return "; ".join(parts) or "no changes"


def _section(old: list[dict], new: list[dict], label_key: str) -> tuple[SectionChanges, set[str], set[str]]:
    before = {item["key"]: item for item in old}
    after = {item["key"]: item for item in new}
    removed = set(before) - set(after)
    changed = {k for k in set(before) & set(after) if before[k] != after[k]}
    return (
        SectionChanges(
            added=[after[k][label_key] for k in after if k not in before],
            removed=[before[k][label_key] for k in before if k in removed],
            changed=[after[k][label_key] for k in after if k in changed],
        ),
        removed,
        changed,
    )


def compare(old: dict, new: dict) -> ManifestComparison:
    """What changes from `old` to `new`, by key: settings, variables, auth methods, endpoints."""
    variables, _, _ = _section(old["variables"], new["variables"], "label")
    auth, removed_auth, _ = _section(old["auth_methods"], new["auth_methods"], "name")
    endpoints, removed_endpoints, changed_endpoints = _section(old["endpoints"], new["endpoints"], "name")
    settings_changed = [label for key, label in SETTING_LABELS.items() if old.get(key) != new.get(key)]
    return ManifestComparison(
        settings=settings_changed,
        variables=variables,
        auth_methods=auth,
        endpoints=endpoints,
        removed_endpoint_keys=removed_endpoints,
        changed_endpoint_keys=changed_endpoints,
        removed_auth_method_keys=removed_auth,
    )


DIFF_MAX_LINES = 400
SECTIONS = ("variables", "auth_methods", "endpoints")


@dataclass
class Diff:
    """The first `DIFF_MAX_LINES` lines of a manifest diff, and how many more there are."""

    lines: list[tuple[str, str]]
    hidden: int = 0


def _unified(old: list[str], new: list[str]) -> list[tuple[str, str]]:
    lines = []
    for line in difflib.unified_diff(old, new, lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        kind = "@" if line.startswith("@@") else line[:1]
        lines.append((kind, line[1:] if kind != "@" else "…"))
    return lines


def diff(before: dict | None, after: dict, max_lines: int = DIFF_MAX_LINES) -> Diff:
    """A readable diff of two manifests as YAML, item by item: (kind, text), kind in {"+", "-", " ", "@"}.

    Variables, authentication methods and endpoints are matched by key and
    only the items that were added, removed or changed are dumped and
    compared, so the cost follows the size of the change, not of the
    connector (a line diff of two whole 500-endpoint manifests takes seconds).
    """
    before = before or {}
    lines: list[tuple[str, str]] = []
    settings_old = {k: v for k, v in before.items() if k not in SECTIONS}
    settings_new = {k: v for k, v in after.items() if k not in SECTIONS}
    if settings_old != settings_new:
        lines += _unified(dumps(settings_old).splitlines() if settings_old else [], dumps(settings_new).splitlines())
    for section in SECTIONS:
        old = {item.get("key"): item for item in before.get(section) or [] if isinstance(item, dict)}
        new = {item.get("key"): item for item in after.get(section) or [] if isinstance(item, dict)}
        for key, item in new.items():
            if key not in old:
                lines.append(("@", f"{section}: {key} added"))
                lines += [("+", line) for line in dumps([item]).splitlines()]
            elif old[key] != item:
                lines.append(("@", f"{section}: {key} changed"))
                lines += [line for line in _unified(dumps([old[key]]).splitlines(), dumps([item]).splitlines()) if line[0] != "@"]
        for key, item in old.items():
            if key not in new:
                lines.append(("@", f"{section}: {key} removed"))
                lines += [("-", line) for line in dumps([item]).splitlines()]
        kept_old = [key for key in old if key in new]
        kept_new = [key for key in new if key in old]
        if kept_old != kept_new:
            lines.append(("@", f"{section}: order changed"))
    return Diff(lines[:max_lines], max(0, len(lines) - max_lines))


def diff_lines(before: dict | None, after: dict) -> list[tuple[str, str]]:
    """Every line of `diff()` (tests and callers that need no cap)."""
    result = diff(before, after, max_lines=10**9)
    return result.lines
