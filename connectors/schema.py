"""The manifest schema: pydantic models of a connector definition, with error paths.

`Manifest.model_validate()` checks the structure (types, lengths, choices,
required fields, unknown fields, header names, URLs, date formats, time
zones); `rule_errors()` then checks the rules across fields (unique keys,
declared placeholders, what each authentication type and pagination style
needs). `describe()` turns pydantic's errors into the messages users see, each
prefixed with its path in the manifest: ``endpoints[3].pagination.cursor_path:
required for cursor pagination``. The builder places an error next to the form
field its path names, so the path format is part of the interface.

Types are strict (a YAML `yes` is not a string, `"1"` is not a number) with two
exceptions kept from the first manifests: numbers are accepted as text
(`version: 1.0`), and text is trimmed.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from connectors import models
from connectors.idempotency import HEADER_NAME_RE, idempotency_name_error
from connectors.safe_loading import MAX_INT_DIGITS

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
# strftime directives accepted in a date format (portable across platforms).
DATE_DIRECTIVES = set("aAwdbBmyYHIpMSfzZjUWcxX%GuVe")
DOTTED_PATH_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
INTEGER_TEXT_RE = re.compile(r"^\s*[-+]?[0-9][0-9_]*\s*$")
PARAMETER_LOCATIONS = ("query", "header", "body")
MAX_IDEMPOTENCY_KEY_NAME = 100  # connectors.models.Endpoint.idempotency_key_name


class ManifestError(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


# --- checks of single values (also used by the forms) ---------------------------------


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


def header_value_error(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value (Latin-1, no line breaks), or None."""
    if any(ch in value for ch in "\r\n\x00"):
        return "must not contain line breaks"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "may only use Latin-1 characters (it is sent in an HTTP header)"
    return None


def _key_error(value: str) -> str | None:
    return None if KEY_RE.match(value) else "must start with a lowercase letter and contain only a-z, 0-9 and _ (max 64)"


def _path_error(value: str) -> str | None:
    return None if value.startswith("/") else 'must start with "/"'


def _url_error(value: str) -> str | None:
    return None if re.match(r"^(https?://|\{\{)", value) else 'must start with "http://", "https://" or a {{variable}}'


def _optional_url_error(value: str) -> str | None:
    return _url_error(value) if value else None


def _dotted_path_error(value: str) -> str | None:
    """A dotted path into a JSON response ("" allowed: the field is optional)."""
    if value and not DOTTED_PATH_RE.match(value):
        return "must be a dotted path of names (letters, digits, _ and -), e.g. data.items"
    return None


def _time_zone_error(value: str) -> str | None:
    return None if is_time_zone(value) else f'unknown time zone "{value}"'


def _headers_error(headers: dict[str, str]) -> str | None:
    for name, value in headers.items():
        if not HEADER_NAME_RE.match(name):
            return f'"{name[:60]}" is not a valid header name (letters, digits and -, no spaces)'
        value_problem = header_value_error(value)
        if value_problem:
            return f'the value of "{name[:60]}" {value_problem}'
    return None


# --- field types ------------------------------------------------------------------------


def problem(message: str, at: str = "") -> PydanticCustomError:
    """An error with the project's own message; `at` extends the path (e.g. ".default")."""
    return PydanticCustomError("manifest", message, {"at": at} if at else None)


def _number_text(value: int | float) -> str | None:
    """A number written as text; None for integers too long to be meant (and to convert)."""
    if isinstance(value, int) and value.bit_length() > 100:
        return None
    return str(value)


def _read_text(*, strip: bool = True, what: str = "must be a string") -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = _number_text(value)  # YAML reads `version: 1.0` as a number
        if not isinstance(value, str):
            raise problem(what)
        if "\x00" in value:
            raise problem("must not contain NUL characters")
        return value.strip() if strip else value
    return read


_read_trimmed_text = _read_text()


def _checked(check: Callable[[str], str | None]) -> AfterValidator:
    def run(value: str) -> str:
        message = check(value)
        if message:
            raise problem(message)
        return value
    return AfterValidator(run)


def Text(max_length: int, *, required: bool = False, check: Callable[[str], str | None] | None = None) -> Any:
    """Trimmed text of at most `max_length` characters; required means not empty."""
    parts: list[Any] = [
        BeforeValidator(_read_trimmed_text), StringConstraints(min_length=1 if required else None, max_length=max_length),
    ]
    if check:
        parts.append(_checked(check))
    return Annotated[(str, *parts)]


