"""The Sandbox honours Idempotency-Key on POST /orders as Stripe does, and its pages count duplicated orders.

A flow run sends each batch with a key that stays the same across its retries
and resumes; these tests hold the Sandbox to its side of "effectively once":
a repeat is answered with the first answer and stores nothing, another body is
a 409, two requests at once store once (on SQLite and, with DATABASE_URL, on
PostgreSQL), keys belong to one account and live 24 hours.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
import requests
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from patchworks_site.models import Company, Role, User
from sandbox import data, idempotency
from sandbox.models import SandboxAccount, SandboxIdempotencyKey, SandboxReceivedOrder

TOKEN = {"X-Api-Key": "sandbox-token"}


def account_key(company: Company) -> str:
    return SandboxAccount.objects.for_company(company.pk).issue_key()


def post(client, body, key: str | None = None, account: str = "", query: str = ""):
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {**TOKEN, **({"Idempotency-Key": key} if key is not None else {}),
               **({"X-Sandbox-Account": account} if account else {})}
    return client.post(f"/sandbox/api/orders{query}", raw, content_type="application/json", headers=headers)


def stored(account: str = "") -> list[tuple[str, str]]:
    return list(SandboxReceivedOrder.objects.filter(account=account).order_by("id").values_list("reference", "idempotency_key"))


# --- 1, 2: the first answer is kept and replayed ---------------------------------------------------------------------


def test_a_repeat_with_the_key_gets_the_first_answer_and_stores_nothing(client, db):
    batch = [{"reference": "SB-1", "total": "12.50"}, {"reference": "SB-2", "total": "7.00"}]
    first = post(client, batch, key="run-7-batch-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    assert stored() == [("SB-1", "run-7-batch-1"), ("SB-2", "run-7-batch-1")]

    again = post(client, batch, key="run-7-batch-1")
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.content == first.content and again["Content-Type"] == "application/json"
    assert [item["id"] for item in again.json()] == list(SandboxReceivedOrder.objects.order_by("id").values_list("id", flat=True))
    assert SandboxReceivedOrder.objects.count() == 2

    # The body is compared as canonical JSON: other spacing and key order are the same request.
    reformatted = json.dumps([{"total": "12.50", "reference": "SB-1"}, {"total": "7.00", "reference": "SB-2"}], indent=4)
    assert post(client, reformatted, key="run-7-batch-1").content == first.content
    assert SandboxReceivedOrder.objects.count() == 2
    row = SandboxIdempotencyKey.objects.get()
    assert (row.account, row.key, row.status_code) == ("", "run-7-batch-1", 201)
    assert row.request_hash == idempotency.request_hash(batch)


def test_one_order_is_replayed_as_the_object_it_was_answered_with(client, db):
    first = post(client, {"reference": "ONE"}, key="k-one")
    again = post(client, {"reference": "ONE"}, key="k-one")
    assert again.json() == first.json() and set(again.json()) == {"id", "received_at"}
    assert stored() == [("ONE", "k-one")]


def test_without_the_header_every_request_stores_as_before(client, db):
    for key in (None, ""):
        assert "Idempotent-Replayed" not in post(client, {"reference": "SAME"}, key=key)
    assert stored() == [("SAME", ""), ("SAME", "")]
    assert not SandboxIdempotencyKey.objects.exists()


# --- 3: another body ------------------------------------------------------------------------------------------------


def test_the_key_with_another_body_is_a_409_and_stores_nothing(client, db):
    assert post(client, [{"reference": "A-1"}], key="batch-key").status_code == 201
    response = post(client, [{"reference": "A-1"}, {"reference": "A-2"}], key="batch-key")
    assert response.status_code == 409
    assert response.json() == {"error": "idempotency_key_reused", "error_description": (
        "This Idempotency-Key was already used with a different request body. Send the same body to get the first "
        "answer again, or use a new key for a new request.")}
    assert "Idempotent-Replayed" not in response
    assert stored() == [("A-1", "batch-key")]


# --- 1: the key and the orders in one transaction -------------------------------------------------------------------


def test_a_refused_request_keeps_neither_its_orders_nor_its_key_so_the_key_can_be_sent_again(client, settings, db):
    settings.SANDBOX_MAX_STORED_BYTES = 100
    # Refused inside the transaction that had already inserted the key: both are rolled back.
    full = post(client, {"reference": "BIG", "notes": "x" * 200}, key="retry-me")
    assert full.status_code == 507 and full.json()["error"] == "sandbox_full"
    assert not SandboxIdempotencyKey.objects.exists() and not SandboxReceivedOrder.objects.exists()
    # A demonstration failure and a bad order keep nothing either.
    assert post(client, {"reference": "BIG", "notes": "x" * 200}, key="retry-me", query="?fail_with=503").status_code == 503
    assert post(client, [{"reference": "BIG"}, "not an order"], key="retry-me").status_code == 400
    assert not SandboxIdempotencyKey.objects.exists()

    settings.SANDBOX_MAX_STORED_BYTES = 10_000
    retried = post(client, {"reference": "BIG", "notes": "x" * 200}, key="retry-me")
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried
    assert stored() == [("BIG", "retry-me")]


def test_a_request_that_lost_the_race_to_the_constraint_replays_the_winners_answer(client, db):
    """What the second of two concurrent requests meets: its look-up found nothing, then the key was committed."""
    first = post(client, [{"reference": "R-1"}], key="raced")
    body_hash = idempotency.request_hash([{"reference": "R-1"}])

    def store_again():
        data.store_received([{"reference": "R-1"}], idempotency_key="raced")
        raise AssertionError("the unique constraint should have refused the key before anything was stored")

    answer = idempotency.answer_once("", "raced", body_hash, store_again)
    assert answer.status_code == 201 and answer.content == first.content and answer["Idempotent-Replayed"] == "true"
    with pytest.raises(idempotency.KeyRefused) as refused:
        idempotency.answer_once("", "raced", idempotency.request_hash([{"reference": "R-2"}]), store_again)
    assert refused.value.status == 409 and refused.value.error == "idempotency_key_reused"
    assert stored() == [("R-1", "raced")]
    assert SandboxIdempotencyKey.objects.count() == 1


# --- 4: concurrency against a real server ---------------------------------------------------------------------------


def _send(url: str, body: list[dict], key: str, account: str) -> requests.Response:
    headers = {**TOKEN, "Idempotency-Key": key, "X-Sandbox-Account": account, "Content-Type": "application/json"}
    return requests.post(f"{url}/sandbox/api/orders", data=json.dumps(body), headers=headers, timeout=60)


def test_two_requests_at_once_with_one_key_store_once_and_the_second_replays(live_server, company, monkeypatch):
    """The first request holds its transaction open until the second has looked the key up and found nothing.

    So the second must meet the unique constraint (PostgreSQL: its insert waits
    for the first to commit; SQLite: its IMMEDIATE transaction waits), and then
    replays the first answer.
    """
    key = account_key(company)
    account = SandboxAccount.objects.get(company=company).account
    second_past_lookup = threading.Event()
    entered = []
    real_answer_once, real_store = idempotency.answer_once, data.store_received

    def answer_once(*args, **kwargs):
        entered.append(threading.get_ident())
        if len(entered) == 2:
            second_past_lookup.set()
        return real_answer_once(*args, **kwargs)

    def store_received(*args, **kwargs):
        assert second_past_lookup.wait(30), "the second request never got past its look-up"
        return real_store(*args, **kwargs)

    monkeypatch.setattr(idempotency, "answer_once", answer_once)
    monkeypatch.setattr(data, "store_received", store_received)
    batch = [{"reference": f"C-{n}", "total": "1.00"} for n in range(50)]
    responses = [None, None]

    def send(slot: int) -> None:
        responses[slot] = _send(live_server.url, batch, "run-1-batch-1", key)

    threads = [threading.Thread(target=send, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(entered) == 2
    assert sorted(r.status_code for r in responses) == [201, 201]
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in responses) == ["", "true"]
    assert responses[0].content == responses[1].content
    assert SandboxReceivedOrder.objects.filter(account=account).count() == 50
    assert SandboxReceivedOrder.objects.filter(account=account, idempotency_key="run-1-batch-1").count() == 50
    assert SandboxIdempotencyKey.objects.filter(account=account).count() == 1


def test_many_requests_at_once_with_one_key_store_each_batch_once(live_server, company):
    key = account_key(company)
    account = SandboxAccount.objects.get(company=company).account
    senders = 6
    for round_ in range(3):
        batch = [{"reference": f"S-{round_}-{n}"} for n in range(100)]
        barrier = threading.Barrier(senders)
        responses = [None] * senders

        def send(slot: int, batch=batch, barrier=barrier, responses=responses, round_=round_) -> None:
            barrier.wait(30)
            responses[slot] = _send(live_server.url, batch, f"storm-{round_}", key)

        threads = [threading.Thread(target=send, args=(slot,)) for slot in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        answered = [r for r in responses if r.status_code == 201]
        assert all(r.status_code in (201, 409) for r in responses), [r.content for r in responses]
        assert all(r.json()["error"] == "idempotency_key_in_use" for r in responses if r.status_code == 409)
        assert [r.headers.get("Idempotent-Replayed") for r in answered].count(None) == 1
        assert len({r.content for r in answered}) == 1
    references = list(SandboxReceivedOrder.objects.filter(account=account).values_list("reference", flat=True))
    assert len(references) == len(set(references)) == 300
    assert SandboxIdempotencyKey.objects.filter(account=account).count() == 3


# --- 5: scope, length, lifetime, bounds -----------------------------------------------------------------------------


def test_keys_belong_to_one_sandbox_account(client, company, other_company):
    ours, theirs = account_key(company), account_key(other_company)
    for account in (ours, theirs, ""):
        response = post(client, {"reference": "SHARED-KEY"}, key="same-key", account=account)
        assert response.status_code == 201 and "Idempotent-Replayed" not in response
    # Another account's key with another body is no conflict either.
    assert post(client, {"reference": "OTHER"}, key="only-ours", account=ours).status_code == 201
    assert post(client, {"reference": "DIFFERENT"}, key="only-ours", account=theirs).status_code == 201
    assert SandboxReceivedOrder.objects.filter(idempotency_key="same-key").count() == 3
    assert SandboxIdempotencyKey.objects.count() == 5


def test_a_key_is_at_most_255_characters(client, db):
    response = post(client, {"reference": "LONG"}, key="k" * 256)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_idempotency_key", "error_description": (
        "The Idempotency-Key header is 256 characters long; a key is at most 255 characters (a UUID is a good key).")}
    assert not SandboxReceivedOrder.objects.exists()
    assert post(client, {"reference": "LONG"}, key="k" * 255).status_code == 201
    assert post(client, {"reference": "LONG"}, key="k" * 255)["Idempotent-Replayed"] == "true"
    assert stored() == [("LONG", "k" * 255)]


def test_a_key_expires_after_24_hours_and_expired_keys_are_removed(client, company, db):
    ours = account_key(company)
    assert post(client, {"reference": "DAY-1"}, key="daily").status_code == 201
    assert post(client, {"reference": "OURS"}, key="ours-old", account=ours).status_code == 201
    a_day_ago = datetime.now(UTC) - timedelta(hours=24, minutes=1)
    SandboxIdempotencyKey.objects.update(created_at=a_day_ago)

    again = post(client, {"reference": "DAY-1"}, key="daily")  # a new request now: stored again
    assert again.status_code == 201 and "Idempotent-Replayed" not in again
    assert stored() == [("DAY-1", "daily"), ("DAY-1", "daily")]
    # The write removed every expired key, the other account's too.
    assert list(SandboxIdempotencyKey.objects.values_list("key", flat=True)) == ["daily"]
    assert post(client, {"reference": "DAY-1"}, key="daily")["Idempotent-Replayed"] == "true"


def test_each_account_keeps_as_many_keys_as_it_keeps_orders(client, settings, db):
    settings.SANDBOX_MAX_ORDERS_PER_ACCOUNT = 3
    for n in range(5):
        assert post(client, {"reference": f"B-{n}"}, key=f"bound-{n}").status_code == 201
    assert list(SandboxIdempotencyKey.objects.order_by("id").values_list("key", flat=True)) == ["bound-2", "bound-3", "bound-4"]
    assert [reference for reference, _ in stored()] == ["B-2", "B-3", "B-4"]


# --- 6, 7: duplicates counted on the page and in the API ------------------------------------------------------------


@pytest.fixture
def reader(client, company):
    user = User.objects.create_user(username="reader", password=None, company=company, role=Role.READ_ONLY)
    client.force_login(user)
    client.account = account_key(company)
    return client


def test_the_page_counts_the_orders_and_the_references_received_more_than_once(reader):
    post(reader, [{"reference": "D-1"}, {"number": "D-2"}, {"id": 3}], key="first-send", account=reader.account)
    page = reader.get("/sandbox/received-orders/").content.decode()
    assert "<strong>3</strong> orders received" in page
    assert "0 duplicates: each order reference is here once" in page

    post(reader, [{"reference": "D-1"}, {"number": "D-2"}, {"id": 3}], key="first-send", account=reader.account)  # replayed
    assert "<strong>3</strong> orders received" in reader.get("/sandbox/received-orders/").content.decode()

    post(reader, [{"reference": "D-1"}, {"number": "D-2"}], account=reader.account)  # resent without a key
    post(reader, {"reference": "D-1"}, account=reader.account)
    post(reader, {"notes": "no reference"}, account=reader.account)
    page = reader.get("/sandbox/received-orders/").content.decode()
    assert "<strong>7</strong> orders received" in page
    assert "<strong>2</strong> references received more than once" in page
    assert "<code>D-1</code> ×3, <code>D-2</code> ×2" in page
    assert page.count('data-testid="received-order"') == 7


def test_the_received_orders_api_counts_duplicates_and_names_each_orders_key(reader):
    post(reader, [{"reference": "E-1"}, {"reference": "E-2"}], key="api-key", account=reader.account)
    post(reader, {"reference": "E-1"}, account=reader.account)
    listed = reader.get("/sandbox/api/orders/received", headers={**TOKEN, "X-Sandbox-Account": reader.account}).json()
    assert listed["meta"] == {"page": 1, "per_page": 25, "total": 3, "received": 3, "duplicate_references": 1}
    assert [(o["reference"], o["idempotency_key"]) for o in listed["orders"]] == [("E-1", ""), ("E-2", "api-key"), ("E-1", "api-key")]


def test_the_migration_gives_orders_received_before_it_their_reference(transactional_db):
    executor = MigrationExecutor(connection)
    executor.migrate([("sandbox", "0003_sandbox_api_url_follows_the_deployment")])
    executor.loader.build_graph()
    old = executor.loader.project_state([("sandbox", "0003_sandbox_api_url_follows_the_deployment")]).apps
    Order = old.get_model("sandbox", "SandboxReceivedOrder")
    for body in ({"reference": "OLD-1"}, {"number": 42}, {"reference": "", "id": "X"}, {"notes": "none"}, ["odd"]):
        Order.objects.create(received_at="2026-11-23T18:40:00Z", account="", body=body, size=10)

    executor = MigrationExecutor(connection)
    executor.migrate([("sandbox", "0004_received_orders_record_reference_and_idempotency_key")])
    executor.loader.build_graph()
    new = executor.loader.project_state([("sandbox", "0004_received_orders_record_reference_and_idempotency_key")]).apps
    references = list(new.get_model("sandbox", "SandboxReceivedOrder").objects.order_by("id").values_list("reference", "idempotency_key"))
    assert references == [("OLD-1", ""), ("42", ""), ("X", ""), ("", ""), ("", "")]
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # every app at its newest migration again, for the next tests
