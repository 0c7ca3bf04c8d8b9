"""The retry policy both transports share, and the pacing of requests after a 429.

:func:`is_retryable` decides whether a failed request may be sent again (a create call only when
the vendor provably did not process it); :func:`retry_kwargs` turns the connection's
:class:`~airflow_provider_tts.connection.RetryPolicy` into tenacity arguments: exponential backoff
with jitter, stretched to ``Retry-After``, capped, each retry logged without a URL's secrets.
:class:`Pacer` paces one connection's API requests: its ``requests_per_second`` and
``max_in_flight``, and one ``Retry-After`` holding every request; :data:`PACERS` gives every hook
of a connection in this process the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import os
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

from airflow_provider_tts.connection import ConnectionSettings, RetryPolicy
from airflow_provider_tts.exceptions import TtsConnectionError, TtsProtocolError, TtsRateLimitError, TtsServerError
from airflow_provider_tts.transport.messages import scrub
from airflow_provider_tts.vendors.base import ApiRequest

#: One logger for the whole transport package, whichever module logs.
log = logging.getLogger("airflow_provider_tts.transport")


class _Ticket:
    """A place in a pacer's queue for an in-flight slot; ``wake`` tells its owner it was granted one."""

    __slots__ = ("granted", "wake")

    def __init__(self, wake: Callable[[], object]) -> None:
        self.granted = False
        self.wake = wake


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Pacer:
    """The pace of one connection's API requests in this process: spacing, requests in flight, 429s.

    Every hook of a connection in one process (the threads of a batch, the tasks of one Celery
    worker process, every trigger of a triggerer, sync and async alike) shares one pacer
    (:data:`PACERS`), taken around each attempt of a vendor API call (create, status, result,
    ``/tts-stream``; never a storage download). It holds three things:

    * ``Retry-After``: a 429's pause is about the account, not the request that got it, so it
      holds every request of the pacer (the longest pause wins, capped by the caller) -- while 429s
      are a real share of the answers (:attr:`SUSTAINED`). A sporadic 429 among many answered
      requests (a vendor's hiccup, one request over a burst limit) delays only its own request,
      which its retry sends after the ``Retry-After``: pausing every request of a batch for each
      stray 429 would serialise the batch behind them. A new pacer counts every 429 as sustained
      until answers have shown otherwise;
    * ``requests_per_second``: request starts are spaced at least ``1 / requests_per_second``
      apart, first come first served (no burst);
    * ``max_in_flight``: at most this many requests between sending and the end of their answer
      (a stream's, the arrival of its headers), queued in arrival order.

    :meth:`turn` (threads) and :meth:`aturn` (event loops) take a place and give it back on every
    exit, exceptions and cancellation included; a thread blocks while it waits, a coroutine never
    blocks its event loop. ``None`` limits mean no limit: then only a 429 ever makes one wait.
    """

    #: The longest pause one answer may impose (a garbled ``Retry-After`` must not stall a batch).
    MAX_PAUSE = 300.0
    #: A wait for a place or a start at least this long calls a turn's ``on_wait`` (see :meth:`turn`).
    LONG_WAIT = 1.0
    #: The share of recent answers that are 429s from which a 429 pauses every request, and the
    #: weight of each answer in that share (an exponential average over about 1 / weight answers).
    SUSTAINED = 0.25
    ANSWER_WEIGHT = 0.05

    def __init__(self, requests_per_second: float | None = None, max_in_flight: int | None = None) -> None:
        self._lock = threading.Lock()
        self._resume_at = 0.0
        self._next_start = 0.0
        self._in_flight = 0
        self._queue: deque[_Ticket] = deque()
        self.requests_per_second: float | None = None
        self.max_in_flight: int | None = None
        #: Pauses taken from 429s, and requests that had to wait for their turn (for tests and logs).
        self.pauses = 0
        self.waits = 0
        #: The recent share of 429s among the answers (see :attr:`SUSTAINED`); 1.0 before any answer.
        #: Updated without the lock: a lost update under threads only shifts an estimate.
        self.limited_share = 1.0
        self.configure(requests_per_second, max_in_flight)

    def configure(self, requests_per_second: float | None, max_in_flight: int | None) -> None:
        """Take the connection's current limits (a raised ``max_in_flight`` lets waiting requests go)."""
        with self._lock:
            self.requests_per_second = requests_per_second
            self.max_in_flight = max_in_flight
            granted = self._grant()
        self._wake(granted)

    @property
    def busy(self) -> bool:
        """Whether a request holds or awaits a place, or a pause is on."""
        return bool(self._in_flight or self._queue or self.delay())

    def pause(self, seconds: float) -> None:
        """Hold every request of this pacer for ``seconds`` from now (the longest pause wins)."""
        until = time.monotonic() + min(max(seconds, 0.0), self.MAX_PAUSE)
        with self._lock:
            if until > self._resume_at:
                self._resume_at = until
                self.pauses += 1

    def delay(self) -> float:
        """Seconds until the current pause is over."""
        return max(self._resume_at - time.monotonic(), 0.0)

    def observe(self, exc: BaseException, max_pause: float = MAX_PAUSE) -> None:
        """A failed request: a 429 counts towards the share of 429s and, if they are sustained, pauses
        every request for its ``Retry-After`` (at most ``max_pause``); anything else is an answer."""
        if not isinstance(exc, TtsRateLimitError):
            self.answered()
            return
        weight = self.ANSWER_WEIGHT
        self.limited_share = self.limited_share * (1.0 - weight) + weight
        if exc.retry_after is not None and self.limited_share >= self.SUSTAINED:
            self.pause(min(float(exc.retry_after), max_pause))

    def answered(self) -> None:
        """A request got an answer that was not a 429 (cheap: the triggerer's hot path)."""
        self.limited_share *= 1.0 - self.ANSWER_WEIGHT

    @contextlib.contextmanager
    def turn(self, on_wait: Callable[[], object] | None = None) -> Iterator[None]:
        """Wait (blocking this thread) for a place and a start time; hold the place for the block.

        ``on_wait`` is called just before this thread blocks for what may be long (a place not
        free within :attr:`LONG_WAIT`, or a start at least that far off: another request's
        ``Retry-After``): a paying caller lets go of its "may have been paid" marker then, as
        nothing of its request is on the wire (:class:`AttemptGuard`, whose ``refused`` may be
        called again while the marker is gone). Short waits call nothing.
        """
        waited = self._acquire(on_wait)
        try:
            left = self._start_in()
            while left > 0:
                waited = True
                if on_wait is not None and left >= self.LONG_WAIT:
                    on_wait()
                time.sleep(left)
                left = self._start_in() if self.delay() > 0 else 0.0
            if waited:
                self._count_wait()
            yield
        finally:
            self._release()

    @contextlib.asynccontextmanager
    async def aturn(self) -> AsyncIterator[None]:
        """:meth:`turn` for a coroutine: waits with ``asyncio``, never blocking the event loop."""
        waited = await self._aacquire()
        try:
            left = self._start_in()
            while left > 0:
                waited = True
                await asyncio.sleep(left)
                left = self._start_in() if self.delay() > 0 else 0.0
            if waited:
                self._count_wait()
            yield
        finally:
            self._release()

    def turn_now(self) -> bool:
        """Take a place and a start time if both are free this instant; take nothing otherwise.

        What :meth:`aturn` does when it would not wait, under one lock and with no coroutine or
        context manager: the triggerer's hot path, where a connection mostly has no limit and no
        pause. True: the caller holds a place and must give it back with :meth:`release` (also on
        an exception); False: nothing is held, and the caller queues through :meth:`aturn`.
        """
        with self._lock:
            if self._queue or not self._room():
                return False
            now = time.monotonic()
            if self._resume_at > now:
                return False
            if self.requests_per_second:
                if self._next_start > now:
                    return False
                self._next_start = now + 1.0 / self.requests_per_second
            self._in_flight += 1
            return True

    def release(self) -> None:
        """Give back a place :meth:`turn_now` took."""
        self._release()

    # ------------------------------------------------------------------ places (max_in_flight)

    def _room(self) -> bool:
        return self.max_in_flight is None or self._in_flight < self.max_in_flight

    def _take_now(self) -> bool:
        with self._lock:
            if self._queue or not self._room():
                return False
            self._in_flight += 1
            return True

    def _enqueue(self, wake: Callable[[], object]) -> _Ticket | None:
        """Queue behind the requests already waiting (the ticket), or take a place freed meanwhile (None)."""
        with self._lock:
            if not self._queue and self._room():
                self._in_flight += 1
                return None
            ticket = _Ticket(wake)
            self._queue.append(ticket)
            return ticket

    def _acquire(self, on_wait: Callable[[], object] | None = None) -> bool:
        """Take a place, blocking this thread while others are ahead; whether it had to wait.

        ``on_wait`` is called if no place came within :attr:`LONG_WAIT` (see :meth:`turn`).
        """
        if self._take_now():
            return False
        event = threading.Event()
        ticket = self._enqueue(event.set)
        if ticket is None:
            return False
        try:
            if not event.wait(self.LONG_WAIT if on_wait is not None else None):
                assert on_wait is not None
                on_wait()
                event.wait()
        except BaseException:  # an execution timeout, a kill: the place must not be lost
            self._abandon(ticket)
            raise
        return True

    async def _aacquire(self) -> bool:
        """:meth:`_acquire` for a coroutine: a future woken from whichever thread frees a place."""
        if self._take_now():
            return False
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        ticket = self._enqueue(functools.partial(loop.call_soon_threadsafe, _resolve, future))
        if ticket is None:
            return False
        try:
            await future
        except BaseException:  # cancelled: leave the queue, or pass on a place granted meanwhile
            self._abandon(ticket)
            raise
        return True

    def _abandon(self, ticket: _Ticket) -> None:
        """A waiter gave up (an exception, a cancellation): leave the queue, or pass on a place it was given."""
        with self._lock:
            granted = ticket.granted
            if not granted:
                self._queue.remove(ticket)
        if granted:
            self._release()

    def _grant(self) -> list[_Ticket]:
        """Hand free places to waiters, first come first served; the caller holds the lock."""
        granted: list[_Ticket] = []
        while self._queue and self._room():
            ticket = self._queue.popleft()
            ticket.granted = True
            self._in_flight += 1
            granted.append(ticket)
        return granted

    def _wake(self, tickets: list[_Ticket]) -> None:
        for ticket in tickets:
            try:
                ticket.wake()
            except RuntimeError:  # its event loop is closed: nobody is left to use the place
                self._release()

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            granted = self._grant()
        self._wake(granted)

    # ---------------------------------------------------- start times (pause, requests_per_second)

    def _start_in(self) -> float:
        """Reserve this request's start: seconds from now, after the pause and spaced from the others."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._resume_at)
            if self.requests_per_second:
                start = max(start, self._next_start)
                self._next_start = start + 1.0 / self.requests_per_second
            return start - now

    def _count_wait(self) -> None:
        with self._lock:
            self.waits += 1


class PacerRegistry:
    """One :class:`Pacer` per connection in this process, so every task and trigger on it shares one pace.

    A connection is its id, its API base URL and a salted digest of its key (the key itself is
    never kept): a changed key or base starts afresh. Each lookup applies the connection's current
    ``requests_per_second`` and ``max_in_flight``, so an edited connection takes effect with the
    next hook made. Pacers are kept after their hooks are gone, so a 429 still slows the next task;
    beyond :attr:`MAX_PACERS` connections the least recently used idle ones are forgotten.
    """

    MAX_PACERS = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pacers: OrderedDict[tuple[str, str, str], Pacer] = OrderedDict()
        self._salt = os.urandom(16)

    def for_connection(self, settings: ConnectionSettings) -> Pacer:
        """The pacer of ``settings``' connection, made on first use, with its current limits."""
        secret = settings.api_key.get_secret_value().encode("utf-8")
        account = hmac.new(self._salt, secret, hashlib.sha256).hexdigest()[:16]
        key = (settings.conn_id, settings.api_base_url, account)
        with self._lock:
            pacer = self._pacers.get(key)
            if pacer is None:
                pacer = self._pacers[key] = Pacer()
                excess = len(self._pacers) - self.MAX_PACERS
                if excess > 0:
                    for old in [k for k, other in self._pacers.items() if k != key and not other.busy][:excess]:
                        del self._pacers[old]
            self._pacers.move_to_end(key)
        pacer.configure(settings.requests_per_second, settings.max_in_flight)
        return pacer


