"""The shape editor on the flow page: add each kind, edit settings, reorder, remove; roles and isolation."""

from __future__ import annotations

import pytest

from flows.models import ProcessFlow, Shape, ShapeKind
from patchworks_site.models import Role

HTMX = {"HTTP_HX_REQUEST": "true"}

ENDPOINTS = [
    {"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET", "path": "/orders"},
    {"key": "create_order", "name": "Create order", "entity": "Order", "direction": "send", "method": "POST", "path": "/orders"},
]
PARAMETERS = [
    {"name": "updated_since", "location": "query", "required": False, "default": "", "label": "Updated since"},
    {"name": "X-Sandbox-Time-Zone", "location": "header", "required": False, "default": "{{instance.time_zone}}",
     "label": "Time zone header"},
    {"name": "account", "location": "query", "required": True, "default": "main", "label": "Account"},
]


@pytest.fixture
def instance(company, make_connector, make_instance):
    connector = make_connector(company, name="Shop API", endpoints=ENDPOINTS,
                               variables=[{"key": "region", "label": "Region", "default": "eu"}])
    connector.endpoints.filter(key="list_orders").update(request_parameters=PARAMETERS)
    return make_instance(connector, "Shop - UK")


@pytest.fixture
def flow(company):
    return ProcessFlow.objects.create(company=company, name="Orders to ERP")


def endpoint(instance, key):
    return instance.connector.endpoints.get(key=key)


def add_connection(client, flow, instance, key="list_orders"):
    client.post(f"/flows/{flow.pk}/", {"target": f"{instance.pk}:{endpoint(instance, key).pk}"})
    return flow.shapes.order_by("-position").first()


def add(client, flow, kind) -> Shape:
    response = client.post(f"/flows/{flow.pk}/", {"kind": kind})
    shape = flow.shapes.order_by("-position").first()
    assert response["Location"] == f"/flows/{flow.pk}/shapes/{shape.pk}/"
    return shape


def positions(flow):
    return list(flow.shapes.order_by("position").values_list("kind", "position"))


def rows(prefix: str, items: list[dict], extra: int = 1) -> dict:
    """Formset POST data: the given rows, then `extra` blank ones."""
    data = {f"{prefix}-TOTAL_FORMS": str(len(items) + extra), f"{prefix}-INITIAL_FORMS": "0",
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "50"}
    for i, item in enumerate(items):
        for key, value in item.items():
            data[f"{prefix}-{i}-{key}"] = value
    for i in range(len(items), len(items) + extra):
        data[f"{prefix}-{i}-comparison" if prefix == "rules" else f"{prefix}-{i}-target"] = "equals" if prefix == "rules" else ""
    return data


def test_add_each_kind_in_order_with_defaults_and_summaries(admin_client, flow, instance):
    connection = add_connection(admin_client, flow, instance)
    filter_shape = add(admin_client, flow, "filter")
    map_shape = add(admin_client, flow, "map")
    assert positions(flow) == [("connection", 0), ("filter", 1), ("map", 2)]
    assert connection.config == {"timeout": 30, "retries": 0, "allow_unsuccessful": False, "send_as": "item", "parameters": {}}
    assert filter_shape.config == {"match": "all", "rules": []}
    assert map_shape.config == {"fields": [], "keep_unmapped": True}

    page = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    assert page.count('data-testid="shape"') == 3
    assert "No rules yet: every item passes." in page and "No output fields yet: items pass unchanged." in page
    assert "timeout 30 s" in page
    assert f'aria-label="Move step 1 up" title="Move up" data-focus-key="{connection.pk}-up" disabled' in page


