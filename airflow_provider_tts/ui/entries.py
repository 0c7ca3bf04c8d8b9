"""The rows of the Audio view, built from what a run recorded: pure functions, no I/O, no Airflow.

A row is one file a task stored (a one-task, mapped or streamed operator's result, one per task
instance) or one item of a batch's manifest, or a failure: a failed manifest item with its error,
a storing task instance that failed before it returned a result. The view never takes a path from
the browser: a row is addressed by ``(task_id, map_index, index)`` (``index`` -1 for a one-file
result, the item's position in a batch) and the api-server finds the URI again in the run's own
records (:func:`find_file`).

Kept apart from the FastAPI code so the filtering, paging and totals are tested without a server,
and so a 10,000-item manifest costs one pass over its rows per page asked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The provider's operators that store audio and return a result of ``docs/results.md`` (class names,
#: as Airflow records them on the task instance). Only these tasks' XComs are read: another task's
#: ``return_value`` of the same shape is not taken for a stored file.
ONE_FILE_OPERATORS: frozenset[str] = frozenset(
    {
        "TtsAudioToStorageOperator",
        "CambTtsToStorageOperator",
        "CambTextToSoundToStorageOperator",
        "RevidTtsToStorageOperator",
        "RevidSrtToSpeechToStorageOperator",
        "CambTtsStreamToStorageOperator",
    }
)
BATCH_OPERATORS: frozenset[str] = frozenset(
    {
        "CambTtsBatchToStorageOperator",
        "CambTextToSoundBatchToStorageOperator",
        "RevidTtsBatchToStorageOperator",
        "RevidSrtToSpeechBatchToStorageOperator",
    }
)
STORING_OPERATORS: frozenset[str] = ONE_FILE_OPERATORS | BATCH_OPERATORS
#: The statuses a row can have; ``audio`` in a filter means stored or cached.
STATUSES = ("stored", "cached", "failed")
FILTERS = ("all", "audio", *STATUSES)
#: Rows per page when the browser does not say, and the most it may ask for.
DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 500
#: Task instance states that mean "this task will not store anything in this try".
FAILED_STATES = frozenset({"failed", "upstream_failed"})
#: ``index`` of the one file of a one-file result.
SINGLE = -1


@dataclass(frozen=True)
class TaskOutput:
    """What the api-server read for one task instance of a storing operator."""

    task_id: str
    map_index: int
    operator: str | None
    state: str | None
    result: Any


def vendor_of(operator: str | None) -> str | None:
    """The vendor an operator class speaks to, from its name; None for the vendor-neutral ones."""
    if not operator:
        return None
    if operator.startswith("Camb"):
        return "Camb.ai"
    if operator.startswith("Revid"):
        return "RevidAPI"
    return None


def is_one_file(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("uri"), str) and "size_bytes" in value


def is_batch(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("manifest"), str) and "destination" in value


def file_name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def audio_format(name: str | None, content_type: str | None = None) -> str | None:
    """``flac``, ``mp3``...: the file's extension, else the media type's subtype."""
    if name and "." in name:
        return name.rsplit(".", 1)[-1].lower()
    if content_type and "/" in content_type:
        return content_type.split(";")[0].split("/")[-1].strip().lower() or None
    return None


def _base(out: TaskOutput, index: int) -> dict[str, Any]:
    return {"task_id": out.task_id, "map_index": out.map_index, "index": index, "vendor": vendor_of(out.operator)}


def one_file_entry(out: TaskOutput) -> dict[str, Any]:
    """The row of a one-file result (one-task, mapped or stream operator)."""
    value = out.result
    name = file_name(value["uri"])
    return {
        **_base(out, SINGLE),
        "key": None,
        "name": name,
        "status": "cached" if value.get("cached") else "stored",
        "duration_seconds": value.get("duration_seconds"),
        "size_bytes": value.get("size_bytes"),
        "format": audio_format(name, value.get("content_type")),
        "characters": value.get("characters"),
        "credits": value.get("credits"),
        "estimated_credits": value.get("estimated_credits"),
        "error": None,
        "duplicate_of": None,
    }


def manifest_entries(out: TaskOutput, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per manifest row of a batch task; a failed item carries its error."""
    entries = []
    for row in rows:
        uri = row.get("file")
        name = file_name(uri) if isinstance(uri, str) and uri else None
        status = row.get("status") if row.get("status") in STATUSES else "failed"
        entries.append(
            {
                **_base(out, int(row.get("index") or 0)),
                "key": row.get("key"),
                "name": name,
                "status": status,
                "duration_seconds": row.get("duration_seconds"),
                "size_bytes": row.get("size_bytes"),
                "format": audio_format(name),
                "characters": row.get("characters"),
                "credits": row.get("credits"),
                "estimated_credits": None,
                "error": row.get("error") if status == "failed" else None,
                "duplicate_of": row.get("duplicate_of"),
            }
        )
    return entries


