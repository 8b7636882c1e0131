"""process flows > connection pools: named concurrency limits shared by instances."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.db.models import Count, ProtectedError, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from instances.forms import ConnectionPoolForm
from instances.models import ConnectionPool
from instances.outbound import limits
from patchworks_site import params
from patchworks_site.models import Company
from patchworks_site.tenancy import company_of, require

PAGE_SIZE = 25
SEARCH_FROM = 8  # below this many pools a search box is clutter
NAME_TAKEN = "Another connection pool has just taken that name. Choose another name."


def _get_pool_for_user(request: HttpRequest, pk: int, capability: str | None = None) -> tuple[Company, ConnectionPool]:
    company = require(request, capability) if capability else company_of(request)
    pool = get_object_or_404(ConnectionPool.objects.for_company(company), pk=pk)
    return company, pool


def _list_url(pool: ConnectionPool) -> str:
    return f"{reverse('instances:pools')}?highlight={pool.pk}#pool-{pool.pk}"


def pool_list(request: HttpRequest) -> HttpResponse:
    company = company_of(request)
    query = params.search_query(request)
    pools = ConnectionPool.objects.for_company(company)
    total = pools.count()
    if query:
        pools = pools.filter(Q(name__icontains=query) | Q(connectors__name__icontains=query)).distinct()
    pools = (
        pools.annotate(instance_count=Count("instances", distinct=True))
        .order_by("name", "pk")
        .prefetch_related("connectors", "instances__connector")
    )
    page = Paginator(pools, PAGE_SIZE).get_page(request.GET.get("page"))
    for pool in page:
        pool.live = _live_use(pool)
    context = {
        "page": page,
        "query": query,
        "filtered": bool(query),
        "show_search": bool(query) or total >= SEARCH_FROM,
        "highlight": str(params.id_param(request.GET, "highlight") or ""),
    }
    if request.htmx and request.htmx.target == "pool-list":
        return render(request, "instances/pools/list.html#pool-list", context)
    return render(request, "instances/pools/list.html", context)


def _live_use(pool: ConnectionPool) -> dict | None:
    """Slots in use and requests waiting right now, with the instances they belong to; None when the store is down."""
    try:
        usage = limits.pool_usage(pool)
    except limits.STORE_ERRORS:
        return None
    instances = [
        {"instance": instance, "in_use": usage.by_instance[instance.pk][0], "waiting": usage.by_instance[instance.pk][1]}
        for instance in pool.instances.all()
        if instance.pk in usage.by_instance
    ]
    return {"in_use": usage.in_use, "waiting": usage.waiting, "instances": instances}


def _save(request: HttpRequest, form: ConnectionPoolForm) -> ConnectionPool | None:
    try:
        with transaction.atomic():
            return form.save()
    except IntegrityError:
        # The unique (company, name) constraint: a concurrent request won.
        form.add_error("name", NAME_TAKEN)
        return None


def pool_new(request: HttpRequest) -> HttpResponse:
    company = require(request, "can_manage_connectors")
    form = ConnectionPoolForm(request.POST or None, company=company, instance=ConnectionPool(company=company))
    if request.method == "POST" and form.is_valid() and (pool := _save(request, form)):
        messages.success(
            request, f'Connection pool "{pool.name}" created. Choose it in the settings of the instances that should share it.'
        )
        return redirect(_list_url(pool))
    status = 422 if form.errors else 200
    return render(request, "instances/pools/form.html", {"form": form, "pool": None}, status=status)


def pool_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """View a pool (every role) and change it (Administrators and Managers)."""
    company, pool = _get_pool_for_user(request, pk)
    if request.method == "POST":
        require(request, "can_manage_connectors")
    form = ConnectionPoolForm(request.POST or None, company=company, instance=pool)
    if request.method == "POST" and form.is_valid() and _save(request, form):
        messages.success(request, f'Connection pool "{pool.name}" saved.')
        return redirect(_list_url(pool))
    context = {"form": form, "pool": pool, "instances": pool.instances.select_related("connector").order_by("name")}
    return render(request, "instances/pools/form.html", context, status=422 if form.errors else 200)


def pool_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete after the user typed `confirm`; the database refuses while instances use the pool."""
    company, pool = _get_pool_for_user(request, pk, "can_manage_connectors")
    template = "instances/pools/delete.html#delete-form" if request.htmx else "instances/pools/delete.html"
    context = {"pool": pool, "instances": pool.instances.select_related("connector").order_by("name")}
    if request.method != "POST":
        return render(request, "instances/pools/delete.html", context)
    if request.POST.get("confirm", "").strip().lower() != "confirm":
        context["error"] = "Type confirm to delete this connection pool."
        return render(request, template, context, status=422)
    name = pool.name
    try:
        # PROTECT on Instance.connection_pool: refused while any instance uses
        # the pool, including one assigned concurrently (IntegrityError).
        with transaction.atomic():
            pool.delete()
    except (ProtectedError, IntegrityError):
        context["in_use"] = True
        return render(request, template, context, status=409)
    messages.success(request, f'Connection pool "{name}" was deleted.')
    url = reverse("instances:pools")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
