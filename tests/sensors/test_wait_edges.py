"""The sensor and the operators' wait settings at Airflow's edges.

``timedelta`` settings, one set of names, ``soft_fail`` meaning the same in all three modes, and
reschedule mode that gives up on a dead API and does not poll every few seconds. The emulator
answers over loopback; Airflow's task context is a small stand-in with what the sensor reads.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from datetime import timedelta
from typing import Any

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning

from airflow_provider_tts.compat import AirflowSkipException, TaskDeferred
from airflow_provider_tts.exceptions import TtsConfigError, TtsPermanentTaskFailedError, TtsServerError
from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator, TtsSubmitOperator
from airflow_provider_tts.sensors.tts import ERRORS_KEY, RESCHEDULE_FLOOR, TtsTaskSensor
from airflow_provider_tts.waiting import WaitPolicy
from tests.conftest import ConnFactory

try:  # the class each minor's BaseSensorOperator raises: the Task SDK's from 3.2, airflow.exceptions' before
    from airflow.sdk.exceptions import AirflowRescheduleException
except ImportError:
    from airflow.exceptions import AirflowRescheduleException


class FakeTi:
    def __init__(self, first_reschedule: dt.datetime | None = None, try_number: int = 1) -> None:
        self.first_reschedule, self.try_number = first_reschedule, try_number

    def get_first_reschedule_date(self, context: Any) -> dt.datetime | None:
        return self.first_reschedule


class FakeStore:
    """What Airflow 3.3's task_state_store offers: get and set of JSON values."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.writes += 1
        self.data[key] = value


def _context(store: FakeStore | None = None, **ti: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"ti": FakeTi(**ti)}
    if store is not None:
        context["task_state_store"] = store
    return context


# ------------------------------------------------------------------------- 9.8: timedelta settings


def test_timedelta_settings_parse_in_the_sensor_and_both_operators() -> None:
    sensor = TtsTaskSensor(
        task_id="s", tts_task_id="x", poke_interval=timedelta(seconds=30), timeout=timedelta(hours=1)
    )
    assert (sensor.poke_interval, sensor.policy.poll_interval, sensor.timeout) == (30.0, 30.0, 3600.0)
    submit = TtsSubmitOperator(
        task_id="submit", text="hi", wait=True, timeout=timedelta(minutes=5), poll_interval=timedelta(seconds=7)
    )
    assert (submit.timeout, submit.wait_policy.poll_interval) == (300.0, 7.0)
    store = TtsAudioToStorageOperator(
        task_id="store",
        tts_task_id="x",
        destination="file:///tmp/audio/",
        timeout=timedelta(minutes=2),
        poll_interval=timedelta(seconds=10),
        not_found_grace=timedelta(seconds=3),
    )
    assert (store.timeout, store.policy.poll_interval, store.policy.not_found_grace) == (120.0, 10.0, 3.0)


def test_the_deprecated_wait_timeout_still_works_with_a_timedelta() -> None:
    with pytest.warns(AirflowProviderDeprecationWarning, match="use timeout="):
        op = TtsSubmitOperator(task_id="submit", text="hi", wait_timeout=timedelta(minutes=10))
    assert op.timeout == op.wait_timeout == 600.0
    with pytest.warns(AirflowProviderDeprecationWarning), pytest.raises(TtsConfigError, match="not both"):
        TtsAudioToStorageOperator(
            task_id="store", tts_task_id="x", destination="file:///tmp/a/", timeout=1, wait_timeout=2
        )


# ---------------------------------------------------------------- issue 14: one set of names, declared once


def test_one_policy_object_configures_every_wait() -> None:
    policy = WaitPolicy(poll_interval=timedelta(seconds=20), not_found_grace=90, max_consecutive_errors=2)
    sensor = TtsTaskSensor(task_id="s", tts_task_id="x", wait_policy=policy)
    submit = TtsSubmitOperator(task_id="submit", text="hi", wait=True, wait_policy=policy)
    store = TtsAudioToStorageOperator(task_id="store", tts_task_id="x", destination="file:///a/", wait_policy=policy)
    assert sensor.policy == submit.wait_policy == store.policy == policy
    # A field passed by name overrides the same field of the policy object.
    assert TtsTaskSensor(task_id="s2", tts_task_id="x", wait_policy=policy, poll_interval=8).policy.poll_interval == 8


