"""A batch's items: reading them, their identity and the name of the file each is stored in.

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
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
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

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

#: The per-item keys an item dict may carry besides the vendor's create fields.
ITEM_META = ("key", "file_name")
#: Words of a text that make it into a ``"words"`` file name.
SLUG_WORDS = 6
SLUG_CHARS = 40
ITEM_FILE_SUFFIXES = (".jsonl", ".csv", ".txt")
FileNameStyle = Literal["hash", "words"]
FILE_NAME_STYLES: tuple[FileNameStyle, ...] = ("hash", "words")
#: Hex digits of the fingerprint in a default name: 16 alone, 8 after the words.
HASH_NAME_CHARS = 16
WORDS_HASH_CHARS = 8


@dataclass(slots=True)
class BatchItem:
    """One item, as the worker keeps it between phases: no text, a few short strings.

    :param index: 1-based position of its first occurrence (for messages and the manifest).
    :param key: the item's identity: its ``key`` field, else its request (fingerprint digits).
    :param stem: the audio file's name without extension (see :func:`item_stem`).
    :param fingerprint: the request's fingerprint (what the request cache is keyed by).
    :param duplicates: positions of the same request repeated without a key.
    :param characters: what its request sends to be spoken (None: unknown, e.g. an ``srt_url``).
    """

    index: int
    key: str
    stem: str
    fingerprint: str
    duplicates: tuple[int, ...] = ()
    characters: int | None = None


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
