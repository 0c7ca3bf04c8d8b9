"""A batch's manifest: one row per item position, and the rows' messages.

The manifest (JSON Lines, :data:`MANIFEST_FIELDS` per row) is written whole or not at all, beside
the audio; a request repeated without a key gets a row at each of its positions, naming the first.
The task's result (XCom), built from these rows, is :func:`airflow_provider_tts.results.batch_result`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.naming import check_file_name
from airflow_provider_tts.objects import write_small
from airflow_provider_tts.storage import TtsStorageError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tts.batch.items import BatchItem
    from airflow_provider_tts.batch.plan import BatchPlan

#: The manifest's columns, one row per item position, in this order.
MANIFEST_FIELDS = (
    "index", "key", "status", "file", "size_bytes", "sha256", "duration_seconds", "tts_task_id", "error",
    "retryable", "fingerprint", "duplicate_of", "characters", "requests", "credits",
)  # fmt: skip
#: What a row says was spent on its item by this task (see :mod:`airflow_provider_tts.costs`).
SPENT_FIELDS = ("characters", "requests", "credits")


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


def check_manifest_name(name: Any) -> str:
    """The manifest's name: one plain file name in the destination (no path, no ``..``, not hidden)."""
    try:
        return check_file_name(name)
    except TtsConfigError as exc:
        raise TtsConfigError(str(exc).replace("file_name", "manifest_name", 1)) from None


def rejected_message(entry: Mapping[str, Any]) -> str:
    when = entry.get("updated_at") or "an earlier run"
    return (
        f"rejected by the vendor ({when}): {entry.get('reason')}; not sent again for the unchanged request "
        "(retry_failed_items=True sends it)"
    )[:500]


def uncertain_message(entry: Mapping[str, Any], owner: str) -> str:
    who = "an earlier try of this task" if entry.get("owner") in (owner, None) else "another run"
    cause = f" ({entry['error']})" if entry.get("error") else ""
    return (
        f"{who} sent the create call for this request and its answer never arrived{cause}: the vendor may have "
        "created (and billed) it, so it is not sent again; set on_uncertain_submit='resubmit' to pay for it anew"
    )[:500]


def changed_message(plan: BatchPlan, what: str) -> str:
    return (
        f"the items changed while this task instance ran ({what}); their requests and files are keyed by content, "
        "so nothing is mixed up: clear the task to run the new items"
    )


def with_duplicates(rows: list[dict[str, Any]], items: Sequence[BatchItem]) -> list[dict[str, Any]]:
    """A row for every position: a repeated request's extra positions copy its row, naming the first.

    The copies spent nothing of their own: their ``characters``, ``requests`` and ``credits`` are 0.
    """
    out = list(rows)
    for row, item in zip(rows, items, strict=True):
        for index in item.duplicates:
            out.append({**row, "index": index, "duplicate_of": item.index, **dict.fromkeys(SPENT_FIELDS, 0)})
    return sorted(out, key=lambda r: r["index"])
