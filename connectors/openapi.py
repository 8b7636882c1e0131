"""Import an OpenAPI 3.x document as a connector draft.

`parse()` reads the uploaded bytes, `draft_from_openapi()` turns the document
into an `ImportDraft` (base URL, variables, authentication methods, every
usable operation, and warnings about what could not be carried over) and
`to_manifest()` builds a validated manifest from the operations the user picked.

The manifest describes less than OpenAPI does, so an import is a starting
point, not a copy: request and response schemas, per-operation security,
cookie and OpenID Connect authentication and all servers but the first are
left out (and named in `warnings` where the user has to act on it). Query and
header parameters become the endpoints' request parameters; the records path,
body encoding and pagination are filled in where the document makes them clear.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from connectors import safe_loading
from connectors.manifest import (
    HEADER_NAME_RE,
    KEY_RE,
    MAX_ENDPOINTS,
    MAX_PAGE_SIZE,
    MAX_PAIR_NAME,
    MAX_PAIR_VALUE,
    MAX_PAIRS,
    PAGINATION_DEFAULT,
    PLACEHOLDER_RE,
    validate,
)

MAX_BYTES = 8 * 1024 * 1024
# Real documents nest schemas a few dozen levels deep and use anchors rarely;
# aliases are counted where they are used, so an alias bomb is refused early.
LIMITS = safe_loading.Limits(
    max_bytes=MAX_BYTES, max_depth=100, max_nodes=500_000, allow_aliases=True, what="OpenAPI document"
)
MAX_OPERATIONS = 2000
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
USABLE_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}  # connectors.models.HttpMethod
DEFAULT_RATE_LIMIT = {"amount": 60, "unit": "minute"}
MAX_SCOPES = 5  # more than this and the user should choose, not get them all
# Header parameters the client sets itself or that belong to the auth method.
IGNORED_HEADERS = {"accept", "content-type", "authorization", "user-agent", "content-length"}
# A header parameter required by at least this share of operations goes on
# every request (as an auth method header) instead of being lost.
COMMON_HEADER_SHARE = 0.8
# Cheap "who am I" calls, best first, matched against a GET path's last segment.
TEST_PATH_NAMES = (
    "me", "whoami", "self", "account", "organisation", "organization", "company", "store", "shop", "merchant",
    "user", "profile", "scope", "balance",
)
RECEIVE_VERBS = {"search", "list", "query", "find", "lookup"}
VERSION_SEGMENT = re.compile(r"^(v\d+(\.\d+)*|\d[\d.-]*)$", re.IGNORECASE)
PATH_PARAM_RE = re.compile(r"\{([^{}/]+)\}")

# The manifest schema's length limits (connectors.manifest).
NAME_MAX, DESCRIPTION_MAX, VERSION_MAX, ENTITY_MAX, LABEL_MAX, DEFAULT_MAX = 120, 5000, 40, 80, 120, 1024


class OpenAPIError(ValueError):
    """The upload cannot be imported; the message is shown to the user as-is."""


@dataclass
class Operation:
    """One importable operation of the document, already in manifest terms."""

    key: str
    name: str
    entity: str
    direction: str  # "receive" or "send"
    method: str
    path: str  # the spec path with {param} written as {{param}}
    tag: str = ""
    parameters: dict[str, str] = field(default_factory=dict)  # fixed query parameters (none from documents today)
    request_parameters: list[dict] = field(default_factory=list)  # query and header parameters
    body_encoding: str = "json"
    records_path: str = ""
    pagination: dict = field(default_factory=lambda: dict(PAGINATION_DEFAULT))

    def as_endpoint(self) -> dict:
        return {
            "key": self.key,
            "name": self.name,
            "entity": self.entity,
            "direction": self.direction,
            "method": self.method,
            "path": self.path,
            "parameters": dict(self.parameters),
            "request_parameters": [dict(p) for p in self.request_parameters],
            "body_encoding": self.body_encoding,
            "records_path": self.records_path,
            "pagination": dict(self.pagination),
        }


@dataclass
class ImportDraft:
    """A connector as far as the document describes it; the user picks operations and fixes the rest."""

    name: str
    description: str
    version: str
    base_url: str
    variables: list[dict]
    auth_methods: list[dict]
    operations: list[Operation]
    warnings: list[str] = field(default_factory=list)
    # Placeholder key -> the parameter's name in the document, for path and
    # query parameters that `to_manifest()` may have to declare as variables.
    parameter_names: dict[str, str] = field(default_factory=dict)


# --- parsing --------------------------------------------------------------


def parse(data: bytes, filename: str = "", deadline: safe_loading.Deadline | None = None) -> dict:
    """The uploaded file as a mapping, or OpenAPIError saying why it is not an OpenAPI 3 document.

    Size, nesting depth and node count (aliases expanded) are checked before
    the document is built, and the whole read runs within `deadline`.
    """
    deadline = deadline or safe_loading.Deadline()
    if len(data) > MAX_BYTES:
        raise OpenAPIError(
            f"The file is too large ({len(data) / 1024 / 1024:.1f} MB); the limit is {MAX_BYTES // 1024 // 1024} MB."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise OpenAPIError("The file is not UTF-8 text, so it cannot be JSON or YAML.") from None
    if not text.strip():
        raise OpenAPIError("The file is empty.")
    if "\x00" in text:
        raise OpenAPIError("The file contains NUL characters, so it is not JSON or YAML text.")
    try:
        try:
            if not text.lstrip().startswith(("{", "[")):
                raise ValueError("the text does not start with { or [")
            document = safe_loading.load_json(text, LIMITS, deadline)
        except ValueError as json_error:
            if isinstance(json_error, safe_loading.DocumentError):
                raise
            try:
                document = safe_loading.load_yaml(text, LIMITS, deadline)
            except safe_loading.DocumentError as exc:
                if exc.syntax and filename.lower().endswith(".json"):
                    raise OpenAPIError(f"The file is not valid JSON: {json_error}.") from None
                if exc.syntax:
                    where = f" (line {exc.line}, column {exc.column})" if exc.line else ""
                    detail = f": {exc.problem}" if exc.problem and not exc.line else ""
                    raise OpenAPIError(f"The file is not valid JSON or YAML{where}{detail}.") from None
                raise
    except safe_loading.DocumentError as exc:
        raise OpenAPIError(f"The file cannot be imported: {exc.describe()}.") from None
    _check_version(document)
    return document


def _check_version(document: Any) -> None:
    if not isinstance(document, dict):
        raise OpenAPIError("The file is not an OpenAPI document: it must hold a mapping at the top level.")
    if "swagger" in document and "openapi" not in document:
        raise OpenAPIError("Swagger 2.0 documents are not supported; convert them to OpenAPI 3 first.")
    if "openapi" not in document:
        raise OpenAPIError('The file is not an OpenAPI 3 document: it has no "openapi" field.')
    version = str(document["openapi"]).strip()[:40] if isinstance(document["openapi"], (str, int, float)) else "?"
    if not re.match(r"^3\.[01](\.|$)", version):
        raise OpenAPIError(f"OpenAPI {version} is not supported; only OpenAPI 3.0 and 3.1 documents can be imported.")


# --- the shape of the parts the importer reads ---------------------------------
#
# A spec is "any", "scalar", ("list", item), ("map", {key: spec}) with other
# keys ignored, or ("mapof", value) whose keys must be text.

_SCALAR = (str, int, float, bool, type(None))
_PARAMETER = ("map", {"name": "scalar", "in": "scalar", "required": "scalar", "schema": "any"})
_SECURITY = ("list", ("mapof", "any"))
_SERVERS = ("list", ("map", {"url": "scalar", "variables": ("mapof", "any")}))
_OPERATION = ("map", {
    "operationId": "scalar", "summary": "scalar", "tags": ("list", "any"), "deprecated": "any",
    "parameters": ("list", _PARAMETER), "security": _SECURITY, "servers": _SERVERS,
})
_PATH_ITEM = ("map", {
    "parameters": ("list", _PARAMETER), "servers": _SERVERS, **{method: _OPERATION for method in HTTP_METHODS},
})
_FLOW = ("map", {"tokenUrl": "scalar", "authorizationUrl": "scalar", "scopes": ("mapof", "any")})
_SCHEME = ("map", {
    "type": "scalar", "scheme": "scalar", "bearerFormat": "scalar", "in": "scalar", "name": "scalar",
    "flows": ("mapof", _FLOW),
})
_DOCUMENT = ("map", {
    "info": "any",
    "servers": _SERVERS,
    "paths": ("mapof", _PATH_ITEM),
    "components": ("map", {"securitySchemes": ("mapof", _SCHEME)}),
    "security": _SECURITY,
})
MAX_SHAPE_ERRORS = 10


def _shape_errors(document: dict, value: Any, spec: Any, path: str, errors: list[str]) -> None:
    if len(errors) >= MAX_SHAPE_ERRORS or spec == "any":
        return
    resolved = _resolve(document, value)
    if resolved is not value:
        # The importer reads some parts through their $ref and others as written: check both.
        _shape_errors(document, resolved, spec, path, errors)
        if len(value) == 1:
            return
    if spec == "scalar":
        if not isinstance(value, _SCALAR):
            errors.append(f"{path}: must be a single value, not a {'list' if isinstance(value, list) else 'mapping'}")
        return
    kind, item = spec
    if kind == "list":
        if not isinstance(value, list):
            errors.append(f"{path}: must be a list")
            return
        for index, element in enumerate(value):
            _shape_errors(document, element, item, f"{path}[{index}]", errors)
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: must be a mapping")
        return
    if kind == "map":
        for key, key_spec in item.items():
            if key in value and value[key] is not None:
                _shape_errors(document, value[key], key_spec, f"{path}.{key}" if path else key, errors)
        return
    for key, element in value.items():
        if not isinstance(key, str):
            errors.append(f"{path}: names must be text (found {str(key)[:40]})")
            return
        _shape_errors(document, element, item, f"{path}.{key[:80]}", errors)


def check_shape(document: dict) -> None:
    """OpenAPIError naming the path of each part the importer reads that has the wrong type."""
    errors: list[str] = []
    _shape_errors(document, document, _DOCUMENT, "", errors)
    if errors:
        raise OpenAPIError("The document does not have the shape of an OpenAPI document: " + "; ".join(errors) + ".")


# --- text helpers -----------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split()) if limit <= NAME_MAX else str(text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _words(text: str) -> list[str]:
    """`getStoreInformation`, `store_information` and `store-information` all give [get, Store, Information]."""
    text = text.replace("OAuth", "Oauth")
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", text)
    return [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]


def slug(text: str, fallback: str = "item") -> str:
    """A manifest key (`[a-z][a-z0-9_]*`, at most 64 characters) made from `text`."""
    key = "_".join(w.lower() for w in _words(text))[:64].strip("_")
    if not key:
        return fallback
    if not key[0].isalpha():
        key = f"{fallback}_{key}"[:64].rstrip("_")
    return key


def _unique(key: str, taken: set[str]) -> str:
    candidate, n = key, 2
    while candidate in taken:
        suffix = f"_{n}"
        candidate = key[: 64 - len(suffix)].rstrip("_") + suffix
        n += 1
    taken.add(candidate)
    return candidate


def _humanise(name: str) -> str:
    words = _words(name)
    if not words:
        return name
    text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)
    return text[0].upper() + text[1:]


def _text(value: Any) -> str | None:
    """A scalar default as manifest text (booleans the JSON way), None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _singular(word: str) -> str:
    lower = word.lower()
    if lower.endswith("ies") and len(word) > 4:
        return word[:-3] + ("Y" if word[-3].isupper() else "y")
    if re.search(r"(sses|shes|ches|xes|zes)$", lower):
        return word[:-2]
    if _looks_plural(word):
        return word[:-1]
    return word


