"""Shared by the isolation crawl and the secret canary suites.

- `enumerate_routes()`: every URL pattern of the project, walked recursively
  through the resolver (apps, htmx partial endpoints, POST-only views, the
  Sandbox API and the Django admin), keyed by its full route.
- `ROUTES`: the explicit table saying how each route is filled (which object's
  ids go into its kwargs) and what kind of page it is. A route missing from the
  table fails `test_every_url_pattern_is_covered`, so a new page cannot be
  added without being crawled.
- `build_world()`: a company with every kind of object (custom and prebuilt
  connectors with variables, every authentication type and endpoints, an
  instance with credential checks, a connection pool, a process flow with a
  connection shape, a run with its timeline (payload sample, warnings, errors,
  a failed exchange), an installation, history and audit entries, users), all
  named with a distinctive marker so a page showing any of it can be spotted.
- `role_clients()`: one logged-in client per role, plus an anonymous one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern
from django.utils import timezone

from alerts.models import Alert, AlertChannel, AlertEvent, AlertRule, ChannelKind, Delivery, DeliveryStatus
from connectors import editing
from connectors.models import AuthType, Connector, ConnectorChange
from flows.models import (
    FlowRun,
    FlowRunPayload,
    FlowRunRequest,
    FlowRunShape,
    FlowSchedule,
    PeriodicJobRun,
    ProcessFlow,
    RunStatus,
    RunTrigger,
    Shape,
    ShapeStatus,
)
from flows.schedules import create_schedule
from instances.models import ConnectionPool, CredentialCheck, Instance
from marketplace import catalog
from marketplace.models import Installation, Listing
from patchworks_site.models import AuditEntry, Company, Role, User

# 1x1 transparent PNG, so the icon view has something to serve.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


# --- URL enumeration ---------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    route: str  # the full pattern text, e.g. "connectors/<int:pk>/build/<slug:step>/"
    name: str  # "namespace:name", or "" for unnamed patterns
    pattern: URLPattern
    prefix: tuple  # the resolvers above the pattern, outermost first

    def url(self, kwargs: dict) -> str:
        """The URL for this pattern with `kwargs`, built by the patterns' own converters."""
        out = "/"
        for part in [*self.prefix, self.pattern]:
            pattern = part.pattern
            text = str(pattern)
            if isinstance(pattern, RoutePattern):
                for name, converter in pattern.converters.items():
                    text = _replace_param(text, name, str(converter.to_url(kwargs[name])))
            else:
                text = _fill_regex(text, kwargs).lstrip("^").rstrip("$")
            out += text
        return out


def _replace_param(text: str, name: str, value: str) -> str:
    start = text.index("<")
    while True:
        end = text.index(">", start)
        inner = text[start + 1 : end]
        if inner.split(":")[-1] == name:
            return text[:start] + value + text[end + 1 :]
        start = text.index("<", end)


def _fill_regex(text: str, kwargs: dict) -> str:
    """Fill `(?P<name>...)` groups of an admin regex route."""
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(kwargs[m.group(1)]), text)


def enumerate_routes() -> list[Route]:
    routes: list[Route] = []

    def walk(resolver: URLResolver, prefix: tuple, namespace: str) -> None:
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                ns = ":".join(filter(None, [namespace, entry.namespace]))
                walk(entry, (*prefix, entry), ns)
            else:
                route = "".join(str(p.pattern) for p in prefix) + str(entry.pattern)
                name = f"{namespace}:{entry.name}" if namespace and entry.name else (entry.name or "")
                routes.append(Route(route, name, entry, prefix))

    walk(get_resolver(), (), "")
    return routes


# --- the company world ----------------------------------------------------------------


