"""Executing one flow run on a worker.

A worker claims the run with one conditional UPDATE (queued -> running), so a
run is never executed twice, however many workers receive its task; the claim
keeps the company's maximum of concurrent runs, and a task starts the run of
whichever company's turn it is (claim_fairly, flows.fairness). While it
runs, the worker holds a lease that its process's lease keeper renews; a worker that is
killed stops renewing it and the scheduler tick fails the run ("worker lost").
Pages stream through the shapes (one module per shape kind in flows.shapes,
see Execution), and every request goes through the one instance client (SSRF
guard, rate limit, connection pool, redaction).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import secrets
import threading
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, DataError, connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from huey.contrib.djhuey import db_task

from flows import durability, fairness, signals, steps
from flows import metrics as flow_metrics
from flows.models import FlowRun, FlowRunAnswer, FlowRunShape, RunStatus, RunTrigger, Shape, ShapeKind, ShapeStatus
from flows.shapes import Context, ShapeFailed, Stage, bounds
from flows.shapes import connection as connection_shape
from flows.shapes import filter as filter_shape
from flows.shapes import map as map_shape
from instances.models import Instance
from instances.outbound import InstanceClient
from patchworks_site.models import Company

logger = logging.getLogger(__name__)

class StopRequested(Exception):
    pass


class LeaseLost(Exception):
    """Another party (the reaper) took the run away from this worker: write nothing more."""


class DurationExceeded(Exception):
    """The run has taken longer than its company allows (the message says how long that is)."""


# The run page's "now: …" line is written at most this often.
ACTIVITY_EVERY_SECONDS = 1.0

# Failures with a cause that can be named, though no shape raised them on purpose.
NAMED_FAILURES = (DataError, RecursionError, MemoryError)


def overdue_reason(company) -> str:
    """The failure reason of a run of `company` that took longer than it may."""
    reason = f"The run was stopped after {company.run_duration_text}."
    if company.max_run_duration_minutes <= settings.FLOW_RUN_MAX_DURATION_CEILING_MINUTES:
        reason += " An Administrator can change it on the company settings page."
    return reason


def named_failure(exc: BaseException) -> str | None:
    """Why the run stopped, for an exception of NAMED_FAILURES (None for others)."""
    if isinstance(exc, DataError):
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return f"the database refused to store the run's data ({detail}). The run stopped."
    if isinstance(exc, RecursionError):
        return (
            "the data is nested too deeply to process (a record may nest at most "
            f"{settings.FLOW_MAX_RECORD_DEPTH} levels, FLOW_MAX_RECORD_DEPTH). The run stopped."
        )
    if isinstance(exc, MemoryError):
        return (
            "the worker ran out of memory. Pages may hold at most "
            f"{bounds.size_text(settings.FLOW_MAX_PAGE_BYTES)} after a shape (FLOW_MAX_PAGE_BYTES); "
            "a lower bound, or smaller pages from the endpoint, keeps runs within the worker's memory."
        )
    return None


@dataclass
class Outcome:
    status: str
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    parked: durability.Parked | None = None
    # Failed where a park would have been: what the run had done is kept as a park keeps it (the checkpoint
    # mid-page, its sends' acknowledgements and answers), so a retry from the checkpoint goes on from there.
    stopped_at_park: bool = False


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.FLOW_RUN_LEASE_SECONDS)


def worker_name() -> str:
    """This thread's name as a lease owner: host:pid:thread:token (the token tells a reused thread id apart)."""
    return f"{settings.HOST_NAME}:{os.getpid()}:{threading.get_ident()}:{secrets.token_hex(4)}"


def renew_lease(run_pk: int, owner: str) -> bool:
    """Extend the lease; False when the run is no longer this worker's."""
    return keep(run_pk, owner, lease_expires_at=timezone.now() + lease_duration()) != LOST


OURS, STOP, LOST = "ours", "stop", "lost"


def keep(run_pk: int, owner: str, **values) -> str:
    """Write `values` to the run if it is still this worker's: OURS, STOP (written, but a stop was asked for) or LOST.

    Usually one UPDATE, which also sees a stop request; on a stop what is
    written (progress, lease) is still kept.
    """
    with connection.cursor() as cursor:
        row = send_keep(cursor, run_pk, owner, values)
        return kept_by(cursor, values, row)


def send_keep(cursor, run_pk: int, owner: str, values: dict) -> list:
    """keep's first UPDATE (its row count is read by kept_by, after a pipeline has synced); the row it sent."""
    names = tuple(values)
    row = [field.get_db_prep_save(values[field.name], connection) for field in run_fields(names)]
    row += [run_pk, RunStatus.RUNNING, owner]
    cursor.execute(run_update_sql(names, stop_requested=False), row)
    return row


def kept_by(cursor, values: dict, row: list) -> str:
    if cursor.rowcount:
        return OURS
    cursor.execute(run_update_sql(tuple(values), stop_requested=None), row)
    return STOP if cursor.rowcount else LOST


def pipelined():
    """Statements sent at once and their results read together (PostgreSQL's pipeline mode; SQLite has none).

    A page's commit is then about one round trip to the database instead of
    five, which is time the run otherwise waits for each page. A statement the
    database refuses raises when the pipeline syncs, as Django's error.
    """
    if connection.vendor != "postgresql":
        return nullcontext()
    connection.ensure_connection()
    stack = ExitStack()
    stack.enter_context(connection.wrap_database_errors)
    stack.enter_context(connection.connection.pipeline())
    return stack


@functools.cache
def run_fields(names: tuple[str, ...]) -> list:
    return [FlowRun._meta.get_field(name) for name in names]


@functools.cache
def run_update_sql(names: tuple[str, ...], *, stop_requested: bool | None) -> str:
    """The UPDATE of `names` of a run still this worker's (keep), built once per set of names.

    A QuerySet.update compiles its SQL on every call, which cost more CPU than
    the rest of a page's commit; the values are prepared by the fields, as an
    update would.
    """
    quote = connection.ops.quote_name
    column = {field.name: quote(field.column) for field in FlowRun._meta.concrete_fields}
    sql = (
        f"UPDATE {quote(FlowRun._meta.db_table)} SET " + ", ".join(f"{column[name]} = %s" for name in names)
        + f" WHERE {column['id']} = %s AND {column['status']} = %s AND {column['lease_owner']} = %s"
    )
    if stop_requested is not None:
        sql += f" AND {'' if stop_requested else 'NOT '}{column['stop_requested']}"
    return sql


