"""Two hosts that share only PostgreSQL and Redis: `python -m benchmarks.scale_out --quick`, checked from its report.

The benchmark starts two hosts with serve_prod, each from its own copy of the
release in a directory of its own with an environment of its own; queues 40
runs through their gunicorns; kills one host's task workers mid-run; and checks
at its stub API and in the run rows that the other host finished every run,
each order stored once, the rate limit and the connection pool held across
both hosts, and that a user logged in on one host is logged in on the other.
It needs what production needs, so it runs in the PostgreSQL and Redis pass of
the suite and is skipped in the SQLite one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from tests.redis_helpers import require_redis
from tests.test_engine_workers import database_url

pytestmark = pytest.mark.slow

# The benchmark's own limits (its defaults): what the report is held to.
RATE_LIMIT, POOL, FLOWS = 20, 3, 40
ORDERS = FLOWS * 2 * 10  # --quick: 2 pages of 10 orders per flow
HOST_1, HOST_2 = "scale-out-host-1", "scale-out-host-2"


def bench_database_url() -> str:
    """A database of its own beside this process's test database (the benchmark creates and drops it)."""
    return f"{database_url()}_scale_out_bench"


def redis_url_or_skip() -> str:
    if connection.vendor != "postgresql":
        pytest.skip("two hosts share one database: this runs in the PostgreSQL and Redis pass of the suite "
                    "(DATABASE_URL=postgres://... REDIS_URL=redis://...), not on SQLite")
    url = os.environ.get("REDIS_URL", "")
    if not url:
        pytest.skip("two hosts share the task queue, rate limits, pools and sessions in Redis: REDIS_URL is not set")
    return require_redis(url, timeout=2)


def run_benchmark(redis_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST") and k not in {"DEBUG", "DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    env |= {"BENCH_DATABASE_URL": bench_database_url(), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "benchmarks.scale_out", "--quick", "--redis-url", redis_url, "--timeout", "240"]
    process = subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # its own clean-up stops both hosts and drops its database
        try:
            output, _ = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()  # the hosts' launchers die with it (PR_SET_PDEATHSIG), and their children with them
            output, _ = process.communicate()
        pytest.fail(f"benchmarks.scale_out --quick did not end in 9 minutes:\n{output[-10000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output)


def figure(output: str, pattern: str) -> int:
    found = re.search(pattern, output, re.MULTILINE)
    assert found, f"{pattern!r} is not in the report:\n{output[-6000:]}"
    return int(found.group(1))


def test_two_hosts_sharing_only_postgresql_and_redis_finish_each_others_runs_once_within_the_limits():
    result = run_benchmark(redis_url_or_skip())
    output = result.stdout
    assert result.returncode == 0, output[-10000:]
    assert "All checks passed." in output and "FAIL" not in output

    assert f"PASS  every run succeeded: {FLOWS} of {FLOWS}" in output
    assert f"PASS  every order stored exactly once: {ORDERS} orders: duplicates 0, missing 0, unknown 0" in output
    assert "PASS  no run executed twice" in output
    assert figure(output, r"PASS  rate limit held across both hosts: busiest 1 s window at the stub: (\d+) requests")\
        <= RATE_LIMIT
    assert figure(output, r"PASS  connection pool held across both hosts: most requests in flight at the stub: (\d+)")\
        <= POOL
    # Host 1's workers were killed holding runs; host 2 resumed each of them and ended everything after the kill.
    held = figure(output, rf"PASS  {HOST_1}'s workers were killed mid-run, and {HOST_2} resumed every run they held: "
                          r"runs held: (\d+)")
    assert held >= 1 and f"resumed on {HOST_2} from their checkpoints: {held}" in output
    assert f"PASS  {HOST_2} ended every run that ended after the kill" in output
    assert figure(output, rf"PASS  both hosts ran runs from the one queue: {HOST_1}: (\d+)") >= 1
    assert (f"PASS  logged in on {HOST_1}, logged in on {HOST_2}: {HOST_2}'s process flows page with {HOST_1}'s "
            "session cookie: the logged-in page; without it: the login page") in output
    assert "PASS  no host kept a database, queue or limits file of its own" in output
    assert f"PASS  a scrape of {HOST_2}'s gunicorn counts the runs its task workers ended" in output
