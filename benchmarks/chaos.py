"""Chaos benchmark: flow runs on workers that are killed with SIGKILL, checked against what the Sandbox stored.

What it measures
----------------
Each flow receives ``--count`` Sandbox orders (List orders, pages of ``--per-page``
100, each flow pinned to its own ``as_of`` so every order of every flow has its
own reference), filters them (every order passes, each date parsed), maps them
(reference, customer, total, a converted date) and sends them as batches (one
POST per page) to the Sandbox's Create order endpoint, which declares the
``Idempotency-Key`` header as the Sandbox listing 1.5.0 does.

Phases (all by default, or the ones named with ``--variant``):

* ``baseline``: ``--flows`` 20 runs queued at once on ``--workers`` 3 worker
  processes (``manage.py run_huey``) over Redis and PostgreSQL, no kills;
* ``chaos``: the same 20 flows again while the harness kills (SIGKILL, as
  ``kill -9``) a random worker among those holding a running run, ``--kills`` 8
  times at random moments, restarting it each time with the same command line;
* ``parked`` (``--parked``): the send instance has a per-minute rate limit, so
  runs park (status ``waiting``) and resume; two kills on the way;
* ``stop`` (``--stop-in-park``): one run parks on a per-minute limit, is stopped
  with queueing.request_stop while it waits, and must end ``stopped`` with no
  send after the stop (checked past its ``parked_until``);
* ``embedded`` (``--embedded``): the SQLite queue (no REDIS_URL), one worker,
  killed and restarted ``--embedded-kills`` 3 times.

Checks, per phase (a failed one makes the exit status 1):

* every run ended ``success`` (``stopped`` in the stop phase);
* the Sandbox stored every order exactly once: no reference twice, none
  missing, none that no flow sent, and no (idempotency key, reference) twice;
* each kill was made (a kill only hits a worker holding a running run, so the
  runs must not all end first);
* kill → queued again: for every run the killed worker held, the time from the
  kill to the watcher queueing its next attempt (the run's ``enqueued_at``) is
  at most *bound* = lease (FLOW_RUN_LEASE_SECONDS) + watch interval
  (FLOW_WATCH_INTERVAL_SECONDS) + one page (the longest mean page time of a
  baseline run): the lease runs out at most a lease after the last renewal, a
  worker's watcher notices within its interval, and the page in flight is read
  and sent again. A run whose lease ran out while no worker process was past
  its start-up (the phase's warm-up time) and alive a watch interval more (or
  until the requeue) is reported, not held to the bound: nobody was watching;
* chaos against baseline: (chaos time − baseline time) / kills is at most lease
  + one page.

Reported, not checked: kill → resumed (``attempts[].resumed_at`` − kill): in
the chaos phase it adds the wait for a free worker thread, since the requeued
run is queued behind the runs not started yet (20 runs on 6 threads).

Per phase it prints runs and their final statuses, orders sent / stored /
duplicated / missing, attempts per run, kills, kill → queued again (max) and
kill → resumed (median, max), runs in doubt; per kill, for each run it held:
when the lease ran out, when the run was queued again, when it resumed; then
every check with PASS or FAIL, and the totals.

Set-up (benchmarks/flow_run.py's helpers): a throwaway PostgreSQL database
(``pw_chaos_bench``, created and dropped; ``BENCH_DATABASE_URL`` picks
another), the Sandbox on gunicorn on a free port, Redis on the first empty
database from 15 down (``--redis-url`` to choose), a namespace per phase for
the queue and the rate limits. Workers get FLOW_RUN_MAX_ATTEMPTS=20 (so eight
kills never exhaust a run) and the Sandbox keeps up to 200,000 orders.

How to run (from the project root)
----------------------------------
::

    .venv/bin/python -m benchmarks.chaos --quick                 # 4 flows of 1,000 orders, 3 kills: a smoke run
    .venv/bin/python -m benchmarks.chaos                         # everything (about 5 minutes)
    .venv/bin/python -m benchmarks.chaos --variant chaos         # baseline + kills only (also: parked, stop, embedded)
    .venv/bin/python -m benchmarks.chaos --parked                # only the parked phase

Options: ``--flows 20 --count 2000 --per-page 100 --workers 3 --kills 8 --seed N
--parked-flows 3 --parked-count 2000 --parked-limit 40 --parked-kills 2 --stop-count 1000 --stop-limit 2
--embedded-flows 4 --embedded-count 2000 --embedded-kills 3 --reap-seconds 2 --timeout 600 --redis-url redis://127.0.0.1:6379/9``.

Figures measured
----------------
2 cores, PostgreSQL 15, Redis 7, lease 10 s, watch interval 2 s;
``.venv/bin/python -m benchmarks.chaos`` (seed 399891136, 3 min 32 s, load
average 1.8 at the start, 2.0 at the end)::

    phase     statuses    seconds  sent    stored  dup ref  missing  dup key+ref  attempts  kills  requeue max  resume p50/max
    baseline  success:20     11.8  40,000  40,000        0        0            0  1x20          -            -               -
    chaos     success:20     27.6  40,000  40,000        0        0            0  1x4 2x16    8/8         10.7     10.4 / 10.8
    parked    success:3      61.6   6,000   6,000        0        0            0  2x3         2/2         10.9     10.5 / 11.0
    stop      stopped:1      67.1   1,000     200        0        -            0  1x1           -            -               -
    embedded  success:4      23.6   8,000   8,000        0        0            0  2x2 3x2     3/3         10.9     10.9 / 11.1

(seconds after the kill for requeue and resume)

Every order stored once (94,200 over the phases, none in doubt: the Sandbox
honours the Idempotency-Key). The 8 kills cost (27.6 − 11.8) / 8 = 2.0 s each
against the baseline (bound: lease + one page = 10.2 s); per run taken by a kill,
the lease ran out 9.8-10.0 s after it and the watcher queued the run again 0-1.0 s
later (at most 10.9 s after the kill, bound 12.2 s). The stopped run ended at once
(request_stop answered "stopped") and sent nothing in the 67 s after.
``--quick`` (4 flows of 1,000 orders, 3 kills; 3 min 24 s, mostly the parked and
stop phases' minute windows): every check passed, kill → requeue at most 11.3 s.
Before the bookkeeping change and under a heavier load (baseline 45.3 s, seed 5)
the chaos phase's kill → resume reached 31.1 s: the requeued runs waited behind
the runs not started yet, while kill → requeue stayed at most 11.6 s.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks import flow_run
from benchmarks import manage_connectors as bench

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/pw_chaos_bench"
ACTIVE = ("queued", "running", "waiting")
ORDER_STEP = timedelta(minutes=12)  # sandbox.data.ORDER_STEP: order i of a list is updated at as_of - i * 12 min
WORKER_ENV = {
    "FLOW_RUN_MAX_ATTEMPTS": "20",  # eight kills must never exhaust a run
    "SANDBOX_MAX_ORDERS_PER_ACCOUNT": "200000",  # every order of a phase is kept, duplicates included
    "SANDBOX_MAX_BYTES_PER_ACCOUNT": str(1024**3),
    "SANDBOX_MAX_STORED_BYTES": str(2 * 1024**3),
}


# --- the connector, the instances and the flows ------------------------------------------------


def connector_manifest(per_page: int) -> dict:
    """flow_run's Sandbox connector, plus `as_of` on List orders and the Idempotency-Key header on Create order."""
    from connectors import schema

    manifest = flow_run.connector_manifest(per_page)
    manifest["name"] = "Chaos Sandbox"
    receive, send = manifest["endpoints"]
    receive["request_parameters"].append({"name": "as_of", "location": "query"})
    if "idempotency" in getattr(schema.Endpoint, "model_fields", {}):  # as the Sandbox listing 1.5.0 declares it
        send["idempotency"] = {"in": "header", "name": "Idempotency-Key"}
    return manifest


