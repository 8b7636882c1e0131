"""The manifest: the one serialised form of a connector definition.

`validate()` checks a parsed YAML/JSON document against the schema (the
pydantic models in `connectors.schema`) and returns it normalised (every field
present, defaults filled, fixed key order), or raises `ManifestError` whose
messages name the exact path, e.g. ``auth_methods[1].variables[0].key: required``.

`export()` writes a connector out as a normalised manifest and `apply()` makes a
connector match a manifest. Installing, overwriting and installing alongside
all go through `apply()`; a connector is "modified" when `export()` differs from
the manifest it was installed from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import yaml
from django.db import transaction

from connectors import safe_loading
from connectors.models import AuthMethod, Connector, Endpoint, Variable
from connectors.schema import (  # noqa: F401 -- other modules read the schema's limits and checks here
    DATE_DIRECTIVES,
    IDEMPOTENCY_DEFAULT,
    MAX_RATE_LIMIT,
    PAGINATION,
    PAGINATION_DEFAULT,
    PLACEHOLDER_RE,
    REQUEST_PARAMETER_DEFAULTS,
    RUN_PLACEHOLDERS,
    ManifestError,
    check,
    check_listing,
    date_format_error,
    header_value_error,
    is_time_zone,
)

MAX_ERRORS_SHOWN = 50
# The uploaded or edited text: a manifest at every limit of the schema stays well below these.
MANIFEST_LIMITS = safe_loading.Limits(
    max_bytes=1024 * 1024, max_depth=16, max_nodes=100_000, allow_aliases=False, what="manifest"
)


def _shown(exc: ManifestError) -> ManifestError:
    """The first MAX_ERRORS_SHOWN problems and how many more there are."""
    errors = exc.errors
    if len(errors) <= MAX_ERRORS_SHOWN:
        return exc
    return ManifestError(errors[:MAX_ERRORS_SHOWN] + [f"… and {len(errors) - MAX_ERRORS_SHOWN} more problems"])


def validate(data: Any, *, draft: bool = False) -> dict:
    """The normalised manifest, or ManifestError listing every problem by path.

    A draft (a custom connector still in the builder) may have no
    authentication method or endpoint yet; it cannot get instances until it has.
    """
    try:
        return check(data, draft=draft)
    except ManifestError as exc:
        raise _shown(exc) from None


def validate_listing(data: Any) -> tuple[dict, str]:
    """A marketplace catalog file as its normalised manifest and changelog, or ManifestError."""
    try:
        return check_listing(data)
    except ManifestError as exc:
        raise _shown(exc) from None


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
    return {name: p.get(name, default) for name, default in REQUEST_PARAMETER_DEFAULTS.items()}


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
                "idempotency": {"in": e.idempotency_key_in, "name": e.idempotency_key_name},
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
        endpoint.idempotency_key_in = item["idempotency"]["in"]
        endpoint.idempotency_key_name = item["idempotency"]["name"]
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
