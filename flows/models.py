"""Process flows and their connection shapes (an instance and one endpoint of its connector)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Count, F, Min, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.functional import cached_property

from connectors.models import Endpoint
from instances.models import Instance
from patchworks_site.models import Company


def _count_per_flow(queryset: models.QuerySet) -> Coalesce:
    """How many rows of `queryset` (filtered on flow=OuterRef("pk")) the flow has, as a subquery.

    A subquery rather than Count over a join: two Counts over two relations in one
    query multiply each other (every shape row is repeated for every run row).
    """
    counted = queryset.order_by().values("flow").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted), 0)


class ProcessFlowQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> ProcessFlowQuerySet:
        return self.filter(company=company)

    def with_summary(self, now: datetime) -> ProcessFlowQuerySet:
        """The flows with what the flow list shows of each, in one query however many flows and runs there are.

        shape_count, flagged_count: shapes, and connection shapes whose endpoint is gone (need attention);
        last_run_pk, last_run_status, last_run_at: the newest run (by queued time), which may still be
        queued, running or waiting; last_run_at is when it started, or was queued if it has not started;
        last_finished_status: the status of the newest run that has ended (what the "failing" filter reads);
        next_run_at: the earliest next run of the flow's schedules, set whether the flow is enabled or not;
        succeeded_24h, failed_24h: runs queued in the 24 hours before `now` that succeeded (fully or
        partly) and that failed.
        Test runs (trigger "test", from "test step" in the editor) count in none of these.
        """
        runs = (FlowRun.objects.filter(flow=OuterRef("pk")).exclude(trigger=RunTrigger.TEST)
                .order_by("-queued_at", "-id"))
        last = runs[:1]
        last_finished = runs.exclude(status__in=ACTIVE_STATUSES)[:1]
        recent = runs.filter(queued_at__gte=now - timedelta(hours=24)).order_by()
        shapes = Shape.objects.filter(flow=OuterRef("pk"))
        next_run = (FlowSchedule.objects.filter(flow=OuterRef("pk")).order_by().values("flow")
                    .annotate(first=Min("next_run_at")).values("first"))
        return self.annotate(
            shape_count=_count_per_flow(shapes),
            flagged_count=_count_per_flow(shapes.filter(kind=ShapeKind.CONNECTION, endpoint__isnull=True)),
            last_run_pk=Subquery(last.values("pk")),
            last_run_status=Subquery(last.values("status")),
            last_run_at=Subquery(last.annotate(at=Coalesce("started_at", "queued_at")).values("at")),
            last_finished_status=Subquery(last_finished.values("status")),
            next_run_at=Subquery(next_run),
            succeeded_24h=_count_per_flow(recent.filter(status__in=(RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS))),
            failed_24h=_count_per_flow(recent.filter(status=RunStatus.FAILED)),
        )

    def failing(self) -> ProcessFlowQuerySet:
        """The flows (annotated by with_summary) whose newest ended run failed; a run still going does not count."""
        return self.filter(last_finished_status=RunStatus.FAILED)


class ProcessFlow(models.Model):
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="process_flows")
    name = models.CharField(max_length=120)
    enabled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProcessFlowQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @cached_property
    def last_run(self) -> FlowRun | None:
        """The newest run as ProcessFlowQuerySet.with_summary read it (pk and status only, for its badge), or None."""
        if getattr(self, "last_run_pk", None) is None:
            return None
        return FlowRun(pk=self.last_run_pk, flow=self, company_id=self.company_id, status=self.last_run_status)


class ShapeKind(models.TextChoices):
    CONNECTION = "connection", "connection"
    FILTER = "filter", "filter"
    MAP = "map", "map"


class Shape(models.Model):
    """One step of a process flow, run in `position` order.

    A *connection* shape uses an instance and one endpoint of its connector; a
    *filter* or *map* shape has no instance and works on the items the previous
    shape passed on. What each kind is configured with lives in `config`
    (see flows/shapes/<kind>.py for its keys): for a connection shape timeout,
    retries, allow_unsuccessful, send_as and the optional endpoint parameters;
    for a filter its match mode and rules; for a map its output fields.
    """

    flow = models.ForeignKey(ProcessFlow, on_delete=models.CASCADE, related_name="shapes")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=20, choices=ShapeKind.choices, default=ShapeKind.CONNECTION)
    # PROTECT: an instance or endpoint in use cannot be deleted, even by a
    # concurrent request; the database refuses and the UI explains.
    # Null for filter and map shapes.
    instance = models.ForeignKey(
        Instance, on_delete=models.PROTECT, related_name="connection_shapes", null=True, blank=True
    )
    # Null only when a connector update removed the endpoint: the shape is then
    # flagged (missing_endpoint says what it was) instead of silently breaking.
    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.PROTECT, related_name="connection_shapes", null=True, blank=True
    )
    missing_endpoint = models.CharField(max_length=300, blank=True)
    config = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        if self.kind != ShapeKind.CONNECTION:
            return f"{self.flow}: {self.kind}"
        return f"{self.flow}: {self.instance} → {self.endpoint.name if self.endpoint else self.missing_endpoint}"

    @property
    def is_connection(self) -> bool:
        return self.kind == ShapeKind.CONNECTION

    @property
    def needs_attention(self) -> bool:
        return self.is_connection and self.endpoint_id is None

    def clean(self) -> None:
        if self.is_connection and not self.instance_id:
            raise ValidationError({"instance": "Choose an instance."})
        if self.instance_id and self.endpoint_id and self.endpoint.connector_id != self.instance.connector_id:
            raise ValidationError({"endpoint": "Choose an endpoint of the instance's connector."})
        if self.instance_id and self.flow_id and self.instance.company_id != self.flow.company_id:
            raise ValidationError({"instance": "Choose an instance of your company."})


# --- Runs -------------------------------------------------------------------


class RunStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    # Parked: the run gave its worker back until a rate limit lets its next request go (parked_until).
    WAITING = "waiting", "waiting"
    SUCCESS = "success", "success"
    PARTIAL_SUCCESS = "partial_success", "partial success"
    FAILED = "failed", "failed"
    STOPPED = "stopped", "stopped"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)
RETRYABLE_STATUSES = (RunStatus.FAILED, RunStatus.STOPPED)


class RunTrigger(models.TextChoices):
    MANUAL = "manual", "manual"
    SCHEDULE = "schedule", "schedule"
    RETRY = "retry", "retry"
    # "test step" in the flow editor: one page of real data, nothing sent; left out of the
    # flow list's figures and of alerts.
    TEST = "test", "test"


def worker_process(owner: str) -> str:
    """The worker process (host:pid) of a lease owner (host:pid:thread:token)."""
    return owner.rsplit(":", 2)[0]


class FlowRunQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> FlowRunQuerySet:
        return self.filter(company=company)

    def active(self) -> FlowRunQuerySet:
        return self.filter(status__in=ACTIVE_STATUSES)

    def real(self) -> FlowRunQuerySet:
        """Runs that are not test steps: what a flow's figures, schedules and "last success" read."""
        return self.exclude(trigger=RunTrigger.TEST)