class Heartbeat:
    """One run's lease, renewed every third of it by the process's lease keeper; notices a stop request or a lost lease.

    The run itself never asks the database between requests: it looks at
    `look` (see Execution.check), which the renewal sets when it did not go
    through as usual (a stop was asked for, or the run is not this worker's
    any more); the run then asks once itself. So a stop request is seen within
    a third of the lease, and a killed worker leaves a lease that runs out
    within FLOW_RUN_LEASE_SECONDS.
    """

    def __init__(self, run_pk: int, owner: str):
        self.run_pk, self.owner = run_pk, owner
        self.look = threading.Event()
        self.progress: Execution | None = None  # whose activity the renewal also writes
        self.due = 0.0  # time.monotonic() of the next renewal (the keeper's)

    def beat(self) -> None:
        """Renew the lease, with the run's activity if it changed since written.

        The run writes its activity at most once a second, and not at all while
        it waits for a rate limit or a pool slot inside the client: the renewal
        carries what it said last, so the run page is at most a third of the
        lease behind.
        """
        values: dict = {"lease_expires_at": timezone.now() + lease_duration()}
        progress = self.progress
        activity = progress.activity if progress is not None else None
        if activity is not None and activity != progress.activity_sent:
            values["activity"] = activity
        if keep(self.run_pk, self.owner, **values) != OURS:
            self.look.set()  # the run asks itself (Execution.check)
        elif "activity" in values:
            progress.activity_sent = activity

    def start(self) -> None:
        LeaseKeeper.of_this_process().add(self)

    def stop(self) -> None:
        LeaseKeeper.of_this_process().remove(self)


class LeaseKeeper(threading.Thread):
    """The one thread of a worker process that renews the leases of the runs it executes (see Heartbeat).

    A thread and a database connection per run would cost a connection (a
    PostgreSQL backend started and ended) for every run, and two connections
    per concurrent run in all: one per process is enough for renewals every
    third of the lease. Its connection is closed whenever no run is left to
    renew, so an idle worker holds none.
    """

    _lock = threading.Lock()
    _keeper: LeaseKeeper | None = None

    def __init__(self) -> None:
        super().__init__(name="flow-run-leases", daemon=True)
        self.pid = os.getpid()
        self.heartbeats: set[Heartbeat] = set()
        self.changed = threading.Condition()

    @classmethod
    def of_this_process(cls) -> LeaseKeeper:
        with cls._lock:
            keeper = cls._keeper
            if keeper is None or keeper.pid != os.getpid() or not keeper.is_alive():
                keeper = cls._keeper = cls()  # after a fork the parent's thread is not in the child
                keeper.start()
            return keeper

    def add(self, heartbeat: Heartbeat) -> None:
        with self.changed:
            heartbeat.due = time.monotonic() + settings.FLOW_RUN_LEASE_SECONDS / 3
            self.heartbeats.add(heartbeat)
            self.changed.notify()

    def remove(self, heartbeat: Heartbeat) -> None:
        """No more renewals of `heartbeat`'s lease (one already under way is harmless: the run is no longer
        running under its owner, so its UPDATE changes nothing)."""
        with self.changed:
            self.heartbeats.discard(heartbeat)
            self.changed.notify()

    def run(self) -> None:
        while True:
            due = self.wait_for_due()
            for heartbeat in due:
                if heartbeat not in self.heartbeats:
                    continue  # its run ended meanwhile
                try:
                    heartbeat.beat()
                except DatabaseError:
                    logger.warning("Could not renew the lease of flow run %s.", heartbeat.run_pk, exc_info=True)
                    connection.close()  # a broken connection is opened again for the next renewal
                except Exception:
                    logger.exception("Could not renew the lease of flow run %s.", heartbeat.run_pk)

    def wait_for_due(self) -> list[Heartbeat]:
        """The heartbeats whose renewal is due, their next one set a third of the lease later."""
        with self.changed:
            while True:
                if not self.heartbeats:
                    connection.close()  # idle: hold no connection
                    self.changed.wait()
                    continue
                now = time.monotonic()
                due = [heartbeat for heartbeat in self.heartbeats if heartbeat.due <= now]
                if due:
                    break
                self.changed.wait(min(heartbeat.due for heartbeat in self.heartbeats) - now)
            for heartbeat in due:
                heartbeat.due = now + settings.FLOW_RUN_LEASE_SECONDS / 3
            return due


def claim(run_pk: int, owner: str, company_id: int | None = None) -> bool:
    """queued (or waiting, once its park is over) -> running, for this worker only, within its company's maximum.

    The count of the company's running runs and the UPDATE are one transaction
    holding the company's row (SELECT ... FOR UPDATE on PostgreSQL; on SQLite
    every transaction starts IMMEDIATE, which serialises writers the same way),
    so two workers never both put a company over its maximum of concurrent runs.
    A test step neither counts nor waits: it reads one page and sends nothing.
    `company_id`: the caller knows the run is one of that company's, not a
    test step (a query fewer).
    """
    with transaction.atomic():
        if company_id is not None:
            trigger = None
        else:
            row = FlowRun.objects.filter(pk=run_pk).values_list("company_id", "trigger").first()
            if row is None:
                return False
            company_id, trigger = row
        if trigger == RunTrigger.TEST:
            return start(run_pk, owner, None)
        if not under_maximum(company_id, wait=True):
            return False
        return start(run_pk, owner, company_id)


def claim_turn(company_id: int, owner: str, *, wait: bool = True) -> int | None:
    """Start the company's oldest queued run (test steps left out) if its maximum allows; the run started, or None.

    Workers that read the same turns at once (a wave of runs ending together)
    would all claim the same run, and all but one would lose it after waiting
    for the company's row. Picking the run once the row is held makes the
    next worker start the company's next run instead. `wait=False`: a company
    whose row another worker's claim holds is passed over at once (SKIP
    LOCKED, on PostgreSQL) so that the worker can take the next turn.
    """
    with transaction.atomic():
        if not under_maximum(company_id, wait=wait):
            return None
        run_pk = fairness.oldest_queued(company_id)
        return run_pk if run_pk is not None and start(run_pk, owner, company_id) else None


def under_maximum(company_id: int, *, wait: bool) -> bool:
    """In a transaction: lock the company's row; whether it has fewer runs going than its maximum.

    False too when `wait` is False and another transaction holds the row (PostgreSQL), or the company is gone.
    """
    skip = not wait and connection.features.has_select_for_update_skip_locked
    company = Company.objects.select_for_update(skip_locked=skip).only("max_concurrent_runs").filter(
        pk=company_id).first()
    return company is not None and fairness.running(company_id) < company.concurrent_run_limit


def start(run_pk: int, owner: str, company_id: int | None) -> bool:
    """The claim's UPDATE: the run is this worker's if it was still queued (or its park is over).

    `company_id`: the company's turn is taken (its last start noted); None for a test step.
    """
    # Read once the lock is held: the run's start is never before the end of the run whose slot it took.
    now = timezone.now()
    started = FlowRun.objects.filter(pk=run_pk).filter(
        Q(status=RunStatus.QUEUED) | Q(status=RunStatus.WAITING, parked_until__lte=now)
    ).update(
        status=RunStatus.RUNNING, started_at=Coalesce("started_at", Value(now)), stretch_started_at=now,
        lease_owner=owner, lease_expires_at=now + lease_duration(), parked_until=None, park_reason="",
        activity="",
    )
    if started and company_id is not None:
        Company.objects.filter(pk=company_id).update(last_run_started_at=now)
    return bool(started)


