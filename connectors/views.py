from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace

from django.core.paginator import Paginator
from django.db.models import BooleanField, Count, Exists, ExpressionWrapper, F, Min, OuterRef, Q, Subquery, Window
from django.db.models.functions import Coalesce, RowNumber
from django.utils.encoding import force_str
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from connectors import manifest as manifests
from connectors.models import AuthMethod, Connector, Endpoint, SystemType
from patchworks_site import params
from patchworks_site.models import Company
from patchworks_site.tenancy import company_of

PAGE_SIZE = 20
# Columns of the manage page's related rows that it does not show (fewer values to convert).
MANAGE_UNUSED = (
    *(f"updated_by__{f}" for f in ("password", "last_login", "is_superuser", "email", "is_staff", "is_active",
                                   "date_joined")),
    "installation__listing_version__manifest", "installation__listing_version__changelog",
    *(f"installation__listing_version__listing__{f}" for f in ("summary", "name", "slug", "system_type", "colour")),
    *(f"installation__listing_version__listing__latest_version__{f}"
      for f in ("manifest", "changelog", "version_name", "published_at")),
)
# Instances shown inline per connector on the manage page; the rest are one
# "show all N instances" away, so the page costs the same at any size.
INSTANCES_SHOWN = 5
INSTANCE_PAGE_SIZE = 25
INSTANCE_COLUMNS = (
    "connector", "name", "rate_limit_amount", "rate_limit_unit", "rate_limit_group", "connection_pool",
    "last_checked_at", "last_check_ok", "last_check_message", "reauth_reason", "last_used_by_run_at",
    "uid", "company",  # which rate limit is the instance's (is it paused?)
)


def _get_connector_for_user(request: HttpRequest, pk: int) -> tuple[Company, Connector]:
    company = company_of(request)
    connector = get_object_or_404(
        Connector.objects.for_company(company)
        .select_related("updated_by", "installation__listing_version__listing__latest_version")
        .prefetch_related("variables", "auth_methods", "endpoints", "instances__connection_pool"),
        pk=pk,
    )
    return company, connector


def _highlight(value: str) -> dict[str, int]:
    """`?highlight=instance-7` marks a just-created row; anything malformed is ignored."""
    kind, _, pk = value.partition("-")
    object_id = params.object_id(pk)
    return {kind: object_id} if kind in {"connector", "instance"} and object_id is not None else {}


def _instance_model():
    # connectors sits below instances: reach the model through the reverse relation.
    return Connector._meta.get_field("instances").related_model


def _installation_model():
    # The marketplace sits above connectors: its model through the reverse relation.
    return Connector._meta.get_field("installation").related_model


def _instance_rows():
    """Instances as the manage page lists them: none of their credentials or values."""
    return _instance_model().objects.select_related("connection_pool").only(
        *INSTANCE_COLUMNS, "connection_pool__name", "connection_pool__limit"
    )


@dataclass(slots=True)
class InstanceRow:
    """What a row of the manage page shows of an instance (no credentials, no values).

    Built from one values query for the whole page: 100 rows without model
    instances (see instance_rows.py for how they are rendered).
    """

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
    rate_limit_paused_until: datetime | None = None  # set by Instance.note_rate_limit_pauses

    @property
    def rate_limit_display(self) -> str:
        # Instance.rate_limit_display (get_rate_limit_unit_display), from the field's choices.
        label = _rate_limit_units().get(self.rate_limit_unit, self.rate_limit_unit)
        return f"{self.rate_limit_amount} {force_str(label)}"


@functools.cache
def _rate_limit_units() -> dict:
    return dict(_instance_model()._meta.get_field("rate_limit_unit").flatchoices)


_ROW_FIELDS = ("pk", "connector_id", "name", "rate_limit_amount", "rate_limit_unit", "rate_limit_group",
               "last_checked_at", "last_check_ok", "last_check_message", "reauth_reason", "last_used_by_run_at",
               "uid", "company_id", "connection_pool__name", "connection_pool__limit")


