"""How to wait for a task, shared by the trigger (deferrable) and the sensor (poke and reschedule).

Keeping the schedule and the judgement of each status in one place is what makes the deferrable
path behave exactly like the synchronous one: the same status, at the same elapsed time, leads to
the same decision whichever process makes it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from airflow_provider_tts.exceptions import TtsConfigError, TtsError, error_event
from airflow_provider_tts.status import TtsTaskStatus

Verdict = Literal["wait", "succeeded", "failed"]


@dataclass(frozen=True)
class WaitPolicy:
    """When to poll and how long to forgive; plain values, so it serializes into trigger kwargs.

    :param poll_interval: seconds between polls at first (the vendors suggest 5).
    :param slow_poll_interval: seconds between polls once ``slow_after`` has passed (vendors: 10).
    :param slow_after: seconds of waiting after which polling slows down.
    :param not_found_grace: seconds after the wait starts during which "task not found" still
        means "not visible yet" (RevidAPI right after a submit) rather than a failure.
    :param max_consecutive_errors: polls in a row that may fail, each after the hook's own
        retries, before the wait gives up with an error.
    """

    poll_interval: float = 5.0
    slow_poll_interval: float = 10.0
    slow_after: float = 60.0
    not_found_grace: float = 30.0
    max_consecutive_errors: int = 5

    def __post_init__(self) -> None:
        for name in ("poll_interval", "slow_poll_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise TtsConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("slow_after", "not_found_grace"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
                raise TtsConfigError(f"{name} must be a non-negative number of seconds, got {value!r}")
        errors = self.max_consecutive_errors
        if not isinstance(errors, int) or isinstance(errors, bool) or errors < 0:
            raise TtsConfigError(f"max_consecutive_errors must be a non-negative integer, got {errors!r}")

    def interval(self, elapsed: float) -> float:
        """Seconds until the next poll, ``elapsed`` seconds into the wait."""
        return self.slow_poll_interval if elapsed >= self.slow_after else self.poll_interval

    def verdict(self, status: TtsTaskStatus, elapsed: float) -> Verdict:
        """What a waiter does with ``status``: keep waiting, or stop with success or failure."""
        if status.state == "succeeded":
            return "succeeded"
        if status.state == "failed":
            if status.failure == "not_found" and elapsed < self.not_found_grace:
                return "wait"
            return "failed"
        return "wait"

    def to_kwargs(self) -> dict[str, Any]:
        return asdict(self)


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
    event) or how long to sleep. The trigger drives it with ``await``, the operator's synchronous
    wait with ``time.sleep``, so both end a wait for exactly the same reasons.

    Events are the trigger's (see :mod:`airflow_provider_tts.triggers.tts`).
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
    ) -> None:
        self.policy = policy
        self.tts_task_id = tts_task_id
        self.kind = kind
        self.started_at = started_at
        self.deadline = deadline
        self._log = logger
        self._changes = StatusChangeLog(logger, f"{kind} task {tts_task_id}")
        self._last: TtsTaskStatus | None = None
        self._errors = 0

    def on_status(self, status: TtsTaskStatus) -> dict[str, Any] | None:
        """The event to end the wait with, or None to keep waiting."""
        elapsed = time.time() - self.started_at
        self._errors = 0
        self._last = status
        self._changes.seen(status, elapsed)
        verdict = self.policy.verdict(status, elapsed)
        if verdict == "wait":
            return None
        return {
            "status": "success" if verdict == "succeeded" else "failed",
            "tts_task_id": self.tts_task_id,
            "task_status": status.to_xcom(),
        }

    def on_error(self, exc: BaseException) -> dict[str, Any] | None:
        """An error event, or None when the failure is transient and under the limit."""
        from airflow_provider_tts.transport import is_retryable

        if not (isinstance(exc, TtsError) and is_retryable(exc, idempotent=True)):
            self._log.error("Waiting for %s task %s failed: %s", self.kind, self.tts_task_id, exc)
            return {**error_event(exc), "tts_task_id": self.tts_task_id}
        self._errors += 1
        if self._errors > self.policy.max_consecutive_errors:
            message = f"{self._errors} polls in a row failed after retries; last error: {exc}"
            self._log.error("Giving up on %s task %s: %s", self.kind, self.tts_task_id, message)
            return {**error_event(exc), "message": message, "tts_task_id": self.tts_task_id}
        self._log.warning("Poll %d failed (%s); polling again later", self._errors, exc)
        return None

    def next_delay(self) -> float | None:
        """Seconds until the next poll; None when the deadline has passed (see :meth:`timeout_event`)."""
        now = time.time()
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
                f"after {time.time() - self.started_at:.0f} s"
            ),
            "task_status": last.to_xcom() if last else None,
        }


def wait_sync(hook: Any, waiter: Waiter) -> dict[str, Any]:
    """Block until the wait ends; the worker-slot twin of the trigger's loop, for non-deferrable use."""
    while True:
        try:
            event = waiter.on_status(hook.get_task_status(waiter.tts_task_id, waiter.kind))
        except Exception as exc:
            event = waiter.on_error(exc)
        if event is not None:
            return event
        delay = waiter.next_delay()
        if delay is None:
            return waiter.timeout_event()
        time.sleep(delay)
