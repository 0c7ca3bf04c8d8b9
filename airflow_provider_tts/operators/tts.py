"""Operators: submit text-to-speech tasks, and stream a finished task's audio into object storage.

``TtsSubmitOperator`` creates the remote task once per Airflow task instance: on Airflow 3.3+ the
vendor's task id is kept in the ``task_state_store`` before anything else happens, so a retry (a
killed worker, a failed wait) re-attaches to the task it already paid for instead of creating
another.

``TtsAudioToStorageOperator`` waits for the remote task when it is not finished (deferring to
:class:`~airflow_provider_tts.triggers.tts.TtsTaskTrigger`, or polling in the worker when
``deferrable=False``), then streams the audio straight from the HTTP response into the destination
through :mod:`airflow_provider_tts.storage`: constant memory, atomic, verified.

These are the pieces for composing steps (a sensor between them, ids from elsewhere, mapped
batches). One text to one file is one task: the operators of
:mod:`airflow_provider_tts.operators.text_to_storage`, built from these two.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, cast

from airflow.sdk import Asset, AssetAlias, BaseOperator

from airflow_provider_tts.compat import conf
from airflow_provider_tts.confinement import DESTINATIONS, confine
from airflow_provider_tts.connection import DEFAULT_CONN_IDS
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.fingerprint import fingerprint_hex, request_fingerprint
from airflow_provider_tts.lineage import OutletsForTestRuns, asset_event_extra, default_outlet
from airflow_provider_tts.naming import (
    check_file_name,
    default_stem,
    has_audio_extension,
    same_file,
    with_extension,
    with_format_extension,
)
from airflow_provider_tts.objects import listing
from airflow_provider_tts.operators.submitting import (
    SubmitOnce,
    check_uncertain_policy,
    create_fields,
    from_submitted,
)
from airflow_provider_tts.status import KINDS
from airflow_provider_tts.storage import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_BYTES,
    OVERWRITE_POLICIES,
    OverwritePolicy,
    TtsStorageError,
    abort_stale_uploads,
    check_audio_body,
    check_destination,
    check_extension,
    check_writable,
    destination_path,
    is_folder,
    peek,
    store_stream,
)
from airflow_provider_tts.triggers.tts import TtsTaskTrigger, status_from_event
from airflow_provider_tts.waiting import Waiter, WaitPolicy, wait_sync, wait_timeout

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context, ObjectStoragePath, XComArg

    from airflow_provider_tts.cache import CachedAudio, RequestCache
    from airflow_provider_tts.hooks.tts import TtsHook
    from airflow_provider_tts.status import TtsTaskStatus
    from airflow_provider_tts.storage import StoredAudio
    from airflow_provider_tts.submissions import SubmitLedger
    from airflow_provider_tts.transport import AudioStream


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


class TtsSubmitOperator(BaseOperator):
    """Create a remote text-to-speech task and return its vendor task id (XCom).

    Required fields, by connection type and ``kind`` (everything else is optional):

    * Camb.ai ``tts``: ``text``; ``voice_id``, an integer voice id from Camb's voice list (e.g.
      ``20303``); ``language``, a BCP-47 tag (``en-us``) or Camb's integer language id (``1``).
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
    :param timeout: with ``wait``, how long to wait before failing: seconds or a ``timedelta``
        (default 1 hour; ``wait_timeout``, its old name, still works with a deprecation warning).
    :param poll_interval: with ``wait``, seconds (or a ``timedelta``) between polls at first.
    :param wait_policy: with ``wait``, the other wait settings; see
        :class:`~airflow_provider_tts.waiting.WaitPolicy` (its fields may also be passed by name).
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
        timeout: float | timedelta | None = None,
        poll_interval: float | timedelta | None = None,
        wait_policy: WaitPolicy | None = None,
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
        policy_fields = WaitPolicy.pop_fields(kwargs)
        self.timeout = wait_timeout(timeout, kwargs, type(self).__name__)
        self.wait_policy = WaitPolicy.build(wait_policy, poll_interval=poll_interval, **policy_fields)
        super().__init__(**kwargs)
        if not _templated(kind) and kind not in KINDS:
            raise TtsConfigError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        check_uncertain_policy(on_uncertain_submit)
        for name, value in (("text", text), ("prompt", prompt), ("srt", srt)):
            if isinstance(value, str) and not value.strip():
                raise TtsConfigError(f"{name} is empty; expected the words to synthesise")
        self.tts_conn_id = tts_conn_id
        self.kind = kind
        self.wait = wait
        self.deferrable = deferrable
        self.wait_timeout = self.timeout  # the old name, for code that still reads it
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
        return create_fields({name: getattr(self, name) for name in SUBMIT_FIELDS})

    @cached_property
    def submitter(self) -> SubmitOnce:
        """The submit procedure this operator shares with the one-task operators."""
        return SubmitOnce(
            self.hook,
            kind=self.kind,
            policy=self.wait_policy,
            durable=self.durable,
            on_uncertain_submit=self.on_uncertain_submit,
            log=self.log,
        )

    def execute(self, context: Context) -> str:
        tts_task_id, ledger = self.submitter.submit(context, self.create_fields())
        return self._wait_for(context, tts_task_id, ledger)

    def _wait_for(self, context: Context, tts_task_id: str, ledger: SubmitLedger | None) -> str:
        if not self.wait:
            self._finished(ledger)
            return tts_task_id
        started_at = time.time()
        waiter = Waiter(
            self.wait_policy,
            tts_task_id=tts_task_id,
            kind=self.kind,
            started_at=started_at,
            deadline=started_at + self.timeout,
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
                    wait_policy=self.wait_policy,
                ),
                method_name="execute_complete",
                kwargs={"tts_task_id": tts_task_id},
            )
        status_from_event(wait_sync(self.hook, waiter), tts_task_id)
        self._finished(ledger)
        return tts_task_id

    def _finished(self, ledger: SubmitLedger | None) -> None:
        self.submitter.finished(ledger)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, tts_task_id: str = "") -> str:
        """Resume after waiting in the triggerer: a failed task raises like the sensor would."""
        result = status_from_event(event, tts_task_id).tts_task_id
        self._finished(self.submitter.ledger(context))
        return result


