"""Non-blocking HTTP: :class:`AsyncTransport` and the per-event-loop connection pool.

API requests of every transport in one event loop share a pooled keep-alive client of our own
(:class:`~airflow_provider_tts.transport.http1.Http1Pool`, :data:`SESSION_POOL`, at most
:data:`SHARED_POOL_LIMIT` requests at once; the key travels per request): polls are the
triggerer's hot path, and aiohttp's per-request objects were half of a poll's CPU (``http1``
says what it keeps and the figures). A redirect to storage goes through an ``aiohttp`` session of
the transport's own whose resolver answers only with addresses the connection's
:class:`~airflow_provider_tts.transport.hosts.StoragePolicy` approved (aiohttp imported then only).
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
from airflow_provider_tts.transport.http1 import Http1Pool
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
from airflow_provider_tts.transport.slots import alending_sleep
from airflow_provider_tts.transport.wire import Wire
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

    def take_now(self) -> bool:
        """Take a free slot without waiting (nobody queues): True, and :meth:`release` gives it back."""
        if self._free > 0 and not self._queue:
            self._free -= 1
            return True
        return False

    async def __aenter__(self) -> None:
        if self.take_now():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter  # resolved by the release that hands this request its slot
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # a release may have dropped it already
                    self._queue.remove(waiter)
                self._let_in()
            raise
        self._let_in()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Give a slot back: to the first request queued for one, else to the free count."""
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


def new_api_client(settings: ConnectionSettings) -> Http1Pool:
    """The keep-alive client of API calls, with the connection's timeouts."""
    return Http1Pool(settings.connect_timeout, settings.read_timeout, max_idle=SHARED_POOL_LIMIT)


