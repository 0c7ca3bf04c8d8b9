"""The long-text operators' base class: a batch whose items are the parts of one text, then one file.

:class:`BaseLongTextToStorageOperator` is a batch operator
(:class:`~airflow_provider_tts.batch.operator.BaseTextBatchToStorageOperator`) in all but its
input and its output, so everything a batch guarantees holds for the parts: one deferral for all
of them, ``max_active_requests`` at a time, each request claimed in the request cache before it is
paid for (a retry, a lost worker or a concurrent run re-attaches instead of paying again), and a
re-run that finds a part's audio pays nothing for it. What it adds:

1. **Input**: the text is cut by :func:`~airflow_provider_tts.longtext.split.split_text` under the
   vendor's limit (:attr:`Vendor.text_limits <airflow_provider_tts.vendors.base.Vendor.text_limits>`);
   each part is an item whose identity is its request, never its position, so an edited paragraph
   makes new parts only where the text changed.
2. **Where the parts go**: ``<folder>/.tts-parts/<name>/`` beside the joined file, with the parts'
   request cache and manifest: a hidden folder, so the destination shows one file.
3. **Output**: once every part is stored, their audio is joined
   (:func:`~airflow_provider_tts.longtext.join.join_audio`) into a local temporary, one part at a
   time, then stored at the destination through the same atomic writer as every storing operator
   (no partial file is ever visible; ``overwrite`` as elsewhere), with the timing sidecar and the
   captions beside it. A part that failed fails the task before anything is joined: a file missing
   a paragraph is worse than no file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

from airflow_provider_tts.batch.operator import BaseTextBatchToStorageOperator
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.naming import check_file_name, default_stem, has_audio_extension, same_file, with_extension
from airflow_provider_tts.objects import listing, read_small, write_small
from airflow_provider_tts.results import stored_file_result
from airflow_provider_tts.storage import OverwritePolicy, check_overwrite, destination_path, is_folder, store_stream
from airflow_provider_tts.storing import StoredAudioOutput, plain_uri
from airflow_provider_tts.templating import rendered_later

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath, XComArg

    from airflow_provider_tts.batch.plan import BatchPlan
    from airflow_provider_tts.longtext.split import TextPart

#: The hidden folder, beside the joined file, that holds each long text's parts and their state.
PARTS_FOLDER = ".tts-parts"
#: Batch settings a long text decides itself: its items are its parts, and any failed part fails it.
FIXED_BATCH_SETTINGS = ("items", "items_path", "items_conn_id", "file_names", "max_failed_items", "manifest_name")
#: The longest silence between parts, in seconds.
MAX_SILENCE_SECONDS = 10.0
#: The most a manifest of parts may weigh when read back to join them.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class BaseLongTextToStorageOperator(StoredAudioOutput, BaseTextBatchToStorageOperator):
    """Speak a text of any length into one audio file, paying only for the parts whose text changed.

    The base of the long-text operators (see the module docstring); a subclass sets ``vendor``,
    ``tts_kind`` and ``item_field`` as a batch operator does. Every batch argument not listed
    here works as on the batch operators (``max_active_requests``, ``deferrable``, ``timeout``,
    ``reuse_cached``, ``max_characters``, ``max_credits``, ``on_uncertain_submit``...).

    :param text: the text (templated), of any length. Cut into parts at paragraph, then sentence,
        then clause, then word boundaries, never inside a word or a number.
    :param destination: a folder ending in ``/`` (the file is named by ``file_name``) or a file URI
        (templated). The parts are kept in ``<folder>/.tts-parts/<name>/``.
    :param file_name: the file's name in a folder destination (templated; the extension follows
        the audio). Default ``<dag_id>-<task_id>[-<map index>]``.
    :param defaults: the create fields every part shares (e.g. ``{"voice_id": 20303, "language": 1}``).
    :param max_part_characters: the longest part (default: the vendor's limit for the kind,
        ``Vendor.text_limits``); lower it to make smaller parts, raise it only where the vendor allows.
    :param silence_seconds: silence between parts in the joined file (default 0; not for MP3).
    :param captions: caption files to write beside the audio from the parts: some of ``"srt"``,
        ``"vtt"`` (default none). A timing sidecar, ``<name>.timing.json``, is always written.
    :param overwrite: what to do when the destination file exists, as for the other storing
        operators (``skip_if_identical``, ``replace``, ``fail``: refused before anything is paid for).

    Returns the stored-file result (``docs/results.md``) of the joined file, plus ``parts`` (how
    many), ``parts_paid`` (created at the vendor by this task), ``timing`` and ``captions`` (their
    URIs) and ``manifest`` (the parts' manifest). ``cached`` is True when no part was paid for;
    ``characters``, ``requests`` and ``credits`` count only the parts this task paid for.
    """

    template_fields: Sequence[str] = ("text", "defaults", "destination", "file_name", "tts_conn_id", "dest_conn_id")
    template_fields_renderers = {"defaults": "json"}

    def __init__(
        self,
        *,
        text: str | XComArg,
        destination: str | ObjectStoragePath,
        file_name: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        max_part_characters: int | None = None,
        silence_seconds: float = 0.0,
        captions: Sequence[str] = (),
        overwrite: OverwritePolicy = "skip_if_identical",
        **kwargs: Any,
    ) -> None:
        from airflow_provider_tts.longtext.timing import CAPTION_FORMATS

        owner = type(self).__name__
        fixed = sorted(set(FIXED_BATCH_SETTINGS) & set(kwargs))
        if fixed:
            raise TtsConfigError(f"{owner} takes no {', '.join(fixed)}: its items are the parts of its text")
        check_overwrite(overwrite)
        limits = self.vendor.text_limits.get(self.tts_kind)
        if limits is None:
            raise TtsConfigError(f"{owner}: {self.vendor.api} {self.tts_kind} has no text limit to split under")
        if max_part_characters is not None and (
            not isinstance(max_part_characters, int) or max_part_characters < limits[0]
        ):
            raise TtsConfigError(f"max_part_characters must be an integer >= {limits[0]}, got {max_part_characters!r}")
        if not isinstance(silence_seconds, int | float) or not 0 <= silence_seconds <= MAX_SILENCE_SECONDS:
            raise TtsConfigError(f"silence_seconds must be 0 to {MAX_SILENCE_SECONDS}, got {silence_seconds!r}")
        captions = (captions,) if isinstance(captions, str) else tuple(captions)
        unknown = [fmt for fmt in captions if fmt not in CAPTION_FORMATS]
        if unknown:
            raise TtsConfigError(f"captions must be some of {', '.join(CAPTION_FORMATS)}, got {unknown}")
        if file_name is not None and not rendered_later(file_name):
            check_file_name(file_name)
        # The parts are written "skip_if_identical": a part's file is its request's audio. The
        # caller's overwrite policy is the joined file's.
        super().__init__(destination=destination, items=[], defaults=defaults, max_failed_items=0, **kwargs)
        self.text = text
        self.file_name = file_name
        self.file_overwrite: OverwritePolicy = overwrite
        self.min_part_characters = limits[0]
        self.max_part_characters = max_part_characters if max_part_characters is not None else limits[1]
        self.silence_seconds = float(silence_seconds)
        self.captions = captions
        self.kind = self.tts_kind
        self.stored_audio: dict[str, Any] | None = None
        if not rendered_later(text):
            self._split(text)  # a literal text that cannot be cut (a word over the limit) fails at parse

    def _split(self, text: Any) -> list[TextPart]:
        from airflow_provider_tts.longtext.split import split_text

        if not isinstance(text, str):
            raise TtsConfigError(f"{type(self).__name__}: text rendered to {type(text).__name__}; expected a string")
        try:
            return split_text(text, max_chars=self.max_part_characters, min_chars=self.min_part_characters)
        except ValueError as exc:
            raise TtsConfigError(f"{type(self).__name__}: {exc}") from None

    def _target(self, context: Context) -> tuple[ObjectStoragePath, str]:
        """The joined file's folder and name (its extension, if any, is checked against the audio later)."""
        folder = is_folder(self.destination)
        name = self._given_name(folder)
        path = destination_path(self.destination, self.dest_conn_id or None)
        if folder:
            return path, name or default_stem(context, self.task_id)
        return path.parent, check_file_name(path.name)

    def _batch_folder(self, context: Context) -> Any:
        folder, name = self._target(context)
        stem = os.path.splitext(name)[0] if has_audio_extension(name) else name
        return folder / PARTS_FOLDER / stem

    def _raw_items(self) -> Any:
        return iter([part.text for part in self._split(self.text)])

    def execute(self, context: Context) -> dict[str, Any]:
        if self.file_overwrite == "fail":
            folder, name = self._target(context)
            taken = [n for n in listing(folder) if same_file(n) == same_file(name) and has_audio_extension(n)]
            if taken:
                raise TtsConfigError(
                    f"{plain_uri(folder / taken[0])} already exists and overwrite='fail'; nothing was paid for"
                )
        return super().execute(context)

    def _finish(
        self,
        context: Context,
        plan: BatchPlan,
        event: dict[str, Any] | None,
        waits: Mapping[str, tuple[str, float]],
        failed: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, Any]:
        """Store every part as a batch does (failing on any failed part), then join them into the file."""
        summary = super()._finish(context, plan, event, waits, failed)
        return self._join_and_store(context, plan, summary)

    def _join_and_store(self, context: Context, plan: BatchPlan, summary: Mapping[str, Any]) -> dict[str, Any]:
        from airflow_provider_tts.links import StoredAudioLink
        from airflow_provider_tts.longtext.join import AudioJoinError, join_audio

        parts = self._split(self.text)
        rows = self._manifest_rows(plan)
        if len(rows) != len(parts):
            raise TtsConfigError(f"the parts' manifest has {len(rows)} rows for {len(parts)} parts; clear the task")
        files = [plan.folder / str(row["file"]).rsplit("/", 1)[-1] for row in rows]
        fingerprints = [str(row["fingerprint"]) for row in rows]
        folder, name = self._target(context)
        with tempfile.TemporaryFile(prefix="tts-long-text-") as joined_file:
            try:
                joined = join_audio(
                    [reader(path) for path in files],
                    joined_file,
                    names=[path.name for path in files],
                    silence_seconds=self.silence_seconds,
                )
            except AudioJoinError as exc:
                raise TtsConfigError(f"cannot join the parts of {type(self).__name__} {self.task_id!r}: {exc}") from exc
            joined_file.flush()
            size = joined_file.seek(0, os.SEEK_END)
            joined_file.seek(0)
            head = joined_file.read(64)
            joined_file.seek(0)
            path = folder / with_extension(name, joined.content_type, head)
            digest = hashlib.sha256(json.dumps([fingerprints, self.silence_seconds]).encode()).hexdigest()
            stored = store_stream(
                iter(lambda: joined_file.read(self.chunk_bytes), b""),
                path,
                temp_name=self._temp_name(context, path.name),
                content_type=joined.content_type,
                content_length=size,
                tts_task_id=f"long-text {digest[:16]}",
                overwrite=self.file_overwrite,
                max_bytes=self.max_bytes,
                chunk_bytes=self.chunk_bytes,
                duration_seconds=round(joined.duration_seconds, 6),
            )
        uri = plain_uri(path)
        extras = self._write_sidecars(path, uri, joined, parts, fingerprints)
        StoredAudioLink.persist(context, self, path)
        paid = int(summary["requests"])
        result = stored_file_result(
            stored, uri=uri, tts_task_id=None, fingerprint=f"sha256:{digest}", cached=paid == 0,
            credits=summary["credits"], characters=summary["characters"], requests=paid,
            estimated_credits=summary["estimated_credits"],
        )  # fmt: skip
        result.update(parts=len(parts), parts_paid=paid, manifest=summary["manifest"], **extras)
        self.log.info("Joined %d parts (%d paid for now) into %s (%.1f s)", len(parts), paid, uri,
                      joined.duration_seconds)  # fmt: skip
        self._emit_asset(context, result)
        return result

    def _manifest_rows(self, plan: BatchPlan) -> list[dict[str, Any]]:
        """The parts' manifest rows, one per part in order (a repeated paragraph's rows name its audio)."""
        data = read_small(plan.folder / self.manifest_name, MAX_MANIFEST_BYTES)
        if data is None:
            raise TtsConfigError(f"the parts' manifest {plain_uri(plan.folder / self.manifest_name)} is missing")
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        return sorted(rows, key=lambda row: int(row["index"]))

    def _write_sidecars(
        self, path: ObjectStoragePath, uri: str, joined: Any, parts: Sequence[TextPart], fingerprints: Sequence[str]
    ) -> dict[str, Any]:
        """``<name>.timing.json`` and the captions asked for, beside the audio; their URIs."""
        from airflow_provider_tts.longtext.timing import captions, timing_bytes, timing_document

        stem = os.path.splitext(path.name)[0]
        document = timing_document(uri, joined, parts, fingerprints)
        timing = path.parent / f"{stem}.timing.json"
        write_small(timing, timing_bytes(document))
        written = {}
        for fmt in self.captions:
            caption = path.parent / f"{stem}.{fmt}"
            write_small(caption, captions(document, fmt))
            written[fmt] = plain_uri(caption)
        return {"timing": plain_uri(timing), "captions": written}


def reader(path: ObjectStoragePath) -> Callable[[], IO[bytes]]:
    """A callable that opens ``path`` for reading: the joiner opens each part only when it reads it."""

    def open_part() -> IO[bytes]:
        return cast("IO[bytes]", path.open("rb"))

    return open_part