def claimable(run_pk: int) -> tuple[int, str, str] | None:
    """(company, status, trigger) of the run if a worker could start it now, else None."""
    return (
        FlowRun.objects.filter(pk=run_pk)
        .filter(Q(status=RunStatus.QUEUED) | Q(status=RunStatus.WAITING, parked_until__lte=timezone.now()))
        .values_list("company_id", "status", "trigger").first()
    )


def claim_fairly(run_pk: int, owner: str) -> int | None:
    """The run this task starts: `run_pk`, or another run whose turn it is; None when none.

    Huey's queue is first in, first out, and shared: a company that queued
    hundreds of runs would hold every worker until its backlog drained. So a
    task is a turn at a worker more than a run of its own: it starts the
    oldest queued run of the company whose turn it is (fairness.turns: fewest
    runs going, then the one whose last run started longest ago), which is
    often its own run's company; a company whose row another worker is
    claiming from is passed over for the next turn. A task whose run has
    started or ended meanwhile (its turn was taken for another run) gives its
    turn the same way. A run whose company is at its maximum of concurrent
    runs is deferred (see defer); a parked run resuming takes its own turn.
    """
    own = claimable(run_pk)
    if own is None:
        return give_turn(owner)
    company_id, status, trigger = own
    if trigger == RunTrigger.TEST:
        return run_pk if claim(run_pk, owner) else None
    if status == RunStatus.WAITING:
        if claim(run_pk, owner, company_id):
            return run_pk
    else:
        for other, _ in fairness.turns():
            if other == company_id:
                break  # the run's own company has the turn
            started = claim_turn(other, owner, wait=False)
            if started is not None:
                if claimable(run_pk) is not None and fairness.at_limit(company_id):
                    defer(run_pk)
                return started
        # The company's runs start oldest first, whichever of their tasks comes (a task given to another company
        # earlier left its run without one).
        started = claim_turn(company_id, owner)
        if started is not None:
            return started
    if claimable(run_pk) is not None:  # its company is at its maximum
        defer(run_pk)
        return None
    return give_turn(owner)  # another worker's task started it meanwhile: this task is a turn to give


# How many times a task whose run was started by another reads the turns again (each claim it loses is a run
# another worker started, or a company another worker is claiming from, so this ends early unless the workers
# keep racing for the same companies).
TURN_ROUNDS = 10


def give_turn(owner: str) -> int | None:
    """A task whose own run started or ended meanwhile: start the run whose turn it is; None when none waits.

    Each task stands for one queued run, so a task that ends without starting
    anything while runs still wait leaves one of them without a task (until
    queueing.requeue_stale, minutes later). Companies another worker is
    claiming from are passed over, but the last turn read is waited for; a
    round that starts nothing reads the turns again; should that go on, the
    run whose turn it is is handed to the queue again rather than dropped.
    """
    for _ in range(TURN_ROUNDS):
        turns = list(fairness.turns())
        if not turns:
            return None
        for n, (company_id, _) in enumerate(turns):
            started = claim_turn(company_id, owner, wait=n == len(turns) - 1)
            if started is not None:
                return started
    if waiting := list(fairness.turns()):
        hand_over(waiting[0][1])
    return None


# A deferred run's task comes back after this many seconds, a quarter of a second later each time, up to the most.
DEFER_SECONDS, DEFER_MAX_SECONDS = 1.0, 5.0


def defer(run_pk: int) -> None:
    """Put back a run whose company is at its maximum of concurrent runs, saying so on its page.

    It keeps its place: the company's runs start oldest first whichever task
    comes (fairness.turns), and when one of them ends the next is handed over
    at once (hand_over_next); the task given back here is the fallback.
    """
    run = FlowRun.objects.filter(pk=run_pk).select_related("company").only(
        "status", "deferrals", "company__name", "company__max_concurrent_runs"
    ).first()
    if run is None:
        return
    if run.status == RunStatus.QUEUED:
        text = run.company.at_limit_text
        fairness.queued(run.company_id).exclude(activity=text).update(activity=text)
    FlowRun.objects.filter(pk=run_pk).update(deferrals=F("deferrals") + 1)
    delay = min(DEFER_SECONDS + run.deferrals / 4, DEFER_MAX_SECONDS)
    hand_over(run_pk, timezone.now() + timedelta(seconds=delay))


def hand_over_next(company_id: int) -> None:
    """A run of the company ended or gave its worker back: its oldest queued run goes to the queue at once if held back.

    So a company at its maximum has its next run started in order, as soon as
    a slot is free, whatever became of the tasks of its runs held back by the
    maximum (fairness.held_back; a duplicate task is harmless: runs are claimed
    once, and a task whose run has started takes another company's turn). A
    company under its maximum has its queued runs' tasks in the queue: handing
    one over again would only add a task that finds nothing to start, at every
    run's end of a company with a backlog.
    """
    run_pk = fairness.held_back(company_id)
    if run_pk is not None:
        hand_over(run_pk)


def company_changed(company_id: int) -> None:
    """The company's settings were saved: its held-back runs say the new limit, and those it lets start go now.

    A task that stood for a run held back by the maximum may have ended
    (give_turn), and hand_over_next hands over one run at a run's end: after
    the maximum is raised, the company's extra slots would stay empty until
    its runs end or the stale-task sweep minutes later. At most as many tasks
    as free slots; one whose run another task starts first takes the next turn.
    """
    company = Company.objects.only("name", "max_concurrent_runs").get(pk=company_id)
    free = company.concurrent_run_limit - fairness.running(company_id)
    text = company.at_limit_text if free <= 0 else ""
    fairness.queued(company_id).exclude(activity=text).update(activity=text)
    for run_pk in fairness.queued(company_id).values_list("pk", flat=True)[:max(free, 0)]:
        hand_over(run_pk)


@db_task()
def execute_run(run_pk: int) -> None:
    """The huey task that executes one flow run on a worker.

    It lives beside the code it runs, below flows.queueing (which hands runs to it)
    and flows.tasks (the periodic jobs, which import flows.queueing), so imports
    run one way: tasks -> queueing -> execution. flows.tasks imports this module,
    so huey's autodiscovery registers the task.
    """
    execute(run_pk)


def hand_over(run_pk: int, at: datetime | None = None) -> None:
    """Give the run to the queue (at `at`, for a parked run); the row says what to do with it."""
    FlowRun.objects.filter(pk=run_pk).update(enqueued_at=timezone.now())
    if at is not None and at > timezone.now():
        execute_run.schedule(args=(run_pk,), eta=at)
    else:
        execute_run(run_pk)


