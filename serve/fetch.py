"""Fetching an image by URL, when SERVE_ALLOW_IMAGE_URLS=true. A URL lets a caller make the server send requests,
so: http(s) only, no redirects, every resolved address checked (no loopback, private, link-local or metadata
address unless SERVE_IMAGE_URL_ALLOW_PRIVATE=true) and then connected to as checked, one total deadline, one size
cap, and one error for every failure (the log keeps the reason: a detailed error would be a port scanner)."""

from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass

from serve.http_common import RequestError
from serve.limits import Deadline

log = logging.getLogger(__name__)
METADATA_ADDRESSES = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
CANNOT_FETCH = RequestError(
    400,
    "cannot fetch image URL",
    "The image URL could not be fetched: it is unreachable, not allowed, redirected, too slow or too large. Send the "
    "image bytes instead.",
)


class FetchRefused(Exception):
    """Why a URL was not fetched; logged, never shown to the caller."""


NAT64_PREFIX = ipaddress.ip_network(
    "64:ff9b::/96"
)  # RFC 6052's well-known prefix: the last 32 bits are an IPv4 address


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and reaches (mapped, NAT64, 6to4, Teredo's client), or None."""
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour:
        return address.sixtofour
    return address.teredo[1] if address.teredo else None


def allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> bool:
    """Public unicast addresses always; loopback, private and link-local ones only with ``allow_private``. An IPv6
    address that carries an IPv4 one is judged by that one (a NAT64 or 6to4 address can reach a private IPv4 host)."""
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if inner is not None:  # the host reached is the IPv4 one (through a NAT64 or 6to4 gateway)
        return allowed(inner, allow_private)
    if address in METADATA_ADDRESSES or address.is_multicast or address.is_unspecified or address.is_reserved:
        return False
    return allow_private or address.is_global


@dataclass(frozen=True)
class Fetcher:
    max_bytes: int
    timeout: float
    allow_private: bool = False

    def __call__(self, url: str, deadline: Deadline) -> bytes:
        """The bytes at ``url``, within ``timeout`` s in all and the request's deadline; one 400 for any failure."""
        try:
            return self.fetch(url, min(self.timeout, deadline.remaining()))
        except RequestError:
            raise
        except Exception as exc:
            log.warning("image URL %r not fetched: %s: %s", url[:200], type(exc).__name__, exc)
            if deadline.remaining() <= 0:
                raise deadline.expired() from None
            raise CANNOT_FETCH from None

    def fetch(self, url: str, seconds: float) -> bytes:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RequestError(400, "bad image URL", "Only http:// and https:// URLs with a host name are fetched.")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = self.resolve(parts.hostname, port)
        started = time.monotonic()
        sock = socket.create_connection((str(address), port), timeout=seconds)  # the address that was checked
        cutoff = threading.Timer(seconds, sock.shutdown, (socket.SHUT_RDWR,))  # one deadline for the whole exchange
        cutoff.start()
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=seconds)
        connection.sock = (
            ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
            if parts.scheme == "https"
            else sock
        )
        try:
            connection.request(
                "GET",
                urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")),
                headers={"Accept": "image/*"},
            )
            response = connection.getresponse()  # http.client follows no redirect: a 3xx is refused below
            if response.status != 200:
                raise FetchRefused(f"HTTP {response.status}")
            data = response.read(self.max_bytes + 1)
        finally:
            cutoff.cancel()
            connection.close()
        if time.monotonic() - started >= seconds:
            raise FetchRefused(f"took over {seconds:.1f} s")
        if len(data) > self.max_bytes:
            raise FetchRefused(f"larger than {self.max_bytes} bytes")
        return data

    def resolve(self, host: str, port: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The first address of ``host``; refused when any of its addresses is not allowed (DNS may answer several)."""
        addresses = [
            ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        ]
        refused = [a for a in addresses if not allowed(a, self.allow_private)]
        if refused or not addresses:
            raise FetchRefused(f"{host} resolves to {', '.join(map(str, refused)) or 'nothing'}, not allowed")
        return addresses[0]