def _looks_plural(word: str) -> bool:
    lower = word.lower()
    return len(lower) > 2 and lower.endswith("s") and not re.search(r"(ss|us|is)$", lower)


def _entity_name(text: str) -> str:
    """`webhooks-event-types` -> `WebhookEventType`, `Order Shipping Addresses` -> `OrderShippingAddress`."""
    words = [_singular(w) for w in _words(text)]
    return _clip("".join(w[0].upper() + w[1:] for w in words), ENTITY_MAX)


# --- the document -------------------------------------------------------------


def _resolve(document: dict, value: Any, depth: int = 0) -> Any:
    """Follow a local `$ref` (`#/components/...`); anything else comes back unchanged."""
    while isinstance(value, dict) and isinstance(value.get("$ref"), str) and depth < 10:
        ref = value["$ref"]
        if not ref.startswith("#/"):
            return {}
        target: Any = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        value, depth = target if target is not None else {}, depth + 1
    return value


@dataclass
class _RawOperation:
    method: str
    path: str  # as written in the document
    operation: dict
    parameters: list[dict]  # path-level and operation-level, resolved
    security: list | None  # the requirements that apply, None when the document says nothing
    servers: list  # path- or operation-level servers, empty when the document's apply


def _raw_operations(document: dict, warnings: list[str], deadline: safe_loading.Deadline) -> list[_RawOperation]:
    paths = document.get("paths")
    if paths is not None and not isinstance(paths, dict):
        raise OpenAPIError('The document\'s "paths" must be a mapping of paths to operations.')
    found: list[_RawOperation] = []
    unusable: set[str] = set()
    global_security = document.get("security")
    for path, item in (paths or {}).items():
        deadline.check()
        item = _resolve(document, item)
        if not isinstance(item, dict) or not str(path).startswith("/"):
            continue
        shared = [_resolve(document, p) for p in item.get("parameters") or []]
        for method, operation in item.items():
            if method not in HTTP_METHODS or not isinstance(operation, dict):
                continue
            if method.upper() not in USABLE_METHODS:
                unusable.add(method.upper())
                continue
            own = [_resolve(document, p) for p in operation.get("parameters") or []]
            # An operation's parameter overrides the path-level one with the same name and location.
            own_ids = {(p.get("name"), p.get("in")) for p in own if isinstance(p, dict)}
            parameters = [p for p in own if isinstance(p, dict)] + [
                p for p in shared if isinstance(p, dict) and (p.get("name"), p.get("in")) not in own_ids
            ]
            security = operation.get("security", global_security)
            if not isinstance(security, list):
                security = None
            servers = operation.get("servers") or item.get("servers") or []
            found.append(_RawOperation(method.upper(), str(path), operation, parameters, security, servers))
            if len(found) > MAX_OPERATIONS:
                raise OpenAPIError(
                    f"The document has more than {MAX_OPERATIONS} operations; import it in parts "
                    f"(a connector can have at most {MAX_ENDPOINTS} endpoints)."
                )
    if unusable:
        warnings.append(
            f"Operations using {', '.join(sorted(unusable))} were skipped: "
            "endpoints use GET, POST, PUT, PATCH or DELETE."
        )
    if not found and unusable:
        raise OpenAPIError("The document has no operations to import: none uses GET, POST, PUT, PATCH or DELETE.")
    if not found:
        raise OpenAPIError('The document has no operations to import: its "paths" object is empty.')
    return found