def execute(run_pk: int) -> FlowRun | None:
    """Run (or resume) the flow run `run_pk` if it is queued or its park is over; None when there is nothing to do."""
    owner = worker_name()
    claimed = claim_fairly(run_pk, owner)
    if claimed != run_pk:
        early = FlowRun.objects.filter(pk=run_pk, status=RunStatus.WAITING, parked_until__gt=timezone.now())
        early = early.values_list("parked_until", flat=True).first()
        if early is not None:  # the queue's clock ran ahead of the database's: come back when the park is over
            hand_over(run_pk, early)
        if claimed is None:
            logger.info("Flow run %s is not queued any more, or waits for its company's turn.", run_pk)
            return None
        logger.info("Flow run %s gave its turn to run %s (its company's turn, or an older run).", run_pk, claimed)
        run_on(claimed, owner)
        return None  # the run this task was sent for has not run
    return run_on(run_pk, owner)


def run_on(run_pk: int, owner: str) -> FlowRun | None:
    """Execute the run this worker claimed; None when its result was dropped (the lease was lost)."""
    try:
        return _run_on(run_pk, owner)
    finally:
        try:
            hand_over_next_of(run_pk)
        except Exception:  # the queue unreachable: requeue_stale hands it over later
            logger.warning("Could not hand the next run of run %s's company to the queue.", run_pk, exc_info=True)


def hand_over_next_of(run_pk: int) -> None:
    """The run gave its worker back (ended, parked, lost): its company's next run goes to the queue."""
    company_id = FlowRun.objects.filter(pk=run_pk).values_list("company_id", flat=True).first()
    if company_id is not None:
        hand_over_next(company_id)


def _run_on(run_pk: int, owner: str) -> FlowRun | None:
    run = FlowRun.objects.select_related("flow", "company").get(pk=run_pk)
    heartbeat = Heartbeat(run_pk, owner)
    heartbeat.start()
    execution = Execution(run, owner, heartbeat)
    try:
        outcome = execution.run()
    except LeaseLost:
        logger.warning("Flow run %s was taken from this worker (lease expired); its result is dropped.", run_pk)
        return None
    except Exception as exc:
        logger.exception("Flow run %s failed with an unexpected error.", run_pk)
        named = named_failure(exc)
        reason = f"The run: {named}" if named else "An unexpected error stopped the run; it has been logged."
        outcome = Outcome(RunStatus.FAILED, reason)
        execution.fail_running_shapes = True
    finally:
        heartbeat.stop()
    if outcome.parked is not None and run.parks >= settings.FLOW_RUN_MAX_PARKS:
        # An API that keeps refusing (a 429 after every wait) would keep the run waiting without end.
        execution.close_open(ShapeStatus.FAILED)
        outcome = Outcome(RunStatus.FAILED, (
            f"The run waited {run.parks} times (FLOW_RUN_MAX_PARKS) and would have to wait again, for "
            f"{outcome.parked.reason}. Retry the run once the API accepts requests again; it resumes from page "
            f"{execution.done_page + 1}."
        ), outcome.warnings, stopped_at_park=True)
    if not execution.conclude(outcome):
        logger.warning("Flow run %s was taken from this worker (lease expired); its result is dropped.", run_pk)
        return None
    if outcome.parked is not None:
        transaction.on_commit(lambda: hand_over(run_pk, outcome.parked.until), robust=True)
    run.refresh_from_db()
    return run


def stages_for(shapes: list[Shape], ctx: Context) -> list[Stage]:
    """One stage per shape; filters and maps learn the instances around them (for their dates)."""
    connections = [(i, s.instance) for i, s in enumerate(shapes) if s.kind == ShapeKind.CONNECTION and s.instance_id]

    def before(position: int):
        return next((inst for i, inst in reversed(connections) if i < position), None)

    def after(position: int):
        return next((inst for i, inst in connections if i > position), None)

    stages: list[Stage] = []
    for position, shape in enumerate(shapes):
        if shape.kind == ShapeKind.FILTER:
            stages.append(filter_shape.Filter(shape, position, ctx, source=before(position)))
        elif shape.kind == ShapeKind.MAP:
            stages.append(map_shape.Map(shape, position, ctx, source=before(position), target=after(position)))
        else:
            stages.append(connection_shape.Connection(shape, position, ctx))
    return stages


def tested_position(run: FlowRun, shapes: list[Shape]) -> int | str | None:
    """A test step's shape (its index in `shapes`), None for a run that is no test, or why the test cannot run."""
    if not run.is_test:
        return None
    index = next((i for i, shape in enumerate(shapes) if shape.pk == run.test_shape_id), None)
    if index is None:
        return "The shape this test step was for has been removed from the flow."
    return index


def validate(run: FlowRun, stages: list[Stage]) -> list[str]:
    """Why the flow (up to a test step's shape) cannot run, found before any request is made; each problem names its shape."""
    if not any(stage.shape.kind == ShapeKind.CONNECTION for stage in stages):
        if run.is_test:
            return [f"{stages[-1].label}: no connection shape comes before it, so no data reaches it. "
                    "Add a connection shape that receives records above this shape."]
        return ["The flow has no connection shapes."]
    problems = []
    for stage in stages:
        if stage.shape.kind not in ShapeKind.values:
            problems.append(f'{stage.label}: unknown kind of shape "{stage.shape.kind}".')
            continue
        problems += [f"{stage.label}: {problem}" for problem in stage.problems()]
    return problems


def last_success(run: FlowRun):
    """The reference time of the flow's last successful run before this one (None if none)."""
    return (
        FlowRun.objects.real().filter(flow_id=run.flow_id, status=RunStatus.SUCCESS, reference_time__lte=run.reference_time)
        .exclude(pk=run.pk).order_by("-reference_time").values_list("reference_time", flat=True).first()
    )


def context_for(run: FlowRun, shapes: list[Shape], check) -> Context:
    """The run's placeholders and one client per instance used.

    The secrets of them all, tokens they obtain during the run included, redact every text (Context.variants).
    """
    success = last_success(run)
    bounds = [
        filter_shape.earliest(shape.config, run.reference_time, success)
        for shape in shapes if shape.kind == ShapeKind.FILTER
    ]
    bounds = [b for b in bounds if b is not None]
    ctx = Context(run=run, reference_time=run.reference_time, last_success=success,
                  since=min(bounds) if bounds else None, check=check, test=run.is_test)
    for shape in shapes:
        if shape.instance_id and shape.instance_id not in ctx.clients:
            ctx.clients[shape.instance_id] = InstanceClient.for_instance(shape.instance)
    return ctx


@dataclass(frozen=True)
class Earlier:
    """A send an earlier stretch of the run made: its counts [items, accepted, answers, requests], or in doubt."""

    items: int = 0
    accepted: int = 0
    answers: int = 0
    requests: int = 0
    in_doubt: bool = False
    answered: list | None = None  # what the API answered then, when it was kept for the shapes after the send


# The fields of a shape's row a page changes (written for every shape at once, see Execution.commit):
# the counters always, the JSON fields only when one of them changed (they may be kilobytes).
COUNTER_FIELDS = [
    "status", "finished_at", "items_in", "items_out", "pages", "requests", "retries", "rate_limit_wait_ms",
    "pool_wait_ms",
]
JSON_FIELDS = ["warnings", "errors", "failed_exchanges", "payload_sample"]
# The counters a page moves, written as they go (Execution.doing) and kept per page in the checkpoint.
PAGE_COUNTS = ["items_in", "items_out", "pages", "requests", "retries", "rate_limit_wait_ms", "pool_wait_ms"]