@dataclass
class World:
    company: object
    source: object
    targets: dict  # name -> send instance
    endpoints: dict
    base_anchor: datetime
    per_page: int
    idempotency_declared: bool
    next_index: int = 0
    next_offset: int = 0  # orders of the Sandbox's list already given to a flow


def seed(base_url: str, args) -> World:
    from connectors import editing
    from connectors import manifest as manifests
    from connectors.models import Connector, ConnectorChange
    from instances.models import Instance
    from patchworks_site.models import Company

    company = Company.objects.create(name="Chaos Bench Ltd")
    manifest = manifests.validate(connector_manifest(args.per_page))
    connector = Connector(company=company)
    editing.save_definition(connector, manifest, action=ConnectorChange.Action.CREATED, summary="created")
    method = connector.auth_methods.get(key="token")

    def instance(name: str, **fields) -> Instance:
        obj = Instance.with_connector_defaults(connector, name=name, auth_method=method,
                                               values={"base_url": base_url}, **fields)
        obj.set_secrets({"api_token": flow_run.SANDBOX_TOKEN})
        obj.save()
        return obj

    us = {"time_zone": "America/New_York", "date_format": "%m/%d/%Y %H:%M"}
    endpoints = {e.key: e for e in connector.endpoints.all()}
    send = endpoints["create_order"]
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return World(
        company=company,
        source=instance("Chaos UK", time_zone="Europe/London"),
        targets={
            "free": instance("Chaos US", **us),
            "parked": instance("Chaos US (parked)", **us, rate_limit_amount=args.parked_limit,
                               rate_limit_unit="minute"),
            "stop": instance("Chaos US (stop)", **us, rate_limit_amount=args.stop_limit, rate_limit_unit="minute"),
        },
        endpoints=endpoints,
        base_anchor=now - timedelta(days=1),
        per_page=args.per_page,
        idempotency_declared=getattr(send, "idempotency_key_in", "") == "header",
    )


@dataclass
class ChaosFlow:
    flow: object
    count: int
    anchor: datetime

    def references(self) -> set[str]:
        """The references of the orders this flow sends (the Sandbox's order numbers under its as_of)."""
        from sandbox import data

        return {data.order(i, self.anchor)["number"] for i in range(self.count)}


