"""Redirects to another origin during a run: refused unless the endpoint allows them.

Another site's answer would otherwise stand for the endpoint's data. The
endpoint's setting `follow_redirects_to_other_origins` (manifest, builder)
lets a run follow them, still without credentials.
"""

from __future__ import annotations

import copy
import importlib
import json
import re

from django.apps import apps

from connectors import editing
from connectors import manifest as manifests
from connectors.models import Connector, ConnectorChange, Endpoint
from flows import execution, queueing
from flows.models import RunStatus, RunTrigger
from marketplace import catalog
from marketplace.models import Listing, ListingVersion
from tests.flow_helpers import API_TOKEN, connection, endpoint_of, flow_of, shop_connector
from tests.test_connector_builder import ENDPOINT_POST
from tests.test_manifest_validation import VALID


def origin_of(server) -> str:
    return "http://" + server.url_for("/").split("/")[2]


def run_flow(flow):
    return execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)


def redirecting_api(httpserver, httpserver_ipv4) -> str:
    """An API whose /api/orders redirects to another origin, which answers with its own records."""
    elsewhere = httpserver_ipv4.url_for("/landing")
    assert origin_of(httpserver) != origin_of(httpserver_ipv4)
    httpserver.expect_request("/api/orders").respond_with_data("", status=302, headers={"Location": elsewhere})
    httpserver_ipv4.expect_request("/landing").respond_with_json([{"id": "from-the-other-site"}])
    return httpserver.url_for("/api")


def test_a_run_fails_clearly_on_a_redirect_to_another_origin_and_keeps_no_page(
    company, make_connector, make_instance, httpserver, httpserver_ipv4
):
    connector = shop_connector(make_connector, company, redirecting_api(httpserver, httpserver_ipv4))
    instance = make_instance(connector, "Shop", {"api_token": API_TOKEN})

    run = run_flow(flow_of(company, connection(instance, "list_orders", retries=2)))

    assert run.status == RunStatus.FAILED
    assert (
        f"Blocked: the API redirected to {origin_of(httpserver_ipv4)}, an origin other than the endpoint's "
        f"({origin_of(httpserver)}), and the endpoint does not allow following redirects to other origins "
        '(its setting "Follow redirects to other sites" is off).'
    ) in run.failure_reason, run.failure_reason
    receive = run.shape_runs.get()
    assert receive.items_out == 0 and not (receive.payload_sample or {}).get("out")
    assert "from-the-other-site" not in json.dumps([receive.payload_sample, receive.failed_exchanges])
    assert httpserver_ipv4.log == []  # the other site was not asked
    assert len(httpserver.log) == 1  # nor was the refusal retried


def test_an_endpoint_that_allows_it_follows_the_redirect_without_credentials(
    company, make_connector, make_instance, httpserver, httpserver_ipv4
):
    connector = shop_connector(make_connector, company, redirecting_api(httpserver, httpserver_ipv4))
    instance = make_instance(connector, "Shop", {"api_token": API_TOKEN})
    endpoint_of(instance, "list_orders", follow_redirects_to_other_origins=True)

    run = run_flow(flow_of(company, connection(instance, "list_orders")))

    assert run.status == RunStatus.SUCCESS, run.failure_reason
    receive = run.shape_runs.get()
    assert receive.items_out == 1 and receive.payload_sample["out"] == [{"id": "from-the-other-site"}]
    [(first, _)] = httpserver.log
    assert first.headers["Authorization"] == f"Bearer {API_TOKEN}"
    [(landed, _)] = httpserver_ipv4.log
    assert "Authorization" not in landed.headers and API_TOKEN not in str(landed.headers)


def test_a_redirect_within_the_origin_is_followed_in_a_run(company, make_connector, make_instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_data("", status=302, headers={"Location": "/api/v2/orders"})
    httpserver.expect_request("/api/v2/orders").respond_with_json([{"id": 1}])
    instance = make_instance(shop_connector(make_connector, company, httpserver.url_for("/api")), "Shop",
                             {"api_token": API_TOKEN})

    run = run_flow(flow_of(company, connection(instance, "list_orders")))

    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert run.shape_runs.get().items_out == 1


def test_the_endpoint_setting_travels_through_the_manifest_and_defaults_to_off(company):
    data = copy.deepcopy(VALID)
    assert manifests.validate(copy.deepcopy(data))["endpoints"][0]["follow_redirects_to_other_origins"] is False
    data["endpoints"][0]["follow_redirects_to_other_origins"] = True
    manifest = manifests.validate(data)

    connector = editing.fresh(manifests.apply(manifest, connector=Connector(company=company)))

    assert Endpoint.objects.get(connector=connector).follow_redirects_to_other_origins is True
    exported = manifests.export(connector)
    assert exported == manifest
    assert manifests.loads(manifests.dumps(exported))["endpoints"][0]["follow_redirects_to_other_origins"] is True


def test_a_manifest_with_a_non_boolean_setting_is_refused():
    data = copy.deepcopy(VALID)
    data["endpoints"][0]["follow_redirects_to_other_origins"] = "sometimes"

    try:
        manifests.validate(data)
    except manifests.ManifestError as exc:
        assert any("endpoints[0].follow_redirects_to_other_origins" in error for error in exc.errors), exc.errors
    else:
        raise AssertionError("the manifest was accepted")


def test_the_builder_sets_and_clears_the_endpoint_setting(admin_client, company, make_connector):
    connector = make_connector(company)
    url = f"/connectors/{connector.pk}/build/endpoints/"
    assert re.search(r">\s*Follow redirects to other sites\s*<", admin_client.get(url).content.decode())

    response = admin_client.post(url, {**ENDPOINT_POST, "follow_redirects_to_other_origins": "on"})

    assert response.status_code == 302, response.content.decode()[:2000]
    assert manifests.export(editing.fresh(connector))["endpoints"][1]["follow_redirects_to_other_origins"] is True
    page = admin_client.get(url + "?edit=list_orders_2").content.decode()
    assert re.search(r'name="follow_redirects_to_other_origins"[^>]*checked', page)

    response = admin_client.post(url, {**ENDPOINT_POST, "key": "list_orders_2"})  # the box left unticked

    assert response.status_code == 302
    assert manifests.export(editing.fresh(connector))["endpoints"][1]["follow_redirects_to_other_origins"] is False


def test_connectors_installed_before_the_setting_existed_stay_unmodified(company, admin_user):
    migration = importlib.import_module("marketplace.migrations.0004_normalise_endpoint_redirect_setting")
    entry = next(e for e in catalog.iter_catalog() if e.slug == "sandbox" and e.manifest["version"] == "1.2.0")
    old = copy.deepcopy(entry.manifest)
    for endpoint in old["endpoints"]:
        del endpoint["follow_redirects_to_other_origins"]
    listing = Listing.objects.create(slug="sandbox", name="Sandbox", system_type="Other")
    version = ListingVersion.objects.create(listing=listing, version="1.2.0", manifest=old)
    listing.latest_version = version
    listing.save()
    connector = catalog.install(version, company, admin_user)
    ConnectorChange.objects.filter(connector=connector).update(after=old)
    assert connector.installation.is_modified  # what the schema change alone would show

    migration.forwards(apps, None)

    connector = Connector.objects.get(pk=connector.pk)
    assert not connector.installation.is_modified
    assert ListingVersion.objects.get(pk=version.pk).manifest == entry.manifest
    assert ConnectorChange.objects.get(connector=connector).after == entry.manifest
    assert migration.normalised(copy.deepcopy(entry.manifest)) is None
