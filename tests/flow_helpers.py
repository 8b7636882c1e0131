"""Building process flows whose connection shapes call a test HTTP server playing the third party."""

from __future__ import annotations

from connectors.models import Connector
from flows.models import Shape, ProcessFlow

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
