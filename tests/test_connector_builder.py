import os
import re
from pathlib import Path

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile

from connectors import editing
from connectors import manifest as manifests
from connectors.models import Connector, ConnectorChange
from flows.models import ProcessFlow, Shape
from instances.models import Instance
from patchworks_site.models import Role
from tests.wizard_helpers import run_wizard

SPECS = Path(os.environ.get("VENDOR_SPECS_DIR", Path(__file__).resolve().parents[2] / "shared" / "vendor-specs"))


def png(width: int, height: int) -> bytes:
    header = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR"
    return header + width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x06\x00\x00\x00" + b"\x00" * 20


DETAILS = {
    "name": "Warehouse API", "version": "0.1", "description": "Our own WMS.", "system_type": "WMS", "protocol": "HTTP",
    "base_url": "", "date_format": "%Y-%m-%d", "rate_limit_amount": "5", "rate_limit_unit": "second",
    "time_zone": "Europe/London", "concurrency_limit": "3", "colour": "orange",
}


def test_building_a_custom_connector_end_to_end_and_adding_an_instance(admin_client, company, httpserver):
    response = admin_client.post("/connectors/new/", {**DETAILS, "base_url": httpserver.url_for("/v1"),
                                                      "icon": SimpleUploadedFile("icon.png", png(64, 64), "image/png")})
    connector = Connector.objects.get(company=company)
    assert response["Location"] == f"/connectors/{connector.pk}/build/variables/"
    assert connector.icon_content_type == "image/png" and not hasattr(connector, "installation")
    assert "draft: needs an authentication method and an endpoint" in admin_client.get("/connectors/").content.decode()
    assert admin_client.get(f"/instances/new/{connector.pk}/").status_code == 302  # not ready yet

    admin_client.post(f"/connectors/{connector.pk}/build/variables/", {"action": "save", "label": "Warehouse code", "configurable": "on"})
    admin_client.post(f"/connectors/{connector.pk}/build/auth/", {"action": "add", "name": "API key", "type": "token"})
    response = admin_client.post(f"/connectors/{connector.pk}/build/auth/", {
        "action": "update", "method_key": "api_key", "name": "API key",
        "headers": "X-Api-Key: {{api_key}}\nX-Warehouse: {{warehouse_code}}", "query_params": "", "body": "",
        "test_method": "GET", "test_path": "/ping", "test_expected_status": "200, 204",
    })
    assert response.status_code == 302, response.content.decode()[:3000]
    admin_client.post(f"/connectors/{connector.pk}/build/endpoints/", {
        "action": "save", "key": "", "name": "List stock", "entity": "Stock", "direction": "receive",
        "method": "GET", "path": "/stock", "parameters": "limit: 50",
    })
    admin_client.post(f"/connectors/{connector.pk}/build/endpoints/", {"action": "clone", "key": "list_stock"})

    manifest = manifests.export(editing.fresh(connector))
    assert manifest["variables"][0]["key"] == "warehouse_code"
    assert manifest["auth_methods"][0]["headers"] == {"X-Api-Key": "{{api_key}}", "X-Warehouse": "{{warehouse_code}}"}
    assert manifest["auth_methods"][0]["test_request"] == {"method": "GET", "path": "/ping", "expected_status": [200, 204]}
    assert [e["name"] for e in manifest["endpoints"]] == ["List stock", "List stock (copy)"]
    assert manifest["endpoints"][0]["parameters"] == {"limit": "50"}
    assert "add new instance" in admin_client.get("/connectors/").content.decode()

    httpserver.expect_request("/v1/ping", headers={"X-Api-Key": "k-123", "X-Warehouse": "LON1"}).respond_with_data("", status=204)
    response = run_wizard(admin_client, connector, name="Warehouse - London", credentials={"warehouse_code": "LON1", "api_key": "k-123"})
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Instance.objects.get(connector=connector).last_check_ok is True
    assert connector.changes.count() == 6


def test_builder_errors_name_the_problem_and_save_nothing(admin_client, company, make_connector):
    connector = make_connector(company)
    before = manifests.export(editing.fresh(connector))
    response = admin_client.post(f"/connectors/{connector.pk}/build/auth/", {
        "action": "update", "method_key": "token", "name": "API token", "headers": "Authorization: Bearer {{nope}}",
        "query_params": "", "body": "", "test_method": "GET", "test_path": "/me", "test_expected_status": "200",
    }, follow=True)
    assert 'unknown variable &quot;{{nope}}&quot;' in response.content.decode()
    response = admin_client.post(f"/connectors/{connector.pk}/build/auth/", {
        "action": "update", "method_key": "token", "name": "API token", "headers": "no colon here",
        "query_params": "", "body": "", "test_method": "GET", "test_path": "/me", "test_expected_status": "abc",
    })
    assert response.status_code == 422
    body = response.content.decode()
    assert "line 1: write &quot;Name: value&quot;" in body and "Write status codes as numbers" in body
    assert manifests.export(editing.fresh(connector)) == before


