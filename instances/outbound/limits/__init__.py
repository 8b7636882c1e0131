"""Rate limits and connection pools for an instance's outbound requests.

Both live in one shared store so that every worker process holds them: Redis
when REDIS_URL is set (every machine, Redis's own clock), otherwise a SQLite
file of its own next to the database (every process of this machine).

Rate limit — an exact sliding-window log with reservations. A request asks the
store for the earliest moment it may go: now, the moment the request `amount`
places back (sent or planned) leaves the window plus a small margin, or the end
of a pause set after a 429. The store plans it for that moment atomically; the
request sleeps until then and nobody polls. Just before it goes it is checked
again against the requests really sent (a finished one is dated by when it went
plus how long it took, so it counts until the API has certainly seen it) and
marked sent, or planned later. So no window of the unit ever holds more than
`amount` at the API's side, and the requests of one process go oldest first.
When the moment is further away than `OUTBOUND_RATE_LIMIT_MAX_WAIT`, nothing is
planned and `Throttled` says when the next request will be possible.

Connection pool — a fair distributed semaphore with leases. A request joins
the pool's queue (a ticket), and takes a slot when fewer than `limit` leases
are held and at most as many tickets are ahead of it as slots are free. A
lease carries its owner id and an expiry; a heartbeat thread renews it every
third of CONNECTION_POOL_LEASE_SECONDS while the request runs (a renewal that
fails is retried sooner) and only its owner releases it, so a killed worker's
slot comes back when its lease runs out. A waiter's place in the queue is a
lease too, half as long and renewed each time the waiter looks for a slot, so
a killed waiter holds back a free slot for at most about half the slot lease.
Waiters sleep until they are woken (a Redis list per waiter, a datagram socket
per waiter on SQLite) or a lease that holds them back is due to expire; they
give up after the pool's timeout (never shorter than the slot lease plus a
third of it) with an error naming the pool. A request waits for its rate limit
before it queues for a slot, so it never holds a slot while throttled.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from hashlib import sha256

from django.conf import settings

from instances.outbound.limits.store import (
    MICRO,
    WINDOW_SECONDS,
    pool_lease_seconds,
    shortest_pool_timeout,
    waiter_lease_seconds,
)
from instances.outbound.limits.store_redis import RedisStore
from instances.outbound.limits.store_sqlite import SQLiteStore
from instances.outbound.retry import max_pause_seconds
from patchworks_site import metrics

logger = logging.getLogger(__name__)


class LimitTimeout(Exception):
    """The request could not start within the time it may wait."""


class Throttled(LimitTimeout):
    """The rate limit allows the next request only at `until` (UTC), too far away to wait for."""

    def __init__(self, until: datetime, amount: int, unit: str):
        self.until = until
        super().__init__(
            f"Rate limit reached ({amount} per {unit}): the next request is possible at "
            f"{until:%Y-%m-%d %H:%M:%S} UTC."
        )


class PoolTimeout(LimitTimeout):
    """No slot of the named connection pool came free within its timeout."""


@dataclass(frozen=True)
class PoolUsage:
    in_use: int
    waiting: int
    by_instance: dict[int, tuple[int, int]]  # instance pk -> (in use, waiting)


Store = RedisStore | SQLiteStore


@cache
def _store(redis_url: str, path: str) -> Store:
    return RedisStore(redis_url) if redis_url else SQLiteStore(path)


def store() -> Store:
    """The configured store: Redis when REDIS_URL is set, otherwise the embedded SQLite file."""
    return _store(settings.REDIS_URL, str(settings.LIMITS_STORE_PATH))


# --- rate limits ----------------------------------------------------------------


class _FifoLock:
    """A lock that lets threads in in the order they asked (threading.Lock promises no order)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._queue: deque[threading.Event] = deque()
        self._held = False

    def __enter__(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._queue.append(turn)
        turn.wait()

    def __exit__(self, *exc) -> None:
        with self._mutex:
            if self._queue:
                self._queue.popleft().set()  # hand over directly: nobody can cut in
            else:
                self._held = False


class _ArrivalOrder:
    """The requests of one bucket in this process: they reserve in arrival order and go in that order.

    Reservations are made one at a time (a FIFO lock around one round trip to
    the store); the waits then run side by side, and a request goes only
    after every earlier one has gone or given up.
    """

    def __init__(self) -> None:
        self.reserving = _FifoLock()
        self._cond = threading.Condition()
        self._next = 0
        self._going = 0
        self._gone: set[int] = set()

    def join(self) -> int:
        with self._cond:
            self._next += 1
            return self._next - 1

    def wait_turn(self, turn: int) -> bool:
        """Wait until every earlier request has gone; whether that took any waiting."""
        with self._cond:
            if self._going == turn:
                return False
            self._cond.wait_for(lambda: self._going == turn)
            return True

    def leave(self, turn: int) -> None:
        with self._cond:
            self._gone.add(turn)
            while self._going in self._gone:
                self._gone.discard(self._going)
                self._going += 1
            self._cond.notify_all()


_arrival_orders: dict[str, _ArrivalOrder] = {}
_arrival_orders_guard = threading.Lock()


def _forget_arrival_orders() -> None:
    # A forked child (a gunicorn worker) starts with no turns taken: the
    # threads that held them live on in the parent only.
    global _arrival_orders_guard
    _arrival_orders.clear()
    _arrival_orders_guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_arrival_orders)


