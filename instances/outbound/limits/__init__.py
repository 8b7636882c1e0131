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
lease carries its owner id and an expiry; a heartbeat thread renews it while
the request runs and only its owner releases it, so a killed worker's slot
comes back when its lease runs out. Waiters sleep until they are woken (a
Redis list per waiter, a datagram socket per waiter on SQLite) or a lease is
due to expire; they give up after the pool's timeout with an error naming the
pool. A request waits for its rate limit before it queues for a slot, so it
never holds a slot while throttled.
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from hashlib import sha256
from pathlib import Path

from django.conf import settings

WINDOW_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MICRO = 1_000_000
WAITER_LEASE_SECONDS = 6.0  # a waiter that stops renewing leaves the queue after this


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


@dataclass(frozen=True)
class PoolUsage:
    in_use: int
    waiting: int
    by_instance: dict[int, tuple[int, int]]  # instance pk -> (in use, waiting)


# --- Redis ------------------------------------------------------------------

# Numbers go into Redis as "%d" strings: Lua 5.1 would print microsecond
# timestamps with 14 significant digits and lose precision.
# KEYS: sent (entry -> when it went, then when it finished), pause, counter,
# planned (entry -> the moment it was given, not gone yet).
_RESERVE = """
local window, amount, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local old = string.format('%d', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', old)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', old)
local at = now
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > at then at = paused end
-- The amount-th latest of sent and planned requests together (planned ones
-- come after the sent ones).
local planned = redis.call('ZCARD', KEYS[4])
local nth
if planned >= amount then
  nth = redis.call('ZRANGE', KEYS[4], -amount, -amount, 'WITHSCORES')
elseif redis.call('ZCARD', KEYS[1]) >= amount - planned then
  nth = redis.call('ZRANGE', KEYS[1], planned - amount, planned - amount, 'WITHSCORES')
end
if nth and nth[2] and tonumber(nth[2]) + window > at then at = tonumber(nth[2]) + window end
if at - now > max_wait then return {0, at, now, ''} end
local entry = tostring(redis.call('INCR', KEYS[3]))
if at == now then
  redis.call('ZADD', KEYS[1], string.format('%d', at), entry)
else
  redis.call('ZADD', KEYS[4], string.format('%d', at), entry)
end
local ttl = math.floor((at - now + window) / 1000) + 60000
for _, key in ipairs({KEYS[1], KEYS[3], KEYS[4]}) do redis.call('PEXPIRE', key, ttl) end
return {1, at, now, entry}
"""

# Just before the request goes: check it against what has really been sent
# (finished requests carry their completion time by now) and mark it sent
# now, or plan it later when the window is not free yet.
_CONFIRM = """
local entry, window, amount, max_wait = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREM', KEYS[1], entry)
redis.call('ZREM', KEYS[4], entry)
local at = now
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > at then at = paused end
local nth = redis.call('ZRANGE', KEYS[1], -amount, -amount, 'WITHSCORES')
if nth[2] and tonumber(nth[2]) + window > at then at = tonumber(nth[2]) + window end
if at - now > max_wait then return {0, at, now} end
local ttl = math.floor((at - now + window) / 1000) + 60000
if at == now then
  redis.call('ZADD', KEYS[1], string.format('%d', at), entry)
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('ZADD', KEYS[4], string.format('%d', at), entry)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return {1, at, now}
"""

# The response is in: the request reached the API at the latest when it went
# plus the time it took (measured by the sender: a duration, so no clocks are
# compared; nor is this round trip's latency counted against the limit).
_COMPLETE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local at
if score then
  at = tonumber(score) + tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  at = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
redis.call('ZADD', KEYS[1], 'GT', string.format('%d', at), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[2]) / 1000) + 60000)
return 1
"""

_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then
  redis.call('SET', KEYS[1], string.format('%d', until_), 'PX', math.floor(tonumber(ARGV[1]) / 1000) + 1000)
end
return until_
"""

# KEYS: holders (owner -> lease expiry), queue (owner -> ticket), waiters (owner
# -> waiter expiry), ticket counter. ARGV[1] is the wake key prefix.
_POOL_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function cleanup()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', string.format('%d', now))
  for _, owner in ipairs(gone) do
    redis.call('ZREM', KEYS[2], owner)
    redis.call('ZREM', KEYS[3], owner)
  end
