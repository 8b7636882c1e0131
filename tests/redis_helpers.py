"""Tests that need Redis: skipped where it is not reachable, failed in CI (where it must be)."""

import os

import pytest
import redis


def require_redis(url: str, timeout: float = 1) -> str:
    """`url`, once Redis answers a PING there; else skip the test (fail it under CI)."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=timeout).ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {url}")
        pytest.skip(f"Redis is not reachable at {url}")
    return url
