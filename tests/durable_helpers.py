"""What the durable-run tests share: real workers with short leases, a third-party API that honours
idempotency keys (or not) and can hold a request until its worker is killed, and a proxy to the Sandbox.

A kill is placed by holding one request in the API: the test kills the worker
while that request waits (`OrdersAPI.hold_when`), so where the run was is known
without any sleep.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable

import requests
from django.db import transaction
from werkzeug import Request, Response

from flows import queueing
from flows.models import FlowRun, RunStatus, RunTrigger
from tests.redis_helpers import require_redis
from tests.test_engine_workers import REDIS_URL, Workers

LEASE_SECONDS = 3
FINISHED = (RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS, RunStatus.FAILED, RunStatus.STOPPED)
ORDERS = [{"id": n, "reference": f"SO-{n}", "total": f"{n}0.00"} for n in range(1, 7)]
PER_PAGE = 2  # three pages of two orders, then an empty page
KEY_HEADER = "Idempotency-Key"
KEY_FIELD = "idempotency_key"  # where an API that takes its key in the body reads it


def make_workers(engine: str, tmp_path, settings) -> Workers:
    """Workers whose lost runs resume within a few seconds (short lease, watcher every half second)."""
    if engine == "redis":
        require_redis(REDIS_URL)
    pool = Workers(engine, tmp_path)
    pool.env.update({
        "FLOW_RUN_LEASE_SECONDS": str(LEASE_SECONDS),
        "FLOW_WATCH_INTERVAL_SECONDS": "0.5",
        # This test's rate limit buckets only (instance pks repeat across test databases).
        "LIMITS_KEY_PREFIX": settings.LIMITS_KEY_PREFIX,
    })
    return pool


def kill(process: subprocess.Popen) -> None:
    """kill -9: the worker writes nothing more, its lease runs out."""
    process.send_signal(signal.SIGKILL)
    process.wait()


def wait_for(predicate: Callable[[], object], what: Callable[[], str] | str, timeout: float = 90) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"Timed out after {timeout:g} s waiting for {what() if callable(what) else what}.")


def queue(flow) -> FlowRun:
    with transaction.atomic():
        return queueing.queue_run(flow, RunTrigger.MANUAL)


def finished(run: FlowRun, workers: Workers, timeout: float = 90) -> FlowRun:
    return wait_for(lambda: FlowRun.objects.filter(pk=run.pk, status__in=FINISHED).first(),
                    lambda: f"run {run.pk} to finish; worker logs:\n{workers.logs()[-6000:]}", timeout)


def body_hash(body: object) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Hold:
    """One request held until `release` (the test kills its worker meanwhile); stored first or not."""

    def __init__(self, matches: Callable[[object], bool], stored: bool):
        self.matches, self.stored = matches, stored
        self.arrived, self.release = threading.Event(), threading.Event()


class OrdersAPI:
    """The third party on pytest-httpserver: GET /api/orders (page, per_page) and POST /api/imports.

    With `keys`, POST honours an idempotency key as Stripe does: the same key
    with the same body gets the first answer again and stores nothing; with
    another body, 409. The key is the Idempotency-Key header, or with
    `key_in="body"` the order's KEY_FIELD. Without keys, every POST stores what it got.
    """

    def __init__(self, httpserver, orders: list[dict] | None = None, *, keys: bool = True, key_in: str = "header"):
        self.orders = [dict(order) for order in (orders or ORDERS)]
        self.keys, self.key_in = keys, key_in
        self.lock = threading.Lock()
        self.stored: list[dict] = []
        self.posts: list[tuple[str | None, object]] = []  # (idempotency key, body) of every POST, in order
        self.replays = 0
        self.answers: dict[str, tuple[str, dict]] = {}
        self.pages: list[str] = []
        self.hold: Hold | None = None
        self.holds: list[Hold] = []
        httpserver.expect_request("/api/orders").respond_with_handler(self.list_orders)
        httpserver.expect_request("/api/imports", method="POST").respond_with_handler(self.import_orders)

    def hold_when(self, matches: Callable[[object], bool], *, stored: bool) -> Hold:
        """Hold the next POST whose body `matches`: after storing it (an answer lost) or before (a send cut short)."""
        self.hold = Hold(matches, stored)
        self.holds.append(self.hold)
        return self.hold

    def release_all(self) -> None:
        for hold in self.holds:
            hold.release.set()

    def list_orders(self, request: Request) -> Response:
        page, size = int(request.args.get("page", 1)), int(request.args.get("per_page", PER_PAGE))
        self.pages.append(str(page))
        return Response(json.dumps({"orders": self.orders[(page - 1) * size: page * size]}),
                        content_type="application/json")

    def import_orders(self, request: Request) -> Response:
        body = json.loads(request.data)
        if self.key_in == "body":
            key = body.get(KEY_FIELD) if isinstance(body, dict) else None
        else:
            key = request.headers.get(KEY_HEADER)
        with self.lock:
            self.posts.append((key, body))
            hold = self.hold if self.hold is not None and self.hold.matches(body) else None
            if hold is not None:
                self.hold = None
        if hold is not None and not hold.stored:
            hold.arrived.set()
            hold.release.wait(30)
            return Response(status=503)
        status, answer = self.store(key, body)
        if hold is not None:
            hold.arrived.set()
            hold.release.wait(30)
        return Response(json.dumps(answer), status=status, content_type="application/json")

    def store(self, key: str | None, body: object) -> tuple[int, dict]:
        with self.lock:
            if self.keys and key:
                if key in self.answers:
                    first_hash, answer = self.answers[key]
                    if first_hash != body_hash(body):
                        return 409, {"error": {"type": "idempotency_error", "message": (
                            "Keys for idempotent requests can only be used with the same parameters they were "
                            "first used with")}}
                    self.replays += 1
                    return 201, answer
            items = body if isinstance(body, list) else [body]
            self.stored += items
            answer = {"stored": [item.get("id") for item in items]}
            if self.keys and key:
                self.answers[key] = (body_hash(body), answer)
            return 201, answer

    def stored_ids(self) -> Counter:
        return Counter(item["id"] for item in self.stored)

    def keys_of(self, order_id: int) -> list[str | None]:
        """The keys of the POSTs (single items) of order `order_id`, in order."""
        return [key for key, body in self.posts if isinstance(body, dict) and body.get("id") == order_id]


class SandboxProxy:
    """Forwards /sandbox/api/... to the real Sandbox (the live server) and can hold an answer it got.

    So the Sandbox has stored a batch while the worker that sent it never
    reads the answer: the worker is killed while the proxy holds it.
    """

    def __init__(self, httpserver, live_server_url: str):
        import re

        self.target = live_server_url
        self.seen: list[tuple[str, str | None, object, int, str | None]] = []  # method, key, body, status, replayed
        self.hold: Hold | None = None
        self.holds: list[Hold] = []
        self.lock = threading.Lock()
        httpserver.expect_request(re.compile(r"^/sandbox/api/.*")).respond_with_handler(self.forward)

    def hold_when(self, matches: Callable[[object], bool]) -> Hold:
        self.hold = Hold(matches, stored=True)
        self.holds.append(self.hold)
        return self.hold

    def release_all(self) -> None:
        for hold in self.holds:
            hold.release.set()

    def forward(self, request: Request) -> Response:
        skip = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        query = f"?{request.query_string.decode()}" if request.query_string else ""
        answer = requests.request(request.method, f"{self.target}{request.path}{query}", headers=headers,
                                  data=request.get_data(), timeout=30, allow_redirects=False)
        body = json.loads(request.data) if request.data else None
        with self.lock:
            self.seen.append((request.method, request.headers.get(KEY_HEADER), body, answer.status_code,
                              answer.headers.get("Idempotent-Replayed")))
            hold = self.hold if self.hold is not None and request.method == "POST" and self.hold.matches(body) else None
            if hold is not None:
                self.hold = None
        if hold is not None:
            hold.arrived.set()
            hold.release.wait(30)
        return Response(answer.content, status=answer.status_code,
                        content_type=answer.headers.get("Content-Type", "application/json"))

    def posts(self) -> list[tuple[str | None, object, int, str | None]]:
        return [(key, body, status, replayed) for method, key, body, status, replayed in self.seen if method == "POST"]
