"""Connector pages: settings (definition, version, instances) and the history of the definition.

The manage connectors page, which lists instances under their connectors, is
`instances.manage_views`.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from connectors import manifest as manifests
from connectors.models import Connector
from patchworks_site.models import Company
from patchworks_site.tenancy import company_of


def _get_connector_for_user(request: HttpRequest, pk: int) -> tuple[Company, Connector]:
    company = company_of(request)
    connector = get_object_or_404(
        Connector.objects.for_company(company)
        .select_related("updated_by", "installation__listing_version__listing__latest_version")
        .prefetch_related("variables", "auth_methods", "endpoints", "instances__connection_pool"),
        pk=pk,
    )
    return company, connector


def detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Connector settings: its definition, version information and instances."""
    company, connector = _get_connector_for_user(request, pk)
    Connector.note_alongside_copies(company, [connector])
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
