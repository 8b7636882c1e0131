"""Real huey worker processes (`manage.py run_huey`) on the embedded SQLite queue and on Redis.

The workers share the test database (a file, or PostgreSQL) and call a test
HTTP server playing the third party; the tests assert on the rows they wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from huey.contrib.djhuey import HUEY
from huey.storage import RedisStorage, SqliteStorage
from werkzeug import Request, Response

from flows import queueing, schedules, tasks
from flows.models import FlowRun, FlowSchedule, RunStatus, RunTrigger, ScheduleKind
from tests.flow_helpers import API_TOKEN, receive_then_send_flow, shop_connector
from tests.processes import stop_all
from tests.redis_helpers import require_redis

LEASE_SECONDS = 5
# The pass's own Redis database (one per xdist worker, see tests/worker_env.py) when it has one.
REDIS_URL = os.environ.get("TEST_HUEY_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/13"
ORDERS = [{"id": 1}, {"id": 2}, {"id": 3}]

# Workers see only committed rows.
on_committed_rows = pytest.mark.django_db(transaction=True)


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_until(predicate: Callable[[], object], timeout: float = 60, what: str = "the workers") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"Timed out after {timeout:g} s waiting for {what}.")


class Workers:
    """Starts `manage.py run_huey` processes against one queue; the test process enqueues into the same queue."""

    def __init__(self, engine: str, tmp_path: Path):
        self.engine = engine
        self.name = f"pw-test-{uuid.uuid4().hex}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "HUEY_NAME": self.name,
            "FLOW_RUN_LEASE_SECONDS": str(LEASE_SECONDS),
            "PYTHONUNBUFFERED": "1",
        }
        if engine == "redis":
            self.env["REDIS_URL"] = REDIS_URL
            storage = RedisStorage(name=self.name, url=REDIS_URL)
        else:
            self.env.pop("REDIS_URL", None)
            self.env["HUEY_SQLITE_PATH"] = str(tmp_path / "huey.sqlite3")
            storage = SqliteStorage(name=self.name, filename=self.env["HUEY_SQLITE_PATH"])
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen] = []
        self.original_storage = HUEY.storage
        HUEY.storage = storage

    def start(self, threads: int = 2, periodic: bool = False, program: tuple[str, ...] = ("manage.py",)) -> subprocess.Popen:
        """A worker with `threads` threads; `periodic` turns its scheduler's periodic jobs on."""
        log = open(self.tmp_path / f"worker-{len(self.processes)}.log", "w")
        process = subprocess.Popen(
            [sys.executable, *program, "run_huey", "--workers", str(threads), "--worker-type", "thread",
             *([] if periodic else ["--no-periodic"]), "--max-delay", "0.2", "--disable-health-check"],
            cwd=settings.BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp_path.glob("worker-*.log")))

    def close(self) -> None:
        stop_all(self.processes, timeout=10)
        HUEY.storage.flush_all()
        HUEY.storage = self.original_storage


@pytest.fixture(params=["sqlite", "redis"])
def workers(request, tmp_path) -> Iterator[Workers]:
    if request.param == "redis":
        require_redis(REDIS_URL)
    pool = Workers(request.param, tmp_path)
    yield pool
    pool.close()
    connection.close()


@pytest.fixture
def instance(company, make_connector, make_instance, httpserver):
    return make_instance(shop_connector(make_connector, company, httpserver.url_for("/api")), "Shop - UK", {"api_token": API_TOKEN})


@on_committed_rows
def test_two_workers_run_every_queued_run_exactly_once(workers, company, instance, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    httpserver.expect_request("/api/imports", method="POST").respond_with_json({"ok": True}, status=201)
    flows = [receive_then_send_flow(company, instance, name=f"Flow {n}") for n in range(4)]
    # Enqueued the way the run now button does it (on commit), each task twice:
    # a duplicate message must not run a run twice.
    queued = []
    for flow in flows:
        with transaction.atomic():
            run = queueing.queue_run(flow, RunTrigger.MANUAL)
            queueing.enqueue(run)
        queued.append(run)
    workers.start()
    workers.start()

    wait_until(lambda: not FlowRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).exists(),
               what=f"the runs to finish; worker logs:\n{workers.logs()}")
    for run in queued:
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCESS, run.failure_reason
        assert [(s.position, s.items_out, s.requests) for s in run.shape_runs.all()] == [(0, 3, 1), (1, 3, 3)]
    gets = [r for r, _ in httpserver.log if r.path == "/api/orders"]
    posts = [json.loads(r.data) for r, _ in httpserver.log if r.path == "/api/imports"]
    assert len(gets) == 4 and sorted(p["id"] for p in posts) == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]


