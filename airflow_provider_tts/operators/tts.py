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
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import Asset, AssetAlias, BaseOperator

from airflow_provider_tts.compat import ResumableJobMixin, conf
from airflow_provider_tts.connection import DEFAULT_CONN_IDS
from airflow_provider_tts.exceptions import TtsConfigError
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


class TtsSubmitOperator(ResumableJobMixin, BaseOperator):
    """Create a remote text-to-speech task and return its vendor task id (XCom).

    Fields follow each vendor's documented create body. Camb.ai ``tts``: ``text``, ``voice_id``,
    ``language`` (integer id; 1 is English US), ``gender``, ``age``, ``project_name``,
    ``project_description``, ``folder_id``. Camb.ai ``text-to-sound``: ``prompt``, ``duration``
    (at most 10 s), ``audio_type`` (``sound``/``music``). RevidAPI ``tts``: ``text``, ``engine``,
    ``voice_id`` or ``voice``, ``speed`` (0.5-2), ``pitch`` (-20..20), ``webhook_url``,
    ``caller_id`` (sent as ``id``). RevidAPI ``srt-to-speech``: ``subtitles`` (a cue list), ``srt``
    (SRT text, parsed here into cues; malformed SRT names the line) or ``srt_url``, plus
    ``voice_id``, ``speed``, ``audio_name``, ``mode``, ``add_silence``, ``engine``, ``voice``,
    ``output_format``, ``video_url``. Every input is validated before any request: nothing invalid
    is sent or paid for.

    A retry must not pay twice: with ``durable=True`` (default) on Airflow 3.3+, the task id is
    stored in the ``task_state_store`` right after the create call, and a retry re-attaches to that
    task while it is pending or succeeded (a failed one is submitted afresh).

    :param tts_conn_id: a ``camb_ai`` or ``revid_tts`` connection (templated).
    :param kind: ``tts``, ``text-to-sound`` (Camb.ai) or ``srt-to-speech`` (RevidAPI).
    :param wait: also wait for the task to finish (deferring like the sensor when ``deferrable``);
        the operator still returns the task id.
    :param deferrable: with ``wait``, wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param wait_timeout: with ``wait``, seconds to wait before failing (default 1 hour).
    :param durable: keep the task id in the task state store so retries re-attach (Airflow 3.3+).
    """

    template_fields: Sequence[str] = (
        "tts_conn_id", "kind", "text", "prompt", "srt", "subtitles", "srt_url", "voice", "voice_id", "language",
        "project_name", "project_description", "audio_name", "webhook_url", "caller_id",
    )  # fmt: skip
    ui_color = "#fbe3c9"
    external_id_key = "tts_task_id"

    def __init__(
        self,
        *,
        tts_conn_id: str = DEFAULT_CONN_IDS["camb_ai"],
        kind: str = "tts",
        wait: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_timeout: float = 3600.0,
        retry: Mapping[str, Any] | None = None,
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
        for name, value in (("text", text), ("prompt", prompt), ("srt", srt)):
            if isinstance(value, str) and not value.strip():
                raise TtsConfigError(f"{name} is empty; expected the words to synthesise")
        self.tts_conn_id = tts_conn_id
        self.kind = kind
        self.wait = wait
        self.deferrable = deferrable
        self.wait_timeout = float(wait_timeout)
        self.retry = dict(retry) if retry else None
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

    def execute(self, context: Context) -> Any:
        # Validate everything the vendor would check before the state store is even consulted.
        vendor = self.hook.vendor
        vendor.submit_request(vendor.check_kind(self.kind), self.create_fields())
        return self.execute_resumable(context)

    def submit_job(self, context: Context) -> str:
        return self.hook.submit_task(self.kind, self.create_fields()).tts_task_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        status = self.hook.get_task_status(str(external_id), self.kind)
        self.log.info("Task %s from an earlier try is %s (%s)", external_id, status.state, status.vendor_status)
        return status.state

    def is_job_active(self, status: str) -> bool:
        return status == "pending"

    def is_job_succeeded(self, status: str) -> bool:
        return status == "succeeded"

    def poll_until_complete(self, external_id: Any, context: Context) -> Any:
        if not self.wait:
            return str(external_id)
        started_at = time.time()
        waiter = Waiter(
            WaitPolicy(),
            tts_task_id=str(external_id),
            kind=self.kind,
            started_at=started_at,
            deadline=started_at + self.wait_timeout,
            logger=self.log,
        )
        if self.deferrable:
            self.defer(
                trigger=TtsTaskTrigger(
                    tts_conn_id=self.tts_conn_id,
                    tts_task_id=str(external_id),
                    kind=self.kind,
                    deadline=waiter.deadline,
                    started_at=started_at,
                    retry=self.retry,
                ),
                method_name="execute_complete",
                kwargs={"tts_task_id": str(external_id)},
            )
        status_from_event(wait_sync(self.hook, waiter), str(external_id))
        return str(external_id)

    def get_job_result(self, external_id: Any, context: Context) -> str:
        return str(external_id)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, tts_task_id: str = "") -> str:
        """Resume after waiting in the triggerer: a failed task raises like the sensor would."""
        return status_from_event(event, tts_task_id).tts_task_id


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
