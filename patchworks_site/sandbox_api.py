"""The Sandbox API: a small third-party API served by the dashboard itself.

It lets the demo and the tests exercise every authentication type over real
HTTP. It accepts exactly:

- Basic: username ``sandbox`` / password ``sandbox-secret``
- Token: ``X-Api-Key: sandbox-token`` (or ``Authorization: Bearer sandbox-token``)
- OAuth 2 client credentials: client id ``sandbox-client`` / secret
  ``sandbox-client-secret`` at ``POST /sandbox/api/oauth/token`` (HTTP basic or
  form fields), giving a bearer token valid for one hour.

- OAuth 2 authorisation code: client id ``sandbox-app`` / secret
  ``sandbox-app-secret``. ``GET /sandbox/api/oauth/authorize`` is the consent page
  (log in as the Sandbox's demo account ``sandbox`` / ``sandbox-secret``, then
  allow or deny); ``POST /sandbox/api/oauth/token`` trades the code (single use,
  PKCE S256 when a challenge was sent) for a short-lived access token
  (SANDBOX_ACCESS_TOKEN_LIFETIME seconds) and a refresh token that rotates: each
  refresh token works once, and using a spent one revokes the whole chain.
- OAuth 1.0a (HMAC-SHA1 or HMAC-SHA256, in the Authorization header or the
  query string): consumer key ``sandbox-consumer`` / secret
  ``sandbox-consumer-secret``, token ``sandbox-token-id`` / secret
  ``sandbox-token-secret``; timestamps within 5 minutes, nonces used once.

Anything else gets 401 with a JSON error body. The Sandbox keeps its codes,
nonces and refresh-token chains in the cache (Redis when configured).

Data for process flows (records generated lazily, see sandbox_data):

- ``GET /orders``: page-number pagination (``page``, ``per_page`` ≤ 100,
  ``count`` ≤ 100,000 orders, ``as_of`` pins the list), newest ``updated_at``
  first; ``updated_since`` is read in the zone of the ``X-Sandbox-Time-Zone``
  header with the strftime format of ``X-Sandbox-Date-Format``, so a flow that
  formats dates wrongly gets visibly wrong results.
- ``GET /products``: next-link pagination (``limit``, ``count``, a cursor in ``links.next``).
- ``POST /orders`` stores one order (a JSON object) or a batch (a list of them);
  ``GET /orders/received`` lists what was stored, and the dashboard page
  ``/sandbox/received-orders/`` shows it.
- Every data endpoint takes ``delay_ms`` (0 to SANDBOX_MAX_DELAY_MS: answers that
  much later) and ``fail_with`` (400-599: answers with that status and a JSON
  error), for demonstrations and tests.

Accounts: what ``POST /orders`` stores belongs to the account whose key comes in
the ``X-Sandbox-Account`` header (see SandboxAccount: the instance client sends
its company's key to this deployment's Sandbox only); without one, to the
anonymous account shared by every caller. An unknown or rotated key is refused.

Bounds (the Sandbox is public): it is served only when SANDBOX_ENABLED is on
(by default with DEBUG), answers 429 to a client past SANDBOX_RATE_LIMIT_PER_SECOND,
keeps each account's newest orders within SANDBOX_MAX_ORDERS_PER_ACCOUNT and
SANDBOX_MAX_BYTES_PER_ACCOUNT, refuses new orders past SANDBOX_MAX_STORED_BYTES
in all, and locks its consent page for an address after SANDBOX_LOGIN_ATTEMPTS
wrong logins within SANDBOX_LOGIN_WINDOW_SECONDS.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import secrets
import time
from typing import Callable
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core import signing
from django.core.cache import cache
from django.core.paginator import Paginator
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.csp import CSP
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature as oauth1_signature

from patchworks_site import sandbox_data as data
from patchworks_site import audit
from patchworks_site.models import SandboxAccount, SandboxReceivedOrder
from patchworks_site.tenancy import company_of, require

BASIC_USERNAME = "sandbox"
BASIC_PASSWORD = "sandbox-secret"
API_TOKEN = "sandbox-token"
CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-client-secret"
TOKEN_LIFETIME = 3600
_SIGNING_SALT = "sandbox-oauth-token"
APP_CLIENT_ID = "sandbox-app"
APP_CLIENT_SECRET = "sandbox-app-secret"
DEMO_ACCOUNT = (BASIC_USERNAME, BASIC_PASSWORD)  # who logs in on the consent page
CODE_LIFETIME = 120
_CODE_SALT = "sandbox-oauth-code"
_ACCESS_SALT = "sandbox-oauth-access"
_REFRESH_SALT = "sandbox-oauth-refresh"
OAUTH1_CONSUMER_KEY = "sandbox-consumer"
OAUTH1_CONSUMER_SECRET = "sandbox-consumer-secret"
OAUTH1_TOKEN = "sandbox-token-id"
OAUTH1_TOKEN_SECRET = "sandbox-token-secret"
OAUTH1_MAX_CLOCK_SKEW = 300

CUSTOMERS = [{"id": 1, "name": "Ada Lovelace"}, {"id": 2, "name": "Grace Hopper"}]


# The Sandbox address its catalog manifests give as the default; instances use
# the address the dashboard is actually served on instead (see default_address).
CATALOG_ADDRESS = "http://127.0.0.1:8000/sandbox/api"


ACCOUNT_HEADER = "X-Sandbox-Account"
MAX_ACCOUNT_KEY_LENGTH = 100
DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def account_for(company_id: int) -> str:
    """The public id of a company's Sandbox account (what its received orders are stored under)."""
    return SandboxAccount.objects.for_company(company_id).account


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL; None for anything else or a URL with user info."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def is_own_sandbox(url: str) -> bool:
    """Whether `url` is on the Sandbox this deployment serves: the same scheme, host and port as SANDBOX_BASE_URL.

    Only there does the instance client send a company's Sandbox account key; the
    path is not looked at, so no other host can ask for it by imitating the Sandbox.
    """
    own = origin(settings.SANDBOX_BASE_URL)
    return settings.SANDBOX_ENABLED and own is not None and origin(url) == own


