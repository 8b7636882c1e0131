"""Moving the Sandbox into its own app keeps its data; its listing's API URL default names the deployment's Sandbox."""

from __future__ import annotations

from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("patchworks_site", "0007_company_max_run_duration"), ("connectors", "0005_endpoint_follow_redirects_to_other_origins"),
          ("marketplace", "0004_normalise_endpoint_redirect_setting"), ("sandbox", None)]
AFTER = [("sandbox", "0003_sandbox_api_url_follows_the_deployment")]
OLD_ADDRESS = "http://127.0.0.1:8000/sandbox/api"


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


def test_accounts_and_received_orders_survive_the_move_and_listed_addresses_follow_the_deployment(transactional_db):
    old = migrate(BEFORE)
    company = old.get_model("patchworks_site", "Company").objects.create(name="Acme Retail")
    old.get_model("patchworks_site", "SandboxAccount").objects.create(
        company=company, account="acme-account", key_hash="a" * 64, key_ciphertext="encrypted")
    old.get_model("patchworks_site", "SandboxReceivedOrder").objects.create(
        received_at="2026-11-23T18:40:00Z", account="acme-account", body={"reference": "SB-1"}, size=20)
    listing = old.get_model("marketplace", "Listing").objects.create(slug="sandbox", name="Sandbox", system_type="Other")
    manifest = {"name": "Sandbox", "variables": [{"key": "base_url", "default": OLD_ADDRESS}]}
    version = old.get_model("marketplace", "ListingVersion").objects.create(
        listing=listing, version="1.0.0", version_name="v1", manifest=manifest)
    connector = old.get_model("connectors", "Connector").objects.create(
        company=company, name="Sandbox", system_type="Other", version="1.0.0", base_url="{{base_url}}",
        date_format="%Y-%m-%d", rate_limit_amount=120, rate_limit_unit="minute")
    old.get_model("connectors", "Variable").objects.create(connector=connector, key="base_url", label="URL", default=OLD_ADDRESS)
    old.get_model("marketplace", "Installation").objects.create(connector=connector, listing_version=version)

    new = migrate(AFTER)
    account = new.get_model("sandbox", "SandboxAccount").objects.get()
    assert (account.company_id, account.account) == (company.pk, "acme-account")
    assert account.key_hash == ""  # known only through the encrypted copy, which is gone: revoked
    order = new.get_model("sandbox", "SandboxReceivedOrder").objects.get()
    assert (order.account, order.body) == ("acme-account", {"reference": "SB-1"})
    placeholder = "{{deployment.sandbox_url}}"
    assert new.get_model("marketplace", "ListingVersion").objects.get().manifest["variables"][0]["default"] == placeholder
    assert new.get_model("connectors", "Variable").objects.get().default == placeholder
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # every app at its newest migration again, for the next tests
