"""Canary secrets for every authentication type must never come back out, in any spelling.

A company's instances get unique canary credentials (with a quote, a backslash
and a non-ASCII character, so every encoding differs from the plain text).
Credential checks go through the new instance wizard, the settings page and
"check now" against an API that echoes what it received: plain, JSON-escaped,
Base64, URL-encoded, inside an error message, in headers, and cut at the
lengths the application stores. OAuth 2 token endpoints hand out canary access
and refresh tokens. Then every page, tab and htmx partial of the company, the
Django admin, the manifests, the audit log, the logs, the messages and a dump
of the whole database are searched for any spelling of any canary, including
any prefix of 8 characters or more.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import secrets
import string
from dataclasses import dataclass, field
from io import StringIO
from urllib.parse import quote, quote_plus, unquote

import pytest
from django.contrib.messages import get_messages
from django.contrib.sessions.models import Session
from django.core import signing
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils.html import escape
from werkzeug import Request, Response

from instances.models import Instance
from instances.outbound.client import RECORDED_BODY_CHARS
from instances.views import WIZARD_SALT
from patchworks_site.models import Role, User
from tests import crawl
from tests.wizard_helpers import run_wizard, settings_data

MARKER = "CANARYCO"
PREFIX_LENGTH = 8  # a prefix this long is already a leak; longer ones contain it
MESSAGE_DETAIL_CUT = 200  # the client quotes at most this much of an API's message
WIZARD_STATE = re.compile(r'(?:[?&]state=|name="state" value=")([^&"\'\s<>]+)')


# --- canaries and their spellings ------------------------------------------------------

RUN = re.compile(r"[A-Za-z0-9+/_\-%=.~]{8,}")
RUN_CHARS = set(string.ascii_letters + string.digits + "+/_-%=.~")


def _base64_fragments(raw: bytes) -> set[str]:
    """Base64 characters made only of `raw`'s bits, at each of the 3 byte alignments."""
    out = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + raw).decode()
        start = -(-8 * shift // 6)
        end = 8 * (shift + len(raw)) // 6
        fragment = encoded[start:end]
        if len(fragment) >= PREFIX_LENGTH:
            out |= {fragment, fragment.replace("+", "-").replace("/", "_")}
    return out


def spellings(canary: str) -> dict[str, set[str]]:
    """Encoding name -> the ways `canary` (or a leaking part of it) can be written."""
    raw = canary.encode()
    prefix = canary[:PREFIX_LENGTH]
    forms = {
        "plain": {canary},
        "prefix": {prefix},
        "url-encoded": {quote(canary, safe=""), quote(canary), quote_plus(canary)},
        "json-escaped": {
            json.dumps(canary)[1:-1],
            json.dumps(canary, ensure_ascii=False)[1:-1],
            json.dumps(json.dumps(canary)[1:-1])[1:-1],
        },
        "html-escaped": {escape(canary), html.escape(canary, quote=False)},
        # UTF-8 bytes read as Latin-1: how HTTP headers, and bodies without a charset, are decoded
        "utf8-as-latin1": {mojibake := raw.decode("latin-1"), json.dumps(mojibake)[1:-1], escape(mojibake)},
        "backslash-escaped": {repr(canary)[1:-1], canary.replace("\\", "\\\\")},
        "base64": {
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode(),
            base64.b64encode(raw).decode().rstrip("="),
        },
        "base64-fragment": _base64_fragments(raw) | _base64_fragments(prefix.encode()),
    }
    forms["base64-fragment"] |= {quote(f, safe="") for f in forms["base64-fragment"]}
    return forms


def new_canary(label: str) -> str:
    """Ten random letters and digits, then characters every encoding changes, then a label."""
    head = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(10))
    return f'{head}"\\é{label}'


@dataclass
class Canaries:
    values: dict[str, str] = field(default_factory=dict)  # canary -> label

    def new(self, label: str) -> str:
        canary = new_canary(label)
        self.values[canary] = label
        return canary

    def index(self) -> dict[str, list[tuple[str, str, str]]]:
        """First 8 characters -> (label, encoding, spelling) for every spelling of every canary."""
        index: dict[str, list[tuple[str, str, str]]] = {}
        for canary, label in self.values.items():
            for encoding, forms in spellings(canary).items():
                for form in forms:
                    assert len(form) >= PREFIX_LENGTH and set(form[:PREFIX_LENGTH]) <= RUN_CHARS, (encoding, form)
                    index.setdefault(form[:PREFIX_LENGTH], []).append((label, encoding, form))
        return index

    @property
    def encodings(self) -> list[str]:
        return list(spellings("x" * 12))