class UnknownAccount(Exception):
    """An X-Sandbox-Account key that opens no account (wrong, or replaced by a rotation)."""


def account_of(request: HttpRequest) -> str:
    """The account a Sandbox request is made for: "" (anonymous) without an account key; UnknownAccount for a bad one."""
    key = request.headers.get(ACCOUNT_HEADER)
    if key is None:
        return ""
    account = SandboxAccount.objects.account_with_key(key) if len(key) <= MAX_ACCOUNT_KEY_LENGTH else None
    if account is None:
        raise UnknownAccount
    return account


def default_address(request: HttpRequest | None = None) -> str:
    """Where the Sandbox API is reached: SANDBOX_BASE_URL (it follows PORT), else this request's host."""
    if request is not None and not settings.SANDBOX_BASE_URL_CONFIGURED:
        return request.build_absolute_uri("/sandbox/api")
    return settings.SANDBOX_BASE_URL


def _error(status: int, error: str, description: str) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Basic realm="sandbox", Bearer'
    return response


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _basic_credentials(header: str) -> tuple[str, str] | None:
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def _oauth1_signed(request: HttpRequest) -> bool:
    """Whether the request carries a valid OAuth 1.0a signature of the Sandbox's one key set."""
    header = request.headers.get("Authorization", "")
    headers = {"Authorization": header} if header.lower().startswith("oauth ") else {}
    body = request.body.decode("utf-8", errors="replace") if request.content_type == "application/x-www-form-urlencoded" else ""
    try:
        params = oauth1_signature.collect_parameters(
            uri_query=request.META.get("QUERY_STRING", ""), body=body, headers=headers, exclude_oauth_signature=False,
        )
    except ValueError:
        return False
    oauth = dict(p for p in params if p[0].startswith("oauth_"))
    if not (_same(oauth.get("oauth_consumer_key", ""), OAUTH1_CONSUMER_KEY)
            and _same(oauth.get("oauth_token", ""), OAUTH1_TOKEN)):
        return False
    try:
        if abs(time.time() - int(oauth.get("oauth_timestamp", "0"))) > OAUTH1_MAX_CLOCK_SKEW:
            return False
    except ValueError:
        return False
    oauth_request = OAuthRequest(request.build_absolute_uri(), request.method, body=body or None, headers=headers)
    oauth_request.params = [p for p in params if p[0] not in ("realm", "oauth_signature")]
    oauth_request.signature = oauth.get("oauth_signature", "")
    verify = {"HMAC-SHA1": oauth1_signature.verify_hmac_sha1, "HMAC-SHA256": oauth1_signature.verify_hmac_sha256}.get(
        oauth.get("oauth_signature_method", "")
    )
    if verify is None or not verify(oauth_request, OAUTH1_CONSUMER_SECRET, OAUTH1_TOKEN_SECRET):
        return False
    # A nonce is used once (per timestamp): a replayed request is refused.
    return cache.add(f"sandbox:oauth1-nonce:{oauth.get('oauth_timestamp')}:{oauth.get('oauth_nonce')}", 1, OAUTH1_MAX_CLOCK_SKEW * 2)


