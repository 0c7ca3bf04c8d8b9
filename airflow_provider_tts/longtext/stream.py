"""``CambTtsStreamLongTextToStorageOperator``: a long text through Camb.ai's ``/tts-stream`` into one file.

``/tts-stream`` takes 3 to 3,000 characters and answers with the audio itself: no task, nothing to
wait for, so nothing to defer. The text is split as for every long-text operator; each part's
request goes through the same request cache as ``CambTtsStreamToStorageOperator`` (a part the
parts' folder already holds, confirmed against the object, is not requested again), the parts to
pay for are streamed ``max_active_requests`` at a time into ``<folder>/.tts-parts/<name>/`` through
the atomic writer, then joined (:class:`~airflow_provider_tts.longtext.output.LongTextOutput`).

A part whose stream fails fails the task after the other parts are stored, and nothing is joined;
a retry streams only the parts still missing. As for the one-text stream operator, a body cut off
mid-stream is not resent within the try (the vendor may have charged for it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_tts.confinement import DESTINATIONS, confine
from airflow_provider_tts.constants import DEFAULT_CONN_IDS
from airflow_provider_tts.costs import check_limit, estimate_and_check
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.fingerprint import fingerprint_hex, request_fingerprint
from airflow_provider_tts.hooked import TtsHookMixin
from airflow_provider_tts.lineage import default_outlet
from airflow_provider_tts.links import StoredAudioLink
from airflow_provider_tts.longtext.output import LongTextOutput
from airflow_provider_tts.operators.stream_to_storage import STREAM_FIELDS, STREAM_TEMPLATE_FIELDS
from airflow_provider_tts.renames import request_retry_overrides
from airflow_provider_tts.storage import DEFAULT_CHUNK_BYTES, DEFAULT_MAX_BYTES, OverwritePolicy, check_destination
from airflow_provider_tts.storing import plain_uri
from airflow_provider_tts.templating import rendered_later

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath, XComArg

    from airflow_provider_tts.cache import RequestCache

#: The ``/tts-stream`` formats whose parts can be joined into one file (``pcm_*`` has no header
#: to say its shape, ADTS no joiner here).
JOINABLE_FORMATS = ("wav", "flac", "mp3")
#: Parts streamed at once at most.
MAX_ACTIVE_STREAMS = 16


class CambTtsStreamLongTextToStorageOperator(LongTextOutput, TtsHookMixin, BaseOperator):
    """Speak a long text with Camb.ai's ``/tts-stream`` into one file, paying only for changed parts.

    Parts are 3 to 3,000 characters (``CambAi.text_limits["tts-stream"]``). Arguments shared with
    ``CambTtsStreamToStorageOperator`` (``language``, ``voice_id``, ``speech_model``,
    ``output_configuration`` and the other ``/tts-stream`` fields) apply to every part; those
    shared with the other long-text operators (``text``, ``destination``, ``file_name``,
    ``max_part_characters``, ``silence_seconds``, ``captions``, ``overwrite``) work as there.

    :param output_format: ``flac`` (default: lossless and a quarter of WAV's size), ``wav`` or
        ``mp3``; ``pcm_*`` and ``adts`` parts cannot be joined and are refused before any request.
    :param reuse_cached: take a part the parts' folder holds instead of paying (default True).
    :param max_active_requests: parts streamed at once (default 4, at most 16).
    :param max_characters, max_credits: refuse the parts to pay for (after the request cache)
        when they pass these, before the first request (as on every storing operator).

    Returns the stored-file result of the joined file plus ``parts``, ``parts_paid``, ``timing``
    and ``captions``; ``credits`` is the sum of the vendor's ``X-Credits-Required`` over the paid
    parts (None when a part's answer did not say).
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
        output_format: str = "flac",
        output_configuration: Mapping[str, Any] | None = None,
        speech_model: str | None = None,
        user_instructions: str | None = None,
        enhance_named_entities_pronunciation: bool | None = None,
        voice_settings: Mapping[str, Any] | None = None,
        inference_options: Mapping[str, Any] | None = None,
        reuse_cached: bool = True,
        max_active_requests: int = 4,
        max_part_characters: int | None = None,
        silence_seconds: float = 0.0,
        captions: Sequence[str] = (),
        dest_conn_id: str | None = None,
        overwrite: OverwritePolicy = "skip_if_identical",
        max_bytes: int = DEFAULT_MAX_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        request_retry: Mapping[str, Any] | None = None,
        max_characters: int | None = None,
        max_credits: float | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_tts.vendors import CambAi

        config = dict(output_configuration or {})
        output_format = config.get("format", output_format)  # the full object's format wins
        if output_format not in JOINABLE_FORMATS:
            raise TtsConfigError(
                f"output_format {output_format!r} cannot be joined into one file; use one of "
                f"{', '.join(JOINABLE_FORMATS)}"
            )
        config["format"] = output_format
        if not isinstance(reuse_cached, bool):
            raise TtsConfigError(f"reuse_cached must be True or False, got {reuse_cached!r}")
        if not isinstance(max_active_requests, int) or not 1 <= max_active_requests <= MAX_ACTIVE_STREAMS:
            raise TtsConfigError(f"max_active_requests must be 1 to {MAX_ACTIVE_STREAMS}, got {max_active_requests!r}")
        explicit_outlets = "outlets" in kwargs
        super().__init__(**kwargs)
        if not explicit_outlets:
            self.outlets = [default_outlet(destination, self.dag_id if self.has_dag() else None, self.task_id)]
        self.language = language
        self.voice_id = voice_id
        self.destination = destination
        self.tts_conn_id = tts_conn_id
        self.output_configuration = config
        self.speech_model = speech_model
        self.user_instructions = user_instructions
        self.enhance_named_entities_pronunciation = enhance_named_entities_pronunciation
        self.voice_settings = dict(voice_settings) if voice_settings is not None else None
        self.inference_options = dict(inference_options) if inference_options is not None else None
        self.reuse_cached = reuse_cached
        self.max_active_requests = max_active_requests
        self.dest_conn_id = dest_conn_id
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.request_retry = request_retry_overrides(type(self).__name__, request_retry, None)
        self.max_characters = check_limit("max_characters", max_characters)
        self.max_credits = check_limit("max_credits", max_credits)
        self.kind = "tts-stream"
        self._long_text_settings(
            text=text, file_name=file_name, overwrite=overwrite, limits=CambAi.text_limits["tts-stream"],
            max_part_characters=max_part_characters, silence_seconds=silence_seconds, captions=captions,
        )  # fmt: skip
        if not any(rendered_later(getattr(self, name)) for name in (*self._shared_fields(), "text")):
            self._bodies()  # literal fields: a mistake fails when the DAG is parsed

    @staticmethod
    def _shared_fields() -> tuple[str, ...]:
        return tuple(name for name in STREAM_FIELDS if name != "text")

    def _bodies(self) -> list[dict[str, Any]]:
        """Each part's validated ``/tts-stream`` body, in text order; raises before any request."""
        from airflow_provider_tts.vendors.camb import validate_stream_fields

        shared = {name: getattr(self, name) for name in self._shared_fields() if getattr(self, name) is not None}
        return [validate_stream_fields({**shared, "text": part.text}) for part in self._split(self.text)]

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_tts.cache import RequestCache
        from airflow_provider_tts.naming import with_format_extension
        from airflow_provider_tts.submissions import SubmitIdentity
        from airflow_provider_tts.vendors.camb import STREAM_FORMATS

        self._refuse_existing(context)
        # The format is asked for, so a name that contradicts it ("chapter.mp3" for FLAC) costs nothing.
        with_format_extension(self._target(context)[1], STREAM_FORMATS[self.output_configuration["format"]][1])
        vendor = self.hook.stream_vendor()  # a revid_tts connection fails here, before any request
        bodies = self._bodies()
        fingerprints = [request_fingerprint(vendor.api, "tts-stream", body) for body in bodies]
        unique = dict(zip(fingerprints, bodies, strict=True))
        folder = self._parts_folder(context)
        confine(plain_uri(folder), DESTINATIONS, what="destination")
        check_destination(folder, folder_hint=True)
        identity = SubmitIdentity.from_context(context)
        cache = RequestCache(folder, self.hook.endpoint(), identity.digest() if identity else "manual")
        paths: dict[str, ObjectStoragePath] = {}
        if self.reuse_cached:
            found = cache.find_all(unique, threads=self.max_active_requests)
            paths = {fp: hit.path for fp, (hit, _) in found.items() if hit is not None}
        to_pay = [fp for fp in unique if fp not in paths]
        characters = sum(vendor.spoken_characters("tts-stream", unique[fp]) or 0 for fp in to_pay)
        what = f"camb_ai tts-stream parts of task {self.task_id!r}"
        estimate, budget = estimate_and_check(vendor, "tts-stream", characters, max_characters=self.max_characters,
                                              max_credits=self.max_credits, what=what, log=self.log,
                                              requests=len(to_pay))  # fmt: skip
        credits = self._stream_parts(context, cache, folder, {fp: unique[fp] for fp in to_pay}, paths)
        paid_credits = None if any(c is None for c in credits) else sum(c for c in credits if c is not None)
        spent = {"requests": len(to_pay), "characters": characters, "credits": paid_credits,
                 "estimated_credits": estimate.credits, "manifest": None}  # fmt: skip
        result = self._join_parts(context, [paths[fp] for fp in fingerprints], fingerprints, spent)
        budget.check_reported(paid_credits, what, f"at {result['uri']}")  # paid and kept; fails past the limit
        return result

    def _stream_parts(
        self,
        context: Context,
        cache: RequestCache,
        folder: ObjectStoragePath,
        bodies: Mapping[str, dict[str, Any]],
        paths: dict[str, ObjectStoragePath],
    ) -> list[int | None]:
        """Stream the parts to pay for into the parts' folder, a few at once; their credits. Fills ``paths``."""
        from airflow_provider_tts.cache import fingerprint_name
        from airflow_provider_tts.storage import store_stream
        from airflow_provider_tts.vendors.base import credits_header
        from airflow_provider_tts.vendors.camb import STREAM_FORMATS

        if not bodies:
            return []
        self._pool_for_threads(self.max_active_requests)
        extension = STREAM_FORMATS[self.output_configuration["format"]][1]

        def one(fingerprint: str) -> tuple[ObjectStoragePath, int | None]:
            path = folder / fingerprint_name(fingerprint, extension)
            with self.hook.open_tts_stream(**bodies[fingerprint]) as audio:
                credits = credits_header(audio.headers.get("x-credits-required"))
                stored = store_stream(
                    audio.iter_chunks(self.chunk_bytes), path, temp_name=self._temp_name(context, path.name),
                    content_type=audio.content_type, content_length=audio.content_length,
                    tts_task_id=f"tts-stream {fingerprint_hex(fingerprint)[:16]}", overwrite="replace",
                    max_bytes=self.max_bytes, chunk_bytes=self.chunk_bytes,
                )  # fmt: skip
            cache.stored(fingerprint, path, stored, credits=credits)
            return path, credits

        credits: list[int | None] = []
        errors: list[BaseException] = []
        with ThreadPoolExecutor(self.max_active_requests, thread_name_prefix="tts-long-stream") as pool:
            futures = {fingerprint: pool.submit(one, fingerprint) for fingerprint in bodies}
            for fingerprint, future in futures.items():
                try:
                    paths[fingerprint], paid = future.result()
                    credits.append(paid)
                except Exception as exc:  # every part is tried; the first failure is raised below
                    self.log.warning("Part %s: %s", fingerprint_hex(fingerprint)[:16], exc)
                    errors.append(exc)
        if errors:
            self.log.error("%d of %d parts failed; the others are stored and a retry streams only these",
                           len(errors), len(bodies))  # fmt: skip
            raise errors[0]
        return credits
