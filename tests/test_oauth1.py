"""OAuth 1.0a: signatures match RFC 5849's examples, and the Sandbox checks them live."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from instances import checks
from instances.outbound import auth
from instances.outbound.client import InstanceClient

PHOTOS = {  # RFC 5849 section 1.2
    "consumer_key": "dpf43f3p2l4k3l03", "consumer_secret": "kd94hf93k423kf44",
    "token_id": "nnch734d00sl2jdk", "token_secret": "pfkkdhi9sl3r4s00",
    "signature_method": "HMAC-SHA1", "realm": "Photos",
}


def header_params(headers: dict[str, str]) -> dict[str, str]:
    value = headers["Authorization"]
    assert value.startswith("OAuth ")
    pairs = [p.strip().split("=", 1) for p in value[6:].split(",")]
    return {k: v.strip('"') for k, v in pairs}


def test_the_rfc_5849_photos_request_gets_its_published_signature():
    url, headers = auth.sign_oauth1(
        PHOTOS, "GET", "http://photos.example.net/photos?file=vacation.jpg&size=original", {},
        nonce="chapoH", timestamp="137131202", send_version=False,
    )
    params = header_params(headers)
    # Section 1.2's example signature as corrected by the RFC's errata (the printed one was miscalculated).
    assert params["oauth_signature"] == "MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D"
    assert params["realm"] == "Photos" and params["oauth_token"] == "nnch734d00sl2jdk"
    assert url == "http://photos.example.net/photos?file=vacation.jpg&size=original"


# RFC 5849 section 3.4.1.1: the signature base string of its example request, verbatim.
RFC_BASE_STRING = (
    "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q"
    "%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_"
    "key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m"
    "ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk"
    "9d7dh3k39sjv7"
)


@pytest.mark.parametrize("method, digest", [("HMAC-SHA1", hashlib.sha1), ("HMAC-SHA256", hashlib.sha256)])
def test_the_rfc_5849_example_request_is_signed_over_its_published_base_string(method, digest):
    values = {"consumer_key": "9djdj82h48djs9d2", "consumer_secret": "j49sk3j29djd",
              "token_id": "kkk9d7dh3k39sjv7", "token_secret": "dh893hdasih9", "signature_method": method}
    _, headers = auth.sign_oauth1(
        values, "POST", "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b", {},
        "c2&a3=2+q", nonce="7d8f3e4a", timestamp="137131201", send_version=False,
    )
    base = RFC_BASE_STRING.replace("HMAC-SHA1", method)
    expected = base64.b64encode(hmac.new(b"j49sk3j29djd&dh893hdasih9", base.encode(), digest).digest()).decode()
    assert header_params(headers)["oauth_signature"] == quote(expected, safe="")


def test_an_unknown_signature_method_is_a_clear_error():
    with pytest.raises(auth.ClientError, match="HMAC-SHA1 or HMAC-SHA256"):
        auth.sign_oauth1({**PHOTOS, "signature_method": "PLAINTEXT"}, "GET", "http://example.com/", {})


SANDBOX_KEYS = {"consumer_key": "sandbox-consumer", "token_id": "sandbox-token-id"}
SANDBOX_SECRETS = {"consumer_secret": "sandbox-consumer-secret", "token_secret": "sandbox-token-secret"}


@pytest.fixture
def sandbox(company, sandbox_listing, install, live_server):
    connector = install(sandbox_listing, company)
    return connector, connector.auth_methods.get(key="oauth1"), f"{live_server.url}/sandbox/api"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("signature_method", ["HMAC-SHA1", "HMAC-SHA256"])
def test_the_sandbox_accepts_its_oauth1_credentials_in_a_live_check(sandbox, signature_method):
    connector, method, base = sandbox
    result, check = checks.check_and_record(
        connector=connector, auth_method=method, values={"base_url": base, **SANDBOX_KEYS, "signature_method": signature_method},
        secrets=SANDBOX_SECRETS,
    )
    assert result.ok, result.message
    assert check.response_status == 200 and '"authenticated_with": "oauth1"' in check.response_body
    assert check.request_headers["Authorization"] == "[redacted]"


@pytest.mark.django_db(transaction=True)
def test_the_sandbox_refuses_a_wrong_token_secret(sandbox):
    connector, method, base = sandbox
    result, check = checks.check_and_record(
        connector=connector, auth_method=method, values={"base_url": base, **SANDBOX_KEYS},
        secrets={**SANDBOX_SECRETS, "token_secret": "not-the-secret"},
    )
    assert not result.ok and result.message.startswith("The credentials were refused: 401 Unauthorized.")


@pytest.mark.django_db(transaction=True)
def test_a_signature_in_the_query_string_works_as_woocommerce_over_plain_http_uses_it(sandbox):
    connector, method, base = sandbox
    client = InstanceClient(connector, method, {"base_url": base, **SANDBOX_KEYS, "signature_placement": "query"}, SANDBOX_SECRETS)
    exchange = client.request("GET", "/orders", params={"per_page": "2"})
    assert exchange.response_status == 200, exchange.response_body
    query = parse_qs(urlsplit(exchange.request_url).query)
    assert query["per_page"] == ["2"] and "oauth_signature" in query and "Authorization" not in exchange.request_headers


@pytest.mark.django_db
def test_the_sandbox_refuses_a_replayed_request(client, settings):
    url, headers = auth.sign_oauth1({**SANDBOX_KEYS, **SANDBOX_SECRETS}, "GET", "http://testserver/sandbox/api/me", {})
    assert client.get("/sandbox/api/me", headers=headers).status_code == 200
    assert client.get("/sandbox/api/me", headers=headers).status_code == 401  # same nonce again


@pytest.mark.django_db
def test_the_sandbox_refuses_a_stale_timestamp(client):
    _, headers = auth.sign_oauth1({**SANDBOX_KEYS, **SANDBOX_SECRETS}, "GET", "http://testserver/sandbox/api/me", {}, timestamp="137131201")
    assert client.get("/sandbox/api/me", headers=headers).status_code == 401


@pytest.mark.django_db
def test_requests_on_a_kept_alive_connection_keep_the_host_name_in_their_host_header(company, make_connector, httpserver, settings):
    # A signature covers the host; so does every virtual-hosted API's routing.
    settings.OUTBOUND_KEEP_ALIVE = True
    httpserver.expect_request("/me").respond_with_json({"ok": True})
    base = httpserver.url_for("").rstrip("/")
    assert urlsplit(base).hostname == "localhost"
    connector = make_connector(company, base_url=base)
    client = InstanceClient(connector, connector.auth_methods.get(), {}, {"api_token": "t-123456"})
    for _ in range(3):
        assert client.request("GET", "/me").response_status == 200
    assert [r.headers["Host"] for r, _ in httpserver.log] == [urlsplit(base).netloc] * 3


@pytest.mark.django_db(transaction=True)
def test_an_oauth1_sandbox_instance_is_added_through_the_wizard_only_with_valid_credentials(admin_client, sandbox):
    from instances.models import Instance
    from tests.wizard_helpers import run_wizard

    connector, method, base = sandbox
    typed = {"base_url": base, **SANDBOX_KEYS, **SANDBOX_SECRETS}
    refused = run_wizard(admin_client, connector, auth_method=method, credentials={**typed, "token_secret": "wrong"})
    assert refused.status_code == 422 and "The credentials were refused: 401 Unauthorized." in refused.content.decode()
    assert not Instance.objects.exists()
    response = run_wizard(admin_client, connector, name="Sandbox - OAuth 1", auth_method=method, credentials=typed)
    assert response.status_code == 302, response.content.decode()[:2000]
    instance = Instance.objects.get()
    assert instance.last_check_ok is True and instance.get_secrets() == SANDBOX_SECRETS


def test_an_oauth1_method_made_in_the_builder_names_the_token_as_the_signer_reads_it():
    from connectors.builder_views import _new_auth_method

    method = _new_auth_method("OAuth 1", "oauth1", "oauth1", "https://api.example.com")
    keys = [v["key"] for v in method["variables"]]
    assert keys == ["consumer_key", "consumer_secret", "token_id", "token_secret"]
    values = {"consumer_key": "ck", "consumer_secret": "cs", "token_id": "the-token", "token_secret": "ts"}
    _, headers = auth.sign_oauth1(values, "GET", "https://api.example.com/me", {})
    assert header_params(headers)["oauth_token"] == "the-token"


def test_connectors_built_with_a_token_variable_still_sign_with_their_token():
    values = {"consumer_key": "ck", "consumer_secret": "cs", "token": "older-token", "token_secret": "ts"}
    _, headers = auth.sign_oauth1(values, "GET", "https://api.example.com/me", {})
    assert header_params(headers)["oauth_token"] == "older-token"
