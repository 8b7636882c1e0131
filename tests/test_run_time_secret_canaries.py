"""Secrets and tokens obtained during a run never come back out of the run, in any spelling.

An API that echoes every request header and query parameter it receives into
its records (plain, JSON-escaped, Base64, URL-encoded, as Python's repr) is
read page by page and written to by a flow, once per authentication method:
basic, a token in a header, a token in the query, a bearer token, OAuth 2
client credentials, OAuth 2 authorisation code (the first access token is
refused with a 401 on page 2 and the refresh hands out a new access and
refresh token in the middle of the run) and OAuth 1. The token endpoint's
answers carry an id_token and a secret-looking field of its own too, and the
API repeats the latest answer in its records. Every secret and token is a
canary (see tests/test_secret_canaries.py) with a quote, a backslash, a
non-ASCII character, "/" and "+".

After the runs, no spelling of any canary is in: the database (the run and
shape rows with their payload samples, warnings, errors, failure reasons and
failed exchanges, credential checks; every table), the run page and its htmx
timeline as a Read-only user and as an Administrator, the run logs, the flow
and instance pages, the connector's manifest export, the Django admin (the run
with its shapes, credential checks), the application's log, the task queue's
stored payloads, and with REDIS_URL set every key and value of the Redis DB.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from django.contrib import admin as django_admin
from django.test import Client
from huey.contrib.djhuey import HUEY
from werkzeug import Request, Response

from connectors import editing
from connectors.models import Connector, ConnectorChange
from flows import execution
from flows.models import FlowRun, FlowRunShape, RunStatus
from instances.models import CredentialCheck, Instance
from patchworks_site.models import Role, User
from tests import crawl
from tests.flow_helpers import connection, flow_of
from tests.test_secret_canaries import Canaries, _database_text, _summary, find_leaks

MARKER = "RUNCANARY"
ECHO_USER = "echo-user"


def echo_manifest(base_url: str) -> dict:
    """The crawl's connector with every auth type, a paginated receive endpoint and two send endpoints."""
    manifest = crawl.connector_manifest(MARKER, base_url)
    manifest["name"] = f"{MARKER} Echo API"
    for method in manifest["auth_methods"]:
        if method["key"] == "oauth1":
            # The names the OAuth 1 signer reads (token_id is the resource owner's token).
            method["variables"] = [
                {"key": "consumer_key", "label": "Consumer key", "required": True, "secret": False},
                {"key": "consumer_secret", "label": "Consumer secret", "required": True, "secret": True},
                {"key": "token_id", "label": "Token", "required": True, "secret": True},
                {"key": "token_secret", "label": "Token secret", "required": True, "secret": True},
            ]
    manifest["endpoints"] = [
        {"key": "orders", "name": "Orders", "entity": "Order", "direction": "receive", "method": "GET",
         "path": "/orders", "records_path": "records",
         "pagination": {"style": "page_number", "page_parameter": "page"}},
        {"key": "stock", "name": "Stock", "entity": "Stock", "direction": "send", "method": "PUT", "path": "/stock"},
        {"key": "reject", "name": "Reject", "entity": "Stock", "direction": "send", "method": "POST", "path": "/reject"},
    ]
    return manifest


