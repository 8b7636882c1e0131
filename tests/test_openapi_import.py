"""Importing an OpenAPI 3 document as a connector draft (connectors.openapi).

The vendor tests read the official specs kept outside the project in
``VENDOR_SPECS_DIR`` (default ``/work/shared/vendor-specs``) and are skipped
when that folder is missing; the rest use small documents written here.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest

from connectors import manifest as manifests
from connectors import safe_loading
from connectors.manifest import ManifestError
from connectors.models import Connector
from connectors.openapi import (
    MAX_BYTES,
    ImportDraft,
    OpenAPIError,
    Operation,
    draft_from_openapi,
    parse,
    to_manifest,
)
from patchworks_site.models import Company

SPECS_DIR = Path(os.environ.get("VENDOR_SPECS_DIR", "/work/shared/vendor-specs"))
needs_specs = pytest.mark.skipif(not SPECS_DIR.is_dir(), reason=f"vendor specs not found in {SPECS_DIR}")


@cache
def vendor_draft(relative_path: str) -> ImportDraft:
    """The draft of one vendor spec, imported once per test session (tests must not mutate it).

    What these tests check is the draft, not the upload's time budget (tests/test_upload_limits.py
    has those): a large spec on a busy machine may take longer than an upload is allowed.
    """
    path = SPECS_DIR / relative_path
    deadline = safe_loading.Deadline(600)
    return draft_from_openapi(parse(path.read_bytes(), path.name, deadline), deadline)


def operation(draft: ImportDraft, key: str) -> Operation:
    return next(op for op in draft.operations if op.key == key)


def only_method(draft: ImportDraft) -> dict:
    assert len(draft.auth_methods) == 1, draft.auth_methods
    return draft.auth_methods[0]


def spec(paths: dict | None = None, **extra) -> dict:
    """A small valid OpenAPI 3.0 document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "Example API", "version": "2.1.0", "description": "Orders and customers."},
        "servers": [{"url": "https://api.example.com/v1"}],
        "paths": paths if paths is not None else {
            "/orders": {
                "get": {"operationId": "listOrders", "summary": "List orders", "tags": ["Orders"]},
                "post": {"operationId": "createOrder", "summary": "Create an order.", "tags": ["Orders"]},
            },
            "/orders/{orderId}": {
                "parameters": [{"name": "orderId", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"operationId": "getOrder", "summary": "Get an order", "tags": ["Orders"]},
                "delete": {"operationId": "deleteOrder", "tags": ["Orders"]},
            },
            "/me": {"get": {"operationId": "getMe", "summary": "Who am I", "tags": ["Account"]}},
        },
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        **extra,
    }


def round_trip(manifest: dict) -> dict:
    company = Company.objects.create(name="Import Co")
    connector = manifests.apply(manifest, connector=Connector(company=company))
    return manifests.export(Connector.objects.get(pk=connector.pk))


# --- vendor specs ---------------------------------------------------------------


@needs_specs
def test_sendgrid_scopes_imports_a_bearer_token_and_tests_with_the_scopes_list():
    draft = vendor_draft("sendgrid/tsg_scopes_v3.json")

    assert draft.name == "Twilio SendGrid Scopes API"
    assert draft.base_url == "https://api.sendgrid.com"
    method = only_method(draft)
    assert method["type"] == "token"
    assert method["headers"] == {"Authorization": "Bearer {{token}}"}
    assert [v["key"] for v in method["variables"]] == ["token"]
    assert method["variables"][0]["secret"] is True
    assert method["test_request"] == {"method": "GET", "path": "/v3/scopes", "expected_status": [200]}
    scopes = operation(draft, "list_scope")
    assert (scopes.method, scopes.direction, scopes.path, scopes.entity) == ("GET", "receive", "/v3/scopes", "Scope")
    assert any("https://api.eu.sendgrid.com" in w for w in draft.warnings)


