import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from instances.forms import ConnectionPoolForm
from instances.models import ConnectionPool, Instance
from patchworks_site.models import Role


@pytest.fixture
def shopify(company, make_connector):
    return make_connector(company, name="Shopify", concurrency_limit=4)


@pytest.fixture
def erp(company, make_connector):
    return make_connector(company, name="Big ERP", concurrency_limit=20)


@pytest.fixture
def pool(company, shopify):
    pool = ConnectionPool.objects.create(company=company, name="Storefront", limit=3, timeout_seconds=45)
    pool.connectors.add(shopify)
    return pool


def _data(**overrides) -> dict:
    return {"name": "Warehouse", "limit": "2", "timeout_seconds": "30", **overrides}


# --- the list -------------------------------------------------------------------


def test_the_list_shows_each_pool_with_its_limit_timeout_connectors_and_instance_count(admin_client, pool, shopify, make_instance):
    make_instance(shopify, "Shopify UK", connection_pool=pool)
    make_instance(shopify, "Shopify EU", connection_pool=pool)
    page = admin_client.get("/instances/pools/").content.decode()
    assert "Storefront" in page and "3 concurrent" in page and "45 s" in page and "Shopify" in page
    assert '<td data-testid="instance-count">2 instances</td>' in page


def test_the_list_explains_what_a_pool_does(admin_client):
    page = admin_client.get("/instances/pools/").content.decode()
    assert "A request holds a slot while in flight and waits when none is free" in page


def test_without_pools_a_friendly_empty_state_offers_to_create_one(admin_client):
    page = admin_client.get("/instances/pools/").content.decode()
    assert 'data-testid="empty-state"' in page and "No connection pools yet" in page
    assert "/instances/pools/new/" in page


def test_the_search_box_appears_only_when_there_are_many_pools(admin_client, company):
    ConnectionPool.objects.create(company=company, name="Only one", limit=1)
    assert 'id="pool-list-search"' not in admin_client.get("/instances/pools/").content.decode()
    for i in range(10):
        ConnectionPool.objects.create(company=company, name=f"Pool {i:02d}", limit=1)
    assert 'id="pool-list-search"' in admin_client.get("/instances/pools/").content.decode()


def test_searching_finds_pools_by_their_name_or_connector(admin_client, company, pool):
    ConnectionPool.objects.create(company=company, name="Accounting", limit=1)
    by_name = admin_client.get("/instances/pools/?q=account").content.decode()
    assert "Accounting" in by_name and "Storefront" not in by_name
    by_connector = admin_client.get("/instances/pools/?q=shopify").content.decode()
    assert "Storefront" in by_connector and "Accounting" not in by_connector
    nothing = admin_client.get("/instances/pools/?q=zzz").content.decode()
    assert "No connection pools match your search." in nothing


def test_htmx_searches_get_only_the_list(admin_client, pool):
    response = admin_client.get("/instances/pools/?q=store", headers={"HX-Request": "true", "HX-Target": "pool-list"})
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="pool-list">') and "Storefront" in body


def test_the_navbar_links_to_connection_pools(admin_client):
    assert 'href="/instances/pools/">connection pools</a>' in admin_client.get("/connectors/").content.decode()


# --- roles and companies ---------------------------------------------------------


@pytest.mark.parametrize("role", [Role.USER, Role.READ_ONLY])
def test_other_roles_can_view_pools_but_see_no_buttons(role, make_user, company, client_for, pool):
    client = client_for(make_user(company, role))
    page = client.get("/instances/pools/").content.decode()
    assert "Storefront" in page
    assert "new connection pool" not in page and 'data-testid="delete-pool"' not in page
    detail = client.get(f"/instances/pools/{pool.pk}/").content.decode()
    assert "Storefront" in detail and "save connection pool" not in detail and "<fieldset disabled>" in detail


@pytest.mark.parametrize("role", [Role.USER, Role.READ_ONLY])
def test_other_roles_cannot_create_edit_or_delete_pools(role, make_user, company, client_for, pool):
    client = client_for(make_user(company, role))
    assert client.get("/instances/pools/new/").status_code == 403
    response = client.post("/instances/pools/new/", _data())
    assert response.status_code == 403
    assert "Only Administrators and Managers can change connectors." in response.content.decode()
    assert client.post(f"/instances/pools/{pool.pk}/", _data(name="Renamed")).status_code == 403
    assert client.post(f"/instances/pools/{pool.pk}/delete/", {"confirm": "confirm"}).status_code == 403
    pool.refresh_from_db()
    assert pool.name == "Storefront"
    assert not ConnectionPool.objects.filter(name="Warehouse").exists()