def make_flows(world: World, how_many: int, count: int, target: str) -> list[ChaosFlow]:
    """`how_many` flows receive (`count` orders, each flow its own as_of) → filter → map → send as batch to `target`."""
    from flows.models import ProcessFlow, Shape, ShapeKind

    made = []
    for _ in range(how_many):
        index = world.next_index
        # Each flow's orders come from its own stretch of the Sandbox's list: no reference twice across flows.
        anchor = world.base_anchor - world.next_offset * ORDER_STEP
        world.next_index, world.next_offset = index + 1, world.next_offset + count
        flow = ProcessFlow.objects.create(company=world.company, name=f"Chaos {index}: {count} orders to {target}",
                                          enabled=True)
        connection = {"timeout": 60, "retries": 0, "allow_unsuccessful": False, "send_as": "batch", "parameters": {}}
        plain = {"constant": "", "convert_date": False}
        shapes = [
            Shape(kind=ShapeKind.CONNECTION, instance=world.source, endpoint=world.endpoints["list_orders"],
                  config={**connection, "parameters": {"count": str(count),
                                                       "as_of": anchor.strftime("%Y-%m-%dT%H:%M:%SZ")}}),
            Shape(kind=ShapeKind.FILTER, config={"match": "all", "rules": [
                {"field": "updated_at", "comparison": "in_last", "value": "10000", "unit": "days"}]}),
            Shape(kind=ShapeKind.MAP, config={"keep_unmapped": False, "fields": [
                {"target": "reference", "source": "number", **plain},
                {"target": "customer", "source": "customer.name", **plain},
                {"target": "total", "source": "total", **plain},
                {"target": "updated", "source": "updated_at", **plain, "convert_date": True},
            ]}),
            Shape(kind=ShapeKind.CONNECTION, instance=world.targets[target], endpoint=world.endpoints["create_order"],
                  config=connection),
        ]
        for position, shape in enumerate(shapes):
            shape.flow, shape.position = flow, position
        Shape.objects.bulk_create(shapes)
        made.append(ChaosFlow(flow, count, anchor))
    return made


# --- workers: kill and restart -----------------------------------------------------------------


@dataclass
class Life:
    """One worker process from its start to its kill (None: still alive)."""

    started: datetime
    killed: datetime | None = None


def restart(mode: flow_run.Mode, n: int, lives: list[Life]) -> None:
    """Worker `n` again, with the command line and environment flow_run.Mode.start gave it (its log appended)."""
    from django.utils import timezone

    log = (mode.tmp / f"{mode.queue_name}-worker-{n}.log").open("a")
    lives.append(Life(timezone.now()))
    mode.processes[n] = subprocess.Popen([sys.executable, "manage.py", "run_huey"], cwd=flow_run.PROJECT_DIR,
                                         env=mode.env, stdout=log, stderr=subprocess.STDOUT)


def has_field(model, name: str) -> bool:
    return any(f.name == name for f in model._meta.get_fields())


def owner_pid(owner: str) -> int | None:
    """The process id in a lease owner (execution.worker_name: host:pid:thread:token)."""
    parts = owner.split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


@dataclass
class Kill:
    at: datetime  # just before the SIGKILL
    worker: int
    pid: int
    held: list[tuple[int, int]]  # (run pk, its attempt) the worker held when killed
    latencies: dict[int, float] = field(default_factory=dict)  # run pk -> seconds from the kill to the next attempt
    requeued: dict[int, float] = field(default_factory=dict)  # run pk -> seconds from the kill to its requeue (seen)
    estimated: set[int] = field(default_factory=set)  # runs whose next attempt was lost before noting its start
    expired: dict[int, float] = field(default_factory=dict)  # run pk -> seconds from the kill to its lease's end
    reaped: dict[int, float] = field(default_factory=dict)  # run pk -> seconds from the kill to the watcher's requeue

    @property
    def latency(self) -> float | None:
        """The slowest resumption of the kill's runs (None when none of them needed one)."""
        return max(self.latencies.values()) if self.latencies else None


def held_runs(run_pks: list[int]) -> dict[int, list[tuple[int, int]]]:
    """pid -> [(run pk, attempt)] of the phase's running runs."""
    from flows.models import FlowRun

    held: dict[int, list[tuple[int, int]]] = {}
    rows = FlowRun.objects.filter(pk__in=run_pks, status="running").values_list("pk", "lease_owner", "attempt")
    for pk, owner, attempt in rows:
        pid = owner_pid(owner or "")
        if pid is not None:
            held.setdefault(pid, []).append((pk, attempt))
    return held


def kill_one(mode: flow_run.Mode, run_pks: list[int], rng: random.Random, lives: dict[int, Life],
             all_lives: list[Life]) -> Kill | None:
    """SIGKILL a random worker among those holding a running run of the phase, and restart it; None if none holds one.

    Runs whose lease names a worker killed earlier are not held by anyone alive, so every kill hits work in flight.
    """
    from django.utils import timezone

    held = held_runs(run_pks)
    candidates = [n for n, process in enumerate(mode.processes) if process.pid in held and process.poll() is None]
    if not candidates:
        return None
    n = rng.choice(candidates)
    process = mode.processes[n]
    at = timezone.now()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    lives[process.pid].killed = at
    # Read again once the process is gone: a run it claimed in the last instant is lost too.
    runs = dict(held[process.pid]) | dict(held_runs(run_pks).get(process.pid, []))
    restart(mode, n, all_lives)
    lives[mode.processes[n].pid] = all_lives[-1]
    return Kill(at=at, worker=n, pid=process.pid, held=sorted(runs.items()))