def authenticated_by(request: HttpRequest) -> str | None:
    """Which auth method the request authenticated with, or None."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("oauth ") or "oauth_signature=" in request.META.get("QUERY_STRING", ""):
        return "oauth1" if _oauth1_signed(request) else None
    basic = _basic_credentials(header)
    if basic is not None:
        return "basic" if _same(basic[0], BASIC_USERNAME) and _same(basic[1], BASIC_PASSWORD) else None
    api_key = request.headers.get("X-Api-Key") or request.GET.get("api_key")
    if api_key is not None:
        return "token" if _same(api_key, API_TOKEN) else None
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
        if _same(token, API_TOKEN):
            return "token"
        try:
            signing.loads(token, salt=_SIGNING_SALT, max_age=TOKEN_LIFETIME)
        except signing.BadSignature:
            pass
        else:
            return "oauth2_client_credentials"
        try:
            signing.loads(token, salt=_ACCESS_SALT, max_age=settings.SANDBOX_ACCESS_TOKEN_LIFETIME)
        except signing.BadSignature:
            return None
        return "oauth2_authorization_code"
    return None


def served(view: Callable) -> Callable:
    """The view, or 404 while the Sandbox is off (SANDBOX_ENABLED: by default only with DEBUG on)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not settings.SANDBOX_ENABLED:
            raise Http404("The Sandbox is not served on this deployment.")
        return view(request, *args, **kwargs)

    return wrapper


def _client_of(request: HttpRequest, account: str = "") -> str:
    """Who a request comes from, for the rate limit: its account when it has a valid key, else its address.

    An unknown key counts against the address, so made-up keys buy no extra requests.
    """
    return f"account:{account}" if account else f"address:{request.META.get('REMOTE_ADDR', '')}"


def _rate_limited(request: HttpRequest, account: str = "") -> HttpResponse | None:
    """429 once a client has made SANDBOX_RATE_LIMIT_PER_SECOND requests in this second (a counter in the cache)."""
    limit = settings.SANDBOX_RATE_LIMIT_PER_SECOND
    now = time.time()
    key = f"sandbox:rate:{_client_of(request, account)}:{int(now)}"
    cache.add(key, 0, timeout=5)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=5)
        count = 1
    if count <= limit:
        return None
    response = _error(429, "rate_limited", f"The Sandbox answers at most {limit} requests a second from one client; "
                                           "wait for the time given in Retry-After.")
    response["Retry-After"] = "1"
    return response