def plain_uri(path: ObjectStoragePath) -> str:
    """The destination's URI without the connection id (what XCom and Asset events carry)."""
    return f"{path.protocol}://{path.path}"


def stream_audio_into(
    path: ObjectStoragePath,
    chunks: Iterable[bytes],
    audio: AudioStream,
    status: TtsTaskStatus,
    *,
    temp_name: str,
    retried: bool,
    overwrite: OverwritePolicy,
    max_bytes: int,
    chunk_bytes: int,
) -> StoredAudio:
    """Store one task's opened audio at ``path`` (a checked destination), as every downloading operator does.

    On a retried try, an open multipart upload a killed earlier try left on ``temp_name`` is
    aborted first; then the bytes go through :func:`~airflow_provider_tts.storage.store_stream`.
    """
    if retried:
        abort_stale_uploads(path, temp_name)  # a killed earlier try's open upload
    return store_stream(
        chunks,
        path,
        temp_name=temp_name,
        content_type=audio.content_type,
        content_length=audio.content_length,
        tts_task_id=status.tts_task_id,
        overwrite=overwrite,
        max_bytes=max_bytes,
        chunk_bytes=chunk_bytes,
        duration_seconds=status.duration_seconds,
        checked=True,
    )


class _StoredAudioOutput(OutletsForTestRuns):
    """What every operator that stores audio shares: the file's name, its temporary's, and the one output it reports.

    Shared by :class:`TtsAudioToStorageOperator` and :class:`CambTtsStreamToStorageOperator`, so
    both name files in a folder the same way (:mod:`airflow_provider_tts.naming`) and emit the same
    asset event, hook lineage and OpenLineage facets for the object they wrote.
    """

    if TYPE_CHECKING:
        kind: str
        stored_audio: dict[str, Any] | None
        destination: Any
        file_name: str | None

        @property
        def hook(self) -> TtsHook: ...

    def _given_name(self, folder: bool) -> str | None:
        """The rendered ``file_name``, validated; None when there is none. Raises before any request.

        ``file_name`` names a file *inside* a folder destination: with a file destination it
        would be ignored or contradict it, so it is an error naming both.
        """
        if self.file_name is None:
            return None
        if not folder:
            raise TtsConfigError(
                f"file_name={self.file_name!r} names a file inside a folder, but destination "
                f"{str(self.destination)!r} is a file; end the destination with '/' or drop file_name"
            )
        return check_file_name(self.file_name)

    def _temp_name(self, context: Context, final_name: str) -> str:
        """The temporary's name, fixed per task instance (never the try) so a killed try's leftover is overwritten."""
        ti = context.get("ti")
        identity = (
            "/".join(str(getattr(ti, attr, "")) for attr in ("dag_id", "task_id", "run_id", "map_index")) or "manual"
        )
        return f".{final_name}.{hashlib.sha256(identity.encode()).hexdigest()[:12]}.partial"

    def _emit_asset(self, context: Context, stored: dict[str, Any]) -> None:
        """Record the stored file as this task's one output: asset event, hook lineage, OpenLineage.

        Called once the destination holds the audio (``stored`` is the XCom dict). Every
        ``Asset`` outlet gets the file in its event's ``extra``; an opt-in ``AssetAlias`` gets the
        file's own asset. The destination is reported to the hook lineage collector here, by URI,
        so lineage never depends on how the storage layer wrote it (a temporary and a move, or a
        direct upload): that layer must not report its temporary.
        """
        from airflow.sdk.definitions.asset import AssetRef

        from airflow_provider_tts.compat import get_hook_lineage_collector

        self.stored_audio = dict(stored)
        extra = asset_event_extra(stored, self.kind)
        events = context.get("outlet_events")
        if events is not None:
            for outlet in self.outlets:
                if isinstance(outlet, AssetAlias):
                    events[outlet].add(Asset(stored["uri"]), extra=extra)
                elif isinstance(outlet, Asset | AssetRef):
                    events[outlet].extra.update(extra)
        get_hook_lineage_collector().add_output_asset(context=self.hook, uri=stored["uri"])

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any]:
        """OpenLineage facets of the finished store (called by the OpenLineage provider, if installed).

        The output dataset is the stored object (namespace and name per the OpenLineage naming
        spec: ``file`` + path, ``s3://<bucket>`` + key); run facets carry the vendor job
        (``externalQuery``: task id and API; ``ttsJob``: api, kind, task id, audio duration).
        No input dataset: the text lives with the vendor, and a temporary object is not data.
        """
        from airflow_provider_tts.lineage import operator_lineage

        if self.stored_audio is None:  # failed before storing: nothing to report, no connection lookup
            return operator_lineage(None, api=None, kind=self.kind)
        return operator_lineage(self.stored_audio, api=self.hook.api, kind=self.kind)


