"""Prometheus metrics: what the processes count, and the figures a scrape reads.

Every metric is defined here, at the bottom of the apps, so each app can count
what it does (the outbound client, credential checks, flow runs) with
prometheus_client's inc/observe only: no query and no store round trip per
request. Figures that live in the database or the queue (runs by status, queue
depth) are read when /metrics is scraped, by collectors the apps above register
with `register_collector` (flows does in its AppConfig.ready).

Labels come only from the fixed sets below, never from a company, a URL or an
id: a value outside its set is never recorded.

Processes: huey workers count what they do while the web process serves
/metrics. With PROMETHEUS_MULTIPROC_DIR set (in every process's environment,
before it starts) prometheus_client's multiprocess mode keeps each process's
values in files in that directory and a scrape merges them all: counters and
histograms of dead processes are kept (totals never go back), the pool gauge is
a `livesum` of live processes (a process that exits drops its share, see
`forget_this_process`; one killed outside the scrape's notice drops it at the
next scrape, `forget_dead_processes`). Without it every process counts for itself and a
scrape shows the serving process only (tests, a single process).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "patchworks_"

# The fixed label values (README: "Metrics").
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "429", "error")
CHECK_RESULTS = ("ok", "failed", "error")
RUN_OUTCOMES = ("success", "partial_success", "failed", "stopped")
ALERT_RESULTS = ("delivered", "failed")

# The *_created series (one per label set, multiprocess mode has none) only double the text.
disable_created_metrics()

WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
RECORD_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)

OUTBOUND_REQUESTS = Counter(
    "patchworks_outbound_requests", "Outbound HTTP requests the instance client sent, by answer", ["status"]
)
RATE_LIMIT_WAIT = Histogram(
    "patchworks_outbound_rate_limit_wait_seconds",
    "Time an instance's request waited for its rate limit (one that gave up included)", buckets=WAIT_BUCKETS,
)
POOL_WAIT = Histogram(
    "patchworks_outbound_pool_wait_seconds",
    "Time an instance's request waited for a connection pool slot (one that gave up included)",
    buckets=WAIT_BUCKETS,
)
# Pools belong to companies (no bounded label): the slots held by this host's requests, all pools together.
POOL_SLOTS_IN_USE = Gauge(
    "patchworks_pool_slots_in_use", "Connection pool slots held by requests in flight on this host (all pools)",
    multiprocess_mode="livesum",
)
CREDENTIAL_CHECKS = Counter("patchworks_credential_checks", "Credential checks, by result", ["result"])
RUN_DURATION = Histogram(
    "patchworks_flow_run_duration_seconds", "Time from a flow run's start to its end, by outcome", ["status"],
    buckets=DURATION_BUCKETS,
)
RUN_RECORDS = Histogram(
    "patchworks_flow_run_records", "Records a flow run received from its receive shapes, by outcome", ["status"],
    buckets=RECORD_BUCKETS,
)
ALERTS = Counter("patchworks_alerts", "Alert deliveries, by result", ["result"])

# Every series is there (at 0) from the start, so rate() sees its first increase; the outbound
# ones are kept at hand (labels() takes a lock and builds a key on each call).
_OUTBOUND_BY_CLASS = {status: OUTBOUND_REQUESTS.labels(status) for status in STATUS_CLASSES}
for _counter, _values in ((CREDENTIAL_CHECKS, CHECK_RESULTS), (ALERTS, ALERT_RESULTS)):
    for _value in _values:
        _counter.labels(_value)


# --- counting ------------------------------------------------------------------------


def status_class(status: int | None, error: str = "") -> str:
    """The label of an exchange: its status class, "429" on its own, "error" when no usable answer came."""
    if error or not status:
        return "error"
    if status == 429:
        return "429"
    if 200 <= status < 600:
        return f"{status // 100}xx"
    return "error"


def count_outbound(status: int | None, error: str = "") -> None:
    _OUTBOUND_BY_CLASS[status_class(status, error)].inc()


def observe_waits(rate_ms: int, pool_ms: int) -> None:
    RATE_LIMIT_WAIT.observe(rate_ms / 1000)
    POOL_WAIT.observe(pool_ms / 1000)


def count_check(result: str) -> None:
    if result in CHECK_RESULTS:
        CREDENTIAL_CHECKS.labels(result).inc()


def observe_run(status: str, seconds: float, records: int) -> None:
    """A run's end, concluded by its worker or by a reaper or a stop in its stead (parks are not ends)."""
    status = str(status)
    if status in RUN_OUTCOMES:
        RUN_DURATION.labels(status).observe(max(seconds, 0.0))
        RUN_RECORDS.labels(status).observe(records)


