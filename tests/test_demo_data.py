import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from connectors.models import Connector
from flows.models import ProcessFlow
from instances.models import Instance
from patchworks_site.models import Company, User


def test_demo_data_is_idempotent_and_shows_the_product(db, settings):
    settings.DEBUG = True  # the test runner turns it off
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
    assert "Globex" not in page
    flow = ProcessFlow.objects.get(company=demo.company, name="Sync Sandbox orders")
    assert flow.shapes.get().instance.connector.name == "Sandbox"


def test_demo_data_refuses_to_run_without_debug(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("seed_demo")
    assert not User.objects.filter(username="demo").exists()
