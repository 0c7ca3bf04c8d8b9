"""Where the submit operator records what it is about to pay for, on every Airflow 3.

A create call costs money and neither vendor de-duplicates it, so a retry of the submitting task
must learn what earlier tries did. Two facts are written, in this order:

1. an **intent** (the request's fingerprint) *before* the create call, and
2. the vendor's **task id** as soon as the call returns.

A later try that finds an id re-attaches to that task (while the fingerprint matches). One that
finds an intent without an id knows that an earlier try sent a create whose answer never arrived
(a worker killed mid-call, a 502 or a read timeout after sending): the vendor may have created and
billed a task, so the operator stops with :class:`~airflow_provider_tts.exceptions.TtsSubmitUncertainError`
instead of paying blindly a second time.

Two ledgers keep the record, picked at run time by what the task's context offers
(:func:`select_ledger`), never by comparing version numbers:

* :class:`TaskStateStoreLedger`: Airflow 3.3+'s ``task_state_store``, scoped to the task
  instance by Airflow itself, kept across retries and clears, expired by ``[state_store]``.
* :class:`VariableLedger`: below 3.3, one Airflow Variable per task instance (dag, run, task and
  map index; never the try number). Variables go through the API server, which is the only access
  an Airflow 3 worker has; XCom cannot serve, as Airflow 3 clears it before each new try.

Neither holds a secret: a fingerprint, a vendor task id, a client reference, timestamps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_tts.exceptions import TtsError

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitIdentity:
    """Which task instance a submission belongs to: stable across tries, distinct across runs."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    @classmethod
    def from_context(cls, context: Context | Mapping[str, Any]) -> SubmitIdentity | None:
        """The identity of the running task instance, or None when the context has none (unit tests)."""
        ti = context.get("ti")
        if ti is None:
            return None
        dag_id, run_id, task_id = (getattr(ti, name, None) for name in ("dag_id", "run_id", "task_id"))
        if not (isinstance(dag_id, str) and isinstance(run_id, str) and isinstance(task_id, str)):
            return None
        map_index = getattr(ti, "map_index", -1)
        return cls(dag_id, run_id, task_id, map_index if isinstance(map_index, int) else -1)

    def digest(self) -> str:
        """sha256 hex of the four parts, separated by a byte no Airflow identifier contains."""
        text = "\x1f".join((self.dag_id, self.run_id, self.task_id, str(self.map_index)))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def client_reference(self) -> str:
        """The reference sent to a vendor that stores one with the task (RevidAPI's ``id``).

        Deterministic, so every try of one task instance sends the same value and a duplicate can
        be found vendor-side; bounded and URL-safe whatever the run id looks like.
        """
        return f"airflow-{self.digest()[:32]}"

    def describe(self) -> str:
        where = f"dag {self.dag_id!r}, run {self.run_id!r}, task {self.task_id!r}"
        return where if self.map_index < 0 else f"{where}, map index {self.map_index}"


@dataclass(frozen=True)
class SubmitRecord:
    """What a ledger holds for one task instance.

    :param fingerprint: the request's :func:`~airflow_provider_tts.fingerprint.request_fingerprint`.
    :param requested_at: when the create call was about to be sent (epoch seconds).
    :param tts_task_id: the vendor's task id; None while the outcome of the call is unknown.
    :param client_reference: the reference the vendor stores with the task, if one was sent.
    :param submitted_at: when the vendor's answer arrived.
    """

    fingerprint: str
    requested_at: float
    tts_task_id: str | None = None
    client_reference: str | None = None
    submitted_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, value: Any) -> SubmitRecord | None:
        """Parse a stored record; anything else (hand-edited, foreign) is logged and ignored."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        try:
            if not isinstance(value, dict):
                raise TypeError(type(value).__name__)
            record = cls(
                fingerprint=str(value["fingerprint"]),
                requested_at=float(value["requested_at"]),
                tts_task_id=_optional_str(value.get("tts_task_id")),
                client_reference=_optional_str(value.get("client_reference")),
                submitted_at=None if value.get("submitted_at") is None else float(value["submitted_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("Ignoring an unreadable submit record (%s: %s)", type(exc).__name__, exc)
            return None
        return record

    def submitted(self, tts_task_id: str) -> SubmitRecord:
        """This intent, now with the vendor's task id."""
        return SubmitRecord(self.fingerprint, self.requested_at, tts_task_id, self.client_reference, time.time())


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class SubmitLedger(Protocol):
    """A durable record of one task instance's submission, surviving a killed worker and a retry."""

    #: Where the record lives, in words for log lines and error messages.
    where: str

    def load(self) -> SubmitRecord | None:
        """The record an earlier try left, or None."""

    def save(self, record: SubmitRecord) -> None:
        """Write ``record`` durably; return only once a later try is sure to read it."""

    def discard(self) -> None:
        """Forget the record: the create call provably created nothing."""

    def finished(self) -> None:
        """The task instance succeeded: drop what only a retry would have needed, if bounded storage asks."""


class TaskStateStoreLedger:
    """Airflow 3.3+'s ``task_state_store``: scoped, retried, cleared and expired by Airflow itself.

    The record outlives success (``[state_store] clear_on_success`` is off by default), so a task
    cleared after success re-attaches to its audio when the request is unchanged.
    """

    key = "tts_submit"
    where = "the task state store (key 'tts_submit')"

    def __init__(self, store: Any) -> None:
        self.store = store

    def load(self) -> SubmitRecord | None:
        value = self.store.get(self.key)
        return None if value is None else SubmitRecord.from_json(value)

    def save(self, record: SubmitRecord) -> None:
        # The Task SDK waits for the supervisor's answer, so the write is durable once this returns.
        self.store.set(self.key, record.to_json())

    def discard(self) -> None:
        self.store.delete(self.key)

    def finished(self) -> None:
        """Kept: expiry is the store's job, and a clear after success may re-attach."""


