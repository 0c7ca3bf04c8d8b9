"""Per-connection rate limits shared by every hook in a process (issue 25).

``requests_per_second`` and ``max_in_flight`` in a connection's extras, and a 429's ``Retry-After``,
hold every hook of that connection in this process, sync and async alike, through one
:class:`~airflow_provider_tts.transport.Pacer`. Measured against the emulator over loopback: the
most requests it was handling at once, its request log, and lower bounds of elapsed time only.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from airflow_provider_tts.connection import parse_connection
from airflow_provider_tts.exceptions import TtsConfigError, TtsRateLimitError
from airflow_provider_tts.hooks.tts import TtsHook
from airflow_provider_tts.transport import Pacer, PacerRegistry
from tests.conftest import ConnFactory


@pytest.fixture(autouse=True)
def fresh_pacers(monkeypatch: pytest.MonkeyPatch) -> PacerRegistry:
    """A registry of this test's own: connection ids repeat across tests, pauses must not."""
    registry = PacerRegistry()
    monkeypatch.setattr("airflow_provider_tts.hooks.tts.PACERS", registry)
    return registry


def _ready_tasks(emu: Any, api: str, count: int) -> list[str]:
    return [emu.create_task(api, "tts", delay=0) for _ in range(count)]


def _slow_statuses(emu: Any, count: int, seconds: float = 0.3) -> None:
    """The next ``count`` status requests are held ``seconds`` by the emulator, then answered."""
    emu.set_faults(slow_seconds=seconds)
    emu.inject("slow", count=count, endpoint="status")


async def _astatus(hook: TtsHook, task_id: str) -> str:
    return (await hook.aget_task_status(task_id)).state


async def _astatuses(conn_id: str, task_ids: list[str], hooks: int = 4) -> list[str]:
    many = [TtsHook(conn_id) for _ in range(hooks)]
    try:
        return await asyncio.gather(*(_astatus(many[n % hooks], t) for n, t in enumerate(task_ids)))
    finally:
        for hook in many:
            await hook.aclose()


def _status_times(emu: Any) -> list[tuple[float, int | str]]:
    return [(entry["time"], entry["status"]) for entry in emu.requests() if entry["endpoint"] == "status"]


# ----------------------------------------------------------------------------------- max_in_flight


@pytest.mark.parametrize("api", ["camb_ai", "revid_tts"])
def test_max_in_flight_holds_every_hook_of_the_connection_sync(emu: Any, make_conn: ConnFactory, api: str) -> None:
    conn_id = make_conn(api, max_in_flight=2)
    task_ids = _ready_tasks(emu, api, 8)
    _slow_statuses(emu, 8)
    hooks = [TtsHook(conn_id) for _ in range(4)]  # four tasks of one worker process, two threads each
    with ThreadPoolExecutor(8) as pool:
        states = list(pool.map(lambda n: hooks[n % 4].get_task_status(task_ids[n]).state, range(8)))
    assert states == ["succeeded"] * 8
    stats = emu.stats()
    assert stats["requests_by_endpoint"]["status"] == 8
    assert stats["max_concurrent_requests"] <= 2
    assert len({id(hook.pacer) for hook in hooks}) == 1


