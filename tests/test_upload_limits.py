"""Uploads and huge definitions: limits checked before parsing, clear errors by path, bounded history pages."""

from __future__ import annotations

import copy
import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from connectors import manifest as manifests
from connectors import openapi, safe_loading
from connectors.models import Connector, ConnectorChange

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
)


def deep_block_yaml(levels: int) -> str:
    """`levels` nested block sequences (about 2 bytes a level after the first few thousand)."""
    return "a:\n" + "".join(" " * min(i, 1) + "- " for i in range(levels)) + "x\n"


def deep_flow_yaml(levels: int) -> str:
    return "name: " + "[" * levels + "]" * levels + "\n"


@pytest.fixture
def connector(company, make_connector):
    return make_connector(company, name="Shop API")


@pytest.fixture
def manifest(connector) -> dict:
    return manifests.export(connector)


def upload(client, url: str, content: str | bytes, name: str = "upload.yaml"):
    data = content.encode() if isinstance(content, str) else content
    return client.post(url, {"file": SimpleUploadedFile(name, data, content_type="application/octet-stream")})


def import_manifest(client, content: str | bytes):
    return upload(client, "/connectors/import/", content)


def import_openapi(client, content: str | bytes, name: str = "api.yaml"):
    return upload(client, "/connectors/import/openapi/", content, name)


def timed(call):
    """(result, seconds) of `call`; the upload pages are opened once first so template loading is not counted."""
    from django.test import Client

    Client().get("/connectors/import/")
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


# --- manifests: refused before the YAML is composed ------------------------------------


@pytest.mark.parametrize("text", [deep_flow_yaml(50_000), deep_block_yaml(50_000), '{"name": ' + "[" * 50_000 + "]" * 50_000 + "}"],
                         ids=["flow", "block", "json"])
def test_a_manifest_nested_50000_deep_is_refused_quickly_and_nothing_is_created(admin_client, connector, text):
    assert len(text) >= 100_000
    before = Connector.objects.count()
    response, seconds = timed(lambda: import_manifest(admin_client, text))
    assert response.status_code == 422
    assert "manifest: nested more than 16 levels deep at line" in response.content.decode()
    assert Connector.objects.count() == before
    assert seconds < 2

    response = admin_client.post(f"/connectors/{connector.pk}/manifest/", {"manifest": text})
    assert response.status_code == 422
    assert "manifest: nested more than 16 levels deep at line" in response.content.decode()
    assert connector.changes.count() == 0


def test_a_billion_laughs_manifest_is_refused_at_its_first_alias(admin_client, connector):
    response, seconds = timed(lambda: import_manifest(admin_client, BILLION_LAUGHS))
    assert response.status_code == 422
    assert "manifest: not valid YAML at line 2, column 8 (aliases are not allowed in a manifest)" in response.content.decode()
    assert seconds < 2
    response = admin_client.post(f"/connectors/{connector.pk}/manifest/", {"manifest": BILLION_LAUGHS})
    assert "aliases are not allowed in a manifest" in response.content.decode()


def test_a_manifest_over_one_megabyte_is_refused_before_it_is_read(admin_client):
    response = import_manifest(admin_client, "description: " + "x" * (1024 * 1024) + "\n")
    assert response.status_code == 422
    assert "The file must be at most 1 MB" in response.content.decode()
    assert Connector.objects.count() == 0


def test_a_manifest_with_more_than_100000_values_is_refused_by_the_scan(manifest):
    text = "variables: [" + ", ".join(["1"] * 100_001) + "]\n"
    with pytest.raises(manifests.ManifestError) as exc:
        manifests.parse(text)
    assert exc.value.errors == ["manifest: it has more than 100,000 values (aliases counted where they are used) at line 1, column 300004"]


