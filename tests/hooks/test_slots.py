"""Request slots (``transport.slots``): a job holds one while it works, and lends it while it sleeps out
a retry's backoff, so threads or coroutines may outnumber the slots while work in flight never does."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import tenacity

from airflow_provider_tts.transport.slots import (
    LENDING_FACTOR,
    TaskSlots,
    ThreadSlots,
    alending_sleep,
    lending_sleep,
)


class Gauge:
    """The most jobs seen at work at once."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *_: object) -> None:
        with self.lock:
            self.now -= 1


def test_a_thread_asleep_in_its_backoff_lends_its_slot_and_takes_one_back_to_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One slot, two jobs: the first's "backoff" lasts until the second has worked, which it can only
    do with the lent slot; the first's work after the sleep holds a slot again, and never two jobs
    work at once. (The sleep waits for an event, not a clock: no machine is too busy for it.)"""
    slots = ThreadSlots(1)
    gauge = Gauge()
    events: list[str] = []
    first_asleep = threading.Event()
    second_done = threading.Event()
    monkeypatch.setattr(tenacity.nap, "time", type("T", (), {"sleep": staticmethod(lambda _: second_done.wait(10))}))

    def first() -> None:
        with slots.held():
            with gauge:
                events.append("first works")
            first_asleep.set()
            lending_sleep(0.5)
            with gauge:
                events.append("first works again")

    def second() -> None:
        first_asleep.wait(10)
        with slots.held(), gauge:
            events.append("second works")
        second_done.set()

    with ThreadPoolExecutor(slots.workers) as pool:
        for future in [pool.submit(first), pool.submit(second)]:
            future.result(timeout=10)
    assert events == ["first works", "second works", "first works again"]
    assert gauge.most == 1


def test_many_threads_never_have_more_jobs_at_work_than_slots() -> None:
    slots = ThreadSlots(3)
    gauge = Gauge()

    def job(n: int) -> None:
        with slots.held():
            with gauge:
                time.sleep(0.002)
            if n % 2:
                lending_sleep(0.01)
            with gauge:
                time.sleep(0.002)

    with ThreadPoolExecutor(slots.workers) as pool:
        list(pool.map(job, range(60)))
    assert slots.workers == 3 * LENDING_FACTOR
    assert 1 <= gauge.most <= 3
    # Every slot is free again: three more holders get in without waiting.
    assert all(slots._free.acquire(timeout=0) for _ in range(3))


def test_without_a_slot_the_sleep_is_tenacitys_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a batch (a sensor, a one-text operator) the retry sleeps as tenacity does, where tests
    that stop a worker in its backoff reach it."""
    naps: list[float] = []
    monkeypatch.setattr(tenacity.nap, "time", type("T", (), {"sleep": staticmethod(naps.append)}))
    lending_sleep(1.5)
    slots = ThreadSlots(1)
    with slots.held():
        lending_sleep(2.5)
    assert naps == [1.5, 2.5]


def test_a_coroutine_asleep_in_its_backoff_lends_its_slot() -> None:
    async def run() -> tuple[list[str], int]:
        slots = TaskSlots(1)
        gauge = Gauge()
        events: list[str] = []

        async def first() -> None:
            async with slots.held():
                with gauge:
                    events.append("first works")
                await alending_sleep(0.3)
                with gauge:
                    events.append("first works again")

        async def second() -> None:
            await asyncio.sleep(0.05)
            async with slots.held():
                with gauge:
                    events.append("second works")

        await asyncio.gather(first(), second())
        return events, gauge.most

    events, most = asyncio.run(run())
    assert events == ["first works", "second works", "first works again"]
    assert most == 1


def test_a_coroutine_cancelled_in_its_backoff_leaves_without_freeing_a_slot_twice() -> None:
    async def run() -> int:
        slots = TaskSlots(2)

        async def sleeper() -> None:
            async with slots.held():
                await alending_sleep(10)

        task = asyncio.ensure_future(sleeper())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        free = 0
        while not slots._free.locked():
            await slots._free.acquire()
            free += 1
        return free

    assert asyncio.run(run()) == 2
