"""`make serve-prod` (python -m patchworks_site.serve_prod): refusals, the commands it runs, and stopping them all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings
from django.db import connection

from patchworks_site import serve_prod as launcher
from tests.test_engine_workers import REDIS_URL, database_url, on_committed_rows, wait_until

SECRET_KEY = "s" * 40 + "0123456789abcdef"
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": SECRET_KEY,
    "CREDENTIAL_KEYS": "prod-1:a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",
    "ALLOWED_HOSTS": "patchworks.example.com",
    "DATABASE_URL": "postgres://patchworks:db-password-1@db.internal:5432/patchworks",
    "REDIS_URL": "redis://:redis-password-1@redis.internal:6379/0",
    "EMAIL_HOST": "smtp.internal",
    "DEFAULT_FROM_EMAIL": "Patchworks <alerts@patchworks.example.com>",
}
PREFIX = "serve-prod: refusing to start: "
# What the test process may carry that a production environment never does (the browser tests' fixture sets
# DJANGO_ALLOW_ASYNC_UNSAFE, which `check --deploy` rightly refuses).
TEST_ONLY = {"DJANGO_ALLOW_ASYNC_UNSAFE"}


def serve_prod(*args: str, env: dict[str, str | None] | None = None, **popen) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "DATABASE_URL", "REDIS_URL", "CREDENTIAL_KEYS",
                                                                 *TEST_ONLY}}
    for name, value in {**PRODUCTION, **(env or {})}.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return subprocess.run([sys.executable, "-m", "patchworks_site.serve_prod", *args], cwd=settings.BASE_DIR, env=environ,
                          capture_output=True, text=True, timeout=60, **popen)


def refusals(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 2 and result.stdout == "", result
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith(PREFIX) for line in lines), result.stderr
    return [line.removeprefix(PREFIX) for line in lines]


@pytest.mark.parametrize("database_url", [None, "", "sqlite:///var/lib/patchworks/db.sqlite3"])
def test_serve_prod_refuses_to_start_on_sqlite_and_says_to_use_postgresql(database_url):
    (reason,) = refusals(serve_prod("--dry-run", env={"DATABASE_URL": database_url}))
    assert "production needs PostgreSQL, shared by every process and host" in reason
    assert reason.startswith("DATABASE_URL is not set, so the database would be a SQLite file" if not database_url
                             else "DATABASE_URL is a SQLite database")


def test_serve_prod_refuses_to_start_without_redis_and_says_what_redis_is_for():
    assert refusals(serve_prod("--dry-run", env={"REDIS_URL": None})) == [
        "REDIS_URL is not set: production needs Redis for the task queue, the rate limits and connection pools, "
        "and the cache (REDIS_URL=redis://host:6379/0)."
    ]


def test_serve_prod_lists_every_problem_of_the_environment_at_once():
    result = serve_prod("--dry-run", env={"DEBUG": "1", "DATABASE_URL": "mysql://db/patchworks", "ALLOWED_HOSTS": " ",
                                          "WORKERS": "two", "WORKER_THREADS": "0"})
    assert refusals(result) == [
        "DEBUG is on: production runs with DEBUG unset or 0.",
        "DATABASE_URL must be a PostgreSQL URL (postgres://...), not mysql.",
        "ALLOWED_HOSTS is not set: name the host names the dashboard is served on, comma-separated.",
        "WORKERS must be a whole number of at least 0, not 'two'.",
        "WORKER_THREADS must be a whole number of at least 1, not '0'.",
    ]


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"SECRET_KEY": None}, "SECRET_KEY must be set when DEBUG is off."),
        ({"SECRET_KEY": "short"}, "SECRET_KEY must be at least 50 characters long with at least 5 different characters"),
        ({"CREDENTIAL_KEYS": None}, "CREDENTIAL_KEYS must be set when DEBUG is off."),
    ],
)
def test_serve_prod_refuses_what_the_settings_refuse_in_one_line(env, reason):
    (line,) = refusals(serve_prod("--dry-run", env=env))
    assert line.startswith(reason)


def test_a_dry_run_prints_the_release_steps_gunicorn_and_each_worker_from_the_environment():
    result = serve_prod("--dry-run", env={"WORKERS": "3", "WORKER_THREADS": "6", "WEB_CONCURRENCY": "5",
                                          "HOST": "0.0.0.0", "PORT": "8080"})
    assert result.returncode == 0, result.stderr
    steps = [line.split(": ", 1) for line in result.stdout.splitlines()]
    manage = f"{sys.executable} {settings.BASE_DIR / 'manage.py'}"
    assert steps == [
        ["check", f"{manage} check --deploy --fail-level ERROR"],
        ["migrate", f"{manage} migrate --no-input"],
        ["collectstatic", f"{manage} collectstatic --no-input --verbosity 0"],
        ["web", f"{sys.executable} -m gunicorn patchworks_site.wsgi:application --chdir {settings.BASE_DIR} "
                "--bind 0.0.0.0:8080 --workers 5 --access-logfile - --no-control-socket"],
        # Every worker's scheduler is on: flows.periodic runs each periodic job once per period.
        *[[f"worker {n}", f"{manage} run_huey --workers 6 --worker-type thread"] for n in (1, 2, 3)],
    ]
    assert "password" not in result.stdout + result.stderr


def test_hosts_that_only_run_workers_or_only_serve_leave_out_the_rest():
    workers_only = serve_prod("--dry-run", "--no-migrate", env={"WEB_CONCURRENCY": "0", "WORKERS": "4"})
    assert [line.split(":")[0] for line in workers_only.stdout.splitlines()] == ["check", *[f"worker {n}" for n in range(1, 5)]]
    web_only = serve_prod("--dry-run", env={"WORKERS": "0"})
    assert [line.split(":")[0] for line in web_only.stdout.splitlines()] == ["check", "migrate", "collectstatic", "web"]
    assert refusals(serve_prod("--dry-run", env={"WORKERS": "0", "WEB_CONCURRENCY": "0"})) == [
        "WORKERS and WEB_CONCURRENCY are both 0: nothing to run."
    ]


def test_serve_prod_refuses_to_start_when_redis_does_not_answer_without_showing_its_password():
    (reason,) = refusals(serve_prod(env={"REDIS_URL": "redis://:redis-password-1@127.0.0.1:1/0"}))
    assert reason.startswith("Redis at redis://:***@127.0.0.1:1/0 does not answer: ")


def test_a_malformed_credential_key_fails_the_system_check_serve_prod_runs_first(tmp_path):
    result = serve_prod(env={"CREDENTIAL_KEYS": "prod-1:not-base64!", "REDIS_URL": REDIS_URL})
    if "does not answer" in result.stderr:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    assert "(instances.E001) CREDENTIAL_KEYS: key 'prod-1' is not base64" in result.stderr
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == PREFIX + "check failed (its output is above); nothing was started."


@pytest.mark.parametrize("backend, refused", [("django.core.mail.backends.dummy.EmailBackend", False),
                                               ("django.core.mail.backends.console.EmailBackend", True)])
def test_the_deploy_check_serve_prod_runs_first_accepts_sending_no_email_but_not_a_console(backend, refused):
    environ = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "CREDENTIAL_KEYS", *TEST_ONLY}}
    environ |= {**PRODUCTION, "EMAIL_BACKEND": backend}
    del environ["EMAIL_HOST"]
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
                            cwd=settings.BASE_DIR, env=environ, capture_output=True, text=True, timeout=60)
    assert (result.returncode != 0) == refused, result.stderr
    assert ("(mail.E001) Your MAILERS setting uses a development-only email backend" in result.stderr) == refused


def test_the_hosts_processes_get_one_metrics_directory_emptied_at_each_start_or_made_for_them(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # TMPDIR
    environ: dict[str, str] = {}
    made = launcher.metrics_directory(environ)
    assert made.is_dir() and made.parent == tmp_path and environ["PROMETHEUS_MULTIPROC_DIR"] == str(made)

    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_4242.db").write_bytes(b"the last start's counts")
    (given / "README").write_text("not prometheus_client's")
    assert launcher.metrics_directory({"PROMETHEUS_MULTIPROC_DIR": str(given)}) is None
    assert [p.name for p in given.iterdir()] == ["README"]


# --- Running it ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@on_committed_rows
def test_serve_prod_serves_the_dashboard_with_its_workers_and_sigterm_stops_them_all(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("serve-prod runs on PostgreSQL only (run the suite with DATABASE_URL=postgres://...)")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    port = free_port()
    env = {"DATABASE_URL": database_url(), "REDIS_URL": REDIS_URL, "PORT": str(port), "WORKERS": "2",
           "WORKER_THREADS": "2", "WEB_CONCURRENCY": "2", "STATIC_ROOT": str(tmp_path / "static"),
           "HUEY_NAME": f"pw-test-{uuid.uuid4().hex}", "LIMITS_KEY_PREFIX": f"test-{uuid.uuid4().hex}",
           "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "serve-prod.log", "w")
    environ = {**{k: v for k, v in os.environ.items() if k not in {"DEBUG", "CREDENTIAL_KEYS", *TEST_ONLY}},
               **PRODUCTION, **env}
    launcher = subprocess.Popen([sys.executable, "-m", "patchworks_site.serve_prod", "--no-migrate"], cwd=settings.BASE_DIR,
                                env=environ, stdout=log, stderr=subprocess.STDOUT)
    output = (tmp_path / "serve-prod.log").read_text
    try:
        def health() -> requests.Response | None:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or a busy machine's slow first answer
                assert launcher.poll() is None, output()
                return None

        probe = wait_until(health, timeout=90, what="the dashboard to answer")
        assert (probe.status_code, probe.text) == (200, "ok")
        page = requests.get(f"http://127.0.0.1:{port}/login/", timeout=60,
                            headers={"Host": "patchworks.example.com", "X-Forwarded-Proto": "https"})
        assert page.status_code == 200 and "Log in to Patchworks" in page.text
        children = {name: int(pid) for name, pid in re.findall(r"started (web|worker \d) \(pid (\d+)\)", output())}
        assert sorted(children) == ["web", "worker 1", "worker 2"] and all(map(alive, children.values()))
        wait_until(lambda: output().count("Huey consumer started") == 2, what=f"both workers to start; output:\n{output()}")

        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 0, output()
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert "SIGTERM received: stopping" in output()
    assert not [name for name, pid in children.items() if alive(pid)], output()


# --- Supervising (stand-in children that write down the signal that stopped them) ---------------

STAND_IN = """
import os, pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    # Written beside and renamed, so whoever sees the file sees the whole signal name.
    out.with_suffix(".part").write_text(signal.Signals(signum).name)
    os.replace(out.with_suffix(".part"), out)
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
out.with_suffix(".ready").touch()
time.sleep(int(sys.argv[2])) if len(sys.argv) > 2 else signal.pause()
sys.exit(3)
"""


def supervising(tmp_path: Path, worker_lives: str = "") -> subprocess.Popen:
    """A launcher supervising a stand-in web and a stand-in worker; returns once both are ready."""
    web, worker = ([sys.executable, "-c", STAND_IN, str(tmp_path / name), *extra] for name, extra in
                   (("web", []), ("worker", [worker_lives] if worker_lives else [])))
    children = [("web", web), ("worker 1", worker)]
    code = f"import sys; from patchworks_site.serve_prod import supervise; sys.exit(supervise({children!r}, 20))"
    launcher = subprocess.Popen([sys.executable, "-c", code], cwd=settings.BASE_DIR, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: (tmp_path / "web.ready").exists() and (tmp_path / "worker.ready").exists(), what="the stand-ins to start")
    return launcher


def test_ctrl_c_stops_the_workers_gracefully_with_sigint_and_gunicorn_with_sigterm(tmp_path):
    launcher = supervising(tmp_path)
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=30) == 0
    assert ((tmp_path / "web").read_text(), (tmp_path / "worker").read_text()) == ("SIGTERM", "SIGINT")
    assert "serve-prod: SIGINT received: stopping (up to 20 s)." in launcher.stderr.read()


def test_a_child_that_exits_stops_the_others_and_the_launcher_exits_non_zero(tmp_path):
    launcher = supervising(tmp_path, worker_lives="1")
    assert launcher.wait(timeout=30) == 1
    assert (tmp_path / "web").read_text() == "SIGTERM"
    assert "serve-prod: worker 1 exited with code 3: stopping the others." in launcher.stderr.read()


def test_children_do_not_outlive_a_killed_launcher(tmp_path):
    launcher = supervising(tmp_path)
    launcher.kill()
    launcher.wait(timeout=30)
    wait_until(lambda: (tmp_path / "web").exists() and (tmp_path / "worker").exists(), what="the stand-ins to be stopped")
    assert ((tmp_path / "web").read_text(), (tmp_path / "worker").read_text()) == ("SIGTERM", "SIGTERM")
