"""Benchmark: server-side rendering of "Manage connectors" vs the Django admin changelist, by size.

What it measures
----------------
The time Django takes to answer (view + SQL + template rendering, no network,
no browser), the number of SQL queries and the HTML size of two pages that list
the same company's instances:

* ``GET /connectors/``  our manage connectors page, page 1: 20 connectors per
  page, the first 5 instances of each inline ("show all N instances" for the rest);
* ``GET /admin/instances/instance/?company__id__exact=<company>``  the Django
  admin changelist of the same company's instances (100 rows per page).

Both pages show the same company's rows, and the same number of instance rows
(100 = 20 connectors x 5 on ours, one page of 100 on the admin's), to a user
who is an Administrator of that company and also staff/superuser.

Shapes (one company each, so each is measured on its own rows):
20, 200 and 2000 connectors x 10 instances, and 200 connectors x 200 instances.
Half the connectors of each company are installed from the Sandbox listing
(some at the older 1.0.0, so "update available" shows; some modified after
installing), the rest are custom connectors; some instances are in connection
pools. The connectors are copied in bulk from a handful of templates made
through the real install and manifest code, so seeding 2420 connectors and
62,200 instances takes seconds, not minutes.

Settings: DEBUG OFF, as in production (a throwaway SECRET_KEY and the test
CREDENTIAL_KEYS, static files collected into a temporary STATIC_ROOT,
SECURE_SSL_REDIRECT off since the test client speaks plain HTTP), and ALWAYS a
throwaway database -- DATABASE_URL from your environment is ignored.

Each page gets 3 warm-up requests, then 20 timed requests (``time.perf_counter()``
around ``django.test.Client.get``; ours and the admin's alternate, so a change
in machine load affects both alike), then one more request under
``CaptureQueriesContext`` to count the queries. On PostgreSQL the seed is
followed by ``ANALYZE``, as autovacuum would do on a live database.

How to run (from the project root)
----------------------------------
SQLite (default: a temporary file under /tmp, deleted at the end)::

    .venv/bin/python -m benchmarks.manage_connectors
    make benchmark

PostgreSQL::

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/pw_bench_manage \\
        .venv/bin/python -m benchmarks.manage_connectors

When the database name contains "bench", the script manages it itself through
psycopg (connecting to the "postgres" maintenance database with the same
credentials): it drops any leftover database of that name, creates it, and
drops it again at the end. Any other name is used as given: it must already
exist and be empty (the script refuses to touch a database that has tables),
and is left in place afterwards.

Options: ``--shapes 20x10,200x200`` measures only those shapes;
``--show-queries`` prints every SQL query of the counted request of each page;
``--timed N`` / ``--warmup N`` change the number of requests (defaults 20 and 3).
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

from tests.manifest_parts import basic_method

# The throwaway key from pytest.ini: never a real one.
TEST_CREDENTIAL_KEYS = "test-1:a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="

# (connectors, instances per connector)
SHAPES = [(20, 10), (200, 10), (2000, 10), (200, 200)]
N_POOLS = 6
MANAGE_URL = "/connectors/"
ADMIN_URL = "/admin/instances/instance/?company__id__exact={company}"


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


def setup_django(database_url: str, static_root: str) -> None:
    # DEBUG off, as in production; only what the test client cannot do is relaxed.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-" + os.urandom(32).hex())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "patchworks_site.settings")
    os.environ.setdefault("CREDENTIAL_KEYS", TEST_CREDENTIAL_KEYS)
    os.environ.setdefault("CREDENTIAL_KEY_FILE", "/nonexistent/credential-keys")
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["SECURE_SSL_REDIRECT"] = "0"  # the test client speaks plain HTTP
    os.environ["STATIC_ROOT"] = static_root
    os.environ["DATABASE_URL"] = database_url  # always the throwaway one
    os.environ.setdefault("EMAIL_BACKEND", "django.core.mail.backends.dummy.EmailBackend")  # no alert email leaves

    import django

    django.setup()

    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    call_command("collectstatic", verbosity=0, interactive=False)  # the manifest DEBUG-off pages need


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
        auth_methods.append(basic_method(test_request={"path": "/ping"}))
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


def make_templates():
    """A handful of connectors made through the real install and manifest code, to copy in bulk.

    Returns [(template connector, is prebuilt)], in the order clones cycle through them.
    """
    from connectors import manifest as manifests
    from connectors.models import Connector
    from marketplace import catalog
    from marketplace.models import Listing
    from patchworks_site.models import Company

    for entry in catalog.iter_catalog():
        if entry.slug == "sandbox":
            catalog.publish(entry.slug, entry.manifest, entry.changelog)
    sandbox = Listing.objects.get(slug="sandbox")
    old_version, new_version = sandbox.versions.get(version="1.0.0"), sandbox.latest_version
    company = Company.objects.create(name="Benchmark templates")

    def prebuilt(version, modified: bool) -> Connector:
        connector = catalog.install(version, company)
        if modified:
            changed = copy.deepcopy(manifests.export(connector))
            changed["rate_limit"]["amount"] = max(1, changed["rate_limit"]["amount"] // 2)
            changed["endpoints"].append(
                {"key": "list_invoices", "name": "List invoices", "entity": "Invoice",
                 "direction": "receive", "method": "GET", "path": "/invoices"}
            )
            manifests.apply(manifests.validate(changed), connector=connector)
        return connector

    def custom(n: int) -> Connector:
        manifest = manifests.validate(custom_manifest(n, f"Custom {n}"))
        return manifests.apply(manifest, connector=Connector(company=company))

    prebuilts = [prebuilt(old_version, False), prebuilt(new_version, False), prebuilt(old_version, True),
                 prebuilt(new_version, False), prebuilt(new_version, True)]
    customs = [custom(n) for n in range(5)]
    # Interleaved: half prebuilt (~40% of them with an update available, 40% modified), half custom.
    return [item for pair in zip(((c, True) for c in prebuilts), ((c, False) for c in customs)) for item in pair]


def clone_connectors(templates, company, count: int, user) -> list:
    """`count` connectors for `company`, copied row by row from the templates in a few bulk inserts."""
    from connectors.models import AuthMethod, Connector, Endpoint, Variable
    from marketplace.models import Installation

    copies = []
    n_custom = 0
    for n in range(count):
        template, is_prebuilt = templates[n % len(templates)]
        clone = copy.copy(template)
        clone.pk = clone.id = None
        clone._state = Connector()._state
        clone.company = company
        clone.created_by = clone.updated_by = user
        if is_prebuilt:
            clone.name = f"{template.name} {n:04d}"  # the name is the company's label, not a modification
        else:
            words = EARLY_WORDS if n_custom < len(EARLY_WORDS) else LATE_WORDS
            clone.name = f"{words[n_custom % len(words)]} {SYSTEMS[n_custom % len(SYSTEMS)]} API {n_custom:04d}"
            n_custom += 1
        copies.append((clone, template, is_prebuilt))
    Connector.objects.bulk_create([c for c, _, _ in copies], batch_size=500)

    template_ids = {t.pk for t, _ in templates}
    methods = {}
    for m in AuthMethod.objects.filter(connector_id__in=template_ids):
        methods.setdefault(m.connector_id, []).append(m)
    variables, endpoints = {}, {}
    for v in Variable.objects.filter(connector_id__in=template_ids):
        variables.setdefault(v.connector_id, []).append(v)
    for e in Endpoint.objects.filter(connector_id__in=template_ids):
        endpoints.setdefault(e.connector_id, []).append(e)
    installations = {i.connector_id: i for i in Installation.objects.filter(connector_id__in=template_ids)}

    def row(obj, **fields):
        new = copy.copy(obj)
        new.pk = new.id = None
        new._state = type(obj)()._state
        for key, value in fields.items():
            setattr(new, key, value)
        return new

    new_methods = [(clone, m, row(m, connector=clone)) for clone, t, _ in copies for m in methods.get(t.pk, [])]
    AuthMethod.objects.bulk_create([m for _, _, m in new_methods], batch_size=1000)
    method_map = {(clone.pk, old.pk): new for clone, old, new in new_methods}
    Variable.objects.bulk_create(
        [row(v, connector=clone, auth_method=method_map[(clone.pk, v.auth_method_id)] if v.auth_method_id else None)
         for clone, t, _ in copies for v in variables.get(t.pk, [])],
        batch_size=1000,
    )
    Endpoint.objects.bulk_create(
        [row(e, connector=clone) for clone, t, _ in copies for e in endpoints.get(t.pk, [])], batch_size=1000
    )
    Installation.objects.bulk_create(
        [Installation(connector=clone, listing_version_id=installations[t.pk].listing_version_id, installed_by=user)
         for clone, t, prebuilt in copies if prebuilt],
        batch_size=1000,
    )
    return [c for c, _, _ in copies]


def seed_shape(templates, n_connectors: int, per_connector: int) -> dict:
    """One company with `n_connectors` x `per_connector` instances and an Administrator (staff) user."""
    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from connectors.models import AuthMethod, Variable
    from instances.models import ConnectionPool, Instance
    from patchworks_site.models import Company, Role, User

    with transaction.atomic():
        company = Company.objects.create(name=f"Shape {n_connectors}x{per_connector}")
        user = User.objects.create_user(
            username=f"bench-{n_connectors}x{per_connector}", first_name="Ada", last_name="Admin", company=company,
            role=Role.ADMINISTRATOR, is_staff=True, is_superuser=True,
        )
        connectors = clone_connectors(templates, company, n_connectors, user)
        pools = ConnectionPool.objects.bulk_create(
            [ConnectionPool(company=company, name=f"{name} pool", limit=2 + i, timeout_seconds=30)
             for i, name in enumerate(["Sandbox", "ERP", "Warehouse", "Storefront", "Finance", "Shared"][:N_POOLS])]
        )
        ids = [c.pk for c in connectors]
        methods_by_connector: dict[int, list] = {}
        for m in AuthMethod.objects.filter(connector_id__in=ids).order_by("connector_id", "position", "id"):
            methods_by_connector.setdefault(m.connector_id, []).append(m)
        variables_by_owner: dict[tuple, list] = {}
        for v in Variable.objects.filter(connector_id__in=ids):
            variables_by_owner.setdefault((v.connector_id, v.auth_method_id), []).append(v)

        now = timezone.now()
        pool_links: set[tuple[int, int]] = set()
        batch: list = []
        seq = 0
        for connector in connectors:
            methods = methods_by_connector[connector.pk]
            for i in range(per_connector):
                seq += 1
                method = methods[seq % len(methods)]
                values, secrets = {}, {}
                for v in variables_by_owner.get((connector.pk, None), []):
                    values[v.key] = settings.SANDBOX_BASE_URL if v.key == "base_url" else (v.default or f"v{seq}")
                for v in variables_by_owner.get((connector.pk, method.pk), []):
                    if v.secret:
                        secrets[v.key] = f"secret-{seq:06d}-{v.key}"
                    else:
                        values[v.key] = f"{v.key}-{seq:06d}"
                pool = pools[seq % len(pools)] if seq % 3 == 0 else None
                if pool is not None:
                    pool_links.add((pool.pk, connector.pk))
                state = seq % 4
                instance = Instance.with_connector_defaults(
                    connector, name=f"{REGIONS[i % len(REGIONS)]} {i:04d}", auth_method=method,
                    connection_pool=pool, values=values, created_by=user,
                    last_checked_at=None if state == 0 else now - timedelta(minutes=seq % 10000),
                    last_check_ok=None if state == 0 else state != 3,
                    last_check_message="" if state != 3 else "401 Unauthorized: invalid credentials",
                    last_used_by_run_at=None if seq % 3 == 1 else now - timedelta(minutes=seq % 5000),
                )
                instance.set_secrets(secrets)  # uid is set at construction, so the AAD is final
                batch.append(instance)
                if len(batch) >= 2000:
                    Instance.objects.bulk_create(batch)
                    batch = []
        Instance.objects.bulk_create(batch)
        Through = ConnectionPool.connectors.through
        Through.objects.bulk_create(
            [Through(connectionpool_id=p, connector_id=c) for p, c in sorted(pool_links)], ignore_conflicts=True
        )
    return {"company": company, "user": user}


def seed_flows(company, count: int = 20) -> list[int]:
    """`count` process flows of three connection shapes each, over random instances of `company`.

    Returns the primary keys of up to 200 random instances (the pages' benchmarks pick from them).
    """
    from flows.models import ProcessFlow, Shape
    from instances.models import Instance

    instances = list(Instance.objects.filter(company=company).order_by("?").values_list("pk", flat=True)[:200])
    for n in range(count):
        flow = ProcessFlow.objects.create(company=company, name=f"Flow {n:02d}", enabled=n % 2 == 0)
        for position, pk in enumerate(instances[n * 3:n * 3 + 3]):
            instance = Instance.objects.select_related("connector").get(pk=pk)
            Shape.objects.create(flow=flow, position=position, instance=instance,
                                 endpoint=instance.connector.endpoints.first())
    return instances


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
    cpu: dict[str, list[float]] = {url: [] for url in pages}
    for _ in range(timed):
        for url in pages:
            start, start_cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            samples[url].append((time.perf_counter() - start) * 1000)
            cpu[url].append((time.process_time() - start_cpu) * 1000)
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
            "cpu": statistics.median(cpu[url]),
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
    parser.add_argument("--shapes", default=",".join(f"{c}x{i}" for c, i in SHAPES),
                        help="connectors x instances per connector, comma-separated (default: all four)")
    parser.add_argument("--show-queries", action="store_true", help="print each page's SQL queries")
    args = parser.parse_args()
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]

    static_root = tempfile.mkdtemp(prefix="patchworks-bench-static-")
    try:
        with ThrowawayDatabase(os.environ.get("BENCH_DATABASE_URL") or None) as db:
            print(f"Database: {db.label}")
            t0 = time.perf_counter()
            setup_django(db.url, static_root)
            t1 = time.perf_counter()
            templates = make_templates()
            seeded = [(shape, seed_shape(templates, *shape)) for shape in shapes]
            from django.db import connection

            if connection.vendor == "postgresql":
                # Fresh planner statistics, as autovacuum would have gathered on a live database.
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE")
            t2 = time.perf_counter()
            print(f"Migrated and collected static files in {t1 - t0:.1f} s, seeded in {t2 - t1:.1f} s.")
            return report(seeded, args)
    finally:
        shutil.rmtree(static_root, ignore_errors=True)


def report(seeded, args) -> int:
    import django
    from django.conf import settings
    from django.test import Client

    from instances.models import Instance

    print(
        f"Server-side rendering, django.test.Client, Django {django.get_version()}, DEBUG={int(settings.DEBUG)}, "
        f"{args.warmup} warm-up + {args.timed} timed requests per page (ours and the admin's alternate).\n"
        "Both pages: the same company's instances, 100 instance rows (ours: 20 connectors x first 5).\n"
    )
    header = (f"{'shape':<10} {'page':<7} {'median ms':>9} {'p90 ms':>7} {'CPU ms':>7} {'queries':>7} {'HTML KB':>8} "
              f"{'rows':>5}  {'ours/admin time':>15}")
    print(header)
    print("-" * len(header))
    summary = []
    for (n_connectors, per_connector), data in seeded:
        company, user = data["company"], data["user"]
        assert Instance.objects.filter(company=company).count() == n_connectors * per_connector
        client = Client()
        client.force_login(user)
        admin_url = ADMIN_URL.format(company=company.pk)
        results = measure(client, {MANAGE_URL: manage_rows, admin_url: admin_rows}, args.warmup, args.timed)
        ours, admin = results[MANAGE_URL], results[admin_url]
        shape = f"{n_connectors}x{per_connector}"
        ratio = ours["median"] / admin["median"]
        for label, r, extra in (("ours", ours, f"{ratio:>14.2f}x"), ("admin", admin, "")):
            print(f"{shape:<10} {label:<7} {r['median']:>9.1f} {r['p90']:>7.1f} {r['cpu']:>7.1f} {r['queries']:>7} {r['kb']:>8.1f} "
                  f"{r['instance_rows']:>5}  {extra:>15}")
        summary.append((shape, ours, admin))
        if args.show_queries:
            print_queries(f"{shape} GET {MANAGE_URL}", ours["captured"])
            print_queries(f"{shape} GET {admin_url}", admin["captured"])
    times = [ours["median"] for _, ours, _ in summary]
    sizes = [ours["kb"] for _, ours, _ in summary]
    print(
        f"\nOurs across shapes: {min(times):.1f}-{max(times):.1f} ms (largest/smallest {max(times) / min(times):.2f}x), "
        f"{min(sizes):.1f}-{max(sizes):.1f} KB of HTML, "
        f"{min(o['queries'] for _, o, _ in summary)}-{max(o['queries'] for _, o, _ in summary)} queries."
    )
    print("(median/p90: wall-clock time of the request; CPU ms: median CPU time of this process for it, which other\n"
          " load on the machine inflates less; queries: one extra, untimed request under CaptureQueriesContext)")
    print(f"Load average of the machine while measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
