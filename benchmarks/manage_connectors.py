"""Benchmark: server-side rendering of "Manage connectors" vs the Django admin changelist.

What it measures
----------------
The time Django takes to answer (view + SQL + template rendering, no network,
no browser) for two pages that list the same data:

* ``GET /connectors/``               our manage connectors page, page 1
                                     (20 connectors per page, every instance inline);
* ``GET /admin/instances/instance/`` the Django admin changelist of the same
                                     instances (InstanceAdmin, 100 rows per page).

Seed: one company ("Acme Retail") with an Administrator user (also staff and
superuser, so it can open the admin) owning 200 connectors with 10 instances
each. About half are installed from the Sandbox marketplace listing (some at
the older version 1.0.0, so "update available" shows, some modified after
installing); the rest are custom connectors. Some instances are in connection
pools. A second company ("Globex Trading") has a little data of its own.

Each page gets 3 warm-up requests, then 20 timed requests
(``time.perf_counter()`` around ``django.test.Client.get``; the timed requests
of the two pages alternate, so a change in machine load affects both alike),
and one more request under ``CaptureQueriesContext`` to count the SQL queries
(and sum the time spent executing them). On PostgreSQL the seed is followed by
``ANALYZE``, as autovacuum would do on a live database. The script prints
median / p90 / min milliseconds, query count, SQL time and rows shown per page,
then whether our page is faster than the admin's (and the time per instance row,
since the two pages show different numbers of rows).

Settings: DEBUG=1 (so "testserver" is an allowed host and static files need no
manifest), a throwaway CREDENTIAL_KEYS test key, and ALWAYS a throwaway
database -- DATABASE_URL from your environment is ignored.

How to run (from the project root)
----------------------------------
SQLite (default: a temporary file under /tmp, deleted at the end)::

    .venv/bin/python benchmarks/manage_connectors.py
    make benchmark

PostgreSQL::

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/patchworks_bench \\
        .venv/bin/python benchmarks/manage_connectors.py

When the database name contains "bench", the script manages it itself through
psycopg (connecting to the "postgres" maintenance database with the same
credentials): it drops any leftover database of that name, creates it, and
drops it again at the end. Any other name is used as given: it must already
exist and be empty (the script refuses to touch a database that has tables),
and is left in place afterwards.

Options: ``--show-queries`` prints every SQL query of the counted request of
each page with its time; ``--timed N`` / ``--warmup N`` change the number of
requests (defaults 20 and 3).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

# The throwaway key from pytest.ini: never a real one.
TEST_CREDENTIAL_KEYS = "test-1:a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="

N_CONNECTORS = 200
INSTANCES_PER_CONNECTOR = 10
N_POOLS = 6
MANAGE_URL = "/connectors/"
ADMIN_URL = "/admin/instances/instance/"


# --- database set-up -------------------------------------------------------


class ThrowawayDatabase:
    """The DATABASE_URL to use, plus its cleanup."""

    def __init__(self, bench_url: str | None):
        self.bench_url = bench_url
        self.tempdir: str | None = None
        self.pg_params: dict | None = None
        self.managed = False
        self.url = ""
        self.label = ""

    def __enter__(self) -> ThrowawayDatabase:
        if not self.bench_url:
            self.tempdir = tempfile.mkdtemp(prefix="patchworks-bench-")
            path = Path(self.tempdir) / "bench.sqlite3"
            self.url = f"sqlite:///{path}"  # an absolute path: sqlite:////tmp/...
            self.label = f"SQLite (temporary file {path})"
            return self
        self.url = self.bench_url
        if self.bench_url.startswith(("postgres://", "postgresql://", "pgsql://")):
            self._prepare_postgres()
        else:
            self.label = f"{self.bench_url.split(':', 1)[0]} (as given, not managed)"
        return self

    def _prepare_postgres(self) -> None:
        import dj_database_url
        import psycopg
        from psycopg import sql

        cfg = dj_database_url.parse(self.bench_url)
        name = cfg["NAME"]
        self.pg_params = {
            "dbname": "postgres",
            "user": cfg.get("USER") or None,
            "password": cfg.get("PASSWORD") or None,
            "host": cfg.get("HOST") or None,
            "port": cfg.get("PORT") or None,
        }
        self.pg_params = {k: v for k, v in self.pg_params.items() if v is not None}
        self.pg_name = name
        self.managed = "bench" in name
        server = f"{cfg.get('HOST') or 'localhost'}:{cfg.get('PORT') or 5432}"
        if self.managed:
            with psycopg.connect(**self.pg_params, autocommit=True) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            self.label = f"PostgreSQL {version} at {server}, database {name} (created for this run)"
        else:
            try:
                with psycopg.connect(**{**self.pg_params, "dbname": name}) as conn:
                    version = conn.execute("SHOW server_version").fetchone()[0]
                    tables = conn.execute(
                        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                    ).fetchone()[0]
            except psycopg.OperationalError as exc:
                raise SystemExit(
                    f"Cannot use database {name!r}: {exc}\n"
                    'Create it first (empty), or use a name containing "bench" to let the script create/drop it.'
                ) from None
            if tables:
                raise SystemExit(
                    f"Database {name!r} already has {tables} tables; refusing to seed into it. "
                    'Use an empty database, or a name containing "bench" to let the script create/drop it.'
                )
            self.label = f"PostgreSQL {version} at {server}, database {name} (existing, left in place)"

    def __exit__(self, *exc) -> None:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django may not have been set up
            pass
        if self.tempdir:
            shutil.rmtree(self.tempdir, ignore_errors=True)
        if self.managed and self.pg_params:
            import psycopg
            from psycopg import sql

            with psycopg.connect(**self.pg_params, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.pg_name))
                )


def setup_django(database_url: str) -> None:
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "patchworks_site.settings")
    os.environ.setdefault("CREDENTIAL_KEYS", TEST_CREDENTIAL_KEYS)
    os.environ.setdefault("CREDENTIAL_KEY_FILE", "/nonexistent/credential-keys")
    os.environ.setdefault("OUTBOUND_ALLOW_LOOPBACK", "1")
    os.environ["DATABASE_URL"] = database_url  # always the throwaway one

    import django

    django.setup()

    from django.conf import settings
    from django.core.management import call_command

    if "testserver" not in settings.ALLOWED_HOSTS and "*" not in settings.ALLOWED_HOSTS:
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    call_command("migrate", verbosity=0, interactive=False)


# --- seeding -----------------------------------------------------------------

REGIONS = ["UK", "EU", "US East", "US West", "APAC", "Staging", "Test", "Backup", "Wholesale", "Retail"]
# A few custom names sort before "Sandbox", most after it, so page 1 mixes
# custom and prebuilt connectors.
EARLY_WORDS = ["Acme", "Bolt", "Cedar", "Harbor", "Nimbus", "Orchid", "Pioneer", "Quarry"]
LATE_WORDS = ["Sierra", "Summit", "Talon", "Tundra", "Umber", "Vertex", "Willow", "Xenon", "Yarrow", "Zephyr"]
SYSTEMS = ["ERP", "WMS", "CRM", "PIM", "POS", "3PL", "eCommerce", "Accounting", "Marketplaces", "Other"]
COLOURS = ["blue", "cyan", "green", "orange", "pink", "purple", "red", "yellow", "gray_inverted"]


def custom_manifest(n: int, name: str) -> dict:
    auth_methods = [
        {
            "key": "api_key",
            "name": "API key",
            "type": "token",
            "variables": [{"key": "api_key", "label": "API key", "required": True, "secret": True}],
            "headers": {"Authorization": "Bearer {{api_key}}"},
            "test_request": {"path": "/ping"},
        }
    ]
    if n % 2:
        auth_methods.append(
            {
                "key": "basic",
                "name": "Username and password",
                "type": "basic",
                "variables": [
                    {"key": "username", "label": "Username", "required": True},
                    {"key": "password", "label": "Password", "required": True, "secret": True},
                ],
                "test_request": {"path": "/ping"},
            }
        )
    entities = ["Order", "Product", "Stock", "Customer", "Shipment", "Invoice"]
    endpoints = []
    for i, entity in enumerate(entities[: 2 + n % 5]):
        endpoints.append(
            {"key": f"list_{entity.lower()}s", "name": f"List {entity.lower()}s", "entity": entity,
             "direction": "receive", "method": "GET", "path": f"/{entity.lower()}s"}
        )
        if i % 2:
            endpoints.append(
                {"key": f"create_{entity.lower()}", "name": f"Create {entity.lower()}", "entity": entity,
                 "direction": "send", "method": "POST", "path": f"/{entity.lower()}s"}
            )
    return {
        "name": name,
        "description": f"{name}: an in-house integration.",
        "system_type": SYSTEMS[n % len(SYSTEMS)],
        "colour": COLOURS[n % len(COLOURS)],
        "version": f"0.{n % 7}",
        "version_name": "internal" if n % 3 == 0 else "",
        "base_url": "{{host}}/api" if n % 4 == 0 else f"https://api{n}.example.com/v1",
        "variables": [{"key": "host", "label": "Host", "default": "https://erp.example.com", "required": True}]
        if n % 4 == 0 else [],
        "rate_limit": {"amount": 5 + n % 20, "unit": ["second", "minute", "hour"][n % 3]},
        "auth_methods": auth_methods,
        "endpoints": endpoints,
    }


def seed() -> dict:
    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from connectors import manifest as manifests
    from connectors.models import AuthMethod, Connector, Endpoint, Variable
    from instances.models import ConnectionPool, Instance
    from marketplace import catalog
    from marketplace.models import Installation, Listing
    from patchworks_site.models import Company, Role, User

    with transaction.atomic():
        for entry in catalog.iter_catalog():
            if entry.slug == "sandbox":
                catalog.publish(entry.slug, entry.manifest, entry.changelog)
        sandbox = Listing.objects.get(slug="sandbox")
        old_version = sandbox.versions.get(version="1.0.0")
        new_version = sandbox.latest_version

        acme = Company.objects.create(name="Acme Retail")
        globex = Company.objects.create(name="Globex Trading")
        admin = User.objects.create_user(
            username="bench-admin", first_name="Ada", last_name="Admin", company=acme,
            role=Role.ADMINISTRATOR, is_staff=True, is_superuser=True,
        )
        colleague = User.objects.create_user(
            username="bench-manager", first_name="Max", last_name="Manager", company=acme, role=Role.MANAGER,
        )
        globex_admin = User.objects.create_user(
            username="globex-admin", company=globex, role=Role.ADMINISTRATOR,
        )

        def install(company, n: int, user) -> Connector:
            old = n % 10 in (0, 1, 2)       # ~30% at 1.0.0: "update available"
            modified = n % 10 in (2, 3, 7)  # ~30% changed after installing
            connector = catalog.install(old_version if old else new_version, company, user=user)
            if modified:
                changed = copy.deepcopy(manifests.export(connector))
                changed["rate_limit"]["amount"] = max(1, changed["rate_limit"]["amount"] // 2)
                if n % 2:
                    changed["endpoints"].append(
                        {"key": "list_invoices", "name": "List invoices", "entity": "Invoice",
                         "direction": "receive", "method": "GET", "path": "/invoices"}
                    )
                manifests.apply(manifests.validate(changed), connector=connector, user=colleague)
            return connector

        def custom(company, n: int, name: str, user) -> Connector:
            return manifests.apply(
                manifests.validate(custom_manifest(n, name)), connector=Connector(company=company), user=user
            )

        # 200 connectors for Acme, prebuilt and custom interleaved.
        acme_connectors = []
        n_custom = 0
        for n in range(N_CONNECTORS):
            if n % 2 == 0:
                acme_connectors.append(install(acme, n // 2, admin))
            else:
                words = EARLY_WORDS if n_custom < len(EARLY_WORDS) else LATE_WORDS
                word = words[n_custom % len(words)]
                name = f"{word} {SYSTEMS[n_custom % len(SYSTEMS)]} API {n_custom:03d}"
                acme_connectors.append(custom(acme, n_custom, name, admin))
                n_custom += 1

        # A little data for the second company.
        globex_connectors = [install(globex, n, globex_admin) for n in range(3)] + [
            custom(globex, n, f"Globex Ledger {n}", globex_admin) for n in range(2)
        ]

        pools = ConnectionPool.objects.bulk_create(
            [ConnectionPool(company=acme, name=f"{name} pool", limit=2 + i, timeout_seconds=30)
             for i, name in enumerate(["Sandbox", "ERP", "Warehouse", "Storefront", "Finance", "Shared"][:N_POOLS])]
        )
        ConnectionPool.objects.create(company=globex, name="Globex pool", limit=3)

        # Auth methods and variables of every connector, for building instances.
        all_connectors = acme_connectors + globex_connectors
        ids = [c.pk for c in all_connectors]
        methods_by_connector: dict[int, list[AuthMethod]] = {}
        for m in AuthMethod.objects.filter(connector_id__in=ids).order_by("connector_id", "position", "id"):
            methods_by_connector.setdefault(m.connector_id, []).append(m)
        variables_by_owner: dict[tuple, list[Variable]] = {}
        for v in Variable.objects.filter(connector_id__in=ids):
            variables_by_owner.setdefault((v.connector_id, v.auth_method_id), []).append(v)

        now = timezone.now()
        instances: list[Instance] = []
        pool_links: set[tuple[int, int]] = set()
        seq = 0

        def add_instances(connector: Connector, count: int, user, pool_list) -> None:
            nonlocal seq
            methods = methods_by_connector[connector.pk]
            for i in range(count):
                seq += 1
                method = methods[(seq + i) % len(methods)]
                values, secrets = {}, {}
                for v in variables_by_owner.get((connector.pk, None), []):
                    values[v.key] = settings.SANDBOX_BASE_URL if v.key == "base_url" else (v.default or f"v{seq}")
                for v in variables_by_owner.get((connector.pk, method.pk), []):
                    if v.secret:
                        secrets[v.key] = f"secret-{seq:05d}-{v.key}"
                    else:
                        values[v.key] = f"{v.key}-{seq:05d}"
                pool = pool_list[seq % len(pool_list)] if pool_list and seq % 3 == 0 else None
                if pool is not None:
                    pool_links.add((pool.pk, connector.pk))
                state = seq % 4
                obj = Instance.with_connector_defaults(
                    connector,
                    name=f"{connector.name} - {REGIONS[i % len(REGIONS)]}",
                    auth_method=method,
                    connection_pool=pool,
                    values=values,
                    last_checked_at=None if state == 0 else now - timedelta(minutes=seq),
                    last_check_ok=None if state == 0 else state != 3,
                    last_check_message="" if state != 3 else "401 Unauthorized: invalid credentials",
                    created_by=user,
                )
                obj.set_secrets(secrets)  # uid is set at construction, so the AAD is final
                instances.append(obj)

        for connector in acme_connectors:
            add_instances(connector, INSTANCES_PER_CONNECTOR, admin, pools)
        globex_pool = list(ConnectionPool.objects.filter(company=globex))
        for connector in globex_connectors:
            add_instances(connector, 3, globex_admin, globex_pool)
        Instance.objects.bulk_create(instances, batch_size=500)

        Through = ConnectionPool.connectors.through
        Through.objects.bulk_create(
            [Through(connectionpool_id=p, connector_id=c) for p, c in sorted(pool_links)], ignore_conflicts=True
        )

    from django.db import connection

    if connection.vendor == "postgresql":
        # Fresh planner statistics, as autovacuum would have gathered on a live database.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

    return {
        "companies": Company.objects.count(),
        "users": User.objects.count(),
        "connectors (Acme)": Connector.objects.filter(company=acme).count(),
        "  prebuilt (Sandbox)": Installation.objects.filter(connector__company=acme).count(),
        "    at 1.0.0 (update available)": Installation.objects.filter(
            connector__company=acme, listing_version=old_version).count(),
        "  custom": Connector.objects.filter(company=acme, installation__isnull=True).count(),
        "instances (Acme)": Instance.objects.filter(company=acme).count(),
        "  in a connection pool": Instance.objects.filter(company=acme, connection_pool__isnull=False).count(),
        "connectors (Globex)": Connector.objects.filter(company=globex).count(),
        "instances (Globex)": Instance.objects.filter(company=globex).count(),
        "instances (all, shown by the admin)": Instance.objects.count(),
        "variables / auth methods / endpoints": (
            f"{Variable.objects.count()} / {AuthMethod.objects.count()} / {Endpoint.objects.count()}"
        ),
        "connection pools": ConnectionPool.objects.count(),
        "_user": admin,
    }


# --- measuring -----------------------------------------------------------------


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class SqlTimer:
    """An execute wrapper timing each query with perf_counter (CaptureQueriesContext
    rounds to whole milliseconds). Times cover executing, not fetching rows."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.times.append((time.perf_counter() - start) * 1000)