@needs_specs
def test_sendgrid_mail_has_no_cheap_get_so_the_test_request_is_the_first_get_with_a_warning():
    draft = vendor_draft("sendgrid/tsg_mail_v3.json")

    assert only_method(draft)["test_request"]["path"] == "/v3/mail/batch/{{batch_id}}"
    assert any("No GET operation without required parameters" in w for w in draft.warnings)
    send = operation(draft, "send_mail")
    assert (send.method, send.direction, send.path) == ("POST", "send", "/v3/mail/send")


@needs_specs
def test_bigcommerce_store_information_keeps_the_store_hash_server_variable_and_the_x_auth_token_header():
    draft = vendor_draft("bigcommerce/store_information.v2.yml")

    assert draft.base_url == "https://api.bigcommerce.com/stores/{{store_hash}}/v2"
    assert [(v["key"], v["alias"], v["required"]) for v in draft.variables] == [("store_hash", "store_hash", True)]
    method = only_method(draft)
    assert method["type"] == "token"
    assert method["headers"] == {"X-Auth-Token": "{{api_key}}"}
    assert method["variables"][0]["alias"] == "X-Auth-Token"
    assert method["test_request"]["path"] == "/store"
    store = operation(draft, "get_store_information")
    assert (store.method, store.direction, store.path, store.name) == (
        "GET", "receive", "/store", "Get Store Information",
    )
    assert operation(draft, "get_system_timestamp").path == "/time"


@needs_specs
def test_paypal_catalog_products_imports_client_credentials_with_the_token_url_joined_to_the_server():
    draft = vendor_draft("paypal/catalogs_products_v1.json")

    assert draft.base_url == "https://api-m.sandbox.paypal.com"
    assert any("https://api-m.paypal.com" in w for w in draft.warnings)  # the live server is the second one
    method = only_method(draft)
    assert method["type"] == "oauth2_client_credentials"
    assert method["token_url"] == "https://api-m.sandbox.paypal.com/v1/oauth2/token"
    assert method["scope"] == "https://uri.paypal.com/services/subscriptions"
    assert {v["key"] for v in method["variables"]} == {"client_id", "client_secret"}
    assert method["test_request"]["path"] == "/v1/catalogs/products"
    by_key = {op.key: (op.method, op.direction, op.path, op.entity) for op in draft.operations}
    assert by_key == {
        "products_create": ("POST", "send", "/v1/catalogs/products", "Product"),
        "products_list": ("GET", "receive", "/v1/catalogs/products", "Product"),
        "products_get": ("GET", "receive", "/v1/catalogs/products/{{product_id}}", "Product"),
        "products_patch": ("PATCH", "send", "/v1/catalogs/products/{{product_id}}", "Product"),
    }


@needs_specs
@pytest.mark.django_db
def test_paypal_selected_operations_make_a_manifest_that_round_trips_through_a_connector():
    draft = vendor_draft("paypal/catalogs_products_v1.json")

    manifest = to_manifest(draft, ["products_list", "products_get", "products_create"], name="PayPal products")

    assert manifest["name"] == "PayPal products"
    assert manifest["version"] == "1.0"
    assert manifest["rate_limit"] == {"amount": 60, "unit": "minute"}
    assert [e["key"] for e in manifest["endpoints"]] == ["products_create", "products_list", "products_get"]
    # The path parameter has become a connector-level variable so the path validates.
    assert [(v["key"], v["required"], v["configurable"]) for v in manifest["variables"]] == [
        ("product_id", False, True)
    ]
    assert round_trip(manifest) == manifest


@needs_specs
def test_shipstation_imports_the_api_key_header_and_picks_a_who_am_i_style_test_request():
    draft = vendor_draft("shipstation/openapi.yaml")

    assert draft.base_url == "https://api.shipstation.com"
    assert draft.version == "2.0.0"
    method = only_method(draft)
    assert method["headers"] == {"api-key": "{{api_key}}"}
    assert method["test_request"]["path"] == "/v2/users"
    carriers = operation(draft, "list_carriers")
    assert (carriers.method, carriers.direction, carriers.path, carriers.entity) == (
        "GET", "receive", "/v2/carriers", "Carrier",
    )
    label = operation(draft, "create_label")
    assert (label.method, label.direction, label.path, label.entity) == ("POST", "send", "/v2/labels", "Label")
    void = operation(draft, "void_label")
    assert (void.method, void.direction, void.path, void.entity) == (
        "PUT", "send", "/v2/labels/{{label_id}}/void", "Label",
    )
    assert len({op.key for op in draft.operations}) == len(draft.operations) == 71


