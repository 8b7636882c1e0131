import json

import pytest

from flows.models import ProcessFlow
from instances.models import ConnectionPool
from patchworks_site import audit
from patchworks_site.models import AuditEntry, Role


@pytest.fixture
def shopify(company, make_connector):
    return make_connector(company, name="Shopify", concurrency_limit=4)


def entries_for(object_type: str, action: str | None = None):
    entries = AuditEntry.objects.filter(object_type=object_type).order_by("id")
    return entries.filter(action=action) if action else entries


def all_entries_text() -> str:
    return json.dumps(list(AuditEntry.objects.values("object_repr", "changes")))


# --- recording: connection pools (through the pages) ----------------------------


def test_creating_a_pool_records_who_added_it_with_its_values_and_connectors(admin_client, admin_user, shopify):
    admin_client.post("/instances/pools/new/", {"name": "Storefront", "limit": "3", "timeout_seconds": "45", "connectors": [shopify.pk]})
    [entry] = entries_for("connection pool")
    assert (entry.action, entry.user, entry.company) == ("added", admin_user, admin_user.company)
    assert entry.object_repr == "Storefront (3 concurrent)"
    assert entry.changes == {"name": "Storefront", "limit": 3, "timeout_seconds": 45, "connectors": ["Shopify (1)"]}


def test_editing_a_pool_records_only_what_changed_in_one_entry(admin_client, admin_user, company, shopify, make_connector):
    erp = make_connector(company, name="ERP", concurrency_limit=10)
    pool = ConnectionPool.objects.create(company=company, name="Storefront", limit=3, timeout_seconds=45)
    pool.connectors.add(shopify)
    AuditEntry.objects.all().delete()
    admin_client.post(f"/instances/pools/{pool.pk}/", {"name": "Storefront", "limit": "4", "timeout_seconds": "45", "connectors": [erp.pk]})
    [entry] = entries_for("connection pool")
    assert (entry.action, entry.user) == ("updated", admin_user)
    assert entry.changes == {"limit": [3, 4], "connectors": [["Shopify (1)"], ["ERP (1)"]]}


def test_saving_a_pool_unchanged_records_nothing(admin_client, company, shopify):
    pool = ConnectionPool.objects.create(company=company, name="Storefront", limit=3, timeout_seconds=45)
    pool.connectors.add(shopify)
    AuditEntry.objects.all().delete()
    admin_client.post(
        f"/instances/pools/{pool.pk}/", {"name": "Storefront", "limit": "3", "timeout_seconds": "45", "connectors": [shopify.pk]}
    )
    assert not AuditEntry.objects.exists()


def test_deleting_a_pool_records_who_deleted_it(admin_client, admin_user, company):
    pool = ConnectionPool.objects.create(company=company, name="Old pool", limit=2)
    admin_client.post(f"/instances/pools/{pool.pk}/delete/", {"confirm": "confirm"})
    [entry] = entries_for("connection pool", "deleted")
    assert entry.user == admin_user and entry.object_id == str(pool.pk) and entry.changes["name"] == "Old pool"


def test_a_refused_delete_records_nothing(admin_client, company, shopify, make_instance):
    pool = ConnectionPool.objects.create(company=company, name="Busy", limit=2)
    make_instance(shopify, "Shopify UK", connection_pool=pool)
    admin_client.post(f"/instances/pools/{pool.pk}/delete/", {"confirm": "confirm"})
    assert not entries_for("connection pool", "deleted").exists()


# --- recording: instances, connectors, process flows ----------------------------


def test_instances_are_recorded_without_any_secret(admin_user, company, shopify, make_instance):
    with audit.acting_as(admin_user):
        instance = make_instance(shopify, "Shopify UK", secrets={"api_token": "super-secret"})
        ciphertext = instance.secrets_ciphertext
        instance.set_secrets({"api_token": "another-super-secret"})
        instance.name = "Shopify GB"
        instance.save()
        instance.delete()
    added, updated, deleted = entries_for("instance")
    assert [e.action for e in (added, updated, deleted)] == ["added", "updated", "deleted"]
    assert all(e.user == admin_user for e in (added, updated, deleted))
    assert added.changes["secrets_ciphertext"] == "set" and added.changes["name"] == "Shopify UK"
    assert added.changes["connector"] == "Shopify (1)" and added.changes["auth_method"]
    assert updated.changes == {"name": ["Shopify UK", "Shopify GB"], "secrets_ciphertext": "changed"}
    text = all_entries_text()
    for secret in ("super-secret", ciphertext, instance.secrets_ciphertext, "tok-123456"):
        assert secret not in text


