"""TtsTaskTrigger: wait for a remote text-to-speech task inside the triggerer, without a worker slot.

What the trigger row in the metadata database holds (``serialize()``) is plain values only: the
connection id, never the key; an absolute wall-clock deadline and start time, so a trigger that is
re-created on another triggerer after a crash neither resets nor loses its deadline or its poll
schedule. Inside ``run()`` everything is non-blocking: the connection is resolved asynchronously,
polls go through the hook's async path on a pooled session, and transient failures are retried by
the hook's policy. The trigger yields exactly one event and returns (none only after ``on_kill``).

Events (``event["status"]``):

* ``success`` — ``task_status`` is the succeeded :class:`TtsTaskStatus` as a dict;
* ``failed`` — the task failed; ``task_status`` has the vendor status, message and ``retryable``;
* ``timeout`` — still pending at the deadline; ``task_status`` is the last status seen, if any;
* ``error`` — the wait itself failed (bad key, too many consecutive errors); see
  :func:`airflow_provider_tts.exceptions.error_event`.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_tts.exceptions import (
    TtsError,
    TtsTaskFailedError,
    TtsWaitTimeoutError,
    error_event,
    error_from_event,
)
from airflow_provider_tts.renames import stored_request_retry
from airflow_provider_tts.status import TtsTaskStatus
from airflow_provider_tts.waiting import Waiter, WaitPolicy

#: Where the triggerer imports :class:`TtsTaskTrigger` from, as stored in every trigger row.
#: A literal, not ``type(self).__module__``: rows written by one release are read by the next, so
#: moving or renaming the module must not change what ``serialize()`` writes; the old path keeps
#: working only while it stays importable (``tests/triggers/test_trigger.py`` pins both).
TRIGGER_CLASSPATH = "airflow_provider_tts.triggers.tts.TtsTaskTrigger"


class TtsTaskTrigger(BaseTrigger):
    """Poll a remote task until it succeeds, fails, or the deadline passes.

    :param tts_conn_id: connection (``camb_ai`` or ``revid_tts``) resolved inside the triggerer.
    :param tts_task_id: the vendor's task id.
    :param kind: ``tts``, ``text-to-sound`` (Camb.ai) or ``srt-to-speech`` (RevidAPI).
    :param deadline: wall-clock epoch seconds after which a still-pending task is a ``timeout``;
        None waits until the task ends (the sensor always passes one).
    :param started_at: wall-clock epoch seconds when the wait began; drives the poll schedule and
        the not-found grace period, and survives re-creation of the trigger.
    :param request_retry: overrides of the connection's per-request retry settings (``max_retries``,
        ``backoff``, ``max_backoff``), carried here so they are not lost on the way in.
    :param retry: the same overrides under the key the trigger row stores them: ``serialize``
        writes ``retry`` as every earlier release did, so a row reads alike whichever release
        wrote it. Not deprecated here (the triggerer passes it back); give one of the two.
    :param wait_policy: the :class:`~airflow_provider_tts.waiting.WaitPolicy`; its fields may also
        be given flat (``poll_interval=...``), which is how the trigger row stores them.
    """

    def __init__(
        self,
        *,
        tts_conn_id: str,
        tts_task_id: str,
        kind: str = "tts",
        deadline: float | None = None,
        started_at: float | None = None,
        request_retry: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        wait_policy: WaitPolicy | None = None,
        **policy_fields: Any,
    ) -> None:
        super().__init__()
        self.tts_conn_id = tts_conn_id
        self.tts_task_id = tts_task_id
        self.kind = kind
        self.deadline = float(deadline) if deadline is not None else None
        self.started_at = float(started_at) if started_at is not None else time.time()
        self.policy = WaitPolicy.build(wait_policy, **policy_fields)
        self.request_retry = stored_request_retry(type(self).__name__, request_retry, retry)
        self.retry = self.request_retry  # the old name, for code that still reads it
        self._killed = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The trigger row: the pinned classpath and plain keyword arguments (no secret).

        A subclass is stored under its own import path, since the pinned one would re-create it
        as this class.
        """
        own = type(self) is TtsTaskTrigger
        return (
            TRIGGER_CLASSPATH if own else f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "tts_conn_id": self.tts_conn_id,
                "tts_task_id": self.tts_task_id,
                "kind": self.kind,
                "deadline": self.deadline,
                "started_at": self.started_at,
                **self.policy.to_kwargs(),
                "retry": self.request_retry,  # the row's key since 0.1: see stored_request_retry
            },
        )

    def _hook(self) -> Any:
        # Imported here: the trigger module is imported at DAG-parse time by the sensor.
        from airflow_provider_tts.hooks.tts import TtsHook

        return TtsHook(tts_conn_id=self.tts_conn_id, request_retry=self.request_retry)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = None
        try:
            hook = self._hook()
            event = await self._wait(hook)
        except Exception as exc:  # a bad kwarg or a bug ends the wait with an event, never a crashed trigger
            event = {**error_event(exc), "tts_task_id": self.tts_task_id}
        finally:
            if hook is not None:
                await hook.aclose()  # also on cancellation: the pooled session is released
        if event is not None:
            yield TriggerEvent(event)

    async def on_kill(self) -> None:
        """The Airflow task was killed or cleared while deferred (Airflow 3.3+ calls this).

        Neither vendor has a cancel endpoint, so the remote task keeps running, and may be billed,
        whatever happens here: this stops polling and says so. It only sets a flag and logs, so it
        is idempotent and harmless when Airflow calls it on a trigger another triggerer has
        adopted (a known 3.3 behaviour): that copy keeps polling, the vendor task is untouched.
        The pooled session is not closed here; ``run()`` releases its own on the way out. Airflow
        3.0-3.2 never call it.
        """
        if self._killed:
            return
        self._killed = True
        self.log.warning(
            "Stopped waiting for %s task %s (connection %s): the Airflow task was killed or cleared. "
            "The vendor has no cancel endpoint, so the remote task keeps running and may be billed.",
            self.kind,
            self.tts_task_id,
            self.tts_conn_id,
        )

    def _last_answer_at(self, loop: asyncio.AbstractEventLoop) -> float | None:
        """Event-loop time by which the wait ends even mid-poll: the deadline plus a second for a last answer."""
        if self.deadline is None:
            return None
        return loop.time() + max(self.deadline - time.time(), 0.0) + 1.0

    async def _wait(self, hook: Any) -> dict[str, Any] | None:
        """The wait's one event; None only when :meth:`on_kill` stopped it (nobody awaits an event)."""
        waiter = Waiter(
            self.policy,
            tts_task_id=self.tts_task_id,
            kind=self.kind,
            started_at=self.started_at,
            deadline=self.deadline,
            logger=self.log,
        )
        loop = asyncio.get_running_loop()
        while True:
            # A poll may retry for a while (the hook's policy); none may outlive the deadline. One
            # timer for the whole wait rather than one per poll: polls start before the deadline
            # (``next_delay`` says when) and sleeps end by it, so only a poll can be cut, exactly
            # where a per-poll budget would have cut it. Each poll's own timer was per-poll work in
            # the triggerer's hot path (a timeout object, a timer handle and a context copy, most
            # of them living long enough to reach the garbage collector's oldest generation).
            budget = asyncio.timeout_at(self._last_answer_at(loop))
            try:
                async with budget:
                    return await self._polls(hook, waiter, loop)
            except TimeoutError:
                if not budget.expired():
                    raise
            if waiter.next_delay() is None:
                return waiter.timeout_event()
            # The wall clock was set back during the wait: the deadline is still ahead, poll on.

    async def _polls(self, hook: Any, waiter: Waiter, loop: asyncio.AbstractEventLoop) -> dict[str, Any] | None:
        """Poll until the waiter has an event; None when :meth:`on_kill` stopped the wait."""
        # Sleep timers run a callback that reads no context variable: one context for all of
        # them, instead of the copy ``asyncio.sleep`` (``call_later``) makes for each.
        quiet = contextvars.copy_context()
        while not self._killed:
            # While the shared session pool is crowded, wait as one future before the poll builds
            # its chain of frames (see ``transport.PoolGate``).
            lobby = hook.status_lobby()
            if lobby is not None:
                await lobby
            try:
                event = waiter.on_status(await hook.aget_task_status(self.tts_task_id, self.kind))
            except Exception as exc:  # a bug must end the wait with an event, not crash the triggerer
                event = waiter.on_error(exc)
            if event is not None:
                return event
            delay = waiter.next_delay()
            if delay is None:
                return waiter.timeout_event()
            # ``asyncio.sleep`` without its coroutine and context copy (one sleep per poll).
            woken = loop.create_future()
            timer = loop.call_later(delay, _wake, woken, context=quiet)
            try:
                await woken
            finally:
                timer.cancel()
        return None