@dataclass
class World:
    """One company and one of every kind of object it can own."""

    marker: str
    company: Company
    users: dict[str, User]
    connector: Connector  # custom, every auth type, with an icon
    prebuilt: Connector  # installed from the Sandbox listing
    instance: Instance
    check: CredentialCheck
    pool: ConnectionPool
    flow: ProcessFlow
    shape: Shape
    installation: Installation
    change: ConnectorChange
    audit_entry: AuditEntry
    listing: Listing
    run: FlowRun
    schedule: FlowSchedule
    alert_channel: AlertChannel
    alert_rule: AlertRule
    alert: Alert
    delivery: Delivery
    group: Group | None = None
    test_run: FlowRun | None = None  # a test step of `shape`, with its sample
    periodic_job_run: PeriodicJobRun | None = None  # not a company's: the admin shows them to superusers

    def admin_objects(self) -> dict[str, object]:
        """The object of each admin-registered model ("app_label.model_name")."""
        return {
            "connectors.connector": self.connector,
            "connectors.authmethod": self.connector.auth_methods.first(),
            "connectors.endpoint": self.connector.endpoints.first(),
            "connectors.connectorchange": self.change,
            "flows.processflow": self.flow,
            "flows.flowrun": self.run,
            "flows.flowschedule": self.schedule,
            "flows.periodicjobrun": self.periodic_job_run,
            "instances.instance": self.instance,
            "instances.connectionpool": self.pool,
            "instances.credentialcheck": self.check,
            "marketplace.listing": self.listing,
            "marketplace.listingversion": self.listing.latest_version,
            "marketplace.installation": self.installation,
            "patchworks_site.company": self.company,
            "patchworks_site.user": self.users[Role.ADMINISTRATOR],
            "patchworks_site.auditentry": self.audit_entry,
            "auth.group": self.group,
        }


def sandbox_listing() -> Listing:
    """The Sandbox listing with its catalog versions published (idempotent)."""
    if not Listing.objects.filter(slug="sandbox").exists():
        files = sorted((catalog.CATALOG_DIR / "sandbox").glob("*.yaml"), key=lambda p: catalog.version_key(p.stem))
        for path in files:
            entry = catalog.read_entry(path)
            catalog.publish(entry.slug, entry.manifest, entry.changelog)
    return Listing.objects.get(slug="sandbox")


def connector_manifest(marker: str, base_url: str, token_base: str | None = None) -> dict:
    """A custom connector with a variable, one authentication method of every type and two endpoints."""
    token_base = (token_base or base_url).rstrip("/")
    required_secret = {"required": True, "configurable": True, "secret": True}
    required_plain = {"required": True, "configurable": True, "secret": False}
    return {
        "name": f"{marker} Connector",
        "description": f"{marker} description of a private API",
        "system_type": "ERP",
        "version": f"{marker}-v1",
        "base_url": base_url,
        "rate_limit": {"amount": 1000, "unit": "second"},
        "concurrency_limit": 5,
        "variables": [
            {"key": "region", "label": f"{marker} region", "default": f"{marker}-region-default", "advanced": True},
        ],
        "auth_methods": [
            {
                "key": "basic", "name": f"{marker} Basic", "type": AuthType.BASIC,
                "variables": [
                    {"key": "username", "label": "Username", **required_plain},
                    {"key": "password", "label": "Password", **required_secret},
                ],
                "test_request": {"path": "/me"},
            },
            {
                "key": "token_header", "name": f"{marker} Token header", "type": AuthType.TOKEN,
                "variables": [{"key": "api_key", "label": "API key", **required_secret}],
                "headers": {"X-Api-Key": "{{api_key}}"},
                "test_request": {"path": "/me"},
            },
            {
                "key": "token_query", "name": f"{marker} Token query", "type": AuthType.TOKEN,
                "variables": [{"key": "query_key", "label": "Query key", **required_secret}],
                "query_params": {"api_key": "{{query_key}}"},
                "test_request": {"path": "/me"},
            },
            {
                "key": "bearer", "name": f"{marker} Bearer", "type": AuthType.TOKEN,
                "variables": [{"key": "bearer_token", "label": "Bearer token", **required_secret}],
                "headers": {"Authorization": "Bearer {{bearer_token}}"},
                "test_request": {"path": "/me"},
            },
            {
                "key": "oauth2_cc", "name": f"{marker} OAuth 2 client credentials", "type": AuthType.OAUTH2_CLIENT_CREDENTIALS,
                "token_url": f"{token_base}/oauth/token",
                "variables": [
                    {"key": "client_id", "label": "Client ID", **required_plain},
                    {"key": "client_secret", "label": "Client secret", **required_secret},
                ],
                "test_request": {"path": "/me"},
            },
            {
                "key": "oauth2_code", "name": f"{marker} OAuth 2 authorisation code", "type": AuthType.OAUTH2_AUTHORIZATION_CODE,
                "token_url": f"{token_base}/oauth/token", "authorize_url": f"{token_base}/oauth/authorize",
                "variables": [
                    {"key": "access_token", "label": "Access token", **required_secret},
                    {"key": "refresh_token", "label": "Refresh token", "required": False, "secret": True},
                ],
                "test_request": {"path": "/me"},
            },
            {
                "key": "oauth1", "name": f"{marker} OAuth 1", "type": AuthType.OAUTH1,
                "variables": [
                    {"key": "consumer_key", "label": "Consumer key", **required_plain},
                    {"key": "consumer_secret", "label": "Consumer secret", **required_secret},
                    {"key": "token", "label": "Token", **required_secret},
                    {"key": "token_secret", "label": "Token secret", **required_secret},
                ],
                "test_request": {"path": "/me"},
            },
        ],
        "endpoints": [
            {"key": "orders", "name": f"{marker} orders", "entity": f"{marker}Order", "direction": "receive",
             "method": "GET", "path": "/orders"},
            {"key": "stock", "name": f"{marker} stock", "entity": f"{marker}Stock", "direction": "send", "method": "PUT", "path": "/stock"},
        ],
    }


