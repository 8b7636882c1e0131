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
from marketplace.models import Installation, ListingVersion, differs_from_published
from patchworks_site.models import Company


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
    alongside: Connector | None = None  # a copy of the target version already installed alongside

    @property
    def flows(self) -> list:
        seen: dict[int, object] = {}
        for item in self.impact:
            seen.setdefault(item.flow.pk, item.flow)
        return list(seen.values())

    @property
    def alongside_name(self) -> str:
        return copy_name(self.target.manifest["name"], self.target.version)

    @property
    def removed_shapes(self) -> list[ShapeImpact]:
        return [i for i in self.impact if i.effect == "removed"]


def alongside_copy(connector: Connector, target: ListingVersion) -> Connector | None:
    """Another connector of the company installed from `target` (e.g. by an earlier "install alongside")."""
    return (
        Connector.objects.for_company(connector.company)
        .filter(installation__listing_version=target).exclude(pk=connector.pk).order_by("pk").first()
    )


def copy_name(name: str, version: str) -> str:
    """The name of a copy installed alongside, e.g. "BigCommerce (1.1.0)", within the name's 120 characters."""
    suffix = f" ({version})"
    return name[: 120 - len(suffix)] + suffix


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
        modified=differs_from_published(current, installation.listing_version.manifest), changes=changes,
        impact=impact, blocked_instances=blocked, alongside=alongside_copy(connector, target),
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
    # The name is the company's label (see differs_from_published): an update keeps it.
    editing.save_definition(
        connector, {**update.target.manifest, "name": connector.name}, user=user, action=action,
        summary=f"{action} to version {update.target.version}: {update.changes.summary()}",
        detach_reason=f"removed in version {update.target.version}",
    )
    Installation.objects.filter(pk=update.installation.pk).update(listing_version=update.target)
    return update


@transaction.atomic
def install_alongside(connector: Connector, user=None) -> Connector:
    """Install the latest version as a new connector next to this (unchanged) one.

    The copy is named with its version ("BigCommerce (1.1.0)") so the two can be
    told apart, and a version is installed alongside at most once.
    """
    # Serialised per company (as installs are), so a double click cannot install two copies.
    Company.objects.select_for_update().get(pk=connector.company_id)
    update = plan(connector)
    if update.alongside is not None:
        raise UpdateError(
            f"Version {update.target.version} is already installed alongside as {update.alongside.name}."
        )
    return install(update.target, connector.company, user=user, name=update.alongside_name)