end
local function wake(limit, except)
  local free = limit - redis.call('ZCARD', KEYS[1])
  if free <= 0 then return end
  for _, owner in ipairs(redis.call('ZRANGE', KEYS[2], 0, free - 1)) do
    if owner ~= except then
      local key = ARGV[1] .. owner
      if redis.call('EXISTS', key) == 0 then
        redis.call('RPUSH', key, 1)
        redis.call('PEXPIRE', key, 60000)
      end
    end
  end
end
"""

_POOL_ACQUIRE = _POOL_COMMON + """
local owner, limit = ARGV[2], tonumber(ARGV[3])
local lease, waiter_lease = tonumber(ARGV[4]), tonumber(ARGV[5])
cleanup()
if not redis.call('ZSCORE', KEYS[2], owner) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), owner)
end
redis.call('ZADD', KEYS[3], string.format('%d', now + waiter_lease), owner)
local free = limit - redis.call('ZCARD', KEYS[1])
local ahead = redis.call('ZRANK', KEYS[2], owner)
if ahead < free then
  redis.call('ZREM', KEYS[2], owner)
  redis.call('ZREM', KEYS[3], owner)
  redis.call('ZADD', KEYS[1], string.format('%d', now + lease), owner)
  wake(limit, owner)
  return {1, 0, -1}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_expiry = -1
if first[2] then next_expiry = tonumber(first[2]) - now end
return {0, ahead, next_expiry}
"""

_POOL_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
  return 1
end
return 0
"""

_POOL_RELEASE = _POOL_COMMON + """
local owner, limit = ARGV[2], tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], owner)
redis.call('ZREM', KEYS[2], owner)
redis.call('ZREM', KEYS[3], owner)
redis.call('DEL', ARGV[1] .. owner)
cleanup()
wake(limit, owner)
return 1
"""

_POOL_USAGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local floor = string.format('%d', now)
return {redis.call('ZRANGEBYSCORE', KEYS[1], floor, '+inf'), redis.call('ZRANGEBYSCORE', KEYS[3], floor, '+inf')}
"""


class _Prefixed:
    _prefix: str | None

    @property
    def prefix(self) -> str:
        """Every key starts with this: the store's own, or LIMITS_KEY_PREFIX as set now."""
        return self._prefix if self._prefix is not None else settings.LIMITS_KEY_PREFIX


