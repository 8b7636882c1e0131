"""axe-core on every main page and state, and the dialogs and tabs by keyboard alone.

axe-core is vendored in static/vendor/axe-core (from the npm package) and injected
from there: no CDN. Only serious and critical violations fail a test; each one is
reported with its rule, the page state and the elements concerned.
"""

from __future__ import annotations

import json
import re
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect

from connectors.models import Connector
from flows.models import FlowRun, FlowRunShape, ProcessFlow, RunStatus, RunTrigger
from instances.models import ConnectionPool, Instance
from patchworks_site.models import Company, Role, User
from sandbox import api as sandbox_api
from sandbox.models import SandboxReceivedOrder

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BLOCKING = {"serious", "critical"}


class Audit:
    """Runs axe on the current page state and collects serious/critical violations."""

    def __init__(self, page) -> None:
        self.page = page
        self.problems: list[str] = []
        self.states: list[str] = []

    def __call__(self, state: str) -> None:
        self.page.wait_for_load_state("load")
        # Colours are checked after fades (modal, tabs) have finished, not half-way.
        _settled(self.page)
        if not self.page.evaluate("typeof window.axe !== 'undefined'"):
            # Loaded by URL from our own static files: the Content-Security-Policy
            # refuses inline scripts, and a CDN.
            self.page.add_script_tag(url="/static/vendor/axe-core/axe.min.js")
        result = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' ') + ' (' + (n.any[0] || n.all[0] || {message: ''}).message + ')')}))"
        )
        self.states.append(state)
        for violation in result:
            if violation["impact"] in BLOCKING:
                self.problems.append(
                    f"{state} ({self.page.url}): {violation['impact']} {violation['id']} — {violation['help']}: "
                    + json.dumps(violation["nodes"][:5])
                )

    def assert_clean(self) -> None:
        assert not self.problems, "\n".join(self.problems)


@pytest.fixture
def a11y_page(browser, live_server):
    # bypass_csp: axe is injected as a script by the test, which a strict
    # Content-Security-Policy would otherwise (rightly) refuse.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def _log_in(page, username: str, password: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/connectors/")


