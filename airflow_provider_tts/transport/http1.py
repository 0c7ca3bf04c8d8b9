"""A small HTTP/1.1 keep-alive client on asyncio protocols, for the async transport's API calls.

Why not aiohttp here: a triggerer spends its CPU on status polls, thousands a minute in one
process, each a small GET of a few hundred bytes to one of a handful of API origins. aiohttp's
request path (URL objects, header multidicts, a response object with its stream reader, timers
and tracing hooks per request) cost about 0.14 ms a poll, half of the whole poll, and much of the
garbage the collector walks. Here a poll writes request bytes built once per wait, parses its
answer from the connection's buffer without coroutines (a head with the same bytes as a recent
one is not parsed again), and arms no timer of its own: a connection's read-timeout timer is
re-armed only when it fires during a wait. ``benchmarks/trigger_scale.py``, 10,000 waits, quiet
machine, same run: 0.204 CPU s per 1,000 polls with aiohttp, 0.116-0.130 with this client, 7.3-8.5x
below a session per poll over the whole run (was 5.0x), GC 21 % of the process's CPU (was 24 %);
BENCHMARKS.md "Triggerer scale".

Only API-origin calls use it. Storage redirects keep aiohttp and its checked resolver (``aio``).

What it keeps of the old path: connect and read timeouts (read: time without data); the request
line, Host, User-Agent, Accept, the key header (whatever ``key_headers`` allowed), a JSON body
with its Content-Type and Content-Length; ``Accept-Encoding: identity``, and gzip/deflate still
decoded, with :data:`MAX_JSON_BODY` applied to the inflated size; bodies by Content-Length,
chunked (trailers skipped) or read to close; interim 1xx answers skipped; :data:`MAX_JSON_BODY`
refused as soon as exceeded; keep-alive per origin, never after ``Connection: close``, an
HTTP/1.0 answer without keep-alive, a read-to-close body, an error or a timeout; idle connections
closed after :data:`IDLE_TIMEOUT` and all of them when the pool closes. A reused idle connection
the server closed before answering (or any connection closed or reset before the first byte of
the answer, as aiohttp resent) is resent once on a new connection, only for an idempotent request;
any failure after the request's bytes were written is ``request_sent=True``, so a paid create is
never sent twice (``retry.is_retryable``).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from types import MappingProxyType
from typing import TYPE_CHECKING

from airflow_provider_tts.exceptions import TtsConnectionError
from airflow_provider_tts.transport.messages import failure_detail, safe_url, scrub
from airflow_provider_tts.transport.rules import MAX_JSON_BODY, too_big
from airflow_provider_tts.transport.wire import Origin, Wire, inflate

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_tts.vendors.base import ApiRequest

#: A parsed status line and headers: status, whether the connection may be kept, headers (read-only).
Head = tuple[int, bool, "Mapping[str, str]"]

#: Seconds an idle connection is kept (aiohttp's ``keepalive_timeout`` before this client).
IDLE_TIMEOUT = 60.0
#: A status line and headers longer than this are not a JSON API's answer.
MAX_HEAD = 65536


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context for the process: loading the CA store is the costly part."""
    return ssl.create_default_context()


class _Closed(Exception):
    """The server closed the connection (or it was lost) while an answer was awaited."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a buffer the parser reads, one waiter, a lazily re-armed read timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin, read_timeout: float) -> None:
        self.loop = loop
        self.origin = origin
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False  # EOF or loss: nothing more will arrive
        self.answered = False  # a byte of the current request's answer arrived
        self.timed_out = False
        self.idle_since = 0.0
        self._active_at = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.answered = True
        self._active_at = self.loop.time()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._wake()

    # ---------------------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _check_timeout(self) -> None:
        """The read timer: one per connection, re-armed only when it fires while a wait still has time."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # idle now: the next wait arms it again
        left = self._active_at + self.read_timeout - self.loop.time()
        if left > 0:
            self._timer = self.loop.call_later(left, self._check_timeout)
        else:
            self.timed_out = True
            self._wake()

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.answered = False
        self._active_at = self.loop.time()
        self.transport.write(data)

    def more(self) -> asyncio.Future[None]:
        """A future resolved when bytes arrive, at EOF or after the read timeout (then :attr:`timed_out`).

        :class:`_Closed` when nothing more can arrive. A plain future, not a coroutine: one
        object per wait on a poll's hot path.
        """
        if self.closed:
            raise _Closed
        waiter = self._waiter = self.loop.create_future()
        if self._timer is None:
            self._timer = self.loop.call_at(self._active_at + self.read_timeout, self._check_timeout)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()


_HEAD, _EXACT, _CHUNK_SIZE, _CHUNK, _TRAILERS, _TO_CLOSE = range(6)
_NO_HEAD: Head = (0, False, MappingProxyType({}))


