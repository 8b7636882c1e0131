"""What the two limit stores answer, and the key prefix they share.

The stores themselves are `store_redis.py` (every machine) and
`store_sqlite.py` (one machine); `limits/__init__.py` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

WINDOW_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MICRO = 1_000_000


def pool_lease_seconds() -> float:
    """How long a pool slot stays held without a renewal: CONNECTION_POOL_LEASE_SECONDS."""
    return float(settings.CONNECTION_POOL_LEASE_SECONDS)


def waiter_lease_seconds(lease: float) -> float:
    """How long a queued request keeps its place without renewing it: half the slot lease.

    A waiter renews its place at least every third of this (each time it looks
    for a slot), and one held back by a free slot sleeps only until the first
    place ahead of it runs out: a killed waiter at the head of the queue holds
    back a free slot for about this long at most.
    """
    return lease / 2


def shortest_pool_timeout(lease: float | None = None) -> float:
    """The shortest wait for a slot a pool may have: longer than the lease by a third of it.

    A killed worker's slot comes back at most one lease after the kill; the
    third (the heartbeat's period) leaves room for the waiter to take it.
    """
    lease = pool_lease_seconds() if lease is None else lease
    return lease + lease / 3


@dataclass(frozen=True)
class Reservation:
    ok: bool
    at: int  # store clock, microseconds since the epoch
    now: int
    entry: str = ""  # the log entry written (when ok)

    @property
    def wait(self) -> float:
        return max(0.0, (self.at - self.now) / MICRO)


@dataclass(frozen=True)
class Attempt:
    acquired: bool
    ahead: int = 0  # tickets ahead in the queue
    # Seconds until the first lease that holds this waiter back could run out:
    # a held slot's or, when a slot is free, a place ahead in the queue.
    next_expiry: float | None = None



class KeyPrefixed:
    """A store whose keys (Redis) or rows (SQLite) all start with one prefix."""

    _prefix: str | None

    @property
    def prefix(self) -> str:
        """Every key starts with this: the store's own, or LIMITS_KEY_PREFIX as set now."""
        return self._prefix if self._prefix is not None else settings.LIMITS_KEY_PREFIX
