"""The poll hot path: what a hook keeps from one status poll to the next, and the bounded JSON read.

A wait polls one task over and over; the hook keeps that task's request and the status parsed from
the last answer (``StatusPoll``), and the async transport reads a stated-length answer in one call.
These tests hold the correctness side of those shortcuts over real loopback sockets: the same answer
gives the same (frozen) status, a changed answer is parsed afresh, a failed answer is never kept, and
no answer can grow past the JSON limit, whether chunked or compressed.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from airflow_provider_tts.connection import ConnectionSettings, RetryPolicy
from airflow_provider_tts.exceptions import TtsProtocolError
from airflow_provider_tts.hooks import tts as hook_module
from airflow_provider_tts.hooks.tts import StatusPoll, TtsHook, TtsTaskStatus
from airflow_provider_tts.transport import AsyncTransport, Pacer
from airflow_provider_tts.transport.aio import PoolGate
from airflow_provider_tts.transport.rules import MAX_JSON_BODY
from airflow_provider_tts.vendors.base import ApiRequest, ApiResponse
from tests.conftest import ConnFactory


def _polls(conn_id: str, task_id: str, count: int, **hook_kw: Any) -> list[TtsTaskStatus | Exception]:
    """``count`` async polls of one task through one hook, as a trigger makes them."""

    async def go() -> list[TtsTaskStatus | Exception]:
        hook = TtsHook(tts_conn_id=conn_id, **hook_kw)
        out: list[TtsTaskStatus | Exception] = []
        try:
            for _ in range(count):
                try:
                    out.append(await hook.aget_task_status(task_id, "tts"))
                except Exception as exc:
                    out.append(exc)
        finally:
            await hook.aclose()
        return out

    return asyncio.run(go())


@pytest.mark.parametrize("api", ["camb_ai", "revid_tts"])
def test_an_unchanged_answer_gives_the_same_status_and_a_new_one_is_parsed(
    emu: Any, make_conn: ConnFactory, api: str
) -> None:
    task_id = emu.create_task(api, "tts", pending_polls=3, delay=0)
    first, second, third, done = _polls(make_conn(api), task_id, 4)
    assert isinstance(first, TtsTaskStatus)
    assert first.state == "pending"
    assert second is first  # the same bytes: not decoded or validated again
    assert third is first
    assert isinstance(done, TtsTaskStatus)
    assert done.state == "succeeded"
    assert done.fresh


def test_a_failed_answer_is_never_kept(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("camb_ai", "tts", pending_polls=100)
    emu.inject("html_200", 1, "status")  # an HTML page with HTTP 200: a protocol error, not a status
    failed, pending, again = _polls(make_conn("camb_ai"), task_id, 3, request_retry={"max_retries": 0})
    assert isinstance(failed, TtsProtocolError)
    assert isinstance(pending, TtsTaskStatus)
    assert pending.state == "pending"
    assert again is pending


def test_a_hook_keeps_a_bounded_number_of_polls(emu: Any, make_conn: ConnFactory) -> None:
    """A batch polls thousands of tasks through one hook: only the newest polls are kept."""
    hook = TtsHook(tts_conn_id=make_conn("camb_ai"))
    vendor = hook.vendor
    for i in range(StatusPoll.KEPT + 10):
        hook._status_poll(vendor, f"task-{i}", "tts")
    assert len(hook._status_polls) == StatusPoll.KEPT
    assert ("tts", f"task-{StatusPoll.KEPT + 9}") in hook._status_polls
    assert ("tts", "task-0") not in hook._status_polls


# ------------------------------------------------------------------------ bounded JSON answers


@pytest.fixture
def answers() -> Iterator[str]:
    """A loopback server with an answer too big in each way a body can arrive."""
    big = b'{"status": "PENDING", "pad": "' + b"x" * (MAX_JSON_BODY + 10) + b'"}'

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for start in range(0, len(big), 65536):
            await resp.write(big[start : start + 65536])
        await resp.write_eof()
        return resp

    async def compressed(request: web.Request) -> web.Response:
        # A small stated length that inflates past the limit: the length says nothing of the JSON.
        body = gzip.compress(big)
        assert len(body) < MAX_JSON_BODY
        return web.Response(body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})

    async def stated(request: web.Request) -> web.Response:
        return web.Response(body=big, content_type="application/json")

    async def small_gzip(request: web.Request) -> web.Response:
        body = gzip.compress(b'{"status": "PENDING"}')
        return web.Response(body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/compressed", compressed)
    app.router.add_get("/stated", stated)
    app.router.add_get("/small-gzip", small_gzip)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _read(base: str, path: str) -> ApiResponse:
    """One async call to ``base`` as the API origin, no retries, the raw answer back."""
    settings = ConnectionSettings(
        conn_id="bounded",
        conn_type="camb_ai",
        api_key=SecretStr("k"),
        api_base_url=base,
        status_base_url=base,
        read_timeout=30,
        retry=RetryPolicy(max_retries=0, backoff=0.0, max_backoff=0.0),
        allow_private_hosts=True,
    )

    async def go() -> ApiResponse:
        transport = AsyncTransport(settings, shared=False)
        try:
            return await transport.call(ApiRequest("GET", f"{base}{path}", what=f"answer {path}"), lambda r: r)
        finally:
            await transport.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("path", ["/chunked", "/compressed", "/stated"])
def test_no_answer_grows_past_the_json_limit(answers: str, path: str) -> None:
    with pytest.raises(TtsProtocolError, match=f"over {MAX_JSON_BODY} bytes"):
        _read(answers, path)


def test_a_small_compressed_answer_is_read_whole(answers: str) -> None:
    assert _read(answers, "/small-gzip").body == b'{"status": "PENDING"}'


# ------------------------------------------------------------------ per-wait and per-poll shortcuts


def test_hooks_sharing_a_connection_object_parse_it_once(
    emu: Any, make_conn: ConnFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waits that start together share one resolved connection: parsed (and masked) once, unless changed."""
    parsed: list[str] = []
    real = hook_module.parse_connection

    def counting(conn: Any, **kw: Any) -> ConnectionSettings:
        parsed.append(conn.conn_id)
        return real(conn, **kw)

    monkeypatch.setattr(hook_module, "parse_connection", counting)
    conn = TtsHook.get_connection(make_conn("camb_ai"))
    first, second = TtsHook(conn.conn_id)._vendor_for(conn), TtsHook(conn.conn_id)._vendor_for(conn)
    assert len(parsed) == 1
    assert second.settings is first.settings
    conn.host = emu.camb_base_url + "/other"  # changed in place: parsed afresh
    assert TtsHook(conn.conn_id)._vendor_for(conn).settings.api_base_url.endswith("/other")
    assert len(parsed) == 2
    with_retry = TtsHook(conn.conn_id, request_retry={"max_retries": 1})._vendor_for(conn)
    assert with_retry.settings.retry.max_retries == 1  # a hook's own overrides still apply
    assert len(parsed) == 2


