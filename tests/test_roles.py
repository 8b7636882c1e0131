import pytest

from connectors.models import Connector
from patchworks_site.models import Role


@pytest.mark.parametrize("role", [Role.USER, Role.READ_ONLY])
def test_users_and_read_only_cannot_install_a_connector(role, make_user, company, client_for, sandbox_listing):
    client = client_for(make_user(company, role))
    response = client.post(f"/marketplace/{sandbox_listing.slug}/install/")
    assert response.status_code == 403
    assert "Only Administrators and Managers can change connectors." in response.content.decode()
    assert not Connector.objects.filter(company=company).exists()


@pytest.mark.parametrize("role", [Role.USER, Role.READ_ONLY])
def test_roles_that_cannot_install_do_not_see_the_install_button(role, make_user, company, client_for, sandbox_listing):
    client = client_for(make_user(company, role))
    page = client.get(f"/marketplace/{sandbox_listing.slug}/").content.decode()
    assert "Ask an Administrator or Manager to install this connector." in page
    assert f"/marketplace/{sandbox_listing.slug}/install/" not in page
    assert "add new connector" not in client.get("/connectors/").content.decode()


@pytest.mark.parametrize("role", [Role.ADMINISTRATOR, Role.MANAGER])
def test_administrators_and_managers_can_install(role, make_user, company, client_for, sandbox_listing):
    client = client_for(make_user(company, role))
    assert "add new connector" in client.get("/connectors/").content.decode()
    response = client.post(f"/marketplace/{sandbox_listing.slug}/install/")
    assert response.status_code == 302
    assert Connector.objects.filter(company=company, name="Sandbox").count() == 1


def test_read_only_users_do_not_see_add_new_instance(make_user, company, client_for, make_connector):
    make_connector(company)
    page = client_for(make_user(company, Role.READ_ONLY)).get("/connectors/").content.decode()
    assert "Custom API" in page
    assert "add new instance" not in page


def test_users_see_add_new_instance(make_user, company, client_for, make_connector):
    connector = make_connector(company)
    page = client_for(make_user(company, Role.USER)).get("/connectors/").content.decode()
    assert f"/instances/new/{connector.pk}/" in page


def test_an_account_without_a_company_gets_a_clear_403(make_user, client_for):
    response = client_for(make_user(None)).get("/connectors/")
    assert response.status_code == 403
    assert "not part of a company" in response.content.decode()


def test_anonymous_visitors_are_sent_to_the_login_page(client, db):
    response = client.get("/connectors/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
