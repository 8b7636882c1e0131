import pytest

from flows.models import ProcessFlow, Shape
from patchworks_site.models import Role


@pytest.fixture
def instance(company, make_connector, make_instance):
    return make_instance(make_connector(company, name="Shop API"), "Shop - UK")


def test_create_a_flow_add_and_remove_shapes_and_enable_it(admin_client, company, instance):
    response = admin_client.post("/flows/", {"name": "  Orders   to ERP "})
    flow = ProcessFlow.objects.get(company=company)
    assert response["Location"] == f"/flows/{flow.pk}/"
    assert flow.name == "Orders to ERP" and flow.enabled is False

    endpoint = instance.connector.endpoints.get()
    page = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    assert "Shop - UK — Shop API" in page and "List orders" in page
    admin_client.post(f"/flows/{flow.pk}/", {"target": f"{instance.pk}:{endpoint.pk}"})
    shape = Shape.objects.get(flow=flow)
    assert (shape.instance, shape.endpoint) == (instance, endpoint)

    admin_client.post(f"/flows/{flow.pk}/toggle/", {"enabled": "1"})
    flow.refresh_from_db()
    assert flow.enabled is True

    admin_client.post(f"/flows/{flow.pk}/shapes/{shape.pk}/remove/")
    assert not Shape.objects.exists()


def test_an_endpoint_of_another_connector_or_company_is_refused(
    admin_client, company, other_company, instance, make_connector, make_instance
):
    flow = ProcessFlow.objects.create(company=company, name="Flow")
    other = make_connector(company, name="Other API")
    foreign = make_instance(make_connector(other_company, name="Globex API"), "Globex")
    for target in (f"{instance.pk}:{other.endpoints.get().pk}", f"{foreign.pk}:{foreign.connector.endpoints.get().pk}", "garbage"):
        response = admin_client.post(f"/flows/{flow.pk}/", {"target": target})
        assert response.status_code == 422
        assert "Choose an endpoint of one of your instances." in response.content.decode()
    assert not Shape.objects.exists()


def test_an_empty_flow_name_is_refused(admin_client):
    response = admin_client.post("/flows/", {"name": "   "})
    assert response.status_code == 422
    assert not ProcessFlow.objects.exists()


def test_deleting_a_flow_needs_confirm(admin_client, company):
    flow = ProcessFlow.objects.create(company=company, name="Old")
    admin_client.post(f"/flows/{flow.pk}/delete/", {"confirm": "no"})
    assert ProcessFlow.objects.filter(pk=flow.pk).exists()
    admin_client.post(f"/flows/{flow.pk}/delete/", {"confirm": "confirm"})
    assert not ProcessFlow.objects.filter(pk=flow.pk).exists()


def test_read_only_users_cannot_change_flows(make_user, company, client_for):
    flow = ProcessFlow.objects.create(company=company, name="Flow")
    client = client_for(make_user(company, Role.READ_ONLY))
    assert client.post("/flows/", {"name": "New"}).status_code == 403
    assert client.post(f"/flows/{flow.pk}/toggle/", {"enabled": "1"}).status_code == 403
    assert client.post(f"/flows/{flow.pk}/delete/", {"confirm": "confirm"}).status_code == 403
    assert "create process flow" not in client.get("/flows/").content.decode()
