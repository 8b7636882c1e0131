"""Access helpers shared by every app's views.

Views call `company_of(request)` (or `require(request, capability)`) first; each
model's queryset has a `for_company()` method, so another company's object is
simply not found (404), never "forbidden".
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from patchworks_site.models import Company

CAPABILITY_MESSAGES = {
    "can_manage_connectors": "Only Administrators and Managers can change connectors.",
    "can_manage_instances": "Read-only users cannot change instances or process flows.",
    "is_company_administrator": "Only Administrators can see this page.",
}


def company_of(request: HttpRequest) -> Company:
    company = getattr(request.user, "company", None)
    if company is None:
        raise PermissionDenied("Your account is not part of a company. Ask an Administrator to add you.")
    return company


def require(request: HttpRequest, capability: str) -> Company:
    """The user's company, or 403 when the role lacks `capability`."""
    company = company_of(request)
    if not getattr(request.user, capability):
        raise PermissionDenied(CAPABILITY_MESSAGES[capability])
    return company


def tenancy_context(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"current_company": user.company, "sandbox_enabled": settings.SANDBOX_ENABLED}
