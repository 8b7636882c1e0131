"""The Prometheus endpoint (/metrics) and the admin's system health page.

Counters and histograms here live in the test process's default registry and
only ever grow, so each test compares a scrape before and after what it does.
The last test runs a real `manage.py run_huey` worker with
PROMETHEUS_MULTIPROC_DIR and finds what the worker counted in this process's scrape.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from huey.contrib.djhuey import HUEY
from huey.storage import RedisStorage, SqliteStorage
from prometheus_client.parser import text_string_to_metric_families
from werkzeug import Request, Response

from flows import execution, queueing
from flows.models import FlowRun, RunStatus, RunTrigger
from instances import checks
from instances.models import ConnectionPool
from instances.outbound import InstanceClient
from patchworks_site import metrics
from patchworks_site.models import Role
from tests.alert_helpers import empty_queue  # noqa: F401 - fixture
from tests.flow_helpers import API_TOKEN, json_response, receive_then_send_flow, shop_connector
from tests.processes import stop_all
from tests.redis_helpers import require_redis
from tests.test_engine_workers import REDIS_URL, Workers, wait_until

TOKEN = "scrape-token-for-tests-7d1c"
ORDERS = [{"id": 1}, {"id": 2}, {"id": 3}]

# The label values each family may carry, as written in the README ("Metrics"); families not named have no labels.
DOCUMENTED_LABELS: dict[str, dict[str, set[str]]] = {
    "patchworks_outbound_requests": {"status": {"2xx", "3xx", "4xx", "5xx", "429", "error"}},
    "patchworks_credential_checks": {"result": {"ok", "failed", "error"}},
    "patchworks_alerts": {"result": {"delivered", "failed"}},
    "patchworks_flow_run_duration_seconds": {"status": {"success", "partial_success", "failed", "stopped"}},
    "patchworks_flow_run_records": {"status": {"success", "partial_success", "failed", "stopped"}},
    "patchworks_flow_runs": {
        "status": {"queued", "running", "waiting", "success", "partial_success", "failed", "stopped"}
    },
}
FAMILIES = {
    "patchworks_outbound_requests", "patchworks_outbound_rate_limit_wait_seconds", "patchworks_outbound_pool_wait_seconds",
    "patchworks_pool_slots_in_use", "patchworks_credential_checks", "patchworks_alerts",
    "patchworks_flow_run_duration_seconds", "patchworks_flow_run_records", "patchworks_flow_runs",
    "patchworks_queue_pending_tasks", "patchworks_queue_scheduled_tasks",
}


class Scrape:
    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        """The sample's value (0 when absent); for a histogram name its _count, _sum or _bucket."""
        family = self.families.get(sample) or next(
            (f for name, f in self.families.items() if sample.startswith(name + "_")), None
        )
        if family is None:
            return 0
        return sum(s.value for s in family.samples if s.name == sample and labels.items() <= s.labels.items())


@pytest.fixture
def scrape(settings):
    settings.METRICS_TOKEN = TOKEN

    def do() -> Scrape:
        response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("text/plain; version=")
        return Scrape(response.content.decode())

    return do


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def connector(company, make_connector, httpserver):
    return shop_connector(make_connector, company, httpserver.url_for("/api"))


@pytest.fixture
def pooled(company, connector, make_instance):
    pool = ConnectionPool.objects.create(company=company, name="Storefront", limit=2, timeout_seconds=30)
    return make_instance(connector, "Shop - UK", {"api_token": API_TOKEN}, connection_pool=pool)


def assert_labels_bounded(scrape: Scrape) -> None:
    for name, family in scrape.families.items():
        if not name.startswith("patchworks_"):
            continue
        allowed = DOCUMENTED_LABELS.get(name, {})
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            assert labels.keys() == allowed.keys(), (sample.name, labels)
            for label, value in labels.items():
                assert value in allowed[label], (sample.name, label, value)


def test_the_scrape_is_valid_prometheus_text_with_every_documented_family(scrape, db):
    families = scrape().families

    assert FAMILIES <= families.keys()
    assert families["patchworks_outbound_requests"].type == "counter"
    assert families["patchworks_outbound_rate_limit_wait_seconds"].type == "histogram"
    assert families["patchworks_flow_runs"].type == "gauge"
    assert families["patchworks_pool_slots_in_use"].type == "gauge"