def _summary(leaks: list[str]) -> str:
    """How many leaks of each encoding, then the first few in full."""
    kinds: dict[str, int] = {}
    for leak in leaks:
        encoding = re.search(r"\(([a-z0-9-]+)\): \.\.\.", leak)
        kinds[encoding.group(1) if encoding else "?"] = kinds.get(encoding.group(1) if encoding else "?", 0) + 1
    return f"{len(leaks)} canary leaks {kinds}:\n" + "\n".join(leaks[:40])


def find_leaks(text: str, index: dict) -> list[str]:
    found = []
    for match in RUN.finditer(text):
        run = match.group()
        for i in range(len(run) - PREFIX_LENGTH + 1):
            for label, encoding, form in index.get(run[i : i + PREFIX_LENGTH], ()):
                if text.startswith(form, match.start() + i):
                    context = text[max(0, match.start() + i - 60) : match.start() + i + len(form) + 20]
                    found.append(f"{label} ({encoding}): ...{context!r}...")
    return found


# --- the echoing API -------------------------------------------------------------------

REFUSALS = ["json-message", "text", "message-cut", "body-cut"]


@dataclass
class EchoApi:
    """A third-party API that repeats back every credential it receives."""

    canaries: Canaries
    mode: str = "accept"  # "accept" or one of REFUSALS
    token_mode: str = "accept"  # the OAuth 2 token endpoint: "accept", "refuse", "no-access-token"
    issued: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # every credential value that reached the API

    def received(self, request: Request) -> list[str]:
        values = []
        authorization = request.headers.get("Authorization", "")
        if authorization:
            values.append(authorization)
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() == "basic":
                values.extend(base64.b64decode(credential).decode().split(":", 1))
            else:
                values.append(credential)
        values += [v for k, v in request.headers.items() if k.lower() == "x-api-key"]
        values += list(request.args.values()) + list(request.form.values())
        values = [v for v in values if v and v not in ("client_credentials",)]
        self.seen |= set(values)
        return values

    def echo(self, values: list[str]) -> tuple[dict, dict[str, str]]:
        body = {
            "plain": values,
            "json_escaped": json.dumps(values),
            "base64": [base64.b64encode(v.encode()).decode() for v in values],
            "url_encoded": [quote(v, safe="") for v in values],
            "python_repr": repr(values),  # as an API written in Python might format it
        }
        headers = {}
        for n, value in enumerate(values):
            headers[f"X-Echo-Base64-{n}"] = base64.b64encode(value.encode()).decode()
            headers[f"X-Echo-Url-{n}"] = quote(value, safe="")
            headers[f"X-Echo-Json-{n}"] = json.dumps(value)
            headers[f"X-Echo-Plain-{n}"] = value.encode().decode("latin-1")  # as a server would send UTF-8 bytes
        return body, headers

    def api(self, request: Request) -> Response:
        values = self.received(request)
        body, headers = self.echo(values)
        key = values[-1] if values else ""
        if self.mode == "accept":
            return Response(json.dumps({"account": "echo", **body}), 200, headers, content_type="application/json")
        if self.mode == "json-message":
            return Response(json.dumps({"message": f"Invalid API key {key}", **body}), 401, headers, content_type="application/json")
        if self.mode == "text":
            return Response(f"Invalid API key {key} (received {' '.join(values)})", 401, headers, content_type="text/plain")
        if self.mode == "message-cut":
            # the message is quoted up to 200 characters: the cut falls inside the key
            lead = "Invalid API key "
            message = lead + "x" * (MESSAGE_DETAIL_CUT - len(lead) - PREFIX_LENGTH - 3) + key
            return Response(json.dumps({"message": message}), 401, content_type="application/json")
        if self.mode == "body-cut":
            # the stored body is cut at RECORDED_BODY_CHARS: the cut falls inside the key
            text = "y" * (RECORDED_BODY_CHARS - PREFIX_LENGTH - 3) + key + " " + "z" * 100
            return Response(text, 401, content_type="text/plain")
        raise AssertionError(self.mode)

    def token(self, request: Request) -> Response:
        values = self.received(request)
        body, headers = self.echo(values)
        if self.token_mode == "refuse":
            secret = values[-1] if values else ""
            return Response(
                json.dumps({"message": f"Invalid client secret {secret}", **body}), 401, headers, content_type="application/json"
            )
        refresh = self.canaries.new("oauth2-refresh-token")
        self.issued.append(refresh)
        if self.token_mode == "no-access-token":
            return Response(json.dumps({"refresh_token": refresh, **body}), 200, headers, content_type="application/json")
        access = self.canaries.new("oauth2-access-token")
        self.issued.append(access)
        return Response(
            json.dumps({"access_token": access, "refresh_token": refresh, "token_type": "Bearer", "expires_in": 3600}),
            200, content_type="application/json",
        )


