"""How to wait for a task, shared by the trigger (deferrable) and the sensor (poke and reschedule).

Keeping the schedule and the judgement of each status in one place is what makes the deferrable
path behave exactly like the synchronous one: the same status, at the same elapsed time, leads to
the same decision whichever process makes it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_tts import metrics
from airflow_provider_tts.exceptions import TtsConfigError, TtsError, error_event
from airflow_provider_tts.renames import renamed

if TYPE_CHECKING:
    # Annotations only: the status model is imported where statuses are made (vendors, triggers), not at DAG parse.
    from airflow_provider_tts.status import TtsTaskStatus

Verdict = Literal["wait", "succeeded", "failed"]


#: Seconds into a wait at which a still-pending task is logged although nothing changed; after
#: the last one, every ``HEARTBEAT_EVERY`` seconds. A long wait then shows it is alive without
#: flooding the log (a 15-minute wait writes five heartbeats, a 2-hour one seventeen).
HEARTBEATS: tuple[float, ...] = (60.0, 120.0, 300.0, 600.0)
HEARTBEAT_EVERY = 600.0

#: The default of ``timeout`` for the operators' own waits, in seconds.
DEFAULT_WAIT_TIMEOUT = 3600.0


def seconds(value: Any, name: str, *, allow_zero: bool = True) -> float:
    """``value`` (a number or a ``timedelta``, as Airflow accepts for intervals) as float seconds.

    Anything else is a :class:`TtsConfigError` naming the argument and what arrived, raised where
    the DAG is parsed rather than deep inside a wait.
    """
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TtsConfigError(f"{name} must be a number of seconds or a timedelta, got {value!r:.80}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < math.inf):
        kind = "non-negative" if allow_zero else "positive"
        raise TtsConfigError(f"{name} must be a {kind} number of seconds or a timedelta, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class WaitPolicy:
    """How every wait of this provider polls and forgives: the trigger, the sensor and the operators.

    Plain values, so the policy serializes into the trigger row and a re-created trigger keeps it.
    Each duration may be given as a number of seconds or a ``timedelta``; it is stored as float
    seconds. The sensor and the operators take ``wait_policy=WaitPolicy(...)``; each field may also
    be passed to them (and to the trigger) as a keyword argument of the same name, which overrides
    the same field of ``wait_policy``. How long to wait in all is not part of the policy: that is
    each task's ``timeout``.

    :param poll_interval: seconds between polls at first (the vendors suggest 5). The sensor's
        ``poke_interval`` is this field under Airflow's name.
    :param slow_poll_interval: seconds between polls once ``slow_after`` has passed (vendors: 10);
        never less than ``poll_interval``.
    :param slow_after: seconds of waiting after which polling slows down.
    :param not_found_grace: seconds after the wait starts during which "task not found" still
        means "not visible yet" (RevidAPI right after a submit) rather than a failure.
    :param max_consecutive_errors: polls in a row that may fail, each after the hook's own
        retries, before the wait gives up with an error. Counted across the reschedules of a
        ``mode="reschedule"`` sensor too (see :class:`~airflow_provider_tts.sensors.tts.TtsTaskSensor`).
    """

    poll_interval: float = 5.0
    slow_poll_interval: float = 10.0
    slow_after: float = 60.0
    not_found_grace: float = 30.0
    max_consecutive_errors: int = 5

    def __post_init__(self) -> None:
        # frozen: coerce through object.__setattr__, once, so every reader sees float seconds.
        for name in ("poll_interval", "slow_poll_interval"):
            object.__setattr__(self, name, seconds(getattr(self, name), name, allow_zero=False))
        for name in ("slow_after", "not_found_grace"):
            object.__setattr__(self, name, seconds(getattr(self, name), name))
        errors = self.max_consecutive_errors
        if not isinstance(errors, int) or isinstance(errors, bool) or errors < 0:
            raise TtsConfigError(f"max_consecutive_errors must be a non-negative integer, got {errors!r}")

    @classmethod
    def build(cls, wait_policy: WaitPolicy | None = None, **fields: Any) -> WaitPolicy:
        """``wait_policy`` (or the default) with the given fields replaced; None values are ignored.

        What the sensor, the operators and the trigger call with their keyword arguments, so an
        unknown or malformed field is one clear error wherever it is passed.
        """
        if wait_policy is not None and not isinstance(wait_policy, WaitPolicy):
            raise TtsConfigError(f"wait_policy must be a WaitPolicy, got {type(wait_policy).__name__}")
        known = {f.name for f in dataclass_fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TtsConfigError(
                f"unknown wait setting(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
            )
        given = {name: value for name, value in fields.items() if value is not None}
        return replace(wait_policy or cls(), **given)

    @classmethod
    def pop_fields(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Remove this policy's fields from an operator's ``**kwargs`` and return them."""
        return {f.name: kwargs.pop(f.name) for f in dataclass_fields(cls) if f.name in kwargs}

    def interval(self, elapsed: float) -> float:
        """Seconds until the next poll, ``elapsed`` seconds into the wait."""
        if elapsed >= self.slow_after:
            # Slowing down never speeds up: a poll_interval above slow_poll_interval stays in force.
            return max(self.slow_poll_interval, self.poll_interval)
        return self.poll_interval

    def verdict(self, status: TtsTaskStatus, elapsed: float) -> Verdict:
        """What a waiter does with ``status``: keep waiting, or stop with success or failure."""
        if status.state == "succeeded":
            return "succeeded"
        if status.state == "failed":
            if status.failure == "not_found" and elapsed < self.not_found_grace:
                return "wait"
            metrics.task_failed(status)  # every wait ends a failed task here, once
            return "failed"
        return "wait"

    def to_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def wait_timeout(timeout: Any, kwargs: dict[str, Any], owner: str, default: float = DEFAULT_WAIT_TIMEOUT) -> float:
    """The operators' ``timeout`` in seconds, honouring the deprecated ``wait_timeout`` in ``kwargs``.

    ``wait_timeout`` was the operators' name before they took the sensor's ``timeout``; it keeps
    working, with a deprecation warning (see :mod:`airflow_provider_tts.renames`), and is removed
    from ``kwargs`` so BaseOperator never sees it. Neither given: ``default``.
    """
    legacy = kwargs.pop("wait_timeout", None)
    timeout = renamed(owner, "timeout", timeout, "wait_timeout", legacy, hint=" (seconds or a timedelta)", stacklevel=4)
    return default if timeout is None else seconds(timeout, "timeout")


