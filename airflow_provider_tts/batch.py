"""A batch of texts in one task: its items, the file each is stored in, the wait list, the manifest.

The batch operators (:mod:`airflow_provider_tts.operators.batch`) submit hundreds or thousands of
vendor tasks from one Airflow task, wait for all of them in one deferral and store every audio
file. This module holds what that needs besides HTTP: reading the items, naming their files, the
per-run wait list and the manifest. What was paid for lives in the request cache
(:mod:`airflow_provider_tts.cache`), keyed by each request's content.

**Items.** A list (a param, an XCom) or a file in object storage (``.jsonl``: one JSON text or
object per line; ``.csv``: a header row naming the fields; ``.txt``: one text per line), each
item a text or a dict of per-item create fields, plus optional ``key`` and ``file_name``. An
item's identity is its ``key`` when it has one, else its request: its position never matters, so
inserting, removing or reordering texts changes nothing for the others. Two items that are the
same request without keys are one item (one payment, one file; the manifest lists both positions).

**File names** (:func:`item_stem`): ``file_name`` when given, else the key when given, else by
``file_names``: ``"hash"`` (default) the first 16 hex digits of the request's fingerprint (no word
of the text reaches object keys, bucket listings or access logs), or ``"words"``, the first words
of the text and 8 of those digits (``the-river-wakes-up-slowly-3fa9c2d1``). Either way the name
depends on the request alone, so a re-run finds the same file.

**The wait list.** While the task waits, ``<destination>/.tts-batch/<id>/pending.json`` (``<id>``
from dag, run, task and map index, never the try) holds the vendor task ids to poll and a digest
of the items: the trigger's row holds only its URI (10,000 ids exceed MySQL's 64 KB ``TEXT``
kwargs column), and the resumed task checks that the items did not change while it waited. It is
removed when the task finishes; everything a later try or run needs is in the request cache.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.fingerprint import fingerprint_hex
from airflow_provider_tts.naming import check_file_name
from airflow_provider_tts.objects import delete_small, is_local, read_small, write_small
from airflow_provider_tts.storage import TtsStorageError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tts.submissions import SubmitIdentity

log = logging.getLogger(__name__)

#: The per-item keys an item dict may carry besides the vendor's create fields.
ITEM_META = ("key", "file_name")
#: Words of a text that make it into a ``"words"`` file name.
SLUG_WORDS = 6
SLUG_CHARS = 40
#: The hidden folder, beside the audio, that holds the wait lists of batches in flight.
STATE_FOLDER = ".tts-batch"
ITEM_FILE_SUFFIXES = (".jsonl", ".csv", ".txt")
FileNameStyle = Literal["hash", "words"]
FILE_NAME_STYLES: tuple[FileNameStyle, ...] = ("hash", "words")
#: Hex digits of the fingerprint in a default name: 16 alone, 8 after the words.
HASH_NAME_CHARS = 16
WORDS_HASH_CHARS = 8
#: A wait list is ~100 bytes per item; 64 MiB is far beyond any batch this operator takes.
MAX_RECORD_BYTES = 64 * 1024**2


@dataclass(slots=True)
class BatchItem:
    """One item, as the worker keeps it between phases: no text, a few short strings.

    :param index: 1-based position of its first occurrence (for messages and the manifest).
    :param key: the item's identity: its ``key`` field, else its request (fingerprint digits).
    :param stem: the audio file's name without extension (see :func:`item_stem`).
    :param fingerprint: the request's fingerprint (what the request cache is keyed by).
    :param duplicates: positions of the same request repeated without a key.
    """

    index: int
    key: str
    stem: str
    fingerprint: str
    duplicates: tuple[int, ...] = ()


def slug(text: str) -> str:
    """The first words of ``text``, lower case, as ``the-river-wakes-up``."""
    text = re.sub(r"^\s*\d+[.)]?\s+", "", text)  # a text's own numbering would repeat the position
    words = " ".join(text.lower().split()[:SLUG_WORDS])
    return re.sub(r"[^a-z0-9]+", "-", words).strip("-")[:SLUG_CHARS].rstrip("-")


def item_parts(
    raw: Any, index: int, *, item_field: str, defaults: Mapping[str, Any]
) -> tuple[str | None, str | None, dict[str, Any]]:
    """``(key or None, file name or None, create fields)`` of one item; raises naming the item."""
    where = f"item {index}"
    if isinstance(raw, str):
        fields: dict[str, Any] = {item_field: raw}
        key = file_name = None
    elif isinstance(raw, Mapping):
        fields = {str(name): value for name, value in raw.items() if name not in ITEM_META and value not in (None, "")}
        key, file_name = raw.get("key"), raw.get("file_name")
    else:
        raise TtsConfigError(
            f"{where} is a {type(raw).__name__} ({raw!r:.80}); expected a text or a dict of fields "
            f"(e.g. {{{item_field!r}: ..., 'key': ...}})"
        )
    if key in (None, ""):
        key = None
    elif not isinstance(key, str | int) or isinstance(key, bool) or not str(key).strip():
        raise TtsConfigError(f"{where} has key {key!r}; expected a non-empty string or integer")
    else:
        key = str(key).strip()
    if file_name in (None, ""):
        file_name = None
    else:
        file_name = check_file_name(file_name)
    return key, file_name, {**defaults, **fields}


def item_stem(*, key: str | None, file_name: str | None, text: Any, fingerprint: str, style: FileNameStyle) -> str:
    """The file name of an item without the audio's extension (see the module docstring)."""
    if file_name is not None:
        return file_name
    if key is not None:
        return check_file_name(_safe_name(key))
    digest = fingerprint_hex(fingerprint)
    words = slug(text) if style == "words" and isinstance(text, str) else ""
    return f"{words}-{digest[:WORDS_HASH_CHARS]}" if words else digest[:HASH_NAME_CHARS]


