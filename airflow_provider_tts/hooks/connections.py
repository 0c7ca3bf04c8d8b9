"""One connection lookup serves every wait that starts together on an event loop.

A triggerer that starts (or restarts) with thousands of deferred tasks builds thousands of hooks at
once, and each resolved its connection through Airflow: on 3.1+ a round trip over the triggerer's
channel to the API server, and in every case Airflow's secrets-backend chain (about 0.5 ms of CPU
per lookup here, measured in ``benchmarks/trigger_scale.py``: a quarter of a short wait's whole
cost). :data:`RESOLVED_CONNECTIONS` makes the waits that start within :data:`REUSE_SECONDS` of a
lookup share it: concurrent lookups of one connection on one loop become one (the others await
it), and its answer serves later hooks for a few seconds.

The window is short on purpose: an edited connection (a rotated key, a new base URL) reaches new
waits seconds later, where Airflow's own optional secrets cache keeps values for minutes. A wait
that already resolved keeps its connection until it ends, as before. Failed lookups are not kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

#: Seconds a resolved connection serves hooks of the same connection id in this process.
REUSE_SECONDS = 10.0


class ConnectionMemo:
    """Single-flight and briefly remembered connection lookups, per connection id."""

    def __init__(self, reuse_seconds: float = REUSE_SECONDS) -> None:
        self.reuse_seconds = reuse_seconds
        self._resolved: dict[str, tuple[float, Any]] = {}
        self._in_flight: dict[tuple[int, str], asyncio.Task[Any]] = {}

    async def get(self, conn_id: str, lookup: Callable[[], Awaitable[Any]]) -> Any:
        """The connection ``lookup()`` returns, shared with the lookups of ``conn_id`` around it."""
        hit = self._resolved.get(conn_id)
        if hit is not None and time.monotonic() - hit[0] < self.reuse_seconds:
            return hit[1]
        key = (id(asyncio.get_running_loop()), conn_id)  # a task belongs to one loop
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.ensure_future(lookup())
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._settled(key, done))
        # shield: a waiter cancelled mid-lookup must not cancel the lookup the others await.
        return await asyncio.shield(task)

    def _settled(self, key: tuple[int, str], task: asyncio.Task[Any]) -> None:
        self._in_flight.pop(key, None)
        if not task.cancelled() and task.exception() is None:
            self._resolved[key[1]] = (time.monotonic(), task.result())

    def clear(self) -> None:
        """Forget every remembered connection (the next hook of each looks it up again)."""
        self._resolved.clear()


#: The process's memo, used by :meth:`~airflow_provider_tts.hooks.tts.TtsHook.avendor`.
RESOLVED_CONNECTIONS = ConnectionMemo()