class VariableApi(Protocol):
    """The three calls of ``airflow.sdk.Variable`` the fallback ledger makes (Task SDK 1.0+, Airflow 3.0+)."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: str, description: str | None = None) -> None: ...

    def delete(self, key: str) -> None: ...


class _SdkVariables:
    """``airflow.sdk.Variable``, imported when first used (it needs a running task's supervisor)."""

    def get(self, key: str, default: Any = None) -> Any:
        from airflow.sdk import Variable

        return Variable.get(key, default=default)

    def set(self, key: str, value: str, description: str | None = None) -> None:
        from airflow.sdk import Variable

        Variable.set(key, value, description=description)

    def delete(self, key: str) -> None:
        from airflow.sdk import Variable

        Variable.delete(key)


def variable_api() -> VariableApi:
    """The Variable access the fallback ledger uses (a seam for tests outside a task runner)."""
    return _SdkVariables()


class TtsLedgerError(TtsError):
    """The intent could not be recorded, so nothing was sent; a retry of the Airflow task is safe."""


class VariableLedger:
    """Below Airflow 3.3: one Variable per task instance, ``tts_submit.<hash of dag, run, task, map index>``.

    Bounded by deleting the record when the task instance succeeds: success is the end of every
    retry, and a record is only kept while it can still prevent a second payment. What stays is the
    record of a task instance that did not succeed (failed, or stopped on an uncertain submit), which
    is exactly the evidence its owner needs; its description names the DAG, run and task, so it can
    be found and deleted in the UI. The price of bounding: a task cleared *after success* submits
    afresh on these versions, where the task state store would have re-attached.

    The intent is read back after writing: Task SDK 1.0 (Airflow 3.0) sends ``Variable.set``
    without waiting for an answer and logs rather than raises a failed write, and a create must not
    be sent on the strength of an intent that was never stored.
    """

    prefix = "tts_submit."

    def __init__(self, identity: SubmitIdentity, variables: VariableApi) -> None:
        self.identity = identity
        self.variables = variables
        self.key = f"{self.prefix}{identity.digest()[:40]}"
        self.where = f"Airflow Variable {self.key!r}"

    def load(self) -> SubmitRecord | None:
        value = self.variables.get(self.key, None)
        return None if value is None else SubmitRecord.from_json(value)

    def save(self, record: SubmitRecord) -> None:
        description = f"airflow-provider-tts submit record of {self.identity.describe()}; deleted when it succeeds"
        self.variables.set(self.key, json.dumps(record.to_json(), sort_keys=True), description=description)
        if self.load() != record:
            raise TtsLedgerError(
                f"could not record the submit of {self.identity.describe()} in {self.where} (the value read back "
                "differs); nothing was sent to the vendor"
            )

    def discard(self) -> None:
        self.variables.delete(self.key)

    def finished(self) -> None:
        try:
            self.variables.delete(self.key)
        except Exception as exc:  # cleanup must never fail a task that succeeded
            log.warning("Could not delete %s after success (%s: %s)", self.where, type(exc).__name__, exc)


def select_ledger(context: Context | Mapping[str, Any], identity: SubmitIdentity | None) -> SubmitLedger | None:
    """The task state store when this Airflow offers one, else a Variable when the task is known.

    Feature detection: ``task_state_store`` is in the context on Airflow 3.3+ and absent before.
    None when neither is possible (a bare context outside a task runner).
    """
    store = context.get("task_state_store")
    if store is not None:
        return TaskStateStoreLedger(store)
    if identity is not None:
        return VariableLedger(identity, variable_api())
    return None


def outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed create call may still have created (and billed) a task.

    The transport resends a request only when it provably was not processed (429, 503, a
    connection never opened), and refuses to resend a create after anything else that a GET would
    survive (other 5xx, a read timeout, a dropped connection, a garbled 2xx). Exactly those are
    the unknown outcomes. A 4xx rejection, an auth failure or a refused connection created
    nothing. An exception that is not a :class:`TtsError` is a surprise, and a surprise proves nothing.
    """
    # The retry rules live with the transport, which a DAG file never needs at parse time.
    from airflow_provider_tts.transport.retry import is_retryable

    if not isinstance(exc, TtsError):
        return True
    return is_retryable(exc, idempotent=True) and not is_retryable(exc, idempotent=False)


class MarkerGuard:
    """A ``transport.retry.AttemptGuard`` for a "may have been paid" marker its caller can drop and retake.

    Both paying callers (a batch's request-cache claim, a one-task operator's submit record) need the
    same bookkeeping around a refused create's backoff and a long wait for the pacer: drop the marker
    before the wait, and take it back before the send only if it was dropped. A marker that could
    not be dropped stays (logged), as it would without a guard, and is then not taken back.
    Subclasses say how: :meth:`drop` and :meth:`retake` (which raises to send nothing), and what
    the marker is, for the log (:meth:`what`).
    """

    def __init__(self, log: logging.Logger | Any) -> None:
        self.log = log
        self.dropped = False

    def what(self) -> str:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def retake(self) -> None:
        raise NotImplementedError

    def refused(self) -> None:
        if self.dropped:  # already gone (a pacer wait after a backoff)
            return
        try:
            self.drop()
        except Exception as exc:  # the marker stays, as it would without a guard
            self.log.warning("Could not let go of %s while it waited (%s: %s)", self.what(), type(exc).__name__, exc)
            return
        self.dropped = True

    def resending(self) -> None:
        if self.dropped:
            self.retake()
            self.dropped = False
