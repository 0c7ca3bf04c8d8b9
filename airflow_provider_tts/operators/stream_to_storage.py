"""``CambTtsStreamToStorageOperator``: Camb.ai's ``/tts-stream``, streamed straight into object storage.

One synchronous request whose response body is the audio: no task id, no polling, nothing to
defer. Every documented field is validated before anything else; the audio goes through the same
atomic constant-memory writer as every storing operator; the request cache (``.tts-cache/`` in
the destination folder, keyed by the request's fingerprint and the account it was paid on) lets a
retry or a re-run return the stored audio without calling the vendor again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_tts.confinement import DESTINATIONS, confine
from airflow_provider_tts.constants import DEFAULT_CONN_IDS
from airflow_provider_tts.costs import check_limit, estimate_and_check, parse_time_check
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.fingerprint import fingerprint_hex, request_fingerprint
from airflow_provider_tts.hooked import TtsHookMixin
from airflow_provider_tts.links import StoredAudioLink
from airflow_provider_tts.naming import check_file_name, with_format_extension
from airflow_provider_tts.operators.audio_to_storage import TtsAudioToStorageOperator
from airflow_provider_tts.renames import request_retry_overrides
from airflow_provider_tts.results import stored_file_result
from airflow_provider_tts.storage import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_BYTES,
    OverwritePolicy,
    check_store_settings,
    check_writable,
    destination_path,
    is_folder,
    store_stream,
)
from airflow_provider_tts.storing import StoredAudioOutput, plain_uri
from airflow_provider_tts.templating import rendered_later

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath, XComArg

    from airflow_provider_tts.cache import CachedAudio, RequestCache

#: ``/tts-stream`` body fields the stream operator passes through (each may be templated or not).
STREAM_FIELDS: tuple[str, ...] = (
    "text", "language", "voice_id", "speech_model", "user_instructions", "enhance_named_entities_pronunciation",
    "output_configuration", "voice_settings", "inference_options",
)  # fmt: skip

#: What every ``/tts-stream`` storing operator templates (the one-text one and the long-text one).
STREAM_TEMPLATE_FIELDS: tuple[str, ...] = (
    "text", "language", "voice_id", "speech_model", "user_instructions", "destination", "file_name",
    "tts_conn_id", "dest_conn_id",
)  # fmt: skip


class CambTtsStreamToStorageOperator(TtsHookMixin, StoredAudioOutput, BaseOperator):
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
    including the output format) keys an entry in the request cache of the destination folder;
    when the cache holds audio made from the same request on the same account (confirmed against
    the object: hashed locally, the ETag on S3) the vendor is not called at all and the stored
    object is returned (copied first when the file name changed) with ``cached: True``. On by
    default because a pipeline re-run over the same texts is expected to produce the same files,
    and paying again for identical audio is never what a batch wants. To force new audio (a new
    model version behind the same name), set ``reuse_cached=False``; ``overwrite`` decides only
    how an existing file is written.

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
    :param max_characters: refuse a text longer than this (default: the connection's
        ``max_characters`` extra); a literal text is checked when the DAG is parsed.
    :param max_credits: refuse a request estimated above this many credits (default: the
        connection's ``max_credits`` extra). Camb.ai publishes no price, so it needs the connection's
        ``credits_per_1000_characters``. Both refuse before the request (``TtsBudgetExceededError``,
        no retries used up). When the vendor's ``X-Credits-Required`` says it charged more, the
        audio is stored (it is paid for) and the task then fails with that error.
    :param overwrite, max_bytes, chunk_bytes, dest_conn_id, request_retry, asset_alias: as for
        :class:`TtsAudioToStorageOperator` (``retry``, the deprecated spelling of ``request_retry``, warns).

    Returns the stored-file result, as every storing operator does (table: ``docs/results.md``):
    ``tts_task_id`` None (a stream has no task), ``credits`` the vendor's ``X-Credits-Required``
    (0 on a cache hit; None when the vendor did not say), ``characters`` the text's length,
    ``requests`` 1 (0 on a cache hit).
    """

    template_fields: Sequence[str] = STREAM_TEMPLATE_FIELDS
    ui_color = "#d9ecf2"
    operator_extra_links = (StoredAudioLink(),)

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
        request_retry: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        asset_alias: str | None = None,
        max_characters: int | None = None,
        max_credits: float | None = None,
        **kwargs: Any,
    ) -> None:
        check_store_settings(overwrite, max_bytes, chunk_bytes)
        if not isinstance(reuse_cached, bool):
            raise TtsConfigError(f"reuse_cached must be True or False, got {reuse_cached!r}")
        if file_name is not None and not rendered_later(file_name):
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
        self.request_retry = request_retry_overrides(type(self).__name__, request_retry, retry)
        self.retry = self.request_retry  # the old name, for code that still reads it
        self.asset_alias = asset_alias
        self.kind = "tts-stream"  # how lineage and asset events name what made the audio
        self.max_characters = check_limit("max_characters", max_characters)
        self.max_credits = check_limit("max_credits", max_credits)
        #: What this try stored (the XCom dict), for the OpenLineage facets on completion.
        self.stored_audio: dict[str, Any] | None = None
        if not any(rendered_later(getattr(self, name)) for name in STREAM_FIELDS):
            # Literal fields: a mistake fails when the DAG is parsed, not at 3 a.m.
            body = self.stream_body()
            parse_time_check(len(body["text"]), self)

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
        if self.overwrite == "fail" and path.fs.exists(path.path):
            raise TtsConfigError(f"destination {uri} already exists and overwrite='fail'; nothing was paid for")
        what = f"camb_ai tts-stream request of task {self.task_id!r}"
        characters = vendor.spoken_characters("tts-stream", body)
        estimate, budget = estimate_and_check(vendor, "tts-stream", characters, max_characters=self.max_characters,
                                              max_credits=self.max_credits, what=what, log=self.log)  # fmt: skip
        from airflow_provider_tts.vendors.base import credits_header  # the vendor models: not at DAG parse

        with self.hook.open_tts_stream(**body) as audio:
            credits = credits_header(audio.headers.get("x-credits-required"))
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
        StoredAudioLink.persist(context, self, path)
        budget.check_reported(credits, what, f"at {uri}")  # paid and kept; the task fails past the limit
        result = stored_file_result(stored, uri=uri, tts_task_id=None, fingerprint=fingerprint, cached=False,
                                    credits=credits, characters=characters, requests=1,
                                    estimated_credits=estimate.credits)  # fmt: skip
        self._emit_asset(context, result)
        return result

    def _cached(
        self, context: Context, requests: RequestCache, fingerprint: str, hit: CachedAudio, path: Any, *, named: bool
    ) -> dict[str, Any]:
        """The result for audio the folder already holds; copied (no vendor call) to a name asked for."""
        from airflow_provider_tts.objects import copy_object
        from airflow_provider_tts.storage import StoredAudio

        uri, where = hit.uri, hit.path
        if named and hit.path.path != path.path:
            if self.overwrite == "fail" and path.fs.exists(path.path):
                raise TtsConfigError(f"destination {plain_uri(path)} already exists and overwrite='fail'")
            etag = copy_object(hit.path, path)
            uri, where = plain_uri(path), path
            copied = StoredAudio(
                uri, hit.size_bytes, hit.sha256, hit.content_type, hit.duration_seconds, "", True, etag
            )
            requests.stored(fingerprint, path, copied, credits=hit.credits)
            self.log.info("Copied the audio of request %s from %s to %s; not calling the vendor", fingerprint,
                          hit.uri, uri)  # fmt: skip
        else:
            self.log.info("%s already holds the audio of request %s; not calling the vendor", uri, fingerprint)
        StoredAudioLink.persist(context, self, where)
        cached = stored_file_result(hit, uri=uri, tts_task_id=None, fingerprint=fingerprint, cached=True)
        self._emit_asset(context, cached)
        return cached