SVG_WITH_SCRIPT = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><script>alert(1)</script></svg>'
SVG_WITH_ONLOAD = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10" onload="alert(1)"/>'


@pytest.mark.parametrize(
    "upload, message",
    [
        (SimpleUploadedFile("wide.png", png(64, 32), "image/png"), "must be square"),
        (SimpleUploadedFile("x.svg", SVG_WITH_SCRIPT, "image/svg+xml"), "contains scripts"),
        (SimpleUploadedFile("x.svg", SVG_WITH_ONLOAD, "image/svg+xml"), "contains scripts"),
        (SimpleUploadedFile("big.png", png(10, 10) + b"\x00" * 300_000, "image/png"), "at most 256 KB"),
        (SimpleUploadedFile("x.bmp", b"BM" + b"\x00" * 100, "image/bmp"), "Upload a JPG, GIF, PNG or SVG image."),
    ],
)
def test_bad_icons_are_refused(admin_client, company, upload, message):
    response = admin_client.post("/connectors/new/", {**DETAILS, "base_url": "https://api.example.com", "icon": upload})
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Connector.objects.exists()


def test_a_plain_square_svg_icon_is_served_with_a_restrictive_policy(admin_client, company):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><circle cx="12" cy="12" r="10" fill="teal"/></svg>'
    admin_client.post(
        "/connectors/new/", {**DETAILS, "base_url": "https://api.example.com", "icon": SimpleUploadedFile("i.svg", svg, "image/svg+xml")}
    )
    connector = Connector.objects.get()
    response = admin_client.get(f"/connectors/{connector.pk}/icon/")
    assert response.content == svg and response["Content-Type"] == "image/svg+xml"
    assert "sandbox" in response["Content-Security-Policy"]


def test_modifying_a_prebuilt_connector_shows_version_info_and_a_readable_history(
    admin_client, admin_user, company, sandbox_listing, install
):
    connector = install(sandbox_listing, company)
    admin_client.post(f"/connectors/{connector.pk}/build/endpoints/", {
        "action": "save", "key": "", "name": "List refunds", "entity": "Refund", "direction": "receive",
        "method": "GET", "path": "/refunds", "parameters": "",
    })
    manage = admin_client.get("/connectors/").content.decode()
    assert "modified from version 1.5.0" in manage and "last changed by ada" in manage
    history = admin_client.get(f"/connectors/{connector.pk}/history/").content.decode()
    assert "installed version 1.5.0 from the marketplace" in history
    assert "endpoint added: List refunds" in history
    assert '<span class="add">+  name: List refunds</span>' in history
    assert "ada" in history
    from patchworks_site.models import AuditEntry

    entry = AuditEntry.objects.filter(object_type="connector", object_id=str(connector.pk), action="updated").latest("created_at")
    assert entry.user == admin_user and entry.changes == {"definition": "endpoint added: List refunds"}


def test_an_endpoint_used_by_a_flow_cannot_be_removed_in_the_builder(admin_client, company, make_connector, make_instance):
    connector = make_connector(company)
    instance = make_instance(connector)
    flow = ProcessFlow.objects.create(company=company, name="Orders")
    Shape.objects.create(flow=flow, instance=instance, endpoint=connector.endpoints.get())
    response = admin_client.post(f"/connectors/{connector.pk}/build/endpoints/", {"action": "delete", "key": "list_orders"}, follow=True)
    assert "Nothing was saved: it is still in use by" in response.content.decode()
    assert connector.endpoints.filter(key="list_orders").exists()


def test_export_then_import_a_manifest_creates_an_identical_custom_connector(admin_client, company, sandbox_listing, install):
    connector = install(sandbox_listing, company)
    response = admin_client.get(f"/connectors/{connector.pk}/manifest.yaml")
    assert response["Content-Disposition"] == 'attachment; filename="sandbox-150.yaml"'
    exported = yaml.safe_load(response.content)
    response = admin_client.post("/connectors/import/", {"file": SimpleUploadedFile("sandbox.yaml", response.content)})
    imported = Connector.objects.exclude(pk=connector.pk).get()
    assert response["Location"] == f"/connectors/{imported.pk}/"
    assert manifests.export(imported) == exported
    assert not hasattr(imported, "installation")  # custom: never gets platform updates
    assert imported.changes.get().action == ConnectorChange.Action.IMPORTED


def test_an_invalid_manifest_upload_lists_errors_by_path(admin_client, company):
    bad = (
        b"name: X\nsystem_type: CRM\nversion: '1'\nbase_url: https://x.example\n"
        b"rate_limit: {amount: 0, unit: second}\nauth_methods: []\nendpoints: []\n"
    )
    response = admin_client.post("/connectors/import/", {"file": SimpleUploadedFile("bad.yaml", bad)})
    assert response.status_code == 422
    assert "rate_limit.amount: must be at least 1" in response.content.decode()
    assert not Connector.objects.exists()


