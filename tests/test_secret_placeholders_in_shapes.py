"""Secret placeholders go only where the connector puts them, never into parameters a User sets on a shape."""

from __future__ import annotations

import pytest

from flows import execution, queueing
from flows.models import RunStatus, RunTrigger
from patchworks_site.models import Role
from tests.flow_helpers import API_TOKEN, connection, flow_of

QUERY, HEADER, BODY = "query", "header", "body"
ENDPOINTS = [
    {"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET",
     "path": "/orders", "request_parameters": [
         {"name": "q", "location": QUERY}, {"name": "X-Note", "location": HEADER},
         # Defined with the connector (by whoever may modify it): a secret may go here.
         {"name": "X-Account-Key", "location": HEADER, "default": "{{api_token}}"},
     ]},
    {"key": "import_order", "name": "Import order", "entity": "Order", "direction": "send", "method": "POST",
     "path": "/imports", "request_parameters": [
         {"name": "q", "location": QUERY}, {"name": "X-Note", "location": HEADER},
         {"name": "note", "location": BODY}, {"name": "tag", "location": BODY},
     ]},
]
# The six parameter fields a User can fill in on the two shapes.
FIELDS = [("list_orders", QUERY, "q"), ("list_orders", HEADER, "X-Note"), ("import_order", QUERY, "q"),
          ("import_order", HEADER, "X-Note"), ("import_order", BODY, "note"), ("import_order", BODY, "tag")]


@pytest.fixture
def instance(company, make_connector, make_instance, httpserver):
    connector = make_connector(company, name="Shop API", base_url=httpserver.url_for("/api"), endpoints=ENDPOINTS,
                               rate_limit={"amount": 1000, "unit": "second"},
                               variables=[{"key": "region", "label": "Region", "default": "eu"},
                                          {"key": "webhook_key", "label": "Webhook key", "secret": True}])
    return make_instance(connector, "Shop - UK", {"api_token": API_TOKEN, "webhook_key": "whk-Secret-4321"})


@pytest.fixture
def user_client(client_for, make_user, company):
    return client_for(make_user(company, Role.USER))


def shape_on(instance, key: str, **config):
    flow = flow_of(instance.company, connection(instance, key, **config), name=f"Flow {key}")
    return flow, flow.shapes.get()


def post_settings(client, flow, shape, instance, key: str, **parameters):
    endpoint = instance.connector.endpoints.get(key=key)
    data = {"target": f"{instance.pk}:{endpoint.pk}", "timeout": "30", "retries": "0", "send_as": "item",
            **{f"parameter_{name}": value for name, value in parameters.items()}}
    return client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/", data)


@pytest.mark.parametrize("key, location, name", FIELDS)
def test_each_parameter_field_refuses_a_secret_placeholder_and_saves_nothing(user_client, instance, key, location, name):
    flow, shape = shape_on(instance, key)
    before = shape.config
    response = post_settings(user_client, flow, shape, instance, key, **{name: "{{api_token}}"})
    assert response.status_code == 422
    assert (f"The {location} parameter {name} may not use {{{{api_token}}}}: it is a secret of the connector; "
            "secrets are sent only where its authentication method puts them.") in response.content.decode()
    shape.refresh_from_db()
    assert shape.config == before


@pytest.mark.parametrize("value, secrets", [
    ("{{ api_token }}", "{{api_token}}: it is a secret"),
    ("id-{{webhook_key}}-{{region}}", "{{webhook_key}}: it is a secret"),  # a connector-level secret variable
    ("{{access_token}}", "{{access_token}}: it is a secret"),  # obtained by OAuth, never a variable
    ("{{client_secret}}{{api_token}}", "{{api_token}}, {{client_secret}}: they are secrets"),
])
def test_every_spelling_and_kind_of_secret_is_refused(user_client, instance, value, secrets):
    flow, shape = shape_on(instance, "list_orders")
    response = post_settings(user_client, flow, shape, instance, "list_orders", q=value)
    assert response.status_code == 422
    assert f"The query parameter q may not use {secrets} of the connector" in response.content.decode()


def test_public_variables_and_run_placeholders_are_saved_and_sent(user_client, instance, httpserver):
    flow, shape = shape_on(instance, "list_orders")
    response = post_settings(user_client, flow, shape, instance, "list_orders",
                             **{"q": "{{region}}", "X-Note": "tz {{instance.time_zone}}"})
    assert response.status_code == 302
    httpserver.expect_request("/api/orders").respond_with_json([])
    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    assert run.status == RunStatus.SUCCESS, run.failure_reason
    (request, _), = httpserver.log
    assert request.args["q"] == "eu" and request.headers["X-Note"] == "tz UTC"
    # The endpoint's own default puts the secret where the connector chose; the User did not.
    assert request.headers["X-Account-Key"] == API_TOKEN


@pytest.mark.parametrize("key, location, name", FIELDS)
def test_a_stored_shape_with_a_secret_placeholder_fails_before_any_request(company, instance, httpserver, key, location, name):
    """Written before the check existed (or straight into the database): the run refuses it before sending."""
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    httpserver.expect_request("/api/imports").respond_with_json({"ok": True})
    steps = [connection(instance, "list_orders")] if key == "import_order" else []
    flow = flow_of(company, *steps, connection(instance, key, parameters={name: "{{api_token}}"}))

    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)

    assert run.status == RunStatus.FAILED
    assert (f"the {location} parameter {name} may not use {{{{api_token}}}}: it is a secret of the connector; "
            "secrets are sent only where its authentication method puts them.") in run.failure_reason
    assert API_TOKEN not in run.failure_reason
    assert httpserver.log == []
