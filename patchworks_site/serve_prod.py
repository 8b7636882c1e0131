"""Production launcher: `python -m patchworks_site.serve_prod` (what `make serve-prod` runs).

Checks the environment, prepares the release (system checks with --deploy,
migrate, collectstatic), then starts gunicorn and WORKERS task workers
(`manage.py run_huey`) and watches them; they write their metrics to one
directory of the host (PROMETHEUS_MULTIPROC_DIR, emptied at each start, or one
the launcher makes), so a scrape of gunicorn reports them all. SIGTERM or SIGINT (Ctrl-C) stops them
all: gunicorn and the workers finish what they are doing, for up to
STOP_TIMEOUT seconds. A child that exits on its own stops the others, and the
launcher exits non-zero so that systemd or the container runtime restarts it.

It refuses to start on SQLite or without Redis: several processes (and hosts)
share one database, one task queue, one rate limit and pool store and one
cache, and each refusal is one line saying what to set.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
TRUE = {"1", "true", "yes", "on"}
# Each environment setting the launcher reads itself, with its default (docs/deploy.md lists them all).
DEFAULTS = {"WORKERS": "2", "WORKER_THREADS": "4", "WEB_CONCURRENCY": "2", "HOST": "127.0.0.1", "PORT": "8000",
            "STOP_TIMEOUT": "30"}


class Refused(Exception):
    """The environment cannot run production; the message says why, on one line."""


@dataclass(frozen=True)
class Plan:
    prepare: list[tuple[str, list[str]]]
    web: list[str] | None
    workers: list[list[str]]
    stop_timeout: float


def problems(environ: Mapping[str, str]) -> list[str]:
    """What in the environment rules out production, one line each (empty: nothing)."""
    import dj_database_url

    found = []
    if environ.get("DEBUG", "").strip().lower() in TRUE:
        found.append("DEBUG is on: production runs with DEBUG unset or 0.")
    database_url = environ.get("DATABASE_URL", "").strip()
    if not database_url:
        found.append("DATABASE_URL is not set, so the database would be a SQLite file: production needs PostgreSQL, "
                     "shared by every process and host (DATABASE_URL=postgres://user:password@host:5432/patchworks).")
    else:
        try:
            engine = dj_database_url.parse(database_url)["ENGINE"]
        except (ValueError, KeyError):
            engine = ""
        if engine.endswith("sqlite3"):
            found.append("DATABASE_URL is a SQLite database: production needs PostgreSQL, shared by every process and "
                         "host (DATABASE_URL=postgres://user:password@host:5432/patchworks).")
        elif not engine.endswith("postgresql"):
            found.append(f"DATABASE_URL must be a PostgreSQL URL (postgres://...), not {urlsplit(database_url).scheme or 'this'}.")
    if not environ.get("REDIS_URL", "").strip():
        found.append("REDIS_URL is not set: production needs Redis for the task queue, the rate limits and connection "
                     "pools, and the cache (REDIS_URL=redis://host:6379/0).")
    if not any(h.strip() for h in environ.get("ALLOWED_HOSTS", "").split(",")):
        found.append("ALLOWED_HOSTS is not set: name the host names the dashboard is served on, comma-separated.")
    counts = {}
    for name, least in (("WORKERS", 0), ("WORKER_THREADS", 1), ("WEB_CONCURRENCY", 0), ("PORT", 1), ("STOP_TIMEOUT", 1)):
        value = environ.get(name, DEFAULTS[name]).strip()
        if not value.isdigit() or int(value) < least:
            found.append(f"{name} must be a whole number of at least {least}, not {value!r}.")
        else:
            counts[name] = int(value)
    if counts.get("WORKERS") == 0 and counts.get("WEB_CONCURRENCY") == 0:
        found.append("WORKERS and WEB_CONCURRENCY are both 0: nothing to run.")
    return found


def settings_problem() -> str | None:
    """The settings' own refusal (SECRET_KEY, CREDENTIAL_KEYS, ...) as one line, or None when they load."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "patchworks_site.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 (loads the settings module)
    except ImproperlyConfigured as exc:
        return " ".join(str(exc).split())
    return None