@pytest.mark.skipif(not SPECS.is_dir(), reason="vendor specs not available")
@pytest.mark.parametrize(
    "spec, operations, auth_header",
    [
        ("sendgrid/tsg_scopes_v3.json", ["GET /v3/scopes"], "Authorization"),
        ("bigcommerce/store_information.v2.yml", ["GET /store", "GET /time"], "X-Auth-Token"),
    ],
)
def test_importing_an_openapi_document_creates_the_picked_endpoints(admin_client, company, spec, operations, auth_header):
    path = SPECS / spec
    page = admin_client.post("/connectors/import/openapi/", {"file": SimpleUploadedFile(path.name, path.read_bytes())})
    assert page.status_code == 200
    draft = page.context["draft"]
    picked = [op.key for op in draft.operations if f"{op.method} {op.path}" in operations]
    assert len(picked) == len(operations)
    response = admin_client.post(
        "/connectors/import/openapi/", {"draft": page.context["state"], "operations": picked, "name": "Imported", "system_type": "Other"}
    )
    connector = Connector.objects.get(company=company)
    assert response["Location"] == f"/connectors/{connector.pk}/build/auth/"
    assert sorted(f"{e.method} {e.path}" for e in connector.endpoints.all()) == sorted(operations)
    assert auth_header in connector.auth_methods.first().headers


def test_a_tampered_or_empty_openapi_pick_is_refused(admin_client, company):
    assert admin_client.post("/connectors/import/openapi/", {"draft": "forged", "operations": ["x"]}).status_code == 400
    response = admin_client.post(
        "/connectors/import/openapi/", {"file": SimpleUploadedFile("swagger.json", b'{"swagger": "2.0", "paths": {}}')}
    )
    assert response.status_code == 422 and "Swagger 2.0" in response.content.decode()
    assert not Connector.objects.exists()


def test_removing_a_connector_is_refused_while_it_has_instances(admin_client, company, make_connector, make_instance):
    connector = make_connector(company)
    instance = make_instance(connector, "Live one")
    page = admin_client.get(f"/connectors/{connector.pk}/").content.decode()
    assert 'data-testid="has-instances"' in page and "Live one" in page
    response = admin_client.post(f"/connectors/{connector.pk}/remove/", {"confirm": "confirm"}, follow=True)
    assert "still has instances (Live one)" in response.content.decode()
    assert Connector.objects.filter(pk=connector.pk).exists()
    instance.delete()
    admin_client.post(f"/connectors/{connector.pk}/remove/", {"confirm": "nope"})
    assert Connector.objects.filter(pk=connector.pk).exists()
    admin_client.post(f"/connectors/{connector.pk}/remove/", {"confirm": "confirm"})
    assert not Connector.objects.filter(pk=connector.pk).exists()


def test_only_administrators_and_managers_build_or_remove(make_user, company, client_for, make_connector):
    connector = make_connector(company)
    client = client_for(make_user(company, Role.USER))
    assert client.get("/connectors/new/").status_code == 403
    assert client.get(f"/connectors/{connector.pk}/build/details/").status_code == 403
    assert client.post(f"/connectors/{connector.pk}/remove/", {"confirm": "confirm"}).status_code == 403
    assert client.get(f"/connectors/{connector.pk}/manifest.yaml").status_code == 200  # anyone may export
    page = client.get(f"/connectors/{connector.pk}/").content.decode()
    assert "connector builder" not in page and 'data-testid="trash"' not in page


def test_another_companys_connector_cannot_be_built_exported_or_removed(admin_client, other_company, make_connector):
    connector = make_connector(other_company)
    for url in (f"/connectors/{connector.pk}/build/details/", f"/connectors/{connector.pk}/manifest.yaml",
                f"/connectors/{connector.pk}/history/", f"/connectors/{connector.pk}/icon/"):
        assert admin_client.get(url).status_code == 404
    assert admin_client.post(f"/connectors/{connector.pk}/remove/", {"confirm": "confirm"}).status_code == 404


def test_editing_as_a_manifest_validates_and_records_the_change(admin_client, company, make_connector):
    connector = make_connector(company)
    text = admin_client.get(f"/connectors/{connector.pk}/manifest/").context["form"]["manifest"].value()
    response = admin_client.post(f"/connectors/{connector.pk}/manifest/", {"manifest": text.replace("List orders", "All orders")})
    assert response["Location"] == f"/connectors/{connector.pk}/"
    assert connector.endpoints.get().name == "All orders"
    assert connector.changes.get().summary == "endpoint changed: All orders"
    response = admin_client.post(
        f"/connectors/{connector.pk}/manifest/", {"manifest": text.replace("unit: second", "unit: fortnight")}, follow=True
    )
    assert "rate_limit.unit: must be one of second, minute, hour, day" in response.content.decode()
    response = admin_client.post(f"/connectors/{connector.pk}/manifest/", {"manifest": "name: [oops"})
    assert response.status_code == 422 and "not valid YAML at line" in response.content.decode()
    assert connector.endpoints.get().name == "All orders"