def build_world(marker: str, company_name: str | None = None, base_url: str | None = None) -> World:
    """A company named after `marker` with one of every object, each carrying the marker."""
    company = Company.objects.create(name=company_name or f"{marker} Company")
    users = {
        role: User.objects.create_user(
            # no usable password: hashing one per user would only slow the suites down
            username=f"{marker.lower()}-{role}", password=None, company=company, role=role,
            first_name=f"{marker}First", last_name=f"{marker}Last",
        )
        for role in Role.values
    }
    admin_user = users[Role.ADMINISTRATOR]
    base_url = base_url or f"https://{marker.lower()}-api.example.com/v1"
    connector = Connector(company=company)
    editing.save_definition(connector, connector_manifest(marker, base_url), user=admin_user,
                            action=ConnectorChange.Action.CREATED, summary="created")
    manifest = connector_manifest(marker, base_url)
    manifest["description"] += " (edited)"
    change = editing.save_definition(connector, manifest, user=admin_user)
    Connector.objects.filter(pk=connector.pk).update(icon=PNG_1X1, icon_content_type="image/png")
    connector.refresh_from_db()

    listing = sandbox_listing()
    prebuilt = catalog.install(listing.versions.order_by("published_at", "id").first(), company, user=admin_user)
    Connector.objects.filter(pk=prebuilt.pk).update(name=f"{marker} Sandbox")
    prebuilt.refresh_from_db()

    pool = ConnectionPool.objects.create(company=company, name=f"{marker} pool", limit=3)
    pool.connectors.add(connector)
    instance = Instance.with_connector_defaults(
        connector, name=f"{marker} instance", auth_method=connector.auth_methods.get(key="token_header"),
        connection_pool=pool, values={"region": f"{marker}-region-value"}, created_by=admin_user,
        last_check_message=f"{marker} last check message",
    )
    instance.set_secrets({"api_key": f"{marker}-stored-api-key"})
    instance.save()
    check = CredentialCheck.objects.create(
        company=company, connector=connector, instance=instance, auth_method=instance.auth_method,
        created_by=admin_user, ok=False, message=f"{marker} check message",
        request_method="GET", request_url=f"{base_url}/me?{marker.lower()}=1",
        request_headers={"X-Marker": f"{marker}-request-header"}, request_body="",
        response_status=401, response_headers={"X-Marker": f"{marker}-response-header"},
        response_body=f'{{"error": "{marker} response body"}}',
    )
    flow = ProcessFlow.objects.create(company=company, name=f"{marker} flow")
    shape = Shape.objects.create(flow=flow, instance=instance, endpoint=connector.endpoints.first())
    now = timezone.now()
    schedule = create_schedule(flow, "hourly", now=now, minute=5)
    # Made directly (not queued): a failed run, so stop and retry have something to act on.
    run = FlowRun.objects.create(
        company=company, flow=flow, status=RunStatus.FAILED, trigger=RunTrigger.MANUAL, triggered_by=admin_user,
        queued_at=now, reference_time=now, finished_at=now, failure_reason=f"{marker} failure reason",
        warnings=[f"{marker} run warning"],
    )
    # Its timeline: what a shape recorded (payload sample, warnings, errors, a failed exchange).
    shape_run = FlowRunShape.objects.create(
        run=run, position=0, shape=shape, shape_name=f"{marker} shape run", status=ShapeStatus.FAILED,
        started_at=now, finished_at=now, items_in=1, items_out=1, warnings=[f"{marker} shape warning"],
        errors=[f"{marker} shape error"],
        payload_sample={"in": [{"item": f"{marker} sample item in"}], "out": [{"item": f"{marker} sample item out"}]},
        failed_exchanges=[{
            "request_method": "GET", "request_url": f"{base_url}/orders?{marker.lower()}=1", "request_headers": {},
            "request_body": "", "response_status": 500, "response_headers": {},
            "response_body": f"{marker} failed exchange body", "error": "",
        }],
    )
    # Its steps: a page's records and its request (flows.steps).
    FlowRunPayload.objects.create(run=run, shape_run=shape_run, page=1, direction="out", records=1,
                                  body=json.dumps({"item": f"{marker} stored record"}))
    FlowRunRequest.objects.create(
        run=run, shape_run=shape_run, page=1, number=1, request_method="GET",
        request_url=f"{base_url}/orders?{marker.lower()}=stored", response_status=500,
        response_body=f"{marker} stored response body", message="500 Internal Server Error",
    )
    # A test step of the shape: its sample shows on the shape's card in the flow editor.
    test_run = FlowRun.objects.create(
        company=company, flow=flow, status=RunStatus.SUCCESS, trigger=RunTrigger.TEST, triggered_by=admin_user,
        queued_at=now, reference_time=now, started_at=now, finished_at=now, test_shape=shape,
    )
    FlowRunShape.objects.create(
        run=test_run, position=0, shape=shape, shape_name=f"{marker} tested shape", status=ShapeStatus.SUCCESS,
        started_at=now, finished_at=now, items_out=1, payload_sample={"in": [], "out": [{"item": f"{marker} test record"}]},
    )
    alert_channel = AlertChannel(company=company, kind=ChannelKind.WEBHOOK, name=f"{marker} webhook",
                                 url=f"https://{marker.lower()}-hooks.example.com/alerts")
    alert_channel.new_secret()
    alert_channel.save()
    alert_rule = AlertRule.objects.create(company=company, event=AlertEvent.FAILURE_STREAK, threshold=3)
    alert_rule.channels.add(alert_channel)
    alert = Alert.objects.create(company=company, rule=alert_rule, event=AlertEvent.FAILURE_STREAK, flow=flow, run=run,
                                 subject=f"{marker} alert subject", text=f"{marker} alert text")
    delivery = Delivery.objects.create(alert=alert, channel=alert_channel, channel_name=alert_channel.name,
                                       channel_kind=ChannelKind.WEBHOOK, status=DeliveryStatus.FAILED, attempts=1,
                                       last_error=f"{marker} delivery error")
    delivery.attempt_log.create(number=1, started_at=now, status_code=500, error=f"{marker} attempt error")
    installation = prebuilt.installation
    audit_entry = AuditEntry.objects.filter(company=company).order_by("id").first()
    assert audit_entry is not None, "the audit log records what was just created"
    group, _ = Group.objects.get_or_create(name=f"{marker} group")
    return World(
        marker=marker, company=company, users=users, connector=connector, prebuilt=prebuilt, instance=instance,
        check=check, pool=pool, flow=flow, shape=shape, installation=installation, change=change,
        audit_entry=audit_entry, listing=listing, group=group, run=run, schedule=schedule, test_run=test_run,
        alert_channel=alert_channel, alert_rule=alert_rule, alert=alert, delivery=delivery,
        periodic_job_run=PeriodicJobRun.objects.create(job=f"{marker} job", period_start=now, worker=f"{marker}-host:1"),
    )