def test_connection_settings_are_saved_as_the_runner_reads_them(admin_client, flow, instance):
    shape = add_connection(admin_client, flow, instance)
    page = admin_client.get(f"/flows/{flow.pk}/shapes/{shape.pk}/").content.decode()
    # Optional parameters only, labelled, with the placeholders explained; no send-as for a receive endpoint.
    assert "Updated since" in page and "Time zone header" in page and "Account" not in page
    assert "{{since}}, {{run_time}}, {{last_success}}" in page and "{{instance.date_format}}" in page
    assert 'name="send_as"' not in page

    response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", {
        "target": f"{instance.pk}:{endpoint(instance, 'list_orders').pk}", "timeout": "45", "retries": "2",
        "allow_unsuccessful": "on", "parameter_updated_since": "{{since}}", "parameter_X-Sandbox-Time-Zone": "",
    })
    assert response["Location"] == f"/flows/{flow.pk}/"
    shape.refresh_from_db()
    assert shape.config == {"timeout": 45, "retries": 2, "allow_unsuccessful": True, "send_as": "item",
                            "parameters": {"updated_since": "{{since}}"}}
    page = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    assert "Step 1 (connection) saved." in page
    assert "timeout 45 s · 2 retries · unsuccessful statuses allowed · updated_since = {{since}}" in page


def test_a_send_endpoint_offers_send_as_batch(admin_client, flow, instance):
    shape = add_connection(admin_client, flow, instance, "create_order")
    assert 'name="send_as"' in admin_client.get(f"/flows/{flow.pk}/shapes/{shape.pk}/").content.decode()
    admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", {
        "target": f"{instance.pk}:{endpoint(instance, 'create_order').pk}", "timeout": "30", "retries": "0", "send_as": "batch",
    })
    shape.refresh_from_db()
    assert shape.config["send_as"] == "batch"


@pytest.mark.parametrize("data, error", [
    ({"timeout": "0"}, "Ensure this value is greater than or equal to 1."),
    ({"timeout": "121"}, "Ensure this value is less than or equal to 120."),
    ({"retries": "3"}, "Select a valid choice. 3 is not one of the available choices."),
    ({"parameter_updated_since": "{{nope}}"}, "Unknown variable {{nope}}."),
    ({"parameter_updated_since": "{{since"}, "Close every {{ with }}."),
    ({"target": "garbage"}, "Choose an endpoint of one of your instances."),
])
def test_bad_connection_settings_are_refused_next_to_the_field_and_nothing_saved(admin_client, flow, instance, data, error):
    shape = add_connection(admin_client, flow, instance)
    before = shape.config
    post = {"target": f"{instance.pk}:{endpoint(instance, 'list_orders').pk}", "timeout": "30", "retries": "0", **data}
    response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", post)
    assert response.status_code == 422
    assert error in response.content.decode()
    shape.refresh_from_db()
    assert shape.config == before


def test_connector_variables_are_known_placeholders(admin_client, flow, instance):
    shape = add_connection(admin_client, flow, instance)
    admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", {
        "target": f"{instance.pk}:{endpoint(instance, 'list_orders').pk}", "timeout": "30", "retries": "0",
        "parameter_updated_since": "{{ region }}-{{run_time}}",
    })
    shape.refresh_from_db()
    assert shape.config["parameters"] == {"updated_since": "{{ region }}-{{run_time}}"}


def test_a_shape_whose_endpoint_was_removed_stays_editable(admin_client, flow, instance):
    shape = Shape.objects.create(flow=flow, kind=ShapeKind.CONNECTION, instance=instance, endpoint=None,
                                 missing_endpoint="Old orders (GET /old)", config={})
    page = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    assert "needs attention" in page and "Edit this shape to choose another endpoint" in page
    page = admin_client.get(f"/flows/{flow.pk}/shapes/{shape.pk}/").content.decode()
    assert "The endpoint Old orders (GET /old) was removed" in page
    admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", {
        "target": f"{instance.pk}:{endpoint(instance, 'create_order').pk}", "timeout": "30", "retries": "0", "send_as": "item",
    })
    shape.refresh_from_db()
    assert (shape.endpoint.key, shape.missing_endpoint, shape.needs_attention) == ("create_order", "", False)


