"""The instance rows of the manage connectors page: what a row shows, fetched for a page at a time.

A row holds no credentials and no values. The page shows up to 20 connectors
with their first INSTANCES_SHOWN instances each, read with one values query
into `InstanceRow`s (no model instances); the rest are one "show all N
instances" away, so the page costs the same at any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace

from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils.encoding import force_str

from connectors.models import Connector, RateLimitUnit
from instances.models import Instance, InstanceQuerySet
from instances.outbound import limits

INSTANCES_SHOWN = 5
INSTANCE_COLUMNS = (
    "connector", "name", "rate_limit_amount", "rate_limit_unit", "rate_limit_group", "connection_pool",
    "last_checked_at", "last_check_ok", "last_check_message", "reauth_reason", "last_used_by_run_at",
    "uid", "company",  # which rate limit is the instance's (is it paused?)
)
_RATE_LIMIT_UNITS = dict(RateLimitUnit.choices)


def instance_rows() -> InstanceQuerySet:
    """Instances as the manage page lists them: none of their credentials or values."""
    return Instance.objects.select_related("connection_pool").only(
        *INSTANCE_COLUMNS, "connection_pool__name", "connection_pool__limit"
    )


@dataclass(slots=True)
class InstanceRow:
    """What a row of the manage page shows of an instance (no credentials, no values)."""

    pk: int
    connector_id: int
    name: str
    rate_limit_amount: int
    rate_limit_unit: str
    rate_limit_group: str
    last_checked_at: datetime | None
    last_check_ok: bool | None
    last_check_message: str
    reauth_reason: str
    last_used_by_run_at: datetime | None
    uid: object
    company_id: int
    connection_pool: SimpleNamespace | None
    rate_limit_paused_until: datetime | None = None  # set by limits.note_rate_limit_pauses

    @property
    def rate_limit_display(self) -> str:
        """Instance.rate_limit_display, from the field's choices."""
        label = _RATE_LIMIT_UNITS.get(self.rate_limit_unit, self.rate_limit_unit)
        return f"{self.rate_limit_amount} {force_str(label)}"


_ROW_FIELDS = ("pk", "connector_id", "name", "rate_limit_amount", "rate_limit_unit", "rate_limit_group",
               "last_checked_at", "last_check_ok", "last_check_message", "reauth_reason", "last_used_by_run_at",
               "uid", "company_id", "connection_pool__name", "connection_pool__limit")


def set_first_instances(connectors: list[Connector]) -> None:
    """`connector.first_instances`: the first INSTANCES_SHOWN instances of each, in the instances' order."""
    by_pk = {connector.pk: connector for connector in connectors}
    for connector in connectors:
        connector.first_instances = []
    if not by_pk:
        return
    rows = (
        Instance.objects.filter(connector__in=list(by_pk))
        .annotate(position=Window(RowNumber(), partition_by=F("connector"), order_by=list(Instance._meta.ordering)))
        .filter(position__lte=INSTANCES_SHOWN)
        .order_by("connector", "position")
        .values_list(*_ROW_FIELDS)
    )
    for *values, pool_name, pool_limit in rows:
        pool = SimpleNamespace(name=pool_name, limit=pool_limit) if pool_name is not None else None
        row = InstanceRow(*values, connection_pool=pool)
        by_pk[row.connector_id].first_instances.append(row)
    limits.note_rate_limit_pauses([row for c in connectors for row in c.first_instances])


def show_highlighted_instance(connectors: list[Connector], pk: int) -> None:
    """A just-added instance is shown even when it is not among its connector's first instances."""
    by_pk = {c.pk: c for c in connectors}
    instance = instance_rows().filter(pk=pk, connector__in=list(by_pk)).first()
    if instance is not None:
        shown = by_pk[instance.connector_id].first_instances
        if all(i.pk != pk for i in shown):
            limits.note_rate_limit_pauses([instance])
            shown.append(instance)