def _base_url(document: dict, warnings: list[str]) -> tuple[str, list[dict]]:
    """The first server's URL with `{var}` as `{{var}}`, and those variables as connector variables."""
    servers = [s for s in document.get("servers") or [] if isinstance(s, dict) and s.get("url")]
    if not servers:
        warnings.append("The document lists no servers; enter the API's base URL before saving.")
        return "", []
    server = servers[0]
    url = str(server["url"]).strip()
    if len(servers) > 1:
        others = ", ".join(str(s["url"]) for s in servers[1:4])
        warnings.append(
            f"The document lists {len(servers)} servers; the first ({url}) is the base URL. Others: {others}."
        )
    variables: list[dict] = []
    keys: dict[str, str] = {}
    definitions = server.get("variables") or {}
    for name in PATH_PARAM_RE.findall(url):
        if name in keys:
            continue
        keys[name] = key = _unique(slug(name, "server"), {v["key"] for v in variables})
        spec = definitions.get(name) if isinstance(definitions.get(name), dict) else {}
        description = " ".join(str(spec.get("description") or "").split())
        variables.append({
            "key": key,
            "label": description if 0 < len(description) <= LABEL_MAX else _humanise(name),
            "alias": name[:120],
            "default": (_text(spec.get("default")) or "")[:DEFAULT_MAX],
            "required": True,
            "configurable": True,
            "advanced": False,
            "secret": False,
        })
    url = PATH_PARAM_RE.sub(lambda m: "{{" + keys[m.group(1)] + "}}", url).rstrip("/")
    if not re.match(r"^(https?://|\{\{)", url):
        warnings.append(f'The server URL "{url or "/"}" is relative; replace it with the API\'s full base URL.')
    return url, variables


