"""Test step: the flow editor runs the flow up to one shape on one page of real data, and sends nothing.

The third party is a pytest-httpserver API; the run the button queues is executed here as a worker would
(flows.execution.execute), then the editor's result (the htmx poll, or the flow page without JavaScript) is read.
"""

from __future__ import annotations

import base64
import json
import re
from html import unescape
from urllib.parse import quote

import pytest
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from huey.contrib.djhuey import HUEY
from werkzeug import Request, Response

from flows import execution, queueing
from flows.models import FlowRun, FlowRunShape, ProcessFlow, RunStatus, RunTrigger, Shape, ShapeKind
from patchworks_site.models import Role
from tests.flow_helpers import API_TOKEN, connection, connector, endpoint_of, flow_of, instance, map_shape  # noqa: F401 - fixtures
from tests.test_engine_workers import Workers, wait_until
from tests.test_secret_canaries import Canaries, find_leaks

HTMX = {"HTTP_HX_REQUEST": "true"}
ORDERS = [
    {"id": 1, "customer": {"email": "ann@example.com", "name": "Ann"}, "lines": [{"sku": "A-1", "qty": 2}]},
    {"id": 2, "customer": {"email": "bob@example.com", "name": "Bob"}, "lines": [{"sku": "B-7", "qty": 1}]},
]


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def imports_received(httpserver) -> list:
    return [request for request, _ in httpserver.log if request.path == "/api/imports"]


def press_test_step(client: Client, shape: Shape) -> tuple[FlowRun, str]:
    """Press "test step" on the shape's card (htmx); the queued run and the card's first answer."""
    response = client.post(f"/flows/{shape.flow_id}/shapes/{shape.pk}/test/", **HTMX)
    assert response.status_code == 200
    run = FlowRun.objects.filter(test_shape=shape).latest("id")
    return run, response.content.decode()


def result_after_worker(client: Client, shape: Shape, run: FlowRun) -> str:
    """The worker executes the run; then the card's next poll (every second) answers with the result."""
    execution.execute(run.pk)
    response = client.get(f"/flows/{shape.flow_id}/shapes/{shape.pk}/test/{run.pk}/", **HTMX)
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def receive_map_send(company, instance):
    return flow_of(
        company,
        connection(instance, "list_orders"),
        map_shape({"target": "email", "source": "customer.email"}, {"target": "sku", "source": "lines.0.sku"}),
        connection(instance, "import_order"),
        name="Orders to ERP",
    )


