"""Load test: the dashboard's pages under 50 logged-in users, beside the Django admin changelist.

What it does
------------
1. Creates a throwaway PostgreSQL database (default
   ``postgres://postgres@127.0.0.1:5432/pw_load_bench``; the name must contain
   "bench"; it is dropped at the end), migrates it, collects static files into a
   temporary directory and seeds one company: 200 connectors x 10 instances
   (the seeding of benchmarks/manage_connectors.py), 20 process flows, and 50
   Administrator users (staff, so they can open the admin), each with a session.
2. Starts gunicorn on 127.0.0.1 (DEBUG off, as in production; 4 sync workers by
   default) with an access log that records each request's server time.
3. Runs Locust headless from this same file: 50 users, each sending its own
   session cookie, for 60 s (then Locust stops by itself), over manage connectors,
   instance settings, the new instance wizard's steps 1-3, the marketplace, a
   listing, process flows -- and the Django admin changelist of the same
   company's instances, under the same load.
4. Prints requests/s, client-side p50/p95/p99 and errors per page (Locust), and
   server time p50/p95 per page (gunicorn's %(D)s, the time the worker spent on
   the request), then stops gunicorn and drops the database.

Traffic goes to 127.0.0.1 only; everything is bounded in time.

How to run (from the project root)
----------------------------------
Locust is not a dependency of the app: it has its own requirements file and
virtualenv (any Python >= 3.10)::

    python3 -m venv benchmarks/.venv
    benchmarks/.venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python -m benchmarks.load

``--runs`` adds the pages of runs, on 500 more process flows and 100,000 runs
(the seeding of ``benchmarks.pages --runs``) and a run whose step holds 100 pages
of stored records and requests: the flows list, the run log's page 1 and page
1,000 (by its keyset cursor) and that run's page.

Options: ``--users 50 --duration 60 --workers 4 [--runs]``; ``LOAD_DATABASE_URL`` picks
another throwaway PostgreSQL database; ``LOCUST`` the locust executable.
"""

from __future__ import annotations

import os
import sys

# --- the Locust side (this file is also the locustfile) -------------------------------

if __name__ != "__main__":
    import itertools
    import json
    import random

    from locust import HttpUser, between, task

    CONFIG = json.loads(open(os.environ["PW_LOAD_CONFIG"]).read())
    _SESSIONS = itertools.cycle(CONFIG["sessions"])

    class DashboardUser(HttpUser):
        """A logged-in operator moving between the dashboard's pages."""

        wait_time = between(1, 3)

        def on_start(self) -> None:
            # The session cookie is Secure (DEBUG off) and this is plain HTTP on
            # 127.0.0.1, so the cookie is sent as a header rather than from the jar.
            self.headers = {"Cookie": f"sessionid={next(_SESSIONS)}"}

        def _get(self, url: str, name: str) -> None:
            with self.client.get(url, headers=self.headers, name=name, allow_redirects=False,
                                 catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"{response.status_code} for {url}")

        @task(4)
        def manage_connectors(self) -> None:
            self._get("/connectors/", "manage connectors")

        @task(3)
        def instance_settings(self) -> None:
            self._get(f"/instances/{random.choice(CONFIG['instances'])}/", "instance settings")

        @task(1)
        def wizard_name(self) -> None:
            self._get(CONFIG["wizard"]["name"], "wizard step 1 (name)")

        @task(1)
        def wizard_settings(self) -> None:
            self._get(CONFIG["wizard"]["settings"], "wizard step 2 (settings)")

        @task(1)
        def wizard_auth(self) -> None:
            self._get(CONFIG["wizard"]["auth"], "wizard step 3 (auth method)")

        @task(2)
        def marketplace(self) -> None:
            self._get("/marketplace/", "marketplace")

        @task(1)
        def listing(self) -> None:
            self._get("/marketplace/sandbox/", "listing")

        @task(2)
        def flows(self) -> None:
            self._get("/flows/", "process flows")

        @task(2)
        def admin_changelist(self) -> None:
            self._get(CONFIG["admin"], "admin changelist (same rows)")

        @task(2)
        def run_log_first(self) -> None:
            if CONFIG.get("runs"):
                self._get(CONFIG["runs"]["run log page 1 (100k runs)"], "run log page 1")

        @task(2)
        def run_log_deep(self) -> None:
            if CONFIG.get("runs"):
                self._get(CONFIG["runs"]["run log page 1,000"], "run log page 1,000")

        @task(2)
        def run_page(self) -> None:
            if CONFIG.get("runs"):
                self._get(CONFIG["runs"]["run page"], "run page (100 pages of payloads)")


# --- the orchestrator ---------------------------------------------------------------------

