"""What the operators that store audio return (their XCom): one stored-file dict, one batch summary.

Built here and nowhere else, so every storing operator returns the same keys whatever happened
(a fresh store, a request-cache hit, a copy of cached audio under a new name). The table of every
key is ``docs/results.md``.

* :func:`stored_file_result` (:data:`STORED_FILE_KEYS`): one file, from
  :class:`~airflow_provider_tts.operators.tts.TtsAudioToStorageOperator`, the one-task operators
  of :mod:`airflow_provider_tts.operators.text_to_storage` and
  :class:`~airflow_provider_tts.operators.tts.CambTtsStreamToStorageOperator`.
* :func:`batch_result` (:data:`BATCH_RESULT_KEYS`): a whole batch, from the batch operators: counts,
  the manifest's URI and the stored files' URIs up to :data:`BATCH_RESULT_FILES` (the manifest has
  every row).

``TtsSubmitOperator`` stores nothing and returns the vendor's task id; ``TtsTaskSensor`` the task's
status. Neither is built here.

No I/O and no import of the package: every module may import this one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

#: The keys of every single-file storing operator's result, in this order.
STORED_FILE_KEYS: tuple[str, ...] = (
    "uri", "size_bytes", "sha256", "content_type", "duration_seconds", "tts_task_id", "fingerprint", "cached",
    "characters", "requests", "credits", "estimated_credits",
)  # fmt: skip

#: The keys of a batch operator's result, in this order.
BATCH_RESULT_KEYS: tuple[str, ...] = (
    "items", "stored", "cached", "failed", "failed_keys", "destination", "manifest", "files", "files_truncated",
    "characters", "requests", "credits", "estimated_credits",
)  # fmt: skip

#: At most this many stored URIs in a batch result's ``files`` (``files_truncated`` says when more
#: were stored): XCom stays small, ``manifest`` names every file.
BATCH_RESULT_FILES = 1000
#: At most this many keys in a batch result's ``failed_keys`` (the manifest has every failed row).
BATCH_RESULT_FAILED_KEYS = 20


class StoredFacts(Protocol):
    """What is known of any stored audio (a fresh store's ``StoredAudio``, a cache hit's ``CachedAudio``)."""

    @property
    def size_bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def content_type(self) -> str: ...
    @property
    def duration_seconds(self) -> float | None: ...


def stored_file_result(
    audio: StoredFacts,
    *,
    uri: str,
    tts_task_id: str | None,
    fingerprint: str | None,
    cached: bool,
    credits: int | None = None,
    characters: int | None = None,
    requests: int = 0,
    estimated_credits: float | None = None,
) -> dict[str, Any]:
    """The result of every operator that stores one file (:data:`STORED_FILE_KEYS`, JSON values only).

    :param audio: the stored audio's size, sha256, content type and duration.
    :param uri: where it is, without the connection id.
    :param tts_task_id: the vendor task that made it; None where there is none (``/tts-stream``, a
        cache hit: the audio was made by an earlier run).
    :param fingerprint: the request's fingerprint; None where the operator does not know the request
        (``TtsAudioToStorageOperator`` given a task id).
    :param cached: True when the audio came from the destination's request cache: no vendor call,
        nothing paid in this run.
    :param credits: what the vendor said it charged (Camb.ai's ``X-Credits-Required`` on
        ``/tts-stream``); 0 when ``cached``; None where the vendor does not say.
    :param characters: the characters this task sent to be spoken for the file (see
        :mod:`airflow_provider_tts.costs`); 0 when ``cached``; None where the request is unknown.
    :param requests: the paid vendor calls (a create or ``/tts-stream``) this task made for the
        file: 1, or 0 when ``cached`` or given a task id.
    :param estimated_credits: ``characters`` at the connection's or the vendor table's rate; 0
        when ``cached``; None where no price is known.
    """
    return {
        "uri": uri,
        "size_bytes": audio.size_bytes,
        "sha256": audio.sha256,
        "content_type": audio.content_type,
        "duration_seconds": audio.duration_seconds,
        "tts_task_id": tts_task_id,
        "fingerprint": fingerprint,
        "cached": cached,
        "characters": 0 if cached else characters,
        "requests": 0 if cached else requests,
        "credits": 0 if cached else credits,
        "estimated_credits": 0 if cached else estimated_credits,
    }


def batch_result(
    rows: Sequence[Mapping[str, Any]], destination: str, manifest: str, *, credits_per_1000: float | None = None
) -> dict[str, Any]:
    """A batch's small result (:data:`BATCH_RESULT_KEYS`): counts and where to look, never the rows.

    ``rows`` are the manifest's, one per item position, in order; a repeated request's extra
    positions (``duplicate_of``) are not counted again. ``files`` lists the stored and cached
    items' URIs in item order, at most :data:`BATCH_RESULT_FILES` of them. What was spent is
    summed over the rows: ``characters`` and ``requests``; ``credits`` only when every row that
    made a request says what it was charged (else None); ``estimated_credits`` is ``characters``
    at ``credits_per_1000`` (None without a price).
    """
    own = [row for row in rows if row.get("duplicate_of") is None]

    def count(status: str) -> int:
        return sum(1 for row in own if row["status"] == status)

    failed_keys = [row["key"] for row in own if row["status"] == "failed"]
    files = [row["file"] for row in own if row["status"] in ("stored", "cached")]
    characters = sum(row.get("characters") or 0 for row in own)
    paid = [row.get("credits") for row in own if row.get("requests")]
    return {
        "items": len(own),
        "stored": count("stored"),
        "cached": count("cached"),
        "failed": len(failed_keys),
        "failed_keys": failed_keys[:BATCH_RESULT_FAILED_KEYS],
        "destination": destination,
        "manifest": manifest,
        "files": files[:BATCH_RESULT_FILES],
        "files_truncated": len(files) > BATCH_RESULT_FILES,
        "characters": characters,
        "requests": sum(row.get("requests") or 0 for row in own),
        "credits": sum(paid) if all(isinstance(c, int) for c in paid) else None,  # type: ignore[arg-type]
        "estimated_credits": (round(characters * credits_per_1000 / 1000, 6) if credits_per_1000 is not None else None),
    }
