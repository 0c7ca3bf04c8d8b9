"""Which storage hosts a request may reach: the connection's rules against SSRF.

A URL off the vendor's API origins (an audio URL, a redirect target) came from a vendor answer
or a redirect, so its host is judged before anything is sent there: cloud metadata names are
refused without a lookup; the name is resolved once and every address judged
(:func:`address_refusal`: link-local and cloud-metadata addresses never, in any IPv6 encoding
that embeds one, private ones only when the connection allows them); plain http only where
allowed (:class:`StoragePolicy`). The transports connect to the addresses judged here, never to
a fresh lookup's answer. A refusal is :class:`~airflow_provider_tts.exceptions.TtsBlockedHostError`,
a failed lookup a :class:`~airflow_provider_tts.exceptions.TtsConnectionError` that sent nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from airflow_provider_tts.connection import ConnectionSettings, origin_of
from airflow_provider_tts.exceptions import TtsBlockedHostError, TtsConnectionError
from airflow_provider_tts.transport.messages import failure_detail, safe_url
from airflow_provider_tts.vendors.base import ApiRequest

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud metadata services outside the link-local ranges (which are refused as link-local anyway:
#: 169.254.169.254 of AWS, GCP, Azure, OpenStack...; 169.254.170.2 of ECS; 169.254.0.23 of Tencent).
#: Refused even where private hosts are allowed, because a private-network allowance (automatic when
#: the API base is on loopback) is about the operator's own hosts, never about the cloud's.
METADATA_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("fd00:ec2::/32"),  # AWS services over IPv6: IMDS at fd00:ec2::254, DNS, NTP
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
    ipaddress.ip_network("168.63.129.16/32"),  # Azure WireServer (host agent, certificates)
    ipaddress.ip_network("192.0.0.192/32"),  # Oracle Cloud Classic metadata
)

#: Host names of cloud metadata services, refused before any lookup: behind a proxy or a split
#: resolver the name, not an address, is what reaches the service.
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "metadata.azure.com",
        "instance-data",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
        "metadata.packet.net",
    }
)


def is_metadata_name(host: str) -> bool:
    """Whether ``host`` names a cloud metadata service (also ``instance-data.ec2.internal`` and kin)."""
    name = host.lower().rstrip(".")
    first, _, rest = name.partition(".")
    internal = rest == "internal" or rest.endswith(".internal")
    return name in METADATA_NAMES or (first in ("metadata", "instance-data") and internal)


def _bits(value: int, high: int, width: int) -> int:
    """``width`` bits of a 128-bit address starting at bit ``high`` (bit 0 is the leftmost)."""
    return (value >> (128 - high - width)) & ((1 << width) - 1)


#: RFC 6052 positions of an IPv4 address inside a NAT64 address, by prefix length: where its
#: first and second parts start (bits 64..71 are the reserved "u" octet, skipped) and how wide
#: the first part is. 64:ff9b:1::/48 (RFC 8215, local use) may carry any prefix of /48 or longer.
_RFC6052_LAYOUTS = {48: (48, 16, 72), 56: (56, 8, 72), 64: (72, 32, 104), 96: (96, 32, 128)}


def _rfc6052_ipv4(value: int, prefix: int) -> ipaddress.IPv4Address:
    first_at, first_width, second_at = _RFC6052_LAYOUTS[prefix]
    first = _bits(value, first_at, first_width)
    second_width = 32 - first_width
    second = _bits(value, second_at, second_width) if second_width else 0
    return ipaddress.IPv4Address((first << second_width) | second)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses an IPv6 address reaches through a translation or tunnel: (mechanism, address).

    A packet to any of these ends up at the IPv4 address, so 169.254.169.254 written as
    ``64:ff9b::a9fe:a9fe`` is the metadata service, even though the IPv6 address on its own looks
    global. Covered: IPv4-mapped ``::ffff:0:0/96``, IPv4-translated ``::ffff:0:0:0/96``,
    IPv4-compatible ``::/96`` (but ``::`` and ``::1``, which are IPv6's own unspecified and
    loopback addresses), NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48`` (every RFC 6052 layout a
    /48 or longer prefix may use), 6to4 ``2002::/16`` (bits 16..47) and Teredo ``2001::/32``
    (the client is the last 32 bits inverted; the server, bits 32..63, is reached too).
    """
    value = int(address)
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    upper96 = value >> 32
    if upper96 == 0xFFFF:
        found.append(("IPv4-mapped", low32))
    elif upper96 == 0xFFFF0000:
        found.append(("IPv4-translated", low32))
    elif upper96 == 0 and value > 1:
        found.append(("IPv4-compatible", low32))
    if upper96 == 0x0064FF9B << 64:
        found.append(("NAT64", low32))
    if value >> 80 == 0x0064FF9B0001:
        found.extend(("NAT64 (local use)", _rfc6052_ipv4(value, prefix)) for prefix in _RFC6052_LAYOUTS)
    if value >> 112 == 0x2002:
        found.append(("6to4", ipaddress.IPv4Address(_bits(value, 16, 32))))
    if value >> 96 == 0x20010000:
        found.append(("Teredo client", ipaddress.IPv4Address(~value & 0xFFFFFFFF)))
        found.append(("Teredo server", ipaddress.IPv4Address(_bits(value, 32, 32))))
    return found