def get_ok(client, url: str):
    response = client.get(url)
    assert response.status_code == 200, f"GET {url}: {response.status_code}"
    return response


def measure(client, pages: dict, warmup: int, timed: int) -> dict:
    """Time each page; {url: results}. `pages` maps url -> rows_of(html).

    The timed requests alternate between the pages, so drift in machine load
    (other processes, CPU frequency) affects both alike.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for url in pages:
        for _ in range(warmup):
            get_ok(client, url)
    samples: dict[str, list[float]] = {url: [] for url in pages}
    for _ in range(timed):
        for url in pages:
            start = time.perf_counter()
            response = client.get(url)
            samples[url].append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, f"GET {url}: {response.status_code}"
    results = {}
    for url, rows_of in pages.items():
        timer = SqlTimer()
        with connection.execute_wrapper(timer), CaptureQueriesContext(connection) as ctx:
            response = get_ok(client, url)
        html = response.content.decode()
        rows_text, instance_rows = rows_of(html)
        results[url] = {
            "median": statistics.median(samples[url]),
            "p90": percentile(samples[url], 90),
            "min": min(samples[url]),
            "queries": len(ctx.captured_queries),
            "sql_ms": sum(timer.times),
            "captured": [{**q, "ms": ms} for q, ms in zip(ctx.captured_queries, timer.times)],
            "rows": rows_text,
            "instance_rows": instance_rows,
            "html": html,
            "kb": len(response.content) / 1024,
        }
    return results


def manage_rows(html: str) -> tuple[str, int]:
    connectors = html.count('data-testid="connector"')
    instances = html.count('data-testid="instance"')
    return f"{connectors} connectors / {instances} instances", instances


def admin_rows(html: str) -> tuple[str, int]:
    rows = html.count('name="_selected_action"')  # one action checkbox per changelist row
    return f"{rows} instances", rows


def print_queries(title: str, captured: list[dict]) -> None:
    print(f"\n{title}: {len(captured)} queries")
    for i, q in enumerate(captured, 1):
        sql = re.sub(r"\s+", " ", q["sql"])
        if len(sql) > 160:
            sql = sql[:157] + "..."
        print(f"  {i:>2}. {q['ms']:7.2f} ms  {sql}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--timed", type=int, default=20, help="timed requests per page (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up requests per page (default 3)")
    parser.add_argument("--show-queries", action="store_true", help="print each page's SQL queries")
    args = parser.parse_args()

    with ThrowawayDatabase(os.environ.get("BENCH_DATABASE_URL") or None) as db:
        print(f"Database: {db.label}")
        t0 = time.perf_counter()
        setup_django(db.url)
        t1 = time.perf_counter()
        sizes = seed()
        t2 = time.perf_counter()
        user = sizes.pop("_user")
        print(f"Migrated in {t1 - t0:.1f} s, seeded in {t2 - t1:.1f} s.\n")
        print("Seed sizes")
        for label, value in sizes.items():
            print(f"  {label:<38} {value}")

        import django
        from django.conf import settings
        from django.test import Client

        client = Client()
        client.force_login(user)
        results = measure(client, {MANAGE_URL: manage_rows, ADMIN_URL: admin_rows}, args.warmup, args.timed)
        ours, admin = results[MANAGE_URL], results[ADMIN_URL]

        page1 = ours["html"]
        counts = {
            label: page1.count(marker)
            for label, marker in [
                ("prebuilt", "badge bg-info-subtle"),
                ("custom", 'text-secondary-emphasis">custom'),
                ("update available", 'data-testid="update-available"'),
                ("modified", 'data-testid="modified-info"'),
                ("pooled instances", "concurrent)</span>"),
            ]
        }
        print(f"\nPage 1 of {MANAGE_URL} shows: " + ", ".join(f"{v} {k}" for k, v in counts.items()))

        print(
            f"\nServer-side rendering, django.test.Client, Django {django.get_version()}, "
            f"DEBUG={int(settings.DEBUG)}, {args.warmup} warm-up + {args.timed} timed requests per page "
            "(timed requests alternate between the two pages)\n"
        )
        header = f"{'page':<40} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'queries':>8} {'SQL ms':>8} {'KB':>6}  rows shown"
        print(header)
        print("-" * len(header))
        for label, r in ((f"GET {MANAGE_URL} (ours)", ours), (f"GET {ADMIN_URL} (admin)", admin)):
            print(
                f"{label:<40} {r['median']:>10.1f} {r['p90']:>8.1f} {r['min']:>8.1f} "
                f"{r['queries']:>8} {r['sql_ms']:>8.1f} {r['kb']:>6.0f}  {r['rows']}"
            )
        print(
            "(queries and SQL ms: one extra, untimed request of each page under CaptureQueriesContext;\n"
            " SQL ms is time spent executing queries, not fetching rows or building model instances)"
        )
        ratio = admin["median"] / ours["median"]
        if ratio >= 1:
            print(f"\nOurs is faster than the admin's: {ratio:.2f}x (median {ours['median']:.1f} ms vs {admin['median']:.1f} ms).")
        else:
            print(
                f"\nOurs is SLOWER than the admin's: {1 / ratio:.2f}x the admin's time "
                f"(median {ours['median']:.1f} ms vs {admin['median']:.1f} ms)."
            )
        if ours["instance_rows"] and admin["instance_rows"]:
            print(
                f"Per instance row shown: ours {ours['median'] / ours['instance_rows']:.3f} ms "
                f"({ours['instance_rows']} rows), admin {admin['median'] / admin['instance_rows']:.3f} ms "
                f"({admin['instance_rows']} rows)."
            )

        if args.show_queries:
            print_queries(f"GET {MANAGE_URL}", ours["captured"])
            print_queries(f"GET {ADMIN_URL}", admin["captured"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