class RedisStore(_Prefixed):
    """Limits kept in Redis: shared by every process on every machine, timed by the Redis server's clock."""

    name = "redis"

    def __init__(self, url: str, prefix: str | None = None):
        import redis

        self.redis = redis.Redis.from_url(url, health_check_interval=30)
        self._prefix = prefix
        self._reserve = self.redis.register_script(_RESERVE)
        self._confirm = self.redis.register_script(_CONFIRM)
        self._complete = self.redis.register_script(_COMPLETE)
        self._pause = self.redis.register_script(_PAUSE)
        self._acquire = self.redis.register_script(_POOL_ACQUIRE)
        self._renew = self.redis.register_script(_POOL_RENEW)
        self._release = self.redis.register_script(_POOL_RELEASE)
        self._usage = self.redis.register_script(_POOL_USAGE)

    def _rate_keys(self, bucket: str) -> list[str]:
        base = f"{self.prefix}:rate:{{{bucket}}}"  # one hash slot per bucket
        return [f"{base}:sent", f"{base}:pause", f"{base}:seq", f"{base}:planned"]

    def _pool_keys(self, pool: str) -> list[str]:
        base = f"{self.prefix}:pool:{{{pool}}}"
        return [f"{base}:holders", f"{base}:queue", f"{base}:waiters", f"{base}:tickets"]

    def _wake_prefix(self, pool: str) -> str:
        return f"{self.prefix}:pool:{{{pool}}}:wake:"

    def reserve(self, bucket: str, window: float, amount: int, max_wait: float) -> Reservation:
        ok, at, now, entry = self._reserve(self._rate_keys(bucket), [int(window * MICRO), amount, int(max_wait * MICRO)])
        return Reservation(bool(ok), int(at), int(now), entry.decode() if isinstance(entry, bytes) else str(entry))

    def confirm(self, bucket: str, entry: str, window: float, amount: int, max_wait: float) -> Reservation:
        ok, at, now = self._confirm(
            self._rate_keys(bucket), [entry, int(window * MICRO), amount, int(max_wait * MICRO)]
        )
        return Reservation(bool(ok), int(at), int(now), entry)

    def complete(self, bucket: str, entry: str, window: float, took: float) -> None:
        self._complete(self._rate_keys(bucket)[:1], [entry, int(window * MICRO), int(took * MICRO)])

    def pause(self, bucket: str, seconds: float) -> None:
        self._pause([self._rate_keys(bucket)[1]], [int(seconds * MICRO)])

    def paused_buckets(self, buckets: list[str]) -> dict[str, int]:
        """{bucket: end of its pause} of the paused ones (microseconds since the epoch, Redis's clock): one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.get(self._rate_keys(bucket)[1])
            *values, (seconds, micros) = pipe.time().execute()
        now = seconds * MICRO + micros
        return {bucket: int(value) for bucket, value in zip(buckets, values) if value and int(value) > now}

    def clear_pause(self, bucket: str) -> bool:
        return bool(self.redis.delete(self._rate_keys(bucket)[1]))

    def pool_acquire(self, pool: str, owner: str, limit: int, lease: float) -> Attempt:
        acquired, ahead, next_expiry = self._acquire(
            self._pool_keys(pool),
            [self._wake_prefix(pool), owner, limit, int(lease * MICRO), int(WAITER_LEASE_SECONDS * MICRO)],
        )
        return Attempt(bool(acquired), int(ahead), None if next_expiry < 0 else next_expiry / MICRO)

    def pool_wait(self, pool: str, owner: str, timeout: float) -> None:
        # BLPOP takes whole or fractional seconds; 0 would mean "for ever".
        self.redis.blpop([self._wake_prefix(pool) + owner], timeout=max(timeout, 0.001))

    def pool_renew(self, pool: str, owner: str, lease: float) -> bool:
        return bool(self._renew([self._pool_keys(pool)[0]], [owner, int(lease * MICRO)]))

    def pool_release(self, pool: str, owner: str, limit: int) -> None:
        self._release(self._pool_keys(pool), [self._wake_prefix(pool), owner, limit])

    def pool_usage(self, pool: str) -> tuple[list[str], list[str]]:
        holders, waiters = self._usage(self._pool_keys(pool), [])
        return [h.decode() for h in holders], [w.decode() for w in waiters]

    def close(self) -> None:
        self.redis.close()


# --- SQLite (the embedded default) -------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_entry (bucket TEXT NOT NULL, at INTEGER NOT NULL, sent INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS rate_entry_bucket_sent_at ON rate_entry (bucket, sent, at);
CREATE TABLE IF NOT EXISTS rate_pause (bucket TEXT PRIMARY KEY, until INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pool_holder (
  pool TEXT NOT NULL, owner TEXT NOT NULL, expires INTEGER NOT NULL, PRIMARY KEY (pool, owner));
CREATE TABLE IF NOT EXISTS pool_waiter (
  ticket INTEGER PRIMARY KEY AUTOINCREMENT, pool TEXT NOT NULL, owner TEXT NOT NULL,
  expires INTEGER NOT NULL, wake TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS pool_waiter_owner ON pool_waiter (pool, owner);
"""


