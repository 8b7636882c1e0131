"""The Sandbox's dashboard pages: the orders it received for the company, and its account key."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from patchworks_site import audit
from patchworks_site.tenancy import company_of, require
from sandbox import data
from sandbox.api import served
from sandbox.models import SandboxAccount, SandboxReceivedOrder

RECEIVED_PAGE_SIZE = 50


@served
@require_GET
def received_orders_page(request: HttpRequest) -> HttpResponse:
    """The orders the Sandbox received, newest first: where a flow that sends to the Sandbox shows its result."""
    company = company_of(request)  # any logged-in user of a company sees what its flows sent
    account = SandboxAccount.objects.filter(company=company).first()  # none yet: nothing was sent for the company
    received = SandboxReceivedOrder.objects.filter(account=account.account if account else None).order_by("-id")
    page = Paginator(received, RECEIVED_PAGE_SIZE).get_page(request.GET.get("page"))
    for row in page:
        row.summary = data.summary(row.body)
        row.pretty = json.dumps(row.body, indent=2, ensure_ascii=False)[:4000]
    return render(request, "sandbox/received_orders.html", {
        "page": page, "keep": settings.SANDBOX_MAX_ORDERS_PER_ACCOUNT, "sandbox_account": account,
        "sandbox_base_url": settings.SANDBOX_BASE_URL,
    })


@served
@require_POST
def rotate_account_key(request: HttpRequest) -> HttpResponse:
    """Replace the company's Sandbox account key (Administrators): the old key is refused from now on.

    The new key is issued the next time one of the company's instances calls the
    Sandbox; no page ever shows a key.
    """
    company = require(request, "is_company_administrator")
    if request.POST.get("confirm") != "yes":
        messages.error(request, "The Sandbox account key was not rotated: tick the box to confirm it.")
        return redirect("sandbox_received_orders")
    account = SandboxAccount.objects.for_company(company.pk)
    account.rotate()
    audit.record_note(account, "Sandbox account", {"key": audit.SECRET_CHANGED})
    messages.success(request, "The Sandbox account key was rotated: the old key is refused from now on, and your "
                              "instances use a new one from their next request to the Sandbox.")
    return redirect("sandbox_received_orders")

