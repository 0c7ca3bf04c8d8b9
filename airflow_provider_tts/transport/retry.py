"""The retry policy both transports share, and the pacing of requests after a 429.

:func:`is_retryable` decides whether a failed request may be sent again (a create call only when
the vendor provably did not process it); :func:`retry_kwargs` turns the connection's
:class:`~airflow_provider_tts.connection.RetryPolicy` into tenacity arguments: exponential backoff
with jitter, stretched to ``Retry-After``, capped, each retry logged without a URL's secrets.
:class:`Pacer` makes one ``Retry-After`` hold every request that shares it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

from airflow_provider_tts.connection import RetryPolicy
from airflow_provider_tts.exceptions import TtsConnectionError, TtsProtocolError, TtsRateLimitError, TtsServerError
from airflow_provider_tts.transport.messages import scrub
from airflow_provider_tts.vendors.base import ApiRequest

#: One logger for the whole transport package, whichever module logs.
log = logging.getLogger("airflow_provider_tts.transport")


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
