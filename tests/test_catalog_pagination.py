"""The catalog's records paths and pagination: new listing versions, and what the vendors' specs document.

For the vendors whose official OpenAPI document is kept in ``VENDOR_SPECS_DIR``,
every receive endpoint of the newest catalog version is checked against the
operation it names: the records path leads to a list in the documented success
response, the page, size, offset and cursor parameters are query parameters of
that operation (with a page size the spec allows), and next-page URL and cursor
paths are fields of the response.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from connectors import safe_loading
from connectors.manifest import PAGINATION_DEFAULT
from connectors.openapi import document as openapi_document
from connectors.openapi import operations
from marketplace import catalog
from marketplace.models import Listing
from tests.test_catalog_vendor_specs import (
    SPEC_SUFFIXES,
    SPECS_DIR,
    _server_path,
    _spec_vendors,
    _template_pattern,
    request_path,
)


def _latest_entries() -> dict:
    latest = {}
    for entry in catalog.iter_catalog():  # oldest first
        latest[entry.slug] = entry
    return latest


LATEST = _latest_entries()
PAGED_SINCE = {  # the first version that says where records are and how lists page
    "sandbox": "1.4.0", "bigcommerce": "1.2.0", "klaviyo": "1.2.0", "magento2": "1.1.0", "netsuite": "1.1.0",
    "paypal": "1.1.0", "sendgrid": "1.1.0", "shipstation": "1.1.0", "shopify": "1.2.0", "square": "1.2.0",
    "stripe": "1.1.0", "twilio": "1.1.0", "woocommerce": "1.1.0", "xero": "1.1.0", "zendesk": "1.1.0",
}


def test_every_listing_has_a_new_version_with_a_changelog_and_records_paths():
    assert set(PAGED_SINCE) == set(LATEST)
    for slug, entry in LATEST.items():
        assert catalog.version_key(entry.manifest["version"]) >= catalog.version_key(PAGED_SINCE[slug]), slug
        assert entry.changelog, slug
        receive = [e for e in entry.manifest["endpoints"] if e["direction"] == "receive"]
        assert any(e["records_path"] or e["pagination"]["style"] != "none" for e in receive), slug


@pytest.mark.parametrize("slug", sorted(PAGED_SINCE))
def test_a_connector_installed_from_the_previous_version_shows_update_available(slug, admin_client, company):
    catalog.load_catalog()
    listing = Listing.objects.get(slug=slug)
    versions = sorted(listing.versions.all(), key=lambda v: catalog.version_key(v.version))
    assert PAGED_SINCE[slug] in [v.version for v in versions]
    connector = catalog.install(versions[-2], company)
    assert connector.installation.update_available and not connector.installation.is_modified
    page = admin_client.get("/connectors/").content.decode()
    card = page.split(f'href="/marketplace/updates/{connector.pk}/"', 1)
    assert len(card) == 2 and 'data-testid="update-available"' in card[1][:200]

    update = admin_client.get(f"/marketplace/updates/{connector.pk}/").content.decode()
    assert f"to {versions[-1].version}" in update


def test_the_sandbox_pages_as_the_contract_says():
    endpoints = {e["key"]: e for e in LATEST["sandbox"].manifest["endpoints"]}
    orders = endpoints["list_orders"]
    assert orders["records_path"] == "orders"
    assert orders["pagination"] == {**PAGINATION_DEFAULT, "style": "page_number", "page_parameter": "page",
                                    "limit_parameter": "per_page", "limit": 100}
    assert [(p["name"], p["location"], p["required"], p["default"]) for p in orders["request_parameters"]] == [
        ("updated_since", "query", False, ""),
        ("X-Sandbox-Time-Zone", "header", False, "{{instance.time_zone}}"),
        ("X-Sandbox-Date-Format", "header", False, "{{instance.date_format}}"),
    ]
    assert endpoints["list_products"]["records_path"] == "products"
    assert endpoints["list_products"]["pagination"] == {**PAGINATION_DEFAULT, "style": "next_url", "next_url_path": "links.next"}
    assert (endpoints["create_order"]["direction"], endpoints["create_order"]["method"], endpoints["create_order"]["body_encoding"]) \
        == ("send", "POST", "json")
    previous = next(e for e in catalog.iter_catalog() if e.slug == "sandbox" and e.manifest["version"] == "1.2.0")
    assert [m["key"] for m in LATEST["sandbox"].manifest["auth_methods"]] == [m["key"] for m in previous.manifest["auth_methods"]]
    assert {e["key"] for e in previous.manifest["endpoints"]} <= set(endpoints)


# --- against the vendors' specs ----------------------------------------------------


@cache
def _spec_operations(slug: str) -> tuple:
    """(document, raw operation, compiled server path + path) for every operation of the vendor's spec files."""
    found = []
    # The vendors' specs are test data, not uploads: the uploads' 10 s budget is no bound for them on a busy
    # machine (Stripe's is several megabytes).
    deadline = safe_loading.Deadline(300)
    for path in sorted(p for p in (SPECS_DIR / slug).iterdir() if p.suffix in SPEC_SUFFIXES):
        document = openapi_document.parse(Path(path).read_bytes(), path.name, deadline)
        servers = document.get("servers") or [{"url": "/"}]
        for op in openapi_document.raw_operations(document, [], deadline):
            for server in op.servers or servers:
                found.append((document, op, _template_pattern(_server_path(server["url"]) + op.path)))
    return tuple(found)