def test_a_test_step_on_a_receive_shape_shows_the_records_of_one_page(admin_client, receive_map_send, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    receive = receive_map_send.shapes.get(position=0)

    run, first = press_test_step(admin_client, receive)
    assert run.trigger == RunTrigger.TEST and run.status == RunStatus.QUEUED
    # Until the worker has finished, the card polls every second with a progress message.
    assert 'hx-trigger="every 1s"' in first and f'hx-get="/flows/{receive_map_send.pk}/shapes/{receive.pk}/test/{run.pk}/"' in first
    assert "Testing step 1 (run" in text_of(first) and "waiting for a worker" in text_of(first)

    result = result_after_worker(admin_client, receive, run)
    assert "every 1s" not in result  # finished: the polling stops
    text = text_of(result)
    assert "Test step success" in text and "Records out of this step: 2" in text
    assert '"email": "ann@example.com"' in unescape(result) and '"sku": "B-7"' in unescape(result)
    # It stopped after that shape: the map and the send shape never ran.
    assert list(run.shape_runs.values_list("position", flat=True)) == [0]
    assert imports_received(httpserver) == []


def test_a_test_step_on_a_map_shows_the_mapped_records_and_offers_the_input_paths(admin_client, receive_map_send, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    mapping = receive_map_send.shapes.get(kind=ShapeKind.MAP)

    run, _ = press_test_step(admin_client, mapping)
    result = unescape(result_after_worker(admin_client, mapping, run))
    records = json.loads(re.search(r'data-testid="test-step-records">(.*?)</pre>', result, re.S).group(1))
    assert records == [{"email": "ann@example.com", "sku": "A-1"}, {"email": "bob@example.com", "sku": "B-7"}]
    options = re.findall(r'<option value="([^"]*)"></option>', result)
    assert options == ["customer", "customer.email", "customer.name", "id", "lines", "lines.0", "lines.0.qty", "lines.0.sku"]
    assert f'<datalist id="source-paths-{mapping.pk}">' in result

    # The map's settings: every "from input field" offers those paths (the panel on the flow page, or its own page).
    panel = admin_client.get(f"/flows/{receive_map_send.pk}/shapes/{mapping.pk}/", HTTP_HX_TARGET="shape-panel", **HTMX)
    inputs = re.findall(r'<input[^>]*name="fields-\d+-source"[^>]*>', panel.content.decode())
    assert inputs and all(f'list="source-paths-{mapping.pk}"' in tag for tag in inputs)
    page = admin_client.get(f"/flows/{receive_map_send.pk}/shapes/{mapping.pk}/").content.decode()
    assert re.findall(r'<option value="([^"]*)"></option>', page) == options
    assert imports_received(httpserver) == []


def test_a_test_step_made_before_the_flow_changed_says_so(admin_client, receive_map_send, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    mapping = receive_map_send.shapes.get(kind=ShapeKind.MAP)
    run, _ = press_test_step(admin_client, mapping)
    assert "changed after this test step" not in text_of(result_after_worker(admin_client, mapping, run))
    assert "changed after this test step" not in text_of(admin_client.get(f"/flows/{receive_map_send.pk}/").content.decode())

    Shape.objects.filter(pk=mapping.pk).update(config={"fields": [{"target": "id", "source": "id"}], "keep_unmapped": False})
    page = text_of(admin_client.get(f"/flows/{receive_map_send.pk}/").content.decode())
    assert "before the flow's last change" in page
    assert "The flow's shapes were changed after this test step: test the step again to see what they do now." in page


def test_a_map_never_tested_offers_no_paths(admin_client, receive_map_send):
    mapping = receive_map_send.shapes.get(kind=ShapeKind.MAP)
    page = admin_client.get(f"/flows/{receive_map_send.pk}/shapes/{mapping.pk}/").content.decode()
    assert "<datalist" not in page and 'list="source-paths' not in page
    assert "test step on this map offers the input's paths here" in text_of(page)


def test_a_test_step_on_a_send_shape_shows_what_it_would_send_and_sends_nothing(admin_client, receive_map_send, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    httpserver.expect_request("/api/imports").respond_with_json({"imported": True}, status=201)
    send = receive_map_send.shapes.get(position=2)

    run, _ = press_test_step(admin_client, send)
    result = result_after_worker(admin_client, send, run)

    assert imports_received(httpserver) == []  # the API received nothing
    text = text_of(result)
    assert "not sent: test step" in text and "What this step would send (2 items in)" in text
    assert f"POST {httpserver.url_for('/api/imports')} Item 1" in text
    bodies = [json.loads(body) for body in re.findall(r'aria-label="Body of [^"]*">(.*?)</pre>', unescape(result), re.S)]
    assert bodies == [{"email": "ann@example.com", "sku": "A-1"}, {"email": "bob@example.com", "sku": "B-7"}]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS
    send_row = run.shape_runs.get(position=2)
    assert (send_row.items_in, send_row.items_out, send_row.requests) == (2, 0, 0)
    assert send_row.warnings == ["Not sent (test step): 2 request(s) with 2 item(s) would have been sent."]
    # The run's page says so too.
    run_page = text_of(admin_client.get(f"/flows/runs/{run.pk}/").content.decode())
    assert "Trigger test step by ada (nothing sent)" in run_page and "Not sent: test step [" in run_page
    assert "retry" not in run_page


def batch_test_step(client: Client, company, instance, httpserver, orders: list) -> tuple[str, list]:
    """Test step on a batch send shape after a receive of `orders`: the card's text and the batch body it shows."""
    httpserver.expect_request("/api/orders").respond_with_json({"orders": orders})
    flow = flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order", send_as="batch"))
    send = flow.shapes.get(position=1)
    run, _ = press_test_step(client, send)
    result = unescape(result_after_worker(client, send, run))
    assert imports_received(httpserver) == []
    (body,) = re.findall(r'aria-label="Body of [^"]*">(.*?)</pre>', result, re.S)
    return text_of(result), json.loads(body)


def test_a_batch_send_shape_shows_the_one_batch_it_would_send(admin_client, company, instance, httpserver):
    text, body = batch_test_step(admin_client, company, instance, httpserver, ORDERS)
    assert body == ORDERS
    assert "Page 1 (2 items)" in text and "Body: the first" not in text


def test_a_large_batch_shows_its_first_records(admin_client, company, instance, httpserver):
    many = [{"id": number, "note": "x" * 2000} for number in range(1, 61)]
    text, body = batch_test_step(admin_client, company, instance, httpserver, many)
    assert "Page 1 (60 items)" in text and "Body: the first 10 of its 60 items." in text
    assert [item["id"] for item in body] == list(range(1, 11))


def test_a_send_shape_before_the_tested_shape_sends_nothing_and_the_card_says_why_nothing_came(
        admin_client, company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    flow = flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order"),
                   map_shape({"target": "id", "source": "id"}))
    mapping = flow.shapes.get(position=2)
    run, _ = press_test_step(admin_client, mapping)
    text = text_of(result_after_worker(admin_client, mapping, run))
    assert imports_received(httpserver) == []
    assert ("Shape 2 (Shop - UK → Import order): Not sent (test step): 2 request(s) with 2 item(s) would have "
            "been sent.") in text
    assert "No records came out of this step." in text


def test_pressing_test_step_hands_the_run_to_the_workers_queue(admin_client, receive_map_send,
                                                                django_capture_on_commit_callbacks):
    HUEY.flush()
    receive = receive_map_send.shapes.get(position=0)
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = press_test_step(admin_client, receive)
    (task,) = HUEY.pending()
    assert task.name.endswith("execute_run") and task.args == (run.pk,)
    HUEY.flush()


def test_the_flow_page_reads_every_shapes_test_step_in_the_same_number_of_queries(admin_client, company, instance):
    def queries_with(shapes: int) -> int:
        flow = flow_of(company, *[connection(instance, "list_orders") for _ in range(shapes)], name=f"{shapes} shapes")
        for shape in flow.shapes.all():
            queueing.queue_run(flow, RunTrigger.TEST, test_shape=shape)
        with CaptureQueriesContext(db_connection) as queries:
            assert admin_client.get(f"/flows/{flow.pk}/").status_code == 200
        return len(queries)

    assert queries_with(2) == queries_with(12)


def test_a_shape_after_the_tested_one_that_cannot_run_does_not_stop_the_test(admin_client, receive_map_send, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    Shape.objects.filter(flow=receive_map_send, position=2).update(endpoint=None, missing_endpoint="Import order")
    receive = receive_map_send.shapes.get(position=0)
    run, _ = press_test_step(admin_client, receive)
    assert "Records out of this step: 2" in text_of(result_after_worker(admin_client, receive, run))
    # The real run refuses to start, naming that shape.
    real = execution.execute(queueing.queue_run(receive_map_send, RunTrigger.MANUAL).pk)
    assert real.status == RunStatus.FAILED and "Shape 3" in real.failure_reason


def test_a_test_step_reads_one_page_only(admin_client, company, instance, httpserver):
    endpoint_of(instance, "list_orders", pagination={"style": "page_number", "limit": 2})
    flow = flow_of(company, connection(instance, "list_orders"))
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    receive = flow.shapes.get()

    run, _ = press_test_step(admin_client, receive)
    text = text_of(result_after_worker(admin_client, receive, run))
    assert [request.args.get("page") for request, _ in httpserver.log] == ["1"]
    assert "Test step: only the first page was read; more pages may be available." in text


def test_a_failing_api_shows_the_reason(admin_client, receive_map_send, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"message": "Database is on fire"}, status=500)
    mapping = receive_map_send.shapes.get(kind=ShapeKind.MAP)
    run, _ = press_test_step(admin_client, mapping)
    text = text_of(result_after_worker(admin_client, mapping, run))
    assert "Test step failed" in text
    assert ('The test step failed. Shape 1 (Shop - UK → List orders): The API answered 500 Internal Server Error. '
            'The API said: "Database is on fire".') in text
    assert imports_received(httpserver) == []


def test_credentials_the_api_refuses_show_the_reason(admin_client, receive_map_send, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"error": "invalid api token"}, status=401)
    receive = receive_map_send.shapes.get(position=0)
    run, _ = press_test_step(admin_client, receive)
    text = text_of(result_after_worker(admin_client, receive, run))
    assert "The API answered 401 Unauthorized." in text and "invalid api token" in text


def test_a_shape_with_no_receive_shape_before_it_says_why_nothing_reaches_it(admin_client, company):
    flow = flow_of(company, map_shape({"target": "a", "source": "b"}))
    mapping = flow.shapes.get()
    run, _ = press_test_step(admin_client, mapping)
    text = text_of(result_after_worker(admin_client, mapping, run))
    assert "Shape 1 (map): no connection shape comes before it, so no data reaches it." in text


def test_the_sample_holds_no_secret(admin_client, receive_map_send, httpserver):
    # The API echoes the instance's token inside the records: the stored sample and the card must not.
    echoed = [{**order, "note": f"token {API_TOKEN}"} for order in ORDERS]
    httpserver.expect_request("/api/orders").respond_with_json({"orders": echoed})
    receive = receive_map_send.shapes.get(position=0)
    run, _ = press_test_step(admin_client, receive)
    result = result_after_worker(admin_client, receive, run)
    assert API_TOKEN not in result and "token [redacted]" in unescape(result)
    stored = json.dumps(list(FlowRunShape.objects.filter(run=run).values_list("payload_sample", flat=True)))
    assert API_TOKEN not in stored and "[redacted]" in stored
    page = admin_client.get(f"/flows/{receive_map_send.pk}/?test_run={run.pk}").content.decode()
    assert API_TOKEN not in page


def test_no_spelling_of_a_secret_the_api_echoes_comes_out_of_a_test_step(admin_client, company, connector, make_instance,
                                                                           httpserver):
    canaries = Canaries()
    token = canaries.new("test-step-token")
    instance = make_instance(connector, "Shop - UK", {"api_token": token})

    def echo(request: Request) -> Response:
        sent = request.headers["Authorization"].removeprefix("Bearer ")
        assert sent == token
        record = {"id": 1, "plain": sent, "base64": base64.b64encode(sent.encode()).decode(),
                  "quoted": quote(sent, safe=""), "nested": {"json": json.dumps({"token": sent})}}
        return Response(json.dumps({"orders": [record]}), content_type="application/json")

    httpserver.expect_request("/api/orders").respond_with_handler(echo)
    flow = flow_of(company, connection(instance, "list_orders"), map_shape({"target": "copy", "source": "plain"},
                   keep_unmapped=True), connection(instance, "import_order"), name="Echo")
    texts = []
    for shape in flow.shapes.all():
        run, first = press_test_step(admin_client, shape)
        texts += [first, result_after_worker(admin_client, shape, run),
                  admin_client.get(f"/flows/{flow.pk}/?test_run={run.pk}").content.decode(),
                  admin_client.get(f"/flows/runs/{run.pk}/").content.decode(),
                  admin_client.get(f"/flows/{flow.pk}/shapes/{shape.pk}/").content.decode()]
    assert imports_received(httpserver) == [] and len(httpserver.log) == 3
    texts.append(admin_client.get("/flows/runs/", {"trigger": "test"}).content.decode())
    texts += [json.dumps(row, default=str) for row in FlowRunShape.objects.values()]
    texts += [json.dumps(row, default=str) for row in FlowRun.objects.values()]
    # The records did hold the secret, in every spelling: each sample shows where it was.
    samples = [json.dumps(sample) for sample in FlowRunShape.objects.values_list("payload_sample", flat=True)]
    assert len(samples) == 6 and all(
        '"plain": "[redacted]", "base64": "[redacted]"' in sample and '"quoted": "[redacted]"' in sample for sample in samples)
    index = canaries.index()
    leaks = [leak for text in texts for leak in find_leaks(text, index)]
    assert not leaks, leaks[:5]


def test_without_javascript_the_button_posts_and_the_flow_page_shows_the_result(admin_client, receive_map_send, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    receive = receive_map_send.shapes.get(position=0)
    response = admin_client.post(f"/flows/{receive_map_send.pk}/shapes/{receive.pk}/test/")
    run = FlowRun.objects.get(test_shape=receive)
    assert response.status_code == 302
    assert response["Location"] == f"/flows/{receive_map_send.pk}/?test_run={run.pk}#test-result-{receive.pk}"
    waiting = text_of(admin_client.get(response["Location"]).content.decode())
    assert f"Testing step 1 (run {run.pk}): waiting for a worker… refresh" in waiting
    execution.execute(run.pk)
    page = admin_client.get(response["Location"]).content.decode()
    assert re.search(r'<details open>\s*<summary class="small"><span class="fw-semibold">Test step</span>', page)
    assert "Records out of this step: 2" in text_of(page)
    # The poll URL without htmx leads to the same place.
    poll = admin_client.get(f"/flows/{receive_map_send.pk}/shapes/{receive.pk}/test/{run.pk}/")
    assert poll.status_code == 302 and poll["Location"] == response["Location"]


def test_a_second_press_while_the_test_is_queued_queues_no_other(admin_client, receive_map_send):
    receive = receive_map_send.shapes.get(position=0)
    first, _ = press_test_step(admin_client, receive)
    second, _ = press_test_step(admin_client, receive)
    assert first.pk == second.pk and FlowRun.objects.filter(test_shape=receive).count() == 1


def test_a_test_step_is_not_in_the_way_of_run_now_and_cannot_be_retried(admin_client, receive_map_send):
    receive = receive_map_send.shapes.get(position=0)
    test, _ = press_test_step(admin_client, receive)
    response = admin_client.post(f"/flows/{receive_map_send.pk}/run/")
    real = FlowRun.objects.exclude(pk=test.pk).get()
    assert real.trigger == RunTrigger.MANUAL and response["Location"] == f"/flows/runs/{real.pk}/"
    FlowRun.objects.filter(pk=test.pk).update(status=RunStatus.FAILED)
    test.refresh_from_db()
    assert not test.can_retry and queueing.request_retry(test) is None


def test_a_successful_test_step_is_not_the_last_successful_run(admin_client, company, instance, httpserver):
    flow = flow_of(company, connection(instance, "list_orders"))
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    run, _ = press_test_step(admin_client, flow.shapes.get())
    execution.execute(run.pk)
    real = queueing.queue_run(flow, RunTrigger.MANUAL)
    assert execution.last_success(real) is None


def test_test_runs_are_in_the_run_log_with_trigger_test_and_can_be_filtered(admin_client, admin_user, receive_map_send, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    receive = receive_map_send.shapes.get(position=0)
    test, _ = press_test_step(admin_client, receive)
    execution.execute(test.pk)
    real = execution.execute(queueing.queue_run(receive_map_send, RunTrigger.MANUAL).pk)

    log = text_of(admin_client.get("/flows/runs/").content.decode())
    assert f"Run {test.pk} Orders to ERP success test step by {admin_user} (nothing sent)" in log
    assert f"Run {real.pk}" in log
    assert '<option value="test">test</option>' in admin_client.get("/flows/runs/").content.decode()
    only_tests = text_of(admin_client.get("/flows/runs/", {"trigger": "test"}).content.decode())
    assert f"Run {test.pk}" in only_tests and f"Run {real.pk} " not in only_tests
    # The flow page's runs are the real ones; the test shows on its shape.
    page = admin_client.get(f"/flows/{receive_map_send.pk}/").content.decode()
    runs_table = page.split('id="runs-heading"')[1]
    assert f"Run {real.pk}</a>" in runs_table and f"Run {test.pk}</a>" not in runs_table


def test_test_runs_count_in_neither_the_24_hour_figures_nor_the_last_run_of_the_flow_list(admin_client, company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    flow = flow_of(company, connection(instance, "list_orders"), name="Orders to ERP")
    receive = flow.shapes.get()
    passed, _ = press_test_step(admin_client, receive)
    execution.execute(passed.pk)
    httpserver.clear()
    httpserver.expect_request("/api/orders").respond_with_json({"message": "down"}, status=500)
    failed, _ = press_test_step(admin_client, receive)
    execution.execute(failed.pk)
    assert list(FlowRun.objects.order_by("id").values_list("status", flat=True)) == [RunStatus.SUCCESS, RunStatus.FAILED]

    row = text_of(admin_client.get("/flows/").content.decode())
    assert "Last run: never run" in row and "Last 24 hours: 0 succeeded 0 failed" in row
    summary = ProcessFlow.objects.with_summary(passed.queued_at).get(pk=flow.pk)
    assert (summary.last_run_pk, summary.succeeded_24h, summary.failed_24h) == (None, 0, 0)


@pytest.mark.parametrize("role", [Role.USER, Role.MANAGER, Role.ADMINISTRATOR])
def test_users_managers_and_administrators_may_test_a_step(client_for, make_user, company, role, receive_map_send):
    client = client_for(make_user(company, role))
    receive = receive_map_send.shapes.get(position=0)
    assert 'data-testid="test-step-button"' in client.get(f"/flows/{receive_map_send.pk}/").content.decode()
    run, _ = press_test_step(client, receive)
    assert run.triggered_by.role == role


def test_read_only_sees_results_but_may_not_test_a_step(client_for, make_user, company, receive_map_send, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    receive = receive_map_send.shapes.get(position=0)
    run = queueing.queue_run(receive_map_send, RunTrigger.TEST, test_shape=receive)
    execution.execute(run.pk)
    reader = client_for(make_user(company, Role.READ_ONLY))
    page = reader.get(f"/flows/{receive_map_send.pk}/").content.decode()
    assert 'data-testid="test-step-button"' not in page and "test step" not in text_of(page).replace("Test step", "")
    assert "Records out of this step: 2" in text_of(page)
    assert reader.post(f"/flows/{receive_map_send.pk}/shapes/{receive.pk}/test/", **HTMX).status_code == 403
    assert reader.post(f"/flows/{receive_map_send.pk}/shapes/{receive.pk}/test/").status_code == 403
    assert FlowRun.objects.count() == 1 and len(httpserver.log) == 1


def test_test_step_needs_the_csrf_token(admin_user, receive_map_send):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    receive = receive_map_send.shapes.get(position=0)
    assert client.post(f"/flows/{receive_map_send.pk}/shapes/{receive.pk}/test/", **HTMX).status_code == 403
    assert client.get(f"/flows/{receive_map_send.pk}/shapes/{receive.pk}/test/").status_code == 405
    assert not FlowRun.objects.exists()


def test_another_companys_flow_shape_or_test_run_is_not_found(client_for, make_user, other_company, company, receive_map_send):
    receive = receive_map_send.shapes.get(position=0)
    run = queueing.queue_run(receive_map_send, RunTrigger.TEST, test_shape=receive)
    outsider = client_for(make_user(other_company, Role.ADMINISTRATOR))
    assert outsider.post(f"/flows/{receive_map_send.pk}/shapes/{receive.pk}/test/", **HTMX).status_code == 404
    assert outsider.get(f"/flows/{receive_map_send.pk}/shapes/{receive.pk}/test/{run.pk}/", **HTMX).status_code == 404

    # Their own flow, with our shape or our run in the URL: still not found.
    theirs = ProcessFlow.objects.create(company=other_company, name="Theirs")
    their_shape = Shape.objects.create(flow=theirs, kind=ShapeKind.MAP, position=0, config={"fields": [], "keep_unmapped": True})
    assert outsider.post(f"/flows/{theirs.pk}/shapes/{receive.pk}/test/", **HTMX).status_code == 404
    assert outsider.get(f"/flows/{theirs.pk}/shapes/{their_shape.pk}/test/{run.pk}/", **HTMX).status_code == 404
    assert FlowRun.objects.count() == 1

    # And a run of the flow that is not a test of that shape is not shown as one.
    insider = client_for(make_user(company, Role.ADMINISTRATOR))
    real = queueing.queue_run(receive_map_send, RunTrigger.MANUAL)
    assert insider.get(f"/flows/{receive_map_send.pk}/shapes/{receive.pk}/test/{real.pk}/", **HTMX).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_test_step_and_sends_nothing(admin_client, receive_map_send, httpserver, tmp_path):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    httpserver.expect_request("/api/imports").respond_with_json({"imported": True}, status=201)
    send = receive_map_send.shapes.get(position=2)
    workers = Workers("sqlite", tmp_path)
    try:
        workers.start(threads=1)
        run, first = press_test_step(admin_client, send)  # committed at once: the queue gets the task
        assert "Testing step 3" in text_of(first)
        wait_until(lambda: FlowRun.objects.filter(pk=run.pk, status=RunStatus.SUCCESS).exists(),
                   what=f"the test step; worker logs:\n{workers.logs()}")
    finally:
        workers.close()
    result = admin_client.get(f"/flows/{receive_map_send.pk}/shapes/{send.pk}/test/{run.pk}/", **HTMX).content.decode()
    assert "not sent: test step" in text_of(result) and len(re.findall('data-testid="would-send"', result)) == 2
    assert [request.path for request, _ in httpserver.log] == ["/api/orders"]