# --- clients -----------------------------------------------------------------------------

ANONYMOUS = "anonymous"
CSRF_SECRET = "crawlcsrfsecret0123456789abcdefg"  # 32 characters: Django's unmasked token form


def csrf_client(user: User | None = None) -> Client:
    """A client that enforces CSRF like a browser, holding a known CSRF cookie."""
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = CSRF_SECRET
    if user is not None:
        client.force_login(user)
    return client


def role_clients(world: World) -> dict[str, tuple[User | None, Client]]:
    """One CSRF-enforcing client per role of the world's company, and an anonymous one."""
    clients: dict[str, tuple[User | None, Client]] = {ANONYMOUS: (None, csrf_client())}
    for role, user in world.users.items():
        clients[role] = (user, csrf_client(user))
    return clients


# --- the route table --------------------------------------------------------------------

# kinds of routes
OBJECT = "object"  # filled with one company's object ids; another company's is a 404
COMPANY = "company"  # no object in the URL: pages of the user's own company (lists, forms)
GLOBAL = "global"  # platform objects every company sees (marketplace listings)
PUBLIC = "public"  # reachable without logging in (login, logout, the Sandbox API)
ADMIN = "admin"  # the Django admin: staff only


@dataclass(frozen=True)
class Fill:
    kind: str
    kwargs: Callable[[World, World], list[dict]] = lambda own, other: [{}]  # noqa: E731
    post_only: bool = False  # GET answers 405 before any lookup
    csrf_exempt: bool = False  # machine-to-machine endpoints (the Sandbox API)
    logs_out: bool = False  # the client must log in again after a POST
    also: frozenset[int] = frozenset()  # further right answers (e.g. 400 for a callback without its parameters)


