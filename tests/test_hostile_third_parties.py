"""Hostile third parties: APIs that hang, drip, lie, reset, bomb or redirect where they should not.

Each one is played by pytest-httpserver or a raw-socket server, and driven
through every page that checks credentials: the new instance wizard, the
instance settings (changed credentials) and "check now". Each must end within
the deadline with a clear, specific message, save nothing but the (clean)
record of the check, and leave the instance's secrets as they were.
"""

from __future__ import annotations

import gzip
import html
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from werkzeug import Response

from instances.models import CredentialCheck, Instance
from tests.raw_server import Conn, raw_server  # noqa: F401 - a fixture
from tests.wizard_helpers import run_wizard, settings_data, state_from

DEADLINE = 0.6  # OUTBOUND_TOTAL_TIMEOUT in these tests
SLACK = 1.0  # what a page may take beyond the deadline (rendering, saving, a loaded CI machine)
TOKEN_METHOD = {
    "key": "token", "name": "API token", "type": "token",
    "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
    "headers": {"X-Api-Key": "{{api_token}}"},
    "test_request": {"path": "/me"},
}
STORED_TOKEN = "stored-token-9876"
NEW_TOKEN = "new-token-1234"
# 1 GB of zeros in 1 MB: gzip members may follow one another in one body.
GZIP_BOMB = gzip.compress(b"\0" * (1 << 20), 9) * 1024


@pytest.fixture(autouse=True)
def short_deadline(settings):
    settings.OUTBOUND_TOTAL_TIMEOUT = DEADLINE
    settings.OUTBOUND_READ_TIMEOUT = 5  # longer than the deadline: the deadline is what must stop them
    settings.OUTBOUND_CONNECT_TIMEOUT = 2
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # logging in is not under test


