"""TtsTaskSensor: wait for a remote text-to-speech task in poke, reschedule or deferrable mode.

All three modes poll through the one wait policy (:class:`~airflow_provider_tts.waiting.Waiter`),
judge a status the same way and raise the same exceptions, and ``soft_fail``/``never_fail`` treat
those exceptions the same way, so switching ``deferrable`` or ``mode`` changes where the waiting
happens, not what it decides. Failures that retrying cannot fix (no credits, rejected content,
Camb's TIMEOUT, a task that stays not found, a bad key) raise ``AirflowFailException`` subclasses
and do not use up retries.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import airflow.sdk.exceptions as sdk_exceptions
from airflow.sdk import BaseOperator, BaseSensorOperator, PokeReturnValue

from airflow_provider_tts.compat import AirflowSensorTimeout, AirflowSkipException, conf
from airflow_provider_tts.exceptions import TtsConfigError, TtsWaitTimeoutError
from airflow_provider_tts.hooked import TtsHookMixin
from airflow_provider_tts.operators.submit import from_submitted
from airflow_provider_tts.renames import request_retry_overrides
from airflow_provider_tts.waiting import Waiter, WaitPolicy, poll_once, seconds

if TYPE_CHECKING:
    from airflow.sdk import Context, XComArg

    from airflow_provider_tts.operators.submit import TtsSubmitOperator

#: Airflow's guidance for reschedule mode: each reschedule costs a scheduler round trip and a new
#: task process, so poll no more often than once a minute. The default interval in reschedule mode.
RESCHEDULE_FLOOR = 60.0

#: Where a rescheduled sensor keeps its count of consecutive failed polls (Airflow 3.3+).
ERRORS_KEY = "airflow_provider_tts.consecutive_poll_errors"


def _exception_classes(*names: str) -> tuple[type[BaseException], ...]:
    """Each named Airflow exception class: the Task SDK's, else ``airflow.exceptions``'.

    Airflow 3.0 and 3.1 keep some of them (``AirflowSensorTimeout``, ``AirflowFailException``,
    ``TaskDeferralTimeout``) only in ``airflow.exceptions``, which is where their task runner raises
    them from; later minors deprecate that module's names, so it is only asked for what the SDK lacks.
    """
    found = []
    for name in names:
        cls = getattr(sdk_exceptions, name, None)
        if cls is None:
            cls = getattr(importlib.import_module("airflow.exceptions"), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


#: What ``soft_fail`` skips on in poke mode (Airflow's BaseSensorOperator.execute): a failure
#: retrying cannot fix and a timeout.
_SOFT_FAIL_ON = _exception_classes("AirflowSensorTimeout", "AirflowTaskTimeout", "AirflowFailException")
#: Airflow's deferral timeout (the trigger row's timeout), which the sensor reports as its own timeout.
_DEFERRAL_TIMEOUT = _exception_classes("TaskDeferralTimeout")


class TtsTaskSensor(TtsHookMixin, BaseSensorOperator):
    """Wait until a Camb.ai or RevidAPI task has finished; return its status (XCom) on success.

    :param tts_task_id: the vendor's task id (templated; an XComArg works).
    :param tts_conn_id: a ``camb_ai`` or ``revid_tts`` connection (templated).
    :param kind: ``tts``, ``text-to-sound`` (Camb.ai) or ``srt-to-speech`` (RevidAPI).
    :param submitted: instead of ``tts_task_id``, the upstream ``TtsSubmitOperator``: its output is
        the task id, and its connection id and kind are used, so they need not be repeated (read when
        the DAG is parsed). Without it, ``tts_conn_id`` defaults to ``camb_ai_default`` and ``kind``
        to ``tts``.
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to
        ``[operators] default_deferrable``.
    :param poke_interval: seconds (or a ``timedelta``) between polls at first: Airflow's name for
        :attr:`WaitPolicy.poll_interval <airflow_provider_tts.waiting.WaitPolicy>`; ``poll_interval``,
        the operators' name, is accepted too. Default 5 s, or 60 s in reschedule mode.
    :param timeout: standard sensor timeout, seconds or a ``timedelta``; running out raises
        ``AirflowSensorTimeout`` (no retries; ``soft_fail`` skips instead) in every mode.
    :param wait_policy: the rest of the wait settings (slow-down, not-found grace, failed polls
        allowed in a row); each :class:`~airflow_provider_tts.waiting.WaitPolicy` field may also be
        passed as a keyword argument.
    :param request_retry: overrides of the connection's retry settings for each HTTP request
        (``max_retries``, ``backoff``, ``max_backoff``); the task's own retries stay ``retries``.
    :param retry: the deprecated spelling of ``request_retry`` (a warning says so).

    ``soft_fail`` and ``never_fail`` mean the same in every mode, what they mean in Airflow's poke
    mode: ``soft_fail`` skips on a failure that retrying cannot fix and on a timeout, while a
    transient failure (the API down for ``max_consecutive_errors`` polls) raises and uses the
    task's retries; ``never_fail`` skips on any failure. (Airflow's own deferred path would skip on
    any error; a sensor that skips because the API blinked would hide an outage.)

    In reschedule mode the default interval is 60 s (Airflow's guidance); a shorter one is
    honoured with a warning. Failed polls in a row are counted across reschedules in the
    ``task_state_store`` (Airflow 3.3+); where there is none, a failed poll is followed by more
    polls in the same run until one succeeds or the limit is reached, so the limit holds either way
    (at the cost of the worker slot while the API keeps failing).
    """

    template_fields: Sequence[str] = ("tts_task_id", "tts_conn_id", "kind")
    ui_color = "#d7ecf9"

    def __init__(
        self,
        *,
        tts_task_id: str | XComArg | None = None,
        tts_conn_id: str | None = None,
        kind: str | None = None,
        submitted: TtsSubmitOperator | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float | timedelta | None = None,
        poll_interval: float | timedelta | None = None,
        wait_policy: WaitPolicy | None = None,
        request_retry: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        tts_task_id, tts_conn_id, kind = from_submitted(
            type(self).__name__, submitted, tts_task_id=tts_task_id, tts_conn_id=tts_conn_id, kind=kind
        )
        policy_fields = WaitPolicy.pop_fields(kwargs)
        interval = _one_interval(poke_interval, poll_interval)
        super().__init__(poke_interval=interval if interval is not None else WaitPolicy.poll_interval, **kwargs)
        base = wait_policy
        if base is None and interval is None and self.reschedule:
            base = WaitPolicy(poll_interval=RESCHEDULE_FLOOR, slow_poll_interval=RESCHEDULE_FLOOR)
        self.policy = WaitPolicy.build(base, poll_interval=interval, **policy_fields)
        self.poke_interval = self.policy.poll_interval
        # An XComArg is resolved and a template rendered to str before execute() runs.
        self.tts_task_id = cast("str", tts_task_id)
        self.tts_conn_id = tts_conn_id
        self.kind = kind
        self.deferrable = deferrable
        self.request_retry = request_retry_overrides(type(self).__name__, request_retry, retry)
        self.retry = self.request_retry  # the old name, for code that still reads it
        self._started_at: float | None = None
        self._waiter: Waiter | None = None
        self._stored_errors: int | None = None

    def _check_inputs(self) -> None:
        if not isinstance(self.tts_task_id, str) or not self.tts_task_id.strip():
            raise TtsConfigError(f"tts_task_id rendered to {self.tts_task_id!r}; expected a vendor task id")

    def execute(self, context: Context) -> Any:
        from airflow_provider_tts.triggers.tts import TtsTaskTrigger

        self._check_inputs()
        self._started_at = time.time()
        if self.reschedule:
            first = context["ti"].get_first_reschedule_date(context)
            if isinstance(first, str):  # Airflow 3.0 returns the ISO string the API sent
                first = datetime.fromisoformat(first)
            if first is not None:
                self._started_at = first.timestamp()
            elif self.policy.poll_interval < RESCHEDULE_FLOOR:
                self.log.warning(
                    "Reschedule mode with a %.0f s poll interval: every poll costs a scheduler round trip "
                    "and a new task process; Airflow advises at least %.0f s (or use deferrable=True)",
                    self.policy.poll_interval,
                    RESCHEDULE_FLOOR,
                )
        if not self.deferrable:
            return super().execute(context)
        # Check once before deferring: a task that is already finished never needs the triggerer.
        # Outside BaseSensorOperator.execute, so soft_fail is applied here as it is there.
        with self._skip_as_in_poke_mode():
            result = self.poke(context)
        if result.is_done:
            return result.xcom_value
        self.defer(
            trigger=TtsTaskTrigger(
                tts_conn_id=self.tts_conn_id,
                tts_task_id=self.tts_task_id,
                kind=self.kind,
                deadline=self._started_at + self.timeout,
                started_at=self._started_at,
                request_retry=self.request_retry,
                **self.policy.to_kwargs(),
            ),
            method_name="execute_complete",
            # Airflow turns this into AirflowSensorTimeout (soft_fail honoured); the trigger keeps
            # its own deadline as well, so the wait ends even if this timeout is not enforced.
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Context) -> PokeReturnValue:
        """One poll through the shared :class:`Waiter`; raises what the trigger's event would."""
        from airflow_provider_tts.triggers.tts import status_from_event

        waiter = self._get_waiter(context)
        event = poll_once(self.hook, waiter)
        if event is None and self.reschedule and waiter.errors and self._state_store(context) is None:
            event = self._poll_through_error_streak(waiter)
        self._save_errors(context, waiter.errors)
        if event is None:
            if not self.exponential_backoff:
                # The policy's schedule (faster at first, slower after slow_after) in poke and
                # reschedule mode too: Airflow reads the public poke_interval after every poke to
                # decide when the next one is due, so the schedule goes in through it (with
                # exponential_backoff, Airflow's own backoff from the first interval applies).
                self.poke_interval = self.policy.interval(waiter.elapsed())
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=status_from_event(event, self.tts_task_id).to_xcom())

    def _get_waiter(self, context: Context) -> Waiter:
        if self._waiter is None:
            errors = self._load_errors(context) if self.reschedule else 0
            self._waiter = Waiter(
                self.policy,
                tts_task_id=self.tts_task_id,
                kind=self.kind,
                started_at=self._started_at if self._started_at is not None else time.time(),
                deadline=None,  # BaseSensorOperator enforces the timeout in poke and reschedule modes
                logger=self.log,
                errors=errors,
            )
        return self._waiter

    def _poll_through_error_streak(self, waiter: Waiter) -> dict[str, Any] | None:
        """Without a store to count failed polls across reschedules, finish the streak in this run."""
        while waiter.errors and waiter.elapsed() <= self.timeout:
            time.sleep(min(waiter.policy.interval(waiter.elapsed()), max(self.timeout - waiter.elapsed(), 0.0)))
            event = poll_once(self.hook, waiter)
            if event is not None:
                return event
        return None

    @staticmethod
    def _state_store(context: Context) -> Any:
        # Feature detection: Airflow 3.3+ puts a task_state_store in the context; older ones do not.
        return cast("Mapping[str, Any]", context).get("task_state_store")

    def _load_errors(self, context: Context) -> int:
        store = self._state_store(context)
        saved = store.get(ERRORS_KEY) if store is not None else None
        errors = 0
        # The count belongs to one try: a retry (a new try) starts afresh.
        if isinstance(saved, dict) and saved.get("try_number") == getattr(context.get("ti"), "try_number", None):
            count = saved.get("errors")
            errors = count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0
        self._stored_errors = errors
        return errors

    def _save_errors(self, context: Context, errors: int) -> None:
        store = self._state_store(context) if self.reschedule else None
        if store is None or errors == self._stored_errors:
            return  # written only when the count changes: most pokes cost no store call
        store.set(ERRORS_KEY, {"try_number": getattr(context.get("ti"), "try_number", None), "errors": errors})
        self._stored_errors = errors

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: validate the event; success returns the status dict."""
        from airflow_provider_tts.triggers.tts import status_from_event

        try:
            return status_from_event(event, self.tts_task_id).to_xcom()
        except TtsWaitTimeoutError as exc:
            raise AirflowSensorTimeout(str(exc)) from None

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        # BaseSensorOperator's version skips on *any* error under soft_fail; apply poke mode's rule.
        with self._skip_as_in_poke_mode():
            try:
                return BaseOperator.resume_execution(self, next_method, next_kwargs, context)
            except _DEFERRAL_TIMEOUT as exc:
                raise AirflowSensorTimeout(str(exc)) from exc

    @contextmanager
    def _skip_as_in_poke_mode(self) -> Iterator[None]:
        """Turn an exception into a skip exactly where BaseSensorOperator.execute's poke loop would."""
        try:
            yield
        except AirflowSkipException:
            raise
        except _SOFT_FAIL_ON as exc:
            if self.soft_fail or self.never_fail:
                flag = "soft_fail" if self.soft_fail else "never_fail"
                raise AirflowSkipException(f"Skipping due to {flag} is set to True: {exc}") from exc
            raise
        except Exception as exc:
            if self.never_fail:
                raise AirflowSkipException(f"Skipping due to never_fail is set to True: {exc}") from exc
            raise


def _one_interval(poke_interval: Any, poll_interval: Any) -> float | None:
    """The first poll interval from Airflow's name or the operators' name; both must agree."""
    values = [
        seconds(value, name, allow_zero=False)
        for name, value in (
            ("poke_interval (WaitPolicy.poll_interval)", poke_interval),
            ("poll_interval", poll_interval),
        )
        if value is not None
    ]
    if len(set(values)) > 1:
        raise TtsConfigError(
            f"poke_interval ({values[0]} s) and poll_interval ({values[1]} s) name the same setting; give one"
        )
    return values[0] if values else None
