"""The shared wait policy on its own: driven by a fake clock, so schedule and heartbeat are exact."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.status import TtsTaskStatus
from airflow_provider_tts.waiting import Waiter, WaitPolicy, next_heartbeat, wait_sync

PENDING = TtsTaskStatus(api="camb_ai", kind="tts", tts_task_id="t1", state="pending", vendor_status="PENDING")
DONE = TtsTaskStatus(api="camb_ai", kind="tts", tts_task_id="t1", state="succeeded", vendor_status="SUCCESS", run_id=1)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class PendingUntil:
    """A hook whose task stays pending until the fake clock reaches ``done_at``."""

    def __init__(self, clock: FakeClock, done_at: float) -> None:
        self.clock, self.done_at, self.polls = clock, done_at, 0

    def get_task_status(self, tts_task_id: str, kind: str) -> TtsTaskStatus:
        self.polls += 1
        return DONE if self.clock.now >= self.done_at else PENDING


def _heartbeats(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "polls so far" in r.getMessage()]


def test_a_long_wait_logs_a_heartbeat_at_a_slowing_cadence(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = logging.getLogger("tests.waiter.heartbeat")
    waiter = Waiter(
        WaitPolicy(), tts_task_id="t1", kind="tts", started_at=clock.now, deadline=None, logger=log, clock=clock
    )
    hook = PendingUntil(clock, done_at=clock.now + 45 * 60)
    with caplog.at_level(logging.INFO, logger=log.name):
        event = wait_sync(hook, waiter, sleep=clock.sleep)
    assert event["status"] == "success"
    beats = _heartbeats(caplog)
    # After 1, 2, 5 and 10 minutes, then every 10: 20, 30, 40 — seven in a 45-minute wait.
    assert [b.split(" after ")[1].split(":")[0] for b in beats] == [
        "1 min", "2 min", "5 min", "10 min", "20 min", "30 min", "40 min",
    ]  # fmt: skip
    # 13 polls by the first minute (0, 5, ..., 60 s), then one every 10 s.
    assert beats[0] == "tts task t1 still PENDING after 1 min: 13 polls so far, next poll in 10 s"
    assert "after 10 min: 67 polls so far" in beats[3]
    # The status itself is logged once, when it first appears: a heartbeat is not a change.
    assert sum("PENDING, pending" in r.getMessage() for r in caplog.records) == 1


def test_the_heartbeat_says_when_the_deadline_ends_the_wait(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = logging.getLogger("tests.waiter.deadline")
    waiter = Waiter(
        WaitPolicy(poll_interval=60, slow_poll_interval=60),
        tts_task_id="t1",
        kind="tts",
        started_at=clock.now,
        deadline=clock.now + 120,
        logger=log,
        clock=clock,
    )
    with caplog.at_level(logging.INFO, logger=log.name):
        event = wait_sync(PendingUntil(clock, done_at=clock.now + 10_000), waiter, sleep=clock.sleep)
    assert event["status"] == "timeout"
    assert _heartbeats(caplog) == [
        "tts task t1 still PENDING after 1 min: 2 polls so far, next poll in 1 min",
        "tts task t1 still PENDING after 2 min: 3 polls so far, next poll in none (deadline reached)",
    ]


def test_a_waiter_recreated_late_does_not_repeat_past_heartbeats(caplog: pytest.LogCaptureFixture) -> None:
    """A trigger re-created 7 minutes in (a triggerer restart) next beats at 10 minutes."""
    clock = FakeClock()
    log = logging.getLogger("tests.waiter.late")
    late = clock.now - 7 * 60
    waiter = Waiter(WaitPolicy(), tts_task_id="t1", kind="tts", started_at=late, deadline=None, logger=log, clock=clock)
    with caplog.at_level(logging.INFO, logger=log.name):
        wait_sync(PendingUntil(clock, done_at=clock.now + 4 * 60), waiter, sleep=clock.sleep)
    assert [b.split(" after ")[1].split(":")[0] for b in _heartbeats(caplog)] == ["10 min"]


@pytest.mark.parametrize(
    ("elapsed", "mark"), [(0, 60), (59.9, 60), (60, 120), (299, 300), (600, 1200), (1250, 1800), (3600, 4200)]
)
def test_heartbeat_marks(elapsed: float, mark: float) -> None:
    assert next_heartbeat(elapsed) == mark


def test_policy_takes_timedeltas_and_stores_seconds() -> None:
    policy = WaitPolicy(
        poll_interval=timedelta(seconds=30),
        slow_poll_interval=timedelta(minutes=1),
        slow_after=timedelta(minutes=2),
        not_found_grace=timedelta(0),
    )
    assert policy.to_kwargs() == {
        "poll_interval": 30.0,
        "slow_poll_interval": 60.0,
        "slow_after": 120.0,
        "not_found_grace": 0.0,
        "max_consecutive_errors": 5,
    }


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"poll_interval": "30s"}, "poll_interval must be a number of seconds or a timedelta, got '30s'"),
        ({"poll_interval": timedelta(0)}, "poll_interval must be a positive number"),
        ({"slow_after": timedelta(seconds=-1)}, "slow_after must be a non-negative number"),
        ({"poll_intervall": 3}, "unknown wait setting(s) poll_intervall"),
    ],
)
def test_policy_errors_name_the_field_and_what_arrived(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TtsConfigError) as info:
        WaitPolicy.build(**fields)
    assert fragment in str(info.value)


def test_slowing_down_never_speeds_up() -> None:
    policy = WaitPolicy(poll_interval=30)
    assert [policy.interval(t) for t in (0, 59, 60, 600)] == [30, 30, 30, 30]
