"""Rate limits and connection pools, on real Redis and on the embedded SQLite store, across real processes.

Arrival times are taken by a real HTTP server (the third party's side); the
workers are forked processes sharing nothing but the store.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Response

from instances.checks import recheck
from instances.models import ConnectionPool
from instances.outbound import InstanceClient, limits, retry
from tests.limits_helpers import close_store, use_store

# The pass's own Redis database (one per xdist worker, see tests/worker_env.py) when it has one.
REDIS_URL = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
FORK = multiprocessing.get_context("fork")
# The workers are forked from the test process on purpose: they share nothing but the store.
pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")


@pytest.fixture(params=["redis", "sqlite"])
def backend(request, settings, tmp_path):
    """Point the limits at one store; returns a function that opens that store afresh (for child processes)."""
    use_store(request.param, settings, tmp_path, REDIS_URL)
    url, path, prefix = settings.REDIS_URL, str(settings.LIMITS_STORE_PATH), settings.LIMITS_KEY_PREFIX

    def open_store() -> limits.Store:
        return limits.RedisStore(url, prefix) if url else limits.SQLiteStore(path, prefix)

    yield open_store
    close_store()


def _run(workers: int, target, *args, timeout: float = 30) -> None:
    processes = [FORK.Process(target=target, args=(i, *args)) for i in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout)
    assert [p.exitcode for p in processes] == [0] * workers


def _max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best, start = 0, 0
    for end, at in enumerate(stamps):
        while at - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.fixture
def api():
    """A threaded API that timestamps arrivals and counts requests in flight (each held `hold` seconds)."""
    server = HTTPServer(threaded=True)
    server.start()
    state = {"arrivals": [], "now": 0, "max": 0, "hold": 0.0, "order": []}
    lock = threading.Lock()

    def handler(request):
        with lock:
            state["arrivals"].append(time.monotonic())
            state["order"].append(request.args.get("who", ""))
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(state["hold"])
        with lock:
            state["now"] -= 1
        return Response("{}", content_type="application/json")

    server.expect_request("/work").respond_with_handler(handler)
    yield server, state
    server.clear()
    server.stop()


# --- rate limits ---------------------------------------------------------------------


def test_no_sliding_second_at_the_api_ever_carries_more_than_the_limit_across_processes(backend, api):
    server, state = api
    url = server.url_for("/work")

    def worker(_: int) -> None:
        store = backend()
        session = requests.Session()
        for _ in range(8):
            with limits.rate_limited("shared", 10, "second", store_=store):
                assert session.get(url, timeout=5).status_code == 200

    started = time.monotonic()
    _run(4, worker)
    assert len(state["arrivals"]) == 32
    assert _max_in_window(state["arrivals"], 1.0) <= 10
    # 32 requests at 10 per second: the ones over the limit were queued, not dropped.
    assert time.monotonic() - started >= 3.0


def test_requests_over_the_limit_go_oldest_first_within_a_process(backend):
    store = backend()
    sent: list[int] = []

    def request(n: int) -> None:
        limits.acquire_rate("fifo", 2, "second", store_=store)
        sent.append(n)

    threads = []
    for n in range(6):
        threads.append(threading.Thread(target=request, args=(n,)))
        threads[-1].start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert sent == [0, 1, 2, 3, 4, 5]


def test_a_wait_longer_than_the_threshold_is_throttled_at_once_and_takes_nothing(backend, settings):
    store = backend()
    limits.acquire_rate("minute", 2, "minute", store_=store)
    limits.acquire_rate("minute", 2, "minute", store_=store)
    started = time.monotonic()
    with pytest.raises(limits.Throttled) as raised:
        limits.acquire_rate("minute", 2, "minute", store_=store)
    assert time.monotonic() - started < 0.5
    expected = datetime.now(UTC) + timedelta(seconds=60)
    assert abs((raised.value.until - expected).total_seconds()) < 2
    assert str(raised.value).startswith("Rate limit reached (2 per minute): the next request is possible at ")
    # Nothing was reserved: a short limit in another bucket is unaffected, and
    # the refused request did not push the next free moment further away.
    with pytest.raises(limits.Throttled) as again:
        limits.acquire_rate("minute", 2, "minute", store_=store)
    assert abs((again.value.until - raised.value.until).total_seconds()) < 1


def test_a_short_wait_is_queued_rather_than_throttled(backend, settings):
    store = backend()
    settings.OUTBOUND_RATE_LIMIT_MAX_WAIT = 2
    limits.acquire_rate("queued", 1, "second", store_=store)
    waited = limits.acquire_rate("queued", 1, "second", store_=store).waited
    assert 0.9 <= waited < 1.5


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_embedded_store_holds_a_limit_shared_by_two_processes(backend):
    queue = FORK.Queue()

    def worker(i: int) -> None:
        try:
            limits.acquire_rate("two-processes", 1, "hour", store_=backend())
            queue.put("sent")
        except limits.Throttled:
            queue.put("throttled")

    _run(2, worker)
    assert sorted([queue.get(timeout=5), queue.get(timeout=5)]) == ["sent", "throttled"]


def test_processes_and_threads_that_open_a_new_embedded_store_together_all_take_their_slot(tmp_path):
    # The web server and a worker start at once on a fresh machine, each with several threads: switching
    # the new file to WAL made some of them fail with "database is locked" instead of waiting their turn.
    failures = FORK.Queue()

    def process(i: int, path: str, start) -> None:
        def opener() -> None:
            try:
                start.wait(10)  # every opener at the same moment
                assert limits.SQLiteStore(path).pool_acquire("together", uuid.uuid4().hex, 100, 60.0, 20.0).acquired
            except Exception as error:  # noqa: BLE001 - what failed is the finding
                failures.put(repr(error))

        threads = [threading.Thread(target=opener) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    paths = [tmp_path / f"fresh-{round_}" / "limits.sqlite3" for round_ in range(60)]
    for path in paths:
        path.parent.mkdir()
        _run(3, process, str(path), FORK.Barrier(9))
    found = []
    while not failures.empty():
        found.append(failures.get(timeout=5))
    assert found == []
    holders, _ = limits.SQLiteStore(paths[-1]).pool_usage("together")
    assert len(holders) == 9


def test_a_throttled_credential_check_tells_the_user_when_the_next_request_is_possible(
    backend, company, make_connector, make_instance, httpserver
):
    httpserver.expect_request("/me").respond_with_json({})
    instance = make_instance(
        make_connector(company, base_url=httpserver.url_for("")), rate_limit_amount=1, rate_limit_unit="day"
    )
    assert recheck(instance)[0].ok
    started = time.monotonic()
    result, check = recheck(instance)
    assert time.monotonic() - started < 1
    assert not result.ok
    assert check.message.startswith("Rate limit reached (1 per day): the next request is possible at ")
    assert result.exchange.throttled_until > datetime.now(UTC) + timedelta(hours=23)
    assert len(httpserver.log) == 1


def test_instances_in_one_shared_rate_limit_share_it_and_others_do_not(
    backend, company, make_connector, make_instance, httpserver
):
    httpserver.expect_request("/me").respond_with_json({})
    connector = make_connector(company, base_url=httpserver.url_for(""))
    first = make_instance(connector, "First", rate_limit_amount=1, rate_limit_unit="day", rate_limit_group="Store API")
    second = make_instance(connector, "Second", rate_limit_amount=1, rate_limit_unit="day", rate_limit_group="store api")
    alone = make_instance(connector, "Alone", rate_limit_amount=1, rate_limit_unit="day")
    assert InstanceClient.for_instance(first).request("GET", "/me").response_status == 200
    assert InstanceClient.for_instance(second).request("GET", "/me").throttled_until is not None
    assert InstanceClient.for_instance(alone).request("GET", "/me").response_status == 200
    assert len(httpserver.log) == 2


# --- 429 Too Many Requests -------------------------------------------------------------


def test_a_429_with_retry_after_pauses_every_worker_and_the_request_is_retried(
    backend, company, make_connector, make_instance
):
    server = HTTPServer(threaded=True)
    server.start()
    answered_429 = threading.Event()
    calls = []

    def handler(request):
        calls.append(time.monotonic())
        if len(calls) == 1:
            answered_429.set()
            return Response("slow down", status=429, headers={"Retry-After": "1"})
        return Response("{}", content_type="application/json")

    server.expect_request("/me").respond_with_handler(handler)
    instance = make_instance(make_connector(company, base_url=server.url_for("")), rate_limit_amount=100, rate_limit_unit="second")
    queue = FORK.Queue()

    def other_worker(_: int) -> None:
        queue.put(limits.acquire_rate(limits.rate_bucket(instance), 100, "second", store_=backend()).waited)

    try:
        result = {}
        caller = threading.Thread(target=lambda: result.update(exchange=InstanceClient.for_instance(instance).request("GET", "/me")))
        caller.start()
        assert answered_429.wait(5)
        time.sleep(0.1)  # the pause is set right after the answer
        _run(1, other_worker)
        caller.join(10)
    finally:
        server.stop()
    exchange = result["exchange"]
    assert exchange.response_status == 200
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.0
    assert "429 Too Many Requests" in exchange.rate_limit_note and "retried" in exchange.rate_limit_note
    assert queue.get(timeout=5) >= 0.7  # the other process waited out the pause too
    assert exchange.as_record()["rate_limit_note"] == exchange.rate_limit_note


def test_the_credential_check_record_says_a_429_happened(backend, company, make_connector, make_instance, httpserver, settings):
    settings.OUTBOUND_429_RETRIES = 1
    httpserver.expect_ordered_request("/me").respond_with_response(Response("", status=429, headers={"Retry-After": "0"}))
    httpserver.expect_ordered_request("/me").respond_with_json({})
    instance = make_instance(make_connector(company, base_url=httpserver.url_for("")))
    result, check = recheck(instance)
    assert result.ok
    assert check.rate_limit_note.startswith("Answered 429 Too Many Requests; the rate limit was paused")


def test_retries_after_429_are_bounded(backend, company, make_connector, make_instance, httpserver, settings):
    settings.OUTBOUND_429_RETRIES = 2
    httpserver.expect_request("/me").respond_with_response(Response("", status=429, headers={"Retry-After": "0"}))
    instance = make_instance(make_connector(company, base_url=httpserver.url_for("")))
    exchange = InstanceClient.for_instance(instance).request("GET", "/me")
    assert exchange.response_status == 429
    assert len(httpserver.log) == 3
    assert exchange.rate_limit_note.endswith("gave up after 2 retries.")


def test_a_retry_after_longer_than_the_threshold_throttles_the_request(backend, company, make_connector, make_instance, httpserver):
    httpserver.expect_request("/me").respond_with_response(Response("", status=429, headers={"Retry-After": "3600"}))
    instance = make_instance(make_connector(company, base_url=httpserver.url_for("")))
    started = time.monotonic()
    exchange = InstanceClient.for_instance(instance).request("GET", "/me")
    assert time.monotonic() - started < 2
    assert exchange.throttled_until > datetime.now(UTC) + timedelta(minutes=59)
    assert len(httpserver.log) == 1


NOW = 1_790_000_000


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"Retry-After": "7"}, 7, 8.05),
        ({"retry-after": format_datetime(datetime.fromtimestamp(NOW + 20, UTC), usegmt=True)}, 20, 21.05),
        ({"X-RateLimit-Reset": str(NOW + 30)}, 30, 31.05),
        ({"RateLimit-Reset": "12"}, 12, 13.05),
        ({"Retry-After": "soon"}, 4, 5.05),  # unreadable: backoff, 2 ** attempt
        ({}, 4, 5.05),
        ({"Retry-After": "-5"}, 0, 0.05),
        ({"Retry-After": "99999999"}, 3600, 3600),  # at most OUTBOUND_MAX_RETRY_AFTER_SECONDS
    ],
)
def test_the_pause_after_a_429_follows_the_apis_headers(headers, low, high):
    for _ in range(20):
        assert low <= retry.after_429().pause(2, headers=headers, now=NOW) <= high


# --- connection pools ------------------------------------------------------------------


def test_a_pool_never_admits_more_than_its_limit_across_processes(backend, api):
    server, state = api
    state["hold"] = 0.1
    url = server.url_for("/work")

    def worker(_: int) -> None:
        store = backend()
        for _ in range(5):
            with limits.hold_slot("pool-a", "Warehouse", 2, 10, store_=store):
                assert requests.get(url, timeout=5).status_code == 200

    started = time.monotonic()
    _run(4, worker)
    elapsed = time.monotonic() - started
    assert len(state["arrivals"]) == 20
    assert state["max"] == 2
    # 20 requests x 0.1 s / 2 slots = 1 s of work; a lost wake-up would stall a
    # waiter for a third of its place's lease, 1.5 s (the bound leaves room for a busy machine).
    assert elapsed < 3.0
    assert backend().pool_usage("pool-a") == ([], [])


def test_waiters_take_free_slots_in_the_order_they_came_across_processes(backend):
    store = backend()
    queue = FORK.Queue()

    def waiter(i: int) -> None:
        time.sleep(0.15 * i)  # come one after the other
        with limits.hold_slot("pool-fifo", "Orders", 1, 10, store_=backend()):
            queue.put(i)
            time.sleep(0.02)

    with limits.hold_slot("pool-fifo", "Orders", 1, 10, store_=store):
        processes = [FORK.Process(target=waiter, args=(i,)) for i in range(4)]
        for p in processes:
            p.start()
        deadline = time.monotonic() + 5
        while len(store.pool_usage("pool-fifo")[1]) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    for p in processes:
        p.join(10)
    assert [queue.get(timeout=5) for _ in range(4)] == [0, 1, 2, 3]


def test_a_killed_holders_slot_comes_back_when_its_lease_runs_out(backend):
    ready = FORK.Event()

    def holder(_: int) -> None:
        with limits.hold_slot("pool-kill", "Fragile", 1, 5, lease=1.0, store_=backend()):
            ready.set()
            time.sleep(60)

    process = FORK.Process(target=holder, args=(0,))
    process.start()
    assert ready.wait(5)
    time.sleep(1.2)  # longer than the lease: the heartbeat kept it alive
    store = backend()
    assert len(store.pool_usage("pool-kill")[0]) == 1
    os.kill(process.pid, signal.SIGKILL)
    killed = time.monotonic()
    process.join(5)
    with limits.hold_slot("pool-kill", "Fragile", 1, 5, lease=1.0, store_=store):
        reclaimed = time.monotonic() - killed
    assert reclaimed <= 1.3
    assert store.pool_usage("pool-kill") == ([], [])


def _wait_for(check, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_killed_worker_holding_every_slot_gives_them_to_the_waiters_before_their_timeout(backend, settings):
    # The pool's timeout (1 s) was saved shorter than the lease: at run time a
    # waiter waits at least the lease plus a third, so it outlasts the slots'
    # leases and takes them when they run out instead of failing just before.
    settings.CONNECTION_POOL_LEASE_SECONDS = 3.0
    pool = ConnectionPool(pk=991, name="Fragile pair", limit=2, timeout_seconds=1)
    ready = FORK.Event()

    def holder(_: int) -> None:
        def hold() -> None:
            with limits.pool_slot(pool):
                ready.set()
                time.sleep(60)

        for thread in [threading.Thread(target=hold), threading.Thread(target=hold)]:
            thread.start()
        time.sleep(60)

    process = FORK.Process(target=holder, args=(0,))
    process.start()
    store = backend()
    assert ready.wait(10)
    _wait_for(lambda: len(store.pool_usage("991")[0]) == 2)
    time.sleep(3.5)  # longer than the lease: the heartbeats kept both slots
    killed_slots = set(store.pool_usage("991")[0])
    assert len(killed_slots) == 2
    taken, failed = [], []

    def waiter() -> None:
        try:
            with limits.pool_slot(pool):
                taken.append(time.monotonic())
        except limits.PoolTimeout as error:
            failed.append(str(error))

    waiters = [threading.Thread(target=waiter), threading.Thread(target=waiter)]
    for thread in waiters:
        thread.start()
    _wait_for(lambda: len(store.pool_usage("991")[1]) == 2)
    os.kill(process.pid, signal.SIGKILL)
    process.join(5)
    for thread in waiters:
        thread.join(15)
    assert failed == [] and len(taken) == 2
    # Both waiters gave their slot back and left the queue. The second may have taken the first's slot
    # while one of the killed worker's leases was still running out (their heartbeats drift apart).
    holders, waiters = store.pool_usage("991")
    assert set(holders) <= killed_slots and waiters == []


def test_a_killed_waiter_at_the_head_of_the_queue_holds_back_a_free_slot_no_longer_than_its_lease(backend, settings):
    settings.CONNECTION_POOL_LEASE_SECONDS = 3.0
    store = backend()
    queued = FORK.Event()

    def head(_: int) -> None:
        with limits.hold_slot("pool-head", "Queue", 1, 60, store_=backend()):
            queued.set()  # never reached before the kill

    got: list[float] = []
    with limits.hold_slot("pool-head", "Queue", 1, 60, store_=store):
        process = FORK.Process(target=head, args=(0,))
        process.start()
        _wait_for(lambda: len(store.pool_usage("pool-head")[1]) == 1)

        def second() -> None:
            with limits.hold_slot("pool-head", "Queue", 1, 60, store_=backend()):
                got.append(time.monotonic())

        behind = threading.Thread(target=second)
        behind.start()
        _wait_for(lambda: len(store.pool_usage("pool-head")[1]) == 2)
        os.kill(process.pid, signal.SIGKILL)
        process.join(5)
        freed = time.monotonic()
    behind.join(30)
    assert not queued.is_set()
    # The dead waiter's place (a lease of 1.5 s) ran out and the next one took
    # the free slot; the old fixed 6 s place would have held it back longer
    # than the whole slot lease.
    assert got and got[0] - freed < 3.0
    assert store.pool_usage("pool-head") == ([], [])


class _FlakyRenewals:
    """The store, but its first `failures` lease renewals fail as if it were unreachable for a moment."""

    def __init__(self, store, failures: int):
        self._store, self.failures, self.renewals = store, failures, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def pool_renew(self, *args):
        self.renewals += 1
        if self.renewals <= self.failures:
            raise ConnectionError("store unreachable for a moment")
        return self._store.pool_renew(*args)


def test_a_renewal_that_fails_for_a_moment_does_not_lose_a_healthy_slot(backend):
    store = backend()
    flaky = _FlakyRenewals(backend(), failures=3)
    with limits.hold_slot("pool-flaky", "Flaky", 1, 5, lease=1.2, store_=flaky):
        time.sleep(3.0)  # two and a half leases, the first renewals failing
        assert len(store.pool_usage("pool-flaky")[0]) == 1
        assert flaky.renewals > 3
        with pytest.raises(limits.PoolTimeout):
            with limits.hold_slot("pool-flaky", "Flaky", 1, 0.3, lease=1.2, store_=store):
                pass
    assert store.pool_usage("pool-flaky") == ([], [])


def test_the_lease_is_renewed_for_as_long_as_a_request_runs(
    backend, pooled_instance, api, settings
):
    server, state = api
    state["hold"] = 3.0  # six leases: the API answers just before the request's total timeout
    settings.CONNECTION_POOL_LEASE_SECONDS = 0.5
    settings.OUTBOUND_TOTAL_TIMEOUT = settings.OUTBOUND_READ_TIMEOUT = 3.5
    seen, in_use = [], []
    request = threading.Thread(
        target=lambda: seen.append(InstanceClient.for_instance(pooled_instance).request("GET", "/work"))
    )
    request.start()
    _wait_for(lambda: state["now"] == 1)
    while state["now"] == 1:
        in_use.append(limits.pool_usage(pooled_instance.connection_pool).in_use)
        time.sleep(0.1)
    request.join(10)
    assert seen[0].response_status == 200
    assert len(in_use) > 15 and set(in_use[:-1]) == {1}
    usage = limits.pool_usage(pooled_instance.connection_pool)
    assert (usage.in_use, usage.waiting) == (0, 0)


def test_only_the_owner_releases_a_slot(backend):
    store = backend()
    with limits.hold_slot("pool-own", "Owned", 1, 1, store_=store):
        store.pool_release("pool-own", "someone-else", 1)
        with pytest.raises(limits.PoolTimeout):
            with limits.hold_slot("pool-own", "Owned", 1, 0.2, store_=store):
                pass


@pytest.fixture
def pooled_instance(company, make_connector, make_instance, api, settings):
    server, _ = api
    settings.CONNECTION_POOL_LEASE_SECONDS = 0.6  # a timeout of 1 s is longer than the lease and its third
    connector = make_connector(company, base_url=server.url_for(""), concurrency_limit=5)
    pool = ConnectionPool.objects.create(company=company, name="Shared", limit=1, timeout_seconds=1)
    pool.connectors.add(connector)
    return make_instance(connector, "Pooled", connection_pool=pool, rate_limit_amount=1000, rate_limit_unit="second")


def test_a_request_that_finds_no_free_slot_within_the_timeout_fails_naming_the_pool(backend, pooled_instance):
    with limits.pool_slot(pooled_instance.connection_pool):  # another request holds the only slot
        started = time.monotonic()
        exchange = InstanceClient.for_instance(pooled_instance).request("GET", "/work")
        waited = time.monotonic() - started
    assert 1 <= waited < 1.5
    assert exchange.response_status is None
    assert exchange.error == 'No free slot in connection pool "Shared" within 1 s (1 requests already in flight).'
    usage = limits.pool_usage(pooled_instance.connection_pool)
    assert (usage.in_use, usage.waiting) == (0, 0)  # the waiter left the queue


def test_a_throttled_request_does_not_hold_a_pool_slot(backend, pooled_instance, api, settings):
    settings.OUTBOUND_RATE_LIMIT_MAX_WAIT = 5
    pooled_instance.rate_limit_amount = 1
    pooled_instance.save()
    client = InstanceClient.for_instance(pooled_instance)
    assert client.request("GET", "/work").response_status == 200
    seen = []
    waiting = threading.Thread(target=lambda: seen.append(client.request("GET", "/work")))
    waiting.start()
    time.sleep(0.3)  # the second request now waits for the rate limit ...
    usage = limits.pool_usage(pooled_instance.connection_pool)
    assert (usage.in_use, usage.waiting) == (0, 0)  # ... holding no slot and not queued for one
    waiting.join(5)
    assert seen[0].response_status == 200