class SQLiteStore(_Prefixed):
    """Limits kept in a SQLite file of their own: shared by every process of this machine.

    Each operation is one short IMMEDIATE transaction on a connection of its
    own, so it commits at once whatever transaction the request is in and
    never takes the application database's write lock. Waiters are woken by a
    datagram to a socket of their own.
    """

    name = "sqlite"

    def __init__(self, path: str | Path, prefix: str | None = None):
        self.path = str(path)
        self._prefix = prefix
        self._local = threading.local()
        digest = sha256(os.path.abspath(self.path).encode()).hexdigest()[:12]
        self.socket_dir = Path(tempfile.gettempdir()) / f"pw-limits-{digest}"
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db, self._local.pid = db, os.getpid()
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _now() -> int:
        return time.time_ns() // 1000

    def _free_at(self, db: sqlite3.Connection, bucket: str, amount: int, window_us: int, now: int, *, sent_only: bool) -> int:
        at = now
        row = db.execute("SELECT until FROM rate_pause WHERE bucket = ?", (bucket,)).fetchone()
        if row and row[0] > at:
            at = row[0]
        sql = "SELECT at FROM rate_entry WHERE bucket = ?{} ORDER BY sent, at DESC LIMIT 1 OFFSET ?"
        if sent_only:
            row = db.execute(sql.format(" AND sent = 1"), (bucket, amount - 1)).fetchone()
        else:  # planned requests come after the sent ones
            row = db.execute(sql.format(""), (bucket, amount - 1)).fetchone()
        if row and row[0] + window_us > at:
            at = row[0] + window_us
        return at

    def reserve(self, bucket: str, window: float, amount: int, max_wait: float) -> Reservation:
        bucket = f"{self.prefix}:{bucket}"
        window_us = int(window * MICRO)
        with self._transaction() as db:
            now = self._now()
            db.execute("DELETE FROM rate_entry WHERE bucket = ? AND at <= ?", (bucket, now - window_us))
            if random.random() < 0.01:  # now and then, what buckets no longer in use left behind
                db.execute("DELETE FROM rate_entry WHERE at <= ?", (now - 2 * WINDOW_SECONDS["day"] * MICRO,))
                db.execute("DELETE FROM rate_pause WHERE until <= ?", (now,))
                db.execute("DELETE FROM pool_holder WHERE expires <= ?", (now,))
                db.execute("DELETE FROM pool_waiter WHERE expires <= ?", (now,))
            at = self._free_at(db, bucket, amount, window_us, now, sent_only=False)
            if at - now > max_wait * MICRO:
                return Reservation(False, at, now)
            entry = db.execute(
                "INSERT INTO rate_entry (bucket, at, sent) VALUES (?, ?, ?)", (bucket, at, int(at == now))
            ).lastrowid
        return Reservation(True, at, now, str(entry))

    def confirm(self, bucket: str, entry: str, window: float, amount: int, max_wait: float) -> Reservation:
        bucket = f"{self.prefix}:{bucket}"
        window_us = int(window * MICRO)
        with self._transaction() as db:
            now = self._now()
            db.execute("DELETE FROM rate_entry WHERE rowid = ?", (int(entry),))
            at = self._free_at(db, bucket, amount, window_us, now, sent_only=True)
            if at - now > max_wait * MICRO:
                return Reservation(False, at, now, entry)
            db.execute(
                "INSERT INTO rate_entry (rowid, bucket, at, sent) VALUES (?, ?, ?, ?)", (int(entry), bucket, at, int(at == now))
            )
        return Reservation(True, at, now, entry)

    def complete(self, bucket: str, entry: str, window: float, took: float) -> None:
        bucket = f"{self.prefix}:{bucket}"
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE rate_entry SET at = at + ? WHERE rowid = ?", (int(took * MICRO), int(entry))
            ).rowcount
            if not updated:  # pruned while in flight (a request longer than the window)
                db.execute(
                    "INSERT INTO rate_entry (rowid, bucket, at, sent) VALUES (?, ?, ?, 1)", (int(entry), bucket, self._now())
                )

    def pause(self, bucket: str, seconds: float) -> None:
        bucket = f"{self.prefix}:{bucket}"
        with self._transaction() as db:
            until = self._now() + int(seconds * MICRO)
            db.execute(
                "INSERT INTO rate_pause (bucket, until) VALUES (?, ?) "
                "ON CONFLICT (bucket) DO UPDATE SET until = max(until, excluded.until)",
                (bucket, until),
            )

    def paused_buckets(self, buckets: list[str]) -> dict[str, int]:
        """{bucket: end of its pause} of the paused ones (microseconds since the epoch)."""
        names = {f"{self.prefix}:{bucket}": bucket for bucket in buckets}
        keys, now, found = list(names), self._now(), {}
        for start in range(0, len(keys), 500):  # within SQLite's limit on parameters
            chunk = keys[start:start + 500]
            rows = self._db().execute(
                f"SELECT bucket, until FROM rate_pause WHERE until > ? AND bucket IN ({', '.join('?' * len(chunk))})",
                (now, *chunk),
            )
            found.update({names[bucket]: until for bucket, until in rows})
        return found

    def clear_pause(self, bucket: str) -> bool:
        with self._transaction() as db:
            return bool(db.execute("DELETE FROM rate_pause WHERE bucket = ?", (f"{self.prefix}:{bucket}",)).rowcount)

    def _cleanup(self, db: sqlite3.Connection, pool: str, now: int) -> None:
        db.execute("DELETE FROM pool_holder WHERE pool = ? AND expires <= ?", (pool, now))
        db.execute("DELETE FROM pool_waiter WHERE pool = ? AND expires <= ?", (pool, now))

    def _to_wake(self, db: sqlite3.Connection, pool: str, limit: int, owner: str) -> list[str]:
        held = db.execute("SELECT count(*) FROM pool_holder WHERE pool = ?", (pool,)).fetchone()[0]
        if limit - held <= 0:
            return []
        rows = db.execute(
            "SELECT owner, wake FROM pool_waiter WHERE pool = ? ORDER BY ticket LIMIT ?", (pool, limit - held)
        ).fetchall()
        return [wake for waiter, wake in rows if waiter != owner]

    @staticmethod
    def _wake(paths: list[str]) -> None:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        try:
            for path in paths:
                try:
                    sender.sendto(b"1", path)
                except OSError:  # the waiter is gone or already has a wake-up pending
                    pass
        finally:
            sender.close()

    def _socket_path(self, owner: str) -> str:
        return str(self.socket_dir / f"{owner[-24:]}.sock")

    def _socket(self, owner: str) -> tuple[socket.socket, str] | None:
        """This thread's wake-up socket for `owner`: None when it was only now created."""
        waiting = getattr(self._local, "waiting", None)
        if waiting and waiting[0] == owner:
            return waiting[1], waiting[2]
        self.drop_socket()
        path = self._socket_path(owner)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        Path(path).unlink(missing_ok=True)  # left behind by a killed process
        sock.bind(path)
        self._local.waiting = (owner, sock, path)
        return None

    def drop_socket(self) -> None:
        waiting = getattr(self._local, "waiting", None)
        if waiting:
            waiting[1].close()
            Path(waiting[2]).unlink(missing_ok=True)
            self._local.waiting = None

    def pool_acquire(self, pool: str, owner: str, limit: int, lease: float) -> Attempt:
        pool = f"{self.prefix}:{pool}"
        wake: list[str] = []
        with self._transaction() as db:
            now = self._now()
            self._cleanup(db, pool, now)
            row = db.execute("SELECT ticket FROM pool_waiter WHERE pool = ? AND owner = ?", (pool, owner)).fetchone()
            if row is None:
                path = self._socket_path(owner)
                db.execute(
                    "INSERT INTO pool_waiter (pool, owner, expires, wake) VALUES (?, ?, ?, ?)",
                    (pool, owner, now + int(WAITER_LEASE_SECONDS * MICRO), path),
                )
                ticket = db.execute("SELECT last_insert_rowid()").fetchone()[0]
            else:
                ticket = row[0]
                db.execute(
                    "UPDATE pool_waiter SET expires = ? WHERE ticket = ?", (now + int(WAITER_LEASE_SECONDS * MICRO), ticket)
                )
            held = db.execute("SELECT count(*) FROM pool_holder WHERE pool = ?", (pool,)).fetchone()[0]
            ahead = db.execute(
                "SELECT count(*) FROM pool_waiter WHERE pool = ? AND ticket < ?", (pool, ticket)
            ).fetchone()[0]
            acquired = ahead < limit - held
            if acquired:
                db.execute("DELETE FROM pool_waiter WHERE ticket = ?", (ticket,))
                db.execute(
                    "INSERT INTO pool_holder (pool, owner, expires) VALUES (?, ?, ?)", (pool, owner, now + int(lease * MICRO))
                )
                wake = self._to_wake(db, pool, limit, owner)
                next_expiry = None
            else:
                first = db.execute("SELECT min(expires) FROM pool_holder WHERE pool = ?", (pool,)).fetchone()[0]
                next_expiry = None if first is None else (first - now) / MICRO
        if acquired:
            self.drop_socket()
        self._wake(wake)
        return Attempt(acquired, ahead, next_expiry)

    def pool_wait(self, pool: str, owner: str, timeout: float) -> None:
        # The socket is made on the first wait only (most requests find a free
        # slot at once). A wake-up sent before it existed is lost, so that
        # first call returns at once and the caller tries again before sleeping.
        if (existing := self._socket(owner)) is None:
            return
        sock, _ = existing
        sock.settimeout(max(timeout, 0.001))
        try:
            sock.recv(16)
        except TimeoutError:
            pass

    def pool_renew(self, pool: str, owner: str, lease: float) -> bool:
        pool = f"{self.prefix}:{pool}"
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE pool_holder SET expires = ? WHERE pool = ? AND owner = ?",
                (self._now() + int(lease * MICRO), pool, owner),
            ).rowcount
        return bool(updated)

    def pool_release(self, pool: str, owner: str, limit: int) -> None:
        pool = f"{self.prefix}:{pool}"
        with self._transaction() as db:
            db.execute("DELETE FROM pool_holder WHERE pool = ? AND owner = ?", (pool, owner))
            db.execute("DELETE FROM pool_waiter WHERE pool = ? AND owner = ?", (pool, owner))
            self._cleanup(db, pool, self._now())
            wake = self._to_wake(db, pool, limit, owner)
        self.drop_socket()
        self._wake(wake)

    def pool_usage(self, pool: str) -> tuple[list[str], list[str]]:
        pool = f"{self.prefix}:{pool}"
        db = self._db()
        now = self._now()
        holders = db.execute("SELECT owner FROM pool_holder WHERE pool = ? AND expires > ?", (pool, now)).fetchall()
        waiters = db.execute("SELECT owner FROM pool_waiter WHERE pool = ? AND expires > ?", (pool, now)).fetchall()
        return [h for (h,) in holders], [w for (w,) in waiters]

    def close(self) -> None:
        self.drop_socket()
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


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


