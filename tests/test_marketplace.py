import pytest
from django.core.management import CommandError, call_command

from connectors.models import Connector
from marketplace.models import Installation, Listing


def test_the_marketplace_lists_published_connectors(admin_client, sandbox_listing):
    page = admin_client.get("/marketplace/").content.decode()
    assert "Sandbox" in page and "version 1.5.0" in page


def test_marketplace_search_and_filter(admin_client, sandbox_listing):
    assert "Sandbox" in admin_client.get("/marketplace/?q=practice").content.decode()
    page = admin_client.get("/marketplace/?system_type=ERP").content.decode()
    assert "No connectors match your search." in page


def test_listing_detail_shows_versions_changelog_auth_methods_and_endpoints(admin_client, sandbox_listing):
    page = admin_client.get("/marketplace/sandbox/").content.decode()
    assert "1.1.0" in page and "1.0.0" in page
    assert "Adds the List customers endpoint" in page
    assert "OAuth 2 client credentials" in page
    assert "List customers" in page and "GET /customers" in page
    assert ">latest<" in page


def test_an_unknown_listing_is_not_found(admin_client, db):
    assert admin_client.get("/marketplace/no-such-thing/").status_code == 404


def test_install_creates_the_latest_version_for_the_company(admin_client, company, sandbox_listing):
    response = admin_client.post("/marketplace/sandbox/install/")
    connector = Connector.objects.get(company=company)
    assert response.status_code == 302
    assert response["Location"].endswith(f"#connector-{connector.pk}")
    assert connector.version == "1.5.0"
    assert connector.installation.listing_version == sandbox_listing.latest_version
    assert connector.endpoints.filter(key="list_customers").exists()
    assert {m.key for m in connector.auth_methods.all()} == {"basic", "token", "client_credentials", "authorization_code", "oauth1"}


def test_installing_twice_says_it_is_already_installed(admin_client, company, sandbox_listing):
    admin_client.post("/marketplace/sandbox/install/")
    response = admin_client.post("/marketplace/sandbox/install/", follow=True)
    assert "Sandbox is already installed." in response.content.decode()
    assert Connector.objects.filter(company=company).count() == 1
    assert "installed" in admin_client.get("/marketplace/").content.decode()


def test_install_only_accepts_post(admin_client, sandbox_listing):
    assert admin_client.get("/marketplace/sandbox/install/").status_code == 405


def test_install_requires_a_csrf_token(admin_user, sandbox_listing):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post("/marketplace/sandbox/install/").status_code == 403
    assert not Installation.objects.exists()


def test_load_catalog_is_idempotent(db):
    call_command("load_catalog")
    versions = Listing.objects.get(slug="sandbox").versions.count()
    call_command("load_catalog")
    assert Listing.objects.get(slug="sandbox").versions.count() == versions == 6
    assert Listing.objects.get(slug="sandbox").latest_version.version == "1.5.0"


def test_publish_listing_validates_the_manifest(tmp_path, db):
    bad = tmp_path / "acme" / "1.0.0.yaml"
    bad.parent.mkdir()
    bad.write_text("name: Acme\nsystem_type: CRM\nversion: 1.0.0\nrate_limit: {amount: 1, unit: second}\nauth_methods: []\nendpoints: []\n")
    with pytest.raises(CommandError) as exc:
        call_command("publish_listing", str(bad))
    assert "base_url: required" in str(exc.value)
    assert not Listing.objects.filter(slug="acme").exists()


def test_publishing_a_new_version_makes_it_the_latest(tmp_path, sandbox_listing):
    source = (Listing.objects.get(slug="sandbox").latest_version.manifest)
    import yaml

    newer = dict(source, version="2.0.0", version_name="Sandbox API v2")
    path = tmp_path / "sandbox" / "2.0.0.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({**newer, "changelog": "Version two."}))
    call_command("publish_listing", str(path))
    listing = Listing.objects.get(slug="sandbox")
    assert listing.latest_version.version == "2.0.0"
    assert listing.latest_version.changelog == "Version two."


def test_a_published_version_cannot_be_changed(tmp_path, sandbox_listing):
    import yaml

    changed = dict(sandbox_listing.latest_version.manifest, description="Sneaky change")
    path = tmp_path / "sandbox" / "1.5.0.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(changed))
    with pytest.raises(CommandError) as exc:
        call_command("publish_listing", str(path))
    assert "already published with different content" in str(exc.value)