def count_alert(result: str) -> None:
    """A delivery of an alert ended: "delivered", or "failed" once its last attempt failed (alerts.delivery)."""
    if result in ALERT_RESULTS:
        ALERTS.labels(result).inc()


# --- reading at scrape time ----------------------------------------------------------


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


_collectors: list[Collector] = []


def register_collector(collector: Collector) -> None:
    """Add figures read when /metrics is scraped (and on the admin's system health page).

    For apps above this one: `collector.collect()` yields prometheus_client
    metric families (GaugeMetricFamily, ...) named `patchworks_...`, with
    labels from fixed sets. It runs in the web process at each scrape, so it
    should cost a query or two. Registering the same object twice is harmless.
    """
    if collector not in _collectors:
        _collectors.append(collector)


class _Registered:
    """The registered collectors; one that fails is logged and left out of that scrape."""

    def collect(self) -> Iterator[Metric]:
        for collector in list(_collectors):
            try:
                families = list(collector.collect())
            except Exception:
                logger.exception("A metrics collector (%s) failed; its figures are left out.", type(collector).__name__)
                continue
            yield from families


class _ThisProcess:
    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    """Every figure of this host: the processes' files (multiprocess mode) or this process, and the registered ones."""
    registry = CollectorRegistry()
    path = settings.PROMETHEUS_MULTIPROC_DIR
    if path:
        forget_dead_processes(path)
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ThisProcess())
    registry.register(_Registered())
    return registry


def exposition() -> bytes:
    """The Prometheus text format of every figure."""
    return generate_latest(scrape_registry())


# The system health page's order: the queue and runs, then what requests did; others' figures after these.
SHOWN_FIRST = (
    "patchworks_queue_pending_tasks", "patchworks_queue_scheduled_tasks", "patchworks_flow_runs",
    "patchworks_flow_run_duration_seconds", "patchworks_flow_run_records", "patchworks_outbound_requests",
    "patchworks_outbound_rate_limit_wait_seconds", "patchworks_outbound_pool_wait_seconds",
    "patchworks_pool_slots_in_use", "patchworks_credential_checks", "patchworks_alerts",
)


def families() -> list[Metric]:
    """The project's metric families (not the process's own), in the order of SHOWN_FIRST."""
    found = [family for family in scrape_registry().collect() if family.name.startswith(PREFIX)]
    order = {name: position for position, name in enumerate(SHOWN_FIRST)}
    return sorted(found, key=lambda family: (order.get(family.name, len(order)), family.name))


# --- for people: the admin's system health page ------------------------------------------


@dataclass
class Table:
    name: str
    help: str
    columns: list[str]
    rows: list[list[str]]


def _figure(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"


def tables() -> list[Table]:
    """Each metric family as a small table: one row per label set (histograms: observed, total, mean)."""
    found = []
    for family in families():
        labels = sorted({name for sample in family.samples for name in sample.labels if name != "le"})

        def key(sample, labels=labels) -> tuple[str, ...]:
            return tuple(sample.labels.get(name, "") for name in labels)

        if family.type == "histogram":
            counts = {key(s): s.value for s in family.samples if s.name == family.name + "_count"}
            sums = {key(s): s.value for s in family.samples if s.name == family.name + "_sum"}
            rows = [
                [*k, _figure(count), _figure(sums.get(k, 0)), _figure(sums.get(k, 0) / count) if count else "–"]
                for k, count in counts.items()
            ]
            unit = " (s)" if family.name.endswith("_seconds") else ""
            columns = [*labels, "observed", f"total{unit}", f"mean{unit}"]
        else:
            # Rows keep the order of the fixed label sets (the order their series were made in).
            values = {key(s): s.value for s in family.samples if s.name in (family.name, family.name + "_total")}
            rows = [[*k, _figure(value)] for k, value in values.items()]
            columns = [*labels, "value"]
        found.append(Table(family.name, family.documentation, columns, rows))
    return found


# --- processes -------------------------------------------------------------------------


def forget_this_process(pid: int | None = None) -> None:
    """Drop a finished process's live gauges (its share of slots in use) from the directory.

    Run at exit by every process in multiprocess mode, and by gunicorn's
    child_exit hook (gunicorn.conf.py) for workers it lost. Counters and
    histograms stay: their totals include what dead processes counted.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.path.isdir(path):
        multiprocess.mark_process_dead(pid or os.getpid(), path)


_LIVE_GAUGE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def forget_dead_processes(path: str) -> None:
    """Drop the live gauges of processes that died without saying so (kill -9, out of memory): no atexit ran.

    Each host has its own directory (serve_prod), so the pid in a file's name
    is one of this host's processes; the scrape checks it is still there.
    """
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        found = _LIVE_GAUGE.fullmatch(name)
        if found is None:
            continue
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:  # alive, another user's
            pass


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    atexit.register(forget_this_process)
