"""The wait list of a batch task instance while it waits for its vendor tasks.

While the task waits, ``<destination>/.tts-batch/<id>/pending.json`` (``<id>`` from dag, run, task
and map index, never the try) holds the vendor task ids to poll and a digest of the items: the
trigger's row holds only its URI (10,000 ids exceed MySQL's 64 KB ``TEXT`` kwargs column), and the
resumed task checks that the items did not change while it waited. It is removed when the task
finishes; everything a later try or run needs is in the request cache
(:mod:`airflow_provider_tts.cache`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.objects import delete_small, read_small, write_small
from airflow_provider_tts.storage import TtsStorageError, is_local, plain_uri

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tts.submissions import SubmitIdentity

log = logging.getLogger(__name__)

#: The hidden folder, beside the audio, that holds the wait lists of batches in flight.
STATE_FOLDER = ".tts-batch"
#: A wait list is ~100 bytes per item; 64 MiB is far beyond any batch this operator takes.
MAX_RECORD_BYTES = 64 * 1024**2


class BatchRecord:
    """The wait list of one batch task instance while it waits (see the module docstring).

    ``pending``: ``{fingerprint: [vendor task id, submitted_at]}`` of the requests to wait for;
    ``failed``: ``{fingerprint: {"error", "retryable"}}`` of requests the submit phase could not pay
    for (their manifest rows); ``done``: ``{item index: manifest row}`` of the items the worker
    already stored (or saw fail) while it waited before deferring, whose rows the resumed task
    writes as they were (a request cache hit would call them "cached" and lose what they cost), and
    the rows of the items whose audio the request cache held; ``entries``: ``{fingerprint: {"owner",
    "credits"}}`` of the requests in ``pending``, what the resumed task reports as spent, so it reads
    no cache entry again (absent in a record of 0.5 and before: then it reads them);
    ``digest``: :func:`~airflow_provider_tts.batch.items.items_digest` of
    the items it was made for. No secret is in it.
    """

    FILE = "pending.json"

    def __init__(self, folder: ObjectStoragePath) -> None:
        self.folder = folder
        self.where = plain_uri(folder)

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
        self,
        pending: Mapping[str, tuple[str, float]],
        digest: str,
        failed: Mapping[str, Mapping[str, Any]],
        done: Mapping[str, Mapping[str, Any]] | None = None,
        entries: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Write the wait list whole; returns only once the trigger (or a resumed task) can read it."""
        body = {
            "version": 2,
            "digest": digest,
            "pending": {fp: list(job) for fp, job in pending.items()},
            "failed": {fp: dict(reason) for fp, reason in failed.items()},
            "done": {fp: dict(row) for fp, row in (done or {}).items()},
            "entries": {fp: dict(entry) for fp, entry in (entries or {}).items() if entry is not None},
        }
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        try:
            write_small(self.folder / self.FILE, data)
        except OSError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise TtsStorageError(f"could not write the batch wait list {self.where}: {problem}") from exc

    def load(
        self,
    ) -> tuple[
        dict[str, tuple[str, float]], str | None, dict[str, dict[str, Any]], dict[str, dict[str, Any]],
        dict[str, dict[str, Any]],
    ]:  # fmt: skip
        """``(pending, digest, failed, done, entries)``; empty and None when there is none. Unreadable is an error."""
        path = self.folder / self.FILE
        try:
            raw = read_small(path, MAX_RECORD_BYTES)
            body = None if raw is None else json.loads(raw)
        except (OSError, ValueError) as exc:
            raise TtsStorageError(f"the batch wait list {path} is unreadable ({exc}); nothing is paid again") from exc
        if body is None:
            return {}, None, {}, {}, {}
        if not isinstance(body, dict) or body.get("version") != 2 or not isinstance(body.get("pending"), dict):
            raise TtsStorageError(f"the batch wait list {path} is not one this provider wrote; nothing is paid again")
        pending = {
            str(fp): (str(job[0]), float(job[1]))
            for fp, job in body["pending"].items()
            if isinstance(job, list) and len(job) == 2
        }
        digest = body.get("digest")
        failed = {str(fp): dict(r) for fp, r in (body.get("failed") or {}).items() if isinstance(r, dict)}
        done = {str(fp): dict(r) for fp, r in (body.get("done") or {}).items() if isinstance(r, dict)}
        entries = {str(fp): dict(e) for fp, e in (body.get("entries") or {}).items() if isinstance(e, dict)}
        return pending, digest if isinstance(digest, str) else None, failed, done, entries

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
        jobs, *_ = self.load()
        return {task_id: submitted_at for task_id, submitted_at in jobs.values()}
