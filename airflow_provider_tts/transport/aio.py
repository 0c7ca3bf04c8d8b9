"""Non-blocking HTTP through aiohttp: :class:`AsyncTransport` and the per-event-loop session pool.

API requests of every transport in one event loop share a pooled ``aiohttp.ClientSession``
(:data:`SESSION_POOL`, at most :data:`SHARED_POOL_LIMIT` connections, no cookie jar; the key
travels per request). A redirect to storage goes through a session of the transport's own whose
resolver answers only with addresses the connection's
:class:`~airflow_provider_tts.transport.hosts.StoragePolicy` approved. aiohttp itself is imported
only when a session is made or a request sent, never when this module is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from tenacity import AsyncRetrying

from airflow_provider_tts.connection import ConnectionSettings, origin_of
from airflow_provider_tts.exceptions import TtsConnectionError, TtsError
from airflow_provider_tts.transport.hosts import HostRefused, StoragePolicy, blocked_error, precheck_storage_url
from airflow_provider_tts.transport.messages import failure_detail, parse_without_secrets, safe_url
from airflow_provider_tts.transport.retry import Pacer, retry_kwargs
from airflow_provider_tts.transport.rules import (
    MAX_JSON_BODY,
    MAX_REDIRECTS,
    USER_AGENT,
    is_vendor_call,
    key_headers,
    next_hop,
    too_big,
)
from airflow_provider_tts.vendors.base import ApiRequest, ApiResponse

if TYPE_CHECKING:
    import aiohttp
    import aiohttp.abc

T = TypeVar("T")


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


def new_client_session(
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


class PoolGate:
    """The pool's gate: at most ``limit`` requests at once, first come first served, and a lobby.

    Taken (``async with``) around each request on the pooled session. A slot a request gives back
    goes straight to the first one queued, so the order is the order of arrival.

    The lobby is for polls that would only queue. When thousands of polls fall due together,
    each one queued at the gate is a chain of suspended frames (trigger, hook, transport, pacer,
    request) that the garbage collector promotes to its oldest generation and walks on every full
    collection: the triggerer's largest per-poll cost after aiohttp. So while a whole round
    (``limit``) already queues behind the busy slots, a new poll waits in the lobby first, as one
    future, before any of those frames exist (:meth:`lobby`; the trigger awaits it before it calls
    the hook). Lobby waiters are let through to keep a round queued, first come first served,
    and all of them whenever a slot is free. Nothing is held in the lobby, and a poll let through
    that then waits in its connection's pacer (a 429 pause) holds no slot, so it cannot stall the
    polls of other connections behind it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._queue: deque[asyncio.Future[None]] = deque()
        self._lobby: deque[asyncio.Future[None]] = deque()

    def lobby(self) -> asyncio.Future[None] | None:
        """A future to await before building a request, when a whole round already queues; None: go on."""
        if len(self._queue) < self.limit:
            return None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lobby.append(waiter)
        return waiter

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._queue:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter  # resolved by the release that hands this request its slot
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # a release may have dropped it already
                    self._queue.remove(waiter)
                self._let_in()
            raise
        self._let_in()

    async def __aexit__(self, *exc_info: object) -> None:
        self._release()

    def _release(self) -> None:
        queue = self._queue
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        else:
            self._free += 1
        self._let_in()

    def _let_in(self) -> None:
        """Let lobby waiters through: enough to keep a round queued, or all while a slot is free."""
        lobby = self._lobby
        room = len(lobby) if self._free > 0 else self.limit - len(self._queue)
        while room > 0 and lobby:
            waiter = lobby.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1