class _Answer:
    """One answer parsed from a connection's buffer as its bytes arrive: status line, headers, body.

    Synchronous (:meth:`feed` says whether the answer is complete), so a poll whose answer
    arrives in one piece runs no coroutine of the parser's. Raises on anything malformed.
    """

    def __init__(self, conn: _Connection, req: ApiRequest, url: str, wire: Wire, heads: dict[bytes, Head]) -> None:
        self.conn = conn
        self.req = req
        self.url = url
        self.wire = wire
        self.heads = heads
        self.state = _HEAD
        self.head: Head = _NO_HEAD
        self.size = 0  # the stated length, or the current chunk's
        self.chunks = bytearray()
        self.body = b""

    def malformed(self, what: str, raw: bytes | bytearray) -> TtsConnectionError:
        """The error for bytes that are not HTTP, showing their start (a server may echo the request:
        the key and the URLs' secrets are taken out before the text is cut to length)."""
        shown = bytes(raw[:1024]).decode("latin-1")
        for secret in self.wire.secrets:
            shown = shown.replace(secret, "***")
        shown = repr(scrub(shown, self.url, self.req.url)[:40])
        return TtsConnectionError(f"{self.req.what}: malformed {what} from {safe_url(self.url)}: {shown}")

    def cut_short(self) -> TtsConnectionError:
        """The connection closed before the answer was complete (and after its first byte)."""
        if self.state == _EXACT:
            read = f"{len(self.conn.buffer)} of {self.size} body bytes read"
        else:
            read = f"{len(self.chunks)} body bytes read" if self.state != _HEAD else "headers cut short"
        return TtsConnectionError(f"{self.req.what}: connection closed mid-answer ({safe_url(self.url)}): {read}")

    def feed(self) -> bool:
        """Take what the buffer holds; True once the answer is complete (:attr:`head`, :attr:`body`)."""
        buffer = self.conn.buffer
        while True:
            state = self.state
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise self.malformed("headers (too long)", buffer)
                    return False
                if self._take_head(bytes(buffer[:end])):
                    del buffer[: end + 4]
                    continue  # an interim answer (100 Continue, 103 Early Hints): the answer follows
                del buffer[: end + 4]
            elif state == _EXACT:
                if len(buffer) < self.size:
                    return False
                self.body = bytes(buffer[: self.size])
                del buffer[: self.size]
                return True
            elif state == _CHUNK_SIZE:
                line = self._line(buffer, "chunk size")
                if line is None:
                    return False
                size_text = line.partition(b";")[0].strip()
                if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    raise self.malformed("chunk size", line)
                self.size = int(size_text, 16)
                if len(self.chunks) + self.size > MAX_JSON_BODY:
                    raise too_big(self.req, self.url)
                self.state = _CHUNK if self.size else _TRAILERS
            elif state == _CHUNK:
                size = self.size
                if len(buffer) < size + 2:
                    return False
                if buffer[size : size + 2] != b"\r\n":
                    raise self.malformed("chunk end", buffer[size : size + 2])
                self.chunks += buffer[:size]
                del buffer[: size + 2]
                self.state = _CHUNK_SIZE
            elif state == _TRAILERS:
                line = self._line(buffer, "trailer")
                if line is None:
                    return False
                if not line:  # trailers carry nothing the parsers read
                    self.body = bytes(self.chunks)
                    return True
            else:  # read to close
                if len(buffer) > MAX_JSON_BODY:
                    raise too_big(self.req, self.url)
                if not self.conn.closed:
                    return False
                self.body = bytes(buffer)
                buffer.clear()
                return True

    def _line(self, buffer: bytearray, what: str) -> bytes | None:
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > 4096:
                raise self.malformed(what, buffer)
            return None
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        return line

    def _take_head(self, raw: bytes) -> bool:
        """Take a status line and headers and choose how the body is framed; True for an interim answer.

        Parsed heads are kept by their bytes (:attr:`Http1Pool.heads`): thousands of polls a
        second get the same status line and headers (only ``Date`` changes, once a second), so
        most polls parse nothing. The headers are read-only, since answers share them.
        """
        head = self.heads.get(raw)
        if head is None:
            head = self.parse_head(raw)
            if len(self.heads) >= 256:
                self.heads.clear()
            self.heads[raw] = head
        status, _, headers = head
        if 100 <= status < 200:
            return True
        self.head = head
        if status in (204, 304):
            self.state, self.size = _EXACT, 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = _CHUNK_SIZE
        elif (length := headers.get("content-length")) is None:
            self.state = _TO_CLOSE
        elif not (length.isascii() and length.isdigit()):
            raise self.malformed("Content-Length", length.encode("latin-1", "replace"))
        else:
            self.state, self.size = _EXACT, int(length)
            if self.size > MAX_JSON_BODY:
                raise too_big(self.req, self.url)
        return False

    def parse_head(self, raw: bytes) -> Head:
        lines = raw.split(b"\r\n")
        status_line = lines[0]
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if (
            version not in (b"HTTP/1.1", b"HTTP/1.0")
            or not (code.isdigit() and len(code) == 3)
            or rest[3:4] not in (b"", b" ")
        ):
            raise self.malformed("status line", status_line)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b"\n" in line or b" " in name:
                raise self.malformed("header line", line)
            headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        tokens = headers.get("connection", "").lower()
        keep = "close" not in tokens and (version == b"HTTP/1.1" or "keep-alive" in tokens)
        return int(code), keep, MappingProxyType(headers)


