from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from flows import editor, queueing, retries, schedules, steps, test_steps
from flows import run_log as run_log_pages
from flows.forms import SHAPE_FORMS, ConnectionShapeForm, FlowForm, RunLogFilterForm, ScheduleForm
from flows.models import FlowRun, FlowRunPayload, FlowRunRequest, ProcessFlow, RunTrigger, Shape, ShapeKind
from patchworks_site import params
from patchworks_site.models import Company
from patchworks_site.tenancy import company_of, require


def _get_flow_for_user(request: HttpRequest, pk: int, capability: str | None = None) -> tuple[Company, ProcessFlow]:
    company = require(request, capability) if capability else company_of(request)
    flow = get_object_or_404(ProcessFlow.objects.for_company(company), pk=pk)
    return company, flow


def _get_run_for_user(request: HttpRequest, pk: int, capability: str | None = None) -> tuple[Company, FlowRun]:
    company = require(request, capability) if capability else company_of(request)
    run = get_object_or_404(FlowRun.objects.for_company(company).select_related("flow", "triggered_by"), pk=pk)
    return company, run


RECENT_RUNS = 5


FLOW_LIST_PAGE_SIZE = 25
FLOW_LIST_FILTERS = {"failing": "Failing: last finished run failed"}


def flow_list(request: HttpRequest) -> HttpResponse:
    """The company's flows with their last run, next run and last 24 hours (see ProcessFlowQuerySet.with_summary).

    GET `q` searches the names, `status=failing` keeps the flows whose last finished run failed; an unknown
    status is ignored. POST creates a flow.
    """
    company = company_of(request)
    form = FlowForm()
    if request.method == "POST":
        require(request, "can_manage_instances")
        form = FlowForm(request.POST, instance=ProcessFlow(company=company))
        if form.is_valid():
            flow = form.save()
            messages.success(request, f'Process flow "{flow.name}" created. Add shapes to it.')
            return redirect("flows:detail", pk=flow.pk)
    query = params.search_query(request)
    status = params.choice(request.GET, "status", FLOW_LIST_FILTERS)
    flows = ProcessFlow.objects.for_company(company).with_summary(timezone.now())
    if query:
        flows = flows.filter(name__icontains=query)
    if status == "failing":
        flows = flows.failing()
    page = Paginator(flows, FLOW_LIST_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page, "form": form, "query": query, "status": status, "filtered": bool(query or status),
        "status_options": FLOW_LIST_FILTERS.items(),
        # Whether the company has any flow at all, asked only when the search found none.
        "any_flows": page.paginator.count > 0 or (
            bool(query or status) and ProcessFlow.objects.for_company(company).exists()),
    }
    return render(request, "flows/list.html", context, status=422 if form.errors else 200)


def detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The flow page; POST adds a shape at the end (kind connection with `target`, or kind filter / map)."""
    company, flow = _get_flow_for_user(request, pk)
    form = ConnectionShapeForm(company=company)
    if request.method == "POST":
        require(request, "can_manage_instances")
        kind = params.choice(request.POST, "kind", ShapeKind.values, default=ShapeKind.CONNECTION)
        if kind != ShapeKind.CONNECTION:
            shape = editor.add_shape(flow, kind)
            messages.success(request, f"{kind.capitalize()} shape added as step {shape.position + 1}. Set it up below.")
            return redirect("flows:shape", pk=flow.pk, shape_pk=shape.pk)
        form = ConnectionShapeForm(request.POST, company=company)
        if form.is_valid():
            instance, endpoint = form.cleaned_data["target"]
            try:
                editor.add_shape(flow, ShapeKind.CONNECTION, instance=instance, endpoint=endpoint)
            except IntegrityError:
                # The instance or endpoint was removed while this request ran.
                messages.error(request, "That instance or endpoint was just removed; choose another.")
            else:
                messages.success(request, f"Connection shape added: {instance.name} → {endpoint.name}.")
            return redirect("flows:detail", pk=flow.pk)
    context = _detail_context(flow, form=form, removing=params.id_param(request.GET, "remove"),
                              test_run=params.id_param(request.GET, "test_run"))
    return render(request, "flows/detail.html", context, status=422 if form.errors else 200)


def _shapes(flow: ProcessFlow, test_run: int | None = None) -> list[Shape]:
    """The flow's shapes with their summary and newest test step (`test_run`: the one shown opened)."""
    shapes = list(flow.shapes.select_related("instance__connector", "endpoint"))
    tests = test_steps.latest_per_shape(shapes, expanded_run=test_run)
    for shape in shapes:
        shape.summary = editor.summary(shape)
        shape.test = tests.get(shape.pk)
    return shapes