def test_the_sensor_also_takes_the_operators_name_for_the_interval() -> None:
    assert TtsTaskSensor(task_id="s", tts_task_id="x", poll_interval=timedelta(seconds=12)).poke_interval == 12.0
    assert TtsTaskSensor(task_id="s2", tts_task_id="x", poll_interval=12, poke_interval=12.0).poke_interval == 12.0
    with pytest.raises(TtsConfigError, match=r"poke_interval .* and poll_interval .* name the same setting"):
        TtsTaskSensor(task_id="s3", tts_task_id="x", poll_interval=12, poke_interval=30)


@pytest.mark.parametrize(
    "build",
    [
        lambda: TtsTaskSensor(task_id="s", tts_task_id="x", poke_interval="30"),
        lambda: TtsSubmitOperator(task_id="o", text="hi", timeout="1h"),
        lambda: TtsAudioToStorageOperator(task_id="o", tts_task_id="x", destination="file:///a/", poll_interval=[5]),
    ],
)
def test_a_malformed_setting_fails_at_parse_time_naming_what_arrived(build: Any) -> None:
    with pytest.raises(TtsConfigError, match="must be a number of seconds or a timedelta, got"):
        build()


# ------------------------------------------------------------ 9.9: soft_fail means the same in every mode

MODES = {"poke": {"mode": "poke"}, "reschedule": {"mode": "reschedule"}, "deferrable": {"deferrable": True}}


def _sensor(conn_id: str, task_id: str, how: str, **kw: Any) -> TtsTaskSensor:
    kw = {"deferrable": False, "poke_interval": 0.05, **MODES[how], **kw}
    return TtsTaskSensor(task_id="wait", tts_conn_id=conn_id, tts_task_id=task_id, **kw)


def _run(sensor: TtsTaskSensor, context: dict[str, Any], *, resume_with: dict[str, Any] | None = None) -> Any:
    """Execute; a deferral is resumed the way the task runner does, with the trigger's event."""
    try:
        return sensor.execute(context)
    except TaskDeferred:
        if resume_with is None:
            raise
        return sensor.resume_execution("execute_complete", {"event": resume_with}, context)


@pytest.mark.parametrize("how", list(MODES))
def test_soft_fail_skips_a_permanent_vendor_failure_in_every_mode(emu: Any, make_conn: ConnFactory, how: str) -> None:
    failed = emu.create_task("camb_ai", "tts", outcome="payment_required", delay=0)
    with pytest.raises(AirflowSkipException):
        _run(_sensor(make_conn("camb_ai"), failed, how, soft_fail=True), _context())
    with pytest.raises(TtsPermanentTaskFailedError):
        _run(_sensor(make_conn("camb_ai"), failed, how), _context())


@pytest.mark.parametrize("how", list(MODES))
def test_soft_fail_skips_a_timeout_in_every_mode(emu: Any, make_conn: ConnFactory, how: str) -> None:
    pending = emu.create_task("camb_ai", "tts", delay=600)
    sensor = _sensor(make_conn("camb_ai"), pending, how, soft_fail=True, timeout=60)
    # Reschedule mode measures from the first reschedule: make it an hour ago.
    context = _context(first_reschedule=dt.datetime.now(dt.UTC) - timedelta(hours=1))
    if how == "poke":
        sensor.timeout = 0.2  # poke mode measures in-process time
    timeout_event = {"status": "timeout", "tts_task_id": pending, "message": "still PENDING after 60 s"}
    with pytest.raises(AirflowSkipException):
        _run(sensor, context, resume_with=timeout_event)
    if how == "deferrable":  # Airflow's own deferral timeout (the trigger row's timeout) too
        with pytest.raises(AirflowSkipException):
            sensor.resume_execution("__fail__", {"error": "Trigger timeout"}, context)


@pytest.mark.parametrize("how", list(MODES))
def test_soft_fail_does_not_hide_an_api_outage_in_any_mode(emu: Any, make_conn: ConnFactory, how: str) -> None:
    """Transient failures beyond the limit raise (the task's retries apply) rather than skip."""
    pending = emu.create_task("camb_ai", "tts", delay=600)
    emu.inject("503", count=1000, endpoint="status")
    sensor = _sensor(make_conn("camb_ai", max_retries=0), pending, how, soft_fail=True, max_consecutive_errors=1)
    from airflow_provider_tts.exceptions import error_event

    outage = {**error_event(TtsServerError("HTTP 503", http_status=503)), "tts_task_id": pending}
    with pytest.raises(TtsServerError):
        _run(sensor, _context(), resume_with=outage)


# ------------------------------------------------- 9.10: reschedule mode gives up, and not every 5 s


