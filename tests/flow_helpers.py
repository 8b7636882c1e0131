"""Building process flows whose connection shapes call a test HTTP server playing the third party."""

from __future__ import annotations

import json

import pytest
from werkzeug import Response

from connectors.models import Connector
from flows.models import ProcessFlow, Shape

API_TOKEN = "tok-S3cr3t-value-9876"


def shop_connector(make_connector, company, base_url: str) -> Connector:
    """A custom connector with a receive endpoint (GET /orders) and a send endpoint (POST /imports)."""
    return make_connector(
        company,
        name="Shop API",
        base_url=base_url,
        rate_limit={"amount": 1000, "unit": "second"},
        endpoints=[
            {"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive", "method": "GET", "path": "/orders"},
            {"key": "import_order", "name": "Import order", "entity": "Order", "direction": "send", "method": "POST", "path": "/imports"},
        ],
    )


def receive_then_send_flow(company, instance, *, name: str = "Orders to ERP", enabled: bool = True) -> ProcessFlow:
    flow = ProcessFlow.objects.create(company=company, name=name, enabled=enabled)
    for position, key in enumerate(("list_orders", "import_order")):
        Shape.objects.create(
            flow=flow, instance=instance, endpoint=instance.connector.endpoints.get(key=key), position=position
        )
    return flow


def endpoint_of(instance, key: str, **fields):
    """The instance connector's endpoint `key`, with the given fields (pagination, records_path, ...) saved."""
    endpoint = instance.connector.endpoints.get(key=key)
    for name, value in fields.items():
        setattr(endpoint, name, value)
    endpoint.save()
    return endpoint


def flow_of(company, *steps, name: str = "Runtime flow", enabled: bool = True) -> ProcessFlow:
    """A flow whose shapes are `steps`: dicts of Shape fields (kind, instance, endpoint, config), in order."""
    flow = ProcessFlow.objects.create(company=company, name=name, enabled=enabled)
    for position, step in enumerate(steps):
        Shape.objects.create(flow=flow, position=position, **step)
    return flow


def connection(instance, key: str, **config) -> dict:
    return {"kind": "connection", "instance": instance, "endpoint": instance.connector.endpoints.get(key=key),
            "config": config}


def filter_shape(*rules: dict, match: str = "all") -> dict:
    return {"kind": "filter", "config": {"match": match, "rules": list(rules)}}


def map_shape(*fields: dict, keep_unmapped: bool = False) -> dict:
    return {"kind": "map", "config": {"fields": list(fields), "keep_unmapped": keep_unmapped}}


def json_response(data: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json", headers=headers or {})


@pytest.fixture
def connector(company, make_connector, httpserver) -> Connector:
    """The shop connector on the test's HTTP server (import it into a test module to use it as a fixture)."""
    return shop_connector(make_connector, company, httpserver.url_for("/api"))


@pytest.fixture
def instance(connector, make_instance):
    return make_instance(connector, "Shop - UK", {"api_token": API_TOKEN})