# --- the scenario ----------------------------------------------------------------------

# auth method key -> its secret variables (and non-secret values to send along)
AUTH = {
    "basic": (["password"], {"username": "echo-user"}),
    "token_header": (["api_key"], {}),
    "token_query": (["query_key"], {}),
    "bearer": (["bearer_token"], {}),
    "oauth2_cc": (["client_secret"], {"client_id": "echo-client"}),
    "oauth2_code": (["access_token", "refresh_token"], {}),
}
# Methods whose credentials are obtained by the Connect step (no form takes them).
CONNECTED = ["oauth2_code"]


@dataclass
class Observed:
    """Everything the application said along the way that is not a page crawled at the end."""

    texts: list[tuple[str, str]] = field(default_factory=list)

    def response(self, where: str, response) -> None:
        body = b"".join(response.streaming_content) if response.streaming else response.content
        self.texts.append((where, body.decode(errors="replace")))
        self.texts.append((f"{where} headers", str(response.headers)))
        self.texts.append((f"{where} messages", "\n".join(str(m) for m in get_messages(response.wsgi_request))))


@pytest.fixture
def echo(httpserver):
    canaries = Canaries()
    api = EchoApi(canaries)
    httpserver.expect_request("/oauth/token").respond_with_handler(api.token)
    httpserver.expect_request("/me").respond_with_handler(api.api)
    return api


def _credentials(method_key: str, canaries: Canaries, step: str) -> dict[str, str]:
    secret_keys, plain = AUTH[method_key]
    return {**plain, **{key: canaries.new(f"{method_key}-{key}-{step}") for key in secret_keys}}


def _settings_post(instance: Instance, method, credentials: dict[str, str]) -> dict:
    return {
        "name": instance.name, "time_zone": instance.time_zone, "date_format": instance.date_format,
        "rate_limit_amount": instance.rate_limit_amount, "rate_limit_unit": instance.rate_limit_unit,
        "auth_method": method.pk, **{f"var_{k}": v for k, v in credentials.items()},
    }


