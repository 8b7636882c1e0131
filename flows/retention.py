"""Forgetting old runs: each company keeps run logs for run_log_retention_days and payloads (payload
samples, the steps' stored records and requests) for payload_retention_hours (see Company); an hourly huey
task (flows.tasks.clean_up_runs) applies both.

Stored records and requests can be many rows: they are deleted in batches of FLOW_PAYLOAD_DELETE_BATCH
by primary key, each batch its own short transaction that touches their tables only, so the run log
(runs and their shapes) is never locked while they go. Expired runs go the same way, FLOW_RUN_DELETE_BATCH
at a time (oldest first, whichever company they belong to among those with the same retention settings),
each batch with its shapes in its own transaction: workers keep inserting and updating runs meanwhile,
and no lock is held for long (200,000 expired runs are never held in one transaction).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from flows.models import FlowRun, FlowRunAnswer, FlowRunPayload, FlowRunRequest, FlowRunShape
from patchworks_site.models import Company

logger = logging.getLogger(__name__)


@dataclass
class Cleaned:
    runs: int = 0
    samples: int = 0
    payloads: int = 0
    requests: int = 0
    # How many runs each batch deleted, and the longest batch's delete in seconds (reading its rows, then
    # the transaction that deletes them).
    run_batches: list[int] = field(default_factory=list)
    longest_batch_seconds: float = 0.0


def delete_in_batches(rows: models.QuerySet) -> int:
    """Delete `rows` FLOW_PAYLOAD_DELETE_BATCH at a time by primary key; how many went."""
    model, size, total = rows.model, settings.FLOW_PAYLOAD_DELETE_BATCH, 0
    while True:
        ids = list(rows.order_by("pk").values_list("pk", flat=True)[:size])
        if not ids:
            return total
        # No signals and nothing refers to these rows: one DELETE ... WHERE id IN (...) in its own transaction.
        deleted, _ = model.objects.filter(pk__in=ids).delete()
        total += deleted
        if len(ids) < size:
            return total


def delete_payloads(cleaned: Cleaned, **where) -> None:
    cleaned.payloads += delete_in_batches(FlowRunPayload.objects.filter(**where))
    cleaned.requests += delete_in_batches(FlowRunRequest.objects.filter(**where))
    # The answers a run keeps for resuming its page in progress: once it is over (a parked run still needs them).
    cleaned.payloads += delete_in_batches(FlowRunAnswer.objects.filter(run__finished_at__isnull=False, **where))


# How many batches' ids one query reads (sorting the expired runs by age is most of a read's cost).
READ_AHEAD = 10


def delete_runs(cleaned: Cleaned, expired: models.QuerySet) -> None:
    """Delete the `expired` runs FLOW_RUN_DELETE_BATCH at a time, oldest first, each batch in its own transaction.

    The ids of READ_AHEAD batches are read at once, outside any transaction;
    each batch's delete reads them again with the expiry condition, so a run
    that changed meanwhile stays. Their stored records and requests go before
    them, in their own batches.
    """
    size = settings.FLOW_RUN_DELETE_BATCH
    while True:
        ids = list(expired.order_by("finished_at", "pk").values_list("pk", flat=True)[:size * READ_AHEAD])
        for start in range(0, len(ids), size):
            batch = ids[start:start + size]
            delete_payloads(cleaned, run__in=batch)
            started = time.monotonic()
            # One transaction (Django's delete makes it): the runs, their shapes, their retries' and alerts' links.
            _, by_model = expired.filter(pk__in=batch).delete()
            cleaned.longest_batch_seconds = max(cleaned.longest_batch_seconds, time.monotonic() - started)
            deleted = by_model.get(FlowRun._meta.label, 0)
            cleaned.runs += deleted
            cleaned.run_batches.append(deleted)
        if len(ids) < size * READ_AHEAD:
            return


def clean_up(now: datetime | None = None) -> Cleaned:
    """Delete runs that finished more than the company's log retention ago; clear older payloads.

    Runs still queued or running are never deleted. A sample is cleared when
    its shape run started more than the payload retention ago; stored records
    and requests go when they were stored more than that ago, and those of a
    run about to be deleted go first, batch by batch.

    Companies that keep their runs and payloads alike are cleaned together, so
    the job's queries grow with the number of distinct retention settings and
    with what there is to delete, not with the number of companies (10,000
    companies on the defaults are one group, and their expired runs go 1,000
    to a batch whichever company they belong to).
    """
    now = now or timezone.now()
    cleaned = Cleaned()
    groups = (Company.objects.order_by().values_list("run_log_retention_days", "payload_retention_hours")
              .distinct())
    for days, hours in groups:
        companies = Company.objects.filter(run_log_retention_days=days, payload_retention_hours=hours).values("pk")
        payload_cutoff = now - timedelta(hours=hours)
        delete_payloads(cleaned, run__company__in=companies, created_at__lt=payload_cutoff)
        delete_runs(cleaned, FlowRun.objects.filter(company__in=companies, finished_at__lt=now - timedelta(days=days)))
        cleaned.samples += FlowRunShape.objects.filter(
            run__company__in=companies, payload_sample__isnull=False, started_at__lt=payload_cutoff
        ).update(payload_sample=None)
    if cleaned.runs or cleaned.samples or cleaned.payloads or cleaned.requests:
        logger.info("Retention: %d run(s) deleted in %d batch(es) (the longest took %.2f s), %d payload sample(s) "
                    "cleared, %d page payload(s) and %d request(s) deleted.", cleaned.runs, len(cleaned.run_batches),
                    cleaned.longest_batch_seconds, cleaned.samples, cleaned.payloads, cleaned.requests)
    return cleaned