def _detail_context(flow: ProcessFlow, test_run: int | None = None, **extra) -> dict:
    flow_schedules = list(flow.schedules.all())
    return {
        "flow": flow,
        "shapes": _shapes(flow, test_run),
        # Test steps show on their shapes (and in the run log), not among the flow's runs.
        "recent_runs": flow.runs.real().select_related("triggered_by", "retry_of")[:RECENT_RUNS],
        "schedules": flow_schedules,
        "next_scheduled": min((s.next_run_at for s in flow_schedules), default=None) if flow.enabled else None,
        "schedule_form": (schedule_form := extra.pop("schedule_form", None) or ScheduleForm()),
        "schedule_preview": schedule_form.preview(timezone.now()),
        **extra,
    }


def shape_settings(request: HttpRequest, pk: int, shape_pk: int) -> HttpResponse:
    """A shape's settings: a panel on the flow page (htmx, target shape-panel) or a page of its own."""
    company, flow = _get_flow_for_user(request, pk)
    shape = get_object_or_404(flow.shapes.select_related("instance__connector", "endpoint", "flow__company"), pk=shape_pk)
    form_class = SHAPE_FORMS[shape.kind]
    form = form_class(shape=shape)
    if request.method == "POST":
        require(request, "can_manage_instances")
        form = form_class(request.POST, shape=shape)
        if form.is_valid():
            try:
                with transaction.atomic():
                    locked = get_object_or_404(Shape.objects.select_for_update().filter(flow=flow), pk=shape.pk)
                    locked.config = form.config()
                    fields = ["config"]
                    if shape.kind == ShapeKind.CONNECTION:
                        locked.instance, locked.endpoint = form.cleaned_data["target"]
                        locked.missing_endpoint = ""
                        fields += ["instance", "endpoint", "missing_endpoint"]
                    locked.save(update_fields=fields)
            except IntegrityError:
                # The instance or endpoint was removed while this request ran.
                messages.error(request, "That instance or endpoint was just removed; choose another.")
            else:
                messages.success(request, f"Step {locked.position + 1} ({locked.kind}) saved.")
            return _back_to_flow(request, flow)
    tested = test_steps.latest(shape) if shape.kind == ShapeKind.MAP else None
    paths = tested.paths if tested is not None else []
    if paths:
        form.offer_paths(f"source-paths-{shape.pk}")
    context = {"flow": flow, "shape": shape, "form": form, "summary": editor.summary(shape), "paths": paths}
    status = 422 if request.method == "POST" else 200
    if request.htmx and request.htmx.target == "shape-panel":
        return render(request, "flows/shape.html#shape-form", context, status=status)
    return render(request, "flows/shape.html", context, status=status)


@require_POST
def test_step(request: HttpRequest, pk: int, shape_pk: int) -> HttpResponse:
    """Run the flow up to this shape on one page of real data, sending nothing (a run with trigger "test").

    Read-only may not: a test makes real requests to the company's third-party APIs. htmx swaps the
    result into the shape's card (it polls until the run has finished); otherwise back to the flow page.
    """
    company, flow = _get_flow_for_user(request, pk, "can_manage_instances")
    shape = get_object_or_404(flow.shapes, pk=shape_pk)
    queued = queueing.queue_test_step(shape, user=request.user)
    if request.htmx:
        return _test_result(request, flow, shape, queued.run)
    if queued.created:
        messages.success(request, f"Testing step {shape.position + 1}: run {queued.run.pk} reads one page and sends nothing.")
    else:
        messages.info(request, f"Step {shape.position + 1} is already being tested (run {queued.run.pk}).")
    return redirect(f"{reverse('flows:detail', args=[flow.pk])}?test_run={queued.run.pk}#test-result-{shape.pk}")


def test_result(request: HttpRequest, pk: int, shape_pk: int, run_pk: int) -> HttpResponse:
    """A test step's result in the shape's card (htmx polls it every second while the run goes on)."""
    company, flow = _get_flow_for_user(request, pk)
    shape = get_object_or_404(flow.shapes, pk=shape_pk)
    run = get_object_or_404(FlowRun.objects.for_company(company).filter(flow=flow, test_shape=shape,
                                                                         trigger=RunTrigger.TEST), pk=run_pk)
    if not request.htmx:
        return redirect(f"{reverse('flows:detail', args=[flow.pk])}?test_run={run.pk}#test-result-{shape.pk}")
    return _test_result(request, flow, shape, run)


