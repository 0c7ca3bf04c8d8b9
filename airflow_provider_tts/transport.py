"""HTTP for the hook: one retry policy, a sync transport (requests) and an async one (aiohttp).

Both transports send the vendor's :class:`~airflow_provider_tts.vendors.base.ApiRequest` and hand
the response to the vendor's parser inside the same retry loop, so a malformed body on a poll is
retried like a 502 would be. What they share is here once:

* every request has a connect and a read timeout;
* transient failures (429, 5xx, timeouts, dropped connections, malformed bodies) are retried with
  exponential backoff and jitter, honouring ``Retry-After``; permanent ones (400, 401, 403, 422)
  are not; a create call is retried only when the vendor provably did not process it;
* the API key is attached only to requests the vendor marks as authenticated *and* whose origin is
  one of the vendor's API origins, hop by hop, so a redirect or a storage URL never receives it;
* sessions are reused: one ``requests.Session`` per sync transport, one ``aiohttp.ClientSession``
  per async transport, with keep-alive;
* a URL off the vendor's API origins (an audio URL, a redirect target) goes through a separate
  client whose connections resolve the host name once, judge every address
  (:class:`StoragePolicy`: link-local and cloud-metadata addresses never, in any IPv6 encoding;
  private ones only when allowed) and connect to a checked address, so a DNS answer that changes
  between the check and the connection (rebinding) cannot redirect the request;
* a storage host refusing an audio URL (401/403/404/410) is :class:`TtsAudioUrlExpiredError`,
  never an API-key error: the key is never sent there;
* no exception message or log line carries a URL's query string or userinfo (a pre-signed URL's
  signature and credential live there): messages name URLs through :func:`safe_url`, describe a
  failure from its cause chain's class names and error codes (:func:`failure_detail`), never
  from a library's own text, and do not chain the library exception, whose text (``...with url:
  /a.mp3?X-Amz-Signature=...``) a task log would print with the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import ipaddress
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, unquote_plus, urljoin, urlsplit, urlunsplit

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.poolmanager
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from airflow_provider_tts import __version__
from airflow_provider_tts.connection import ConnectionSettings, RetryPolicy, origin_of
from airflow_provider_tts.exceptions import (
    TtsAudioUrlExpiredError,
    TtsBlockedHostError,
    TtsConnectionError,
    TtsError,
    TtsProtocolError,
    TtsRateLimitError,
    TtsServerError,
)
from airflow_provider_tts.vendors.base import ApiRequest, ApiResponse, http_error

if TYPE_CHECKING:
    import aiohttp
    import aiohttp.abc

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A JSON answer larger than this is not one of the vendors' small status or create bodies.
MAX_JSON_BODY = 1 << 20
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = f"airflow-provider-tts/{__version__}"


class Pacer:
    """One ``Retry-After`` for many requests: a 429 pauses every request that shares this pacer.

    A batch sends many requests at once over one connection. When the vendor answers one of them
    with 429, its ``Retry-After`` is about the account, not that request: the other requests in
    flight would only collect 429s of their own. Transports given the same pacer wait until the
    latest pause a 429 asked for before each attempt, so the whole batch slows down together.
    Thread-safe (the sync transport's callers are worker threads) and usable from event loops.
    """

    #: The longest pause one answer may impose (a garbled ``Retry-After`` must not stall a batch).
    MAX_PAUSE = 300.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resume_at = 0.0
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        """Hold every request of this pacer for ``seconds`` from now (the longest pause wins)."""
        until = time.monotonic() + min(max(seconds, 0.0), self.MAX_PAUSE)
        with self._lock:
            if until > self._resume_at:
                self._resume_at = until
                self.pauses += 1

    def delay(self) -> float:
        """Seconds to wait before the next request may start."""
        return max(self._resume_at - time.monotonic(), 0.0)

    def wait(self) -> None:
        while (left := self.delay()) > 0:
            time.sleep(left)

    async def await_turn(self) -> None:
        while (left := self.delay()) > 0:
            await asyncio.sleep(left)

    def observe(self, exc: BaseException) -> None:
        """Take the pause a rate-limit answer asked for (anything else is ignored)."""
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(exc, TtsRateLimitError) and retry_after is not None:
            self.pause(float(retry_after))


# ---------------------------------------------------------------------------------- redaction


def safe_url(url: str) -> str:
    """A URL for logs and messages: no query (pre-signed URLs carry signatures there), no userinfo.

    Never raises: it also names URLs that failed to parse (a bad port, a broken IPv6 literal),
    which are exactly the ones an error message has to mention.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "<an unparseable URL>"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _host_and_port(url: str) -> str:
    """``host:port`` of a URL as :func:`safe_url` writes it (never the userinfo ``netloc`` keeps)."""
    return urlsplit(safe_url(url)).netloc


#: A query string inside free text: a ``?`` right after a URL-ish character, up to white space or
#: a quote. Catches what exact matching cannot (a query another library re-encoded or cut short).
_QUERY_IN_TEXT = re.compile(r"(?<=[\w/.%~+-])\?[^\s'\"<>]*")
#: Userinfo inside free text: ``//user:password@``.
_USERINFO_IN_TEXT = re.compile(r"(?<=//)[^\s/?#@'\"<>]*@")
#: Shorter query values are not removed one by one from a message (``1``, ``3600`` are no secret
#: and removing them would garble the text); the whole query is removed whatever its length.
_MIN_SECRET_VALUE = 8


def _url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that must never be printed: its query, its values, its userinfo.

    Raw and decoded spellings, longest first, because libraries quote URLs their own way before
    they put them into messages.
    """
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return [url]
    found: set[str] = set()
    if parts.query:
        query = parts.query
        found.update({query, unquote(query), unquote_plus(query), requests.utils.requote_uri(query)})
        for pair in query.split("&"):
            value = pair.partition("=")[2]
            if len(value) >= _MIN_SECRET_VALUE:
                found.update({value, unquote(value), unquote_plus(value)})
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        found.update({userinfo, unquote(userinfo)})
        for part in (username, password):
            if part and len(part) >= 4:
                found.update({part, unquote(part)})
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def scrub(text: str, *urls: str) -> str:
    """``text`` without any query string or userinfo: those of ``urls`` exactly, and any URL-shaped one.

    The last line of defence under :func:`safe_url` and :func:`failure_detail`, which keep URLs
    out of messages in the first place.
    """
    for url in urls:
        for secret in _url_secrets(url):
            text = text.replace(secret, "")
    return _USERINFO_IN_TEXT.sub("", _QUERY_IN_TEXT.sub("", text))


def _cause_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps, outermost first, as urllib3, requests and aiohttp nest them.

    urllib3 keeps the cause in ``reason``, requests and aiohttp in ``args`` or ``__cause__``.
    """
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8 and all(cause is not seen for seen in chain):
        chain.append(cause)
        nxt = getattr(cause, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = next((a for a in cause.args if isinstance(a, BaseException)), None)
        cause = nxt or cause.__cause__ or cause.__context__
    return chain


def _fact(exc: BaseException) -> str | None:
    """What one exception of a chain says, from fields that never hold a URL (error codes, reasons)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message or exc.reason or "certificate verify failed")
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason) if exc.reason else None
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ([Errno {exc.errno}] {exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    if isinstance(exc, http.client.IncompleteRead):
        # urllib3's subclass keeps a byte count where http.client keeps the bytes.
        partial: Any = exc.partial
        read = partial if isinstance(partial, int) else len(partial)
        more = f", {exc.expected} more expected" if exc.expected is not None else ""
        return f"{read} bytes read{more}"
    if isinstance(exc, (TimeoutError, urllib3.exceptions.TimeoutError)):
        return "timed out"
    return None


def failure_detail(exc: BaseException, *urls: str) -> str:
    """A failure in words that cannot carry a URL: the cause chain's class names and one fact.

    Library messages are not used: requests and urllib3 put the request path and query into theirs
    (``Max retries exceeded with url: /a.mp3?X-Amz-Signature=...``), aiohttp the whole URL
    (``Connection timeout to host http://...``). What is left still tells a refused connection
    from a timeout, a reset, a certificate problem or a body cut short; :func:`scrub` runs over it
    anyway. E.g. ``ConnectionError < MaxRetryError < NewConnectionError < ConnectionRefusedError:
    [Errno 111] Connection refused``.
    """
    chain = _cause_chain(exc)
    names: list[str] = []
    for cause in chain:
        if not names or names[-1] != type(cause).__name__:
            names.append(type(cause).__name__)
    fact = next((f for f in map(_fact, reversed(chain)) if f), None)
    text = " < ".join(names) + (f": {fact}" if fact else "")
    return scrub(text, *urls)[:300]


#: Set while a transport sends a request: urllib3's own log lines (``"GET /a.mp3?X-Amz-...`` at
#: DEBUG, the URL of a retried request at WARNING) are scrubbed then, and only then, so the
#: filter changes nothing for other users of urllib3 in the process.
_SCRUB_URLLIB3_LOGS: ContextVar[bool] = ContextVar("airflow_provider_tts_scrub_urllib3_logs", default=False)


class _ScrubUrllib3Logs(logging.Filter):
    """Removes query strings and userinfo from urllib3's log arguments during our requests."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SCRUB_URLLIB3_LOGS.get() and isinstance(record.args, tuple):
            record.args = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


_URLLIB3_LOG_FILTER = _ScrubUrllib3Logs()
for _name in ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_URLLIB3_LOG_FILTER)


def parse_without_secrets(parse: Callable[[ApiResponse], T], resp: ApiResponse) -> T:
    """``parse(resp)``, with any URL query string or userinfo cut out of a :class:`TtsError` it raises.

    Vendor answers carry signed URLs (a RevidAPI status holds its ``audio_url``, a Camb result
    its ``file_url``), and a parser that refuses an answer quotes an excerpt of it; that message
    would otherwise leave the transport with the signature in it. The exception is the same
    object (type, fields and cause kept), its text scrubbed.
    """
    try:
        return parse(resp)
    except TtsError as exc:
        text = str(exc)
        clean = scrub(text)
        if clean != text:
            exc.args = (clean, *exc.args[1:])
            exc.message = clean
        raise


@contextlib.contextmanager
def _scrubbed_urllib3_logs() -> Iterator[None]:
    token = _SCRUB_URLLIB3_LOGS.set(True)
    try:
        yield
    finally:
        _SCRUB_URLLIB3_LOGS.reset(token)


def is_retryable(exc: BaseException, idempotent: bool) -> bool:
    """Whether the same request may be sent again after ``exc``.

    429 and 503 mean the request was not processed, and a connection that was never opened sent
    nothing, so those are safe even for a create call. Anything else that is transient (other 5xx,
    a read timeout, a connection dropped mid-response, a garbled body) may hide a processed
    request, so it is retried only when the request is idempotent.
    """
    if isinstance(exc, TtsRateLimitError):
        return True
    if isinstance(exc, TtsServerError):
        return idempotent or exc.http_status == 503
    if isinstance(exc, TtsConnectionError):
        return idempotent or not exc.request_sent
    if isinstance(exc, TtsProtocolError):
        return idempotent
    return False


def _wait_strategy(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """Exponential backoff with jitter, stretched to the vendor's ``Retry-After``, capped."""

    def wait(state: RetryCallState) -> float:
        exponent = min(state.attempt_number - 1, 30)
        seconds = policy.backoff * 2**exponent + random.uniform(0, policy.backoff)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            seconds = max(seconds, retry_after)
        return float(min(seconds, policy.max_backoff))

    return wait


def retry_kwargs(policy: RetryPolicy, req: ApiRequest) -> dict[str, Any]:
    """Tenacity arguments shared by the sync and async loops: one policy for both."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s failed (%s); retry %d of %d in %.1f s",
            req.what,
            scrub(str(exc), req.url),
            state.attempt_number,
            policy.max_retries,
            state.upcoming_sleep,
        )

    return {
        "stop": stop_after_attempt(policy.max_retries + 1),
        "wait": _wait_strategy(policy),
        "retry": retry_if_exception(lambda exc: is_retryable(exc, req.idempotent)),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def _key_headers(
    settings: ConnectionSettings, req: ApiRequest, url: str, on_api_origin: bool | None = None
) -> dict[str, str]:
    """The key header, for an authenticated request to one of the vendor's API origins only.

    :param on_api_origin: ``origin_of(url) in settings.api_origins``, when the caller already knows it.
    """
    if on_api_origin is None:
        on_api_origin = origin_of(url) in settings.api_origins
    if req.authenticated and on_api_origin:
        return {"x-api-key": settings.api_key.get_secret_value()}
    return {}


def _next_hop(req: ApiRequest, current: str, status: int, location: str | None, hop: int) -> str | None:
    """The URL a redirect points to, or None when the response is not a redirect to follow."""
    if status not in _REDIRECTS or not location:
        return None
    try:
        target = urljoin(current, location)
    except ValueError:
        raise TtsProtocolError(f"{req.what}: a redirect to an unparseable Location") from None
    if req.method != "GET":
        raise TtsProtocolError(f"{req.what}: unexpected redirect of a {req.method} to {safe_url(target)}")
    if urlsplit(target).scheme not in ("http", "https"):
        raise TtsProtocolError(f"{req.what}: refusing a redirect to a non-http(s) URL {safe_url(target)!r:.120}")
    if hop >= MAX_REDIRECTS:
        raise TtsProtocolError(f"{req.what}: more than {MAX_REDIRECTS} redirects")
    return target


#: What a storage host answers for a pre-signed URL that expired, was revoked, or whose object is gone.
_EXPIRED_URL_STATUSES = frozenset({401, 403, 404, 410})

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# ------------------------------------------------------------------------ storage-host addresses

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


def _blocked(req: ApiRequest, url: str, refused: HostRefused) -> TtsBlockedHostError:
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
        raise _blocked(req, url, refused) from None
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
        raise _blocked(req, url, refused) from None


def _too_big(req: ApiRequest, url: str) -> TtsProtocolError:
    return TtsProtocolError(f"{req.what}: response from {safe_url(url)} is over {MAX_JSON_BODY} bytes")


# --------------------------------------------------------------------------------------------- sync


def _requests_error(exc: requests.RequestException, req: ApiRequest, *urls: str) -> TtsConnectionError:
    """Map a requests failure, telling 'never reached the server' apart from 'may have been processed'.

    The message is built by :func:`failure_detail`, never from ``str(exc)``, which carries the
    request's path and query; raise it ``from None`` for the same reason.
    """
    chain = _cause_chain(exc)
    before_send = isinstance(exc, requests.ConnectTimeout) or any(
        isinstance(cause, (ConnectionRefusedError, socket.gaierror))
        or type(cause).__name__ in ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError")
        for cause in chain
    )
    label = "read timed out" if isinstance(exc, requests.ReadTimeout) else type(exc).__name__
    where = safe_url(urls[0]) if urls else ""
    return TtsConnectionError(
        f"{req.what}: {label} ({where}): {failure_detail(exc, req.url, *urls)}", request_sent=not before_send
    )


def _without_secrets(resp: ApiResponse, *urls: str) -> ApiResponse:
    """``resp`` with the URLs' secrets cut out of its body, for an error message quoting the body.

    A storage host may echo the request in its error page (S3's ``SignatureDoesNotMatch`` quotes
    the canonical request, credential included).
    """
    body = resp.body
    for url in urls:
        for secret in _url_secrets(url):
            body = body.replace(secret.encode(), b"")
    return ApiResponse(resp.status, resp.headers, body, resp.url)


# ------------------------------------------------------------- sync storage connections (urllib3)


def _open_socket(
    address: IpAddress, port: int, timeout: Any, source_address: tuple[str, int] | None, options: Any
) -> socket.socket:
    """A TCP socket connected to ``address`` itself: no name, so nothing is looked up again."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        for option in options or ():
            sock.setsockopt(*option)
        if timeout is None or isinstance(timeout, (int, float)):
            sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect((str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


def _checked_socket(conn: urllib3.connection.HTTPConnection, policy: StoragePolicy, scheme: str) -> socket.socket:
    """Resolve the connection's host once, judge the answer, connect to a checked address.

    Replaces urllib3's ``create_connection``, which would look the name up again. Failures are
    urllib3's own exceptions, so requests and :func:`_requests_error` treat them as before (a
    refused or timed-out connect sent nothing). TLS is layered on this socket by urllib3 with the
    host *name* as SNI and for certificate verification, as for any other connection.
    """
    try:
        addresses = policy.checked_addresses(scheme, conn._dns_host, conn.port)
    except socket.gaierror as exc:
        raise urllib3.exceptions.NameResolutionError(conn.host, conn, exc) from exc
    last: OSError | None = None
    for address in addresses:
        try:
            return _open_socket(address, conn.port, conn.timeout, conn.source_address, conn.socket_options)
        except OSError as exc:
            last = exc
    if isinstance(last, TimeoutError):
        raise urllib3.exceptions.ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from last
    raise urllib3.exceptions.NewConnectionError(conn, f"Failed to establish a new connection: {last}") from last


class _CheckedHTTPConnection(urllib3.connection.HTTPConnection):
    """A plain-http storage connection: connects only to an address :class:`StoragePolicy` approved."""

    def __init__(self, *args: Any, storage_policy: StoragePolicy, **kwargs: Any) -> None:
        self._storage_policy = storage_policy
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        return _checked_socket(self, self._storage_policy, "http")


class _CheckedHTTPSConnection(urllib3.connection.HTTPSConnection):
    """An https storage connection: checked address, TLS verified against the host name (SNI too)."""

    def __init__(self, *args: Any, storage_policy: StoragePolicy, **kwargs: Any) -> None:
        self._storage_policy = storage_policy
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        return _checked_socket(self, self._storage_policy, "https")


class _CheckedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedPoolManager(urllib3.poolmanager.PoolManager):
    """Pools whose connections carry the storage policy (given to each connection as a keyword)."""

    def __init__(self, storage_policy: StoragePolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._storage_policy = storage_policy
        self.pool_classes_by_scheme = {"http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> urllib3.connectionpool.HTTPConnectionPool:
        # Added here rather than to connection_pool_kw: the pool key is built from that, and it
        # has no field for this.
        context = dict(self.connection_pool_kw if request_context is None else request_context)
        context["storage_policy"] = self._storage_policy
        return super()._new_pool(scheme, host, port, context)


class _CheckedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter for storage URLs: direct connections go through :class:`_CheckedPoolManager`.

    Through a proxy from the environment (``HTTPS_PROXY``...), the proxy resolves the name and
    connects; the client cannot pin its address, so the host is resolved and judged here before
    the request, which is as far as a client can go: the proxy's own egress rules are the rest.
    """

    def __init__(self, storage_policy: StoragePolicy) -> None:
        self._storage_policy = storage_policy  # before super().__init__, which builds the pool manager
        super().__init__()

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _CheckedPoolManager(
            self._storage_policy, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        url = request.url or ""
        if requests.utils.select_proxy(url, kwargs.get("proxies")):
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                self._storage_policy.checked_addresses(parts.scheme, parts.hostname or "", port)
            except socket.gaierror as exc:
                raise requests.ConnectionError(exc, request=request) from exc
        return super().send(request, *args, **kwargs)


@dataclass
class AudioStream:
    """An open, streaming audio response: read it with :meth:`iter_chunks`, then close it.

    :param url: where the bytes come from, without its query string (safe to log).
    :param content_type: the server's media type, e.g. ``audio/flac``.
    :param content_length: the announced size in bytes, when the server gave one.
    :param headers: the response headers, names in lower case (e.g. Camb's ``x-credits-required``).
    """

    url: str
    content_type: str
    content_length: int | None
    _response: requests.Response = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    def iter_chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the body in chunks of at most ``chunk_size`` bytes; never holds the whole body."""
        failure: Exception | None = None
        try:
            for chunk in self._response.raw.stream(chunk_size, decode_content=False):
                if chunk:
                    yield chunk
        except Exception as exc:  # urllib3 ProtocolError, ReadTimeoutError, socket errors
            failure = exc
        if failure is not None:
            # Raised outside the handler so that the urllib3 error, whose text may hold the
            # signed URL, is not even the hidden context of this one.
            raise TtsConnectionError(
                f"audio download from {self.url} broke off: {failure_detail(failure, self._response.url)}",
                request_sent=True,
            )

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncTransport:
    """Blocking HTTP through reused ``requests`` sessions: one for the API, one for storage hosts.

    The API session connects the usual way to the connection's own API origins. Storage URLs go
    through a second session (made on first use) whose connections resolve, judge and connect to
    a checked address (:class:`_CheckedAdapter`); it shares no cookies with the API session.
    """

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self._storage: requests.Session | None = None
        self._storage_lock = threading.Lock()
        self._timeout = (settings.connect_timeout, settings.read_timeout)
        #: Shared with other transports of one batch: a 429 pauses all of them (see :class:`Pacer`).
        self.pacer: Pacer | None = None

    def close(self) -> None:
        self.session.close()
        if self._storage is not None:
            self._storage.close()

    def storage_session(self) -> requests.Session:
        """The session for URLs off the API origins, whose connections go only to checked addresses."""
        with self._storage_lock:
            if self._storage is None:
                session = requests.Session()
                session.headers["User-Agent"] = USER_AGENT
                adapter = _CheckedAdapter(StoragePolicy.of(self.settings))
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._storage = session
            return self._storage

    def _paced(self, send: Callable[[], T]) -> T:
        if self.pacer is None:
            return send()
        self.pacer.wait()
        try:
            return send()
        except TtsError as exc:
            self.pacer.observe(exc)
            raise

    def _send(self, req: ApiRequest, extra_headers: dict[str, str] | None = None) -> requests.Response:
        url = req.url
        for hop in range(MAX_REDIRECTS + 1):
            on_api_origin = origin_of(url) in self.settings.api_origins
            if on_api_origin:
                session = self.session
            else:
                precheck_storage_url(self.settings, req, url)
                session = self.storage_session()
            headers = {**(extra_headers or {}), **_key_headers(self.settings, req, url, on_api_origin)}
            failure: TtsError | None = None
            try:
                with _scrubbed_urllib3_logs():
                    resp = session.request(
                        req.method,
                        url,
                        params=req.params if hop == 0 else None,
                        json=req.json,
                        headers=headers,
                        timeout=self._timeout,
                        allow_redirects=False,
                        stream=True,
                    )
            except HostRefused as refused:
                failure = _blocked(req, url, refused)
            except requests.RequestException as exc:
                failure = _requests_error(exc, req, url)
            if failure is not None:
                raise failure  # outside the handler: the library error's text must not ride along
            target = _next_hop(req, resp.url, resp.status_code, resp.headers.get("location"), hop)
            if target is None:
                return resp
            resp.close()
            url = target
        raise AssertionError("unreachable")  # pragma: no cover

    def read_response(self, req: ApiRequest, resp: requests.Response) -> ApiResponse:
        failure: TtsError | None = None
        chunks: list[bytes] = []
        try:
            size = 0
            for chunk in resp.iter_content(65536):
                size += len(chunk)
                if size > MAX_JSON_BODY:
                    failure = _too_big(req, resp.url)
                    break
                chunks.append(chunk)
        except requests.RequestException as exc:
            failure = _requests_error(exc, req, resp.url)
        finally:
            resp.close()
        if failure is not None:
            raise failure
        headers = {k.lower(): v for k, v in resp.headers.items()}
        # Parsers see the URL only to name the host; without query and userinfo it is safe to quote.
        return ApiResponse(resp.status_code, headers, b"".join(chunks), safe_url(resp.url))

    def call(self, req: ApiRequest, parse: Callable[[ApiResponse], T]) -> T:
        """Send ``req`` and parse the answer, retrying both per the connection's policy."""
        for attempt in Retrying(**retry_kwargs(self.settings.retry, req)):
            with attempt:
                return self._paced(
                    lambda: parse_without_secrets(
                        parse, self.read_response(req, self._send(req, {"Accept": "application/json"}))
                    )
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def open_stream(self, req: ApiRequest) -> AudioStream:
        """Open a streaming 2xx response, retrying until its headers arrive; errors become TtsErrors."""
        for attempt in Retrying(**retry_kwargs(self.settings.retry, req)):
            with attempt:
                resp = self._send(req, {"Accept-Encoding": "identity"})
                if not 200 <= resp.status_code < 300:
                    signed_url = resp.url
                    answer = _without_secrets(self.read_response(req, resp), req.url, signed_url)
                    # A request the vendor marks unauthenticated goes to storage (a Revid audio_url,
                    # a Camb file_url) even where a test emulator serves it on the API's own origin.
                    on_storage = not req.authenticated or origin_of(signed_url) not in self.settings.api_origins
                    if resp.status_code in _EXPIRED_URL_STATUSES and on_storage:
                        raise TtsAudioUrlExpiredError(
                            f"{req.what}: the storage host {_host_and_port(signed_url)} answered HTTP "
                            f"{resp.status_code} for {safe_url(signed_url)}: the signed audio URL expired or was "
                            "revoked (the API key is never sent to storage hosts, so it is not the key)",
                            http_status=resp.status_code,
                        )
                    raise http_error(answer, req.what)
                length = resp.headers.get("content-length")
                return AudioStream(
                    url=safe_url(resp.url),
                    content_type=resp.headers.get("content-type", "").split(";")[0].strip().lower(),
                    content_length=int(length) if length and length.isdigit() else None,
                    _response=resp,
                    headers={k.lower(): v for k, v in resp.headers.items()},
                )
        raise AssertionError("unreachable")  # pragma: no cover


# -------------------------------------------------------------------------------------------- async


def _aiohttp_error(exc: BaseException, req: ApiRequest, url: str) -> TtsConnectionError:
    """Map an aiohttp failure; the message never quotes aiohttp's, which can hold the whole URL."""
    import aiohttp

    before_send = isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
    label = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
    return TtsConnectionError(
        f"{req.what}: {label} ({safe_url(url)}): {failure_detail(exc, req.url, url)}", request_sent=not before_send
    )


@functools.cache
def _checked_resolver_class() -> Callable[[StoragePolicy, str], aiohttp.abc.AbstractResolver]:
    """The aiohttp resolver of storage sessions (defined on first use: DAG parsing never imports aiohttp)."""
    from aiohttp.abc import AbstractResolver, ResolveResult

    class CheckedResolver(AbstractResolver):
        """Resolves a storage host once and answers only with addresses :class:`StoragePolicy` approved.

        aiohttp connects to what its resolver returns, so the addresses judged are the addresses
        connected to; no second lookup exists that DNS rebinding could change. IP literals never
        reach a resolver: :func:`precheck_storage_url` judges those.
        """

        def __init__(self, policy: StoragePolicy, scheme: str) -> None:
            self._policy = policy
            self._scheme = scheme

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            addresses = await asyncio.to_thread(self._policy.checked_addresses, self._scheme, host, port)
            results: list[ResolveResult] = []
            for address in addresses:
                af = socket.AF_INET6 if address.version == 6 else socket.AF_INET
                if family in (socket.AF_UNSPEC, af):
                    results.append(
                        {
                            "hostname": host,
                            "host": str(address),
                            "port": port,
                            "family": af,
                            "proto": 0,
                            "flags": socket.AI_NUMERICHOST,
                        }
                    )
            if not results:
                raise OSError(f"{host} has no checked address of the requested family")
            return results

        async def close(self) -> None:
            return None

    return CheckedResolver


def _new_client_session(
    settings: ConnectionSettings, *, resolver: aiohttp.abc.AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """A session with the connection's timeouts; ``resolver`` (storage sessions) replaces aiohttp's lookups."""
    import aiohttp

    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        ),
        headers={"User-Agent": USER_AGENT},
        # No cookies: a shared session must not carry one caller's state into another's requests.
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=SHARED_POOL_LIMIT, keepalive_timeout=60, resolver=resolver),
    )


#: Connections one async session keeps open at most; idle ones are reused across polls.
SHARED_POOL_LIMIT = 64


class _SessionPool:
    """One ``aiohttp.ClientSession`` per (event loop, client identity), shared by every wait in it.

    A triggerer runs thousands of waits in one event loop; a session each would hold a keep-alive
    socket each (thousands of file descriptors, a TCP and TLS handshake per wait). Sharing one pool
    keeps the connection count bounded by :data:`SHARED_POOL_LIMIT` while still reusing connections
    across polls. The key is never in the session: it travels as a per-request header, and the
    session has no cookie jar, so nothing one connection's requests carry leaks into another's.
    The identity includes the timeouts because they are session settings. Reference-counted: the
    last waiter to leave closes the session. ``benchmarks/trigger_scale.py`` measures this choice
    against one session per wait.

    Each pooled session comes with a semaphore of the connector's own limit, taken around every
    request: waits beyond the limit queue in front of the session holding nothing but a parked
    coroutine, instead of inside aiohttp with a request, URL, headers and timers already built each.
    The same number of requests run at once in the same first-come order, but when thousands of
    polls fall due together the process no longer holds thousands of half-built requests, which
    the measurement showed as peak memory, garbage-collector work and seconds of added latency.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ...], list[Any]] = {}

    def acquire(
        self, settings: ConnectionSettings
    ) -> tuple[tuple[object, ...], aiohttp.ClientSession, asyncio.Semaphore]:
        """Join the pool of the running loop: its key (for :meth:`release`), session and gate."""
        key = (asyncio.get_running_loop(), settings.connect_timeout, settings.read_timeout)
        entry = self._entries.get(key)
        if entry is None or entry[0].closed:
            entry = self._entries[key] = [_new_client_session(settings), 0, asyncio.Semaphore(SHARED_POOL_LIMIT)]
        entry[1] += 1
        return key, entry[0], entry[2]

    async def release(self, key: tuple[object, ...]) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._entries[key]
            await entry[0].close()


SESSION_POOL = _SessionPool()


class AsyncTransport:
    """Non-blocking HTTP through a reused ``aiohttp.ClientSession``.

    :param shared: take the session from the per-event-loop :data:`SESSION_POOL` (the default,
        chosen by measurement) rather than owning one. Either way one session serves every call of
        this transport's API origins, so polls reuse keep-alive connections; :meth:`aclose` must
        be awaited in the same event loop (the trigger does so in ``finally``, which also runs on
        cancellation).

    A URL off the API origins (a redirect to storage) never uses that session: it goes through a
    session of this transport's own, one per scheme, made on first use, whose resolver
    (:func:`_checked_resolver_class`) hands aiohttp only addresses the connection's storage rules
    approved. Per scheme because the rule for plain http depends on the addresses, and a resolver
    is asked about a host and port only.
    """

    def __init__(self, settings: ConnectionSettings, *, shared: bool = True) -> None:
        self.settings = settings
        self.shared = shared
        self._session: aiohttp.ClientSession | None = None
        self._pool_key: tuple[object, ...] | None = None
        # Taken around each request: the pool's semaphore, or nothing for a session of our own.
        self._gate: contextlib.AbstractAsyncContextManager[Any] = contextlib.nullcontext()
        # The last URL whose origin was checked, and the answer: a wait polls one URL over and over.
        self._checked_url: str | None = None
        self._checked_on_api_origin = False
        self._storage_sessions: dict[str, aiohttp.ClientSession] = {}
        #: Shared with the other requests of one batch: a 429 pauses all of them (see :class:`Pacer`).
        self.pacer: Pacer | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self.shared:
                self._pool_key, self._session, self._gate = SESSION_POOL.acquire(self.settings)
            else:
                self._session = _new_client_session(self.settings)
        return self._session

    def _storage_client(self, scheme: str) -> aiohttp.ClientSession:
        session = self._storage_sessions.get(scheme)
        if session is None or session.closed:
            resolver = _checked_resolver_class()(StoragePolicy.of(self.settings), scheme)
            session = self._storage_sessions[scheme] = _new_client_session(self.settings, resolver=resolver)
        return session

    async def aclose(self) -> None:
        storage, self._storage_sessions = self._storage_sessions, {}
        for session in storage.values():
            await session.close()
        if self._pool_key is not None:
            key, self._pool_key, self._session = self._pool_key, None, None
            await SESSION_POOL.release(key)
        elif self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _on_api_origin(self, url: str) -> bool:
        """Whether ``url`` is on the API origins, remembering the last URL's answer (a wait polls one URL)."""
        if url != self._checked_url:
            self._checked_url, self._checked_on_api_origin = url, origin_of(url) in self.settings.api_origins
        return self._checked_on_api_origin

    def _key_headers(self, req: ApiRequest, url: str) -> dict[str, str]:
        """:func:`_key_headers` with the remembered origin check."""
        if not req.authenticated:
            return {}
        return _key_headers(self.settings, req, url, self._on_api_origin(url))

    async def _read_once(self, req: ApiRequest) -> ApiResponse:
        import aiohttp

        api_session = self._client()
        url = req.url
        for hop in range(MAX_REDIRECTS + 1):
            if self._on_api_origin(url):
                session, gate = api_session, self._gate
            else:  # a redirect to storage (polls start on an API origin)
                precheck_storage_url(self.settings, req, url)
                session, gate = self._storage_client(urlsplit(url).scheme), contextlib.nullcontext()
            headers = {"Accept": "application/json", **self._key_headers(req, url)}
            failure: TtsError | None = None
            try:
                async with (
                    gate,
                    session.request(
                        req.method,
                        url,
                        params=req.params if hop == 0 else None,
                        json=req.json,
                        headers=headers,
                        allow_redirects=False,
                    ) as resp,
                ):
                    resp_url = str(resp.url)
                    target = _next_hop(req, resp_url, resp.status, resp.headers.get("location"), hop)
                    if target is None:
                        body = bytearray()
                        async for chunk in resp.content.iter_chunked(65536):
                            body += chunk
                            if len(body) > MAX_JSON_BODY:
                                raise _too_big(req, resp_url)
                        headers_lc = {k.lower(): v for k, v in resp.headers.items()}
                        return ApiResponse(resp.status, headers_lc, bytes(body), safe_url(resp_url))
            except TtsError:
                raise
            except HostRefused as refused:
                failure = _blocked(req, url, refused)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = _aiohttp_error(exc, req, url)
            if failure is not None:
                raise failure  # outside the handler: aiohttp's text may hold the URL
            assert target is not None  # a response that is not a redirect has returned above
            url = target
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, req: ApiRequest, parse: Callable[[ApiResponse], T]) -> T:
        if self.pacer is None:
            return parse_without_secrets(parse, await self._read_once(req))
        await self.pacer.await_turn()
        try:
            return parse_without_secrets(parse, await self._read_once(req))
        except TtsError as exc:
            self.pacer.observe(exc)
            raise

    async def call(self, req: ApiRequest, parse: Callable[[ApiResponse], T]) -> T:
        """Async twin of :meth:`SyncTransport.call`: same policy, same parser.

        The first attempt runs before any retry machinery is built: this is the triggerer's hot
        path (thousands of polls a second in one process), and tenacity's per-call objects form
        reference cycles (about 40 objects a call) that only the cyclic garbage collector frees,
        which in a process holding Airflow's large heap cost more CPU than the request itself
        (``benchmarks/trigger_scale.py``). A failed first attempt is replayed as attempt 1 of the
        same tenacity loop, so retry decisions, waits, logging and the attempt count are exactly
        those of :func:`retry_kwargs`.
        """
        try:
            return await self._attempt(req, parse)
        except Exception as exc:
            first_failure: Exception | None = exc
        async for attempt in AsyncRetrying(**retry_kwargs(self.settings.retry, req)):
            with attempt:
                if first_failure is not None:
                    replay, first_failure = first_failure, None
                    raise replay
                return await self._attempt(req, parse)
        raise AssertionError("unreachable")  # pragma: no cover
