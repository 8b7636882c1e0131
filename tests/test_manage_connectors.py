import copy

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from connectors import manifest as manifests
from instances.models import ConnectionPool


def test_an_empty_company_sees_a_friendly_empty_state(admin_client):
    page = admin_client.get("/connectors/").content.decode()
    assert "No connectors yet" in page
    assert "add new connector" in page


def test_each_connector_shows_its_details_and_instances(admin_client, company, sandbox_listing, install, make_instance, make_connector):
    sandbox = install(sandbox_listing, company)
    pool = ConnectionPool.objects.create(company=company, name="Shared pool", limit=4)
    make_instance(sandbox, "Sandbox - UK", connection_pool=pool, auth_method=sandbox.auth_methods.get(key="token"))
    make_connector(company, name="Warehouse API")
    page = admin_client.get("/connectors/").content.decode()
    assert "Sandbox" in page and "Warehouse API" in page
    assert "prebuilt" in page and "custom" in page
    assert "version 1.5.0" in page
    assert "Sandbox - UK" in page
    assert "Not checked" in page
    assert "120 per minute" in page
    assert "Shared pool" in page and "(4 concurrent)" in page
    assert page.count("add new instance") >= 2
    assert 'data-testid="update-available"' not in page  # installed at the latest version


def test_update_available_shows_for_an_older_installed_version(admin_client, company, sandbox_listing, install):
    install(sandbox_listing, company, version="1.0.0")
    page = admin_client.get("/connectors/").content.decode()
    assert 'data-testid="update-available"' in page
    assert "update available" in page


def test_a_modified_prebuilt_connector_shows_version_information_and_who_changed_it(
    admin_client, admin_user, company, sandbox_listing, install
):
    connector = install(sandbox_listing, company)
    changed = copy.deepcopy(manifests.export(connector))
    changed["endpoints"].append(
        {"key": "list_refunds", "name": "List refunds", "entity": "Refund", "direction": "receive",
         "method": "GET", "path": "/refunds", "parameters": {}}
    )
    manifests.apply(manifests.validate(changed), connector=connector, user=admin_user)
    page = admin_client.get("/connectors/").content.decode()
    assert 'data-testid="modified-info"' in page
    assert "modified from version 1.5.0" in page
    assert "last changed by ada" in page


def test_an_unmodified_prebuilt_connector_is_not_shown_as_modified(admin_client, company, sandbox_listing, install):
    install(sandbox_listing, company)
    assert 'data-testid="modified-info"' not in admin_client.get("/connectors/").content.decode()


def test_search_by_name_and_filter_by_system_type(admin_client, company, make_connector):
    make_connector(company, name="Orders API", system_type="eCommerce")
    make_connector(company, name="Ledger API", system_type="Accounting")
    page = admin_client.get("/connectors/?q=ledger").content.decode()
    assert "Ledger API" in page and "Orders API" not in page
    page = admin_client.get("/connectors/?system_type=eCommerce").content.decode()
    assert "Orders API" in page and "Ledger API" not in page
    page = admin_client.get("/connectors/?q=nothing-like-this").content.decode()
    assert "No connectors match your search." in page


def test_an_unknown_system_type_or_page_number_is_ignored(admin_client, company, make_connector):
    make_connector(company, name="Orders API")
    response = admin_client.get("/connectors/?system_type=<script>&page=abc")
    assert response.status_code == 200
    assert "Orders API" in response.content.decode()
    assert "<script>" not in response.content.decode()


def test_htmx_search_returns_only_the_list_fragment(admin_client, company, make_connector):
    make_connector(company, name="Orders API")
    response = admin_client.get("/connectors/?q=orders", headers={"HX-Request": "true", "HX-Target": "connector-list"})
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="connector-list">')
    assert "Orders API" in body and "<html" not in body


def _seed(company, sandbox_listing, install, make_instance, make_connector, count: int) -> None:
    for i in range(count):
        if i % 2:
            connector = install(sandbox_listing, company, version="1.0.0")
        else:
            connector = make_connector(company, name=f"Custom {i:03d}")
        make_instance(connector, f"Instance A {i}")
        make_instance(connector, f"Instance B {i}")


def _queries_for_manage_page(client) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get("/connectors/")
    assert response.status_code == 200
    return len(ctx)