def _arrival_order(bucket: str) -> _ArrivalOrder:
    with _arrival_orders_guard:
        return _arrival_orders.setdefault(bucket, _ArrivalOrder())


def rate_bucket(instance) -> str:
    """The instance's rate limit bucket: its shared rate limit's when it has one."""
    group = (getattr(instance, "rate_limit_group", "") or "").strip().casefold()
    if group:
        return f"group:{instance.company_id}:{sha256(group.encode()).hexdigest()[:16]}"
    return f"instance:{instance.uid}"


@dataclass
class RateTicket:
    """One request's entry in a rate limit log, from its reservation to its response."""

    store: Store
    bucket: str
    entry: str
    window: float
    amount: int
    unit: str
    max_wait: float
    waited: float = 0.0
    withdrawn: bool = False
    went: float = 0.0  # time.monotonic() just before the store dated the entry "now"

    def confirm(self) -> float:
        """Move the entry to now, just before the request goes; or the seconds it must still wait.

        The entry was placed from what the log held at reservation time; by
        now earlier requests may have finished later than planned (their
        entries moved to their completion), or a 429 paused the bucket.
        """
        # Timed from before the call: the store's "now" falls after this, so
        # the duration reported at completion can only overstate.
        before = time.monotonic()
        result = self.store.confirm(self.bucket, self.entry, self.window, self.amount, self.max_wait)
        if not result.ok:  # the store dropped the entry: nothing is taken
            self.withdrawn = True
            raise Throttled(datetime.fromtimestamp(time.time() + result.wait, tz=UTC), self.amount, self.unit)
        if not result.wait:
            self.went = before
        return result.wait

    def wait_until_confirmed(self) -> None:
        while wait := self.confirm():
            time.sleep(wait)
            self.waited += wait

    def complete(self) -> None:
        """The response is in: the request reached the API by now at the latest."""
        if not self.withdrawn:
            self.store.complete(self.bucket, self.entry, self.window, time.monotonic() - self.went)


