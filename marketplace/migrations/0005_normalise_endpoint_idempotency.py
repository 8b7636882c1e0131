"""Stored manifests gain the endpoint key added with connectors 0006 (its default).

Every export now has `idempotency` on each endpoint. Published listing versions
(and the before/after of the connector history) are filled in with the default
`connectors.manifest.validate()` gives (the key is not sent), so the schema
change alone makes no connector show as modified, and re-loading the catalog
finds the published content unchanged. Listings that declare a key do so in new
versions, which installed connectors are offered as updates. The default is
written out here (not imported) so the migration keeps doing the same when the
schema moves on.
"""

from django.db import migrations

KEY = "idempotency"


def default():
    return {"in": "none", "name": ""}


def normalised(manifest):
    """`manifest` with the new endpoint key filled in, or None when nothing was missing."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("endpoints"), list):
        return None
    changed = False
    for endpoint in manifest["endpoints"]:
        if isinstance(endpoint, dict) and KEY not in endpoint:
            endpoint[KEY] = default()
            changed = True
    return manifest if changed else None


def forwards(apps, schema_editor):
    ListingVersion = apps.get_model("marketplace", "ListingVersion")
    ConnectorChange = apps.get_model("connectors", "ConnectorChange")
    for version in ListingVersion.objects.only("id", "manifest").iterator(chunk_size=200):
        manifest = normalised(version.manifest)
        if manifest is not None:
            ListingVersion.objects.filter(pk=version.pk).update(manifest=manifest)
    for change in ConnectorChange.objects.only("id", "before", "after").iterator(chunk_size=200):
        before, after = normalised(change.before), normalised(change.after)
        updates = {k: v for k, v in (("before", before), ("after", after)) if v is not None}
        if updates:
            ConnectorChange.objects.filter(pk=change.pk).update(**updates)


class Migration(migrations.Migration):

    dependencies = [
        ("marketplace", "0004_normalise_endpoint_redirect_setting"),
        ("connectors", "0006_endpoint_idempotency_key"),
    ]

    operations = [
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
