"""The SSRF guard: where outbound requests may go, and how they get there."""

from __future__ import annotations

import ipaddress
import socket

import pytest
import requests

from instances.outbound import ssrf, transport
from instances.outbound.client import InstanceClient


@pytest.fixture
def loopback_refused(settings):
    settings.OUTBOUND_ALLOW_LOOPBACK = False


def refusal(url: str) -> str:
    with pytest.raises(ssrf.BlockedDestination) as caught:
        ssrf.resolve(url)
    return str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/", "http://localhost/", "http://127.9.9.9/", "http://2130706433/", "http://[::1]:8080/"]
)
def test_loopback_is_refused_when_the_setting_does_not_allow_it(loopback_refused, url):
    assert "resolves to a loopback address" in refusal(url)


def test_loopback_is_allowed_when_the_setting_allows_it(settings):
    settings.OUTBOUND_ALLOW_LOOPBACK = True

    assert ssrf.resolve("http://127.0.0.1:8000/") == "127.0.0.1"


@pytest.mark.parametrize("url", ["http://10.1.2.3/", "https://192.168.0.10/", "http://172.16.5.4:8080/", "http://[fd12:3456::1]/"])
def test_private_network_addresses_are_refused(url):
    assert "resolves to a private network address" in refusal(url)


@pytest.mark.parametrize("url", ["http://169.254.10.20/", "http://[fe80::1]/"])
def test_link_local_addresses_are_refused(url):
    assert "resolves to a link-local address" in refusal(url)


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/", "http://100.100.100.200/"]
)
def test_cloud_metadata_addresses_are_refused(url):
    assert "resolves to a cloud metadata address" in refusal(url)


def test_the_unspecified_address_is_refused_even_when_loopback_is_allowed(settings):
    # 0.0.0.0 reaches services on the host itself.
    settings.OUTBOUND_ALLOW_LOOPBACK = True

    assert "0.0.0.0" in refusal("http://0.0.0.0:8000/")


def test_shared_carrier_grade_nat_addresses_are_refused():
    # 100.64.0.0/10 is neither "private" nor public; in clouds and VPNs it is internal.
    assert "100.64.1.2" in refusal("http://100.64.1.2/")


@pytest.mark.parametrize(
    "url, scheme",
    [("file:///etc/passwd", "file"), ("ftp://example.com/x", "ftp"), ("gopher://example.com/", "gopher"), ("//example.com/", "(none)")],
)
def test_only_http_and_https_are_allowed(url, scheme):
    assert refusal(url) == f'only http and https URLs are allowed, not "{scheme}"'


@pytest.mark.parametrize("url", ["http://user:pw@93.184.215.14/", "https://token@93.184.215.14/"])
def test_urls_with_credentials_in_them_are_refused(url):
    assert refusal(url) == "URLs with user names or passwords in them are not allowed"


def test_a_host_name_that_does_not_resolve_is_refused_with_its_name():
    assert refusal("http://no-such-host.invalid/") == 'the host name "no-such-host.invalid" could not be resolved'


@pytest.mark.parametrize(
    "url, ip",
    [("http://93.184.215.14/", "93.184.215.14"), ("https://8.8.8.8:8443/x", "8.8.8.8"), ("https://[2606:4700::1111]/", "2606:4700::1111")],
)
def test_a_public_ip_literal_is_allowed(url, ip):
    assert ssrf.resolve(url) == ip


