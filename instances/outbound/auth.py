"""The OAuth work the instance client does per request, on the client it is given.

A fresh OAuth 2 access token for an instance (refreshed when due or after a
401), the token request itself, recording a token exchange like a credential
check, and OAuth 1.0a signatures. The protocol work is oauthlib's; every
request goes through the client passed in (`InstanceClient.send`), so the SSRF
guard, timeouts, the total deadline and redaction apply to token requests as to
any other. The client imports this module, so this module does not import
the client (`TokenClient` below is what it uses of it); the authorisation
code pages (Connect, callback) are in `instances/oauth.py`.

Refreshing is single-flight across worker processes: the instance's row is
locked (``SELECT ... FOR UPDATE``; on SQLite the immediate transaction locks
the database) while one worker spends the refresh token, and the others then
use the tokens it stored instead of spending the (rotated) refresh token again.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import timedelta
from typing import Protocol
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone
from oauthlib import oauth1
from oauthlib.oauth2 import WebApplicationClient

from connectors.models import AuthMethod, Connector
from instances import redaction
from instances.outbound.exchange import ClientError, Exchange, _message_from_body, _status_text, render
from instances.models import CredentialCheck, Instance
from instances.status import note_status_change, status_text

logger = logging.getLogger(__name__)


class TokenClient(Protocol):
    """What this module uses of the instance client (`instances.client.InstanceClient`, which imports this module).

    The client passes itself to these functions; token requests go through its
    `send`, and what they obtain joins its secrets for redaction.
    """

    connector: Connector
    auth_method: AuthMethod
    instance: Instance | None
    values: dict[str, str]
    secrets: dict[str, str]

    @property
    def secret_values(self) -> list[str]: ...

    def send(self, method: str, url: str, **kwargs) -> Exchange: ...

    def redact(self, text: str, *, limit: int | None = None) -> str: ...

    def record_of(self, exchange: Exchange, message: str = "") -> dict: ...

    def _obtained(self, *tokens: object) -> None: ...


REFRESH_MARGIN_SECONDS = 60  # refresh this long before expiry (a quarter of short lifetimes)
REFRESH_FAILED = "Re-authentication needed: the access token could not be refreshed"
TOKEN_KEYS = ("access_token", "refresh_token")

# OAuth 1.0a variables of an auth method (consumer = the integration, token = the user's access token).
OAUTH1_SIGNATURE_METHODS = {"HMAC-SHA1": oauth1.SIGNATURE_HMAC_SHA1, "HMAC-SHA256": oauth1.SIGNATURE_HMAC_SHA256}


def web_client(client_id: str) -> WebApplicationClient:
    return WebApplicationClient(client_id)


def token_request(client: TokenClient, data: dict[str, str]) -> tuple[dict | None, Exchange, str]:
    """POST `data` to the method's token URL through the client: (token dict or None, exchange, problem)."""
    token_url = render(client.auth_method.token_url, client.values)
    client_id = client.values.get("client_id", "")
    pair = f"{client_id}:{client.values.get('client_secret', '')}".encode()
    exchange = client.send(
        "POST", token_url, headers={"Authorization": "Basic " + base64.b64encode(pair).decode()}, data=data
    )
    # The whole answer, JSON or form-encoded: its tokens and any other secret field, before anything stores it.
    answer = exchange.json if isinstance(exchange.json, dict) else dict(parse_qsl(exchange.response_body or ""))
    client._obtained(answer)
    if exchange.error:
        return None, exchange, client.redact(exchange.error)
    status = exchange.response_status or 0
    if status != 200:
        detail = client.redact(_message_from_body(exchange), limit=200)
        problem = f"The token request was refused: {_status_text(status)}."
        if detail:
            problem += f' The API said: "{detail.rstrip(".")}".'
        return None, exchange, problem
    body, expires_in = _without_expiry(exchange.response_body)
    try:
        token = dict(web_client(client_id).parse_request_body_response(body))
    except Exception as exc:  # noqa: BLE001 - oauthlib raises its own errors, ValueError, Warning, ...
        description = getattr(exc, "description", "") or ""
        problem = "The token endpoint did not return a usable access token"
        return None, exchange, client.redact(f"{problem}{': ' + description if description else ''}.", limit=300)
    if not isinstance(token.get("access_token"), str) or not token["access_token"]:
        return None, exchange, "The token endpoint did not return a usable access token."
    lifetime = token_lifetime(expires_in)
    if lifetime is not None:
        token["expires_in"] = lifetime
    return token, exchange, ""


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


