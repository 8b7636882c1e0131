"""Forgetting old runs: each company keeps run logs for run_log_retention_days and payload samples for
payload_retention_hours (see Company); an hourly huey task (flows.tasks.clean_up_runs) applies both."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from flows.models import FlowRun, FlowRunShape
from patchworks_site.models import Company

logger = logging.getLogger(__name__)


@dataclass
class Cleaned:
    runs: int = 0
    samples: int = 0


def clean_up(now: datetime | None = None) -> Cleaned:
    """Delete runs that finished more than the company's log retention ago; clear older payload samples.

    Runs still queued or running are never deleted. A sample is cleared when
    its shape run started more than the payload retention ago.
    """
    now = now or timezone.now()
    cleaned = Cleaned()
    companies = Company.objects.values_list("pk", "run_log_retention_days", "payload_retention_hours")
    for company_pk, days, hours in companies:
        deleted, by_model = FlowRun.objects.filter(
            company_id=company_pk, finished_at__lt=now - timedelta(days=days)
        ).delete()
        cleaned.runs += by_model.get(FlowRun._meta.label, 0)
        cleaned.samples += FlowRunShape.objects.filter(
            run__company_id=company_pk, payload_sample__isnull=False, started_at__lt=now - timedelta(hours=hours)
        ).update(payload_sample=None)
    if cleaned.runs or cleaned.samples:
        logger.info("Retention: %d run(s) deleted, %d payload sample(s) cleared.", cleaned.runs, cleaned.samples)
    return cleaned
