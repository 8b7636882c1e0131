"""Re-check the stored credentials of every instance that is due (each company's interval)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from instances.rechecks import run_due_checks


class Command(BaseCommand):
    help = "Re-check the credentials of instances whose last check is older than their company's interval."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--every", type=float, default=0,
            help="Keep running, looking for due instances every this many seconds (default: once, for cron).",
        )

    def handle(self, *args, every: float = 0, **options) -> None:
        while True:
            results = run_due_checks()
            for item in results:
                style = self.style.SUCCESS if item.ok else self.style.ERROR
                self.stdout.write(style(f"{item.instance.company.name} / {item.instance.name}: {item.message}"))
            self.stdout.write(f"{len(results)} instance(s) re-checked.")
            if every <= 0:
                return
            time.sleep(every)
