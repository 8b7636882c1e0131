"""In a real browser, no page breaks the Content-Security-Policy (htmx, Bootstrap and our script included)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from marketplace import catalog
from marketplace.models import Listing
from patchworks_site.models import Company, Role, User

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_main_pages_and_htmx_interactions_cause_no_policy_violation(page, live_server, log_in, make_instance):
    for entry in catalog.iter_catalog():
        if entry.slug == "sandbox":
            catalog.publish(entry.slug, entry.manifest, entry.changelog)
    company = Company.objects.create(name="Acme Retail")
    User.objects.create_user("operator", password="pw-for-tests", company=company, role=Role.ADMINISTRATOR,
                             is_staff=True, is_superuser=True)
    connector = catalog.install(Listing.objects.get(slug="sandbox").latest_version, company)
    instance = make_instance(connector, values={"username": "sandbox"}, secrets={"password": "sandbox-secret"},
                             auth_method=connector.auth_methods.get(type="basic"))
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => console.error("
        "'Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI))"
    )

    log_in("operator")
    for url in ["/connectors/", "/marketplace/", "/marketplace/sandbox/", "/instances/pools/", "/flows/", "/audit/",
                f"/instances/{instance.pk}/", "/admin/instances/instance/", f"/admin/instances/instance/{instance.pk}/change/"]:
        page.goto(url)
    # htmx at work: the wizard's steps and its live date preview.
    page.goto(f"/instances/new/{connector.pk}/")
    page.get_by_label("Name").fill("Second")
    page.get_by_role("button", name="next step").click()
    page.get_by_label("Date format").fill("%Y")
    expect(page.get_by_text("Now: ")).to_be_visible()
    # Our own script: the pool field's clear button and the settings tabs.
    page.goto(f"/instances/{instance.pk}/")
    page.get_by_role("tab", name="response").click()

    assert violations == []
