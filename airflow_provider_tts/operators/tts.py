"""Operators: submit text-to-speech tasks, and stream a finished task's audio into object storage.

``TtsSubmitOperator`` creates the remote task once per Airflow task instance: on Airflow 3.3+ the
vendor's task id is kept in the ``task_state_store`` before anything else happens, so a retry (a
killed worker, a failed wait) re-attaches to the task it already paid for instead of creating
another.

``TtsAudioToStorageOperator`` waits for the remote task when it is not finished (deferring to
:class:`~airflow_provider_tts.triggers.tts.TtsTaskTrigger`, or polling in the worker when
``deferrable=False``), then streams the audio straight from the HTTP response into the destination
through :mod:`airflow_provider_tts.storage`: constant memory, atomic, verified.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, cast

from airflow.sdk import Asset, AssetAlias, BaseOperator

from airflow_provider_tts.compat import conf
from airflow_provider_tts.connection import DEFAULT_CONN_IDS
from airflow_provider_tts.exceptions import TtsConfigError, TtsError, TtsSubmitUncertainError
from airflow_provider_tts.fingerprint import request_fingerprint
from airflow_provider_tts.status import KINDS
from airflow_provider_tts.storage import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_BYTES,
    OVERWRITE_POLICIES,
    OverwritePolicy,
    TtsStorageError,
    check_writable,
    destination_path,
    extension_for,
    is_folder,
    store_stream,
)
from airflow_provider_tts.submissions import (
    SubmitIdentity,
    SubmitLedger,
    SubmitRecord,
    outcome_unknown,
    select_ledger,
)
from airflow_provider_tts.triggers.tts import TtsTaskTrigger, status_from_event
from airflow_provider_tts.waiting import Waiter, WaitPolicy, wait_sync

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath, XComArg

    from airflow_provider_tts.hooks.tts import TtsHook
    from airflow_provider_tts.status import TtsTaskStatus


def _templated(value: Any) -> bool:
    return not isinstance(value, str) or "{{" in value or "{%" in value


#: Create-call fields DAG authors may pass, across both vendors; each vendor's documented model then
#: decides which apply to its kinds (an inapplicable one is an error naming it, before any request).
SUBMIT_FIELDS: tuple[str, ...] = (
    "text", "voice_id", "language", "gender", "age", "project_name", "project_description", "folder_id",
    "prompt", "duration", "audio_type",
    "engine", "voice", "speed", "pitch", "webhook_url", "caller_id",
    "subtitles", "srt", "srt_url", "video_url", "audio_name", "mode", "add_silence", "output_format",
)  # fmt: skip

#: What ``TtsSubmitOperator`` does when an earlier create call's outcome is unknown.
UNCERTAIN_SUBMIT_POLICIES: tuple[str, ...] = ("fail", "resubmit")


class TtsSubmitOperator(BaseOperator):
    """Create a remote text-to-speech task and return its vendor task id (XCom).

    Required fields, by connection type and ``kind`` (everything else is optional):

    * Camb.ai ``tts``: ``text``; ``voice_id``, an integer voice id from Camb's voice list (e.g.
      ``20303``); ``language``, Camb's integer language id (``1`` is English, US).
    * Camb.ai ``text-to-sound``: ``prompt``.
    * RevidAPI ``tts``: ``text``.
    * RevidAPI ``srt-to-speech``: exactly one of ``srt`` (SRT text, parsed here into cues;
      malformed SRT names the line), ``subtitles`` (a cue list) or ``srt_url``.

    Optional fields follow each vendor's documented create body. Camb.ai ``tts``: ``gender``
    (0, 1, 2 or 9), ``age``, ``project_name``, ``project_description``, ``folder_id``. Camb.ai
    ``text-to-sound``: ``duration`` (seconds, at most 10), ``audio_type`` (``sound``/``music``),
    and the project fields. RevidAPI ``tts``: ``engine`` (``edge``/``capcut``/``google``),
    ``voice_id`` or ``voice``, ``speed`` (0.5-2), ``pitch`` (-20..20), ``webhook_url``,
    ``caller_id`` (sent as ``id``). RevidAPI ``srt-to-speech``: ``voice_id``, ``speed``,
    ``audio_name``, ``mode`` (``merge``/``timeline``), ``add_silence``, ``engine``, ``voice``,
    ``output_format`` (``mp4``/``mp3``/``wav``), ``video_url``. Every input is validated before
    anything is recorded or sent: a missing field is named, nothing invalid is paid for.

    **Paying once.** With ``durable=True`` (the default) the operator records, per task instance,
    the request's fingerprint *before* the create call and the vendor task id right after it
    (:mod:`airflow_provider_tts.submissions`: the task state store on Airflow 3.3+, an Airflow
    Variable before). A later try of the same task instance then:

    * re-attaches to the recorded task while it is pending or succeeded and the request is
      unchanged ("not found" within the 30 s grace of its creation counts as pending: the vendor
      may not have indexed it yet); a failed task, or a request edited since (a cleared task whose
      text changed), is submitted afresh;
    * finds an intent without a task id when an earlier create's answer never arrived (a worker
      killed mid-call, a 502 or a read timeout after sending). The vendor may have created and
      billed that task, so by default (``on_uncertain_submit="fail"``) the task fails without
      using up its retries, saying what to check. A create failing that way in the current try
      fails the same way: retrying would only run into the same unknown.

    RevidAPI stores a caller's reference with each task: unless ``caller_id`` is given, the
    operator sends a deterministic one derived from the DAG, run, task and map index (never the
    try number), which the error message quotes so a duplicate can be found. Camb.ai has none.

    :param tts_conn_id: a ``camb_ai`` or ``revid_tts`` connection (templated).
    :param kind: ``tts``, ``text-to-sound`` (Camb.ai) or ``srt-to-speech`` (RevidAPI).
    :param wait: also wait for the task to finish (deferring like the sensor when ``deferrable``);
        the operator still returns the task id.
    :param deferrable: with ``wait``, wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param wait_timeout: with ``wait``, seconds to wait before failing (default 1 hour).
    :param durable: record each submission so retries re-attach and never pay blindly twice.
    :param on_uncertain_submit: ``"fail"`` (default) stops when an earlier create's outcome is
        unknown; ``"resubmit"`` sends the request again instead (and may pay twice), for pipelines
        where a duplicate costs less than a stop. With ``"resubmit"`` an ambiguous create failure
        stays retryable, so Airflow's retry resubmits.
    """

    template_fields: Sequence[str] = (
        "tts_conn_id", "kind", "text", "prompt", "srt", "subtitles", "srt_url", "voice", "voice_id", "language",
        "project_name", "project_description", "audio_name", "webhook_url", "caller_id",
    )  # fmt: skip
    ui_color = "#fbe3c9"

    def __init__(
        self,
        *,
        tts_conn_id: str = DEFAULT_CONN_IDS["camb_ai"],
        kind: str = "tts",
        wait: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_timeout: float = 3600.0,
        retry: Mapping[str, Any] | None = None,
        durable: bool = True,
        on_uncertain_submit: Literal["fail", "resubmit"] = "fail",
        text: str | XComArg | None = None,
        voice_id: int | str | None = None,
        language: int | str | None = None,
        gender: int | None = None,
        age: int | None = None,
        project_name: str | None = None,
        project_description: str | None = None,
        folder_id: int | None = None,
        prompt: str | XComArg | None = None,
        duration: float | None = None,
        audio_type: str | None = None,
        engine: str | None = None,
        voice: str | None = None,
        speed: float | None = None,
        pitch: float | None = None,
        webhook_url: str | None = None,
        caller_id: str | None = None,
        subtitles: list[dict[str, Any]] | XComArg | None = None,
        srt: str | XComArg | None = None,
        srt_url: str | None = None,
        video_url: str | None = None,
        audio_name: str | None = None,
        mode: str | None = None,
        add_silence: float | None = None,
        output_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not _templated(kind) and kind not in KINDS:
            raise TtsConfigError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        if on_uncertain_submit not in UNCERTAIN_SUBMIT_POLICIES:
            raise TtsConfigError(
                f"on_uncertain_submit must be one of {', '.join(UNCERTAIN_SUBMIT_POLICIES)}, "
                f"got {on_uncertain_submit!r}"
            )
        for name, value in (("text", text), ("prompt", prompt), ("srt", srt)):
            if isinstance(value, str) and not value.strip():
                raise TtsConfigError(f"{name} is empty; expected the words to synthesise")
        self.tts_conn_id = tts_conn_id
        self.kind = kind
        self.wait = wait
        self.deferrable = deferrable
        self.wait_timeout = float(wait_timeout)
        self.retry = dict(retry) if retry else None
        self.durable = durable
        self.on_uncertain_submit: Literal["fail", "resubmit"] = on_uncertain_submit
        self.text, self.voice_id, self.language, self.gender, self.age = text, voice_id, language, gender, age
        self.project_name, self.project_description, self.folder_id = project_name, project_description, folder_id
        self.prompt, self.duration, self.audio_type = prompt, duration, audio_type
        self.engine, self.voice, self.speed, self.pitch = engine, voice, speed, pitch
        self.webhook_url, self.caller_id = webhook_url, caller_id
        self.subtitles, self.srt, self.srt_url, self.video_url = subtitles, srt, srt_url, video_url
        self.audio_name, self.mode, self.add_silence, self.output_format = audio_name, mode, add_silence, output_format

    @cached_property
    def hook(self) -> TtsHook:
        from airflow_provider_tts.hooks.tts import TtsHook

        return TtsHook(tts_conn_id=self.tts_conn_id, retry=self.retry)

    def create_fields(self) -> dict[str, Any]:
        """The vendor create body's fields from the (rendered) arguments; SRT text becomes cues."""
        from airflow_provider_tts.srt import parse_srt

        fields = {name: getattr(self, name) for name in SUBMIT_FIELDS if getattr(self, name) is not None}
        if "caller_id" in fields:
            fields["id"] = fields.pop("caller_id")
        if "srt" in fields:
            if "subtitles" in fields:
                raise TtsConfigError("give either srt (SRT text) or subtitles (a cue list), not both")
            fields["subtitles"] = parse_srt(fields.pop("srt"))
        return fields

    def _ledger(self, context: Context) -> SubmitLedger | None:
        if not self.durable:
            return None
        return select_ledger(context, SubmitIdentity.from_context(context))

    def execute(self, context: Context) -> str:
        vendor = self.hook.vendor
        kind = vendor.check_kind(self.kind)
        fields = self.create_fields()
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
        ledger = self._ledger(context)
        if ledger is None and self.durable:
            self.log.warning(
                "No durable record is possible here (no task_state_store and no task instance in the context): "
                "a retry of this task cannot know what this try submitted"
            )
        earlier = ledger.load() if ledger is not None else None
        tts_task_id = self._reattach(earlier, intent, ledger) if earlier is not None else None
        if tts_task_id is None:
            tts_task_id = self._submit(kind, fields, intent, ledger)
        return self._wait_for(context, tts_task_id, ledger)

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
            message = self._uncertain_message(earlier, ledger, cause=None)
            if self.on_uncertain_submit == "fail":
                raise TtsSubmitUncertainError(message)
            self.log.warning("%s Resubmitting, as on_uncertain_submit='resubmit' asks.", message)
            return None
        status = self.hook.get_task_status(earlier.tts_task_id, self.kind)
        self.log.info("Task %s from an earlier try is %s (%s)", earlier.tts_task_id, status.state, status.vendor_status)
        # The same rule as every wait: "not found" shortly after the create means "not visible yet".
        age = time.time() - (earlier.submitted_at or earlier.requested_at)
        if WaitPolicy().verdict(status, age) == "failed":
            self.log.warning("Task %s failed; submitting the request afresh", earlier.tts_task_id)
            return None
        self.log.info("Re-attaching to task %s instead of submitting again", earlier.tts_task_id)
        return earlier.tts_task_id

    def _submit(self, kind: str, fields: dict[str, Any], intent: SubmitRecord, ledger: SubmitLedger | None) -> str:
        """Record the intent, send the create call, record the id; an unknown outcome stops here."""
        if ledger is not None:
            ledger.save(intent)  # before the call: a worker killed during it leaves this behind
        try:
            submission = self.hook.submit_task(kind, fields)
        except Exception as exc:
            if not outcome_unknown(exc):
                self._forget(ledger)  # nothing was created: a retry may submit
                raise
            if self.on_uncertain_submit == "resubmit":
                raise
            raise TtsSubmitUncertainError(self._uncertain_message(intent, ledger, cause=exc)) from exc
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

    def _uncertain_message(self, intent: SubmitRecord, ledger: SubmitLedger | None, cause: BaseException | None) -> str:
        """What happened, what it may have cost, and what the user can do about it."""
        when = datetime.fromtimestamp(intent.requested_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
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

    def _wait_for(self, context: Context, tts_task_id: str, ledger: SubmitLedger | None) -> str:
        if not self.wait:
            self._finished(ledger)
            return tts_task_id
        started_at = time.time()
        waiter = Waiter(
            WaitPolicy(),
            tts_task_id=tts_task_id,
            kind=self.kind,
            started_at=started_at,
            deadline=started_at + self.wait_timeout,
            logger=self.log,
        )
        if self.deferrable:
            self.defer(
                trigger=TtsTaskTrigger(
                    tts_conn_id=self.tts_conn_id,
                    tts_task_id=tts_task_id,
                    kind=self.kind,
                    deadline=waiter.deadline,
                    started_at=started_at,
                    retry=self.retry,
                ),
                method_name="execute_complete",
                kwargs={"tts_task_id": tts_task_id},
            )
        status_from_event(wait_sync(self.hook, waiter), tts_task_id)
        self._finished(ledger)
        return tts_task_id

    def _finished(self, ledger: SubmitLedger | None) -> None:
        if ledger is not None:
            ledger.finished()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, tts_task_id: str = "") -> str:
        """Resume after waiting in the triggerer: a failed task raises like the sensor would."""
        result = status_from_event(event, tts_task_id).tts_task_id
        self._finished(self._ledger(context))
        return result


