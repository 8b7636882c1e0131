"""The instance client against a real HTTP server playing the third-party API."""

from __future__ import annotations

import base64
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.cache import cache
from werkzeug import Response

from instances.outbound import ssrf, transport
from instances.outbound.client import MAX_BODY_BYTES, MAX_REDIRECTS, RECORDED_BODY_CHARS, InstanceClient
from instances.redaction import redact_exchange
from tests.manifest_parts import basic_method
from tests.raw_server import Conn, keepalive_server, raw_server  # noqa: F401 - fixtures

BASIC = basic_method()


def token_method(**overrides) -> dict:
    return {
        "key": "token",
        "name": "API key",
        "type": "token",
        "variables": [{"key": "api_key", "label": "API key", "required": True, "secret": True}],
        "test_request": {"path": "/me"},
        **overrides,
    }


def oauth_method(token_url: str, **overrides) -> dict:
    return {
        "key": "oauth",
        "name": "OAuth 2",
        "type": "oauth2_client_credentials",
        "token_url": token_url,
        "variables": [
            {"key": "client_id", "label": "Client ID", "required": True},
            {"key": "client_secret", "label": "Client secret", "required": True, "secret": True},
        ],
        "test_request": {"path": "/me"},
        **overrides,
    }


@pytest.fixture(autouse=True)
def empty_token_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api_connector(company, make_connector, httpserver):
    """A connector whose base URL is the test server, with the given auth methods."""

    def make(*auth_methods: dict, **overrides):
        overrides.setdefault("base_url", httpserver.url_for("/api"))
        return make_connector(company, auth_methods=list(auth_methods), **overrides)

    return make


def client_for(connector, values=None, secrets=None, **kwargs) -> InstanceClient:
    return InstanceClient(connector, connector.auth_methods.get(), values or {}, secrets or {}, **kwargs)


def received(httpserver, path: str):
    """The requests the test server received for `path`."""
    return [request for request, _ in httpserver.log if request.path == path]


def wait_until_answered(httpserver, count: int = 1) -> None:
    """Let a slow handler finish, so it does not answer into the next test's log."""
    deadline = time.monotonic() + 5
    while len(httpserver.log) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def a_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- each authentication type ----------------------------------------------