def test_requests_of_every_kind_are_counted_by_status_class_and_every_label_is_from_its_fixed_set(
    scrape, settings, connector, pooled, make_instance, make_connector, company, httpserver
):
    settings.OUTBOUND_429_RETRIES = 0
    for status in (200, 304, 404, 500, 429):
        httpserver.expect_request(f"/api/status/{status}").respond_with_data("", status=status)
    unreachable = make_instance(
        make_connector(company, name="Gone API", base_url=f"http://127.0.0.1:{closed_port()}"), "Gone"
    )
    before = scrape()

    client = InstanceClient.for_instance(pooled)
    answers = [client.request("GET", f"/status/{status}").response_status for status in (200, 304, 404, 500, 429)]
    refused = InstanceClient.for_instance(unreachable).request("GET", "/orders")

    after = scrape()
    assert answers == [200, 304, 404, 500, 429] and refused.error
    counted = {
        status: after.value("patchworks_outbound_requests_total", status=status)
        - before.value("patchworks_outbound_requests_total", status=status)
        for status in ("2xx", "3xx", "4xx", "5xx", "429", "error")
    }
    assert counted == {"2xx": 1, "3xx": 1, "4xx": 1, "5xx": 1, "429": 1, "error": 1}
    # Every request of an instance passed its rate limit and pool: a wait (0 s here) observed for each.
    for histogram in ("patchworks_outbound_rate_limit_wait_seconds", "patchworks_outbound_pool_wait_seconds"):
        assert after.value(f"{histogram}_count") - before.value(f"{histogram}_count") == 6
    assert_labels_bounded(after)
    assert "127.0.0.1" not in after.text and "Acme" not in after.text


def test_pool_slots_in_use_count_a_request_while_it_is_in_flight(scrape, pooled, httpserver):
    arrived, release = threading.Event(), threading.Event()

    def slow(request: Request) -> Response:
        arrived.set()
        release.wait(timeout=30)
        return json_response({"orders": []})

    httpserver.expect_request("/api/orders").respond_with_handler(slow)
    client = InstanceClient.for_instance(pooled)
    assert pooled.connection_pool is not None  # read here: the request's thread has no test transaction
    idle = scrape().value("patchworks_pool_slots_in_use")
    request = threading.Thread(target=client.request, args=("GET", "/orders"))
    request.start()
    try:
        assert arrived.wait(timeout=30)
        assert scrape().value("patchworks_pool_slots_in_use") == idle + 1
    finally:
        release.set()
        request.join(timeout=30)
    assert scrape().value("patchworks_pool_slots_in_use") == idle


def test_runs_by_status_are_the_database_s_counts(scrape, company, pooled):
    flow = receive_then_send_flow(company, pooled)
    for status in ("success", "success", "failed", "queued", "waiting"):
        run = queueing.queue_run(flow, RunTrigger.MANUAL)
        FlowRun.objects.filter(pk=run.pk).update(status=status)

    figures = scrape()

    by_status = {status: figures.value("patchworks_flow_runs", status=status) for status in RunStatus.values}
    assert by_status == {
        "queued": 1, "running": 0, "waiting": 1, "success": 2, "partial_success": 0, "failed": 1, "stopped": 0,
    }


@pytest.fixture(params=["sqlite", "redis"])
def queue(request, tmp_path) -> Iterator[str]:
    """The task queue on a SQLite file or on Redis, for this test only."""
    name = f"pw-test-{uuid.uuid4().hex}"
    if request.param == "redis":
        require_redis(REDIS_URL)
        storage = RedisStorage(name=name, url=REDIS_URL)
    else:
        storage = SqliteStorage(name=name, filename=str(tmp_path / "huey.sqlite3"))
    original, HUEY.storage = HUEY.storage, storage
    yield request.param
    storage.flush_all()
    HUEY.storage = original


def test_the_queue_depth_counts_tasks_waiting_for_a_worker_and_tasks_held_for_later(scrape, queue, company, pooled):
    run = queueing.queue_run(receive_then_send_flow(company, pooled), RunTrigger.MANUAL)
    empty = scrape()

    execution.execute_run(run.pk)  # no worker runs in this test: the task stays in the queue
    execution.execute_run(run.pk)
    HUEY.add_schedule(execution.execute_run.s(run.pk, delay=3600))  # as a worker holds a parked run's task

    queued = scrape()
    assert (empty.value("patchworks_queue_pending_tasks"), empty.value("patchworks_queue_scheduled_tasks")) == (0, 0)
    assert (queued.value("patchworks_queue_pending_tasks"), queued.value("patchworks_queue_scheduled_tasks")) == (2, 1)


