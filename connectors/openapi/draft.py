"""An OpenAPI document as a connector draft, and the draft as a manifest.

`draft_from_openapi()` turns the document into an `ImportDraft` (base URL,
variables, authentication methods, every usable operation, and warnings about
what could not be carried over) and `to_manifest()` builds the manifest of the
operations the user picked, validated by the manifest schema like any other.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from urllib.parse import urljoin

from connectors import safe_loading
from connectors.manifest import validate
from connectors.openapi.document import (
    OpenAPIError,
    RawOperation,
    check_shape,
    check_version,
    raw_operations,
    resolve,
)
from connectors.openapi.naming import (
    DEFAULT_MAX,
    DESCRIPTION_MAX,
    LABEL_MAX,
    NAME_MAX,
    VERSION_MAX,
    as_text,
    clip,
    humanise,
    singular,
    slug,
    unique,
)
from connectors.openapi.operations import (
    IDEMPOTENCY_HEADERS,
    IGNORED_HEADERS,
    body_encoding_of,
    direction_of,
    entity_of,
    idempotency_of,
    operation_name,
    pagination_of,
    records_path_of,
    request_parameters_of,
    server_url,
    success_schema,
    tag_of,
)
from connectors.schema import IDEMPOTENCY_DEFAULT, KEY_RE, PAGINATION_DEFAULT, PLACEHOLDER_RE

DEFAULT_RATE_LIMIT = {"amount": 60, "unit": "minute"}
MAX_SCOPES = 5  # more than this and the user should choose, not get them all
# A header parameter required by at least this share of operations goes on
# every request (as an auth method header) instead of being lost.
COMMON_HEADER_SHARE = 0.8
# Cheap "who am I" calls, best first, matched against a GET path's last segment.
TEST_PATH_NAMES = (
    "me", "whoami", "self", "account", "organisation", "organization", "company", "store", "shop", "merchant",
    "user", "profile", "scope", "balance",
)
PATH_PARAM_RE = re.compile(r"\{([^{}/]+)\}")


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
    idempotency: dict = field(default_factory=lambda: dict(IDEMPOTENCY_DEFAULT))

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
            "idempotency": dict(self.idempotency),
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



# --- what the document gives the whole connector ------------------------------------


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
        keys[name] = key = unique(slug(name, "server"), {v["key"] for v in variables})
        spec = definitions.get(name) if isinstance(definitions.get(name), dict) else {}
        description = " ".join(str(spec.get("description") or "").split())
        variables.append({
            "key": key,
            "label": description if 0 < len(description) <= LABEL_MAX else humanise(name),
            "alias": name[:120],
            "default": (as_text(spec.get("default")) or "")[:DEFAULT_MAX],
            "required": True,
            "configurable": True,
            "advanced": False,
            "secret": False,
        })
    url = PATH_PARAM_RE.sub(lambda m: "{{" + keys[m.group(1)] + "}}", url).rstrip("/")
    if not re.match(r"^(https?://|\{\{)", url):
        warnings.append(f'The server URL "{url or "/"}" is relative; replace it with the API\'s full base URL.')
    return url, variables


def _test_request_path(candidates: list[RawOperation], keys_for: dict[str, str]) -> tuple[str, bool]:
    """The path of a cheap GET to check credentials with, and whether it is a good one.

    Good means no path parameters and no required query parameters; among those a
    "who am I" path (`/me`, `/account`, ...) wins, then the shortest.
    """
    gets = [op for op in candidates if op.method == "GET"]
    cheap = [
        op for op in gets
        if "{" not in op.path and not any(p.get("in") == "query" and p.get("required") for p in op.parameters)
    ]

    def rank(op: RawOperation) -> tuple[int, int, int]:
        last = re.sub(r"\.\w+$", "", op.path.rstrip("/").rsplit("/", 1)[-1]).lower()
        if last in TEST_PATH_NAMES:  # /account beats /accounts, which may be a chart of accounts
            return 0, TEST_PATH_NAMES.index(last), len(op.path)
        if singular(last) in TEST_PATH_NAMES:
            return 1, TEST_PATH_NAMES.index(singular(last)), len(op.path)
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
        "key": key, "label": clip(label, LABEL_MAX), "alias": alias[:120], "default": "",
        "required": required, "configurable": True, "advanced": False, "secret": secret,
    }


def _bearer_header() -> dict[str, str]:
    return {"Authorization": "Bearer {{access_token}}"}


def _auth_methods(
    document: dict, raw: list[RawOperation], base_url: str, warnings: list[str]
) -> list[tuple[str, dict]]:
    """(security scheme name, manifest auth method without its test request) for each usable scheme."""
    schemes = resolve(document, (document.get("components") or {}).get("securitySchemes")) or {}
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
        scheme = resolve(document, schemes[scheme_name])
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
    for _scheme_name, method in methods:
        method["key"] = unique(method["key"], keys)
        seen_names[method["name"]] = seen_names.get(method["name"], 0) + 1
    for scheme_name, method in methods:
        if seen_names[method["name"]] > 1 and scheme_name:
            method["name"] = clip(f"{method['name']} – {scheme_name}", NAME_MAX)
    return methods


def _common_headers(
    raw: list[RawOperation], auth: list[tuple[str, dict]], taken: set[str]
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
            if p.get("in") == "header" and p.get("required") and name.lower() not in IGNORED_HEADERS | IDEMPOTENCY_HEADERS | auth_headers:
                counts[name] = counts.get(name, 0) + 1
                specs.setdefault(name, p)
    common = []
    for name, count in counts.items():
        if count >= COMMON_HEADER_SHARE * len(raw):
            spec = specs[name]
            schema = spec.get("schema") if isinstance(spec.get("schema"), dict) else {}
            variable = _variable(unique(slug(name, "header"), taken), humanise(name), alias=name)
            variable["default"] = (as_text(schema.get("default")) or "")[:DEFAULT_MAX]
            common.append((name, variable))
    return common




# --- the draft ------------------------------------------------------------------


def draft_from_openapi(document: dict, deadline: safe_loading.Deadline | None = None) -> ImportDraft:
    """Everything the connector builder can use from `document`, and warnings about the rest.

    Raises OpenAPIError when the document cannot be used, or when reading it
    takes longer than `deadline` allows.
    """
    deadline = deadline or safe_loading.Deadline()
    check_version(document)
    check_shape(document)
    warnings: list[str] = []
    info = document.get("info") if isinstance(document.get("info"), dict) else {}
    try:
        raw = raw_operations(document, warnings, deadline)
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
            keys_for[name] = key if key not in taken or key in parameter_names else unique(f"{key}_param", taken)
            taken.add(keys_for[name])
            parameter_names[keys_for[name]] = name
        return keys_for[name]

    tags_informative = len({tag_of(op.operation) for op in raw} - {""}) > 1
    operations: list[Operation] = []
    operation_keys: set[str] = set()
    foreign_servers = 0
    first_server = next(iter(document.get("servers") or []), {})
    for op in raw:
        for name in PATH_PARAM_RE.findall(op.path):
            key_for(name)
        if op.servers and isinstance(op.servers[0], dict) and server_url(op.servers[0]) != server_url(first_server):
            foreign_servers += 1
        direction = direction_of(op)
        response = success_schema(document, op)
        pagination = pagination_of(document, op, response) if direction == "receive" else dict(PAGINATION_DEFAULT)
        managed = {pagination[k] for k in ("page_parameter", "limit_parameter", "offset_parameter", "cursor_parameter")}
        common = {h.lower() for _, m in auth for h in m["headers"]}
        request_parameters = [
            p for p in request_parameters_of(document, op, managed - {""}, key_for)
            if not (p["location"] == "header" and p["name"].lower() in common)
        ]
        if op.method == "GET":
            request_parameters = [p for p in request_parameters if p["location"] != "body"]
        idempotency = idempotency_of(document, op, common) if direction == "send" else dict(IDEMPOTENCY_DEFAULT)
        if idempotency["in"] == "header":  # each run makes the key: not a setting of the connection shapes
            request_parameters = [
                p for p in request_parameters
                if not (p["location"] == "header" and p["name"].lower() == idempotency["name"].lower())
            ]
        operation_id = str(op.operation.get("operationId") or "")
        tag = tag_of(op.operation)
        operations.append(Operation(
            key=unique(slug(operation_id or f"{op.method} {op.path}", "op"), operation_keys),
            name=operation_name(op),
            entity=entity_of(op.path, tag, tags_informative),
            direction=direction,
            method=op.method,
            path=_template(op.path, keys_for),
            tag=tag,
            request_parameters=request_parameters,
            body_encoding=body_encoding_of(document, op),
            records_path=records_path_of(document, response) if direction == "receive" else "",
            pagination=pagination,
            idempotency=idempotency,
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
        name=clip(str(info.get("title") or "").strip() or "Imported API", NAME_MAX),
        description=clip(str(info.get("description") or ""), DESCRIPTION_MAX),
        version=clip(str(info.get("version") or "").strip() or "1", VERSION_MAX),
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
                    "key": key, "label": clip(humanise(spec_name), LABEL_MAX), "alias": spec_name[:120],
                    "default": "", "required": False, "configurable": True, "advanced": False, "secret": False,
                })
                known.add(key)

    manifest = {
        "name": clip(name if name and name.strip() else draft.name, NAME_MAX),
        "description": clip(draft.description, DESCRIPTION_MAX),
        "system_type": system_type,
        "version": clip(draft.version, VERSION_MAX) or "1",
        "base_url": draft.base_url,
        "rate_limit": dict(DEFAULT_RATE_LIMIT),
        "variables": variables,
        "auth_methods": auth_methods,
        "endpoints": endpoints,
    }
    return validate(manifest)
