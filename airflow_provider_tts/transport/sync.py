"""Blocking HTTP through requests: :class:`SyncTransport` and the :class:`AudioStream` it opens.

API requests go through one reused ``requests.Session``. Storage URLs go through a second session
whose urllib3 connections resolve the host once, judge every address by the connection's
:class:`~airflow_provider_tts.transport.hosts.StoragePolicy` and connect to a checked address,
so a DNS answer that changes between the check and the connection cannot redirect the request;
TLS is still verified against the host name. Failures become TtsErrors whose messages carry no
URL query or userinfo and that do not chain the library exception.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.poolmanager
from tenacity import Retrying

from airflow_provider_tts.connection import ConnectionSettings, origin_of
from airflow_provider_tts.exceptions import TtsAudioUrlExpiredError, TtsConnectionError, TtsError
from airflow_provider_tts.transport.hosts import (
    HostRefused,
    IpAddress,
    StoragePolicy,
    blocked_error,
    precheck_storage_url,
)
from airflow_provider_tts.transport.messages import (
    cause_chain,
    failure_detail,
    host_and_port,
    parse_without_secrets,
    safe_url,
    scrubbed_urllib3_logs,
    without_secrets,
)
from airflow_provider_tts.transport.retry import AttemptGuard, Pacer, retry_kwargs
from airflow_provider_tts.transport.rules import (
    EXPIRED_URL_STATUSES,
    MAX_JSON_BODY,
    MAX_REDIRECTS,
    USER_AGENT,
    is_vendor_call,
    key_headers,
    next_hop,
    too_big,
)
from airflow_provider_tts.transport.slots import lending_sleep
from airflow_provider_tts.vendors.base import ApiRequest, ApiResponse, http_error

T = TypeVar("T")

#: The environment variables that decide a request's proxy and CA bundle for http(s) URLs.
_ENV_NAMES = (
    "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
)  # fmt: skip
_ENV_SETTINGS: dict[tuple[Any, ...], Any] = {}


class _Session(requests.Session):
    """A ``requests.Session`` that reads the proxy environment once per origin and environment.

    requests asks the environment on every request (``merge_environment_settings``), scanning and
    lower-casing all of ``os.environ`` twice: about 3 ms a request on a loaded worker, more than a
    small file's hashing (cProfile of 60 stores into moto). The answer depends only on the origin
    and the few variables in :data:`_ENV_NAMES`, so it is kept per process under exactly those: a
    changed proxy variable is a new key, read afresh.
    """

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        if not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)

        parts = urlsplit(str(url))
        key = (
            parts.scheme, parts.netloc, tuple(os.environ.get(name) for name in _ENV_NAMES),
            tuple(sorted((proxies or {}).items())), tuple(sorted(self.proxies.items())), stream, verify, cert,
            self.verify, self.cert, self.stream,
        )  # fmt: skip
        cached: Any = _ENV_SETTINGS.get(key)
        if cached is None:
            cached = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if len(_ENV_SETTINGS) > 1024:
                _ENV_SETTINGS.clear()
            _ENV_SETTINGS[key] = cached
        return {**cached, "proxies": dict(cached["proxies"])}


def _requests_error(exc: requests.RequestException, req: ApiRequest, *urls: str) -> TtsConnectionError:
    """Map a requests failure, telling 'never reached the server' apart from 'may have been processed'.

    The message is built by :func:`failure_detail`, never from ``str(exc)``, which carries the
    request's path and query; raise it ``from None`` for the same reason.
    """
    chain = cause_chain(exc)
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

    #: Whether this transport is the process's for its connection (:func:`shared_transport`), which
    #: every hook of it uses: a hook's ``close`` then leaves it open for the others.
    shared = False
    #: ``time.monotonic()`` of the last request sent (0: none yet).
    last_used = 0.0

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.session: requests.Session = _Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self._storage: requests.Session | None = None
        self._storage_lock = threading.Lock()
        self._timeout = (settings.connect_timeout, settings.read_timeout)
        #: The connection's pacer, shared with its other transports in this process (see :class:`Pacer`).
        self.pacer: Pacer | None = None

    def close(self) -> None:
        self.session.close()
        if self._storage is not None:
            self._storage.close()

    def storage_session(self) -> requests.Session:
        """The session for URLs off the API origins, whose connections go only to checked addresses."""
        with self._storage_lock:
            if self._storage is None:
                session = _Session()
                session.headers["User-Agent"] = USER_AGENT
                adapter = _CheckedAdapter(StoragePolicy.of(self.settings))
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._storage = session
            return self._storage

    def _paced(self, req: ApiRequest, send: Callable[[], T], guard: AttemptGuard | None = None) -> T:
        """One attempt of a vendor call in its turn of the connection's pacer, which learns how it was answered.

        A paying caller's ``guard`` lets its marker go for a long wait for the turn and takes it
        back in the turn, right before the send (see :class:`AttemptGuard`).
        """
        pacer = self.pacer
        if pacer is None or not is_vendor_call(self.settings, req, req.url):
            if guard is not None:
                guard.resending()
            return send()
        with pacer.turn(guard.refused if guard is not None else None):
            if guard is not None:
                guard.resending()
            try:
                answer = send()
            except TtsError as exc:
                pacer.observe(exc, self.settings.retry.max_backoff)
                raise
            pacer.answered()
            return answer

    def _send(self, req: ApiRequest, extra_headers: dict[str, str] | None = None) -> requests.Response:
        self.last_used = time.monotonic()
        url = req.url
        for hop in range(MAX_REDIRECTS + 1):
            on_api_origin = origin_of(url) in self.settings.api_origins
            if on_api_origin:
                session = self.session
            else:
                precheck_storage_url(self.settings, req, url)
                session = self.storage_session()
            headers = {**(extra_headers or {}), **key_headers(self.settings, req, url, on_api_origin)}
            failure: TtsError | None = None
            try:
                with scrubbed_urllib3_logs():
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
                failure = blocked_error(req, url, refused)
            except requests.RequestException as exc:
                failure = _requests_error(exc, req, url)
            if failure is not None:
                raise failure  # outside the handler: the library error's text must not ride along
            target = next_hop(req, resp.url, resp.status_code, resp.headers.get("location"), hop)
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
                    failure = too_big(req, resp.url)
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

    def call(self, req: ApiRequest, parse: Callable[[ApiResponse], T], guard: AttemptGuard | None = None) -> T:
        """Send ``req`` and parse the answer, retrying both per the connection's policy.

        ``guard`` (a create call's payer, see :class:`AttemptGuard`) is told before each backoff
        sleep that nothing was created, and before a long wait for the pacer that nothing is on
        the wire; it takes its marker back in the request's turn of the pacer, so the marker is
        back only once nothing but the request itself is left to wait for.
        """

        def exchange() -> T:
            return parse_without_secrets(
                parse, self.read_response(req, self._send(req, {"Accept": "application/json"}))
            )

        for attempt in Retrying(sleep=lending_sleep, **retry_kwargs(self.settings.retry, req, guard)):
            with attempt:
                return self._paced(req, exchange, guard)
        raise AssertionError("unreachable")  # pragma: no cover

    def open_stream(self, req: ApiRequest) -> AudioStream:
        """Open a streaming 2xx response, retrying until its headers arrive; errors become TtsErrors.

        A vendor call is paced until its headers arrive; its body is the caller's to read.
        """
        for attempt in Retrying(sleep=lending_sleep, **retry_kwargs(self.settings.retry, req)):
            with attempt:
                return self._paced(req, lambda: self._open_once(req))
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_once(self, req: ApiRequest) -> AudioStream:
        resp = self._send(req, {"Accept-Encoding": "identity"})
        if not 200 <= resp.status_code < 300:
            signed_url = resp.url
            answer = without_secrets(self.read_response(req, resp), req.url, signed_url)
            # A request the vendor marks unauthenticated goes to storage (a Revid audio_url,
            # a Camb file_url) even where a test emulator serves it on the API's own origin.
            on_storage = not req.authenticated or origin_of(signed_url) not in self.settings.api_origins
            if resp.status_code in EXPIRED_URL_STATUSES and on_storage:
                raise TtsAudioUrlExpiredError(
                    f"{req.what}: the storage host {host_and_port(signed_url)} answered HTTP "
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
