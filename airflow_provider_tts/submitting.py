"""The one submit procedure: validate, record the intent, pay once, re-attach on a retry.

:class:`~airflow_provider_tts.operators.submit.TtsSubmitOperator` and the one-task operators of
:mod:`airflow_provider_tts.operators.text_to_storage` both create vendor tasks, and both must
keep the same promise across Airflow's retries and clears: a request is paid for once. So the
procedure lives here, once, and each operator hands it its hook, its kind and its fields:

1. every field is validated against the vendor's documented body (nothing invalid is recorded
   or sent), and a vendor that stores a caller's reference (RevidAPI's ``id``) gets a
   deterministic one derived from the task instance;
2. an earlier try's record (:mod:`airflow_provider_tts.submissions`) is honoured: the same request
   re-attaches to its task while that task is pending or succeeded; an earlier create whose answer
   never arrived stops with :class:`~airflow_provider_tts.exceptions.TtsSubmitUncertainError`
   (unless ``on_uncertain_submit="resubmit"``);
3. otherwise the intent is recorded *before* the create call and the vendor's task id right after.

This module imports no operator: the operators import it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_tts.exceptions import TtsConfigError, TtsError, TtsSubmitUncertainError
from airflow_provider_tts.fingerprint import request_fingerprint
from airflow_provider_tts.submissions import (
    MarkerGuard,
    SubmitIdentity,
    SubmitLedger,
    SubmitRecord,
    TtsLedgerError,
    outcome_unknown,
    select_ledger,
)

if TYPE_CHECKING:
    import logging

    from airflow.sdk import Context

    from airflow_provider_tts.hooks.tts import TtsHook
    from airflow_provider_tts.waiting import WaitPolicy

#: What the operators do when an earlier create call's outcome is unknown.
UNCERTAIN_SUBMIT_POLICIES: tuple[str, ...] = ("fail", "resubmit")

UncertainSubmitPolicy = Literal["fail", "resubmit"]


def check_uncertain_policy(value: Any) -> UncertainSubmitPolicy:
    """``on_uncertain_submit`` as given, or a :class:`TtsConfigError` naming what arrived (at parse time)."""
    if value not in UNCERTAIN_SUBMIT_POLICIES:
        expected = ", ".join(UNCERTAIN_SUBMIT_POLICIES)
        raise TtsConfigError(f"on_uncertain_submit must be one of {expected}, got {value!r}")
    return value  # type: ignore[no-any-return]


#: Operator arguments whose value reaches the create body under another name.
_RENAMED: dict[str, str] = {"caller_id": "id", "srt": "subtitles"}


def create_field_name(argument: str) -> str:
    """The create-body field an operator argument becomes (``caller_id`` is ``id``, ``srt`` is ``subtitles``)."""
    return _RENAMED.get(argument, argument)


def create_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The vendor create body's fields from an operator's (rendered) arguments.

    Unset (None) arguments are left out; ``caller_id`` is sent as the vendor's ``id``; ``srt``
    (SRT text) is parsed into ``subtitles`` cues here, so a malformed file names its line before
    anything is paid for.
    """
    from airflow_provider_tts.srt import parse_srt

    fields = {name: value for name, value in values.items() if value is not None}
    if "caller_id" in fields:
        fields["id"] = fields.pop("caller_id")
    if "srt" in fields:
        if "subtitles" in fields:
            raise TtsConfigError("give either srt (SRT text) or subtitles (a cue list), not both")
        fields["subtitles"] = parse_srt(fields.pop("srt"))
    return fields


class _RecordGuard(MarkerGuard):
    """A one-task operator's submit record, kept only while its create is on the wire.

    The record ("an intent, no task id") tells a later try that a create may have been paid for.
    A create refused with nothing created (429, 503) waits up to ``max_backoff`` seconds before
    the transport resends it; a worker killed in that sleep must not leave the record behind, or
    the next try stops as uncertain although nothing was paid. So the record is discarded before
    the sleep and written again before the resend (a write that fails sends nothing).
    """

    def __init__(self, ledger: SubmitLedger, intent: SubmitRecord, log: logging.Logger | Any) -> None:
        super().__init__(log)
        self.ledger = ledger
        self.intent = intent

    def what(self) -> str:
        return str(self.ledger.where)

    def drop(self) -> None:
        self.ledger.discard()

    def retake(self) -> None:
        try:
            self.ledger.save(self.intent)
        except Exception as exc:
            raise TtsLedgerError(
                f"could not record the create again in {self.ledger.where} before resending it "
                f"({type(exc).__name__}: {exc}); nothing was sent, a retry of this task is safe"
            ) from None


