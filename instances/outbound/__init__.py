"""The outbound client: every request made to a third party's API on behalf of an instance.

Its public surface: `InstanceClient` (`request`, `request_url`,
`check_credentials`), each answering with an `Exchange` (`status_text()`,
`api_message()`, `redacted_record()`) or a `CheckResult`; `ClientError` when a
request cannot be built. Inside: `auth` (every token flow), `sending` and
`transport` (one HTTP exchange on pinned connections through the SSRF guard
`ssrf`, within a deadline on the socket), `limits` (the rate limit and pool
store) and `retry` (the one retry policy, which a flow's connection shape
uses for its own retries too). `send_request` is one request that belongs to
no instance (an alert webhook): the same SSRF guard, deadline and redirect
checks, no credentials, no rate limit.
"""

from instances.outbound.client import InstanceClient
from instances.outbound.exchange import CheckResult, ClientError, Exchange, clean_text
from instances.outbound.sending import send as send_request

__all__ = ["CheckResult", "ClientError", "Exchange", "InstanceClient", "clean_text", "send_request"]
