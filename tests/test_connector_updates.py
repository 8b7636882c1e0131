import copy

import pytest

from connectors import editing
from connectors import manifest as manifests
from connectors.models import Connector, ConnectorChange
from flows.models import ProcessFlow, Shape
from instances.models import Instance
from marketplace import catalog
from marketplace.models import Listing
from patchworks_site.models import Role


@pytest.fixture
def old_sandbox(company, sandbox_listing, install):
    """Sandbox installed at 1.0.0 (newer versions are published), with an instance used by an enabled flow."""
    return install(sandbox_listing, company, version="1.0.0")


@pytest.fixture
def in_use(old_sandbox, make_instance):
    instance = make_instance(
        old_sandbox, "Sandbox - UK", auth_method=old_sandbox.auth_methods.get(key="token"),
        secrets={"api_token": "sandbox-token"}, values={"base_url": "http://127.0.0.1:1/sandbox/api"},
    )
    flow = ProcessFlow.objects.create(company=old_sandbox.company, name="Orders sync", enabled=True)
    shape = Shape.objects.create(flow=flow, instance=instance, endpoint=old_sandbox.endpoints.get(key="list_orders"))
    return instance, flow, shape


def modify(connector, user, **endpoint) -> None:
    manifest = copy.deepcopy(manifests.export(editing.fresh(connector)))
    manifest["endpoints"].append({
        "key": "list_refunds", "name": "List refunds", "entity": "Refund", "direction": "receive",
        "method": "GET", "path": "/refunds", "parameters": {}, **endpoint,
    })
    editing.save_definition(connector, manifest, user=user)


def publish_version(listing: Listing, version: str, mutate) -> None:
    manifest = copy.deepcopy(listing.latest_version.manifest)
    manifest["version"] = version
    mutate(manifest)
    catalog.publish(listing.slug, manifest, f"Version {version}.")


def test_the_update_page_shows_what_changes_and_the_impact_on_flows(admin_client, old_sandbox, in_use):
    page = admin_client.get(f"/marketplace/updates/{old_sandbox.pk}/").content.decode()
    assert "from version 1.0.0 to 1.5.0" in page
    assert "endpoint List customers" in page and ">added<" in page
    assert "rate limit" in page and "version" in page
    impact = page.split('data-testid="impact-report"')[1]
    # 1.3.0 gives List orders its records path, paging and parameters.
    assert "Orders sync" in impact and "Sandbox - UK → List orders" in impact and ">changed<" in impact
    assert "OVERWRITE" not in page  # unmodified: a plain update


def test_an_unmodified_connector_is_updated_in_place(admin_client, old_sandbox, in_use, sandbox_listing):
    instance, flow, shape = in_use
    response = admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "update"})
    assert response.status_code == 302
    old_sandbox.refresh_from_db()
    assert old_sandbox.version == "1.5.0" and old_sandbox.rate_limit_amount == 120
    assert old_sandbox.endpoints.filter(key="list_customers").exists()
    assert old_sandbox.installation.listing_version == sandbox_listing.latest_version
    instance.refresh_from_db()
    assert instance.get_secrets() == {"api_token": "sandbox-token"} and instance.auth_method.key == "token"
    shape.refresh_from_db()
    assert shape.endpoint.key == "list_orders" and shape.instance == instance
    assert 'data-testid="update-available"' not in admin_client.get("/connectors/").content.decode()
    assert old_sandbox.changes.first().action == ConnectorChange.Action.UPDATED


def test_a_modified_connector_offers_overwrite_or_install_alongside_with_consequences(admin_client, admin_user, old_sandbox, in_use):
    modify(old_sandbox, admin_user)
    page = admin_client.get(f"/marketplace/updates/{old_sandbox.pk}/").content.decode()
    assert "has been modified" in page
    assert "Your modifications to this connector are lost." in page
    assert "Existing instances do NOT need to be re-authenticated." in page
    assert "A new connector is installed alongside your existing (out-of-date) version." in page
    assert "add and authenticate new instances, then re-configure the connection shapes" in page
    response = admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "update"})
    assert response.status_code == 422
    old_sandbox.refresh_from_db()
    assert old_sandbox.version == "1.0.0"


def test_overwrite_loses_modifications_but_instances_stay_authenticated_and_flows_keep_them(admin_client, admin_user, old_sandbox, in_use):
    instance, flow, shape = in_use
    modify(old_sandbox, admin_user)
    Instance.objects.filter(pk=instance.pk).update(last_check_ok=True)
    response = admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "overwrite"})
    assert response.status_code == 302
    old_sandbox.refresh_from_db()
    assert old_sandbox.version == "1.5.0"
    assert not old_sandbox.endpoints.filter(key="list_refunds").exists()
    instance.refresh_from_db()
    assert instance.last_check_ok is True and instance.get_secrets() == {"api_token": "sandbox-token"}
    shape.refresh_from_db()
    assert shape.instance == instance and shape.endpoint.key == "list_orders"
    assert Connector.objects.filter(company=old_sandbox.company).count() == 1
    assert 'data-testid="modified-info"' not in admin_client.get("/connectors/").content.decode()
    assert old_sandbox.changes.first().action == ConnectorChange.Action.OVERWRITTEN