@needs_specs
@pytest.mark.django_db
def test_shipstation_manifest_with_a_few_operations_round_trips():
    draft = vendor_draft("shipstation/openapi.yaml")

    manifest = to_manifest(draft, ["list_carriers", "create_label", "void_label"], system_type="3PL")

    assert manifest["system_type"] == "3PL"
    assert manifest["auth_methods"][0]["test_request"]["path"] == "/v2/users"
    assert [v["key"] for v in manifest["variables"]] == ["label_id"]
    assert round_trip(manifest) == manifest


@needs_specs
def test_xero_identity_imports_authorisation_code_with_its_urls_scopes_and_an_access_token_variable():
    draft = vendor_draft("xero/xero-identity.yaml")

    assert draft.base_url == "https://api.xero.com"
    method = only_method(draft)  # BasicAuth is declared but no operation uses it
    assert method["type"] == "oauth2_authorization_code"
    assert method["authorize_url"] == "https://login.xero.com/identity/connect/authorize"
    assert method["token_url"] == "https://identity.xero.com/connect/token"
    assert method["scope"] == "email openid profile"
    access_token = next(v for v in method["variables"] if v["key"] == "access_token")
    assert access_token["secret"] is True
    assert method["headers"]["Authorization"] == "Bearer {{access_token}}"
    assert method["test_request"]["path"] == "/Connections"
    assert any("BasicAuth" in w for w in draft.warnings)
    delete = operation(draft, "delete_connection")
    assert (delete.method, delete.direction, delete.path, delete.entity) == (
        "DELETE", "send", "/Connections/{{id}}", "Connection",
    )


@needs_specs
@pytest.mark.django_db
def test_xero_accounting_sends_the_tenant_header_every_operation_requires_and_tests_with_the_organisation():
    draft = vendor_draft("xero/xero_accounting.yaml")

    method = only_method(draft)
    assert method["headers"]["xero-tenant-id"] == "{{xero_tenant_id}}"
    assert [(v["key"], v["alias"], v["required"]) for v in draft.variables] == [
        ("xero_tenant_id", "xero-tenant-id", True)
    ]
    assert method["test_request"]["path"] == "/Organisation"
    assert method["scope"] == ""  # too many scopes to pick for the user
    assert any("scopes" in w for w in draft.warnings)
    invoices = operation(draft, "get_invoices")
    assert (invoices.method, invoices.direction, invoices.path, invoices.entity) == (
        "GET", "receive", "/Invoices", "Invoice",
    )
    manifest = to_manifest(draft, ["get_invoices", "get_contact"])
    # Xero spells the parameter both ContactID and contactId; both are one variable.
    assert {v["key"]: v["alias"].lower() for v in manifest["variables"]} == {
        "xero_tenant_id": "xero-tenant-id", "contact_id": "contactid",
    }
    assert round_trip(manifest) == manifest


@needs_specs
@pytest.mark.django_db
def test_twilio_imports_basic_auth_and_turns_account_sid_path_parameters_into_a_variable():
    draft = vendor_draft("twilio/twilio_api_v2010.json")

    method = only_method(draft)
    assert method["type"] == "basic"
    assert [v["key"] for v in method["variables"]] == ["username", "password"]
    assert method["test_request"]["path"] == "/2010-04-01/Accounts.json"
    messages = operation(draft, "create_message")
    assert (messages.method, messages.direction, messages.path, messages.entity) == (
        "POST", "send", "/2010-04-01/Accounts/{{account_sid}}/Messages.json", "Message",
    )
    manifest = to_manifest(draft, ["create_message", "list_message"], name="Twilio SMS")
    assert [(v["key"], v["label"], v["alias"]) for v in manifest["variables"]] == [
        ("account_sid", "Account sid", "AccountSid")
    ]
    assert round_trip(manifest) == manifest


