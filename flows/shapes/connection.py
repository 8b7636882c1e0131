"""Connection shapes: one instance and one endpoint of its connector, called through the instance client.

A receive endpoint emits the records of its response as one payload; a send
endpoint sends every incoming item as JSON and passes the responses on. Items
the API refuses are errors of the shape (partial success); when none is
accepted the shape fails.
"""

from __future__ import annotations

from collections.abc import Callable

from connectors.models import Direction
from flows.models import Shape, FlowRunShape
from flows.shapes import ShapeFailed
from instances.client import ClientError, Exchange, InstanceClient, _message_from_body, _status_text

# Per shape, at most this many error messages and failed exchanges are stored.
MAX_RECORDED_FAILURES = 20
MESSAGE_CHARS = 300


def run(shape: Shape, bucket: list[list], record: FlowRunShape, checkpoint: Callable[[], None]) -> list[list]:
    """`checkpoint` is called between requests (it renews the run's lease and raises when a stop was requested)."""
    client = InstanceClient.for_instance(shape.instance)
    if shape.endpoint.direction == Direction.RECEIVE:
        return _receive(client, shape, record)
    return _send(client, shape, bucket, record, checkpoint)


def records_of(data: object) -> tuple[list, str]:
    """The records in a response body: a top-level list, or the first list value of an object."""
    if isinstance(data, list):
        return data, ""
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, list):
                return value, ""
        return [data], "The response holds no list of records; it was passed on as one item."
    return [], "The response is not JSON; nothing was passed on."


def _request(client: InstanceClient, shape: Shape, record: FlowRunShape, **kwargs) -> Exchange:
    record.requests += 1
    try:
        return client.request(shape.endpoint.method, shape.endpoint.path, **kwargs)
    except ClientError as exc:
        raise ShapeFailed(client.redact(f"The request could not be built: {exc}.")) from exc


def _failure(client: InstanceClient, exchange: Exchange, record: FlowRunShape) -> str | None:
    """Why the request failed (redacted), keeping the redacted exchange; None when it succeeded."""
    if not exchange.error and exchange.response_status and 200 <= exchange.response_status < 300:
        return None
    if exchange.error:
        message = exchange.error
    else:
        message = f"The API answered {_status_text(exchange.response_status)}."
        detail = _message_from_body(exchange)
        if detail:
            message += f' The API said: "{detail.rstrip(".")}".'
    message = client.redact(message, limit=MESSAGE_CHARS)
    if len(record.failed_exchanges) < MAX_RECORDED_FAILURES:
        record.failed_exchanges.append(
            client.record_of(exchange, message)
        )
    return message


def _receive(client: InstanceClient, shape: Shape, record: FlowRunShape) -> list[list]:
    exchange = _request(client, shape, record)
    problem = _failure(client, exchange, record)
    if problem:
        raise ShapeFailed(problem)
    records, warning = records_of(exchange.json)
    record.pages = 1
    record.items_out = len(records)
    if warning:
        record.warnings.append(warning)
    return [records]


def _send(
    client: InstanceClient,
    shape: Shape,
    bucket: list[list],
    record: FlowRunShape,
    checkpoint: Callable[[], None],
) -> list[list]:
    items = [item for payload in bucket for item in payload]
    if not items:
        record.warnings.append("Nothing to send: no items came from the previous shape.")
        return []
    responses: list = []
    last_problem = ""
    for index, item in enumerate(items):
        if index:
            checkpoint()
        exchange = _request(client, shape, record, json_body=item)
        problem = _failure(client, exchange, record)
        if problem:
            last_problem = problem
            if len(record.errors) < MAX_RECORDED_FAILURES:
                record.errors.append(f"Item {index + 1}: {problem}")
            continue
        responses.append(exchange.json if exchange.json is not None else {})
    record.items_out = len(responses)
    if not responses:
        raise ShapeFailed(f"none of the {len(items)} item(s) was accepted. Last error: {last_problem}")
    return [responses]
