"""Rate limits and connection pools for an instance's outbound requests.

Both are kept in Django's cache, so with Redis (REDIS_URL) every worker process
shares them. A request first waits for room in the instance's rate limit
window ("remaining requests are queued and sent when the rate limit is released
again"), then holds a slot of its connection pool while in flight, waiting up
to the pool's timeout when none is free. Slot counters carry a time-to-live, so
a worker that dies mid-request cannot leak a slot for ever.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import cache

WINDOW_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
POLL_SECONDS = 0.05
SLOT_TTL_MARGIN = 600


class LimitTimeout(Exception):
    """The request could not start within the time it may wait."""


def _incr(key: str, ttl: int) -> int:
    for _ in range(3):
        cache.add(key, 0, timeout=ttl)
        try:
            return cache.incr(key)
        except ValueError:  # expired between add() and incr(): try again
            continue
    raise LimitTimeout("The request limiter is unavailable; try again.")


def wait_for_rate_limit(instance, max_wait: float | None = None) -> float:
    """Block until the instance's rate limit allows one more request; the seconds waited."""
    if max_wait is None:
        max_wait = settings.OUTBOUND_RATE_LIMIT_MAX_WAIT
    window = WINDOW_SECONDS[instance.rate_limit_unit]
    started = time.monotonic()
    while True:
        now = time.time()
        index = int(now // window)
        if _incr(f"rate:{instance.uid}:{window}:{index}", window + 1) <= instance.rate_limit_amount:
            return time.monotonic() - started
        wait = (index + 1) * window - now
        if time.monotonic() - started + wait > max_wait:
            raise LimitTimeout(
                f"The rate limit of {instance.rate_limit_amount} per {instance.rate_limit_unit} is used up; "
                f"the next request could only be sent in {wait:.0f} s."
            )
        time.sleep(wait + 0.001)


@contextmanager
def pool_slot(pool) -> Iterator[None]:
    """Hold one of the connection pool's slots while the block runs (no pool: no limit)."""
    if pool is None:
        yield
        return
    key = f"pool:{pool.pk}:in-flight"
    ttl = pool.timeout_seconds + SLOT_TTL_MARGIN
    deadline = time.monotonic() + pool.timeout_seconds
    while _incr(key, ttl) > pool.limit:
        cache.decr(key)
        if time.monotonic() >= deadline:
            raise LimitTimeout(
                f'No free slot in connection pool "{pool.name}" within {pool.timeout_seconds} s '
                f"({pool.limit} requests already in flight)."
            )
        time.sleep(POLL_SECONDS)
    try:
        yield
    finally:
        try:
            cache.decr(key)
        except ValueError:  # the counter expired: nothing to release
            pass
