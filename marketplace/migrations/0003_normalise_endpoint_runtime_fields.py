"""Stored manifests gain the endpoint keys added with connectors 0003 (their defaults).

A connector is "modified" when its export differs from the listing version it
was installed from, and every export now has `request_parameters`,
`body_encoding`, `records_path` and `pagination` on each endpoint. Published
listing versions (and the before/after of the connector history) are filled
in with exactly the defaults `connectors.manifest.validate()` gives, so the
schema change alone makes no connector show as modified, and re-loading the
catalog finds the published content unchanged. The defaults are written out
here (not imported) so the migration keeps doing the same when the schema moves on.
"""

from django.db import migrations

PAGINATION_DEFAULT = {
    "style": "none",
    "next_url_path": "",
    "page_parameter": "",
    "limit_parameter": "",
    "limit": 0,
    "offset_parameter": "",
    "cursor_path": "",
    "cursor_parameter": "",
    "first_page": 1,
    "max_pages": 0,
}


def normalised(manifest):
    """`manifest` with the new endpoint keys filled in, or None when nothing was missing."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("endpoints"), list):
        return None
    changed = False
    for endpoint in manifest["endpoints"]:
        if not isinstance(endpoint, dict):
            continue
        for key, default in (("request_parameters", []), ("body_encoding", "json"), ("records_path", "")):
            if key not in endpoint:
                endpoint[key] = default
                changed = True
        pagination = endpoint.get("pagination")
        if not isinstance(pagination, dict):
            endpoint["pagination"] = dict(PAGINATION_DEFAULT)
            changed = True
        elif set(PAGINATION_DEFAULT) - set(pagination):
            endpoint["pagination"] = {**PAGINATION_DEFAULT, **pagination}
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
        ("marketplace", "0002_initial"),
        ("connectors", "0003_endpoint_runtime_fields"),
    ]

    operations = [
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
