"""OAuth for instances: the authorisation code grant (Connect, callback, refresh) and OAuth 1 signing.

The protocol work — authorise URLs, PKCE, token request bodies, parsing token
responses, OAuth 1.0a signatures — is oauthlib's. Every request still goes
through the one instance client (`InstanceClient.send`), so the SSRF guard,
timeouts, the total deadline and redaction apply to token requests as to any
other.

Refreshing is single-flight across worker processes: the instance's row is
locked (``SELECT ... FOR UPDATE``; on SQLite the immediate transaction locks
the database) while one worker spends the refresh token, and the others then
use the tokens it stored instead of spending the (rotated) refresh token again.
"""

from __future__ import annotations

import base64
import secrets as random_secrets
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from oauthlib import oauth1
from oauthlib.common import add_params_to_uri
from oauthlib.oauth2 import WebApplicationClient

from connectors.models import AuthMethod, AuthType
from instances import checks, redaction
from instances.client import (
    ClientError,
    Exchange,
    InstanceClient,
    _message_from_body,
    _status_text,
    render,
)
from instances.models import CredentialCheck, Instance, OAuthAuthorization

PENDING_MAX_AGE = timedelta(minutes=15)  # from Connect to the callback
REFRESH_MARGIN_SECONDS = 60  # refresh this long before expiry (a quarter of short lifetimes)
REFRESH_FAILED = "Re-authentication needed: the access token could not be refreshed"
TOKEN_KEYS = ("access_token", "refresh_token")

# OAuth 1.0a variables of an auth method (consumer = the integration, token = the user's access token).
OAUTH1_SIGNATURE_METHODS = {"HMAC-SHA1": oauth1.SIGNATURE_HMAC_SHA1, "HMAC-SHA256": oauth1.SIGNATURE_HMAC_SHA256}


class OAuthError(Exception):
    """A step of the authorisation failed; the message is phrased for the user (and redacted)."""

    def __init__(self, message: str, check: CredentialCheck | None = None):
        super().__init__(message)
        self.check = check  # the recorded token exchange, when there was one


# --- the redirect URI ---------------------------------------------------------


def redirect_uri(request) -> str:
    """The one callback address of this deployment, to be registered with every provider.

    OAUTH_REDIRECT_URI when set (production: the public https address); otherwise
    the callback on the host the dashboard is being served on.
    """
    return settings.OAUTH_REDIRECT_URI or request.build_absolute_uri(reverse("instances:oauth_callback"))


# --- Connect: to the provider's authorise page ------------------------------------


def _web_client(client_id: str) -> WebApplicationClient:
    return WebApplicationClient(client_id)


