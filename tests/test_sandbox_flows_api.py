"""The Sandbox API's data for process flows: paginated orders and products, received orders, slow and failing answers."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from patchworks_site.models import Company, Role, User
from sandbox import api as sandbox_api
from sandbox.models import SandboxAccount, SandboxReceivedOrder

TOKEN = {"X-Api-Key": "sandbox-token"}
AS_OF = "2026-11-23T18:40:00Z"


@pytest.fixture
def api(client, db):
    return client


def account_key(company: Company) -> str:
    """A new Sandbox account key for the company, as an Administrator issues it."""
    return SandboxAccount.objects.for_company(company.pk).issue_key()


def get(api, path: str, headers: dict | None = None, **params):
    return api.get(f"/sandbox/api/{path}", params, headers={**TOKEN, **(headers or {})})


def post(api, body, path: str = "orders", account: str = "", **params):
    query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {**TOKEN, **({"X-Sandbox-Account": account} if account else {})}
    return api.post(f"/sandbox/api/{path}{query}", raw, content_type="application/json", headers=headers)


def follow(api, response) -> list[dict]:
    """Every record of a next-link style listing, following links.next to the end."""
    records, pages = [], 0
    while True:
        body = response.json()
        assert response.status_code == 200, body
        records.extend(body.get("orders", body.get("products", [])))
        pages += 1
        assert pages < 200
        if body["links"]["next"] is None:
            return records
        assert body["links"]["next"].startswith("/sandbox/api/")
        response = api.get(body["links"]["next"], headers=TOKEN)


# --- orders: page-number pagination ---------------------------------------------------------


def test_orders_are_paginated_by_page_number_to_the_end(api):
    first = get(api, "orders", as_of=AS_OF, per_page=100).json()
    assert first["meta"] == {"page": 1, "per_page": 100, "total": 240, "as_of": AS_OF}
    assert len(first["orders"]) == 100
    pages = [first] + [get(api, "orders", as_of=AS_OF, per_page=100, page=n).json() for n in (2, 3, 4)]
    assert [len(p["orders"]) for p in pages] == [100, 100, 40, 0]
    assert pages[2]["links"]["next"] is None and pages[1]["links"]["next"] is not None
    ids = [o["id"] for p in pages for o in p["orders"]]
    assert len(ids) == len(set(ids)) == 240
    updated = [o["updated_at"] for p in pages for o in p["orders"]]
    assert updated == sorted(updated, reverse=True)
    assert updated[0] == AS_OF and updated[1] == "2026-11-23T18:28:00Z"  # 12 minutes apart, newest first


def test_an_order_has_the_documented_fields(api):
    order = get(api, "orders", as_of=AS_OF, per_page=1).json()["orders"][0]
    assert set(order) == {"id", "number", "customer", "total", "currency", "status", "created_at", "updated_at"}
    assert set(order["customer"]) == {"name", "email"} and "@" in order["customer"]["email"]
    assert isinstance(order["total"], str) and float(order["total"]) > 0
    assert order["created_at"] <= order["updated_at"]


def test_following_the_next_links_keeps_the_anchor_and_reaches_the_end(api):
    orders = follow(api, get(api, "orders", per_page=7, count=50))
    assert len(orders) == 50 and len({o["id"] for o in orders}) == 50
    anchor = datetime.fromisoformat(orders[0]["updated_at"])
    assert datetime.fromisoformat(orders[-1]["updated_at"]) == anchor - 49 * timedelta(minutes=12)


def test_the_same_as_of_gives_the_same_orders(api):
    one = get(api, "orders", as_of=AS_OF, page=3).json()
    two = get(api, "orders", as_of="2026-11-23T18:40:00+00:00", page=3).json()
    assert one["orders"] == two["orders"]
    # An order is the same order at the same moment whatever the anchor: 24 minutes later it is two rows down.
    later = get(api, "orders", as_of="2026-11-23T19:04:00Z", per_page=5).json()["orders"]
    assert later[2] == get(api, "orders", as_of=AS_OF, per_page=1).json()["orders"][0]


def test_without_as_of_the_anchor_is_now_floored_to_ten_minutes(api):
    meta = get(api, "orders", per_page=1).json()["meta"]
    anchor = datetime.fromisoformat(meta["as_of"])
    assert anchor.minute % 10 == 0 and anchor.second == 0
    assert timedelta(0) <= datetime.now(UTC) - anchor < timedelta(minutes=10, seconds=5)


def test_a_hundred_thousand_orders_page_as_quickly_as_the_first(api):
    started = time.perf_counter()
    body = get(api, "orders", count=100000, per_page=100, page=1000, as_of=AS_OF).json()
    assert len(body["orders"]) == 100 and body["links"]["next"] is None and body["meta"]["total"] == 100000
    since = get(api, "orders", count=100000, per_page=100, page=5, as_of=AS_OF,
                updated_since="2025-01-01T00:00:00+0000").json()
    assert since["meta"]["total"] == int((datetime.fromisoformat(AS_OF) - datetime(2025, 1, 1, tzinfo=UTC))
                                         / timedelta(minutes=12)) + 1
    assert time.perf_counter() - started < 2


# --- updated_since: read in the instance's time zone and date format ---------------------------------


def since_total(api, value: str, zone: str | None = None, fmt: str | None = None) -> int:
    headers = {}
    if zone:
        headers["X-Sandbox-Time-Zone"] = zone
    if fmt:
        headers["X-Sandbox-Date-Format"] = fmt
    response = get(api, "orders", headers, as_of=AS_OF, updated_since=value, per_page=100)
    assert response.status_code == 200, response.json()
    orders = response.json()["orders"]
    assert all(o["updated_at"] >= orders[-1]["updated_at"] for o in orders)
    return response.json()["meta"]["total"]


def test_updated_since_defaults_to_utc_iso_8601(api):
    # 18:40 back to 16:40 inclusive: 2 hours / 12 minutes + 1
    assert since_total(api, "2026-11-23T16:40:00+0000") == 11
    orders = get(api, "orders", as_of=AS_OF, updated_since="2026-11-23T16:40:00+0000").json()["orders"]
    assert orders[-1]["updated_at"] == "2026-11-23T16:40:00Z"


def test_the_same_text_means_another_moment_in_another_time_zone(api):
    fmt = "%m/%d/%Y %H:%M"
    utc = since_total(api, "11/23/2026 16:40", "UTC", fmt)
    london = since_total(api, "11/23/2026 16:40", "Europe/London", fmt)  # GMT in November: the same moment
    new_york = since_total(api, "11/23/2026 13:40", "America/New_York", fmt)  # 18:40 UTC
    same_text_new_york = since_total(api, "11/23/2026 16:40", "America/New_York", fmt)  # 21:40 UTC: after the anchor
    assert utc == london == 11
    assert new_york == 1
    assert same_text_new_york == 0
    # 10:40 in Kolkata is 05:10 UTC: 13.5 hours before the anchor, 67 steps of 12 minutes and the anchor itself
    assert since_total(api, "23.11.2026 10:40", "Asia/Kolkata", "%d.%m.%Y %H:%M") == 68


def test_an_offset_in_the_text_wins_over_the_time_zone_header(api):
    assert since_total(api, "2026-11-23T11:40:00-0500", "Asia/Tokyo") == since_total(api, "2026-11-23T16:40:00+0000") == 11


def test_a_date_that_does_not_match_the_format_is_a_400_naming_format_and_zone(api):
    response = get(api, "orders", {"X-Sandbox-Time-Zone": "America/New_York", "X-Sandbox-Date-Format": "%m/%d/%Y %H:%M"},
                   updated_since="2026-11-23T16:40:00Z")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_updated_since"
    assert "%m/%d/%Y %H:%M" in body["error_description"] and "America/New_York" in body["error_description"]


@pytest.mark.parametrize("headers", [{"X-Sandbox-Time-Zone": "Mars/Olympus"}, {"X-Sandbox-Time-Zone": "../../etc/passwd"},
                                     {"X-Sandbox-Date-Format": "no codes"}])
def test_an_unknown_time_zone_or_format_is_a_400(api, headers):
    response = get(api, "orders", headers, updated_since="2026-11-23T16:40:00+0000")
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_time_zone", "invalid_date_format")


@pytest.mark.parametrize("params", [
    {"page": "two"}, {"page": "0"}, {"per_page": "101"}, {"per_page": "-5"}, {"count": "100001"}, {"count": "1e5"},
    {"page": "²"}, {"as_of": "yesterday"}, {"updated_since": "x\x00y"}, {"page": "1\x00"}, {"delay_ms": "10001"},
    {"delay_ms": "soon"}, {"fail_with": "200"}, {"fail_with": "600"}, {"per_page": "9" * 30},
    {"as_of": "0001-01-01T00:00:00"}, {"as_of": "0001-01-01T00:00:00+05:00"},
    {"updated_since": "2026-11-23T16:40:00+0000", "X-Sandbox-Date-Format": "%m %m"},
])
def test_bad_parameters_are_a_clear_400(api, params):
    headers = {k: params.pop(k) for k in list(params) if k.startswith("X-")}
    response = get(api, "orders", headers, **params)
    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith("invalid_") and body["error_description"]


# --- products: next-link pagination -------------------------------------------------------------------


def test_products_follow_next_links_to_the_end(api):
    first = get(api, "products").json()
    assert len(first["products"]) == 25 and first["links"]["next"].startswith("/sandbox/api/products?")
    products = follow(api, get(api, "products", limit=7))
    assert len(products) == 60
    assert [p["id"] for p in products] == list(range(1, 61))
    assert products == follow(api, get(api, "products", limit=100))
    assert len(follow(api, get(api, "products", count=1000, limit=100))) == 1000


def test_credentials_in_the_query_stay_out_of_the_next_link(api):
    response = api.get("/sandbox/api/products", {"api_key": "sandbox-token", "limit": "5"})
    assert response.status_code == 200
    link = response.json()["links"]["next"]
    assert "sandbox-token" not in link and "api_key" not in link and "limit=5" in link
    orders = api.get("/sandbox/api/orders", {"api_key": "sandbox-token"}).json()
    assert "sandbox-token" not in orders["links"]["next"]


def test_a_forged_cursor_is_a_400(api):
    response = get(api, "products", cursor="not-a-cursor")
    assert response.status_code == 400 and response.json()["error"] == "invalid_cursor"


# --- received orders ----------------------------------------------------------------------------------------


def test_a_posted_order_is_stored_and_listed_newest_first(api):
    response = post(api, {"reference": "SB-1", "customer": "Ada Lovelace", "total": "12.50"})
    assert response.status_code == 201
    answer = response.json()
    assert set(answer) == {"id", "received_at"}
    post(api, {"reference": "SB-2", "customer": {"name": "Grace Hopper"}, "total": "7.00"})
    listed = get(api, "orders/received").json()
    assert listed["meta"]["total"] == 2
    assert [o["body"]["reference"] for o in listed["orders"]] == ["SB-2", "SB-1"]
    assert listed["orders"][1]["id"] == answer["id"]


def test_a_batch_is_a_list_and_gets_a_list_back(api):
    response = post(api, [{"reference": f"B-{n}"} for n in range(3)])
    assert response.status_code == 201
    assert len(response.json()) == 3 and all("received_at" in item for item in response.json())
    assert SandboxReceivedOrder.objects.count() == 3


def test_received_orders_are_paginated(api):
    post(api, [{"reference": f"P-{n}"} for n in range(30)])
    first = get(api, "orders/received", per_page=20).json()
    assert len(first["orders"]) == 20 and first["links"]["next"]
    second = api.get(first["links"]["next"], headers=TOKEN).json()
    assert len(second["orders"]) == 10 and second["links"]["next"] is None
    assert second["orders"][-1]["body"]["reference"] == "P-0"


def test_only_the_newest_orders_are_kept(api, settings):
    settings.SANDBOX_MAX_ORDERS_PER_ACCOUNT = 5
    for n in range(4):
        post(api, [{"reference": f"K-{n}-{m}"} for m in range(2)])
    assert SandboxReceivedOrder.objects.count() == 5
    assert SandboxReceivedOrder.objects.order_by("id").first().body == {"reference": "K-1-1"}


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"[]", b"42", b'{"a": "\\u0000"}',
                                  b'{"a": "\\ud800"}', b"[" * 100000 + b"]" * 100000, b"\xff\xfe"])
def test_what_is_not_an_order_is_a_400_and_nothing_is_stored(api, body):
    response = post(api, body)
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_json", "invalid_order")
    assert not SandboxReceivedOrder.objects.exists()


def test_a_batch_with_one_bad_item_stores_nothing(api):
    response = post(api, [{"reference": "ok"}, "not an order"])
    assert response.status_code == 400 and "item 1" in response.json()["error_description"]
    assert not SandboxReceivedOrder.objects.exists()


def test_more_than_a_megabyte_is_refused(api):
    response = post(api, {"reference": "big", "notes": "x" * (1024 * 1024)})
    assert response.status_code == 413
    assert not SandboxReceivedOrder.objects.exists()


def test_posting_needs_credentials(api):
    response = api.post("/sandbox/api/orders", json.dumps({"reference": "x"}), content_type="application/json")
    assert response.status_code == 401
    assert not SandboxReceivedOrder.objects.exists()


def test_each_account_lists_only_what_was_sent_for_it(api):
    ours = account_key(Company.objects.create(name="Ours Ltd"))
    theirs = account_key(Company.objects.create(name="Theirs Ltd"))
    post(api, {"reference": "OURS"}, account=ours)
    post(api, {"reference": "THEIRS"}, account=theirs)
    post(api, {"reference": "NOBODY"})  # no account key: the anonymous account
    listed = get(api, "orders/received", headers={"X-Sandbox-Account": ours}).json()
    assert [o["body"]["reference"] for o in listed["orders"]] == ["OURS"]
    assert SandboxReceivedOrder.objects.get(body__reference="NOBODY").account == ""


def test_an_unknown_account_key_is_refused_and_stores_nothing(api):
    for key in ("not-an-account", sandbox_api.account_for(Company.objects.create(name="Known Ltd").pk), "k" * 500):
        response = post(api, {"reference": "NOBODY"}, account=key)
        assert response.status_code == 401 and response.json()["error"] == "unknown_account"
        assert get(api, "orders/received", headers={"X-Sandbox-Account": key}).status_code == 401
    assert not SandboxReceivedOrder.objects.exists()


def test_a_company_never_sees_what_another_company_sent(user_client):
    other = Company.objects.create(name="Elsewhere Ltd")
    post(user_client, {"reference": "THEIR-ORDER", "customer": {"name": "Someone Else"}}, account=account_key(other))
    post(user_client, {"reference": "NO-ACCOUNT"})
    page = user_client.get("/sandbox/received-orders/").content.decode()
    assert "THEIR-ORDER" not in page and "Someone Else" not in page and "NO-ACCOUNT" not in page
    assert 'data-testid="empty-state"' in page


# --- the received-orders page ----------------------------------------------------------------------------------


@pytest.fixture
def user_client(client, db):
    company = Company.objects.create(name="Sandbox Users Ltd")
    user = User.objects.create_user(username="reader", password=None, company=company, role=Role.READ_ONLY)
    client.force_login(user)
    client.account = account_key(company)
    return client


def test_the_received_orders_page_shows_what_was_received(user_client):
    post(user_client, {"reference": "SB-77", "customer": {"name": "Ada Lovelace"}, "total": "12.50", "currency": "GBP",
                       "updated": "11/23/2026 13:40"}, account=user_client.account)
    post(user_client, {"number": "N-5", "customer": "Grace <b>Hopper</b>", "total": 3}, account=user_client.account)
    page = user_client.get("/sandbox/received-orders/").content.decode()
    assert page.count('data-testid="received-order"') == 2
    assert page.index("N-5") < page.index("SB-77")  # newest first
    assert "Ada Lovelace" in page and "12.50 GBP" in page and "11/23/2026 13:40" in page
    assert "Grace &lt;b&gt;Hopper&lt;/b&gt;" in page and "<b>Hopper" not in page


def test_the_received_orders_page_has_an_empty_state_and_pages(user_client):
    assert 'data-testid="empty-state"' in user_client.get("/sandbox/received-orders/").content.decode()
    post(user_client, [{"reference": f"R-{n:03d}"} for n in range(60)], account=user_client.account)
    first = user_client.get("/sandbox/received-orders/").content.decode()
    assert first.count('data-testid="received-order"') == 50 and "R-059" in first and "R-009" not in first
    second = user_client.get("/sandbox/received-orders/?page=2").content.decode()
    assert second.count('data-testid="received-order"') == 10 and "R-000" in second
    assert user_client.get("/sandbox/received-orders/?page=x\x00").status_code == 200


def test_the_received_orders_page_needs_a_login(client, db):
    response = client.get("/sandbox/received-orders/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


# --- slow and failing on demand ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["orders", "products", "customers", "orders/received"])
def test_fail_with_answers_that_status_with_a_json_error(api, path):
    response = get(api, path, fail_with=503)
    assert response.status_code == 503
    assert response.json()["error"] == "demonstration_failure" and response["Retry-After"] == "1"
    assert get(api, path, fail_with=422).status_code == 422


def test_fail_with_on_a_post_stores_nothing(api):
    assert post(api, {"reference": "x"}, fail_with=500).status_code == 500
    assert not SandboxReceivedOrder.objects.exists()


def test_delay_ms_answers_later(api):
    started = time.perf_counter()
    assert get(api, "products", delay_ms=300).status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_credentials_are_checked_before_failing_on_demand(api):
    response = api.get("/sandbox/api/orders", {"fail_with": "500"})
    assert response.status_code == 401


# --- a process flow run against the Sandbox, over real HTTP ------------------------------------------------------


def test_a_flow_run_moves_sandbox_orders_into_what_the_sandbox_received(live_server, company, sandbox_listing, install,
                                                                        make_instance, client, settings):
    from flows import execution, queueing
    from flows.models import ProcessFlow, RunStatus, RunTrigger, Shape
    from instances.outbound import transport

    settings.SANDBOX_BASE_URL = f"{live_server.url}/sandbox/api"  # the live server is this deployment's Sandbox
    connector = install(sandbox_listing, company)
    instance = make_instance(connector, "Sandbox - live", {"api_token": "sandbox-token", "account_key": account_key(company)},
                             auth_method=connector.auth_methods.get(key="token"),
                             values={"base_url": f"{live_server.url}/sandbox/api"})
    # The catalog's 120 a minute would make this test take two minutes.
    instance.rate_limit_amount, instance.rate_limit_unit = 100, "second"
    instance.save()
    flow = ProcessFlow.objects.create(company=company, name="Sandbox round trip", enabled=True)
    for position, key in enumerate(("list_orders", "create_order")):
        Shape.objects.create(flow=flow, position=position, instance=instance, endpoint=connector.endpoints.get(key=key))

    try:
        run = execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk)
    finally:
        transport.adapters.clear()  # the kept-alive connections end, and the server threads holding them

    assert run.status == RunStatus.SUCCESS, run.failure_reason
    receive, send = run.shape_runs.order_by("position")
    # Every page of the Sandbox's 240 orders was fetched and each order sent on.
    assert receive.pages > 1 and receive.items_out == 240 and send.items_out == 240
    stored = list(SandboxReceivedOrder.objects.order_by("-id"))
    assert len(stored) == receive.items_out
    assert stored[0].body["number"].startswith("SB-") and "name" in stored[0].body["customer"]
    user = User.objects.create_user(username="looker", password=None, company=company, role=Role.READ_ONLY)
    client.force_login(user)
    page = client.get("/sandbox/received-orders/").content.decode()
    assert stored[0].body["number"] in page and stored[0].body["customer"]["name"] in page
