"""Texts derived from a third party's answer (messages, errors, flash messages) never show a secret.

An API that echoes the key it was sent ("Invalid API key <the key>") must not
turn check now, the wizard or the settings page into a way to read it back.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from django.contrib.messages import get_messages
from werkzeug import Response

from instances import checks
from instances.models import CredentialCheck, Instance
from instances.redaction import REDACTED, redact_exchange, scrub_cut, secret_variants, truncate
from tests.wizard_helpers import run_wizard

# A quote, a backslash, a slash, "<" and non-ASCII: every JSON escaping changes it.
KEY = 'k3y"with\\odd/<chars>-é-0123456789'


def token_connector(make_connector, company, httpserver, **overrides):
    return make_connector(
        company,
        base_url=httpserver.url_for("/api"),
        auth_methods=[
            {
                "key": "token",
                "name": "API token",
                "type": "token",
                "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
                "headers": {"X-Api-Key": "{{api_token}}"},
                "test_request": {"path": "/me"},
            }
        ],
        **overrides,
    )


def refuse_echoing(httpserver, escaped: bool = False) -> None:
    """401 whose message quotes the key: plain, or in every JSON escaping."""

    def handler(request):
        sent = request.headers.get("X-Api-Key", "")
        text = json.dumps({"message": f"Invalid API key {sent}"}, ensure_ascii=escaped)
        return Response(text, status=401, content_type="application/json")

    httpserver.expect_request("/api/me").respond_with_handler(handler)


def assert_no_key(text: str) -> None:
    for spelling in {KEY, json.dumps(KEY)[1:-1], json.dumps(KEY, ensure_ascii=False)[1:-1], quote(KEY, safe="")}:
        assert spelling not in text
    assert KEY[:8] not in text


@pytest.mark.parametrize("escaped", [False, True], ids=["utf-8 JSON", "ASCII-escaped JSON"])
def test_check_now_shows_the_apis_message_without_the_key_it_echoes(
    escaped, company, admin_client, make_connector, make_instance, httpserver
):
    refuse_echoing(httpserver, escaped)
    instance = make_instance(token_connector(make_connector, company, httpserver), secrets={"api_token": KEY})

    response = admin_client.post(f"/instances/{instance.pk}/check/", follow=True)

    [flash] = [str(m) for m in get_messages(response.wsgi_request)] or [""]
    page = response.content.decode()
    assert "The credentials were refused: 401 Unauthorized." in page
    assert f'The API said: "Invalid API key {REDACTED}".' in flash
    assert_no_key(flash)
    assert_no_key(page)
    instance.refresh_from_db()
    assert_no_key(instance.last_check_message)
    assert_no_key(CredentialCheck.objects.get(instance=instance).message)


def test_the_wizard_error_does_not_show_the_key_the_api_echoes(company, admin_client, make_connector, httpserver):
    refuse_echoing(httpserver)
    connector = token_connector(make_connector, company, httpserver)

    response = run_wizard(admin_client, connector, credentials={"api_token": KEY})

    assert response.status_code == 422
    page = response.content.decode()
    assert "Invalid API key [redacted]" in page
    assert_no_key(page)
    assert not Instance.objects.exists()


def test_the_settings_error_does_not_show_the_key_the_api_echoes(
    company, admin_client, make_connector, make_instance, httpserver
):
    refuse_echoing(httpserver)
    instance = make_instance(token_connector(make_connector, company, httpserver), secrets={"api_token": "old-key-123456"})
    data = {
        "name": instance.name, "time_zone": "UTC", "date_format": instance.date_format,
        "rate_limit_amount": instance.rate_limit_amount, "rate_limit_unit": instance.rate_limit_unit,
        "auth_method": instance.auth_method_id, "var_api_token": KEY,
    }

    response = admin_client.post(f"/instances/{instance.pk}/", data)

    assert response.status_code == 422
    page = response.content.decode()
    assert "Only valid credentials can be saved." in page
    assert_no_key(page)
    instance.refresh_from_db()
    assert instance.get_secrets() == {"api_token": "old-key-123456"}


def test_oauth_tokens_the_client_obtained_are_redacted_like_the_credentials(company, make_connector, make_instance, httpserver):
    access, refresh = "at-canary-0123456789abcdef", "rt-canary-0123456789abcdef"
    httpserver.expect_request("/api/oauth/token", method="POST").respond_with_json(
        {"access_token": access, "refresh_token": refresh, "token_type": "bearer", "expires_in": 3600}
    )
    httpserver.expect_request("/api/me").respond_with_handler(
        lambda request: Response(
            json.dumps({"message": f"token {request.headers['Authorization'].split()[-1]} expired; renew with {refresh}"}),
            status=401, content_type="application/json", headers={"X-Seen": access},
        )
    )
    connector = make_connector(
        company,
        base_url=httpserver.url_for("/api"),
        auth_methods=[
            {
                "key": "oauth",
                "name": "OAuth",
                "type": "oauth2_client_credentials",
                "token_url": httpserver.url_for("/api/oauth/token"),
                "variables": [
                    {"key": "client_id", "label": "Client id", "required": True},
                    {"key": "client_secret", "label": "Client secret", "required": True, "secret": True},
                ],
                "test_request": {"path": "/me"},
            }
        ],
    )
    instance = make_instance(connector, values={"client_id": "id-1"}, secrets={"client_secret": "cs-0123456789"})

    result, check = checks.recheck(instance)

    assert not result.ok
    stored = CredentialCheck.objects.get(pk=check.pk)
    everything = json.dumps(
        [result.message, stored.message, stored.response_body, stored.response_headers, stored.request_headers]
    )
    assert access not in everything and refresh not in everything
    assert f"token {REDACTED} expired; renew with {REDACTED}" in result.message


def test_a_secret_cut_by_the_storage_limit_leaves_no_part_of_itself():
    secret = "cut-canary-ABCDEFGHIJKLMNOP"
    for keep in range(8, len(secret)):
        body = "x" * (100 - keep) + secret + "y" * 50
        stored = redact_exchange(
            {
                "request_method": "GET", "request_url": "https://api.example.com/", "request_headers": {},
                "request_body": "", "response_status": 200, "response_headers": {"Content-Type": "text/plain"},
                "response_body": body[:100], "response_truncated": True, "duration_ms": 1, "error": "",
            },
            [secret],
            body_limit=80,
        )
        assert secret[:8] not in stored["response_body"]
        assert stored["response_truncated"]


def test_redacting_before_cutting_keeps_the_text_around_a_secret_readable():
    variants = secret_variants(["s3cr3t-value-42"])
    text = "before s3cr3t-value-42 after " + "z" * 100
    assert truncate(text, 40, variants) == f"before {REDACTED} after " + "z" * (40 - len(f"before {REDACTED} after "))
    assert truncate("short s3cr3t-value-42 tail", 16, variants) == f"short {REDACTED}"
    # A text that arrived already cut (the client stops reading at 1 MB) ends in part of the secret:
    assert scrub_cut("short s3cr3t-val", variants) == f"short {REDACTED}"
    assert scrub_cut("short s3cr3t-", variants) == "short s3cr3t-"  # 7 characters: not a prefix worth hiding
    assert truncate("nothing secret here", 10, variants) == "nothing se"


@pytest.mark.parametrize(
    "spelling",
    [
        json.dumps(KEY)[1:-1],
        json.dumps(KEY, ensure_ascii=False)[1:-1],
        json.dumps(KEY)[1:-1].replace("/", "\\/"),
        json.dumps(KEY)[1:-1].replace("\\u00e9", "\\u00E9"),
        json.dumps(KEY)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e"),
    ],
    ids=["json ascii", "json utf-8", "escaped slash", "upper-case hex", "html-safe (Go)"],
)
def test_a_secret_escaped_inside_a_json_string_is_redacted_even_when_the_body_is_cut(spelling):
    body = '{"echo": "' + spelling + '", "data": "' + "x" * 100  # cut: not parseable JSON
    stored = redact_exchange(
        {
            "request_method": "GET", "request_url": "https://api.example.com/", "request_headers": {},
            "request_body": "", "response_status": 200, "response_headers": {"Content-Type": "application/json"},
            "response_body": body, "response_truncated": True, "duration_ms": 1, "error": "",
        },
        [KEY],
    )
    assert spelling not in stored["response_body"]
    assert REDACTED in stored["response_body"]


def test_a_secret_cut_by_the_header_limit_leaves_no_part_of_itself():
    secret = "hdr-canary-ABCDEFGHIJKLMNOP"
    value = "v" * 4090 + secret + "w" * 100
    stored = redact_exchange(
        {
            "request_method": "GET", "request_url": "https://api.example.com/", "request_headers": {},
            "request_body": "", "response_status": 200, "response_headers": {"X-Debug": value},
            "response_body": "", "response_truncated": False, "duration_ms": 1, "error": "",
        },
        [secret],
        header_limit=4096,
    )
    assert secret[:6] not in stored["response_headers"]["X-Debug"]
    assert len(stored["response_headers"]["X-Debug"]) == 4096 + 1  # cut, with an ellipsis