def _of(other_only: Callable[[World], dict]) -> Callable[[World, World], list[dict]]:
    return lambda own, other: [other_only(other)]


ROUTES: dict[str, Fill] = {
    "": Fill(COMPANY),
    "login/": Fill(PUBLIC),
    "logout/": Fill(PUBLIC, post_only=True, logs_out=True),
    "audit/": Fill(COMPANY),
    "settings/company/": Fill(COMPANY),
    # connectors
    "connectors/": Fill(COMPANY),
    "connectors/new/": Fill(COMPANY),
    "connectors/import/": Fill(COMPANY),
    "connectors/import/openapi/": Fill(COMPANY),
    "connectors/<int:pk>/": Fill(OBJECT, lambda own, w: [{"pk": w.connector.pk}, {"pk": w.prebuilt.pk}]),
    "connectors/<int:pk>/build/<slug:step>/": Fill(
        OBJECT,
        lambda own, w: [{"pk": w.connector.pk, "step": s} for s in ("details", "variables", "auth", "endpoints", "nonsense")],
    ),
    "connectors/<int:pk>/manifest/": Fill(OBJECT, _of(lambda w: {"pk": w.connector.pk})),
    "connectors/<int:pk>/manifest.yaml": Fill(OBJECT, lambda own, w: [{"pk": w.connector.pk}, {"pk": w.prebuilt.pk}]),
    "connectors/<int:pk>/history/": Fill(OBJECT, _of(lambda w: {"pk": w.connector.pk})),
    "connectors/<int:pk>/instances/": Fill(OBJECT, _of(lambda w: {"pk": w.connector.pk})),
    "connectors/<int:pk>/history/<int:change_pk>/": Fill(
        OBJECT,
        # another company's change, and one's own connector with another company's change
        lambda own, w: [
            {"pk": w.connector.pk, "change_pk": w.connector.changes.latest("pk").pk},
            {"pk": own.connector.pk, "change_pk": w.connector.changes.latest("pk").pk},
        ],
    ),
    "connectors/<int:pk>/remove/": Fill(OBJECT, lambda own, w: [{"pk": w.connector.pk}, {"pk": w.prebuilt.pk}], post_only=True),
    "connectors/<int:pk>/icon/": Fill(OBJECT, _of(lambda w: {"pk": w.connector.pk})),
    # instances
    "instances/new/<int:connector_pk>/": Fill(
        OBJECT, lambda own, w: [{"connector_pk": w.connector.pk}, {"connector_pk": w.prebuilt.pk}]
    ),
    "instances/date-preview/": Fill(COMPANY),
    "instances/oauth/callback/": Fill(COMPANY, also=frozenset({400})),
    "instances/check-schedule/": Fill(COMPANY),
    "instances/<int:pk>/": Fill(OBJECT, _of(lambda w: {"pk": w.instance.pk})),
    "instances/<int:pk>/check/": Fill(OBJECT, _of(lambda w: {"pk": w.instance.pk}), post_only=True),
    "instances/<int:pk>/remove/": Fill(OBJECT, _of(lambda w: {"pk": w.instance.pk}), post_only=True),
    "instances/<int:pk>/rate-limit-pause/clear/": Fill(OBJECT, _of(lambda w: {"pk": w.instance.pk}), post_only=True),
    "instances/pools/": Fill(COMPANY),
    "instances/pools/new/": Fill(COMPANY),
    "instances/pools/<int:pk>/": Fill(OBJECT, _of(lambda w: {"pk": w.pool.pk})),
    "instances/pools/<int:pk>/delete/": Fill(OBJECT, _of(lambda w: {"pk": w.pool.pk})),
    # flows
    "flows/": Fill(COMPANY),
    "flows/<int:pk>/": Fill(OBJECT, _of(lambda w: {"pk": w.flow.pk})),
    "flows/<int:pk>/shapes/<int:shape_pk>/": Fill(
        OBJECT, lambda own, w: [{"pk": w.flow.pk, "shape_pk": w.shape.pk}, {"pk": own.flow.pk, "shape_pk": w.shape.pk}]
    ),
    "flows/<int:pk>/shapes/<int:shape_pk>/move/": Fill(
        OBJECT,
        lambda own, w: [{"pk": w.flow.pk, "shape_pk": w.shape.pk}, {"pk": own.flow.pk, "shape_pk": w.shape.pk}],
        post_only=True,
    ),
    "flows/<int:pk>/shapes/<int:shape_pk>/remove/": Fill(
        OBJECT,
        # another company's flow and shape, and one's own flow with another company's shape
        lambda own, w: [{"pk": w.flow.pk, "shape_pk": w.shape.pk}, {"pk": own.flow.pk, "shape_pk": w.shape.pk}],
        post_only=True,
    ),
    "flows/<int:pk>/shapes/<int:shape_pk>/test/": Fill(
        OBJECT,
        lambda own, w: [{"pk": w.flow.pk, "shape_pk": w.shape.pk}, {"pk": own.flow.pk, "shape_pk": w.shape.pk}],
        post_only=True,
    ),
    "flows/<int:pk>/shapes/<int:shape_pk>/test/<int:run_pk>/": Fill(
        OBJECT,
        # another company's test step, and one's own flow and shape with another company's test run
        lambda own, w: [{"pk": w.flow.pk, "shape_pk": w.shape.pk, "run_pk": w.test_run.pk},
                        {"pk": own.flow.pk, "shape_pk": own.shape.pk, "run_pk": w.test_run.pk}],
    ),
    "flows/<int:pk>/toggle/": Fill(OBJECT, _of(lambda w: {"pk": w.flow.pk}), post_only=True),
    "flows/<int:pk>/delete/": Fill(OBJECT, _of(lambda w: {"pk": w.flow.pk}), post_only=True),
    "flows/<int:pk>/run/": Fill(OBJECT, _of(lambda w: {"pk": w.flow.pk}), post_only=True),
    "flows/<int:pk>/schedules/": Fill(OBJECT, _of(lambda w: {"pk": w.flow.pk}), post_only=True),
    "flows/<int:pk>/schedules/form/": Fill(OBJECT, _of(lambda w: {"pk": w.flow.pk})),
    "flows/<int:pk>/schedules/<int:schedule_pk>/remove/": Fill(
        OBJECT,
        lambda own, w: [{"pk": w.flow.pk, "schedule_pk": w.schedule.pk}, {"pk": own.flow.pk, "schedule_pk": w.schedule.pk}],
        post_only=True,
    ),
    "flows/<int:pk>/runs/": Fill(OBJECT, _of(lambda w: {"pk": w.flow.pk})),
    "flows/runs/": Fill(COMPANY),
    "flows/runs/export.csv": Fill(COMPANY),
    "flows/<int:pk>/runs/export.csv": Fill(OBJECT, _of(lambda w: {"pk": w.flow.pk})),
    "flows/runs/<int:run_pk>/": Fill(OBJECT, _of(lambda w: {"run_pk": w.run.pk})),
    "flows/runs/<int:run_pk>/steps/<int:step_pk>/": Fill(OBJECT, lambda own, w: [
        {"run_pk": run.pk, "step_pk": w.run.shape_runs.get().pk} for run in (own.run, w.run)]),
    "flows/runs/<int:run_pk>/payloads/<int:payload_pk>/": Fill(OBJECT, lambda own, w: [
        {"run_pk": run.pk, "payload_pk": w.run.payloads.get().pk} for run in (own.run, w.run)]),
    "flows/runs/<int:run_pk>/requests/<int:request_pk>/": Fill(OBJECT, lambda own, w: [
        {"run_pk": run.pk, "request_pk": w.run.stored_requests.get().pk} for run in (own.run, w.run)]),
    "flows/runs/<int:run_pk>/stop/": Fill(OBJECT, _of(lambda w: {"run_pk": w.run.pk}), post_only=True),
    "flows/runs/<int:run_pk>/retry/": Fill(OBJECT, _of(lambda w: {"run_pk": w.run.pk})),  # GET: the confirmation page
    # alerts
    "alerts/": Fill(COMPANY),
    "alerts/<int:pk>/": Fill(OBJECT, _of(lambda w: {"pk": w.alert.pk})),
    "alerts/deliveries/<int:pk>/send-again/": Fill(OBJECT, _of(lambda w: {"pk": w.delivery.pk}), post_only=True),
    "alerts/rules/": Fill(COMPANY),
    "alerts/rules/<int:pk>/": Fill(OBJECT, _of(lambda w: {"pk": w.alert_rule.pk})),
    "alerts/rules/<int:pk>/remove/": Fill(OBJECT, _of(lambda w: {"pk": w.alert_rule.pk}), post_only=True),
    "alerts/channels/<int:pk>/remove/": Fill(OBJECT, _of(lambda w: {"pk": w.alert_channel.pk}), post_only=True),
    "alerts/channels/<int:pk>/new-secret/": Fill(OBJECT, _of(lambda w: {"pk": w.alert_channel.pk}), post_only=True),
    # marketplace
    "marketplace/": Fill(COMPANY),
    "marketplace/updates/<int:connector_pk>/": Fill(OBJECT, _of(lambda w: {"connector_pk": w.prebuilt.pk})),
    "marketplace/<slug:slug>/": Fill(GLOBAL, lambda own, w: [{"slug": w.listing.slug}]),
    "marketplace/<slug:slug>/install/": Fill(GLOBAL, lambda own, w: [{"slug": w.listing.slug}], post_only=True),
    # the Sandbox API: public, machine-to-machine, CSRF-exempt
    "sandbox/api/oauth/token": Fill(PUBLIC, csrf_exempt=True),
    "sandbox/api/oauth/authorize": Fill(PUBLIC),
    "sandbox/api/me": Fill(PUBLIC, csrf_exempt=True),
    "sandbox/api/orders": Fill(PUBLIC, csrf_exempt=True),
    "sandbox/api/orders/received": Fill(PUBLIC, csrf_exempt=True),
    "sandbox/api/products": Fill(PUBLIC, csrf_exempt=True),
    "sandbox/api/customers": Fill(PUBLIC, csrf_exempt=True),
    "sandbox/api/stock": Fill(PUBLIC, csrf_exempt=True),
    "sandbox/api/<path:rest>": Fill(PUBLIC, lambda own, w: [{"rest": "unknown/resource"}], csrf_exempt=True),
    # the page showing what the Sandbox received: shared by every company (the Sandbox belongs to none)
    "sandbox/received-orders/": Fill(GLOBAL),
    "sandbox/account/rotate/": Fill(COMPANY, post_only=True),
    # Prometheus's scrape: a bearer token (no token configured in the crawl: 404)
    "metrics": Fill(PUBLIC),
    # the Django admin's own pages
    "admin/": Fill(ADMIN),
    "admin/system-health/": Fill(ADMIN),
    "admin/login/": Fill(PUBLIC),
    "admin/logout/": Fill(ADMIN, post_only=True, logs_out=True),
    "admin/password_change/": Fill(ADMIN),
    "admin/password_change/done/": Fill(ADMIN),
    "admin/autocomplete/": Fill(ADMIN),
    "admin/jsi18n/": Fill(ADMIN),
    "admin/r/<path:content_type_id>/<path:object_id>/": Fill(
        ADMIN, lambda own, w: [{"content_type_id": _content_type_id(w.connector), "object_id": w.connector.pk}]
    ),
    "admin/^(?P<app_label>auth|patchworks_site|connectors|instances|flows|marketplace)/$": Fill(
        ADMIN,
        lambda own, w: [{"app_label": label} for label in ("auth", "patchworks_site", "connectors", "instances", "flows", "marketplace")],
    ),
    "admin/(?P<url>.*)$": Fill(ADMIN, lambda own, w: [{"url": "no/such/page/"}]),
    "admin/patchworks_site/user/<id>/password/": Fill(ADMIN, _of(lambda w: {"id": w.users[Role.ADMINISTRATOR].pk})),
}

