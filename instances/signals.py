"""Signals apps above instances listen to (instances never imports them).

`credentials_rechecked` is sent after each re-check of an instance's stored
credentials (checks.recheck: the scheduled ones and **check now**), once committed,
with `instance_pk`, `ok` and `reauth_needed` (the instance needs its
credentials entered again). Receivers must only hand work to the task queue;
whatever they raise is logged, never passed on to the re-checks.
"""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal

credentials_rechecked = Signal()


def announce_rechecked(instance_pk: int, *, ok: bool, reauth_needed: bool) -> None:
    # send_robust logs what a receiver raises (logger "django.dispatch") instead of raising it.
    transaction.on_commit(
        lambda: credentials_rechecked.send_robust(sender=None, instance_pk=instance_pk, ok=ok, reauth_needed=reauth_needed),
        robust=True,
    )