def test_a_concluded_run_adds_its_duration_and_its_records_by_outcome(scrape, company, pooled, httpserver):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    httpserver.expect_request("/api/imports", method="POST").respond_with_json({"ok": True}, status=201)
    flow = receive_then_send_flow(company, pooled)
    before = scrape()

    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)

    after = scrape()
    assert run.status == RunStatus.SUCCESS

    def added(sample: str) -> float:
        return after.value(sample, status="success") - before.value(sample, status="success")

    assert added("patchworks_flow_run_duration_seconds_count") == 1
    assert added("patchworks_flow_run_duration_seconds_sum") == pytest.approx(
        (run.finished_at - run.started_at).total_seconds(), abs=1
    )
    assert (added("patchworks_flow_run_records_count"), added("patchworks_flow_run_records_sum")) == (1, 3)
    assert after.value("patchworks_flow_run_records_count", status="failed") == before.value(
        "patchworks_flow_run_records_count", status="failed"
    )


def test_runs_ended_without_their_worker_add_their_duration_and_records_and_one_never_started_adds_none(
    scrape, company, pooled, settings, django_capture_on_commit_callbacks
):
    flow = receive_then_send_flow(company, pooled)
    receive = flow.shapes.get(position=0)
    now = timezone.now()

    def run_of(status: str, started_ago: int | None, records: int = 0, **fields) -> FlowRun:
        started = None if started_ago is None else now - timedelta(seconds=started_ago)
        run = FlowRun.objects.create(company=company, flow=flow, trigger=RunTrigger.SCHEDULE, status=status,
                                     queued_at=now - timedelta(hours=1), reference_time=now, started_at=started,
                                     **fields)
        if started is not None:
            run.shape_runs.create(position=0, shape=receive, shape_name="Shape 1", started_at=started,
                                  items_out=records)
            run.shape_runs.create(position=1, shape=flow.shapes.get(position=1), shape_name="Shape 2",
                                  started_at=started, items_in=records, items_out=records)
        return run

    lost = run_of(RunStatus.RUNNING, 40, records=7, lease_owner="lost-worker",
                  lease_expires_at=now - timedelta(seconds=1), attempt=settings.FLOW_RUN_MAX_ATTEMPTS)
    parked = run_of(RunStatus.WAITING, 300, records=5, parked_until=now + timedelta(hours=1))
    never_started = run_of(RunStatus.QUEUED, None)
    before = scrape()
    with django_capture_on_commit_callbacks(execute=True):
        assert queueing.reap_expired_leases(now) == 1
        assert queueing.request_stop(parked) == queueing.request_stop(never_started) == "stopped"
    after = scrape()

    def added(sample: str, status: str) -> float:
        return after.value(sample, status=status) - before.value(sample, status=status)

    lost.refresh_from_db()
    parked.refresh_from_db()
    assert (added("patchworks_flow_run_duration_seconds_count", "failed"),
            added("patchworks_flow_run_records_sum", "failed")) == (1, 7)
    assert added("patchworks_flow_run_duration_seconds_sum", "failed") == pytest.approx(
        (lost.finished_at - lost.started_at).total_seconds(), abs=1)
    # The parked run counts; the one stopped before it started has no duration to count.
    assert (added("patchworks_flow_run_duration_seconds_count", "stopped"),
            added("patchworks_flow_run_records_sum", "stopped")) == (1, 5)
    assert added("patchworks_flow_run_duration_seconds_sum", "stopped") == pytest.approx(
        (parked.finished_at - parked.started_at).total_seconds(), abs=1)


def test_credential_checks_are_counted_as_ok_failed_or_error(scrape, company, pooled, make_connector, make_instance,
                                                              httpserver):
    httpserver.expect_ordered_request("/api/me").respond_with_json({"ok": True})
    httpserver.expect_ordered_request("/api/me").respond_with_json({"message": "bad token"}, status=401)
    unreachable = make_instance(
        make_connector(company, name="Gone API", base_url=f"http://127.0.0.1:{closed_port()}"), "Gone"
    )
    before = scrape()

    results = [checks.recheck(pooled)[0].ok, checks.recheck(pooled)[0].ok, checks.recheck(unreachable)[0].ok]

    after = scrape()
    assert results == [True, False, False]
    counted = {
        result: after.value("patchworks_credential_checks_total", result=result)
        - before.value("patchworks_credential_checks_total", result=result)
        for result in ("ok", "failed", "error")
    }
    assert counted == {"ok": 1, "failed": 1, "error": 1}