class _Turns:
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


_bucket_turns: dict[str, _Turns] = {}
_bucket_turns_guard = threading.Lock()


def _forget_bucket_turns() -> None:
    # A forked child (a gunicorn worker) starts with no turns taken: the
    # threads that held them live on in the parent only.
    global _bucket_turns_guard
    _bucket_turns.clear()
    _bucket_turns_guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_bucket_turns)


def _turns(bucket: str) -> _Turns:
    with _bucket_turns_guard:
        return _bucket_turns.setdefault(bucket, _Turns())


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
    bucket: str, amount: int, unit: str, *, max_wait: float | None = None, store_: Store | None = None
) -> RateTicket:
    """Wait for the bucket's next free moment and take it: the ticket to complete once the response is in.

    Raises Throttled, taking nothing, when that moment is more than `max_wait`
    seconds away.
    """
    if max_wait is None:
        max_wait = settings.OUTBOUND_RATE_LIMIT_MAX_WAIT
    store_ = store_ or store()
    window = WINDOW_SECONDS[unit] + settings.RATE_LIMIT_MARGIN_SECONDS
    turns = _turns(bucket)
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
            time.sleep(reservation.wait)
        if turns.wait_turn(turn) or reservation.wait:
            ticket.wait_until_confirmed()
    finally:
        turns.leave(turn)
    return ticket