class StatusChangeLog:
    """Logs a task's status once per change, with the elapsed time, like the vendors' examples."""

    def __init__(self, logger: logging.Logger | Any, description: str) -> None:
        self._log = logger
        self._description = description
        self._last: str | None = None

    def seen(self, status: TtsTaskStatus, elapsed: float) -> None:
        label = status.vendor_status + (f" ({status.message})" if status.message and status.is_terminal() else "")
        if label != self._last:
            self._last = label
            self._log.info("%s: %s, %s after %.1f s", self._description, label, status.state, elapsed)


class Waiter:
    """The decisions of one wait, free of I/O: fed statuses and errors, it says stop (with the
    event) or how long to sleep. The trigger drives it with ``await``, the sensor's pokes and the
    operators' synchronous wait with ``time.sleep``, so all of them end a wait for exactly the same
    reasons and log it alike.

    Events are the trigger's (see :mod:`airflow_provider_tts.triggers.tts`).

    :param clock: wall-clock seconds (``time.time``); tests pass a fake one to drive the schedule
        and the heartbeat deterministically.
    :param errors: consecutive failed polls before this waiter was made (a rescheduled sensor
        carries its count over from the previous run).
    """

    def __init__(
        self,
        policy: WaitPolicy,
        *,
        tts_task_id: str,
        kind: str,
        started_at: float,
        deadline: float | None,
        logger: logging.Logger | Any,
        clock: Callable[[], float] = time.time,
        errors: int = 0,
    ) -> None:
        self.policy = policy
        self.tts_task_id = tts_task_id
        self.kind = kind
        self.started_at = started_at
        self.deadline = deadline
        self._log = logger
        self._clock = clock
        self._changes = StatusChangeLog(logger, f"{kind} task {tts_task_id}")
        self._last: TtsTaskStatus | None = None
        self.errors = errors
        self.polls = 0
        # The first heartbeat is the first mark still ahead: a waiter re-created late in a wait
        # (a restarted triggerer, a reschedule) logs its first status anyway, then carries on.
        self._next_heartbeat = next_heartbeat(clock() - started_at)

    def elapsed(self) -> float:
        return self._clock() - self.started_at

    def on_status(self, status: TtsTaskStatus) -> dict[str, Any] | None:
        """The event to end the wait with, or None to keep waiting."""
        elapsed = self.elapsed()
        self.polls += 1
        self.errors = 0
        self._last = status
        verdict = self.policy.verdict(status, elapsed)
        if verdict == "failed" and status.failure == "not_found":
            status = status.model_copy(
                update={
                    "message": f"{status.message or 'task not found'}; still not found {elapsed:.0f} s into "
                    f"the wait (grace {self.policy.not_found_grace:.0f} s)"
                }
            )
        self._changes.seen(status, elapsed)
        if verdict == "wait":
            self._heartbeat(status, elapsed)
            return None
        return {
            "status": "success" if verdict == "succeeded" else "failed",
            "tts_task_id": self.tts_task_id,
            "task_status": status.to_xcom(),
        }

    def on_error(self, exc: BaseException) -> dict[str, Any] | None:
        """An error event, or None when the failure is transient and under the limit."""
        from airflow_provider_tts.transport import is_retryable

        self.polls += 1
        if not (isinstance(exc, TtsError) and is_retryable(exc, idempotent=True)):
            self._log.error("Waiting for %s task %s failed: %s", self.kind, self.tts_task_id, exc)
            return {**error_event(exc), "tts_task_id": self.tts_task_id}
        self.errors += 1
        if self.errors > self.policy.max_consecutive_errors:
            message = f"{self.errors} polls in a row failed after retries; last error: {exc}"
            self._log.error("Giving up on %s task %s: %s", self.kind, self.tts_task_id, message)
            return {**error_event(exc), "message": message, "tts_task_id": self.tts_task_id}
        self._log.warning(
            "Poll %d failed (%d of %d failures allowed in a row: %s); polling again later",
            self.polls,
            self.errors,
            self.policy.max_consecutive_errors,
            exc,
        )
        return None

    def _heartbeat(self, status: TtsTaskStatus, elapsed: float) -> None:
        if elapsed < self._next_heartbeat:
            return
        self._next_heartbeat = next_heartbeat(elapsed)
        delay = self.next_delay()
        self._log.info(
            "%s task %s still %s after %s: %d polls so far, next poll in %s",
            self.kind,
            self.tts_task_id,
            status.vendor_status,
            _duration(elapsed),
            self.polls,
            "none (deadline reached)" if delay is None else _duration(delay),
        )

    def next_delay(self) -> float | None:
        """Seconds until the next poll; None when the deadline has passed (see :meth:`timeout_event`)."""
        now = self._clock()
        if self.deadline is not None and now >= self.deadline:
            return None
        delay = self.policy.interval(now - self.started_at)
        if self.deadline is not None:
            delay = min(delay, self.deadline - now)
        return delay

    def timeout_event(self) -> dict[str, Any]:
        last = self._last
        return {
            "status": "timeout",
            "tts_task_id": self.tts_task_id,
            "message": (
                f"{self.kind} task {self.tts_task_id} still {last.vendor_status if last else 'unknown'} "
                f"after {self.elapsed():.0f} s"
            ),
            "task_status": last.to_xcom() if last else None,
        }


