from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from connectors.manifest import ManifestError
from marketplace import catalog
from marketplace.models import Installation, Listing, ListingVersion


@admin.register(Listing)
class ListingAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "system_type", "latest_version"]
    list_filter = ["system_type"]
    search_fields = ["name", "slug"]
    list_select_related = ["latest_version"]
    readonly_fields = ["latest_version"]
    actions = ["publish_from_catalog"]

    @admin.action(description="Publish new versions found in the catalog for the selected listings")
    def publish_from_catalog(self, request: HttpRequest, queryset: QuerySet) -> None:
        slugs = set(queryset.values_list("slug", flat=True))
        try:
            entries = [e for e in catalog.iter_catalog() if e.slug in slugs]
            published = [e for e in entries if catalog.publish(e.slug, e.manifest, e.changelog)[1]]
        except ManifestError as exc:
            self.message_user(request, f"Nothing published: {exc}", messages.ERROR)
            return
        if published:
            names = ", ".join(f"{e.manifest['name']} {e.manifest['version']}" for e in published)
            self.message_user(request, f"Published {names}.", messages.SUCCESS)
        else:
            self.message_user(request, "No new versions in the catalog for the selected listings.", messages.INFO)


@admin.register(ListingVersion)
class ListingVersionAdmin(admin.ModelAdmin):
    list_display = ["listing", "version", "version_name", "published_at"]
    list_filter = ["listing"]
    search_fields = ["listing__name", "version", "version_name"]
    list_select_related = ["listing"]
    readonly_fields = ["listing", "version", "version_name", "manifest", "published_at"]


@admin.register(Installation)
class InstallationAdmin(admin.ModelAdmin):
    list_display = ["connector", "listing_version", "installed_by", "installed_at"]
    search_fields = ["connector__name", "connector__company__name"]
    list_select_related = ["connector", "listing_version__listing", "installed_by"]
    raw_id_fields = ["connector", "listing_version"]