@pytest.mark.django_db(transaction=True)
def test_alert_deliveries_are_counted_when_they_end_and_an_unknown_result_is_not(scrape, company, httpserver,
                                                                                 empty_queue):
    """A webhook that answers 204 is delivered; one that answers 410 Gone failed for good (no retry)."""
    from alerts.models import AlertEvent
    from flows.models import ProcessFlow
    from flows.signals import announce_concluded
    from tests.alert_helpers import rule, webhook_channel, work_off

    before = scrape()
    httpserver.expect_request("/up", method="POST").respond_with_data("", status=204)
    httpserver.expect_request("/gone", method="POST").respond_with_data("", status=410)
    up, _ = webhook_channel(company, httpserver.url_for("/up"), name="Up")
    gone, _ = webhook_channel(company, httpserver.url_for("/gone"), name="Gone")
    rule(company, AlertEvent.RUN_FAILED, up, gone)
    flow = ProcessFlow.objects.create(company=company, name="Orders to ERP")
    now = timezone.now()
    run = FlowRun.objects.create(company=company, flow=flow, trigger=RunTrigger.SCHEDULE, status=RunStatus.FAILED,
                                 queued_at=now, reference_time=now, started_at=now, finished_at=now,
                                 failure_reason="The API answered 503.")
    announce_concluded(run.pk, run.status)
    work_off()
    metrics.count_alert("https://hooks.example.com/secret")  # not a result: dropped, never a label

    after = scrape()
    for result in ("delivered", "failed"):
        assert after.value("patchworks_alerts_total", result=result) == before.value(
            "patchworks_alerts_total", result=result
        ) + 1
    assert_labels_bounded(after)


def test_the_endpoint_needs_the_configured_bearer_token(settings, admin_client):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 404
    assert Client().get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404

    settings.METRICS_TOKEN = TOKEN
    refused = [
        Client().get("/metrics"),
        Client().get("/metrics", headers={"Authorization": "Bearer wrong-token"}),
        Client().get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}),
        admin_client.get("/metrics"),  # a logged-in user is no scraper
    ]
    assert [r.status_code for r in refused] == [401, 401, 401, 401]
    assert refused[0]["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"patchworks_" not in b"".join(r.content for r in refused)
    allowed = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200 and b"patchworks_outbound_requests_total" in allowed.content
    assert Client().post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def test_staff_see_the_figures_as_tables_on_the_admin_s_system_health_page(client_for, make_user, company, pooled):
    flow = receive_then_send_flow(company, pooled)
    FlowRun.objects.filter(pk=queueing.queue_run(flow, RunTrigger.MANUAL).pk).update(status="failed")
    staff = make_user(company, Role.ADMINISTRATOR, "operator")
    staff.is_staff = True
    staff.save()
    client = client_for(staff)

    index = client.get("/admin/").content.decode()
    page = client.get("/admin/system-health/")

    assert 'href="/admin/system-health/"' in index
    assert page.status_code == 200
    html = page.content.decode()
    assert "<h1>System health</h1>" in html
    runs = next(t for t in page.context["tables"] if t.name == "patchworks_flow_runs")
    assert runs.columns == ["status", "value"] and ["failed", "1"] in runs.rows and ["success", "0"] in runs.rows
    requests = next(t for t in page.context["tables"] if t.name == "patchworks_outbound_requests")
    assert [row[0] for row in requests.rows] == ["2xx", "3xx", "4xx", "5xx", "429", "error"]
    waits = next(t for t in page.context["tables"] if t.name == "patchworks_outbound_pool_wait_seconds")
    assert waits.columns == ["observed", "total (s)", "mean (s)"]
    assert "Flow runs in the database, by status" in html and "<td>failed</td>" in html


def test_users_who_are_not_staff_are_sent_to_the_admin_login_for_the_system_health_page(client_for, make_user, company):
    administrator = client_for(make_user(company, Role.ADMINISTRATOR))

    for client in (administrator, Client()):
        response = client.get("/admin/system-health/")
        assert response.status_code == 302
        assert response["Location"] == "/admin/login/?next=/admin/system-health/"


# --- several processes -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_process_s_requests_and_run_show_in_the_web_process_s_scrape(
    scrape, settings, tmp_path, company, connector, make_instance, httpserver
):
    httpserver.expect_request("/api/orders").respond_with_json({"orders": ORDERS})
    httpserver.expect_request("/api/imports", method="POST").respond_with_json({"ok": True}, status=201)
    instance = make_instance(connector, "Shop - UK", {"api_token": API_TOKEN})
    flow = receive_then_send_flow(company, instance)
    shared = tmp_path / "prometheus"
    shared.mkdir()
    settings.PROMETHEUS_MULTIPROC_DIR = str(shared)  # the scrape reads the host's files, as a web process would
    workers = Workers("sqlite", tmp_path)
    workers.env["PROMETHEUS_MULTIPROC_DIR"] = str(shared)
    try:
        idle = scrape()
        run = queueing.queue_run(flow, RunTrigger.MANUAL)
        queueing.enqueue(run)
        worker = workers.start(threads=1)
        wait_until(lambda: FlowRun.objects.filter(pk=run.pk, status=RunStatus.SUCCESS).exists(), timeout=120,
                   what=f"the run; worker logs:\n{workers.logs()}")
        # The worker observes the run's end just after committing it: the scrape may be a moment behind the row.
        busy = wait_until(lambda: (s := scrape()).value("patchworks_flow_run_duration_seconds_count") and s,
                          timeout=30, what="the run's end in the scrape")
        stop_all([worker], timeout=30)
        stopped = scrape()
    finally:
        workers.close()

    # Nothing of this process is in the files: every count is the worker's.
    assert idle.value("patchworks_outbound_requests_total") == 0
    assert busy.value("patchworks_outbound_requests_total", status="2xx") == 4  # one GET, three POSTs
    assert busy.value("patchworks_outbound_requests_total", status="error") == 0
    assert busy.value("patchworks_flow_run_duration_seconds_count", status="success") == 1
    assert busy.value("patchworks_flow_run_records_sum", status="success") == 3
    assert busy.value("patchworks_flow_runs", status="success") == 1
    assert_labels_bounded(busy)
    # A stopped worker's counts stay; its live gauge file is gone (marked dead at its exit).
    assert stopped.value("patchworks_outbound_requests_total", status="2xx") == 4
    assert not list(Path(shared).glob(f"gauge_livesum_{worker.pid}.db"))
    assert list(Path(shared).glob(f"counter_{worker.pid}.db"))