class SessionPool:
    """One ``aiohttp.ClientSession`` per (event loop, client identity), shared by every wait in it.

    A triggerer runs thousands of waits in one event loop; a session each would hold a keep-alive
    socket each (thousands of file descriptors, a TCP and TLS handshake per wait). Sharing one pool
    keeps the connection count bounded by :data:`SHARED_POOL_LIMIT` while still reusing connections
    across polls. The key is never in the session: it travels as a per-request header, and the
    session has no cookie jar, so nothing one connection's requests carry leaks into another's.
    The identity includes the timeouts because they are session settings. Reference-counted: the
    last waiter to leave closes the session. ``benchmarks/trigger_scale.py`` measures this choice
    against one session per wait.

    Each pooled session comes with a gate (:class:`PoolGate`) of the connector's own limit, taken around every
    request: waits beyond the limit queue in front of the session holding nothing but a parked
    coroutine, instead of inside aiohttp with a request, URL, headers and timers already built each.
    The same number of requests run at once in the same first-come order, but when thousands of
    polls fall due together the process no longer holds thousands of half-built requests, which
    the measurement showed as peak memory, garbage-collector work and seconds of added latency.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ...], list[Any]] = {}

    def acquire(self, settings: ConnectionSettings) -> tuple[tuple[object, ...], aiohttp.ClientSession, PoolGate]:
        """Join the pool of the running loop: its key (for :meth:`release`), session and gate."""
        key = (asyncio.get_running_loop(), settings.connect_timeout, settings.read_timeout)
        entry = self._entries.get(key)
        if entry is None or entry[0].closed:
            entry = self._entries[key] = [new_client_session(settings), 0, PoolGate(SHARED_POOL_LIMIT)]
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


SESSION_POOL = SessionPool()


async def _body(resp: aiohttp.ClientResponse, req: ApiRequest) -> bytes:
    """A JSON answer's body, refused past :data:`MAX_JSON_BODY` bytes.

    An uncompressed answer that states its length is read in one call (a poll's few hundred
    bytes); any other (chunked, or compressed, whose stated length says nothing about what it
    inflates to) is read piece by piece and refused as soon as it grows too big.
    """
    length = resp.content_length
    if length is not None and "Content-Encoding" not in resp.headers:
        if length > MAX_JSON_BODY:
            raise too_big(req, str(resp.url))
        return await resp.read()
    body = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise too_big(req, str(resp.url))
    return bytes(body)


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
        self._shown_url: tuple[str, str] = ("", "")  # the last answer's URL and its safe_url()
        self._checked_on_api_origin = False
        self._last_prepared: tuple[ApiRequest, str, Any, dict[str, str]] | None = None
        self._storage_sessions: dict[str, aiohttp.ClientSession] = {}
        #: The connection's pacer, shared with its other transports in this process (see :class:`Pacer`).
        self.pacer: Pacer | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self.shared:
                self._pool_key, self._session, self._gate = SESSION_POOL.acquire(self.settings)
            else:
                self._session = new_client_session(self.settings)
        return self._session

    def _storage_client(self, scheme: str) -> aiohttp.ClientSession:
        session = self._storage_sessions.get(scheme)
        if session is None or session.closed:
            resolver = _checked_resolver_class()(StoragePolicy.of(self.settings), scheme)
            session = self._storage_sessions[scheme] = new_client_session(self.settings, resolver=resolver)
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

    def lobby(self) -> asyncio.Future[None] | None:
        """What a status poll awaits before it starts, while the shared pool is crowded (:meth:`PoolGate.lobby`)."""
        gate = self._gate
        return gate.lobby() if isinstance(gate, PoolGate) and self._session is not None else None

    def _on_api_origin(self, url: str) -> bool:
        """Whether ``url`` is on the API origins, remembering the last URL's answer (a wait polls one URL)."""
        if url != self._checked_url:
            self._checked_url, self._checked_on_api_origin = url, origin_of(url) in self.settings.api_origins
        return self._checked_on_api_origin

    def _safe(self, url: str) -> str:
        """:func:`safe_url` of ``url``, remembering the last one (a wait polls one URL over and over)."""
        if url != self._shown_url[0]:
            self._shown_url = (url, safe_url(url))
        return self._shown_url[1]

    def _prepared(self, req: ApiRequest, url: str) -> tuple[Any, dict[str, str]]:
        """The URL object and headers to send ``req`` to ``url`` with, kept for the last request.

        A wait sends the same request object to the same URL poll after poll; building the headers
        (the origin check, the key) and letting aiohttp parse the URL string again each time is
        per-poll work with the same result. Kept only for the exact request object and URL, and
        the headers are never handed to anything that modifies them (aiohttp copies them).
        """
        last = self._last_prepared
        if last is not None and last[0] is req and last[1] == url:
            return last[2], last[3]
        from yarl import URL

        target_url = URL(url)
        headers = {"Accept": "application/json", **self.key_headers(req, url)}
        self._last_prepared = (req, url, target_url, headers)
        return target_url, headers

    def key_headers(self, req: ApiRequest, url: str) -> dict[str, str]:
        """:func:`key_headers` with the remembered origin check."""
        if not req.authenticated:
            return {}
        return key_headers(self.settings, req, url, self._on_api_origin(url))

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
            target_url, headers = self._prepared(req, url)
            failure: TtsError | None = None
            try:
                async with (
                    gate,
                    session.request(
                        req.method,
                        target_url,
                        params=req.params if hop == 0 else None,
                        json=req.json,
                        headers=headers,
                        allow_redirects=False,
                    ) as resp,
                ):
                    resp_url = url if resp.url is target_url else str(resp.url)
                    target = next_hop(req, resp_url, resp.status, resp.headers.get("location"), hop)
                    if target is None:
                        headers_lc = {k.lower(): v for k, v in resp.headers.items()}
                        return ApiResponse(resp.status, headers_lc, await _body(resp, req), self._safe(resp_url))
            except TtsError:
                raise
            except HostRefused as refused:
                failure = blocked_error(req, url, refused)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = _aiohttp_error(exc, req, url)
            if failure is not None:
                raise failure  # outside the handler: aiohttp's text may hold the URL
            assert target is not None  # a response that is not a redirect has returned above
            url = target
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, req: ApiRequest, parse: Callable[[ApiResponse], T]) -> T:
        pacer = self.pacer
        if pacer is None or not is_vendor_call(self.settings, req, req.url, self._on_api_origin(req.url)):
            return parse_without_secrets(parse, await self._read_once(req))
        # The connection's pace, shared with its sync transports too. A request that need not wait
        # (no limit or pause holds it: nearly every poll) takes its place without ``aturn``'s
        # async generator and context manager, which would be per-poll objects.
        if not pacer.turn_now():
            async with pacer.aturn():
                return await self._paced(pacer, req, parse)
        try:
            return await self._paced(pacer, req, parse)
        finally:
            pacer.release()

    async def _paced(self, pacer: Pacer, req: ApiRequest, parse: Callable[[ApiResponse], T]) -> T:
        """One attempt of a vendor call holding its place: the answer, or a 429 told to the pacer."""
        try:
            parsed = parse_without_secrets(parse, await self._read_once(req))
        except TtsError as exc:
            pacer.observe(exc, self.settings.retry.max_backoff)
            raise
        pacer.answered()
        return parsed

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
