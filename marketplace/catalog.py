"""The catalog shipped in the repository and publishing of listing versions.

Layout: ``marketplace/catalog/<slug>/<version>.yaml``. Each file is a connector
manifest plus one optional top-level ``changelog`` key (what changed in this
version, shown on the listing page; not part of the connector definition).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from connectors import editing
from connectors import manifest as manifests
from connectors.models import Connector, ConnectorChange
from marketplace.models import Installation, Listing, ListingVersion

CATALOG_DIR = Path(__file__).resolve().parent / "catalog"


@dataclass
class CatalogEntry:
    slug: str
    path: Path
    changelog: str
    manifest: dict


def version_key(version: str) -> tuple:
    """Sort key for version text such as 1.2.10 (numeric parts compare as numbers)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in version.replace("-", ".").split("."))


def read_entry(path: Path, slug: str | None = None) -> CatalogEntry:
    """Read one catalog file; ManifestError names the file and the path inside it."""
    try:
        # The one manifest reader: the same size, nesting and alias limits as an upload.
        data = manifests.parse(path.read_text(encoding="utf-8"))
    except manifests.ManifestError as exc:
        raise manifests.ManifestError([f"{path.name}: {e.removeprefix('manifest: ')}" for e in exc.errors]) from exc
    if not isinstance(data, dict):
        raise manifests.ManifestError([f"{path.name}: must be a mapping"])
    manifest, changelog = manifests.validate_listing(data)  # the manifest's schema, plus the changelog
    return CatalogEntry(slug=slug or path.parent.name, path=path, changelog=changelog, manifest=manifest)


def iter_catalog(directory: Path = CATALOG_DIR) -> list[CatalogEntry]:
    """Every catalog entry, oldest version first within each listing."""
    entries = []
    for listing_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        files = sorted(listing_dir.glob("*.yaml"), key=lambda p: version_key(p.stem))
        entries.extend(read_entry(path) for path in files)
    return entries


@transaction.atomic
def publish(slug: str, manifest: dict, changelog: str = "") -> tuple[ListingVersion, bool]:
    """Publish a validated manifest as a listing version; (version, created).

    Publishing a version that already exists with the same manifest is a no-op,
    so loading the catalog is idempotent; a different manifest under an existing
    version number is refused (published versions are immutable).
    """
    manifest = manifests.validate(manifest)
    listing, _ = Listing.objects.select_for_update().get_or_create(
        slug=slug,
        defaults={"name": manifest["name"], "system_type": manifest["system_type"]},
    )
    existing = listing.versions.filter(version=manifest["version"]).first()
    if existing is not None:
        if existing.manifest != manifest:
            raise manifests.ManifestError(
                [f'version: {manifest["version"]} of {slug} is already published with different content']
            )
        return existing, False
    listing_version = ListingVersion.objects.create(
        listing=listing,
        version=manifest["version"],
        version_name=manifest["version_name"],
        changelog=changelog,
        manifest=manifest,
    )
    latest = listing.latest_version
    if latest is None or version_key(listing_version.version) > version_key(latest.version):
        listing.latest_version = listing_version
        listing.name = manifest["name"]
        listing.system_type = manifest["system_type"]
        listing.colour = manifest["colour"]
        listing.summary = manifest["description"]
    listing.save()
    return listing_version, True


def load_catalog(directory: Path = CATALOG_DIR) -> int:
    """Publish every catalog file not yet published; the number published."""
    return sum(publish(e.slug, e.manifest, e.changelog)[1] for e in iter_catalog(directory))


@transaction.atomic
def install(listing_version: ListingVersion, company, user=None, name: str | None = None) -> Connector:
    """Install a listing version for a company as a new prebuilt connector (optionally under another name)."""
    connector = Connector(company=company)
    manifest = {**listing_version.manifest, "name": name} if name else listing_version.manifest
    editing.save_definition(
        connector, manifest, user=user, action=ConnectorChange.Action.INSTALLED,
        summary=f"installed version {listing_version.version} from the marketplace",
    )
    Installation.objects.create(connector=connector, listing_version=listing_version, installed_by=user)
    return connector
