"""process flows > connectors & instances: the company's connectors with their instances.

The pages keep their addresses under /connectors/ and their URL names
(`connectors:manage`, `connectors:instances`: see the root URLconf); they live
here because what they list are instances, grouped under their connectors.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Count, Exists, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from connectors.models import AuthMethod, Connector, Endpoint, SystemType
from instances.manage_rows import instance_rows, set_first_instances, show_highlighted_instance
from instances.models import Instance
from instances.outbound import limits
from patchworks_site import params
from patchworks_site.templatetags.pk_urls import pk_urls
from patchworks_site.tenancy import company_of

PAGE_SIZE = 20
INSTANCE_PAGE_SIZE = 25
# Columns of the manage page's related rows that it does not show (fewer values to convert).
MANAGE_UNUSED = (
    *(f"updated_by__{f}" for f in ("password", "last_login", "is_superuser", "email", "is_staff", "is_active",
                                   "date_joined")),
    "installation__listing_version__manifest", "installation__listing_version__changelog",
    *(f"installation__listing_version__listing__{f}" for f in ("summary", "name", "slug", "system_type", "colour")),
    *(f"installation__listing_version__listing__latest_version__{f}"
      for f in ("manifest", "changelog", "version_name", "published_at")),
)


def _highlight(value: str) -> dict[str, int]:
    """`?highlight=instance-7` marks a just-created row; anything malformed is ignored."""
    kind, _, pk = value.partition("-")
    object_id = params.object_id(pk)
    return {kind: object_id} if kind in {"connector", "instance"} and object_id is not None else {}


def _prepare_is_modified(connectors: list[Connector]) -> None:
    """Whether each prebuilt connector is modified, cached per definition: one cache read for the page,
    and the definitions of those not cached fetched together.

    The installations come from the marketplace (an app above this one) through the reverse relation.
    """
    installations = [c.installation for c in connectors if hasattr(c, "installation")]
    if installations:
        type(installations[0]).prepare_is_modified(installations)


def _render_fragment(request: HttpRequest, template_name: str, context: dict) -> SafeString:
    """A fragment rendered by Jinja2 (autoescaped), for a Django template to show as it is.

    The connector cards and instance rows are Jinja2 templates (instances/jinja2/): through
    Django's engine their 100 rows doubled the manage page's CPU (see patchworks_site/jinja2.py).
    """
    context = {"user": request.user, "pk_url": pk_urls(), "tz": timezone.get_current_timezone(), **context}
    return mark_safe(render_to_string(template_name, context, request, using="jinja2"))


def manage(request: HttpRequest) -> HttpResponse:
    """process flows > connectors & instances: every connector of the company with its first instances."""
    company = company_of(request)
    query = params.search_query(request)
    system_type = params.choice(request.GET, "system_type", SystemType.values)
    instance_count = (
        Instance.objects.filter(connector=OuterRef("pk")).order_by()
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
    set_first_instances(page.object_list)
    _prepare_is_modified(page.object_list)
    for connector in page.object_list:
        # Readiness from the annotations: custom connectors' definitions are not fetched.
        connector.ready = connector.has_auth_method and connector.has_endpoint
    Connector.note_alongside_copies(company, page.object_list)
    highlight = _highlight(request.GET.get("highlight", ""))
    if "instance" in highlight:
        show_highlighted_instance(page.object_list, highlight["instance"])
    context = {
        "page": page,
        "query": query,
        "system_type": system_type,
        "system_types": SystemType.choices,
        "filtered": bool(query or system_type),
        "highlight": highlight,
        "connector_cards": _render_fragment(request, "instances/connector_cards.html",
                                            {"connectors": page.object_list, "highlighted_connector": highlight.get("connector"),
                                             "highlighted": highlight.get("instance")}),
    }
    if request.htmx and request.htmx.target == "connector-list":
        return render(request, "instances/manage.html#connector-list", context)
    return render(request, "instances/manage.html", context)


def connector_instances(request: HttpRequest, pk: int) -> HttpResponse:
    """Every instance of one connector, searchable and paginated ("show all N instances")."""
    company = company_of(request)
    connector = get_object_or_404(Connector.objects.for_company(company).only("pk", "name", "colour"), pk=pk)
    query = params.search_query(request)
    rows = instance_rows().filter(connector=connector)
    total = rows.count()
    if query:
        rows = rows.filter(name__icontains=query)
    page = Paginator(rows, INSTANCE_PAGE_SIZE).get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)
    limits.note_rate_limit_pauses(page.object_list)
    target = f"instances-of-{connector.pk}"
    table = _render_fragment(request, "instances/instance_table.html", {
        "connector": connector, "instances": page.object_list, "can_manage": request.user.can_manage_instances,
        "highlighted": None,
    })
    context = {"connector": connector, "page": page, "query": query, "total": total, "target": target,
               "push_url": "true", "instance_table": table}
    if request.htmx and request.htmx.target == f"{target}-list":
        return render(request, "instances/of_connector.html#instance-list", context)
    if request.htmx and request.htmx.target == target:
        # "show all" on the manage page: the list replaces the first instances in place.
        return render(request, "instances/of_connector.html#instance-block", {**context, "push_url": "false"})
    return render(request, "instances/of_connector.html", context)