def Choice(choices: list[str] | tuple[str, ...], *, required: bool = False) -> Any:
    """One of `choices` (written as text, trimmed); required means not empty."""
    def read(value: Any) -> Any:
        value = _read_trimmed_text(value)
        if required and not value:
            raise problem("required")
        return value
    return Annotated[Literal[tuple(choices)], BeforeValidator(read)]


def Number(minimum: int, maximum: int) -> Any:
    """A whole number within bounds; integers the loader kept as their digits (too long to convert) are out of range."""
    def read(value: Any) -> Any:
        if isinstance(value, str) and INTEGER_TEXT_RE.match(value) and sum(c.isdigit() for c in value) > MAX_INT_DIGITS:
            negative = value.lstrip().startswith("-")
            raise problem(f"must be at least {minimum}" if negative else f"must be at most {maximum}")
        return value
    return Annotated[int, BeforeValidator(read), Field(ge=minimum, le=maximum)]


def _read_pairs(value: Any) -> Any:
    if not isinstance(value, dict):
        raise problem("must be a mapping of names to text")
    if len(value) > MAX_PAIRS:
        raise problem(f"at most {MAX_PAIRS} entries (found {len(value)})")
    clean = {}
    for name, text in value.items():
        if not isinstance(name, str) or not name.strip():
            raise problem("names must be non-empty text")
        if len(name) > MAX_PAIR_NAME or "\x00" in name:
            raise problem(f"names must be at most {MAX_PAIR_NAME} characters, without NUL characters")
        clean[name.strip()] = text
    return clean


PairValue = Annotated[str, BeforeValidator(_read_text(strip=False, what="must be text")),
                      StringConstraints(max_length=MAX_PAIR_VALUE)]
# Names to text: fixed headers, URL and body parameters ({{variables}} allowed in the values).
Pairs = Annotated[dict[str, PairValue], BeforeValidator(_read_pairs)]
Headers = Annotated[Pairs, _checked(_headers_error)]


