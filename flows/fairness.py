"""Fair shares of the workers between companies: whose queued run a worker starts next.

Each company has a maximum of concurrent runs (Company.max_concurrent_runs,
within FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING); flows.execution.claim keeps
it. Among the companies under their maximum, the one with fewest runs going
has the next turn, the one whose oldest queued run waited longest first among
equals; a company's own runs start oldest first. Test steps take no turn and
count toward no maximum (one page, nothing sent, started at once).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from django.db.models import Count, Min

from flows.models import FlowRun, RunStatus
from patchworks_site.models import Company

# How many other companies one task tries before it runs its own (a claim can lose a race).
TURNS_TRIED = 3


def running(company_id: int) -> int:
    """How many of the company's runs hold a worker now (test steps left out)."""
    return FlowRun.objects.real().filter(company_id=company_id, status=RunStatus.RUNNING).count()


def at_limit(company_id: int | None) -> bool:
    if company_id is None:
        return False
    company = Company.objects.only("max_concurrent_runs").get(pk=company_id)
    return running(company_id) >= company.concurrent_run_limit


def turns() -> Iterator[tuple[int, int]]:
    """(company, its oldest queued run) of the companies whose turn comes next, the fairest first (TURNS_TRIED at most).

    Companies under their maximum only: fewest runs going first, then the one
    whose last run started longest ago (so companies take turns), then the one
    whose oldest queued run has waited longest.
    """
    going = dict(
        FlowRun.objects.real().filter(status=RunStatus.RUNNING).order_by().values("company")
        .annotate(n=Count("pk")).values_list("company", "n")
    )
    oldest = dict(FlowRun.objects.real().filter(status=RunStatus.QUEUED).order_by().values("company")
                  .annotate(first=Min("queued_at")).values_list("company", "first"))
    if not oldest:
        return
    never = datetime.min.replace(tzinfo=UTC)
    eligible = sorted(
        (going.get(company.pk, 0), company.last_run_started_at or never, oldest[company.pk], company.pk)
        for company in Company.objects.filter(pk__in=oldest).only("max_concurrent_runs", "last_run_started_at")
        if going.get(company.pk, 0) < company.concurrent_run_limit
    )
    for *_, company_id in eligible[:TURNS_TRIED]:
        run_pk = oldest_queued(company_id)
        if run_pk is not None:
            yield company_id, run_pk


def oldest_queued(company_id: int, *, deferred: bool = False) -> int | None:
    """The company's run that has waited longest for a worker (test steps left out).

    `deferred`: only if that run's task was given back for later (flows.execution.defer), else None.
    """
    row = (FlowRun.objects.real().filter(company_id=company_id, status=RunStatus.QUEUED)
           .order_by("queued_at", "id").values_list("pk", "deferrals").first())
    if row is None or (deferred and not row[1]):
        return None
    return row[0]