class FlowRun(models.Model):
    """One execution of a process flow. This row, not the queue, is the truth about the run."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="flow_runs")
    flow = models.ForeignKey(ProcessFlow, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    trigger = models.CharField(max_length=20, choices=RunTrigger.choices)
    triggered_by = models.ForeignKey(
        "patchworks_site.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    schedule = models.ForeignKey("FlowSchedule", on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    retry_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries")
    queued_at = models.DateTimeField()
    # When the run's task was last handed to the queue (see queueing.requeue_stale).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # The time relative dates of the run are computed from: its own queued-at, or
    # for a retry the original run's (so a retry fetches the same window).
    reference_time = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The worker thread holding the run (execution.worker_name: host:pid:thread:token); kept once the run ends, so
    # it also says which host ran the run's last attempt (a lost attempt's worker is in `attempts`).
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    stop_requested = models.BooleanField(default=False)
    failure_reason = models.TextField(blank=True)
    warnings = models.JSONField(default=list, blank=True)
    # --- Durability (see flows.durability) ---
    # The run whose sends this one repeats: its idempotency keys are the origin's (null: the run itself).
    origin_run_id = models.PositiveBigIntegerField(null=True, blank=True)
    # A retry that resumes where `retry_of` stopped (its checkpoint) rather than from the first page.
    from_checkpoint = models.BooleanField(default=False)
    # Attempt 1 is the first worker's; a run whose worker was lost resumes as the next attempt.
    attempt = models.PositiveSmallIntegerField(default=1)
    # Each resumed attempt: {"number", "cause", "lost_at", "resumed_at", "from_page", "lost_worker"} (ISO times, UTC;
    # lost_worker: the host:pid whose lease ran out).
    attempts = models.JSONField(default=list, blank=True)
    # Where the run is: positions only (segment, pagination state, sends acknowledged), never payloads or secrets.
    checkpoint = models.JSONField(default=dict, blank=True)
    # What the shapes were when the run started: a resume refuses to go on with shapes edited since.
    shapes_fingerprint = models.CharField(max_length=64, blank=True)
    # When the current stretch on a worker began (claim, resume, end of a park); the duration limit counts from it.
    stretch_started_at = models.DateTimeField(null=True, blank=True)
    # Parked (status waiting): until when, and for what ("the rate limit of Shopify - UK").
    parked_until = models.DateTimeField(null=True, blank=True)
    park_reason = models.CharField(max_length=300, blank=True)
    parks = models.PositiveIntegerField(default=0)
    # How many times a worker found the run's company at its maximum of concurrent runs and put the run back
    # (flows.execution.defer): each time its task comes back a little later.
    deferrals = models.PositiveIntegerField(default=0)
    # Sends of an API without idempotency keys that were in flight when a worker was lost:
    # [{"shape": label, "what": "Page 3, batch 1", "ids": [...], "at": ISO}]. They were not sent again.
    in_doubt = models.JSONField(default=list, blank=True)
    # What the run is doing now ("Shape 4 (…): sending item 7 of 10 of page 3"), written at most once a second.
    activity = models.CharField(max_length=300, blank=True)
    # A test step (trigger "test"): the shape it runs the flow up to, on one page, sending nothing.
    test_shape = models.ForeignKey(Shape, on_delete=models.SET_NULL, null=True, blank=True, related_name="test_runs")
    # Bytes of records and requests stored for the run page's steps (FlowRunPayload, FlowRunRequest), and
    # whether FLOW_RUN_PAYLOADS_MAX_BYTES stopped keeping more (the run itself went on).
    payload_bytes = models.PositiveBigIntegerField(default=0)
    payloads_capped = models.BooleanField(default=False)

    objects = FlowRunQuerySet.as_manager()

    class Meta:
        ordering = ["-queued_at", "-id"]
        indexes = [
            models.Index(fields=["company", "-queued_at"]),
            # The newest runs of one flow: the flow list's last run of each flow, a flow's run log.
            models.Index(fields=["flow", "-queued_at"]),
            models.Index(fields=["status", "lease_expires_at"]),
            # Retention: a company's runs that finished before its log retention, oldest first, in batches.
            models.Index(fields=["company", "finished_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.flow} run {self.pk}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def can_retry(self) -> bool:
        # A test step is tested again from the editor: its retry would be a real run that sends.
        return self.status in RETRYABLE_STATUSES and not self.is_test

    @property
    def is_test(self) -> bool:
        return self.trigger == RunTrigger.TEST

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def elapsed(self):
        """How long since the run started (None before it starts)."""
        return timezone.now() - self.started_at if self.started_at else None

    @property
    def worker(self) -> str:
        """The worker process (host:pid) that holds the run or ran its last attempt; empty while queued or parked."""
        return worker_process(self.lease_owner)

    @property
    def attempt_notes(self) -> list[dict]:
        """The resumed attempts for the run page: number, cause, when and which worker was lost (host:pid), page."""
        notes = []
        for entry in self.attempts if isinstance(self.attempts, list) else []:
            if not isinstance(entry, dict):
                continue
            try:
                lost_at = datetime.fromisoformat(str(entry.get("lost_at")))
            except ValueError:
                lost_at = None
            notes.append({"number": entry.get("number"), "cause": entry.get("cause") or "worker lost",
                          "resumed": bool(entry.get("resumed_at")), "from_page": entry.get("from_page") or 1,
                          "lost_at": lost_at, "lost_worker": str(entry.get("lost_worker") or "")})
        return notes

    @property
    def idempotency_origin(self) -> int:
        """The run whose idempotency keys this run's sends carry (a retry repeats its original's)."""
        return self.origin_run_id or self.pk

    def limit_wait_ms(self) -> int:
        """How long the run waited for rate limits and connection pools: its shapes' waits, parks included.

        A park for a rate limit counts as time waited by the shape that parked once it resumes
        (flows.shapes.connection.Connection.resume).
        """
        shapes = self.shape_runs.aggregate(waited=Sum(F("rate_limit_wait_ms") + F("pool_wait_ms")))["waited"] or 0
        return int(shapes)

    @property
    def resumed_from_page(self) -> int | None:
        """The page (1-based, of the segment in progress) the run's checkpoint resumes at; None at the start."""
        return self.page_to_resume(self.checkpoint)

    @staticmethod
    def page_to_resume(checkpoint: object) -> int | None:
        """The page a run with `checkpoint` resumes at (1-based, of the segment in progress); None at the start."""
        if not isinstance(checkpoint, dict) or not checkpoint:
            return None
        return int(checkpoint.get("page", 0)) + 1

    @property
    def trigger_text(self) -> str:
        if self.trigger == RunTrigger.RETRY:
            how = "resumed from its checkpoint" if self.from_checkpoint else "from the start"
            return f"retry of run {self.retry_of_id}, {how}" if self.retry_of_id else "retry"
        if self.trigger == RunTrigger.MANUAL:
            return f"manual by {self.triggered_by}" if self.triggered_by_id else "manual"
        if self.trigger == RunTrigger.TEST:
            by = f" by {self.triggered_by}" if self.triggered_by_id else ""
            return f"test step{by} (nothing sent)"
        return "schedule"


