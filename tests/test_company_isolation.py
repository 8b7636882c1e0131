import pytest

from flows.models import ProcessFlow, Shape


@pytest.fixture
def globex_objects(other_company, make_connector, make_instance):
    connector = make_connector(other_company, name="Globex Secret API")
    instance = make_instance(connector, name="Globex live")
    flow = ProcessFlow.objects.create(company=other_company, name="Globex flow")
    Shape.objects.create(flow=flow, instance=instance, endpoint=connector.endpoints.first())
    return connector, instance, flow


def test_another_companys_connector_is_not_found(admin_client, globex_objects):
    connector, _, _ = globex_objects
    assert admin_client.get(f"/connectors/{connector.pk}/").status_code == 404


def test_another_companys_instance_is_not_found(admin_client, globex_objects):
    _, instance, _ = globex_objects
    assert admin_client.get(f"/instances/{instance.pk}/").status_code == 404


def test_another_companys_connector_cannot_get_a_new_instance(admin_client, globex_objects):
    connector, _, _ = globex_objects
    assert admin_client.get(f"/instances/new/{connector.pk}/").status_code == 404


def test_another_companys_flow_is_not_found(admin_client, globex_objects):
    _, _, flow = globex_objects
    assert admin_client.get(f"/flows/{flow.pk}/").status_code == 404


def test_lists_show_only_the_users_company(admin_client, globex_objects, company, make_connector):
    make_connector(company, name="Acme Own API")
    page = admin_client.get("/connectors/").content.decode()
    assert "Acme Own API" in page
    assert "Globex Secret API" not in page and "Globex live" not in page
    assert "Globex flow" not in admin_client.get("/flows/").content.decode()


def test_the_header_shows_the_users_company(admin_client, company):
    page = admin_client.get("/connectors/").content.decode()
    assert 'data-testid="company-name"' in page and "Acme Retail" in page
