"""Recorded requests and responses are redacted before they are stored."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import pytest
from django.db import models
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug import Response

from instances import checks
from instances.models import CredentialCheck, Instance
from instances.redaction import REDACTED, is_sensitive, redact_exchange
from tests.manifest_parts import basic_method

SECRET = "pa55/w0rd+key=9"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# Base64 works in 3-byte groups: user names of 4, 5 and 6 bytes with the colon
# put the secret at each of the three alignments inside base64("user:secret").
USERNAMES = ["ada", "anna", "alice"]


def spellings(secret: str) -> dict[str, str]:
    """Every way the secret could appear on the wire."""
    return {
        "plain": secret,
        "url-encoded": quote(secret, safe=""),
        "form-encoded": quote_plus(secret),
        "base64": b64(secret),
        **{f"basic auth pair for {user}": b64(f"{user}:{secret}") for user in USERNAMES},
    }


def record(**overrides) -> dict:
    return {
        "request_method": "GET",
        "request_url": "https://api.example.com/v1/orders?page=2",
        "request_headers": {"Accept": "application/json"},
        "request_body": "",
        "response_status": 200,
        "response_headers": {"Content-Type": "application/json"},
        "response_body": "",
        "response_truncated": False,
        "duration_ms": 12,
        "error": "",
        **overrides,
    }


def assert_no_secret(value, secret: str = SECRET) -> None:
    text = json.dumps(value, ensure_ascii=False) + str(value)
    for name, spelling in spellings(secret).items():
        assert spelling not in text, f"the secret ({name}) is still in {value!r}"


# --- by name -------------------------------------------------------------------------


def test_credential_request_headers_are_redacted_by_name():
    out = redact_exchange(
        record(request_headers={
            "Authorization": "Bearer abc.def", "Cookie": "sid=123", "X-Api-Key": "k-1",
            "Proxy-Authorization": "Basic eHl6", "X-Session-Id": "s-9", "Accept": "application/json",
        }),
        [],
    )

    assert out["request_headers"] == {
        "Authorization": REDACTED, "Cookie": REDACTED, "X-Api-Key": REDACTED,
        "Proxy-Authorization": REDACTED, "X-Session-Id": REDACTED, "Accept": "application/json",
    }


def test_credential_response_headers_are_redacted_by_name():
    out = redact_exchange(
        record(response_headers={
            "Set-Cookie": "sid=abc; HttpOnly", "X-Auth-Token": "t-1", "Content-Type": "application/json", "X-Request-Id": "r-42",
        }),
        [],
    )

    assert out["response_headers"] == {
        "Set-Cookie": REDACTED, "X-Auth-Token": REDACTED, "Content-Type": "application/json", "X-Request-Id": "r-42",
    }


def test_token_password_and_secret_fields_of_a_json_body_are_redacted_at_any_depth():
    body = {
        "access_token": "at-1", "refresh_token": "rt-1", "expires_in": 3600,
        "user": {"name": "Ada", "password": "hunter2", "roles": ["admin"]},
        "apps": [{"client_secret": "cs-1", "client_id": "app-1"}],
    }

    out = redact_exchange(record(response_body=json.dumps(body)), [])

    assert json.loads(out["response_body"]) == {
        "access_token": REDACTED, "refresh_token": REDACTED, "expires_in": 3600,
        "user": {"name": "Ada", "password": REDACTED, "roles": ["admin"]},
        "apps": [{"client_secret": REDACTED, "client_id": "app-1"}],
    }


def test_token_fields_of_a_json_body_cut_short_for_storage_are_still_redacted():
    # Large bodies are stored cut at 16 KB, which leaves JSON that no longer parses.
    cut = '{"access_token": "at-123456", "user": {"password" : "hunter2", "name": "Ada"}, "refresh_token": "rt-98'

    out = redact_exchange(record(response_body=cut, response_truncated=True), [])

    for value in ("at-123456", "hunter2", "rt-98"):
        assert value not in out["response_body"]
    assert f'"access_token": "{REDACTED}"' in out["response_body"]
    assert '"name": "Ada"' in out["response_body"]


def test_token_password_and_secret_fields_of_a_form_body_are_redacted():
    out = redact_exchange(
        record(
            request_method="POST",
            request_headers={"Content-Type": "application/x-www-form-urlencoded"},
            request_body="grant_type=client_credentials&client_secret=cs-1&password=hunter2&scope=orders.read",
        ),
        [],
    )

    assert parse_qs(out["request_body"]) == {
        "grant_type": ["client_credentials"], "client_secret": [REDACTED], "password": [REDACTED], "scope": ["orders.read"],
    }


def test_token_key_and_password_query_parameters_are_redacted():
    out = redact_exchange(
        record(request_url="https://api.example.com/v1/orders?api_key=k-1&access_token=t-1&password=p-1&page=2&status=open"),
        [],
    )

    parts = urlsplit(out["request_url"])
    assert parts.path == "/v1/orders"
    assert parse_qs(parts.query) == {
        "api_key": [REDACTED], "access_token": [REDACTED], "password": [REDACTED], "page": ["2"], "status": ["open"],
    }


def test_user_info_in_a_url_is_redacted():
    out = redact_exchange(record(request_url="https://bob:hunter2@api.example.com/v1/orders"), [])

    assert out["request_url"] == f"https://{REDACTED}@api.example.com/v1/orders"


# --- by value ----------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", spellings(SECRET).keys())
def test_the_instances_secret_is_redacted_wherever_it_appears(spelling):
    value = spellings(SECRET)[spelling]
    out = redact_exchange(
        record(
            request_url=f"https://api.example.com/v1/check/{quote(value, safe='')}?q={quote(value, safe='')}&page=2",
            request_headers={"X-Echo": f"was {value}", "Accept": "application/json"},
            request_body=f"note: {value}",
            response_headers={"X-Seen": value, "Content-Type": "text/plain"},
            response_body=json.dumps({"received": value, "count": 3}),
            error=f"The API rejected {value}.",
        ),
        [SECRET],
    )

    assert_no_secret(out)


@pytest.mark.parametrize("username", USERNAMES)
def test_the_basic_auth_pair_is_redacted_even_when_the_username_is_not_secret(username):
    pair = b64(f"{username}:{SECRET}")
    out = redact_exchange(
        record(response_body=json.dumps({"auth_seen": f"Basic {pair}", "account": "Acme"}), error=f"seen {pair}"),
        [SECRET],
    )

    assert_no_secret(out)
    assert json.loads(out["response_body"])["account"] == "Acme"


def test_data_that_is_not_secret_is_left_intact():
    out = redact_exchange(
        record(
            request_url="https://api.example.com/v1/orders?page=2&status=open",
            request_headers={"Accept": "application/json", "X-Tenant": "acme-eu"},
            response_headers={"Content-Type": "application/json", "X-RateLimit-Remaining": "59"},
            response_body=json.dumps({"orders": [{"id": 1, "total": "9.99"}], "next": "/v1/orders?page=3"}),
            error="",
        ),
        [SECRET],
    )

    assert out["request_url"] == "https://api.example.com/v1/orders?page=2&status=open"
    assert out["request_headers"] == {"Accept": "application/json", "X-Tenant": "acme-eu"}
    assert out["response_headers"] == {"Content-Type": "application/json", "X-RateLimit-Remaining": "59"}
    assert json.loads(out["response_body"]) == {"orders": [{"id": 1, "total": "9.99"}], "next": "/v1/orders?page=3"}
    assert out["response_status"] == 200 and out["duration_ms"] == 12


# --- end to end -----------------------------------------------------------------------------


BASIC_ECHO = basic_method(test_request={"path": "/me?check={{password}}"})


def test_a_recorded_check_holds_no_secret_even_when_the_api_echoes_it(company, make_connector, make_instance, httpserver):
    def echo(request):
        auth = request.headers.get("Authorization", "")
        body = {
            "message": f"Password {SECRET} is not valid for this account",
            "you_sent": SECRET,
            "auth_seen": auth,
            "encoded": quote(SECRET, safe=""),
            "as_base64": b64(SECRET),
            "account": "Acme Retail",
        }
        return Response(
            json.dumps(body), status=401, content_type="application/json",
            headers={"X-Echo-Password": SECRET, "X-Echo-Auth": auth, "Set-Cookie": f"last={quote(SECRET)}"},
        )

    httpserver.expect_request("/api/me").respond_with_handler(echo)
    connector = make_connector(company, base_url=httpserver.url_for("/api"), auth_methods=[BASIC_ECHO])
    instance = make_instance(connector, values={"username": "ada"}, secrets={"password": SECRET})

    result, check = checks.check_and_record(
        connector=connector, auth_method=instance.auth_method, values=instance.values,
        secrets=instance.get_secrets(), instance=instance,
    )

    # The API really did receive (and echo) the secret ...
    [(sent, answered)] = httpserver.log
    assert sent.args["check"] == SECRET
    assert SECRET in answered.get_data(as_text=True)
    assert not result.ok
    # ... yet nothing stored carries it.
    stored = CredentialCheck.objects.get(pk=check.pk)
    text_columns = [
        f for f in CredentialCheck._meta.concrete_fields
        if isinstance(f, (models.CharField, models.TextField, models.JSONField))
    ]
    assert {f.name for f in text_columns} >= {
        "message", "request_url", "request_headers", "request_body", "response_headers", "response_body", "error",
    }
    for column in text_columns:
        assert_no_secret(getattr(stored, column.name))
    assert_no_secret(Instance.objects.get(pk=instance.pk).last_check_message)
    # What is not secret is still there to help the operator.
    assert stored.message.startswith("The credentials were refused: 401 Unauthorized.")
    assert json.loads(stored.response_body)["account"] == "Acme Retail"
    assert stored.request_headers["Authorization"] == REDACTED


# --- JSON bodies with nothing named like a secret (kept as sent) -------------------------------

FUZZ_SECRET = "Zq9/xW7+v"
NAMES = ["id", "total", "Token", "api-key", "apiKey", "PRIVATE_KEY", "passwd", "sessionId", "refs", "İd", "note",
         "customer", "ſecret", "client_assertion", "tok/en", 'to"ken']
values = st.recursive(
    st.none() | st.integers() | st.sampled_from(["plain", FUZZ_SECRET, f"was {FUZZ_SECRET}", "a/b", "é", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=4),
    max_leaves=12,
)
WRITERS = {
    "ascii": json.dumps,
    "utf-8": lambda d: json.dumps(d, ensure_ascii=False),
    "compact": lambda d: json.dumps(d, separators=(",", ":"), ensure_ascii=False),
    "escaped slashes": lambda d: json.dumps(d, ensure_ascii=False).replace("/", "\\/"),
}


def redacted_as_expected(value):
    """What redaction must make of a parsed document: sensitive names' values gone, the secret gone from strings."""
    if isinstance(value, dict):
        return {k: REDACTED if is_sensitive(k) and v not in (None, "") else redacted_as_expected(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redacted_as_expected(v) for v in value]
    if isinstance(value, str):
        return value.replace(FUZZ_SECRET, REDACTED)
    return value


@pytest.mark.parametrize("writer", WRITERS)
@given(document=st.dictionaries(st.sampled_from(NAMES), values, max_size=5))
@settings(max_examples=150, deadline=None)
def test_a_json_body_is_redacted_the_same_whether_kept_as_sent_or_written_again(writer, document):
    """A body naming nothing sensitive is stored as the API sent it; either way no secret and no sensitive value stays."""
    text = WRITERS[writer](document)

    out = redact_exchange(record(response_body=text), [FUZZ_SECRET])

    assert json.loads(out["response_body"]) == redacted_as_expected(document)
    assert_no_secret(out, FUZZ_SECRET)


def test_a_page_of_records_naming_nothing_sensitive_is_stored_as_the_api_sent_it():
    body = '{"orders": [{"id": 1, "ref": "SO-1", "url": "https:\\/\\/shop.example\\/o\\/1"}],  "next": null}'

    out = redact_exchange(record(response_body=body), [SECRET])

    assert out["response_body"] == body
