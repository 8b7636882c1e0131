"""Fuzzing with Hypothesis: every form, upload and page parameter gets hostile input.

The property is the same everywhere: never a 500; either success (a redirect)
or an error the user can see (a field error or an error message, with a 4xx
status), and on error no row was added, changed or removed. Text strategies
include NUL characters (PostgreSQL refuses them), digits from other scripts,
numbers too long to store and very long strings.

`pytest tests/test_fuzz_forms.py` prints how many examples ran in all.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from django.db import connection
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import manifest as manifests
from connectors.models import AuthMethod, Connector, ConnectorChange, Endpoint, Variable
from flows.models import ProcessFlow, Shape
from instances.models import ConnectionPool, Instance
from patchworks_site.models import AuditEntry
from tests.manifest_parts import basic_method

# Examples per test: the whole suite stays around a minute on SQLite. FUZZ_EXAMPLES=500 fuzzes longer.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
RUN = Counter()  # examples run per test, reported at the end of the module
MODELS = (Connector, Variable, AuthMethod, Endpoint, ConnectorChange, Instance, ConnectionPool, ProcessFlow,
          Shape, AuditEntry)
ERROR_MARKERS = ("is-invalid", "invalid-feedback", "alert-danger", "errorlist", 'data-testid="import-errors"')

# --- strategies -----------------------------------------------------------------------------

SPECIAL_TEXT = ["", " ", "\x00", "a\x00b", "²", "٣", "1" * 30, "9" * 5000, "x" * 2000, "{{", "{{nope}}", "%", "%Q",
                "<script>alert(1)</script>", "../../etc/passwd", "'; drop table x; --", "\u202e", "\ufeff", "NaN", "-0"]
junk = st.one_of(st.text(max_size=40), st.sampled_from(SPECIAL_TEXT))
numbers = st.one_of(st.integers(-10**40, 10**40).map(str), st.sampled_from(["1", "60", "1000", "1000001", "0", "-1", "1e3",
                                                                             "1.5", "0x10", " 7 ", "²", "1" * 5000]), junk)
time_zones = st.one_of(st.sampled_from(["UTC", "Europe/London", "America/New_York", "utc", "Mars/Olympus", "UTC\x00",
                                        "Europe/" + "x" * 100]), junk)
date_formats = st.one_of(st.sampled_from(["%Y-%m-%d", "%d/%m/%Y %H:%M", "%Y%z", "%Q", "%", "%%", "%Y" * 40, "%Y\x00"]),
                         st.text(alphabet="%YmdHMSzaAbBQf-/: \x00", max_size=70), junk)
units = st.one_of(st.sampled_from(["second", "minute", "hour", "day", "week", ""]), junk)


def ids(*valid: int):
    return st.one_of(st.sampled_from([str(v) for v in valid] or ["1"]), st.integers(-5, 10**30).map(str), junk)


def counts() -> dict[str, int]:
    """Rows per model, in one query."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {quote(m._meta.db_table)})" for m in MODELS))
        return dict(zip((m.__name__ for m in MODELS), cursor.fetchone()))


def expect_success_or_error(response, before: dict[str, int], *, changed=None) -> None:
    """Never a 500; a redirect, or a visible error with nothing saved."""
    assert response.status_code < 500
    if response.status_code in (301, 302, 303):
        return
    assert response.status_code in (400, 404, 409, 422), response.status_code
    if response.status_code == 422:
        body = response.content.decode()
        assert any(marker in body for marker in ERROR_MARKERS), body[:2000]
    assert counts() == before
    if changed is not None:
        assert not changed()


