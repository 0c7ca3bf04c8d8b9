"""TtsBatchTrigger: wait, in the triggerer, for every vendor task of one batch.

One trigger per batch task, whatever the number of items: it reads the vendor task ids from the
batch's record in object storage (:class:`~airflow_provider_tts.batch.BatchRecord`; the row in
the metadata database holds only its URI), polls the unfinished tasks oldest first over the
shared connection pool (see :func:`wait_for_all`), with at most ``concurrency`` polls in flight
and the connection's pacer over all of them, and fires one event when none is pending or the
deadline passed. The event
carries counts, not per-item statuses (thousands would not fit a row either): the worker that
resumes polls each task once more for its fresh audio URL anyway, as signed URLs expire.

Events (``event["status"]``): ``done`` (every task ended), ``timeout`` (some still pending at the
deadline; the worker records them as failed, retryable) and ``error`` (the wait itself failed, e.g.
the key was refused; :func:`~airflow_provider_tts.exceptions.error_event`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_tts.exceptions import TtsAuthError, TtsConfigError, error_event
from airflow_provider_tts.renames import stored_request_retry
from airflow_provider_tts.transport.slots import TaskSlots
from airflow_provider_tts.waiting import WaitPolicy

if TYPE_CHECKING:
    from airflow_provider_tts.status import TtsTaskStatus

#: Where the triggerer imports :class:`TtsBatchTrigger` from (pinned, as for ``TtsTaskTrigger``): rows
#: name this path, which :mod:`airflow_provider_tts.triggers.batch` keeps importable.
BATCH_TRIGGER_CLASSPATH = "airflow_provider_tts.triggers.batch.TtsBatchTrigger"
#: Seconds between two progress lines of one wait.
PROGRESS_EVERY = 30.0
#: The shortest pause before a poll brought forward to when the oldest waiting task is expected done.
HURRY_GAP = 0.5
#: Polls of one oldest waiting task brought forward before it goes back to the schedule: the first
#: when it is expected done, then HURRY_GAP, doubling (0.5, 1, 2 s), so a miss costs a few requests.
HURRY_TRIES = 4


async def wait_for_all(
    hook: Any,
    kind: str,
    pending: Mapping[str, float],
    *,
    policy: WaitPolicy,
    started_at: float,
    deadline: float | None,
    concurrency: int,
    log: Any,
    stopped: Callable[[], bool] = lambda: False,
    on_ended: Callable[[str, TtsTaskStatus | None], None] | None = None,
    stop_at: float | None = None,
) -> dict[str, Any] | None:
    """Poll ``pending`` (``{task id: submitted_at}``) in rounds until every task ended; the one event.

    Shared by the trigger and by a batch that waits in its worker (``deferrable=False``), so both
    decide alike: a task is done when :meth:`WaitPolicy.verdict` says so (a "not found" within the
    grace period after *its* submission still waits); one that fails more than
    ``max_consecutive_errors`` polls in a row is done as an error; a refused key ends the whole
    wait. None when ``stopped()`` (the trigger was killed) or when the next round would start
    after ``stop_at`` (a worker that waited as long as it may before deferring the rest).

    ``on_ended(task_id, status)`` hears of each task the moment it ended, with the status that
    said so (None when it ended by failing its polls): the worker that waits stores its audio
    right then, with the audio URL just read, while the wait goes on for the others.

    **A round sweeps oldest first and stops at the first task still waiting.** The wait ends when
    the last task ends, so polling a task again and again while an older one is still pending
    buys nothing: each round polls the oldest waiting task, and only once it ended the next ones
    in submission order, ``concurrency`` in flight at a time, sending no new poll once one
    answered "still waiting". While the vendor works a round costs one request, and every task is
    polled about once after it finished, instead of once per round for the whole wait.

    **The next round comes when the oldest waiting task is expected done**, if that is sooner than
    the schedule: tasks submitted together take about as long, so once one ended, the oldest
    waiting task is polled when it has run as long as the quickest seen to end (at least
    :data:`HURRY_GAP` later); one that is not done by then is polled again :data:`HURRY_GAP`, then
    twice, four times that later (:data:`HURRY_TRIES` in all) before it goes back to the schedule.
    A task submitted later than its submission time says (its create waited out a backoff) is so
    seen to end within a second or two, not a whole interval later; one that is really slower costs
    three more requests. The last task is seen to end about when it does. Progress
    lines count what has been seen to end; before the deadline passes, one full round checks
    every task.
    """
    waiting = dict(sorted(pending.items(), key=lambda item: (item[1], item[0])))  # oldest first
    counts = {"succeeded": 0, "failed": 0, "errors": 0}
    errors: dict[str, int] = {}
    # Polls at work at once (``concurrency``); a poll sleeping out its retry's backoff lends its
    # slot, so the sweep's window holds more polls than slots (see transport.slots).
    slots = TaskSlots(concurrency)
    total = len(waiting)
    last_progress = time.monotonic()
    # The shortest time from submission to "ended" seen so far (an upper bound of that task's work),
    # and how many polls of each task were brought forward on the strength of it.
    lead: list[float] = []
    hurried: dict[str, int] = {}

    async def poll(task_id: str, blocked: list[bool] | None = None) -> tuple[str, str]:
        """Poll one task in its slot; ``blocked``, a sweep's flag, set here the moment it answers
        "still waiting", so no poll queued for the slot it frees is sent after it."""
        async with slots.held():
            if stopped() or (blocked is not None and blocked[0]):
                return task_id, "skip"  # queued for a slot while the sweep learnt it had gone far enough
            answer = await polled(task_id)
            if blocked is not None and answer[1] == "wait":
                blocked[0] = True
            return answer

    async def polled(task_id: str) -> tuple[str, str]:
        try:
            status = await hook.aget_task_status(task_id, kind)
        except (TtsAuthError, TtsConfigError):
            raise
        except Exception as exc:
            errors[task_id] = errors.get(task_id, 0) + 1
            if errors[task_id] > policy.max_consecutive_errors:
                log.warning("Giving up on task %s after %d failed polls: %s", task_id, errors[task_id], exc)
                if on_ended is not None:
                    on_ended(task_id, None)
                return task_id, "errors"
            return task_id, "wait"
        errors.pop(task_id, None)
        verdict = policy.verdict(status, time.time() - waiting[task_id])
        if verdict != "wait" and on_ended is not None:
            on_ended(task_id, status)
        return task_id, verdict

    def ended(task_id: str, verdict: str) -> bool:
        """Count a poll's verdict; whether the task ended."""
        if verdict in ("wait", "skip"):
            return False
        counts[verdict] += 1
        seen = time.time() - waiting.pop(task_id)
        if verdict == "succeeded" and (not lead or seen < lead[0]):
            lead[:] = [seen]
        return True

    async def sweep(full: bool) -> None:
        """One round: the oldest waiting task alone, then the next ones in submission order with
        ``concurrency`` polls in flight (a sliding window, not groups that wait for their slowest),
        sending no new poll once one answered "still waiting"."""
        order = iter(list(waiting))
        if not full:
            oldest = next(order, None)
            if oldest is None or not ended(*await poll(oldest)):
                return
        in_flight: set[asyncio.Future[tuple[str, str]]] = set()
        blocked = [False]  # a full round sweeps every task whatever their answers
        try:
            while True:
                while not blocked[0] and len(in_flight) < slots.workers and (task_id := next(order, None)) is not None:
                    in_flight.add(asyncio.ensure_future(poll(task_id, None if full else blocked)))
                if not in_flight or stopped():
                    return
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    ended(*finished.result())
        finally:
            for pending_poll in in_flight:  # a refused key ends the wait: the other polls go too
                pending_poll.cancel()

    while waiting and not stopped():
        round_started = time.time()
        try:
            await sweep(full=False)
        except (TtsAuthError, TtsConfigError) as exc:
            return {**error_event(exc), "pending": len(waiting), **counts}
        if time.monotonic() - last_progress >= PROGRESS_EVERY or not waiting:
            last_progress = time.monotonic()
            log.info("Batch: %d of %d vendor tasks ended (%s)", total - len(waiting), total, counts)
        if not waiting:
            break
        now = time.time()
        delay = max(policy.interval(now - started_at) - (now - round_started), 0.0)
        oldest = next(iter(waiting))
        tries = hurried.get(oldest, 0)
        if lead and tries < HURRY_TRIES:
            # Tasks submitted together take about as long: the oldest waiting one is likely done once
            # it has been running as long as the quickest seen to end. Poll it then rather than a whole
            # interval later; one that misses is polled again sooner than the schedule a few times,
            # further apart each time, then goes back to the schedule.
            hurried[oldest] = tries + 1
            gap = min(delay, HURRY_GAP * 2 ** max(tries - 1, 0))
            delay = min(delay, max(waiting[oldest] + lead[0] - now, gap))
        if deadline is not None and now + delay >= deadline:
            try:
                await sweep(full=True)  # the tasks behind the oldest pending one were never asked
            except (TtsAuthError, TtsConfigError) as exc:
                return {**error_event(exc), "pending": len(waiting), **counts}
            if not waiting:
                break
            log.warning("Batch: %d of %d vendor tasks still pending at the deadline", len(waiting), total)
            return {"status": "timeout", "pending": len(waiting), **counts}
        if stop_at is not None and now + delay > stop_at:
            return None
        await asyncio.sleep(delay)
    if stopped():
        return None
    return {"status": "done", "pending": 0, **counts}


