"""Signals apps above flows listen to (flows never imports them).

`run_concluded` is sent once a run has ended (success, partial success,
failed or stopped) and that end is committed, with `run_pk` and `status`.
Receivers run in the worker that concluded the run (or the request that
stopped it): they must only hand work to the task queue (after at most a
query that says whether there is any), and whatever they raise is logged,
never passed on to the run.
"""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal

run_concluded = Signal()


def announce_concluded(run_pk: int, status: str) -> None:
    """Send `run_concluded` once the current transaction commits (at once outside one)."""

    # send_robust logs what a receiver raises (logger "django.dispatch") instead of raising it.
    transaction.on_commit(lambda: run_concluded.send_robust(sender=None, run_pk=run_pk, status=status), robust=True)
