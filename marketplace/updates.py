"""Updating an installed prebuilt connector to the listing's latest version.

`plan()` says what the update changes and what it does to every process flow
using the connector (the impact report). `update_in_place()` (an unmodified
connector, or "overwrite" of a modified one) and `install_alongside()` carry it
out atomically: a failure leaves the old definition intact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from connectors import editing
from connectors import manifest as manifests
from connectors.models import Connector, ConnectorChange
from marketplace.catalog import install
from marketplace.models import Installation, ListingVersion


class UpdateError(Exception):
    pass


@dataclass
class ShapeImpact:
    flow: object
    shape: object
    instance: object
    endpoint_name: str
    effect: str  # "unchanged", "changed", "removed"


@dataclass
class UpdatePlan:
    connector: Connector
    installation: Installation
    target: ListingVersion
    modified: bool
    changes: manifests.ManifestComparison
    impact: list[ShapeImpact] = field(default_factory=list)
    blocked_instances: list = field(default_factory=list)  # instances on an auth method the update removes

    @property
    def flows(self) -> list:
        seen: dict[int, object] = {}
        for item in self.impact:
            seen.setdefault(item.flow.pk, item.flow)
        return list(seen.values())

    @property
    def removed_shapes(self) -> list[ShapeImpact]:
        return [i for i in self.impact if i.effect == "removed"]


def plan(connector: Connector) -> UpdatePlan:
    installation = (
        Installation.objects.select_related("listing_version__listing__latest_version").get(connector=connector)
    )
    target = installation.listing_version.listing.latest_version
    if target is None or target.pk == installation.listing_version_id:
        raise UpdateError(f"{connector.name} is up to date.")
    current = manifests.export(editing.fresh(connector))
    changes = manifests.compare(current, target.manifest)
    impact = []
    endpoints = connector.endpoints.prefetch_related("connection_shapes__flow", "connection_shapes__instance")
    for endpoint in endpoints:
        effect = (
            "removed" if endpoint.key in changes.removed_endpoint_keys
            else "changed" if endpoint.key in changes.changed_endpoint_keys
            else "unchanged"
        )
        for shape in endpoint.connection_shapes.all():
            impact.append(ShapeImpact(shape.flow, shape, shape.instance, endpoint.name, effect))
    impact.sort(key=lambda i: (i.flow.name, i.shape.position))
    blocked = list(
        connector.instances.filter(auth_method__key__in=changes.removed_auth_method_keys).select_related("auth_method")
    )
    return UpdatePlan(
        connector=connector, installation=installation, target=target,
        modified=current != installation.listing_version.manifest, changes=changes,
        impact=impact, blocked_instances=blocked,
    )


@transaction.atomic
def update_in_place(connector: Connector, user=None) -> UpdatePlan:
    """Make the connector the latest version (overwriting modifications); instances keep their credentials."""
    update = plan(connector)
    if update.blocked_instances:
        names = ", ".join(i.name for i in update.blocked_instances)
        raise UpdateError(
            f"Version {update.target.version} removes an authentication method that these instances use: {names}. "
            "Move them to another authentication method first, or install the update alongside."
        )
    action = ConnectorChange.Action.OVERWRITTEN if update.modified else ConnectorChange.Action.UPDATED
    editing.save_definition(
        connector, update.target.manifest, user=user, action=action,
        summary=f"{action} to version {update.target.version}: {update.changes.summary()}",
        detach_reason=f"removed in version {update.target.version}",
    )
    Installation.objects.filter(pk=update.installation.pk).update(listing_version=update.target)
    return update


def install_alongside(connector: Connector, user=None) -> Connector:
    """Install the latest version as a new connector next to this (unchanged) one."""
    update = plan(connector)
    return install(update.target, connector.company, user=user)