if __name__ == "__main__":
    import argparse
    import csv
    import json
    import re
    import shutil
    import signal
    import socket
    import statistics
    import subprocess
    import tempfile
    import time
    import urllib.request
    from pathlib import Path

    BENCH_DIR = Path(__file__).resolve().parent
    PROJECT_DIR = BENCH_DIR.parent
    from benchmarks import manage_connectors as bench  # the seeding and the throwaway database

    DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/pw_load_bench"
    # Access-log paths -> the page names Locust reports.
    PAGES = [
        (re.compile(r"^/connectors/\?$"), "manage connectors"),
        (re.compile(r"^/instances/\d+/\?$"), "instance settings"),
        (re.compile(r"^/instances/new/\d+/\?$"), "wizard step 1 (name)"),
        (re.compile(r"^/instances/new/\d+/\?step=settings"), "wizard step 2 (settings)"),
        (re.compile(r"^/instances/new/\d+/\?step=auth"), "wizard step 3 (auth method)"),
        (re.compile(r"^/marketplace/\?$"), "marketplace"),
        (re.compile(r"^/marketplace/sandbox/\?$"), "listing"),
        (re.compile(r"^/flows/\?$"), "process flows"),
        (re.compile(r"^/admin/instances/instance/"), "admin changelist (same rows)"),
        (re.compile(r"^/flows/runs/\?$"), "run log page 1"),
        (re.compile(r"^/flows/runs/\?before="), "run log page 1,000"),
        (re.compile(r"^/flows/runs/\d+/\?$"), "run page (100 pages of payloads)"),
    ]

    def setup_django(database_url: str, static_root: str) -> None:
        os.environ.update({
            "DEBUG": "0", "ALLOWED_HOSTS": "127.0.0.1,testserver", "SECURE_SSL_REDIRECT": "0",
            "STATIC_ROOT": static_root, "DATABASE_URL": database_url, "LOG_LEVEL": "ERROR",
            "DJANGO_SETTINGS_MODULE": "patchworks_site.settings", "CREDENTIAL_KEY_FILE": "/nonexistent/credential-keys",
            "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
        })
        os.environ.setdefault("SECRET_KEY", "load-test-only-" + os.urandom(32).hex())
        os.environ.setdefault("CREDENTIAL_KEYS", bench.TEST_CREDENTIAL_KEYS)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        call_command("collectstatic", verbosity=0, interactive=False)

    def seed(n_users: int, with_runs: bool = False) -> dict:
        from django.conf import settings
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
        from django.contrib.sessions.backends.db import SessionStore
        from django.db import connection
        from django.test import Client

        from connectors.models import Connector
        from marketplace import catalog
        from patchworks_site.models import Role, User

        catalog.load_catalog()  # the whole marketplace
        templates = bench.make_templates()
        shape = bench.seed_shape(templates, 200, 10)
        company, first = shape["company"], shape["user"]
        users = [first] + [
            User.objects.create_user(username=f"load-{i:02d}", company=company, role=Role.ADMINISTRATOR,
                                     is_staff=True, is_superuser=True)
            for i in range(1, n_users)
        ]
        sessions = []
        for user in users:
            store = SessionStore()
            store[SESSION_KEY] = str(user.pk)
            store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]  # as a login would
            store[HASH_SESSION_KEY] = user.get_session_auth_hash()
            store.create()
            sessions.append(store.session_key)
        instances = bench.seed_flows(company)
        runs = {}
        if with_runs:
            from benchmarks import pages as page_bench
            from flows.models import FlowRunShape

            runs = {name: url() for name, url in page_bench.seed_runs(company).items()}
            page_bench.seed_run(company)
            step = FlowRunShape.objects.filter(pages=page_bench.RUN_PAGES).order_by("pk").first()
            runs["run page"] = f"/flows/runs/{step.run_id}/"
        # The wizard's step URLs carry a signed state: walk steps 1-2 once to get them.
        sandbox = Connector.objects.filter(company=company, installation__isnull=False).order_by("pk").first()
        client = Client()
        client.force_login(first)
        url = f"/instances/new/{sandbox.pk}/"
        step2 = client.post(url, {"step": "name", "state": "", "name": "Load test shop"})["Location"]
        state = step2.split("state=", 1)[1]
        from urllib.parse import unquote

        step3 = client.post(url, {"step": "settings", "state": unquote(state), "time_zone": "Europe/London",
                                  "date_format": "%Y-%m-%d", "rate_limit_amount": "60", "rate_limit_unit": "minute"})
        assert step3.status_code == 302, step3.content[:500]
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        return {
            "sessions": sessions,
            "instances": instances,
            "wizard": {"name": url, "settings": step2, "auth": step3["Location"]},
            "admin": f"/admin/instances/instance/?company__id__exact={company.pk}",
            "company": company.name,
            "runs": runs,
        }

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"gunicorn exited with {process.returncode}")
            try:
                urllib.request.urlopen(url, timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise SystemExit("gunicorn did not answer in time")

    def percentile(values: list[float], p: float) -> float:
        return bench.percentile(values, p) if values else float("nan")

    def server_times(access_log: Path) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {}
        for line in access_log.read_text().splitlines():
            parts = line.split()
            if len(parts) != 4 or parts[0] != "GET":
                continue
            path, micros = parts[1], int(parts[3])
            for pattern, name in PAGES:
                if pattern.search(path):
                    times.setdefault(name, []).append(micros / 1000)
                    break
        return times

    def main() -> int:
        parser = argparse.ArgumentParser(description="Load test of the dashboard (Locust, gunicorn, PostgreSQL).")
        parser.add_argument("--users", type=int, default=50)
        parser.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
        parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default 4)")
        parser.add_argument("--runs", action="store_true", help="also the pages of runs (500 flows, 100,000 runs)")
        args = parser.parse_args()
        locust = os.environ.get("LOCUST") or str(BENCH_DIR / ".venv" / "bin" / "locust")
        if not Path(locust).exists() and not shutil.which(locust):
            raise SystemExit(f"Locust not found at {locust}: see `How to run` in {__file__}.")
        database_url = os.environ.get("LOAD_DATABASE_URL", DEFAULT_DB)
        if "bench" not in database_url.rsplit("/", 1)[-1]:
            raise SystemExit("The load test drops its database at the end: use a name containing 'bench'.")
        work = Path(tempfile.mkdtemp(prefix="patchworks-load-"))
        try:
            with bench.ThrowawayDatabase(database_url) as db:
                print(f"Database: {db.label}")
                t0 = time.perf_counter()
                setup_django(db.url, str(work / "static"))
                config = seed(args.users, with_runs=args.runs)
                (work / "config.json").write_text(json.dumps(config))
                print(f"Seeded in {time.perf_counter() - t0:.0f} s: {config['company']}, "
                      f"{args.users} users with a session, 20 process flows.")
                from django.db import connections

                connections.close_all()
                return run(args, locust, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run(args, locust: str, work: Path) -> int:
        port = free_port()
        access_log = work / "access.log"
        env = {**os.environ, "PW_LOAD_CONFIG": str(work / "config.json"), "CONN_MAX_AGE": "60"}
        gunicorn = subprocess.Popen(
            [str(PROJECT_DIR / ".venv" / "bin" / "gunicorn"), "patchworks_site.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", str(args.workers), "--access-logfile", str(access_log),
             "--access-logformat", "%(m)s %(U)s?%(q)s %(s)s %(D)s", "--log-level", "warning"],
            cwd=PROJECT_DIR, env=env, start_new_session=True,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/login/", gunicorn)
            access_log.write_text("")  # only the load itself counts
            print(f"gunicorn on 127.0.0.1:{port} ({args.workers} workers); Locust: {args.users} users for "
                  f"{args.duration} s ...", flush=True)
            with (work / "locust.log").open("w") as log:
                result = subprocess.run(
                    [locust, "-f", __file__, "--headless", "--users", str(args.users),
                     "--spawn-rate", str(max(1, args.users // 5)), "--run-time", f"{args.duration}s",
                     "--host", f"http://127.0.0.1:{port}", "--csv", str(work / "locust"), "--only-summary",
                     "--stop-timeout", "10", "--loglevel", "ERROR", "--exit-code-on-error", "0"],
                    env=env, cwd=BENCH_DIR, timeout=args.duration + 120, check=False, stdout=log, stderr=log,
                )
            if result.returncode != 0:
                print((work / "locust.log").read_text()[-3000:])
                raise SystemExit(f"Locust exited with {result.returncode}")
        finally:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            gunicorn.wait(timeout=30)
        report(work, access_log, args)
        return 0

    def report(work: Path, access_log: Path, args) -> None:
        rows = list(csv.DictReader((work / "locust_stats.csv").open()))
        server = server_times(access_log)
        print(f"\n{args.users} users, {args.duration} s, gunicorn {args.workers} sync workers, PostgreSQL, DEBUG off\n")
        header = (f"{'page':<30} {'req/s':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6}   "
                  f"{'server p50':>10} {'server p95':>10}")
        print(header)
        print("-" * len(header))
        for row in rows:
            name = row["Name"]
            times = server.get(name, [])
            label = name if name != "Aggregated" else "all pages"
            if name == "Aggregated":
                times = [t for ts in server.values() for t in ts]
            print(f"{label:<30} {float(row['Requests/s']):>6.1f} {row['50%']:>7} {row['95%']:>7} {row['99%']:>7} "
                  f"{row['Failure Count']:>6}   {percentile(times, 50):>10.1f} {percentile(times, 95):>10.1f}")
        ours = [t for name, ts in server.items() if not name.startswith("admin") for t in ts]
        if ours:
            print(f"\nDashboard pages (all but the admin): server time p50 {statistics.median(ours):.1f} ms, "
                  f"p95 {percentile(ours, 95):.1f} ms over {len(ours)} requests.")
        print("(client p50/p95/p99: Locust, including queueing for a worker; server: gunicorn's time in the worker)")
        print(f"Load average of the machine at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
              f"({os.cpu_count()} CPUs, shared by gunicorn, PostgreSQL, Locust and anything else running).")

    sys.exit(main())