# --- phases --------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    label: str
    flows: list[ChaosFlow]
    expect: str = "success"
    kills_wanted: int = 0
    seconds: float = 0.0
    runs: list = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    seen_waiting: set[int] = field(default_factory=set)
    lives: list[Life] = field(default_factory=list)  # every worker process of the phase
    by_pid: dict[int, Life] = field(default_factory=dict)
    startup: float = 0.0  # seconds from starting the workers to the end of their warm-up runs
    timed_out: bool = False
    stored: dict = field(default_factory=dict)  # filled by count_stored
    bound: float | None = None
    lease: float = 0.0
    interval: float = 0.0  # the workers' watch interval (FLOW_WATCH_INTERVAL_SECONDS)
    page_seconds: float = 0.0
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append((name, bool(ok), detail))


def queue_runs(flows: list[ChaosFlow]) -> list[int]:
    return [flow_run.queue(f.flow) for f in flows]


def active_runs(run_pks: list[int]) -> list[tuple[int, str]]:
    from flows.models import FlowRun

    return list(FlowRun.objects.filter(pk__in=run_pks, status__in=ACTIVE).values_list("pk", "status"))


def wait_phase(phase: Phase, mode: flow_run.Mode, run_pks: list[int], started: float, args,
               rng: random.Random, kill_gap: tuple[float, float]) -> None:
    """Poll until every run ended (or the timeout); make the phase's kills on the way at random moments."""
    deadline = started + args.timeout
    # The first kill comes early (small phases may be over in a second or two), the others kill_gap apart.
    next_kill = time.monotonic() + rng.uniform(0.2, kill_gap[0]) if phase.kills_wanted else math.inf
    while time.monotonic() < deadline:
        active = active_runs(run_pks)
        phase.seen_waiting |= {pk for pk, status in active if status == "waiting"}
        note_requeues(phase.kills, args.lease)
        if not active:
            break
        if len(phase.kills) < phase.kills_wanted and time.monotonic() >= next_kill:
            kill = kill_one(mode, run_pks, rng, phase.by_pid, phase.lives)
            if kill is not None:
                phase.kills.append(kill)
                print(f"  {phase.name}: kill {len(phase.kills)}/{phase.kills_wanted}: worker {kill.worker} "
                      f"(pid {kill.pid}), holding runs {[pk for pk, _ in kill.held]}", file=sys.stderr)
                next_kill = time.monotonic() + rng.uniform(*kill_gap)
        time.sleep(0.1)
    else:
        phase.timed_out = True
    phase.seconds = time.monotonic() - started


def note_requeues(kills: list[Kill], lease: float) -> None:
    """For each run a kill took, when it was seen queued again as its next attempt, and when its lease had run out.

    The lease ran out at the new attempt's lost_at (the last renewal) + the lease; the watcher that requeued
    it wrote enqueued_at as it handed the run over.
    """
    from django.utils import timezone

    from flows.models import FlowRun

    waiting = {(pk, attempt): kill for kill in kills for pk, attempt in kill.held if pk not in kill.requeued}
    if not waiting:
        return
    now = timezone.now()
    rows = FlowRun.objects.filter(pk__in={pk for pk, _ in waiting}).values_list("pk", "attempt", "enqueued_at",
                                                                               "attempts")
    for pk, attempt, enqueued_at, attempts in rows:
        for (held_pk, held_attempt), kill in waiting.items():
            if held_pk != pk or attempt <= held_attempt:
                continue
            kill.requeued[pk] = (now - kill.at).total_seconds()
            entry = next((a for a in attempts or [] if a.get("number") == held_attempt + 1), None)
            if entry and entry.get("lost_at"):
                expiry = datetime.fromisoformat(entry["lost_at"]) + timedelta(seconds=lease)
                kill.expired[pk] = (expiry - kill.at).total_seconds()
            if enqueued_at and attempt == held_attempt + 1:
                kill.reaped[pk] = (enqueued_at - kill.at).total_seconds()


def load_runs(run_pks: list[int]) -> list:
    from flows.models import FlowRun

    return list(FlowRun.objects.filter(pk__in=run_pks).order_by("pk"))


def resume_latencies(phase: Phase) -> None:
    """Per kill, per run it held: seconds from the kill to the start of the run's next attempt (from `attempts`)."""
    by_pk = {run.pk: run for run in phase.runs}
    for kill in phase.kills:
        for pk, attempt in kill.held:
            run = by_pk.get(pk)
            later = [a for a in (getattr(run, "attempts", None) or []) if (a.get("number") or 0) > (attempt or 0)]
            if not later:
                continue  # the run ended before the kill took effect (or never resumed: the status check says so)
            later.sort(key=lambda a: a["number"])
            resumed = later[0].get("resumed_at")
            if not resumed and len(later) > 1:
                # That attempt was lost between its claim and noting its start (a kill right after the
                # claim): the next entry's lost_at is its last lease renewal, i.e. its claim.
                resumed = later[1].get("lost_at")
                kill.estimated.add(pk)
            if resumed:
                kill.latencies[pk] = (datetime.fromisoformat(resumed) - kill.at).total_seconds()


