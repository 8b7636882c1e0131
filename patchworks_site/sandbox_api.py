"""The Sandbox API: a small third-party API served by the dashboard itself.

It lets the demo and the tests exercise every authentication type over real
HTTP. It accepts exactly:

- Basic: username ``sandbox`` / password ``sandbox-secret``
- Token: ``X-Api-Key: sandbox-token`` (or ``Authorization: Bearer sandbox-token``)
- OAuth 2 client credentials: client id ``sandbox-client`` / secret
  ``sandbox-client-secret`` at ``POST /sandbox/api/oauth/token`` (HTTP basic or
  form fields), giving a bearer token valid for one hour.

Anything else gets 401 with a JSON error body.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import Callable

from django.contrib.auth.decorators import login_not_required
from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

BASIC_USERNAME = "sandbox"
BASIC_PASSWORD = "sandbox-secret"
API_TOKEN = "sandbox-token"
CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-client-secret"
TOKEN_LIFETIME = 3600
_SIGNING_SALT = "sandbox-oauth-token"

ORDERS = [
    {"id": 1001 + i, "customer": name, "total": total, "currency": "GBP", "status": status}
    for i, (name, total, status) in enumerate(
        [
            ("Ada Lovelace", "120.00", "paid"),
            ("Grace Hopper", "54.50", "shipped"),
            ("Alan Turing", "9.99", "pending"),
        ]
    )
]
PRODUCTS = [
    {"sku": "PW-TEE-001", "name": "Patchworks T-shirt", "price": "18.00", "stock": 42},
    {"sku": "PW-MUG-002", "name": "Patchworks mug", "price": "9.50", "stock": 7},
]
CUSTOMERS = [{"id": 1, "name": "Ada Lovelace"}, {"id": 2, "name": "Grace Hopper"}]


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


def authenticated_by(request: HttpRequest) -> str | None:
    """Which auth method the request authenticated with, or None."""
    header = request.headers.get("Authorization", "")
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
            return None
        return "oauth2_client_credentials"
    return None


def sandbox_view(methods: tuple[str, ...]) -> Callable:
    """Public, CSRF-exempt, authenticated JSON endpoint allowing `methods`."""

    def decorator(func: Callable) -> Callable:
        @csrf_exempt
        @login_not_required
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                return _error(405, "method_not_allowed", f"Use {' or '.join(methods)}.")
            auth = authenticated_by(request)
            if auth is None:
                return _error(401, "unauthorized", "Missing or invalid credentials.")
            return func(request, auth, *args, **kwargs)

        return wrapper

    return decorator


@csrf_exempt
@login_not_required
def oauth_token(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _error(405, "method_not_allowed", "Use POST.")
    if request.POST.get("grant_type") != "client_credentials":
        return _error(400, "unsupported_grant_type", "Only client_credentials is supported.")
    basic = _basic_credentials(request.headers.get("Authorization", ""))
    client_id, client_secret = basic or (request.POST.get("client_id", ""), request.POST.get("client_secret", ""))
    if not (_same(client_id, CLIENT_ID) and _same(client_secret, CLIENT_SECRET)):
        return _error(401, "invalid_client", "Unknown client id or wrong client secret.")
    token = signing.dumps({"client": client_id, "scope": request.POST.get("scope", "")}, salt=_SIGNING_SALT)
    return JsonResponse({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME})


@sandbox_view(("GET",))
def me(request: HttpRequest, auth: str) -> HttpResponse:
    return JsonResponse({"account": "Sandbox Retail", "authenticated_with": auth})


@sandbox_view(("GET", "POST"))
def orders(request: HttpRequest, auth: str) -> HttpResponse:
    if request.method == "POST":
        try:
            order = json.loads(request.body or b"{}")
        except ValueError:
            return _error(400, "invalid_json", "The request body is not JSON.")
        if not isinstance(order, dict):
            return _error(400, "invalid_order", "Send one order as a JSON object.")
        return JsonResponse({"id": 2001, "status": "pending", **order}, status=201)
    return JsonResponse({"data": ORDERS, "count": len(ORDERS)})


@sandbox_view(("GET",))
def products(request: HttpRequest, auth: str) -> HttpResponse:
    return JsonResponse({"data": PRODUCTS, "count": len(PRODUCTS)})


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
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    if authenticated_by(request) is None:
        return _error(401, "unauthorized", "Missing or invalid credentials.")
    return _error(404, "not_found", "No such Sandbox API resource.")


urlpatterns = [
    path("oauth/token", oauth_token, name="sandbox-oauth-token"),
    path("me", me, name="sandbox-me"),
    path("orders", orders, name="sandbox-orders"),
    path("products", products, name="sandbox-products"),
    path("customers", customers, name="sandbox-customers"),
    path("stock", stock, name="sandbox-stock"),
    path("<path:rest>", not_found),
]
