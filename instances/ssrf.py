"""SSRF guard for outbound requests to addresses a company controls.

Each hop (the first request and every redirect) is resolved once, every
resolved address is checked, and the connection is then made to that exact
address ("pinned"), so a DNS answer that changes between the check and the
connect cannot reach an internal host. TLS still verifies the certificate
against the hostname. Proxy environment variables are ignored.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# Cloud metadata services, refused even though some are not "private".
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("169.254.170.2"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("fd00:ec2::254"),
}


class BlockedDestination(Exception):
    """The URL points somewhere outbound requests may not go."""


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private network address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "a reserved address"
    if not ip.is_global:
        # e.g. 100.64.0.0/10 (carrier-grade NAT): not "private" to Python, yet
        # internal in clouds and VPNs.
        return "a non-public address"
    return None


def resolve(url: str, allow_loopback: bool | None = None) -> str:
    """The one IP address to connect to for `url`, or BlockedDestination."""
    if allow_loopback is None:
        allow_loopback = settings.OUTBOUND_ALLOW_LOOPBACK
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BlockedDestination(f'only http and https URLs are allowed, not "{parts.scheme or "(none)"}"')
    host = parts.hostname
    if not host:
        raise BlockedDestination("the URL has no host name")
    if parts.username or parts.password:
        raise BlockedDestination("URLs with user names or passwords in them are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BlockedDestination("the URL has an invalid port") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise BlockedDestination(f'the host name "{host}" could not be resolved') from None
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        problem = _refusal(ip, allow_loopback)
        if problem:
            raise BlockedDestination(f'"{host}" resolves to {problem} ({ip}), which is not allowed')
        addresses.append(str(ip))
    if not addresses:
        raise BlockedDestination(f'the host name "{host}" has no addresses')
    return addresses[0]


def _pinned_classes(ip: str) -> dict[str, type]:
    """Connection pool classes whose connections dial `ip` whatever the host name."""

    class PinnedHTTPConnection(HTTPConnection):
        def _new_conn(self):  # type: ignore[override]
            self._dns_host = ip
            return super()._new_conn()

    class PinnedHTTPSConnection(HTTPSConnection):
        def _new_conn(self):  # type: ignore[override]
            self._dns_host = ip
            return super()._new_conn()

    class PinnedHTTPPool(HTTPConnectionPool):
        ConnectionCls = PinnedHTTPConnection

    class PinnedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = PinnedHTTPSConnection

    return {"http": PinnedHTTPPool, "https": PinnedHTTPSPool}


class PinnedAdapter(HTTPAdapter):
    def __init__(self, ip: str):
        self._ip = ip
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pinned_classes(self._ip)


def pinned_session(ip: str) -> requests.Session:
    """A session that ignores proxy settings and connects only to `ip`."""
    session = requests.Session()
    session.trust_env = False  # no proxies or .netrc from the environment
    session.proxies = {}
    adapter = PinnedAdapter(ip)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