ENDPOINT_POST = {
    "action": "save", "key": "", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET",
    "path": "/orders", "parameters": "",
    "request_parameters": 'query updated_since optional "Updated since" = {{since}}\nheader X-Shop required = {{api_token}}',
    "body_encoding": "json", "records_path": "data.orders", "pagination_style": "page_number",
    "next_url_path": "links.next",  # belongs to another style: dropped
    "page_parameter": "page", "first_page": "0", "limit_parameter": "per_page", "limit": "50",
    "offset_parameter": "", "cursor_path": "", "cursor_parameter": "", "max_pages": "",
}


def test_an_endpoint_gets_request_parameters_records_path_and_pagination_in_the_builder(admin_client, company, make_connector):
    connector = make_connector(company)  # has list_orders: the new endpoint becomes list_orders_2
    url = f"/connectors/{connector.pk}/build/endpoints/"
    page = admin_client.get(url).content.decode()
    for label in ("Request parameters", "Body encoding", "Records path", "Pagination", "Page parameter", "Next page URL path",
                  "Offset parameter", "Next token path", "Token parameter", "Page cap"):
        assert re.search(rf">\s*{label}\s*<", page), label
    assert 'data-pagination-styles="page_number"' in page  # all shown; app.js hides the other styles' fields

    response = admin_client.post(url, ENDPOINT_POST)
    assert response.status_code == 302, response.content.decode()[:2000]
    endpoint = manifests.export(editing.fresh(connector))["endpoints"][1]
    assert endpoint["request_parameters"] == [
        {"name": "updated_since", "location": "query", "required": False, "default": "{{since}}", "label": "Updated since"},
        {"name": "X-Shop", "location": "header", "required": True, "default": "{{api_token}}", "label": "X-Shop"},
    ]
    assert endpoint["records_path"] == "data.orders"
    assert endpoint["pagination"] == {**manifests.PAGINATION_DEFAULT, "style": "page_number", "page_parameter": "page",
                                      "first_page": 0, "limit_parameter": "per_page", "limit": 50}

    page = admin_client.get(url + "?edit=list_orders_2").content.decode()
    assert 'query updated_since optional &quot;Updated since&quot; = {{since}}' in page
    assert 'value="data.orders"' in page and '<option value="page_number" selected>' in page

    response = admin_client.post(url, {**ENDPOINT_POST, "key": "list_orders_2", "pagination_style": "cursor",
                                       "cursor_path": "meta.next", "cursor_parameter": "cursor", "body_encoding": "form"})
    assert response.status_code == 302
    endpoint = manifests.export(editing.fresh(connector))["endpoints"][1]
    assert endpoint["pagination"] == {**manifests.PAGINATION_DEFAULT, "style": "cursor", "cursor_path": "meta.next",
                                      "cursor_parameter": "cursor"}
    assert endpoint["body_encoding"] == "form"


@pytest.mark.parametrize(("changes", "field_error"), [
    ({"pagination_style": "cursor", "cursor_path": ""}, "required for cursor pagination"),
    ({"page_parameter": ""}, "required for page_number pagination"),
    ({"records_path": "data orders"}, "must be a dotted path of names"),
    ({"request_parameters": "query page maybe"}, "line 1: say required or optional, not maybe"),
    ({"request_parameters": "cookie page optional"}, "line 1: where is query, header or body, not cookie"),
    ({"request_parameters": "page"}, "line 1: write where, name, required or optional"),
    ({"request_parameters": "query a optional = {{unknown}}"}, "unknown variable &quot;{{unknown}}&quot;"),
    ({"request_parameters": "header Bad:Name optional"}, "is not a valid header name"),
    ({"limit": "-1"}, "Ensure this value is greater than or equal to 0."),
])
def test_bad_endpoint_settings_show_next_to_their_fields_and_nothing_is_saved(admin_client, company, make_connector, changes, field_error):
    connector = make_connector(company)
    before = manifests.export(editing.fresh(connector))
    response = admin_client.post(f"/connectors/{connector.pk}/build/endpoints/", {**ENDPOINT_POST, **changes})
    assert response.status_code == 422
    page = response.content.decode()
    assert field_error in page
    assert "invalid-feedback" in page.split(field_error)[0][-600:]  # shown at the field
    assert manifests.export(editing.fresh(connector)) == before
