"""One HTTP exchange of the outbound client: sent through the SSRF guard, within its deadline, redirects checked.

`send` never raises for what the other side does: every failure (a blocked
address, a timeout, the total deadline, a broken or oversized reply) is one
clear sentence in `exchange.error` (`describe_failure`). A redirect to another
origin is followed without credentials, or refused. A kept-alive connection
that turns out stale is retried under the one retry policy (`retry.py`).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote_plus, urlencode, urljoin, urlsplit

import requests
import urllib3
from django.conf import settings

from instances import destinations
from instances.outbound import retry, ssrf, transport
from instances.outbound.exchange import Exchange
from instances.redaction import is_sensitive
from patchworks_site import metrics

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 1024 * 1024  # read at most this much of any response
USER_AGENT = "Patchworks-Connector/1.0"


class _Failure(Exception):
    """What went wrong during an exchange, already phrased for the user."""



def decode_text(content: bytes, encoding: str | None) -> str:
    """Bytes as text in the declared charset; an unknown or non-text charset falls back to UTF-8."""
    try:
        return content.decode(encoding or "utf-8", errors="replace")
    except (LookupError, TypeError, ValueError):
        return content.decode("utf-8", errors="replace")


def parse_json(content: bytes) -> object:
    """The JSON document `content` holds, or None (also when it nests too deeply to parse)."""
    if not content.strip():
        return None
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None


def deadline_message(deadline: transport.Deadline) -> str:
    return (
        f"The API did not finish answering within {deadline.seconds:g} seconds, the most one request may take "
        "(redirects included); it may be sending very slowly."
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything it wraps (requests and urllib3 nest the real cause)."""
    seen: list[BaseException] = []
    queue = [exc]
    while queue and len(seen) < 20:
        current = queue.pop(0)
        if current in seen:
            continue
        seen.append(current)
        for inner in (*current.args, current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(inner, BaseException):
                queue.append(inner)
    return seen


def _header_defects(response: requests.Response) -> list:
    """What the header parser had to skip: a line without a colon, a head cut off mid-line, ..."""
    message = getattr(getattr(response.raw, "_original_response", None), "msg", None)
    return list(getattr(message, "defects", None) or [])


def _is_stale_connection(exc: BaseException) -> bool:
    return any(
        isinstance(cause, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError))
        for cause in _causes(exc)
    )


def describe_failure(exc: BaseException, deadline: transport.Deadline, url: str) -> str:
    """One specific sentence for why an exchange failed."""
    host = urlsplit(url).hostname
    if deadline.passed():
        return deadline_message(deadline)
    causes = _causes(exc)

    def found(*types: type) -> BaseException | None:
        return next((cause for cause in causes if isinstance(cause, types)), None)

    if found(requests.exceptions.SSLError, ssl.SSLError, urllib3.exceptions.SSLError):
        return "The TLS certificate of the API could not be verified, or its TLS handshake failed."
    if found(ConnectionRefusedError):
        return f"Could not connect to {host}: the connection was refused."
    # urllib3 reports a refused connection as a kind of connect timeout, too.
    if found(requests.ConnectTimeout) or any(
        isinstance(c, urllib3.exceptions.ConnectTimeoutError) and not isinstance(c, urllib3.exceptions.NewConnectionError)
        for c in causes
    ):
        return f"Timed out connecting to {host} after {settings.OUTBOUND_CONNECT_TIMEOUT:g} seconds."
    if found(urllib3.exceptions.ReadTimeoutError, requests.ReadTimeout, TimeoutError):
        seconds = getattr(deadline, "read_timeout", None) or settings.OUTBOUND_READ_TIMEOUT
        return f"The API did not answer within {seconds:g} seconds."
    too_long = found(http.client.LineTooLong)
    if too_long is not None:
        if "header" in str(too_long):
            return "The API sent a header line longer than 64 KB, more than any API needs."
        return "The API sent a reply that is not valid HTTP (a line without an end)."
    if any(isinstance(c, http.client.HTTPException) and "more than" in str(c) and "headers" in str(c) for c in causes):
        return "The API sent too many headers (more than 100)."
    if found(http.client.RemoteDisconnected):
        return "The API closed the connection without answering."
    if found(http.client.BadStatusLine, urllib3.exceptions.HeaderParsingError):
        return "The API sent a reply that is not valid HTTP."
    if found(requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError, zlib.error):
        return "The API sent a compressed body that could not be decoded."
    if found(ConnectionResetError):
        return "The API reset the connection before its answer was complete."
    # A body shorter than its Content-Length, or a chunked body without its last chunk.
    if found(requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError, http.client.IncompleteRead):
        return "The API's answer was cut off: the connection closed before the whole body arrived."
    if found(requests.ConnectionError, OSError):
        return f"Could not connect to {host}: the connection was refused or dropped."
    return f"The request failed: {exc.__class__.__name__}."



