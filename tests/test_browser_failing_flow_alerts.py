"""A flow fails and is fixed, as an operator lives it: the flows list, the run page, an email, a signed webhook.

The runs and the alerts are executed by working off the task queue in the
test's process, as a worker would; the email goes through a real SMTP server
(aiosmtpd) and the webhook to a real HTTP receiver, whose signature is checked.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect
from werkzeug import Request, Response

from alerts.models import AlertEvent
from flows.models import FlowRun, RunStatus
from patchworks_site.models import Role
from tests.alert_helpers import email_channel, empty_queue, rule, smtp_server, webhook_channel, work_off  # noqa: F401
from tests.flow_helpers import connection, connector, flow_of, instance, json_response  # noqa: F401 - fixtures
from tests.test_alert_webhooks import verify
from tests.test_browser_accessibility import Audit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


class Erp:
    """The ERP the flow sends to: down (500 with its reason) until it is fixed."""

    def __init__(self) -> None:
        self.down = True
        self.hooks: list[Request] = []

    def imports(self, request: Request) -> Response:
        if self.down:
            return json_response({"message": "ERP maintenance: imports are closed until 06:00"}, status=500)
        return json_response({"ok": True}, status=201)

    def hook(self, request: Request) -> Response:
        request.get_data()  # read now: the request is checked after the handler returns
        self.hooks.append(request)
        return Response("", status=204)


def run_now(page, flow) -> FlowRun:
    page.goto(f"/flows/{flow.pk}/")
    page.get_by_role("button", name="run now").click()
    run = FlowRun.objects.filter(flow=flow).order_by("-pk").first()
    work_off()  # the run, then the alert it causes and its deliveries
    run.refresh_from_db()
    return run


def test_a_failing_flow_is_shown_and_alerted_once_then_recovered_once(
    page, log_in, make_user, company, instance, httpserver, smtp_server, empty_queue
):
    erp = Erp()
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1, "total": "9.00"}])
    httpserver.expect_request("/api/imports", method="POST").respond_with_handler(erp.imports)
    httpserver.expect_request("/hooks/patchworks", method="POST").respond_with_handler(erp.hook)
    hook, secret = webhook_channel(company, httpserver.url_for("/hooks/patchworks"))
    rule(company, AlertEvent.RUN_FAILED, email_channel(company, recipients="ops@acme.example"), hook)
    flow = flow_of(company, connection(instance, "list_orders"), connection(instance, "import_order"),
                   name="Orders to ERP")
    make_user(company, Role.USER, "uma")
    log_in("uma")
    audit = Audit(page)

    failed = run_now(page, flow)
    assert failed.status == RunStatus.FAILED

    # The flows list shows it failing.
    page.goto("/flows/?status=failing")
    row = page.get_by_test_id("flow").filter(has_text="Orders to ERP")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("failed")
    audit("flows list: a failing flow")

    # The run page shows the failed request with the API's answer.
    row.get_by_role("link", name=f"run {failed.pk}").click()
    page.wait_for_url(f"**/flows/runs/{failed.pk}/")
    page.get_by_text("Failed request 1").click()
    expect(page.get_by_text("ERP maintenance: imports are closed until 06:00").first).to_be_visible()
    audit("run page: the failed request")

    # One email and one signed webhook.
    assert len(smtp_server.messages) == 1
    mail = smtp_server.messages[0]
    assert "Orders to ERP" in mail["Subject"] and "failed" in mail["Subject"]
    assert "ERP maintenance" in mail.get_body(("plain",)).get_content()
    assert len(erp.hooks) == 1
    event = verify(secret, erp.hooks[0])
    assert (event["kind"], event["run"]["id"], event["run"]["status"]) == ("alert", failed.pk, "failed")
    assert "ERP maintenance" in event["run"]["failure_reason"]

    # It fails again: the same streak, nothing more is sent.
    assert run_now(page, flow).status == RunStatus.FAILED
    assert (len(smtp_server.messages), len(erp.hooks)) == (1, 1)

    # Fixed: one "recovered" by each channel.
    erp.down = False
    assert run_now(page, flow).status == RunStatus.SUCCESS
    assert len(smtp_server.messages) == 2 and "recovered" in smtp_server.messages[1]["Subject"].lower()
    assert len(erp.hooks) == 2 and verify(secret, erp.hooks[1])["kind"] == "recovered"
    page.goto("/flows/?status=failing")
    expect(page.get_by_test_id("flow")).to_have_count(0)
    audit.assert_clean()
    assert secret not in json.dumps([verify(secret, hook) for hook in erp.hooks])
