"""The Sandbox API: a small third-party API served by the dashboard itself (its OAuth server: oauth_server).

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

Data for process flows (records generated lazily, see sandbox.data):

- ``GET /orders``: page-number pagination (``page``, ``per_page`` ≤ 100,
  ``count`` ≤ 100,000 orders, ``as_of`` pins the list), newest ``updated_at``
  first; ``updated_since`` is read in the zone of the ``X-Sandbox-Time-Zone``
  header with the strftime format of ``X-Sandbox-Date-Format``, so a flow that
  formats dates wrongly gets visibly wrong results.
- ``GET /products``: next-link pagination (``limit``, ``count``, a cursor in ``links.next``).
- ``POST /orders`` stores one order (a JSON object) or a batch (a list of them),
  honouring an ``Idempotency-Key`` header as Stripe does (sandbox.idempotency);
  ``GET /orders/received`` lists what was stored, and the dashboard page
  ``/sandbox/received-orders/`` (sandbox.views) shows it, with the count of
  references received more than once.
- Every data endpoint takes ``delay_ms`` (0 to SANDBOX_MAX_DELAY_MS: answers that
  much later) and ``fail_with`` (400-599: answers with that status and a JSON
  error), for demonstrations and tests.

Accounts: what ``POST /orders`` stores belongs to the account whose key comes in
the ``X-Sandbox-Account`` header (see SandboxAccount: an Administrator issues the
key on the received-orders page, and Sandbox instances send it as their "Sandbox
account key" variable); without one (or with it empty), to the anonymous account
shared by every caller. An unknown or rotated key is refused.

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
import hmac
import json
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core import signing
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature as oauth1_signature

from sandbox import data, idempotency
from sandbox.models import SandboxAccount, SandboxReceivedOrder

BASIC_USERNAME = "sandbox"
BASIC_PASSWORD = "sandbox-secret"
API_TOKEN = "sandbox-token"
CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-client-secret"
TOKEN_LIFETIME = 3600
CLIENT_CREDENTIALS_SALT = "sandbox-oauth-token"
ACCESS_SALT = "sandbox-oauth-access"
OAUTH1_CONSUMER_KEY = "sandbox-consumer"
OAUTH1_CONSUMER_SECRET = "sandbox-consumer-secret"
OAUTH1_TOKEN = "sandbox-token-id"
OAUTH1_TOKEN_SECRET = "sandbox-token-secret"
OAUTH1_MAX_CLOCK_SKEW = 300

CUSTOMERS = [{"id": 1, "name": "Ada Lovelace"}, {"id": 2, "name": "Grace Hopper"}]


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


class UnknownAccount(Exception):
    """An X-Sandbox-Account key that opens no account (wrong, or replaced by a rotation)."""


def account_of(request: HttpRequest) -> str:
    """The account a Sandbox request is made for: "" (anonymous) without an account key; UnknownAccount for a bad one."""
    key = request.headers.get(ACCOUNT_HEADER)
    if not key:  # an instance whose "Sandbox account key" is left blank sends it empty
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


def error(status: int, error: str, description: str) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Basic realm="sandbox", Bearer'
    return response


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def basic_credentials(header: str) -> tuple[str, str] | None:
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
    if not (same(oauth.get("oauth_consumer_key", ""), OAUTH1_CONSUMER_KEY)
            and same(oauth.get("oauth_token", ""), OAUTH1_TOKEN)):
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
    basic = basic_credentials(header)
    if basic is not None:
        return "basic" if same(basic[0], BASIC_USERNAME) and same(basic[1], BASIC_PASSWORD) else None
    api_key = request.headers.get("X-Api-Key") or request.GET.get("api_key")
    if api_key is not None:
        return "token" if same(api_key, API_TOKEN) else None
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
        if same(token, API_TOKEN):
            return "token"
        try:
            signing.loads(token, salt=CLIENT_CREDENTIALS_SALT, max_age=TOKEN_LIFETIME)
        except signing.BadSignature:
            pass
        else:
            return "oauth2_client_credentials"
        try:
            signing.loads(token, salt=ACCESS_SALT, max_age=settings.SANDBOX_ACCESS_TOKEN_LIFETIME)
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


def rate_limited(request: HttpRequest, account: str = "") -> HttpResponse | None:
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
    response = error(429, "rate_limited", f"The Sandbox answers at most {limit} requests a second from one client; "
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
    response = error(fail_with, "demonstration_failure", f"The Sandbox answered {fail_with} because fail_with asked it to.")
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
            if (limited := rate_limited(request, request.sandbox_account or "")) is not None:
                return limited
            if request.method not in methods:
                return error(405, "method_not_allowed", f"Use {' or '.join(methods)}.")
            auth = authenticated_by(request)
            if auth is None:
                return error(401, "unauthorized", "Missing or invalid credentials.")
            if request.sandbox_account is None:
                return error(401, "unknown_account", f"The {ACCOUNT_HEADER} key opens no Sandbox account: it is wrong, "
                                                      "or was replaced when the account's key was rotated.")
            try:
                if demonstrations and (failure := _demonstration(request)) is not None:
                    return failure
                return func(request, auth, *args, **kwargs)
            except data.InvalidInput as exc:
                return error(400, exc.error, exc.description)

        return wrapper

    return decorator



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
    """Store one order (a JSON object) or a batch (a JSON list of objects); 201 with what was stored.

    With an Idempotency-Key header, a repeat of the request gets the first
    answer instead of storing the orders again (see sandbox.idempotency).
    """
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > data.MAX_BODY_BYTES or len(request.body) > data.MAX_BODY_BYTES:
        return error(413, "too_large", f"Send at most {data.MAX_BODY_BYTES // 1024} KB of orders in one request.")
    try:
        key = idempotency.key_of(request)
    except idempotency.KeyRefused as exc:
        return error(exc.status, exc.error, exc.description)
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        return error(400, "invalid_json", "The request body is not JSON.")
    orders = data.received_orders_from(body)
    account = request.sandbox_account

    def store() -> HttpResponse:
        rows = data.store_received(orders, account=account, idempotency_key=key)
        answers = [{"id": row.pk, "received_at": data.iso(row.received_at)} for row in rows]
        return JsonResponse(answers if isinstance(body, list) else answers[0], status=201, safe=False)

    try:
        if not key:
            return store()
        body_hash = idempotency.request_hash(body)
        earlier = idempotency.earlier_answer(account, key, body_hash)
        return earlier if earlier is not None else idempotency.answer_once(account, key, body_hash, store)
    except data.StorageFull as exc:
        return error(exc.status, exc.error, exc.description)
    except idempotency.KeyRefused as exc:
        return error(exc.status, exc.error, exc.description)


@sandbox_view(("GET",))
def received_orders(request: HttpRequest, auth: str) -> HttpResponse:
    """What POST /orders stored, newest first, paginated like GET /orders.

    `meta` also counts the account's orders (`received`) and the references
    received more than once (`duplicate_references`), and each order names its
    `reference` and the `idempotency_key` it was sent with: what a check that
    every order arrived once reads.
    """
    per_page = data.integer(request.GET, "per_page", data.DEFAULT_PAGE_SIZE, 1, data.MAX_PAGE_SIZE)
    page_number = data.integer(request.GET, "page", 1, 1, data.MAX_COUNT)
    received = SandboxReceivedOrder.objects.filter(account=request.sandbox_account)
    counts = data.received_counts(received)
    page = data.Page(page_number, per_page, counts["received"])
    rows = received.order_by("-id")[page.start:page.stop] if page.start < page.total else []
    return JsonResponse({
        "orders": [{"id": row.pk, "received_at": data.iso(row.received_at), "reference": row.reference,
                    "idempotency_key": row.idempotency_key, "body": row.body} for row in rows],
        "meta": {"page": page.number, "per_page": page.size, "total": page.total, "received": counts["received"],
                 "duplicate_references": counts["duplicate_references"]},
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


@sandbox_view(("GET",))
def customers(request: HttpRequest, auth: str) -> HttpResponse:
    return JsonResponse({"data": CUSTOMERS, "count": len(CUSTOMERS)})


@sandbox_view(("PUT",))
def stock(request: HttpRequest, auth: str) -> HttpResponse:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return error(400, "invalid_json", "The request body is not JSON.")
    return JsonResponse({"updated": body if isinstance(body, dict) else {}})


@csrf_exempt
@login_not_required
@served
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    if (limited := rate_limited(request)) is not None:
        return limited
    if authenticated_by(request) is None:
        return error(401, "unauthorized", "Missing or invalid credentials.")
    return error(404, "not_found", "No such Sandbox API resource.")
