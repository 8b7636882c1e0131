"""The outbound client's one retry policy: exponential pauses with jitter, the API's Retry-After honoured, bounded."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from instances.outbound import retry
from instances.outbound.retry import RetryPolicy

NOW = 1_700_000_000.0


def pauses(policy: RetryPolicy, attempt: int, runs: int = 200, **kwargs) -> list[float]:
    return [policy.pause(attempt, now=NOW, **kwargs) for _ in range(runs)]


def test_the_pause_doubles_with_each_attempt_when_the_api_says_nothing():
    policy = RetryPolicy(retries=5, base_seconds=1.0, max_seconds=3600)
    lowest = [min(pauses(policy, attempt)) for attempt in range(5)]
    assert lowest == pytest.approx([1, 2, 4, 8, 16], abs=0.5)
    assert all(later > earlier for earlier, later in zip(lowest, lowest[1:]))


def test_jitter_only_adds_and_stays_small():
    policy = RetryPolicy(retries=3, base_seconds=2.0, max_seconds=3600)
    seen = pauses(policy, 1)  # 4 s without jitter
    assert all(4 <= pause <= 4 + 0.1 * 4 + 0.05 for pause in seen)
    assert len(set(seen)) > 1, "several workers would retry at the same moment"


def test_the_apis_retry_after_is_honoured_over_the_backoff():
    policy = RetryPolicy(retries=9, base_seconds=1.0, max_seconds=3600)
    in_twenty_seconds = format_datetime(datetime.fromtimestamp(NOW + 20, UTC), usegmt=True)
    # The sixth attempt would back off 32 s; the API's own word wins, in each of its spellings.
    for headers, said in (
        ({"Retry-After": "7"}, 7), ({"retry-after": in_twenty_seconds}, 20),
        ({"X-RateLimit-Reset": str(NOW + 30)}, 30), ({"RateLimit-Reset": "12"}, 12), ({"Retry-After": "-5"}, 0),
    ):
        assert all(said <= pause <= said + 0.1 * said + 0.05 for pause in pauses(policy, 5, headers=headers)), headers


@pytest.mark.parametrize("value", ["99999999", "1e400", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_an_absurd_retry_after_is_clamped_to_the_longest_pause(value, settings):
    settings.OUTBOUND_MAX_RETRY_AFTER_SECONDS = 120
    policy = retry.after_429()
    assert pauses(policy, 0, runs=20, headers={"Retry-After": value}) == [120] * 20


def test_a_pause_never_runs_past_the_deadline():
    policy = RetryPolicy(retries=2, base_seconds=10.0, max_seconds=3600)
    assert max(pauses(policy, 3, deadline_left=2.5)) <= 2.5
    assert max(pauses(policy, 0, headers={"Retry-After": "60"}, deadline_left=1.0)) <= 1.0
    assert pauses(policy, 0, runs=5, deadline_left=-3) == [0.0] * 5


def test_the_policy_allows_exactly_its_retries():
    policy = RetryPolicy(retries=2)
    assert [policy.allows(attempt) for attempt in range(4)] == [True, True, False, False]


def test_a_stale_connection_is_sent_again_once_and_at_once():
    policy = retry.stale_connection()
    assert [policy.allows(attempt) for attempt in range(2)] == [True, False]
    assert pauses(policy, 0, runs=20) == [0.0] * 20


def test_a_connection_shape_pauses_grow_from_its_setting(settings):
    settings.FLOW_RETRY_DELAY_SECONDS = 1
    policy = retry.for_shape(2)
    assert [policy.allows(attempt) for attempt in range(3)] == [True, True, False]
    assert 1 <= min(pauses(policy, 0)) and max(pauses(policy, 0)) <= 1.15
    assert 2 <= min(pauses(policy, 1)) and max(pauses(policy, 1)) <= 2.25
    settings.FLOW_RETRY_DELAY_SECONDS = 0
    assert pauses(retry.for_shape(2), 1, runs=5) == [0.0] * 5
