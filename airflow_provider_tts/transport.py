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
* a URL off the vendor's API origins (an audio URL, a redirect target) is checked before it is
  requested: its host name is resolved and every address judged by :func:`check_storage_url`;
* a storage host refusing an audio URL (401/403/404/410) is :class:`TtsAudioUrlExpiredError`,
  never an API-key error: the key is never sent there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
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


def safe_url(url: str) -> str:
    """A URL for logs and messages: no query (pre-signed URLs carry signatures there), no userinfo."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
            exc,
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
    target = urljoin(current, location)
    if req.method != "GET":
        raise TtsProtocolError(f"{req.what}: unexpected redirect of a {req.method} to {safe_url(target)}")
    if urlsplit(target).scheme not in ("http", "https"):
        raise TtsProtocolError(f"{req.what}: refusing a redirect to a non-http(s) URL {target!r:.120}")
    if hop >= MAX_REDIRECTS:
        raise TtsProtocolError(f"{req.what}: more than {MAX_REDIRECTS} redirects")
    return target


#: What a storage host answers for a pre-signed URL that expired, was revoked, or whose object is gone.
_EXPIRED_URL_STATUSES = frozenset({401, 403, 404, 410})

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _addresses(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to (an IP literal is its own address)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TtsConnectionError(f"cannot resolve storage host {host!r}: {exc}", request_sent=False) from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_storage_url(settings: ConnectionSettings, req: ApiRequest, url: str) -> None:
    """Refuse a URL off the API origins whose scheme or resolved addresses the connection does not allow.

    The vendor's API origins are trusted: they come from the connection, and get the key anyway.
    Any other URL came from a vendor answer or a redirect, so it is judged on every address its
    host name resolves to (a public name pointing at 169.254.169.254 is caught too): link-local
    never; other non-global addresses (private, loopback, CGNAT, unspecified...) only when
    ``settings.allow_private_hosts``; plain http only to such an allowed non-global host or when
    ``settings.allow_http_hosts``. The addresses are resolved here and again by the HTTP client,
    so a DNS answer that changes in between (rebinding) is not covered by this check.
    """
    if origin_of(url) in settings.api_origins:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    where = safe_url(url)
    if parts.scheme not in ("http", "https") or not host:
        raise TtsBlockedHostError(f"{req.what}: refusing {where!r}; expected an http(s) URL with a host")
    addresses = _addresses(host, parts.port or (443 if parts.scheme == "https" else 80))
    for address in addresses:
        plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped else address
        if plain.is_link_local:
            raise TtsBlockedHostError(
                f"{req.what}: refusing {where}: {host} resolves to the link-local address {plain} "
                "(where cloud metadata services live); audio is never fetched from link-local addresses"
            )
        if not plain.is_global and not settings.allow_private_hosts:
            raise TtsBlockedHostError(
                f"{req.what}: refusing {where}: {host} resolves to the non-public address {plain}; set the "
                "connection extra allow_private_audio_hosts to true if audio really is served from there"
            )
    private = all(not a.is_global for a in addresses)
    if parts.scheme == "http" and not settings.allow_http_hosts and not (private and settings.allow_private_hosts):
        raise TtsBlockedHostError(
            f"{req.what}: refusing {where}: plain http to a public host (the audio and its signed URL would "
            "travel unencrypted); expected https, or set the connection extra allow_http_audio_hosts to true"
        )


def _too_big(req: ApiRequest, url: str) -> TtsProtocolError:
    return TtsProtocolError(f"{req.what}: response from {safe_url(url)} is over {MAX_JSON_BODY} bytes")


# --------------------------------------------------------------------------------------------- sync


def _requests_error(exc: requests.RequestException, req: ApiRequest) -> TtsConnectionError:
    """Map a requests failure, telling 'never reached the server' apart from 'may have been processed'."""
    before_send = isinstance(exc, requests.ConnectTimeout)
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, ConnectionRefusedError) or type(cause).__name__ in (
            "NewConnectionError",
            "ConnectTimeoutError",
            "NameResolutionError",
        ):
            before_send = True
            break
        nxt = getattr(cause, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = next((a for a in cause.args if isinstance(a, BaseException)), None)
        cause = nxt or cause.__cause__ or cause.__context__
    label = "read timed out" if isinstance(exc, requests.ReadTimeout) else type(exc).__name__
    return TtsConnectionError(f"{req.what}: {label}: {str(exc)[:300]}", request_sent=not before_send)


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
        try:
            for chunk in self._response.raw.stream(chunk_size, decode_content=False):
                if chunk:
                    yield chunk
        except Exception as exc:  # urllib3 ProtocolError, ReadTimeoutError, socket errors
            raise TtsConnectionError(
                f"audio download from {self.url} broke off: {type(exc).__name__}: {str(exc)[:200]}",
                request_sent=True,
            ) from exc

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncTransport:
    """Blocking HTTP through one reused ``requests.Session``."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self._timeout = (settings.connect_timeout, settings.read_timeout)
        #: Shared with other transports of one batch: a 429 pauses all of them (see :class:`Pacer`).
        self.pacer: Pacer | None = None

    def close(self) -> None:
        self.session.close()

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
            check_storage_url(self.settings, req, url)
            headers = {**(extra_headers or {}), **_key_headers(self.settings, req, url)}
            try:
                resp = self.session.request(
                    req.method,
                    url,
                    params=req.params if hop == 0 else None,
                    json=req.json,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                    stream=True,
                )
            except requests.RequestException as exc:
                raise _requests_error(exc, req) from exc
            target = _next_hop(req, resp.url, resp.status_code, resp.headers.get("location"), hop)
            if target is None:
                return resp
            resp.close()
            url = target
        raise AssertionError("unreachable")  # pragma: no cover

    def read_response(self, req: ApiRequest, resp: requests.Response) -> ApiResponse:
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_content(65536):
                size += len(chunk)
                if size > MAX_JSON_BODY:
                    raise _too_big(req, resp.url)
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise _requests_error(exc, req) from exc
        finally:
            resp.close()
        headers = {k.lower(): v for k, v in resp.headers.items()}
        return ApiResponse(resp.status_code, headers, b"".join(chunks), resp.url)

    def call(self, req: ApiRequest, parse: Callable[[ApiResponse], T]) -> T:
        """Send ``req`` and parse the answer, retrying both per the connection's policy."""
        for attempt in Retrying(**retry_kwargs(self.settings.retry, req)):
            with attempt:
                return self._paced(
                    lambda: parse(self.read_response(req, self._send(req, {"Accept": "application/json"})))
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def open_stream(self, req: ApiRequest) -> AudioStream:
        """Open a streaming 2xx response, retrying until its headers arrive; errors become TtsErrors."""
        for attempt in Retrying(**retry_kwargs(self.settings.retry, req)):
            with attempt:
                resp = self._send(req, {"Accept-Encoding": "identity"})
                if not 200 <= resp.status_code < 300:
                    answer = self.read_response(req, resp)
                    # A request the vendor marks unauthenticated goes to storage (a Revid audio_url,
                    # a Camb file_url) even where a test emulator serves it on the API's own origin.
                    on_storage = not req.authenticated or origin_of(resp.url) not in self.settings.api_origins
                    if resp.status_code in _EXPIRED_URL_STATUSES and on_storage:
                        raise TtsAudioUrlExpiredError(
                            f"{req.what}: the storage host {urlsplit(resp.url).netloc} answered HTTP "
                            f"{resp.status_code} for {safe_url(resp.url)}: the signed audio URL expired or was "
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


def _aiohttp_error(exc: BaseException, req: ApiRequest) -> TtsConnectionError:
    import aiohttp

    before_send = isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
    label = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
    return TtsConnectionError(f"{req.what}: {label}: {str(exc)[:300]}", request_sent=not before_send)


def _new_client_session(settings: ConnectionSettings) -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        ),
        headers={"User-Agent": USER_AGENT},
        # No cookies: a shared session must not carry one caller's state into another's requests.
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=SHARED_POOL_LIMIT, keepalive_timeout=60),
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
        this transport, so polls reuse keep-alive connections; :meth:`aclose` must be awaited in
        the same event loop (the trigger does so in ``finally``, which also runs on cancellation).
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
        #: Shared with the other requests of one batch: a 429 pauses all of them (see :class:`Pacer`).
        self.pacer: Pacer | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self.shared:
                self._pool_key, self._session, self._gate = SESSION_POOL.acquire(self.settings)
            else:
                self._session = _new_client_session(self.settings)
        return self._session

    async def aclose(self) -> None:
        if self._pool_key is not None:
            key, self._pool_key, self._session = self._pool_key, None, None
            await SESSION_POOL.release(key)
        elif self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _key_headers(self, req: ApiRequest, url: str) -> dict[str, str]:
        """:func:`_key_headers`, remembering the origin check of the last URL (a wait polls one URL)."""
        if not req.authenticated:
            return {}
        if url != self._checked_url:
            self._checked_url, self._checked_on_api_origin = url, origin_of(url) in self.settings.api_origins
        return _key_headers(self.settings, req, url, self._checked_on_api_origin)

    async def _read_once(self, req: ApiRequest) -> ApiResponse:
        import aiohttp

        session = self._client()
        url = req.url
        for hop in range(MAX_REDIRECTS + 1):
            if hop:  # polls start on an API origin; only a redirect can lead elsewhere
                await asyncio.to_thread(check_storage_url, self.settings, req, url)
            headers = {"Accept": "application/json", **self._key_headers(req, url)}
            try:
                async with (
                    self._gate,
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
                        return ApiResponse(resp.status, headers_lc, bytes(body), resp_url)
            except TtsError:
                raise
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _aiohttp_error(exc, req) from exc
            url = target
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, req: ApiRequest, parse: Callable[[ApiResponse], T]) -> T:
        if self.pacer is None:
            return parse(await self._read_once(req))
        await self.pacer.await_turn()
        try:
            return parse(await self._read_once(req))
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
