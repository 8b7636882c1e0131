from __future__ import annotations

from django.contrib import messages
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from flows.forms import ConnectionShapeForm, FlowForm
from flows.models import ConnectionShape, ProcessFlow
from patchworks_site.models import Company
from patchworks_site.tenancy import company_of, require


def _get_flow_for_user(request: HttpRequest, pk: int, capability: str | None = None) -> tuple[Company, ProcessFlow]:
    company = require(request, capability) if capability else company_of(request)
    flow = get_object_or_404(ProcessFlow.objects.for_company(company), pk=pk)
    return company, flow


def flow_list(request: HttpRequest) -> HttpResponse:
    company = company_of(request)
    form = FlowForm()
    if request.method == "POST":
        require(request, "can_manage_instances")
        form = FlowForm(request.POST, instance=ProcessFlow(company=company))
        if form.is_valid():
            flow = form.save()
            messages.success(request, f'Process flow "{flow.name}" created. Add connection shapes to it.')
            return redirect("flows:detail", pk=flow.pk)
    flows = ProcessFlow.objects.for_company(company).annotate(
        shape_count=Count("shapes"), flagged_count=Count("shapes", filter=Q(shapes__endpoint__isnull=True))
    )
    return render(request, "flows/list.html", {"flows": flows, "form": form}, status=422 if form.errors else 200)


def detail(request: HttpRequest, pk: int) -> HttpResponse:
    company, flow = _get_flow_for_user(request, pk)
    form = ConnectionShapeForm(company=company)
    if request.method == "POST":
        require(request, "can_manage_instances")
        form = ConnectionShapeForm(request.POST, company=company)
        if form.is_valid():
            instance, endpoint = form.cleaned_data["target"]
            try:
                with transaction.atomic():
                    last = flow.shapes.aggregate(m=Max("position"))["m"]
                    ConnectionShape.objects.create(
                        flow=flow, instance=instance, endpoint=endpoint, position=(last + 1) if last is not None else 0
                    )
            except IntegrityError:
                # The instance or endpoint was removed while this request ran.
                messages.error(request, "That instance or endpoint was just removed; choose another.")
            else:
                messages.success(request, f"Connection shape added: {instance.name} → {endpoint.name}.")
            return redirect("flows:detail", pk=flow.pk)
    shapes = flow.shapes.select_related("instance__connector", "endpoint")
    return render(request, "flows/detail.html", {"flow": flow, "shapes": shapes, "form": form},
                  status=422 if form.errors else 200)


@require_POST
def remove_shape(request: HttpRequest, pk: int, shape_pk: int) -> HttpResponse:
    company, flow = _get_flow_for_user(request, pk, "can_manage_instances")
    shape = get_object_or_404(flow.shapes.select_related("instance", "endpoint"), pk=shape_pk)
    shape.delete()
    messages.success(request, f"Connection shape removed: {shape}.")
    return redirect("flows:detail", pk=flow.pk)


@require_POST
def toggle(request: HttpRequest, pk: int) -> HttpResponse:
    company, flow = _get_flow_for_user(request, pk, "can_manage_instances")
    flow.enabled = request.POST.get("enabled") == "1"
    flow.save(update_fields=["enabled", "updated_at"])
    messages.success(request, f'Process flow "{flow.name}" is now {"enabled" if flow.enabled else "disabled"}.')
    return redirect("flows:detail", pk=flow.pk)


@require_POST
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    company, flow = _get_flow_for_user(request, pk, "can_manage_instances")
    if request.POST.get("confirm", "").strip().lower() != "confirm":
        messages.error(request, "Type confirm to delete this process flow.")
        return redirect("flows:detail", pk=flow.pk)
    flow.delete()
    messages.success(request, f'Process flow "{flow.name}" was deleted.')
    return redirect("flows:list")
