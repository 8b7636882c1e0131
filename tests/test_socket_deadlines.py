"""The total deadline holds on the socket, in every HTTP framing, when an API drips its answer.

Each API below answers slowly, one byte every half second, for far longer
than the deadline. Every byte arrives well within the read timeout, so only
the total deadline can end the exchange. Some framings make http.client hand
the socket from the connection to the response (``Connection: close``,
HTTP/1.0, a body delimited by the close): the deadline must end those too, not
wait for the server to finish (a minute here).
"""

from __future__ import annotations

import datetime
import html
import ipaddress
import ssl
import time
from dataclasses import dataclass

import pytest
import requests.adapters
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flows import execution, queueing
from flows.models import RunStatus, RunTrigger
from instances.models import CredentialCheck
from instances.outbound.client import InstanceClient
from tests.flow_helpers import API_TOKEN, connection, flow_of, shop_connector
from tests.raw_server import Conn, raw_server  # noqa: F401 - a fixture
from tests.wizard_helpers import settings_data, state_from

DEADLINE = 2  # OUTBOUND_TOTAL_TIMEOUT in these tests, in seconds
MARGIN = 6  # what an exchange may take beyond it (a loaded machine); the drips last a minute
DRIP_EVERY = 0.5  # seconds between two bytes: far below the read timeout
DRIP_FOR = 60  # seconds the API would go on dripping
TOO_SLOW = f"The API did not finish answering within {DEADLINE:g} seconds"
TOKEN_METHOD = {
    "key": "token", "name": "API token", "type": "token",
    "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
    "headers": {"X-Api-Key": "{{api_token}}"},
    "test_request": {"path": "/me"},
}


@pytest.fixture(autouse=True)
def short_deadline(settings):
    settings.OUTBOUND_TOTAL_TIMEOUT = DEADLINE
    settings.OUTBOUND_READ_TIMEOUT = 15  # each byte comes well within it
    settings.OUTBOUND_CONNECT_TIMEOUT = 2
    settings.FLOW_RETRY_DELAY_SECONDS = 0
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Framing:
    name: str
    head: bytes  # sent at once
    dripped: bytes  # then one byte every DRIP_EVERY seconds

    def __str__(self) -> str:
        return self.name


def _head(status_line: str, *headers: str) -> bytes:
    return ("\r\n".join([status_line, "Content-Type: application/json", *headers]) + "\r\n\r\n").encode()


