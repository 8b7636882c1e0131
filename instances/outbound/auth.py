"""Every token flow of the outbound client; each returns what it obtained and never changes the client.

- OAuth 2 client credentials (`client_credentials`), its token cached encrypted;
- the authorisation code exchange of the Connect callback (`exchange_code`);
- a fresh access token for an instance, refreshed when due or after a 401
  (`access_token`), single-flight across worker processes: the instance's row
  is locked (``SELECT ... FOR UPDATE``; on SQLite the immediate transaction
  locks the database) while one worker spends the refresh token, and the
  others then use the tokens it stored instead of spending the (rotated)
  refresh token again;
- OAuth 1.0a signatures (`sign_oauth1`).

The protocol work is oauthlib's. ONE function builds a token request
(`token_request`); it goes out through the `send` of the `TokenEndpoint` the
client describes itself with, so the SSRF guard, timeouts, the total deadline
and redaction apply to token requests as to any other. A flow answers with
`Credentials`: the token, the secrets it met (the client redacts them from
then on), and what is now stored; the client adopts them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils import timezone
from oauthlib import oauth1
from oauthlib.oauth2 import WebApplicationClient

from connectors.models import AuthMethod, Connector
from instances import crypto, redaction
from instances.models import CredentialCheck, Instance
from instances.outbound.exchange import ClientError, Exchange, fill_placeholders
from instances.status import note_status_change, status_text

logger = logging.getLogger(__name__)

REFRESH_MARGIN_SECONDS = 60  # refresh this long before expiry (a quarter of short lifetimes)
TOKEN_EXPIRY_MARGIN = 60  # seconds before expiry a cached client credentials token is renewed
REFRESH_FAILED = "Re-authentication needed: the access token could not be refreshed"
TOKEN_KEYS = ("access_token", "refresh_token")
VENDOR_MESSAGE_CHARS = 200  # of the API's own error message quoted to the user

# OAuth 1.0a variables of an auth method (consumer = the integration, token = the user's access token).
OAUTH1_SIGNATURE_METHODS = {"HMAC-SHA1": oauth1.SIGNATURE_HMAC_SHA1, "HMAC-SHA256": oauth1.SIGNATURE_HMAC_SHA256}


@dataclass(frozen=True)
class TokenEndpoint:
    """What a token flow needs of the client: the auth method, the values, a way to send, the secrets known."""

    connector: Connector
    auth_method: AuthMethod
    token_url: str  # placeholders filled
    values: dict[str, str]  # the instance's values with its secrets (client_id, client_secret, ...)
    send: Callable[..., Exchange]  # one request through the SSRF guard, within its deadline
    secret_values: list[str]  # every secret known before the flow (redacted from what it says)

    def with_secrets(self, secrets: dict[str, str]) -> TokenEndpoint:
        return replace(
            self, values={**self.values, **secrets}, secret_values=[*self.secret_values, *(v for v in secrets.values() if v)]
        )


@dataclass
class Credentials:
    """What a token flow obtained, for the client to adopt."""

    access_token: str | None = None
    obtained: list[str] = field(default_factory=list)  # every secret met: tokens, secret fields of answers, codes
    failed: Exchange | None = None  # why there is no token
    problem: str = ""  # that in one sentence, redacted
    secrets: dict[str, str] | None = None  # the instance's secrets as they are stored now (None: not read)
    refresh_due_at: datetime | None = None
    reauth_reason: str | None = None  # the instance's, as stored now (None: not read)
    check: CredentialCheck | None = None  # the refused token exchange, when the flow recorded it


def secrets_in(*tokens: object) -> list[str]:
    """The secrets `tokens` hold: each is a token, or a token endpoint's whole answer (a dict) with its
    access, refresh and id tokens and every string field named like a secret."""
    found: list[str] = []
    for token in tokens:
        for value in redaction.token_answer_secrets(token) if isinstance(token, dict) else [token]:
            if isinstance(value, str) and value and value not in found:
                found.append(value)
    return found


class _KnownSecrets:
    """The secrets a flow knows and those it obtains, the moment it obtains them."""

    def __init__(self, known: list[str], obtained: list[str] | None = None):
        self.known = known
        self.obtained: list[str] = list(obtained or [])

    def add(self, *tokens: object) -> None:
        self.obtained += [value for value in secrets_in(*tokens) if value not in self.obtained]

    @property
    def every(self) -> list[str]:
        return [*self.known, *self.obtained]

    def redact(self, text: str, *, limit: int | None = None) -> str:
        variants = redaction.secret_variants(self.every)
        return redaction.scrub_text(text, variants) if limit is None else redaction.truncate(text, limit, variants)


def web_client(client_id: str) -> WebApplicationClient:
    return WebApplicationClient(client_id)


@dataclass
class TokenAnswer:
    token: dict | None  # the parsed answer, expires_in judged (None: refused or unusable)
    exchange: Exchange
    problem: str  # why there is no token, redacted
    obtained: list[str]
    refresh_due_at: datetime | None = None


def token_request(endpoint: TokenEndpoint, data: dict[str, str], found: _KnownSecrets | None = None) -> TokenAnswer:
    """POST `data` to the method's token URL, authenticated with the client ID and secret (HTTP Basic)."""
    found = found or _KnownSecrets(endpoint.secret_values)
    client_id = endpoint.values.get("client_id", "")
    pair = f"{client_id}:{endpoint.values.get('client_secret', '')}".encode()
    exchange = endpoint.send(
        "POST", endpoint.token_url, headers={"Authorization": "Basic " + base64.b64encode(pair).decode()}, data=data
    )
    token, problem = _parsed(exchange, client_id)
    said, status = exchange.api_message(), exchange.status_text()
    # The whole answer, JSON or form-encoded: its tokens and any other secret field, before anything stores it.
    found.add(exchange.json if isinstance(exchange.json, dict) else dict(parse_qsl(exchange.response_body or "")))
    if token is not None:
        return TokenAnswer(token, exchange, "", found.obtained, refresh_due_at(token))
    if exchange.error:
        problem = found.redact(exchange.error)
    elif (exchange.response_status or 0) != 200:
        detail = found.redact(said, limit=VENDOR_MESSAGE_CHARS)
        problem = f"The token request was refused: {status}."
        if detail:
            problem += f' The API said: "{detail.rstrip(".")}".'
    else:
        problem = found.redact(problem, limit=300)
    return TokenAnswer(None, exchange, problem, found.obtained)