def _safe_name(key: str) -> str:
    """A key as a file name: anything but letters, digits, ``-``, ``_`` and ``.`` becomes ``-``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-.") or "item"
    return name if name == key else f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def iter_items(items: Any, items_path: ObjectStoragePath | None) -> Iterator[Any]:
    """The raw items, from the list or streamed from the file (read again on each call).

    A ``.csv`` row comes as a :class:`CsvRow`: its cells are text, converted to each field's
    type by :func:`typed_cells` once the vendor's model is known.
    """
    if items_path is None:
        if isinstance(items, str) or not isinstance(items, Iterable):
            raise TtsConfigError(
                f"items rendered to a {type(items).__name__} ({items!r:.80}); expected a list of texts or of dicts"
            )
        yield from items
        return
    suffix = os.path.splitext(items_path.name)[1].lower()
    if suffix not in ITEM_FILE_SUFFIXES:
        raise TtsConfigError(f"items_path {items_path} ends in {suffix!r}; expected {', '.join(ITEM_FILE_SUFFIXES)}")
    try:
        with items_path.open("rb") as binary, io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
            if suffix == ".csv":
                for row in csv.DictReader(text):
                    yield CsvRow(row)
                return
            for number, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                if suffix == ".txt":
                    yield line.rstrip("\r\n")
                    continue
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise TtsConfigError(f"{items_path} line {number} is not JSON ({exc}): {line[:80]!r}") from None
    except FileNotFoundError:
        raise TtsConfigError(f"items_path {items_path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise TtsConfigError(f"items_path {items_path} is not UTF-8 text ({exc})") from None


class CsvRow(dict[str, Any]):
    """A row of a ``.csv`` items file: every cell is text until :func:`typed_cells` converts it."""


def typed_cells(fields: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """A CSV row's cells as the vendor model's field types: ``"2"`` for an integer field is ``2``.

    A cell of a field that takes text stays text (``"0123"`` as a text is not a number); any other
    cell is read as JSON when it is valid JSON (numbers, ``true``/``false``, lists, objects), and
    left as it is otherwise, for the model to report.
    """
    model_fields = getattr(model, "model_fields", {})
    by_alias = {getattr(f, "alias", None) or name: f for name, f in model_fields.items()}
    typed: dict[str, Any] = {}
    for name, value in fields.items():
        field = model_fields.get(name) or by_alias.get(name)
        if isinstance(value, str) and field is not None and not _takes_text(field.annotation):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        typed[name] = value
    return typed


def _takes_text(annotation: Any) -> bool:
    """Whether a field annotation accepts a ``str`` as it is (``str``, ``str | None``, a ``Literal`` of texts)."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _takes_text(typing.get_args(annotation)[0])
    if origin is Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_takes_text(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    return False


def items_digest(items: Iterable[BatchItem]) -> str:
    """sha256 over every item's key and fingerprint, in order: what the task instance was asked to do."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.key}\x1f{item.fingerprint}\x1e".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------ the wait list


class BatchRecord:
    """The wait list of one batch task instance while it waits (see the module docstring).

    ``pending``: ``{fingerprint: [vendor task id, submitted_at]}`` of the requests to wait for;
    ``failed``: ``{fingerprint: {"error", "retryable"}}`` of requests the submit phase could not pay
    for (their manifest rows); ``digest``: :func:`items_digest` of the items it was made for. No
    secret is in it.
    """

    FILE = "pending.json"

    def __init__(self, folder: ObjectStoragePath) -> None:
        self.folder = folder
        self.where = f"{folder.protocol}://{folder.path}"

    @classmethod
    def for_task(cls, destination: ObjectStoragePath, identity: SubmitIdentity | None) -> BatchRecord:
        digest = identity.digest()[:20] if identity is not None else "manual"
        return cls(destination / STATE_FOLDER / digest)

    @classmethod
    def at(cls, uri: str, conn_id: str | None) -> BatchRecord:
        """The record a trigger was told about (its URI and the storage connection id)."""
        from airflow.sdk import ObjectStoragePath

        return cls(ObjectStoragePath(uri, conn_id=conn_id))

    def save(
        self, pending: Mapping[str, tuple[str, float]], digest: str, failed: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Write the wait list whole; returns only once the trigger (or a resumed task) can read it."""
        body = {
            "version": 2,
            "digest": digest,
            "pending": {fp: list(job) for fp, job in pending.items()},
            "failed": {fp: dict(reason) for fp, reason in failed.items()},
        }
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        try:
            write_small(self.folder / self.FILE, data)
        except OSError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise TtsStorageError(f"could not write the batch wait list {self.where}: {problem}") from exc

    def load(self) -> tuple[dict[str, tuple[str, float]], str | None, dict[str, dict[str, Any]]]:
        """``(pending, digest, failed)``; empty and None when there is no wait list. Unreadable is an error."""
        path = self.folder / self.FILE
        try:
            raw = read_small(path, MAX_RECORD_BYTES)
            body = None if raw is None else json.loads(raw)
        except (OSError, ValueError) as exc:
            raise TtsStorageError(f"the batch wait list {path} is unreadable ({exc}); nothing is paid again") from exc
        if body is None:
            return {}, None, {}
        if not isinstance(body, dict) or body.get("version") != 2 or not isinstance(body.get("pending"), dict):
            raise TtsStorageError(f"the batch wait list {path} is not one this provider wrote; nothing is paid again")
        pending = {
            str(fp): (str(job[0]), float(job[1]))
            for fp, job in body["pending"].items()
            if isinstance(job, list) and len(job) == 2
        }
        digest = body.get("digest")
        failed = {str(fp): dict(r) for fp, r in (body.get("failed") or {}).items() if isinstance(r, dict)}
        return pending, digest if isinstance(digest, str) else None, failed

    def remove(self) -> None:
        """The task is done with it: the request cache holds what any later try needs."""
        try:
            delete_small(self.folder / self.FILE)
            if is_local(self.folder):
                with contextlib.suppress(OSError):
                    os.rmdir(self.folder.path)
                    os.rmdir(os.path.dirname(self.folder.path))  # the shared parent, once no batch uses it
        except Exception as exc:  # cleanup must never fail a batch
            log.warning("Could not remove the batch wait list %s (%s: %s)", self.where, type(exc).__name__, exc)

    def pending(self) -> dict[str, float]:
        """``{vendor task id: submitted_at}``: what a trigger waits for."""
        jobs, _, _ = self.load()
        return {task_id: submitted_at for task_id, submitted_at in jobs.values()}


# ------------------------------------------------------------------------------ the manifest

#: The manifest's columns, one row per item position, in this order.
MANIFEST_FIELDS = (
    "index", "key", "status", "file", "size_bytes", "sha256", "duration_seconds", "tts_task_id", "error",
    "retryable", "fingerprint", "duplicate_of",
)  # fmt: skip


def write_manifest(path: ObjectStoragePath, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write the manifest (JSON Lines, one row per item position) whole or not at all."""
    buffer = io.BytesIO()
    for row in rows:
        line = {name: row.get(name) for name in MANIFEST_FIELDS}
        buffer.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode())
        buffer.write(b"\n")
    try:
        write_small(path, buffer.getvalue())
    except OSError as exc:
        raise TtsStorageError(f"could not write the manifest {path}: {type(exc).__name__}: {exc}") from exc
