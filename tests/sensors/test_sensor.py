"""TtsTaskSensor: the three modes, the check before deferring, and every event shape."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_tts.compat import AirflowFailException, AirflowSensorTimeout, TaskDeferred
from airflow_provider_tts.exceptions import (
    TtsAuthError,
    TtsConfigError,
    TtsError,
    TtsPermanentTaskFailedError,
    TtsServerError,
    TtsTaskFailedError,
    error_event,
)
from airflow_provider_tts.sensors.tts import TtsTaskSensor
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import PAIRS, ConnFactory


def _sensor(conn_id: str, task_id: str, kind: str = "tts", **kw: Any) -> TtsTaskSensor:
    return TtsTaskSensor(task_id="wait", tts_conn_id=conn_id, tts_task_id=task_id, kind=kind, poke_interval=0.05, **kw)


@pytest.mark.parametrize(("api", "kind"), PAIRS)
def test_poke_mode_returns_the_status(emu: Any, make_conn: ConnFactory, api: str, kind: str) -> None:
    task_id = emu.create_task(api, kind, delay=0.3)
    result = _sensor(make_conn(api), task_id, kind, deferrable=False).execute({})
    assert result["state"] == "succeeded"
    assert result["tts_task_id"] == task_id
    assert result["api"] == api


def test_deferrable_checks_once_before_deferring(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("camb_ai")
    done = emu.create_task("camb_ai", "tts", delay=0)
    assert _sensor(conn_id, done, deferrable=True).execute({})["state"] == "succeeded"
    assert emu.stats()["polls_by_task"][done] == 1


def test_deferrable_defers_with_sensor_timeout_and_trigger_deadline(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("revid_tts")
    pending = emu.create_task("revid_tts", "srt-to-speech", delay=60)
    sensor = _sensor(conn_id, pending, "srt-to-speech", deferrable=True, timeout=120, request_retry={"max_retries": 3})
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=120)
    trigger = deferred.trigger
    assert isinstance(trigger, TtsTaskTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["tts_conn_id"] == conn_id
    assert kwargs["tts_task_id"] == pending
    assert kwargs["kind"] == "srt-to-speech"
    assert kwargs["retry"] == {"max_retries": 3}
    assert before + 119 <= kwargs["deadline"] <= time.time() + 120
    assert kwargs["deadline"] - kwargs["started_at"] == pytest.approx(120)


def test_deferrable_default_follows_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import airflow_provider_tts.sensors.tts as module

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    from airflow_provider_tts.compat import conf

    assert conf.getboolean("operators", "default_deferrable")
    reloaded = importlib.reload(module)
    try:
        assert reloaded.TtsTaskSensor(task_id="w", tts_task_id="x").deferrable is True
    finally:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
        importlib.reload(module)


@pytest.mark.parametrize(
    ("outcome", "reason", "error", "permanent"),
    [
        ("payment_required", None, TtsPermanentTaskFailedError, True),
        ("timeout", None, TtsPermanentTaskFailedError, True),
        ("error", "HARMFUL_CONTENT_DETECTED", TtsPermanentTaskFailedError, True),
        ("error", "INTERNAL_ERROR", TtsTaskFailedError, False),
    ],
)
@pytest.mark.parametrize("deferrable", [False, True])
def test_failures_in_poke_and_deferrable_modes(
    emu: Any,
    make_conn: ConnFactory,
    outcome: str,
    reason: str | None,
    error: type,
    permanent: bool,
    deferrable: bool,
) -> None:
    task_id = emu.create_task("camb_ai", "tts", outcome=outcome, reason=reason, delay=0)
    with pytest.raises(error) as info:
        _sensor(make_conn("camb_ai"), task_id, deferrable=deferrable).execute({})
    assert isinstance(info.value, AirflowFailException) is permanent
    assert info.value.vendor_status in str(info.value)
    if reason:
        assert reason in str(info.value)


def test_poke_mode_forgives_transient_errors_up_to_the_limit(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    emu.inject("503", count=2, endpoint="status")
    result = _sensor(make_conn("camb_ai", max_retries=0), task_id, deferrable=False).execute({})
    assert result["state"] == "succeeded"
    emu.inject("503", count=10, endpoint="status")
    with pytest.raises(TtsServerError):
        _sensor(make_conn("camb_ai", max_retries=0), task_id, deferrable=False, max_consecutive_errors=1).execute({})


def test_poke_mode_bad_key_fails_without_retries(emu: Any, make_conn: ConnFactory) -> None:
    with pytest.raises(TtsAuthError) as info:
        _sensor(make_conn("camb_ai", key="nope"), "abc", deferrable=False).execute({})
    assert isinstance(info.value, AirflowFailException)


def test_poke_mode_timeout(emu: Any, make_conn: ConnFactory) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=60)
    with pytest.raises(AirflowSensorTimeout):
        _sensor(make_conn("camb_ai"), task_id, deferrable=False, timeout=0.3).execute({})


@pytest.mark.parametrize("rendered", ["", "   ", None])
def test_empty_rendered_task_id_is_a_clear_error(rendered: Any) -> None:
    with pytest.raises(TtsConfigError, match="tts_task_id"):
        _sensor("c", rendered).execute({})


# ------------------------------------------------------------------------------ execute_complete

SUCCEEDED = {
    "api": "camb_ai",
    "kind": "tts",
    "tts_task_id": "t1",
    "state": "succeeded",
    "vendor_status": "SUCCESS",
    "run_id": 5,
}
FAILED = {
    "api": "revid_tts",
    "kind": "tts",
    "tts_task_id": "t1",
    "state": "failed",
    "vendor_status": "failed",
    "message": "engine crashed",
    "retryable": True,
    "failure": "error",
}
FAILED_PERMANENT = {**FAILED, "vendor_status": "not_found", "retryable": False, "failure": "not_found"}


def test_execute_complete_success_returns_the_status() -> None:
    result = _sensor("c", "t1").execute_complete({}, {"status": "success", "task_status": SUCCEEDED})
    assert result["run_id"] == 5
    assert result["state"] == "succeeded"


@pytest.mark.parametrize(
    ("event", "error", "fragment"),
    [
        (None, TtsError, "no usable event"),
        ({}, TtsError, "no usable event"),
        ({"status": "maybe"}, TtsError, "unknown event status 'maybe'"),
        ({"status": "success"}, TtsError, "malformed status"),
        ({"status": "success", "task_status": {"state": "succeeded"}}, TtsError, "malformed status"),
        ({"status": "success", "task_status": FAILED}, TtsError, "disagrees"),
        ({"status": "failed", "task_status": SUCCEEDED}, TtsError, "disagrees"),
        ({"status": "failed", "task_status": FAILED}, TtsTaskFailedError, "engine crashed"),
        ({"status": "failed", "task_status": FAILED_PERMANENT}, TtsPermanentTaskFailedError, "not_found"),
        ({"status": "timeout", "message": "still PENDING after 60 s"}, AirflowSensorTimeout, "still PENDING"),
        ({**error_event(TtsAuthError("HTTP 401: bad key", http_status=401))}, TtsAuthError, "bad key"),
        ({**error_event(TtsServerError("HTTP 503", http_status=503))}, TtsServerError, "503"),
        ({**error_event(RuntimeError("bug"))}, TtsError, "unexpected RuntimeError"),
    ],
)
def test_execute_complete_validates_every_event(event: Any, error: type, fragment: str) -> None:
    with pytest.raises(error) as info:
        _sensor("c", "t1").execute_complete({}, event)
    assert fragment in str(info.value)


def test_error_events_keep_retry_semantics() -> None:
    with pytest.raises(AirflowFailException):
        _sensor("c", "t1").execute_complete({}, error_event(TtsAuthError("x", http_status=401)))
    with pytest.raises(TtsServerError) as info:
        _sensor("c", "t1").execute_complete({}, error_event(TtsServerError("x", http_status=502)))
    assert not isinstance(info.value, AirflowFailException)


def test_the_policy_schedule_reaches_airflow_through_poke_interval(emu: Any, make_conn: ConnFactory) -> None:
    # Airflow reads the public poke_interval after every poke (poke and reschedule mode): the
    # policy's slow-down goes in through it, not through an override of a private method.
    conn_id = make_conn("camb_ai")
    task_id = emu.create_task("camb_ai", "tts", delay=600)  # still pending for the whole test
    slowed = _sensor(conn_id, task_id, slow_poll_interval=0.2, slow_after=0)
    assert slowed.poke({}).is_done is False  # type: ignore[arg-type]
    assert slowed.poke_interval == 0.2
    early = _sensor(conn_id, task_id, slow_poll_interval=0.2, slow_after=3600)
    assert early.poke({}).is_done is False  # type: ignore[arg-type]
    assert early.poke_interval == 0.05
    backoff = _sensor(conn_id, task_id, slow_poll_interval=0.2, slow_after=0, exponential_backoff=True)
    assert backoff.poke({}).is_done is False  # type: ignore[arg-type]
    assert backoff.poke_interval == 0.05  # Airflow's own backoff starts from the first interval
