"""The Sandbox's dashboard pages: the orders it received for the company, and its account key."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from patchworks_site import audit
from patchworks_site.tenancy import company_of, require
from sandbox import data
from sandbox.api import served
from sandbox.models import SandboxAccount, SandboxReceivedOrder

RECEIVED_PAGE_SIZE = 50


def _received_orders(request: HttpRequest, company, issued_key: str = "") -> HttpResponse:
    account = SandboxAccount.objects.filter(company=company).first()  # none yet: nothing was sent for the company
    received = SandboxReceivedOrder.objects.filter(account=account.account if account else None).order_by("-id")
    # Counted by the database (over the indexed reference), so the paginator reuses the count.
    counts = data.received_counts(received)
    paginator = Paginator(received, RECEIVED_PAGE_SIZE)
    paginator.count = counts["received"]
    page = paginator.get_page(request.GET.get("page"))
    for row in page:
        row.summary = data.summary(row.body)
        row.pretty = json.dumps(row.body, indent=2, ensure_ascii=False)[:4000]
    return render(request, "sandbox/received_orders.html", {
        "page": page, "counts": counts, "keep": settings.SANDBOX_MAX_ORDERS_PER_ACCOUNT, "sandbox_account": account,
        "sandbox_base_url": settings.SANDBOX_BASE_URL, "issued_key": issued_key,
    })


@served
@require_GET
def received_orders_page(request: HttpRequest) -> HttpResponse:
    """The orders the Sandbox received, newest first: where a flow that sends to the Sandbox shows its result.

    Above the list: how many orders were received and how many references came
    more than once, so an operator sees at a glance that a flow delivered each
    order once (or which references it duplicated).
    """
    company = company_of(request)  # any logged-in user of a company sees what its flows sent
    return _received_orders(request, company)


@served
@require_POST
@never_cache
def rotate_account_key(request: HttpRequest) -> HttpResponse:
    """Issue the company's Sandbox account key (Administrators), replacing the current one, which is refused from now on.

    The new key is shown in this response only (the Sandbox keeps its hash): the
    Administrator copies it into the company's Sandbox instances' "Sandbox
    account key", where it is an ordinary instance secret.
    """
    company = require(request, "is_company_administrator")
    account = SandboxAccount.objects.for_company(company.pk)
    if account.key_hash and request.POST.get("confirm") != "yes":
        messages.error(request, "No new Sandbox account key was issued: tick the box to confirm that the current key "
                                "is refused from now on.")
        return redirect("sandbox_received_orders")
    key = account.issue_key()
    audit.record_note(account, "Sandbox account", {"key": audit.SECRET_CHANGED})
    return _received_orders(request, company, issued_key=key)
