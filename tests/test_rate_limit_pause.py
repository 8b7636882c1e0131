"""A 429's Retry-After pauses an instance for at most OUTBOUND_MAX_RETRY_AFTER_SECONDS; the pause is shown and can be cleared."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from werkzeug import Response

from instances.outbound import InstanceClient, limits, retry
from patchworks_site.models import AuditEntry, Role
from tests.limits_helpers import close_store, use_store

# The pass's own Redis database (one per xdist worker, see tests/worker_env.py) when it has one.
REDIS_URL = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/5"
NOW = 1_790_000_000
HOUR = 3600


@pytest.fixture(params=["redis", "sqlite"])
def backend(request, settings, tmp_path):
    """Point the limits at one store (Redis, or the embedded SQLite file)."""
    use_store(request.param, settings, tmp_path, REDIS_URL)
    yield request.param
    close_store()


# --- the clamp --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "1e12"},
        {"Retry-After": "1" * 400},  # float() makes it infinite
        {"Retry-After": "inf"},
        {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"},
        {"X-RateLimit-Reset": "1e12"},
        {"X-RateLimit-Reset": "9" * 400},
        {"RateLimit-Reset": "253402300799"},  # the last second of year 9999, as an epoch timestamp
    ],
)
def test_an_absurd_retry_after_or_reset_header_waits_at_most_an_hour(headers):
    for _ in range(5):
        assert retry.after_429().pause(0, headers=headers, now=NOW) == HOUR


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"Retry-After": "-1e12"}, 0, 0.05),
        ({"Retry-After": "-inf"}, 0, 0.05),
        ({"Retry-After": "nan"}, 1, 1.15),  # unreadable: the backoff, 2 ** attempt
        ({"Retry-After": "Sat, 31 Dec 99999 23:59:59 GMT"}, 1, 1.15),
        ({"Retry-After": "Mon, 01 Jan 1900 00:00:00 GMT"}, 0, 0.05),  # in the past: now
        ({"X-RateLimit-Reset": "-" + "9" * 400}, 0, 0.05),
    ],
)
def test_negative_past_and_unreadable_values_are_handled_without_errors(headers, low, high):
    assert low <= retry.after_429().pause(0, headers=headers, now=NOW) <= high


def test_the_longest_pause_is_a_setting(settings):
    settings.OUTBOUND_MAX_RETRY_AFTER_SECONDS = 120
    assert retry.after_429().pause(0, headers={"Retry-After": "7200"}, now=NOW) == 120
    assert 7 <= retry.after_429().pause(0, headers={"Retry-After": "7"}, now=NOW) <= 8.05


@pytest.mark.django_db
@pytest.mark.parametrize("retry_after", ["1e12", "1" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_429_with_an_absurd_retry_after_pauses_the_instance_for_at_most_an_hour(
    backend, company, make_connector, make_instance, httpserver, settings, retry_after
):
    settings.OUTBOUND_429_RETRIES = 1
    httpserver.expect_request("/me").respond_with_response(Response("", status=429, headers={"Retry-After": retry_after}))
    instance = make_instance(make_connector(company, base_url=httpserver.url_for("")))

    exchange = InstanceClient.for_instance(instance).request("GET", "/me")

    until = limits.rate_limit_paused_until(instance)
    assert datetime.now(UTC) + timedelta(minutes=59) < until <= datetime.now(UTC) + timedelta(hours=1, seconds=5)
    # The retry is not waited for in the request: it is throttled until the (clamped) end of the pause.
    assert exchange.throttled_until is not None and abs(exchange.throttled_until - until) < timedelta(seconds=2)
    assert len(httpserver.log) == 1


# --- shown on the instance's page, cleared by an Administrator ------------------------------


@pytest.fixture
def paused(backend, company, make_connector, make_instance):
    instance = make_instance(make_connector(company))
    limits.pause_rate_limit(instance, 1800)
    return instance


@pytest.mark.django_db
def test_the_pause_and_its_end_show_on_the_instance_settings_page(paused, admin_client):
    until = limits.rate_limit_paused_until(paused)
    page = admin_client.get(f"/instances/{paused.pk}/").content.decode()
    assert f"Rate limit paused by the API until\n    <time datetime=\"{until.isoformat()[:19]}" in page
    assert f"{until:%H:%M:%S} UTC</time>" in page
    assert 'data-testid="clear-rate-limit-pause"' in page


@pytest.mark.django_db
def test_an_instance_that_is_not_paused_shows_no_pause(backend, company, make_connector, make_instance, admin_client):
    instance = make_instance(make_connector(company))
    page = admin_client.get(f"/instances/{instance.pk}/").content.decode()
    assert "Rate limit paused" not in page


@pytest.mark.django_db
def test_an_administrator_clears_the_pause_for_every_worker(paused, admin_client):
    response = admin_client.post(f"/instances/{paused.pk}/rate-limit-pause/clear/", follow=True)

    assert response.status_code == 200
    assert "The rate limit pause was cleared" in response.content.decode()
    assert "Rate limit paused" not in response.content.decode()
    assert limits.rate_limit_paused_until(paused) is None
    assert limits.store().paused_buckets([limits.rate_bucket(paused)]) == {}
    entry = AuditEntry.objects.get(object_type="instance", object_id=str(paused.pk), changes__has_key="rate limit pause")
    assert entry.user.role == Role.ADMINISTRATOR
    assert entry.changes["rate limit pause"].startswith("cleared (it was to end at ")
    # The rate limit lets the next request go at once.
    started = time.monotonic()
    with limits.outbound(paused):
        pass
    assert time.monotonic() - started < 5


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.MANAGER, Role.USER, Role.READ_ONLY])
def test_other_roles_see_the_pause_but_cannot_clear_it(paused, make_user, company, client_for, role):
    client = client_for(make_user(company, role))
    page = client.get(f"/instances/{paused.pk}/").content.decode()
    assert "Rate limit paused by the API until" in page
    assert "clear-rate-limit-pause" not in page

    assert client.post(f"/instances/{paused.pk}/rate-limit-pause/clear/").status_code == 403
    assert limits.rate_limit_paused_until(paused) is not None
    assert not AuditEntry.objects.filter(changes__has_key="rate limit pause").exists()


@pytest.mark.django_db
def test_another_companys_administrator_cannot_clear_the_pause(paused, make_user, other_company, client_for):
    client = client_for(make_user(other_company, Role.ADMINISTRATOR))
    assert client.post(f"/instances/{paused.pk}/rate-limit-pause/clear/").status_code == 404
    assert limits.rate_limit_paused_until(paused) is not None


@pytest.mark.django_db
def test_clearing_needs_a_post_with_csrf(paused, admin_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.get(f"/instances/{paused.pk}/rate-limit-pause/clear/").status_code == 405
    assert client.post(f"/instances/{paused.pk}/rate-limit-pause/clear/").status_code == 403
    assert limits.rate_limit_paused_until(paused) is not None


# --- shown on the manage connectors page ---------------------------------------------------------


def _row(page: str, instance) -> str:
    return page.split(f'id="instance-{instance.pk}"', 1)[1].split("</tr>", 1)[0]


@pytest.mark.django_db
def test_the_manage_page_row_shows_the_pause_and_its_end(paused, company, make_instance, client_for, make_user):
    other = make_instance(paused.connector, "Not paused")
    until = limits.rate_limit_paused_until(paused)
    client = client_for(make_user(company, Role.READ_ONLY))
    for url in ("/connectors/", f"/connectors/{paused.connector_id}/instances/",
                f"/connectors/?highlight=instance-{paused.pk}"):
        page = client.get(url).content.decode()
        row = _row(page, paused)
        assert 'data-testid="rate-limit-paused"' in row
        assert f'href="/instances/{paused.pk}/"' in row
        assert f'paused by the API until <time datetime="{until.isoformat()[:19]}' in row
        assert f">{until:%H:%M:%S} UTC</time>" in row
        assert "rate-limit-paused" not in _row(page, other)


@pytest.mark.django_db
def test_an_instance_sharing_a_paused_rate_limit_shows_the_pause_too(backend, company, make_connector, make_instance,
                                                                     admin_client):
    connector = make_connector(company)
    first = make_instance(connector, "EU", rate_limit_group="Shop API")
    second = make_instance(connector, "UK", rate_limit_group="shop api")
    limits.pause_rate_limit(first, 600)
    page = admin_client.get("/connectors/").content.decode()
    assert "paused by the API until" in _row(page, first) and "paused by the API until" in _row(page, second)


@pytest.mark.django_db
def test_the_pages_still_show_when_the_rate_limit_store_is_unavailable(company, make_connector, make_instance,
                                                                      admin_client, settings):
    instance = make_instance(make_connector(company))
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    limits._store.cache_clear()
    try:
        for url in ("/connectors/", f"/instances/{instance.pk}/", f"/connectors/{instance.connector_id}/instances/"):
            response = admin_client.get(url)
            assert response.status_code == 200 and "paused by the API" not in response.content.decode()
    finally:
        limits._store.cache_clear()