# --- parsing errors ---------------------------------------------------------------


def test_a_file_that_is_neither_json_nor_yaml_is_refused():
    with pytest.raises(OpenAPIError, match="not valid JSON or YAML"):
        parse(b"openapi: 3.0.0\npaths: {unclosed: [", "api.yaml")


def test_a_broken_json_file_reports_the_json_error():
    with pytest.raises(OpenAPIError, match="not valid JSON"):
        parse(b'{"openapi": "3.0.0", "paths": {]', "api.json")


def test_a_binary_file_is_refused_as_not_text():
    with pytest.raises(OpenAPIError, match="not UTF-8 text"):
        parse(b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "logo.png")


def test_a_swagger_2_document_is_refused_with_advice_to_convert_it():
    data = json.dumps({"swagger": "2.0", "info": {"title": "Old"}, "paths": {}}).encode()
    with pytest.raises(OpenAPIError, match="Swagger 2.0 documents are not supported; convert them to OpenAPI 3 first"):
        parse(data)


def test_a_mapping_without_an_openapi_field_is_refused():
    with pytest.raises(OpenAPIError, match='it has no "openapi" field'):
        parse(b"title: Not an API\npaths: {}\n", "notes.yaml")


def test_a_yaml_list_is_refused_as_not_a_mapping():
    with pytest.raises(OpenAPIError, match="mapping at the top level"):
        parse(b"- openapi\n- 3.0.0\n")


def test_an_unsupported_openapi_version_is_refused():
    with pytest.raises(OpenAPIError, match="OpenAPI 4.0.0 is not supported"):
        parse(b'{"openapi": "4.0.0", "paths": {}}')


def test_a_file_over_eight_megabytes_is_refused_before_parsing():
    with pytest.raises(OpenAPIError, match="too large"):
        parse(b" " * (MAX_BYTES + 1), "huge.json")


def test_json_and_yaml_documents_parse_to_the_same_mapping():
    document = spec()
    assert parse(json.dumps(document).encode(), "api.json") == document
    import yaml

    assert parse(yaml.safe_dump(document).encode("utf-8"), "api.yaml") == document


def test_an_empty_paths_object_is_refused():
    with pytest.raises(OpenAPIError, match='"paths" object is empty'):
        draft_from_openapi(spec(paths={}))


def test_a_document_with_only_head_operations_is_refused():
    with pytest.raises(OpenAPIError, match="none uses GET, POST"):
        draft_from_openapi(spec(paths={"/ping": {"head": {"operationId": "ping"}}}))


# --- drafts from small documents ----------------------------------------------------


def test_a_small_document_becomes_a_draft_with_keys_names_entities_and_directions():
    draft = draft_from_openapi(spec())

    assert (draft.name, draft.version, draft.description) == ("Example API", "2.1.0", "Orders and customers.")
    assert draft.base_url == "https://api.example.com/v1"
    assert [(op.key, op.name, op.entity, op.direction, op.method, op.path, op.tag) for op in draft.operations] == [
        ("list_orders", "List orders", "Order", "receive", "GET", "/orders", "Orders"),
        ("create_order", "Create an order", "Order", "send", "POST", "/orders", "Orders"),
        ("get_order", "Get an order", "Order", "receive", "GET", "/orders/{{order_id}}", "Orders"),
        ("delete_order", "Delete order", "Order", "send", "DELETE", "/orders/{{order_id}}", "Orders"),
        ("get_me", "Who am I", "Account", "receive", "GET", "/me", "Account"),
    ]
    assert draft.auth_methods[0]["test_request"]["path"] == "/me"
    assert draft.warnings == []


def test_duplicate_operation_ids_get_unique_keys():
    document = spec(paths={
        "/orders": {"get": {"operationId": "list"}, "post": {"operationId": "list"}},
        "/customers": {"get": {"operationId": "list"}},
    })

    keys = [op.key for op in draft_from_openapi(document).operations]

    assert keys == ["list", "list_2", "list_3"]