@on_committed_rows
def test_a_killed_worker_s_run_is_resumed_by_another_worker_and_the_next_scheduled_run_still_happens(
    workers, company, instance, httpserver
):
    arrived, release = threading.Event(), threading.Event()
    calls = []

    def orders(request: Request) -> Response:
        calls.append(request.path)
        if len(calls) == 1:  # the first run hangs in this request until its worker is gone
            arrived.set()
            release.wait(timeout=30)
        return Response(json.dumps({"orders": ORDERS}), content_type="application/json")

    httpserver.expect_request("/api/orders").respond_with_handler(orders)
    httpserver.expect_request("/api/imports", method="POST").respond_with_json({"ok": True}, status=201)
    flow = receive_then_send_flow(company, instance)
    schedule = schedules.create_schedule(flow, ScheduleKind.MINUTES, every=1, now=timezone.now() - timedelta(minutes=1))
    (first,) = schedules.enqueue_due(timezone.now())

    victim = workers.start()
    assert wait_until(arrived.is_set, what="the first request")
    first.refresh_from_db()
    assert first.status == RunStatus.RUNNING
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = timezone.now()
    release.set()
    workers.start()  # a live worker, starting up while the lease runs out

    # The dead worker's lease runs out within the lease time of its death ...
    first.refresh_from_db()
    assert first.status == RunStatus.RUNNING and first.lease_expires_at <= killed_at + timedelta(seconds=LEASE_SECONDS)
    # ... and the live worker resumes the run as its attempt 2, which completes.
    first = wait_until(lambda: FlowRun.objects.filter(pk=first.pk, status=RunStatus.SUCCESS).first(),
                       what=f"the lost run to be resumed; worker logs:\n{workers.logs()}")
    assert first.attempt == 2 and first.failure_reason == ""
    (attempt,) = first.attempts
    assert (attempt["number"], attempt["cause"], attempt["from_page"]) == (2, "worker lost", 1)
    assert attempt["resumed_at"] >= attempt["lost_at"]
    assert [s.status for s in first.shape_runs.all()] == ["success", "success"]
    posts = [json.loads(r.data)["id"] for r, _ in httpserver.log if r.path == "/api/imports"]
    assert sorted(posts) == [1, 2, 3]  # the lost attempt had sent nothing; each order went once
    # ... and the schedule's next due time enqueues a run that a live worker completes.
    FlowSchedule.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now())
    tasks.tick()
    second = wait_until(lambda: FlowRun.objects.filter(flow=flow, status=RunStatus.SUCCESS).exclude(pk=first.pk).first(),
                        what=f"the next scheduled run; worker logs:\n{workers.logs()}")
    assert (second.trigger, second.schedule_id) == (RunTrigger.SCHEDULE, schedule.pk)
    assert FlowRun.objects.filter(flow=flow).count() == 2


@pytest.mark.parametrize(
    "env, huey_class, connection",
    [
        ({}, "huey.SqliteHuey", {"filename": str(settings.BASE_DIR / "huey.sqlite3")}),
        ({"HUEY_SQLITE_PATH": "/var/lib/patchworks/queue.sqlite3"}, "huey.SqliteHuey", {"filename": "/var/lib/patchworks/queue.sqlite3"}),
        ({"REDIS_URL": "redis://queue.internal:6379/2"}, "huey.RedisHuey", {"url": "redis://queue.internal:6379/2"}),
    ],
)
def test_the_queue_is_a_sqlite_file_beside_the_database_unless_redis_is_configured(monkeypatch, env, huey_class, connection):
    import runpy

    for name in ("REDIS_URL", "HUEY_SQLITE_PATH", "PYTEST_VERSION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    loaded = runpy.run_path(str(settings.BASE_DIR / "patchworks_site" / "settings" / "__init__.py"))
    assert (loaded["HUEY"]["huey_class"], loaded["HUEY"]["connection"]) == (huey_class, connection)
    assert loaded["HUEY"]["immediate"] is False  # tasks go to workers, DEBUG or not