def _parsed(exchange: Exchange, client_id: str) -> tuple[dict | None, str]:
    """(the token a 200 answer carries, its expires_in judged; or None and why it is unusable)."""
    if exchange.error or exchange.response_status != 200:
        return None, ""
    body, expires_in = _without_expiry(exchange.response_body)
    try:
        token = dict(web_client(client_id).parse_request_body_response(body))
    except Exception as exc:  # noqa: BLE001 - oauthlib raises its own errors, ValueError, Warning, ...
        description = getattr(exc, "description", "") or ""
        return None, f"The token endpoint did not return a usable access token{': ' + description if description else ''}."
    if not isinstance(token.get("access_token"), str) or not token["access_token"]:
        return None, "The token endpoint did not return a usable access token."
    lifetime = token_lifetime(expires_in)
    if lifetime is not None:
        token["expires_in"] = lifetime
    return token, ""


def _bounded_int(text: str) -> int | float:
    # int() refuses more than 4,300 digits; as a float such a number is simply infinite.
    return int(text) if len(text) <= 30 else float(text)


def _without_expiry(body: str) -> tuple[str, object]:
    """(the token answer without expires_in/expires_at, the raw expires_in).

    oauthlib refuses a whole answer whose expires_in is not an integer
    ("abc", a list) or overflows on an infinite one, and with it the tokens the
    answer carries; the expiry is judged by `token_lifetime` instead.
    """
    try:
        params = json.loads(body, parse_int=_bounded_int)
    except (ValueError, RecursionError):
        params = dict(parse_qsl(body))  # the form-encoded answers oauthlib also accepts
    if not isinstance(params, dict) or not ({"expires_in", "expires_at"} & params.keys()):
        return body, None
    expires_in = params.pop("expires_in", None)
    params.pop("expires_at", None)
    return json.dumps(params), expires_in


