import hmac

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from patchworks_site import audit, metrics, params
from patchworks_site.forms import RetentionForm, RunDurationForm
from patchworks_site.models import AuditAction, AuditEntry, Company
from patchworks_site.tenancy import company_of, require

AUDIT_PAGE_SIZE = 50


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    message = str(exception) if exception and str(exception) else "You do not have permission to do that."
    return render(request, "403.html", {"message": message}, status=403)


def audit_log(request: HttpRequest) -> HttpResponse:
    """Who added, updated or deleted what in the company, newest first (Administrators only)."""
    company = require(request, "is_company_administrator")
    query = params.search_query(request)
    action = params.choice(request.GET, "action", AuditAction.values)
    entries = AuditEntry.objects.for_company(company).search(query, action).select_related("user")
    page = Paginator(entries, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    for entry in page:
        entry.rows = audit.change_rows(entry)
    context = {
        "page": page,
        "query": query,
        "action": action,
        "actions": AuditAction.choices,
        "filtered": bool(query or action),
    }
    if request.htmx and request.htmx.target == "audit-list":
        return render(request, "audit.html#audit-list", context)
    return render(request, "audit.html", context)


def company_settings(request: HttpRequest) -> HttpResponse:
    """The company's retention and run duration: everyone sees them, Administrators change them.

    Each card is its own form; the POST's `section` says which one was sent.
    """
    company = company_of(request)
    form, duration_form = RetentionForm(instance=company), RunDurationForm(instance=company)
    if request.method == "POST":
        require(request, "is_company_administrator")
        form_class = RunDurationForm if request.POST.get("section") == "run_duration" else RetentionForm
        with transaction.atomic():
            locked = Company.objects.select_for_update().get(pk=company.pk)
            sent = form_class(request.POST, instance=locked)
            if sent.is_valid():
                sent.save()
        if not sent.errors:
            if form_class is RunDurationForm:
                limit = locked.concurrent_run_limit
                messages.success(request, f"Run settings saved: a run is stopped after {locked.run_duration_text}; "
                                          f"at most {limit} run{'s' if limit != 1 else ''} go at once; "
                                          f"times are given in {locked.time_zone}.")
            else:
                messages.success(
                    request, f"Retention saved: run logs are kept {locked.run_log_retention_days} days, "
                    f"payload samples {locked.payload_retention_hours} hours.",
                )
            return redirect("company_settings")
        if form_class is RunDurationForm:
            duration_form = sent
        else:
            form = sent
    context = {"form": form, "duration_form": duration_form}
    return render(request, "company_settings.html", context, status=422 if form.errors or duration_form.errors else 200)


@login_not_required
@require_GET
@never_cache
def metrics_endpoint(request: HttpRequest) -> HttpResponse:
    """Prometheus's scrape: `Authorization: Bearer <METRICS_TOKEN>`; no token configured, no endpoint (404)."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        response = HttpResponse("A valid bearer token is needed.", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


@login_not_required  # admin_view sends whoever is not staff to the admin's login
def system_health(request: HttpRequest) -> HttpResponse:
    """The figures of /metrics as tables, in the Django admin (staff only: see urls.py)."""
    context = {**admin.site.each_context(request), "title": "System health", "tables": metrics.tables()}
    return render(request, "admin/system_health.html", context)