def send(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    data: dict | str | None = None,
    json_body: object = None,
    timeout: float | None = None,
    allow_cross_origin_redirects: bool = True,
    secret_values: Iterable[str] = (),
    credential_headers: Iterable[str] = (),
) -> Exchange:
    """Send one request through the SSRF guard, following checked redirects.

    Never raises for what the other side does: every failure (blocked address,
    timeout, the total deadline, a broken or oversized reply) is a clear
    sentence in `exchange.error`. `timeout` (seconds) replaces the read
    timeout and the total deadline for this request (a flow shape's setting);
    the deadline's watchdog bounds it all the same. A redirect to another
    origin is followed without credentials, or refused when
    `allow_cross_origin_redirects` is false. `secret_values` and the auth method's
    `credential_headers` are what must not follow a redirect to another origin.
    """
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json", "Accept-Encoding": "gzip, deflate", **(headers or {})}
    if params:
        url = url + ("&" if urlsplit(url).query else "?") + urlencode(params)
    body: bytes | None = None
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif isinstance(data, dict):
        body = urlencode(data).encode()
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif isinstance(data, str):
        body = data.encode()
    exchange = Exchange(
        request_method=method,
        request_url=url,
        request_headers=dict(headers),
        request_body=body.decode(errors="replace") if body else "",
    )
    started = time.monotonic()
    read_timeout = timeout or settings.OUTBOUND_READ_TIMEOUT
    with transport.deadline(timeout or settings.OUTBOUND_TOTAL_TIMEOUT) as deadline:
        deadline.read_timeout = read_timeout
        try:
            credentials = _Credentials(list(secret_values), {name.lower() for name in credential_headers})
            _exchange(exchange, method, url, headers, body, deadline, allow_cross_origin_redirects, credentials)
        except ssrf.BlockedDestination as exc:
            exchange.error = f"Blocked: {exc}."
        except _Failure as exc:
            exchange.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever a third party sends is reported, never raised
            exchange.error = describe_failure(exc, deadline, exchange.final_url or url)
        if deadline.expired:
            # The watchdog cut the connection: whatever was read so far (even a
            # status line that looks like "200") is not an answer.
            exchange.error = deadline_message(deadline)
    exchange.duration_ms = int((time.monotonic() - started) * 1000)
    exchange.clean()
    metrics.count_outbound(exchange.response_status, exchange.error)
    return exchange

def _exchange(
    exchange: Exchange, method: str, url: str, headers: dict[str, str], body: bytes | None,
    deadline: transport.Deadline, allow_cross_origin_redirects: bool, credentials: _Credentials,
) -> None:
    origin = urlsplit(url)[:2]
    first_url = url
    cookies = requests.cookies.RequestsCookieJar()  # cookies live for one exchange, redirects included
    for hop in range(MAX_REDIRECTS + 1):
        exchange.final_url = url  # the hop failures are about
        response = _send_one(method, url, headers, body, cookies, deadline)
        try:
            if response.is_redirect and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                if response.status_code == 303 or (
                    response.status_code in (301, 302) and method not in ("GET", "HEAD")
                ):
                    method, body = "GET", None
                    headers.pop("Content-Type", None)
                if urlsplit(url)[:2] != origin and not allow_cross_origin_redirects:
                    # Another site's answer would stand for the endpoint's data.
                    raise ssrf.BlockedDestination(
                        f"the API redirected to {destinations.origin(url)}, an origin other than the "
                        f"endpoint's ({destinations.origin(first_url)}), and the endpoint does not allow "
                        "following redirects to other origins (its setting \"Follow redirects to other sites\" "
                        "is off)"
                    )
                if urlsplit(url)[:2] != origin:
                    # Credentials never follow a redirect to another origin: not only
                    # Authorization and cookies but the auth method's own headers
                    # (X-Api-Key, ...) and any header carrying a secret value.
                    headers = {k: v for k, v in headers.items() if not credentials.carried_by(k, v)}
                    # A 307/308 re-sends the body: never re-post secrets (e.g. a
                    # client_secret sent in the form body) to another origin.
                    if body and any(
                        s.encode() in body or quote_plus(s).encode() in body for s in credentials.secret_values
                    ):
                        raise ssrf.BlockedDestination(
                            f"the API redirected a request carrying credentials to another origin ({urlsplit(url).netloc})"
                        )
                if hop == MAX_REDIRECTS:
                    raise _Failure(
                        f"Too many redirects (more than {MAX_REDIRECTS}); the API may be redirecting in a loop."
                    )
                continue
            exchange.response_status = response.status_code
            exchange.response_headers = dict(response.headers)
            # http.client takes a head cut off by the connection closing for a whole one.
            if _header_defects(response) or not response.headers:
                raise _Failure("The API sent a reply that is not valid HTTP (its headers are malformed or cut off).")
            content = _read_bounded(response, exchange, deadline)
        finally:
            response.close()
        exchange.response_body = decode_text(content, response.encoding)
        exchange.json = parse_json(content)
        return


