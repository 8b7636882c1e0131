"""Marketplace listings, their published versions (manifests) and installations."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from connectors import manifest as manifests
from connectors.models import Colour, Connector, SystemType


def differs_from_published(current: dict, published: dict) -> bool:
    """Whether a connector's manifest differs from the listing version it was installed from.

    The name is the company's label for its connector (a copy installed
    alongside is named with its version), so renaming is not a modification.
    """
    return {**current, "name": ""} != {**published, "name": ""}


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

    @property
    def is_modified(self) -> bool:
        """Derived, never stored: the connector no longer matches the manifest it was installed from."""
        return differs_from_published(manifests.export(self.connector), self.listing_version.manifest)
