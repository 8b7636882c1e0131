"""Marketplace listings, their published versions (manifests) and installations."""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import models

from connectors import manifest as manifests
from connectors import schema
from connectors.models import Colour, Connector, SystemType


def differs_from_published(current: dict, published: dict) -> bool:
    """Whether a connector's manifest differs from the listing version it was installed from.

    The name is the company's label for its connector (a copy installed
    alongside is named with its version), so renaming is not a modification.
    """
    return {**current, "name": ""} != {**published, "name": ""}


# Whether a connector is modified is cached (exporting a definition costs a few
# milliseconds and the manage page shows many). The key holds everything the
# answer depends on: the connector's `updated_at` -- which every change to its
# definition moves (apply() saves the connector; connectors.apps touches it when a
# variable, authentication method or endpoint is saved or deleted on its own) --, the
# listing version it was installed from (immutable once published), and the code
# that exports and compares, so a deployment that changes them starts afresh.
_MODIFIED_CODE = hashlib.sha256(
    Path(manifests.__file__).read_bytes() + Path(schema.__file__).read_bytes() + Path(__file__).read_bytes()
).hexdigest()[:16]
MODIFIED_CACHE_SECONDS = 24 * 3600


class ListingQuerySet(models.QuerySet):
    def search(self, query: str = "", system_type: str = "") -> ListingQuerySet:
        qs = self
        if query:
            qs = qs.filter(models.Q(name__icontains=query) | models.Q(summary__icontains=query))
        if system_type:
            qs = qs.filter(system_type=system_type)
        return qs


class Listing(models.Model):
    """A prebuilt connector in the marketplace. Name, type and colour follow its latest version."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    system_type = models.CharField(max_length=20, choices=SystemType.choices)
    colour = models.CharField(max_length=20, choices=Colour.choices, default="blue")
    summary = models.TextField(blank=True)
    latest_version = models.ForeignKey(
        "ListingVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="Set by publish(); the newest published version.",
    )

    objects = ListingQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ListingVersion(models.Model):
    listing = models.ForeignKey(Listing, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=40)
    version_name = models.CharField(max_length=120, blank=True)
    changelog = models.TextField(blank=True)
    manifest = models.JSONField()
    published_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["listing", "-published_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["listing", "version"], name="unique_listing_version")
        ]

    def __str__(self) -> str:
        return f"{self.listing.name} {self.version}"


class Installation(models.Model):
    """Links an installed prebuilt connector to the listing version it came from."""

    connector = models.OneToOneField(Connector, on_delete=models.CASCADE, related_name="installation")
    listing_version = models.ForeignKey(
        ListingVersion, on_delete=models.PROTECT, related_name="installations"
    )
    installed_at = models.DateTimeField(auto_now_add=True)
    installed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.connector} from {self.listing_version}"

    @property
    def latest_version(self) -> ListingVersion | None:
        return self.listing_version.listing.latest_version

    @property
    def update_available(self) -> bool:
        latest = self.latest_version
        return latest is not None and latest.pk != self.listing_version_id

    def _modified_cache_key(self) -> str:
        updated_at = self.connector.updated_at
        return (f"installation-modified:{_MODIFIED_CODE}:{self.connector_id}:{self.listing_version_id}:"
                f"{updated_at.isoformat() if updated_at else ''}")

    def _cached_modified(self) -> tuple[str, bool | None]:
        key = self._modified_cache_key()
        memo = self.__dict__.get("_modified_memo")  # (key, answer): one cache read per page
        if memo is None or memo[0] != key:
            memo = self._modified_memo = (key, cache.get(key))
        return memo

    @classmethod
    def prepare_is_modified(cls, installations: list[Installation]) -> None:
        """Ready `is_modified` for a page of installations: one cache read, and one query per
        kind of row for those not cached (their definitions and installed manifests).

        The installations' connectors and listing versions must be loaded (the
        listing versions' manifests may be deferred).
        """
        keys = {installation._modified_cache_key(): installation for installation in installations}
        cached = cache.get_many(list(keys))
        unknown = []
        for key, installation in keys.items():
            installation._modified_memo = (key, cached.get(key))
            if key not in cached:
                unknown.append(installation)
        if not unknown:
            return
        models.prefetch_related_objects([i.connector for i in unknown], "variables", "auth_methods", "endpoints")
        deferred = [i.listing_version for i in unknown if "manifest" in i.listing_version.get_deferred_fields()]
        if deferred:
            manifests_by_pk = dict(
                ListingVersion.objects.filter(pk__in={v.pk for v in deferred}).values_list("pk", "manifest")
            )
            for version in deferred:
                version.manifest = manifests_by_pk[version.pk]

    @property
    def is_modified(self) -> bool:
        """Derived, never stored: the connector no longer matches the manifest it was installed from.

        The answer is cached under a key that changes with the definition (see _MODIFIED_CODE).
        """
        key, answer = self._cached_modified()
        if answer is None:
            answer = differs_from_published(manifests.export(self.connector), self.listing_version.manifest)
            cache.set(key, answer, MODIFIED_CACHE_SECONDS)
            self._modified_memo = (key, answer)
        return answer
