"""The trigger at its edges: on_kill, timedelta settings, and a not-found that names what was asked."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_tts.exceptions import TtsPermanentTaskFailedError
from airflow_provider_tts.triggers.tts import TtsTaskTrigger, status_from_event
from airflow_provider_tts.waiting import WaitPolicy
from tests.conftest import ConnFactory

FAST = {"poll_interval": 0.05, "slow_poll_interval": 0.1, "slow_after": 1.0}
BILLED = "keeps running and may be billed"


async def _events(trigger: TtsTaskTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def test_on_kill_stops_polling_and_warns_once(
    emu: Any, make_conn: ConnFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=60)
    trigger = TtsTaskTrigger(tts_conn_id=make_conn("camb_ai"), tts_task_id=task_id, **FAST)

    async def kill_midway() -> tuple[list[dict[str, Any]], int, int]:
        waiting = asyncio.ensure_future(_events(trigger))
        while emu.stats()["polls_by_task"].get(task_id, 0) < 3:
            await asyncio.sleep(0.02)
        await trigger.on_kill()
        await trigger.on_kill()  # idempotent: Airflow may call it again
        events = await asyncio.wait_for(waiting, 5)
        polls_at_end = emu.stats()["polls_by_task"][task_id]
        await asyncio.sleep(0.3)  # six poll intervals: nothing more may arrive
        return events, polls_at_end, emu.stats()["polls_by_task"][task_id]

    events, polls_at_end, polls_later = asyncio.run(kill_midway())
    assert events == []  # no event for a task Airflow has already killed or cleared
    assert polls_later == polls_at_end
    # The trigger logs through Airflow's structlog, which writes to stdout here.
    warnings = [line for line in capsys.readouterr().out.splitlines() if BILLED in line]
    assert len(warnings) == 1, warnings
    assert task_id in warnings[0]
    assert "no cancel endpoint" in warnings[0]


def test_on_kill_on_a_copy_another_triggerer_adopted_is_harmless(
    emu: Any, make_conn: ConnFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recovering 3.3 triggerer may call on_kill() on a stale copy: the adopted copy waits on."""
    task_id = emu.create_task("revid_tts", "tts", delay=0.5)
    kwargs = TtsTaskTrigger(tts_conn_id=make_conn("revid_tts"), tts_task_id=task_id, **FAST).serialize()[1]
    stale, adopted = TtsTaskTrigger(**kwargs), TtsTaskTrigger(**kwargs)

    async def both() -> list[dict[str, Any]]:
        running = asyncio.ensure_future(_events(adopted))
        await stale.on_kill()  # never ran here: no request, no exception
        return await running

    events = asyncio.run(both())
    assert [e["status"] for e in events] == ["success"]
    assert capsys.readouterr().out.count(BILLED) == 1


def test_timedelta_settings_serialize_as_seconds() -> None:
    trigger = TtsTaskTrigger(
        tts_conn_id="c",
        tts_task_id="abc",
        deadline=2_000_000_000.0,
        started_at=1_999_999_000.0,
        poll_interval=timedelta(seconds=30),
        not_found_grace=timedelta(minutes=1),
    )
    kwargs = trigger.serialize()[1]
    assert (kwargs["poll_interval"], kwargs["not_found_grace"]) == (30.0, 60.0)
    assert TtsTaskTrigger(**kwargs).serialize()[1] == kwargs
    via_policy = TtsTaskTrigger(
        tts_conn_id="c",
        tts_task_id="abc",
        deadline=2_000_000_000.0,
        started_at=1_999_999_000.0,
        wait_policy=WaitPolicy(poll_interval=timedelta(seconds=30), not_found_grace=60),
    )
    assert via_policy.serialize()[1] == kwargs


def test_a_kind_mismatch_says_which_kind_and_endpoint_were_asked(emu: Any, make_conn: ConnFactory) -> None:
    """A Camb text-to-sound task waited for as ``tts`` (the default kind): the 404 says what to change."""
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=60)
    trigger = TtsTaskTrigger(tts_conn_id=make_conn("camb_ai"), tts_task_id=task_id, not_found_grace=0.2, **FAST)
    (event,) = asyncio.run(_events(trigger))
    assert event["status"] == "failed"
    message = event["task_status"]["message"]
    assert f"asked for a tts task at GET {emu.camb_base_url}/tts/{task_id}" in message
    assert f"a text-to-sound task is at GET /text-to-sound/{task_id} (kind='text-to-sound')" in message
    assert "still not found" in message
    assert "grace 0 s" in message
    with pytest.raises(TtsPermanentTaskFailedError) as info:
        status_from_event(event, task_id)
    assert "kind='text-to-sound'" in str(info.value)


def test_revid_not_found_names_the_endpoint_and_does_not_blame_the_kind(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("revid_tts", "tts", outcome="not_found")
    conn_id = make_conn("revid_tts")
    trigger = TtsTaskTrigger(tts_conn_id=conn_id, tts_task_id=task_id, not_found_grace=0.1, **FAST)
    (event,) = asyncio.run(_events(trigger))
    message = event["task_status"]["message"]
    assert f"asked for a tts task at GET {emu.revid_status_base_url}/get/{task_id}" in message
    assert "every kind's status there" in message
    assert repr(conn_id) in message
