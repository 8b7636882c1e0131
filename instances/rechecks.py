"""Scheduled re-checks of stored credentials, at each company's interval.

`run_due_checks()` is a plain function: the task workers call it every five
minutes (flows/tasks.py: recheck_credentials), and `manage.py recheck_instances`
runs it by hand (or `--every SECONDS` in the foreground).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from instances import checks, oauth
from instances.models import CheckSchedule, Instance
from patchworks_site import audit
from patchworks_site.models import Company

DEFAULT_INTERVAL_MINUTES = 24 * 60


def interval_minutes(company: Company) -> int:
    schedule = CheckSchedule.objects.filter(company=company).first()
    return schedule.interval_minutes if schedule else DEFAULT_INTERVAL_MINUTES


def due_instances(now: datetime | None = None) -> list[Instance]:
    """Instances whose last check is older than their company's interval (or that were never checked)."""
    now = now or timezone.now()
    schedules = dict(CheckSchedule.objects.values_list("company_id", "interval_minutes"))
    due: list[Instance] = []
    for company_id in Instance.objects.values_list("company_id", flat=True).distinct().order_by("company_id"):
        minutes = schedules.get(company_id, DEFAULT_INTERVAL_MINUTES)
        if not minutes:
            continue
        cutoff = now - timedelta(minutes=minutes)
        due.extend(
            Instance.objects.for_company(company_id)
            .filter(Q(last_checked_at__isnull=True) | Q(last_checked_at__lte=cutoff))
            .select_related("connector", "auth_method", "company")
            .order_by("last_checked_at", "pk")
        )
    return due


@dataclass
class Rechecked:
    instance: Instance
    ok: bool
    message: str


def run_due_checks(now: datetime | None = None) -> list[Rechecked]:
    """Check every due instance once; the results (also recorded on each instance)."""
    results = []
    oauth.forget_expired()
    with audit.acting_as(None):  # the audit log shows these as done by the system
        for instance in due_instances(now):
            result, _ = checks.recheck(instance)
            results.append(Rechecked(instance, result.ok, result.message))
    return results