@pytest.mark.parametrize("change, error", [
    (lambda m: m.update(endpoints={"a": 1}), "endpoints: must be a list"),
    (lambda m: m.update(rate_limit=[1, 2]), "rate_limit: must be a mapping"),
    (lambda m: m.update(name={"a": "b"}), "name: must be a string"),
    (lambda m: m.update(name=10**400), "name: must be a string"),  # uploaded, it is 401 digits of text
    (lambda m: m["endpoints"][0].update(parameters=["a"]), "endpoints[0].parameters: must be a mapping of names to text"),
    (lambda m: m["endpoints"][0].update(parameters={"page": {"a": 1}}), "endpoints[0].parameters.page: must be text"),
    (lambda m: m["auth_methods"][0]["test_request"].update(expected_status="200"),
     "auth_methods[0].test_request.expected_status: must be a non-empty list of HTTP status codes"),
    (lambda m: m["auth_methods"][0].update(variables=[[1]]), "auth_methods[0].variables[0]: must be a mapping"),
    (lambda m: m.update(concurrency_limit="9" * 5000), "concurrency_limit: must be at most 1000"),
    (lambda m: m["rate_limit"].update(amount="-" + "9" * 5000), "rate_limit.amount: must be at least 1"),
    (lambda m: m.update(description="a\x00b"), "description: must not contain NUL characters"),
], ids=["endpoints-mapping", "rate-limit-list", "name-mapping", "name-huge-int", "parameters-list", "parameter-mapping",
        "status-text", "variable-list", "concurrency-digits", "negative-digits", "nul"])
def test_wrong_shapes_are_errors_naming_the_path(admin_client, manifest, change, error):
    change(manifest)
    text = json.dumps(manifest) if "\x00" not in json.dumps(manifest) and not error.startswith("name: must be a") else None
    with pytest.raises(manifests.ManifestError) as exc:
        manifests.validate(manifest)
    assert error in exc.value.errors
    if text is not None:  # the same through the upload (JSON is YAML)
        response = import_manifest(admin_client, text)
        assert response.status_code == 422 and error in response.content.decode()
        assert Connector.objects.count() == 1


@pytest.mark.parametrize("text, error", [
    ("name: !!int abc\n", "manifest: not valid YAML (a value could not be read: invalid literal for int()"),
    ("name: !!float abc\n", "manifest: not valid YAML (a value could not be read: could not convert string to float"),
    ("name: !!timestamp 2024-13-45\n", "version: required"),  # read as the text 2024-13-45
    ("name: !!binary 'AAAA'\n", "name: must be a string"),
    ("name: !!python/object:os.system {}\n", "manifest: not valid YAML at line 1, column 7 (could not determine a constructor"),
    ("name: !!set {a, b}\n", "name: must be a string"),
])
def test_yaml_values_of_other_types_are_a_clear_error(admin_client, text, error):
    response = import_manifest(admin_client, text)
    assert response.status_code == 422
    assert error in response.content.decode()


def test_dates_in_yaml_stay_text(manifest):
    text = manifests.dumps(manifest).replace("version: '1'", "version: 2024-07-01").replace(
        "name: Shop API", "name: 2024-13-45"
    )
    parsed = manifests.loads(text)
    assert parsed["version"] == "2024-07-01" and parsed["name"] == "2024-13-45"


# --- the schema's size limits ------------------------------------------------------------------


def _endpoint(i: int) -> dict:
    return {"key": f"e{i}", "name": f"Endpoint {i}", "entity": "Order", "direction": "receive", "method": "GET", "path": f"/o/{i}"}


@pytest.mark.parametrize("change, error", [
    (lambda m: m.update(endpoints=[_endpoint(i) for i in range(501)]), "endpoints: at most 500 allowed (found 501)"),
    (lambda m: m.update(variables=[{"key": f"v{i}", "label": "V"} for i in range(101)]), "variables: at most 100 allowed (found 101)"),
    (lambda m: m.update(auth_methods=[copy.deepcopy(m["auth_methods"][0]) | {"key": f"a{i}"} for i in range(21)]),
     "auth_methods: at most 20 allowed (found 21)"),
    (lambda m: m["auth_methods"][0]["headers"].update({f"X-{i}": "v" for i in range(50)}),
     "auth_methods[0].headers: at most 50 entries (found 51)"),
    (lambda m: m["auth_methods"][0]["headers"].update({"X-Long": "v" * 2049}),
     "auth_methods[0].headers.X-Long: must be at most 2048 characters"),
    (lambda m: m["auth_methods"][0]["headers"].update({"X" * 201: "v"}),
     "auth_methods[0].headers: names must be at most 200 characters, without NUL characters"),
    (lambda m: m["auth_methods"][0]["test_request"].update(expected_status=[200] * 21),
     "auth_methods[0].test_request.expected_status: at most 20 status codes (found 21)"),
    (lambda m: m.update(description="d" * 5001), "description: must be at most 5000 characters"),
    (lambda m: m["auth_methods"][0]["headers"].update({"X Bad": "v"}),
     'auth_methods[0].headers: "X Bad" is not a valid header name (letters, digits and -, no spaces)'),
    (lambda m: m["auth_methods"][0]["headers"].update({"X-Name": "Ā"}),
     'auth_methods[0].headers: the value of "X-Name" may only use Latin-1 characters (it is sent in an HTTP header)'),
    (lambda m: m["auth_methods"][0]["headers"].update({"X-Name": "a\r\nX-Injected: 1"}),
     'auth_methods[0].headers: the value of "X-Name" must not contain line breaks'),
], ids=["endpoints", "variables", "auth-methods", "headers", "header-value", "header-name", "status-codes", "description",
        "header-name-space", "header-value-unicode", "header-value-crlf"])