def token_lifetime(expires_in: object) -> int | None:
    """The seconds a token answer's `expires_in` gives, within 1 .. OAUTH_MAX_TOKEN_LIFETIME; None: unknown.

    Missing, non-numeric, boolean, zero, negative and NaN values say nothing
    usable (the token is then used until the API refuses it); values too large
    for a date (10**30, 1e308, Infinity) are cut to the maximum.
    """
    if expires_in is None or isinstance(expires_in, bool):
        return None
    if isinstance(expires_in, str):
        try:
            number: int | float = float(expires_in.strip())
        except ValueError:
            return None
    elif isinstance(expires_in, (int, float)):
        number = expires_in
    else:
        return None
    if number != number or number <= 0:  # NaN, zero or negative
        return None
    maximum = max(1, int(settings.OAUTH_MAX_TOKEN_LIFETIME))
    return maximum if number >= maximum else max(1, int(number))


def refresh_due_at(token: dict) -> datetime | None:
    """When to refresh a token from this response (None when it says nothing usable about expiry)."""
    seconds = token_lifetime(token.get("expires_in"))
    if seconds is None:
        return None
    margin = min(REFRESH_MARGIN_SECONDS, seconds // 4)
    return timezone.now() + timedelta(seconds=max(0, seconds - margin))


def record(
    endpoint: TokenEndpoint, exchange: Exchange, secret_values: list[str], *, ok: bool, message: str,
    instance: Instance | None = None, user=None,
) -> CredentialCheck:
    """Store an exchange (a token request) redacted with `secret_values`, like a credential check."""
    stored = exchange.redacted_record(secret_values, message)
    return CredentialCheck.objects.create(
        company=endpoint.connector.company,
        connector=endpoint.connector,
        instance=instance,
        auth_method=endpoint.auth_method,
        created_by=user if getattr(user, "pk", None) else None,
        ok=ok,
        message=redaction.truncate(stored.pop("message"), 300, redaction.secret_variants(secret_values)),
        **stored,
    )


def _refused(endpoint: TokenEndpoint, reason: str) -> Exchange:
    exchange = Exchange(request_method="POST", request_url=endpoint.auth_method.token_url, request_headers={})
    exchange.error = reason
    return exchange


# --- OAuth 2 client credentials -----------------------------------------------------


def token_cache_key(endpoint: TokenEndpoint, token_url: str) -> str:
    """Where the client credentials token of these credentials is cached (the secret is part of the key, hashed)."""
    values = endpoint.values
    material = f"{token_url}\0{values.get('client_id', '')}\0{values.get('client_secret', '')}\0{endpoint.auth_method.scope}"
    digest = hmac.new(settings.SECRET_KEY.encode(), material.encode(), hashlib.sha256).hexdigest()
    return f"oauth2-token:{digest}"


def client_credentials(endpoint: TokenEndpoint, *, use_cache: bool = True) -> Credentials:
    """An OAuth 2 client credentials access token, from the cache (encrypted there) or the token endpoint."""
    method = endpoint.auth_method
    key = token_cache_key(endpoint, endpoint.token_url)
    if use_cache:
        # Encrypted in the cache (Redis is shared, and not where credentials are kept in plain).
        cached = crypto.decrypt_cached(cache.get(key), key)
        if cached:
            return Credentials(access_token=cached, obtained=[cached])
    data = {"grant_type": "client_credentials"}
    if method.scope:
        data["scope"] = method.scope
    data.update({k: fill_placeholders(v, endpoint.values) for k, v in method.body.items()})
    answer = token_request(endpoint, data)
    if answer.token is None:
        return Credentials(obtained=answer.obtained, failed=answer.exchange, problem=answer.problem)
    token, lifetime = answer.token["access_token"], answer.token.get("expires_in")
    if lifetime is not None and lifetime > TOKEN_EXPIRY_MARGIN:
        cache.set(key, crypto.encrypt_cached(token, key), timeout=lifetime - TOKEN_EXPIRY_MARGIN)
    return Credentials(access_token=token, obtained=answer.obtained)


# --- OAuth 2 authorisation code: the code exchange and refreshing -------------------------


def exchange_code(endpoint: TokenEndpoint, code: str, verifier: str, redirect_uri: str, *, user=None) -> Credentials:
    """Trade an authorisation code (with its PKCE verifier) for tokens: `secrets` holds them.

    When the provider refuses, `problem` says why and the refused exchange is
    recorded like a credential check (`check`).
    """
    found = _KnownSecrets(endpoint.secret_values, obtained=[code, verifier])
    body = web_client(endpoint.values.get("client_id", "")).prepare_request_body(
        code=code, redirect_uri=redirect_uri, code_verifier=verifier, include_client_id=True,
    )
    answer = token_request(endpoint, dict(parse_qsl(body)), found)
    if answer.token is None:
        check = record(endpoint, answer.exchange, found.every, ok=False, message=answer.problem, user=user)
        return Credentials(obtained=answer.obtained, failed=answer.exchange, problem=answer.problem, check=check)
    tokens = {k: answer.token[k] for k in TOKEN_KEYS if isinstance(answer.token.get(k), str) and answer.token[k]}
    return Credentials(
        access_token=tokens["access_token"], obtained=answer.obtained, secrets=tokens, refresh_due_at=answer.refresh_due_at
    )


def _refresh_due(instance: Instance) -> bool:
    return instance.token_refresh_due_at is not None and instance.token_refresh_due_at <= timezone.now()


def _as_stored(locked: Instance, secrets: dict[str, str], found: _KnownSecrets, failed: Exchange | None = None) -> Credentials:
    """The instance's tokens as `locked` holds them now (a failure: no access token)."""
    found.add(*(secrets.get(k) for k in TOKEN_KEYS))
    return Credentials(
        access_token=None if failed is not None else secrets.get("access_token"), obtained=found.obtained,
        failed=failed, secrets=secrets, refresh_due_at=locked.token_refresh_due_at, reauth_reason=locked.reauth_reason,
    )


def access_token(
    endpoint: TokenEndpoint, instance: Instance, *, current: str | None, rejected: str | None = None
) -> Credentials:
    """A usable access token for `instance`, whose client holds `current`.

    Refreshes it when it is due, or when the API just rejected `rejected`
    (a 401) — unless another worker has refreshed it meanwhile.
    """
    if rejected is None and not _refresh_due(instance):
        return Credentials(access_token=current)
    found = _KnownSecrets(endpoint.secret_values)
    with transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        stored = locked.get_secrets()
        if stored.get("access_token") != (rejected or current) or (rejected is None and not _refresh_due(locked)):
            return _as_stored(locked, stored, found)  # someone else refreshed while we waited for the lock
        if locked.reauth_reason:
            return _as_stored(locked, stored, found, _refused(endpoint, locked.reauth_reason))
        return _refresh(endpoint.with_secrets(stored), locked, stored)


def _refresh(endpoint: TokenEndpoint, locked: Instance, stored: dict[str, str]) -> Credentials:
    refresh_token = stored.get("refresh_token")
    found = _KnownSecrets(endpoint.secret_values)
    found.add(*(stored.get(k) for k in TOKEN_KEYS))
    if not refresh_token:
        reason = f"{REFRESH_FAILED}: the provider gave no refresh token. Connect again."
        _needs_reauth(locked, reason)
        return _as_stored(locked, stored, found, _refused(endpoint, reason))
    body = web_client(endpoint.values.get("client_id", "")).prepare_refresh_body(refresh_token=refresh_token)
    answer = token_request(endpoint, dict(parse_qsl(body)), found)
    token, exchange = answer.token, answer.exchange
    rotated = _rotated_refresh_token(token, exchange, refresh_token)
    if rotated:
        # The provider has spent the old refresh token: keep the new one before anything else can fail.
        stored = {**stored, "refresh_token": rotated}
        _store_secrets(locked, stored)
    if token is None:
        reason = f"{REFRESH_FAILED}: {answer.problem} Reconnect the instance."[:300]
        _needs_reauth(locked, reason)
        record(endpoint, exchange, found.every, ok=False, message=reason, instance=locked)
        exchange.error = reason
        return _as_stored(locked, stored, found, exchange)
    new = {**stored, "access_token": token["access_token"]}
    locked.token_refresh_due_at = answer.refresh_due_at
    _store_secrets(locked, new, token_refresh_due_at=locked.token_refresh_due_at)
    try:
        with transaction.atomic():  # a savepoint: failing to record this does not undo the stored tokens
            record(endpoint, exchange, found.every, ok=True, message="Access token refreshed.", instance=locked)
    except DatabaseError:
        logger.exception("The refresh of instance %s could not be recorded; its new tokens are stored.", locked.pk)
    return _as_stored(locked, new, found)


def _needs_reauth(locked: Instance, reason: str) -> None:
    """The instance cannot refresh its token any more: the user must Connect again."""
    Instance.objects.filter(pk=locked.pk).update(reauth_reason=reason[:300])
    note_status_change(locked, status_text(locked.last_check_ok), status_text(None, reason), reason)
    locked.reauth_reason = reason[:300]


def _rotated_refresh_token(token: dict | None, exchange: Exchange, spent: str) -> str | None:
    """The new refresh token a refresh answer carries, also when the rest of the answer is unusable."""
    answer = token
    if answer is None:
        answer = exchange.json if exchange.response_status == 200 and isinstance(exchange.json, dict) else {}
    value = answer.get("refresh_token")
    return value if isinstance(value, str) and value and value != spent else None


def _store_secrets(locked: Instance, secrets: dict[str, str], **fields) -> None:
    """Write the instance's secrets (encrypted) and `fields` at once, on the locked row."""
    locked.set_secrets(secrets)
    Instance.objects.filter(pk=locked.pk).update(secrets_ciphertext=locked.secrets_ciphertext, **fields)


# --- OAuth 1.0a -----------------------------------------------------------------


class _OAuth1Client(oauth1.Client):
    """oauthlib's client; `send_version=False` leaves out the optional oauth_version (RFC 5849 section 3.1),
    as the RFC's own examples do."""

    def __init__(self, *args, send_version: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.send_version = send_version

    def get_oauth_params(self, request) -> list[tuple[str, str]]:
        params = super().get_oauth_params(request)
        return params if self.send_version else [p for p in params if p[0] != "oauth_version"]


def oauth1_client(values: dict[str, str], **fixed) -> oauth1.Client:
    """An oauthlib OAuth 1 client from the auth method's variables (`fixed`: nonce/timestamp, for test vectors)."""
    method = (values.get("signature_method") or "HMAC-SHA256").upper()
    if method not in OAUTH1_SIGNATURE_METHODS:
        raise ClientError(f'signature method "{method}" is not supported (use HMAC-SHA1 or HMAC-SHA256)')
    if not values.get("consumer_key"):
        raise ClientError('no value for "consumer_key"')
    placement = (values.get("signature_placement") or "header").lower()
    return _OAuth1Client(
        values["consumer_key"],
        client_secret=values.get("consumer_secret", ""),
        # Connectors built before the builder named it token_id call the token "token".
        resource_owner_key=values.get("token_id") or values.get("token") or None,
        resource_owner_secret=values.get("token_secret") or None,
        signature_method=OAUTH1_SIGNATURE_METHODS[method],
        signature_type=oauth1.SIGNATURE_TYPE_QUERY if placement == "query" else oauth1.SIGNATURE_TYPE_AUTH_HEADER,
        realm=values.get("realm") or None,
        **fixed,
    )


def sign_oauth1(
    values: dict[str, str], method: str, url: str, headers: dict[str, str], form_body: str | None = None, **fixed
) -> tuple[str, dict[str, str]]:
    """(url, headers) of a request signed with OAuth 1.0a.

    `url` carries the query parameters; a form-encoded body is part of the
    signature (RFC 5849 section 3.4.1.3), other bodies are not.
    """
    client = oauth1_client(values, **fixed)
    sign_headers = dict(headers)
    if form_body is not None:
        sign_headers["Content-Type"] = "application/x-www-form-urlencoded"
    signed_url, signed_headers, _ = client.sign(url, http_method=method, body=form_body, headers=sign_headers)
    return signed_url, dict(signed_headers)