@pytest.fixture(scope="module", autouse=True)
def report_examples(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter and capture and RUN:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nfuzz: {sum(RUN.values())} examples over {len(RUN)} forms, uploads and pages")


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def connector(company, make_connector):
    # Credential checks go to a closed local port: refused at once, never the network.
    return make_connector(company, name="Shop API", base_url="http://127.0.0.1:9", concurrency_limit=5,
                          auth_methods=[basic_method(), {
                              "key": "token", "name": "API token", "type": "token",
                              "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
                              "headers": {"Authorization": "Bearer {{api_token}}"}, "test_request": {"path": "/me"},
                          }])


@pytest.fixture
def pool(company, connector):
    pool = ConnectionPool.objects.create(company=company, name="Storefront", limit=3)
    pool.connectors.add(connector)
    return pool


@pytest.fixture
def instance(connector, make_instance, pool):
    return make_instance(connector, "Shop API - UK", auth_method=connector.auth_methods.get(key="token"))


def definition(connector: Connector) -> dict:
    return manifests.export(Connector.objects.get(pk=connector.pk))


# --- instances: the wizard and the settings page ------------------------------------------------------


@FUZZ
@given(name=junk)
def test_fuzz_wizard_name(admin_client, connector, name):
    RUN["wizard name"] += 1
    before = counts()
    response = admin_client.post(f"/instances/new/{connector.pk}/", {"step": "name", "name": name})
    expect_success_or_error(response, before)
    assert Instance.objects.count() == before["Instance"]  # the name step never creates an instance


def _wizard_state(client: Client, connector: Connector, step_data: list[dict]) -> str:
    state = ""
    for data in step_data:
        response = client.post(f"/instances/new/{connector.pk}/", {**data, "state": state})
        assert response.status_code == 302, response.content.decode()[:500]
        state = parse_qs(urlsplit(response["Location"]).query)["state"][0]
    return state


@FUZZ
@given(time_zone=time_zones, date_format=date_formats, amount=numbers, unit=units, pool_id=st.data())
def test_fuzz_wizard_settings(admin_client, connector, pool, time_zone, date_format, amount, unit, pool_id):
    RUN["wizard settings"] += 1
    state = _wizard_state(admin_client, connector, [{"step": "name", "name": "Fuzz"}])
    before = counts()
    response = admin_client.post(f"/instances/new/{connector.pk}/", {
        "step": "settings", "state": state, "time_zone": time_zone, "date_format": date_format,
        "rate_limit_amount": amount, "rate_limit_unit": unit, "connection_pool": pool_id.draw(ids(pool.pk)),
    })
    expect_success_or_error(response, before)


@FUZZ
@given(method=st.data(), username=junk, password=junk, state=st.one_of(st.none(), junk))
def test_fuzz_wizard_auth_and_credentials(admin_client, connector, method, username, password, state):
    RUN["wizard credentials"] += 1
    methods = list(connector.auth_methods.values_list("pk", flat=True))
    good_state = _wizard_state(admin_client, connector, [
        {"step": "name", "name": "Fuzz"},
        {"step": "settings", "time_zone": "UTC", "date_format": "%Y", "rate_limit_amount": "5", "rate_limit_unit": "second"},
    ])
    before = counts()
    response = admin_client.post(f"/instances/new/{connector.pk}/", {
        "step": "auth", "state": good_state if state is None else state, "auth_method": method.draw(ids(*methods)),
    })
    expect_success_or_error(response, before)
    if response.status_code == 302:
        next_state = parse_qs(urlsplit(response["Location"]).query)["state"][0]
        response = admin_client.post(f"/instances/new/{connector.pk}/", {
            "step": "credentials", "state": next_state, "var_username": username, "var_password": password,
            "var_api_token": password,
        })
        # The API cannot be reached, so no credentials are ever accepted.
        assert response.status_code in (400, 422)
        assert Instance.objects.count() == before["Instance"]


@FUZZ
@given(name=junk, time_zone=time_zones, date_format=date_formats, amount=numbers, unit=units, choice=st.data())
def test_fuzz_instance_settings(admin_client, instance, name, time_zone, date_format, amount, unit, choice):
    RUN["instance settings"] += 1
    before = counts()
    row = Instance.objects.filter(pk=instance.pk).values().get()
    response = admin_client.post(f"/instances/{instance.pk}/", {
        "name": name, "time_zone": time_zone, "date_format": date_format, "rate_limit_amount": amount,
        "rate_limit_unit": unit, "connection_pool": choice.draw(ids(instance.connection_pool_id or 1)),
        "auth_method": choice.draw(ids(instance.auth_method_id)), "var_api_token": "",
    })
    expect_success_or_error(response, before, changed=lambda: Instance.objects.filter(pk=instance.pk).values().get() != row)


# --- connection pools and process flows ------------------------------------------------------------------


@FUZZ
@given(name=junk, limit=numbers, timeout=numbers, chosen=st.data(), edit=st.booleans())
def test_fuzz_pool_form(admin_client, connector, pool, name, limit, timeout, chosen, edit):
    RUN["connection pool"] += 1
    before = counts()
    row = ConnectionPool.objects.filter(pk=pool.pk).values().get()
    url = f"/instances/pools/{pool.pk}/" if edit else "/instances/pools/new/"
    connectors = chosen.draw(st.lists(ids(connector.pk), max_size=3))
    response = admin_client.post(url, {"name": name, "limit": limit, "timeout_seconds": timeout, "connectors": connectors})
    expect_success_or_error(response, before, changed=lambda: ConnectionPool.objects.filter(pk=pool.pk).values().get() != row)


@FUZZ
@given(name=junk, target=st.data(), confirm=junk)
def test_fuzz_flow_forms(admin_client, company, instance, name, target, confirm):
    RUN["process flows"] += 1
    before = counts()
    expect_success_or_error(admin_client.post("/flows/", {"name": name}), before)
    flow, _ = ProcessFlow.objects.get_or_create(company=company, name="Orders")
    endpoint = instance.connector.endpoints.first()
    before = counts()
    value = target.draw(
        st.one_of(st.just(f"{instance.pk}:{endpoint.pk}"), st.builds(lambda a, b: f"{a}:{b}", ids(instance.pk), ids(endpoint.pk)), junk)
    )
    expect_success_or_error(admin_client.post(f"/flows/{flow.pk}/", {"target": value}), before)
    kind = target.draw(st.one_of(st.sampled_from(["filter", "map", "connection"]), junk))
    response = admin_client.post(f"/flows/{flow.pk}/", {"kind": kind, "target": value})
    assert response.status_code in (302, 422)
    response = admin_client.post(f"/flows/{flow.pk}/delete/", {"confirm": confirm})
    assert response.status_code == 302
    assert ProcessFlow.objects.filter(pk=flow.pk).exists() == (confirm.strip().lower() != "confirm")


rule_rows = st.lists(st.fixed_dictionaries({
    "field": st.one_of(st.sampled_from(["updated_at", "customer.email", "a..b", ""]), junk),
    "comparison": st.one_of(st.sampled_from(["equals", "in_last", "is_empty", "since_last_success", "greater_than"]), junk),
    "value": st.one_of(numbers, junk), "unit": st.one_of(st.sampled_from(["minutes", "hours", "days", ""]), junk),
    "DELETE": st.sampled_from(["", "on"]),
}), max_size=4)
map_rows = st.lists(st.fixed_dictionaries({
    "target": st.one_of(st.sampled_from(["reference", "a.b", ""]), junk), "source": st.one_of(st.sampled_from(["id", ""]), junk),
    "constant": st.one_of(st.just(""), junk), "convert_date": st.sampled_from(["", "on"]), "DELETE": st.sampled_from(["", "on"]),
}), max_size=4)


def _formset_data(prefix: str, items: list[dict], total: str | None) -> dict:
    data = {f"{prefix}-TOTAL_FORMS": total if total is not None else str(len(items)), f"{prefix}-INITIAL_FORMS": "0"}
    for i, item in enumerate(items):
        data.update({f"{prefix}-{i}-{key}": value for key, value in item.items() if value})
    return data


@FUZZ
@given(kind=st.sampled_from(["filter", "map", "connection"]), match=junk, rules=rule_rows, fields=map_rows,
       total=st.one_of(st.none(), numbers), timeout=numbers, retries=numbers, parameter=junk, flag=st.sampled_from(["", "on"]),
       move=st.one_of(st.sampled_from(["up", "down"]), junk))
def test_fuzz_shape_editor(admin_client, company, instance, kind, match, rules, fields, total, timeout, retries, parameter,
                           flag, move):
    RUN["shape editor"] += 1
    flow, _ = ProcessFlow.objects.get_or_create(company=company, name="Orders")
    endpoint = instance.connector.endpoints.first()
    Endpoint.objects.filter(pk=endpoint.pk).update(request_parameters=[{"name": "since", "location": "query",
                                                                        "required": False, "default": "", "label": "Since"}])
    shape = Shape.objects.filter(flow=flow, kind=kind).first() or Shape.objects.create(
        flow=flow, kind=kind, position=Shape.objects.filter(flow=flow).count(),
        instance=instance if kind == "connection" else None, endpoint=endpoint if kind == "connection" else None)
    if kind == "filter":
        data = {"match": match, **_formset_data("rules", rules, total)}
    elif kind == "map":
        data = {"keep_unmapped": flag, **_formset_data("fields", fields, total)}
    else:
        data = {"target": f"{instance.pk}:{endpoint.pk}", "timeout": timeout, "retries": retries, "parameter_since": parameter,
                "allow_unsuccessful": flag, "send_as": match}
    before, config = counts(), Shape.objects.get(pk=shape.pk).config
    response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", data)
    expect_success_or_error(response, before, changed=lambda: Shape.objects.get(pk=shape.pk).config != config)
    response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/move/", {"direction": move})
    assert response.status_code == 302
    shapes = Shape.objects.filter(flow=flow)
    assert sorted(shapes.values_list("position", flat=True)) == list(range(shapes.count()))


# --- the connector builder ---------------------------------------------------------------------------------


details = st.fixed_dictionaries({
    "name": junk, "version": junk, "description": junk, "system_type": st.one_of(st.just("Other"), junk),
    "protocol": st.one_of(st.just("HTTP"), junk), "base_url": st.one_of(st.sampled_from(["https://api.example.com", "ftp://x",
                                                                                        "{{nope}}", "https://{{x}}.example.com"]), junk),
    "date_format": date_formats, "rate_limit_amount": numbers, "rate_limit_unit": units, "time_zone": time_zones,
    "concurrency_limit": numbers, "colour": st.one_of(st.just("blue"), junk),
})


@FUZZ
@given(data=details, new=st.booleans())
def test_fuzz_builder_details(admin_client, connector, data, new):
    RUN["builder details"] += 1
    before, current = counts(), definition(connector)
    url = "/connectors/new/" if new else f"/connectors/{connector.pk}/build/details/"
    response = admin_client.post(url, data)
    expect_success_or_error(response, before, changed=lambda: definition(connector) != current)


@FUZZ
@given(label=junk, key=junk, alias=junk, default=junk, flags=st.lists(st.sampled_from(["required", "advanced", "secret"])),
       original=st.one_of(st.just(""), junk), delete=st.booleans())
def test_fuzz_builder_variables(admin_client, connector, label, key, alias, default, flags, original, delete):
    RUN["builder variables"] += 1
    before, current = counts(), definition(connector)
    data = {"label": label, "key": key, "alias": alias, "default": default, "original_key": original, **{f: "on" for f in flags}}
    if delete:
        data = {"action": "delete", "key": key}
    response = admin_client.post(f"/connectors/{connector.pk}/build/variables/", data)
    expect_success_or_error(response, before, changed=lambda: definition(connector) != current)


@FUZZ
@given(action=st.sampled_from(["add", "update", "delete_variable", "save_variable", "junk"]), method_key=st.one_of(st.just("token"), junk),
       name=junk, auth_type=st.one_of(st.sampled_from(["basic", "token", "oauth2_client_credentials", "oauth1"]), junk),
       pairs=st.one_of(st.sampled_from(["Authorization: Bearer {{api_token}}", "X: {{nope}}", "no colon", ": v", "a: b\n" * 60]), junk),
       path=st.one_of(st.just("/me"), junk), statuses=st.one_of(st.just("200, 204"), numbers), token_url=junk, var_key=junk)
def test_fuzz_builder_auth_methods(admin_client, connector, action, method_key, name, auth_type, pairs, path, statuses, token_url, var_key):
    RUN["builder authentication methods"] += 1
    before, current = counts(), definition(connector)
    response = admin_client.post(f"/connectors/{connector.pk}/build/auth/", {
        "action": action, "method_key": method_key, "name": name, "type": auth_type, "headers": pairs, "query_params": "",
        "body": pairs, "token_url": token_url, "authorize_url": "", "scope": "", "test_method": "GET", "test_path": path,
        "test_expected_status": statuses, "key": var_key, "var-label": name, "var-key": var_key, "original_key": "",
    })
    expect_success_or_error(response, before, changed=lambda: definition(connector) != current)


@FUZZ
@given(action=st.sampled_from(["", "delete", "clone", "junk"]), key=st.one_of(st.just("list_orders"), junk), name=junk, entity=junk,
       direction=st.one_of(st.sampled_from(["receive", "send"]), junk), method=st.one_of(st.sampled_from(["GET", "POST", "PUT"]), junk),
       path=st.one_of(st.sampled_from(["/orders", "/orders/{{id}}", "orders"]), junk),
       parameters=st.one_of(st.just("page: 1"), junk))
def test_fuzz_builder_endpoints(admin_client, connector, action, key, name, entity, direction, method, path, parameters):
    RUN["builder endpoints"] += 1
    before, current = counts(), definition(connector)
    response = admin_client.post(f"/connectors/{connector.pk}/build/endpoints/", {
        "action": action, "key": key, "name": name, "entity": entity, "direction": direction, "method": method,
        "path": path, "parameters": parameters,
    })
    expect_success_or_error(response, before, changed=lambda: definition(connector) != current)


# --- manifests and OpenAPI documents -----------------------------------------------------------------------

yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**40, 10**40), st.floats(), junk),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(junk, children, max_size=4)),
    max_leaves=20,
)


