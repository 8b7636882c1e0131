from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from flows.models import ProcessFlow
from patchworks_site.models import Company
from patchworks_site.tenancy import company_of


def _get_flow_for_user(request: HttpRequest, pk: int) -> tuple[Company, ProcessFlow]:
    company = company_of(request)
    flow = get_object_or_404(ProcessFlow.objects.for_company(company), pk=pk)
    return company, flow


def flow_list(request: HttpRequest) -> HttpResponse:
    company = company_of(request)
    flows = ProcessFlow.objects.for_company(company).prefetch_related("shapes__instance__connector")
    return render(request, "flows/list.html", {"flows": flows})


def detail(request: HttpRequest, pk: int) -> HttpResponse:
    company, flow = _get_flow_for_user(request, pk)
    shapes = flow.shapes.select_related("instance__connector", "endpoint")
    return render(request, "flows/detail.html", {"flow": flow, "shapes": shapes})