def _test_request_path(candidates: list[_RawOperation], keys_for: dict[str, str]) -> tuple[str, bool]:
    """The path of a cheap GET to check credentials with, and whether it is a good one.

    Good means no path parameters and no required query parameters; among those a
    "who am I" path (`/me`, `/account`, ...) wins, then the shortest.
    """
    gets = [op for op in candidates if op.method == "GET"]
    cheap = [
        op for op in gets
        if "{" not in op.path and not any(p.get("in") == "query" and p.get("required") for p in op.parameters)
    ]

    def rank(op: _RawOperation) -> tuple[int, int, int]:
        last = re.sub(r"\.\w+$", "", op.path.rstrip("/").rsplit("/", 1)[-1]).lower()
        if last in TEST_PATH_NAMES:  # /account beats /accounts, which may be a chart of accounts
            return 0, TEST_PATH_NAMES.index(last), len(op.path)
        if _singular(last) in TEST_PATH_NAMES:
            return 1, TEST_PATH_NAMES.index(_singular(last)), len(op.path)
        return 2, 0, len(op.path)

    if cheap:
        return _template(min(cheap, key=rank).path, keys_for), True
    if gets:
        return _template(gets[0].path, keys_for), False
    return "/", False


def _template(path: str, keys_for: dict[str, str]) -> str:
    return PATH_PARAM_RE.sub(lambda m: "{{" + keys_for[m.group(1)] + "}}", path)


def _variable(key: str, label: str, *, alias: str = "", required: bool = True, secret: bool = False) -> dict:
    return {
        "key": key, "label": _clip(label, LABEL_MAX), "alias": alias[:120], "default": "",
        "required": required, "configurable": True, "advanced": False, "secret": secret,
    }


def _bearer_header() -> dict[str, str]:
    return {"Authorization": "Bearer {{access_token}}"}