def count_stored(phase: Phase) -> None:
    """What the Sandbox stored against what the phase's flows sent: duplicates, missing, unexpected."""
    from collections import Counter

    from sandbox.models import SandboxReceivedOrder

    expected: set[str] = set()
    for f in phase.flows:
        expected |= f.references()
    has_key = has_field(SandboxReceivedOrder, "idempotency_key")
    reference = "reference" if has_field(SandboxReceivedOrder, "reference") else "body__reference"
    columns = [reference, "idempotency_key"] if has_key else [reference]
    rows = list(SandboxReceivedOrder.objects.values_list(*columns))
    references = Counter(row[0] for row in rows)
    phase.stored = {
        "expected": len(expected),
        "stored": len(rows),
        "duplicates": sum(n - 1 for n in references.values() if n > 1),
        "missing": len(expected - set(references)),
        "unexpected": len(set(references) - expected),
        "key_duplicates": sum(n - 1 for n in Counter(rows).values() if n > 1) if has_key else None,
        "keys_stored": has_key,
    }


def clear_sandbox() -> None:
    from sandbox.models import SandboxReceivedOrder

    SandboxReceivedOrder.objects.all().delete()


def page_seconds(phase: Phase, per_page: int) -> float:
    """The longest mean time of one page over the phase's runs (run duration / pages)."""
    means = []
    for run, f in zip(phase.runs, phase.flows):
        if run.started_at and run.finished_at:
            means.append((run.finished_at - run.started_at).total_seconds() / max(1, math.ceil(f.count / per_page)))
    return max(means, default=0.0)


def warm_up(mode: flow_run.Mode, world: World, args, phase: Phase) -> None:
    """Start the workers and wait for one-order runs (two per worker, queued at once): imports, first connections.

    The time that takes is the phase's estimate of a worker's start-up (a restarted worker watches leases after it).
    """
    from django.utils import timezone

    from flows.models import RunStatus

    if not hasattr(world, "warm_flow"):
        world.warm_flow = make_flows(world, 1, 1, "free")[0].flow
    started = time.monotonic()
    mode.start()
    for process in mode.processes:
        phase.lives.append(Life(timezone.now()))
        phase.by_pid[process.pid] = phase.lives[-1]
    pks = [flow_run.queue(world.warm_flow) for _ in range(2 * mode.count)]
    for run in flow_run.wait_for(pks, args.timeout, mode):
        if run.status != RunStatus.SUCCESS:
            raise SystemExit(f"{mode.label}: a warm-up run ended {run.status}: {run.failure_reason}\n{mode.logs()}")
    phase.startup = time.monotonic() - started


def run_phase(phase: Phase, mode: flow_run.Mode, world: World, args, rng: random.Random,
              kill_gap: tuple[float, float] = (1.0, 4.0)) -> Phase:
    """Warm the workers up, queue the phase's runs at once, make its kills, wait for the end, count what was stored."""
    print(f"Phase {phase.name}: {phase.label} ...", file=sys.stderr)
    try:
        warm_up(mode, world, args, phase)
        clear_sandbox()
        started = time.monotonic()
        run_pks = queue_runs(phase.flows)
        wait_phase(phase, mode, run_pks, started, args, rng, kill_gap)
        phase.runs = load_runs(run_pks)
        if phase.timed_out:
            print(f"{phase.name}: runs still active after {args.timeout:g} s. Worker logs:\n{mode.logs()}",
                  file=sys.stderr)
            stop_leftovers(run_pks)
        elif any(run.status != phase.expect for run in phase.runs):
            print(f"{phase.name}: worker logs:\n{mode.logs()}", file=sys.stderr)
    finally:
        mode.close()
    resume_latencies(phase)
    count_stored(phase)
    return phase


def stop_leftovers(run_pks: list[int]) -> None:
    """Stop what a timed-out phase left active, so the next phase starts clean."""
    from flows import queueing

    for run in load_runs(run_pks):
        if run.status in ACTIVE:
            queueing.request_stop(run)


