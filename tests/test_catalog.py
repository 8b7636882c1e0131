"""The marketplace catalog of prebuilt connectors shipped in marketplace/catalog/."""

from __future__ import annotations

import re

import pytest
import yaml

from connectors.manifest import ManifestError, apply, dumps, export, validate
from connectors.models import Connector
from marketplace.catalog import CATALOG_DIR, iter_catalog, read_entry, version_key
from patchworks_site.models import Company

SANDBOX = "sandbox"
CATALOG_FILES = sorted(CATALOG_DIR.glob("*/*.yaml"))


def _readable_entries() -> list:
    """Entries of the files that validate; the per-file test reports the others by name."""
    entries = []
    for path in CATALOG_FILES:
        try:
            entries.append(read_entry(path))
        except ManifestError:
            pass
    return entries


ENTRIES = _readable_entries()
# Variable keys that hold credentials; such variables must be marked secret.
SECRET_KEY_RE = re.compile(r"(^|_)(password|secret|secret_key|token|api_key)$")


def _entry_id(entry) -> str:
    return f"{entry.slug}-{entry.manifest['version']}"


def _versions_by_slug() -> dict[str, list[str]]:
    versions: dict[str, list[str]] = {}
    for entry in ENTRIES:
        versions.setdefault(entry.slug, []).append(entry.manifest["version"])
    return versions


@pytest.mark.parametrize("path", CATALOG_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_catalog_file_is_a_valid_manifest_named_after_its_version(path):
    entry = read_entry(path)
    assert entry.manifest["version"] == path.stem
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", entry.slug), "slugs are lowercase"


def test_iter_catalog_reads_every_file_oldest_version_first():
    entries = iter_catalog()
    assert [e.path for e in entries] == sorted(
        CATALOG_FILES, key=lambda p: (p.parent.name, version_key(p.stem))
    )


def test_the_catalog_has_at_least_twelve_real_vendors_besides_the_sandbox():
    vendors = set(_versions_by_slug()) - {SANDBOX}
    assert len(vendors) >= 12, sorted(vendors)


def test_at_least_three_real_listings_publish_two_versions():
    twice = [slug for slug, versions in _versions_by_slug().items() if slug != SANDBOX and len(versions) >= 2]
    assert len(twice) >= 3, twice


@pytest.mark.parametrize("entry", ENTRIES, ids=_entry_id)
def test_every_listing_has_three_endpoints_and_a_test_request_per_auth_method(entry):
    manifest = entry.manifest
    assert len(manifest["endpoints"]) >= 3
    assert manifest["auth_methods"]
    for method in manifest["auth_methods"]:
        assert method["test_request"]["path"].startswith("/")
        assert method["test_request"]["expected_status"]


@pytest.mark.parametrize("entry", ENTRIES, ids=_entry_id)
def test_every_listing_has_a_description_and_a_changelog(entry):
    assert len(entry.manifest["description"]) >= 80
    assert entry.changelog


@pytest.mark.parametrize("entry", ENTRIES, ids=_entry_id)
def test_credential_variables_are_marked_secret(entry):
    manifest = entry.manifest
    variables = list(manifest["variables"])
    for method in manifest["auth_methods"]:
        variables += method["variables"]
    for variable in variables:
        if SECRET_KEY_RE.search(variable["key"]):
            assert variable["secret"], f'{variable["key"]} should be secret'


def test_newer_versions_change_something_and_say_what():
    by_slug: dict[str, list] = {}
    for entry in ENTRIES:
        by_slug.setdefault(entry.slug, []).append(entry)
    for slug, entries in by_slug.items():
        entries.sort(key=lambda e: version_key(e.manifest["version"]))
        for older, newer in zip(entries, entries[1:]):
            assert newer.manifest != {**older.manifest, "version": newer.manifest["version"]}, slug
            assert newer.changelog and newer.changelog != older.changelog, slug


@pytest.mark.django_db
def test_every_catalog_manifest_survives_apply_export_and_a_yaml_round_trip():
    company = Company.objects.create(name="Round Trip Ltd")
    for entry in ENTRIES:
        manifest = entry.manifest
        connector = apply(manifest, connector=Connector(company=company))
        connector = Connector.objects.prefetch_related("variables", "auth_methods", "endpoints").get(pk=connector.pk)
        assert export(connector) == manifest, entry.path
        assert validate(yaml.safe_load(dumps(manifest))) == manifest, entry.path
