"""Demo data for `make run`: two companies, installed and custom connectors, instances, a flow.

This command composes every app, so it lives in the sandbox app, on the top
floor: it may import every app, and no app imports it. It is idempotent (everything is looked up
by name first) and refuses to run with DEBUG off, because it creates a user
with a known password.
"""

from __future__ import annotations

import copy
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler, get_internal_wsgi_application
from django.db import transaction

from patchworks_site import audit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def serving_sandbox(base_url: str) -> Iterator[None]:
    """The Sandbox API answering at `base_url` while the demo instances are checked.

    `make run` seeds before it serves, so nothing listens yet: the dashboard is
    served on that address for the duration. When something already listens
    there (the dashboard itself), it is used as it is.
    """
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        with socket.create_connection((host, port), timeout=0.5):
            yield
            return
    except OSError:
        pass
    server = ThreadedWSGIServer((host, port), _QuietHandler, allow_reuse_address=True)
    server.set_app(get_internal_wsgi_application())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Command(BaseCommand):
    help = "Create the demo companies, users, connectors, instances and process flows (DEBUG only)."

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG:
            raise CommandError("seed_demo creates a user with a known password; it only runs with DEBUG on.")
        from marketplace import catalog
        from marketplace.models import Listing

        if not Listing.objects.exists():
            catalog.load_catalog()
        with transaction.atomic(), ExitStack() as scope:
            self._seed(scope)
        self._check_demo_instances()
        self.stdout.write(
            self.style.SUCCESS("Demo data ready. Log in as demo / demo (Administrator of Acme Retail).")
        )

    def _check_demo_instances(self) -> None:
        """Check every demo instance not checked yet, so statuses are real from the start."""
        from instances import checks
        from instances.models import Instance

        unchecked = list(Instance.objects.filter(last_checked_at__isnull=True).select_related("connector", "auth_method"))
        if not unchecked:
            return
        try:
            with serving_sandbox(settings.SANDBOX_BASE_URL):
                for instance in unchecked:
                    result, _ = checks.recheck(instance)
                    self.stdout.write(f"Checked {instance.name}: {result.message}")
        except OSError as exc:
            self.stdout.write(self.style.WARNING(f"The demo instances were not checked (the Sandbox could not be served: {exc})."))

    def _seed(self, scope: ExitStack) -> None:
        from connectors import editing
        from connectors import manifest as manifests
        from connectors.models import Connector
        from flows.models import ProcessFlow, Shape
        from instances.models import ConnectionPool, Instance
        from marketplace import catalog
        from marketplace.models import Installation, Listing
        from patchworks_site.models import Company, Role, User
        from sandbox.models import SandboxAccount

        acme, _ = Company.objects.get_or_create(name="Acme Retail")
        globex, _ = Company.objects.get_or_create(name="Globex Trading")
        account_keys: dict[int, str] = {}

        def account_key(company) -> str:
            """The company's Sandbox account key, issued now when it has none (a key issued before is not known)."""
            if company.pk not in account_keys:
                account = SandboxAccount.objects.for_company(company.pk)
                account_keys[company.pk] = "" if account.key_hash else account.issue_key()
            return account_keys[company.pk]

        demo, created = User.objects.get_or_create(
            username="demo",
            defaults={"first_name": "Dana", "last_name": "Demo", "company": acme, "role": Role.ADMINISTRATOR},
        )
        if created:
            demo.set_password("demo")
            demo.save()
        scope.enter_context(audit.acting_as(demo))  # the audit log shows who did it
        User.objects.get_or_create(
            username="globex-admin",
            defaults={"first_name": "Gabe", "last_name": "Globex", "company": globex, "role": Role.ADMINISTRATOR},
        )

        def installed(company, slug: str, version: str | None = None) -> Connector | None:
            existing = Installation.objects.filter(
                connector__company=company, listing_version__listing__slug=slug
            ).select_related("connector").first()
            if existing:
                return existing.connector
            listing = Listing.objects.filter(slug=slug).first()
            if listing is None:
                return None
            listing_version = listing.versions.get(version=version) if version else listing.latest_version
            return catalog.install(listing_version, company, user=demo if company == acme else None)

        def instance(connector, name: str, method_key: str, values: dict, secrets: dict, pool=None, **fields) -> Instance:
            found = Instance.objects.filter(connector=connector, name=name).first()
            if found:
                return found
            method = connector.auth_methods.get(key=method_key)
            if connector.variables.filter(key="account_key", secret=True).exists() and account_key(connector.company):
                secrets = {**secrets, "account_key": account_key(connector.company)}  # its orders are the company's
            obj = Instance.with_connector_defaults(
                connector,
                name=name,
                auth_method=method,
                connection_pool=pool,
                values=values,
                created_by=demo if connector.company_id == acme.id else None,
                **fields,
            )
            obj.set_secrets(secrets)
            obj.save()
            return obj

        # Sandbox installed at its first version, so "update available" shows.
        sandbox = installed(acme, "sandbox", "1.0.0")
        pool, _ = ConnectionPool.objects.get_or_create(
            company=acme, name="Sandbox pool", defaults={"limit": 3, "timeout_seconds": 30}
        )
        pool.connectors.add(sandbox)
        base = {"base_url": settings.SANDBOX_BASE_URL}
        uk = instance(sandbox, "Sandbox - UK", "basic", {**base, "username": "sandbox"}, {"password": "sandbox-secret"}, pool)
        instance(sandbox, "Sandbox - EU", "token", dict(base), {"api_token": "sandbox-token"})
        instance(
            sandbox, "Sandbox - OAuth", "client_credentials", {**base, "client_id": "sandbox-client"},
            {"client_secret": "sandbox-client-secret"},
        )

        flow, _ = ProcessFlow.objects.get_or_create(company=acme, name="Sync Sandbox orders", defaults={"enabled": True})
        if not flow.shapes.exists():
            Shape.objects.create(flow=flow, position=0, instance=uk, endpoint=sandbox.endpoints.get(key="list_orders"))

        self._seed_order_sync(acme, sandbox, demo, instance)

        # A prebuilt connector installed at an older version and modified since.
        older = Listing.objects.filter(versions__isnull=False).exclude(slug="sandbox")
        for listing in older:
            versions = sorted(listing.versions.all(), key=lambda v: catalog.version_key(v.version))
            if len(versions) > 1:
                connector = installed(acme, listing.slug, versions[0].version)
                current = manifests.export(connector)
                if current == connector.installation.listing_version.manifest:
                    modified = copy.deepcopy(current)
                    modified["rate_limit"]["amount"] = max(1, modified["rate_limit"]["amount"] // 2)
                    editing.save_definition(connector, modified, user=demo)
                break

        for slug in ("shopify", "stripe", "xero"):
            installed(acme, slug)

        # A custom connector, built by Acme itself.
        if not Connector.objects.filter(company=acme, name="Acme Warehouse API").exists():
            custom = manifests.validate(
                {
                    "name": "Acme Warehouse API",
                    "description": "Acme's own warehouse system.",
                    "system_type": "WMS",
                    "colour": "orange",
                    "version": "0.3",
                    "base_url": "https://wms.acme-retail.example/api",
                    "rate_limit": {"amount": 10, "unit": "second"},
                    "auth_methods": [
                        {
                            "key": "api_key",
                            "name": "API key",
                            "type": "token",
                            "variables": [{"key": "api_key", "label": "API key", "required": True, "secret": True}],
                            "headers": {"Authorization": "Bearer {{api_key}}"},
                            "test_request": {"path": "/ping"},
                        }
                    ],
                    "endpoints": [
                        {"key": "list_stock", "name": "List stock", "entity": "Stock", "direction": "receive",
                         "method": "GET", "path": "/stock"},
                        {"key": "create_shipment", "name": "Create shipment", "entity": "Shipment", "direction": "send",
                         "method": "POST", "path": "/shipments"},
                    ],
                }
            )
            editing.save_definition(Connector(company=acme), custom, user=demo, action="created")

        # The second company: its data never shows up for Acme's users.
        with audit.acting_as(None):
            globex_sandbox = installed(globex, "sandbox")
            instance(globex_sandbox, "Globex sandbox", "token", dict(base), {"api_token": "sandbox-token"})

    def _seed_order_sync(self, acme, sandbox, demo, instance) -> None:
        """A flow that runs on its own: Sandbox orders of the last 24 hours, mapped, sent to a US Sandbox instance.

        It needs the Sandbox version whose List orders pages and takes updated_since,
        whose instances send Acme's account key and whose Create order sends an idempotency key
        (DEMO_FLOW_SANDBOX_VERSION or newer). Acme's own Sandbox connector stays at
        1.0.0 (so "update available" shows); the newer version is installed alongside
        it, as a user would. Without that version in the catalog the flow is skipped.
        """
        from django.utils import timezone

        from flows.models import ProcessFlow, Shape, ShapeKind
        from flows.schedules import create_schedule
        from marketplace import catalog, updates
        from marketplace.models import Installation

        if ProcessFlow.objects.filter(company=acme, name=DEMO_FLOW_NAME).exists():
            return
        target = sandbox.installation.listing_version.listing.latest_version
        if target is None or catalog.version_key(target.version) < catalog.version_key(DEMO_FLOW_SANDBOX_VERSION):
            self.stdout.write(self.style.WARNING(
                f"The demo flow {DEMO_FLOW_NAME!r} was skipped: it needs Sandbox {DEMO_FLOW_SANDBOX_VERSION} in the catalog."
            ))
            return
        if Installation.objects.filter(connector=sandbox, listing_version=target).exists():
            connector = sandbox
        else:
            connector = updates.alongside_copy(sandbox, target) or updates.install_alongside(sandbox, user=demo)
        list_orders = connector.endpoints.filter(key="list_orders").first()
        create_order = connector.endpoints.filter(key="create_order").first()
        if list_orders is None or create_order is None or not connector.auth_methods.filter(key="token").exists():
            self.stdout.write(self.style.WARNING(
                f"The demo flow {DEMO_FLOW_NAME!r} was skipped: {connector.name} lacks List orders, Create order "
                "or the API token method."
            ))
            return
        token = ({"base_url": settings.SANDBOX_BASE_URL}, {"api_token": "sandbox-token"})
        source = instance(connector, "Sandbox orders - London", "token", *token, time_zone="Europe/London")
        target_instance = instance(
            connector, "Sandbox (US)", "token", *token, time_zone="America/New_York", date_format="%m/%d/%Y %H:%M",
        )
        flow = ProcessFlow.objects.create(company=acme, name=DEMO_FLOW_NAME, enabled=True)
        field = {"constant": "", "convert_date": False}
        Shape.objects.bulk_create([
            Shape(flow=flow, position=0, kind=ShapeKind.CONNECTION, instance=source, endpoint=list_orders, config={
                "timeout": 30, "retries": 1, "allow_unsuccessful": False, "send_as": "item",
                "parameters": {"updated_since": "{{since}}"},
            }),
            Shape(flow=flow, position=1, kind=ShapeKind.FILTER, config={
                "match": "all",
                "rules": [{"field": "updated_at", "comparison": "in_last", "value": "24", "unit": "hours"}],
            }),
            Shape(flow=flow, position=2, kind=ShapeKind.MAP, config={
                "fields": [
                    {"target": "reference", "source": "number", **field},
                    {"target": "customer", "source": "customer.name", **field},
                    {"target": "total", "source": "total", **field},
                    {"target": "updated", "source": "updated_at", **field, "convert_date": True},
                ],
                "keep_unmapped": False,
            }),
            Shape(flow=flow, position=3, kind=ShapeKind.CONNECTION, instance=target_instance, endpoint=create_order,
                  config={"timeout": 30, "retries": 1, "allow_unsuccessful": False, "send_as": "batch", "parameters": {}}),
        ])
        create_schedule(flow, "minutes", now=timezone.now(), every=15)


DEMO_FLOW_NAME = "Sandbox orders to Sandbox (US)"
DEMO_FLOW_SANDBOX_VERSION = "1.5.0"
