"""TtsTaskSensor: wait for a remote text-to-speech task in poke, reschedule or deferrable mode.

All three modes judge a status the same way (``waiting.WaitPolicy.verdict``) and raise the same
exceptions, so switching ``deferrable`` on changes where the waiting happens, not what it decides.
Failures that retrying cannot fix (no credits, rejected content, Camb's TIMEOUT, a task that stays
not found, a bad key) raise ``AirflowFailException`` subclasses and do not use up retries.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_tts.compat import AirflowSensorTimeout, conf
from airflow_provider_tts.connection import DEFAULT_CONN_IDS
from airflow_provider_tts.exceptions import TtsConfigError, TtsError, TtsTaskFailedError, TtsWaitTimeoutError
from airflow_provider_tts.triggers.tts import TtsTaskTrigger, status_from_event
from airflow_provider_tts.waiting import StatusChangeLog, WaitPolicy

if TYPE_CHECKING:
    from airflow.sdk import Context, XComArg

    from airflow_provider_tts.hooks.tts import TtsHook


class TtsTaskSensor(BaseSensorOperator):
    """Wait until a Camb.ai or RevidAPI task has finished; return its status (XCom) on success.

    :param tts_task_id: the vendor's task id (templated; an XComArg works).
    :param tts_conn_id: a ``camb_ai`` or ``revid_tts`` connection (templated).
    :param kind: ``tts``, ``text-to-sound`` (Camb.ai) or ``srt-to-speech`` (RevidAPI).
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to
        ``[operators] default_deferrable``.
    :param poke_interval: seconds between polls at first (default 5, the vendors' advice).
    :param slow_poll_interval: seconds between polls after ``slow_after`` (default 10).
    :param slow_after: seconds after which polling slows down (default 60).
    :param not_found_grace: seconds during which "not found" means "not visible yet" (default 30).
    :param max_consecutive_errors: polls in a row that may fail (after the hook's retries) before
        the sensor fails (default 5).
    :param retry: per-request retry overrides (``max_retries``, ``backoff``, ``max_backoff``).
    :param timeout: standard sensor timeout in seconds; running out raises ``AirflowSensorTimeout``
        (no retries; ``soft_fail`` skips instead) in every mode.
    """

    template_fields: Sequence[str] = ("tts_task_id", "tts_conn_id", "kind")
    ui_color = "#d7ecf9"

    def __init__(
        self,
        *,
        tts_task_id: str | XComArg,
        tts_conn_id: str = DEFAULT_CONN_IDS["camb_ai"],
        kind: str = "tts",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float = WaitPolicy.poll_interval,
        slow_poll_interval: float = WaitPolicy.slow_poll_interval,
        slow_after: float = WaitPolicy.slow_after,
        not_found_grace: float = WaitPolicy.not_found_grace,
        max_consecutive_errors: int = WaitPolicy.max_consecutive_errors,
        retry: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        # An XComArg is resolved and a template rendered to str before execute() runs.
        self.tts_task_id = cast("str", tts_task_id)
        self.tts_conn_id = tts_conn_id
        self.kind = kind
        self.deferrable = deferrable
        self.retry = dict(retry) if retry else None
        self.policy = WaitPolicy(
            poll_interval=float(poke_interval),
            slow_poll_interval=slow_poll_interval,
            slow_after=slow_after,
            not_found_grace=not_found_grace,
            max_consecutive_errors=max_consecutive_errors,
        )
        self._started_at: float | None = None
        self._consecutive_errors = 0
        self._changes: StatusChangeLog | None = None

    @cached_property
    def hook(self) -> TtsHook:
        from airflow_provider_tts.hooks.tts import TtsHook

        return TtsHook(tts_conn_id=self.tts_conn_id, retry=self.retry)

    def _get_next_poke_interval(self, started_at: Any, run_duration: Any, poke_count: int) -> float:
        # Follow the vendors' schedule (5 s, then 10 s after a minute) in poke and reschedule modes too.
        if self.exponential_backoff:
            return float(super()._get_next_poke_interval(started_at, run_duration, poke_count))
        return self.policy.interval(run_duration())

    def _check_inputs(self) -> None:
        if not isinstance(self.tts_task_id, str) or not self.tts_task_id.strip():
            raise TtsConfigError(f"tts_task_id rendered to {self.tts_task_id!r}; expected a vendor task id")

    def execute(self, context: Context) -> Any:
        self._check_inputs()
        self._started_at = time.time()
        if self.reschedule:
            first = context["ti"].get_first_reschedule_date(context)
            if first is not None:
                self._started_at = first.timestamp()
        if not self.deferrable:
            return super().execute(context)
        # Check once before deferring: a task that is already finished never needs the triggerer.
        result = self.poke(context)
        if isinstance(result, PokeReturnValue) and result.is_done:
            return result.xcom_value
        self.defer(
            trigger=TtsTaskTrigger(
                tts_conn_id=self.tts_conn_id,
                tts_task_id=self.tts_task_id,
                kind=self.kind,
                deadline=self._started_at + self.timeout,
                started_at=self._started_at,
                poll_interval=self.policy.poll_interval,
                slow_poll_interval=self.policy.slow_poll_interval,
                slow_after=self.policy.slow_after,
                not_found_grace=self.policy.not_found_grace,
                max_consecutive_errors=self.policy.max_consecutive_errors,
                retry=self.retry,
            ),
            method_name="execute_complete",
            # Airflow turns this into AirflowSensorTimeout (soft_fail honoured); the trigger keeps
            # its own deadline as well, so the wait ends even if this timeout is not enforced.
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Context) -> PokeReturnValue:
        started_at = self._started_at if self._started_at is not None else time.time()
        elapsed = time.time() - started_at
        if self._changes is None:
            self._changes = StatusChangeLog(self.log, f"{self.kind} task {self.tts_task_id}")
        try:
            status = self.hook.get_task_status(self.tts_task_id, self.kind)
        except TtsError as exc:
            from airflow_provider_tts.transport import is_retryable

            self._consecutive_errors += 1
            if not is_retryable(exc, idempotent=True) or self._consecutive_errors > self.policy.max_consecutive_errors:
                raise
            self.log.warning("Poll %d failed (%s); polling again later", self._consecutive_errors, exc)
            return PokeReturnValue(is_done=False)
        self._consecutive_errors = 0
        self._changes.seen(status, elapsed)
        verdict = self.policy.verdict(status, elapsed)
        if verdict == "failed":
            raise TtsTaskFailedError.for_status(status)
        return PokeReturnValue(is_done=verdict == "succeeded", xcom_value=status.to_xcom())

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: validate the event; success returns the status dict."""
        try:
            return status_from_event(event, self.tts_task_id).to_xcom()
        except TtsWaitTimeoutError as exc:
            raise AirflowSensorTimeout(str(exc)) from None