def _wake(future: asyncio.Future[None]) -> None:
    """End a trigger's sleep (unless it was cancelled meanwhile)."""
    if not future.done():
        future.set_result(None)


def status_from_event(event: dict[str, Any] | None, tts_task_id: str) -> TtsTaskStatus:
    """The succeeded status an event carries, or the exception it stands for.

    Every caller that defers to :class:`TtsTaskTrigger` validates its event here, so all of them
    treat events alike: a missing or unknown event is an error, never a silent success; a
    ``timeout`` is :class:`TtsWaitTimeoutError` (the sensor turns it into ``AirflowSensorTimeout``).
    """
    if not isinstance(event, dict) or "status" not in event:
        raise TtsError(f"waiting for task {tts_task_id!r} resumed with no usable event: {event!r:.200}")
    kind = event["status"]
    if kind == "error":
        raise error_from_event(event)
    if kind == "timeout":
        raise TtsWaitTimeoutError(str(event.get("message") or f"task {tts_task_id!r} did not finish in time"))
    if kind in ("success", "failed"):
        try:
            status = TtsTaskStatus.from_xcom(event.get("task_status"))
        except ValueError as exc:
            raise TtsError(f"waiting for task {tts_task_id!r} resumed with a malformed status: {exc}") from None
        if status.tts_task_id != tts_task_id:
            raise TtsError(f"event for task {tts_task_id!r} carries the status of {status.tts_task_id!r}")
        if kind == "failed" and status.state == "failed":
            raise TtsTaskFailedError.for_status(status)
        if kind == "success" and status.state == "succeeded":
            return status
        raise TtsError(f"event {kind!r} disagrees with the status it carries ({status.state})")
    raise TtsError(f"waiting for task {tts_task_id!r} resumed with an unknown event status {kind!r}")