def _auth_methods(
    document: dict, raw: list[_RawOperation], base_url: str, warnings: list[str]
) -> list[tuple[str, dict]]:
    """(security scheme name, manifest auth method without its test request) for each usable scheme."""
    schemes = _resolve(document, (document.get("components") or {}).get("securitySchemes")) or {}
    if not isinstance(schemes, dict):
        schemes = {}
    used: list[str] = []
    for op in raw:
        for requirement in op.security or []:
            for name in requirement if isinstance(requirement, dict) else {}:
                if name in schemes and name not in used:
                    used.append(name)
    if used:
        unused = [name for name in schemes if name not in used]
        if unused:
            warnings.append(f"Security schemes no operation uses were left out: {', '.join(unused)}.")
    names = used or list(schemes)
    absolute_base = base_url if re.match(r"^https?://", base_url) else ""

    def absolute(url: str, what: str, scheme_name: str) -> str:
        """OpenAPI resolves relative OAuth URLs against the server URL."""
        url = str(url or "").strip()
        if not url:
            warnings.append(f'"{scheme_name}" gives no {what}; enter it before saving.')
        elif not re.match(r"^https?://", url):
            if absolute_base:
                return urljoin(absolute_base + "/", url)
            warnings.append(
                f'The {what} of "{scheme_name}" ({url}) is relative to a relative server URL; enter the full URL.'
            )
        return url

    methods: list[tuple[str, dict]] = []
    for scheme_name in names:
        scheme = _resolve(document, schemes[scheme_name])
        if not isinstance(scheme, dict):
            continue
        kind = str(scheme.get("type") or "").lower()
        base = {"key": slug(scheme_name, "auth"), "token_url": "", "authorize_url": "", "scope": "",
                "headers": {}, "query_params": {}, "body": {}}
        if kind == "http" and str(scheme.get("scheme") or "").lower() == "basic":
            methods.append((scheme_name, {**base, "name": "HTTP basic", "type": "basic", "variables": [
                _variable("username", "Username"),
                _variable("password", "Password", required=False, secret=True),
            ]}))
        elif kind == "http" and str(scheme.get("scheme") or "").lower() == "bearer":
            label = "Bearer token" + (f" ({scheme['bearerFormat']})" if scheme.get("bearerFormat") else "")
            methods.append((scheme_name, {**base, "name": "Bearer token", "type": "token",
                            "variables": [_variable("token", label, secret=True)],
                            "headers": {"Authorization": "Bearer {{token}}"}}))
        elif kind == "apikey" and scheme.get("in") in ("header", "query") and scheme.get("name"):
            where, param = scheme["in"], str(scheme["name"])
            method = {**base, "name": f"API key ({param} {where})", "type": "token",
                      "variables": [_variable("api_key", f"API key ({param})", alias=param, secret=True)]}
            method["headers" if where == "header" else "query_params"] = {param: "{{api_key}}"}
            if where == "header" and param.lower() == "authorization":
                warnings.append(
                    f'"{scheme_name}" sends the key as the whole Authorization header; add any prefix the API '
                    "expects (such as Bearer) to that header."
                )
            methods.append((scheme_name, method))
        elif kind == "oauth2":
            flows = scheme.get("flows") or {}
            usable = [f for f in ("clientCredentials", "authorizationCode") if isinstance(flows.get(f), dict)]
            for flow_name in flows:
                if flow_name not in usable:
                    warnings.append(
                        f'The OAuth 2 {flow_name} flow of "{scheme_name}" is not supported and was left out.'
                    )
            for flow_name in usable:
                flow = flows[flow_name]
                scopes = list(flow.get("scopes") or {})
                scope = " ".join(scopes)
                if len(scopes) > MAX_SCOPES or len(scope) > 500:
                    warnings.append(
                        f'"{scheme_name}" offers {len(scopes)} OAuth scopes; enter the ones you need as the scope.'
                    )
                    scope = ""
                method = {**base, "scope": scope, "headers": _bearer_header(),
                          "token_url": absolute(flow.get("tokenUrl"), "token URL", scheme_name)}
                if len(usable) > 1:
                    method["key"] = slug(f"{scheme_name}_{flow_name}", "oauth2")
                client = [_variable("client_id", "Client ID"), _variable("client_secret", "Client secret", secret=True)]
                if flow_name == "clientCredentials":
                    method.update(
                        name="OAuth 2 (client credentials)", type="oauth2_client_credentials", variables=client
                    )
                else:
                    method.update(
                        name="OAuth 2 (authorisation code)", type="oauth2_authorization_code",
                        authorize_url=absolute(flow.get("authorizationUrl"), "authorisation URL", scheme_name),
                        variables=[*client, _variable("access_token", "Access token", required=False, secret=True)],
                    )
                methods.append((scheme_name, method))
        else:
            what = {"openidconnect": "OpenID Connect", "mutualtls": "mutual TLS"}.get(kind) or (
                "cookie API key" if kind == "apikey" else f"HTTP {scheme.get('scheme')}" if kind == "http" else kind
            )
            warnings.append(f'The security scheme "{scheme_name}" ({what}) is not supported and was left out.')
    if not methods:
        warnings.append(
            "The document declares no authentication the connector can use; an API key sent as a bearer token "
            "was assumed. Check the API's documentation and change the authentication method to match."
        )
        methods.append(("", {"key": "api_key", "name": "API key", "type": "token", "token_url": "", "authorize_url": "",
                             "scope": "", "variables": [_variable("api_key", "API key", secret=True)],
                             "headers": {"Authorization": "Bearer {{api_key}}"}, "query_params": {}, "body": {}}))
    # Keys and names must be unique among the methods.
    keys: set[str] = set()
    seen_names: dict[str, int] = {}
    for scheme_name, method in methods:
        method["key"] = _unique(method["key"], keys)
        seen_names[method["name"]] = seen_names.get(method["name"], 0) + 1
    for scheme_name, method in methods:
        if seen_names[method["name"]] > 1 and scheme_name:
            method["name"] = _clip(f"{method['name']} – {scheme_name}", NAME_MAX)
    return methods


def _common_headers(
    raw: list[_RawOperation], auth: list[tuple[str, dict]], taken: set[str]
) -> list[tuple[str, dict]]:
    """Required header parameters (e.g. Xero's `xero-tenant-id`) shared by most operations.

    These become one connector variable sent by every auth method (set once
    per instance); rarer ones are request parameters of their endpoints.
    """
    counts: dict[str, int] = {}
    specs: dict[str, dict] = {}
    auth_headers = {h.lower() for _, m in auth for h in m["headers"]}
    for op in raw:
        for p in op.parameters:
            name = str(p.get("name") or "")
            if p.get("in") == "header" and p.get("required") and name.lower() not in IGNORED_HEADERS | auth_headers:
                counts[name] = counts.get(name, 0) + 1
                specs.setdefault(name, p)
    common = []
    for name, count in counts.items():
        if count >= COMMON_HEADER_SHARE * len(raw):
            spec = specs[name]
            schema = spec.get("schema") if isinstance(spec.get("schema"), dict) else {}
            variable = _variable(_unique(slug(name, "header"), taken), _humanise(name), alias=name)
            variable["default"] = (_text(schema.get("default")) or "")[:DEFAULT_MAX]
            common.append((name, variable))
    return common


