"""Endpoints declare how their API takes an idempotency key: manifest, model, builder, import, catalog.

`endpoints[].idempotency` is `{in: header | body | none, name}`; it is stored as
Endpoint.idempotency_key_in / idempotency_key_name, which the flow runtime reads
to send the same key again when a run resumes a batch after a lost worker.
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from connectors import editing
from connectors import manifest as manifests
from connectors.models import Connector, ConnectorChange, Endpoint
from marketplace import catalog
from marketplace.models import Listing

AUTH = {
    "key": "token", "name": "API token", "type": "token",
    "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
    "headers": {"Authorization": "Bearer {{api_token}}", "X-Shop": "acme"},
    "test_request": {"path": "/me"},
}
MANIFEST = {
    "name": "Orders API", "system_type": "Other", "version": "1", "base_url": "https://api.example.com",
    "rate_limit": {"amount": 5, "unit": "second"}, "auth_methods": [AUTH],
    "endpoints": [
        {"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET",
         "path": "/orders"},
        {"key": "create_order", "name": "Create order", "entity": "Order", "direction": "send", "method": "POST",
         "path": "/orders", "idempotency": {"in": "header", "name": "Idempotency-Key"}},
        {"key": "create_payment", "name": "Create payment", "entity": "Payment", "direction": "send", "method": "POST",
         "path": "/payments", "idempotency": {"in": "body", "name": "idempotency_key"}},
    ],
}


def manifest_with(declaration, index: int = 2, **endpoint) -> dict:
    data = copy.deepcopy(MANIFEST)
    data["endpoints"][index].update(endpoint)
    if declaration is None:
        data["endpoints"][index].pop("idempotency", None)
    else:
        data["endpoints"][index]["idempotency"] = declaration
    return data


def errors_of(data) -> list[str]:
    with pytest.raises(manifests.ManifestError) as exc:
        manifests.validate(data)
    return exc.value.errors


# --- the manifest ------------------------------------------------------------------


def test_a_declaration_is_normalised_and_an_endpoint_without_one_sends_no_key():
    endpoints = manifests.validate(copy.deepcopy(MANIFEST))["endpoints"]
    assert [e["idempotency"] for e in endpoints] == [
        {"in": "none", "name": ""},
        {"in": "header", "name": "Idempotency-Key"},
        {"in": "body", "name": "idempotency_key"},
    ]
    assert manifests.validate(manifest_with({"in": " header ", "name": " PayPal-Request-Id "}))["endpoints"][2][
        "idempotency"] == {"in": "header", "name": "PayPal-Request-Id"}
    assert manifests.validate(manifest_with({"in": "none"}))["endpoints"][2]["idempotency"] == {"in": "none", "name": ""}
    assert manifests.validate(manifest_with(None))["endpoints"][2]["idempotency"] == {"in": "none", "name": ""}


@pytest.mark.parametrize(("declaration", "endpoint", "error"), [
    ({"in": "query", "name": "key"}, {}, "endpoints[2].idempotency.in: must be one of none, header, body"),
    ({"in": "header"}, {}, "endpoints[2].idempotency.name: required when the key is sent in a header"),
    ({"in": "body", "name": "  "}, {}, "endpoints[2].idempotency.name: required when the key is sent in a body"),
    ({"in": "header", "name": "Idempotency Key"}, {},
     'endpoints[2].idempotency.name: "Idempotency Key" is not a valid header name'),
    ({"in": "header", "name": "X-Key:1"}, {}, 'endpoints[2].idempotency.name: "X-Key:1" is not a valid header name'),
    ({"in": "header", "name": "{{key_header}}"}, {},
     "endpoints[2].idempotency.name: must be the fixed name the API documents, not a {{placeholder}}"),
    ({"in": "body", "name": "key_{{run_time}}"}, {}, "not a {{placeholder}}"),
    ({"in": "header", "name": "X-" + "k" * 99}, {}, "endpoints[2].idempotency.name: must be at most 100 characters"),
    ({"in": "body", "name": "data.idempotency_key"}, {},
     'endpoints[2].idempotency.name: "data.idempotency_key" is not a body field name'),
    ("Idempotency-Key", {}, "endpoints[2].idempotency: must be a mapping, e.g. {in: header, name: Idempotency-Key}"),
    (["header", "Idempotency-Key"], {}, "endpoints[2].idempotency: must be a mapping"),
    (True, {}, "endpoints[2].idempotency: must be a mapping"),
    ({"in": "header", "name": "Idempotency-Key", "ttl": 24}, {}, "endpoints[2].idempotency.ttl: unknown field"),
    ({"in": "none", "name": "Idempotency-Key"}, {},
     "endpoints[2].idempotency.name: not used when the key is not sent (leave it out)"),
    ({"in": "header", "name": True}, {}, "endpoints[2].idempotency.name: must be a string"),
    ({"in": True}, {}, "endpoints[2].idempotency.in: must be a string"),
    # On a receive endpoint (GET, or POST for a search) only "none".
    ({"in": "header", "name": "Idempotency-Key"}, {"direction": "receive", "method": "GET"},
     "endpoints[2].idempotency.in: only send endpoints take an idempotency key"),
    ({"in": "body", "name": "idempotency_key"}, {"direction": "receive", "method": "POST"},
     "endpoints[2].idempotency.in: only send endpoints take an idempotency key"),
    ({"in": "body", "name": "idempotency_key"}, {"body_encoding": "form"},
     "endpoints[2].idempotency.in: a key in a body field needs a JSON body (body_encoding json)"),
    # Clashes with what the request already carries.
    ({"in": "header", "name": "x-shop"}, {},
     'endpoints[2].idempotency.name: the authentication method "API token" already sends the header "x-shop"'),
    ({"in": "header", "name": "X-Request-Id"}, {"request_parameters": [{"name": "X-Request-Id", "location": "header"}]},
     'endpoints[2].idempotency.name: the endpoint already declares the header parameter "X-Request-Id"'),
    ({"in": "body", "name": "reference"}, {"request_parameters": [{"name": "reference", "location": "body"}]},
     'endpoints[2].idempotency.name: the endpoint already declares the body parameter "reference"'),
])
def test_a_bad_declaration_is_refused_by_path(declaration, endpoint, error):
    errors = errors_of(manifest_with(declaration, **endpoint))
    assert any(e.startswith(error) or error in e for e in errors), errors


@pytest.mark.parametrize("header", [
    "Authorization", "authorization", "Proxy-Authorization", "Content-Length", "Content-Type", "Host", "Cookie",
    "Transfer-Encoding", "Connection", "X-Api-Key",
])
def test_headers_the_client_sets_or_that_carry_credentials_cannot_carry_the_key(header):
    errors = errors_of(manifest_with({"in": "header", "name": header}))
    assert errors == [f'endpoints[2].idempotency.name: "{header}" cannot carry the key: '
                      "the client sets it itself or it carries credentials"]


def test_a_receive_endpoint_may_say_none():
    data = manifest_with({"in": "none"}, index=0)
    assert manifests.validate(data)["endpoints"][0]["idempotency"] == {"in": "none", "name": ""}


# --- model, export, apply ----------------------------------------------------------------


def test_apply_stores_the_declaration_in_the_endpoint_fields_and_export_gives_it_back(company):
    connector = manifests.apply(manifests.validate(copy.deepcopy(MANIFEST)), connector=Connector(company=company))
    stored = {e.key: (e.idempotency_key_in, e.idempotency_key_name) for e in Endpoint.objects.filter(connector=connector)}
    assert stored == {"list_orders": ("none", ""), "create_order": ("header", "Idempotency-Key"),
                      "create_payment": ("body", "idempotency_key")}
    exported = manifests.export(editing.fresh(connector))
    assert [e["idempotency"] for e in exported["endpoints"]] == [
        {"in": "none", "name": ""}, {"in": "header", "name": "Idempotency-Key"}, {"in": "body", "name": "idempotency_key"},
    ]
    assert manifests.loads(manifests.dumps(exported)) == exported

    changed = manifest_with({"in": "none"})
    manifests.apply(manifests.validate(changed), connector=connector)
    payment = Endpoint.objects.get(connector=connector, key="create_payment")
    assert (payment.idempotency_key_in, payment.idempotency_key_name) == ("none", "")


# --- the builder, export and import ------------------------------------------------------

SEND_POST = {
    "action": "save", "key": "", "name": "Create order", "entity": "Order", "direction": "send", "method": "POST",
    "path": "/orders", "parameters": "", "request_parameters": "", "body_encoding": "json", "records_path": "",
    "pagination_style": "none", "idempotency_key_in": "header", "idempotency_key_name": "Idempotency-Key",
}


def test_the_builder_declares_the_key_and_export_then_import_keeps_it(admin_client, company, make_connector):
    connector = make_connector(company)
    url = f"/connectors/{connector.pk}/build/endpoints/"
    page = admin_client.get(url).content.decode()
    assert re.search(r">\s*Idempotency key\s*<", page) and re.search(r">\s*Idempotency key name\s*<", page)
    assert '<option value="none" selected>not sent</option>' in page
    assert '<option value="header">in a header</option>' in page and '<option value="body">in a body field</option>' in page
    assert "a run that resumes after a lost worker sends the same key again for the same batch" in page.lower()

    response = admin_client.post(url, SEND_POST)
    assert response.status_code == 302, response.content.decode()[:2000]
    endpoint = connector.endpoints.get(key="create_order")
    assert (endpoint.idempotency_key_in, endpoint.idempotency_key_name) == ("header", "Idempotency-Key")
    page = admin_client.get(url + "?edit=create_order").content.decode()
    assert '<option value="header" selected>in a header</option>' in page and 'value="Idempotency-Key"' in page

    # Changed to a body field, then to "not sent" with the old name still typed in: the name goes with it.
    admin_client.post(url, {**SEND_POST, "key": "create_order", "idempotency_key_in": "body",
                            "idempotency_key_name": "idempotency_key"})
    endpoint.refresh_from_db()
    assert (endpoint.idempotency_key_in, endpoint.idempotency_key_name) == ("body", "idempotency_key")

    download = admin_client.get(f"/connectors/{connector.pk}/manifest.yaml")
    exported = yaml.safe_load(download.content)
    assert exported["endpoints"][1]["idempotency"] == {"in": "body", "name": "idempotency_key"}
    assert exported["endpoints"][0]["idempotency"] == {"in": "none", "name": ""}
    response = admin_client.post("/connectors/import/", {"file": SimpleUploadedFile("orders.yaml", download.content)})
    imported = Connector.objects.exclude(pk=connector.pk).get()
    assert response["Location"] == f"/connectors/{imported.pk}/"
    assert manifests.export(imported) == exported
    copied = imported.endpoints.get(key="create_order")
    assert (copied.idempotency_key_in, copied.idempotency_key_name) == ("body", "idempotency_key")

    admin_client.post(url, {**SEND_POST, "key": "create_order", "idempotency_key_in": "none"})
    endpoint.refresh_from_db()
    assert (endpoint.idempotency_key_in, endpoint.idempotency_key_name) == ("none", "")


@pytest.mark.parametrize(("changes", "field", "error"), [
    ({"idempotency_key_name": ""}, "idempotency_key_name", "required when the key is sent in a header"),
    ({"idempotency_key_name": "Authorization"}, "idempotency_key_name", "cannot carry the key"),
    ({"idempotency_key_name": "Idempotency Key"}, "idempotency_key_name", "is not a valid header name"),
    ({"idempotency_key_name": "{{api_token}}"}, "idempotency_key_name", "not a {{placeholder}}"),
    ({"idempotency_key_name": "x" * 101}, "idempotency_key_name", "at most 100 characters"),
    ({"idempotency_key_in": "query"}, "idempotency_key_in", "Select a valid choice."),
    ({"direction": "receive", "method": "GET"}, "idempotency_key_in", "only send endpoints take an idempotency key"),
])
def test_a_bad_declaration_in_the_builder_shows_at_its_field_and_nothing_is_saved(
        admin_client, company, make_connector, changes, field, error):
    connector = make_connector(company)
    before = manifests.export(editing.fresh(connector))
    response = admin_client.post(f"/connectors/{connector.pk}/build/endpoints/", {**SEND_POST, **changes})
    assert response.status_code == 422
    assert any(error in message for message in response.context["form"].errors.get(field, [])), \
        response.context["form"].errors
    assert "name" not in response.context["form"].errors  # idempotency.name is not the endpoint's name
    assert manifests.export(editing.fresh(connector)) == before


@pytest.mark.parametrize(("declaration", "error"), [
    ("{in: header, name: Authorization}", "endpoints[1].idempotency.name: &quot;Authorization&quot; cannot carry the key"),
    ("{in: header}", "endpoints[1].idempotency.name: required when the key is sent in a header"),
    ("{in: sideways, name: Idempotency-Key}", "endpoints[1].idempotency.in: must be one of none, header, body"),
    ("Idempotency-Key", "endpoints[1].idempotency: must be a mapping"),
])
def test_an_uploaded_manifest_with_a_malformed_declaration_is_refused_and_nothing_is_saved(
        admin_client, company, declaration, error):
    data = copy.deepcopy(MANIFEST)
    data["endpoints"][1]["idempotency"] = "PLACEHOLDER"
    text = yaml.safe_dump(data, sort_keys=False).replace("PLACEHOLDER", declaration)
    response = admin_client.post("/connectors/import/", {"file": SimpleUploadedFile("bad.yaml", text.encode())})
    assert response.status_code == 422
    assert error in response.content.decode()
    assert not Connector.objects.exists() and not Endpoint.objects.exists() and not ConnectorChange.objects.exists()


# --- the catalog ---------------------------------------------------------------------------

HEADER, BODY = "header", "body"
# What the newest version of each listing declares, as each vendor documents it (see the changelogs).
DECLARED = {
    "stripe": {"create_customer": (HEADER, "Idempotency-Key"), "create_product": (HEADER, "Idempotency-Key")},
    "square": {key: (BODY, "idempotency_key") for key in (
        "upsert_catalog_objects", "create_order", "create_customer", "change_inventory", "refund_payment")},
    "paypal": {"create_order": (HEADER, "PayPal-Request-Id"), "create_product": (HEADER, "PayPal-Request-Id")},
    "xero": {key: (HEADER, "Idempotency-Key") for key in ("upsert_contacts", "upsert_invoices", "create_payments", "upsert_items")},
    "zendesk": {"create_ticket": (HEADER, "Idempotency-Key")},
    "sandbox": {"create_order": (HEADER, "Idempotency-Key")},
}
DECLARED_SINCE = {"stripe": "1.2.0", "square": "1.3.0", "paypal": "1.2.0", "xero": "1.2.0", "zendesk": "1.2.0", "sandbox": "1.5.0"}


def _entries() -> dict[str, list]:
    by_slug: dict[str, list] = {}
    for entry in catalog.iter_catalog():  # oldest first
        by_slug.setdefault(entry.slug, []).append(entry)
    return by_slug


def test_the_newest_listings_declare_the_keys_their_vendors_document_and_older_versions_none():
    for slug, entries in _entries().items():
        newest = entries[-1]
        declared = {e["key"]: (e["idempotency"]["in"], e["idempotency"]["name"])
                    for e in newest.manifest["endpoints"] if e["idempotency"]["in"] != "none"}
        assert declared == DECLARED.get(slug, {}), slug
        if slug in DECLARED:
            assert newest.manifest["version"] == DECLARED_SINCE[slug], slug
            assert "idempotency key" in newest.changelog, slug
            for older in entries[:-1]:
                assert {e["idempotency"]["in"] for e in older.manifest["endpoints"]} == {"none"}, older.path
            # Only the declaration (and the version) changed from the previous version.
            previous = copy.deepcopy(entries[-2].manifest)
            for endpoint in previous["endpoints"]:
                if endpoint["key"] in DECLARED[slug]:
                    endpoint["idempotency"] = dict(zip(("in", "name"), DECLARED[slug][endpoint["key"]], strict=True))
            assert {**previous, "version": newest.manifest["version"]} == newest.manifest, slug


def test_a_sandbox_installed_from_1_4_0_is_offered_1_5_0_and_the_update_declares_the_key(admin_client, company):
    catalog.load_catalog()
    listing = Listing.objects.get(slug="sandbox")
    assert listing.latest_version.version == "1.5.0"
    connector = catalog.install(listing.versions.get(version="1.4.0"), company)
    assert connector.endpoints.get(key="create_order").idempotency_key_in == "none"
    assert connector.installation.update_available and not connector.installation.is_modified
    page = admin_client.get(f"/marketplace/updates/{connector.pk}/").content.decode()
    assert "to 1.5.0" in page and "Create order" in page

    response = admin_client.post(f"/marketplace/updates/{connector.pk}/", {"choice": "update"})
    assert response.status_code == 302
    connector.refresh_from_db()
    assert connector.version == "1.5.0"
    create = connector.endpoints.get(key="create_order")
    assert (create.idempotency_key_in, create.idempotency_key_name) == ("header", "Idempotency-Key")
    assert connector.endpoints.get(key="update_stock").idempotency_key_in == "none"


# --- stored manifests ----------------------------------------------------------------------


def _migrate(targets):
    executor = MigrationExecutor(connection)
    # The tenancy app stays at its newest migration (its state then matches its table).
    targets = targets + [node for node in executor.loader.graph.leaf_nodes() if node[0] == "patchworks_site"]
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


def test_stored_manifests_gain_the_default_so_installed_connectors_stay_unmodified(transactional_db):
    old = _migrate([("marketplace", "0004_normalise_endpoint_redirect_setting"),
                    ("connectors", "0005_endpoint_follow_redirects_to_other_origins")])
    endpoint = {"key": "create_order", "name": "Create order", "follow_redirects_to_other_origins": False}
    listing = old.get_model("marketplace", "Listing").objects.create(slug="sandbox", name="Sandbox", system_type="Other")
    version = old.get_model("marketplace", "ListingVersion").objects.create(
        listing=listing, version="1.4.0", version_name="v1", manifest={"name": "Sandbox", "endpoints": [endpoint]})
    company = old.get_model("patchworks_site", "Company").objects.create(name="Acme Retail")
    connector = old.get_model("connectors", "Connector").objects.create(
        company=company, name="Sandbox", system_type="Other", version="1.4.0", base_url="https://x.example",
        date_format="%Y-%m-%d", rate_limit_amount=120, rate_limit_unit="minute")
    change = old.get_model("connectors", "ConnectorChange").objects.create(
        connector=connector, action="installed", before=None, after={"endpoints": [dict(endpoint)]})

    new = _migrate([("marketplace", "0005_normalise_endpoint_idempotency")])
    stored = new.get_model("marketplace", "ListingVersion").objects.get(pk=version.pk).manifest
    assert stored["endpoints"] == [{**endpoint, "idempotency": {"in": "none", "name": ""}}]
    history = new.get_model("connectors", "ConnectorChange").objects.get(pk=change.pk)
    assert history.after["endpoints"][0]["idempotency"] == {"in": "none", "name": ""} and history.before is None
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # every app at its newest migration again, for the next tests


def test_the_admin_refuses_a_declaration_the_manifest_would_refuse(admin_client, admin_user, company, make_connector):
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    connector = make_connector(company, endpoints=[MANIFEST["endpoints"][1]])
    endpoint = connector.endpoints.get()
    form = {
        "connector": connector.pk, "key": endpoint.key, "name": endpoint.name, "entity": endpoint.entity,
        "direction": endpoint.direction, "method": endpoint.method, "path": endpoint.path, "parameters": "{}",
        "request_parameters": "[]", "body_encoding": "json", "records_path": "", "pagination": "{}", "position": 0,
        "idempotency_key_in": "header",
    }
    url = f"/admin/connectors/endpoint/{endpoint.pk}/change/"
    response = admin_client.post(url, {**form, "idempotency_key_name": "Authorization"})
    assert response.status_code == 200 and "cannot carry the key" in response.content.decode()
    response = admin_client.post(url, {**form, "idempotency_key_name": "Idempotency-Key", "direction": "receive"})
    assert response.status_code == 200 and "Only send endpoints take an idempotency key." in response.content.decode()
    endpoint.refresh_from_db()
    assert (endpoint.idempotency_key_in, endpoint.idempotency_key_name) == ("header", "Idempotency-Key")
    response = admin_client.post(url, {**form, "idempotency_key_in": "body", "idempotency_key_name": "idempotency_key"})
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.idempotency_key_in, endpoint.idempotency_key_name) == ("body", "idempotency_key")