def failed_task_entry(out: TaskOutput) -> dict[str, Any]:
    """A storing task instance that failed with no result: the view says so, its log says why."""
    return {
        **_base(out, SINGLE),
        "key": None,
        "name": None,
        "status": "failed",
        "duration_seconds": None,
        "size_bytes": None,
        "format": None,
        "characters": None,
        "credits": None,
        "estimated_credits": None,
        "error": f"the task instance is {out.state} and stored nothing; its log says why",
        "duplicate_of": None,
    }


def parse_manifest(data: bytes) -> list[dict[str, Any]]:
    """The rows of a ``manifest.jsonl`` (blank or broken lines skipped: the view shows what it can)."""
    rows = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def totals(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's total line: files, minutes of audio, bytes, characters, credits, failures.

    A repeated request's extra positions (``duplicate_of``) share the first one's file and spent
    nothing: they are not counted again. ``credits`` is None when no row says what it was charged.
    """
    own = [e for e in entries if e.get("duplicate_of") is None]
    audio = [e for e in own if e["status"] in ("stored", "cached")]
    seconds = sum(float(e.get("duration_seconds") or 0) for e in audio)
    known_credits = [e["credits"] for e in own if isinstance(e.get("credits"), int | float)]
    estimated = [e["estimated_credits"] for e in own if isinstance(e.get("estimated_credits"), int | float)]
    return {
        "files": len(audio),
        "seconds": round(seconds, 3),
        "minutes": round(seconds / 60, 2),
        "size_bytes": sum(int(e.get("size_bytes") or 0) for e in audio),
        "characters": sum(int(e.get("characters") or 0) for e in own),
        "credits": sum(known_credits) if known_credits else None,
        "estimated_credits": round(sum(estimated), 6) if estimated else None,
        "stored": sum(1 for e in own if e["status"] == "stored"),
        "cached": sum(1 for e in own if e["status"] == "cached"),
        "failed": sum(1 for e in own if e["status"] == "failed"),
    }


def page_of(
    entries: Sequence[Mapping[str, Any]], *, status: str = "all", page: int = 1, per_page: int = DEFAULT_PER_PAGE
) -> dict[str, Any]:
    """One page of the rows with ``status`` (see :data:`FILTERS`), with the totals of every row."""
    if status not in FILTERS:
        raise ValueError(f"status must be one of {', '.join(FILTERS)}")
    wanted = ("stored", "cached") if status == "audio" else STATUSES if status == "all" else (status,)
    chosen = [e for e in entries if e["status"] in wanted]
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    page = max(1, page)
    start = (page - 1) * per_page
    return {
        "entries": [dict(e) for e in chosen[start : start + per_page]],
        "total_entries": len(chosen),
        "page": page,
        "per_page": per_page,
        "totals": totals(entries),
    }


def find_file(out: TaskOutput, index: int, rows: Sequence[Mapping[str, Any]] | None) -> str | None:
    """The URI a run recorded for ``(task, index)``; None when it recorded none (a failure, no such row).

    For a batch, the row's file must lie in the batch's destination folder: a manifest is not trusted
    to name objects elsewhere.
    """
    value = out.result
    if index == SINGLE:
        return value["uri"] if is_one_file(value) else None
    if not is_batch(value) or rows is None:
        return None
    for row in rows:
        if row.get("index") == index and row.get("status") in ("stored", "cached"):
            uri = row.get("file")
            folder = str(value["destination"]).rstrip("/") + "/"
            if isinstance(uri, str) and uri.startswith(folder) and ".." not in uri[len(folder) :].split("/"):
                return uri
            return None
    return None
