"""What the two limit stores answer, and the key prefix they share.

The stores themselves are `store_redis.py` (every machine) and
`store_sqlite.py` (one machine); `limits/__init__.py` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

WINDOW_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MICRO = 1_000_000
WAITER_LEASE_SECONDS = 6.0  # a waiter that stops renewing leaves the queue after this

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
    next_expiry: float | None = None  # seconds until the first held lease runs out




class KeyPrefixed:
    """A store whose keys (Redis) or rows (SQLite) all start with one prefix."""

    _prefix: str | None

    @property
    def prefix(self) -> str:
        """Every key starts with this: the store's own, or LIMITS_KEY_PREFIX as set now."""
        return self._prefix if self._prefix is not None else settings.LIMITS_KEY_PREFIX
