"""Response headers for pages behind the login."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.utils.cache import add_never_cache_headers


class PrivatePagesMiddleware:
    """Pages shown to a logged-in user are never stored by a browser or proxy cache.

    They carry company data and recorded credential checks; after logging out,
    the back button or a shared machine's cache must not bring them back.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and "Cache-Control" not in response:
            add_never_cache_headers(response)  # no-cache, no-store, must-revalidate, private
        return response


class RequestSizeLimitMiddleware:
    """Refuse a request body larger than MAX_REQUEST_BYTES before anything reads it.

    Django spools file uploads of any size to disk before a form can look at
    them; the largest thing the dashboard accepts is an 8 MB OpenAPI document.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return HttpResponse("The request's Content-Length is not a number.", status=400, content_type="text/plain")
        limit = settings.MAX_REQUEST_BYTES
        if length > limit:
            return HttpResponse(
                f"The request is larger than {filesizeformat(limit)}, more than any upload the dashboard accepts.",
                status=413, content_type="text/plain; charset=utf-8",
            )
        return self.get_response(request)


class HealthCheckMiddleware:
    """GET /healthz: 200 "ok" when the database and the cache answer, 503 naming the one that does not.

    First in the chain, so a load balancer's probe by IP address over plain HTTP
    is answered, not refused by ALLOWED_HOSTS or redirected to HTTPS. It says
    nothing but "ok" or which part is unavailable.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path != "/healthz" or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        down = [name for name, check in (("database", _database_answers), ("cache", _cache_answers)) if not check()]
        response = HttpResponse(
            f"unavailable: {', '.join(down)}" if down else "ok", status=503 if down else 200, content_type="text/plain"
        )
        add_never_cache_headers(response)
        return response


def _database_answers() -> bool:
    from django.db import DatabaseError, connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


def _cache_answers() -> bool:
    from django.core.cache import cache

    try:
        cache.set("healthz", "ok", 10)
        return cache.get("healthz") == "ok"
    except Exception:  # the Redis client's errors are not Django's: any failure means "unavailable"
        return False
