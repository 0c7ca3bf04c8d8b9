"""Request slots that a retry's backoff gives back: a bound on requests at work, not on sleepers.

A batch's ``max_active_requests`` promises at most that many create calls, polls or downloads in
flight at once. Bounding it by the number of worker threads (or poll coroutines) also bounds the
ones *sleeping out a backoff*: with 10 % transient faults, about one download in ten spends 1-2 s
asleep before its retry, and at 1,000 items those sleeps alone kept the 8 store threads busy for
~23 s after the last vendor task was ready (``benchmarks/batch_vs_mapped.py``, the polls of the
wait likewise). A slot is different: a job holds one while it works, and the transport's retry
loop, whose sleep is :func:`lending_sleep` (threads) or :func:`alending_sleep` (asyncio), lends it
to the next job for the length of the sleep and takes a slot back before its next attempt. So the
threads or coroutines may outnumber the slots (:data:`LENDING_FACTOR`), while the requests in
flight still never do.

The slot a job holds travels in a context variable, so the hooks and transports between the job
and the retry loop need no new parameter; a loop with no slot in its context sleeps as before.
The thread and asyncio kinds keep separate variables: ``asyncio.to_thread`` copies the event
loop's context into its thread, where an asyncio slot must not be touched.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, TypeVar

from tenacity import nap

#: Threads (or coroutines) per slot: room for the jobs whose slot is lent during their backoff.
LENDING_FACTOR = 4


S = TypeVar("S", "ThreadSlots", "TaskSlots")


@dataclass
class _Hold(Generic[S]):
    """One job's claim on a slot; ``held`` is False while it is lent out (so an exit never frees twice).

    A task started inside a held block inherits the context, and with it this hold: of two such
    jobs, only the first to sleep lends the slot (``held`` tells the second it is already out).
    """

    slots: S
    held: bool = True


_THREAD_HOLD: ContextVar[_Hold[ThreadSlots] | None] = ContextVar("tts_thread_slot", default=None)
_TASK_HOLD: ContextVar[_Hold[TaskSlots] | None] = ContextVar("tts_task_slot", default=None)


class _Slots:
    """What both kinds share: ``limit`` slots, and room for :data:`LENDING_FACTOR` workers per slot."""

    def __init__(self, limit: int) -> None:
        self.limit = max(int(limit), 1)

    @property
    def workers(self) -> int:
        """How many threads (or coroutines) a pool serving these slots should run at once."""
        return self.limit * LENDING_FACTOR


class ThreadSlots(_Slots):
    """At most ``limit`` threads at work at once; one asleep in :func:`lending_sleep` is not counted.

    Waiters are served in arrival order by :class:`threading.Semaphore`'s condition, so with one
    slot the jobs still run one at a time.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._free = threading.Semaphore(self.limit)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold a slot for the block (waiting for one first); a retry's sleep inside lends it."""
        self._free.acquire()
        hold: _Hold[ThreadSlots] = _Hold(self)
        token = _THREAD_HOLD.set(hold)
        try:
            yield
        finally:
            _THREAD_HOLD.reset(token)
            if hold.held:
                self._free.release()

    def _lend(self, hold: _Hold[ThreadSlots], seconds: float) -> None:
        hold.held = False
        self._free.release()
        try:
            nap.sleep(seconds)
        finally:
            self._free.acquire()
            hold.held = True


class TaskSlots(_Slots):
    """The asyncio twin of :class:`ThreadSlots`: at most ``limit`` coroutines at work at once."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._free = asyncio.Semaphore(self.limit)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold a slot for the block (waiting for one first); a retry's sleep inside lends it."""
        await self._free.acquire()
        hold: _Hold[TaskSlots] = _Hold(self)
        token = _TASK_HOLD.set(hold)
        try:
            yield
        finally:
            _TASK_HOLD.reset(token)
            if hold.held:
                self._free.release()

    async def _lend(self, hold: _Hold[TaskSlots], seconds: float) -> None:
        hold.held = False
        self._free.release()
        await asyncio.sleep(seconds)
        # Not in a ``finally``: a job cancelled in its sleep leaves without a slot (``held`` stays
        # False, so its exit frees nothing) rather than waiting for one in order to give it back.
        await self._free.acquire()
        hold.held = True


def lending_sleep(seconds: float) -> None:
    """A retry's sleep (tenacity's ``sleep``) that lends this thread's slot, if it holds one."""
    hold = _THREAD_HOLD.get()
    if hold is None or not hold.held:
        nap.sleep(seconds)  # tenacity's own sleep, as without a slot (tests reach it there)
        return
    hold.slots._lend(hold, seconds)


async def alending_sleep(seconds: float) -> None:
    """The asyncio twin of :func:`lending_sleep`, for ``AsyncRetrying``."""
    hold = _TASK_HOLD.get()
    if hold is None or not hold.held:
        await asyncio.sleep(seconds)
        return
    await hold.slots._lend(hold, seconds)