def _is_metadata(address: IpAddress) -> bool:
    return any(address.version == net.version and address in net for net in METADATA_NETWORKS)


def _not_public(address: IpAddress) -> bool:
    return not address.is_global or address.is_multicast


def address_refusal(address: IpAddress, *, allow_private: bool) -> str | None:
    """Why a storage request must not go to ``address``, or None when it may.

    The address and every IPv4 address it embeds (:func:`embedded_ipv4`) are judged, and the
    strictest verdict wins: link-local and cloud-metadata addresses never, other non-public ones
    (private, loopback, CGNAT, unspecified, multicast...) only with ``allow_private``.
    """
    candidates: list[tuple[str, IpAddress]] = [("", address)]
    if isinstance(address, ipaddress.IPv6Address):
        candidates += [(f" ({how} form of {v4})", v4) for how, v4 in embedded_ipv4(address)]
    for how, candidate in candidates:
        if candidate.is_link_local:
            return (
                f"the link-local address {address}{how} (where cloud metadata services live); "
                "audio is never fetched from link-local addresses"
            )
        if _is_metadata(candidate):
            return f"the cloud metadata address {address}{how}; audio is never fetched from a metadata service"
    if not allow_private:
        # Embedded addresses first: "NAT64 form of 10.0.0.5" says more than the IPv6 address alone.
        for how, candidate in reversed(candidates):
            if _not_public(candidate):
                return (
                    f"the non-public address {address}{how}; set the connection extra "
                    "allow_private_audio_hosts to true if audio really is served from there"
                )
    return None