def test_max_in_flight_holds_every_trigger_in_one_event_loop(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("camb_ai", max_in_flight=2)
    task_ids = _ready_tasks(emu, "camb_ai", 8)
    _slow_statuses(emu, 8)
    assert asyncio.run(_astatuses(conn_id, task_ids)) == ["succeeded"] * 8
    stats = emu.stats()
    assert stats["requests_by_endpoint"]["status"] == 8
    assert stats["max_concurrent_requests"] <= 2


def test_sync_threads_and_an_event_loop_share_one_in_flight_limit(emu: Any, make_conn: ConnFactory) -> None:
    """A triggerer's event loop and worker threads in one process: 4 + 4 calls, never more than 2 at once."""
    conn_id = make_conn("revid_tts", max_in_flight=2)
    task_ids = _ready_tasks(emu, "revid_tts", 8)
    _slow_statuses(emu, 8)
    async_states: list[str] = []
    loop_thread = threading.Thread(target=lambda: async_states.extend(asyncio.run(_astatuses(conn_id, task_ids[:4]))))
    loop_thread.start()
    with ThreadPoolExecutor(4) as pool:
        sync_states = list(pool.map(lambda t: TtsHook(conn_id).get_task_status(t).state, task_ids[4:]))
    loop_thread.join(timeout=60)
    assert async_states + sync_states == ["succeeded"] * 8
    stats = emu.stats()
    assert stats["requests_by_endpoint"]["status"] == 8
    assert stats["max_concurrent_requests"] <= 2


# ----------------------------------------------------------------------------- requests_per_second


def test_requests_per_second_spaces_the_requests_of_every_hook(emu: Any, make_conn: ConnFactory) -> None:
    rps, count = 10.0, 6
    conn_id = make_conn("camb_ai", requests_per_second=rps)
    task_ids = _ready_tasks(emu, "camb_ai", count)
    hooks = [TtsHook(conn_id) for _ in range(3)]
    started = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        states = list(pool.map(lambda n: hooks[n % 3].get_task_status(task_ids[n]).state, range(count)))
    elapsed = time.monotonic() - started
    assert states == ["succeeded"] * count
    assert elapsed >= (count - 1) / rps - 0.02  # a lower bound only: a busy machine may take longer
    assert emu.stats()["requests_by_endpoint"]["status"] == count


def test_requests_per_second_spaces_async_calls_too(emu: Any, make_conn: ConnFactory) -> None:
    rps, count = 10.0, 6
    conn_id = make_conn("revid_tts", requests_per_second=rps)
    task_ids = _ready_tasks(emu, "revid_tts", count)
    started = time.monotonic()
    assert asyncio.run(_astatuses(conn_id, task_ids, hooks=3)) == ["succeeded"] * count
    assert time.monotonic() - started >= (count - 1) / rps - 0.02


# ------------------------------------------------------------------------------------- Retry-After


def test_a_429_to_one_task_delays_the_next_request_of_another_on_the_same_connection(
    emu: Any, make_conn: ConnFactory
) -> None:
    emu.set_faults(retry_after="1")
    same, other = make_conn("camb_ai"), make_conn("camb_ai")
    task_id = _ready_tasks(emu, "camb_ai", 1)[0]
    emu.inject("429", count=1, endpoint="status")
    limited = TtsHook(same, request_retry={"max_retries": 0})  # one task: its 429 ends its try
    with pytest.raises(TtsRateLimitError):
        limited.get_task_status(task_id)
    neighbour = TtsHook(same)  # another task in the same process
    assert neighbour.get_task_status(task_id).state == "succeeded"
    stranger = TtsHook(other)  # and one on another connection
    assert stranger.get_task_status(task_id).state == "succeeded"
    (refused_at, refused), (neighbour_at, _), _ = _status_times(emu)
    assert refused == 429
    assert neighbour.pacer is limited.pacer is not stranger.pacer
    assert (neighbour.pacer.pauses, neighbour.pacer.waits) == (1, 1)  # it waited for the pause
    assert (stranger.pacer.pauses, stranger.pacer.waits) == (0, 0)  # the other connection knows no pause
    assert neighbour_at - refused_at >= 0.95  # the neighbour's request reached the server after the pause


def test_a_429_to_a_trigger_slows_a_worker_thread_on_the_same_connection(emu: Any, make_conn: ConnFactory) -> None:
    emu.set_faults(retry_after="1")
    conn_id = make_conn("revid_tts")
    task_id = _ready_tasks(emu, "revid_tts", 1)[0]
    emu.inject("429", count=1, endpoint="status")

    async def trigger_poll() -> TtsHook:
        hook = TtsHook(conn_id, request_retry={"max_retries": 0})
        try:
            with pytest.raises(TtsRateLimitError):
                await hook.aget_task_status(task_id)
        finally:
            await hook.aclose()
        return hook

    trigger_hook = asyncio.run(trigger_poll())
    worker_hook = TtsHook(conn_id)
    assert worker_hook.get_task_status(task_id).state == "succeeded"
    (refused_at, refused), (answered_at, answered) = _status_times(emu)
    assert (refused, answered) == (429, 200)
    assert worker_hook.pacer is trigger_hook.pacer
    assert worker_hook.pacer.waits == 1
    assert answered_at - refused_at >= 0.95


def test_the_pause_is_capped_by_the_connections_longest_retry_wait(emu: Any, make_conn: ConnFactory) -> None:
    emu.set_faults(retry_after="30")
    conn_id = make_conn("camb_ai", retry_max_backoff=0.2)
    task_id = _ready_tasks(emu, "camb_ai", 1)[0]
    emu.inject("429", count=1, endpoint="status")
    hook = TtsHook(conn_id)
    assert hook.get_task_status(task_id).state == "succeeded"
    assert hook.pacer.pauses == 1
    assert hook.pacer.delay() == 0  # 0.2 s, not 30: the retry already waited it out


def test_a_stray_429_among_answered_requests_delays_only_its_own_request(emu: Any, make_conn: ConnFactory) -> None:
    """A batch's connection after 60 answers: one 429 (Retry-After 1 s) is retried after its second,
    while the other requests go on; pausing all of them for every stray 429 serialised the batch."""
    emu.set_faults(retry_after="1")
    conn_id = make_conn("camb_ai", retry_max_backoff=2)
    ids = _ready_tasks(emu, "camb_ai", 8)
    hook = TtsHook(conn_id)
    for _ in range(60):
        hook.get_task_status(ids[0])
    emu.inject("429", count=1, endpoint="status")
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        ends = list(pool.map(lambda t: (TtsHook(conn_id).get_task_status(t), time.monotonic())[1], ids))
    assert (hook.pacer.pauses, hook.pacer.waits) == (0, 0)  # no request waited for another's 429
    assert max(ends) - started >= 0.95  # the refused one waited its Retry-After


def test_sustained_429s_still_pause_every_request(emu: Any, make_conn: ConnFactory) -> None:
    """When 429s are a real share of the answers, each one holds the whole connection again."""
    emu.set_faults(retry_after="0.2")
    conn_id = make_conn("camb_ai")
    task_id = _ready_tasks(emu, "camb_ai", 1)[0]
    hook = TtsHook(conn_id, request_retry={"max_retries": 0})
    for _ in range(60):
        hook.get_task_status(task_id)
    assert hook.pacer.limited_share < Pacer.SUSTAINED
    emu.inject("429", count=8, endpoint="status")
    for _ in range(8):
        with pytest.raises(TtsRateLimitError):
            hook.get_task_status(task_id)
    assert hook.pacer.limited_share >= Pacer.SUSTAINED
    assert hook.pacer.pauses >= 1


# ----------------------------------------------------------------------------------- no limit set


def test_no_limit_configured_means_no_waiting(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("camb_ai")
    task_ids = _ready_tasks(emu, "camb_ai", 8)
    hooks = [TtsHook(conn_id) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        states = list(pool.map(lambda n: hooks[n % 4].get_task_status(task_ids[n]).state, range(8)))
    assert asyncio.run(_astatuses(conn_id, task_ids)) == states == ["succeeded"] * 8
    pacer = hooks[0].pacer
    assert (pacer.requests_per_second, pacer.max_in_flight) == (None, None)
    assert (pacer.waits, pacer.pauses, pacer.busy) == (0, 0, False)
    assert emu.stats()["requests_by_endpoint"]["status"] == 16


def test_storage_downloads_are_not_paced(emu: Any, make_conn: ConnFactory) -> None:
    """A RevidAPI audio URL is a storage host: a pause of the vendor's API does not hold its download."""
    conn_id = make_conn("revid_tts")
    hook = TtsHook(conn_id)
    status = hook.get_task_status(_ready_tasks(emu, "revid_tts", 1)[0])
    hook.pacer.pause(60)  # as after a 429 (a broken test waits a minute, then fails)
    with hook.open_audio(status) as audio:
        assert b"".join(audio.iter_chunks())
    assert hook.pacer.waits == 0
    assert emu.stats()["storage_requests"] == 1


# ---------------------------------------------------------------------------------- the settings


class _Conn:
    conn_id = "limits"
    conn_type = "camb_ai"
    host = port = schema = None

    def __init__(self, extra: dict[str, Any], password: str = "sk-x") -> None:
        self.extra = "x"
        self.extra_dejson = extra
        self.password = password


def _settings(password: str = "sk-x", **extra: Any) -> Any:
    return parse_connection(
        _Conn(extra, password), default_api_base_url="https://client.camb.ai/apis", default_status_base_url=None
    )


def test_limits_are_read_from_the_extras() -> None:
    settings = _settings(requests_per_second="2.5", max_in_flight=4)
    assert (settings.requests_per_second, settings.max_in_flight) == (2.5, 4)
    assert isinstance(settings.max_in_flight, int)
    assert (_settings().requests_per_second, _settings().max_in_flight) == (None, None)
    assert _settings(requests_per_second="", max_in_flight=None).max_in_flight is None  # empty form fields


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"requests_per_second": 0}, "'requests_per_second' must be a number"),
        ({"requests_per_second": -1}, "'requests_per_second' must be a number"),
        ({"requests_per_second": "fast"}, "'requests_per_second' must be a number"),
        ({"requests_per_second": True}, "'requests_per_second' must be a number"),
        ({"requests_per_second": float("nan")}, "'requests_per_second' must be a number"),
        ({"max_in_flight": 0}, "'max_in_flight' must be an integer"),
        ({"max_in_flight": 1.5}, "'max_in_flight' must be an integer"),
        ({"max_in_flight": "many"}, "'max_in_flight' must be an integer"),
        ({"max_in_flight": 10**6}, "'max_in_flight' must be an integer"),
    ],
)
def test_bad_limits_are_refused_naming_the_extra(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(TtsConfigError, match=message):
        _settings(**extra)


def test_a_bad_limit_fails_the_hook_before_any_request(emu: Any, make_conn: ConnFactory) -> None:
    hook = TtsHook(make_conn("camb_ai", max_in_flight=0))
    with pytest.raises(TtsConfigError, match="'max_in_flight'"):
        hook.get_task_status(_ready_tasks(emu, "camb_ai", 1)[0])
    assert emu.stats()["requests_total"] == 0


def test_the_registry_keeps_one_pacer_per_connection_and_applies_edited_limits() -> None:
    registry = PacerRegistry()
    one = registry.for_connection(_settings(max_in_flight=2))
    assert registry.for_connection(_settings(max_in_flight=3)) is one
    assert one.max_in_flight == 3  # the connection was edited: the next hook brings the new limit
    assert registry.for_connection(_settings(password="sk-y")) is not one  # another key: another account


# ------------------------------------------------------------------------------- the pacer alone


def test_a_failing_request_gives_its_place_back() -> None:
    pacer = Pacer(max_in_flight=1)
    with pytest.raises(RuntimeError), pacer.turn():
        raise RuntimeError("the request failed")
    assert not pacer.busy
    with pacer.turn():
        assert pacer.busy
    assert pacer.waits == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_a_cancelled_holder_its_place() -> None:
    pacer = Pacer(max_in_flight=1)
    entered = asyncio.Event()

    async def hold() -> None:
        async with pacer.aturn():
            entered.set()
            await asyncio.sleep(3600)

    holder = asyncio.create_task(hold())
    await entered.wait()
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    assert not waiter.done()  # queued behind the holder
    waiter.cancel()
    holder.cancel()
    await asyncio.gather(holder, waiter, return_exceptions=True)
    assert not pacer.busy
    async with pacer.aturn():
        pass


async def test_a_place_granted_to_a_waiter_cancelled_meanwhile_is_passed_on() -> None:
    pacer = Pacer(max_in_flight=1)
    with pacer.turn():  # held by a thread's request
        waiter = asyncio.create_task(_enter(pacer))
        await asyncio.sleep(0.01)
    waiter.cancel()  # the place was granted to it and not yet taken up
    await asyncio.gather(waiter, return_exceptions=True)
    assert not pacer.busy
    async with pacer.aturn():
        pass


async def _enter(pacer: Pacer) -> None:
    async with pacer.aturn():
        await asyncio.sleep(3600)


async def test_raising_max_in_flight_lets_waiting_requests_go() -> None:
    pacer = Pacer(max_in_flight=1)
    order: list[int] = []

    async def request(n: int) -> None:
        async with pacer.aturn():
            order.append(n)
            await asyncio.sleep(0.01)

    with pacer.turn():
        waiters = [asyncio.create_task(request(n)) for n in range(3)]
        await asyncio.sleep(0.01)
        assert order == []
        pacer.configure(None, 4)
        await asyncio.gather(*waiters)
    assert order == [0, 1, 2]  # first come, first served
    assert pacer.waits == 3


def test_a_turn_tells_its_caller_once_before_a_long_wait_and_never_before_a_short_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``on_wait`` is where a paying caller lets go of its marker (AttemptGuard): once per long wait for
    a place or a start, never for a turn that starts at once or within ``LONG_WAIT``."""
    monkeypatch.setattr(Pacer, "LONG_WAIT", 0.2)
    calls: list[str] = []
    pacer = Pacer(max_in_flight=1)
    with pacer.turn(lambda: calls.append("free")):
        pass
    pacer.pause(0.05)
    with pacer.turn(lambda: calls.append("short pause")):
        pass
    pacer.pause(0.5)
    with pacer.turn(lambda: calls.append("long pause")):
        pass
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pacer.turn():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    threading.Timer(0.6, release.set).start()
    with pacer.turn(lambda: calls.append("no place")):
        pass
    holder.join(30)
    assert calls == ["long pause", "no place"]
