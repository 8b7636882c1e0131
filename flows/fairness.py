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

from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce

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


def _going(company_ref: str) -> Coalesce:
    """Subquery: how many runs of the outer row's company (field company_ref) hold a worker now, 0 if none."""
    counted = (FlowRun.objects.real().filter(status=RunStatus.RUNNING, company=OuterRef(company_ref)).order_by()
               .values("company").annotate(n=Count("pk")).values("n"))
    return Coalesce(Subquery(counted), 0)


def turns() -> Iterator[tuple[int, int]]:
    """(company, its oldest queued run) of the companies whose turn comes next, the fairest first (TURNS_TRIED at most).

    Companies under their maximum only: fewest runs going first, then the one
    whose last run started longest ago (so companies take turns), then the one
    whose oldest queued run has waited longest. One query: a worker reads the
    turns at the start of nearly every run.
    """
    queued = FlowRun.objects.real().filter(status=RunStatus.QUEUED)
    first = queued.filter(company=OuterRef("pk")).order_by("queued_at", "id")
    rows = (Company.objects.filter(pk__in=queued.values("company"))
            .annotate(going=_going("pk"), oldest=Subquery(first.values("queued_at")[:1]),
                      first_run=Subquery(first.values("pk")[:1]))
            .values_list("pk", "max_concurrent_runs", "last_run_started_at", "going", "oldest", "first_run"))
    never = datetime.min.replace(tzinfo=UTC)
    eligible = sorted(
        (going, last_started or never, oldest, company_id, first_run)
        for company_id, maximum, last_started, going, oldest, first_run in rows
        if first_run is not None and going < Company.run_limit_of(maximum)
    )
    for *_, company_id, first_run in eligible[:TURNS_TRIED]:
        yield company_id, first_run


def queued(company_id: int):
    """The company's queued runs (test steps left out), the one that has waited longest first."""
    return FlowRun.objects.real().filter(company_id=company_id, status=RunStatus.QUEUED).order_by("queued_at", "id")


def oldest_queued(company_id: int) -> int | None:
    """The company's run that has waited longest for a worker (test steps left out)."""
    return queued(company_id).values_list("pk", flat=True).first()


def held_back(company_id: int) -> int | None:
    """The company's oldest queued run, if its maximum of concurrent runs may have held it back; else None.

    Called when one of the company's runs gave its worker back. Held back: the
    run was deferred (its task given back for later), or the company is one run
    short of its maximum now, so it was at its maximum until that run ended. A
    task that stood for a queued run of a company at its maximum may have found
    no other company's turn to take and ended (flows.execution.give_turn); a
    queued run of a company under its maximum that was never deferred has its
    task in the queue. One query.
    """
    row = (queued(company_id).annotate(going=_going("company"))
           .values_list("pk", "deferrals", "going", "company__max_concurrent_runs").first())
    if row is None:
        return None
    run_pk, deferrals, going, maximum = row
    return run_pk if deferrals or going >= Company.run_limit_of(maximum) - 1 else None