class TtsBatchTrigger(BaseTrigger):
    """Wait for every vendor task a batch task submitted; one event when all ended.

    :param tts_conn_id: the vendor connection (resolved in the triggerer; the key never travels).
    :param kind: the batch's task kind.
    :param record_uri: the batch record's URI (``BatchRecord.where``); the ids are read from it.
    :param record_conn_id: the storage connection of the destination, if it needs one.
    :param deadline: wall-clock epoch seconds after which pending tasks end the wait (``timeout``).
    :param started_at: when the batch's wait began (drives the poll schedule across re-creation).
    :param concurrency: polls in flight at once.
    :param request_retry: per-request retry overrides, as for ``TtsTaskTrigger``.
    :param retry: the same under the trigger row's key, as for ``TtsTaskTrigger``; give one of the two.
    :param wait_policy: the :class:`~airflow_provider_tts.waiting.WaitPolicy` (flat in the row).
    """

    def __init__(
        self,
        *,
        tts_conn_id: str,
        kind: str,
        record_uri: str,
        record_conn_id: str | None = None,
        deadline: float | None = None,
        started_at: float | None = None,
        concurrency: int = 32,
        request_retry: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        wait_policy: WaitPolicy | None = None,
        **policy_fields: Any,
    ) -> None:
        super().__init__()
        self.tts_conn_id = tts_conn_id
        self.kind = kind
        self.record_uri = record_uri
        self.record_conn_id = record_conn_id
        self.deadline = float(deadline) if deadline is not None else None
        self.started_at = float(started_at) if started_at is not None else time.time()
        self.concurrency = int(concurrency)
        self.request_retry = stored_request_retry(type(self).__name__, request_retry, retry)
        self.retry = self.request_retry  # the old name, for code that still reads it
        self.policy = WaitPolicy.build(wait_policy, **policy_fields)
        self._killed = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        own = type(self) is TtsBatchTrigger
        return (
            BATCH_TRIGGER_CLASSPATH if own else f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "tts_conn_id": self.tts_conn_id,
                "kind": self.kind,
                "record_uri": self.record_uri,
                "record_conn_id": self.record_conn_id,
                "deadline": self.deadline,
                "started_at": self.started_at,
                "concurrency": self.concurrency,
                "retry": self.request_retry,  # the row's key since 0.1: see stored_request_retry
                **self.policy.to_kwargs(),
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_tts.batch.record import BatchRecord
        from airflow_provider_tts.hooks.tts import TtsHook

        hook = None
        try:
            record = BatchRecord.at(self.record_uri, self.record_conn_id)
            # Storage I/O is blocking: off the triggerer's event loop.
            pending = await asyncio.to_thread(record.pending)
            # The connection's pacer, shared with every trigger of this triggerer: one 429 slows them all.
            hook = TtsHook(tts_conn_id=self.tts_conn_id, request_retry=self.request_retry)
            event = await self.wait(hook, pending, log=self.log)
        except Exception as exc:  # a bad kwarg or an unreadable record ends the wait, never the triggerer
            event = error_event(exc)
        finally:
            if hook is not None:
                await hook.aclose()
        if event is not None:
            yield TriggerEvent(event)

    async def wait(
        self,
        hook: Any,
        pending: Mapping[str, float],
        *,
        log: Any,
        on_ended: Callable[[str, TtsTaskStatus | None], None] | None = None,
        stop_at: float | None = None,
    ) -> dict[str, Any] | None:
        """:func:`wait_for_all` with this trigger's settings (also what a batch's worker runs while it waits)."""
        return await wait_for_all(
            hook,
            self.kind,
            pending,
            policy=self.policy,
            started_at=self.started_at,
            deadline=self.deadline,
            concurrency=self.concurrency,
            log=log,
            stopped=lambda: self._killed,
            on_ended=on_ended,
            stop_at=stop_at,
        )

    async def on_kill(self) -> None:
        """The batch task was killed or cleared: stop polling (the vendor tasks keep running, and may be billed)."""
        if self._killed:
            return
        self._killed = True
        self.log.warning(
            "Stopped waiting for the batch recorded in %s: the Airflow task was killed or cleared. The vendor has "
            "no cancel endpoint, so its tasks keep running and may be billed.",
            self.record_uri,
        )