@pytest.mark.parametrize("role", [Role.ADMINISTRATOR, Role.MANAGER])
def test_administrators_and_managers_create_a_pool(role, make_user, company, client_for, shopify, erp):
    client = client_for(make_user(company, role))
    assert "new connection pool" in client.get("/instances/pools/").content.decode()
    response = client.post("/instances/pools/new/", _data(connectors=[shopify.pk, erp.pk]), follow=True)
    pool = ConnectionPool.objects.get(company=company, name="Warehouse")
    assert (pool.limit, pool.timeout_seconds) == (2, 30)
    assert set(pool.connectors.all()) == {shopify, erp}
    assert 'Connection pool &quot;Warehouse&quot; created.' in response.content.decode()


def test_another_companys_pool_is_not_found(admin_client, other_company):
    theirs = ConnectionPool.objects.create(company=other_company, name="Globex pool", limit=5)
    assert admin_client.get(f"/instances/pools/{theirs.pk}/").status_code == 404
    assert admin_client.post(f"/instances/pools/{theirs.pk}/", _data()).status_code == 404
    assert admin_client.get(f"/instances/pools/{theirs.pk}/delete/").status_code == 404
    assert admin_client.post(f"/instances/pools/{theirs.pk}/delete/", {"confirm": "confirm"}).status_code == 404
    assert ConnectionPool.objects.filter(pk=theirs.pk).exists()
    assert "Globex pool" not in admin_client.get("/instances/pools/").content.decode()


def test_only_the_companys_connectors_with_a_concurrency_limit_are_offered(admin_client, company, other_company, shopify, make_connector):
    make_connector(company, name="Unlimited API")
    make_connector(other_company, name="Globex API", concurrency_limit=9)
    page = admin_client.get("/instances/pools/new/").content.decode()
    assert "Shopify (up to 4 concurrent requests)" in page
    assert "Unlimited API" not in page and "Globex API" not in page


def test_another_companys_connector_cannot_be_chosen(admin_client, other_company, make_connector):
    theirs = make_connector(other_company, name="Globex API", concurrency_limit=9)
    response = admin_client.post("/instances/pools/new/", _data(connectors=[theirs.pk]))
    assert response.status_code == 422
    assert not ConnectionPool.objects.filter(name="Warehouse").exists()


# --- validation -----------------------------------------------------------------


def test_a_name_already_used_in_the_company_is_refused_clearly(admin_client, pool):
    response = admin_client.post("/instances/pools/new/", _data(name="  storefront "))
    assert response.status_code == 422
    assert "There is already a connection pool called &quot;storefront&quot;." in response.content.decode()


def test_the_same_name_is_fine_in_another_company(admin_client, other_company):
    ConnectionPool.objects.create(company=other_company, name="Warehouse", limit=1)
    assert admin_client.post("/instances/pools/new/", _data()).status_code == 302


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("limit", "0", "Ensure this value is greater than or equal to 1."),
        ("limit", "1001", "A pool can allow at most 1000 concurrent requests."),
        ("timeout_seconds", "0", "Ensure this value is greater than or equal to 1."),
        ("timeout_seconds", "3601", "The timeout can be at most 3600 seconds (one hour)."),
        ("name", "   ", "This field is required."),
    ],
)
def test_out_of_range_values_are_refused(field, value, message, admin_client):
    response = admin_client.post("/instances/pools/new/", _data(**{field: value}))
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not ConnectionPool.objects.exists()


def test_a_timeout_not_longer_than_the_lease_is_refused_naming_the_lease(admin_client, settings, company):
    settings.CONNECTION_POOL_LEASE_SECONDS = 9
    for timeout in ("9", "11"):
        response = admin_client.post("/instances/pools/new/", _data(timeout_seconds=timeout))
        assert response.status_code == 422
        assert (
            "The timeout must be at least 12 seconds: longer than the 9 s lease of a pool slot"
            in response.content.decode()
        )
    assert not ConnectionPool.objects.exists()
    assert "at least 12 seconds" in admin_client.get("/instances/pools/new/").content.decode()
    admin_client.post("/instances/pools/new/", _data(timeout_seconds="12"))
    assert ConnectionPool.objects.get().timeout_seconds == 12
    settings.CONNECTION_POOL_LEASE_SECONDS = 30  # lengthened later: a pool's timeout must follow
    with pytest.raises(ValidationError, match="at least 40 seconds: longer than the 30 s lease"):
        ConnectionPool(company=company, name="Later", limit=1, timeout_seconds=30).full_clean()


def test_a_limit_above_a_chosen_connectors_concurrency_limit_names_the_connector(admin_client, shopify, erp):
    response = admin_client.post("/instances/pools/new/", _data(limit="10", connectors=[shopify.pk, erp.pk]))
    body = response.content.decode()
    assert response.status_code == 422
    assert "Shopify allows at most 4 concurrent requests" in body
    assert "Big ERP allows" not in body
    assert not ConnectionPool.objects.exists()


def test_the_name_constraint_still_holds_when_a_concurrent_request_wins(company, monkeypatch):
    ConnectionPool.objects.create(company=company, name="Raced", limit=1)
    form = ConnectionPoolForm(_data(name="Raced"), company=company, instance=ConnectionPool(company=company))
    monkeypatch.setattr(ConnectionPoolForm, "clean_name", lambda self: self.cleaned_data["name"])
    assert form.is_valid()
    with pytest.raises(IntegrityError):
        form.save()