def _set_first_instances(connectors: list[Connector]) -> None:
    """`connector.first_instances`: the first INSTANCES_SHOWN instances of each, in the instances' order."""
    model = _instance_model()
    by_pk = {connector.pk: connector for connector in connectors}
    for connector in connectors:
        connector.first_instances = []
    if not by_pk:
        return
    rows = (
        model.objects.filter(connector__in=list(by_pk))
        .annotate(position=Window(RowNumber(), partition_by=F("connector"), order_by=list(model._meta.ordering)))
        .filter(position__lte=INSTANCES_SHOWN)
        .order_by("connector", "position")
        .values_list(*_ROW_FIELDS)
    )
    for *values, pool_name, pool_limit in rows:
        pool = SimpleNamespace(name=pool_name, limit=pool_limit) if pool_name is not None else None
        row = InstanceRow(*values, connection_pool=pool)
        by_pk[row.connector_id].first_instances.append(row)
    _instance_model().note_rate_limit_pauses([row for c in connectors for row in c.first_instances])


def _alongside_copies(company: Company, connectors: list[Connector]) -> None:
    """Mark each out-of-date prebuilt connector whose latest version is installed alongside.

    Sets `connector.alongside_copy` (the newer copy, or None) with one query for the page.
    The query returns one copy per listing (the oldest: lowest pk), however many there are.
    """
    listing_ids = {
        c.installation.listing_version.listing_id
        for c in connectors
        if hasattr(c, "installation") and c.installation.update_available
    }
    copies: dict[int, Connector] = {}
    if listing_ids:
        first_of_each_listing = (
            Connector.objects.for_company(company)
            .filter(
                installation__listing_version__listing_id__in=listing_ids,
                installation__listing_version=F("installation__listing_version__listing__latest_version"),
            )
            .order_by()
            .values("installation__listing_version__listing_id")
            .annotate(first=Min("pk"))
            .values("first")
        )
        latest = (
            Connector.objects.filter(pk__in=Subquery(first_of_each_listing))
            .only("pk", "name", "version")
            .annotate(listing_id=F("installation__listing_version__listing_id"))
        )
        copies = {copy.listing_id: copy for copy in latest}
    for connector in connectors:
        installation = getattr(connector, "installation", None)
        connector.alongside_copy = (
            copies.get(installation.listing_version.listing_id)
            if installation is not None and installation.update_available else None
        )


def _show_highlighted_instance(connectors: list[Connector], pk: int) -> None:
    """A just-added instance is shown even when it is not among its connector's first instances."""
    by_pk = {c.pk: c for c in connectors}
    instance = _instance_rows().filter(pk=pk, connector__in=list(by_pk)).first()
    if instance is not None:
        shown = by_pk[instance.connector_id].first_instances
        if all(i.pk != pk for i in shown):
            _instance_model().note_rate_limit_pauses([instance])
            shown.append(instance)


def manage(request: HttpRequest) -> HttpResponse:
    """process flows > connectors & instances: every connector of the company with its first instances."""
    company = company_of(request)
    query = params.search_query(request)
    system_type = params.choice(request.GET, "system_type", SystemType.values)
    instance_count = (
        _instance_model().objects.filter(connector=OuterRef("pk")).order_by()
        .values("connector").annotate(n=Count("pk")).values("n")
    )
    connectors = (
        Connector.objects.for_company(company)
        .search(query, system_type)
        .select_related("updated_by", "installation__listing_version__listing__latest_version")
        # Only what the page shows: the latest version's id and number are compared,
        # and the manifests are needed only when whether a connector is modified
        # is not cached (see below).
        .defer("icon", *MANAGE_UNUSED)
        .annotate(
            instance_count=Coalesce(Subquery(instance_count), 0),
            has_auth_method=Exists(AuthMethod.objects.filter(connector=OuterRef("pk"))),
            has_endpoint=Exists(Endpoint.objects.filter(connector=OuterRef("pk"))),
        )
    )
    page = Paginator(connectors, PAGE_SIZE).get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)
    # Only the first instances of each connector are fetched (one query, bounded rows).
    _set_first_instances(page.object_list)
    # Whether a prebuilt connector is modified is cached per definition: one cache
    # read for the page, and the definitions of those not cached fetched together.
    _installation_model().prepare_is_modified(
        [c.installation for c in page.object_list if hasattr(c, "installation")]
    )
    for connector in page.object_list:
        # Readiness from the annotations: custom connectors' definitions are not fetched.
        connector.ready = connector.has_auth_method and connector.has_endpoint
    _alongside_copies(company, page.object_list)
    highlight = _highlight(request.GET.get("highlight", ""))
    if "instance" in highlight:
        _show_highlighted_instance(page.object_list, highlight["instance"])
    context = {
        "page": page,
        "query": query,
        "system_type": system_type,
        "system_types": SystemType.choices,
        "filtered": bool(query or system_type),
        "highlight": highlight,
    }
    if request.htmx and request.htmx.target == "connector-list":
        return render(request, "connectors/manage.html#connector-list", context)
    return render(request, "connectors/manage.html", context)


