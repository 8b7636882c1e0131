"""Rough edges a new user met: each one is a test of what the page shows or what the database holds."""

from __future__ import annotations

import re

import pytest

from connectors.models import Connector
from flows.models import ConnectionShape, ProcessFlow
from marketplace.models import Installation
from patchworks_site.models import Role
from tests.test_connector_updates import modify


@pytest.fixture
def old_sandbox(company, sandbox_listing, install):
    return install(sandbox_listing, company, version="1.0.0")


# --- install alongside -------------------------------------------------------------


def test_a_copy_installed_alongside_is_named_with_its_version_and_is_not_modified(admin_client, admin_user, old_sandbox):
    modify(old_sandbox, admin_user)
    page = admin_client.get(f"/marketplace/updates/{old_sandbox.pk}/").content.decode()
    assert "It is named <strong>Sandbox (1.1.0)</strong>" in page
    admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "alongside"})
    copy = Connector.objects.get(company=old_sandbox.company, version="1.1.0")
    assert copy.name == "Sandbox (1.1.0)"
    assert copy.installation.is_modified is False
    assert copy.installation.update_available is False


def test_the_old_connector_links_to_the_copy_instead_of_offering_the_update_again(admin_client, admin_user, old_sandbox):
    modify(old_sandbox, admin_user)
    admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "alongside"})
    copy = Connector.objects.get(company=old_sandbox.company, version="1.1.0")
    manage = admin_client.get("/connectors/").content.decode()
    assert 'data-testid="update-available"' not in manage
    note = re.search(r'data-testid="alongside-note">(.*?)</span>', manage, re.S).group(1)
    assert "version 1.1.0 is installed alongside as" in note
    assert f'href="/connectors/{copy.pk}/">Sandbox (1.1.0)</a>' in note
    detail = admin_client.get(f"/connectors/{old_sandbox.pk}/").content.decode()
    assert "A newer copy is installed alongside" in detail and f'href="/connectors/{copy.pk}/"' in detail


def test_the_same_version_cannot_be_installed_alongside_twice(admin_client, admin_user, old_sandbox):
    modify(old_sandbox, admin_user)
    admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "alongside"})
    page = admin_client.get(f"/marketplace/updates/{old_sandbox.pk}/").content.decode()
    assert 'value="alongside"' not in page
    assert "Version 1.1.0 is already installed alongside" in page and 'value="overwrite"' in page
    response = admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "alongside"})
    assert response.status_code == 422
    assert "already installed alongside as Sandbox (1.1.0)" in response.content.decode()
    assert Connector.objects.filter(company=old_sandbox.company).count() == 2


def test_overwriting_keeps_the_connectors_name(admin_client, admin_user, old_sandbox):
    modify(old_sandbox, admin_user)
    Connector.objects.filter(pk=old_sandbox.pk).update(name="Sandbox (EU)")
    admin_client.post(f"/marketplace/updates/{old_sandbox.pk}/", {"choice": "overwrite"})
    old_sandbox.refresh_from_db()
    assert (old_sandbox.name, old_sandbox.version) == ("Sandbox (EU)", "1.1.0")
    assert Installation.objects.get(connector=old_sandbox).is_modified is False


# --- update available for roles that cannot apply it -----------------------------------


@pytest.mark.parametrize("role", [Role.READ_ONLY, Role.USER])
def test_roles_that_cannot_update_see_update_available_as_information_with_who_applies_it(
    role, client_for, make_user, company, old_sandbox
):
    client = client_for(make_user(company, role))
    manage = client.get("/connectors/").content.decode()
    hint = re.search(r'data-testid="update-available">(.*?)</span>', manage, re.S).group(1)
    assert "update available: version 1.1.0" in hint
    assert "an Administrator or Manager applies updates" in hint
    assert f"/marketplace/updates/{old_sandbox.pk}/" not in manage
    detail = client.get(f"/connectors/{old_sandbox.pk}/").content.decode()
    assert "An Administrator or Manager applies updates." in detail and "alert-info" in detail


def test_an_administrator_still_gets_the_update_button(admin_client, old_sandbox):
    manage = admin_client.get("/connectors/").content.decode()
    assert f'href="/marketplace/updates/{old_sandbox.pk}/" data-testid="update-available"' in manage