def test_editing_an_instance_on_its_settings_page_records_the_user(client_for, make_user, company, shopify, make_instance):
    manager = make_user(company, Role.MANAGER)
    instance = make_instance(shopify, "Shopify UK", secrets={"api_token": "super-secret"})
    data = {
        "name": "Shopify GB", "time_zone": "Europe/London", "date_format": instance.date_format,
        "rate_limit_amount": instance.rate_limit_amount, "rate_limit_unit": instance.rate_limit_unit,
        "connection_pool": "", "auth_method": instance.auth_method_id, "var_api_token": "",
    }
    assert client_for(manager).post(f"/instances/{instance.pk}/", data).status_code == 302
    [entry] = entries_for("instance", "updated")
    assert entry.user == manager
    assert entry.changes == {"name": ["Shopify UK", "Shopify GB"], "time_zone": ["UTC", "Europe/London"]}
    assert "super-secret" not in all_entries_text()


def test_credential_check_results_are_not_recorded_as_changes(company, shopify, make_instance):
    instance = make_instance(shopify, "Shopify UK")
    instance.last_check_ok = True
    instance.last_check_message = "OK"
    instance.save()
    instance.save(update_fields=["last_check_ok"])
    assert not entries_for("instance", "updated").exists()


def test_connectors_are_recorded_when_added_updated_and_deleted(admin_user, company, make_connector):
    with audit.acting_as(admin_user):
        connector = make_connector(company, name="Billing API")
        connector.concurrency_limit = 5
        connector.save()
        connector.delete()
    added, updated, deleted = entries_for("connector")
    assert added.action == "added" and added.object_repr == "Billing API (1)" and added.changes["name"] == "Billing API"
    assert "created_at" not in added.changes and "updated_at" not in added.changes
    assert updated.changes == {"concurrency_limit": [None, 5]}
    assert deleted.action == "deleted"
    assert {e.user for e in (added, updated, deleted)} == {admin_user}


def test_installing_from_the_marketplace_records_the_connector_as_added(admin_client, admin_user, sandbox_listing):
    admin_client.post(f"/marketplace/{sandbox_listing.slug}/install/")
    [entry] = entries_for("connector", "added")
    assert entry.user == admin_user and entry.changes["name"] == "Sandbox"


def test_a_copy_installed_alongside_is_named_with_its_version_once(company, make_connector):
    make_connector(company, name="Sandbox (1.3.0)", version="1.3.0")
    make_connector(company, name="Sandbox", version="1.0.0")
    assert sorted(AuditEntry.objects.values_list("object_repr", flat=True)) == ["Sandbox (1.0.0)", "Sandbox (1.3.0)"]


def test_process_flows_are_recorded_through_their_pages(client_for, make_user, company):
    user = make_user(company, Role.USER)
    client = client_for(user)
    client.post("/flows/", {"name": "Orders to ERP"})
    flow = ProcessFlow.objects.get(name="Orders to ERP")
    client.post(f"/flows/{flow.pk}/toggle/", {"enabled": "1"})
    client.post(f"/flows/{flow.pk}/delete/", {"confirm": "confirm"})
    added, updated, deleted = entries_for("process flow")
    assert (added.action, updated.action, deleted.action) == ("added", "updated", "deleted")
    assert added.changes == {"name": "Orders to ERP", "enabled": False}
    assert updated.changes == {"enabled": [False, True]}
    assert {added.user, updated.user, deleted.user} == {user}


def test_changes_outside_a_request_have_no_user(company, make_connector):
    make_connector(company, name="Scripted")
    [entry] = entries_for("connector")
    assert entry.user is None


def test_a_rolled_back_change_leaves_no_entry(company):
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        ProcessFlow.objects.create(company=company, name="Never")
        raise RuntimeError
    assert not AuditEntry.objects.exists()


def test_entries_belong_to_the_objects_company(company, other_company):
    ProcessFlow.objects.create(company=other_company, name="Globex flow")
    assert AuditEntry.objects.get().company == other_company


# --- the page ------------------------------------------------------------------------


@pytest.fixture
def logged(company, admin_user, make_user):
    """An added, an updated and a deleted entry, by two users, plus one of another company."""
    bob = make_user(company, Role.MANAGER, "bob")
    with audit.acting_as(admin_user):
        flow = ProcessFlow.objects.create(company=company, name="Orders to ERP")
    with audit.acting_as(bob):
        flow.enabled = True
        flow.save()
        pool = ConnectionPool.objects.create(company=company, name="Storefront", limit=3)
        pool.delete()
    return bob