def _demonstration(request: HttpRequest) -> HttpResponse | None:
    """Honour `delay_ms` (sleep) and `fail_with` (answer with that status): slow or failing APIs on demand."""
    delay_ms = data.integer(request.GET, "delay_ms", 0, 0, settings.SANDBOX_MAX_DELAY_MS)
    fail_with = data.integer(request.GET, "fail_with", 0, 400, 599) if request.GET.get("fail_with") else 0
    if delay_ms:
        time.sleep(delay_ms / 1000)
    if not fail_with:
        return None
    response = _error(fail_with, "demonstration_failure", f"The Sandbox answered {fail_with} because fail_with asked it to.")
    if fail_with in (429, 503):
        response["Retry-After"] = "1"
    return response


def sandbox_view(methods: tuple[str, ...], demonstrations: bool = True) -> Callable:
    """Public, CSRF-exempt, authenticated JSON endpoint allowing `methods`.

    Bad parameters (data.InvalidInput) are a 400 with a JSON error naming what
    was expected. Data endpoints also take `delay_ms` and `fail_with`.
    """

    def decorator(func: Callable) -> Callable:
        @csrf_exempt
        @login_not_required
        @served
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                request.sandbox_account = account_of(request)
            except UnknownAccount:
                request.sandbox_account = None
            if (limited := _rate_limited(request, request.sandbox_account or "")) is not None:
                return limited
            if request.method not in methods:
                return _error(405, "method_not_allowed", f"Use {' or '.join(methods)}.")
            auth = authenticated_by(request)
            if auth is None:
                return _error(401, "unauthorized", "Missing or invalid credentials.")
            if request.sandbox_account is None:
                return _error(401, "unknown_account", f"The {ACCOUNT_HEADER} key opens no Sandbox account: it is wrong, "
                                                      "or was replaced when the account's key was rotated.")
            try:
                if demonstrations and (failure := _demonstration(request)) is not None:
                    return failure
                return func(request, auth, *args, **kwargs)
            except data.InvalidInput as exc:
                return _error(400, exc.error, exc.description)

        return wrapper

    return decorator