@dataclass
class EchoApi:
    """A third party that repeats back everything it was sent, and hands out canary tokens."""

    canaries: Canaries
    rejected: set[str] = field(default_factory=set)  # Authorization values refused on page 2 (then refreshed)
    last_answer: dict = field(default_factory=dict)  # the token endpoint's latest answer, repeated in records
    issued: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # every Authorization value and query value that arrived

    def token(self, label: str) -> str:
        # "/" and "+" change in URL-encoding and in PHP's JSON; the canary adds '"', "\" and "é".
        token = self.canaries.new(f"x/+{label}")
        self.issued.append(token)
        return token

    def saw(self, request: Request) -> list[str]:
        """Every header, query and form value the request carried (Basic credentials decoded too)."""
        sent = [v for v in [*request.headers.values(), *request.args.values(), *request.form.values()] if v]
        self.seen |= set(sent)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Basic":
            self.seen |= set(base64.b64decode(credentials).decode().split(":", 1))
        return sent

    def echoed(self, request: Request) -> dict:
        authorization = request.headers.get("Authorization", "")
        sent = self.saw(request)
        return {
            "you_sent": authorization,
            "headers": dict(request.headers),
            "query": dict(request.args),
            "json_escaped": json.dumps(sent),
            "base64": [base64.b64encode(v.encode("latin-1", "replace")).decode() for v in sent],
            "url_encoded": [quote(v, safe="") for v in sent],
            "python_repr": repr(sent),
            "token_answer": dict(self.last_answer),
        }

    def respond(self, data: object, status: int = 200) -> Response:
        return Response(json.dumps(data), status, content_type="application/json")

    def orders(self, request: Request) -> Response:
        page = int(request.args.get("page", "1"))
        authorization = request.headers.get("Authorization", "")
        if page == 2 and authorization in self.rejected:
            return self.respond({"message": f"Token expired: {authorization}", **self.echoed(request)}, 401)
        count = {1: 1, 2: 2}.get(page, 0)  # the sample keeps 3 items: page 2's are in it
        return self.respond({"records": [{"n": f"{page}.{i}", **self.echoed(request)} for i in range(count)]})

    def stock(self, request: Request) -> Response:
        item = request.get_json(silent=True) or {}
        if str(item.get("n")) == "1.0":
            # Refused, naming what it got (a warning: the shape lets unsuccessful answers through).
            return self.respond({"message": f"Refused for {request.headers.get('Authorization', '')}"}, 422)
        return self.respond({"stored": item.get("n"), **self.echoed(request)}, 200)

    def reject(self, request: Request) -> Response:
        return self.respond({"message": f"Not allowed with {request.headers.get('Authorization', '')}",
                             **self.echoed(request)}, 422)

    def oauth_token(self, request: Request) -> Response:
        grant = request.form.get("grant_type", "")
        self.saw(request)
        if grant == "refresh_token" and request.form.get("refresh_token") not in self.issued:
            return self.respond({"error": "invalid_grant"}, 400)
        answer = {
            "access_token": self.token(f"{grant}-access-token"),
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "read",
            "id_token": self.token(f"{grant}-id-token"),
            "session_key": self.token(f"{grant}-session-key"),  # any secret-looking field of the answer
        }
        if grant == "refresh_token":
            answer["refresh_token"] = self.token("rotated-refresh-token")
        self.last_answer = answer
        return self.respond(answer)


@pytest.fixture
def echo(httpserver) -> EchoApi:
    api = EchoApi(Canaries())
    httpserver.expect_request("/orders").respond_with_handler(api.orders)
    httpserver.expect_request("/stock", method="PUT").respond_with_handler(api.stock)
    httpserver.expect_request("/reject", method="POST").respond_with_handler(api.reject)
    httpserver.expect_request("/oauth/token", method="POST").respond_with_handler(api.oauth_token)
    return api


def instances_of(connector: Connector, api: EchoApi) -> list[Instance]:
    """One instance per authentication method, every secret a canary."""
    secret_keys = {
        "basic": ["password"], "token_header": ["api_key"], "token_query": ["query_key"], "bearer": ["bearer_token"],
        "oauth2_cc": ["client_secret"], "oauth2_code": ["access_token", "refresh_token"],
        "oauth1": ["consumer_secret", "token_id", "token_secret"],
    }
    plain = {"basic": {"username": ECHO_USER}, "oauth2_cc": {"client_id": "echo-client"},
             "oauth1": {"consumer_key": "echo-consumer"}}
    instances = []
    for key, secrets in secret_keys.items():
        instance = Instance.with_connector_defaults(
            connector, name=f"{MARKER} {key}", auth_method=connector.auth_methods.get(key=key),
            values=plain.get(key, {}),
        )
        if key == "oauth2_code":
            values = {"access_token": api.token("first-access-token"), "refresh_token": api.token("first-refresh-token")}
            api.rejected.add(f"Bearer {values['access_token']}")
        else:
            values = {name: api.canaries.new(f"{key}-{name}") for name in secrets}
        instance.set_secrets(values)
        instance.save()
        instances.append(instance)
    return instances


