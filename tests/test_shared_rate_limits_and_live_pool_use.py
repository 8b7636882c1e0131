"""Shared rate limits on the settings and manage connectors pages; live use on the connection pools page."""

from __future__ import annotations

import threading
import time

import pytest

from instances.models import ConnectionPool, Instance
from instances.outbound import limits
from tests.test_instance_settings import form_data


@pytest.fixture
def connector(company, make_connector):
    return make_connector(company, name="Shop API", concurrency_limit=5)


@pytest.fixture
def uk(connector, make_instance):
    return make_instance(connector, "Shop UK", rate_limit_amount=10, rate_limit_unit="second")


@pytest.fixture
def eu(connector, make_instance):
    return make_instance(connector, "Shop EU", rate_limit_amount=4, rate_limit_unit="minute", rate_limit_group="Shop account")


def test_joining_a_shared_rate_limit_gives_every_instance_in_it_the_same_limit(admin_client, uk, eu):
    response = admin_client.post(
        f"/instances/{uk.pk}/", form_data(uk, rate_limit_amount="20", rate_limit_unit="minute", rate_limit_group=" shop  ACCOUNT ")
    )
    assert response.status_code == 302
    uk.refresh_from_db()
    eu.refresh_from_db()
    assert uk.rate_limit_group == "Shop account"  # the spelling already in use
    assert (eu.rate_limit_amount, eu.rate_limit_unit) == (20, "minute")
    assert limits.rate_bucket(uk) == limits.rate_bucket(eu)


def test_the_settings_page_names_the_instances_sharing_the_rate_limit(admin_client, connector, uk, eu):
    Instance.objects.filter(pk=uk.pk).update(rate_limit_group="Shop account")
    page = admin_client.get(f"/instances/{uk.pk}/").content.decode()
    assert 'name="rate_limit_group" value="Shop account"' in page
    assert '<option value="Shop account">' in page
    assert "Shares its rate limit with" in page and f'href="/instances/{eu.pk}/">Shop EU</a>' in page


def test_leaving_a_shared_rate_limit_gives_the_instance_its_own_again(admin_client, eu, uk):
    Instance.objects.filter(pk=uk.pk).update(rate_limit_group="Shop account")
    admin_client.post(f"/instances/{eu.pk}/", form_data(eu, rate_limit_group=""))
    eu.refresh_from_db()
    assert eu.rate_limit_group == ""
    assert limits.rate_bucket(eu) != limits.rate_bucket(uk)
    assert "Shares its rate limit with" not in admin_client.get(f"/instances/{eu.pk}/").content.decode()


def test_the_same_name_in_another_company_is_another_rate_limit(eu, other_company, make_connector, make_instance):
    theirs = make_instance(make_connector(other_company, name="Shop API"), "Globex shop", rate_limit_group="Shop account")
    assert limits.rate_bucket(theirs) != limits.rate_bucket(eu)
    assert theirs not in eu.sharing_rate_limit()


def test_the_manage_connectors_page_shows_the_shared_rate_limit(admin_client, eu):
    page = admin_client.get("/connectors/").content.decode()
    assert "4 per minute" in page and "shared: Shop account" in page


# --- live use of connection pools -------------------------------------------------------


@pytest.fixture
def pool(company, connector, uk, eu):
    pool = ConnectionPool.objects.create(company=company, name="Storefront", limit=1, timeout_seconds=5)
    pool.connectors.add(connector)
    Instance.objects.filter(pk__in=[uk.pk, eu.pk]).update(connection_pool=pool)
    return pool


def test_the_pools_page_shows_slots_in_use_and_waiting_requests_by_instance(admin_client, pool, uk, eu):
    empty = admin_client.get("/instances/pools/").content.decode()
    assert "0 / 1 in use" in empty and "waiting" not in empty
    with limits.pool_slot(pool, uk):
        release = threading.Event()

        def wait_in_line() -> None:
            with limits.pool_slot(pool, eu):
                release.wait(5)

        waiting = threading.Thread(target=wait_in_line)
        waiting.start()
        deadline = time.monotonic() + 5
        while limits.pool_usage(pool).waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        page = admin_client.get("/instances/pools/").content.decode()
    release.set()
    waiting.join(5)
    assert "1 / 1 in use" in page and "1 waiting" in page
    assert "Shop UK <span class=\"text-body-tertiary\">(Shop API)</span>: 1 in use" in page
    assert "Shop EU <span class=\"text-body-tertiary\">(Shop API)</span>: 0 in use, 1 waiting" in page
    assert "0 / 1 in use" in admin_client.get("/instances/pools/").content.decode()


def test_the_live_use_refreshes_with_htmx_and_has_a_plain_refresh_link(admin_client, pool):
    page = admin_client.get("/instances/pools/").content.decode()
    assert 'hx-get="/instances/pools/" hx-trigger="every 5s" hx-target="#pool-list" hx-swap="outerHTML"' in page
    assert '<a href="/instances/pools/">refresh</a>' in page
    fragment = admin_client.get("/instances/pools/", headers={"HX-Request": "true", "HX-Target": "pool-list"}).content.decode()
    assert fragment.lstrip().startswith('<div id="pool-list"') and "0 / 1 in use" in fragment


def test_without_a_reachable_store_the_pools_page_still_opens(admin_client, pool, settings, tmp_path):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        page = admin_client.get("/instances/pools/").content.decode()
    finally:
        limits.store().close()
        limits._store.cache_clear()
    assert "Storefront" in page and "unavailable" in page


def test_without_a_reachable_store_nothing_is_sent_and_the_check_says_why(company, make_connector, make_instance, settings, httpserver):
    from instances.checks import recheck

    httpserver.expect_request("/me").respond_with_json({})
    instance = make_instance(make_connector(company, name="Reachable API", base_url=httpserver.url_for("")), "Reachable")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    try:
        result, check = recheck(instance)
    finally:
        limits.store().close()
        limits._store.cache_clear()
    assert not result.ok
    assert check.message == "The rate limit and connection pool store is unavailable; nothing was sent. Try again shortly."
    assert len(httpserver.log) == 0


def test_the_response_tab_says_when_a_check_met_a_429(admin_client, company, make_connector, make_instance, httpserver, settings):
    from werkzeug import Response

    settings.OUTBOUND_429_RETRIES = 1
    httpserver.expect_ordered_request("/me").respond_with_response(Response("", status=429, headers={"Retry-After": "0"}))
    httpserver.expect_ordered_request("/me").respond_with_json({})
    instance = make_instance(make_connector(company, name="Busy API", base_url=httpserver.url_for("")), "Busy")
    admin_client.post(f"/instances/{instance.pk}/check/")
    page = admin_client.get(f"/instances/{instance.pk}/?tab=response").content.decode()
    assert 'data-testid="rate-limit-note">Answered 429 Too Many Requests; the rate limit was paused' in page