def _test_result(request: HttpRequest, flow: ProcessFlow, shape: Shape, run: FlowRun) -> HttpResponse:
    run = FlowRun.objects.select_related("test_shape", "triggered_by").prefetch_related("shape_runs").get(pk=run.pk)
    test = test_steps.of_run(run, list(flow.shapes.all()))
    return render(request, "flows/detail.html#test-result", {"flow": flow, "shape": shape, "test": test})


def _back_to_flow(request: HttpRequest, flow: ProcessFlow) -> HttpResponse:
    url = reverse("flows:detail", args=[flow.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_POST
def move_shape(request: HttpRequest, pk: int, shape_pk: int) -> HttpResponse:
    """Move a shape one step up or down; htmx swaps the shape list, otherwise back to the flow page."""
    company, flow = _get_flow_for_user(request, pk, "can_manage_instances")
    shape = get_object_or_404(flow.shapes, pk=shape_pk)
    direction = params.choice(request.POST, "direction", ("up", "down"))
    moved = bool(direction) and editor.move_shape(shape, direction)
    if request.htmx and request.htmx.target == "shape-list":
        # Focus stays with the shape's arrow buttons, also when it could not move (a repeated key press).
        context = {"flow": flow, "shapes": _shapes(flow), "focus": f"{shape.pk}-{direction}" if direction else ""}
        return render(request, "flows/detail.html#shape-list", context)
    if moved:
        messages.success(request, f"Shape moved {direction}.")
    else:
        messages.error(request, "That shape cannot move further " + (direction or "that way") + ".")
    return redirect("flows:detail", pk=flow.pk)


@require_POST
def run_now(request: HttpRequest, pk: int) -> HttpResponse:
    """A manual run; it goes ahead when the flow is disabled (schedules only run enabled flows).

    One pending run per flow: while a run is queued or running, the page links to it instead.
    """
    company, flow = _get_flow_for_user(request, pk, "can_manage_instances")
    queued = queueing.run_now(flow, user=request.user)
    if not queued.created:
        messages.info(request, _pending_message(queued.run, "No other run was queued."))
        return redirect("flows:detail", pk=flow.pk)
    note = "" if flow.enabled else " The flow is disabled: this manual run goes ahead, but its schedules do not run."
    messages.success(request, f"Run {queued.run.pk} of \"{flow.name}\" is queued.{note}")
    return redirect("flows:run", run_pk=queued.run.pk)


def _run_link(run: FlowRun) -> str:
    return format_html('<a href="{}">run {}</a>', reverse("flows:run", args=[run.pk]), run.pk)


def _pending_message(pending: FlowRun, outcome: str) -> str:
    return format_html(
        'This process flow already has a run {}: {} ({}). {}',
        pending.get_status_display(), _run_link(pending), f"queued {pending.queued_at:%d %b %Y, %H:%M:%S} UTC", outcome,
    )


@require_POST
def add_schedule(request: HttpRequest, pk: int) -> HttpResponse:
    """Add a schedule; `action=choose` shows the chosen frequency's fields and `action=preview` its next runs
    (both without JavaScript, nothing saved)."""
    company, flow = _get_flow_for_user(request, pk, "can_manage_instances")
    action = params.choice(request.POST, "action", ("add", "choose", "preview"), default="add")
    if action == "choose":
        form = ScheduleForm(initial={"kind": request.POST.get("kind")})
        return render(request, "flows/detail.html", _detail_context(flow, form=ConnectionShapeForm(company=company),
                                                                    schedule_form=form))
    form = ScheduleForm.with_defaults(request.POST) if action == "preview" else ScheduleForm(request.POST)
    if action == "preview" or not form.is_valid():
        context = _detail_context(flow, form=ConnectionShapeForm(company=company), schedule_form=form)
        return render(request, "flows/detail.html", context, status=422 if form.errors else 200)
    schedule = schedules.create_schedule(flow, form.cleaned_data["kind"], now=timezone.now(), **form.schedule_fields())
    messages.success(
        request, f"Schedule added: {schedule.description}. Next run {schedule.next_run_at:%d %b %Y, %H:%M} UTC"
        + ("." if flow.enabled else " once the flow is enabled.")
    )
    return redirect("flows:detail", pk=flow.pk)


def schedule_form(request: HttpRequest, pk: int) -> HttpResponse:
    """htmx: the chosen frequency's fields with the preview (target schedule-fields), or the preview alone."""
    company, flow = _get_flow_for_user(request, pk, "can_manage_instances")
    form = ScheduleForm.with_defaults(request.GET)
    context = {"flow": flow, "schedule_form": form, "schedule_preview": form.preview(timezone.now())}
    if request.htmx and request.htmx.target == "schedule-preview":
        return render(request, "flows/detail.html#schedule-preview", context)
    return render(request, "flows/detail.html#schedule-fields", {**context, "with_preview": True})


@require_POST
def remove_schedule(request: HttpRequest, pk: int, schedule_pk: int) -> HttpResponse:
    company, flow = _get_flow_for_user(request, pk, "can_manage_instances")
    schedule = get_object_or_404(flow.schedules, pk=schedule_pk)
    schedule.delete()
    messages.success(request, f"Schedule removed: {schedule.description}.")
    return redirect("flows:detail", pk=flow.pk)


def _filtered_runs(request: HttpRequest, pk: int | None):
    """The company's (or one flow's) runs narrowed by the filters and `q`; also the flow, form and query."""
    company = company_of(request)
    flow = get_object_or_404(ProcessFlow.objects.for_company(company), pk=pk) if pk is not None else None
    q = params.search_query(request)
    filters = RunLogFilterForm(request.GET or None, company=company)
    flow_runs = FlowRun.objects.for_company(company)
    if flow is not None:
        flow_runs = flow_runs.filter(flow=flow)
    flow_runs = run_log_pages.search(filters.filter(flow_runs), q)
    return flow, filters, q, flow_runs


def run_log(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """The runs of the company, or of one flow (pk), newest first, filtered (see RunLogFilterForm) and searched.

    Keyset pages (`before`/`after` cursors, flows.run_log): no count, no OFFSET.
    """
    flow, filters, q, flow_runs = _filtered_runs(request, pk)
    page = run_log_pages.page(flow_runs.select_related("flow", "triggered_by"),
                              before=request.GET.get("before"), after=request.GET.get("after"))
    kept = request.GET.copy()
    for name in ("before", "after", "page"):
        kept.pop(name, None)
    filtered = bool(q) or any(request.GET.get(name) for name in filters.fields)
    context = {"flow": flow, "show_flow": flow is None, "filters": filters, "page": page, "filtered": filtered,
               "q": q, "query": kept.urlencode(), "time_zone": str(filters.time_zone)}
    return render(request, "flows/run_log.html", context)


def export_runs(request: HttpRequest, pk: int | None = None) -> StreamingHttpResponse:
    """The run log as CSV, with the same filters and search, streamed in chunks (UTC times, cells safe to open)."""
    flow, filters, q, flow_runs = _filtered_runs(request, pk)
    name = f"runs-{flow.pk}.csv" if flow else "runs.csv"
    return StreamingHttpResponse(run_log_pages.csv_lines(flow_runs), content_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})


def run_detail(request: HttpRequest, run_pk: int) -> HttpResponse:
    company, run = _get_run_for_user(request, run_pk)
    context = {"run": run, "shape_runs": run.shape_runs.all(), "now": timezone.now(),
               "retried_as": run.retries.order_by("id").first(), "time_zone": company.time_zone,
               "run_cap": steps.run_cap_text()}
    if request.htmx and request.htmx.target == "run-timeline":
        return render(request, "flows/run_detail.html#timeline", context)
    return render(request, "flows/run_detail.html", context)


def run_step(request: HttpRequest, run_pk: int, step_pk: int) -> HttpResponse:
    """One shape of a run page by page: its records in and out and its requests (bodies load on demand)."""
    company, run = _get_run_for_user(request, run_pk)
    shape_run = get_object_or_404(run.shape_runs, pk=step_pk)
    screen, pages = steps.step_pages(shape_run, request.GET.get("page"))
    retention = timezone.now() - timedelta(hours=company.payload_retention_hours)
    context = {"run": run, "shape_run": shape_run, "screen": screen, "pages": pages, "company": company,
               "cleared": not pages and shape_run.started_at < retention, "body_cap": steps.body_cap_text(),
               "run_cap": steps.run_cap_text()}
    if request.htmx and request.htmx.target == f"step-{shape_run.pk}":
        return render(request, "flows/run_step.html#step", context)
    return render(request, "flows/run_step.html", context)


def run_payload(request: HttpRequest, run_pk: int, payload_pk: int) -> HttpResponse:
    """The records of one page of a step: searched (`q`, in their JSON) and RECORDS_PER_SCREEN a screen."""
    company, run = _get_run_for_user(request, run_pk)
    payload = get_object_or_404(FlowRunPayload.objects.for_company(company).select_related("shape_run"),
                                pk=payload_pk, run=run)
    q = params.search_query(request)
    records = steps.records_page(payload, q, request.GET.get("page"))
    context = {"run": run, "payload": payload, "shape_run": payload.shape_run, "records": records, "q": q,
               "body_cap": steps.body_cap_text(), "here": f"page {payload.page}",
               "results_id": f"payload-{payload.pk}-results",
               "payload_url": reverse("flows:run_payload", args=[run.pk, payload.pk])}
    target = request.htmx.target if request.htmx else None
    if target == f"payload-{payload.pk}-results":
        return render(request, "flows/run_payload.html#results", context)
    if target == f"payload-{payload.pk}":
        return render(request, "flows/run_payload.html#records", context)
    return render(request, "flows/run_payload.html", context)


def run_request(request: HttpRequest, run_pk: int, request_pk: int) -> HttpResponse:
    """One request of a step and its answer, laid out like an instance's request and response tabs."""
    company, run = _get_run_for_user(request, run_pk)
    kept = get_object_or_404(FlowRunRequest.objects.for_company(company).select_related("shape_run"),
                             pk=request_pk, run=run)
    tab = params.choice(request.GET, "tab", ("request", "response"), default="response")
    context = {"run": run, "kept": kept, "shape_run": kept.shape_run, "tab": tab, "body_cap": steps.body_cap_text(),
               "here": f"page {kept.page}, request {kept.number}"}
    if request.htmx and request.htmx.target == f"request-{kept.pk}":
        return render(request, "flows/run_request.html#exchange", context)
    return render(request, "flows/run_request.html", context)


@require_POST
def stop_run(request: HttpRequest, run_pk: int) -> HttpResponse:
    company, run = _get_run_for_user(request, run_pk, "can_manage_instances")
    outcome = queueing.request_stop(run)
    if outcome == "stopped":
        if run.started_at:
            messages.success(request, f"Run {run.pk} was stopped while it waited.")
        else:
            messages.success(request, f"Run {run.pk} was stopped before it started.")
    elif outcome == "stopping":
        messages.success(request, f"Run {run.pk} stops before its next request.")
    else:
        messages.error(request, f"Run {run.pk} has already ended.")
    return redirect("flows:run", run_pk=run.pk)


def retry_run(request: HttpRequest, run_pk: int) -> HttpResponse:
    """GET: what each way of retrying the run will do; POST: do it (`from`: checkpoint or start)."""
    company, run = _get_run_for_user(request, run_pk, "can_manage_instances")
    plan = retries.plan(run)
    if request.method != "POST":
        if not run.can_retry:
            messages.error(request, f"Only failed or stopped runs can be retried; run {run.pk} is {run.get_status_display()}.")
            return redirect("flows:run", run_pk=run.pk)
        return render(request, "flows/retry.html", {"run": run, "plan": plan})
    start_over = params.choice(request.POST, "from", ("checkpoint", "start"), default="checkpoint") == "start"
    if not start_over and not plan.can_resume:
        messages.error(request, plan.resume_refusal)
        return redirect("flows:retry_run", run_pk=run.pk)
    queued = queueing.request_retry(run, request.user, from_checkpoint=not start_over)
    if queued is None:
        messages.error(request, f"Only failed or stopped runs can be retried; run {run.pk} is {run.get_status_display()}.")
        return redirect("flows:run", run_pk=run.pk)
    if queued.existing == "retry":
        messages.info(request, format_html("Run {} was already retried: {}. No other retry was queued.",
                                           run.pk, _run_link(queued.run)))
        return redirect("flows:run", run_pk=run.pk)
    if queued.existing:
        messages.info(request, _pending_message(queued.run, f"Retry run {run.pk} once it has finished."))
        return redirect("flows:run", run_pk=run.pk)
    if start_over:
        done = f"Run {queued.run.pk} runs run {run.pk} again from the start, with its original queued-at time for relative dates."
    elif queued.run.from_checkpoint:
        done = f"Run {queued.run.pk} resumes run {run.pk} from page {queued.run.resumed_from_page}."
    else:
        done = f"Run {queued.run.pk} retries run {run.pk} from the first page (it had no page done)."
    messages.success(request, done)
    return redirect("flows:run", run_pk=queued.run.pk)


@require_POST
def remove_shape(request: HttpRequest, pk: int, shape_pk: int) -> HttpResponse:
    company, flow = _get_flow_for_user(request, pk, "can_manage_instances")
    shape = get_object_or_404(flow.shapes.select_related("instance", "endpoint"), pk=shape_pk)
    editor.remove_shape(shape)
    messages.success(request, f"Step {shape.position + 1} removed ({shape.kind}"
                     + (f": {shape.instance} → {shape.endpoint.name if shape.endpoint else shape.missing_endpoint}"
                        if shape.is_connection else "") + ").")
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