@pytest.mark.parametrize("count", [5, 100])
def test_the_manage_page_query_count_does_not_grow_with_connectors(
    count, admin_client, company, sandbox_listing, install, make_instance, make_connector
):
    _seed(company, sandbox_listing, install, make_instance, make_connector, 2)
    baseline = _queries_for_manage_page(admin_client)
    _seed(company, sandbox_listing, install, make_instance, make_connector, count)
    # At most the baseline: one query looks up copies installed alongside only
    # when the page shows a connector with an update available.
    assert _queries_for_manage_page(admin_client) <= baseline
    # Every page of results costs the same, too.
    with CaptureQueriesContext(connection) as ctx:
        admin_client.get("/connectors/?page=2")
    assert len(ctx) <= baseline


def _bulk_instances(connector, count: int, prefix: str = "Store") -> None:
    from instances.models import Instance

    method = connector.auth_methods.first()
    Instance.objects.bulk_create(
        Instance.with_connector_defaults(connector, name=f"{prefix} {i:04d}", auth_method=method) for i in range(count)
    )


def test_the_manage_page_shows_a_handful_of_instances_and_offers_the_rest(admin_client, company, make_connector):
    connector = make_connector(company, name="Orders API")
    _bulk_instances(connector, 40)
    page = admin_client.get("/connectors/").content.decode()
    assert page.count('data-testid="instance"') == 5
    assert "Store 0000" in page and "Store 0004" in page and "Store 0005" not in page
    assert "show all 40 instances" in page
    assert f'href="/connectors/{connector.pk}/instances/"' in page


def test_the_manage_page_size_and_queries_are_flat_in_instances(admin_client, company, make_connector):
    small = make_connector(company, name="Orders API")
    _bulk_instances(small, 10)
    with CaptureQueriesContext(connection) as ctx:
        few = admin_client.get("/connectors/").content
    queries = len(ctx)
    _bulk_instances(small, 390, prefix="More")
    with CaptureQueriesContext(connection) as ctx:
        many = admin_client.get("/connectors/").content
    assert len(ctx) == queries
    # Only the count in "show all N instances" grows.
    assert abs(len(many) - len(few)) < 50


def test_the_instance_list_of_a_connector_searches_and_paginates(admin_client, company, make_connector):
    connector = make_connector(company, name="Orders API")
    _bulk_instances(connector, 60)
    page = admin_client.get(f"/connectors/{connector.pk}/instances/").content.decode()
    assert "Instances of Orders API" in page
    assert page.count('data-testid="instance"') == 25
    assert "Page 1 of 3" in page
    page = admin_client.get(f"/connectors/{connector.pk}/instances/?page=3").content.decode()
    assert page.count('data-testid="instance"') == 10 and "Store 0059" in page
    page = admin_client.get(f"/connectors/{connector.pk}/instances/?q=0042").content.decode()
    assert page.count('data-testid="instance"') == 1 and "1 of 60 instances match" in page


def test_show_all_with_htmx_returns_the_list_fragment_without_pushing_the_url(admin_client, company, make_connector):
    connector = make_connector(company, name="Orders API")
    _bulk_instances(connector, 30)
    target = f"instances-of-{connector.pk}"
    body = admin_client.get(
        f"/connectors/{connector.pk}/instances/", headers={"HX-Request": "true", "HX-Target": target}
    ).content.decode()
    assert body.lstrip().startswith(f'<div id="{target}">') and "<html" not in body
    assert 'hx-push-url="false"' in body
    assert body.count('data-testid="instance"') == 25
    body = admin_client.get(
        f"/connectors/{connector.pk}/instances/?q=0029", headers={"HX-Request": "true", "HX-Target": f"{target}-list"}
    ).content.decode()
    assert body.lstrip().startswith(f'<div id="{target}-list">') and body.count('data-testid="instance"') == 1


def test_another_companys_instance_list_is_a_404(admin_client, other_company, make_connector):
    connector = make_connector(other_company, name="Their API")
    assert admin_client.get(f"/connectors/{connector.pk}/instances/").status_code == 404


def test_a_just_added_instance_is_highlighted_even_beyond_the_first_ones(admin_client, company, make_connector, make_instance):
    connector = make_connector(company, name="Orders API")
    _bulk_instances(connector, 10)
    late = make_instance(connector, "Zulu shop")
    page = admin_client.get(f"/connectors/?highlight=instance-{late.pk}").content.decode()
    assert "Zulu shop" in page and f'id="instance-{late.pk}"' in page