def test_install_alongside_leaves_the_old_connector_and_flows_alone(admin_client, admin_user, old_sandbox, in_use):
    instance, flow, shape = in_use
    modify(old_sandbox, admin_user)
    response = admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "alongside"}, follow=True)
    body = response.content.decode()
    assert "installed alongside your existing version 1.0.0" in body
    assert "add and authenticate new instances, then re-configure the connection shapes" in body
    connectors = Connector.objects.filter(company=old_sandbox.company).order_by("pk")
    assert [(c.name, c.version) for c in connectors] == [("Sandbox", "1.0.0"), ("Sandbox (1.5.0)", "1.5.0")]
    old_sandbox.refresh_from_db()
    assert old_sandbox.endpoints.filter(key="list_refunds").exists()  # modifications kept
    shape.refresh_from_db()
    assert shape.endpoint.connector == old_sandbox and shape.instance == instance
    assert not connectors[1].instances.exists()


def test_a_shape_whose_endpoint_the_update_removes_is_flagged_not_broken(admin_client, old_sandbox, in_use, sandbox_listing):
    instance, flow, shape = in_use
    publish_version(sandbox_listing, "2.0.0", lambda m: m.update(endpoints=[e for e in m["endpoints"] if e["key"] != "list_orders"]))
    impact = admin_client.get(f"/marketplace/updates/{old_sandbox.pk}/").content.decode().split('data-testid="impact-report"')[1]
    assert "removed" in impact and "flagged in their flows" in impact
    response = admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "update"}, follow=True)
    assert "1 connection shape(s) use an endpoint this version removed" in response.content.decode()
    shape.refresh_from_db()
    assert shape.endpoint is None and shape.instance == instance
    assert "List orders: removed in version 2.0.0" == shape.missing_endpoint
    flow_page = admin_client.get(f"/flows/{flow.pk}/").content.decode()
    assert "needs attention" in flow_page and "removed in version 2.0.0" in flow_page
    assert "1 needs attention" in admin_client.get("/flows/").content.decode()


def test_an_update_that_removes_an_auth_method_in_use_is_refused_and_changes_nothing(admin_client, old_sandbox, in_use, sandbox_listing):
    publish_version(sandbox_listing, "2.0.0", lambda m: m.update(auth_methods=[a for a in m["auth_methods"] if a["key"] != "token"]))
    page = admin_client.get(f"/marketplace/updates/{old_sandbox.pk}/").content.decode()
    assert "removes an authentication method used by" in page and "Sandbox - UK" in page
    response = admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "update"})
    assert response.status_code == 409
    assert "nothing changed" in response.content.decode()
    old_sandbox.refresh_from_db()
    assert old_sandbox.version == "1.0.0" and old_sandbox.auth_methods.filter(key="token").exists()


def test_only_administrators_and_managers_update(make_user, company, client_for, old_sandbox):
    client = client_for(make_user(company, Role.USER))
    assert client.get(f"/marketplace/updates/{old_sandbox.pk}/").status_code == 403
    assert client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "update"}).status_code == 403


def test_custom_connectors_and_other_companies_connectors_have_no_update_page(
    admin_client, company, other_company, make_connector, sandbox_listing, install
):
    assert admin_client.get(f"/marketplace/updates/{make_connector(company).pk}/").status_code == 404
    assert admin_client.get(f"/marketplace/updates/{install(sandbox_listing, other_company, version='1.0.0').pk}/").status_code == 404


def test_an_up_to_date_connector_says_so(admin_client, company, sandbox_listing, install):
    connector = install(sandbox_listing, company)
    response = admin_client.get(f"/marketplace/updates/{connector.pk}/", follow=True)
    assert "Sandbox is up to date." in response.content.decode()


def test_a_change_that_fails_half_way_leaves_the_old_definition_intact(old_sandbox, in_use):
    from django.db.models import ProtectedError

    before = manifests.export(editing.fresh(old_sandbox))
    broken = copy.deepcopy(before)
    broken["name"] = "Renamed first"
    broken["endpoints"].append({
        "key": "list_refunds", "name": "List refunds", "entity": "Refund", "direction": "receive",
        "method": "GET", "path": "/refunds", "parameters": {},
    })
    broken["auth_methods"] = [a for a in broken["auth_methods"] if a["key"] != "token"]  # used by an instance
    with pytest.raises(ProtectedError):
        editing.save_definition(old_sandbox, broken)
    assert manifests.export(editing.fresh(old_sandbox)) == before
    assert not old_sandbox.changes.filter(action=ConnectorChange.Action.EDITED).exists()