class ShapeStatus(models.TextChoices):
    RUNNING = "running", "running"
    SUCCESS = "success", "success"
    PARTIAL_SUCCESS = "partial_success", "partial success"
    FAILED = "failed", "failed"
    STOPPED = "stopped", "stopped"


class FlowRunShape(models.Model):
    """What one connection shape did in one run (the run's timeline)."""

    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="shape_runs")
    position = models.PositiveIntegerField()
    shape = models.ForeignKey(Shape, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # What the shape was when it ran (the shape may be edited or removed later).
    shape_name = models.CharField(max_length=400)
    status = models.CharField(max_length=20, choices=ShapeStatus.choices, default=ShapeStatus.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    items_in = models.PositiveIntegerField(default=0)
    items_out = models.PositiveIntegerField(default=0)
    pages = models.PositiveIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    rate_limit_wait_ms = models.PositiveIntegerField(default=0)
    pool_wait_ms = models.PositiveIntegerField(default=0)
    warnings = models.JSONField(default=list, blank=True)
    errors = models.JSONField(default=list, blank=True)
    # Redacted request/response records (client.Exchange.as_record) of the failed requests.
    failed_exchanges = models.JSONField(default=list, blank=True)
    # A few items in and out (redacted), kept for the company's payload retention
    # (Company.payload_retention_hours); null once cleared.
    payload_sample = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.run}: {self.position + 1}. {self.shape_name}"

    @property
    def duration(self):
        if self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def sample_texts(self) -> list[tuple[str, str]]:
        """The payload sample as ("in"/"out"/"sends", indented JSON) for the run page; empty once retention cleared it.

        "sends": the requests a test step's send shape would have made (it sent nothing).
        """
        sample = self.payload_sample if isinstance(self.payload_sample, dict) else {}
        return [(side, json.dumps(sample[side], indent=2, ensure_ascii=False, default=str))
                for side in ("in", "out", "sends") if sample.get(side)]


class PayloadDirection(models.TextChoices):
    IN = "in", "in"
    OUT = "out", "out"


class StepRowQuerySet(models.QuerySet):
    def for_company(self, company: Company) -> StepRowQuerySet:
        return self.filter(run__company=company)


class FlowRunPayload(models.Model):
    """The records one shape received (in) or passed on (out) in one page (batch) of a run, redacted.

    Written with the page's checkpoint (flows.execution), so a page a resumed
    run redoes was never stored by the attempt that lost it. `body` holds one
    record per line as JSON (JSON Lines), cut at a line when longer than
    FLOW_PAYLOAD_BODY_MAX_BYTES; `records` counts them all.
    """

    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="payloads")
    shape_run = models.ForeignKey(FlowRunShape, on_delete=models.CASCADE, related_name="payloads")
    page = models.PositiveIntegerField()
    batch = models.PositiveIntegerField(default=1)
    direction = models.CharField(max_length=3, choices=PayloadDirection.choices)
    records = models.PositiveIntegerField(default=0)
    body = models.TextField(blank=True)
    size = models.PositiveIntegerField(default=0)  # bytes of `body` as stored
    truncated = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    objects = StepRowQuerySet.as_manager()

    class Meta:
        ordering = ["page", "batch", "direction"]
        constraints = [
            models.UniqueConstraint(fields=["shape_run", "page", "batch", "direction"], name="one_payload_per_page"),
        ]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.shape_run}: page {self.page} {self.direction}"


