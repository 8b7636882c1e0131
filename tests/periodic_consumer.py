"""`manage.py run_huey` whose scheduler looks for periodic jobs every second, with one more periodic job: beat.

Huey's scheduler enqueues periodic jobs once a minute; the test of flows.periodic
needs several periods within seconds. beat is enqueued at every look (its crontab
matches every minute), guarded like the project's jobs for a period of
BEAT_PERIOD_SECONDS, and appends its worker's pid to the file BEAT_LOG each time
its body runs. Run as `python -m tests.periodic_consumer run_huey ...`.
"""

from __future__ import annotations

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "patchworks_site.settings")
django.setup()

from django.core.management import execute_from_command_line  # noqa: E402
from huey import crontab  # noqa: E402
from huey.consumer import Scheduler  # noqa: E402
from huey.contrib.djhuey import db_periodic_task  # noqa: E402

from flows.periodic import once_per_period  # noqa: E402

Scheduler.periodic_task_seconds = 1


@db_periodic_task(crontab(), name="beat")
@once_per_period(float(os.environ["BEAT_PERIOD_SECONDS"]), name="beat")
def beat() -> None:
    with open(os.environ["BEAT_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")


if __name__ == "__main__":
    execute_from_command_line(["manage.py", *sys.argv[1:]])