def counts_of(record: FlowRunShape) -> list[int]:
    return [getattr(record, name) for name in PAGE_COUNTS]


def valid_counts(counts: object) -> bool:
    return (isinstance(counts, list) and len(counts) == len(PAGE_COUNTS)
            and all(isinstance(count, int) and count >= 0 for count in counts))
SHAPE_FIELDS = COUNTER_FIELDS + JSON_FIELDS


def json_state(record: FlowRunShape) -> tuple:
    """What tells whether a row's JSON fields changed since written: the lists only grow, the sample is replaced.

    The sample itself is kept in the state (compared by identity), so its id cannot be reused meanwhile.
    """
    return (len(record.warnings), len(record.errors), len(record.failed_exchanges), record.payload_sample)


COUNTERS_REFUSED = "the shapes' counters"
UNSET = object()


def update_rows(records: list[FlowRunShape], names: list[str]) -> None:
    """UPDATE `names` of each of `records`: one statement sent for all rows (executemany).

    Django's bulk_update builds a CASE per field and row, which cost more CPU
    per page than the rest of the bookkeeping together; the values are prepared
    by the fields themselves, as a save would.
    """
    fields = [FlowRunShape._meta.get_field(name) for name in names]
    quote = connection.ops.quote_name
    sql = (
        f"UPDATE {quote(FlowRunShape._meta.db_table)} SET "
        + ", ".join(f"{quote(field.column)} = %s" for field in fields)
        + f" WHERE {quote(FlowRunShape._meta.pk.column)} = %s"
    )
    rows = [
        [field.get_db_prep_save(getattr(record, field.attname), connection) for field in fields] + [record.pk]
        for record in records
    ]
    with connection.cursor() as cursor:
        if len(rows) == 1:  # executemany's pipeline costs more than the one row it sends
            cursor.execute(sql, rows[0])
        else:
            cursor.executemany(sql, rows)


def json_changed(stage: Stage) -> bool:
    written = stage.json_written
    now = json_state(stage.record)
    return written is None or written[:3] != now[:3] or written[3] is not now[3]


