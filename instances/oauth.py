"""OAuth for instances: the authorisation code grant's steps (Connect and the callback).

Connect remembers a step and sends the browser to the provider's authorise
page (PKCE, state); the callback claims that step once and trades the code for
tokens (`auth.exchange_code` of the outbound client, which owns every token
flow). The protocol work is oauthlib's.
"""

from __future__ import annotations

import secrets as random_secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from oauthlib.common import add_params_to_uri

from connectors.models import AuthMethod, AuthType
from instances import checks
from instances.models import CredentialCheck, Instance, OAuthAuthorization
from instances.outbound import ClientError, InstanceClient, auth
from instances.outbound.exchange import fill_placeholders

PENDING_MAX_AGE = timedelta(minutes=15)  # from Connect to the callback


class OAuthError(Exception):
    """A step of the authorisation failed; the message is phrased for the user (and redacted)."""

    def __init__(self, message: str, check: CredentialCheck | None = None, pending: OAuthAuthorization | None = None):
        super().__init__(message)
        self.check = check  # the recorded token exchange, when there was one
        self.pending = pending  # the Connect step to resume, once one was claimed


@dataclass
class Connected:
    """A Connect step whose code was traded for tokens that passed the credential check: ready to save."""

    pending: OAuthAuthorization
    secrets: dict[str, str]
    refresh_due_at: datetime | None
    check: CredentialCheck


# --- the redirect URI ---------------------------------------------------------


def redirect_uri(request) -> str:
    """The one callback address of this deployment, to be registered with every provider.

    OAUTH_REDIRECT_URI when set (production: the public https address); otherwise
    the callback on the host the dashboard is being served on.
    """
    return settings.OAUTH_REDIRECT_URI or request.build_absolute_uri(reverse("instances:oauth_callback"))


# --- Connect: to the provider's authorise page ------------------------------------


def start(
    *, request, connector, auth_method: AuthMethod, values: dict[str, str], secrets: dict[str, str],
    instance: Instance | None = None, wizard_state: dict | None = None, details: dict | None = None,
) -> tuple[OAuthAuthorization, str]:
    """Remember a Connect step and return (it, the provider's authorise URL to send the browser to)."""
    client = InstanceClient(connector, auth_method, values, secrets)
    try:
        authorize_url = fill_placeholders(auth_method.authorize_url, client.values)
    except ClientError as exc:
        raise OAuthError(f"The authorise address could not be built: {exc}.") from None
    if urlsplit(authorize_url).scheme not in ("https", "http") or not urlsplit(authorize_url).hostname:
        raise OAuthError(f"The authorise address {authorize_url!r} is not an http(s) URL.")
    client_id = client.values.get("client_id", "")
    if not client_id:
        raise OAuthError('Enter the client ID first: it is sent to the provider with "Connect".')
    forget_expired()
    oauth = auth.web_client(client_id)
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
            "Nothing was saved; use Connect again.",
            pending=pending,
        )
    return pending


def provider_error(pending: OAuthAuthorization, error: str, description: str) -> str:
    """The message for an error the provider sent back to the callback."""
    client = InstanceClient(pending.connector, pending.auth_method, pending.values, pending.get_secrets())
    if error == "access_denied":
        return f"Access was not allowed at {pending.connector.name}, so nothing was saved. Use Connect again to retry."
    detail = client.redact((description or error)[:200])
    return f'{pending.connector.name} reported an error: "{detail}". Nothing was saved.'


def finish(user, answer: Mapping[str, str]) -> Connected:
    """The callback's work before anything is saved: claim the Connect step, trade the code, check the tokens.

    `answer` is the provider's query string. CallbackRefused when it matches no
    usable Connect step of `user`; any other OAuthError says why nothing was
    saved and carries the step to resume.
    """
    pending = claim(user, answer.get("state", ""))
    if answer.get("error") or not answer.get("code"):
        error = answer.get("error", "")
        raise OAuthError(
            provider_error(pending, error, answer.get("error_description", "")) if error
            else "The provider sent no authorisation code back. Nothing was saved; use Connect again.",
            pending=pending,
        )
    # The code is traded for tokens once; the Connect step's secrets are forgotten whatever happens.
    stored = pending.get_secrets()
    verifier = stored.pop("code_verifier", "")
    pending.secrets_ciphertext = ""
    OAuthAuthorization.objects.filter(pk=pending.pk).update(secrets_ciphertext="")
    endpoint = InstanceClient(pending.connector, pending.auth_method, pending.values, stored).token_endpoint()
    credentials = auth.exchange_code(endpoint, answer["code"], verifier, pending.redirect_uri, user=user)
    if credentials.secrets is None:
        raise OAuthError(f"{credentials.problem} Nothing was saved.", credentials.check, pending)
    secrets = {**stored, **credentials.secrets}
    result, check = checks.check_and_record(
        connector=pending.connector, auth_method=pending.auth_method, values=pending.values, secrets=secrets, user=user
    )
    if not result.ok:
        raise OAuthError(f"Connected, but the test request failed: {result.message} Nothing was saved.", pending=pending)
    return Connected(pending, secrets, credentials.refresh_due_at, check)


def is_authorization_code(auth_method: AuthMethod) -> bool:
    return auth_method.type == AuthType.OAUTH2_AUTHORIZATION_CODE