def test_reschedule_mode_counts_failed_polls_across_reschedules(emu: Any, make_conn: ConnFactory) -> None:
    pending = emu.create_task("camb_ai", "tts", delay=600)
    emu.inject("503", count=1000, endpoint="status")
    conn_id = make_conn("camb_ai", max_retries=0)
    store = FakeStore()
    first = dt.datetime.now(dt.UTC)
    outcomes = []
    for run in range(6):  # each reschedule is a new process: a new sensor object
        sensor = _sensor(conn_id, pending, "reschedule", max_consecutive_errors=3)
        try:
            sensor.execute(_context(store, first_reschedule=first if run else None))
            outcomes.append("done")
        except AirflowRescheduleException:
            outcomes.append("rescheduled")
        except TtsServerError as exc:
            outcomes.append(str(exc).split(";")[0])
            break
    assert outcomes == ["rescheduled"] * 3 + ["4 polls in a row failed after retries"]
    assert emu.stats()["polls_by_task"][pending] == 4  # one poll per run, no hot loop


def test_a_successful_poll_resets_the_stored_count_and_a_new_try_starts_afresh(
    emu: Any, make_conn: ConnFactory
) -> None:
    pending = emu.create_task("camb_ai", "tts", delay=600)
    conn_id = make_conn("camb_ai", max_retries=0)
    store = FakeStore()
    store.data[ERRORS_KEY] = {"try_number": 1, "errors": 2}
    with pytest.raises(AirflowRescheduleException):
        _sensor(conn_id, pending, "reschedule").execute(_context(store))
    assert store.data[ERRORS_KEY] == {"try_number": 1, "errors": 0}
    writes = store.writes
    with pytest.raises(AirflowRescheduleException):
        _sensor(conn_id, pending, "reschedule").execute(_context(store))
    assert store.writes == writes  # an unchanged count costs no store call
    # A count left by try 1 does not count against try 2.
    store.data[ERRORS_KEY] = {"try_number": 1, "errors": 3}
    emu.inject("503", count=1, endpoint="status")
    with pytest.raises(AirflowRescheduleException):
        _sensor(conn_id, pending, "reschedule", max_consecutive_errors=3).execute(_context(store, try_number=2))
    assert store.data[ERRORS_KEY] == {"try_number": 2, "errors": 1}


def test_without_a_state_store_a_failed_poll_is_followed_up_in_the_same_run(emu: Any, make_conn: ConnFactory) -> None:
    """Airflow 3.0-3.2 have no task_state_store: the streak is finished in-process, so the limit holds."""
    pending = emu.create_task("camb_ai", "tts", delay=600)
    emu.inject("503", count=3, endpoint="status")
    sensor = _sensor(make_conn("camb_ai", max_retries=0), pending, "reschedule", max_consecutive_errors=2)
    with pytest.raises(TtsServerError, match="3 polls in a row failed"):
        sensor.execute(_context(store=None))
    assert emu.stats()["polls_by_task"][pending] == 3
    # A streak that ends in an answer reschedules as usual.
    healing = emu.create_task("camb_ai", "tts", delay=600)
    emu.inject("503", count=1, endpoint="status")
    with pytest.raises(AirflowRescheduleException):
        _sensor(make_conn("camb_ai", max_retries=0), healing, "reschedule").execute(_context(store=None))


def test_reschedule_mode_defaults_to_a_minute_between_polls(emu: Any, make_conn: ConnFactory) -> None:
    pending = emu.create_task("camb_ai", "tts", delay=600)
    sensor = TtsTaskSensor(task_id="wait", tts_conn_id=make_conn("camb_ai"), tts_task_id=pending, mode="reschedule")
    assert sensor.poke_interval == RESCHEDULE_FLOOR == 60
    before = time.time()
    with pytest.raises(AirflowRescheduleException) as info:
        sensor.execute(_context())
    assert info.value.reschedule_date.timestamp() >= before + 60


def test_a_short_interval_in_reschedule_mode_is_honoured_with_a_warning(
    emu: Any, make_conn: ConnFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    pending = emu.create_task("camb_ai", "tts", delay=600)
    sensor = TtsTaskSensor(
        task_id="wait", tts_conn_id=make_conn("camb_ai"), tts_task_id=pending, mode="reschedule", poke_interval=5
    )
    before = time.time()
    with pytest.raises(AirflowRescheduleException) as info:
        sensor.execute(_context())
    assert info.value.reschedule_date.timestamp() < before + 30
    assert "Airflow advises at least 60 s" in capsys.readouterr().out


def test_no_deprecation_warning_for_the_current_names() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TtsSubmitOperator(task_id="o", text="hi", timeout=60, poll_interval=5)
        TtsTaskSensor(task_id="s", tts_task_id="x", timeout=60, poke_interval=5)
