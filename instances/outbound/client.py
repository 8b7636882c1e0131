"""The instance client: the one place outbound calls on behalf of an instance are made.

It builds requests from the connector's base URL, the authentication method
and the instance's variable values (``{{variable}}`` placeholders), applies the
method's authentication (basic, token/API key in headers or query, bearer,
OAuth 2 client credentials with a cached token), and sends them through the
SSRF guard with connect/read timeouts, a bounded body and checked redirects.
Credential checks and, later, flow runs use it alike.

The request/answer types (Exchange, CheckResult, ClientError) are in
`instances/exchange.py` and imported from here as well; OAuth tokens, refreshes
and OAuth 1 signatures are done per request by `instances/oauth_tokens.py`,
which is given the client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import ssl
import time
import zlib
from urllib.parse import quote_plus, urlencode, urljoin, urlsplit

import requests
import urllib3
from django.conf import settings
from django.core.cache import cache

from connectors.manifest import PLACEHOLDER_RE
from connectors.models import AuthMethod, AuthType, Connector, Variable
from instances import crypto, destinations, redaction
from instances.outbound import auth as oauth_tokens
from instances.outbound import limits, ssrf, transport
from instances.outbound.exchange import (
    RECORDED_HEADER_CHARS,
    CheckResult,
    ClientError,
    Exchange,
    _message_from_body,
    _status_text,
    clean_text,
    render,
)
from instances.redaction import is_sensitive
from instances import sandbox_accounts
from patchworks_site import sandbox_api

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 1024 * 1024  # read at most this much of any response
RECORDED_BODY_CHARS = 16 * 1024  # and store at most this much of it
VENDOR_MESSAGE_CHARS = 200  # of the API's own error message quoted to the user
TOKEN_EXPIRY_MARGIN = 60  # seconds before expiry a cached OAuth token is renewed
USER_AGENT = "Patchworks-Connector/1.0"


class _Failure(Exception):
    """What went wrong during an exchange, already phrased for the user."""


def storable(record: dict) -> dict:
    """A recorded exchange with every string (dict keys and values too) made storable."""
    def clean(value):
        if isinstance(value, str):
            return clean_text(value)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        return value

    return {key: clean(value) for key, value in record.items()}


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


class InstanceClient:
    def __init__(
        self,
        connector: Connector,
        auth_method: AuthMethod,
        values: dict[str, str],
        secrets: dict[str, str],
        *,
        use_token_cache: bool = True,
        instance=None,
        approved_destinations: list[str] | None = None,
    ):
        self.instance = instance  # when known, its rate limit and connection pool apply
        # Stored secrets go only to the origins they were entered for (None: not restricted,
        # e.g. credentials the user has just typed).
        self.approved_destinations = approved_destinations
        self.connector = connector
        self.auth_method = auth_method
        self.secrets = {k: v for k, v in secrets.items() if v}
        self._variable_rows: list[Variable] | None = None
        self._destinations: tuple[tuple, list[str]] | None = None
        # Tokens this client obtained (OAuth access/refresh tokens): secrets too.
        self.obtained_secrets: list[str] = []
        self._variants_cache: tuple[tuple[str, ...], list[str]] | None = None
        self.values = self._merged_values(values)
        self.use_token_cache = use_token_cache

    @classmethod
    def for_instance(cls, instance, **kwargs) -> InstanceClient:
        kwargs.setdefault("approved_destinations", instance.credentials_approved_for)
        return cls(
            instance.connector, instance.auth_method, instance.values, instance.get_secrets(), instance=instance, **kwargs
        )

    def _variables(self) -> list[Variable]:
        return [
            v
            for v in self._connector_variables()
            if v.auth_method_id is None or v.auth_method_id == self.auth_method.pk
        ]

    def _connector_variables(self) -> list[Variable]:
        """The connector's variables, read once per client.

        Like the values and secrets, they are taken when the client is made:
        every request used to read them again (twice), a query each, which
        was most of a flow run's time per item sent.
        """
        if self._variable_rows is None:
            self._variable_rows = list(self.connector.variables.all())
        return self._variable_rows

    def _merged_values(self, values: dict[str, str]) -> dict[str, str]:
        # The Sandbox's catalog address stands for wherever the dashboard is served.
        merged = {
            v.key: settings.SANDBOX_BASE_URL if v.default == sandbox_api.CATALOG_ADDRESS else v.default
            for v in self._variables() if v.default
        }
        merged.update({k: v for k, v in values.items() if v not in (None, "")})
        merged.update(self.secrets)
        return merged

    @property
    def secret_values(self) -> list[str]:
        """Every secret this client holds or has obtained so far (read at each use: tokens arrive mid-run).

        The instance's secret variables, defaults of the connector's secret
        variables, the OAuth 1 token, and every token obtained (see _obtained).
        """
        values = [v for v in self.secrets.values() if v]
        values += [v.default for v in self._connector_variables() if v.secret and v.default]
        if self.auth_method.type == AuthType.OAUTH1:
            values += [self.values[key] for key in ("token_id", "token") if self.values.get(key)]
        return values + self.obtained_secrets

    def _obtained(self, *tokens: object) -> None:
        """Remember what was obtained as secrets of this client, the moment it is obtained.

        Each of `tokens` is a token, or a token endpoint's whole answer (a dict):
        its access, refresh and id tokens and every string field named like a secret.
        """
        for token in tokens:
            for value in redaction.token_answer_secrets(token) if isinstance(token, dict) else [token]:
                if isinstance(value, str) and value and value not in self.obtained_secrets:
                    self.obtained_secrets.append(value)

    def record_of(self, exchange: Exchange, message: str = "") -> dict:
        """`exchange` as it may be stored: redacted whole with every secret of this client, then cut and made storable."""
        return storable(redaction.redact_exchange(
            {**exchange.as_record(), "message": message}, self.secret_values,
            body_limit=RECORDED_BODY_CHARS, header_limit=RECORDED_HEADER_CHARS,
        ))

    def redact(self, text: str, *, limit: int | None = None) -> str:
        """`text` (derived from a third party's answer) with every secret of this client redacted."""
        variants = self._variants()
        if limit is None:
            return redaction.scrub_text(text, variants)
        return redaction.truncate(text, limit, variants)

    def _variants(self) -> list[str]:
        """redaction.secret_variants of secret_values, rebuilt only when they changed."""
        secrets = tuple(self.secret_values)
        cached = self._variants_cache
        if cached is None or cached[0] != secrets:
            cached = self._variants_cache = (secrets, redaction.secret_variants(list(secrets)))
        return cached[1]

    # --- where requests go ---------------------------------------------------

    def destinations(self) -> list[str]:
        """The origins the credentials are sent to: base URL, token and authorise URLs, rendered."""
        public = {k: v for k, v in self.values.items() if k not in self.secrets}
        key = tuple(sorted(public.items()))
        if self._destinations is None or self._destinations[0] != key:
            found = destinations.for_method(self.connector, self.auth_method, public, self._connector_variables())
            self._destinations = (key, found)
        return list(self._destinations[1])

    def _unapproved(self, url: str | None = None) -> list[str]:
        if self.approved_destinations is None or not self.secrets:
            return []
        approved = set(self.approved_destinations)
        targets = set(self.destinations()) | ({destinations.origin(url)} if url else set())
        return sorted(t for t in targets if t not in approved)

    def _refused(self, method: str, url: str, unapproved: list[str]) -> Exchange:
        exchange = Exchange(request_method=method, request_url=url, request_headers={})
        exchange.error = (
            f"Re-authentication needed: the stored credentials were entered for "
            f"{destinations.describe(self.approved_destinations) or 'another address'}, and are not sent to "
            f"{destinations.describe(unapproved)} until they are entered again."
        )
        return exchange

    # --- building requests -------------------------------------------------

    def url_for(self, path: str) -> str:
        base = render(self.connector.base_url, self.values).rstrip("/")
        return base + render(path, self.values, quote_values=True)

    def _alias_params(self) -> dict[str, str]:
        """Auth variables with an alias that no placeholder uses go out as query parameters."""
        method = self.auth_method
        used = set()
        for template in [*method.headers.values(), *method.query_params.values(), *method.body.values(), method.test_path]:
            used |= set(PLACEHOLDER_RE.findall(template))
        return {
            v.alias: self.values[v.key]
            for v in self._variables()
            if v.auth_method_id == method.pk and v.alias and v.key not in used and self.values.get(v.key)
            and method.type in (AuthType.TOKEN,)
        }

    def _auth_parts(self, token: str | None) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        method = self.auth_method
        values = dict(self.values)
        if token:
            values["access_token"] = token
        headers = {k: render(v, values) for k, v in method.headers.items()}
        params = {k: render(v, values) for k, v in method.query_params.items()}
        params.update(self._alias_params())
        body = {k: render(v, values) for k, v in method.body.items()}
        if method.type == AuthType.BASIC:
            username, password = values.get("username", ""), values.get("password", "")
            if not username:
                raise ClientError('no value for "username"')
            pair = f"{username}:{password}".encode()
            headers.setdefault("Authorization", "Basic " + base64.b64encode(pair).decode())
        elif method.type in (AuthType.OAUTH2_CLIENT_CREDENTIALS, AuthType.OAUTH2_AUTHORIZATION_CODE):
            bearer = token or values.get("access_token")
            if not bearer:
                raise ClientError('no value for "access_token"')
            if not any(k.lower() == "authorization" for k in headers) and not any(
                "{{access_token}}" in v.replace(" ", "") for v in method.headers.values()
            ):
                headers["Authorization"] = f"Bearer {bearer}"
        elif method.type == AuthType.OAUTH1:
            # Signed in request(), once the URL and body are final (instances/oauth_tokens.py).
            for key in ("consumer_key", "consumer_secret"):
                if not values.get(key):
                    raise ClientError(f'no value for "{key}"')
        return headers, params, body

    # --- sending -----------------------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        data: dict | str | None = None,
        json_body: object = None,
        timeout: float | None = None,
        allow_cross_origin_redirects: bool = True,
    ) -> Exchange:
        """Send one request through the SSRF guard, following checked redirects.

        Never raises for what the other side does: every failure (blocked address,
        timeout, the total deadline, a broken or oversized reply) is a clear
        sentence in `exchange.error`. `timeout` (seconds) replaces the read
        timeout and the total deadline for this request (a flow shape's setting);
        the deadline's watchdog bounds it all the same. A redirect to another
        origin is followed without credentials, or refused when
        `allow_cross_origin_redirects` is false.
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
                self._exchange(exchange, method, url, headers, body, deadline, allow_cross_origin_redirects)
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
        return exchange

    def _exchange(
        self, exchange: Exchange, method: str, url: str, headers: dict[str, str], body: bytes | None,
        deadline: transport.Deadline, allow_cross_origin_redirects: bool = True,
    ) -> None:
        origin = urlsplit(url)[:2]
        first_url = url
        cookies = requests.cookies.RequestsCookieJar()  # cookies live for one exchange, redirects included
        for hop in range(MAX_REDIRECTS + 1):
            exchange.final_url = url  # the hop failures are about
            response = self._send_one(method, url, headers, body, cookies, deadline)
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
                        headers = {k: v for k, v in headers.items() if not self._carries_credentials(k, v)}
                        # A 307/308 re-sends the body: never re-post secrets (e.g. a
                        # client_secret sent in the form body) to another origin.
                        if body and any(
                            s.encode() in body or quote_plus(s).encode() in body for s in self.secret_values
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
                content = self._read_bounded(response, exchange, deadline)
            finally:
                response.close()
            exchange.response_body = decode_text(content, response.encoding)
            exchange.json = parse_json(content)
            return

    @staticmethod
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
        for attempt in range(2):
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
                if attempt == 0 and deadline.reused_connection and not deadline.passed() and _is_stale_connection(exc):
                    continue
                raise
            finally:
                if not keep_alive:
                    adapter.close()  # idle connections only: the response still reads its own
            requests.cookies.extract_cookies_to_jar(cookies, prepared, response.raw)
            return response
        raise AssertionError("unreachable")

    def _carries_credentials(self, name: str, value: str) -> bool:
        return (
            name.lower() in ("authorization", "cookie")
            or is_sensitive(name)
            or name.lower() in {k.lower() for k in self.auth_method.headers}
            or any(secret in value for secret in self.secret_values)
        )

    @staticmethod
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

    # --- OAuth 2 -----------------------------------------------------------

    def _token_cache_key(self, token_url: str) -> str:
        material = f"{token_url}\0{self.values.get('client_id', '')}\0{self.values.get('client_secret', '')}\0{self.auth_method.scope}"
        digest = hmac.new(settings.SECRET_KEY.encode(), material.encode(), hashlib.sha256).hexdigest()
        return f"oauth2-token:{digest}"

    def fetch_token(self) -> tuple[str | None, Exchange | None]:
        """An OAuth 2 client credentials access token: (token, None) or (None, failed exchange)."""
        token_url = render(self.auth_method.token_url, self.values)
        key = self._token_cache_key(token_url)
        if self.use_token_cache:
            # Encrypted in the cache (Redis is shared, and not where credentials are kept in plain).
            cached = crypto.decrypt_cached(cache.get(key), key)
            if cached:
                self._obtained(cached)
                return cached, None
        data = {"grant_type": "client_credentials"}
        if self.auth_method.scope:
            data["scope"] = self.auth_method.scope
        data.update({k: render(v, self.values) for k, v in self.auth_method.body.items()})
        pair = f"{self.values.get('client_id', '')}:{self.values.get('client_secret', '')}".encode()
        exchange = self.send(
            "POST", token_url, headers={"Authorization": "Basic " + base64.b64encode(pair).decode()}, data=data
        )
        token = exchange.json.get("access_token") if isinstance(exchange.json, dict) else None
        self._obtained(exchange.json)
        if exchange.error or exchange.response_status != 200 or not isinstance(token, str) or not token:
            return None, exchange
        lifetime = oauth_tokens.token_lifetime(exchange.json.get("expires_in"))
        if lifetime is not None and lifetime > TOKEN_EXPIRY_MARGIN:
            cache.set(key, crypto.encrypt_cached(token, key), timeout=lifetime - TOKEN_EXPIRY_MARGIN)
        return token, None

    # --- the credential check ------------------------------------------------

    def request(self, method: str, path: str, *, allow_cross_origin_redirects: bool = False, **kwargs) -> Exchange:
        """An authenticated request to `path` of the connector's API.

        With a stored OAuth 2 authorisation code token, a 401 refreshes the
        token (single-flight, see instances/oauth_tokens.py) and sends once more.
        A redirect to another origin fails the request unless
        `allow_cross_origin_redirects` (an endpoint's setting); when allowed it
        is followed without credentials.
        """
        kwargs["allow_cross_origin_redirects"] = allow_cross_origin_redirects
        return self._request_refreshing(method, path, kwargs)

    def request_url(self, method: str, url: str, *, allow_cross_origin_redirects: bool = False, **kwargs) -> Exchange:
        """Like request(), for a whole URL on the connector's API (a next page link).

        The URL must be on the origin of the connector's base URL (a ClientError
        otherwise); authentication, approved destinations, the rate limit, the
        pool and the SSRF guard apply as for request().
        """
        base = render(self.connector.base_url, self.values)
        if destinations.origin(url) != destinations.origin(base):
            raise ClientError(
                f"the address {destinations.origin(url) or url!r} is not on the API's origin "
                f"({destinations.origin(base)}); it was not requested"
            )
        kwargs["allow_cross_origin_redirects"] = allow_cross_origin_redirects
        return self._request_refreshing(method, None, kwargs, url=url)

    def _request_refreshing(self, method: str, path: str | None, kwargs: dict, url: str | None = None) -> Exchange:
        exchange = self._request(method, path, dict(kwargs), url=url)
        # --- OAuth 2 authorisation code: refresh once on a 401 ---
        if exchange.response_status == 401 and self._refreshes_tokens():
            _, failed = oauth_tokens.access_token(self, rejected=self.secrets.get("access_token"))
            exchange = failed if failed is not None else self._request(method, path, dict(kwargs), url=url)
        # --- end OAuth 2 ---
        return exchange

    def _refreshes_tokens(self) -> bool:
        return (
            self.instance is not None and self.instance.pk is not None
            and self.auth_method.type == AuthType.OAUTH2_AUTHORIZATION_CODE and bool(self.secrets.get("refresh_token"))
        )

    def _request(self, method: str, path: str | None, kwargs: dict, url: str | None = None) -> Exchange:
        unapproved = self._unapproved()
        if unapproved:
            return self._refused(method, path, unapproved)
        token = None
        if self.auth_method.type == AuthType.OAUTH2_CLIENT_CREDENTIALS:
            token, failed = self.fetch_token()
            if failed is not None:
                return failed
        # --- OAuth 2 authorisation code: a fresh access token ---
        elif self.auth_method.type == AuthType.OAUTH2_AUTHORIZATION_CODE and self.instance is not None:
            if self.instance.reauth_reason:
                return self._refused_reauth(method, path, self.instance.reauth_reason)
            if self._refreshes_tokens():
                token, failed = oauth_tokens.access_token(self)
                if failed is not None:
                    return failed
        # --- end OAuth 2 ---
        headers, params, body = self._auth_parts(token)
        headers.update(kwargs.pop("headers", {}) or {})
        params.update(kwargs.pop("params", {}) or {})
        if body and "data" not in kwargs and "json_body" not in kwargs and method != "GET":
            kwargs["data"] = body
        url = url or self.url_for(path)
        unapproved = self._unapproved(url)
        if unapproved:
            return self._refused(method, url, unapproved)
        if self.instance is not None and self.instance.company_id and sandbox_api.is_own_sandbox(url):
            # The Sandbox keeps one account per company (what a company's flows sent is theirs alone). Its key
            # goes to the Sandbox this deployment serves, compared by origin, and to nowhere else.
            # Read once per client (a run sends many requests), like the values and secrets.
            account_key = getattr(self, "_sandbox_account_key", None)
            if account_key is None:
                account_key = self._sandbox_account_key = sandbox_accounts.account_key(self.instance.company_id)
            self._obtained(account_key)
            headers[sandbox_api.ACCOUNT_HEADER] = account_key
        if self.auth_method.type == AuthType.OAUTH1:
            url, headers, params, kwargs = self._signed_oauth1(method, url, headers, params, kwargs)
        if self.instance is None:
            return self.send(method, url, headers=headers, params=params, **kwargs)
        return self._send_within_limits(method, url, headers=headers, params=params, **kwargs)

    def _send_within_limits(self, method: str, url: str, **kwargs) -> Exchange:
        """Send under the instance's rate limit, then in a slot of its connection pool.

        A 429 pauses the instance's rate limit for every worker until the API's
        Retry-After (or reset header, or a backoff) and the request is retried
        a bounded number of times. The rate limit is waited for before a slot
        is taken, so a throttled request never holds one.
        """
        instance = self.instance
        notes: list[str] = []
        retries = settings.OUTBOUND_429_RETRIES
        waits = limits.Waits()
        for attempt in range(retries + 1):
            try:
                with limits.outbound(instance, waits):
                    exchange = self.send(method, url, **kwargs)
            except limits.LimitTimeout as exc:
                exchange = Exchange(request_method=method, request_url=url, request_headers=kwargs.get("headers") or {})
                exchange.error = str(exc)
                exchange.throttled_until = getattr(exc, "until", None)
                break
            except limits.STORE_ERRORS:
                # Without the shared store the limits cannot be held: send nothing.
                exchange = Exchange(request_method=method, request_url=url, request_headers=kwargs.get("headers") or {})
                exchange.error = "The rate limit and connection pool store is unavailable; nothing was sent. Try again shortly."
                break
            if exchange.response_status != 429:
                break
            if attempt == retries:
                notes.append(f"Answered 429 Too Many Requests; gave up after {retries} retries.")
                break
            delay = limits.retry_delay(exchange.response_headers, attempt)
            limits.pause_rate_limit(instance, delay)
            notes.append(
                f"Answered 429 Too Many Requests; the rate limit was paused {delay:.1f} s for every worker and the request retried."
            )
        exchange.rate_limit_note = " ".join(notes)[:300]
        exchange.rate_limit_wait_ms, exchange.pool_wait_ms = waits.rate_ms, waits.pool_ms
        return exchange

    def _refused_reauth(self, method: str, url: str, reason: str) -> Exchange:
        exchange = Exchange(request_method=method, request_url=url, request_headers={})
        exchange.error = reason
        return exchange

    def _signed_oauth1(
        self, method: str, url: str, headers: dict[str, str], params: dict[str, str], kwargs: dict
    ) -> tuple[str, dict[str, str], dict[str, str], dict]:
        """The request signed with OAuth 1.0a: query parameters (and a form body) are signed too."""
        if params:
            url = url + ("&" if urlsplit(url).query else "?") + urlencode(params)
        form_body = None
        if isinstance(kwargs.get("data"), dict):
            form_body = urlencode(kwargs["data"])
            kwargs = {**kwargs, "data": form_body}
            headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        try:
            url, headers = oauth_tokens.sign_oauth1(self.values, method, url, headers, form_body)
        except ValueError as exc:
            raise ClientError(f"the request could not be signed ({exc})") from None
        self._obtained(*(v for k, v in self.values.items() if k in ("consumer_secret", "token_secret")))
        return url, headers, {}, kwargs

    def check_credentials(self) -> CheckResult:
        """Run the auth method's test request; ok when the status is one it expects."""
        method = self.auth_method
        try:
            # A check follows a redirect to another origin without credentials: its
            # answer says whether the credentials were accepted and is never a run's data.
            exchange = self.request(method.test_method, method.test_path, allow_cross_origin_redirects=True)
        except ClientError as exc:
            placeholder = Exchange(request_method=method.test_method, request_url=method.test_path, request_headers={})
            placeholder.error = f"The request could not be built: {exc}."
            return CheckResult(False, self.redact(placeholder.error), placeholder)
        if exchange.error:
            return CheckResult(False, self.redact(exchange.error), exchange)
        status = exchange.response_status or 0
        is_token_step = method.type == AuthType.OAUTH2_CLIENT_CREDENTIALS and exchange.request_method == "POST" and (
            exchange.request_url.split("?")[0] == render(method.token_url, self.values)
        )
        if not is_token_step and status in method.test_expected_status:
            return CheckResult(True, f"Authenticated: the API answered {_status_text(status)}.", exchange)
        # The API's own words may echo what it was sent: redacted before they are cut.
        detail = self.redact(_message_from_body(exchange), limit=VENDOR_MESSAGE_CHARS)
        if is_token_step:
            message = f"The token request was refused: {_status_text(status)}"
            if status == 200:
                message = "The token endpoint did not return an access token"
        elif status in (401, 403):
            message = f"The credentials were refused: {_status_text(status)}"
        else:
            message = f"Unexpected answer from the API: {_status_text(status)} (expected {', '.join(map(str, method.test_expected_status))})"
        message += "."
        if detail:
            message += f' The API said: "{detail.rstrip(".")}".'
        return CheckResult(False, self.redact(message), exchange)
