"""TtsTaskTrigger driven directly (as the triggerer does) against the emulator over loopback."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any

import pytest

from airflow_provider_tts.transport import SESSION_POOL
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from airflow_provider_tts.waiting import WaitPolicy
from tests.conftest import PAIRS, TEST_KEY, ConnFactory

FAST = {"poll_interval": 0.05, "slow_poll_interval": 0.1, "slow_after": 1.0}


def import_string(classpath: str) -> Any:
    """What the triggerer does with a row's classpath (``airflow``'s ``import_string``, on every 3.x)."""
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)


async def _events(trigger: TtsTaskTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def _run(trigger: TtsTaskTrigger) -> dict[str, Any]:
    events = asyncio.run(_events(trigger))
    assert len(events) == 1, events  # exactly one event, then the generator ends
    return events[0]


def test_serialize_is_plain_values_without_secrets() -> None:
    trigger = TtsTaskTrigger(
        tts_conn_id="camb_ai_default",
        tts_task_id="abc",
        kind="text-to-sound",
        deadline=2_000_000_000.5,
        started_at=1_999_999_000.0,
        request_retry={"max_retries": 2},
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_tts.triggers.tts.TtsTaskTrigger"
    assert kwargs == {
        "tts_conn_id": "camb_ai_default",
        "tts_task_id": "abc",
        "kind": "text-to-sound",
        "deadline": 2_000_000_000.5,
        "started_at": 1_999_999_000.0,
        "poll_interval": 5.0,
        "slow_poll_interval": 10.0,
        "slow_after": 60.0,
        "not_found_grace": 30.0,
        "max_consecutive_errors": 5,
        "retry": {"max_retries": 2},
    }
    # Re-creating from the row gives the same trigger: the deadline is absolute, never reset.
    assert TtsTaskTrigger(**kwargs).serialize() == (path, kwargs)


#: A trigger row as release 0.1.0 stored it (``Trigger.encrypted_kwargs`` without a Fernet key is
#: this JSON). Rows outlive upgrades: the triggerer re-creates them with the new code.
ROW_FROM_0_1_0 = (
    "airflow_provider_tts.triggers.tts.TtsTaskTrigger",
    '{"tts_conn_id": "revid_tts_default", "tts_task_id": "abc", "kind": "srt-to-speech", '
    '"deadline": 2000000000.5, "started_at": 1999999000.0, "poll_interval": 5.0, "slow_poll_interval": 10.0, '
    '"slow_after": 60.0, "not_found_grace": 30.0, "max_consecutive_errors": 5, "retry": null}',
)


def test_classpath_is_a_pinned_literal_that_imports_to_the_class() -> None:
    from airflow_provider_tts.triggers.tts import TRIGGER_CLASSPATH

    assert TRIGGER_CLASSPATH == "airflow_provider_tts.triggers.tts.TtsTaskTrigger"
    assert import_string(TRIGGER_CLASSPATH) is TtsTaskTrigger
    assert TtsTaskTrigger(tts_conn_id="c", tts_task_id="abc").serialize()[0] == TRIGGER_CLASSPATH

    class Mine(TtsTaskTrigger):
        pass

    # A subclass is stored under its own path: the pinned one would re-create the parent.
    assert Mine(tts_conn_id="c", tts_task_id="abc").serialize()[0].endswith(".Mine")


def test_a_row_stored_by_the_previous_release_still_deserializes() -> None:
    from airflow.models.trigger import Trigger

    classpath, stored = ROW_FROM_0_1_0
    # Written the way this minor writes a trigger row (each minor encodes kwargs its own way), then
    # read back as the triggerer reads it.
    row = Trigger(classpath=classpath, kwargs=json.loads(stored))
    trigger = import_string(row.classpath)(**row.kwargs)  # what the triggerer does with a row
    assert isinstance(trigger, TtsTaskTrigger)
    assert (trigger.tts_task_id, trigger.kind, trigger.deadline) == ("abc", "srt-to-speech", 2_000_000_000.5)
    assert trigger.policy == WaitPolicy()
    assert trigger.serialize() == (classpath, row.kwargs)  # and writes the same row again


def test_started_at_defaults_to_now_and_then_survives_recreation() -> None:
    trigger = TtsTaskTrigger(tts_conn_id="c", tts_task_id="abc")
    assert abs(trigger.started_at - time.time()) < 5
    again = TtsTaskTrigger(**trigger.serialize()[1])
    assert again.started_at == trigger.started_at


def test_poll_schedule_follows_vendor_guidance() -> None:
    policy = WaitPolicy()
    assert [policy.interval(t) for t in (0, 30, 59.9, 60, 600)] == [5, 5, 5, 10, 10]


@pytest.mark.parametrize(
    "bad",
    [
        {"poll_interval": 0},
        {"poll_interval": -1},
        {"slow_after": float("nan")},
        {"max_consecutive_errors": -1},
        {"not_found_grace": "soon"},
    ],
)
def test_bad_schedule_is_rejected(bad: dict[str, Any]) -> None:
    from airflow_provider_tts.exceptions import TtsConfigError

    with pytest.raises(TtsConfigError):
        TtsTaskTrigger(tts_conn_id="c", tts_task_id="abc", **bad)


@pytest.mark.parametrize(("api", "kind"), PAIRS)
def test_success_event_carries_the_status(emu: Any, make_conn: ConnFactory, api: str, kind: str) -> None:
    task_id = emu.create_task(api, kind, delay=0.3)
    event = _run(TtsTaskTrigger(tts_conn_id=make_conn(api), tts_task_id=task_id, kind=kind, **FAST))
    assert event["status"] == "success"
    assert event["tts_task_id"] == task_id
    assert event["task_status"]["state"] == "succeeded"
    assert event["task_status"]["kind"] == kind
    assert TEST_KEY not in repr(event)


@pytest.mark.parametrize(
    ("api", "outcome", "reason", "retryable"),
    [
        ("camb_ai", "payment_required", None, False),
        ("camb_ai", "timeout", None, False),
        ("camb_ai", "error", "HARMFUL_CONTENT_DETECTED", False),
        ("camb_ai", "error", "INTERNAL_ERROR", True),
        ("revid_tts", "failed", "engine crashed", True),
    ],
)
def test_failed_event(
    emu: Any, make_conn: ConnFactory, api: str, outcome: str, reason: str | None, retryable: bool
) -> None:
    task_id = emu.create_task(api, "tts", outcome=outcome, reason=reason, delay=0.1)
    event = _run(TtsTaskTrigger(tts_conn_id=make_conn(api), tts_task_id=task_id, **FAST))
    assert event["status"] == "failed"
    assert event["task_status"]["retryable"] is retryable
    if reason:
        assert reason in event["task_status"]["message"]


def test_deadline_gives_timeout_with_last_status(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=60)
    started = time.monotonic()
    event = _run(
        TtsTaskTrigger(tts_conn_id=make_conn("camb_ai"), tts_task_id=task_id, deadline=time.time() + 0.5, **FAST)
    )
    assert event["status"] == "timeout"
    assert event["task_status"]["vendor_status"] == "PENDING"
    assert 0.4 < time.monotonic() - started < 3


def test_a_poll_hanging_past_the_deadline_is_cut_a_second_after_it(emu: Any, make_conn: ConnFactory) -> None:
    """One timer for the whole wait still cuts a poll in flight, where a per-poll budget did."""
    task_id = emu.create_task("camb_ai", "tts", delay=60)
    emu.set_faults(slow_seconds=30.0)
    emu.inject("slow", count=5, endpoint="status")
    conn_id = make_conn("camb_ai", read_timeout=60)
    started = time.monotonic()
    event = _run(TtsTaskTrigger(tts_conn_id=conn_id, tts_task_id=task_id, deadline=time.time() + 0.3, **FAST))
    assert event["status"] == "timeout"
    assert event["task_status"] is None  # the only poll never answered
    assert time.monotonic() - started < 20  # cut at the deadline + 1 s, long before the 30 s answer


def test_a_past_deadline_still_polls_once(emu: Any, make_conn: ConnFactory) -> None:
    """A trigger re-created after its deadline reports what the task is now, not a blind timeout."""
    done = emu.create_task("camb_ai", "tts", delay=0)
    event = _run(TtsTaskTrigger(tts_conn_id=make_conn("camb_ai"), tts_task_id=done, deadline=time.time() - 10))
    assert event["status"] == "success"
    pending = emu.create_task("camb_ai", "tts", delay=60)
    event = _run(TtsTaskTrigger(tts_conn_id=make_conn("camb_ai"), tts_task_id=pending, deadline=time.time() - 10))
    assert event["status"] == "timeout"
    assert emu.stats()["polls_by_task"][pending] == 1


def test_not_found_within_grace_is_waited_out(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("revid_tts", "tts", outcome="late_visible", not_found_for=0.4, delay=0.2)
    event = _run(TtsTaskTrigger(tts_conn_id=make_conn("revid_tts"), tts_task_id=task_id, not_found_grace=5, **FAST))
    assert event["status"] == "success"


def test_not_found_after_grace_fails(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("revid_tts", "tts", outcome="not_found")
    started = time.monotonic()
    event = _run(TtsTaskTrigger(tts_conn_id=make_conn("revid_tts"), tts_task_id=task_id, not_found_grace=0.3, **FAST))
    assert event["status"] == "failed"
    assert event["task_status"]["failure"] == "not_found"
    assert 0.3 <= time.monotonic() - started < 3


def test_bad_key_is_an_immediate_error(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=60)
    event = _run(TtsTaskTrigger(tts_conn_id=make_conn("camb_ai", key="sk-wrong"), tts_task_id=task_id, **FAST))
    assert event["status"] == "error"
    assert event["error_type"] == "TtsAuthError"
    assert event["retryable"] is False
    assert event["http_status"] == 401
    assert emu.stats()["requests_total"] == 1


def test_missing_connection_is_an_error_event_not_a_crash(emu: Any) -> None:
    event = _run(TtsTaskTrigger(tts_conn_id="no_such_conn", tts_task_id="abc", **FAST))
    assert event["status"] == "error"
    assert "no_such_conn" in event["message"]


def test_consecutive_failures_beyond_limit_end_in_error(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=60)
    emu.inject("503", count=100, endpoint="status")
    event = _run(
        TtsTaskTrigger(
            tts_conn_id=make_conn("camb_ai", max_retries=1), tts_task_id=task_id, max_consecutive_errors=2, **FAST
        )
    )
    assert event["status"] == "error"
    assert event["error_type"] == "TtsServerError"
    assert "3 polls in a row failed" in event["message"]
    assert emu.stats()["requests_by_endpoint"]["status"] == 6  # 3 polls x (1 try + 1 retry), no hot loop


def test_transient_failures_below_the_limit_are_forgiven(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("revid_tts", "srt-to-speech", delay=0.2)
    emu.inject("drop", count=2, endpoint="status")
    emu.inject("malformed_json", count=2, endpoint="status")
    event = _run(
        TtsTaskTrigger(
            tts_conn_id=make_conn("revid_tts", max_retries=0),
            tts_task_id=task_id,
            kind="srt-to-speech",
            max_consecutive_errors=5,
            **FAST,
        )
    )
    assert event["status"] == "success"


def test_polls_reuse_one_connection(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0.5)
    _run(TtsTaskTrigger(tts_conn_id=make_conn("camb_ai"), tts_task_id=task_id, **FAST))
    assert emu.stats()["polls_by_task"][task_id] >= 5
    assert emu.stats()["connections"] == 1


def test_cancellation_closes_the_session(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=60)
    trigger = TtsTaskTrigger(tts_conn_id=make_conn("camb_ai"), tts_task_id=task_id, **FAST)

    async def cancel_midway() -> None:
        task = asyncio.ensure_future(_events(trigger))
        await asyncio.sleep(0.3)
        assert SESSION_POOL._entries, "the trigger holds a pooled session while it waits"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert SESSION_POOL._entries == {}

    asyncio.run(cancel_midway())


def test_many_triggers_share_a_bounded_pool(emu: Any, make_conn: ConnFactory) -> None:
    # A generous read timeout: the claim is about pooling. On a loaded machine the in-process
    # emulator can take over the default 5 s to answer 200 waits, and each read timeout rightly
    # discards its connection, which would count as pool growth here.
    conn_id = make_conn("revid_tts", read_timeout=60)
    ids = [emu.create_task("revid_tts", "tts", delay=0.3) for _ in range(200)]

    async def all_of_them() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(_events(TtsTaskTrigger(tts_conn_id=conn_id, tts_task_id=i, **FAST)) for i in ids))

    results = asyncio.run(all_of_them())
    assert all(r[0]["status"] == "success" for r in results)
    assert emu.stats()["connections"] <= 64
