"""`manage.py check_workers`: exits 1 when no task worker has run the minute tick lately (for monitoring)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from flows.models import PeriodicJobRun


class Command(BaseCommand):
    help = "Say when a task worker last ran the minute tick; exit 1 if that is longer ago than --max-age seconds."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--max-age", type=int, default=180, help="seconds (default 180: three missed minutes)")

    def handle(self, *args, max_age: int, **options) -> None:
        last = PeriodicJobRun.objects.filter(job="tick").order_by("-period_start").first()
        if last is None:
            raise CommandError("No task worker has run the minute tick yet.")
        age = (timezone.now() - last.started_at) // timedelta(seconds=1)
        if age > max_age:
            raise CommandError(f"No task worker has run the minute tick for {age} s (last on {last.worker}).")
        self.stdout.write(f"The minute tick ran {age} s ago on {last.worker}.")
