"""Stored secrets go only to the address they were entered for.

Changing where credentials are sent — an API URL variable, the connector's
base URL, its OAuth token URL — must not carry the stored secret to the new
host: the user enters it again, or an Administrator confirms (audited).
"""

from __future__ import annotations

import pytest
import yaml

from connectors import editing
from connectors import manifest as manifests
from instances import checks
from instances.models import Instance
from patchworks_site.models import AuditEntry, Role

TOKEN = "stored-token-0123456789"


@pytest.fixture
def hosts(httpserver):
    """Two origins served by the same test server: localhost:PORT and 127.0.0.1:PORT."""
    old = httpserver.url_for("/api")
    assert old.startswith("http://localhost:")
    return old, old.replace("localhost", "127.0.0.1")


def received_hosts(httpserver) -> list[str]:
    return [request.headers["Host"].split(":")[0] for request, _ in httpserver.log]


@pytest.fixture
def connector(company, make_connector, hosts, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({"ok": True})
    return make_connector(
        company,
        base_url="{{api_url}}",
        variables=[{"key": "api_url", "label": "API URL", "default": hosts[0], "required": True}],
        auth_methods=[
            {
                "key": "token", "name": "API token", "type": "token",
                "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
                "headers": {"X-Api-Key": "{{api_token}}"},
                "test_request": {"path": "/me"},
            }
        ],
    )


@pytest.fixture
def instance(connector, make_instance, hosts):
    return make_instance(connector, secrets={"api_token": TOKEN}, values={"api_url": hosts[0]})


def settings_form(instance, **overrides) -> dict:
    return {
        "name": instance.name, "time_zone": instance.time_zone, "date_format": instance.date_format,
        "rate_limit_amount": instance.rate_limit_amount, "rate_limit_unit": instance.rate_limit_unit,
        "connection_pool": "", "auth_method": instance.auth_method_id,
        "var_api_url": instance.values["api_url"], "var_api_token": "", **overrides,
    }


def test_new_credentials_are_approved_for_the_address_they_were_entered_for(instance, hosts):
    port = hosts[0].split(":")[2].split("/")[0]
    assert instance.credentials_approved_for == [f"http://localhost:{port}"]


def test_changing_the_api_url_and_keeping_the_stored_secret_is_refused_and_sends_nothing(
    admin_client, instance, hosts, httpserver
):
    response = admin_client.post(f"/instances/{instance.pk}/", settings_form(instance, var_api_url=hosts[1]))

    assert response.status_code == 422
    page = response.content.decode()
    assert "The API address changed to 127.0.0.1" in page
    assert "Enter this value again to send it to 127.0.0.1" in page
    assert "Nothing was saved." in page
    assert httpserver.log == []  # the stored token went nowhere
    instance.refresh_from_db()
    assert instance.values["api_url"] == hosts[0]


def test_re_entering_the_secret_sends_it_to_the_new_address_and_approves_it(admin_client, instance, hosts, httpserver):
    response = admin_client.post(
        f"/instances/{instance.pk}/", settings_form(instance, var_api_url=hosts[1], var_api_token="new-token-456789")
    )

    assert response.status_code == 302
    assert received_hosts(httpserver) == ["127.0.0.1"]
    instance.refresh_from_db()
    assert instance.get_secrets() == {"api_token": "new-token-456789"}
    assert instance.credentials_approved_for == [hosts[1].rsplit("/", 1)[0].replace("/api", "")]


def test_an_administrator_may_confirm_instead_and_the_audit_log_records_it(admin_client, instance, hosts, httpserver):
    refused = admin_client.post(f"/instances/{instance.pk}/", settings_form(instance, var_api_url=hosts[1]))
    assert 'name="confirm_destination"' in refused.content.decode()

    response = admin_client.post(
        f"/instances/{instance.pk}/", settings_form(instance, var_api_url=hosts[1], confirm_destination="yes")
    )

    assert response.status_code == 302
    assert received_hosts(httpserver) == ["127.0.0.1"]
    instance.refresh_from_db()
    assert instance.get_secrets() == {"api_token": TOKEN}
    note = AuditEntry.objects.filter(object_type="instance", object_id=str(instance.pk)).order_by("-id")
    assert any("confirmed without entering them again" in str(e.changes) for e in note)
    assert all(TOKEN not in str(e.changes) for e in note)


@pytest.mark.parametrize("role", [Role.MANAGER, Role.USER])
def test_only_an_administrator_can_confirm(role, make_user, company, client_for, instance, hosts, httpserver):
    client = client_for(make_user(company, role))
    refused = client.post(f"/instances/{instance.pk}/", settings_form(instance, var_api_url=hosts[1]))
    assert 'name="confirm_destination"' not in refused.content.decode()

    response = client.post(f"/instances/{instance.pk}/", settings_form(instance, var_api_url=hosts[1], confirm_destination="yes"))

    assert response.status_code == 422
    assert httpserver.log == []


def test_a_connector_edit_that_moves_the_api_marks_instances_and_check_now_sends_nothing(
    admin_client, company, connector, instance, hosts, httpserver, make_user, client_for
):
    manager = client_for(make_user(company, Role.MANAGER))
    manifest = manifests.export(editing.fresh(connector))
    manifest["variables"][0]["default"] = hosts[1]
    manifest["base_url"] = hosts[1]  # the base URL no longer uses the instance's variable
    response = manager.post(f"/connectors/{connector.pk}/manifest/", {"manifest": yaml.safe_dump(manifest)})
    assert response.status_code == 302, response.content.decode()[:1000]

    instance.refresh_from_db()
    assert instance.reauth_reason.startswith("The API address changed to 127.0.0.1")
    manage = admin_client.get("/connectors/").content.decode()
    assert "Re-authentication needed" in manage

    result, check = checks.recheck(instance)
    assert not result.ok
    assert "Re-authentication needed" in result.message
    assert httpserver.log == []

    # Entering the token again (for the new address) clears it.
    response = admin_client.post(f"/instances/{instance.pk}/", settings_form(instance, var_api_token="fresh-token-789012"))
    assert response.status_code == 302
    instance.refresh_from_db()
    assert instance.reauth_reason == ""
    assert received_hosts(httpserver) == ["127.0.0.1"]


def test_moving_the_api_back_clears_the_mark(connector, instance, hosts):
    manifest = manifests.export(editing.fresh(connector))
    manifest["base_url"] = hosts[1]
    editing.save_definition(connector, manifest)
    assert Instance.objects.get(pk=instance.pk).needs_reauth
    manifest["base_url"] = "{{api_url}}"
    editing.save_definition(connector, manifest)
    assert not Instance.objects.get(pk=instance.pk).needs_reauth


def test_a_changed_oauth_token_url_marks_the_instance_too(company, make_connector, make_instance, httpserver):
    method = {
        "key": "oauth", "name": "OAuth", "type": "oauth2_client_credentials",
        "token_url": httpserver.url_for("/oauth/token"),
        "variables": [
            {"key": "client_id", "label": "Client id", "required": True},
            {"key": "client_secret", "label": "Client secret", "required": True, "secret": True},
        ],
        "test_request": {"path": "/me"},
    }
    connector = make_connector(company, base_url=httpserver.url_for("/api"), auth_methods=[method])
    instance = make_instance(connector, values={"client_id": "id"}, secrets={"client_secret": "cs-0123456789"})
    manifest = manifests.export(editing.fresh(connector))
    manifest["auth_methods"][0]["token_url"] = "https://tokens.example.net/oauth/token"

    editing.save_definition(connector, manifest)

    instance.refresh_from_db()
    assert "tokens.example.net" in instance.reauth_reason
    result, _ = checks.recheck(instance)
    assert "not sent to tokens.example.net" in result.message
    assert httpserver.log == []


def test_an_instance_whose_values_were_changed_elsewhere_still_sends_nothing(instance, hosts, httpserver):
    """The client itself refuses: not only the settings form."""
    Instance.objects.filter(pk=instance.pk).update(values={"api_url": hosts[1]})
    instance.refresh_from_db()

    result, _ = checks.recheck(instance)

    assert not result.ok and "Re-authentication needed" in result.message
    assert httpserver.log == []
    assert Instance.objects.get(pk=instance.pk).reauth_reason.startswith("The API address changed to 127.0.0.1")