def _walk(document: dict, schema: dict, dotted: str) -> dict | None:
    """The schema at `dotted` inside `schema`, or None when the spec has no such field."""
    for part in dotted.split("."):
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        if part not in properties:
            return None
        schema = operations.schema_of(document, properties[part])
    return schema


def _cases():
    cases = []
    for slug in _spec_vendors():
        entry = LATEST.get(slug)
        for endpoint in entry.manifest["endpoints"] if entry else []:
            if endpoint["direction"] == "receive" and (endpoint["records_path"] or endpoint["pagination"]["style"] != "none"):
                cases.append(pytest.param(slug, endpoint, id=f"{slug}-{endpoint['key']}"))
    return cases


@pytest.mark.skipif(not SPECS_DIR.is_dir(), reason=f"vendor specs not found in {SPECS_DIR}")
@pytest.mark.parametrize(("slug", "endpoint"), _cases())
def test_records_path_and_pagination_are_what_the_vendor_spec_documents(slug, endpoint):
    full_path = request_path(LATEST[slug].manifest["base_url"], endpoint["path"])
    matches = [(d, op) for d, op, pattern in _spec_operations(slug)
               if op.method == endpoint["method"] and pattern.fullmatch(full_path)]
    # The most literal match (/orders/count before /orders/{id}).
    matches.sort(key=lambda m: m[1].path.count("{"))
    assert matches, f"{endpoint['method']} {full_path} is not in the {slug} spec"
    document, op = matches[0]
    response = operations.success_schema(document, op)
    assert response, "the spec documents no JSON success response"

    if endpoint["records_path"]:
        records = _walk(document, response, endpoint["records_path"])
        assert records is not None and operations.is_array(document, records), \
            f"{endpoint['records_path']} is not a list in the documented response"
    else:
        assert operations.is_array(document, response), "no records path, but the response is not a list"

    pagination = endpoint["pagination"]
    query = {str(p.get("name")): p for p in op.parameters if p.get("in") == "query"}
    for key in ("page_parameter", "limit_parameter", "offset_parameter", "cursor_parameter"):
        if pagination[key]:
            assert pagination[key] in query, f"{key} {pagination[key]} is not a query parameter of the operation"
    if pagination["limit_parameter"]:
        schema = operations.schema_of(document, query[pagination["limit_parameter"]].get("schema"))
        if isinstance(schema.get("maximum"), int):
            assert 0 < pagination["limit"] <= schema["maximum"]
        else:  # no maximum documented: the documented default (or example)
            documented = {schema.get("default"), schema.get("example")}
            description = str(query[pagination["limit_parameter"]].get("description") or "")
            assert pagination["limit"] in documented or f"={pagination['limit']}" in description
    for key in ("next_url_path", "cursor_path"):
        if pagination[key]:
            field = _walk(document, response, pagination[key])
            assert field is not None and not operations.is_array(document, field), \
                f"{pagination[key]} is not a field of the documented response"


# --- idempotency keys against the vendors' specs --------------------------------------------

# Declared keys a vendor documents outside its OpenAPI document (the header is not a parameter there).
KEYS_DOCUMENTED_ELSEWHERE = {
    ("stripe", "Idempotency-Key"): "https://docs.stripe.com/api/idempotent_requests (every POST request)",
}


def _idempotency_cases():
    cases = []
    for slug in _spec_vendors():
        entry = LATEST.get(slug)
        for endpoint in entry.manifest["endpoints"] if entry else []:
            if endpoint["idempotency"]["in"] != "none":
                cases.append(pytest.param(slug, endpoint, id=f"{slug}-{endpoint['key']}"))
    return cases


@pytest.mark.skipif(not SPECS_DIR.is_dir(), reason=f"vendor specs not found in {SPECS_DIR}")
@pytest.mark.parametrize(("slug", "endpoint"), _idempotency_cases())
def test_a_declared_idempotency_key_is_where_the_vendor_spec_documents_it(slug, endpoint):
    where, name = endpoint["idempotency"]["in"], endpoint["idempotency"]["name"]
    if (slug, name) in KEYS_DOCUMENTED_ELSEWHERE:
        return
    full_path = request_path(LATEST[slug].manifest["base_url"], endpoint["path"])
    matches = [(d, op) for d, op, pattern in _spec_operations(slug)
               if op.method == endpoint["method"] and pattern.fullmatch(full_path)]
    matches.sort(key=lambda m: m[1].path.count("{"))
    assert matches, f"{endpoint['method']} {full_path} is not in the {slug} spec"
    document, op = matches[0]
    if where == "header":
        headers = {str(p.get("name")).lower() for p in op.parameters if p.get("in") == "header"}
        assert name.lower() in headers, f"{name} is not a header parameter of {op.method} {op.path}"
    else:
        body = openapi_document.resolve(document, op.operation.get("requestBody")) or {}
        schema = operations.schema_of(document, (body.get("content") or {}).get("application/json", {}).get("schema"))
        assert _walk(document, schema, name) is not None, f"{name} is not a field of the {op.method} {op.path} body"


@pytest.mark.skipif(not SPECS_DIR.is_dir(), reason=f"vendor specs not found in {SPECS_DIR}")
def test_the_idempotency_check_finds_the_keys_of_the_specs():
    """Guards the test above: it looks at real declarations of each kind, not at nothing."""
    kinds = {(c.values[0], c.values[1]["idempotency"]["in"]) for c in _idempotency_cases()}
    assert {("paypal", "header"), ("xero", "header"), ("square", "body")} <= kinds
