import socket

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from connectors.models import Connector
from flows.models import ProcessFlow
from instances.models import Instance
from patchworks_site.models import Company, User


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_demo_data_is_idempotent_and_shows_the_product(db, settings):
    settings.DEBUG = True  # the test runner turns it off
    settings.SANDBOX_BASE_URL = f"http://127.0.0.1:{free_port()}/sandbox/api"
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
    assert "Not checked" not in page and page.count('data-testid="auth-status"><i class="bi bi-check-circle"></i> Authenticated') == 3
    assert set(Instance.objects.values_list("last_check_ok", flat=True)) == {True}
    assert Instance.objects.get(name="Sandbox - UK").values["base_url"] == settings.SANDBOX_BASE_URL
    assert "Globex" not in page
    flow = ProcessFlow.objects.get(company=demo.company, name="Sync Sandbox orders")
    assert flow.shapes.get().instance.connector.name == "Sandbox"


def test_demo_data_refuses_to_run_without_debug(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("seed_demo")
    assert not User.objects.filter(username="demo").exists()