def head(status: str = "200 OK", *headers: str, length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --- the third parties --------------------------------------------------------------
# Each returns the base URL of an API behaving badly.


def hangs(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.hang()

    return raw_server(script).url_for("/api")


def hangs_in_the_tls_handshake(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()  # the ClientHello, then nothing
        conn.hang()

    return raw_server(script).url_for("/api").replace("http://", "https://")


def drips_headers(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.drip(head("200 OK", "X-Padding: " + "a" * 200, length=2) + b"{}", every=0.05)

    return raw_server(script).url_for("/api")


def drips_body(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(head(length=200))
        conn.drip(b" " * 198 + b"{}", every=0.05)

    return raw_server(script).url_for("/api")


def resets_mid_body(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(head(length=1000) + b'{"id": 1, "padding": "')
        time.sleep(0.05)
        conn.reset()

    return raw_server(script).url_for("/api")


def promises_more_than_it_sends(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(head(length=1000) + b'{"id": 1}')

    return raw_server(script).url_for("/api")


def cuts_a_chunked_body(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(head("200 OK", "Transfer-Encoding: chunked") + b'9\r\n{"id": 1}\r\n')

    return raw_server(script).url_for("/api")


def answers_in_garbage(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n")

    return raw_server(script).url_for("/api")


def answers_in_binary(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(bytes(range(256)) * 4)

    return raw_server(script).url_for("/api")


def sends_too_many_headers(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(head("200 OK", *(f"X-Header-{i}: {i}" for i in range(150)), length=2) + b"{}")

    return raw_server(script).url_for("/api")


def sends_a_200_kb_header_line(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(head("200 OK", "X-Big: " + "a" * 200 * 1024, length=2) + b"{}")

    return raw_server(script).url_for("/api")


def sends_nul_in_headers_and_body(httpserver, raw_server) -> str:
    body = b"bad\x00key"

    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nX-Debug: a\x00b\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )

    return raw_server(script).url_for("/api")


def sends_nul_in_a_header_name(httpserver, raw_server) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(head("200 OK", "X-N\x00ul: 1", length=2) + b"{}")

    return raw_server(script).url_for("/api")


def sends_nul_and_a_lone_surrogate_in_json(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_data(
        r'{"message": "bad\u0000key \ud800", "detail": {"x\u0000": "\ud800"}}', status=401,
        content_type="application/json",
    )
    return httpserver.url_for("/api")


def answers_5xx_in_html(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_data(
        "<html><body><h1>503 Service Temporarily Unavailable</h1><p>nginx</p></body></html>",
        status=503, content_type="text/html",
    )
    return httpserver.url_for("/api")


def sends_a_huge_body(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_data(b"[" + b"1," * (2 * 1024 * 1024) + b"1]")
    return httpserver.url_for("/api")


def sends_a_gzip_bomb(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_response(
        Response(GZIP_BOMB, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    )
    return httpserver.url_for("/api")


def redirects_in_a_loop(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_data("", status=302, headers={"Location": "/api/again"})
    httpserver.expect_request("/api/again").respond_with_data("", status=302, headers={"Location": "/api/me"})
    return httpserver.url_for("/api")


def redirects_to_cloud_metadata(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_data(
        "", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/iam/"}
    )
    return httpserver.url_for("/api")


def redirects_to_a_private_address(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_data("", status=307, headers={"Location": "http://10.0.0.1/admin"})
    return httpserver.url_for("/api")


def declares_an_unknown_charset(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_data(
        b"Invalid key", status=401, content_type="text/plain; charset=x-no-such-charset"
    )
    return httpserver.url_for("/api")


def declares_a_charset_that_is_no_text_encoding(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_data(
        b"Invalid key", status=401, content_type="text/plain; charset=base64"
    )
    return httpserver.url_for("/api")


def sends_deeply_nested_json(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_data("[" * 100_000, status=401, content_type="application/json")
    return httpserver.url_for("/api")


def sends_deep_but_complete_json(httpserver, raw_server) -> str:
    httpserver.expect_request("/api/me").respond_with_data(
        "[" * 900 + "]" * 900, status=403, content_type="application/json"
    )
    return httpserver.url_for("/api")


@dataclass
class Hostile:
    api: Callable[..., str]
    message: str

    def __str__(self) -> str:
        return self.api.__name__


CUT_OFF = "The API's answer was cut off: the connection closed before the whole body arrived."
TOO_SLOW = f"The API did not finish answering within {DEADLINE:g} seconds"
HOSTILE = [
    Hostile(hangs, TOO_SLOW),
    Hostile(hangs_in_the_tls_handshake, TOO_SLOW),
    Hostile(drips_headers, TOO_SLOW),
    Hostile(drips_body, TOO_SLOW),
    Hostile(resets_mid_body, "The API reset the connection before its answer was complete."),
    Hostile(promises_more_than_it_sends, CUT_OFF),
    Hostile(cuts_a_chunked_body, CUT_OFF),
    Hostile(answers_in_garbage, "The API sent a reply that is not valid HTTP."),
    Hostile(answers_in_binary, "The API sent a reply that is not valid HTTP"),
    Hostile(sends_too_many_headers, "The API sent too many headers (more than 100)."),
    Hostile(sends_a_200_kb_header_line, "The API sent a header line longer than 64 KB"),
    Hostile(sends_nul_in_headers_and_body, 'The credentials were refused: 401 Unauthorized. The API said: "bad\ufffdkey".'),
    Hostile(sends_nul_in_a_header_name, "The API sent a reply that is not valid HTTP (its headers are malformed or cut off)."),
    Hostile(
        sends_nul_and_a_lone_surrogate_in_json,
        'The credentials were refused: 401 Unauthorized. The API said: "bad\ufffdkey ?".',
    ),
    Hostile(answers_5xx_in_html, "Unexpected answer from the API: 503 Service Unavailable (expected 200)."),
    Hostile(sends_a_huge_body, "The API's answer is larger than 1 MB"),
    Hostile(sends_a_gzip_bomb, "The API's answer is larger than 1 MB"),
    Hostile(redirects_in_a_loop, "Too many redirects (more than 5); the API may be redirecting in a loop."),
    Hostile(redirects_to_cloud_metadata, "resolves to a cloud metadata address (169.254.169.254), which is not allowed."),
    Hostile(redirects_to_a_private_address, "resolves to a private network address (10.0.0.1), which is not allowed."),
    Hostile(declares_an_unknown_charset, 'The credentials were refused: 401 Unauthorized. The API said: "Invalid key".'),
    Hostile(declares_a_charset_that_is_no_text_encoding, 'The API said: "Invalid key".'),
    Hostile(sends_deeply_nested_json, "The credentials were refused: 401 Unauthorized."),
    Hostile(sends_deep_but_complete_json, "The credentials were refused: 403 Forbidden."),
]


# --- the pages that check credentials -------------------------------------------------


@pytest.fixture
def connector_for(company, make_connector):
    def make(base_url: str):
        return make_connector(company, name="Hostile API", base_url=base_url, auth_methods=[TOKEN_METHOD])

    return make


def settings_form(instance, **overrides) -> dict:
    return {
        "name": instance.name, "time_zone": instance.time_zone, "date_format": instance.date_format,
        "rate_limit_amount": instance.rate_limit_amount, "rate_limit_unit": instance.rate_limit_unit,
        "connection_pool": "", "auth_method": instance.auth_method_id, "var_api_token": "", **overrides,
    }


def timed(post: Callable[[], object]):
    started = time.monotonic()
    response = post()
    return response, time.monotonic() - started


def through_the_wizard(admin_client, connector, make_instance) -> tuple[str, float]:
    url = f"/instances/new/{connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "Hostile"})
    response = admin_client.post(url, {"step": "settings", "state": state_from(response), **settings_data()})
    assert "step=credentials" in response["Location"]
    data = {"step": "credentials", "state": state_from(response), "var_api_token": NEW_TOKEN}

    response, elapsed = timed(lambda: admin_client.post(url, data))

    assert response.status_code == 422
    assert not Instance.objects.exists()
    return html.unescape(response.content.decode()), elapsed


def through_the_settings_page(admin_client, connector, make_instance) -> tuple[str, float]:
    instance = make_instance(connector, "Hostile", secrets={"api_token": STORED_TOKEN})
    data = settings_form(instance, name="Renamed", var_api_token=NEW_TOKEN)

    response, elapsed = timed(lambda: admin_client.post(f"/instances/{instance.pk}/", data))

    assert response.status_code == 422
    instance.refresh_from_db()
    assert instance.name == "Hostile"
    assert instance.get_secrets() == {"api_token": STORED_TOKEN}
    return html.unescape(response.content.decode()), elapsed


def through_check_now(admin_client, connector, make_instance) -> tuple[str, float]:
    instance = make_instance(connector, "Hostile", secrets={"api_token": STORED_TOKEN})

    response, elapsed = timed(lambda: admin_client.post(f"/instances/{instance.pk}/check/"))

    assert response.status_code == 302
    page = admin_client.get(response["Location"])
    instance.refresh_from_db()
    assert instance.get_secrets() == {"api_token": STORED_TOKEN}
    assert instance.last_check_ok is False
    assert "\x00" not in instance.last_check_message
    return html.unescape(page.content.decode()), elapsed


def assert_storable(check: CredentialCheck) -> None:
    """Nothing the API sent may keep the record from being saved (NUL, lone surrogates) or leak a secret."""
    check.refresh_from_db()
    texts = [check.message, check.error, check.request_url, check.request_body, check.response_body]
    for headers in (check.request_headers, check.response_headers):
        texts += [*headers, *headers.values()]
    for text in texts:
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogate
        assert NEW_TOKEN not in text and STORED_TOKEN not in text


@pytest.mark.parametrize("path", [through_the_wizard, through_the_settings_page, through_check_now],
                         ids=["wizard", "settings", "check-now"])
@pytest.mark.parametrize("hostile", HOSTILE, ids=str)
def test_a_hostile_api_gets_a_clear_message_in_time_and_nothing_is_saved(
    admin_client, connector_for, make_instance, httpserver, raw_server, hostile, path
):
    connector = connector_for(hostile.api(httpserver, raw_server))

    page, elapsed = path(admin_client, connector, make_instance)

    assert hostile.message in page
    assert elapsed < DEADLINE + SLACK
    check = CredentialCheck.objects.get()
    assert check.ok is False
    assert hostile.message in check.message
    assert_storable(check)


def test_dripping_stops_at_the_deadline_not_after_the_whole_reply(
    admin_client, connector_for, make_instance, httpserver, raw_server
):
    # Each byte comes well within the read timeout; only the total deadline can stop it.
    connector = connector_for(drips_body(httpserver, raw_server))

    _, elapsed = through_check_now(admin_client, connector, make_instance)

    assert DEADLINE <= elapsed < DEADLINE + SLACK
    assert CredentialCheck.objects.get().duration_ms >= DEADLINE * 1000


def test_a_gzip_bomb_is_not_inflated_past_the_cap(connector_for, httpserver, raw_server):
    from instances.outbound.client import InstanceClient

    connector = connector_for(sends_a_gzip_bomb(httpserver, raw_server))
    client = InstanceClient(connector, connector.auth_methods.get(), {}, {"api_token": NEW_TOKEN})

    started = time.monotonic()
    exchange = client.request("GET", "/me")

    # Inflating the whole gigabyte takes seconds and a gigabyte of memory.
    assert time.monotonic() - started < 0.5
    assert exchange.response_truncated and len(exchange.response_body) == 1024 * 1024
    assert exchange.error.startswith("The API's answer is larger than 1 MB")


def test_a_valid_reply_with_nul_in_a_header_still_authenticates_and_is_stored_clean(
    admin_client, connector_for, make_instance, raw_server
):
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(head("200 OK", "X-Debug: a\x00b", length=9) + b'{"id": 1}')

    server = raw_server(script)
    connector = connector_for(server.url_for("/api"))

    response = run_wizard(admin_client, connector, name="Fine", credentials={"api_token": NEW_TOKEN})

    assert response.status_code == 302
    assert Instance.objects.get().get_secrets() == {"api_token": NEW_TOKEN}
    check = CredentialCheck.objects.get()
    assert check.ok and check.response_headers["X-Debug"] == "a\ufffdb"
    assert_storable(check)