def _tag(operation: dict) -> str:
    tags = operation.get("tags")
    return str(tags[0]) if isinstance(tags, list) and tags else ""


def _server_url(server: Any) -> str:
    return str(server.get("url") or "").rstrip("/") if isinstance(server, dict) else ""


def _entity(path: str, tag: str, tags_informative: bool) -> str:
    """A singular entity: the last plural-looking path segment, else the tag, else the last segment."""
    literals = [
        re.sub(r"\.\w+$", "", s) for s in path.split("/")
        if s and "{" not in s and not VERSION_SEGMENT.match(s)
    ]
    for segment in reversed(literals):
        words = _words(segment)
        if words and _looks_plural(words[-1]):
            return _entity_name(segment)
    if tag and tags_informative:
        return _entity_name(tag)
    for segment in reversed(literals):
        if _words(segment):
            return _entity_name(segment)
    return _entity_name(tag) if tag else "Resource"


def _direction(op: _RawOperation) -> str:
    """GET receives; a POST that searches, lists or queries receives too; everything else sends."""
    if op.method == "GET":
        return "receive"
    if op.method == "POST":
        operation_words = [w.lower() for w in _words(str(op.operation.get("operationId") or ""))]
        summary_words = [w.lower() for w in _words(str(op.operation.get("summary") or ""))]
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


def _schema(document: dict, value: Any, depth: int = 0) -> dict:
    """A schema with its `$ref` followed and a single allOf (or all of them) merged; {} when unusable."""
    value = _resolve(document, value)
    if not isinstance(value, dict):
        return {}
    parts = value.get("allOf") if isinstance(value.get("allOf"), list) else []
    if not parts or depth > 5:
        return value
    merged: dict = {"type": value.get("type"), "properties": dict(value.get("properties") or {})}
    for part in parts:
        part = _schema(document, part, depth + 1)
        if part.get("type") and not merged["type"]:
            merged["type"] = part["type"]
        if isinstance(part.get("properties"), dict):
            merged["properties"].update(part["properties"])
    return merged


def _is_array(document: dict, schema: Any) -> bool:
    schema = _schema(document, schema)
    return schema.get("type") == "array" or "items" in schema and "properties" not in schema


def _success_schema(document: dict, op: _RawOperation) -> dict:
    """The JSON schema of the first 2xx response (200 first), or {}."""
    responses = op.operation.get("responses") if isinstance(op.operation.get("responses"), dict) else {}
    for code in ["200"] + sorted(str(c) for c in responses if str(c).startswith("2") and str(c) != "200"):
        response = _resolve(document, responses.get(code) or responses.get(int(code)) if code.isdigit() else None)
        content = response.get("content") if isinstance(response, dict) and isinstance(response.get("content"), dict) else {}
        for media_type, media in content.items():
            if "json" in str(media_type) and isinstance(media, dict):
                return _schema(document, media.get("schema"))
    return {}


def _records_path(document: dict, schema: dict) -> str:
    """Where the list of records is: "" for a top-level list, else an object's one array property (or an obvious one)."""
    if not schema or _is_array(document, schema):
        return ""
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    arrays = [
        name for name, value in properties.items()
        if _is_array(document, value) and str(name).lower() not in NOT_RECORD_LISTS
    ]
    if len(arrays) == 1:
        return arrays[0] if re.fullmatch(r"[A-Za-z0-9_-]+", str(arrays[0])) else ""
    named = [name for name in arrays if name in RECORD_LIST_NAMES]
    if len(named) == 1:
        return named[0]
    if not arrays:
        # {"data": {"items": [...]}}: one object property holding exactly one array.
        nested = [
            (name, _records_path(document, _schema(document, value)))
            for name, value in properties.items() if name in RECORD_LIST_NAMES
        ]
        nested = [(name, path) for name, path in nested if path]
        if len(nested) == 1:
            return f"{nested[0][0]}.{nested[0][1]}"
    return ""


def _find_field(document: dict, schema: dict, names: tuple[str, ...], depth: int = 0) -> str:
    """A dotted path to the first of `names` in `schema` (breadth first, three levels deep), or ""."""
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    for name in names:
        if name in properties and not _is_array(document, properties[name]):
            return name
    if depth >= 2:
        return ""
    for name, value in properties.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)) or _is_array(document, value):
            continue
        found = _find_field(document, _schema(document, value), names, depth + 1)
        if found:
            return f"{name}.{found}"
    return ""


def _page_size(parameter: dict | None) -> int:
    """The page size to ask for: the parameter's maximum, else its default; 0 when the document says neither."""
    schema = parameter.get("schema") if parameter and isinstance(parameter.get("schema"), dict) else {}
    for key in ("maximum", "default"):
        value = schema.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_PAGE_SIZE:
            return value
    return 0