def start(
    *, request, connector, auth_method: AuthMethod, values: dict[str, str], secrets: dict[str, str],
    instance: Instance | None = None, wizard_state: dict | None = None, details: dict | None = None,
) -> tuple[OAuthAuthorization, str]:
    """Remember a Connect step and return (it, the provider's authorise URL to send the browser to)."""
    client = InstanceClient(connector, auth_method, values, secrets)
    try:
        authorize_url = render(auth_method.authorize_url, client.values)
    except ClientError as exc:
        raise OAuthError(f"The authorise address could not be built: {exc}.") from None
    if urlsplit(authorize_url).scheme not in ("https", "http") or not urlsplit(authorize_url).hostname:
        raise OAuthError(f"The authorise address {authorize_url!r} is not an http(s) URL.")
    client_id = client.values.get("client_id", "")
    if not client_id:
        raise OAuthError('Enter the client ID first: it is sent to the provider with "Connect".')
    forget_expired()
    oauth = _web_client(client_id)
    verifier = oauth.create_code_verifier(64)
    challenge = oauth.create_code_challenge(verifier, "S256")
    pending = OAuthAuthorization(
        state=random_secrets.token_urlsafe(32),
        company=connector.company,
        user=request.user,
        connector=connector,
        auth_method=auth_method,
        instance=instance,
        wizard_state=wizard_state or {},
        details=details or {},
        values=values,
        redirect_uri=redirect_uri(request),
    )
    pending.set_secrets({**secrets, "code_verifier": verifier})
    pending.save()
    # add_params_to_uri, not prepare_request_uri: the latter refuses plain http,
    # which the built-in Sandbox (and a development provider) is served on.
    params = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", pending.redirect_uri),
        ("state", pending.state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
    if auth_method.scope:
        params.insert(3, ("scope", auth_method.scope))
    return pending, add_params_to_uri(authorize_url, params)


def forget_expired() -> int:
    """Delete Connect steps past their age (abandoned ones still hold an encrypted client secret)."""
    return OAuthAuthorization.objects.filter(created_at__lt=timezone.now() - PENDING_MAX_AGE).delete()[0]


class CallbackRefused(OAuthError):
    """The callback cannot be matched to a usable Connect step."""


def claim(user, state: str) -> OAuthAuthorization:
    """The Connect step `state` names, for this user, marked used (once only)."""
    pending = OAuthAuthorization.objects.for_user(user).filter(state=state).select_related(
        "connector", "auth_method", "instance"
    ).first() if state else None
    if pending is None:
        raise CallbackRefused(
            "This answer from the provider does not match a Connect step you started "
            "(the state is wrong or missing). Nothing was saved."
        )
    if not OAuthAuthorization.objects.filter(pk=pending.pk, used_at__isnull=True).update(used_at=timezone.now()):
        raise CallbackRefused(
            "This answer from the provider was already used. Nothing more was saved; "
            "use Connect again if the instance is not connected."
        )
    if pending.created_at < timezone.now() - PENDING_MAX_AGE:
        raise OAuthError(
            f"The Connect step took longer than {int(PENDING_MAX_AGE.total_seconds() // 60)} minutes and has expired. "
            "Nothing was saved; use Connect again."
        )
    return pending


def provider_error(pending: OAuthAuthorization, error: str, description: str) -> str:
    """The message for an error the provider sent back to the callback."""
    client = InstanceClient(pending.connector, pending.auth_method, pending.values, pending.get_secrets())
    if error == "access_denied":
        return f"Access was not allowed at {pending.connector.name}, so nothing was saved. Use Connect again to retry."
    detail = client.redact((description or error)[:200])
    return f'{pending.connector.name} reported an error: "{detail}". Nothing was saved.'


def token_request(client: InstanceClient, data: dict[str, str]) -> tuple[dict | None, Exchange, str]:
    """POST `data` to the method's token URL through the client: (token dict or None, exchange, problem)."""
    token_url = render(client.auth_method.token_url, client.values)
    client_id = client.values.get("client_id", "")
    pair = f"{client_id}:{client.values.get('client_secret', '')}".encode()
    exchange = client.send(
        "POST", token_url, headers={"Authorization": "Basic " + base64.b64encode(pair).decode()}, data=data
    )
    if isinstance(exchange.json, dict):
        client._obtained(*(exchange.json.get(k) for k in ("access_token", "refresh_token", "id_token")))
    if exchange.error:
        return None, exchange, client.redact(exchange.error)
    status = exchange.response_status or 0
    if status != 200:
        detail = client.redact(_message_from_body(exchange), limit=200)
        problem = f"The token request was refused: {_status_text(status)}."
        if detail:
            problem += f' The API said: "{detail.rstrip(".")}".'
        return None, exchange, problem
    try:
        token = dict(_web_client(client_id).parse_request_body_response(exchange.response_body))
    except Exception as exc:  # noqa: BLE001 - oauthlib raises its own errors, ValueError, Warning, ...
        description = getattr(exc, "description", "") or ""
        problem = "The token endpoint did not return a usable access token"
        return None, exchange, client.redact(f"{problem}{': ' + description if description else ''}.", limit=300)
    if not isinstance(token.get("access_token"), str) or not token["access_token"]:
        return None, exchange, "The token endpoint did not return a usable access token."
    return token, exchange, ""


def refresh_due_at(token: dict) -> object:
    """When to refresh a token from this response (None when it says nothing about expiry)."""
    expires_in = token.get("expires_in")
    try:
        seconds = int(expires_in)
    except (TypeError, ValueError):
        return None
    margin = min(REFRESH_MARGIN_SECONDS, seconds // 4)
    return timezone.now() + timedelta(seconds=max(0, seconds - margin))


def record(client: InstanceClient, exchange: Exchange, *, ok: bool, message: str, instance=None, user=None) -> CredentialCheck:
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


def exchange_code(pending: OAuthAuthorization, code: str, user=None) -> tuple[dict[str, str], object]:
    """Trade the authorisation code for tokens: (secrets with the tokens, refresh due time); OAuthError if refused."""
    stored = pending.get_secrets()
    verifier = stored.pop("code_verifier", "")
    client = InstanceClient(pending.connector, pending.auth_method, pending.values, stored)
    body = _web_client(client.values.get("client_id", "")).prepare_request_body(
        code=code, redirect_uri=pending.redirect_uri, code_verifier=verifier, include_client_id=True,
    )
    data = dict(parse_qsl(body))
    client._obtained(code, verifier)
    token, exchange, problem = token_request(client, data)
    if token is None:
        check = record(client, exchange, ok=False, message=problem, user=user)
        raise OAuthError(f"{problem} Nothing was saved.", check)
    secrets = {**stored, **{k: token[k] for k in TOKEN_KEYS if isinstance(token.get(k), str) and token[k]}}
    return secrets, refresh_due_at(token)


# --- refresh ------------------------------------------------------------------


def _refresh_due(instance: Instance) -> bool:
    return instance.token_refresh_due_at is not None and instance.token_refresh_due_at <= timezone.now()


def _adopt(client: InstanceClient, instance: Instance, secrets: dict[str, str]) -> None:
    client.secrets = {k: v for k, v in secrets.items() if v}
    client.values.update(client.secrets)
    client._obtained(*(secrets.get(k) for k in TOKEN_KEYS))
    for name in ("token_refresh_due_at", "reauth_reason"):
        setattr(client.instance, name, getattr(instance, name))


def access_token(client: InstanceClient, *, rejected: str | None = None) -> tuple[str | None, Exchange | None]:
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


def _refused(client: InstanceClient, reason: str) -> Exchange:
    exchange = Exchange(request_method="POST", request_url=client.auth_method.token_url, request_headers={})
    exchange.error = reason
    return exchange


def _refresh(client: InstanceClient, locked: Instance, stored: dict[str, str]) -> tuple[str | None, Exchange | None]:
    refresh_token = stored.get("refresh_token")
    client._obtained(*(stored.get(k) for k in TOKEN_KEYS))
    if not refresh_token:
        reason = f"{REFRESH_FAILED}: the provider gave no refresh token. Connect again."
        Instance.objects.filter(pk=locked.pk).update(reauth_reason=reason[:300])
        checks.note_status_change(locked, checks.status_text(locked.last_check_ok), checks.status_text(None, reason), reason)
        locked.reauth_reason = reason[:300]
        _adopt(client, locked, stored)
        return None, _refused(client, reason)
    client.secrets, client.values = stored, {**client.values, **stored}
    body = _web_client(client.values.get("client_id", "")).prepare_refresh_body(refresh_token=refresh_token)
    token, exchange, problem = token_request(client, dict(parse_qsl(body)))
    if token is None:
        reason = f"{REFRESH_FAILED}: {problem} Reconnect the instance."[:300]
        Instance.objects.filter(pk=locked.pk).update(reauth_reason=reason)
        checks.note_status_change(locked, checks.status_text(locked.last_check_ok), checks.status_text(None, reason), reason)
        locked.reauth_reason = reason
        record(client, exchange, ok=False, message=reason, instance=locked)
        _adopt(client, locked, stored)
        exchange.error = reason
        return None, exchange
    new = {**stored, "access_token": token["access_token"]}
    if isinstance(token.get("refresh_token"), str) and token["refresh_token"]:
        new["refresh_token"] = token["refresh_token"]  # rotated: the old one is spent
    locked.set_secrets(new)
    locked.token_refresh_due_at = refresh_due_at(token)
    Instance.objects.filter(pk=locked.pk).update(
        secrets_ciphertext=locked.secrets_ciphertext, token_refresh_due_at=locked.token_refresh_due_at
    )
    record(client, exchange, ok=True, message="Access token refreshed.", instance=locked)
    _adopt(client, locked, new)
    return new["access_token"], None


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
        resource_owner_key=values.get("token_id") or None,
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


def is_authorization_code(auth_method: AuthMethod) -> bool:
    return auth_method.type == AuthType.OAUTH2_AUTHORIZATION_CODE