#: ``/tts-stream`` body fields the stream operator passes through (each may be templated or not).
STREAM_FIELDS: tuple[str, ...] = (
    "text", "language", "voice_id", "speech_model", "user_instructions", "enhance_named_entities_pronunciation",
    "output_configuration", "voice_settings", "inference_options",
)  # fmt: skip


class TtsAudioToStorageOperator(_StoredAudioOutput, BaseOperator):
    """Wait for a text-to-speech task if needed, then stream its audio into object storage.

    :param tts_task_id: the vendor's task id (templated; an XComArg works).
    :param destination: a URI string or ``ObjectStoragePath`` (templated): ``file:///data/a.flac``,
        ``s3://bucket/audio/a.wav``, any scheme an installed provider registers. Ending in ``/`` (or
        naming an existing folder), it is a folder and the file inside it is named by ``file_name``.
    :param file_name: for a folder destination, the file's name (templated, e.g.
        ``"{{ ds }}-briefing"``); the extension follows the content type unless the name ends in
        one, and one that contradicts the audio is refused. A name with ``/``, ``..``, a leading
        ``.`` or over 200 bytes is refused before any request. Default:
        ``<dag_id>-<task_id>``, plus ``-<map_index>`` zero-padded to 4 digits for a mapped task,
        the same on every re-run of the item, so ``skip_if_identical`` writes no second file (a
        scheduled DAG that keeps every run's audio puts the run in the name, e.g. ``{{ ds }}``).
        The returned ``uri`` says where the bytes went.
    :param tts_conn_id: a ``camb_ai`` or ``revid_tts`` connection (templated).
    :param kind: ``tts``, ``text-to-sound`` (Camb.ai) or ``srt-to-speech`` (RevidAPI).
    :param submitted: instead of ``tts_task_id``, the upstream ``TtsSubmitOperator``: its output is
        the task id, and its connection id and kind are used, so they need not be repeated (read when
        the DAG is parsed). Without it, ``tts_conn_id`` defaults to ``camb_ai_default`` and ``kind``
        to ``tts``.
    :param dest_conn_id: the storage connection (e.g. an ``aws`` connection for ``s3://``).
    :param overwrite: when the destination exists: ``skip_if_identical`` (default; the same size and
        sha256 as the new audio means no second write, so a retried pipeline neither rewrites nor
        fails), ``replace``, or ``fail``.
    :param max_bytes: refuse audio larger than this (default 2 GiB), before or while downloading.
    :param chunk_bytes: size of the chunks streamed from HTTP into storage (default 256 KiB).
    :param deferrable: wait in the triggerer rather than in a worker slot; defaults to
        ``[operators] default_deferrable``.
    :param timeout: how long to wait for the task to finish before failing: seconds or a
        ``timedelta`` (default 1 hour; ``wait_timeout``, its old name, still works with a
        deprecation warning).
    :param poll_interval: seconds (or a ``timedelta``) between polls at first (default 5).
    :param wait_policy: the other wait settings; see :class:`~airflow_provider_tts.waiting.WaitPolicy`
        (its fields may also be passed by name).
    :param retry: per-request retry overrides (``max_retries``, ``backoff``, ``max_backoff``).
    :param asset_alias: opt in to one asset *per stored file*: the task's outlet becomes this
        ``AssetAlias`` and each store adds the file's own asset to it. Airflow creates those assets
        at run time, so no DAG can be scheduled on them in advance; the default (one stable asset,
        below) is what a scheduler can use.

    **Assets.** Without ``outlets``, the task declares one stable asset, registered when the DAG is
    parsed, also under ``.partial().expand()``: the destination itself when it is a literal URI (a
    folder destination's asset is the folder), else ``Asset(name="tts-audio/<dag_id>/<task_id>")``
    (a templated destination). Each store emits one event on it (on every ``Asset`` of explicit
    ``outlets``) whose ``extra`` names the file written: ``uri``, ``size_bytes``, ``sha256``,
    ``content_type``, ``duration_seconds``, ``tts_task_id``, ``kind``. A DAG scheduled on that
    asset runs after each store and finds the files in ``triggering_asset_events``.

    **Lineage.** The stored destination, and only it, is the output: reported to Airflow's hook
    lineage collector and, with ``apache-airflow-providers-openlineage`` installed, as the output
    dataset of the OpenLineage event (see :meth:`get_openlineage_facets_on_complete`).
    """

    template_fields: Sequence[str] = ("tts_task_id", "destination", "file_name", "tts_conn_id", "kind", "dest_conn_id")
    ui_color = "#e8f2d9"

    def __init__(
        self,
        *,
        tts_task_id: str | XComArg | None = None,
        destination: str | ObjectStoragePath,
        file_name: str | None = None,
        tts_conn_id: str | None = None,
        kind: str | None = None,
        submitted: TtsSubmitOperator | None = None,
        dest_conn_id: str | None = None,
        overwrite: OverwritePolicy = "skip_if_identical",
        max_bytes: int = DEFAULT_MAX_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: float | timedelta | None = None,
        poll_interval: float | timedelta | None = None,
        wait_policy: WaitPolicy | None = None,
        retry: Mapping[str, Any] | None = None,
        asset_alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        if overwrite not in OVERWRITE_POLICIES:
            raise TtsConfigError(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}, got {overwrite!r}")
        tts_task_id, tts_conn_id, kind = from_submitted(
            type(self).__name__, submitted, tts_task_id=tts_task_id, tts_conn_id=tts_conn_id, kind=kind
        )
        if not _templated(kind) and kind not in KINDS:
            raise TtsConfigError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise TtsConfigError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if not isinstance(chunk_bytes, int) or not 4096 <= chunk_bytes <= 64 * 1024**2:
            raise TtsConfigError(f"chunk_bytes must be an integer from 4096 to 64 MiB, got {chunk_bytes!r}")
        if file_name is not None and not _rendered_later(file_name):
            check_file_name(file_name)  # a literal mistake fails when the DAG is parsed
        explicit_outlets = "outlets" in kwargs  # also under .expand(): partial() put them there
        policy_fields = WaitPolicy.pop_fields(kwargs)
        self.timeout = wait_timeout(timeout, kwargs, type(self).__name__)
        self.policy = WaitPolicy.build(wait_policy, poll_interval=poll_interval, **policy_fields)
        super().__init__(**kwargs)
        if not explicit_outlets:
            dag_id = self.dag_id if self.has_dag() else None
            self.outlets = [self._outlet(destination, asset_alias, dag_id, self.task_id)]
        # An XComArg is resolved and a template rendered to str before execute() runs.
        self.tts_task_id = cast("str", tts_task_id)
        self.destination = destination
        self.file_name = file_name
        self.tts_conn_id = tts_conn_id
        self.kind = kind
        self.dest_conn_id = dest_conn_id
        self.overwrite: OverwritePolicy = overwrite
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.deferrable = deferrable
        self.wait_timeout = self.timeout  # the old name, for code that still reads it
        self.retry = dict(retry) if retry else None
        self.asset_alias = asset_alias
        #: What this try stored (the XCom dict), for the OpenLineage facets on completion.
        self.stored_audio: dict[str, Any] | None = None

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:  # type: ignore[override]
        """Declare the default outlet on the mapped task too, so it is registered at parse time.

        ``BaseOperator.partial`` never runs ``__init__`` while the DAG is parsed, and fills in
        ``outlets=[]``: the scheduler then saw no outlet, and every mapped instance got none. The
        outlet is computed here from what ``partial()`` knows (a ``destination`` given to
        ``expand()`` instead is only known at run time: the stable name is used) and travels in
        the partial arguments to every unmapped instance.
        """
        explicit_outlets = "outlets" in kwargs
        operator_partial = super().partial(**kwargs)
        if not explicit_outlets:
            partial_kwargs = operator_partial.kwargs
            dag = partial_kwargs.get("dag")
            partial_kwargs["outlets"] = [
                cls._outlet(
                    kwargs.get("destination"),
                    kwargs.get("asset_alias"),
                    dag.dag_id if dag is not None else None,
                    partial_kwargs["task_id"],
                )
            ]
        return operator_partial

    @staticmethod
    def _outlet(destination: Any, alias: str | None, dag_id: str | None, task_id: str) -> Asset | AssetAlias:
        """The stable asset of :func:`~airflow_provider_tts.lineage.default_outlet`, or the opt-in alias."""
        if alias:
            return AssetAlias(name=alias)
        return default_outlet(destination, dag_id, task_id)

    @cached_property
    def hook(self) -> TtsHook:
        from airflow_provider_tts.hooks.tts import TtsHook

        return TtsHook(tts_conn_id=self.tts_conn_id, retry=self.retry)

    def execute(self, context: Context) -> dict[str, Any]:
        if not isinstance(self.tts_task_id, str) or not self.tts_task_id.strip():
            raise TtsConfigError(f"tts_task_id rendered to {self.tts_task_id!r}; expected a vendor task id")
        self._check_before_paying(context)
        return self._wait_and_store(context)

    def _check_before_paying(self, context: Context) -> None:
        """A bad destination or file name, or a file in the way with ``overwrite="fail"``, fails here.

        Before any request, let alone a paid one. In a folder the extension follows the audio, so a
        file of the same name with any audio extension is in the way.
        """
        destination, folder = self._checked_destination()
        name = self._given_name(folder)
        if folder and self.overwrite == "fail":
            stem = name or default_stem(context, self.task_id)
            for existing in listing(destination):
                if has_audio_extension(existing) and same_file(existing) == same_file(stem):
                    raise TtsConfigError(
                        f"{plain_uri(destination)} already holds {existing!r}, where this task stores its audio, "
                        "and overwrite='fail'; nothing was requested"
                    )

    def _wait_and_store(self, context: Context) -> dict[str, Any]:
        """Wait for ``self.tts_task_id`` (deferring when ``deferrable``), then store its audio."""
        started_at = time.time()
        waiter = Waiter(
            self.policy,
            tts_task_id=self.tts_task_id,
            kind=self.kind,
            started_at=started_at,
            deadline=started_at + self.timeout,
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
                        wait_policy=self.policy,
                        retry=self.retry,
                    ),
                    method_name="execute_complete",
                    # The id travels with the deferral: an operator that submitted it in execute()
                    # resumes as a fresh instance that never saw it.
                    kwargs={"tts_task_id": self.tts_task_id},
                )
            event = wait_sync(self.hook, waiter)
        return self._store(context, status_from_event(event, self.tts_task_id))

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, tts_task_id: str | None = None
    ) -> dict[str, Any]:
        """Resume after the trigger fired: validate the event, then download.

        ``tts_task_id`` is the id ``execute`` deferred with (None from a deferral made before it was
        passed along): the event must be about that task.
        """
        if tts_task_id is not None:
            self.tts_task_id = tts_task_id
        return self._store(context, status_from_event(event, self.tts_task_id))

    def _checked_destination(self, *, reuse: bool = False) -> tuple[ObjectStoragePath, bool]:
        """The destination path and whether it is a folder, validated before any request for audio.

        Checks the scheme, that the container exists (a missing bucket is a clear error, not a
        failed upload after the download), and, for a literal file with ``overwrite="fail"``,
        that it does not exist yet. A folder is a destination written with a trailing ``/`` or one
        the storage already holds as a directory (prefix): an ``ObjectStoragePath`` loses its
        trailing slash, so the raw value alone cannot tell. ``reuse`` takes the answer ``execute``
        found moments ago in this same process (one request less per file on object stores);
        after a deferral the check runs again.
        """
        cached = self.__dict__.pop("_destination_checked", None)
        if reuse and cached is not None and cached[0] == repr(self.destination):
            return cast("tuple[ObjectStoragePath, bool]", cached[1])
        destination = destination_path(self.destination, self.dest_conn_id or None)
        confine(plain_uri(destination), DESTINATIONS, what="destination")
        try:
            folder = check_destination(destination, folder_hint=is_folder(self.destination))
        except OSError as exc:
            raise TtsStorageError(f"cannot prepare {plain_uri(destination)}: {type(exc).__name__}: {exc}") from exc
        if not folder and self.overwrite == "fail" and destination.exists():
            raise TtsConfigError(f"destination {plain_uri(destination)} already exists and overwrite='fail'")
        self.__dict__["_destination_checked"] = (repr(self.destination), (destination, folder))
        return destination, folder

    def _store(self, context: Context, status: TtsTaskStatus) -> dict[str, Any]:
        destination, folder = self._checked_destination(reuse=True)
        ti = context.get("ti")
        try_number = getattr(ti, "try_number", None)
        with self.hook.open_audio(status) as audio:
            what = f"audio for task {status.tts_task_id!r} from {audio.url}"
            head, chunks = peek(audio.iter_chunks(self.chunk_bytes))
            check_audio_body(audio.content_type, head, what=what)  # a login page is never stored
            if folder:
                name = self._given_name(folder) or default_stem(context, self.task_id)
                path = destination / with_extension(name, audio.content_type, head)
            else:
                path = destination
                check_extension(path.name, audio.content_type, head)
            self.log.info(
                "Streaming %s (%s, %s bytes) to %s",
                audio.url,
                audio.content_type,
                audio.content_length if audio.content_length is not None else "unknown",
                plain_uri(path),
            )
            stored = stream_audio_into(
                path,
                chunks,
                audio,
                status,
                temp_name=self._temp_name(context, path.name),
                retried=not isinstance(try_number, int) or try_number > 1,
                overwrite=self.overwrite,
                max_bytes=self.max_bytes,
                chunk_bytes=self.chunk_bytes,
            )
        self._stored_at(context, path, stored)
        result = {**stored.to_xcom(), "uri": plain_uri(path)}
        self._emit_asset(context, result)
        return result

    def _stored_at(self, context: Context, path: ObjectStoragePath, stored: StoredAudio) -> None:
        """Called once the audio is at ``path``; the operators that know their request record it."""