def _pagination(document: dict, op: _RawOperation, response: dict) -> dict:
    """The pagination the query parameters (and response) make clear; style none otherwise."""
    query = {str(p.get("name")): p for p in op.parameters if p.get("in") == "query" and p.get("name")}
    result = dict(PAGINATION_DEFAULT)
    next_url = _find_field(document, response, NEXT_URL_FIELDS)
    links = _schema(document, (response.get("properties") or {}).get("links")) if response else {}
    if not next_url and _schema(document, (links.get("properties") or {}).get("next")).get("type") == "string":
        next_url = "links.next"
    if next_url:
        result.update(style="next_url", next_url_path=next_url)
        return result
    page = next((n for n in PAGE_PARAMETERS if n in query), None)
    if page and _schema(document, query[page].get("schema")).get("type") == "string":
        page = None  # a page token (Stripe's search): a cursor, if the response says where the next one is
    size = next((n for n in PAGE_SIZE_PARAMETERS if n in query), None)
    offset = next((n for n in OFFSET_PARAMETERS if n in query), None)
    cursor = next((n for n in CURSOR_PARAMETERS + PAGE_PARAMETERS if n in query and n != page), None)
    if page and not offset and not cursor:
        result.update(style="page_number", page_parameter=page)
        schema = query[page].get("schema") if isinstance(query[page].get("schema"), dict) else {}
        if schema.get("minimum") == 0 or schema.get("default") == 0:
            result["first_page"] = 0
        limit = _page_size(query.get(size)) if size else 0
        if limit:
            result.update(limit_parameter=size, limit=limit)
        return result
    if offset and not page and not cursor:
        limit_name = next((n for n in LIMIT_PARAMETERS + PAGE_SIZE_PARAMETERS if n in query), None)
        limit = _page_size(query.get(limit_name)) if limit_name else 0
        if limit:
            result.update(style="limit_offset", offset_parameter=offset, limit_parameter=limit_name, limit=limit)
        return result
    if cursor and not page and not offset:
        path = _find_field(document, response, CURSOR_FIELDS)
        if path:
            result.update(style="cursor", cursor_parameter=cursor, cursor_path=path)
    return result


def _request_parameters(document: dict, op: _RawOperation, skip: set[str], key_for) -> list[dict]:
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
        schema = _schema(document, p.get("schema"))
        enum = schema.get("enum") if isinstance(schema.get("enum"), list) else []
        required = p.get("required") is True
        default = _text(schema.get("default"))
        if required and default is None:
            default = (_text(enum[0]) if enum else None) or _text(p.get("example")) or _text(schema.get("example"))
            if default is None:
                default = "{{" + key_for(name) + "}}"
        default = default or ""
        if len(default) > MAX_PAIR_VALUE or any(ch in default for ch in "\r\n\x00") or "{{" in default and "}}" not in default:
            default = ""
        found.append({"name": name, "location": location, "required": required, "default": default,
                      "label": _clip(_humanise(name), LABEL_MAX)})
    found.sort(key=lambda item: not item["required"])  # required ones first, kept when there are too many
    return found[:MAX_PAIRS]


def _body_encoding(document: dict, op: _RawOperation) -> str:
    """form when the request body is only URL-encoded form data (Stripe), else json."""
    if op.method == "GET":
        return "json"  # no body is sent (Stripe declares form bodies even on GETs)
    body = _resolve(document, op.operation.get("requestBody"))
    content = body.get("content") if isinstance(body, dict) and isinstance(body.get("content"), dict) else {}
    types = [str(t).lower() for t in content]
    if any("x-www-form-urlencoded" in t for t in types) and not any("json" in t for t in types):
        return "form"
    return "json"


def _operation_name(op: _RawOperation) -> str:
    summary = " ".join(str(op.operation.get("summary") or "").split()).rstrip(".")
    operation_id = str(op.operation.get("operationId") or "")
    name = summary or (_humanise(operation_id) if operation_id else f"{op.method} {op.path}")
    if op.operation.get("deprecated") is True:
        name = f"{_clip(name, NAME_MAX - 13)} (deprecated)"
    return _clip(name, NAME_MAX)