def test_basic_auth_sends_the_username_and_password_in_the_authorization_header(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    connector = api_connector(BASIC)

    result = client_for(connector, {"username": "alice"}, {"password": "pa55:word"}).check_credentials()

    assert result.ok
    assert result.message == "Authenticated: the API answered 200 OK."
    [request] = received(httpserver, "/api/me")
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pa55:word").decode()


def test_a_token_in_a_header_has_its_placeholder_substituted(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    connector = api_connector(token_method(headers={"X-Api-Key": "key {{api_key}}"}))

    result = client_for(connector, secrets={"api_key": "k-12345"}).check_credentials()

    assert result.ok
    [request] = received(httpserver, "/api/me")
    assert request.headers["X-Api-Key"] == "key k-12345"
    assert "Authorization" not in request.headers


def test_a_token_in_a_query_parameter_has_its_placeholder_substituted_and_encoded(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    connector = api_connector(token_method(query_params={"apikey": "{{api_key}}", "format": "json"}))

    result = client_for(connector, secrets={"api_key": "k&1=2 3"}).check_credentials()

    assert result.ok
    [request] = received(httpserver, "/api/me")
    assert request.args["apikey"] == "k&1=2 3"
    assert request.args["format"] == "json"


def test_a_bearer_token_goes_in_the_authorization_header(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    connector = api_connector(
        token_method(
            variables=[{"key": "api_token", "label": "Token", "required": True, "secret": True}],
            headers={"Authorization": "Bearer {{api_token}}"},
        )
    )

    assert client_for(connector, secrets={"api_token": "tok-abcdef"}).check_credentials().ok
    [request] = received(httpserver, "/api/me")
    assert request.headers["Authorization"] == "Bearer tok-abcdef"


def test_oauth2_client_credentials_fetch_a_token_with_http_basic_client_auth_then_use_it_as_bearer(
    api_connector, httpserver
):
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(
        {"access_token": "at-first", "token_type": "Bearer", "expires_in": 3600}
    )
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    connector = api_connector(oauth_method(httpserver.url_for("/oauth/token"), scope="orders.read"))

    result = client_for(connector, {"client_id": "cid"}, {"client_secret": "csecret"}).check_credentials()

    assert result.ok, result.message
    [token_request] = received(httpserver, "/oauth/token")
    assert token_request.headers["Authorization"] == "Basic " + base64.b64encode(b"cid:csecret").decode()
    assert token_request.form["grant_type"] == "client_credentials"
    assert token_request.form["scope"] == "orders.read"
    [api_request] = received(httpserver, "/api/me")
    assert api_request.headers["Authorization"] == "Bearer at-first"


def test_an_oauth2_token_is_reused_until_shortly_before_it_expires(api_connector, httpserver):
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(
        {"access_token": "at-cached", "expires_in": 3600}
    )
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    connector = api_connector(oauth_method(httpserver.url_for("/oauth/token")))

    first = client_for(connector, {"client_id": "cid"}, {"client_secret": "csecret"}).request("GET", "/me")
    second = client_for(connector, {"client_id": "cid"}, {"client_secret": "csecret"}).request("GET", "/me")

    assert (first.response_status, second.response_status) == (200, 200)
    assert len(received(httpserver, "/oauth/token")) == 1
    assert [r.headers["Authorization"] for r in received(httpserver, "/api/me")] == ["Bearer at-cached"] * 2


def test_a_token_that_expires_within_the_safety_margin_is_not_cached(api_connector, httpserver):
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(
        {"access_token": "at-short", "expires_in": 30}
    )
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    connector = api_connector(oauth_method(httpserver.url_for("/oauth/token")))

    for _ in range(2):
        client_for(connector, {"client_id": "cid"}, {"client_secret": "csecret"}).request("GET", "/me")

    assert len(received(httpserver, "/oauth/token")) == 2


def test_without_the_token_cache_every_request_fetches_a_new_token(api_connector, httpserver):
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(
        {"access_token": "at-fresh", "expires_in": 3600}
    )
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    connector = api_connector(oauth_method(httpserver.url_for("/oauth/token")))

    client_for(connector, {"client_id": "cid"}, {"client_secret": "csecret"}).request("GET", "/me")
    client_for(connector, {"client_id": "cid"}, {"client_secret": "csecret"}, use_token_cache=False).request("GET", "/me")

    assert len(received(httpserver, "/oauth/token")) == 2


def test_a_different_client_secret_does_not_get_the_cached_token(api_connector, httpserver):
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(
        {"access_token": "at-x", "expires_in": 3600}
    )
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    connector = api_connector(oauth_method(httpserver.url_for("/oauth/token")))

    client_for(connector, {"client_id": "cid"}, {"client_secret": "right"}).request("GET", "/me")
    client_for(connector, {"client_id": "cid"}, {"client_secret": "wrong"}).request("GET", "/me")

    assert len(received(httpserver, "/oauth/token")) == 2


def test_a_refused_token_request_says_so_with_the_vendors_reason(api_connector, httpserver):
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(
        {"error": "invalid_client", "error_description": "Client authentication failed"}, status=401
    )
    connector = api_connector(oauth_method(httpserver.url_for("/oauth/token")))

    result = client_for(connector, {"client_id": "cid"}, {"client_secret": "nope"}).check_credentials()

    assert not result.ok
    assert result.message == (
        'The token request was refused: 401 Unauthorized. The API said: "Client authentication failed".'
    )
    assert received(httpserver, "/api/me") == []


def test_a_token_endpoint_answering_without_an_access_token_does_not_quote_its_body(api_connector, httpserver):
    # Some vendors name the field differently; whatever it holds must not end up in the message.
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json({"token": "vendor-token-98765"})
    connector = api_connector(oauth_method(httpserver.url_for("/oauth/token")))

    result = client_for(connector, {"client_id": "cid"}, {"client_secret": "csecret"}).check_credentials()

    assert not result.ok
    assert result.message == "The token endpoint did not return an access token."


# --- building the URL --------------------------------------------------------


def test_base_url_placeholders_come_from_connector_variables(api_connector, httpserver):
    httpserver.expect_request("/tenants/acme-eu/v2/me").respond_with_json({"id": 1})
    connector = api_connector(
        token_method(headers={"X-Api-Key": "{{api_key}}"}),
        base_url=httpserver.url_for("/tenants/{{tenant}}/{{api_version}}"),
        variables=[
            {"key": "tenant", "label": "Tenant", "required": True},
            {"key": "api_version", "label": "API version", "default": "v2"},
        ],
    )

    result = client_for(connector, {"tenant": "acme-eu"}, {"api_key": "k-1"}).check_credentials()

    assert result.ok, result.message
    assert result.exchange.request_url == httpserver.url_for("/tenants/acme-eu/v2/me")


def test_a_missing_required_value_says_the_request_could_not_be_built(api_connector, httpserver):
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    result = client_for(connector, secrets={}).check_credentials()

    assert not result.ok
    assert result.message == 'The request could not be built: no value for "api_key".'
    assert httpserver.log == []


def test_a_missing_base_url_variable_says_the_request_could_not_be_built(api_connector, httpserver):
    connector = api_connector(
        token_method(headers={"X-Api-Key": "{{api_key}}"}),
        base_url="https://{{shop}}.example.com",
        variables=[{"key": "shop", "label": "Shop", "required": True}],
    )

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert not result.ok
    assert result.message == 'The request could not be built: no value for "shop".'


# --- what came back -------------------------------------------------------------


def test_a_status_the_method_expects_is_a_successful_check(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_data("", status=204)
    connector = api_connector(
        token_method(headers={"X-Api-Key": "{{api_key}}"}, test_request={"path": "/me", "expected_status": [200, 204]})
    )

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert result.ok
    assert result.message == "Authenticated: the API answered 204 No Content."


def test_a_success_status_the_method_does_not_expect_is_a_failed_check(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    connector = api_connector(
        token_method(headers={"X-Api-Key": "{{api_key}}"}, test_request={"path": "/me", "expected_status": [201]})
    )

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert not result.ok
    assert result.message == "Unexpected answer from the API: 200 OK (expected 201)."


@pytest.mark.parametrize(
    "status, phrase", [(401, "401 Unauthorized"), (403, "403 Forbidden")]
)
def test_refused_credentials_are_named_with_the_vendors_message(api_connector, httpserver, status, phrase):
    httpserver.expect_request("/api/me").respond_with_json({"message": "Invalid API key."}, status=status)
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    result = client_for(connector, secrets={"api_key": "wrong"}).check_credentials()

    assert not result.ok
    assert result.message == f'The credentials were refused: {phrase}. The API said: "Invalid API key".'
    assert result.exchange.response_status == status


def test_a_server_error_is_an_unexpected_answer(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_json({"error": "database unavailable"}, status=500)
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert not result.ok
    assert result.message == (
        'Unexpected answer from the API: 500 Internal Server Error (expected 200). '
        'The API said: "database unavailable".'
    )


def test_a_non_json_body_is_kept_as_text(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_data("<html><body>Welcome</body></html>", content_type="text/html")
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert result.ok
    assert result.exchange.json is None
    assert result.exchange.response_body == "<html><body>Welcome</body></html>"


def test_an_html_error_page_is_not_quoted_in_the_message(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_data(
        "<html><h1>Access denied</h1></html>", status=401, content_type="text/html"
    )
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert result.message == "The credentials were refused: 401 Unauthorized."


def test_a_plain_text_error_is_quoted_in_the_message(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_data("upstream is down", status=502)
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert result.message == (
        'Unexpected answer from the API: 502 Bad Gateway (expected 200). The API said: "upstream is down".'
    )


# --- failures on the way ------------------------------------------------------------


def test_an_api_that_does_not_answer_in_time_is_a_timeout(api_connector, httpserver, settings):
    settings.OUTBOUND_READ_TIMEOUT = 0.2

    def slow(request):
        time.sleep(0.6)
        return Response("late")

    httpserver.expect_request("/api/me").respond_with_handler(slow)
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    started = time.monotonic()
    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert not result.ok
    assert result.message == "The API did not answer within 0.2 seconds."
    assert time.monotonic() - started < 0.6
    wait_until_answered(httpserver)


def test_an_api_that_stalls_in_the_middle_of_its_body_is_a_timeout(api_connector, httpserver, settings):
    settings.OUTBOUND_READ_TIMEOUT = 0.2

    def stalls():
        yield b'{"id": '
        time.sleep(0.6)
        yield b"1}"

    httpserver.expect_request("/api/me").respond_with_handler(lambda request: Response(stalls(), direct_passthrough=True))
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert not result.ok
    assert result.message == "The API did not answer within 0.2 seconds."



def test_a_closed_port_is_reported_as_a_refused_connection(api_connector):
    connector = api_connector(
        token_method(headers={"X-Api-Key": "{{api_key}}"}), base_url=f"http://127.0.0.1:{a_closed_port()}"
    )

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert not result.ok
    assert result.message == "Could not connect to 127.0.0.1: the connection was refused."


def test_a_huge_body_is_an_error_cut_at_one_megabyte_and_marked_truncated(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_data(b"x" * (10 * 1024 * 1024))
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    exchange = client_for(connector, secrets={"api_key": "k-1"}).request("GET", "/me")

    assert exchange.error == (
        "The API's answer is larger than 1 MB, more than is read from any API; it was not read to the end."
    )
    assert exchange.response_status == 200
    assert exchange.response_truncated and exchange.json is None
    assert len(exchange.response_body) == MAX_BODY_BYTES == 1024 * 1024
    record = redact_exchange(exchange.as_record(), ["k-1"], body_limit=RECORDED_BODY_CHARS)
    assert record["response_truncated"] and len(record["response_body"]) == RECORDED_BODY_CHARS


def test_a_redirect_loop_stops_with_too_many_redirects(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_data("", status=302, headers={"Location": "/api/again"})
    httpserver.expect_request("/api/again").respond_with_data("", status=302, headers={"Location": "/api/me"})
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert not result.ok
    assert result.message == "Too many redirects (more than 5); the API may be redirecting in a loop."
    assert len(httpserver.log) == MAX_REDIRECTS + 1


def test_a_redirect_is_followed_within_the_limit(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_data("", status=301, headers={"Location": "/api/v2/me"})
    httpserver.expect_request("/api/v2/me").respond_with_json({"id": 1})
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert result.ok
    [request] = received(httpserver, "/api/v2/me")
    assert request.headers["X-Api-Key"] == "k-1"  # same origin: credentials still sent


def test_a_redirect_to_a_private_address_is_blocked(api_connector, httpserver):
    httpserver.expect_request("/api/me").respond_with_data("", status=302, headers={"Location": "http://10.1.2.3/admin"})
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert not result.ok
    assert result.message.startswith("Blocked: ")
    assert "private network address (10.1.2.3)" in result.message


@pytest.mark.parametrize(
    "method, secrets, header",
    [
        (token_method(
            variables=[{"key": "api_token", "label": "Token", "required": True, "secret": True}],
            headers={"Authorization": "Bearer {{api_token}}"},
        ), {"api_token": "tok-abcdef"}, "Authorization"),
        (token_method(headers={"X-Api-Key": "{{api_key}}"}), {"api_key": "k-abcdef"}, "X-Api-Key"),
    ],
    ids=["authorization", "api-key-header"],
)
def test_credentials_are_not_forwarded_on_a_redirect_to_another_origin(
    api_connector, httpserver, httpserver_ipv4, method, secrets, header
):
    elsewhere = httpserver_ipv4.url_for("/landing")
    assert elsewhere.split("/")[2] != httpserver.url_for("/").split("/")[2]
    httpserver.expect_request("/api/me").respond_with_data("", status=302, headers={"Location": elsewhere})
    httpserver_ipv4.expect_request("/landing").respond_with_json({"id": 1})
    connector = api_connector(method)

    result = client_for(connector, secrets=secrets).check_credentials()

    assert result.ok
    [first] = received(httpserver, "/api/me")
    assert header in first.headers
    [(landed, _)] = httpserver_ipv4.log
    assert header not in landed.headers
    assert all(value not in str(landed.headers) for value in secrets.values())


def test_a_token_request_is_not_re_posted_with_the_client_secret_to_another_origin(
    api_connector, httpserver, httpserver_ipv4
):
    elsewhere = httpserver_ipv4.url_for("/oauth/token")
    httpserver.expect_request("/oauth/token", method="POST").respond_with_data("", status=307, headers={"Location": elsewhere})
    httpserver_ipv4.expect_request("/oauth/token", method="POST").respond_with_json({"access_token": "stolen", "expires_in": 3600})
    connector = api_connector(
        oauth_method(
            httpserver.url_for("/oauth/token"),
            body={"client_id": "{{client_id}}", "client_secret": "{{client_secret}}"},  # client_secret_post
        )
    )

    result = client_for(connector, {"client_id": "cid"}, {"client_secret": "csecret-123"}).check_credentials()

    assert not result.ok
    assert result.message == (
        "Blocked: the API redirected a request carrying credentials to another origin "
        f"({elsewhere.split('/')[2]})."
    )
    assert httpserver_ipv4.log == []


def test_the_total_deadline_covers_every_redirect(api_connector, httpserver, settings):
    # Each hop answers well within the read timeout; together they take too long.
    settings.OUTBOUND_TOTAL_TIMEOUT = 0.5

    def slow_redirect(request):
        time.sleep(0.2)
        return Response("", status=302, headers={"Location": "/api/me"})

    httpserver.expect_request("/api/me").respond_with_handler(slow_redirect)
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}))

    started = time.monotonic()
    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert result.message.startswith("The API did not finish answering within 0.5 seconds")
    assert time.monotonic() - started < 0.9
    time.sleep(0.25)  # let the last hop's handler finish before the next test


def test_the_total_deadline_covers_a_slow_dns_lookup(api_connector, settings, monkeypatch):
    settings.OUTBOUND_TOTAL_TIMEOUT = 0.3
    real_getaddrinfo = socket.getaddrinfo

    def slow_resolver(host, *args, **kwargs):
        if host == "slow-dns.example":
            time.sleep(1)  # the answer does not matter: it comes too late
        return real_getaddrinfo("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
    connector = api_connector(token_method(headers={"X-Api-Key": "{{api_key}}"}), base_url="http://slow-dns.example")

    started = time.monotonic()
    result = client_for(connector, secrets={"api_key": "k-1"}).check_credentials()

    assert result.message.startswith("The API did not finish answering within 0.3 seconds")
    assert time.monotonic() - started < 0.6


# --- kept-alive connections ---------------------------------------------------------


@pytest.fixture
def sender(company, make_connector) -> InstanceClient:
    """A client whose send() is used directly, with no kept-alive connection from earlier tests."""
    transport.adapters.clear()
    yield client_for(make_connector(company))
    transport.adapters.clear()


def test_requests_to_one_api_share_one_kept_alive_connection(sender, keepalive_server):
    server = keepalive_server()

    exchanges = [sender.send("GET", server.url_for(f"/orders/{i}")) for i in range(5)]

    assert [e.json["path"] for e in exchanges] == [f"/orders/{i}" for i in range(5)]
    assert server.connections == 1


def test_without_keep_alive_every_request_opens_its_own_connection(sender, keepalive_server, settings):
    settings.OUTBOUND_KEEP_ALIVE = False
    server = keepalive_server()

    for i in range(3):
        assert sender.send("GET", server.url_for(f"/orders/{i}")).response_status == 200

    assert server.connections == 3
    assert transport.adapters.keys() == []


def test_a_new_dns_answer_gets_a_connection_to_the_new_address_and_the_old_one_is_dropped(
    sender, keepalive_server, monkeypatch
):
    first = keepalive_server("127.0.0.1")
    second = keepalive_server("127.0.0.2", first.port)
    answers = iter([["127.0.0.1"], ["127.0.0.1"], ["127.0.0.2"], ["127.0.0.1"]])

    real_getaddrinfo = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host != "api.partner.test":  # the pinned connection resolving its IP literal
            return real_getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in next(answers)]

    monkeypatch.setattr(ssrf.socket, "getaddrinfo", resolver)
    url = f"http://api.partner.test:{first.port}/me"

    assert [sender.send("GET", url).error for _ in range(2)] == ["", ""]
    assert (first.connections, second.connections) == (1, 0)

    sender.send("GET", url)  # DNS now says 127.0.0.2
    assert (first.connections, second.connections) == (1, 1)
    assert transport.adapters.keys() == [("http", "api.partner.test", first.port, "127.0.0.2")]

    sender.send("GET", url)  # back to 127.0.0.1: its old connection was closed, not kept
    assert (first.connections, second.connections) == (2, 1)


def test_the_adapter_cache_is_bounded_and_drops_the_least_recently_used():
    cache = transport.AdapterCache(size=2)
    a = cache.get("https", "a.example", 443, "93.184.215.14", ["93.184.215.14"])
    cache.get("https", "b.example", 443, "93.184.215.15", ["93.184.215.15"])
    assert cache.get("https", "A.example", 443, "93.184.215.14", ["93.184.215.14"]) is a  # used again: most recent

    cache.get("https", "c.example", 443, "93.184.215.16", ["93.184.215.16"])

    assert [key[1] for key in cache.keys()] == ["a.example", "c.example"]


def test_threads_share_kept_alive_connections_safely(sender, keepalive_server):
    server = keepalive_server()

    with ThreadPoolExecutor(max_workers=6) as pool:
        exchanges = list(pool.map(lambda i: sender.send("GET", server.url_for(f"/orders/{i}")), range(60)))

    assert [e.error for e in exchanges] == [""] * 60
    assert [e.json["path"] for e in exchanges] == [f"/orders/{i}" for i in range(60)]
    assert 1 <= server.connections <= 6


def test_a_kept_alive_connection_the_api_closed_is_replaced_without_an_error(sender, raw_server):
    connections = []

    def script(conn: Conn) -> None:
        connections.append(conn)
        conn.read_request()
        body = b'{"n": %d}' % len(connections)
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        if len(connections) == 1:
            conn.read_request()  # the next request on this connection is answered by closing it,
            return  # as by a server whose idle timeout ran out just then

    server = raw_server(script)

    first = sender.send("GET", server.url_for("/me"))
    second = sender.send("GET", server.url_for("/me"))

    assert (first.error, second.error) == ("", "")
    assert (first.json, second.json) == ({"n": 1}, {"n": 2})
    assert len(connections) == 2


def test_cookies_an_api_sets_are_not_sent_with_later_exchanges(sender, keepalive_server):
    server = keepalive_server()

    sender.send("GET", server.url_for("/set-cookie"))
    later = sender.send("GET", server.url_for("/me"))

    assert later.json == {"path": "/me", "cookie": None}
    assert server.connections == 1


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the child only exits
def test_a_forked_worker_does_not_inherit_kept_alive_connections(sender, keepalive_server):
    server = keepalive_server()
    sender.send("GET", server.url_for("/me"))
    assert len(transport.adapters.keys()) == 1

    pid = os.fork()
    if pid == 0:  # the child: its parent's sockets are not its to use
        os._exit(0 if transport.adapters.keys() == [] else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert len(transport.adapters.keys()) == 1  # the parent keeps its own