def stop_in_park(mode: flow_run.Mode, world: World, args, flows: list[ChaosFlow]) -> Phase:
    """One run parks on its send instance's per-minute limit, is stopped while waiting; nothing is sent after that."""
    from flows import queueing
    from flows.models import FlowRun
    from sandbox.models import SandboxReceivedOrder

    phase = Phase("stop", f"stop pressed while parked ({args.stop_limit} sends/minute), {mode.label}",
                  flows, expect="stopped")
    print(f"Phase {phase.name}: {phase.label} ...", file=sys.stderr)
    try:
        warm_up(mode, world, args, phase)
        clear_sandbox()
        started = time.monotonic()
        pk = queue_runs(flows)[0]
        parked = None
        while time.monotonic() < started + args.timeout:
            run = FlowRun.objects.get(pk=pk)
            if run.status == "waiting":
                parked = run
                break
            if run.status not in ACTIVE:
                break
            time.sleep(0.05)
        if parked is None:
            phase.notes.append(f"the run never parked (it ended {FlowRun.objects.get(pk=pk).status})")
        else:
            phase.seen_waiting.add(pk)
            sent_before = SandboxReceivedOrder.objects.count()
            answer = queueing.request_stop(parked)
            stopped_at = time.monotonic()
            while time.monotonic() < started + args.timeout and FlowRun.objects.get(pk=pk).status in ACTIVE:
                time.sleep(0.05)
            ended = time.monotonic() - stopped_at
            # Past the moment the park would have ended, plus a reaper period and a page: a send would show by now.
            until = getattr(parked, "parked_until", None)
            wait = max(0.0, (until - datetime.now(UTC)).total_seconds()) if until else 60.0
            wait += args.reap_seconds + 5
            print(f"  stop: request_stop answered {answer!r}; the run ended {ended:.2f} s later; watching the Sandbox"
                  f" for {wait:.0f} s more", file=sys.stderr)
            time.sleep(wait)
            sent_after = SandboxReceivedOrder.objects.count()
            phase.notes.append(f"request_stop answered {answer!r}; the run ended {ended:.2f} s after it; "
                               f"{sent_before} orders stored before the stop, {sent_after} {wait:.0f} s later")
            phase.check("stop: no order sent after the stop", sent_after == sent_before,
                        f"{sent_after - sent_before} orders sent after the stop")
            phase.check("stop: the run ended at once (within 5 s of request_stop)", ended <= 5, f"{ended:.2f} s")
        phase.seconds = time.monotonic() - started
        phase.runs = load_runs([pk])
    finally:
        mode.close()
    count_stored(phase)
    return phase


# --- checks and report ---------------------------------------------------------------------------


def attempts_text(runs: list) -> str:
    from collections import Counter

    spread = Counter(getattr(run, "attempt", 1) or 1 for run in runs)
    return " ".join(f"{n}x{spread[n]}" for n in sorted(spread)) or "-"


def watcher_up(phase: Phase, moment: datetime, requeued: datetime) -> bool:
    """Some worker process was past its start-up at `moment` and alive a watch interval more or until `requeued`."""
    settle, interval = timedelta(seconds=phase.startup), timedelta(seconds=phase.interval)
    until = min(moment + interval, requeued)
    return any(life.started + settle <= moment and (life.killed is None or life.killed >= until)
               for life in phase.lives)


