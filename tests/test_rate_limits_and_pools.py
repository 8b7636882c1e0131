"""Rate limits and connection pools, shared through the real Redis on this machine."""

import os
import threading
import time

import pytest
import redis
from django.core.cache import cache
from pytest_httpserver import HTTPServer
from werkzeug import Response

from instances import limits
from instances.client import InstanceClient
from instances.models import ConnectionPool

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_cache(settings):
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    cache.clear()
    yield cache
    cache.clear()


@pytest.fixture
def slow_api():
    """A threaded API whose /work takes 0.3 s and which records how many requests were in flight at once."""
    server = HTTPServer(threaded=True)
    server.start()
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def handler(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return Response("{}", content_type="application/json")

    server.expect_request("/work").respond_with_handler(handler)
    yield server, state
    server.clear()
    server.stop()


@pytest.fixture
def pooled_instance(company, make_connector, make_instance, slow_api):
    server, _ = slow_api
    connector = make_connector(company, base_url=server.url_for(""), concurrency_limit=5)
    pool = ConnectionPool.objects.create(company=company, name="Shared", limit=2, timeout_seconds=5)
    pool.connectors.add(connector)
    return make_instance(connector, "Pooled", connection_pool=pool, rate_limit_amount=1000, rate_limit_unit="second")


def test_a_connection_pool_caps_requests_in_flight(redis_cache, pooled_instance, slow_api):
    _, state = slow_api
    statuses = []

    def call():
        statuses.append(InstanceClient.for_instance(pooled_instance).request("GET", "/work").response_status)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 6
    assert state["max"] == 2
    assert cache.get(f"pool:{pooled_instance.connection_pool_id}:in-flight") == 0  # every slot released


def test_a_request_that_finds_no_free_slot_within_the_timeout_fails_clearly(redis_cache, pooled_instance):
    pool = pooled_instance.connection_pool
    ConnectionPool.objects.filter(pk=pool.pk).update(limit=1, timeout_seconds=1)
    pooled_instance.connection_pool.refresh_from_db()
    with limits.pool_slot(pooled_instance.connection_pool):  # another request holds the only slot
        started = time.monotonic()
        exchange = InstanceClient.for_instance(pooled_instance).request("GET", "/work")
    assert time.monotonic() - started >= 1
    assert exchange.response_status is None
    assert exchange.error == 'No free slot in connection pool "Shared" within 1 s (1 requests already in flight).'


def test_requests_over_the_rate_limit_wait_for_the_next_window(redis_cache, company, make_connector, make_instance, httpserver):
    httpserver.expect_request("/ping").respond_with_json({})
    instance = make_instance(make_connector(company, base_url=httpserver.url_for("")), rate_limit_amount=2, rate_limit_unit="second")
    client = InstanceClient.for_instance(instance)
    # Start just after a window opens so the first two requests share it.
    time.sleep(1 - time.time() % 1 + 0.01)
    started = time.monotonic()
    assert [client.request("GET", "/ping").response_status for _ in range(3)] == [200, 200, 200]
    assert time.monotonic() - started >= 0.9  # the third request was queued until the next second
    assert len(httpserver.log) == 3


def test_a_used_up_daily_limit_fails_at_once_with_a_clear_message(redis_cache, company, make_connector, make_instance, httpserver):
    httpserver.expect_request("/ping").respond_with_json({})
    instance = make_instance(make_connector(company, base_url=httpserver.url_for("")), rate_limit_amount=1, rate_limit_unit="day")
    client = InstanceClient.for_instance(instance)
    assert client.request("GET", "/ping").response_status == 200
    started = time.monotonic()
    exchange = client.request("GET", "/ping")
    assert time.monotonic() - started < 1
    assert exchange.error.startswith("The rate limit of 1 per day is used up")
    assert len(httpserver.log) == 1


def test_rate_limits_are_per_instance(redis_cache, company, make_connector, make_instance, httpserver):
    httpserver.expect_request("/ping").respond_with_json({})
    connector = make_connector(company, base_url=httpserver.url_for(""))
    first = make_instance(connector, "First", rate_limit_amount=1, rate_limit_unit="day")
    second = make_instance(connector, "Second", rate_limit_amount=1, rate_limit_unit="day")
    assert InstanceClient.for_instance(first).request("GET", "/ping").response_status == 200
    assert InstanceClient.for_instance(second).request("GET", "/ping").response_status == 200