def _read_status(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise problem("must be an HTTP status code (100-599)")
    return value


def _read_statuses(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise problem("must be a non-empty list of HTTP status codes")
    if len(value) > MAX_STATUS_CODES:
        raise problem(f"at most {MAX_STATUS_CODES} status codes (found {len(value)})")
    return value


StatusCodes = Annotated[list[Annotated[int, BeforeValidator(_read_status)]], BeforeValidator(_read_statuses)]
Key = Text(64, required=True, check=_key_error)


_FIELD_NAMES: dict[type, frozenset[str]] = {}


class Part(BaseModel):
    """A mapping of the manifest: strict types, no unknown fields, null means "not given"."""

    model_config = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True, validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_missing(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fields = _FIELD_NAMES.get(cls) or _FIELD_NAMES.setdefault(
                cls, frozenset(field.alias or name for name, field in cls.model_fields.items())
            )
            return {str(name): value for name, value in data.items() if value is not None or str(name) not in fields}
        return data


# --- the models -------------------------------------------------------------------------


class Variable(Part):
    key: Key
    label: Text(120, required=True)
    alias: Text(120) = ""
    default: Text(1024) = ""
    required: bool = False
    configurable: bool = True
    advanced: bool = False
    secret: bool = False

    @model_validator(mode="after")
    def _secret_has_no_default(self) -> Variable:
        # The definition is exported and shown in plain: a secret is entered per instance.
        if self.secret and self.default:
            raise problem(
                "a secret variable cannot have a default value; each instance enters its own "
                "(the connector's definition is not encrypted)", at=".default",
            )
        return self


class TestRequest(Part):
    method: Choice(models.HttpMethod.values) = models.HttpMethod.GET.value
    path: Text(500, required=True, check=_path_error)
    expected_status: StatusCodes = Field(default_factory=lambda: [200])


class AuthMethod(Part):
    key: Key
    name: Text(120, required=True)
    type: Choice(models.AuthType.values, required=True)
    token_url: Text(500, check=_optional_url_error) = ""
    authorize_url: Text(500, check=_optional_url_error) = ""
    scope: Text(500) = ""
    variables: list[Variable] = Field(default_factory=list, max_length=MAX_AUTH_VARIABLES)
    headers: Headers = Field(default_factory=dict)
    query_params: Pairs = Field(default_factory=dict)
    body: Pairs = Field(default_factory=dict)
    test_request: TestRequest


class Parameter(Part):
    """A request parameter an endpoint declares (set per connection shape)."""

    name: Text(MAX_PAIR_NAME, required=True)
    location: Choice(PARAMETER_LOCATIONS) = "query"
    required: bool = False
    default: Annotated[str, BeforeValidator(_read_trimmed_text), StringConstraints(max_length=MAX_PAIR_VALUE)] = ""
    label: Text(120) = ""  # "" becomes the name

    @model_validator(mode="after")
    def _label_defaults_to_name(self) -> Parameter:
        if not self.label:
            self.label = self.name[:120]
        return self


class Pagination(Part):
    """How a receive endpoint pages; which keys a style uses: PAGINATION_KEYS_BY_STYLE."""

    style: Choice(models.PaginationStyle.values) = models.PaginationStyle.NONE.value
    next_url_path: Text(200, check=_dotted_path_error) = ""
    page_parameter: Text(MAX_PAIR_NAME) = ""
    limit_parameter: Text(MAX_PAIR_NAME) = ""
    limit: Number(0, MAX_PAGE_SIZE) = 0
    offset_parameter: Text(MAX_PAIR_NAME) = ""
    cursor_path: Text(200, check=_dotted_path_error) = ""
    cursor_parameter: Text(MAX_PAIR_NAME) = ""
    first_page: Number(0, 1) = 1
    max_pages: Number(0, MAX_PAGES) = 0


class Idempotency(Part):
    """How an API takes an idempotency key: `{"in": "header" | "body" | "none", "name": ...}`.

    A run that resumes after a lost worker sends the same key again for the
    same batch, so an API that honours keys stores the batch once.
    """

    model_config = ConfigDict(serialize_by_alias=True)

    in_: Annotated[Choice(models.IdempotencyKeyIn.values), Field(alias="in")] = models.IdempotencyKeyIn.NONE.value
    name: Text(MAX_IDEMPOTENCY_KEY_NAME) = ""

    @model_validator(mode="after")
    def _name_fits_where(self) -> Idempotency:
        if self.in_ == models.IdempotencyKeyIn.NONE:
            if self.name:
                raise problem("not used when the key is not sent (leave it out)", at=".name")
            return self
        message = idempotency_name_error(self.in_, self.name)
        if message:
            raise problem(message, at=".name")
        return self


def _read_idempotency(value: Any) -> Any:
    if not isinstance(value, dict):
        raise problem('must be a mapping, e.g. {in: header, name: Idempotency-Key} or {in: none}')
    return value


class Endpoint(Part):
    key: Key
    name: Text(120, required=True)
    entity: Text(80, required=True)
    direction: Choice(models.Direction.values, required=True)
    method: Choice(models.HttpMethod.values, required=True)
    path: Text(500, required=True, check=_path_error)
    parameters: Pairs = Field(default_factory=dict)
    request_parameters: list[Parameter] = Field(default_factory=list, max_length=MAX_PAIRS)
    body_encoding: Choice(models.BodyEncoding.values) = models.BodyEncoding.JSON.value
    records_path: Text(200, check=_dotted_path_error) = ""
    pagination: Pagination = Field(default_factory=Pagination)
    # Runs fail on a redirect to another origin unless the endpoint allows it.
    follow_redirects_to_other_origins: bool = False
    # Where the API takes an idempotency key (send endpoints only).
    idempotency: Annotated[Idempotency, BeforeValidator(_read_idempotency)] = Field(default_factory=Idempotency)


class RateLimit(Part):
    amount: Number(1, MAX_RATE_LIMIT)
    unit: Choice(models.RateLimitUnit.values, required=True)


class Manifest(Part):
    name: Text(120, required=True)
    description: Text(5000) = ""
    system_type: Choice(models.SystemType.values, required=True)
    colour: Choice(models.Colour.values) = "blue"
    protocol: Choice(models.Protocol.values) = "HTTP"
    version: Text(40, required=True)
    version_name: Text(120) = ""
    base_url: Text(500, required=True, check=_url_error)
    date_format: Text(64, check=date_format_error) = "%Y-%m-%dT%H:%M:%S%z"
    rate_limit: RateLimit
    time_zone: Text(64, check=_time_zone_error) = "UTC"
    concurrency_limit: Number(1, MAX_CONCURRENCY) | None = None
    variables: list[Variable] = Field(default_factory=list, max_length=MAX_VARIABLES)
    auth_methods: list[AuthMethod] = Field(max_length=MAX_AUTH_METHODS)
    endpoints: list[Endpoint] = Field(max_length=MAX_ENDPOINTS)


PAGINATION = tuple(Pagination.model_fields)
PAGINATION_DEFAULT = Pagination().model_dump()
IDEMPOTENCY_DEFAULT = Idempotency().model_dump()
REQUEST_PARAMETER_DEFAULTS = {name: field.default for name, field in Parameter.model_fields.items()}
PAGINATION_KEYS_BY_STYLE = {
    models.PaginationStyle.NONE: (),
    models.PaginationStyle.NEXT_URL: ("next_url_path", "max_pages"),
    models.PaginationStyle.LINK_HEADER: ("max_pages",),
    models.PaginationStyle.PAGE_NUMBER: ("page_parameter", "limit_parameter", "limit", "first_page", "max_pages"),
    models.PaginationStyle.LIMIT_OFFSET: ("limit_parameter", "limit", "offset_parameter", "max_pages"),
    models.PaginationStyle.CURSOR: ("cursor_path", "cursor_parameter", "max_pages"),
}
# Keys a style cannot do without.
PAGINATION_REQUIRED = {
    models.PaginationStyle.NEXT_URL: ("next_url_path",),
    models.PaginationStyle.PAGE_NUMBER: ("page_parameter",),
    models.PaginationStyle.LIMIT_OFFSET: ("offset_parameter", "limit_parameter"),
    models.PaginationStyle.CURSOR: ("cursor_path", "cursor_parameter"),
}


# --- pydantic's errors in the project's words -----------------------------------------


def error_path(loc: tuple[Any, ...]) -> str:
    """("endpoints", 3, "pagination", "cursor_path") -> "endpoints[3].pagination.cursor_path"."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = str(part)[:80]
            path = f"{path}.{name}" if path else name
    return path


def _choices(expected: str) -> str:
    return ", ".join(re.findall(r"'([^']*)'", expected))


MESSAGES: dict[str, Callable[[dict], str]] = {
    "missing": lambda ctx: "required",
    "extra_forbidden": lambda ctx: "unknown field",
    "string_type": lambda ctx: "must be a string",
    "int_type": lambda ctx: "must be a whole number",
    "bool_type": lambda ctx: "must be true or false",
    "literal_error": lambda ctx: f"must be one of {_choices(ctx['expected'])}",
    "model_type": lambda ctx: "must be a mapping",
    "dict_type": lambda ctx: "must be a mapping",
    "list_type": lambda ctx: "must be a list",
    "too_long": lambda ctx: f"at most {ctx['max_length']} allowed (found {ctx['actual_length']})"
    if ctx.get("field_type") == "List" else f"must be at most {ctx['max_length']} characters",
    "string_too_short": lambda ctx: "required",
    "too_short": lambda ctx: "required",  # text constrained after a validator: empty
    "string_too_long": lambda ctx: f"must be at most {ctx['max_length']} characters",
    "greater_than_equal": lambda ctx: f"must be at least {ctx['ge']}",
    "less_than_equal": lambda ctx: f"must be at most {ctx['le']}",
}


def describe(error: ValidationError, root: str = "manifest") -> list[str]:
    """Each error as "path: message"; an error about the whole document is named `root`."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        loc, ctx = item["loc"], item.get("ctx") or {}
        translate = MESSAGES.get(item["type"])
        message = translate(ctx) if translate else item["msg"]
        lines.append(f"{error_path(loc) + ctx.get('at', '') or root}: {message}")
    return lines


# --- rules across fields -------------------------------------------------------------------


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, dict):
        found: set[str] = set()
        for v in value.values():
            found |= _placeholders(v)
        return found
    if isinstance(value, str):
        return set(PLACEHOLDER_RE.findall(value))
    return set()


def _unique_key_errors(items: list[dict], path: str) -> list[str]:
    errors, seen = [], set()
    for i, item in enumerate(items):
        if item["key"] in seen:
            errors.append(f'{path}[{i}].key: duplicate key "{item["key"]}"')
        seen.add(item["key"])
    return errors


def _request_parameter_errors(endpoint: dict, path: str, known: set[str]) -> list[str]:
    """Declared parameters: unique per location, valid header names, known placeholders."""
    errors: list[str] = []
    seen: set[tuple[str, str]] = set()
    for j, parameter in enumerate(endpoint["request_parameters"]):
        where = f"{path}.request_parameters[{j}]"
        name, location = parameter["name"], parameter["location"]
        ident = (location, name.lower() if location == "header" else name)
        if ident in seen:
            errors.append(f'{where}.name: duplicate {location} parameter "{name[:60]}"')
        seen.add(ident)
        if location == "header":
            if not HEADER_NAME_RE.match(name):
                errors.append(f'{where}.name: "{name[:60]}" is not a valid header name (letters, digits and -, no spaces)')
            header_problem = header_value_error(parameter["default"])
            if header_problem:
                errors.append(f"{where}.default: {header_problem}")
        if location == "body" and endpoint["method"] == models.HttpMethod.GET:
            errors.append(f"{where}.location: a GET request has no body (use query or header)")
        for unknown in sorted(_placeholders(parameter["default"]) - known):
            errors.append(f'{where}.default: unknown variable "{{{{{unknown}}}}}"')
    return errors


def _pagination_errors(endpoint: dict, path: str) -> list[str]:
    """The keys a pagination style needs are set, and only the ones it uses differ from their defaults."""
    pagination = endpoint["pagination"]
    style = pagination["style"]
    where = f"{path}.pagination"
    if style != models.PaginationStyle.NONE and endpoint["direction"] == models.Direction.SEND:
        return [f"{where}.style: only receive endpoints are paginated"]
    errors = [f"{where}.{key}: required for {style} pagination" for key in PAGINATION_REQUIRED.get(style, ()) if not pagination[key]]
    if style == models.PaginationStyle.PAGE_NUMBER and pagination["limit"] and not pagination["limit_parameter"]:
        errors.append(f"{where}.limit_parameter: required when a limit is set")
    if style in (models.PaginationStyle.PAGE_NUMBER, models.PaginationStyle.LIMIT_OFFSET) and pagination["limit_parameter"] \
            and not pagination["limit"]:
        errors.append(f"{where}.limit: give the page size to send in {pagination['limit_parameter'][:60]}")
    used = PAGINATION_KEYS_BY_STYLE.get(style, ())
    for key, default in PAGINATION_DEFAULT.items():
        if key != "style" and key not in used and pagination[key] != default:
            errors.append(f"{where}.{key}: not used by {style} pagination (leave it out)")
    return errors


def _idempotency_errors(endpoint: dict, path: str, auth_methods: list[dict]) -> list[str]:
    """A key is declared only on a send endpoint, in a place nothing else of the request already uses."""
    declared = endpoint["idempotency"]
    where, name = declared["in"], declared["name"]
    if where == models.IdempotencyKeyIn.NONE:
        return []
    if endpoint["direction"] != models.Direction.SEND:
        return [f"{path}.idempotency.in: only send endpoints take an idempotency key "
                "(a receive endpoint stores nothing, so a repeated request needs none); use none"]
    if where == models.IdempotencyKeyIn.BODY and endpoint["body_encoding"] != models.BodyEncoding.JSON:
        return [f"{path}.idempotency.in: a key in a body field needs a JSON body (body_encoding json)"]
    errors = []
    same = (lambda a, b: a.lower() == b.lower()) if where == models.IdempotencyKeyIn.HEADER else (lambda a, b: a == b)
    if any(p["location"] == where and same(p["name"], name) for p in endpoint["request_parameters"]):
        errors.append(f'{path}.idempotency.name: the endpoint already declares the {where} parameter "{name}"')
    if where == models.IdempotencyKeyIn.HEADER:
        for method in auth_methods:
            if any(same(header, name) for header in method["headers"]):
                errors.append(f'{path}.idempotency.name: the authentication method "{method["name"][:60]}" '
                              f'already sends the header "{name}"')
    return errors


def rule_errors(m: dict, *, draft: bool = False) -> list[str]:
    """Rules across fields of a structurally valid manifest (as dumped): unique keys, variables
    each authentication type needs, declared placeholders, endpoint methods and pagination."""
    errors = _unique_key_errors(m["variables"], "variables")
    for i, method in enumerate(m["auth_methods"]):
        errors += _unique_key_errors(method["variables"], f"auth_methods[{i}].variables")
    errors += _unique_key_errors(m["auth_methods"], "auth_methods") + _unique_key_errors(m["endpoints"], "endpoints")
    if errors:
        return errors
    connector_keys = {v["key"] for v in m["variables"]}
    all_auth_keys: set[str] = set()
    for i, method in enumerate(m["auth_methods"]):
        path = f"auth_methods[{i}]"
        keys = {v["key"] for v in method["variables"]}
        all_auth_keys |= keys
        needed = {
            models.AuthType.BASIC: ("username", "password"),
            models.AuthType.OAUTH2_CLIENT_CREDENTIALS: ("client_id", "client_secret"),
        }.get(method["type"], ())
        errors += [f'{path}.variables: a {method["type"]} method needs a "{key}" variable' for key in needed if key not in keys]
        if method["type"] in (models.AuthType.OAUTH2_CLIENT_CREDENTIALS, models.AuthType.OAUTH2_AUTHORIZATION_CODE):
            if not method["token_url"]:
                errors.append(f"{path}.token_url: required for OAuth 2")
        if method["type"] == models.AuthType.OAUTH2_AUTHORIZATION_CODE and not method["authorize_url"]:
            errors.append(f"{path}.authorize_url: required for OAuth 2 (authorisation code)")
        if method["type"] == models.AuthType.TOKEN and not (method["headers"] or method["query_params"]):
            errors.append(f"{path}: a token method must send its token in headers or query_params")
        known = connector_keys | keys | {"access_token"}
        for field in ("headers", "query_params", "body", "token_url", "authorize_url"):
            errors += [f'{path}.{field}: unknown variable "{{{{{name}}}}}"' for name in sorted(_placeholders(method[field]) - known)]
        for name in sorted(_placeholders(method["test_request"]["path"]) - known):
            errors.append(f'{path}.test_request.path: unknown variable "{{{{{name}}}}}"')
    for name in sorted(_placeholders(m["base_url"]) - connector_keys):
        errors.append(f'base_url: unknown variable "{{{{{name}}}}}" (declare it in variables)')
    for i, endpoint in enumerate(m["endpoints"]):
        for name in sorted(_placeholders(endpoint["path"]) - connector_keys - all_auth_keys):
            errors.append(f'endpoints[{i}].path: unknown variable "{{{{{name}}}}}"')
        direction, method = endpoint["direction"], endpoint["method"]
        if direction == models.Direction.RECEIVE and method not in (models.HttpMethod.GET, models.HttpMethod.POST):
            errors.append(f"endpoints[{i}].method: a receive endpoint uses GET (or POST for searches)")
        if direction == models.Direction.SEND and method == models.HttpMethod.GET:
            errors.append(f"endpoints[{i}].method: a send endpoint uses POST, PUT, PATCH or DELETE")
        errors += _request_parameter_errors(endpoint, f"endpoints[{i}]", connector_keys | all_auth_keys | RUN_PLACEHOLDERS)
        errors += _pagination_errors(endpoint, f"endpoints[{i}]")
        errors += _idempotency_errors(endpoint, f"endpoints[{i}]", m["auth_methods"])
    if not m["auth_methods"] and not draft:
        errors.append("auth_methods: at least one authentication method is required")
    if not m["endpoints"] and not draft:
        errors.append("endpoints: at least one endpoint is required")
    return errors


class ListingFile(Manifest):
    """A marketplace catalog file: a manifest plus what changed in this version (shown on the
    listing page; not part of the connector's definition)."""

    changelog: Annotated[str, BeforeValidator(_read_text(what="must be text"))] = ""


def _validated(model: type[Manifest], data: Any, draft: bool) -> dict:
    try:
        manifest = model.model_validate(data).model_dump()
    except ValidationError as exc:
        raise ManifestError(describe(exc)) from None
    errors = rule_errors(manifest, draft=draft)
    if errors:
        raise ManifestError(errors)
    return manifest


def check(data: Any, *, draft: bool = False) -> dict:
    """The manifest normalised (every field, defaults filled, fixed key order), or ManifestError."""
    return _validated(Manifest, data, draft)


def check_listing(data: Any) -> tuple[dict, str]:
    """A catalog file's normalised manifest and its changelog, or ManifestError."""
    manifest = _validated(ListingFile, data, False)
    return manifest, manifest.pop("changelog")
