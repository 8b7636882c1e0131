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


def turns(*, besides: int | None = None, fewer_than: int | None = None) -> Iterator[int]:
    """Queued runs whose company's turn comes next (at most TURNS_TRIED, the fairest first).

    Companies under their maximum only; `besides`: not this company's runs;
    `fewer_than`: only companies with fewer runs going than that.
    """
    going = dict(
        FlowRun.objects.real().filter(status=RunStatus.RUNNING).order_by().values("company")
        .annotate(n=Count("pk")).values_list("company", "n")
    )
    waiting = (FlowRun.objects.real().filter(status=RunStatus.QUEUED).order_by().values("company")
               .annotate(first=Min("queued_at")).values_list("company", "first"))
    if besides is not None:
        waiting = waiting.exclude(company_id=besides)
    oldest = dict(waiting)
    if not oldest:
        return
    ceiling_of = {c.pk: c.concurrent_run_limit for c in Company.objects.filter(pk__in=oldest).only("max_concurrent_runs")}
    eligible = sorted(
        (going.get(company, 0), first, company)
        for company, first in oldest.items()
        if going.get(company, 0) < ceiling_of.get(company, 0) and (fewer_than is None or going.get(company, 0) < fewer_than)
    )
    for _, _, company in eligible[:TURNS_TRIED]:
        run_pk = oldest_queued(company)
        if run_pk is not None:
            yield run_pk


def oldest_queued(company_id: int) -> int | None:
    """The company's run that has waited longest for a worker (test steps left out)."""
    return (FlowRun.objects.real().filter(company_id=company_id, status=RunStatus.QUEUED)
            .order_by("queued_at", "id").values_list("pk", flat=True).first())