# --- OAuth 2 authorisation code: the consent page and the grants ------------------


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
    return any(_same(redirect_uri, uri) for uri in registered_redirect_uris(request))


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
    if not _same(params["client_id"], APP_CLIENT_ID):
        return render(request, "sandbox/authorize.html", {"fatal": "Unknown client_id: this app is not registered with the Sandbox."}, status=400)
    if not _registered(request, redirect_uri):
        return render(request, "sandbox/authorize.html", {
            "fatal": "The redirect_uri is not registered with the Sandbox: it accepts exactly this dashboard's "
                     "OAuth callback address (/instances/oauth/callback/ on its own host and port), "
                     "without a fragment.",
        }, status=400)
    if params["response_type"] != "code":
        return _redirect_with(redirect_uri, {"error": "unsupported_response_type", "state": params["state"]})
    if params["code_challenge"] and params["code_challenge_method"] != "S256":
        return _redirect_with(redirect_uri, {"error": "invalid_request", "error_description": "Use PKCE with S256.", "state": params["state"]})
    context = {"params": params, "scopes": params["scope"].split()}
    if request.method != "POST":
        return _consent_page(request, context, redirect_uri)
    if request.POST.get("decision") == "deny":
        return _redirect_with(redirect_uri, {"error": "access_denied", "error_description": "The user denied access.", "state": params["state"]})
    if _login_locked(request):
        minutes = max(1, settings.SANDBOX_LOGIN_WINDOW_SECONDS // 60)
        context["login_error"] = (
            f"Too many wrong logins to the Sandbox from your address: logging in is refused for up to {minutes} "
            "minutes after the first of them. Try again later."
        )
        return _consent_page(request, context, redirect_uri, status=429)
    if not (_same(request.POST.get("username", ""), DEMO_ACCOUNT[0]) and _same(request.POST.get("password", ""), DEMO_ACCOUNT[1])):
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
    access = signing.dumps({"client": client_id, "scope": scope, "n": secrets.token_urlsafe(6)}, salt=_ACCESS_SALT)
    refresh = signing.dumps({"client": client_id, "scope": scope, "chain": chain, "jti": jti}, salt=_REFRESH_SALT)
    return JsonResponse({
        "access_token": access, "token_type": "Bearer", "expires_in": lifetime, "refresh_token": refresh, "scope": scope,
    })


def _authorization_code_grant(request: HttpRequest, client_id: str) -> HttpResponse:
    try:
        code = signing.loads(request.POST.get("code", ""), salt=_CODE_SALT, max_age=CODE_LIFETIME)
    except signing.BadSignature:
        return _error(400, "invalid_grant", "The authorisation code is invalid or expired.")
    if not cache.add(f"sandbox:code-used:{code['nonce']}", 1, CODE_LIFETIME * 2):
        return _error(400, "invalid_grant", "The authorisation code was already used.")
    if code["client"] != client_id or code["redirect_uri"] != request.POST.get("redirect_uri", ""):
        return _error(400, "invalid_grant", "The code was issued to another client or redirect_uri.")
    if code["challenge"]:
        verifier = request.POST.get("code_verifier", "")
        expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or not _same(expected, code["challenge"]):
            return _error(400, "invalid_grant", "The PKCE code_verifier does not match the code_challenge.")
    return _issue_tokens(client_id, code["scope"], secrets.token_urlsafe(12))


def _refresh_token_grant(request: HttpRequest, client_id: str) -> HttpResponse:
    try:
        token = signing.loads(request.POST.get("refresh_token", ""), salt=_REFRESH_SALT)
    except signing.BadSignature:
        return _error(400, "invalid_grant", "The refresh token is invalid.")
    if token["client"] != client_id:
        return _error(400, "invalid_grant", "The refresh token was issued to another client.")
    key = f"sandbox:refresh-chain:{token['chain']}"
    current = cache.get(key)
    # A chain unknown to the cache (e.g. after a restart with the in-memory cache) starts from the token shown.
    if current is not None and current != token["jti"]:
        cache.set(key, "revoked", timeout=None)  # a spent refresh token came back: revoke the chain
        return _error(400, "invalid_grant", "The refresh token was already used; the grant is revoked.")
    return _issue_tokens(client_id, token["scope"], token["chain"])


@csrf_exempt
@login_not_required
@served
def oauth_token(request: HttpRequest) -> HttpResponse:
    if (limited := _rate_limited(request)) is not None:
        return limited
    if request.method != "POST":
        return _error(405, "method_not_allowed", "Use POST.")
    grant_type = request.POST.get("grant_type")
    if grant_type in ("authorization_code", "refresh_token"):
        basic = _basic_credentials(request.headers.get("Authorization", ""))
        client_id, client_secret = basic or (request.POST.get("client_id", ""), request.POST.get("client_secret", ""))
        if not (_same(client_id, APP_CLIENT_ID) and _same(client_secret, APP_CLIENT_SECRET)):
            return _error(401, "invalid_client", "Unknown client id or wrong client secret.")
        if grant_type == "authorization_code":
            return _authorization_code_grant(request, client_id)
        return _refresh_token_grant(request, client_id)
    if grant_type != "client_credentials":
        return _error(400, "unsupported_grant_type", "Use client_credentials, authorization_code or refresh_token.")
    basic = _basic_credentials(request.headers.get("Authorization", ""))
    client_id, client_secret = basic or (request.POST.get("client_id", ""), request.POST.get("client_secret", ""))
    if not (_same(client_id, CLIENT_ID) and _same(client_secret, CLIENT_SECRET)):
        return _error(401, "invalid_client", "Unknown client id or wrong client secret.")
    token = signing.dumps({"client": client_id, "scope": request.POST.get("scope", "")}, salt=_SIGNING_SALT)
    return JsonResponse({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME})


@sandbox_view(("GET",), demonstrations=False)
def me(request: HttpRequest, auth: str) -> HttpResponse:
    return JsonResponse({"account": "Sandbox Retail", "authenticated_with": auth})


def _next_link(request: HttpRequest, **changes: object) -> str:
    """This endpoint's URL with the same query and `changes` (a relative URL, resolved against the host).

    Credentials sent in the query (api_key, OAuth 1 parameters) are left out:
    a link is no place for them, and the client authenticates every request itself.
    """
    query = request.GET.copy()
    for name in [n for n in query if n == "api_key" or n.startswith("oauth_")]:
        del query[name]
    for name, value in changes.items():
        query[name] = str(value)
    return f"{request.path}?{query.urlencode()}"


@sandbox_view(("GET", "POST"))
def orders(request: HttpRequest, auth: str) -> HttpResponse:
    if request.method == "POST":
        return _receive_orders(request)
    count = data.integer(request.GET, "count", data.DEFAULT_ORDER_COUNT, 0, data.MAX_COUNT)
    per_page = data.integer(request.GET, "per_page", data.DEFAULT_PAGE_SIZE, 1, data.MAX_PAGE_SIZE)
    page_number = data.integer(request.GET, "page", 1, 1, data.MAX_COUNT)
    anchor = data.anchor_from(request.GET)
    since_text = data.text(request.GET, "updated_since", max_length=100)
    since = None
    if since_text:
        zone, fmt = data.time_zone_from(request.headers), data.date_format_from(request.headers)
        since = data.parse_moment(since_text, fmt, zone)
    page = data.Page(page_number, per_page, data.orders_matching(count, anchor, since))
    as_of = data.iso(anchor)
    return JsonResponse({
        "orders": data.order_page(page, anchor),
        "meta": {"page": page.number, "per_page": page.size, "total": page.total, "as_of": as_of},
        "links": {"next": _next_link(request, page=page.number + 1, per_page=per_page, as_of=as_of) if page.has_next else None},
    })


def _receive_orders(request: HttpRequest) -> HttpResponse:
    """Store one order (a JSON object) or a batch (a JSON list of objects); 201 with what was stored."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > data.MAX_BODY_BYTES or len(request.body) > data.MAX_BODY_BYTES:
        return _error(413, "too_large", f"Send at most {data.MAX_BODY_BYTES // 1024} KB of orders in one request.")
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        return _error(400, "invalid_json", "The request body is not JSON.")
    try:
        rows = data.store_received(data.received_orders_from(body), account=request.sandbox_account)
    except data.StorageFull as exc:
        return _error(exc.status, exc.error, exc.description)
    answers = [{"id": row.pk, "received_at": data.iso(row.received_at)} for row in rows]
    return JsonResponse(answers if isinstance(body, list) else answers[0], status=201, safe=False)


@sandbox_view(("GET",))
def received_orders(request: HttpRequest, auth: str) -> HttpResponse:
    """What POST /orders stored, newest first, paginated like GET /orders."""
    per_page = data.integer(request.GET, "per_page", data.DEFAULT_PAGE_SIZE, 1, data.MAX_PAGE_SIZE)
    page_number = data.integer(request.GET, "page", 1, 1, data.MAX_COUNT)
    received = SandboxReceivedOrder.objects.filter(account=request.sandbox_account)
    page = data.Page(page_number, per_page, received.count())
    rows = received.order_by("-id")[page.start:page.stop] if page.start < page.total else []
    return JsonResponse({
        "orders": [{"id": row.pk, "received_at": data.iso(row.received_at), "body": row.body} for row in rows],
        "meta": {"page": page.number, "per_page": page.size, "total": page.total},
        "links": {"next": _next_link(request, page=page.number + 1) if page.has_next else None},
    })


@sandbox_view(("GET",))
def products(request: HttpRequest, auth: str) -> HttpResponse:
    count = data.integer(request.GET, "count", data.DEFAULT_PRODUCT_COUNT, 0, data.MAX_COUNT)
    limit = data.integer(request.GET, "limit", data.DEFAULT_PAGE_SIZE, 1, data.MAX_PAGE_SIZE)
    offset = data.offset_from(data.text(request.GET, "cursor", max_length=60))
    stop = min(count, offset + limit)
    following = _next_link(request, cursor=data.cursor_for(stop)) if stop < count else None
    return JsonResponse({"products": [data.product(i) for i in range(offset, stop)], "links": {"next": following}})


RECEIVED_PAGE_SIZE = 50


@served
@require_GET
def received_orders_page(request: HttpRequest) -> HttpResponse:
    """The orders the Sandbox received, newest first: where a flow that sends to the Sandbox shows its result."""
    company = company_of(request)  # any logged-in user of a company sees what its flows sent
    account = SandboxAccount.objects.filter(company=company).first()  # none yet: nothing was sent for the company
    received = SandboxReceivedOrder.objects.filter(account=account.account if account else None).order_by("-id")
    page = Paginator(received, RECEIVED_PAGE_SIZE).get_page(request.GET.get("page"))
    for row in page:
        row.summary = data.summary(row.body)
        row.pretty = json.dumps(row.body, indent=2, ensure_ascii=False)[:4000]
    return render(request, "sandbox/received_orders.html", {
        "page": page, "keep": settings.SANDBOX_MAX_ORDERS_PER_ACCOUNT, "sandbox_account": account,
        "sandbox_base_url": settings.SANDBOX_BASE_URL,
    })


@served
@require_POST
def rotate_account_key(request: HttpRequest) -> HttpResponse:
    """Replace the company's Sandbox account key (Administrators): the old key is refused from now on.

    The new key is issued the next time one of the company's instances calls the
    Sandbox; no page ever shows a key.
    """
    company = require(request, "is_company_administrator")
    if request.POST.get("confirm") != "yes":
        messages.error(request, "The Sandbox account key was not rotated: tick the box to confirm it.")
        return redirect("sandbox_received_orders")
    account = SandboxAccount.objects.for_company(company.pk)
    account.rotate()
    audit.record_note(account, "Sandbox account", {"key": audit.SECRET_CHANGED})
    messages.success(request, "The Sandbox account key was rotated: the old key is refused from now on, and your "
                              "instances use a new one from their next request to the Sandbox.")
    return redirect("sandbox_received_orders")


@sandbox_view(("GET",))
def customers(request: HttpRequest, auth: str) -> HttpResponse:
    return JsonResponse({"data": CUSTOMERS, "count": len(CUSTOMERS)})


@sandbox_view(("PUT",))
def stock(request: HttpRequest, auth: str) -> HttpResponse:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return _error(400, "invalid_json", "The request body is not JSON.")
    return JsonResponse({"updated": body if isinstance(body, dict) else {}})


@csrf_exempt
@login_not_required
@served
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    if (limited := _rate_limited(request)) is not None:
        return limited
    if authenticated_by(request) is None:
        return _error(401, "unauthorized", "Missing or invalid credentials.")
    return _error(404, "not_found", "No such Sandbox API resource.")


urlpatterns = [
    path("oauth/token", oauth_token, name="sandbox-oauth-token"),
    path("oauth/authorize", oauth_authorize, name="sandbox-oauth-authorize"),
    path("me", me, name="sandbox-me"),
    path("orders", orders, name="sandbox-orders"),
    path("orders/received", received_orders, name="sandbox-received-orders-api"),
    path("products", products, name="sandbox-products"),
    path("customers", customers, name="sandbox-customers"),
    path("stock", stock, name="sandbox-stock"),
    path("<path:rest>", not_found),
]