BODY = b" " * 2000 + b"{}"
FRAMINGS = [
    Framing("content-length", _head("HTTP/1.1 200 OK", "Content-Length: 2002"), BODY),
    Framing("content-length-then-close", _head("HTTP/1.1 200 OK", "Content-Length: 2002", "Connection: close"), BODY),
    Framing("chunked", _head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked") + b"7d2\r\n", BODY),
    Framing(
        "chunked-then-close",
        _head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Connection: close") + b"7d2\r\n", BODY,
    ),
    Framing("close-delimited", _head("HTTP/1.1 200 OK", "Connection: close"), BODY),
    Framing("http-1.0-close-delimited", _head("HTTP/1.0 200 OK"), BODY),
    Framing("http-1.0-content-length", _head("HTTP/1.0 200 OK", "Content-Length: 2002"), BODY),
    Framing("in-the-status-line", b"", b"HTTP/1.1 200 " + b"O" * 200 + b"K\r\n"),
    Framing("in-the-headers", b"HTTP/1.1 200 OK\r\nConnection: close\r\n", b"X-Padding: " + b"a" * 200 + b"\r\n"),
]


def dripping_api(raw_server, framing: Framing) -> str:
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(framing.head)
        conn.drip(framing.dripped, every=DRIP_EVERY, max_seconds=DRIP_FOR)

    return raw_server(script).url_for("/api")


@pytest.fixture
def connector_for(company, make_connector):
    def make(base_url: str):
        return make_connector(company, name="Dripping API", base_url=base_url, auth_methods=[TOKEN_METHOD])

    return make


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


@pytest.mark.parametrize("framing", FRAMINGS, ids=str)
def test_a_request_ends_at_the_deadline_whatever_the_framing(connector_for, raw_server, framing):
    connector = connector_for(dripping_api(raw_server, framing))
    client = InstanceClient(connector, connector.auth_methods.get(), {}, {"api_token": API_TOKEN})

    exchange, elapsed = timed(lambda: client.request("GET", "/orders"))

    assert exchange.error.startswith(TOO_SLOW), exchange.error
    assert exchange.json is None
    assert DEADLINE <= elapsed < DEADLINE + MARGIN


@pytest.mark.parametrize("framing", FRAMINGS, ids=str)
def test_check_now_says_the_api_was_too_slow_within_the_deadline(
    admin_client, connector_for, make_instance, raw_server, framing
):
    connector = connector_for(dripping_api(raw_server, framing))
    instance = make_instance(connector, "Dripping", secrets={"api_token": API_TOKEN})

    response, elapsed = timed(lambda: admin_client.post(f"/instances/{instance.pk}/check/"))

    assert elapsed < DEADLINE + MARGIN
    page = html.unescape(admin_client.get(response["Location"]).content.decode())
    assert TOO_SLOW in page
    instance.refresh_from_db()
    assert instance.last_check_ok is False and TOO_SLOW in instance.last_check_message
    check = CredentialCheck.objects.get()
    assert check.ok is False and DEADLINE * 1000 <= check.duration_ms < (DEADLINE + MARGIN) * 1000


def test_the_wizard_s_credentials_step_ends_at_the_deadline_when_the_api_closes_after_its_answer(
    admin_client, connector_for, raw_server
):
    connector = connector_for(dripping_api(raw_server, FRAMINGS[1]))  # Content-Length, then Connection: close
    url = f"/instances/new/{connector.pk}/"
    response = admin_client.post(url, {"step": "name", "state": "", "name": "Dripping"})
    response = admin_client.post(url, {"step": "settings", "state": state_from(response), **settings_data()})
    data = {"step": "credentials", "state": state_from(response), "var_api_token": API_TOKEN}

    response, elapsed = timed(lambda: admin_client.post(url, data))

    assert elapsed < DEADLINE + MARGIN
    assert response.status_code == 422
    assert TOO_SLOW in html.unescape(response.content.decode())
    assert not connector.instances.exists()


def test_a_run_fails_at_its_shape_s_timeout_when_the_api_drips_and_closes(
    company, make_connector, make_instance, raw_server, settings
):
    settings.OUTBOUND_TOTAL_TIMEOUT = 20  # the shape's own timeout is what bounds its requests
    server_url = dripping_api(raw_server, FRAMINGS[1])
    instance = make_instance(shop_connector(make_connector, company, server_url), "Dripping", {"api_token": API_TOKEN})
    flow = flow_of(company, connection(instance, "list_orders", timeout=2))

    run, elapsed = timed(lambda: execution.execute(queueing.queue_run(flow, RunTrigger.MANUAL).pk))

    assert elapsed < 2 + MARGIN
    assert run.status == RunStatus.FAILED
    assert "The API did not finish answering within 2 seconds" in run.failure_reason, run.failure_reason
    assert run.shape_runs.get().items_out == 0


@pytest.fixture
def tls_files(tmp_path, monkeypatch) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, the certificate trusted by the client for this test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", str(cert_path))
    return str(cert_path), str(key_path)


@pytest.mark.parametrize("framing", [FRAMINGS[1], FRAMINGS[5]], ids=str)
def test_a_request_over_tls_ends_at_the_deadline_when_the_api_closes_after_its_answer(
    connector_for, raw_server, tls_files, framing
):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)

    def script(conn: Conn) -> None:
        tls = Conn(context.wrap_socket(conn.sock, server_side=True), conn.stopping)
        tls.read_request()
        tls.send(framing.head)
        tls.drip(framing.dripped, every=DRIP_EVERY, max_seconds=DRIP_FOR)

    base_url = raw_server(script).url_for("/api").replace("http://", "https://")
    connector = connector_for(base_url)
    client = InstanceClient(connector, connector.auth_methods.get(), {}, {"api_token": API_TOKEN})

    exchange, elapsed = timed(lambda: client.request("GET", "/orders"))

    assert exchange.error.startswith(TOO_SLOW), exchange.error
    assert DEADLINE <= elapsed < DEADLINE + MARGIN