class Execution:
    """Streams pages through the shapes, and keeps the run's checkpoint.

    The flow is cut into segments at every receive shape: the receive shape
    reads its pages one by one and each page goes through the shapes after it
    (filter, map, send, ...) before the next page is requested, so each shape
    holds at most one page. A receive shape after other shapes starts a new
    segment once the earlier segment is done: what reaches it is counted as its
    items in and goes no further (it fetches its own records, as it always
    did). Shapes before the first receive shape get no items.

    Once a page has gone all the way down, one commit stores the shapes'
    counters, the checkpoint (flows.durability) and the lease. A run that
    resumes (a lost worker's next attempt, the end of a park, a retry from the
    checkpoint) skips the segments done, reads the page in progress again and
    goes on from there. The Execution is the shapes' `ctx.progress`.
    """

    def __init__(self, run: FlowRun, owner: str, heartbeat: Heartbeat | None = None):
        self.run_obj, self.owner, self.heartbeat = run, owner, heartbeat
        company = run.company
        self.deadline = (run.stretch_started_at or run.started_at or timezone.now()) + company.run_duration_limit
        self.overdue_reason = overdue_reason(company)
        self.stages: list[Stage] = []
        self.fail_running_shapes = False
        self.rewind = False
        self.activity, self.activity_sent, self.activity_written = "", "", 0.0
        if heartbeat is not None:
            heartbeat.progress = self
        checkpoint = run.checkpoint if isinstance(run.checkpoint, dict) else {}
        self.resume_from = checkpoint  # what an earlier stretch left (empty: from the start)
        self.segment = int(checkpoint.get("segment", 0))
        self.page = int(checkpoint.get("page", 0))  # pages of the segment's source done; +1 while one is in progress
        self.done_page = self.page
        self.source = checkpoint.get("source")
        self.sent: dict[str, list] = {k: list(v) for k, v in (checkpoint.get("sent") or {}).items()}
        # Answers to the page's sends that shapes after them take in (FlowRunAnswer): those acknowledged since
        # the last commit, to be sealed and written with the next one mid-page; those an earlier stretch kept,
        # read when the resumed page first asks (replay); whether rows of this run may exist (kept_answers).
        self.answers_needed: set[int] = set()
        self.unwritten_answers: list[tuple[int, int, list]] = []
        self.replay: dict[tuple[int, int], str] | None = None
        self.kept_answers = bool(self.sent)
        self.in_flight_mark: dict | None = checkpoint.get("in_flight")
        self.stage_states: dict = checkpoint.get("stages") or {}
        # Each shape's counters when the last page was done: its row shows them as they move within a
        # page (see doing), so a resume counts from these, not from the row.
        self.page_counts: dict = checkpoint.get("counts") or {}
        self.counts_kept = "counts" in checkpoint  # checkpoints written before the counts were kept lack them
        self.in_doubt = list(run.in_doubt or [])
        self.attempts = list(run.attempts or [])
        self.origin = run.idempotency_origin
        self.recorder = steps.Recorder(run)
        self.seldom_written: dict = {}  # what the last commit wrote of the fields that change seldom

    # --- between requests -------------------------------------------------------

    def check(self) -> None:
        """Between requests: honour a stop request, a lost lease and the duration limit (no query)."""
        if timezone.now() >= self.deadline:
            raise DurationExceeded(self.overdue_reason)
        if self.heartbeat is not None and self.heartbeat.look.is_set():
            self.heartbeat.look.clear()
            kept = keep(self.run_obj.pk, self.owner, lease_expires_at=timezone.now() + lease_duration())
            if kept == STOP:
                raise StopRequested()
            if kept == LOST:
                raise LeaseLost()

    # --- progress, as the shapes see it --------------------------------------------

    def doing(self, text: str, *, now_or_never: bool = False) -> None:
        """Say what the run is doing now, for the run page, with the shapes' counters as they stand.

        Written at most once a second: one UPDATE of the run, one of its open
        shapes' counters. `now_or_never`: a long wait is about to start, so it
        is written at once. What is not written yet the lease renewal carries
        (Heartbeat.beat).
        """
        self.activity = text[:300]
        moment = time.monotonic()
        if not now_or_never and moment - self.activity_written < ACTIVITY_EVERY_SECONDS:
            return
        self.activity_written = moment
        if keep(self.run_obj.pk, self.owner, activity=self.activity) != LOST:
            self.activity_sent = self.activity
            live = [stage.record for stage in self.stages if stage.record is not None and not stage.finished]
            if live:
                update_rows(live, PAGE_COUNTS)

    def source_state(self, position: int) -> dict | None:
        """Where the receive shape at `position` resumes its pages (None: from the first)."""
        if self.resume_from and self.resume_from.get("segment") == self.segment and isinstance(self.source, dict):
            return self.source
        return None

    def resuming_page(self) -> bool:
        return bool(self.resume_from) and self.resume_from.get("segment") == self.segment and (
            self.page == int(self.resume_from.get("page", 0)) + 1
        )

    def earlier_send(self, position: int, index: int) -> Earlier | None:
        """The send number `index` (of this page) of the shape at `position`, if an earlier stretch made it."""
        if not self.resuming_page():
            return None
        done = (self.resume_from.get("sent") or {}).get(str(position)) or []
        if index < len(done):
            items, accepted, answers, requests = (list(done[index]) + [0, 0, 0, 0])[:4]
            return Earlier(items, accepted, answers, requests, answered=self.replayed(position, index))
        mark = self.resume_from.get("in_flight") or {}
        if mark.get("position") == position and mark.get("index") == index:
            self.acknowledged(position, [0, 0, 0, 0], durable=True)
            return Earlier(in_doubt=True)
        return None

    def replayed(self, position: int, index: int) -> list | None:
        """What the API answered to a send an earlier stretch made on this page, if it was kept (one read a page)."""
        if position not in self.answers_needed:
            return None
        if self.replay is None:
            rows = FlowRunAnswer.objects.filter(run_id=self.run_obj.pk, segment=self.segment, page=self.page)
            self.replay = {(row.position, row.index): row.body for row in rows.only("position", "index", "body")}
        body = self.replay.get((position, index))
        if body is None:
            return None
        return durability.open_answers(body, self.origin, self.segment, self.page, position, index)

    def acknowledged(self, position: int, counts: list[int], *, durable: bool, answers: list | None = None) -> None:
        """A send is done (`counts`: items, accepted, answers, requests); `answers`: what the API answered,
        kept for a resume when a shape after the send takes them in."""
        done = self.sent.setdefault(str(position), [])
        done.append(counts)
        if answers is not None and position in self.answers_needed:
            self.unwritten_answers.append((position, len(done) - 1, answers))
        if durable:
            self.in_flight_mark = None
            self.commit(page_done=False)

    def in_flight(self, position: int, index: int, what: str, ids: list[str] | None) -> None:
        """A send of an API without idempotency keys is about to go: mark it, so a resume can name it."""
        self.in_flight_mark = {"position": position, "index": index, "what": what,
                               "ids": (ids or [])[: durability.MAX_IDS_IN_DOUBT]}
        self.commit(page_done=False)

    def note_in_doubt(self, label: str, what: str, ids: list[str] | None) -> None:
        self.in_doubt.append({"shape": label, "what": what, "ids": (ids or [])[: durability.MAX_IDS_IN_DOUBT],
                              "at": timezone.now().isoformat()})

    def keep_records(self, stage: Stage, direction: str, items: list) -> None:
        """A page (or batch) of records `stage` took in or passed on, for the run page (page in progress)."""
        self.recorder.keep_records(stage.open(), self.done_page + 1, direction, items, stage.ctx.variants)

    def keep_request(self, stage: Stage, exchange, attempt: int) -> None:
        """A request `stage` made and its answer, for the run page (page in progress)."""
        self.recorder.keep_request(stage.open(), self.done_page + 1, exchange, attempt, stage.ctx.variants)

    # --- commits -----------------------------------------------------------------

    def checkpoint_now(self, *, page_done: bool) -> dict:
        done = {"segment": self.segment, "page": self.done_page, "source": self.source, "stages": self.stage_states,
                "counts": self.page_counts}
        if page_done:
            return done
        return {**done, "sent": self.sent, "in_flight": self.in_flight_mark}

    def commit(self, *, page_done: bool = True, **fields) -> None:
        """One commit: the checkpoint, the lease and (after a page) every shape's counters; LeaseLost when not ours.

        Mid-page (an acknowledgement or in-flight mark of a send without
        idempotency keys, a park) only the run's row is written: the
        checkpoint's counts stay those of the last page done, which is where a
        resume counts from (the rows' counters move meanwhile, see doing).
        """
        if page_done:
            self.stage_states = {str(stage.position): stage.state() for stage in self.stages
                                 if stage.record is not None and not stage.finished}
            self.page_counts = {str(stage.position): counts_of(stage.record) for stage in self.stages
                                if stage.record is not None and not stage.finished}
        now = timezone.now()
        values = dict(
            checkpoint=self.checkpoint_now(page_done=page_done), lease_expires_at=now + lease_duration(),
            activity=self.activity, **self.recorder.fields(page_done=page_done), **fields,
        )
        # These change seldom; encoding them on every page was a good part of the commit's CPU.
        seldom = {"in_doubt": self.in_doubt, "attempts": self.attempts, "shapes_fingerprint": self.fingerprint}
        values |= {name: value for name, value in seldom.items() if self.seldom_written.get(name, UNSET) != value}
        if not page_done:
            if self.unwritten_answers:
                with transaction.atomic():
                    kept = self.keep_or_lose(values)
                    self.write_answers()
            else:
                kept = self.keep_or_lose(values)
        else:
            self.unwritten_answers = []  # the page is done: its answers have gone on
            try:
                # Usually one transaction of three statements sent at once, with no savepoint.
                with transaction.atomic(), connection.cursor() as cursor:
                    if self.kept_answers:
                        self.drop_answers()
                    with pipelined():
                        row = send_keep(cursor, self.run_obj.pk, self.owner, values)
                        dirty = self.write_shapes(one_by_one=False)
                        self.recorder.write(alone=False)
                    kept = kept_by(cursor, values, row)
                    if kept == LOST:
                        raise LeaseLost()
            except DataError:
                # Refused as a whole (and rolled back): again with each part on its own, so that the shape
                # whose data the database refuses is named, and the page's records it refuses are left out.
                with transaction.atomic():
                    kept = self.keep_or_lose(values)
                    if self.kept_answers:
                        self.drop_answers()
                    dirty = self.write_shapes(one_by_one=True)
                    self.recorder.write(alone=True)
            self.kept_answers, self.replay = False, None
            self.shapes_written(dirty)
            self.recorder.written_now()
        self.seldom_written = copy.deepcopy({name: values[name] for name in seldom if name in values}) | {
            name: self.seldom_written[name] for name in seldom if name not in values}
        self.activity_sent = self.activity
        if kept == STOP:
            raise StopRequested()

    def write_answers(self) -> None:
        """Seal and insert the answers acknowledged since the last commit (inside that commit's transaction)."""
        if not self.unwritten_answers:
            return
        FlowRunAnswer.objects.bulk_create([
            FlowRunAnswer(run_id=self.run_obj.pk, segment=self.segment, page=self.page, position=position, index=index,
                          body=durability.seal_answers(answers, self.origin, self.segment, self.page, position, index))
            for position, index, answers in self.unwritten_answers
        ])
        self.unwritten_answers, self.kept_answers = [], True

    def drop_answers(self) -> None:
        FlowRunAnswer.objects.filter(run_id=self.run_obj.pk).delete()

    def keep_or_lose(self, values: dict) -> str:
        kept = keep(self.run_obj.pk, self.owner, **values)
        if kept == LOST:
            raise LeaseLost()
        return kept

    def write_shapes(self, *, one_by_one: bool) -> list[Stage]:
        """One UPDATE for every shape whose row changed; the shapes written (see shapes_written).

        `one_by_one`: should the database refuse it (DataError), each row is
        tried alone to find the shape whose data it refused, and the error is
        tagged with it.
        """
        dirty = [stage for stage in self.stages if stage.dirty and stage.record is not None]
        if not dirty:
            return dirty
        changed = [stage for stage in dirty if json_changed(stage)]
        fields = SHAPE_FIELDS if changed else COUNTER_FIELDS
        if not one_by_one:
            update_rows([stage.record for stage in dirty], fields)
            return dirty
        try:
            with transaction.atomic():
                update_rows([stage.record for stage in dirty], fields)
        except DataError as exc:
            for stage in dirty:
                try:
                    with transaction.atomic():
                        stage.record.save(update_fields=SHAPE_FIELDS)
                except DataError as refused:
                    refused.stage = stage
                    raise refused from exc
            raise
        return dirty

    def shapes_written(self, dirty: list[Stage]) -> None:
        """The commit that wrote `dirty`'s rows went through."""
        for stage in dirty:
            stage.json_written = json_state(stage.record)
        for stage in self.stages:
            stage.dirty = False

    def conclude(self, outcome: Outcome) -> bool:
        """Write the outcome with the shapes' last counters in one transaction; False when the run is not ours.

        Should the database refuse a shape's data (DataError), the payload
        samples are dropped and it is written again; failing that, the outcome
        is written without the shapes' counters (they are marked failed), so a
        run never stays running because of what it read.
        """
        for attempt in range(3):
            try:
                concluded = self._conclude(outcome)
            except DataError:
                logger.warning("Flow run %s: the database refused its shapes' data.", self.run_obj.pk, exc_info=True)
                for stage in self.stages:
                    if stage.record is not None and stage.record.payload_sample:
                        stage.record.payload_sample = {}
                self.recorder.drop()
                if attempt == 1:
                    self.fail_running_shapes = True
                    outcome.status = RunStatus.FAILED
                    outcome.reason = outcome.reason or f"The run: {named_failure(DataError(COUNTERS_REFUSED))}"
                continue
            if concluded and outcome.parked is None:
                flow_metrics.observe_end(self.run_obj, outcome.status, self.stages, timezone.now())
            return concluded
        return False

    def _conclude(self, outcome: Outcome) -> bool:
        now = timezone.now()
        if outcome.parked is not None:
            self.recorder.drop()  # the page in progress is done again when the run resumes
        with transaction.atomic():
            if outcome.parked is not None:
                parked = outcome.parked
                updated = FlowRun.objects.filter(
                    pk=self.run_obj.pk, status=RunStatus.RUNNING, lease_owner=self.owner, stop_requested=False
                ).update(
                    status=RunStatus.WAITING, parked_until=parked.until, park_reason=parked.reason[:300], activity="",
                    parks=F("parks") + 1,
                    lease_owner="", lease_expires_at=None,
                    checkpoint=self.checkpoint_now(page_done=False), in_doubt=self.in_doubt, attempts=self.attempts,
                    shapes_fingerprint=self.fingerprint,
                )
                if updated:
                    self.write_answers()
                    return True
                # A stop request came meanwhile: the run stops instead of parking.
                outcome.parked = None
                outcome.status, outcome.reason = RunStatus.STOPPED, "Stopped by a user."
                self.close_open(ShapeStatus.STOPPED)
            if outcome.status != RunStatus.FAILED or not self.fail_running_shapes:
                self.shapes_written(self.write_shapes(one_by_one=True))
                self.recorder.write()
            else:
                self.recorder.drop()
            # The checkpoint a retry goes on from: the segment's start after a rewind, where a park would have
            # kept it when the run failed instead of parking, otherwise the last one committed.
            if self.rewind:
                checkpoint = {"checkpoint": {"segment": self.segment, "page": 0}}
            elif outcome.stopped_at_park:
                checkpoint = {"checkpoint": self.checkpoint_now(page_done=False)}
            else:
                checkpoint = {}
            updated = FlowRun.objects.filter(pk=self.run_obj.pk, status=RunStatus.RUNNING, lease_owner=self.owner).update(
                status=outcome.status, failure_reason=outcome.reason, warnings=outcome.warnings, finished_at=now,
                lease_expires_at=None, in_doubt=self.in_doubt, attempts=self.attempts, activity="", **checkpoint,
                **self.recorder.fields(page_done=True),
            )
            if not updated:
                transaction.set_rollback(True)
                return False
            if self.kept_answers and (self.rewind or outcome.status in (RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS)):
                self.drop_answers()  # a failed or stopped run keeps them for a retry from its checkpoint
            elif outcome.stopped_at_park:
                self.write_answers()
            signals.announce_concluded(self.run_obj.pk, outcome.status)
            if self.fail_running_shapes:
                FlowRunShape.objects.filter(run_id=self.run_obj.pk, status=ShapeStatus.RUNNING).update(
                    status=ShapeStatus.FAILED, finished_at=now
                )
        return True

    # --- the run ------------------------------------------------------------------

    def run(self) -> Outcome:
        shapes = list(
            self.run_obj.flow.shapes.select_related(
                "instance__connector", "instance__auth_method", "instance__connection_pool", "endpoint"
            )
        )
        if not shapes:
            return Outcome(RunStatus.FAILED, "The flow has no connection shapes.")
        self.fingerprint = durability.fingerprint(shapes)
        if self.resume_from and self.run_obj.shapes_fingerprint and self.run_obj.shapes_fingerprint != self.fingerprint:
            return Outcome(RunStatus.FAILED, (
                f"The flow was changed after this run started (shapes were edited, added, removed or moved), so it "
                f"cannot resume from page {self.run_obj.resumed_from_page}: its checkpoint belongs to the shapes it "
                "started with. Run the flow again from the start."
            ))
        tested = tested_position(self.run_obj, shapes)
        if isinstance(tested, str):
            return Outcome(RunStatus.FAILED, tested)
        used = shapes if tested is None else shapes[: tested + 1]
        ctx = context_for(self.run_obj, used, self.check)
        ctx.progress = self
        # Maps and filters learn the instances around them from all the shapes; a test step runs those up to its own.
        stages = stages_for(shapes, ctx)[: len(used)]
        problems = validate(self.run_obj, stages)
        if problems:
            return Outcome(RunStatus.FAILED, " ".join(problems))
        self.stages = stages
        self.take_up(stages)
        try:
            self.check()
            if self.attempts and not self.attempts[-1].get("resumed_at"):
                self.attempts[-1]["resumed_at"] = timezone.now().isoformat()
            self.commit(page_done=False)
            for index, (source, rest) in enumerate(self.segments(stages)):
                if index < self.segment:
                    continue
                if index > self.segment:
                    self.segment, self.page, self.done_page, self.source = index, 0, 0, None
                    self.sent, self.in_flight_mark = {}, None
                self.run_segment(source, rest)
        except durability.Parked as parked:
            self.keep_park_states()
            return Outcome(RunStatus.WAITING, "", self.warnings(), parked=parked)
        except StopRequested:
            self.close_open(ShapeStatus.STOPPED)
            return Outcome(RunStatus.STOPPED, "Stopped by a user.", self.warnings())
        except DurationExceeded as exc:
            self.close_open(ShapeStatus.STOPPED)
            return Outcome(RunStatus.FAILED, str(exc), self.warnings())
        except (ShapeFailed, *NAMED_FAILURES) as exc:
            logger.info("Flow run %s failed: %r", self.run_obj.pk, exc, exc_info=not isinstance(exc, ShapeFailed))
            stage = getattr(exc, "stage", None)
            if stage is not None:
                if isinstance(exc, DataError) and stage.record is not None:
                    stage.record.payload_sample = {}  # what the database refused is not stored again
                stage.close(ShapeStatus.FAILED)
            self.close_open(ShapeStatus.STOPPED)
            label = stage.label if stage is not None else "The run"
            message = str(exc) if isinstance(exc, ShapeFailed) else named_failure(exc)
            return Outcome(RunStatus.FAILED, f"{label}: {message}", self.warnings())
        finally:
            self.mark_instances_used()
        partial = any(stage.record is not None and (stage.record.errors or stage.partial) for stage in stages)
        if self.in_doubt:
            partial = True
        return Outcome(RunStatus.PARTIAL_SUCCESS if partial else RunStatus.SUCCESS, "", self.warnings())

    def keep_park_states(self) -> None:
        """Keep in the checkpoint what each shape keeps of the request a park interrupted (Stage.park_state).

        The shapes' states in the checkpoint are those of the last page done;
        without this, each resume would start the shape's retries again (an
        API answering 5xx with a long Retry-After would park the run without
        end), and the time parked would not count as waited.
        """
        for stage in self.stages:
            if kept := stage.park_state():
                key = str(stage.position)
                self.stage_states = {**self.stage_states, key: {**self.stage_states.get(key, {}), **kept}}

    def take_up(self, stages: list[Stage]) -> None:
        """On a resume, give each shape its row of this run and the counts the checkpoint kept."""
        if not self.resume_from:
            return
        records = {record.position: record for record in FlowRunShape.objects.filter(run=self.run_obj)}
        for stage in stages:
            record = records.get(stage.position)
            if record is not None:
                key = str(stage.position)
                # A shape opened after the last page done had counted nothing then.
                counts = self.page_counts.get(key, [0] * len(PAGE_COUNTS))
                if record.status == ShapeStatus.RUNNING and self.counts_kept and valid_counts(counts):
                    for name, value in zip(PAGE_COUNTS, counts, strict=True):
                        setattr(record, name, value)
                stage.resume(record, self.stage_states.get(key) or {})
                if record.status == ShapeStatus.RUNNING:
                    self.page_counts = {**self.page_counts, key: counts_of(record)}

    @staticmethod
    def segments(stages: list[Stage]) -> list[tuple[Stage | None, list[Stage]]]:
        segments: list[tuple[Stage | None, list[Stage]]] = [(None, [])]
        for stage in stages:
            if isinstance(stage, connection_shape.Connection) and stage.receives:
                segments.append((stage, []))
            else:
                segments[-1][1].append(stage)
        return [segment for segment in segments if segment[0] is not None or segment[1]]

    def run_segment(self, source: Stage | None, rest: list[Stage]) -> None:
        self.following = self.after([stage for stage in (source, *rest) if stage is not None])
        self.answers_needed = {stage.position for stage in rest[:-1]}  # what they pass on, another shape takes in
        # A checkpoint past the source's last page (no next page state): its pages are done.
        pages_done = self.done_page > 0 and self.source is None
        if source is not None and not source.finished and not pages_done:
            source.open()
            self.saved(source)
            for page in self.guarded(source, source.pages()):
                self.page = self.done_page + 1
                self.saved(source)
                self.push(rest, 0, page)
                self.done_page, self.source = self.page, source.next_source
                self.sent, self.in_flight_mark = {}, None
                self.commit()
                if self.run_obj.is_test:
                    if source.next_source is not None:
                        source.warn("Test step: only the first page was read; more pages may be available.")
                    break
        if source is not None and not source.finished:
            self.finish(source)
        for stage in rest:
            if not stage.finished:
                self.finish(stage)
        self.commit()

    def push(self, rest: list[Stage], index: int, page: list) -> None:
        """Hand `page` to rest[index] and every page it makes on down the line."""
        if index >= len(rest):
            if self.following is not None:
                following = self.following.open()
                following.items_in += len(page)
                self.following.dirty = True
            return
        stage = rest[index]
        for out in self.guarded(stage, stage.process(page)):
            self.saved(stage)
            self.push(rest, index + 1, out)
        self.saved(stage)

    @staticmethod
    def saved(stage: Stage) -> None:
        """stage.save(), a failure to store (or to write the payload sample) tagged with the stage."""
        try:
            stage.save()
        except NAMED_FAILURES as exc:
            exc.stage = stage
            raise

    def after(self, rest: list[Stage]) -> Stage | None:
        """The shape after the segment's last one (a receive shape starting the next segment)."""
        if not rest:
            return None
        position = rest[-1].position + 1
        return self.stages[position] if position < len(self.stages) else None

    @staticmethod
    def guarded(stage: Stage, pages):
        """`pages` of `stage`, a ShapeFailed (or a failure with a name) it raises tagged with the stage."""
        try:
            yield from pages
        except (ShapeFailed, *NAMED_FAILURES) as exc:
            if not hasattr(exc, "stage"):
                exc.stage = stage
            raise

    def finish(self, stage: Stage) -> None:
        try:
            stage.finish()
            stage.close(ShapeStatus.SUCCESS)
        except (ShapeFailed, *NAMED_FAILURES) as exc:
            if not hasattr(exc, "stage"):
                exc.stage = stage
            if isinstance(exc, ShapeFailed):
                # A shape that fails once its pages are done (no item accepted at all) sent nothing a retry
                # could repeat: a retry from the checkpoint starts the segment again.
                self.rewind = True
            raise

    def close_open(self, status: str) -> None:
        for stage in self.stages:
            if stage.record is not None and not stage.finished:
                stage.close(status)

    def warnings(self) -> list[str]:
        return [
            f"{stage.label}: {warning}"
            for stage in self.stages
            if stage.record is not None
            for warning in stage.record.warnings
        ]

    def mark_instances_used(self) -> None:
        """One UPDATE per connection shape that sent requests."""
        now = timezone.now()
        for stage in self.stages:
            if isinstance(stage, connection_shape.Connection) and stage.sent_requests:
                Instance.objects.filter(pk=stage.shape.instance_id).update(last_used_by_run_at=now)