def queue_texts() -> list[tuple[str, str]]:
    """Everything huey's storage holds: queued tasks, scheduled tasks, results (bytes as Latin-1 text)."""
    storage = HUEY.storage
    items = [*storage.enqueued_items(), *storage.scheduled_items(), *storage.result_items().values()]
    return [("task queue", item.decode("latin-1") if isinstance(item, bytes) else str(item)) for item in items]


def redis_texts() -> list[tuple[str, str]]:
    """Every key and value of the Redis DB the tests use (keys and values as Latin-1 text)."""
    import redis

    server = redis.Redis.from_url(os.environ["REDIS_URL"])
    out = []
    for key in server.scan_iter(count=1000):
        kind = server.type(key).decode()
        if kind == "string":
            values = [server.get(key)]
        elif kind == "hash":
            values = [part for pair in server.hgetall(key).items() for part in pair]
        elif kind == "list":
            values = server.lrange(key, 0, -1)
        elif kind == "set":
            values = list(server.smembers(key))
        elif kind == "zset":
            values = server.zrange(key, 0, -1)
        else:
            values = []
        name = key.decode("latin-1")
        out.append((f"redis key {name}", name))
        out += [(f"redis value of {name}", (v or b"").decode("latin-1")) for v in values]
    return out


def page_texts(world: crawl.World, connector: Connector, instances: list[Instance], runs: list[FlowRun]):
    """The run pages, timelines and logs as a Read-only user and an Administrator, and the Django admin."""
    texts = []
    urls = ["/flows/", "/flows/runs/", "/audit/", f"/connectors/{connector.pk}/manifest.yaml",
            f"/connectors/{connector.pk}/manifest/", "/connectors/"]
    for run in runs:
        urls += [f"/flows/runs/{run.pk}/", f"/flows/{run.flow_id}/", f"/flows/{run.flow_id}/runs/"]
    for instance in instances:
        urls += [f"/instances/{instance.pk}/?tab={tab}" for tab in ("details", "authentication", "request", "response")]
    timeline = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "run-timeline"}
    for role in (Role.READ_ONLY, Role.ADMINISTRATOR):
        client = Client()
        client.force_login(world.users[role])
        for url in urls:
            response = client.get(url)
            assert response.status_code in (200, 403), (role, url)  # the audit log is for Administrators
            texts.append((f"{role} GET {url}", response.content.decode(errors="replace")))
        for run in runs:
            response = client.get(f"/flows/runs/{run.pk}/", **timeline)
            assert response.status_code == 200 and "<html" not in response.content.decode()
            texts.append((f"{role} timeline of run {run.pk}", response.content.decode(errors="replace")))

    staff = Client()
    staff.force_login(User.objects.create_superuser("run-canary-superuser", password=None))
    admin_urls = ["/admin/"]
    for model in django_admin.site._registry:
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        admin_urls += [base, *(f"{base}{pk}/change/" for pk in model._default_manager.values_list("pk", flat=True))]
    assert any(f"/admin/flows/flowrun/{runs[0].pk}/change/" == url for url in admin_urls)
    for url in admin_urls:
        response = staff.get(url)
        assert response.status_code in (200, 302), url
        texts.append((f"admin GET {url}", response.content.decode(errors="replace")))
    return texts