class Http1Pool:
    """Keep-alive connections per origin, for one pool's users (the gate in front bounds them)."""

    def __init__(self, connect_timeout: float, read_timeout: float, *, max_idle: int) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self.closed = False
        self._idle: dict[Origin, list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        #: Parsed heads by their bytes (see :meth:`_Answer.head`), at most 256.
        self.heads: dict[bytes, Head] = {}
        #: Connections opened so far (tests and benchmarks read it).
        self.opened = 0

    async def request(self, wire: Wire, req: ApiRequest, url: str) -> tuple[int, Mapping[str, str], bytes]:
        """Send ``wire`` and read the answer: status, headers (lower-cased names), body."""
        resent = False
        while True:
            conn = None if resent else self._take_idle(wire.origin)
            if conn is None:
                conn = await self._connect(wire.origin, req, url)
            keep = False
            try:
                conn.send(wire.data)
                answer = _Answer(conn, req, url, wire, self.heads)
                try:
                    while not answer.feed():
                        await conn.more()
                        if conn.timed_out:
                            raise TtsConnectionError(
                                f"{req.what}: timed out ({safe_url(url)}): no data for {self.read_timeout:g} s"
                            )
                except _Closed:
                    if not conn.answered:
                        if req.idempotent and not resent:
                            # Closed or reset before any byte of the answer (typically an idle
                            # connection the server had closed): once, on a new connection, as
                            # aiohttp did, so one injected reset on a GET stays invisible.
                            resent = True
                            continue
                        raise TtsConnectionError(
                            f"{req.what}: connection closed before the answer ({safe_url(url)})"
                        ) from None
                    raise answer.cut_short() from None
                status, keep, headers = answer.head
                keep = keep and answer.state != _TO_CLOSE
                body = answer.body
                encoding = headers.get("content-encoding", "identity").strip().lower()
                if encoding != "identity" and body:
                    body = inflate(body, encoding, req, url)
                return status, headers, body
            finally:
                if keep and not conn.closed and not conn.buffer and not self.closed:
                    self._put_idle(conn)
                else:
                    conn.close()

    async def _connect(self, origin: Origin, req: ApiRequest, url: str) -> _Connection:
        """A new connection; any failure here is ``request_sent=False``: no byte was written."""
        loop = asyncio.get_running_loop()
        scheme, host, port = origin
        conn = _Connection(loop, origin, self.read_timeout)
        tls = scheme == "https"
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: conn, host, port, ssl=_tls() if tls else None, server_hostname=host if tls else None
                )
        except TimeoutError:
            conn.close()
            raise TtsConnectionError(
                f"{req.what}: timed out ({safe_url(url)}): connecting took over {self.connect_timeout:g} s",
                request_sent=False,
            ) from None
        except OSError as exc:  # refused, unreachable, name not resolved, TLS verification
            conn.close()
            detail = failure_detail(exc, req.url, url)
            raise TtsConnectionError(
                f"{req.what}: {type(exc).__name__} ({safe_url(url)}): {detail}", request_sent=False
            ) from None
        self.opened += 1
        return conn

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()  # the newest: the least likely to have been closed by the server
            if not conn.closed and not conn.buffer and conn.loop.time() - conn.idle_since < IDLE_TIMEOUT:
                return conn  # (bytes that arrived while idle answer nothing we sent: not reused)
            conn.close()
        return None

    def _put_idle(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        conn.idle_since = conn.loop.time()
        idle.append(conn)
        if len(idle) > self.max_idle:
            idle.pop(0).close()
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(IDLE_TIMEOUT, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for :data:`IDLE_TIMEOUT`; come back while others are idle."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        oldest = now
        for origin, idle in list(self._idle.items()):
            kept = []
            for conn in idle:
                if conn.closed or now - conn.idle_since >= IDLE_TIMEOUT:
                    conn.close()
                else:
                    kept.append(conn)
                    oldest = min(oldest, conn.idle_since)
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if self._idle:
            self._sweeper = loop.call_later(max(oldest + IDLE_TIMEOUT - now, 1.0), self._sweep)

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def close(self) -> None:
        """Close every idle connection; one in use is closed when its request ends."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