def test_operations_without_an_operation_id_are_keyed_by_method_and_path():
    draft = draft_from_openapi(spec(paths={"/v2/order-items/{id}": {"put": {}}}))

    op = draft.operations[0]
    assert (op.key, op.name, op.entity, op.path) == (
        "put_v2_order_items_id", "PUT /v2/order-items/{id}", "OrderItem", "/v2/order-items/{{id}}",
    )


def test_long_operation_ids_and_summaries_are_cut_to_the_manifest_limits():
    draft = draft_from_openapi(spec(paths={"/things": {"get": {"operationId": "x" * 100, "summary": "word " * 60}}}))

    op = draft.operations[0]
    assert len(op.key) == 64 and len(op.name) == 120 and op.name.endswith("…")


def test_a_post_that_searches_receives_but_a_post_that_creates_a_list_sends():
    draft = draft_from_openapi(spec(paths={
        "/orders/search": {"post": {"operationId": "SearchOrders"}},
        "/customers/query": {"post": {"operationId": "findCustomers", "summary": "Find customers"}},
        "/lists": {"post": {"operationId": "createList", "summary": "Create List"}},
    }))

    assert [(op.key, op.direction) for op in draft.operations] == [
        ("search_orders", "receive"), ("find_customers", "receive"), ("create_list", "send"),
    ]


def test_a_document_without_security_gets_an_api_key_token_method_and_a_warning():
    document = spec()
    del document["components"], document["security"]

    draft = draft_from_openapi(document)

    method = only_method(draft)
    assert method["type"] == "token"
    assert method["headers"] == {"Authorization": "Bearer {{api_key}}"}
    assert any("declares no authentication" in w for w in draft.warnings)


def test_an_api_key_in_the_query_string_becomes_a_query_parameter():
    document = spec(components={"securitySchemes": {"key": {"type": "apiKey", "in": "query", "name": "apikey"}}},
                    security=[{"key": []}])

    method = only_method(draft_from_openapi(document))

    assert (method["type"], method["headers"], method["query_params"]) == ("token", {}, {"apikey": "{{api_key}}"})


def test_unsupported_schemes_are_reported_and_supported_ones_kept():
    document = spec(
        components={"securitySchemes": {
            "oidc": {"type": "openIdConnect", "openIdConnectUrl": "https://id.example.com/.well-known"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "session"},
            "basic": {"type": "http", "scheme": "basic"},
        }},
        security=[{"oidc": []}, {"cookie": []}, {"basic": []}],
    )

    draft = draft_from_openapi(document)

    assert [m["type"] for m in draft.auth_methods] == ["basic"]
    assert any("OpenID Connect" in w for w in draft.warnings)
    assert any("cookie API key" in w for w in draft.warnings)


def test_an_oauth2_scheme_with_both_flows_gives_two_methods_with_unique_keys():
    flows = {
        "clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {"read": "Read"}},
        "authorizationCode": {
            "authorizationUrl": "https://example.com/authorize", "tokenUrl": "/oauth/token", "scopes": {},
        },
        "implicit": {"authorizationUrl": "https://example.com/authorize", "scopes": {}},
    }
    document = spec(
        components={"securitySchemes": {"oauth": {"type": "oauth2", "flows": flows}}}, security=[{"oauth": ["read"]}]
    )

    draft = draft_from_openapi(document)

    assert [(m["key"], m["type"], m["token_url"]) for m in draft.auth_methods] == [
        ("oauth_client_credentials", "oauth2_client_credentials", "https://api.example.com/oauth/token"),
        ("oauth_authorization_code", "oauth2_authorization_code", "https://api.example.com/oauth/token"),
    ]
    assert draft.auth_methods[0]["scope"] == "read"
    assert any("implicit" in w for w in draft.warnings)


def test_server_variables_become_required_connector_variables_with_their_defaults():
    document = spec(servers=[{
        "url": "https://{region}.example.com/{basePath}/",
        "variables": {"region": {"default": "eu", "enum": ["eu", "us"]}, "basePath": {"default": "v2"}},
    }])

    draft = draft_from_openapi(document)

    assert draft.base_url == "https://{{region}}.example.com/{{base_path}}"
    assert [(v["key"], v["alias"], v["default"], v["required"]) for v in draft.variables] == [
        ("region", "region", "eu", True), ("base_path", "basePath", "v2", True),
    ]