def test_no_secret_or_token_obtained_during_a_run_comes_back_out(
    db, httpserver, echo, caplog, django_capture_on_commit_callbacks, settings
):
    caplog.set_level(logging.DEBUG)
    settings.FLOW_RETRY_DELAY_SECONDS = 0
    world = crawl.build_world(MARKER, base_url=httpserver.url_for("").rstrip("/"))
    admin_user = world.users[Role.ADMINISTRATOR]
    connector = Connector(company=world.company)
    editing.save_definition(connector, echo_manifest(httpserver.url_for("").rstrip("/")), user=admin_user,
                            action=ConnectorChange.Action.CREATED, summary="created")
    instances = instances_of(connector, echo)
    HUEY.flush()
    texts: list[tuple[str, str]] = []
    runs = []
    admin = Client()
    admin.force_login(admin_user)
    for instance in instances:
        flow = flow_of(
            world.company,
            connection(instance, "orders"),
            connection(instance, "stock", allow_unsuccessful=True),
            connection(instance, "reject"),
            name=f"{MARKER} flow {instance.auth_method.key}",
        )
        with django_capture_on_commit_callbacks(execute=True):
            response = admin.post(f"/flows/{flow.pk}/run/")
        run = FlowRun.objects.get(flow=flow)
        assert response["Location"] == f"/flows/runs/{run.pk}/"
        # The queue holds the run's primary key, never anything of the instance.
        (task,) = HUEY.pending()
        assert task.args == (run.pk,)
        texts += queue_texts()
        HUEY.flush()
        echo.last_answer = {}  # what the API repeats of the token endpoint's answers is this run's
        run = execution.execute(run.pk)
        runs.append(run)
        # Each run read both pages, sent to both send endpoints and failed at the last one.
        shapes = list(FlowRunShape.objects.filter(run=run))
        assert [s.items_out for s in shapes[:2]] == [3, 2], (instance.auth_method.key, run.failure_reason)
        assert run.status == RunStatus.FAILED and "none of the 2 item(s) was accepted" in run.failure_reason
        assert run.warnings and shapes[0].payload_sample and shapes[1].payload_sample and shapes[2].failed_exchanges
    # The tokens went out and came back in the records: the middle-of-run refresh happened.
    assert any(label.endswith("rotated-refresh-token") for label in echo.canaries.values.values())
    refreshed = next(i for i in instances if i.auth_method.key == "oauth2_code")
    refreshed.refresh_from_db()
    assert refreshed.get_secrets()["access_token"] == next(
        t for t, label in echo.canaries.values.items() if label.endswith("refresh_token-access-token")
    )
    assert CredentialCheck.objects.filter(instance=refreshed, message="Access token refreshed.").exists()
    # Every canary reached the API (so each could have leaked), except what never goes out: the
    # OAuth 1 secrets (they sign), and what the token endpoint answered besides the access tokens.
    unsent = {label for canary, label in echo.canaries.values.items()
              if not any(canary in value or quote(canary, safe="") in value for value in echo.seen)}
    never_sent = {"oauth1-consumer_secret", "oauth1-token_secret"}
    assert unsent - never_sent == {
        label for label in echo.canaries.values.values()
        if label.endswith(("id-token", "session-key", "rotated-refresh-token"))
    }

    texts += page_texts(world, connector, instances, runs)
    texts += _database_text()
    texts += queue_texts()
    if os.environ.get("REDIS_URL"):
        texts += redis_texts()
    texts += [(f"log {r.name}", f"{r.getMessage()} {r.exc_text or ''}")
              for r in caplog.records if not r.name.startswith("werkzeug")]

    index = echo.canaries.index()
    unique = {text: where for where, text in reversed(texts) if text}
    leaks = [f"{where}: {leak}" for text, where in unique.items() for leak in find_leaks(text, index)]
    places = sorted({leak.split(": ", 1)[0] for leak in leaks})
    assert not leaks, f"leaks in {len(places)} places: {places[:60]}\n" + _summary(leaks)
    assert len(echo.canaries.values) == 17  # 8 stored secrets, 9 tokens the token endpoint issued


# --- the parts: late tokens, token answers, spellings ------------------------------------


def test_the_run_s_redaction_covers_a_token_obtained_after_the_run_started(company, make_connector):
    from flows.shapes import Context
    from instances.outbound.client import InstanceClient

    connector = make_connector(company)
    client = InstanceClient(connector, connector.auth_methods.get(), {}, {"api_token": "stored-token-1234"})
    ctx = Context(run=None, reference_time=None, last_success=None, since=None, check=lambda: None,
                  clients={1: client})
    assert ctx.redact("stored-token-1234 late-token-5678") == "[redacted] late-token-5678"
    client._obtained({"access_token": "late-token-5678", "token_type": "Bearer", "expires_in": 3600})
    assert ctx.redact("Bearer stored-token-1234 late-token-5678") == "Bearer [redacted] [redacted]"
    assert client.redact("late-token-5678 in a message") == "[redacted] in a message"