@contextmanager
def rate_limited(bucket: str, amount: int, unit: str, *, max_wait: float | None = None, store_: Store | None = None) -> Iterator[RateTicket]:
    """Send one request inside the block under the bucket's rate limit."""
    ticket = acquire_rate(bucket, amount, unit, max_wait=max_wait, store_=store_)
    try:
        yield ticket
    finally:
        ticket.complete()


@dataclass
class Waits:
    """Milliseconds spent waiting before requests went: for the rate limit, and for a pool slot."""

    rate_ms: int = 0
    pool_ms: int = 0

    def add(self, what: str, since: float) -> None:
        elapsed = int((time.monotonic() - since) * 1000)
        if what == "rate":
            self.rate_ms += elapsed
        else:
            self.pool_ms += elapsed


@contextmanager
def outbound(instance, waits: Waits | None = None) -> Iterator[Waits]:
    """Send one request of the instance inside the block: first its rate limit, then a slot of its pool.

    The rate limit is waited for without a slot. Once a slot is held, the rate
    limit entry is confirmed; should that still need a wait (a 429 paused the
    bucket meanwhile), the slot is given back for the wait. The time waited for
    each is added to `waits` (the block gets it).
    """
    waits = waits if waits is not None else Waits()
    pool = instance.connection_pool
    since = time.monotonic()
    with rate_limited(rate_bucket(instance), instance.rate_limit_amount, instance.rate_limit_unit) as ticket:
        waits.add("rate", since)
        if pool is None:
            yield waits
            return
        while True:
            since = time.monotonic()
            with pool_slot(pool, instance):
                waits.add("pool", since)
                wait = ticket.confirm()
                if not wait:
                    yield waits
                    return
            since = time.monotonic()
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