def refresh_due_at(token: dict) -> object:
    """When to refresh a token from this response (None when it says nothing usable about expiry)."""
    seconds = token_lifetime(token.get("expires_in"))
    if seconds is None:
        return None
    margin = min(REFRESH_MARGIN_SECONDS, seconds // 4)
    return timezone.now() + timedelta(seconds=max(0, seconds - margin))


def record(client: TokenClient, exchange: Exchange, *, ok: bool, message: str, instance=None, user=None) -> CredentialCheck:
    """Store an exchange (a token request) redacted, like a credential check."""
    record = client.record_of(exchange, message)
    return CredentialCheck.objects.create(
        company=client.connector.company,
        connector=client.connector,
        instance=instance,
        auth_method=client.auth_method,
        created_by=user if getattr(user, "pk", None) else None,
        ok=ok,
        message=redaction.truncate(record.pop("message"), 300, redaction.secret_variants(client.secret_values)),
        **record,
    )


# --- refresh ------------------------------------------------------------------


def _refresh_due(instance: Instance) -> bool:
    return instance.token_refresh_due_at is not None and instance.token_refresh_due_at <= timezone.now()


def _adopt(client: TokenClient, instance: Instance, secrets: dict[str, str]) -> None:
    client.secrets = {k: v for k, v in secrets.items() if v}
    client.values.update(client.secrets)
    client._obtained(*(secrets.get(k) for k in TOKEN_KEYS))
    for name in ("token_refresh_due_at", "reauth_reason"):
        setattr(client.instance, name, getattr(instance, name))


def access_token(client: TokenClient, *, rejected: str | None = None) -> tuple[str | None, Exchange | None]:
    """A usable access token for the client's instance: (token, None) or (None, failed exchange).

    Refreshes it when it is due, or when the API just rejected `rejected`
    (a 401) — unless another worker has refreshed it meanwhile.
    """
    instance = client.instance
    current = client.secrets.get("access_token")
    if rejected is None and not _refresh_due(instance):
        return current, None
    with transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        stored = locked.get_secrets()
        if stored.get("access_token") != (rejected or current) or (rejected is None and not _refresh_due(locked)):
            _adopt(client, locked, stored)  # someone else refreshed while we waited for the lock
            return stored.get("access_token"), None
        if locked.reauth_reason:
            _adopt(client, locked, stored)
            return None, _refused(client, locked.reauth_reason)
        return _refresh(client, locked, stored)


def _refused(client: TokenClient, reason: str) -> Exchange:
    exchange = Exchange(request_method="POST", request_url=client.auth_method.token_url, request_headers={})
    exchange.error = reason
    return exchange


def _refresh(client: TokenClient, locked: Instance, stored: dict[str, str]) -> tuple[str | None, Exchange | None]:
    refresh_token = stored.get("refresh_token")
    client._obtained(*(stored.get(k) for k in TOKEN_KEYS))
    if not refresh_token:
        reason = f"{REFRESH_FAILED}: the provider gave no refresh token. Connect again."
        Instance.objects.filter(pk=locked.pk).update(reauth_reason=reason[:300])
        note_status_change(locked, status_text(locked.last_check_ok), status_text(None, reason), reason)
        locked.reauth_reason = reason[:300]
        _adopt(client, locked, stored)
        return None, _refused(client, reason)
    client.secrets, client.values = stored, {**client.values, **stored}
    body = web_client(client.values.get("client_id", "")).prepare_refresh_body(refresh_token=refresh_token)
    token, exchange, problem = token_request(client, dict(parse_qsl(body)))
    rotated = _rotated_refresh_token(token, exchange, refresh_token)
    if rotated:
        # The provider has spent the old refresh token: keep the new one before anything else can fail.
        stored = {**stored, "refresh_token": rotated}
        _store_secrets(locked, stored)
    if token is None:
        reason = f"{REFRESH_FAILED}: {problem} Reconnect the instance."[:300]
        Instance.objects.filter(pk=locked.pk).update(reauth_reason=reason)
        note_status_change(locked, status_text(locked.last_check_ok), status_text(None, reason), reason)
        locked.reauth_reason = reason
        record(client, exchange, ok=False, message=reason, instance=locked)
        _adopt(client, locked, stored)
        exchange.error = reason
        return None, exchange
    new = {**stored, "access_token": token["access_token"]}
    locked.token_refresh_due_at = refresh_due_at(token)
    _store_secrets(locked, new, token_refresh_due_at=locked.token_refresh_due_at)
    try:
        with transaction.atomic():  # a savepoint: failing to record this does not undo the stored tokens
            record(client, exchange, ok=True, message="Access token refreshed.", instance=locked)
    except DatabaseError:
        logger.exception("The refresh of instance %s could not be recorded; its new tokens are stored.", locked.pk)
    _adopt(client, locked, new)
    return new["access_token"], None


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
