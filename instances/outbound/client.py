"""The instance client: the one place outbound calls on behalf of an instance are made.

It builds requests from the connector's base URL, the authentication method
and the instance's variable values (``{{variable}}`` placeholders), applies the
method's authentication (basic, token/API key in headers or query, bearer,
OAuth 2 and OAuth 1), sends stored secrets only to the destinations they were
approved for, and sends each request under the instance's rate limit and
connection pool (`limits/`) through the SSRF guard (`sending.py`). Credential
checks, flow runs and test steps use it alike.

Its public surface is `request`, `request_url` and `check_credentials`; each
answers with an `Exchange` (`exchange.py`). Every token flow is in `auth.py`,
which returns what it obtained; the client adopts it here (`_adopt`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from connectors.manifest import PLACEHOLDER_RE
from connectors.models import AuthMethod, AuthType, Connector, Variable
from instances import deployment, destinations, redaction
from instances.outbound import auth, limits, retry, sending
from instances.outbound.exchange import (
    RECORDED_BODY_CHARS,
    CheckResult,
    ClientError,
    Exchange,
    fill_placeholders,
)
from instances.outbound.sending import MAX_BODY_BYTES, MAX_REDIRECTS
from patchworks_site import metrics

__all__ = ["MAX_BODY_BYTES", "MAX_REDIRECTS", "RECORDED_BODY_CHARS", "InstanceClient"]

VENDOR_MESSAGE_CHARS = 200  # of the API's own error message quoted to the user


def _only_blank(template: str, blank: set[str]) -> bool:
    """Whether `template` has placeholders and each names a variable in `blank`."""
    names = set(PLACEHOLDER_RE.findall(template))
    return bool(names) and names <= blank


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
        # Told when a request starts waiting: ("rate", seconds) or ("pool", None); see limits.TimeWaited.
        self.on_wait: Callable[[str, float | None], None] | None = None

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
        merged = {v.key: deployment.filled_in(v.default) for v in self._variables() if v.default}
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
        """Remember what was obtained as secrets of this client, the moment it is obtained (see auth.secrets_in)."""
        self.obtained_secrets += [v for v in auth.secrets_in(*tokens) if v not in self.obtained_secrets]

    def _adopt(self, credentials: auth.Credentials) -> None:
        """Take on what a token flow obtained: its secrets from now on, and the instance's tokens as stored now."""
        self._obtained(*credentials.obtained)
        if credentials.secrets is not None:
            self.secrets = {k: v for k, v in credentials.secrets.items() if v}
            self.values.update(self.secrets)
        if self.instance is not None and credentials.reauth_reason is not None:
            self.instance.token_refresh_due_at = credentials.refresh_due_at
            self.instance.reauth_reason = credentials.reauth_reason

    def token_endpoint(self) -> auth.TokenEndpoint:
        """This client as a token flow sees it (auth.py): token requests go through `send`."""
        token_url = fill_placeholders(self.auth_method.token_url, self.values) if self.auth_method.token_url else ""
        return auth.TokenEndpoint(
            self.connector, self.auth_method, token_url, dict(self.values), self.send, self.secret_values
        )

    def record_of(self, exchange: Exchange, message: str = "") -> dict:
        """`exchange` as it may be stored: redacted whole with every secret of this client, then cut and made storable."""
        return exchange.redacted_record(self.secret_values, message)

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
        base = fill_placeholders(self.connector.base_url, self.values).rstrip("/")
        return base + fill_placeholders(path, self.values, quote_values=True)

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
        # A header that names only optional variables left blank is not sent (an optional key, say).
        blank = {v.key for v in self._variables() if not v.required and values.get(v.key) in (None, "")}
        headers = {
            k: fill_placeholders(v, values) for k, v in method.headers.items() if not _only_blank(v, blank)
        }
        params = {k: fill_placeholders(v, values) for k, v in method.query_params.items()}
        params.update(self._alias_params())
        body = {k: fill_placeholders(v, values) for k, v in method.body.items()}
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
            # Signed in _request(), once the URL and body are final (auth.sign_oauth1).
            for key in ("consumer_key", "consumer_secret"):
                if not values.get(key):
                    raise ClientError(f'no value for "{key}"')
        return headers, params, body

    # --- OAuth 2 -----------------------------------------------------------

    # --- sending -----------------------------------------------------------

    def send(self, method: str, url: str, **kwargs) -> Exchange:
        """One request outside the instance's limits (a token request): see sending.send."""
        return sending.send(
            method, url, secret_values=self.secret_values, credential_headers=self.auth_method.headers, **kwargs
        )

    # --- the credential check ------------------------------------------------

    def request(self, method: str, path: str, *, allow_cross_origin_redirects: bool = False, **kwargs) -> Exchange:
        """An authenticated request to `path` of the connector's API.

        With a stored OAuth 2 authorisation code token, a 401 refreshes the
        token (single-flight, see auth.access_token) and sends once more.
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
        base = fill_placeholders(self.connector.base_url, self.values)
        if destinations.origin(url) != destinations.origin(base):
            raise ClientError(
                f"the address {destinations.origin(url) or url!r} is not on the API's origin "
                f"({destinations.origin(base)}); it was not requested"
            )
        kwargs["allow_cross_origin_redirects"] = allow_cross_origin_redirects
        return self._request_refreshing(method, None, kwargs, url=url)

    def _request_refreshing(self, method: str, path: str | None, kwargs: dict, url: str | None = None) -> Exchange:
        exchange = self._request(method, path, dict(kwargs), url=url)
        # An OAuth 2 authorisation code token the API rejects is refreshed once, and the request sent again.
        if exchange.response_status == 401 and self._refreshes_tokens():
            credentials = self._fresh_access_token(rejected=self.secrets.get("access_token"))
            exchange = credentials.failed or self._request(method, path, dict(kwargs), url=url)
        return exchange

    def _fresh_access_token(self, rejected: str | None = None) -> auth.Credentials:
        credentials = auth.access_token(
            self.token_endpoint(), self.instance, current=self.secrets.get("access_token"), rejected=rejected
        )
        self._adopt(credentials)
        return credentials

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
            credentials = auth.client_credentials(self.token_endpoint(), use_cache=self.use_token_cache)
            self._adopt(credentials)
            if credentials.failed is not None:
                return credentials.failed
            token = credentials.access_token
        elif self.auth_method.type == AuthType.OAUTH2_AUTHORIZATION_CODE and self.instance is not None:
            if self.instance.reauth_reason:
                return self._refused_reauth(method, path, self.instance.reauth_reason)
            if self._refreshes_tokens():
                credentials = self._fresh_access_token()
                if credentials.failed is not None:
                    return credentials.failed
                token = credentials.access_token
        headers, params, body = self._auth_parts(token)
        headers.update(kwargs.pop("headers", {}) or {})
        params.update(kwargs.pop("params", {}) or {})
        if body and "data" not in kwargs and "json_body" not in kwargs and method != "GET":
            kwargs["data"] = body
        url = url or self.url_for(path)
        unapproved = self._unapproved(url)
        if unapproved:
            return self._refused(method, url, unapproved)
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
        policy = retry.after_429()
        waited = limits.TimeWaited(on_wait=self.on_wait)
        attempt = 0
        while True:
            try:
                with limits.outbound(instance, waited):
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
            if not policy.allows(attempt):
                notes.append(f"Answered 429 Too Many Requests; gave up after {policy.retries} retries.")
                break
            delay = policy.pause(attempt, headers=exchange.response_headers)
            limits.pause_rate_limit(instance, delay)
            attempt += 1
            notes.append(
                f"Answered 429 Too Many Requests; the rate limit was paused {delay:.1f} s for every worker and the request retried."
            )
        exchange.rate_limit_note = " ".join(notes)[:300]
        exchange.rate_limit_wait_ms, exchange.pool_wait_ms = waited.rate_ms, waited.pool_ms
        metrics.observe_waits(waited.rate_ms, waited.pool_ms)
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
            url, headers = auth.sign_oauth1(self.values, method, url, headers, form_body)
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
            exchange.request_url.split("?")[0] == fill_placeholders(method.token_url, self.values)
        )
        if not is_token_step and status in method.test_expected_status:
            return CheckResult(True, f"Authenticated: the API answered {exchange.status_text()}.", exchange)
        # The API's own words may echo what it was sent: redacted before they are cut.
        detail = self.redact(exchange.api_message(), limit=VENDOR_MESSAGE_CHARS)
        if is_token_step:
            message = f"The token request was refused: {exchange.status_text()}"
            if status == 200:
                message = "The token endpoint did not return an access token"
        elif status in (401, 403):
            message = f"The credentials were refused: {exchange.status_text()}"
        else:
            expected = ", ".join(map(str, method.test_expected_status))
            message = f"Unexpected answer from the API: {exchange.status_text()} (expected {expected})"
        message += "."
        if detail:
            message += f' The API said: "{detail.rstrip(".")}".'
        return CheckResult(False, self.redact(message), exchange)