def judge(phase: Phase, baseline: Phase | None) -> None:
    """The phase's checks (its stop checks are already in)."""
    statuses = [run.status for run in phase.runs]
    wrong = [f"{run.pk}: {run.status} ({(run.failure_reason or '')[:120]})" for run in phase.runs
             if run.status != phase.expect]
    phase.check(f"every run ended {phase.expect}", statuses and not wrong and not phase.timed_out,
                "; ".join(wrong[:5]) + (" (timed out)" if phase.timed_out else ""))
    s = phase.stored
    if phase.expect == "success":
        phase.check("Sandbox: no order stored twice (by reference)", s["duplicates"] == 0, f"{s['duplicates']}")
        phase.check("Sandbox: no order missing", s["missing"] == 0, f"{s['missing']} of {s['expected']}")
    else:
        phase.check("Sandbox: no order stored twice (by reference)", s["duplicates"] == 0, f"{s['duplicates']}")
    phase.check("Sandbox: nothing stored that no flow sent", s["unexpected"] == 0, f"{s['unexpected']}")
    if s["keys_stored"]:
        phase.check("Sandbox: no (idempotency key, reference) twice", s["key_duplicates"] == 0,
                    f"{s['key_duplicates']}")
    if phase.kills_wanted:
        phase.check(f"{phase.kills_wanted} kills made while runs were running",
                    len(phase.kills) == phase.kills_wanted, f"{len(phase.kills)} made")
        requeues, unwatched = [], []
        for k in phase.kills:
            for pk in k.requeued:
                value = k.reaped.get(pk, k.requeued[pk])
                expiry = k.at + timedelta(seconds=k.expired.get(pk, phase.lease))
                watched = watcher_up(phase, expiry, k.at + timedelta(seconds=value))
                (requeues if watched else unwatched).append(value)
        if unwatched:
            phase.notes.append(
                f"{len(unwatched)} run(s) lost their lease when no worker process was past its start-up "
                f"({phase.startup:.1f} s) and alive a watch interval more (kills close together): requeued "
                f"{', '.join(f'{v:.1f}' for v in unwatched)} s after the kill; not held to the bound")
        if phase.bound is not None:
            over = [f"{value:.1f} s" for value in requeues if value > phase.bound]
            phase.check(f"kill → queued again within lease + watch interval + one page ({phase.bound:.1f} s)",
                        requeues and not over, f"over: {', '.join(over)}" if over else f"{len(requeues)} runs")
    if phase.name == "parked":
        phase.check("runs parked (status waiting seen)", bool(phase.seen_waiting), f"{len(phase.seen_waiting)} runs")
    if phase.name == "chaos" and baseline is not None and phase.kills:
        extra = (phase.seconds - baseline.seconds) / len(phase.kills)
        bound = phase.lease + phase.page_seconds
        phase.notes.append(f"extra time per kill against the baseline: ({phase.seconds:.1f} - {baseline.seconds:.1f})"
                           f" / {len(phase.kills)} = {extra:.1f} s")
        phase.check(f"extra time per kill against the baseline within lease + one page ({bound:.1f} s)",
                    extra <= bound, f"{extra:.1f} s")


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(phases: list[Phase], args, context: dict) -> bool:
    from collections import Counter

    print()
    print(f"Chaos benchmark: {context['database']}; Sandbox on {context['server']}; Redis {context['redis']};"
          f" load average {context['load_at_start']} at the start, {flow_run.load_average()} at the end")
    print(f"Flows: receive (Sandbox List orders, pages of {args.per_page}, each flow its own as_of) → filter → map →"
          f" send as batch (Create order{', Idempotency-Key header' if context['idempotency'] else ''}).")
    print(f"Lease {context['lease']:g} s, reaper period {args.reap_seconds:g} s, FLOW_RUN_MAX_ATTEMPTS "
          f"{WORKER_ENV['FLOW_RUN_MAX_ATTEMPTS']}; one page (longest mean of a baseline run) "
          f"{fmt(context.get('page'), 2)} s.")
    print()
    rows = []
    for p in phases:
        s = p.stored
        latencies = [k.latency for k in p.kills if k.latency is not None]
        requeues = [k.reaped.get(pk, k.requeued.get(pk)) for k in p.kills for pk in k.requeued]
        statuses = Counter(run.status for run in p.runs)
        spread = (fmt(statistics.median(latencies)), fmt(max(latencies))) if latencies else ("-", "-")
        rows.append([
            p.name, str(len(p.runs)), " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())) or "-",
            f"{p.seconds:.1f}", f"{s['expected']:,}", f"{s['stored']:,}", str(s["duplicates"]),
            str(s["missing"]) if p.expect == "success" else "-",
            str(s["key_duplicates"]) if s["keys_stored"] else "n/a", attempts_text(p.runs),
            f"{len(p.kills)}/{p.kills_wanted}" if p.kills_wanted else "-",
            fmt(max(requeues)) if requeues else "-", *spread,
            fmt(p.bound), str(sum(len(getattr(run, "in_doubt", None) or []) for run in p.runs)),
        ])
    flow_run.table(["phase", "runs", "statuses", "seconds", "orders sent", "stored", "dup ref", "missing",
                    "dup key+ref", "attempts", "kills", "kill→requeue max s", "kill→resume p50 s", "max s", "bound s", "in doubt"], rows)
    for p in phases:
        print()
        print(f"{p.name}: {p.label}")
        for n, kill in enumerate(p.kills, start=1):
            held = "; ".join(
                f"run {pk} (attempt {a}): lease out +{fmt(kill.expired.get(pk))} s, requeued +"
                f"{fmt(kill.reaped.get(pk))} s (seen +{fmt(kill.requeued.get(pk))} s), resumed +"
                f"{fmt(kill.latencies.get(pk))} s{'*' if pk in kill.estimated else ''}" for pk, a in kill.held)
            print(f"  kill {n} at {kill.at:%H:%M:%S.%f}"[:-3] + f": worker {kill.worker} (pid {kill.pid}); "
                  f"{held or 'held no run'}")
        for note in p.notes:
            print(f"  {note}")
        for name, ok, detail in p.checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""))
    if any(k.estimated for p in phases for k in p.kills):
        print("\n* that attempt was lost between its claim and noting its start (resumed_at): its claim is read from"
              " the next attempt's lost_at (its last lease renewal).")
    failed = [(p.name, name) for p in phases for name, ok, _ in p.checks if not ok]
    all_latencies = [k.latency for p in phases for k in p.kills if k.latency is not None]
    print()
    print(f"Totals: {sum(len(p.runs) for p in phases)} runs, {sum(p.stored['stored'] for p in phases):,} orders "
          f"stored, {sum(len(p.kills) for p in phases)} kills, kill→resume median "
          f"{fmt(statistics.median(all_latencies)) if all_latencies else '-'} s, max "
          f"{fmt(max(all_latencies)) if all_latencies else '-'} s; "
          f"{sum(len(p.checks) for p in phases) - len(failed)} checks passed, {len(failed)} failed.")
    return not failed


# --- main ----------------------------------------------------------------------------------------