def next_heartbeat(elapsed: float) -> float:
    """The first heartbeat mark (seconds into the wait) strictly after ``elapsed``."""
    for mark in HEARTBEATS:
        if mark > elapsed:
            return mark
    last = HEARTBEATS[-1]
    return last + (math.floor((elapsed - last) / HEARTBEAT_EVERY) + 1) * HEARTBEAT_EVERY


def _duration(value: float) -> str:
    """``75`` -> ``1 min 15 s``: what a person reads in a log line."""
    whole = round(value)
    if whole < 60:
        return f"{value:.0f} s" if value >= 1 else f"{value:.1f} s"
    minutes, secs = divmod(whole, 60)
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"


def poll_once(hook: Any, waiter: Waiter) -> dict[str, Any] | None:
    """One synchronous poll judged by ``waiter``: the event that ends the wait, or None."""
    try:
        return waiter.on_status(hook.get_task_status(waiter.tts_task_id, waiter.kind))
    except Exception as exc:
        return waiter.on_error(exc)


def wait_sync(hook: Any, waiter: Waiter, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Block until the wait ends; the worker-slot twin of the trigger's loop, for non-deferrable use."""
    while True:
        event = poll_once(hook, waiter)
        if event is not None:
            return event
        delay = waiter.next_delay()
        if delay is None:
            return waiter.timeout_event()
        sleep(delay)
