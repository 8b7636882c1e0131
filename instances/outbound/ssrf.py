"""SSRF guard for outbound requests to addresses a company controls.

Each hop (the first request and every redirect) is resolved once, every
resolved address is checked, and the connection is then made to that exact
address ("pinned", see transport.py), so a DNS answer that changes between the
check and the connect cannot reach an internal host. IPv6 addresses that carry
an IPv4 address (mapped, compatible, translated, 6to4, NAT64, Teredo, ISATAP)
are judged by the IPv4 address they lead to as well.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit

from django.conf import settings

# Cloud metadata services, refused even though some are not "private".
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("169.254.170.2"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("fd00:ec2::254"),
}


class BlockedDestination(Exception):
    """The URL points somewhere outbound requests may not go."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 ranges refused whatever Python's `is_global` says (its answers vary between
# Python releases). Teredo is refused outright: it tunnels through UDP relays to an
# IPv4 host, its client address is obfuscated and a public API never lives on it.
# The local-use NAT64 prefix is site-specific by definition (RFC 8215) and where it
# embeds an IPv4 address depends on the operator's prefix length.
REFUSED_IPV6_NETWORKS = [
    (ipaddress.ip_network("fec0::/10"), "a site-local address"),
    (ipaddress.ip_network("2001::/32"), "a Teredo tunnel address"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (ipaddress.ip_network("100::/64"), "a discard-only address"),
    (ipaddress.ip_network("2001:db8::/32"), "a documentation address"),
    (ipaddress.ip_network("2001:10::/28"), "a reserved address"),
]
REFUSED_IPV4_NETWORKS = [
    (ipaddress.ip_network("192.88.99.0/24"), "a 6to4 relay address"),
]
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, with the name of the form, if any."""
    if ip.ipv4_mapped:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour:
        return "6to4", ip.sixtofour
    if ip.teredo:
        return "Teredo", ip.teredo[1]
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in NAT64_WELL_KNOWN:
        return "NAT64", low32
    if ip in IPV4_TRANSLATED:
        return "IPv4-translated", low32
    if ip in IPV4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", low32
    # ISATAP interface identifier (RFC 5214): ...:0000:5efe:a.b.c.d or ...:0200:5efe:a.b.c.d
    if (int(ip) >> 32) & 0xFDFFFFFF == 0x00005EFE:
        return "ISATAP", low32
    return None


def _refusal(ip: IPAddress, allow_loopback: bool) -> str | None:
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_ipv4(ip)
        if embedded:
            form, ipv4 = embedded
            if form == "IPv4-mapped":
                return _refusal(ipv4, allow_loopback)  # the very same host as the IPv4 address
            if form == "Teredo":
                return f"a Teredo tunnel address (to {ipv4})"
            # Through a tunnel or translator even loopback is someone else's: never allowed.
            problem = _refusal(ipv4, allow_loopback=False)
            article = "an" if form[0] in "AEIOU" else "a"
            if problem:
                return f"{problem} embedded in {article} {form} address"
            if form in ("IPv4-compatible", "IPv4-translated"):
                return f"an {form} address (a deprecated form a host may route as IPv4)"
            if form in ("6to4", "NAT64", "ISATAP"):
                # A public IPv4 host reached over a translator (DNS64 synthesises
                # 64:ff9b::/96 addresses for every IPv4-only API on IPv6-only networks).
                return None
        for network, reason in REFUSED_IPV6_NETWORKS:
            if ip in network:
                return reason
        if ip.is_site_local:
            return "a site-local address"
    else:
        for network, reason in REFUSED_IPV4_NETWORKS:
            if ip in network:
                return reason
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


def refusal(ip: str, allow_loopback: bool | None = None) -> str | None:
    """Why outbound requests may not go to `ip`, or None when they may."""
    if allow_loopback is None:
        allow_loopback = settings.OUTBOUND_ALLOW_LOOPBACK
    return _refusal(ipaddress.ip_address(ip), allow_loopback)


_lookups: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): threads do not survive a fork


def _getaddrinfo(host: str, port: int, timeout: float | None) -> list:
    """socket.getaddrinfo, given up on after `timeout` seconds (the resolver has its own, longer ones)."""
    global _lookups
    try:
        ipaddress.ip_address(host)
        timeout = None  # a literal address: nothing to look up
    except ValueError:
        pass
    if timeout is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if _lookups is None or _lookups[0] != os.getpid():
        _lookups = (os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="outbound-dns"))
    future = _lookups[1].submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return future.result(timeout=max(timeout, 0))
    except FutureTimeout:
        raise TimeoutError(f'looking up "{host}" took more than {timeout:g} seconds') from None


def resolve(url: str, allow_loopback: bool | None = None) -> str:
    """The one IP address to connect to for `url`, or BlockedDestination."""
    return resolve_all(url, allow_loopback)[0]


def resolve_all(url: str, allow_loopback: bool | None = None, timeout: float | None = None) -> list[str]:
    """Every address `url`'s host resolves to, first the one to connect to; or BlockedDestination.

    With a `timeout`, a lookup that takes longer raises TimeoutError.
    """
    if allow_loopback is None:
        allow_loopback = settings.OUTBOUND_ALLOW_LOOPBACK
    try:
        parts = urlsplit(url)
    except ValueError:
        raise BlockedDestination("the URL is not valid") from None
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
        infos = _getaddrinfo(host, port, timeout)
    except (socket.gaierror, UnicodeError):
        raise BlockedDestination(f'the host name "{host}" could not be resolved') from None
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        problem = _refusal(ip, allow_loopback)
        if problem:
            raise BlockedDestination(f'"{host}" resolves to {problem} ({ip}), which is not allowed')
        if str(ip) not in addresses:
            addresses.append(str(ip))
    if not addresses:
        raise BlockedDestination(f'the host name "{host}" has no addresses')
    return addresses