def test_administrators_see_the_log_newest_first_with_who_when_and_colours(admin_client, logged):
    page = admin_client.get("/audit/").content.decode()
    assert page.index("Storefront") < page.index("Orders to ERP")
    assert 'data-action="added"' in page and 'data-action="updated"' in page and 'data-action="deleted"' in page
    assert "audit-badge-added" in page and "audit-badge-updated" in page and "audit-badge-deleted" in page
    assert ">ada<" in page and ">bob<" in page
    assert "<time datetime=" in page


def test_the_page_shows_changes_readably(admin_client, logged):
    page = admin_client.get("/audit/").content.decode()
    assert '<span class="text-body-secondary">enabled:</span>' in page
    assert '<del class="text-body-secondary">no</del> <span aria-label="changed to">→</span> <span>yes</span>' in page


def test_the_colours_are_green_orange_and_red(settings):
    css = (settings.BASE_DIR / "static" / "css" / "app.css").read_text()
    assert ".audit-badge-added{color:#fff;background:#198754}" in css
    assert ".audit-badge-updated{color:#000;background:#fd7e14}" in css
    assert ".audit-badge-deleted{color:#fff;background:#dc3545}" in css


def test_secrets_show_only_that_they_changed(admin_client, admin_user, shopify, make_instance):
    with audit.acting_as(admin_user):
        instance = make_instance(shopify, "Shopify UK", secrets={"api_token": "super-secret"})
        instance.set_secrets({"api_token": "newer-secret"})
        instance.save()
    page = admin_client.get("/audit/").content.decode()
    assert "credentials:</span>" in page and '<i class="bi bi-lock"></i> changed' in page
    assert "super-secret" not in page and "newer-secret" not in page and instance.secrets_ciphertext not in page


def test_searching_by_name_user_or_type(admin_client, logged):
    by_name = admin_client.get("/audit/?q=storefront").content.decode()
    assert "Storefront" in by_name and "Orders to ERP" not in by_name
    by_user = admin_client.get("/audit/?q=bob").content.decode()
    assert by_user.count('data-testid="audit-entry"') == 3
    by_type = admin_client.get("/audit/?q=connection pool").content.decode()
    assert by_type.count('data-testid="audit-entry"') == 2
    assert "No changes match your search." in admin_client.get("/audit/?q=nothing-like-this").content.decode()


def test_filtering_by_action(admin_client, logged):
    page = admin_client.get("/audit/?action=deleted").content.decode()
    assert page.count('data-testid="audit-entry"') == 1 and 'data-action="deleted"' in page
    unknown = admin_client.get("/audit/?action=exploded").content.decode()
    assert unknown.count('data-testid="audit-entry"') == 4


def test_htmx_searches_get_only_the_list(admin_client, logged):
    response = admin_client.get("/audit/?q=bob", headers={"HX-Request": "true", "HX-Target": "audit-list"})
    assert response.content.decode().lstrip().startswith('<div id="audit-list">')


def test_the_log_is_paginated_by_fifty(admin_client, company):
    for i in range(55):
        ProcessFlow.objects.create(company=company, name=f"Flow {i:02d}")
    first = admin_client.get("/audit/").content.decode()
    assert first.count('data-testid="audit-entry"') == 50 and "Page 1 of 2" in first
    second = admin_client.get("/audit/?page=2").content.decode()
    assert second.count('data-testid="audit-entry"') == 5


def test_another_companys_entries_are_not_shown(admin_client, other_company, logged):
    ProcessFlow.objects.create(company=other_company, name="Globex flow")
    assert "Globex flow" not in admin_client.get("/audit/").content.decode()


def test_an_empty_log_says_so(admin_client):
    assert "Nothing recorded yet" in admin_client.get("/audit/").content.decode()


@pytest.mark.parametrize("role", [Role.MANAGER, Role.USER, Role.READ_ONLY])
def test_only_administrators_can_see_the_log(role, make_user, company, client_for, logged):
    client = client_for(make_user(company, role))
    response = client.get("/audit/")
    assert response.status_code == 403
    assert "Only Administrators can see this page." in response.content.decode()
    assert 'href="/audit/"' not in client.get("/connectors/").content.decode()


def test_administrators_have_a_link_in_the_user_menu(admin_client):
    assert 'href="/audit/">audit log</a>' in admin_client.get("/connectors/").content.decode()


def test_the_admin_shows_entries_read_only(company, make_user, client_for, logged):
    staff = make_user(company, Role.ADMINISTRATOR, "root")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client = client_for(staff)
    entry = AuditEntry.objects.first()
    assert client.get("/admin/patchworks_site/auditentry/").status_code == 200
    assert client.get("/admin/patchworks_site/auditentry/add/").status_code == 403
    response = client.post(f"/admin/patchworks_site/auditentry/{entry.pk}/change/", {"object_repr": "tampered"})
    assert response.status_code == 403
    entry.refresh_from_db()
    assert entry.object_repr != "tampered"