def test_every_main_page_and_state_has_no_serious_or_critical_violation(a11y_page, live_server, settings):
    settings.SANDBOX_BASE_URL = f"{live_server.url}/sandbox/api"
    settings.DEBUG = True  # seed_demo only runs with DEBUG on
    call_command("seed_demo", stdout=StringIO())
    settings.DEBUG = False
    acme = Company.objects.get(name="Acme Retail")
    sandbox = Connector.objects.get(company=acme, name="Sandbox")
    for i in range(7):  # more than the manage page shows inline
        Instance.with_connector_defaults(
            sandbox, name=f"Sandbox - store {i}", auth_method=sandbox.auth_methods.get(key="token")
        ).save()
    prebuilt = Connector.objects.filter(company=acme, installation__isnull=False).exclude(pk=sandbox.pk)
    modified = next(c for c in prebuilt if c.installation.update_available)  # seed_demo modified it
    custom = Connector.objects.get(company=acme, name="Acme Warehouse API")
    flow = ProcessFlow.objects.get(company=acme, name="Sync Sandbox orders")
    in_use = Instance.objects.get(connector=sandbox, name="Sandbox - UK")
    pool = ConnectionPool.objects.get(company=acme, name="Sandbox pool")
    page = a11y_page
    audit = Audit(page)
    _log_in(page, "demo", "demo")

    # Manage connectors, "show all" in place, the per-connector list.
    audit("manage connectors")
    page.get_by_role("link", name="show all 10 instances of Sandbox").click()
    expect(page.get_by_test_id("instance-count").first).to_contain_text("10 instances")
    audit("manage connectors, show all instances")
    page.goto(f"/connectors/{sandbox.pk}/instances/?q=store")
    audit("instances of a connector, searched")
    page.goto("/connectors/?q=nothing-matches")
    audit("manage connectors, empty search")

    # Marketplace and a listing.
    page.goto("/marketplace/")
    audit("marketplace")
    page.goto("/marketplace/sandbox/")
    audit("marketplace listing")

    # The new instance wizard: each step, with errors.
    page.goto(f"/instances/new/{sandbox.pk}/")
    audit("wizard: name")
    page.get_by_role("button", name="next step").click()
    expect(page.locator(".is-invalid").first).to_be_visible()
    audit("wizard: name, error")
    page.get_by_label("Name").fill("Sandbox - accessibility")
    page.get_by_role("button", name="next step").click()
    expect(page.get_by_label("Time zone")).to_be_visible()
    audit("wizard: settings")
    page.get_by_label("Time zone").fill("Mars/Olympus")
    page.get_by_role("button", name="next step").click()
    expect(page.locator(".is-invalid").first).to_be_visible()
    audit("wizard: settings, error")
    page.get_by_label("Time zone").fill("Europe/London")
    page.get_by_role("button", name="next step").click()
    expect(page.get_by_label("Username and password")).to_be_visible()
    audit("wizard: authentication method")
    page.get_by_label("Username and password").check()
    page.get_by_role("button", name="next step").click()
    page.get_by_label(re.compile(r"^\s*Username\*?\s*$")).fill("sandbox")
    audit("wizard: credentials")
    page.get_by_label(re.compile(r"^\s*Password\*?\s*$")).fill("wrong")
    page.get_by_role("button", name="next step").click()
    expect(page.get_by_test_id("wizard-error")).to_be_visible()
    audit("wizard: credentials refused")

    # Instance settings, each tab; the remove dialog and its states.
    page.goto(f"/instances/{in_use.pk}/")
    audit("instance settings: details")
    for tab in ("authentication", "request", "response"):
        page.get_by_role("tab", name=tab).click()
        expect(page.get_by_role("tab", name=tab)).to_have_attribute("aria-selected", "true")
        audit(f"instance settings: {tab}")
    page.get_by_test_id("trash").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    audit("remove dialog")
    dialog.get_by_label("Type confirm to proceed").fill("no")
    dialog.get_by_role("button", name="remove").click()
    expect(dialog.locator(".invalid-feedback")).to_be_visible()
    audit("remove dialog, not confirmed")
    dialog.get_by_label("Type confirm to proceed").fill("confirm")
    dialog.get_by_role("button", name="remove").click()
    expect(dialog.get_by_test_id("in-use")).to_be_visible()
    audit("remove dialog, refused while in use")

    # Connector settings, history, builder steps (with an error), update prompt.
    page.goto(f"/connectors/{custom.pk}/")
    audit("connector settings")
    page.goto(f"/connectors/{custom.pk}/history/")
    audit("connector history")
    page.goto("/connectors/new/")
    audit("builder: new connector")
    page.get_by_role("button", name="next step").click()
    expect(page.locator(".is-invalid").first).to_be_visible()
    audit("builder: new connector, errors")
    for step in ("details", "variables", "auth", "endpoints"):
        page.goto(f"/connectors/{custom.pk}/build/{step}/")
        audit(f"builder: {step}")
    page.goto(f"/connectors/{custom.pk}/build/auth/?edit=api_key")
    audit("builder: editing an authentication method")
    page.goto(f"/marketplace/updates/{modified.pk}/")
    audit("update prompt of a modified connector")
    page.goto(f"/marketplace/updates/{sandbox.pk}/")
    audit("update prompt")

    # Connection pools, process flows, audit log.
    page.goto("/instances/pools/")
    audit("connection pools")
    page.goto(f"/instances/pools/{pool.pk}/")
    audit("connection pool")
    page.goto("/flows/")
    audit("process flows")
    page.goto(f"/flows/{flow.pk}/")
    audit("process flow")
    page.get_by_role("button", name="Delete process flow", exact=True).click()
    expect(page.get_by_label("Type confirm to delete this process flow and its connection shapes")).to_be_visible()
    audit("process flow, delete opened")
    shape = flow.shapes.order_by("position").first()
    page.goto(f"/flows/{flow.pk}/shapes/{shape.pk}/")
    audit("connection shape settings")
    page.goto(f"/flows/{flow.pk}/")
    page.get_by_role("button", name="add filter shape").click()
    page.wait_for_url("**/shapes/*/")
    audit("filter shape settings")
    page.get_by_role("button", name=re.compile("^save step")).click()
    expect(page.get_by_text("Add at least one rule.")).to_be_visible()
    audit("filter shape settings, error")
    page.goto("/flows/runs/?queued_from=nope")
    audit("run log, a bad filter")
    now = timezone.now()
    run = FlowRun.objects.create(company=acme, flow=flow, status=RunStatus.SUCCESS, trigger=RunTrigger.MANUAL,
                                 queued_at=now, reference_time=now, started_at=now, finished_at=now)
    FlowRunShape.objects.create(run=run, position=0, shape_name="Sandbox - UK → List orders", status="success",
                                started_at=now, finished_at=now, items_out=1, pages=1, requests=1,
                                payload_sample={"in": [], "out": [{"id": 1, "note": "x" * 400}] * 30})
    page.goto(f"/flows/runs/{run.pk}/")
    page.get_by_text("Sample items").click()
    audit("run page, a payload sample opened")
    page.goto("/settings/company/")
    audit("company settings")
    page.goto("/audit/")
    audit("audit log")
    page.goto("/sandbox/received-orders/")
    audit("sandbox received orders, empty")
    SandboxReceivedOrder.objects.create(received_at=timezone.now(), account=sandbox_api.account_for(acme.pk), body={
        "reference": "SB-1", "customer": "Ada Lovelace", "total": "9.99", "updated": "11/23/2026 13:40"})
    page.goto("/sandbox/received-orders/")
    page.get_by_text("JSON", exact=True).click()
    audit("sandbox received orders, one opened")

    # A read-only user: update available as information.
    User.objects.create_user("reader", password="pw-for-tests", company=acme, role=Role.READ_ONLY)
    page.context.clear_cookies()
    _log_in(page, "reader", "pw-for-tests")
    audit("manage connectors, read-only")
    page.goto(f"/instances/{in_use.pk}/")
    audit("instance settings, read-only")

    assert len(audit.states) >= 35
    audit.assert_clean()