# Every registered model gets the same six admin routes, filled with the other
# company's object. The list is explicit: registering a new model without
# adding it here leaves its routes uncovered (and the coverage test fails).
ADMIN_MODELS = [
    "auth.group",
    "patchworks_site.company",
    "patchworks_site.user",
    "patchworks_site.auditentry",
    "connectors.connector",
    "connectors.authmethod",
    "connectors.endpoint",
    "connectors.connectorchange",
    "instances.instance",
    "instances.connectionpool",
    "instances.credentialcheck",
    "flows.processflow",
    "flows.flowrun",
    "flows.flowschedule",
    "flows.periodicjobrun",
    "marketplace.listing",
    "marketplace.listingversion",
    "marketplace.installation",
]


def _admin_object(label: str) -> Callable[[World, World], list[dict]]:
    return lambda own, w: [{"object_id": w.admin_objects()[label].pk}]


for _label in ADMIN_MODELS:
    _app, _model = _label.split(".")
    _base = f"admin/{_app}/{_model}/"
    ROUTES[_base] = Fill(ADMIN)
    ROUTES[_base + "add/"] = Fill(ADMIN)
    for _suffix in ("<path:object_id>/history/", "<path:object_id>/delete/", "<path:object_id>/change/", "<path:object_id>/"):
        ROUTES[_base + _suffix] = Fill(ADMIN, _admin_object(_label))


def _content_type_id(obj) -> int:
    from django.contrib.contenttypes.models import ContentType

    return ContentType.objects.get_for_model(obj).pk


def registered_admin_models() -> set[str]:
    return {model._meta.label_lower for model in admin.site._registry}


def requests_for(own: World, other: World) -> list[tuple[Route, Fill, str]]:
    """(route, fill, url) for every route of the project, filled with `other`'s ids."""
    out = []
    for route in enumerate_routes():
        fill = ROUTES[route.route]
        for kwargs in fill.kwargs(own, other):
            out.append((route, fill, route.url(kwargs)))
    return out