def draft_from_openapi(document: dict, deadline: safe_loading.Deadline | None = None) -> ImportDraft:
    """Everything the connector builder can use from `document`, and warnings about the rest.

    Raises OpenAPIError when the document cannot be used, or when reading it
    takes longer than `deadline` allows.
    """
    deadline = deadline or safe_loading.Deadline()
    _check_version(document)
    check_shape(document)
    warnings: list[str] = []
    info = document.get("info") if isinstance(document.get("info"), dict) else {}
    try:
        raw = _raw_operations(document, warnings, deadline)
    except safe_loading.DocumentError as exc:
        raise OpenAPIError(f"The file cannot be imported: {exc.describe()}.") from None
    base_url, variables = _base_url(document, warnings)
    auth = _auth_methods(document, raw, base_url, warnings)

    taken = {v["key"] for v in variables}
    for _, method in auth:
        taken |= {v["key"] for v in method["variables"]}
    taken.add("access_token")
    for header, variable in _common_headers(raw, auth, taken):
        variables.append(variable)
        for _, method in auth:
            method["headers"][header] = "{{" + variable["key"] + "}}"
    # Every {param} becomes one placeholder key; reuse server variables of the same name.
    keys_for: dict[str, str] = {v["alias"]: v["key"] for v in variables if v["alias"]}
    parameter_names: dict[str, str] = {}

    def key_for(name: str) -> str:
        if name not in keys_for:
            key = slug(name, "param")
            keys_for[name] = key if key not in taken or key in parameter_names else _unique(f"{key}_param", taken)
            taken.add(keys_for[name])
            parameter_names[keys_for[name]] = name
        return keys_for[name]

    tags_informative = len({_tag(op.operation) for op in raw} - {""}) > 1
    operations: list[Operation] = []
    operation_keys: set[str] = set()
    foreign_servers = 0
    first_server = next(iter(document.get("servers") or []), {})
    for op in raw:
        for name in PATH_PARAM_RE.findall(op.path):
            key_for(name)
        if op.servers and isinstance(op.servers[0], dict) and _server_url(op.servers[0]) != _server_url(first_server):
            foreign_servers += 1
        direction = _direction(op)
        response = _success_schema(document, op)
        pagination = _pagination(document, op, response) if direction == "receive" else dict(PAGINATION_DEFAULT)
        managed = {pagination[k] for k in ("page_parameter", "limit_parameter", "offset_parameter", "cursor_parameter")}
        common = {h.lower() for _, m in auth for h in m["headers"]}
        request_parameters = [
            p for p in _request_parameters(document, op, managed - {""}, key_for)
            if not (p["location"] == "header" and p["name"].lower() in common)
        ]
        if op.method == "GET":
            request_parameters = [p for p in request_parameters if p["location"] != "body"]
        operation_id = str(op.operation.get("operationId") or "")
        tag = _tag(op.operation)
        operations.append(Operation(
            key=_unique(slug(operation_id or f"{op.method} {op.path}", "op"), operation_keys),
            name=_operation_name(op),
            entity=_entity(op.path, tag, tags_informative),
            direction=direction,
            method=op.method,
            path=_template(op.path, keys_for),
            tag=tag,
            request_parameters=request_parameters,
            body_encoding=_body_encoding(document, op),
            records_path=_records_path(document, response) if direction == "receive" else "",
            pagination=pagination,
        ))
    if foreign_servers:
        warnings.append(
            f"{foreign_servers} operation(s) name their own server; as endpoints they are sent to the base URL."
        )

    auth_methods = []
    for scheme_name, method in auth:
        candidates = [op for op in raw if op.security != []]
        if scheme_name:
            own = [
                op for op in candidates
                if op.security is None or any(isinstance(r, dict) and scheme_name in r for r in op.security)
            ]
            candidates = own or candidates
        path, good = _test_request_path(candidates or raw, keys_for)
        if not good:
            warnings.append(
                f'No GET operation without required parameters was found for "{method["name"]}"; '
                f"its test request is GET {path}, check it before testing credentials."
            )
        method["test_request"] = {"method": "GET", "path": path, "expected_status": [200]}
        auth_methods.append(method)

    return ImportDraft(
        name=_clip(str(info.get("title") or "").strip() or "Imported API", NAME_MAX),
        description=_clip(str(info.get("description") or ""), DESCRIPTION_MAX),
        version=_clip(str(info.get("version") or "").strip() or "1", VERSION_MAX),
        base_url=base_url,
        variables=variables,
        auth_methods=auth_methods,
        operations=operations,
        warnings=warnings,
        parameter_names=parameter_names,
    )


# --- the manifest -------------------------------------------------------------


def to_manifest(
    draft: ImportDraft, selected_keys: list[str], *, name: str | None = None, system_type: str = "Other"
) -> dict:
    """A validated manifest with the selected operations as endpoints.

    Endpoint paths (and test requests) may only use connector or auth method
    variables, and the manifest has no endpoint-level variables, so each
    `{{param}}` that is neither becomes a connector variable (not required,
    configurable) holding one value for the whole connector. Raises
    ManifestError, naming each problem by path, when the result is not valid
    (e.g. a relative base URL nobody replaced), OpenAPIError for an unknown key.
    """
    by_key = {op.key: op for op in draft.operations}
    unknown = [key for key in selected_keys if key not in by_key]
    if unknown:
        raise OpenAPIError(f"The document has no operation {', '.join(repr(k) for k in unknown)}.")
    chosen = set(selected_keys)
    endpoints = [op.as_endpoint() for op in draft.operations if op.key in chosen]
    auth_methods = copy.deepcopy(draft.auth_methods)
    variables = copy.deepcopy(draft.variables)

    known = {v["key"] for v in variables} | {"access_token"}
    for method in auth_methods:
        known |= {v["key"] for v in method["variables"]}
    templates = [e["path"] for e in endpoints] + [v for e in endpoints for v in e["parameters"].values()]
    templates += [p["default"] for e in endpoints for p in e["request_parameters"]]
    templates += [m["test_request"]["path"] for m in auth_methods]
    for template in templates:
        for key in PLACEHOLDER_RE.findall(template):
            if key not in known and KEY_RE.match(key):
                spec_name = draft.parameter_names.get(key, key)
                variables.append({
                    "key": key, "label": _clip(_humanise(spec_name), LABEL_MAX), "alias": spec_name[:120],
                    "default": "", "required": False, "configurable": True, "advanced": False, "secret": False,
                })
                known.add(key)

    manifest = {
        "name": _clip(name if name and name.strip() else draft.name, NAME_MAX),
        "description": _clip(draft.description, DESCRIPTION_MAX),
        "system_type": system_type,
        "version": _clip(draft.version, VERSION_MAX) or "1",
        "base_url": draft.base_url,
        "rate_limit": dict(DEFAULT_RATE_LIMIT),
        "variables": variables,
        "auth_methods": auth_methods,
        "endpoints": endpoints,
    }
    return validate(manifest)
