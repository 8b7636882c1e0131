import threading
import time

import pytest
from django.db import IntegrityError, connection, connections, transaction

from flows.models import ProcessFlow, Shape
from instances.models import Instance


@pytest.fixture
def instance(company, make_connector, make_instance):
    return make_instance(make_connector(company), "To remove")


def test_typing_confirm_removes_an_unused_instance_at_once(admin_client, instance):
    response = admin_client.post(f"/instances/{instance.pk}/remove/", {"confirm": "confirm"}, follow=True)
    assert not Instance.objects.filter(pk=instance.pk).exists()
    assert "Instance &quot;To remove&quot; was removed." in response.content.decode()


def test_anything_but_confirm_removes_nothing(admin_client, instance):
    response = admin_client.post(f"/instances/{instance.pk}/remove/", {"confirm": "yes"}, headers={"HX-Request": "true"})
    assert response.status_code == 422
    assert "Type confirm to remove this instance." in response.content.decode()
    assert Instance.objects.filter(pk=instance.pk).exists()


def test_an_instance_used_in_flows_is_not_removed_and_the_flows_are_listed(admin_client, instance):
    endpoint = instance.connector.endpoints.first()
    for name, enabled in (("Orders to ERP", True), ("Old sync", False)):
        flow = ProcessFlow.objects.create(company=instance.company, name=name, enabled=enabled)
        Shape.objects.create(flow=flow, instance=instance, endpoint=endpoint)
    response = admin_client.post(f"/instances/{instance.pk}/remove/", {"confirm": "confirm"}, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 409
    assert "is used in process flows" in body
    assert "Orders to ERP" in body and "(enabled)" in body and "Old sync" in body and "(disabled)" in body
    assert "/flows/" in body
    assert Instance.objects.filter(pk=instance.pk).exists()


def test_without_javascript_the_refusal_comes_back_as_a_message(admin_client, instance):
    flow = ProcessFlow.objects.create(company=instance.company, name="Orders")
    Shape.objects.create(flow=flow, instance=instance, endpoint=instance.connector.endpoints.first())
    response = admin_client.post(f"/instances/{instance.pk}/remove/", {"confirm": "confirm"}, follow=True)
    assert "This instance is used in process flows." in response.content.decode()
    assert Instance.objects.filter(pk=instance.pk).exists()


def test_removal_needs_a_post_with_csrf(admin_user, instance):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.get(f"/instances/{instance.pk}/remove/").status_code == 405
    assert client.post(f"/instances/{instance.pk}/remove/", {"confirm": "confirm"}).status_code == 403
    assert Instance.objects.filter(pk=instance.pk).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL to interleave two real transactions")
@pytest.mark.django_db(transaction=True)
def test_a_flow_added_concurrently_cannot_be_orphaned(client_for, admin_user, company, make_connector, make_instance):
    """A shape inserted (not yet committed) while the instance is removed: one of the two must lose."""
    instance = make_instance(make_connector(company), "Raced")
    pk = instance.pk
    endpoint = instance.connector.endpoints.first()
    flow = ProcessFlow.objects.create(company=company, name="Racing flow")
    shape_inserted = threading.Event()
    adder_errors: list[Exception] = []

    def add_shape_slowly() -> None:
        try:
            with transaction.atomic():
                Shape.objects.create(flow=flow, instance_id=pk, endpoint=endpoint)
                shape_inserted.set()
                time.sleep(1.0)  # the removal runs while this insert is not yet committed
        except IntegrityError as exc:
            adder_errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=add_shape_slowly)
    thread.start()
    assert shape_inserted.wait(10)
    response = client_for(admin_user).post(f"/instances/{pk}/remove/", {"confirm": "confirm"}, headers={"HX-Request": "true"})
    thread.join()

    instance_exists = Instance.objects.filter(pk=pk).exists()
    shape_exists = Shape.objects.filter(flow=flow).exists()
    assert instance_exists == shape_exists  # never a shape pointing at a removed instance
    if instance_exists:
        assert response.status_code == 409 and "Racing flow" in response.content.decode()
    else:
        assert response.status_code == 200 and len(adder_errors) == 1  # the concurrent insert was refused