def acquire_rate(
    bucket: str, amount: int, unit: str, *, max_wait: float | None = None, store_: Store | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> RateTicket:
    """Wait for the bucket's next free moment and take it: the ticket to complete once the response is in.

    Raises Throttled, taking nothing, when that moment is more than `max_wait`
    seconds away.
    """
    if max_wait is None:
        max_wait = settings.OUTBOUND_RATE_LIMIT_MAX_WAIT
    store_ = store_ or store()
    window = WINDOW_SECONDS[unit] + settings.RATE_LIMIT_MARGIN_SECONDS
    turns = _arrival_order(bucket)
    with turns.reserving:
        turn = turns.join()
        before = time.monotonic()
        try:
            reservation = store_.reserve(bucket, window, amount, max_wait)
        except BaseException:
            turns.leave(turn)
            raise
    try:
        if not reservation.ok:
            raise Throttled(datetime.fromtimestamp(time.time() + reservation.wait, tz=UTC), amount, unit)
        ticket = RateTicket(store_, bucket, reservation.entry, window, amount, unit, max_wait, reservation.wait)
        ticket.went = before
        if reservation.wait:
            if on_wait is not None:
                on_wait(reservation.wait)
            time.sleep(reservation.wait)
        if turns.wait_turn(turn) or reservation.wait:
            ticket.wait_until_confirmed()
    finally:
        turns.leave(turn)
    return ticket


@contextmanager
def rate_limited(
    bucket: str, amount: int, unit: str, *, max_wait: float | None = None, store_: Store | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> Iterator[RateTicket]:
    """Send one request inside the block under the bucket's rate limit."""
    ticket = acquire_rate(bucket, amount, unit, max_wait=max_wait, store_=store_, on_wait=on_wait)
    try:
        yield ticket
    finally:
        ticket.complete()


@dataclass
class TimeWaited:
    """Milliseconds spent waiting before requests went: for the rate limit, and for a pool slot.

    `on_wait`, when given, hears of a wait as it starts: ("rate", seconds) before
    a sleep for the rate limit, ("pool", None) when no slot of the pool is free,
    so whoever waits can say so (a run page's "waiting for a connection-pool slot").
    """

    rate_ms: int = 0
    pool_ms: int = 0
    on_wait: Callable[[str, float | None], None] | None = None

    def heard(self, what: str, seconds: float | None = None) -> None:
        if self.on_wait is not None:
            self.on_wait(what, seconds)

    def add(self, what: str, since: float) -> None:
        elapsed = int((time.monotonic() - since) * 1000)
        if what == "rate":
            self.rate_ms += elapsed
        else:
            self.pool_ms += elapsed


@contextmanager
def outbound(instance, waits: TimeWaited | None = None) -> Iterator[TimeWaited]:
    """Send one request of the instance inside the block: first its rate limit, then a slot of its pool.

    The rate limit is waited for without a slot. Once a slot is held, the rate
    limit entry is confirmed; should that still need a wait (a 429 paused the
    bucket meanwhile), the slot is given back for the wait. The time waited for
    each is added to `waits` (the block gets it).
    """
    waits = waits if waits is not None else TimeWaited()
    pool = instance.connection_pool
    since = time.monotonic()
    rate_wait = None if waits.on_wait is None else (lambda seconds: waits.heard("rate", seconds))
    pool_wait = None if waits.on_wait is None else (lambda: waits.heard("pool"))
    with rate_limited(rate_bucket(instance), instance.rate_limit_amount, instance.rate_limit_unit,
                      on_wait=rate_wait) as ticket:
        waits.add("rate", since)
        if pool is None:
            yield waits
            return
        while True:
            since = time.monotonic()
            with pool_slot(pool, instance, on_wait=pool_wait):
                waits.add("pool", since)
                wait = ticket.confirm()
                if not wait:
                    yield waits
                    return
            since = time.monotonic()
            waits.heard("rate", wait)
            time.sleep(wait)
            waits.add("rate", since)


def pause_rate_limit(instance, seconds: float) -> None:
    """Hold back every request of the instance's bucket, in every worker, for `seconds` (after a 429).

    At most OUTBOUND_MAX_RETRY_AFTER_SECONDS, whatever the caller asks.
    """
    seconds = seconds if seconds == seconds else 0.0  # NaN
    store().pause(rate_bucket(instance), min(max(seconds, 0.0), max_pause_seconds()))


def rate_limit_paused_until(instance) -> datetime | None:
    """When the pause a 429 set on the instance's rate limit ends (UTC), or None when it is not paused."""
    return rate_limit_pauses([instance]).get(instance.pk)


def rate_limit_pauses(instances) -> dict[int, datetime]:
    """{pk: when the pause ends (UTC)} of those `instances` whose rate limit a 429 has paused; one store read.

    `instances` need pk, uid, company_id and rate_limit_group (what `rate_bucket` uses).
    """
    by_bucket: dict[str, list[int]] = {}
    for instance in instances:
        by_bucket.setdefault(rate_bucket(instance), []).append(instance.pk)
    if not by_bucket:
        return {}
    found = store().paused_buckets(list(by_bucket))
    return {
        pk: datetime.fromtimestamp(until / MICRO, UTC) for bucket, until in found.items() for pk in by_bucket[bucket]
    }


def note_rate_limit_pauses(rows: list) -> None:
    """Set `rate_limit_paused_until` on each row (an instance, or a row with its pk, uid, company_id and
    rate_limit_group): when the pause an API's 429 set ends, or None. One read of the store; when the
    store is unavailable, no row is shown paused."""
    try:
        pauses = rate_limit_pauses(rows)
    except STORE_ERRORS:
        pauses = {}
    for row in rows:
        row.rate_limit_paused_until = pauses.get(row.pk)


def clear_rate_limit_pause(instance) -> bool:
    """End the instance's rate limit pause now, for every worker; whether there was one."""
    return store().clear_pause(rate_bucket(instance))


# --- connection pools -------------------------------------------------------------


def pool_key(pool) -> str:
    return f"{pool.pk}"


@contextmanager
def hold_slot(
    key: str, name: str, limit: int, timeout: float, *, owner: str = "", lease: float | None = None,
    store_: Store | None = None, on_wait: Callable[[], None] | None = None,
) -> Iterator[str]:
    """Hold one slot of a pool while the block runs; the lease's owner id.

    Waits in turn (FIFO across processes) for at most `timeout` seconds, then
    raises PoolTimeout naming the pool. The slot's lease (CONNECTION_POOL_LEASE_SECONDS
    unless given) is renewed every third of it for as long as the block runs,
    and the waiter's place in the queue every third of its own, shorter lease.
    `on_wait` is called once, when the first try finds no free slot.
    """
    store_ = store_ or store()
    lease = lease or pool_lease_seconds()
    waiter_lease = waiter_lease_seconds(lease)
    owner = f"{owner}:{uuid.uuid4().hex}" if owner else uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    told = on_wait is None
    try:
        while not (attempt := store_.pool_acquire(key, owner, limit, lease, waiter_lease)).acquired:
            if not told:
                told = True
                on_wait()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolTimeout(
                    f'No free slot in connection pool "{name}" within {timeout:g} s '
                    f"({limit} requests already in flight)."
                )
            # Sleep until woken, a lease that holds this waiter back could run
            # out, or the waiter's own place in the queue needs renewing.
            nap = min(remaining, waiter_lease / 3)
            if attempt.next_expiry is not None:
                nap = min(nap, attempt.next_expiry + 0.001)
            store_.pool_wait(key, owner, nap)
    except BaseException:
        store_.pool_release(key, owner, limit)  # leave the queue (or the slot, if just taken)
        raise
    stop = threading.Event()
    beat = threading.Thread(
        target=_renew_lease, args=(store_, key, name, owner, lease, stop), name=f"pool-lease-{name}", daemon=True
    )
    beat.start()
    try:
        yield owner
    finally:
        stop.set()
        beat.join()
        store_.pool_release(key, owner, limit)


def _renew_lease(store_: Store, key: str, name: str, owner: str, lease: float, stop: threading.Event) -> None:
    """Renew a held slot's lease every third of it until `stop` is set, however long the request runs.

    A renewal that fails (the store unreachable for a moment, a lock timeout)
    is retried every twelfth of the lease rather than ending the heartbeat, so
    a hiccup shorter than about two thirds of the lease loses no healthy slot.
    """
    period, retry = lease / 3, lease / 12
    wait, lost = period, False
    while not stop.wait(wait):
        try:
            held = store_.pool_renew(key, owner, lease)
        except Exception:
            logger.warning('Renewing a slot of connection pool "%s" failed; retrying in %.1f s', name, retry, exc_info=True)
            wait = retry
            continue
        if not held and not lost:
            # The lease ran out before this renewal (the process stalled for
            # longer than the lease): the slot may be someone else's by now.
            logger.warning('The lease of a slot of connection pool "%s" ran out while its request was running', name)
            lost = True
        wait = period


@contextmanager
def pool_slot(pool, instance=None, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold one of the connection pool's slots while the block runs (no pool: no limit)."""
    if pool is None:
        yield
        return
    owner = f"i{instance.pk}" if instance is not None else ""
    with hold_slot(pool_key(pool), pool.name, pool.limit, pool_timeout(pool), owner=owner, on_wait=on_wait):
        metrics.POOL_SLOTS_IN_USE.inc()
        try:
            yield
        finally:
            metrics.POOL_SLOTS_IN_USE.dec()


def pool_timeout(pool) -> float:
    """How long a request waits for a slot of `pool`: its timeout, never shorter than the lease plus a third.

    The pool form refuses shorter timeouts; this covers rows saved before, or
    a lease lengthened in the settings since: a waiter must outlast the lease
    of a slot whose worker was killed, or it gives up just before the slot comes back.
    """
    return max(float(pool.timeout_seconds), shortest_pool_timeout())


def _store_errors() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - redis is a requirement
        return (OSError, sqlite3.Error)
    return (OSError, sqlite3.Error, RedisError)


STORE_ERRORS = _store_errors()


def pool_usage(pool) -> PoolUsage:
    """Slots in use and waiting requests of a pool right now, also per instance."""
    holders, waiters = store().pool_usage(pool_key(pool))
    by_instance: dict[int, tuple[int, int]] = {}
    for owners, column in ((holders, 0), (waiters, 1)):
        for owner in owners:
            head = owner.split(":", 1)[0]
            if head.startswith("i") and head[1:].isdigit():
                counts = list(by_instance.get(int(head[1:]), (0, 0)))
                counts[column] += 1
                by_instance[int(head[1:])] = (counts[0], counts[1])
    return PoolUsage(len(holders), len(waiters), by_instance)


