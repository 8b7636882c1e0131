"""The instance client: the one place outbound calls on behalf of an instance are made.

It builds requests from the connector's base URL, the authentication method
and the instance's variable values (``{{variable}}`` placeholders), applies the
method's authentication (basic, token/API key in headers or query, bearer,
OAuth 2 client credentials with a cached token), and sends them through the
SSRF guard with connect/read timeouts, a bounded body and checked redirects.
Credential checks and, later, flow runs use it alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from urllib.parse import quote, quote_plus, urlencode, urljoin, urlsplit

import requests
from django.conf import settings
from django.core.cache import cache
from urllib3.exceptions import ReadTimeoutError

from connectors.manifest import PLACEHOLDER_RE
from connectors.models import AuthMethod, AuthType, Connector, Variable
from instances import limits, ssrf
from instances.redaction import is_sensitive

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 1024 * 1024  # read at most this much of any response
RECORDED_BODY_CHARS = 16 * 1024  # and store at most this much of it
TOKEN_EXPIRY_MARGIN = 60  # seconds before expiry a cached OAuth token is renewed
USER_AGENT = "Patchworks-Connector/1.0"


class ClientError(Exception):
    """A request could not be built (e.g. a required value is missing)."""


@dataclass
class Exchange:
    """One HTTP request and what came back (or the error instead)."""

    request_method: str
    request_url: str
    request_headers: dict[str, str]
    request_body: str = ""
    response_status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""
    response_truncated: bool = False
    duration_ms: int = 0
    error: str = ""
    json: object = None
    throttled_until: datetime | None = None  # the rate limit allows the request only then: reschedule it
    rate_limit_note: str = ""  # 429 answers met and retried on the way

    def as_record(self) -> dict:
        return {
            "request_method": self.request_method,
            "request_url": self.request_url,
            "request_headers": dict(self.request_headers),
            "request_body": self.request_body,
            "response_status": self.response_status,
            "response_headers": dict(self.response_headers),
            "response_body": self.response_body[:RECORDED_BODY_CHARS],
            "response_truncated": self.response_truncated or len(self.response_body) > RECORDED_BODY_CHARS,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "rate_limit_note": self.rate_limit_note,
        }


@dataclass
class CheckResult:
    ok: bool
    message: str
    exchange: Exchange


def render(template: str, values: dict[str, str], *, quote_values: bool = False) -> str:
    """Substitute ``{{key}}`` placeholders; a missing value is a ClientError."""

    def substitute(match: re.Match) -> str:
        key = match.group(1)
        if key not in values or values[key] == "":
            raise ClientError(f'no value for "{key}"')
        value = str(values[key])
        return quote(value, safe="") if quote_values else value

    return PLACEHOLDER_RE.sub(substitute, template)


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _message_from_body(exchange: Exchange) -> str:
    """The vendor's own error message, when the body carries one."""
    data = exchange.json
    if isinstance(data, dict):
        for key in ("error_description", "message", "error_message", "detail", "title", "error", "errors"):
            value = data.get(key)
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, dict):
                value = value.get("detail") or value.get("message") or value.get("title")
            if isinstance(value, str) and value.strip():
                return value.strip()[:200]
    text = exchange.response_body.strip()
    # Only plain text is quoted: markup is noise, and a JSON document without a
    # message field may hold anything (a token under an unexpected name, ...).
    if text and text[0] not in "<{[":
        return text[:200]
    return ""


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
    ):
        self.instance = instance  # when known, its rate limit and connection pool apply
        self.connector = connector
        self.auth_method = auth_method
        self.secrets = {k: v for k, v in secrets.items() if v}
        self.values = self._merged_values(values)
        self.use_token_cache = use_token_cache

    @classmethod
    def for_instance(cls, instance, **kwargs) -> InstanceClient:
        return cls(
            instance.connector, instance.auth_method, instance.values, instance.get_secrets(), instance=instance, **kwargs
        )

    def _variables(self) -> list[Variable]:
        return [
            v
            for v in self.connector.variables.all()
            if v.auth_method_id is None or v.auth_method_id == self.auth_method.pk
        ]

    def _merged_values(self, values: dict[str, str]) -> dict[str, str]:
        merged = {v.key: v.default for v in self._variables() if v.default}
        merged.update({k: v for k, v in values.items() if v not in (None, "")})
        merged.update(self.secrets)
        return merged

    @property
    def secret_values(self) -> list[str]:
        return [v for v in self.secrets.values() if v]

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
            raise ClientError("OAuth 1 requests are not supported yet")
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
    ) -> Exchange:
        """Send one request through the SSRF guard, following checked redirects."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
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
        connect_timeout = settings.OUTBOUND_CONNECT_TIMEOUT
        read_timeout = settings.OUTBOUND_READ_TIMEOUT
        deadline = started + connect_timeout + read_timeout * 2
        origin = urlsplit(url)[:2]
        try:
            for hop in range(MAX_REDIRECTS + 1):
                ip = ssrf.resolve(url)
                with ssrf.pinned_session(ip) as session:
                    response = session.request(
                        method, url, headers=headers, data=body, timeout=(connect_timeout, read_timeout),
                        allow_redirects=False, stream=True,
                    )
                    try:
                        if response.is_redirect and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            if response.status_code == 303 or (
                                response.status_code in (301, 302) and method not in ("GET", "HEAD")
                            ):
                                method, body = "GET", None
                                headers.pop("Content-Type", None)
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
                                raise requests.TooManyRedirects()
                            continue
                        content, truncated = self._read_bounded(response, deadline)
                    finally:
                        response.close()
                exchange.response_status = response.status_code
                exchange.response_headers = dict(response.headers)
                exchange.response_truncated = truncated
                exchange.response_body = content.decode(response.encoding or "utf-8", errors="replace")
                if not truncated:
                    try:
                        exchange.json = json.loads(content) if content.strip() else None
                    except ValueError:
                        exchange.json = None
                break
        except ssrf.BlockedDestination as exc:
            exchange.error = f"Blocked: {exc}."
        except requests.TooManyRedirects:
            exchange.error = f"Too many redirects (more than {MAX_REDIRECTS}); the API may be redirecting in a loop."
        except requests.exceptions.SSLError:
            exchange.error = "The TLS certificate of the API could not be verified."
        except requests.ConnectTimeout:
            exchange.error = f"Timed out connecting to {urlsplit(url).hostname} after {connect_timeout:g} seconds."
        except (requests.ReadTimeout, TimeoutError):
            exchange.error = f"The API did not answer within {read_timeout:g} seconds."
        except requests.ConnectionError:
            exchange.error = f"Could not connect to {urlsplit(url).hostname}: the connection was refused or dropped."
        except requests.RequestException as exc:
            exchange.error = f"The request failed: {exc.__class__.__name__}."
        exchange.duration_ms = int((time.monotonic() - started) * 1000)
        return exchange

    def _carries_credentials(self, name: str, value: str) -> bool:
        return (
            name.lower() in ("authorization", "cookie")
            or is_sensitive(name)
            or name.lower() in {k.lower() for k in self.auth_method.headers}
            or any(secret in value for secret in self.secret_values)
        )

    @staticmethod
    def _read_bounded(response: requests.Response, deadline: float) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(chunk_size=65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return b"".join(chunks)[:MAX_BODY_BYTES], True
                if time.monotonic() > deadline:
                    raise TimeoutError
        except requests.ConnectionError as exc:
            # requests reports a read timeout while streaming the body as a
            # ConnectionError; it is a timeout, not a refused connection.
            if isinstance(exc.args[0] if exc.args else None, ReadTimeoutError):
                raise TimeoutError from exc
            raise
        return b"".join(chunks), False

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
            cached = cache.get(key)
            if cached:
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
        if exchange.error or exchange.response_status != 200 or not isinstance(token, str) or not token:
            return None, exchange
        expires_in = exchange.json.get("expires_in") if isinstance(exchange.json, dict) else None
        if isinstance(expires_in, (int, float)) and expires_in > TOKEN_EXPIRY_MARGIN:
            cache.set(key, token, timeout=int(expires_in) - TOKEN_EXPIRY_MARGIN)
        return token, None

    # --- the credential check ------------------------------------------------

    def request(self, method: str, path: str, **kwargs) -> Exchange:
        """An authenticated request to `path` of the connector's API."""
        token = None
        if self.auth_method.type == AuthType.OAUTH2_CLIENT_CREDENTIALS:
            token, failed = self.fetch_token()
            if failed is not None:
                return failed
        headers, params, body = self._auth_parts(token)
        headers.update(kwargs.pop("headers", {}) or {})
        params.update(kwargs.pop("params", {}) or {})
        if body and "data" not in kwargs and "json_body" not in kwargs and method != "GET":
            kwargs["data"] = body
        url = self.url_for(path)
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
        for attempt in range(retries + 1):
            try:
                with limits.outbound(instance):
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
        return exchange

    def check_credentials(self) -> CheckResult:
        """Run the auth method's test request; ok when the status is one it expects."""
        method = self.auth_method
        try:
            exchange = self.request(method.test_method, method.test_path)
        except ClientError as exc:
            placeholder = Exchange(request_method=method.test_method, request_url=method.test_path, request_headers={})
            placeholder.error = f"The request could not be built: {exc}."
            return CheckResult(False, placeholder.error, placeholder)
        if exchange.error:
            return CheckResult(False, exchange.error, exchange)
        status = exchange.response_status or 0
        is_token_step = method.type == AuthType.OAUTH2_CLIENT_CREDENTIALS and exchange.request_method == "POST" and (
            exchange.request_url.split("?")[0] == render(method.token_url, self.values)
        )
        if not is_token_step and status in method.test_expected_status:
            return CheckResult(True, f"Authenticated: the API answered {_status_text(status)}.", exchange)
        detail = _message_from_body(exchange)
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
        return CheckResult(False, message, exchange)