class SubmitOnce:
    """Creates one vendor task per Airflow task instance, whatever its retries do.

    :param hook: the hook of the operator's connection.
    :param kind: the task kind (rendered).
    :param policy: the wait policy; its not-found grace decides whether a recorded task that is
        not found yet is still "not visible yet" when a retry re-attaches.
    :param durable: record each submission so retries re-attach and never pay blindly twice.
    :param on_uncertain_submit: ``"fail"`` or ``"resubmit"``, see
        :class:`~airflow_provider_tts.operators.submit.TtsSubmitOperator`.
    :param log: the operator's logger, so the task log says what happened.
    :param api: the API the connection must speak (an operator typed for one vendor); None: any.
    :param owner: the operator class's name, for the error when the connection speaks another API.
    """

    def __init__(
        self,
        hook: TtsHook,
        *,
        kind: str,
        policy: WaitPolicy,
        durable: bool,
        on_uncertain_submit: UncertainSubmitPolicy,
        log: logging.Logger | Any,
        api: str | None = None,
        owner: str = "",
    ) -> None:
        self.hook = hook
        self.kind = kind
        self.policy = policy
        self.durable = durable
        self.on_uncertain_submit = on_uncertain_submit
        self.log = log
        self.api = api
        self.owner = owner

    def ledger(self, context: Context) -> SubmitLedger | None:
        """Where this task instance's submission is recorded; None when ``durable`` is off or impossible."""
        if not self.durable:
            return None
        return select_ledger(context, SubmitIdentity.from_context(context))

    def submit(self, context: Context, fields: Mapping[str, Any]) -> tuple[str, SubmitLedger | None]:
        """The vendor task id this task instance pays for (once), and the ledger that records it."""
        vendor = self.hook.vendor
        if self.api is not None and vendor.api != self.api:
            raise TtsConfigError(
                f"connection {self.hook.tts_conn_id!r} is a {vendor.api} connection; {self.owner} needs a "
                f"{self.api} connection"
            )
        kind = vendor.check_kind(self.kind)
        fields = dict(fields)
        reference_field = vendor.client_reference_field
        identity = SubmitIdentity.from_context(context)
        if reference_field is not None and identity is not None and fields.get(reference_field) is None:
            fields[reference_field] = identity.client_reference()
        # Validate everything the vendor would check before anything is recorded or sent.
        body = vendor.submit_request(kind, fields).json
        intent = SubmitRecord(
            fingerprint=request_fingerprint(vendor.api, kind, body or {}),
            requested_at=time.time(),
            client_reference=fields.get(reference_field) if reference_field is not None else None,
        )
        ledger = self.ledger(context)
        if ledger is None and self.durable:
            self.log.warning(
                "No durable record is possible here (no task_state_store and no task instance in the context): "
                "a retry of this task cannot know what this try submitted"
            )
        earlier = ledger.load() if ledger is not None else None
        tts_task_id = self._reattach(earlier, intent, ledger) if earlier is not None else None
        if tts_task_id is None:
            tts_task_id = self._submit(kind, fields, intent, ledger)
        return tts_task_id, ledger

    def finished(self, ledger: SubmitLedger | None) -> None:
        """The task instance succeeded: let the ledger drop what only a retry needed."""
        if ledger is not None:
            ledger.finished()

    def _reattach(self, earlier: SubmitRecord, intent: SubmitRecord, ledger: SubmitLedger | None) -> str | None:
        """The task an earlier try created, if this try may use it; None to submit afresh."""
        if earlier.fingerprint != intent.fingerprint:
            self.log.warning(
                "An earlier try submitted %s for a different request; the request changed since, so it is "
                "submitted afresh",
                repr(earlier.tts_task_id) if earlier.tts_task_id else "a create whose outcome is unknown",
            )
            return None
        if earlier.tts_task_id is None:
            message = self.uncertain_message(earlier, ledger, cause=None)
            if self.on_uncertain_submit == "fail":
                raise TtsSubmitUncertainError(message)
            self.log.warning("%s Resubmitting, as on_uncertain_submit='resubmit' asks.", message)
            return None
        status = self.hook.get_task_status(earlier.tts_task_id, self.kind)
        self.log.info(
            "Task %s from an earlier try (recorded in %s) is %s (%s)",
            earlier.tts_task_id,
            ledger.where if ledger is not None else "no ledger",
            status.state,
            status.vendor_status,
        )
        # The same rule as every wait: "not found" shortly after the create means "not visible yet".
        age = time.time() - (earlier.submitted_at or earlier.requested_at)
        if self.policy.verdict(status, age) == "failed":
            self.log.warning("Task %s failed; submitting the request afresh", earlier.tts_task_id)
            return None
        self.log.info("Re-attaching to task %s instead of submitting again", earlier.tts_task_id)
        return earlier.tts_task_id

    def _submit(self, kind: str, fields: dict[str, Any], intent: SubmitRecord, ledger: SubmitLedger | None) -> str:
        """Record the intent, send the create call, record the id; an unknown outcome stops here."""
        guard = None
        if ledger is not None:
            ledger.save(intent)  # before the call: a worker killed during it leaves this behind
            guard = _RecordGuard(ledger, intent, self.log)  # ... but not during a refused create's backoff
        try:
            submission = self.hook.submit_task(kind, fields, guard=guard)
        except Exception as exc:
            if not outcome_unknown(exc):
                self._forget(ledger)  # nothing was created: a retry may submit
                raise
            if self.on_uncertain_submit == "resubmit":
                raise
            raise TtsSubmitUncertainError(self.uncertain_message(intent, ledger, cause=exc)) from exc
        if ledger is not None:
            try:
                ledger.save(intent.submitted(submission.tts_task_id))
            except Exception as exc:
                raise TtsSubmitUncertainError(
                    f"{self.hook.api} created task {submission.tts_task_id!r}, but recording it in {ledger.where} "
                    f"failed ({type(exc).__name__}: {exc}); not continuing, so that no retry submits it again. "
                    f"Wait for that task with TtsTaskSensor(tts_task_id={submission.tts_task_id!r}), or set "
                    "on_uncertain_submit='resubmit' and clear this task to pay for a new one."
                ) from exc
        return submission.tts_task_id

    def _forget(self, ledger: SubmitLedger | None) -> None:
        if ledger is None:
            return
        try:
            ledger.discard()
        except Exception as exc:  # the create's own error is the one to report
            self.log.warning("Could not remove the intent from %s (%s: %s)", ledger.where, type(exc).__name__, exc)

    def uncertain_message(self, intent: SubmitRecord, ledger: SubmitLedger | None, cause: BaseException | None) -> str:
        """What happened, what it may have cost, and what the user can do about it."""
        when = datetime.fromtimestamp(intent.requested_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        call = f"the {self.hook.api} {self.kind} create call sent at {when}"
        if cause is None:
            head = f"An earlier try of this task never recorded the answer to {call} (the worker stopped mid-call)"
        else:
            detail = str(cause) if isinstance(cause, TtsError) else f"{type(cause).__name__}: {cause}"
            head = f"The answer to {call} was lost after the request was sent ({detail})"
        reference = f" whose reference id is {intent.client_reference!r}" if intent.client_reference else ""
        record = f" The record is in {ledger.where}." if ledger is not None else ""
        return (
            f"{head}. The vendor may have created, and billed, a task whose id Airflow never received, so it is not "
            f"sent again (that could pay twice). Look in the {self.hook.api} dashboard for a task created around "
            f"that time{reference}: if there is one, wait for it with TtsTaskSensor(tts_task_id=<its id>); if "
            "there is none, or paying twice is acceptable, set on_uncertain_submit='resubmit' and clear this task."
            f"{record}"
        )