#: The process's pacers, one per connection (see :class:`PacerRegistry`).
PACERS = PacerRegistry()


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


class AttemptGuard(Protocol):
    """The paying caller's view of a create call's attempts: where "may have been paid" begins and ends.

    Neither vendor de-duplicates a create, so its caller keeps a marker (a batch's request-cache
    claim, a one-task operator's submit record) saying "a create may be in flight" while it pays,
    and a later try that finds the marker without a task id must assume it was paid. The
    transport resends a create only after an answer that proves nothing was created (429, 503, a
    connection never opened); held across the backoff between such an attempt and its resend, the
    marker would make a worker killed in that sleep look like one killed mid-request. The guard
    lets the caller hold it only while a request is on the wire: :meth:`refused` before the
    sleep (and before a long wait for the pacer), :meth:`resending` in the request's pacer turn.
    On the happy path :meth:`resending` finds the marker where it was, so it costs nothing.
    """

    def refused(self) -> None:
        """Nothing of the request is on the wire and it will wait before it is sent: the marker may go.

        Called before a backoff after an attempt that created nothing, and before a long wait for
        the connection's pacer (another request's ``Retry-After``, no free place), the first
        attempt's included. May be called again while the marker is already gone. Must not
        raise: a marker that could not be dropped only stays, as it would without a guard.
        """

    def resending(self) -> None:
        """The request is about to be sent, in its pacer turn: take the marker back if it went.

        Raise to send nothing (the exception ends the call as it is, never retried): the marker
        could not be written, or another run took the request meanwhile.
        """


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


def retry_kwargs(policy: RetryPolicy, req: ApiRequest, guard: AttemptGuard | None = None) -> dict[str, Any]:
    """Tenacity arguments shared by the sync and async loops: one policy for both.

    ``guard`` hears, before each backoff sleep, that the failed attempt is to be resent
    (:meth:`AttemptGuard.refused`); the loop calls :meth:`AttemptGuard.resending` itself.
    """

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
        if guard is not None and exc is not None and is_retryable(exc, idempotent=False):
            guard.refused()  # only an answer that proves nothing was created lets the marker go

    return {
        "stop": stop_after_attempt(policy.max_retries + 1),
        "wait": _wait_strategy(policy),
        "retry": retry_if_exception(lambda exc: is_retryable(exc, req.idempotent)),
        "before_sleep": before_sleep,
        "reraise": True,
    }
