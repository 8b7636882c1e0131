"""OAuth 2 client credentials tokens are cached encrypted: the shared cache (Redis) never holds one readable."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus

import pytest
from django.conf import settings
from django.core.cache import cache

from flows import execution, queueing
from flows.models import RunStatus, RunTrigger
from instances.outbound import InstanceClient, auth
from tests.flow_helpers import connection, flow_of

pytestmark = pytest.mark.django_db

ACCESS_TOKEN = "at-Cc-Secret-Token-0123456789"
CLIENT_SECRET = "cs-Client-Secret-abcdef"


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def instance(company, make_connector, make_instance, httpserver):
    connector = make_connector(
        company,
        name="Shop API",
        base_url=httpserver.url_for("/api"),
        rate_limit={"amount": 1000, "unit": "second"},
        auth_methods=[{
            "key": "oauth", "name": "OAuth 2", "type": "oauth2_client_credentials",
            "token_url": httpserver.url_for("/oauth/token"),
            "variables": [
                {"key": "client_id", "label": "Client ID", "required": True},
                {"key": "client_secret", "label": "Client secret", "required": True, "secret": True},
            ],
            "test_request": {"path": "/me"},
        }],
        endpoints=[{"key": "list_orders", "name": "List orders", "entity": "Order", "direction": "receive",
                    "method": "GET", "path": "/orders"}],
    )
    return make_instance(connector, "Shop", {"client_secret": CLIENT_SECRET}, values={"client_id": "cid-1"})


def token_endpoint(httpserver, token: str = ACCESS_TOKEN):
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(
        {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
    )
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])


def token_requests(httpserver) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == "/oauth/token")


def raw_cache_values() -> list[bytes]:
    """Every value the cache holds, as stored: Redis keys of every type, or the local memory cache's pickles."""
    if settings.REDIS_URL:
        import redis

        db = redis.Redis.from_url(settings.REDIS_URL)
        values = []
        for key in db.scan_iter():
            kind = db.type(key).decode()
            if kind == "string":
                values.append(db.get(key) or b"")
            elif kind == "list":
                values += db.lrange(key, 0, -1)
            elif kind == "hash":
                values += [k + b"=" + v for k, v in db.hgetall(key).items()]
            elif kind == "zset":
                values += [member for member, _ in db.zrange(key, 0, -1, withscores=True)]
            elif kind == "set":
                values += list(db.smembers(key))
            values.append(key)
        return values
    return [key.encode() + b"=" + value for key, value in cache._cache.items()]


def readable_forms(value: bytes) -> bytes:
    """`value`, with whatever Base64 runs in it decode to appended (any alignment of the run's start)."""
    decoded = [value]
    for run in re.findall(rb"[A-Za-z0-9+/_=-]{12,}", value):
        for start in range(4):
            chunk = run[start:].rstrip(b"=")
            chunk += b"=" * (-len(chunk) % 4)
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    decoded.append(decode(chunk))
                except (binascii.Error, ValueError):
                    pass
    return b"\n".join(decoded)


def assert_no_token_in_the_cache(token: str) -> None:
    forms = {token.encode(), quote(token, safe="").encode(), quote_plus(token).encode()}
    values = raw_cache_values()
    assert values, "the cache holds nothing: the token was not cached at all"
    for value in values:
        readable = readable_forms(value)
        for form in forms:
            assert form not in readable, f"the access token is readable in the cache: {value[:80]!r}"


def test_a_run_caches_its_access_token_encrypted_and_reuses_it(company, instance, httpserver):
    token_endpoint(httpserver)
    flow = flow_of(company, connection(instance, "list_orders"), connection(instance, "list_orders"))

    run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL, now=datetime(2026, 7, 1, tzinfo=UTC)).pk)

    assert run.status == RunStatus.SUCCESS, run.failure_reason
    assert token_requests(httpserver) == 1  # two requests, one token
    assert [r.headers["Authorization"] for r, _ in httpserver.log if r.path == "/api/orders"] == [
        f"Bearer {ACCESS_TOKEN}"
    ] * 2
    assert_no_token_in_the_cache(ACCESS_TOKEN)


def test_the_cached_token_is_reused_by_another_client(instance, httpserver):
    token_endpoint(httpserver)
    for _ in range(2):
        assert InstanceClient.for_instance(instance).request("GET", "/orders").response_status == 200
    assert token_requests(httpserver) == 1
    assert_no_token_in_the_cache(ACCESS_TOKEN)


def test_a_cached_value_that_does_not_decrypt_is_a_miss_and_is_logged_without_its_value(instance, httpserver, caplog):
    token_endpoint(httpserver)
    client = InstanceClient.for_instance(instance)
    client.request("GET", "/orders")
    key = auth.token_cache_key(client.token_endpoint(), httpserver.url_for("/oauth/token"))
    sealed = cache.get(key)
    assert sealed.startswith("v1:")
    tampered = sealed[:-8] + ("AAAAAAA=" if not sealed.endswith("AAAAAAA=") else "BBBBBBB=")
    # A token cached in plain (before cached tokens were encrypted), then a tampered ciphertext.
    for planted in ("at-Planted-Plain-Token-999", tampered):
        caplog.clear()
        cache.set(key, planted, 600)
        with caplog.at_level(logging.WARNING):
            exchange = InstanceClient.for_instance(instance).request("GET", "/orders")
        assert exchange.response_status == 200
        assert [r.headers["Authorization"] for r, _ in httpserver.log if r.path == "/api/orders"][-1] == (
            f"Bearer {ACCESS_TOKEN}"
        )
        assert "could not be decrypted" in caplog.text and planted not in caplog.text
    assert token_requests(httpserver) == 3
    assert_no_token_in_the_cache(ACCESS_TOKEN)


@pytest.mark.parametrize("expires_in", ["1" + "0" * 30, "1e308", "Infinity", '"7200"'])
def test_a_client_credentials_token_with_an_absurd_lifetime_is_cached_for_at_most_a_year(instance, httpserver, expires_in):
    httpserver.expect_request("/oauth/token", method="POST").respond_with_data(
        f'{{"access_token": "{ACCESS_TOKEN}", "token_type": "Bearer", "expires_in": {expires_in}}}',
        content_type="application/json",
    )
    httpserver.expect_request("/api/orders").respond_with_json([{"id": 1}])
    for _ in range(2):
        assert InstanceClient.for_instance(instance).request("GET", "/orders").response_status == 200
    assert token_requests(httpserver) == 1
    if not settings.REDIS_URL:
        [expires_at] = [at for key, at in cache._expire_info.items() if "oauth2-token" in key]
        assert expires_at <= datetime.now(UTC).timestamp() + 365 * 86400