def _settled(page) -> None:
    # Polled from here: wait_for_function evaluates its predicate with eval(),
    # which the dashboard's Content-Security-Policy (rightly) refuses.
    deadline = time.monotonic() + 10
    while not page.evaluate("document.getAnimations().every(a => a.playState !== 'running')"):
        assert time.monotonic() < deadline, "animations did not settle"
        page.wait_for_timeout(25)


def _tab_to(page, predicate: str, limit: int = 60) -> None:
    """Press Tab until the focused element matches the JavaScript predicate (on `el`)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return !!({predicate}); }})()"):
            return
    raise AssertionError(f"Tab never reached an element where {predicate}")


def test_the_remove_dialog_and_the_tabs_work_by_keyboard_alone(page, log_in, make_connector, make_instance):
    company = Company.objects.create(name="Acme Retail")
    User.objects.create_user("operator", password="pw-for-tests", company=company, role=Role.ADMINISTRATOR)
    instance = make_instance(make_connector(company, name="Orders API"), "Keyboard shop")
    log_in("operator")
    page.goto(f"/instances/{instance.pk}/")

    # Tabs: arrow keys move between them and show their panel.
    page.get_by_role("tab", name="details").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="authentication")).to_be_focused()
    expect(page.get_by_role("tab", name="authentication")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#authentication-pane")).to_be_visible()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="request")).to_have_attribute("aria-selected", "true")

    # The remove dialog: Tab to the trash icon, Enter, Tab to the box, type confirm, Tab to remove, Enter.
    page.goto(f"/instances/{instance.pk}/")
    _tab_to(page, "el.dataset.testid === 'trash'")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    _settled(page)
    _tab_to(page, "el.id === 'confirm-input'")
    page.keyboard.type("confirm")
    _tab_to(page, "el.tagName === 'BUTTON' && el.textContent.trim() === 'remove'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/connectors/")
    expect(page.get_by_role("alert").first).to_contain_text('Instance "Keyboard shop" was removed.')
    assert not Instance.objects.filter(pk=instance.pk).exists()


def test_escape_closes_the_remove_dialog_and_focus_returns_to_the_trash_icon(page, log_in, make_connector, make_instance):
    company = Company.objects.create(name="Acme Retail")
    User.objects.create_user("operator", password="pw-for-tests", company=company, role=Role.ADMINISTRATOR)
    instance = make_instance(make_connector(company, name="Orders API"), "Keyboard shop")
    log_in("operator")
    page.goto(f"/instances/{instance.pk}/")
    _tab_to(page, "el.dataset.testid === 'trash'")
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    _settled(page)
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.get_by_test_id("trash")).to_be_focused()
    assert Instance.objects.filter(pk=instance.pk).exists()
