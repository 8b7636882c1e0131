from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from connectors.models import Connector
from instances.models import Instance
from patchworks_site.models import Company
from patchworks_site.tenancy import company_of, require


def _get_instance_for_user(request: HttpRequest, pk: int) -> tuple[Company, Instance]:
    company = company_of(request)
    instance = get_object_or_404(
        Instance.objects.for_company(company).select_related("connector", "auth_method", "connection_pool"),
        pk=pk,
    )
    return company, instance


def new(request: HttpRequest, connector_pk: int) -> HttpResponse:
    company = require(request, "can_manage_instances")
    connector = get_object_or_404(Connector.objects.for_company(company), pk=connector_pk)
    return render(request, "instances/new.html", {"connector": connector})


def settings_page(request: HttpRequest, pk: int) -> HttpResponse:
    company, instance = _get_instance_for_user(request, pk)
    return render(request, "instances/settings.html", {"instance": instance})