def test_a_relative_server_url_is_kept_with_a_warning_and_must_be_replaced_before_the_manifest_validates():
    draft = draft_from_openapi(spec(servers=[{"url": "/api/v3"}]))

    assert draft.base_url == "/api/v3"
    assert any("relative" in w for w in draft.warnings)
    with pytest.raises(ManifestError, match="base_url"):
        to_manifest(draft, ["list_orders"])
    draft.base_url = "https://shop.example.com/api/v3"
    assert to_manifest(draft, ["list_orders"])["base_url"] == "https://shop.example.com/api/v3"


def test_a_path_parameter_named_like_an_auth_variable_gets_its_own_variable():
    draft = draft_from_openapi(spec(paths={"/tokens/{token}": {"get": {"operationId": "getToken"}}}))

    assert draft.operations[0].path == "/tokens/{{token_param}}"
    manifest = to_manifest(draft, ["get_token"])
    assert [(v["key"], v["alias"]) for v in manifest["variables"]] == [("token_param", "token")]


def test_query_and_header_parameters_become_request_parameters():
    draft = draft_from_openapi(spec(paths={"/reports": {"get": {
        "operationId": "getReport",
        "parameters": [
            {"name": "format", "in": "query", "required": True, "schema": {"type": "string", "enum": ["json", "csv"]}},
            {"name": "from", "in": "query", "required": True, "schema": {"type": "string"}},
            {"name": "region", "in": "query", "required": True, "example": "eu", "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 10}},
            {"name": "email", "in": "query", "schema": {"type": "string", "example": "jo@example.com"}},
            {"name": "X-Request-Id", "in": "header", "schema": {"type": "string"}},
            {"name": "Accept", "in": "header", "schema": {"type": "string"}},  # set by the client
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},  # in the path
        ],
    }}}))

    operation = draft.operations[0]
    assert operation.parameters == {}
    assert [(p["name"], p["location"], p["required"], p["default"]) for p in operation.request_parameters] == [
        ("format", "query", True, "json"),
        ("from", "query", True, "{{from}}"),
        ("region", "query", True, "eu"),
        ("limit", "query", False, "10"),
        ("email", "query", False, ""),  # an example is not sent unasked
        ("X-Request-Id", "header", False, ""),
    ]
    manifest = to_manifest(draft, ["get_report"])
    assert manifest["endpoints"][0]["request_parameters"][1] == {
        "name": "from", "location": "query", "required": True, "default": "{{from}}", "label": "From",
    }
    assert [v["key"] for v in manifest["variables"]] == ["from"]  # a required value without a default


def _list(parameters: list[dict], response: dict | None = None, **operation) -> Operation:
    schema = response if response is not None else {"type": "array", "items": {"type": "object"}}
    document = spec(paths={"/things": {"get": {
        "operationId": "listThings", "parameters": parameters,
        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": schema}}}},
        **operation,
    }}})
    return draft_from_openapi(document).operations[0]


def _query(name: str, **schema) -> dict:
    return {"name": name, "in": "query", "schema": {"type": "integer", **schema}}


def _set(pagination: dict) -> dict:
    return {k: v for k, v in pagination.items() if (v != 1 if k == "first_page" else v not in ("", 0))}


def test_page_and_per_page_parameters_give_page_number_pagination_with_the_largest_page():
    op = _list([_query("page", minimum=1), _query("per_page", maximum=100, default=30), _query("status")])
    assert _set(op.pagination) == {"style": "page_number", "page_parameter": "page", "limit_parameter": "per_page", "limit": 100}
    assert [p["name"] for p in op.request_parameters] == ["status"]  # the paging parameters are the runner's
    assert _set(_list([_query("page", minimum=0)]).pagination) == {"style": "page_number", "page_parameter": "page", "first_page": 0}


