"""The limits store in a SQLite file of its own: shared by every process of this machine (the default)."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import sha256
from pathlib import Path

from instances.outbound.limits.store import (
    MICRO,
    WINDOW_SECONDS,
    Attempt,
    KeyPrefixed,
    Reservation,
    waiter_lease_seconds,
)

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


BUSY_TIMEOUT = 30.0  # seconds a statement waits for another connection's lock


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode, waiting for the other connections that open it at the same moment.

    Switching a file to WAL needs it to itself, and SQLite answers "database
    is locked" at once rather than through the busy timeout when another
    connection is switching it too: processes and threads that open a new
    store together (the web server and a worker on first start) take turns
    here instead of failing. Once the file is in WAL mode the switch is a read.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))


class SQLiteStore(KeyPrefixed):
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
        with self._transaction() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            _use_wal(db)
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

    def pool_acquire(self, pool: str, owner: str, limit: int, lease: float, waiter_lease: float | None = None) -> Attempt:
        """Take a slot for `lease` seconds, or join (or keep, renewed for `waiter_lease` seconds) a place in the queue."""
        pool = f"{self.prefix}:{pool}"
        waiter_us = int((waiter_lease_seconds(lease) if waiter_lease is None else waiter_lease) * MICRO)
        wake: list[str] = []
        with self._transaction() as db:
            now = self._now()
            self._cleanup(db, pool, now)
            row = db.execute("SELECT ticket FROM pool_waiter WHERE pool = ? AND owner = ?", (pool, owner)).fetchone()
            if row is None:
                path = self._socket_path(owner)
                db.execute(
                    "INSERT INTO pool_waiter (pool, owner, expires, wake) VALUES (?, ?, ?, ?)",
                    (pool, owner, now + waiter_us, path),
                )
                ticket = db.execute("SELECT last_insert_rowid()").fetchone()[0]
            else:
                ticket = row[0]
                db.execute(
                    "UPDATE pool_waiter SET expires = ? WHERE ticket = ?", (now + waiter_us, ticket)
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
                if held < limit:
                    # A slot is free but places ahead hold it: one of them may
                    # be a killed waiter, gone when its place's lease runs out.
                    place = db.execute(
                        "SELECT min(expires) FROM pool_waiter WHERE pool = ? AND ticket < ?", (pool, ticket)
                    ).fetchone()[0]
                    first = place if first is None else min(first, place)
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