class FlowRunRequest(models.Model):
    """One request a connection shape made in a page of a run and its answer, redacted before it was stored.

    The fields are named like a credential check's (instances.CredentialCheck),
    so the instance page's request and response templates show both.
    """

    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="stored_requests")
    shape_run = models.ForeignKey(FlowRunShape, on_delete=models.CASCADE, related_name="stored_requests")
    page = models.PositiveIntegerField()
    number = models.PositiveIntegerField()  # the request's place in the shape's page, from 1
    attempt = models.PositiveSmallIntegerField(default=1)  # 2 and more: a retry of the request before it
    request_method = models.CharField(max_length=10)
    request_url = models.TextField()
    request_headers = models.JSONField(default=dict)
    request_body = models.TextField(blank=True)
    request_truncated = models.BooleanField(default=False)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict)
    response_body = models.TextField(blank=True)
    response_truncated = models.BooleanField(default=False)
    ok = models.BooleanField(default=False)
    message = models.CharField(max_length=600, blank=True)
    error = models.TextField(blank=True)
    rate_limit_note = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    rate_limit_wait_ms = models.PositiveIntegerField(default=0)
    pool_wait_ms = models.PositiveIntegerField(default=0)
    size = models.PositiveIntegerField(default=0)  # bytes stored (URL, headers, bodies)
    created_at = models.DateTimeField(default=timezone.now)

    objects = StepRowQuerySet.as_manager()

    class Meta:
        ordering = ["page", "number"]
        constraints = [
            models.UniqueConstraint(fields=["shape_run", "page", "number"], name="one_request_per_number"),
        ]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.shape_run}: page {self.page} request {self.number}"


