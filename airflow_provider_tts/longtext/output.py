"""What every long-text operator shares, whatever makes its parts: the text's parts, the file, the sidecars.

:class:`LongTextOutput` is a mixin of the long-text operators. The batch-based ones
(:mod:`~airflow_provider_tts.longtext.operator`: Camb ``/tts``, RevidAPI) make their parts as batch
items; the ``/tts-stream`` one (:mod:`~airflow_provider_tts.longtext.stream`) streams them. Either
way the parts live in ``<folder>/.tts-parts/<name>/`` and this mixin:

- checks the settings (:meth:`LongTextOutput._long_text_settings`) and splits the text under the
  vendor's limit (:meth:`LongTextOutput._split`);
- names the joined file and its parts' folder, and refuses a file in the way with
  ``overwrite="fail"`` before anything is paid for;
- joins the parts' files (:func:`~airflow_provider_tts.longtext.join.join_audio`) into a local
  temporary, stores it at the destination through the atomic writer every storing operator uses,
  writes the timing sidecar and the captions, and returns the stored-file result.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.naming import check_file_name, default_stem, has_audio_extension, same_file, with_extension
from airflow_provider_tts.objects import listing, write_small
from airflow_provider_tts.results import stored_file_result
from airflow_provider_tts.storage import OverwritePolicy, check_overwrite, destination_path, is_folder, store_stream
from airflow_provider_tts.storing import StoredAudioOutput, plain_uri
from airflow_provider_tts.templating import rendered_later

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath
    from airflow.sdk.types import Logger

    from airflow_provider_tts.longtext.join import JoinedAudio
    from airflow_provider_tts.longtext.split import TextPart

#: The hidden folder, beside the joined file, that holds each long text's parts and their state.
PARTS_FOLDER = ".tts-parts"
#: The longest silence between parts, in seconds.
MAX_SILENCE_SECONDS = 10.0


def reader(path: ObjectStoragePath) -> Callable[[], IO[bytes]]:
    """A callable that opens ``path`` for reading: the joiner opens each part only when it reads it."""

    def open_part() -> IO[bytes]:
        return cast("IO[bytes]", path.open("rb"))

    return open_part


class LongTextOutput(StoredAudioOutput):
    """The long-text operators' text, file and sidecars (a mixin, never used alone)."""

    if TYPE_CHECKING:
        task_id: str
        destination: Any
        dest_conn_id: str | None
        max_bytes: int
        chunk_bytes: int

        @property
        def log(self) -> Logger: ...

    def _long_text_settings(
        self,
        *,
        text: Any,
        file_name: str | None,
        overwrite: OverwritePolicy,
        limits: tuple[int, int],
        max_part_characters: int | None,
        silence_seconds: float,
        captions: Sequence[str],
    ) -> None:
        """Check and keep the settings every long-text operator has; a literal text is split now."""
        from airflow_provider_tts.longtext.timing import CAPTION_FORMATS

        check_overwrite(overwrite)
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
        self.text = text
        self.file_name = file_name
        #: The joined file's overwrite policy (a part's file is always its request's audio).
        self.file_overwrite: OverwritePolicy = overwrite
        self.min_part_characters = limits[0]
        self.max_part_characters = max_part_characters if max_part_characters is not None else limits[1]
        self.silence_seconds = float(silence_seconds)
        self.captions = captions
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

    def _parts_folder(self, context: Context) -> ObjectStoragePath:
        """``<folder>/.tts-parts/<name without its extension>``: the parts, their cache and their state."""
        folder, name = self._target(context)
        stem = os.path.splitext(name)[0] if has_audio_extension(name) else name
        return folder / PARTS_FOLDER / stem

    def _refuse_existing(self, context: Context) -> None:
        """``overwrite="fail"``: a file of this name (any audio extension) is refused before paying."""
        if self.file_overwrite != "fail":
            return
        folder, name = self._target(context)
        taken = [n for n in listing(folder) if same_file(n) == same_file(name) and has_audio_extension(n)]
        if taken:
            raise TtsConfigError(
                f"{plain_uri(folder / taken[0])} already exists and overwrite='fail'; nothing was paid for"
            )

    def _join_parts(
        self,
        context: Context,
        files: Sequence[ObjectStoragePath],
        fingerprints: Sequence[str],
        spent: dict[str, Any],
    ) -> dict[str, Any]:
        """Join the parts' files (in text order) into the destination; the sidecars; the result.

        ``spent`` holds what this task paid for the parts (``requests``, ``characters``,
        ``credits``, ``estimated_credits``) and any keys to add to the result.
        """
        from airflow_provider_tts.links import StoredAudioLink
        from airflow_provider_tts.longtext.join import AudioJoinError, join_audio

        parts = self._split(self.text)
        if len(files) != len(parts):
            raise TtsConfigError(f"{len(files)} part files for {len(parts)} parts of the text; clear the task")
        folder, name = self._target(context)
        digest = hashlib.sha256(json.dumps([list(fingerprints), self.silence_seconds]).encode()).hexdigest()
        with tempfile.TemporaryFile(prefix="tts-long-text-") as joined_file:
            try:
                joined = join_audio([reader(path) for path in files], joined_file, names=[path.name for path in files],
                                    silence_seconds=self.silence_seconds)  # fmt: skip
            except AudioJoinError as exc:
                raise TtsConfigError(f"cannot join the parts of {type(self).__name__} {self.task_id!r}: {exc}") from exc
            joined_file.flush()
            size = joined_file.seek(0, os.SEEK_END)
            joined_file.seek(0)
            head = joined_file.read(64)
            joined_file.seek(0)
            path = folder / with_extension(name, joined.content_type, head)
            stored = store_stream(
                iter(lambda: joined_file.read(self.chunk_bytes), b""), path,
                temp_name=self._temp_name(context, path.name), content_type=joined.content_type,
                content_length=size, tts_task_id=f"long-text {digest[:16]}", overwrite=self.file_overwrite,
                max_bytes=self.max_bytes, chunk_bytes=self.chunk_bytes,
                duration_seconds=round(joined.duration_seconds, 6),
            )  # fmt: skip
        uri = plain_uri(path)
        sidecars = self._write_sidecars(path, uri, joined, parts, fingerprints)
        StoredAudioLink.persist(context, self, path)
        spent = dict(spent)
        paid = int(spent.pop("requests"))
        result = stored_file_result(
            stored, uri=uri, tts_task_id=None, fingerprint=f"sha256:{digest}", cached=paid == 0, requests=paid,
            credits=spent.pop("credits"), characters=spent.pop("characters"),
            estimated_credits=spent.pop("estimated_credits"),
        )  # fmt: skip
        result.update(parts=len(parts), parts_paid=paid, **spent, **sidecars)
        self.log.info("Joined %d parts (%d paid for now) into %s (%.1f s)", len(parts), paid, uri,
                      joined.duration_seconds)  # fmt: skip
        self._emit_asset(context, result)
        return result

    def _write_sidecars(
        self, path: ObjectStoragePath, uri: str, joined: JoinedAudio, parts: Sequence[TextPart],
        fingerprints: Sequence[str],
    ) -> dict[str, Any]:  # fmt: skip
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