def test_filter_rules_are_saved_blank_and_removed_rows_skipped(admin_client, flow):
    shape = add(admin_client, flow, "filter")
    page = admin_client.get(f"/flows/{flow.pk}/shapes/{shape.pk}/").content.decode()
    assert page.count('data-testid="shape-row"') == 2 and "Row 1: Field" in page
    data = {"match": "any", **rows("rules", [
        {"field": "updated_at", "comparison": "in_last", "value": " 24 ", "unit": "hours"},
        {"field": "status", "comparison": "equals", "value": "paid", "unit": "days"},
        {"field": "dropped", "comparison": "contains", "value": "x", "DELETE": "on"},
        {"field": "note", "comparison": "is_empty", "value": "ignored"},
        {"field": "created_at", "comparison": "since_last_success"},
    ])}
    response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", data)
    assert response.status_code == 302
    shape.refresh_from_db()
    assert shape.config == {"match": "any", "rules": [
        {"field": "updated_at", "comparison": "in_last", "value": "24", "unit": "hours"},
        {"field": "status", "comparison": "equals", "value": "paid", "unit": ""},
        {"field": "note", "comparison": "is_empty", "value": "", "unit": ""},
        {"field": "created_at", "comparison": "since_last_success", "value": "", "unit": ""},
    ]}
    page = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    assert ('Keeps items where updated_at in the last 24 hours or status = &quot;paid&quot; or note is empty '
            'or created_at since the last successful run') in page
    # The saved rules come back in the form, followed by blank rows.
    page = admin_client.get(f"/flows/{flow.pk}/shapes/{shape.pk}/").content.decode()
    assert page.count('data-testid="shape-row"') == 6 and 'value="updated_at"' in page


WHOLE_NUMBER_ERROR = "Enter a whole number of minutes, hours or days, at least 1."


@pytest.mark.parametrize("rule, field, error", [
    ({"field": "updated_at", "comparison": "in_last", "value": "abc", "unit": "hours"}, "value", WHOLE_NUMBER_ERROR),
    ({"field": "updated_at", "comparison": "in_last", "value": "0", "unit": "hours"}, "value", WHOLE_NUMBER_ERROR),
    ({"field": "updated_at", "comparison": "in_last", "value": "²", "unit": "hours"}, "value", WHOLE_NUMBER_ERROR),
    ({"field": "updated_at", "comparison": "in_last", "value": "3", "unit": ""}, "unit", "Choose minutes, hours or days."),
    ({"field": "total", "comparison": "greater_than", "value": ""}, "value", "Enter the value to compare with."),
    ({"field": "", "comparison": "equals", "value": "x"}, "field", "Enter the field this rule compares."),
    ({"field": "a b", "comparison": "equals", "value": "x"}, "field", "Enter a dotted path without spaces"),
    ({"field": "a", "comparison": "like", "value": "x"}, "comparison", "Select a valid choice."),
])
def test_bad_filter_rules_are_refused_next_to_the_row_and_nothing_saved(admin_client, flow, rule, field, error):
    shape = add(admin_client, flow, "filter")
    response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", {"match": "all", **rows("rules", [rule])})
    assert response.status_code == 422
    body = response.content.decode()
    assert error in body and f'name="rules-0-{field}"' in body and "is-invalid" in body
    shape.refresh_from_db()
    assert shape.config == {"match": "all", "rules": []}


def test_a_filter_needs_a_rule_and_a_valid_management_form(admin_client, flow):
    shape = add(admin_client, flow, "filter")
    response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", {"match": "all", **rows("rules", [])})
    assert response.status_code == 422 and "Add at least one rule." in response.content.decode()
    response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", {"match": "all"})
    assert response.status_code == 422 and "ManagementForm data is missing" in response.content.decode()
    response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", {"match": "all", **rows("rules", [], extra=60)})
    assert response.status_code == 422 and "Please submit at most 50 forms." in response.content.decode()
    shape.refresh_from_db()
    assert shape.config == {"match": "all", "rules": []}