class SessionPool:
    """One API client (:class:`Http1Pool`) per (event loop, client identity), shared by every wait in it.

    A triggerer runs thousands of waits in one event loop; a session each would hold a keep-alive
    socket each (thousands of file descriptors, a TCP and TLS handshake per wait). Sharing one pool
    keeps the connection count bounded by :data:`SHARED_POOL_LIMIT` while still reusing connections
    across polls. The key is never in the session: it travels as a per-request header, and the
    session has no cookie jar, so nothing one connection's requests carry leaks into another's.
    The identity includes the timeouts because they are client settings. Reference-counted: the
    last waiter to leave closes the session. ``benchmarks/trigger_scale.py`` measures this choice
    against one session per wait.

    Each pooled client comes with a gate (:class:`PoolGate`) of :data:`SHARED_POOL_LIMIT`, taken
    around every request: it is the bound (the client has none of its own), so at most that many
    requests, and so connections, are in use at once. Waits beyond it queue in front of the client
    holding nothing but a parked coroutine, in first-come order, so when thousands of polls fall
    due together the process holds no half-built requests (the measurement showed those as peak
    memory, garbage-collector work and seconds of added latency).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ...], list[Any]] = {}

    def acquire(self, settings: ConnectionSettings) -> tuple[tuple[object, ...], Http1Pool, PoolGate]:
        """Join the pool of the running loop: its key (for :meth:`release`), client and gate."""
        key = (asyncio.get_running_loop(), settings.connect_timeout, settings.read_timeout)
        entry = self._entries.get(key)
        if entry is None or entry[0].closed:
            entry = self._entries[key] = [new_api_client(settings), 0, PoolGate(SHARED_POOL_LIMIT)]
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
    """Non-blocking HTTP: API calls through a reused keep-alive client, storage through aiohttp.

    :param shared: take the API client from the per-event-loop :data:`SESSION_POOL` (the default,
        chosen by measurement) rather than owning one. Either way one client serves every call of
        this transport's API origins, so polls reuse keep-alive connections; :meth:`aclose` must
        be awaited in the same event loop (the trigger does so in ``finally``, which also runs on
        cancellation).

    A URL off the API origins (a redirect to storage) never uses that client: it goes through an
    ``aiohttp`` session of this transport's own, one per scheme, made on first use, whose resolver
    (:func:`_checked_resolver_class`) hands aiohttp only addresses the connection's storage rules
    approved. Per scheme because the rule for plain http depends on the addresses, and a resolver
    is asked about a host and port only.
    """

    def __init__(self, settings: ConnectionSettings, *, shared: bool = True) -> None:
        self.settings = settings
        self.shared = shared
        self._api: Http1Pool | None = None
        self._pool_key: tuple[object, ...] | None = None
        # Taken around each API request: the shared pool's gate, or this transport's own; set with
        # the client (a trigger's transport joins the shared pool, so it never builds a gate of its own).
        self._gate: PoolGate | None = None
        # The last URL whose origin was checked, and the answer: a wait polls one URL over and over.
        self._checked_url: str | None = None
        self._shown_url: tuple[str, str] = ("", "")  # the last answer's URL and its safe_url()
        self._checked_on_api_origin = False
        self._last_prepared: tuple[ApiRequest, str, Any, dict[str, str]] | None = None
        self._last_wire: tuple[ApiRequest, str, bool, Wire] | None = None
        self._storage_sessions: dict[str, aiohttp.ClientSession] = {}
        #: The connection's pacer, shared with its other transports in this process (see :class:`Pacer`).
        self.pacer: Pacer | None = None

    def _client(self) -> Http1Pool:
        if self._api is None or self._api.closed:
            if self.shared:
                self._pool_key, self._api, self._gate = SESSION_POOL.acquire(self.settings)
            else:
                self._api, self._gate = new_api_client(self.settings), PoolGate(SHARED_POOL_LIMIT)
        return self._api

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
            key, self._pool_key, self._api = self._pool_key, None, None
            await SESSION_POOL.release(key)
        elif self._api is not None:
            api, self._api = self._api, None
            await api.close()

    def lobby(self) -> asyncio.Future[None] | None:
        """What a status poll awaits before it starts, while the shared pool is crowded (:meth:`PoolGate.lobby`)."""
        gate = self._gate
        return gate.lobby() if gate is not None and self._api is not None else None

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
        """The URL object and headers to send ``req`` to ``url`` with through aiohttp, kept for the last request.

        Building the headers (the origin check, the key) and letting aiohttp parse the URL string
        again each time is per-request work with the same result. Kept only for the exact request
        object and URL, and the headers are never handed to anything that modifies them (aiohttp
        copies them).
        """
        last = self._last_prepared
        if last is not None and last[0] is req and last[1] == url:
            return last[2], last[3]
        from yarl import URL

        target_url = URL(url)
        headers = {"Accept": "application/json", **self.key_headers(req, url)}
        self._last_prepared = (req, url, target_url, headers)
        return target_url, headers

    def _wire(self, req: ApiRequest, url: str, with_params: bool) -> Wire:
        """The request's bytes for the API client, built once per (request object, URL): a wait
        sends the same request to the same URL poll after poll."""
        last = self._last_wire
        if last is not None and last[0] is req and last[1] == url and last[2] is with_params:
            return last[3]
        wire = Wire(req, url, self.key_headers(req, url), with_params=with_params)
        self._last_wire = (req, url, with_params, wire)
        return wire

    def key_headers(self, req: ApiRequest, url: str) -> dict[str, str]:
        """:func:`key_headers` with the remembered origin check."""
        if not req.authenticated:
            return {}
        return key_headers(self.settings, req, url, self._on_api_origin(url))

    async def _read_once(self, req: ApiRequest) -> ApiResponse:
        url = req.url
        for hop in range(MAX_REDIRECTS + 1):
            if self._on_api_origin(url):
                answer = await self._api_hop(req, url, hop)
            else:  # a redirect to storage (polls start on an API origin)
                precheck_storage_url(self.settings, req, url)
                answer = await self._aiohttp_hop(self._storage_client(urlsplit(url).scheme), req, url, hop)
            if isinstance(answer, ApiResponse):
                return answer
            url = answer
        raise AssertionError("unreachable")  # pragma: no cover: next_hop refuses one hop too many

    async def _api_hop(self, req: ApiRequest, url: str, hop: int) -> ApiResponse | str:
        """One request to an API origin through the keep-alive client: the answer, or where it redirects."""
        client = self._client()
        wire = self._wire(req, url, hop == 0)
        gate = self._gate
        assert gate is not None  # set with the client
        if gate.take_now():  # nearly every poll: no coroutine objects for the gate's ``async with``
            try:
                status, headers, body = await client.request(wire, req, url)
            finally:
                gate.release()
        else:
            async with gate:
                status, headers, body = await client.request(wire, req, url)
        target = next_hop(req, url, status, headers.get("location"), hop)
        if target is None:
            return ApiResponse(status, headers, body, self._safe(url))
        return target

    async def _aiohttp_hop(
        self, session: aiohttp.ClientSession, req: ApiRequest, url: str, hop: int
    ) -> ApiResponse | str:
        """One request through an aiohttp session (storage): the answer, or where it redirects."""
        import aiohttp

        target_url, headers = self._prepared(req, url)
        failure: TtsError | None = None
        try:
            async with session.request(
                req.method,
                target_url,
                params=req.params if hop == 0 else None,
                json=req.json,
                headers=headers,
                allow_redirects=False,
            ) as resp:
                resp_url = url if resp.url is target_url else str(resp.url)
                target = next_hop(req, resp_url, resp.status, resp.headers.get("location"), hop)
                if target is not None:
                    return target
                headers_lc = {k.lower(): v for k, v in resp.headers.items()}
                return ApiResponse(resp.status, headers_lc, await _body(resp, req), self._safe(resp_url))
        except TtsError:
            raise
        except HostRefused as refused:
            failure = blocked_error(req, url, refused)
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = _aiohttp_error(exc, req, url)
        raise failure  # outside the handler: aiohttp's text may hold the URL

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
        async for attempt in AsyncRetrying(sleep=alending_sleep, **retry_kwargs(self.settings.retry, req)):
            with attempt:
                if first_failure is not None:
                    replay, first_failure = first_failure, None
                    raise replay
                return await self._attempt(req, parse)
        raise AssertionError("unreachable")  # pragma: no cover