def test_offset_and_limit_give_limit_offset_pagination_only_with_a_known_page_size():
    op = _list([_query("offset"), _query("limit", default=50)])
    assert _set(op.pagination) == {"style": "limit_offset", "offset_parameter": "offset", "limit_parameter": "limit", "limit": 50}
    assert _list([_query("offset"), _query("limit")]).pagination["style"] == "none"  # no page size: not clear


def test_a_cursor_parameter_gives_cursor_pagination_only_when_the_response_names_the_next_token():
    response = {"type": "object", "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "meta": {"type": "object", "properties": {"next_cursor": {"type": "string"}}},
    }}
    op = _list([{"name": "cursor", "in": "query", "schema": {"type": "string"}}], response)
    assert _set(op.pagination) == {"style": "cursor", "cursor_parameter": "cursor", "cursor_path": "meta.next_cursor"}
    assert op.records_path == "items"
    # Stripe's starting_after takes the last record's id: no response field says it, so no pagination.
    op = _list([{"name": "starting_after", "in": "query", "schema": {"type": "string"}}],
               {"type": "object", "properties": {"data": {"type": "array"}, "has_more": {"type": "boolean"}}})
    assert op.pagination["style"] == "none" and op.records_path == "data"


def test_the_records_path_is_the_one_list_of_an_object_response():
    assert _list([]).records_path == ""  # a top-level list
    components = {"schemas": {"Page": {"type": "object", "properties": {
        "results": {"type": "array", "items": {}}, "errors": {"type": "array", "items": {}}, "count": {"type": "integer"}}}}}
    op = _list([], {"$ref": "#/components/schemas/Page"})
    assert op.records_path == ""  # the components were not given: unresolvable reference
    document = spec(paths={"/things": {"get": {"operationId": "listThings", "responses": {"200": {
        "description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}}}}}}})
    document["components"].update(components)
    assert draft_from_openapi(document).operations[0].records_path == "results"  # two lists, one obvious name
    nested = {"type": "object", "properties": {"data": {"type": "object", "properties": {"items": {"type": "array"}}}}}
    assert _list([], nested).records_path == "data.items"


def test_a_form_request_body_gives_form_encoding():
    document = spec(paths={"/things": {"post": {"operationId": "createThing", "requestBody": {"content": {
        "application/x-www-form-urlencoded": {"schema": {"type": "object"}}}}}}})
    assert draft_from_openapi(document).operations[0].body_encoding == "form"
    document["paths"]["/things"]["post"]["requestBody"]["content"]["application/json"] = {"schema": {}}
    assert draft_from_openapi(document).operations[0].body_encoding == "json"


@needs_specs
def test_bigcommerce_products_page_through_data_with_page_and_limit():
    draft = vendor_draft("bigcommerce/products_catalog.v3.yml")
    op = operation(draft, "get_products")
    assert op.records_path == "data"
    assert _set(op.pagination) == {"style": "page_number", "page_parameter": "page", "limit_parameter": "limit", "limit": 250}
    names = {p["name"] for p in op.request_parameters}
    assert {"include_fields", "id:in"} <= names and not {"page", "limit"} & names
    manifest = to_manifest(draft, ["get_products"])
    assert manifest["endpoints"][0]["pagination"]["style"] == "page_number"


@needs_specs
def test_stripe_lists_have_their_records_in_data_and_search_pages_by_token():
    draft = vendor_draft("stripe/spec3.yaml")
    customers = next(op for op in draft.operations if op.method == "GET" and op.path == "/v1/customers")
    assert customers.records_path == "data" and customers.pagination["style"] == "none"
    assert {"limit", "starting_after", "email"} <= {p["name"] for p in customers.request_parameters}
    search = next(op for op in draft.operations if op.method == "GET" and op.path == "/v1/customers/search")
    assert _set(search.pagination) == {"style": "cursor", "cursor_parameter": "page", "cursor_path": "next_page"}
    create = next(op for op in draft.operations if op.method == "POST" and op.path == "/v1/customers")
    assert create.body_encoding == "form"


def test_to_manifest_refuses_an_unknown_operation_key():
    with pytest.raises(OpenAPIError, match="no operation 'nope'"):
        to_manifest(draft_from_openapi(spec()), ["list_orders", "nope"])


def test_to_manifest_without_operations_fails_validation():
    with pytest.raises(ManifestError, match="at least one endpoint"):
        to_manifest(draft_from_openapi(spec()), [])


def test_to_manifest_cuts_a_long_name_and_description_to_the_schema_limits():
    document = spec()
    document["info"] = {"title": "T" * 300, "description": "D" * 6000, "version": "v" * 60}

    manifest = to_manifest(draft_from_openapi(document), ["list_orders"])

    assert (len(manifest["name"]), len(manifest["description"]), len(manifest["version"])) == (120, 5000, 40)


@pytest.mark.django_db
def test_a_manifest_from_a_small_document_round_trips_through_a_connector():
    draft = draft_from_openapi(spec())

    manifest = to_manifest(draft, ["list_orders", "get_order", "delete_order"], system_type="eCommerce")


    assert manifest["variables"][0]["key"] == "order_id"
    assert round_trip(manifest) == manifest


def test_a_next_page_url_in_the_response_gives_next_url_pagination_and_error_lists_are_not_records():
    response = {"type": "object", "properties": {
        "messages": {"type": "array", "items": {}}, "errors": {"type": "array", "items": {}},
        "next_page_uri": {"type": "string", "nullable": True},
    }}
    op = _list([_query("Page"), {"name": "PageToken", "in": "query", "schema": {"type": "string"}}], response)
    assert _set(op.pagination) == {"style": "next_url", "next_url_path": "next_page_uri"}
    assert op.records_path == "messages"
    json_api = {"type": "object", "properties": {
        "data": {"type": "array"}, "links": {"type": "object", "properties": {"next": {"type": "string"}}}}}
    assert _set(_list([], json_api).pagination) == {"style": "next_url", "next_url_path": "links.next"}


# --- idempotency keys ------------------------------------------------------------------------


def test_a_documented_idempotency_header_or_body_field_becomes_the_endpoints_declaration():
    key_header = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
    json_body = {"content": {"application/json": {"schema": {"type": "object", "properties": {
        "idempotency_key": {"type": "string"}, "order": {"type": "object"}}}}}}
    document = spec(paths={
        "/orders": {
            "post": {"operationId": "createOrder", "parameters": [key_header,
                     {"name": "X-Trace", "in": "header", "schema": {"type": "string"}}]},
            "get": {"operationId": "listOrders", "parameters": [key_header]},
        },
        "/payments": {"post": {"operationId": "createPayment", "requestBody": json_body}},
        "/forms": {"post": {"operationId": "createForm", "requestBody": {"content": {
            "application/x-www-form-urlencoded": {"schema": {"properties": {"idempotency_key": {"type": "string"}}}}}}}},
    })
    draft = draft_from_openapi(document)
    create = operation(draft, "create_order")
    assert create.idempotency == {"in": "header", "name": "Idempotency-Key"}
    assert [p["name"] for p in create.request_parameters] == ["X-Trace"]  # the key is not a shape setting
    assert operation(draft, "list_orders").idempotency == {"in": "none", "name": ""}  # a receive endpoint
    assert operation(draft, "create_payment").idempotency == {"in": "body", "name": "idempotency_key"}
    assert operation(draft, "create_form").idempotency == {"in": "none", "name": ""}  # not a JSON body
    manifest = to_manifest(draft, ["create_order", "create_payment"], name="Orders")
    assert [e["idempotency"] for e in manifest["endpoints"]] == [
        {"in": "header", "name": "Idempotency-Key"}, {"in": "body", "name": "idempotency_key"},
    ]


@needs_specs
def test_paypal_and_square_declare_the_keys_their_specs_document():
    paypal = operation(vendor_draft("paypal/catalogs_products_v1.json"), "products_create")
    assert paypal.idempotency == {"in": "header", "name": "PayPal-Request-Id"}
    assert "PayPal-Request-Id" not in [p["name"] for p in paypal.request_parameters]
    square = vendor_draft("square/api.json")
    assert operation(square, "create_customer").idempotency == {"in": "body", "name": "idempotency_key"}
