"""The Sandbox's OAuth 2 server: the consent page (authorisation code grant) and the token endpoint.

Client credentials: client id ``sandbox-client`` / secret ``sandbox-client-secret``.
Authorisation code: client id ``sandbox-app`` / secret ``sandbox-app-secret``; the
consent page logs in the Sandbox's demo account ``sandbox`` / ``sandbox-secret``;
codes are single use (PKCE S256 when a challenge was sent) and refresh tokens
rotate: each works once, and using a spent one revokes the whole chain.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core import signing
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.csp import CSP
from django.views.decorators.csrf import csrf_exempt

from sandbox.api import (
    ACCESS_SALT,
    BASIC_PASSWORD,
    BASIC_USERNAME,
    CLIENT_CREDENTIALS_SALT,
    CLIENT_ID,
    CLIENT_SECRET,
    DEFAULT_PORTS,
    LOOPBACK_NAMES,
    TOKEN_LIFETIME,
    basic_credentials,
    error,
    origin,
    rate_limited,
    same,
    served,
)

APP_CLIENT_ID = "sandbox-app"
APP_CLIENT_SECRET = "sandbox-app-secret"
DEMO_ACCOUNT = (BASIC_USERNAME, BASIC_PASSWORD)  # who logs in on the consent page
CODE_LIFETIME = 120
_CODE_SALT = "sandbox-oauth-code"
_REFRESH_SALT = "sandbox-oauth-refresh"

def _redirect_with(redirect_uri: str, params: dict[str, str]) -> HttpResponse:
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return redirect(redirect_uri + separator + urlencode(params))


def registered_redirect_uris(request: HttpRequest) -> list[str]:
    """The redirect URIs registered with the Sandbox's app: SANDBOX_REDIRECT_URIS, or else the dashboard's callback.

    The callback counts on the origin this consent page is served on, on
    SANDBOX_BASE_URL's origin (under each loopback name when it is a loopback
    address, as `make run` is reached as localhost or 127.0.0.1), and as
    OAUTH_REDIRECT_URI.
    """
    if settings.SANDBOX_REDIRECT_URIS:
        return list(settings.SANDBOX_REDIRECT_URIS)
    callback = reverse("instances:oauth_callback")
    uris = [request.build_absolute_uri(callback)]
    if settings.OAUTH_REDIRECT_URI:
        uris.append(settings.OAUTH_REDIRECT_URI)
    own = origin(settings.SANDBOX_BASE_URL)
    if own is not None:
        scheme, host, port = own
        hosts = LOOPBACK_NAMES if host in ("127.0.0.1", "localhost", "::1") else (host if ":" not in host else f"[{host}]",)
        suffix = "" if port == DEFAULT_PORTS[scheme] else f":{port}"
        uris.extend(f"{scheme}://{name}{suffix}{callback}" for name in hosts)
    return uris


def _registered(request: HttpRequest, redirect_uri: str) -> bool:
    """Whether `redirect_uri` is exactly one of the registered ones (RFC 6749 §3.1.2: simple string comparison).

    No other port, host spelling, path, query or fragment: anything else would
    make the consent page an open redirect on the dashboard's origin.
    """
    if not redirect_uri or "#" in redirect_uri:
        return False
    return any(same(redirect_uri, uri) for uri in registered_redirect_uris(request))


def _login_key(request: HttpRequest) -> str:
    return f"sandbox:consent-failures:{request.META.get('REMOTE_ADDR', '')}"


def _login_locked(request: HttpRequest) -> bool:
    return (cache.get(_login_key(request)) or 0) >= settings.SANDBOX_LOGIN_ATTEMPTS


def _login_failed(request: HttpRequest) -> None:
    """Count a wrong login; the window starts at the first one and is not extended by later ones."""
    key = _login_key(request)
    if not cache.add(key, 1, timeout=settings.SANDBOX_LOGIN_WINDOW_SECONDS):
        try:
            cache.incr(key)
        except ValueError:
            cache.add(key, 1, timeout=settings.SANDBOX_LOGIN_WINDOW_SECONDS)


def _consent_page(request: HttpRequest, context: dict, redirect_uri: str, status: int = 200) -> HttpResponse:
    """The consent form, allowed to end in a redirect to the (registered) redirect URI.

    Browsers apply form-action to where a form submission redirects too; the
    callback may be on another of the dashboard's hosts (localhost vs 127.0.0.1),
    so that one origin is added to this page's form-action, nothing else.
    """
    response = render(request, "sandbox/authorize.html", context, status=status)
    parts = urlsplit(redirect_uri)
    response._csp_config = {**settings.SECURE_CSP, "form-action": [CSP.SELF, f"{parts.scheme}://{parts.netloc}"]}
    return response


@login_not_required
@served
def oauth_authorize(request: HttpRequest) -> HttpResponse:
    """The Sandbox's consent page: log in as its demo account, then allow or deny."""
    source = request.POST if request.method == "POST" else request.GET
    params = {k: source.get(k, "") for k in (
        "response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method",
    )}
    redirect_uri = params["redirect_uri"]
    # Errors about the client or the redirect URI are shown here, never sent to an unchecked address.
    if not same(params["client_id"], APP_CLIENT_ID):
        return render(
            request, "sandbox/authorize.html", {"fatal": "Unknown client_id: this app is not registered with the Sandbox."}, status=400
        )
    if not _registered(request, redirect_uri):
        return render(request, "sandbox/authorize.html", {
            "fatal": "The redirect_uri is not registered with the Sandbox: it accepts exactly this dashboard's "
                     "OAuth callback address (/instances/oauth/callback/ on its own host and port), "
                     "without a fragment.",
        }, status=400)
    if params["response_type"] != "code":
        return _redirect_with(redirect_uri, {"error": "unsupported_response_type", "state": params["state"]})
    if params["code_challenge"] and params["code_challenge_method"] != "S256":
        return _redirect_with(
            redirect_uri, {"error": "invalid_request", "error_description": "Use PKCE with S256.", "state": params["state"]}
        )
    context = {"params": params, "scopes": params["scope"].split()}
    if request.method != "POST":
        return _consent_page(request, context, redirect_uri)
    if request.POST.get("decision") == "deny":
        return _redirect_with(
            redirect_uri, {"error": "access_denied", "error_description": "The user denied access.", "state": params["state"]}
        )
    if _login_locked(request):
        minutes = max(1, settings.SANDBOX_LOGIN_WINDOW_SECONDS // 60)
        context["login_error"] = (
            f"Too many wrong logins to the Sandbox from your address: logging in is refused for up to {minutes} "
            "minutes after the first of them. Try again later."
        )
        return _consent_page(request, context, redirect_uri, status=429)
    if not (same(request.POST.get("username", ""), DEMO_ACCOUNT[0]) and same(request.POST.get("password", ""), DEMO_ACCOUNT[1])):
        _login_failed(request)
        context["login_error"] = "Wrong username or password for the Sandbox's demo account."
        return _consent_page(request, context, redirect_uri, status=401)
    code = signing.dumps({
        "client": params["client_id"], "redirect_uri": redirect_uri, "scope": params["scope"],
        "challenge": params["code_challenge"], "nonce": secrets.token_urlsafe(12),
    }, salt=_CODE_SALT)
    return _redirect_with(redirect_uri, {"code": code, "state": params["state"]})


def _issue_tokens(client_id: str, scope: str, chain: str) -> JsonResponse:
    """A short-lived access token and the next refresh token of `chain` (the previous one is spent)."""
    jti = secrets.token_urlsafe(12)
    cache.set(f"sandbox:refresh-chain:{chain}", jti, timeout=None)
    lifetime = settings.SANDBOX_ACCESS_TOKEN_LIFETIME
    access = signing.dumps({"client": client_id, "scope": scope, "n": secrets.token_urlsafe(6)}, salt=ACCESS_SALT)
    refresh = signing.dumps({"client": client_id, "scope": scope, "chain": chain, "jti": jti}, salt=_REFRESH_SALT)
    return JsonResponse({
        "access_token": access, "token_type": "Bearer", "expires_in": lifetime, "refresh_token": refresh, "scope": scope,
    })


def _authorization_code_grant(request: HttpRequest, client_id: str) -> HttpResponse:
    try:
        code = signing.loads(request.POST.get("code", ""), salt=_CODE_SALT, max_age=CODE_LIFETIME)
    except signing.BadSignature:
        return error(400, "invalid_grant", "The authorisation code is invalid or expired.")
    if not cache.add(f"sandbox:code-used:{code['nonce']}", 1, CODE_LIFETIME * 2):
        return error(400, "invalid_grant", "The authorisation code was already used.")
    if code["client"] != client_id or code["redirect_uri"] != request.POST.get("redirect_uri", ""):
        return error(400, "invalid_grant", "The code was issued to another client or redirect_uri.")
    if code["challenge"]:
        verifier = request.POST.get("code_verifier", "")
        expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or not same(expected, code["challenge"]):
            return error(400, "invalid_grant", "The PKCE code_verifier does not match the code_challenge.")
    return _issue_tokens(client_id, code["scope"], secrets.token_urlsafe(12))


def _refresh_token_grant(request: HttpRequest, client_id: str) -> HttpResponse:
    try:
        token = signing.loads(request.POST.get("refresh_token", ""), salt=_REFRESH_SALT)
    except signing.BadSignature:
        return error(400, "invalid_grant", "The refresh token is invalid.")
    if token["client"] != client_id:
        return error(400, "invalid_grant", "The refresh token was issued to another client.")
    key = f"sandbox:refresh-chain:{token['chain']}"
    current = cache.get(key)
    # A chain unknown to the cache (e.g. after a restart with the in-memory cache) starts from the token shown.
    if current is not None and current != token["jti"]:
        cache.set(key, "revoked", timeout=None)  # a spent refresh token came back: revoke the chain
        return error(400, "invalid_grant", "The refresh token was already used; the grant is revoked.")
    return _issue_tokens(client_id, token["scope"], token["chain"])


@csrf_exempt
@login_not_required
@served
def oauth_token(request: HttpRequest) -> HttpResponse:
    if (limited := rate_limited(request)) is not None:
        return limited
    if request.method != "POST":
        return error(405, "method_not_allowed", "Use POST.")
    grant_type = request.POST.get("grant_type")
    if grant_type in ("authorization_code", "refresh_token"):
        basic = basic_credentials(request.headers.get("Authorization", ""))
        client_id, client_secret = basic or (request.POST.get("client_id", ""), request.POST.get("client_secret", ""))
        if not (same(client_id, APP_CLIENT_ID) and same(client_secret, APP_CLIENT_SECRET)):
            return error(401, "invalid_client", "Unknown client id or wrong client secret.")
        if grant_type == "authorization_code":
            return _authorization_code_grant(request, client_id)
        return _refresh_token_grant(request, client_id)
    if grant_type != "client_credentials":
        return error(400, "unsupported_grant_type", "Use client_credentials, authorization_code or refresh_token.")
    basic = basic_credentials(request.headers.get("Authorization", ""))
    client_id, client_secret = basic or (request.POST.get("client_id", ""), request.POST.get("client_secret", ""))
    if not (same(client_id, CLIENT_ID) and same(client_secret, CLIENT_SECRET)):
        return error(401, "invalid_client", "Unknown client id or wrong client secret.")
    token = signing.dumps({"client": client_id, "scope": request.POST.get("scope", "")}, salt=CLIENT_CREDENTIALS_SALT)
    return JsonResponse({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME})
