"""Each pytest-xdist worker gets its own rate-limit store file and its own Redis database.

The test databases and the huey SQLite queue are already per process (see the
settings); the rate-limit store file comes from pytest.ini and REDIS_URL from
the environment, so every worker would otherwise share them, and a test that
empties the Redis cache (a FLUSHDB) would empty the queues of the others.

Loaded with `-p tests.worker_env` (pytest.ini): its hook runs after pytest-env
has set the defaults and before pytest-django loads the settings, and the
subprocesses a test starts (run_huey workers) inherit the worker's values.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest


def redis_url_for_worker(url: str, index: int) -> str:
    """The Redis URL of worker `index`: database (REDIS_URL's database + index), so N workers use N databases."""
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0) + index
    return urlunsplit(parts._replace(path=f"/{db}"))


def limits_path_for_worker(path: str, worker: str) -> str:
    """`.test-limits.sqlite3` becomes `.test-limits-gw0.sqlite3` for worker gw0."""
    file = Path(path)
    return str(file.with_name(f"{file.stem}-{worker}{file.suffix}"))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    if os.environ.get("LIMITS_STORE_PATH"):
        os.environ["LIMITS_STORE_PATH"] = limits_path_for_worker(os.environ["LIMITS_STORE_PATH"], worker)
    if os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = redis_url_for_worker(os.environ["REDIS_URL"], int(worker.removeprefix("gw")))
