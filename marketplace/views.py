from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.db.models import Prefetch, ProtectedError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from connectors.manifest import ManifestError
from connectors.models import Connector, SystemType
from marketplace import catalog, updates
from marketplace.models import Installation, Listing, ListingVersion
from patchworks_site import params
from patchworks_site.models import Company
from patchworks_site.tenancy import company_of, require

PAGE_SIZE = 24


def _installed_listing_ids(company) -> set[int]:
    return set(
        Installation.objects.filter(connector__company=company).values_list(
            "listing_version__listing_id", flat=True
        )
    )


def browse(request: HttpRequest) -> HttpResponse:
    company = company_of(request)
    query = params.search_query(request)
    system_type = params.choice(request.GET, "system_type", SystemType.values)
    listings = Listing.objects.search(query, system_type).select_related("latest_version")
    page = Paginator(listings, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "query": query,
        "system_type": system_type,
        "system_types": SystemType.choices,
        "installed_ids": _installed_listing_ids(company),
    }
    if request.htmx and request.htmx.target == "listing-grid":
        return render(request, "marketplace/browse.html#listing-grid", context)
    return render(request, "marketplace/browse.html", context)


def detail(request: HttpRequest, slug: str) -> HttpResponse:
    company = company_of(request)
    listing = get_object_or_404(
        Listing.objects.select_related("latest_version").prefetch_related(
            # Only the latest version's manifest is shown (it comes with latest_version).
            Prefetch("versions", queryset=ListingVersion.objects.defer("manifest").order_by("-published_at", "-id"))
        ),
        slug=slug,
    )
    versions = sorted(listing.versions.all(), key=lambda v: catalog.version_key(v.version), reverse=True)
    # A company may have many copies installed: their names and versions, not their manifests.
    installed = list(
        Installation.objects.filter(connector__company=company, listing_version__listing=listing)
        .select_related("connector", "listing_version")
        .only("connector__id", "connector__name", "listing_version__version", "listing_version__listing_id")
        .order_by("connector__name")
    )
    return render(
        request,
        "marketplace/detail.html",
        {
            "listing": listing,
            "versions": versions,
            "latest": listing.latest_version,
            "manifest": listing.latest_version.manifest if listing.latest_version else None,
            "installed": installed,
        },
    )


@require_POST
def install(request: HttpRequest, slug: str) -> HttpResponse:
    company = require(request, "can_manage_connectors")
    listing = get_object_or_404(Listing.objects.select_related("latest_version"), slug=slug)
    if listing.latest_version is None:
        messages.error(request, f"{listing.name} has no published version to install.")
        return redirect("marketplace:detail", slug=slug)
    with transaction.atomic():
        # Serialise installs per company so a double click cannot install twice.
        Company.objects.select_for_update().get(pk=company.pk)
        if Installation.objects.filter(connector__company=company, listing_version__listing=listing).exists():
            messages.info(request, f"{listing.name} is already installed.")
            return redirect("connectors:manage")
        connector = catalog.install(listing.latest_version, company, user=request.user)
    messages.success(
        request, f"{connector.name} {connector.version} is installed. Add an instance to start using it."
    )
    return redirect(f"{reverse('connectors:manage')}?highlight=connector-{connector.pk}#connector-{connector.pk}")


def _get_installed_connector_for_user(request: HttpRequest, connector_pk: int) -> tuple:
    company = require(request, "can_manage_connectors")
    connector = get_object_or_404(
        Connector.objects.for_company(company).filter(installation__isnull=False), pk=connector_pk
    )
    return company, connector


def update(request: HttpRequest, connector_pk: int) -> HttpResponse:
    """update available: what the new version changes, its impact on flows, and the choice to make."""
    company, connector = _get_installed_connector_for_user(request, connector_pk)
    try:
        plan = updates.plan(connector)
    except updates.UpdateError as exc:
        messages.info(request, str(exc))
        return redirect("connectors:detail", pk=connector.pk)
    if request.method == "POST":
        choice = request.POST.get("choice", "")
        allowed = ({"overwrite"} | ({"alongside"} if plan.alongside is None else set())) if plan.modified else {"update"}
        if choice not in allowed:
            if choice == "alongside" and plan.alongside is not None:
                messages.error(request, f"Version {plan.target.version} is already installed alongside as {plan.alongside.name}.")
            else:
                messages.error(request, "Choose how to apply the update." if plan.modified else "Unknown choice.")
            return render(request, "marketplace/update.html", {"plan": plan, "connector": connector}, status=422)
        try:
            if choice == "alongside":
                new = updates.install_alongside(connector, user=request.user)
                messages.success(
                    request,
                    f"{new.name} {new.version} is installed alongside your existing version {connector.version}, "
                    "which is unchanged and still used by your process flows. To use the new version, add and "
                    "authenticate new instances, then re-configure the connection shapes of those flows.",
                )
                return redirect(f"{reverse('connectors:manage')}?highlight=connector-{new.pk}#connector-{new.pk}")
            updates.update_in_place(connector, user=request.user)
        except (updates.UpdateError, ManifestError, ProtectedError, IntegrityError) as exc:
            messages.error(request, f"The update was not applied; nothing changed. {exc}")
            return render(request, "marketplace/update.html", {"plan": plan, "connector": connector}, status=409)
        flagged = len(plan.removed_shapes)
        note = f" {flagged} connection shape(s) use an endpoint this version removed and are flagged in their flows." if flagged else ""
        messages.success(
            request,
            f"{connector.name} is now version {plan.target.version}. Existing instances keep their credentials." + note,
        )
        return redirect(f"{reverse('connectors:manage')}?highlight=connector-{connector.pk}#connector-{connector.pk}")
    return render(request, "marketplace/update.html", {"plan": plan, "connector": connector})