def _exercise(client: Client, world: crawl.World, api: EchoApi, observed: Observed) -> list[Instance]:
    """Wizard (refused, then accepted), settings updates (refused, then accepted), check now; per auth type."""
    connector = world.connector
    instances = []
    for method_key in AUTH:
        method = connector.auth_methods.get(key=method_key)
        if method_key in CONNECTED:
            continue  # its credentials come from the Connect step, not from a form: stored below
        name = f"{MARKER} {method_key}"
        for refusal in REFUSALS:
            api.mode = refusal
            response = run_wizard(client, connector, name=name, settings=settings_data(), auth_method=method,
                                  credentials=_credentials(method_key, api.canaries, f"wizard-{refusal}"))
            assert response.status_code == 422, (method_key, refusal)
            observed.response(f"wizard {method_key} refused ({refusal})", response)
        if method_key == "oauth2_cc":
            for token_mode in ("refuse", "no-access-token"):
                api.mode, api.token_mode = "accept", token_mode
                response = run_wizard(client, connector, name=name, settings=settings_data(), auth_method=method,
                                      credentials=_credentials(method_key, api.canaries, f"wizard-token-{token_mode}"))
                assert response.status_code == 422, token_mode
                observed.response(f"wizard {method_key} token {token_mode}", response)
            api.token_mode = "accept"
        assert not Instance.objects.filter(company=world.company, name=name).exists()

        api.mode = "accept"
        response = run_wizard(client, connector, name=name, settings=settings_data(), auth_method=method,
                              credentials=_credentials(method_key, api.canaries, "wizard-accepted"))
        assert response.status_code == 302, response.content.decode()[:3000]
        observed.response(f"wizard {method_key} accepted", response)
        instance = Instance.objects.get(company=world.company, name=name)
        instances.append(instance)

        url = f"/instances/{instance.pk}/"
        for refusal in REFUSALS:
            api.mode = refusal
            response = client.post(url, _settings_post(instance, method, _credentials(method_key, api.canaries, f"settings-{refusal}")))
            assert response.status_code == 422, (method_key, refusal)
            observed.response(f"settings {method_key} refused ({refusal})", response)
        api.mode = "accept"
        response = client.post(url, _settings_post(instance, method, _credentials(method_key, api.canaries, "settings-accepted")))
        assert response.status_code == 302, response.content.decode()[:3000]
        observed.response(f"settings {method_key} accepted", response)

        for mode in [*REFUSALS, "accept"]:
            api.mode = mode
            response = client.post(f"{url}check/")
            assert response.status_code == 302
            observed.response(f"check now {method_key} ({mode})", response)
            observed.response(f"check now {method_key} ({mode}) result page", client.get(response["Location"]))
        instance.refresh_from_db()
        assert instance.last_check_ok is True

    # OAuth 2 authorisation code: the Connect callback stores the tokens; stored here as it
    # would, then checked (a refused token is refreshed once through the echoing token endpoint).
    for method_key in CONNECTED:
        method = connector.auth_methods.get(key=method_key)
        instance = Instance.with_connector_defaults(connector, name=f"{MARKER} {method_key}", auth_method=method)
        instance.set_secrets(_credentials(method_key, api.canaries, "connected"))
        instance.save()
        instances.append(instance)
        for mode in [*REFUSALS, "accept"]:
            api.mode = mode
            response = client.post(f"/instances/{instance.pk}/check/")
            assert response.status_code == 302
            observed.response(f"check now {method_key} ({mode})", response)
            observed.response(f"check now {method_key} ({mode}) result page", client.get(response["Location"]))

    # OAuth 1 credentials can be stored (not checked yet): stored directly.
    oauth1 = connector.auth_methods.get(key="oauth1")
    instance = Instance.with_connector_defaults(connector, name=f"{MARKER} oauth1", auth_method=oauth1,
                                                values={"consumer_key": "echo-consumer"})
    instance.set_secrets({k: api.canaries.new(f"oauth1-{k}") for k in ("consumer_secret", "token", "token_secret")})
    instance.save()
    instances.append(instance)
    response = client.post(f"/instances/{instance.pk}/check/")
    observed.response("check now oauth1", response)
    # The Instance row the world started with holds a canary too.
    world.instance.set_secrets({"api_key": api.canaries.new("world-instance-api-key")})
    world.instance.save()
    return instances


def _pages(own: crawl.World, instances: list[Instance]) -> list[tuple[str, dict]]:
    """Every GET URL of the company with its own ids, every tab and htmx partial."""
    urls: list[tuple[str, dict]] = []
    for _route, fill, url in crawl.requests_for(own, own):
        if fill.kind != crawl.ADMIN and not fill.post_only:
            urls.append((url, {}))
    htmx = {"HTTP_HX_REQUEST": "true"}
    for instance in [own.instance, *instances]:
        base = f"/instances/{instance.pk}/"
        urls += [(f"{base}?tab={tab}", {}) for tab in ("details", "authentication", "request", "response")]
        urls += [(f"{base}?auth_method={m.pk}", htmx) for m in instance.connector.auth_methods.all()]
        urls.append((f"/connectors/?highlight=instance-{instance.pk}", {}))
    for connector in (own.connector, own.prebuilt):
        urls += [(f"/connectors/{connector.pk}/manifest.yaml", {}), (f"/connectors/{connector.pk}/manifest/", {}),
                 (f"/connectors/{connector.pk}/history/", {})]
    urls += [("/audit/?page=" + str(n), {}) for n in range(1, 6)]
    urls += [("/audit/?q=" + quote(word), {}) for word in ("instance", "updated", MARKER)]
    urls.append(("/connectors/", {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "connector-list"}))
    urls.append(("/audit/", {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "audit-list"}))
    return urls


def _admin_pages() -> list[str]:
    from django.contrib import admin

    urls = ["/admin/"]
    for model in admin.site._registry:
        meta = model._meta
        base = f"/admin/{meta.app_label}/{meta.model_name}/"
        urls.append(base)
        for pk in model._default_manager.values_list("pk", flat=True):
            urls.append(f"{base}{pk}/change/")
    return urls


