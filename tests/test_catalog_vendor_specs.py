"""Catalog endpoints exist in the vendors' own published OpenAPI specifications.

For every listing whose vendor publishes a spec (kept outside the project, in
``VENDOR_SPECS_DIR``, default ``/work/shared/vendor-specs/<slug>/``), each
endpoint and each authentication method's test request must name an operation
of that spec: the same HTTP method, and the path part of the connector's base
URL joined to the endpoint path must equal a server path + spec path, where a
``{param}`` in the spec matches any one segment (literal or ``{{variable}}``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from marketplace.catalog import iter_catalog

SPECS_DIR = Path(os.environ.get("VENDOR_SPECS_DIR", "/work/shared/vendor-specs"))
SPEC_SUFFIXES = {".json", ".yaml", ".yml"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

pytestmark = pytest.mark.skipif(not SPECS_DIR.is_dir(), reason=f"vendor specs not found in {SPECS_DIR}")


@dataclass(frozen=True)
class Operation:
    method: str
    template: str  # server path + spec path, e.g. /stores/{store_hash}/v2/orders
    pattern: re.Pattern


def _load(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    return yaml.load(text, Loader=yaml.CSafeLoader)


def _server_path(url: str) -> str:
    """The path part of a server URL (`https://api.x.com/v2/` -> `/v2`)."""
    return urlsplit(url).path.rstrip("/")


def _template_pattern(template: str) -> re.Pattern:
    """`{param}` matches one whole or partial segment; everything else is literal."""
    parts = re.split(r"(\{[^{}/]+\})", template)
    regex = "".join("[^/]+" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts)
    return re.compile(regex)


def operations_of(spec: dict) -> list[Operation]:
    found = []
    top_servers = spec.get("servers") or [{"url": "/"}]
    for path, item in (spec.get("paths") or {}).items():
        path_servers = item.get("servers") or top_servers
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            servers = (operation or {}).get("servers") or path_servers
            for server in servers:
                template = _server_path(server["url"]) + path
                found.append(Operation(method.upper(), template, _template_pattern(template)))
    return found


@cache
def vendor_operations(slug: str) -> tuple[Operation, ...]:
    """Every operation in the vendor's spec files, parsed once per test session."""
    files = sorted(p for p in (SPECS_DIR / slug).iterdir() if p.suffix in SPEC_SUFFIXES)
    return tuple(op for f in files for op in operations_of(_load(f)))


def base_path(base_url: str) -> str:
    """The path part of a base URL that may contain {{variables}} in its host."""
    match = re.match(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*|\{\{[^{}]*\}\})", base_url)
    rest = base_url[match.end():] if match else base_url
    return rest.rstrip("/")


def request_path(base_url: str, path: str) -> str:
    return base_path(base_url) + path.split("?", 1)[0]


def matching_operations(operations, method: str, path: str) -> list[Operation]:
    return [op for op in operations if op.method == method and op.pattern.fullmatch(path)]


def _spec_vendors() -> list[str]:
    if not SPECS_DIR.is_dir():
        return []
    return sorted(p.name for p in SPECS_DIR.iterdir() if p.is_dir() and any(
        f.suffix in SPEC_SUFFIXES for f in p.iterdir()
    ))


def _cases():
    vendors = set(_spec_vendors())
    cases = []
    for entry in iter_catalog():
        if entry.slug not in vendors:
            continue
        m = entry.manifest
        label = f"{entry.slug}-{m['version']}"
        for endpoint in m["endpoints"]:
            cases.append(pytest.param(
                entry.slug, m["base_url"], endpoint["method"], endpoint["path"],
                id=f"{label}-endpoint-{endpoint['key']}",
            ))
        for method in m["auth_methods"]:
            test = method["test_request"]
            cases.append(pytest.param(
                entry.slug, m["base_url"], test["method"], test["path"],
                id=f"{label}-test_request-{method['key']}",
            ))
    return cases


@pytest.mark.parametrize(("slug", "base_url", "method", "path"), _cases())
def test_catalog_request_exists_in_the_vendor_spec(slug, base_url, method, path):
    full_path = request_path(base_url, path)
    matches = matching_operations(vendor_operations(slug), method, full_path)
    assert matches, f"{method} {full_path} is not an operation in the {slug} spec"


@pytest.mark.parametrize("slug", _spec_vendors())
def test_every_vendor_with_a_spec_has_a_catalog_listing(slug):
    assert slug in {entry.slug for entry in iter_catalog()}


# --- the matcher itself ----------------------------------------------------

SMALL_SPEC = {
    "servers": [{"url": "https://api.example.com/stores/{store_hash}/v2"}],
    "paths": {
        "/orders": {"get": {}, "post": {}, "parameters": []},
        "/Accounts/{Sid}.json": {"get": {}},
        "/files": {"post": {"servers": [{"url": "https://files.example.com/"}]}},
    },
}


def test_the_matcher_accepts_a_variable_or_literal_where_the_spec_has_a_parameter():
    ops = operations_of(SMALL_SPEC)
    assert matching_operations(ops, "GET", "/stores/{{store_hash}}/v2/orders")
    assert matching_operations(ops, "GET", "/stores/abc123/v2/orders")
    assert matching_operations(ops, "GET", "/stores/{{store_hash}}/v2/Accounts/{{username}}.json")


def test_the_matcher_rejects_a_made_up_path_or_the_wrong_method():
    ops = operations_of(SMALL_SPEC)
    assert not matching_operations(ops, "GET", "/stores/{{store_hash}}/v2/not-a-real-endpoint")
    assert not matching_operations(ops, "DELETE", "/stores/{{store_hash}}/v2/orders")
    assert not matching_operations(ops, "GET", "/stores/{{store_hash}}/v2/orders/extra")
    assert not matching_operations(ops, "GET", "/v2/orders")  # missing the server path
    assert not matching_operations(ops, "GET", "/stores/{{store_hash}}/v2/Accounts/{{username}}.xml")


def test_the_matcher_uses_operation_level_servers():
    ops = operations_of(SMALL_SPEC)
    assert matching_operations(ops, "POST", "/files")
    assert not matching_operations(ops, "POST", "/stores/{{store_hash}}/v2/files")


def test_the_matcher_rejects_a_made_up_path_in_a_real_vendor_spec():
    ops = vendor_operations("stripe")
    assert matching_operations(ops, "GET", request_path("https://api.stripe.com", "/v1/balance"))
    assert not matching_operations(ops, "GET", request_path("https://api.stripe.com", "/v1/made_up_things"))
    assert not matching_operations(ops, "DELETE", request_path("https://api.stripe.com", "/v1/balance"))


def test_the_base_path_ignores_a_host_with_variables_and_a_query_string():
    assert base_path("https://{{shop}}.myshopify.com/admin/api/{{api_version}}") == "/admin/api/{{api_version}}"
    assert base_path("{{store_url}}/wp-json/wc/v3") == "/wp-json/wc/v3"
    assert base_path("https://api.stripe.com/") == ""
    assert request_path("https://api.stripe.com", "/v1/customers?limit=1") == "/v1/customers"