def test_every_secret_looking_field_of_a_token_answer_is_a_secret():
    from instances.redaction import token_answer_secrets

    answer = {
        "access_token": "a-123", "refresh_token": "r-123", "id_token": "i-123", "token_type": "Bearer",
        "expires_in": 3600, "scope": "read write", "session_key": "s-123", "mac_key": "m-123",
        "user": {"name": "Ada", "api_key": "k-123"}, "instance_url": "https://example.com", "empty_token": "",
    }
    assert sorted(token_answer_secrets(answer)) == ["a-123", "i-123", "k-123", "r-123", "s-123"]
    assert token_answer_secrets("not an answer") == []


def test_a_form_encoded_token_answer_is_recorded_before_anything_stores_it(company, httpserver):
    from instances.outbound import auth
    from instances.outbound.client import InstanceClient
    from tests.oauth_helpers import provider_connector

    base = httpserver.url_for("").rstrip("/")
    connector = provider_connector(company, base)
    httpserver.expect_request("/token", method="POST").respond_with_data(
        "access_token=form-access-99&refresh_token=form-refresh-99&id_token=form-id-99&token_type=bearer",
        content_type="application/x-www-form-urlencoded",
    )
    client = InstanceClient(connector, connector.auth_methods.get(), {"client_id": "c"}, {"client_secret": "client-s"})
    answer = auth.token_request(client.token_endpoint(), {"grant_type": "refresh_token", "refresh_token": "x"})
    assert answer.token["access_token"] == "form-access-99" and not answer.problem
    assert {"form-access-99", "form-refresh-99", "form-id-99"} <= set(answer.obtained)
    stored = json.dumps(answer.exchange.redacted_record([*client.secret_values, *answer.obtained]))
    assert not [t for t in ("form-access-99", "form-refresh-99", "form-id-99") if t in stored], stored


TOKEN = 'Tok/en+9zQ\u00e9"\\\U0001f511x'  # "/", "+", non-ASCII (also outside the BMP), a quote, a backslash


@pytest.mark.parametrize("spelling", [
    json.dumps(TOKEN),  # \uXXXX, surrogate pairs
    json.dumps(TOKEN).replace("/", "\\/"),  # PHP
    re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m[1].upper(), json.dumps(TOKEN)),  # upper-case hex
    json.dumps(TOKEN, ensure_ascii=False),
    json.dumps(json.dumps(TOKEN)),  # a JSON string inside a JSON string
    quote(TOKEN, safe=""), quote(quote(TOKEN, safe=""), safe=""),  # OAuth 1 header, echoed URL-encoded
    base64.b64encode(f"Bearer {TOKEN}".encode()).decode(),
    base64.b64encode(f"Bearer {TOKEN}".encode()).decode().replace("/", "\\/"),
    base64.b64encode(f"someone:{TOKEN}".encode()).decode(),
    base64.urlsafe_b64encode(f"xy:{TOKEN}".encode()).decode(),
    base64.b64encode(f"Bearer {TOKEN}".encode().decode("latin-1").encode("utf-8")).decode(),
    base64.b64encode(f"Bearer {TOKEN[:10]}".encode("latin-1")).decode(),  # header bytes as sent
    repr(TOKEN),
])
def test_a_token_is_redacted_in_every_spelling_an_api_may_echo(spelling):
    from instances import redaction

    variants = redaction.secret_variants([TOKEN, TOKEN[:10]])
    for text in (f"you sent {spelling}!", json.dumps({"echo": f"you sent {spelling}!"})):
        scrubbed = redaction.scrub_text(text, redaction.in_json_text(variants))
        assert "Tok" not in scrubbed.replace("[redacted]", ""), (spelling, scrubbed)