def plan(environ: Mapping[str, str], migrate: bool = True) -> Plan:
    """The commands production runs, from the environment (checked by `problems` first)."""
    python = sys.executable
    manage = [python, str(BASE_DIR / "manage.py")]
    number = {name: int(environ.get(name, default)) for name, default in DEFAULTS.items() if name != "HOST"}
    web_processes = number["WEB_CONCURRENCY"]
    prepare = [("check", [*manage, "check", "--deploy", "--fail-level", "ERROR"])]
    if migrate:
        prepare.append(("migrate", [*manage, "migrate", "--no-input"]))
    if web_processes:
        prepare.append(("collectstatic", [*manage, "collectstatic", "--no-input", "--verbosity", "0"]))
    web = None
    if web_processes:
        host = environ.get("HOST", DEFAULTS["HOST"])
        web = [python, "-m", "gunicorn", "patchworks_site.wsgi:application", "--chdir", str(BASE_DIR),
               "--bind", f"{host}:{number['PORT']}", "--workers", str(web_processes), "--access-logfile", "-", "--no-control-socket"]
    # Every worker's scheduler enqueues the periodic jobs; flows.periodic runs each once per period.
    worker = [*manage, "run_huey", "--workers", str(number["WORKER_THREADS"]), "--worker-type", "thread"]
    return Plan(prepare, web, [worker] * number["WORKERS"], float(number["STOP_TIMEOUT"]))


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5).ping()
    except (redis.RedisError, ValueError) as exc:
        raise Refused(f"Redis at {_without_password(url)} does not answer: {' '.join(str(exc).split())}") from exc


def prepare(steps: Sequence[tuple[str, list[str]]]) -> None:
    for name, command in steps:
        say(f"{name}: {shlex.join(command)}")
        if subprocess.run(command, cwd=BASE_DIR).returncode != 0:
            raise Refused(f"{name} failed (its output is above); nothing was started.")


def metrics_directory(environ: MutableMapping[str, str]) -> Path | None:
    """Give this host's processes one PROMETHEUS_MULTIPROC_DIR, emptied; the directory made for it, if any.

    gunicorn and the workers write their counts there, so a scrape of any web
    process reports the whole host (the workers' runs and requests included);
    without it each process counts for itself and a scrape shows only the web
    process that answers it. A directory set in the environment is emptied of
    the last start's files; unset, the launcher makes one under TMPDIR and
    removes it when it stops.
    """
    path = environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not path:
        made = Path(tempfile.mkdtemp(prefix="patchworks-metrics-"))
        environ["PROMETHEUS_MULTIPROC_DIR"] = str(made)
        return made
    Path(path).mkdir(parents=True, exist_ok=True)
    for stale in Path(path).glob("*.db"):
        stale.unlink(missing_ok=True)
    return None


def supervise(named: Sequence[tuple[str, list[str]]], stop_timeout: float) -> int:
    """Run the commands until one exits or a stop signal comes; then stop them all. The exit code to return."""
    received: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: received.append(signum))
    children = []
    for name, command in named:
        # Their own process group: Ctrl-C reaches the launcher only, which stops each child once, gracefully.
        process = subprocess.Popen(command, cwd=BASE_DIR, process_group=0, preexec_fn=_die_with_parent)
        children.append((name, process))
        say(f"started {name} (pid {process.pid}): {shlex.join(command)}")
    code = 0
    while not received:
        exited = [(name, process) for name, process in children if process.poll() is not None]
        if exited:
            name, process = exited[0]
            say(f"{name} exited with code {process.returncode}: stopping the others.")
            code = 1
            break
        time.sleep(0.2)
    else:
        say(f"{signal.Signals(received[0]).name} received: stopping (up to {stop_timeout:g} s).")
    stop(children, stop_timeout)
    return code


def stop(children: Sequence[tuple[str, subprocess.Popen]], timeout: float) -> None:
    """Ask each child to stop gracefully, wait up to `timeout` in all, then kill those still running."""
    for name, process in children:
        if process.poll() is None:
            # huey: SIGINT finishes the tasks in hand (SIGTERM would drop them); gunicorn: SIGTERM is its graceful stop.
            process.send_signal(signal.SIGINT if name.startswith("worker") else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name, process in children:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} (pid {process.pid}) did not stop within {timeout:g} s: killed.")
            process.kill()
            process.wait()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve_prod", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="check the environment and print the commands, run nothing")
    parser.add_argument("--no-migrate", action="store_true", help="leave migrations to a release step run once (several hosts)")
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        found = problems(environ)
        if found:
            raise Refused("\n".join(found))
        problem = settings_problem()
        if problem:
            raise Refused(problem)
        steps = plan(environ, migrate=not args.no_migrate)
        named = ([("web", steps.web)] if steps.web else []) + [(f"worker {n}", w) for n, w in enumerate(steps.workers, 1)]
        if args.dry_run:
            for name, command in [*steps.prepare, *named]:
                print(f"{name}: {shlex.join(command)}")
            return 0
        check_redis(environ["REDIS_URL"])
        prepare(steps.prepare)
    except Refused as refused:
        for line in str(refused).splitlines():
            print(f"serve-prod: refusing to start: {line}", file=sys.stderr)
        return 2
    made = metrics_directory(os.environ)  # the children's environment
    try:
        return supervise(named, steps.stop_timeout)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def say(message: str) -> None:
    print(f"serve-prod: {message}", file=sys.stderr, flush=True)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _die_with_parent() -> None:
    """In the child before exec (Linux): be sent SIGTERM if the launcher dies without stopping it (SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
