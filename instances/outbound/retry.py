"""The one retry policy of outbound requests: exponential pauses with jitter, the API's Retry-After honoured.

Every loop that sends a request again asks a `RetryPolicy` whether it may and
how long to pause first:

- the client, when a kept-alive connection turns out stale (`stale_connection`:
  once, at once);
- the client, when the API answers 429 Too Many Requests (`after_429`: the
  pause is set on the instance's rate limit for every worker);
- a flow's connection shape, on a transport error or a 5xx (`for_shape`: the
  shape's 0-2 retries).

A pause is the API's own word when it gives one (Retry-After in seconds or as
an HTTP date, or an X-RateLimit-Reset / RateLimit-Reset header), else
``base_seconds * 2 ** attempt``; jitter then spreads the retries of several
workers. It only ever adds, and never beyond `max_seconds`
(OUTBOUND_MAX_RETRY_AFTER_SECONDS: one absurd answer must not stop an instance
for days) nor beyond what is left of the deadline.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from django.conf import settings

RESET_HEADERS = ("x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset")


def max_pause_seconds() -> float:
    """The longest one pause may be, whatever the API says (OUTBOUND_MAX_RETRY_AFTER_SECONDS)."""
    return max(0.0, float(settings.OUTBOUND_MAX_RETRY_AFTER_SECONDS))


def _number(value: str) -> float | None:
    """A header's number; None when it is not one (or NaN). It may be infinite ("1" * 400): cut later."""
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return None if number != number else number


def api_wait(headers: dict[str, str], *, now: float | None = None) -> float | None:
    """Seconds from now the API asks to wait (Retry-After or a reset header); None when it does not say.

    Retry-After is seconds or an HTTP date; the reset headers are an epoch
    timestamp or seconds from now. The result may be negative or infinite.
    """
    now = time.time() if now is None else now
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    if value := lowered.get("retry-after"):
        seconds = _number(value)
        if seconds is not None:
            return seconds
        try:
            return parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    for name in RESET_HEADERS:
        reset = _number(lowered.get(name, ""))
        if reset is not None:
            return reset - now if reset > 1e9 else reset
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How often a request may be sent again, and the pause before each retry."""

    retries: int  # sends after the first
    base_seconds: float = 1.0  # the pause before the first retry when the API says nothing; doubled after each
    max_seconds: float = 3600.0  # the longest one pause, the API's word included

    def allows(self, attempt: int) -> bool:
        """Whether the request may be sent again after send number `attempt` (0: the first) failed."""
        return attempt < self.retries

    def pause(
        self, attempt: int, *, headers: dict[str, str] | None = None, deadline_left: float | None = None,
        now: float | None = None,
    ) -> float:
        """Seconds to pause before sending again after send number `attempt` (0: the first) failed."""
        said = api_wait(headers or {}, now=now)
        if said is None and self.base_seconds <= 0:
            return 0.0  # at once: nothing to spread
        delay = said if said is not None else self.base_seconds * 2.0 ** min(attempt, 30)
        delay = min(max(delay, 0.0), self.max_seconds)  # negative or in the past: now
        # Jitter spreads the retries of several workers; it only ever adds, and never past the maximum.
        delay = min(delay + random.uniform(0, min(1.0, 0.1 * delay + 0.05)), self.max_seconds)
        if deadline_left is not None:
            delay = min(delay, max(deadline_left, 0.0))
        return delay


def stale_connection() -> RetryPolicy:
    """A kept-alive connection the server closed while it sat idle: send once more, at once, on a new one."""
    return RetryPolicy(retries=1, base_seconds=0.0, max_seconds=0.0)


def after_429() -> RetryPolicy:
    """An API's 429 Too Many Requests: OUTBOUND_429_RETRIES retries, paused as the API asks."""
    return RetryPolicy(retries=settings.OUTBOUND_429_RETRIES, base_seconds=1.0, max_seconds=max_pause_seconds())


def for_shape(retries: int) -> RetryPolicy:
    """A connection shape's retries on a transport error or a 5xx (FLOW_RETRY_DELAY_SECONDS the first pause)."""
    return RetryPolicy(
        retries=retries, base_seconds=settings.FLOW_RETRY_DELAY_SECONDS, max_seconds=max_pause_seconds()
    )