class CambTtsStreamToStorageOperator(_StoredAudioOutput, BaseOperator):
    """Synthesise speech with Camb.ai's ``/tts-stream`` and stream it straight into object storage.

    ``/tts-stream`` is Camb's recommended TTS call: one synchronous request whose response body is
    the audio, with no task id and no polling. This is a separate operator rather than a
    ``stream=True`` path of :class:`TtsAudioToStorageOperator` because almost nothing of that
    operator's interface applies: it takes a task id, waits (deferring) and downloads, while this
    one takes the text and its options, never waits and has nothing to defer. What they do share,
    the atomic constant-memory writer (:func:`~airflow_provider_tts.storage.store_stream`), the
    destination checks and the returned dict, is shared by calling the same functions.

    Every documented field is validated before anything else (text of 3-3000 characters, a BCP-47
    ``language`` such as ``en-us``, an integer ``voice_id``, the output format and its options):
    a bad value is a clear error that costs nothing. A body that breaks off mid-stream leaves
    nothing at the destination (the writer streams into a temporary and moves it into place only
    when complete) and is not resent by the hook: the vendor may already have charged for it.

    **Request cache (on by default).** A streaming call has no task id, so a retried or re-run
    task would pay again. The request's fingerprint (vendor, ``tts-stream``, the validated body
    including the output format) is recorded in a sidecar ``<file>.tts.json`` beside the audio;
    when the destination already holds audio made from the same fingerprint (sidecar matches and
    the object has the recorded size) the vendor is not called at all and the stored object is
    returned with ``cached: True``. On by default because a pipeline re-run over the same texts is
    expected to produce the same files, the same expectation the ``skip_if_identical`` overwrite
    default already serves, and paying again for identical audio is never what a batch wants. To
    force new audio (a new model version behind the same name), set ``reuse_cached=False`` or
    ``overwrite="replace"``.

    :param text: the words to speak, 3-3000 characters (templated).
    :param language: BCP-47 tag, e.g. ``en-us`` (templated); a legacy ``/tts`` integer id is mapped to its tag.
    :param voice_id: Camb voice id, an integer (templated).
    :param destination: a file URI, or a folder URI ending in ``/`` (templated): the file inside
        it is named by ``file_name``.
    :param file_name: for a folder destination, the file's name (templated); the format's
        extension is added unless the name ends in one, and a name whose extension contradicts
        the format is refused before the request, as is a name with ``/``, ``..``, a leading
        ``.`` or over 200 bytes. Default: ``<first 16 hex of the request fingerprint><extension>``,
        so the same request always lands on the same object and the cache finds it.
    :param output_format: ``wav``, ``flac``, ``mp3`` (Camb's default), ``adts`` or ``pcm_*``;
        shorthand for ``output_configuration={"format": ...}``.
    :param output_configuration: the full documented object (``format``, ``duration``,
        ``apply_enhancement``, ``sample_rate``).
    :param speech_model: e.g. ``mars-pro``, ``mars-flash``, ``mars-instruct``.
    :param user_instructions, enhance_named_entities_pronunciation, voice_settings,
        inference_options: passed as documented by Camb's SDK, validated here.
    :param reuse_cached: skip the vendor when the destination holds audio of this very request.
    :param overwrite, max_bytes, chunk_bytes, dest_conn_id, retry, asset_alias: as for
        :class:`TtsAudioToStorageOperator`.

    Returns the storage operator's dict (``uri``, ``size_bytes``, ``sha256``, ``content_type``,
    ``duration_seconds``, ``tts_task_id``: None, as a stream has no task) plus ``fingerprint``,
    ``cached`` and ``credits`` (the vendor's ``X-Credits-Required``; 0 on a cache hit; None when
    the vendor did not say).
    """

    template_fields: Sequence[str] = (
        "text", "language", "voice_id", "speech_model", "user_instructions", "destination", "file_name",
        "tts_conn_id", "dest_conn_id",
    )  # fmt: skip
    ui_color = "#d9ecf2"

    def __init__(
        self,
        *,
        text: str | XComArg,
        language: str,
        voice_id: int | str,
        destination: str | ObjectStoragePath,
        file_name: str | None = None,
        tts_conn_id: str = DEFAULT_CONN_IDS["camb_ai"],
        output_format: str | None = None,
        output_configuration: Mapping[str, Any] | None = None,
        speech_model: str | None = None,
        user_instructions: str | None = None,
        enhance_named_entities_pronunciation: bool | None = None,
        voice_settings: Mapping[str, Any] | None = None,
        inference_options: Mapping[str, Any] | None = None,
        reuse_cached: bool = True,
        dest_conn_id: str | None = None,
        overwrite: OverwritePolicy = "skip_if_identical",
        max_bytes: int = DEFAULT_MAX_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        retry: Mapping[str, Any] | None = None,
        asset_alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        if overwrite not in OVERWRITE_POLICIES:
            raise TtsConfigError(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}, got {overwrite!r}")
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise TtsConfigError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if not isinstance(chunk_bytes, int) or not 4096 <= chunk_bytes <= 64 * 1024**2:
            raise TtsConfigError(f"chunk_bytes must be an integer from 4096 to 64 MiB, got {chunk_bytes!r}")
        if not isinstance(reuse_cached, bool):
            raise TtsConfigError(f"reuse_cached must be True or False, got {reuse_cached!r}")
        if file_name is not None and not _rendered_later(file_name):
            check_file_name(file_name)  # a literal mistake fails when the DAG is parsed
        config = dict(output_configuration or {})
        if output_format is not None:
            if "format" in config and config["format"] != output_format:
                raise TtsConfigError(
                    f"output_format={output_format!r} contradicts output_configuration.format={config['format']!r}"
                )
            config["format"] = output_format
        explicit_outlets = "outlets" in kwargs
        super().__init__(**kwargs)
        if not explicit_outlets:  # the same stable asset as TtsAudioToStorageOperator declares
            dag_id = self.dag_id if self.has_dag() else None
            self.outlets = [TtsAudioToStorageOperator._outlet(destination, asset_alias, dag_id, self.task_id)]
        self.text = text
        self.language = language
        self.voice_id = voice_id
        self.destination = destination
        self.file_name = file_name
        self.tts_conn_id = tts_conn_id
        self.output_configuration = config or None
        self.speech_model = speech_model
        self.user_instructions = user_instructions
        self.enhance_named_entities_pronunciation = enhance_named_entities_pronunciation
        self.voice_settings = dict(voice_settings) if voice_settings is not None else None
        self.inference_options = dict(inference_options) if inference_options is not None else None
        self.reuse_cached = reuse_cached
        self.dest_conn_id = dest_conn_id
        self.overwrite: OverwritePolicy = overwrite
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.retry = dict(retry) if retry else None
        self.asset_alias = asset_alias
        self.kind = "tts-stream"  # how lineage and asset events name what made the audio
        #: What this try stored (the XCom dict), for the OpenLineage facets on completion.
        self.stored_audio: dict[str, Any] | None = None
        if not any(_rendered_later(getattr(self, name)) for name in STREAM_FIELDS):
            # Literal fields: a mistake fails when the DAG is parsed, not at 3 a.m.
            self.stream_body()

    @cached_property
    def hook(self) -> TtsHook:
        from airflow_provider_tts.hooks.tts import TtsHook

        return TtsHook(tts_conn_id=self.tts_conn_id, retry=self.retry)

    def stream_body(self) -> dict[str, Any]:
        """The validated ``/tts-stream`` body from the (rendered) arguments; raises before any request."""
        from airflow_provider_tts.vendors.camb import validate_stream_fields

        fields = {name: getattr(self, name) for name in STREAM_FIELDS if getattr(self, name) is not None}
        return validate_stream_fields(fields)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_tts.cache import RequestCache, fingerprint_name
        from airflow_provider_tts.submissions import SubmitIdentity
        from airflow_provider_tts.vendors.camb import STREAM_FORMATS

        body = self.stream_body()
        vendor = self.hook.stream_vendor()  # a revid_tts connection fails here, before any request
        fingerprint = request_fingerprint(vendor.api, "tts-stream", body)
        fmt = body["output_configuration"]["format"]
        expected_type, extension = STREAM_FORMATS[fmt]
        destination = destination_path(self.destination, self.dest_conn_id or None)
        confine(plain_uri(destination), DESTINATIONS, what="destination")
        path = destination
        folder = is_folder(self.destination)
        name = self._given_name(folder)
        if name is not None:
            path = destination / with_format_extension(name, extension)
        elif folder:
            path = destination / fingerprint_name(fingerprint, extension)
        check_writable(path)
        uri = plain_uri(path)
        identity = SubmitIdentity.from_context(context)
        requests = RequestCache(path.parent, self.hook.endpoint(), identity.digest() if identity else "manual")
        if self.reuse_cached:
            hit, _ = requests.find(fingerprint)
            if hit is not None:
                return self._cached(context, requests, fingerprint, hit, path, named=name is not None or not folder)
        if self.overwrite == "fail" and path.exists():
            raise TtsConfigError(f"destination {uri} already exists and overwrite='fail'; nothing was paid for")
        with self.hook.open_tts_stream(**body) as audio:
            credits = _credits(audio.headers.get("x-credits-required"))
            if audio.content_type != expected_type:
                self.log.warning(
                    "Asked for %s (%s) but the vendor answered %s; storing what arrived", fmt, expected_type,
                    audio.content_type,
                )  # fmt: skip
            self.log.info("Streaming tts-stream audio (%s, credits %s) to %s", audio.content_type, credits, uri)
            stored = store_stream(
                audio.iter_chunks(self.chunk_bytes),
                path,
                temp_name=self._temp_name(context, path.name),
                content_type=audio.content_type,
                content_length=audio.content_length,
                tts_task_id=f"tts-stream {fingerprint_hex(fingerprint)[:16]}",
                overwrite=self.overwrite,
                max_bytes=self.max_bytes,
                chunk_bytes=self.chunk_bytes,
            )
        requests.stored(fingerprint, path, stored, credits=credits)
        result = {
            **stored.to_xcom(),
            "uri": uri,
            "tts_task_id": None,
            "fingerprint": fingerprint,
            "cached": False,
            "credits": credits,
        }
        self._emit_asset(context, result)
        return result

    def _cached(
        self, context: Context, requests: RequestCache, fingerprint: str, hit: CachedAudio, path: Any, *, named: bool
    ) -> dict[str, Any]:
        """The result for audio the folder already holds; copied (no vendor call) to a name asked for."""
        from airflow_provider_tts.objects import copy_object
        from airflow_provider_tts.storage import StoredAudio

        uri = hit.uri
        if named and hit.path.path != path.path:
            if self.overwrite == "fail" and path.exists():
                raise TtsConfigError(f"destination {plain_uri(path)} already exists and overwrite='fail'")
            etag = copy_object(hit.path, path)
            uri = plain_uri(path)
            copied = StoredAudio(
                uri, hit.size_bytes, hit.sha256, hit.content_type, hit.duration_seconds, "", True, etag
            )
            requests.stored(fingerprint, path, copied, credits=hit.credits)
            self.log.info("Copied the audio of request %s from %s to %s; not calling the vendor", fingerprint,
                          hit.uri, uri)  # fmt: skip
        else:
            self.log.info("%s already holds the audio of request %s; not calling the vendor", uri, fingerprint)
        cached = {**hit.as_result(), "uri": uri, "fingerprint": fingerprint, "cached": True, "credits": 0}
        self._emit_asset(context, cached)
        return cached


def _rendered_later(value: Any) -> bool:
    """A template string or an XComArg: its value is only known when the task runs."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    return not isinstance(value, (int, float, bool, dict, list, type(None)))


def _credits(header: str | None) -> int | None:
    """``X-Credits-Required`` as an integer; None when absent or not a whole number."""
    if header is None:
        return None
    try:
        value = float(header.strip())
    except ValueError:
        return None
    return int(value) if value.is_integer() and value >= 0 else None
