"""Pointing the rate-limit and pool store at Redis or at the embedded SQLite file, for tests of both."""

from __future__ import annotations

from instances.outbound import limits
from tests.redis_helpers import require_redis


def use_store(kind: str, settings, tmp_path, redis_url: str) -> None:
    """Point the limits at one store: "redis" (skipped where Redis is not reachable, failed in CI) or "sqlite"."""
    if kind == "redis":
        require_redis(redis_url)
        settings.REDIS_URL = redis_url
    else:
        settings.REDIS_URL = ""
        settings.LIMITS_STORE_PATH = tmp_path / "limits.sqlite3"
    limits._store.cache_clear()


def close_store() -> None:
    limits.store().close()
    limits._store.cache_clear()