def test_gunicorn_drops_a_lost_worker_s_live_gauges_and_keeps_its_counts(tmp_path, monkeypatch):
    import runpy
    from types import SimpleNamespace

    from django.conf import settings as django_settings

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for name in ("gauge_livesum_4242.db", "counter_4242.db", "gauge_livesum_4343.db"):
        (tmp_path / name).write_bytes(b"")
    hooks = runpy.run_path(str(django_settings.BASE_DIR / "gunicorn.conf.py"))

    hooks["child_exit"](None, SimpleNamespace(pid=4242))

    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_4242.db", "gauge_livesum_4343.db"]


def test_a_worker_killed_with_sigkill_holding_pool_slots_drops_out_of_the_gauge_at_the_next_scrape(
    scrape, settings, tmp_path, db
):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    settings.PROMETHEUS_MULTIPROC_DIR = str(shared)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    holding = ("from patchworks_site import metrics; metrics.POOL_SLOTS_IN_USE.inc(2); "
               "print('holding', flush=True); import time; time.sleep(120)")
    worker = subprocess.Popen([sys.executable, "-c", holding], cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert worker.stdout.readline().strip() == "holding"
        assert scrape().value("patchworks_pool_slots_in_use") == 2  # two requests in flight on this host
        os.kill(worker.pid, signal.SIGKILL)  # no atexit: its live gauge file stays behind
        worker.wait(timeout=30)
        assert list(shared.glob(f"gauge_livesum_{worker.pid}.db"))

        assert scrape().value("patchworks_pool_slots_in_use") == 0  # not two slots held for ever
        assert not list(shared.glob(f"gauge_livesum_{worker.pid}.db"))
    finally:
        worker.kill()
        worker.wait(timeout=30)


def test_the_settings_make_the_multiprocess_directory(tmp_path, monkeypatch):
    import runpy

    from django.conf import settings as django_settings

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics" / "host-1"))
    loaded = runpy.run_path(str(django_settings.BASE_DIR / "patchworks_site" / "settings" / "__init__.py"))

    assert loaded["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics" / "host-1")
    assert (tmp_path / "metrics" / "host-1").is_dir()
