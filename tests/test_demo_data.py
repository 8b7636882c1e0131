import socket

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from connectors.models import Connector
from flows.models import ProcessFlow, ShapeKind
from instances.models import Instance
from marketplace import catalog
from marketplace.models import Listing
from patchworks_site.models import Company, User
from sandbox.management.commands.seed_demo import DEMO_FLOW_NAME, DEMO_FLOW_SANDBOX_VERSION
from sandbox.models import SandboxAccount

# The demo's checks reach the Sandbox served on its own thread and connection: the demo data is committed
# (transactional_db), so the Sandbox finds the company's account key the checks send.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sandbox_with_paginated_orders() -> None:
    """The catalog, with a Sandbox version the demo flow needs (a stand-in copy of the newest when the catalog has none)."""
    catalog.load_catalog()
    listing = Listing.objects.get(slug="sandbox")
    if catalog.version_key(listing.latest_version.version) < catalog.version_key(DEMO_FLOW_SANDBOX_VERSION):
        catalog.publish("sandbox", {**listing.latest_version.manifest, "version": DEMO_FLOW_SANDBOX_VERSION})


def test_demo_data_is_idempotent_and_shows_the_product(transactional_db, settings):
    settings.DEBUG = True  # the test runner turns it off
    settings.SANDBOX_BASE_URL = f"http://127.0.0.1:{free_port()}/sandbox/api"
    sandbox_with_paginated_orders()
    call_command("seed_demo")
    counts = (Company.objects.count(), Connector.objects.count(), Instance.objects.count(), ProcessFlow.objects.count())
    call_command("seed_demo")
    assert (Company.objects.count(), Connector.objects.count(), Instance.objects.count(), ProcessFlow.objects.count()) == counts

    demo = User.objects.get(username="demo")
    assert demo.check_password("demo") and demo.company.name == "Acme Retail" and demo.get_role_display() == "Administrator"
    client = Client()
    assert client.login(username="demo", password="demo")
    page = client.get("/connectors/").content.decode()
    assert "update available" in page
    assert 'data-testid="modified-info"' in page
    assert "Sandbox - UK" in page
    # Every demo instance was checked live against the Sandbox, served on its address for the purpose.
    assert "Not checked" not in page and page.count('data-testid="auth-status"><i class="bi bi-check-circle"></i> Authenticated') == 5
    assert set(Instance.objects.values_list("last_check_ok", flat=True)) == {True}
    assert Instance.objects.get(name="Sandbox - UK").values["base_url"] == settings.SANDBOX_BASE_URL
    assert "Globex" not in page
    flow = ProcessFlow.objects.get(company=demo.company, name="Sync Sandbox orders")
    assert flow.shapes.get().instance.connector.name == "Sandbox"


def test_the_demo_flow_syncs_sandbox_orders_to_a_us_instance_every_15_minutes(transactional_db, settings):
    settings.DEBUG = True
    settings.SANDBOX_BASE_URL = f"http://127.0.0.1:{free_port()}/sandbox/api"
    sandbox_with_paginated_orders()
    call_command("seed_demo")
    call_command("seed_demo")
    flow = ProcessFlow.objects.get(company__name="Acme Retail", name=DEMO_FLOW_NAME)
    assert flow.enabled
    assert [s.description for s in flow.schedules.all()] == ["every 15 minutes"]
    receive, keep, reshape, send = flow.shapes.order_by("position")
    assert [s.kind for s in (receive, keep, reshape, send)] == [ShapeKind.CONNECTION, ShapeKind.FILTER, ShapeKind.MAP,
                                                                 ShapeKind.CONNECTION]
    # The newer Sandbox is installed alongside Acme's 1.0.0 one, which keeps showing "update available".
    assert receive.instance.connector == send.instance.connector
    assert receive.instance.connector.installation.listing_version.version == DEMO_FLOW_SANDBOX_VERSION
    assert Connector.objects.filter(company=flow.company, installation__listing_version__version="1.0.0",
                                    installation__listing_version__listing__slug="sandbox").exists()
    assert (receive.endpoint.key, send.endpoint.key) == ("list_orders", "create_order")
    assert receive.config["parameters"] == {"updated_since": "{{since}}"}
    assert keep.config == {"match": "all", "rules": [
        {"field": "updated_at", "comparison": "in_last", "value": "24", "unit": "hours"}]}
    assert [(f["target"], f["source"], f["convert_date"]) for f in reshape.config["fields"]] == [
        ("reference", "number", False), ("customer", "customer.name", False), ("total", "total", False),
        ("updated", "updated_at", True)]
    assert send.config["send_as"] == "batch"
    # Two zones and formats, so the conversion shows in what the Sandbox receives.
    assert (receive.instance.time_zone, send.instance.time_zone) == ("Europe/London", "America/New_York")
    assert send.instance.date_format == "%m/%d/%Y %H:%M" and receive.instance.date_format != send.instance.date_format
    assert receive.instance.last_check_ok and send.instance.last_check_ok
    # Both instances hold Acme's Sandbox account key (a secret), so what the flow sends is Acme's alone.
    account = SandboxAccount.objects.get(company=flow.company)
    for instance in (receive.instance, send.instance):
        assert SandboxAccount.objects.account_with_key(instance.get_secrets()["account_key"]) == account.account


def test_without_the_newer_sandbox_the_demo_flow_is_skipped(db, settings, capsys):
    settings.DEBUG = True
    settings.SANDBOX_BASE_URL = f"http://127.0.0.1:{free_port()}/sandbox/api"
    catalog.load_catalog()
    listing = Listing.objects.get(slug="sandbox")
    # A catalog whose newest Sandbox is older than the demo flow needs.
    older = [v for v in listing.versions.all()
             if catalog.version_key(v.version) < catalog.version_key(DEMO_FLOW_SANDBOX_VERSION)]
    listing.latest_version = max(older, key=lambda v: catalog.version_key(v.version))
    listing.save()
    listing.versions.exclude(pk__in=[v.pk for v in older]).delete()
    call_command("seed_demo")
    assert not ProcessFlow.objects.filter(name=DEMO_FLOW_NAME).exists()
    assert "was skipped" in capsys.readouterr().out


def test_demo_data_refuses_to_run_without_debug(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("seed_demo")
    assert not User.objects.filter(username="demo").exists()