def instances(request: HttpRequest, pk: int) -> HttpResponse:
    """Every instance of one connector, searchable and paginated ("show all N instances")."""
    company = company_of(request)
    connector = get_object_or_404(Connector.objects.for_company(company).only("pk", "name", "colour"), pk=pk)
    query = params.search_query(request)
    rows = _instance_rows().filter(connector=connector)
    total = rows.count()
    if query:
        rows = rows.filter(name__icontains=query)
    page = Paginator(rows, INSTANCE_PAGE_SIZE).get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)
    _instance_model().note_rate_limit_pauses(page.object_list)
    target = f"instances-of-{connector.pk}"
    context = {"connector": connector, "page": page, "query": query, "total": total, "target": target,
               "push_url": "true"}
    if request.htmx and request.htmx.target == f"{target}-list":
        return render(request, "connectors/instances.html#instance-list", context)
    if request.htmx and request.htmx.target == target:
        # "show all" on the manage page: the list replaces the first instances in place.
        return render(request, "connectors/instances.html#instance-block", {**context, "push_url": "false"})
    return render(request, "connectors/instances.html", context)


def detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Connector settings: its definition, version information and instances."""
    company, connector = _get_connector_for_user(request, pk)
    _alongside_copies(company, [connector])
    return render(request, "connectors/detail.html", {"connector": connector})


HISTORY_PAGE_SIZE = 10


def _changes(connector: Connector):
    """The connector's changes without their manifests (loaded only for the diff being shown)."""
    return connector.changes.select_related("user").defer("before", "after").annotate(
        has_before=ExpressionWrapper(Q(before__isnull=False), output_field=BooleanField())
    )


def history(request: HttpRequest, pk: int) -> HttpResponse:
    """Every change to the connector's definition: who, when, what; a page at a time.

    Only the newest change's diff is computed with the page; the others are
    computed when the user opens them (`change`), so a long history of big
    definitions costs the same as a short one.
    """
    company = company_of(request)
    connector = get_object_or_404(Connector.objects.for_company(company), pk=pk)
    page = Paginator(_changes(connector), HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    opened = None
    if page.number == 1 and page.object_list and page.object_list[0].has_before:
        newest = connector.changes.get(pk=page.object_list[0].pk)
        opened = (newest.pk, manifests.diff(newest.before, newest.after))
    return render(request, "connectors/history.html", {"connector": connector, "page": page, "opened": opened})


def change(request: HttpRequest, pk: int, change_pk: int) -> HttpResponse:
    """One change of the connector's history with its diff (the history's "what changed", loaded on demand)."""
    company = company_of(request)
    connector = get_object_or_404(Connector.objects.for_company(company), pk=pk)
    entry = get_object_or_404(connector.changes.select_related("user"), pk=change_pk)
    context = {"connector": connector, "change": entry, "diff": manifests.diff(entry.before, entry.after)}
    if request.htmx:
        return render(request, "connectors/history.html#diff", context)
    return render(request, "connectors/change.html", context)