def plain_uri(path: ObjectStoragePath) -> str:
    """The destination's URI without the connection id (what XCom and Asset events carry)."""
    return f"{path.protocol}://{path.path}"


class TtsAudioToStorageOperator(BaseOperator):
    """Wait for a text-to-speech task if needed, then stream its audio into object storage.

    :param tts_task_id: the vendor's task id (templated; an XComArg works).
    :param destination: a URI string or ``ObjectStoragePath`` (templated): ``file:///data/a.flac``,
        ``s3://bucket/audio/a.wav``, any scheme an installed provider registers. Ending in ``/``, it
        names a folder: the file is ``<tts_task_id><extension from the content type>`` inside it.
    :param tts_conn_id: a ``camb_ai`` or ``revid_tts`` connection (templated).
    :param kind: ``tts``, ``text-to-sound`` (Camb.ai) or ``srt-to-speech`` (RevidAPI).
    :param dest_conn_id: the storage connection (e.g. an ``aws`` connection for ``s3://``).
    :param overwrite: when the destination exists: ``skip_if_identical`` (default; the same size and
        sha256 as the new audio means no second write, so a retried pipeline neither rewrites nor
        fails), ``replace``, or ``fail``.
    :param max_bytes: refuse audio larger than this (default 2 GiB), before or while downloading.
    :param chunk_bytes: size of the chunks streamed from HTTP into storage (default 256 KiB).
    :param deferrable: wait in the triggerer rather than in a worker slot; defaults to
        ``[operators] default_deferrable``.
    :param wait_timeout: seconds to wait for the task to finish before failing (default 1 hour).
    :param poll_interval: seconds between polls at first (default 5).
    :param slow_poll_interval: seconds between polls after ``slow_after`` (default 10).
    :param slow_after: seconds after which polling slows down (default 60).
    :param not_found_grace: seconds during which "not found" means "not visible yet" (default 30).
    :param max_consecutive_errors: polls in a row that may fail after retries (default 5).
    :param retry: per-request retry overrides (``max_retries``, ``backoff``, ``max_backoff``).
    :param asset_alias: name of the ``AssetAlias`` outlet used when the destination is only known
        at run time (templated or a folder); a literal file destination is declared as an
        ``Asset`` outlet directly.
    """

    template_fields: Sequence[str] = ("tts_task_id", "destination", "tts_conn_id", "kind", "dest_conn_id")
    ui_color = "#e8f2d9"

    def __init__(
        self,
        *,
        tts_task_id: str | XComArg,
        destination: str | ObjectStoragePath,
        tts_conn_id: str = DEFAULT_CONN_IDS["camb_ai"],
        kind: str = "tts",
        dest_conn_id: str | None = None,
        overwrite: OverwritePolicy = "skip_if_identical",
        max_bytes: int = DEFAULT_MAX_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_timeout: float = 3600.0,
        poll_interval: float = WaitPolicy.poll_interval,
        slow_poll_interval: float = WaitPolicy.slow_poll_interval,
        slow_after: float = WaitPolicy.slow_after,
        not_found_grace: float = WaitPolicy.not_found_grace,
        max_consecutive_errors: int = WaitPolicy.max_consecutive_errors,
        retry: Mapping[str, Any] | None = None,
        asset_alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        if overwrite not in OVERWRITE_POLICIES:
            raise TtsConfigError(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}, got {overwrite!r}")
        if not _templated(kind) and kind not in KINDS:
            raise TtsConfigError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise TtsConfigError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if not isinstance(chunk_bytes, int) or not 4096 <= chunk_bytes <= 64 * 1024**2:
            raise TtsConfigError(f"chunk_bytes must be an integer from 4096 to 64 MiB, got {chunk_bytes!r}")
        if "outlets" not in kwargs:
            kwargs["outlets"] = [self._outlet(destination, asset_alias, kwargs.get("task_id", "audio"))]
        super().__init__(**kwargs)
        # An XComArg is resolved and a template rendered to str before execute() runs.
        self.tts_task_id = cast("str", tts_task_id)
        self.destination = destination
        self.tts_conn_id = tts_conn_id
        self.kind = kind
        self.dest_conn_id = dest_conn_id
        self.overwrite: OverwritePolicy = overwrite
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.deferrable = deferrable
        self.wait_timeout = float(wait_timeout)
        self.retry = dict(retry) if retry else None
        self.policy = WaitPolicy(
            poll_interval=poll_interval,
            slow_poll_interval=slow_poll_interval,
            slow_after=slow_after,
            not_found_grace=not_found_grace,
            max_consecutive_errors=max_consecutive_errors,
        )
        self.asset_alias = asset_alias or f"tts-audio/{kwargs.get('task_id', 'audio')}"

    @staticmethod
    def _outlet(destination: Any, alias: str | None, task_id: str) -> Asset | AssetAlias:
        """An Asset when the destination is a literal file URI; otherwise an alias filled at run time."""
        literal_file = isinstance(destination, str) and not _templated(destination) and not is_folder(destination)
        if literal_file and "://" in destination:
            return Asset(destination)
        return AssetAlias(name=alias or f"tts-audio/{task_id}")

    @cached_property
    def hook(self) -> TtsHook:
        from airflow_provider_tts.hooks.tts import TtsHook

        return TtsHook(tts_conn_id=self.tts_conn_id, retry=self.retry)

    def execute(self, context: Context) -> dict[str, Any]:
        if not isinstance(self.tts_task_id, str) or not self.tts_task_id.strip():
            raise TtsConfigError(f"tts_task_id rendered to {self.tts_task_id!r}; expected a vendor task id")
        self._checked_destination()  # a bad destination fails before any request
        started_at = time.time()
        waiter = Waiter(
            self.policy,
            tts_task_id=self.tts_task_id,
            kind=self.kind,
            started_at=started_at,
            deadline=started_at + self.wait_timeout,
            logger=self.log,
        )
        try:
            event = waiter.on_status(self.hook.get_task_status(self.tts_task_id, self.kind))
        except Exception as exc:
            event = waiter.on_error(exc)
        if event is None:
            if self.deferrable:
                self.defer(
                    trigger=TtsTaskTrigger(
                        tts_conn_id=self.tts_conn_id,
                        tts_task_id=self.tts_task_id,
                        kind=self.kind,
                        deadline=waiter.deadline,
                        started_at=started_at,
                        **self.policy.to_kwargs(),
                        retry=self.retry,
                    ),
                    method_name="execute_complete",
                )
            event = wait_sync(self.hook, waiter)
        return self._store(context, status_from_event(event, self.tts_task_id))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: validate the event, then download."""
        return self._store(context, status_from_event(event, self.tts_task_id))

    def _temp_name(self, context: Context, final_name: str) -> str:
        ti = context.get("ti")
        identity = (
            "/".join(str(getattr(ti, attr, "")) for attr in ("dag_id", "task_id", "run_id", "map_index")) or "manual"
        )
        return f".{final_name}.{hashlib.sha256(identity.encode()).hexdigest()[:12]}.partial"

    def _checked_destination(self) -> ObjectStoragePath:
        """The destination path, validated before any request for audio is made.

        Checks the scheme, that the container exists (a missing bucket is a clear error, not a
        failed upload after the download), and, for a literal file with ``overwrite="fail"``,
        that it does not exist yet.
        """
        destination = destination_path(self.destination, self.dest_conn_id or None)
        folder = is_folder(self.destination)
        check_writable(destination / "probe" if folder else destination)
        if not folder and self.overwrite == "fail" and destination.exists():
            raise TtsStorageError(f"destination {plain_uri(destination)} already exists and overwrite='fail'")
        return destination

    def _store(self, context: Context, status: TtsTaskStatus) -> dict[str, Any]:
        destination = self._checked_destination()
        with self.hook.open_audio(status) as audio:
            path = destination
            if is_folder(self.destination):
                path = destination / f"{status.tts_task_id}{extension_for(audio.content_type)}"
            self.log.info(
                "Streaming %s (%s, %s bytes) to %s",
                audio.url,
                audio.content_type,
                audio.content_length if audio.content_length is not None else "unknown",
                plain_uri(path),
            )
            stored = store_stream(
                audio.iter_chunks(self.chunk_bytes),
                path,
                temp_name=self._temp_name(context, path.name),
                content_type=audio.content_type,
                content_length=audio.content_length,
                tts_task_id=status.tts_task_id,
                overwrite=self.overwrite,
                max_bytes=self.max_bytes,
                chunk_bytes=self.chunk_bytes,
                duration_seconds=status.duration_seconds,
            )
        result = {**stored.to_xcom(), "uri": plain_uri(path)}
        self._emit_asset(context, result["uri"])
        return result

    def _emit_asset(self, context: Context, uri: str) -> None:
        """For a destination known only at run time, tell the alias which asset was written."""
        events = context.get("outlet_events")
        for outlet in self.outlets:
            if isinstance(outlet, AssetAlias) and events is not None:
                events[outlet].add(Asset(uri))