def test_map_fields_are_saved_and_validated(admin_client, flow):
    shape = add(admin_client, flow, "map")
    good = rows("fields", [
        {"target": "reference", "source": "id"},
        {"target": "customer.email", "source": "customer.email"},
        {"target": "channel", "constant": "web"},
        {"target": "ordered_at", "source": "created_at", "convert_date": "on"},
    ])
    response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", good)
    assert response.status_code == 302
    shape.refresh_from_db()
    assert shape.config == {"keep_unmapped": False, "fields": [
        {"target": "reference", "source": "id", "constant": "", "convert_date": False},
        {"target": "customer.email", "source": "customer.email", "constant": "", "convert_date": False},
        {"target": "channel", "source": "", "constant": "web", "convert_date": False},
        {"target": "ordered_at", "source": "created_at", "constant": "", "convert_date": True},
    ]}
    saved = shape.config
    for items, error in [
        ([{"target": "a", "source": "b", "constant": "c"}], "Use either an input field or a constant, not both."),
        ([{"target": "a"}], "Enter an input field or a constant."),
        ([{"target": "a", "constant": "c", "convert_date": "on"}], "Only a value from an input field can be converted."),
        ([{"source": "b"}], "Enter the output field."),
        ([{"target": "a", "source": "b"}, {"target": "a", "source": "c"}], "The output field &quot;a&quot; is set twice."),
        ([], "Add at least one output field, or keep unmapped fields."),
    ]:
        response = admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", rows("fields", items))
        assert response.status_code == 422 and error in response.content.decode(), error
    shape.refresh_from_db()
    assert shape.config == saved
    admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", {"keep_unmapped": "on", **rows("fields", [])})
    shape.refresh_from_db()
    assert shape.config == {"fields": [], "keep_unmapped": True}


def test_htmx_panel_errors_swap_in_place_and_success_redirects_the_page(admin_client, flow):
    shape = add(admin_client, flow, "filter")
    url = f"/flows/{flow.pk}/shapes/{shape.pk}/"
    panel = admin_client.get(url, HTTP_HX_TARGET="shape-panel", **HTMX).content.decode()
    assert "<html" not in panel and 'id="shape-editor"' in panel and f'hx-post="{url}"' in panel
    full = admin_client.get(url).content.decode()
    assert "<html" in full and 'id="shape-editor"' in full and f'action="{url}"' in full

    bad = admin_client.post(url, {"match": "all", **rows("rules", [{"field": "x", "comparison": "in_last", "value": "1"}])},
                            HTTP_HX_TARGET="shape-panel", **HTMX)
    assert bad.status_code == 422 and "<html" not in bad.content.decode() and "Choose minutes, hours or days." in bad.content.decode()
    ok = admin_client.post(url, {"match": "all", **rows("rules", [{"field": "x", "comparison": "in_last", "value": "1", "unit": "days"}])},
                           HTTP_HX_TARGET="shape-panel", **HTMX)
    assert ok.status_code == 200 and ok["HX-Redirect"] == f"/flows/{flow.pk}/"


def test_reorder_with_and_without_htmx_keeps_positions_dense(admin_client, flow, instance):
    first = add_connection(admin_client, flow, instance)
    middle = add(admin_client, flow, "filter")
    last = add(admin_client, flow, "map")
    response = admin_client.post(f"/flows/{flow.pk}/shapes/{last.pk}/move/", {"direction": "up"})
    assert response["Location"] == f"/flows/{flow.pk}/"
    assert positions(flow) == [("connection", 0), ("map", 1), ("filter", 2)]

    fragment = admin_client.post(f"/flows/{flow.pk}/shapes/{last.pk}/move/", {"direction": "up"},
                                 HTTP_HX_TARGET="shape-list", **HTMX).content.decode()
    assert positions(flow) == [("map", 0), ("connection", 1), ("filter", 2)]
    assert "<html" not in fragment and fragment.index("Map</strong>") < fragment.index("Shop - UK")
    assert f'data-focus="{last.pk}-up"' in fragment

    page = admin_client.post(f"/flows/{flow.pk}/shapes/{last.pk}/move/", {"direction": "up"}, follow=True).content.decode()
    assert "That shape cannot move further up." in page
    admin_client.post(f"/flows/{flow.pk}/shapes/{middle.pk}/move/", {"direction": "sideways"})
    assert positions(flow) == [("map", 0), ("connection", 1), ("filter", 2)]

    page = admin_client.post(f"/flows/{flow.pk}/shapes/{first.pk}/remove/", follow=True).content.decode()
    assert "Step 2 removed (connection: Shop - UK → List orders)." in page
    assert positions(flow) == [("map", 0), ("filter", 1)]