def mutated(document: dict, draw, paths: list[tuple]) -> dict:
    """`document` with one to three of its values replaced by hostile ones."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        target = document
        for part in path[:-1]:  # an earlier replacement may have removed the path
            if isinstance(target, dict) and part in target or isinstance(target, list) and isinstance(part, int) and part < len(target):
                target = target[part]
            else:
                target = None
                break
        if isinstance(target, dict) and isinstance(path[-1], str) or (
            isinstance(target, list) and isinstance(path[-1], int) and path[-1] < len(target)
        ):
            target[path[-1]] = draw(yaml_values)
    return document


def value_paths(value, prefix=()) -> list[tuple]:
    found = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found += value_paths(child, prefix + (key,))
    return found


def as_text(draw, document) -> str:
    style = draw(st.sampled_from(["yaml", "json", "raw"]))
    if style == "raw":
        return draw(st.one_of(junk, st.sampled_from(["a: &x 1\nb: *x\n", "- 1\n- 2\n", "{", "name: !!binary 'AA'\n", "---\n...\n"])))
    if style == "json":
        return json.dumps(document, ensure_ascii=draw(st.booleans()))
    return yaml.safe_dump(document, allow_unicode=True)


@FUZZ
@given(data=st.data(), editor=st.booleans())
def test_fuzz_manifests(admin_client, connector, data, editor):
    RUN["manifests"] += 1
    base = definition(connector)
    text = as_text(data.draw, mutated(base, data.draw, value_paths(base)))
    before = counts()
    if editor:
        response = admin_client.post(f"/connectors/{connector.pk}/manifest/", {"manifest": text})
        expect_success_or_error(response, before, changed=lambda: definition(connector) != base)
    else:
        from django.core.files.uploadedfile import SimpleUploadedFile

        upload = SimpleUploadedFile("m.yaml", text.encode("utf-8", "surrogatepass"))
        expect_success_or_error(admin_client.post("/connectors/import/", {"file": upload}), before)


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "Example API", "version": "2.1.0"},
    "servers": [{"url": "https://{region}.example.com/v1", "variables": {"region": {"default": "eu"}}}],
    "paths": {
        "/orders": {"get": {"operationId": "listOrders", "summary": "List orders", "tags": ["Orders"],
                            "parameters": [{"name": "limit", "in": "query", "required": True, "schema": {"default": 5}}]},
                    "post": {"operationId": "createOrder", "tags": ["Orders"]}},
        "/orders/{id}": {"parameters": [{"$ref": "#/components/parameters/id"}], "get": {"operationId": "getOrder"}},
        "/me": {"get": {"operationId": "getMe", "security": [{"key": []}]}},
    },
    "components": {
        "parameters": {"id": {"name": "id", "in": "path", "required": True}},
        "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}, "key": {"type": "apiKey", "in": "header", "name": "X-Key"},
                            "oauth": {"type": "oauth2", "flows": {"clientCredentials": {"tokenUrl": "/token", "scopes": {"read": "r"}}}}},
    },
    "security": [{"token": []}, {"oauth": ["read"]}],
}
OPENAPI_PATHS = value_paths(OPENAPI)


@FUZZ
@given(data=st.data())
def test_fuzz_openapi_documents(admin_client, data):
    from django.core.files.uploadedfile import SimpleUploadedFile

    RUN["OpenAPI documents"] += 1
    text = as_text(data.draw, mutated(OPENAPI, data.draw, OPENAPI_PATHS))
    before = counts()
    name = data.draw(st.sampled_from(["api.yaml", "api.json", "api"]))
    response = admin_client.post("/connectors/import/openapi/", {"file": SimpleUploadedFile(name, text.encode("utf-8", "surrogatepass"))})
    assert response.status_code < 500
    if response.status_code != 200:
        expect_success_or_error(response, before)
        return
    # The pick page: choose operations (or junk) and a name, then create the connector.
    state = response.context["state"]
    keys = [op.key for op in response.context["draft"].operations]
    chosen = data.draw(st.lists(st.one_of(st.sampled_from(keys), junk), max_size=4))
    response = admin_client.post("/connectors/import/openapi/", {
        "draft": data.draw(st.one_of(st.just(state), junk)), "operations": chosen, "name": data.draw(junk),
        "system_type": data.draw(st.one_of(st.just("Other"), junk)),
    })
    expect_success_or_error(response, before)


# --- GET parameters of every page ------------------------------------------------------------------------


PARAMETER_NAMES = ["q", "page", "system_type", "action", "highlight", "tab", "auth_method", "step", "state", "edit",
                   "date_format", "time_zone", "remove", "open", "flow", "status", "trigger", "instance", "warnings",
                   "queued_from", "queued_to"]


@FUZZ
@given(data=st.data())
def test_fuzz_get_parameters_of_every_page(admin_client, connector, instance, pool, sandbox_listing, data):
    RUN["page parameters"] += 1
    flow, _ = ProcessFlow.objects.get_or_create(company=connector.company, name="Orders")
    change = ConnectorChange.objects.create(connector=connector, action="edited", before=definition(connector), after=definition(connector))
    pages = [
        "/connectors/", "/connectors/new/", "/connectors/import/", "/connectors/import/openapi/", f"/connectors/{connector.pk}/",
        f"/connectors/{connector.pk}/build/details/", f"/connectors/{connector.pk}/build/variables/",
        f"/connectors/{connector.pk}/build/auth/", f"/connectors/{connector.pk}/build/endpoints/", f"/connectors/{connector.pk}/manifest/",
        f"/connectors/{connector.pk}/manifest.yaml", f"/connectors/{connector.pk}/history/",
        f"/connectors/{connector.pk}/history/{change.pk}/",
        f"/instances/new/{connector.pk}/", "/instances/date-preview/", f"/instances/{instance.pk}/", "/instances/pools/",
        "/instances/pools/new/", f"/instances/pools/{pool.pk}/", f"/instances/pools/{pool.pk}/delete/", "/flows/", f"/flows/{flow.pk}/",
        "/marketplace/", "/marketplace/sandbox/", "/audit/", "/flows/runs/", f"/flows/{flow.pk}/runs/", "/settings/company/",
    ]
    url = data.draw(st.sampled_from(pages))
    query = data.draw(st.dictionaries(st.one_of(st.sampled_from(PARAMETER_NAMES), junk), st.one_of(junk, numbers), max_size=4))
    headers = {"HX-Request": "true", "HX-Target": data.draw(st.sampled_from(["connector-list", "listing-grid", "pool-list", "audit-list",
                                                                             "shape-panel", "shape-list", "x"]))} \
        if data.draw(st.booleans()) else {}
    before = counts()
    response = admin_client.get(url, query, headers=headers)
    assert response.status_code in (200, 302, 400, 404), (url, query, response.status_code)
    if response.status_code == 400:
        assert any("\x00" in k or "\x00" in v for k, v in query.items())
    assert counts() == before
