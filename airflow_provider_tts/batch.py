"""A batch of texts in one task: its items, its per-item record of what was paid for, its manifest.

The batch operators (:mod:`airflow_provider_tts.operators.batch`) submit hundreds or thousands of
vendor tasks from one Airflow task, wait for all of them in one deferral and store every audio
file. This module holds what that needs besides HTTP: reading the items, naming their files, the
durable per-item record, and the manifest.

**Items.** A list (a param, an XCom) or a file in object storage (``.jsonl``: one JSON text or
object per line; ``.csv``: a header row naming the fields; ``.txt``: one text per line), each
item a text or a dict of per-item create fields, plus optional ``key`` (stable identity, default
the item's 1-based position) and ``file_name``. A file is read line by line, twice at most (plan,
then submit), so the worker holds one compact :class:`BatchItem` per item, never the texts.

**The record (why object storage).** Paying once per item needs, per item, the same two facts the
single submit records (an intent before the create call, the vendor id after it), for up to tens of
thousands of items, on every Airflow 3 minor. The task state store (3.3+) and Airflow Variables
both live in the metadata database and go through the API server one key at a time; the trigger's
kwargs are a single row whose column is a 64 KB ``TEXT`` on MySQL, which 10,000 ids exceed. So the
record lives beside the output, in the destination's storage: ``<destination>/.tts-batch/<id>/``
(``<id>`` derived from dag, run, task and map index, never the try), in parts of
:data:`PART_ITEMS` items, each part one small object rewritten whole (atomic on every store:
temporary + rename locally, one PUT on object stores). The trigger's row holds only the record's
URI. No secret is in it (fingerprints, vendor task ids, timestamps, errors), and it is removed when
the batch task succeeds, so it is bounded by the failed or running batches.
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
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.naming import check_file_name
from airflow_provider_tts.storage import TtsStorageError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tts.submissions import SubmitIdentity

log = logging.getLogger(__name__)

#: Items per record part: one part is rewritten per submit round, so this bounds both the size of
#: one write and how many writes a batch makes (N / PART_ITEMS x 2).
PART_ITEMS = 100
#: The per-item keys an item dict may carry besides the vendor's create fields.
ITEM_META = ("key", "file_name")
#: Words of a text that make it into a default file name.
SLUG_WORDS = 6
SLUG_CHARS = 40
#: The hidden folder, beside the audio, that holds the batch records.
STATE_FOLDER = ".tts-batch"
ITEM_FILE_SUFFIXES = (".jsonl", ".csv", ".txt")


@dataclass(slots=True)
class BatchItem:
    """One item, as the worker keeps it between phases: no text, a few short strings.

    :param index: 1-based position in the items.
    :param key: the item's stable identity (its ``key`` field, else its position).
    :param stem: the audio file's name without extension (``file_name``, else derived).
    :param fingerprint: the request's fingerprint without any client reference, so the same text
        and settings give the same fingerprint in every run (the request cache's key).
    """

    index: int
    key: str
    stem: str
    fingerprint: str


def slug(text: str) -> str:
    """The first words of ``text``, lower case, as ``the-river-wakes-up``."""
    text = re.sub(r"^\s*\d+[.)]?\s+", "", text)  # a text's own numbering would repeat the position
    words = " ".join(text.lower().split()[:SLUG_WORDS])
    return re.sub(r"[^a-z0-9]+", "-", words).strip("-")[:SLUG_CHARS].rstrip("-")


def item_parts(
    raw: Any, index: int, *, item_field: str, defaults: Mapping[str, Any]
) -> tuple[str, str, dict[str, Any]]:
    """``(key, stem, create fields)`` of one item; raises naming the item and what arrived."""
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
    if key is not None and (not isinstance(key, str | int) or isinstance(key, bool) or not str(key).strip()):
        raise TtsConfigError(f"{where} has key {key!r}; expected a non-empty string or integer")
    key = str(key).strip() if key is not None else f"{index:05d}"
    if file_name not in (None, ""):
        stem = check_file_name(file_name)
    elif raw is not None and isinstance(raw, Mapping) and raw.get("key") is not None:
        stem = check_file_name(_safe_name(key))
    else:
        text = fields.get(item_field)
        words = slug(text) if isinstance(text, str) else ""
        stem = f"{index:05d}-{words}" if words else f"{index:05d}"
    return key, stem, {**defaults, **fields}


def _safe_name(key: str) -> str:
    """A key as a file name: anything but letters, digits, ``-``, ``_`` and ``.`` becomes ``-``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-.") or "item"
    return name if name == key else f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def iter_items(items: Any, items_path: ObjectStoragePath | None) -> Iterator[Any]:
    """The raw items, from the list or streamed from the file (read again on each call)."""
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
                yield from csv.DictReader(text)
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


# ------------------------------------------------------------------------------ the record


def put_small(path: ObjectStoragePath, data: bytes) -> None:
    """Write a small object whole or not at all: temporary + rename locally, one PUT elsewhere."""
    fs = path.fs
    if path.protocol in ("file", "local", ""):
        os.makedirs(os.path.dirname(path.path) or "/", exist_ok=True)
        temp = f"{path.path}.{os.getpid()}.partial"
        with open(temp, "wb") as out:
            out.write(data)
        os.replace(temp, path.path)
    else:
        fs.pipe_file(path.path, data)


class BatchRecord:
    """The durable per-item record of one batch task instance (see the module docstring).

    Each item's entry is a dict: ``fingerprint``, ``requested_at`` (the intent, written before
    the create call), then ``tts_task_id`` and ``submitted_at`` (right after), or ``outcome``
    ``"rejected"`` with ``error`` (the vendor refused it: a retry would be refused again).
    """

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

    def _part(self, number: int) -> ObjectStoragePath:
        return self.folder / f"part-{number:05d}.json"

    def load(self) -> dict[str, dict[str, Any]]:
        """Every item's entry; a key found in two parts keeps its latest entry."""
        entries: dict[str, dict[str, Any]] = {}
        fs = self.folder.fs
        try:
            names = sorted(fs.ls(self.folder.path, detail=False))
        except FileNotFoundError:
            return entries
        for name in names:
            if not str(name).endswith(".json"):
                continue
            try:
                part = json.loads(fs.cat_file(name))
            except FileNotFoundError:
                continue
            except ValueError:
                log.warning("Ignoring an unreadable batch record part %s", name)
                continue
            for key, entry in (part.get("items") or {}).items() if isinstance(part, dict) else ():
                if isinstance(entry, dict) and _stamp(entry) >= _stamp(entries.get(key, {})):
                    entries[key] = entry
        return entries

    def save_part(self, number: int, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace part ``number`` with ``entries``; returns only once a later try can read it."""
        data = json.dumps({"version": 1, "items": entries}, separators=(",", ":"), sort_keys=True).encode()
        try:
            put_small(self._part(number), data)
        except OSError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise TtsStorageError(f"could not write the batch record {self.where}: {problem}") from exc

    def remove(self) -> None:
        """The batch succeeded: nothing a retry needs is left (bounded storage)."""
        try:
            self.folder.fs.rm(self.folder.path, recursive=True)
            if self.folder.protocol in ("file", "local", ""):
                with contextlib.suppress(OSError):  # the shared parent, once no batch uses it
                    os.rmdir(os.path.dirname(self.folder.path))
        except FileNotFoundError:
            pass
        except Exception as exc:  # cleanup must never fail a batch that succeeded
            log.warning("Could not remove the batch record %s (%s: %s)", self.where, type(exc).__name__, exc)

    def pending(self) -> dict[str, float]:
        """``{vendor task id: submitted_at}`` of every submitted item: what a trigger waits for."""
        return {
            str(entry["tts_task_id"]): float(entry.get("submitted_at") or entry.get("requested_at") or time.time())
            for entry in self.load().values()
            if entry.get("tts_task_id") and not entry.get("outcome")
        }


def _stamp(entry: Mapping[str, Any]) -> float:
    return float(entry.get("submitted_at") or entry.get("requested_at") or 0.0)


# ------------------------------------------------------------------------------ the manifest

#: The manifest's columns, one row per item, in this order.
MANIFEST_FIELDS = (
    "index", "key", "status", "file", "size_bytes", "sha256", "duration_seconds", "tts_task_id", "error",
    "retryable", "fingerprint",
)  # fmt: skip


def write_manifest(path: ObjectStoragePath, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write the manifest (JSON Lines, one row per item) whole or not at all."""
    buffer = io.BytesIO()
    for row in rows:
        line = {name: row.get(name) for name in MANIFEST_FIELDS}
        buffer.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode())
        buffer.write(b"\n")
    try:
        put_small(path, buffer.getvalue())
    except OSError as exc:
        raise TtsStorageError(f"could not write the manifest {path}: {type(exc).__name__}: {exc}") from exc


def listing(folder: ObjectStoragePath) -> frozenset[str]:
    """The names directly inside ``folder`` (one LIST): which items may already be stored."""
    with contextlib.suppress(FileNotFoundError):
        return frozenset(os.path.basename(str(name).rstrip("/")) for name in folder.fs.ls(folder.path, detail=False))
    return frozenset()