def clear_rate_limit_pause(instance) -> bool:
    """End the instance's rate limit pause now, for every worker; whether there was one."""
    return store().clear_pause(rate_bucket(instance))


# --- connection pools -------------------------------------------------------------


def pool_key(pool) -> str:
    return f"{pool.pk}"


@contextmanager
def hold_slot(
    key: str, name: str, limit: int, timeout: float, *, owner: str = "", lease: float | None = None,
    store_: Store | None = None,
) -> Iterator[str]:
    """Hold one slot of a pool while the block runs; the lease's owner id.

    Waits in turn (FIFO across processes) for at most `timeout` seconds, then
    raises PoolTimeout naming the pool.
    """
    store_ = store_ or store()
    lease = lease or settings.CONNECTION_POOL_LEASE_SECONDS
    owner = f"{owner}:{uuid.uuid4().hex}" if owner else uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    try:
        while not (attempt := store_.pool_acquire(key, owner, limit, lease)).acquired:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolTimeout(
                    f'No free slot in connection pool "{name}" within {timeout:g} s '
                    f"({limit} requests already in flight)."
                )
            # Sleep until woken, a lease could run out, or the waiter's own
            # place in the queue needs renewing.
            nap = min(remaining, WAITER_LEASE_SECONDS / 3)
            if attempt.next_expiry is not None:
                nap = min(nap, attempt.next_expiry + 0.001)
            store_.pool_wait(key, owner, nap)
    except BaseException:
        store_.pool_release(key, owner, limit)  # leave the queue (or the slot, if just taken)
        raise
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lease / 3):
            store_.pool_renew(key, owner, lease)

    beat = threading.Thread(target=heartbeat, name=f"pool-lease-{name}", daemon=True)
    beat.start()
    try:
        yield owner
    finally:
        stop.set()
        beat.join()
        store_.pool_release(key, owner, limit)


@contextmanager
def pool_slot(pool, instance=None) -> Iterator[None]:
    """Hold one of the connection pool's slots while the block runs (no pool: no limit)."""
    if pool is None:
        yield
        return
    owner = f"i{instance.pk}" if instance is not None else ""
    with hold_slot(pool_key(pool), pool.name, pool.limit, pool.timeout_seconds, owner=owner):
        yield


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


# --- 429 Too Many Requests ----------------------------------------------------

def max_pause_seconds() -> float:
    """The longest an API's Retry-After (or reset header) may pause a rate limit (OUTBOUND_MAX_RETRY_AFTER_SECONDS)."""
    return max(0.0, float(settings.OUTBOUND_MAX_RETRY_AFTER_SECONDS))


def _number(value: str) -> float | None:
    """A header's number; None when it is not one (or NaN). It may be infinite ("1" * 400): cut below."""
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return None if number != number else number


def retry_delay(headers: dict[str, str], attempt: int, *, now: float | None = None) -> float:
    """Seconds to hold back after a 429: the API's own word, else an exponential backoff; plus jitter.

    Retry-After is seconds or an HTTP date; X-RateLimit-Reset / RateLimit-Reset
    are either an epoch timestamp or seconds from now. Whatever they say, the
    delay is at most OUTBOUND_MAX_RETRY_AFTER_SECONDS: one absurd answer
    (1e12 seconds, a date in year 9999) must not stop an instance for days.
    """
    now = time.time() if now is None else now
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    delay: float | None = None
    if value := lowered.get("retry-after"):
        delay = _number(value)
        if delay is None:
            try:
                delay = parsedate_to_datetime(value).timestamp() - now
            except (TypeError, ValueError, IndexError, OverflowError):
                delay = None
    if delay is None:
        for name in ("x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset"):
            reset = _number(lowered.get(name, ""))
            if reset is None:
                continue
            delay = reset - now if reset > 1e9 else reset
            break
    if delay is None:  # absent or unreadable
        delay = 2.0**min(attempt, 30)
    maximum = max_pause_seconds()
    delay = min(max(delay, 0.0), maximum)  # negative or in the past: now
    # Jitter spreads the retries of several workers; it only ever adds, and never past the maximum.
    return min(delay + random.uniform(0, min(1.0, 0.1 * delay + 0.05)), maximum)