def test_the_schema_limits_name_the_exact_path(manifest, change, error):
    change(manifest)
    with pytest.raises(manifests.ManifestError) as exc:
        manifests.validate(manifest)
    assert error in exc.value.errors


def test_500_endpoints_are_accepted(manifest):
    manifest["endpoints"] = [_endpoint(i) for i in range(500)]
    assert len(manifests.validate(manifest)["endpoints"]) == 500


def test_a_20000_endpoint_manifest_is_refused_in_well_under_a_second(admin_client, manifest):
    manifest["endpoints"] = [_endpoint(i) for i in range(20_000)]
    text = manifests.dumps(manifest)
    response, seconds = timed(lambda: import_manifest(admin_client, text))
    assert response.status_code == 422
    assert "The file must be at most 1 MB" in response.content.decode()
    assert seconds < 1
    # Smaller but still over the limit: the schema names it.
    manifest["endpoints"] = manifest["endpoints"][:2000]
    response = import_manifest(admin_client, manifests.dumps(manifest))
    assert "endpoints: at most 500 allowed (found 2000)" in response.content.decode()
    assert Connector.objects.count() == 1


def test_too_many_problems_are_summarised(manifest):
    manifest.update({f"unknown_{i}": 1 for i in range(80)})
    with pytest.raises(manifests.ManifestError) as exc:
        manifests.validate(manifest)
    assert len(exc.value.errors) == 51 and exc.value.errors[-1] == "… and 30 more problems"


# --- OpenAPI documents --------------------------------------------------------------------------


def openapi_document(**extra) -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Example API", "version": "1"},
        "servers": [{"url": "https://api.example.com"}],
        "paths": {"/orders": {"get": {"operationId": "listOrders", "summary": "List orders"}}},
        **extra,
    }