def _send_one(
    method: str, url: str, headers: dict[str, str], body: bytes | None,
    cookies: requests.cookies.RequestsCookieJar, deadline: transport.Deadline,
) -> requests.Response:
    """One HTTP request over a pinned, kept-alive connection; its response's body is not read yet."""
    addresses = ssrf.resolve_all(url, timeout=deadline.remaining())
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    keep_alive = settings.OUTBOUND_KEEP_ALIVE
    prepared = requests.Request(method, url, headers=headers, data=body, cookies=cookies).prepare()
    policy = retry.stale_connection()
    attempt = 0
    while True:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _Failure(deadline_message(deadline))
        # The watchdog ends the exchange at the deadline; the socket timeouts stay
        # a little longer so that it, not they, reports the deadline.
        timeout = (
            min(settings.OUTBOUND_CONNECT_TIMEOUT, remaining),
            min(getattr(deadline, "read_timeout", None) or settings.OUTBOUND_READ_TIMEOUT, remaining + 0.5),
        )
        if keep_alive:
            adapter = transport.adapters.get(parts.scheme, parts.hostname or "", port, addresses[0], addresses)
        else:
            adapter = transport.PinnedAdapter(addresses[0])
        try:
            response = adapter.send(prepared, stream=True, timeout=timeout, verify=True, proxies={})
        except requests.ConnectionError as exc:
            # A kept-alive connection the server closed while it sat idle fails
            # before any byte of a reply: send once more on a new connection.
            if (
                policy.allows(attempt) and deadline.reused_connection and not deadline.passed()
                and _is_stale_connection(exc)
            ):
                time.sleep(policy.pause(attempt, deadline_left=deadline.remaining()))
                attempt += 1
                continue
            raise
        finally:
            if not keep_alive:
                adapter.close()  # idle connections only: the response still reads its own
        requests.cookies.extract_cookies_to_jar(cookies, prepared, response.raw)
        return response

@dataclass(frozen=True)
class _Credentials:
    """What of a request must not follow it to another origin."""

    secret_values: list[str]
    headers: set[str]  # the auth method's own headers, lower case

    def carried_by(self, name: str, value: str) -> bool:
        return (
            name.lower() in ("authorization", "cookie")
            or is_sensitive(name)
            or name.lower() in self.headers
            or any(secret in value for secret in self.secret_values)
        )

def _read_bounded(response: requests.Response, exchange: Exchange, deadline: transport.Deadline) -> bytes:
    """The (decoded) body, at most MAX_BODY_BYTES; more is an error, so is a body cut short."""
    chunks: list[bytes] = []
    size = 0
    # urllib3 decompresses at most chunk_size bytes per step, so a gzip bomb
    # stops here after MAX_BODY_BYTES of output, not after inflating it all.
    for chunk in response.iter_content(chunk_size=64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            exchange.response_truncated = True
            exchange.response_body = decode_text(b"".join(chunks)[:MAX_BODY_BYTES], response.encoding)
            raise _Failure(
                f"The API's answer is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB, more than is read "
                "from any API; it was not read to the end."
            )
        if deadline.passed():
            raise _Failure(deadline_message(deadline))
    return b"".join(chunks)

