"""Health checks for load balancers (/healthz) and monitoring (manage.py check_workers)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError
from django.test import Client
from django.utils import timezone

from flows.models import PeriodicJobRun


def test_healthz_says_ok_when_the_database_and_cache_answer(db, settings):
    settings.ALLOWED_HOSTS = ["patchworks.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    # A load balancer's probe: by IP address, over plain HTTP, not logged in.
    response = Client(HTTP_HOST="10.0.0.7").get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok")
    assert "no-store" in response["Cache-Control"]


def test_healthz_answers_503_naming_the_part_that_is_down(db, monkeypatch):
    def refuse(*args, **kwargs):
        raise DatabaseError("connection refused by db.internal:5432 for user patchworks")

    with monkeypatch.context() as patched:
        patched.setattr("django.db.backends.utils.CursorWrapper.execute", refuse)
        response = Client().get("/healthz")
    assert (response.status_code, response.content) == (503, b"unavailable: database")


def test_healthz_answers_503_when_redis_does_not_answer(db, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}}
    response = Client().get("/healthz")
    assert (response.status_code, response.content) == (503, b"unavailable: cache")


def test_other_methods_and_paths_are_left_to_the_dashboard(db):
    assert Client().post("/healthz").content != b"ok"
    assert Client().get("/healthz/extra").status_code == 404


def test_check_workers_says_when_the_minute_tick_last_ran(db):
    with pytest.raises(CommandError, match="No task worker has run the minute tick yet."):
        call_command("check_workers")
    now = timezone.now()
    PeriodicJobRun.objects.create(job="tick", period_start=now.replace(second=0), started_at=now - timedelta(seconds=30),
                                  worker="worker-2:4242")
    out = StringIO()
    call_command("check_workers", stdout=out)
    assert out.getvalue() == "The minute tick ran 30 s ago on worker-2:4242.\n"
    with pytest.raises(CommandError, match=r"No task worker has run the minute tick for 30 s \(last on worker-2:4242\)."):
        call_command("check_workers", "--max-age", "20")