class FlowRunAnswer(models.Model):
    """What an API answered to one send of a run's page in progress, kept sealed until the page is done.

    A run that parks, or loses its worker, part-way through a page reads the
    page again and does not make again the sends acknowledged before
    (flows.durability); the shapes after the send still need those answers,
    which the checkpoint (positions only) does not hold. They are kept here,
    written in the commit that writes the acknowledgement, and only for a send
    whose answers another shape of the segment takes in. `body` is the answers'
    JSON encrypted like credentials and bound to the run's idempotency origin
    and the send's place: an answer may carry anything the API sends, tokens
    included. The page's commit deletes them; a run that failed or was stopped
    keeps them for a retry from its checkpoint (which takes them over) until
    payload retention.
    """

    run = models.ForeignKey(FlowRun, on_delete=models.CASCADE, related_name="+")
    segment = models.PositiveSmallIntegerField()
    page = models.PositiveIntegerField()
    position = models.PositiveSmallIntegerField()  # the send's shape
    index = models.PositiveIntegerField()  # the send's place in the shape's page, from 0
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "segment", "page", "position", "index"], name="one_answer_per_send"),
        ]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"run {self.run_id}: answers to send {self.index} of shape {self.position}, page {self.page}"


# --- Schedules ----------------------------------------------------------------


class ScheduleKind(models.TextChoices):
    MINUTES = "minutes", "Minutes"
    HOURLY = "hourly", "Hourly"
    DAILY = "daily", "Daily"
    MONTHLY = "monthly", "Monthly"
    ADVANCED = "advanced", "Advanced (cron)"


class FlowSchedule(models.Model):
    """A trigger schedule of a process flow, in UTC. Every kind is stored as its 5-field cron expression."""

    flow = models.ForeignKey(ProcessFlow, on_delete=models.CASCADE, related_name="schedules")
    kind = models.CharField(max_length=20, choices=ScheduleKind.choices)
    cron = models.CharField(max_length=120)
    description = models.CharField(max_length=200)
    next_run_at = models.DateTimeField(db_index=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    # Due times that enqueued nothing because a run of the flow was still queued or running.
    skipped_count = models.PositiveIntegerField(default=0)
    last_skipped_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["next_run_at", "id"]

    def __str__(self) -> str:
        return f"{self.flow}: {self.description}"


# --- Periodic jobs ---------------------------------------------------------------


class PeriodicJobRun(models.Model):
    """A periodic job's run in one period (flows.periodic): the first worker to insert the pair runs the job."""

    job = models.CharField(max_length=100)
    period_start = models.DateTimeField()
    started_at = models.DateTimeField(default=timezone.now)
    # host:pid of the worker process that ran it.
    worker = models.CharField(max_length=200)

    class Meta:
        ordering = ["-period_start", "job"]
        constraints = [models.UniqueConstraint(fields=["job", "period_start"], name="periodic_job_once_per_period")]

    def __str__(self) -> str:
        return f"{self.job} @ {self.period_start:%Y-%m-%d %H:%M:%S}"
