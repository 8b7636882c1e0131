"""The Sandbox listing's API URL default names where this deployment serves the Sandbox, in every published version.

It was the fixed address http://127.0.0.1:8000/sandbox/api, which the outbound
client used to swap for SANDBOX_BASE_URL. The default is now
``{{deployment.sandbox_url}}`` (see instances.deployment), in the published
versions and in the connectors installed from them alike, so whether a
connector is modified does not change.
"""

from django.db import migrations

OLD = "http://127.0.0.1:8000/sandbox/api"
NEW = "{{deployment.sandbox_url}}"


def _replace(apps, old: str, new: str) -> None:
    ListingVersion = apps.get_model("marketplace", "ListingVersion")
    Variable = apps.get_model("connectors", "Variable")
    for version in ListingVersion.objects.filter(listing__slug="sandbox"):
        variables = version.manifest.get("variables") or []
        changed = [v for v in variables if v.get("key") == "base_url" and v.get("default") == old]
        for variable in changed:
            variable["default"] = new
        if changed:
            version.save(update_fields=["manifest"])
    Variable.objects.filter(
        key="base_url", default=old, auth_method__isnull=True,
        connector__installation__listing_version__listing__slug="sandbox",
    ).update(default=new)


def forwards(apps, schema_editor):
    _replace(apps, OLD, NEW)


def backwards(apps, schema_editor):
    _replace(apps, NEW, OLD)


class Migration(migrations.Migration):

    dependencies = [
        ('sandbox', '0002_account_keys_are_instance_secrets'),
        ('connectors', '0005_endpoint_follow_redirects_to_other_origins'),
        ('marketplace', '0004_normalise_endpoint_redirect_setting'),
    ]

    operations = [
        migrations.RunPython(forwards, backwards),
    ]
