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

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.batch.operator import BaseTextBatchToStorageOperator
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.longtext.output import PARTS_FOLDER as PARTS_FOLDER
from airflow_provider_tts.longtext.output import LongTextOutput
from airflow_provider_tts.objects import read_small
from airflow_provider_tts.storing import plain_uri

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath, XComArg

    from airflow_provider_tts.batch.plan import BatchPlan
    from airflow_provider_tts.batch.store import Known
    from airflow_provider_tts.storage import OverwritePolicy

#: Batch settings a long text decides itself: its items are its parts, and any failed part fails it.
FIXED_BATCH_SETTINGS = ("items", "items_path", "items_conn_id", "file_names", "max_failed_items", "manifest_name")
#: The most a manifest of parts may weigh when read back to join them.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class BaseLongTextToStorageOperator(LongTextOutput, BaseTextBatchToStorageOperator):
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
        owner = type(self).__name__
        fixed = sorted(set(FIXED_BATCH_SETTINGS) & set(kwargs))
        if fixed:
            raise TtsConfigError(f"{owner} takes no {', '.join(fixed)}: its items are the parts of its text")
        limits = self.vendor.text_limits.get(self.tts_kind)
        if limits is None:
            raise TtsConfigError(f"{owner}: {self.vendor.api} {self.tts_kind} has no text limit to split under")
        # The parts are written "skip_if_identical": a part's file is its request's audio; the
        # caller's overwrite policy is the joined file's.
        super().__init__(destination=destination, items=[], defaults=defaults, max_failed_items=0, **kwargs)
        self._long_text_settings(
            text=text, file_name=file_name, overwrite=overwrite, limits=limits,
            max_part_characters=max_part_characters, silence_seconds=silence_seconds, captions=captions,
        )  # fmt: skip
        self.kind = self.tts_kind

    def _batch_folder(self, context: Context) -> Any:
        return self._parts_folder(context)

    def _raw_items(self) -> Any:
        return iter([part.text for part in self._split(self.text)])

    def execute(self, context: Context) -> dict[str, Any]:
        self._refuse_existing(context)
        return super().execute(context)

    def _finish(
        self,
        context: Context,
        plan: BatchPlan,
        event: dict[str, Any] | None,
        waits: Mapping[str, tuple[str, float]],
        failed: Mapping[str, Mapping[str, Any]],
        done: Mapping[str, Mapping[str, Any]] | None = None,
        known: Mapping[str, Known] | None = None,
    ) -> dict[str, Any]:
        """Store every part as a batch does (failing on any failed part), then join them into the file."""
        summary = super()._finish(context, plan, event, waits, failed, done, known)
        rows = self._manifest_rows(plan)
        files = [plan.folder / str(row["file"]).rsplit("/", 1)[-1] for row in rows]
        spent = {key: summary[key] for key in ("requests", "characters", "credits", "estimated_credits", "manifest")}
        return self._join_parts(context, files, [str(row["fingerprint"]) for row in rows], spent)

    def _manifest_rows(self, plan: BatchPlan) -> list[dict[str, Any]]:
        """The parts' manifest rows, one per part in order (a repeated paragraph's rows name its audio)."""
        data = read_small(plan.folder / self.manifest_name, MAX_MANIFEST_BYTES)
        if data is None:
            raise TtsConfigError(f"the parts' manifest {plain_uri(plan.folder / self.manifest_name)} is missing")
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        return sorted(rows, key=lambda row: int(row["index"]))