def _ip_literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve_host(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to, in the resolver's order (an IP literal is its own address).

    The only name lookup of a storage request: its answer is judged and then connected to, never
    looked up again (see :class:`StoragePolicy`). Raises ``socket.gaierror`` when nothing resolves.
    """
    literal = _ip_literal(host)
    if literal is not None:
        return [literal]
    addresses: list[IpAddress] = []
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class HostRefused(Exception):
    """A storage host the connection's rules refuse; the message starts with the host.

    Not an ``OSError`` on purpose: urllib3 and aiohttp let it through unwrapped (they would retry
    or re-word an ``OSError``), and the transport turns it into :class:`TtsBlockedHostError`.
    """


@dataclass(frozen=True)
class StoragePolicy:
    """The connection's rules for storage hosts (audio URLs, redirect targets off the API origins).

    :param allow_private: private and loopback addresses are allowed (never link-local or metadata).
    :param allow_http: plain http is allowed to public hosts too (otherwise only to allowed private ones).
    """

    allow_private: bool
    allow_http: bool

    @classmethod
    def of(cls, settings: ConnectionSettings) -> StoragePolicy:
        return cls(allow_private=settings.allow_private_hosts, allow_http=settings.allow_http_hosts)

    def check_name(self, host: str) -> None:
        """Refuse a host by its name alone (a cloud metadata service's), without a lookup."""
        if is_metadata_name(host):
            raise HostRefused(f"{host} is the name of a cloud metadata service; audio is never fetched from one")

    def checked_addresses(self, scheme: str, host: str, port: int) -> list[IpAddress]:
        """Resolve ``host`` once and return its addresses if every one is allowed; else :class:`HostRefused`.

        The connection is then made to one of these addresses, never to a fresh lookup's answer,
        which an attacker's DNS could have changed meanwhile. Every address is judged, not just
        the one connected to, so a name is refused as a whole rather than half-trusted.
        """
        self.check_name(host)
        addresses = resolve_host(host, port)
        if not addresses:
            raise HostRefused(f"{host} resolves to no address")
        verb = "is" if _ip_literal(host) is not None else "resolves to"
        for address in addresses:
            reason = address_refusal(address, allow_private=self.allow_private)
            if reason:
                raise HostRefused(f"{host} {verb} {reason}")
        private = all(_not_public(a) for a in addresses)
        if scheme == "http" and not self.allow_http and not (private and self.allow_private):
            raise HostRefused(
                f"{host}: plain http to a public host (the audio and its signed URL would travel "
                "unencrypted); expected https, or set the connection extra allow_http_audio_hosts to true"
            )
        return addresses


def _storage_target(req: ApiRequest, url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a storage URL, or :class:`TtsBlockedHostError` when it has none."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname or "", parts.port
    except ValueError:
        scheme, host, port = "", "", None
    if scheme not in ("http", "https") or not host:
        raise TtsBlockedHostError(f"{req.what}: refusing {safe_url(url)!r}; expected an http(s) URL with a host")
    return scheme, host, port or (443 if scheme == "https" else 80)


def blocked_error(req: ApiRequest, url: str, refused: HostRefused) -> TtsBlockedHostError:
    return TtsBlockedHostError(f"{req.what}: refusing {safe_url(url)}: {refused}")


def check_storage_url(settings: ConnectionSettings, req: ApiRequest, url: str) -> list[IpAddress]:
    """Refuse a URL off the API origins whose scheme or resolved addresses the connection does not allow.

    Returns the checked addresses (none for a URL on the API origins). The vendor's API origins
    are trusted: they come from the connection, and get the key anyway. Any other URL came from a
    vendor answer or a redirect, so it is judged on every address its host name resolves to (a
    public name pointing at 169.254.169.254 is caught too) by :class:`StoragePolicy`. The
    transports do not call this and then connect by name: their storage connections make this
    same check on their own single lookup and connect to the address it approved.
    """
    if origin_of(url) in settings.api_origins:
        return []
    scheme, host, port = _storage_target(req, url)
    try:
        return StoragePolicy.of(settings).checked_addresses(scheme, host, port)
    except HostRefused as refused:
        raise blocked_error(req, url, refused) from None
    except OSError as exc:
        raise TtsConnectionError(
            f"{req.what}: cannot resolve storage host {host!r}: {failure_detail(exc)}", request_sent=False
        ) from None


def precheck_storage_url(settings: ConnectionSettings, req: ApiRequest, url: str) -> None:
    """What can be judged of a storage URL without a lookup: scheme, host, metadata names, IP literals.

    Run before a storage request so that a URL refused on its face fails with a clear message
    and no connection attempt; host names are judged by the connection itself (see
    :class:`StoragePolicy`), which is also the only place they are looked up. aiohttp never asks
    its resolver about an IP literal, so literals must be judged here.
    """
    scheme, host, port = _storage_target(req, url)
    policy = StoragePolicy.of(settings)
    try:
        if _ip_literal(host) is None:
            policy.check_name(host)
        else:
            policy.checked_addresses(scheme, host, port)
    except HostRefused as refused:
        raise blocked_error(req, url, refused) from None
