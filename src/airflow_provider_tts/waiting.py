"""How to wait for a task, shared by the trigger (deferrable) and the sensor (poke and reschedule).

Keeping the schedule and the judgement of each status in one place is what makes the deferrable
path behave exactly like the synchronous one: the same status, at the same elapsed time, leads to
the same decision whichever process makes it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from airflow_provider_tts.exceptions import TtsConfigError
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