VARIANTS = ("chaos", "parked", "stop", "embedded")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 flows of 1,000 orders, 3 kills, smaller"
                                                             " variants")
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="run only this phase (repeatable; chaos includes its baseline); default: all")
    parser.add_argument("--parked", action="store_true", help="only the parked phase (as --variant parked)")
    parser.add_argument("--stop-in-park", action="store_true", help="only the stop phase (as --variant stop)")
    parser.add_argument("--embedded", action="store_true", help="only the embedded phase (as --variant embedded)")
    parser.add_argument("--flows", type=int, default=20)
    parser.add_argument("--count", type=int, default=2000, help="orders per flow")
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--parked-flows", type=int, default=3)
    parser.add_argument("--parked-count", type=int, default=2000)
    parser.add_argument("--parked-limit", type=int, default=40, help="sends per minute of the parked send instance")
    parser.add_argument("--parked-kills", type=int, default=2)
    parser.add_argument("--stop-count", type=int, default=1000)
    parser.add_argument("--stop-limit", type=int, default=2, help="sends per minute of the stop phase's instance")
    parser.add_argument("--embedded-flows", type=int, default=4)
    parser.add_argument("--embedded-count", type=int, default=2000, help="orders per flow (--quick keeps it)")
    parser.add_argument("--embedded-kills", type=int, default=3)
    parser.add_argument("--reap-seconds", type=float, default=None,
                        help="the workers' reaper period (default: FLOW_WATCH_INTERVAL_SECONDS)")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the kill moments and victims")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a phase may take")
    args = parser.parse_args()
    chosen = list(args.variant or [])
    chosen += [name for name, flag in (("parked", args.parked), ("stop", args.stop_in_park),
                                       ("embedded", args.embedded)) if flag]
    args.variants = [v for v in VARIANTS if v in chosen] if chosen else list(VARIANTS)
    if args.quick:
        args.flows, args.count, args.kills = min(args.flows, 4), min(args.count, 1000), min(args.kills, 3)
        args.parked_flows, args.parked_count, args.parked_kills = min(args.parked_flows, 2), 500, 1
        args.parked_limit = min(args.parked_limit, 6)
        args.stop_count, args.embedded_flows, args.embedded_kills = 500, 2, 2
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    return args


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    context = {"load_at_start": flow_run.load_average()}
    tmp = Path(tempfile.mkdtemp(prefix="pw-chaos-bench-"))
    server = None
    ok = False
    try:
        with bench.ThrowawayDatabase(database_url) as database:
            env = flow_run.base_env(database.url, tmp) | WORKER_ENV
            (tmp / "static").mkdir()
            flow_run.setup_django(env)
            from django.conf import settings

            args.lease = settings.FLOW_RUN_LEASE_SECONDS
            if args.reap_seconds is None:
                args.reap_seconds = float(getattr(settings, "FLOW_WATCH_INTERVAL_SECONDS", 2.0))
            port = flow_run.free_port()
            server = flow_run.start_sandbox(env, port, tmp / "sandbox.log")
            world = seed(f"http://127.0.0.1:{port}/sandbox/api", args)
            redis_url = args.redis_url or flow_run.free_redis_url()
            context |= {"database": database.label, "redis": redis_url, "lease": settings.FLOW_RUN_LEASE_SECONDS,
                        "server": "gunicorn (4 workers)" if (flow_run.BIN / "gunicorn").exists() else "runserver",
                        "idempotency": world.idempotency_declared}
            print(f"Seed {args.seed}; Redis {redis_url}; phases: {', '.join(args.variants)}", file=sys.stderr)

            def redis_mode(processes: int = args.workers) -> flow_run.Mode:
                return flow_run.Mode("redis", processes, env, tmp, redis_url)

            phases: list[Phase] = []
            baseline = None
            if "chaos" in args.variants:
                flows = make_flows(world, args.flows, args.count, "free")
                what = f"{args.flows} flows of {args.count:,} orders, {args.workers} workers, Redis queue"
                baseline = run_phase(Phase("baseline", f"{what}, no kills", flows), redis_mode(), world, args, rng)
                context["page"] = page_seconds(baseline, args.per_page)
                phases.append(baseline)
                gap = baseline.seconds / (args.kills + 1)
                chaos = Phase("chaos", f"{what}, {args.kills} kills", flows, kills_wanted=args.kills)
                phases.append(run_phase(chaos, redis_mode(), world, args, rng, (0.4 * gap, 1.2 * gap)))
            page = context.get("page")
            if "parked" in args.variants:
                flows = make_flows(world, args.parked_flows, args.parked_count, "parked")
                phases.append(run_phase(Phase(
                    "parked", f"{args.parked_flows} flows of {args.parked_count:,} orders, send limit "
                              f"{args.parked_limit}/minute, {args.workers} workers, Redis queue, {args.parked_kills}"
                              " kills", flows, kills_wanted=args.parked_kills), redis_mode(), world, args, rng,
                    (0.5, 2.0)))
            if "stop" in args.variants:
                flows = make_flows(world, 1, args.stop_count, "stop")
                phases.append(stop_in_park(redis_mode(1), world, args, flows))
            if "embedded" in args.variants:
                flows = make_flows(world, args.embedded_flows, args.embedded_count, "free")
                mode = flow_run.Mode("sqlite", 1, env, tmp)
                phases.append(run_phase(Phase(
                    "embedded", f"{args.embedded_flows} flows of {args.embedded_count:,} orders, {mode.label}, "
                                f"{args.embedded_kills} kills", flows, kills_wanted=args.embedded_kills),
                    mode, world, args, rng, (0.5, 2.0)))
            for p in phases:
                own = page_seconds(p, args.per_page) if p.name != "parked" else 0.0
                p.page_seconds, p.lease = (page if page is not None else own), args.lease
                p.interval = args.reap_seconds
                if p.kills_wanted:
                    p.bound = context["lease"] + args.reap_seconds + p.page_seconds
                judge(p, baseline)
            ok = print_report(phases, args, context)
            from django.db import connections

            connections.close_all()
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