def _signed_state(texts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The new instance wizard's signed (compressed) state, from every URL and form that carried it."""
    out = []
    for where, text in texts:
        for raw in set(WIZARD_STATE.findall(text)):
            try:
                state = signing.loads(unquote(html.unescape(raw)), salt=WIZARD_SALT)
            except signing.BadSignature:
                continue
            out.append((f"wizard state in {where}", json.dumps(state, ensure_ascii=False)))
    return out


def _database_text() -> list[tuple[str, str]]:
    """Every value of every column of every table, as text, and the decoded sessions."""
    out = [(f"session {s.pk}", json.dumps(s.get_decoded(), ensure_ascii=False, default=str)) for s in Session.objects.all()]
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    if value is None:
                        continue
                    if isinstance(value, memoryview):
                        value = bytes(value)
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", errors="replace")
                    elif isinstance(value, (dict, list)):
                        value = json.dumps(value, ensure_ascii=False)
                    out.append((f"table {table}", str(value)))
    return out


def test_no_canary_secret_comes_back_out_anywhere(db, httpserver, echo, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    own = crawl.build_world(MARKER, base_url=httpserver.url_for("").rstrip("/"))
    admin_user = own.users[Role.ADMINISTRATOR]
    client = Client()
    client.force_login(admin_user)
    observed = Observed()
    instances = _exercise(client, own, echo, observed)
    canaries = echo.canaries
    # The canaries really went out (a check that sent nothing could not leak anything).
    never_sent = ("oauth1-", "oauth2-refresh-token", "world-instance-")
    unsent = [label for canary, label in canaries.values.items()
              if canary not in echo.seen and not label.startswith(never_sent) and "-refresh_token-" not in label]
    assert not unsent, unsent
    assert any(label == "oauth2-access-token" for label in canaries.values.values())

    pages = _pages(own, instances)
    for url, headers in pages:
        response = client.get(url, **headers)
        assert response.status_code < 500, url
        observed.response(f"GET {url}", response)

    superuser = User.objects.create_superuser("canary-superuser", password=None)
    staff = Client()
    staff.force_login(superuser)
    admin_pages = _admin_pages()
    for url in admin_pages:
        response = staff.get(url)
        assert response.status_code in (200, 302), url
        observed.response(f"admin GET {url}", response)

    dump = StringIO()
    call_command("dumpdata", stdout=dump)
    texts = [*observed.texts, ("dumpdata", dump.getvalue()), *_database_text()]
    wizard_states = _signed_state(observed.texts)
    assert wizard_states, "the wizard's signed state was found and decoded"
    texts += wizard_states
    # The application's own log records; werkzeug's are the fake third-party API's access log.
    records = [r for r in caplog.records if not r.name.startswith("werkzeug")]
    texts += [(f"log {r.name}", f"{r.getMessage()} {r.exc_text or ''}") for r in records]

    index = canaries.index()
    unique = {text: where for where, text in reversed(texts) if text}  # the same text is searched once
    leaks = [f"{where}: {leak}" for text, where in unique.items() for leak in find_leaks(text, index)]
    assert not leaks, _summary(leaks)

    checked = len(pages) + len(admin_pages)
    with capsys.disabled():
        print(f"\nsecret canaries: {len(canaries.values)} canaries x {len(canaries.encodings)} encodings "
              f"({', '.join(canaries.encodings)}) in {checked} pages, {len(observed.texts)} responses, "
              f"the logs, dumpdata and {len(connection.introspection.table_names())} tables")
    assert len(canaries.values) > 50 and checked > 100


def test_the_search_finds_every_spelling_it_claims_to(echo):
    """The detector itself: each spelling of a canary, embedded in a page, is found; other text is not."""
    canaries = echo.canaries
    canary = canaries.new("self-test")
    index = canaries.index()
    for encoding, forms in spellings(canary).items():
        for form in forms:
            assert find_leaks(f"<p>before {form} after</p>", index), (encoding, form)
    basic = base64.b64encode(f"someone:{canary}".encode()).decode()
    assert find_leaks(f"Authorization: Basic {basic}", index)
    assert find_leaks(json.dumps({"message": f"Invalid API key {canary}"}), index)
    assert find_leaks(canary[: PREFIX_LENGTH + 1] + "…", index)
    assert not find_leaks(f"ends in {canary[-4:]} " + canary[1 : PREFIX_LENGTH] + " [redacted]", index)