def test_a_name_with_one_private_address_among_public_ones_is_refused(monkeypatch):
    # Every address a name resolves to is checked, not only the first.
    def two_answers(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(ssrf.socket, "getaddrinfo", two_answers)

    assert refusal("https://api.partner.example/") == (
        '"api.partner.example" resolves to a private network address (10.0.0.7), which is not allowed'
    )


def test_the_client_reports_a_blocked_base_url_without_sending_anything(company, make_connector, loopback_refused, httpserver):
    connector = make_connector(company, base_url=httpserver.url_for("/api"))
    client = InstanceClient(connector, connector.auth_methods.get(), {}, {"api_token": "tok-1"})

    result = client.check_credentials()

    assert not result.ok
    assert result.message.startswith("Blocked: ")
    assert "loopback address" in result.message
    assert httpserver.log == []


@pytest.fixture
def dead_proxy(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return proxy


def test_proxy_environment_variables_are_ignored(company, make_connector, httpserver, dead_proxy):
    httpserver.expect_request("/api/me").respond_with_json({"id": 1})
    # Plain requests would go to the (dead) proxy: the environment is really set.
    with pytest.raises(requests.exceptions.ProxyError):
        requests.get(httpserver.url_for("/api/me"), timeout=2)
    connector = make_connector(company, base_url=httpserver.url_for("/api"))
    client = InstanceClient(connector, connector.auth_methods.get(), {}, {"api_token": "tok-1"})

    result = client.check_credentials()

    assert result.ok, result.message
    [(request, _)] = httpserver.log
    assert request.path == "/api/me"


def test_a_pinned_session_connects_to_the_pinned_address_and_keeps_the_host_name(httpserver):
    httpserver.expect_request("/hello").respond_with_data("hi")
    url = f"http://some-name.invalid:{httpserver.port}/hello"

    with transport.pinned_session("127.0.0.1") as session:
        response = session.get(url, timeout=2)

    assert response.text == "hi"
    [(request, _)] = httpserver.log
    assert request.headers["Host"] == f"some-name.invalid:{httpserver.port}"


def test_a_pinned_session_ignores_proxy_environment_variables(httpserver, dead_proxy):
    httpserver.expect_request("/hello").respond_with_data("hi")

    with transport.pinned_session("127.0.0.1") as session:
        response = session.get(f"http://some-name.invalid:{httpserver.port}/hello", timeout=2)

    assert response.status_code == 200


# --- IPv6 forms that carry an IPv4 address, and other ranges Python calls global ----


@pytest.mark.parametrize(
    "ip, reason",
    [
        ("fec0::1", "a site-local address"),
        ("feff:ffff::1", "a site-local address"),
        # 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
        ("2002:0a00:0001::1", "a private network address embedded in a 6to4 address"),
        ("2002:a9fe:a9fe::1", "a cloud metadata address embedded in a 6to4 address"),
        ("2002:7f00:0001::1", "a loopback address embedded in a 6to4 address"),
        ("2002:c0a8:0101::1", "a private network address embedded in a 6to4 address"),
        # Teredo (2001::/32) is refused whatever it carries
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "a Teredo tunnel address (to 192.0.2.45)"),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "a Teredo tunnel address (to 8.8.8.8)"),
        # NAT64, well-known prefix 64:ff9b::/96
        ("64:ff9b::10.0.0.1", "a private network address embedded in a NAT64 address"),
        ("64:ff9b::169.254.169.254", "a cloud metadata address embedded in a NAT64 address"),
        ("64:ff9b::127.0.0.1", "a loopback address embedded in a NAT64 address"),
        # NAT64, local-use prefix 64:ff9b:1::/48 (RFC 8215) is refused whatever it carries
        ("64:ff9b:1::10.0.0.1", "a local-use NAT64 address"),
        ("64:ff9b:1:abcd::8.8.8.8", "a local-use NAT64 address"),
        # IPv4-mapped ::ffff:a.b.c.d: judged as the IPv4 address itself
        ("::ffff:10.0.0.1", "a private network address"),
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("::ffff:100.64.0.1", "a non-public address"),
        # IPv4-compatible ::a.b.c.d (deprecated) and IPv4-translated ::ffff:0:a.b.c.d
        ("::10.0.0.1", "a private network address embedded in an IPv4-compatible address"),
        ("::169.254.169.254", "a cloud metadata address embedded in an IPv4-compatible address"),
        ("::8.8.8.8", "an IPv4-compatible address (a deprecated form a host may route as IPv4)"),
        ("::ffff:0:10.0.0.1", "a private network address embedded in an IPv4-translated address"),
        ("::ffff:0:8.8.8.8", "an IPv4-translated address (a deprecated form a host may route as IPv4)"),
        # ISATAP interface identifiers (::0:5efe:a.b.c.d and ::200:5efe:a.b.c.d)
        ("2606:4700::5efe:10.0.0.1", "a private network address embedded in an ISATAP address"),
        ("2606:4700::200:5efe:169.254.169.254", "a cloud metadata address embedded in an ISATAP address"),
        # Other special-purpose ranges
        ("100::1", "a discard-only address"),
        ("2001:db8::1", "a documentation address"),
        ("2001:10::1", "a reserved address"),
        ("192.88.99.1", "a 6to4 relay address"),
        ("ff02::1", "a reserved address"),
    ],
)
def test_every_form_that_leads_to_a_refused_address_is_refused(loopback_refused, ip, reason):
    host = f"[{ip}]" if ":" in ip else ip
    assert refusal(f"http://{host}/") == f'"{ip}" resolves to {reason} ({ipaddress.ip_address(ip)}), which is not allowed'


@pytest.mark.parametrize(
    "ip",
    [
        "2002:0808:0808::1",  # 6to4 to a public IPv4 address
        "64:ff9b::8.8.8.8",  # NAT64: DNS64 networks synthesise these for IPv4-only APIs
        "2606:4700::200:5efe:8.8.8.8",  # ISATAP to a public IPv4 address
        "::ffff:8.8.8.8",
        "2606:4700:4700::1111",
    ],
)
def test_forms_that_lead_to_a_public_address_are_allowed(loopback_refused, ip):
    assert ssrf.resolve(f"http://[{ip}]/") == str(ipaddress.ip_address(ip))


def test_loopback_through_a_tunnel_is_refused_even_when_loopback_is_allowed(settings):
    # The development setting allows this host's loopback, not someone else's behind a relay.
    settings.OUTBOUND_ALLOW_LOOPBACK = True

    assert "a loopback address embedded in a NAT64 address" in refusal("http://[64:ff9b::7f00:1]/")
    assert ipaddress.ip_address(ssrf.resolve("http://[::ffff:127.0.0.1]:8000/")).ipv4_mapped.is_loopback


def test_a_url_that_cannot_be_parsed_is_refused():
    assert refusal("http://[::1/") == "the URL is not valid"