@pytest.mark.parametrize("text, name", [
    ("openapi: 3.0.0\nx: " + "[" * 50_000 + "]" * 50_000, "deep.yaml"),
    ("openapi: 3.0.0\nx:\n" + deep_block_yaml(50_000)[3:], "deep.yaml"),
    ('{"openapi": "3.0.0", "x": ' + "[" * 50_000 + "]" * 50_000 + "}", "deep.json"),
    ('{"openapi": "3.0.0", "x": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "}", "deep.json"),
], ids=["yaml-flow", "yaml-block", "json-lists", "json-objects"])
def test_an_openapi_document_nested_50000_deep_is_refused_quickly(admin_client, text, name):
    response, seconds = timed(lambda: import_openapi(admin_client, text, name))
    assert response.status_code == 422
    assert "The file cannot be imported: nested more than 100 levels deep at line" in response.content.decode()
    assert seconds < 2


def test_a_billion_laughs_openapi_document_is_refused_quickly(admin_client):
    response, seconds = timed(lambda: import_openapi(admin_client, "openapi: 3.0.0\n" + BILLION_LAUGHS))
    assert response.status_code == 422
    assert "it has more than 500,000 values (aliases counted where they are used)" in response.content.decode()
    assert seconds < 2


def test_a_recursive_alias_is_refused():
    with pytest.raises(openapi.OpenAPIError, match="an alias refers to the collection it is in at line 2"):
        openapi.parse(b"openapi: 3.0.0\npaths: &p {a: *p}\n")


def test_a_few_aliases_in_an_openapi_document_are_fine():
    text = (
        "openapi: 3.0.0\ninfo: {title: T, version: '1'}\nservers: [{url: 'https://api.example.com'}]\n"
        "paths:\n  /a: &item {get: {operationId: getA}}\n  /b: *item\n"
    )
    draft = openapi.draft_from_openapi(openapi.parse(text.encode()))
    assert [op.path for op in draft.operations] == ["/a", "/b"]


def test_huge_integers_in_an_openapi_document_do_not_break_the_import():
    for data in (json.dumps(openapi_document(x={"maximum": 1})).replace("1}", "9" * 5000 + "}").encode(),
                 ("openapi: 3.0.0\ninfo: {title: T, version: '1'}\nx: " + "9" * 5000 + "\npaths: {/a: {get: {}}}\n").encode()):
        document = openapi.parse(data)
        assert openapi.draft_from_openapi(document).operations


@pytest.mark.parametrize("change, error", [
    (lambda d: d["paths"]["/orders"]["get"].update(parameters={"a": 1}), "paths./orders.get.parameters: must be a list"),
    (lambda d: d["paths"]["/orders"]["get"].update(parameters=[{"name": ["a"], "in": "query"}]),
     "paths./orders.get.parameters[0].name: must be a single value, not a list"),
    (lambda d: d.update(servers={"url": "x"}), "servers: must be a list"),
    (lambda d: d.update(servers=[{"url": "https://x", "variables": True}]), "servers[0].variables: must be a mapping"),
    (lambda d: d.update(components=[1]), "components: must be a mapping"),
    (lambda d: d.update(components={"securitySchemes": {"o": {"type": "oauth2", "flows": "x"}}}),
     "components.securitySchemes.o.flows: must be a mapping"),
    (lambda d: d.update(components={"securitySchemes": {"o": {"type": "oauth2", "flows": {"clientCredentials": {"scopes": [1]}}}}}),
     "components.securitySchemes.o.flows.clientCredentials.scopes: must be a mapping"),
    (lambda d: d.update(security=[{"a": []}, "b"]), "security[1]: must be a mapping"),
    (lambda d: d["paths"]["/orders"]["get"].update(servers=5), "paths./orders.get.servers: must be a list"),
    (lambda d: d["paths"]["/orders"].update(parameters=[{"$ref": "#/components/parameters/p"}]) or d.update(
        components={"parameters": {"p": {"name": "id", "in": {"a": 1}}}}), "paths./orders.parameters[0].in: must be a single value"),
], ids=["parameters", "parameter-name", "servers", "server-variables", "components", "flows", "scopes", "security",
        "operation-servers", "resolved-ref"])
def test_openapi_documents_of_the_wrong_shape_name_the_path(admin_client, change, error):
    document = openapi_document()
    change(document)
    response = import_openapi(admin_client, json.dumps(document), "api.json")
    assert response.status_code == 422
    assert error in response.content.decode()


def test_an_openapi_document_with_too_many_operations_is_refused(admin_client):
    document = openapi_document(paths={f"/r{i}": {"get": {}} for i in range(openapi.MAX_OPERATIONS + 1)})
    response = import_openapi(admin_client, json.dumps(document), "api.json")
    assert response.status_code == 422
    assert "The document has more than 2000 operations" in response.content.decode()


def test_an_openapi_document_over_8_mb_is_refused(admin_client):
    response = import_openapi(admin_client, b"openapi: 3.0.0\n#" + b"x" * (8 * 1024 * 1024))
    assert response.status_code == 422
    assert "The file must be at most 8 MB" in response.content.decode()


def test_imports_stop_when_their_time_budget_is_spent(admin_client, settings):
    settings.UPLOAD_TIME_BUDGET = 0
    response = import_openapi(admin_client, json.dumps(openapi_document()), "api.json")
    assert response.status_code == 422
    assert "reading it took longer than the 0 s allowed; upload a smaller document" in response.content.decode()
    response = import_manifest(admin_client, "name: x\n")
    assert "reading it took longer than the 0 s allowed" in response.content.decode()
    assert Connector.objects.count() == 0


def test_the_deadline_allows_work_within_its_budget():
    deadline = safe_loading.Deadline(5)
    deadline.check()
    assert deadline.seconds == 5


# --- history: paginated, diffs computed when opened and capped ------------------------------


def _record_changes(connector, count: int, endpoints: int) -> None:
    """`count` recorded changes, each adding one endpoint to a definition of `endpoints` endpoints."""
    base = manifests.export(connector)
    base["endpoints"] = [_endpoint(i) for i in range(endpoints)]
    for n in range(count):
        after = {**base, "endpoints": base["endpoints"] + [_endpoint(endpoints + n)]}
        ConnectorChange.objects.create(connector=connector, action="edited", summary=f"change {n}", before=base, after=after)


def test_the_history_is_paginated_and_only_the_newest_diff_is_shown_with_the_page(admin_client, connector):
    _record_changes(connector, 25, 3)
    page = admin_client.get(f"/connectors/{connector.pk}/history/").content.decode()
    assert page.count('data-testid="change"') == 10
    assert page.count('data-testid="diff"') == 1
    assert "change 24" in page and "+- key: e27" in page
    assert "Page 1 of 3" in page
    older = connector.changes.get(summary="change 20")
    assert f'hx-get="/connectors/{connector.pk}/history/{older.pk}/"' in page
    assert "e23" not in page  # change 20's diff is not computed until it is opened

    opened = admin_client.get(f"/connectors/{connector.pk}/history/{older.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert "+- key: e23" in opened and "<html" not in opened
    full = admin_client.get(f"/connectors/{connector.pk}/history/{older.pk}/").content.decode()
    assert "+- key: e23" in full and "change 20" in full
    assert admin_client.get(f"/connectors/{connector.pk}/history/", {"page": "3"}).content.decode().count('data-testid="change"') == 5


def test_a_change_of_another_connector_or_company_is_a_404(admin_client, connector, make_connector, other_company):
    other = make_connector(other_company, name="Theirs")
    _record_changes(other, 1, 1)
    change = other.changes.get()
    assert admin_client.get(f"/connectors/{connector.pk}/history/{change.pk}/").status_code == 404
    assert admin_client.get(f"/connectors/{other.pk}/history/{change.pk}/").status_code == 404


def test_a_diff_too_large_says_how_many_lines_are_not_shown(admin_client, connector):
    before = manifests.export(connector)
    after = {**before, "endpoints": before["endpoints"] + [_endpoint(i) for i in range(200)]}
    change = ConnectorChange.objects.create(connector=connector, action="edited", summary="many", before=before, after=after)
    total = len(manifests.diff_lines(before, after))
    assert total > manifests.DIFF_MAX_LINES
    page = admin_client.get(f"/connectors/{connector.pk}/history/{change.pk}/").content.decode()
    hidden = total - manifests.DIFF_MAX_LINES
    assert f"Diff too large: {hidden} more lines not shown." in page
    shown = manifests.diff_lines(before, after)[: manifests.DIFF_MAX_LINES]
    assert page.count('<span class="add">') == sum(kind == "+" for kind, _ in shown)


def test_the_history_of_huge_definitions_stays_fast(admin_client, connector):
    # Recorded before the limits existed: ten changes of a 5,000-endpoint definition.
    _record_changes(connector, 10, 5000)
    response, seconds = timed(lambda: admin_client.get(f"/connectors/{connector.pk}/history/"))
    assert response.status_code == 200 and response.content.decode().count('data-testid="change"') == 10
    assert seconds < 3
    change = connector.changes.first()
    response, seconds = timed(lambda: admin_client.get(f"/connectors/{connector.pk}/history/{change.pk}/"))
    assert "+- key: e5009" in response.content.decode()
    assert seconds < 3


def test_the_item_diff_shows_what_changed_in_an_item(manifest):
    after = copy.deepcopy(manifest)
    after["endpoints"][0]["path"] = "/orders/open"
    after["base_url"] = "https://api.example.org"
    lines = manifests.diff_lines(manifest, after)
    assert ("@", "endpoints: list_orders changed") in lines
    assert ("-", "  path: /orders") in lines and ("+", "  path: /orders/open") in lines
    assert ("+", "base_url: https://api.example.org") in lines


def test_catalog_files_are_read_with_the_same_limits(tmp_path):
    from marketplace.catalog import read_entry

    path = tmp_path / "1.0.0.yaml"
    path.write_text(BILLION_LAUGHS, encoding="utf-8")
    with pytest.raises(manifests.ManifestError) as exc:
        read_entry(path, "bomb")
    assert exc.value.errors == ["1.0.0.yaml: not valid YAML at line 2, column 8 (aliases are not allowed in a manifest)"]
