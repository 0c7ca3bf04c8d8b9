"""Waits that start together share one connection lookup (hooks/connections.py).

A triggerer that restarts with thousands of deferred tasks used to resolve the connection once per
wait through Airflow; these tests count the lookups Airflow is asked for, against the emulator.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from airflow_provider_tts.hooks.connections import RESOLVED_CONNECTIONS, ConnectionMemo
from airflow_provider_tts.hooks.tts import TtsHook
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import TEST_KEY, ConnFactory

FAST = {"poll_interval": 0.05, "slow_poll_interval": 0.1, "slow_after": 1.0}


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection lookup the hooks ask Airflow for (the real lookup still runs)."""
    seen: list[str] = []
    real = TtsHook._alookup_connection

    async def counted(self: TtsHook) -> Any:
        seen.append(self.tts_conn_id)
        return await real(self)

    monkeypatch.setattr(TtsHook, "_alookup_connection", counted)
    return seen


async def _run_all(triggers: list[TtsTaskTrigger]) -> list[dict[str, Any]]:
    async def one(trigger: TtsTaskTrigger) -> dict[str, Any]:
        (event,) = [e.payload async for e in trigger.run()]
        return event

    return list(await asyncio.gather(*(one(t) for t in triggers)))


def test_two_hundred_waits_started_together_look_the_connection_up_once(
    emu: Any, make_conn: ConnFactory, lookups: list[str]
) -> None:
    conn_id = make_conn("camb_ai")
    ids = [emu.create_task("camb_ai", "tts", delay=0.2) for _ in range(200)]
    events = asyncio.run(_run_all([TtsTaskTrigger(tts_conn_id=conn_id, tts_task_id=i, **FAST) for i in ids]))
    assert [e["status"] for e in events] == ["success"] * 200
    assert lookups == [conn_id]


def test_an_edited_connection_reaches_new_waits_after_the_reuse_window(
    emu: Any, make_conn: ConnFactory, lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotated key: waits started after the window use the new one (the emulator refuses the old)."""
    monkeypatch.setattr(RESOLVED_CONNECTIONS, "reuse_seconds", 0.3)
    conn_id = make_conn("camb_ai", key="sk-old-key")
    first = TtsTaskTrigger(tts_conn_id=conn_id, tts_task_id=emu.create_task("camb_ai", "tts", delay=0), **FAST)
    (event,) = asyncio.run(_run_all([first]))
    assert event["status"] == "error"  # the emulator only knows TEST_KEY
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "camb_ai", "host": emu.camb_base_url, "password": TEST_KEY,
                    "extra": {"retry_backoff": 0.01}}),
    )  # fmt: skip
    asyncio.run(asyncio.sleep(0.35))
    second = TtsTaskTrigger(tts_conn_id=conn_id, tts_task_id=emu.create_task("camb_ai", "tts", delay=0), **FAST)
    (event,) = asyncio.run(_run_all([second]))
    assert event["status"] == "success"
    assert lookups == [conn_id, conn_id]


def test_a_failed_lookup_is_not_remembered(
    emu: Any, make_conn: ConnFactory, lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = "camb_ai_defined_later"
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    (event,) = asyncio.run(_run_all([TtsTaskTrigger(tts_conn_id=missing, tts_task_id=task_id, **FAST)]))
    assert event["status"] == "error"
    assert missing in event["message"]
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{missing.upper()}",
        json.dumps({"conn_type": "camb_ai", "host": emu.camb_base_url, "password": TEST_KEY}),
    )
    (event,) = asyncio.run(_run_all([TtsTaskTrigger(tts_conn_id=missing, tts_task_id=task_id, **FAST)]))
    assert event["status"] == "success"
    assert lookups == [missing, missing]


def test_a_wait_cancelled_during_the_lookup_does_not_cancel_it_for_the_others() -> None:
    memo = ConnectionMemo()
    calls = 0

    async def slow_lookup() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "the connection"

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(memo.get("c", slow_lookup))
        second = asyncio.ensure_future(memo.get("c", slow_lookup))
        await asyncio.sleep(0.01)
        first.cancel()
        results = await asyncio.gather(first, second, return_exceptions=True)
        return [*results, await memo.get("c", slow_lookup)]

    first, second, later = asyncio.run(scenario())
    assert isinstance(first, asyncio.CancelledError)
    assert second == later == "the connection"
    assert calls == 1