def test_turn_now_takes_a_free_place_and_nothing_when_it_would_wait() -> None:
    pacer = Pacer(max_in_flight=1)
    assert pacer.turn_now()
    assert not pacer.turn_now()  # the only place is held: nothing taken
    pacer.release()
    assert not pacer.busy
    pacer.pause(30)
    assert not pacer.turn_now()
    assert pacer._in_flight == 0
    spaced = Pacer(requests_per_second=0.01)
    assert spaced.turn_now()
    spaced.release()
    assert not spaced.turn_now()  # the next start is 100 s away: queue through aturn()
    assert spaced._in_flight == 0


async def _enter(gate: PoolGate, log: list[int], n: int, hold: asyncio.Event) -> None:
    async with gate:
        log.append(n)
        await hold.wait()


async def test_the_pool_gate_serves_in_order_and_opens_its_lobby_only_behind_a_queued_round() -> None:
    gate, log, hold = PoolGate(2), [], asyncio.Event()
    assert gate.lobby() is None  # nothing queues: a poll goes straight on
    tasks = [asyncio.ensure_future(_enter(gate, log, n, hold)) for n in range(4)]
    await asyncio.sleep(0)
    assert log == [0, 1]  # two at once; 2 and 3 queue, a whole round
    waiting = gate.lobby()
    assert waiting is not None
    assert not waiting.done()
    hold.set()
    await asyncio.gather(*tasks)
    assert log == [0, 1, 2, 3]  # first come, first served
    assert waiting.done()  # let through as the queue drained
    assert gate.lobby() is None


async def test_lobby_waiters_are_let_through_even_if_those_before_them_never_arrive() -> None:
    """A poll let through that then waits in its pacer (a 429 pause) must not strand the lobby behind it."""
    gate, log, hold = PoolGate(1), [], asyncio.Event()
    tasks = [asyncio.ensure_future(_enter(gate, log, n, hold)) for n in range(2)]
    await asyncio.sleep(0)
    lobby = [gate.lobby() for _ in range(3)]
    assert all(w is not None and not w.done() for w in lobby)
    hold.set()
    await asyncio.gather(*tasks)  # none of the lobby ever comes to the gate
    assert all(w is not None and w.done() for w in lobby)  # a free slot lets every one through


async def test_a_cancelled_gate_waiter_leaves_and_a_slot_handed_to_one_is_passed_on() -> None:
    gate, log, hold = PoolGate(1), [], asyncio.Event()
    holder = asyncio.ensure_future(_enter(gate, log, 0, hold))
    cancelled = asyncio.ensure_future(_enter(gate, log, 1, hold))
    handed = asyncio.ensure_future(_enter(gate, log, 2, hold))
    last = asyncio.ensure_future(_enter(gate, log, 3, hold))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    hold.set()
    await asyncio.sleep(0)  # the holder leaves, handing its slot to 2 ...
    handed.cancel()  # ... cancelled before it ran: the slot goes on to 3
    await asyncio.gather(holder, last)
    assert log == [0, 3]
    assert gate._free == 1
    assert not gate._queue