def test_removal_asks_for_confirmation_without_javascript(admin_client, flow):
    shape = add(admin_client, flow, "map")
    page = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    assert f'href="?remove={shape.pk}#shape-{shape.pk}"' in page
    assert f'class="collapse  mt-2" id="remove-shape-{shape.pk}"' in page
    page = admin_client.get(f"/flows/{flow.pk}/?remove={shape.pk}").content.decode()
    assert f'class="collapse show mt-2" id="remove-shape-{shape.pk}"' in page and "remove step 1</button>" in page


def test_roles_read_only_views_users_edit(client_for, make_user, company, flow):
    shape = Shape.objects.create(flow=flow, kind=ShapeKind.FILTER, config={"match": "all", "rules": []})
    viewer = client_for(make_user(company, Role.READ_ONLY))
    page = viewer.get(f"/flows/{flow.pk}/").content.decode()
    assert "add filter shape" not in page and "Move step 1" not in page and ">view<" in page
    page = viewer.get(f"/flows/{flow.pk}/shapes/{shape.pk}/").content.decode()
    assert "<fieldset disabled>" in page and "save step 1" not in page
    for url, data in [(f"/flows/{flow.pk}/", {"kind": "map"}), (f"/flows/{flow.pk}/shapes/{shape.pk}/", {"match": "any"}),
                      (f"/flows/{flow.pk}/shapes/{shape.pk}/move/", {"direction": "down"}),
                      (f"/flows/{flow.pk}/shapes/{shape.pk}/remove/", {})]:
        assert viewer.post(url, data).status_code == 403
    assert list(Shape.objects.values_list("pk", flat=True)) == [shape.pk]

    user = client_for(make_user(company, Role.USER))
    assert user.post(f"/flows/{flow.pk}/", {"kind": "map"}).status_code == 302
    assert Shape.objects.count() == 2


def test_another_company_s_flow_and_shape_are_not_found(client_for, make_user, company, other_company, flow):
    shape = Shape.objects.create(flow=flow, kind=ShapeKind.FILTER, config={"match": "all", "rules": []})
    own_flow = ProcessFlow.objects.create(company=other_company, name="Mine")
    outsider = client_for(make_user(other_company))
    for base in (f"/flows/{flow.pk}/shapes/{shape.pk}/", f"/flows/{own_flow.pk}/shapes/{shape.pk}/"):
        assert outsider.get(base).status_code == 404
        assert outsider.post(base, {"match": "any", **rows("rules", [{"field": "a", "comparison": "equals"}])}).status_code == 404
        assert outsider.post(base + "move/", {"direction": "down"}).status_code == 404
        assert outsider.post(base + "remove/").status_code == 404
    assert outsider.post(f"/flows/{flow.pk}/", {"kind": "map"}).status_code == 404
    shape.refresh_from_db()
    assert shape.config == {"match": "all", "rules": []} and Shape.objects.count() == 1


def test_the_flow_list_counts_only_connection_shapes_without_endpoint_as_needing_attention(admin_client, flow, instance):
    add(admin_client, flow, "filter")
    add(admin_client, flow, "map")
    page = admin_client.get("/flows/").content.decode()
    assert "2 shapes" in page and "attention" not in page
    Shape.objects.create(flow=flow, kind=ShapeKind.CONNECTION, instance=instance, endpoint=None, missing_endpoint="Gone", position=2)
    page = admin_client.get("/flows/").content.decode()
    assert "3 shapes" in page and "1 needs attention" in page


def test_choosing_another_endpoint_drops_parameters_it_does_not_declare(admin_client, flow, instance):
    shape = add_connection(admin_client, flow, instance)
    base = {"timeout": "30", "retries": "0", "parameter_updated_since": "{{since}}"}
    admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", {"target": f"{instance.pk}:{endpoint(instance, 'list_orders').pk}", **base})
    shape.refresh_from_db()
    assert shape.config["parameters"] == {"updated_since": "{{since}}"}
    admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/",
                      {"target": f"{instance.pk}:{endpoint(instance, 'create_order').pk}", "send_as": "batch", **base})
    shape.refresh_from_db()
    assert (shape.endpoint.key, shape.config["parameters"], shape.config["send_as"]) == ("create_order", {}, "batch")