# --- editing ---------------------------------------------------------------------


def test_editing_changes_the_pool(admin_client, pool, erp):
    response = admin_client.post(
        f"/instances/pools/{pool.pk}/",
        _data(name="Storefront EU", limit="4", timeout_seconds="60", connectors=[pool.connectors.get().pk, erp.pk]),
    )
    assert response.status_code == 302
    pool.refresh_from_db()
    assert (pool.name, pool.limit, pool.timeout_seconds) == ("Storefront EU", 4, 60)
    assert pool.connectors.count() == 2


def test_the_edit_page_lists_the_instances_using_the_pool(admin_client, pool, shopify, make_instance):
    instance = make_instance(shopify, "Shopify UK", connection_pool=pool)
    page = admin_client.get(f"/instances/pools/{pool.pk}/").content.decode()
    assert f'href="/instances/{instance.pk}/">Shopify UK</a>' in page


def test_keeping_its_own_name_is_not_a_clash(admin_client, pool, shopify):
    assert admin_client.post(f"/instances/pools/{pool.pk}/", _data(name="Storefront", connectors=[shopify.pk])).status_code == 302


def test_removing_a_connector_whose_instances_use_the_pool_is_refused(admin_client, pool, shopify, erp, make_instance):
    pool.connectors.add(erp)
    make_instance(shopify, "Shopify UK", connection_pool=pool)
    make_instance(shopify, "Shopify EU", connection_pool=pool)
    response = admin_client.post(f"/instances/pools/{pool.pk}/", _data(name="Storefront", limit="3", connectors=[erp.pk]))
    body = response.content.decode()
    assert response.status_code == 422
    assert "Shopify can&#x27;t be removed from this pool: its instances Shopify EU, Shopify UK use the pool." in body
    assert 'data-testid="blocking-instances"' in body and "/instances/" in body
    assert set(pool.connectors.all()) == {shopify, erp}


def test_removing_a_connector_without_instances_in_the_pool_is_fine(admin_client, pool, shopify, erp, make_instance):
    pool.connectors.add(erp)
    make_instance(shopify, "Shopify UK", connection_pool=pool)
    make_instance(erp, "ERP without pool")
    response = admin_client.post(f"/instances/pools/{pool.pk}/", _data(name="Storefront", limit="3", connectors=[shopify.pk]))
    assert response.status_code == 302
    assert list(pool.connectors.all()) == [shopify]


# --- deleting --------------------------------------------------------------------


def test_typing_confirm_deletes_an_unused_pool(admin_client, pool):
    response = admin_client.post(f"/instances/pools/{pool.pk}/delete/", {"confirm": "confirm"}, follow=True)
    assert not ConnectionPool.objects.filter(pk=pool.pk).exists()
    assert "Connection pool &quot;Storefront&quot; was deleted." in response.content.decode()


def test_anything_but_confirm_deletes_nothing(admin_client, pool):
    response = admin_client.post(f"/instances/pools/{pool.pk}/delete/", {"confirm": "yes"}, headers={"HX-Request": "true"})
    assert response.status_code == 422
    assert "Type confirm to delete this connection pool." in response.content.decode()
    assert ConnectionPool.objects.filter(pk=pool.pk).exists()


def test_a_pool_used_by_instances_is_not_deleted_and_the_instances_are_listed(admin_client, pool, shopify, make_instance):
    uk = make_instance(shopify, "Shopify UK", connection_pool=pool)
    eu = make_instance(shopify, "Shopify EU", connection_pool=pool)
    response = admin_client.post(f"/instances/pools/{pool.pk}/delete/", {"confirm": "confirm"}, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 409
    assert 'data-testid="in-use"' in body and "so it was not deleted" in body and "Reassign these instances" in body
    assert f'href="/instances/{uk.pk}/">Shopify UK</a>' in body and f'href="/instances/{eu.pk}/">Shopify EU</a>' in body
    assert ConnectionPool.objects.filter(pk=pool.pk).exists()
    assert Instance.objects.filter(connection_pool=pool).count() == 2


def test_without_javascript_the_refusal_is_a_full_page(admin_client, pool, shopify, make_instance):
    make_instance(shopify, "Shopify UK", connection_pool=pool)
    response = admin_client.post(f"/instances/pools/{pool.pk}/delete/", {"confirm": "confirm"})
    assert response.status_code == 409
    assert "<html" in response.content.decode() and "Shopify UK" in response.content.decode()
    assert ConnectionPool.objects.filter(pk=pool.pk).exists()


def test_deleting_needs_a_post_with_csrf(admin_user, pool):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.get(f"/instances/pools/{pool.pk}/delete/").status_code == 200
    assert client.post(f"/instances/pools/{pool.pk}/delete/", {"confirm": "confirm"}).status_code == 403
    assert ConnectionPool.objects.filter(pk=pool.pk).exists()
