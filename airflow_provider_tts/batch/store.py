"""The store phase of a batch: every finished audio streamed into the folder, then the manifest.

While the worker itself waits (a batch that is not deferrable, and every batch for its first
``wait_before_defer`` seconds), each item is stored the moment its poll says it ended, with the
status (and audio URL) that poll just read, while the wait goes on for the others
(:meth:`StorePhase._store_while_waiting`): when the last item ends only it is left to store, and
no status is asked twice. Items that ended in the triggerer are stored once the task resumes,
with a fresh status (and audio URL) each. Either way ``max_active_requests`` at a time, each
through the same atomic, constant-memory writer as the single store; a failed item is a manifest
row with its reason, never a failed batch by itself. Then the manifest is written, the wait list
removed, one asset event emitted, and the task fails only when more than ``max_failed_items``
items failed, with an error that says whether a retry can help.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeAlias

from airflow_provider_tts.batch.manifest import with_duplicates, write_manifest
from airflow_provider_tts.batch.plan import BatchPlan, PlanPhase
from airflow_provider_tts.costs import rate_for
from airflow_provider_tts.exceptions import (
    TtsBatchItemsFailedError,
    TtsBatchItemsFailedPermanentlyError,
    TtsBudgetExceededError,
    TtsError,
    TtsPermanentError,
    error_from_event,
)
from airflow_provider_tts.links import BatchManifestLink, StoredAudioLink
from airflow_provider_tts.naming import has_audio_extension, same_file, with_extension
from airflow_provider_tts.objects import copy_object
from airflow_provider_tts.results import batch_result
from airflow_provider_tts.storage import StoredAudio, check_audio_body, peek
from airflow_provider_tts.storing import STORE_ATTEMPTS as STORE_ATTEMPTS
from airflow_provider_tts.storing import plain_uri, stream_audio_into

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_tts.batch.items import BatchItem
    from airflow_provider_tts.batch.trigger import TtsBatchTrigger
    from airflow_provider_tts.cache import CachedAudio
    from airflow_provider_tts.status import TtsTaskStatus

#: What this try knows of a request's cache entry: its confirmed audio (a hit) and what ``spent`` reads.
Known: TypeAlias = tuple["CachedAudio | None", Any]

#: What the batch's asset event carries in its ``extra``: where the manifest is and the counts.
EVENT_KEYS = ("manifest", "items", "stored", "cached", "failed")


class EntryWrites:
    """The stored items' request cache entries, written beside the store threads, not by them.

    An item stored is two writes to the user's store: its audio, then its cache entry. Written by
    the store thread, the entry's round trip held one of the ``max_active_requests`` slots, which
    bound requests to the vendor, and on S3 an entry's small PutObject waits about as long as the
    audio's (``BENCHMARKS.md``, batch store phase). Here the store thread hands the entry over and
    takes its next item; ``max_active_requests`` threads of their own write the entries.

    At most twice ``threads`` entries are queued or being written at once (a store thread with
    one more to hand over waits): a worker killed now leaves at most that many items stored whose
    entries still say "submitted" (before, one per store thread). A later try waits on their vendor
    tasks, finished and paid, downloads their audio again (free) and finds the identical file, so
    nothing is paid twice (RELIABILITY BA20). :meth:`wait` is called before the manifest and the
    cache snapshot are written; :meth:`fail_unrecorded` turns an item whose entry could not be
    written into a retryable failure: its audio is stored, but a re-run would not know it.
    """

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tts-batch-entry")
        self._room = threading.BoundedSemaphore(2 * threads)
        self._writes: dict[str, Future[None]] = {}

    def record(self, plan: BatchPlan, item: BatchItem, path: ObjectStoragePath, stored: StoredAudio) -> None:
        """Queue ``item``'s entry, its audio being at ``path`` (waiting while the queue is full)."""
        self._room.acquire()
        try:
            write = self._pool.submit(plan.cache.stored, item.fingerprint, path, stored)
        except BaseException:
            self._room.release()
            raise
        write.add_done_callback(lambda _: self._room.release())
        self._writes[str(item.index)] = write

    def wait(self) -> None:
        """Wait until every queued entry is written (or has failed)."""
        self._pool.shutdown(wait=True)

    def fail_unrecorded(self, rows: dict[str, dict[str, Any]]) -> None:
        """Make the row of each stored item whose entry could not be written a retryable failure.

        An interruption (``KeyboardInterrupt``, ``SystemExit``: not an ``Exception``) in a write is
        raised here, as it would have been in the store thread.
        """
        self.wait()
        for write in self._writes.values():
            exc = write.exception()
            if exc is not None and not isinstance(exc, Exception):
                raise exc
        for index, write in self._writes.items():
            exc = write.exception()
            row = rows.get(index)
            if exc is None or row is None or row.get("status") != "stored":
                continue
            why = f"{type(exc).__name__}: {exc}"
            rows[index] = {**row, "status": "failed", "retryable": True,
                           "error": f"stored {row['file']}, but its request cache entry could not be written ({why}); "
                                    "a retry records it without paying again"[:500]}  # fmt: skip


class StorePhase(PlanPhase):
    """The batch operator's store phase (a mixin of the operator, never used alone)."""

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
        """Store every finished item, write the manifest, drop the wait list, apply the threshold.

        ``done``: ``{item index: manifest row}`` of the items already stored (or failed) while the
        worker waited (:meth:`_store_while_waiting`); they are neither asked about nor stored again.
        ``known``: ``{fingerprint: (hit, entry)}`` of the requests whose cache entries this try
        already holds (the submit phase's, or the wait list's): they are not read again. Only the
        rest's entries are read (one LIST, a GET each).
        """
        if not isinstance(event, dict) or event.get("status") not in ("done", "timeout", "error"):
            raise TtsError(f"the batch resumed with no usable event: {event!r:.200}")
        if event["status"] == "error":
            raise error_from_event(event)
        done = done or {}
        todo = [item for item in plan.items if str(item.index) not in done]
        made = self._rows(context, plan, todo, self._entries(plan, todo, known or {}), waits, failed)
        rows_at = {**{index: dict(row) for index, row in done.items()}, **made}
        rows = [rows_at[str(item.index)] for item in plan.items]
        rows = with_duplicates(rows, plan.items)
        plan.cache.snapshot.save()  # the next run over this folder reads every entry it needs at once
        if not self.manifest_task_ids:
            rows = [{k: v for k, v in row.items() if k != "tts_task_id"} for row in rows]
        manifest = plan.folder / self.manifest_name
        write_manifest(manifest, rows)
        StoredAudioLink.persist(context, self, plan.folder, folder=True)
        BatchManifestLink.persist(context, self, manifest)
        rate = rate_for(self.hook.vendor, self.tts_kind).credits_per_1000
        summary = batch_result(rows, plain_uri(plan.folder), plain_uri(manifest), credits_per_1000=rate)
        self.batch_summary = summary
        self._emit(context, summary)
        self.log.info("Batch finished: %s", {k: v for k, v in summary.items() if k != "files"})
        plan.record.remove()
        failed_rows = [row for row in rows if row["status"] == "failed" and row.get("duplicate_of") is None]
        stopped = [row for row in failed_rows if row.get("budget")]
        if stopped:
            raise TtsBudgetExceededError(
                f"batch {self.task_id!r} stopped submitting: {stopped[0]['error']}. {len(stopped)} of "
                f"{len(plan.items)} items were not submitted and the {summary['stored']} stored are kept (the "
                f"manifest {summary['manifest']} has every row; spent: {summary['characters']} characters in "
                f"{summary['requests']} create call(s), credits {summary['credits']}). Raise max_credits (the "
                "operator's or the connection's) or correct credits_per_1000_characters, then clear the task: what "
                "is stored is not paid for again.",
                limit_name="max_credits",
                limit=self.max_credits,
            )
        if failed_rows and self.max_failed_items is not None and len(failed_rows) > self.max_failed_items:
            shown = "; ".join(f"{row['key']}: {row['error']}" for row in failed_rows[:5])
            message = (
                f"{len(failed_rows)} of {len(plan.items)} items failed (max_failed_items={self.max_failed_items}); "
                f"the manifest {summary['manifest']} has every row. First: {shown}"
            )
            if any(row["retryable"] for row in failed_rows):
                raise TtsBatchItemsFailedError(message + ". A retry pays only for the retryable failures.")
            raise TtsBatchItemsFailedPermanentlyError(message + ". None of them can succeed on a retry.")
        return summary

    def _entries(self, plan: BatchPlan, items: list[BatchItem], known: Mapping[str, Known]) -> dict[str, Known]:
        """``(hit, entry)`` of each item's request: from ``known``, else read (one LIST, a GET per entry)."""
        wanted = {item.fingerprint for item in items}
        unknown = [fp for fp in plan.requests if fp in wanted and fp not in known]
        found = plan.cache.find_all(unknown, threads=self.max_active_requests) if unknown else {}
        return {**{fp: known[fp] for fp in wanted if fp in known}, **found}

    def _rows(
        self,
        context: Context,
        plan: BatchPlan,
        items: list[BatchItem],
        found: Mapping[str, Known],
        waits: Mapping[str, tuple[str, float]],
        failed: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, dict[str, Any]]:
        """``{item index: manifest row}`` of ``items``, ``max_active_requests`` at a time, with what each spent."""
        from airflow_provider_tts.transport.slots import ThreadSlots

        retried = is_retry(context)
        slots = ThreadSlots(self.max_active_requests)
        entries = EntryWrites(self.max_active_requests)

        def one(item: BatchItem) -> dict[str, Any]:
            hit, entry = found[item.fingerprint]
            with slots.held():
                row = self._row(context, plan, item, hit, waits, failed, retried, entries=entries)
            return {**row, **spent(plan, item, row, entry)}

        try:
            with ThreadPoolExecutor(slots.workers, thread_name_prefix="tts-batch-store") as pool:
                rows = {str(item.index): row for item, row in zip(items, pool.map(one, items), strict=True)}
        finally:
            entries.wait()  # every queued entry is written, even when a store raised
        entries.fail_unrecorded(rows)
        return rows

    def _row(
        self,
        context: Context,
        plan: BatchPlan,
        item: BatchItem,
        hit: CachedAudio | None,
        waits: Mapping[str, tuple[str, float]],
        failed: Mapping[str, Mapping[str, Any]],
        retried: bool,
        status: TtsTaskStatus | None = None,
        *,
        entries: EntryWrites,
    ) -> dict[str, Any]:
        """One manifest row: the item stored now, found stored, or failed with its reason.

        ``status``: the one the wait just read for its vendor task, used for the first download
        instead of asking again; a download that fails is tried again with a fresh status (and URL).
        A stored item's cache entry is queued on ``entries``, which the caller waits for.
        """
        row: dict[str, Any] = {"index": item.index, "key": item.key, "fingerprint": item.fingerprint}
        job = waits.get(item.fingerprint)
        if hit is not None and (self.reuse_cached or job is None):
            return {**row, **self._use_hit(plan, item, hit)}
        if job is None:
            why = failed.get(item.fingerprint) or {"error": "not submitted in this try", "retryable": True}
            return {**row, "status": "failed", "error": why.get("error"), "retryable": bool(why.get("retryable")),
                    "budget": bool(why.get("budget"))}  # fmt: skip
        task_id = job[0]
        row["tts_task_id"] = task_id
        # A transient failure of one download (a 200 maintenance page the transport cannot tell from
        # audio, a 5xx outliving its retries) is tried again here, with a fresh status (and URL): the
        # vendor task is paid for, and max_failed_items is for items the vendor failed, not for glitches.
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                if status is None or attempt > 1:
                    status = self.hook.get_task_status(task_id, self.tts_kind)
                if status.state == "pending":
                    return {**row, "status": "failed", "error": f"still {status.vendor_status} when the wait ended",
                            "retryable": True}  # fmt: skip
                if status.state == "failed":
                    reason = f"vendor status {status.vendor_status}" + (f": {status.message}" if status.message else "")
                    if status.retryable:
                        plan.cache.release(item.fingerprint)  # the vendor failed it: a retry pays for it anew
                    else:
                        plan.cache.rejected(item.fingerprint, reason)
                    return {**row, "status": "failed", "error": reason, "retryable": bool(status.retryable)}
                return {**row, **self._store(context, plan, item, status, retried or attempt > 1, entries)}
            except Exception as exc:
                permanent = isinstance(exc, TtsPermanentError)
                if not permanent and attempt < STORE_ATTEMPTS:
                    self.log.warning("Item %d (%s), task %s: %s; downloading it again", item.index, item.key, task_id,
                                     exc)  # fmt: skip
                    continue
                self.log.warning("Item %d (%s), task %s: %s", item.index, item.key, task_id, exc)
                return {**row, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500],
                        "retryable": not permanent}  # fmt: skip
        raise AssertionError("unreachable: the last attempt returns")

    async def _store_while_waiting(
        self,
        context: Context,
        plan: BatchPlan,
        trigger: TtsBatchTrigger,
        waits: Mapping[str, tuple[str, float]],
        failed: Mapping[str, Mapping[str, Any]],
        stop_at: float | None,
        known: Mapping[str, Known] | None = None,
    ) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        """Wait in this worker (the trigger's own loop, on the operator's hook), storing items as they end.

        Each ended item's row (stored with the status its poll just read, or failed with the
        vendor's reason) is made in a thread, ``max_active_requests`` at a time, while the polls go
        on. Returns the wait's event (None: ``stop_at`` came first; the caller defers the rest) and
        ``{item index: manifest row}`` of every item whose vendor task ended, its spending included.
        """
        from airflow_provider_tts.transport.slots import ThreadSlots

        owner = {task_id: fp for fp, (task_id, _) in waits.items()}
        items: dict[str, list[BatchItem]] = {}
        for item in plan.items:
            items.setdefault(item.fingerprint, []).append(item)
        # What spent() reads of each entry as the submit phase left it (owner, reported credits), before
        # storing replaces it: the submit phase hands it over (``known``); only an entry it did not is
        # read. Only those two fields are kept through the wait (10,000 entries would not).
        known = known or {}
        unknown = [fp for fp in waits if fp not in known]
        read = {}
        if unknown:
            read = await asyncio.to_thread(plan.cache.find_all, unknown, threads=self.max_active_requests)
        found = {
            fp: {k: entry.get(k) for k in ("owner", "credits")} if isinstance(entry, Mapping) else entry
            for fp, (_, entry) in {**{fp: known[fp] for fp in waits if fp in known}, **read}.items()
        }
        retried = is_retry(context)
        rows: dict[str, Future[dict[str, Any]]] = {}
        ended_fps: set[str] = set()
        # Stores at work at once: max_active_requests; one sleeping out a retry's backoff lends its
        # slot to the next item (transport.slots), so a download's 1-2 s backoff delays no other.
        slots = ThreadSlots(self.max_active_requests)
        pool = ThreadPoolExecutor(slots.workers, thread_name_prefix="tts-batch-store")
        entries = EntryWrites(self.max_active_requests)

        def row(item: BatchItem, status: TtsTaskStatus | None) -> dict[str, Any]:
            with slots.held():
                made = self._row(context, plan, item, None, waits, failed, retried, status, entries=entries)
            return {**made, **spent(plan, item, made, found[item.fingerprint])}

        def ended(task_id: str, status: TtsTaskStatus | None) -> None:
            fp = owner.get(task_id)
            if fp is not None and fp not in ended_fps:
                ended_fps.add(fp)
                for item in items.get(fp, ()):
                    rows[str(item.index)] = pool.submit(row, item, status)

        pending = {task_id: at for task_id, at in waits.values()}
        try:
            event = await trigger.wait(self.hook, pending, log=self.log, on_ended=ended, stop_at=stop_at)
        finally:
            await self.hook.aclose()
            await asyncio.to_thread(pool.shutdown, wait=True)  # every started store finishes, even on an error
            await asyncio.to_thread(entries.wait)  # and every stored item's entry is written
        made = {index: future.result() for index, future in rows.items()}
        entries.fail_unrecorded(made)
        return event, made

    def _use_hit(self, plan: BatchPlan, item: BatchItem, hit: CachedAudio) -> dict[str, Any]:
        """A cached item's row; copied (no vendor call) to the name its key or ``file_name`` asks for."""
        target = hit.path
        if item.key in plan.explicit and same_file(hit.path.name) != same_file(item.stem):
            extension = os.path.splitext(hit.path.name)[1]
            target = plan.folder / (item.stem if has_audio_extension(item.stem) else f"{item.stem}{extension}")
            etag = copy_object(hit.path, target)
            stored = StoredAudio(plain_uri(target), hit.size_bytes, hit.sha256, hit.content_type,
                                 hit.duration_seconds, "", True, etag)  # fmt: skip
            plan.cache.stored(item.fingerprint, target, stored, credits=hit.credits)
            self.log.info("Item %d (%s): copied the cached audio %s to %s", item.index, item.key, hit.uri,
                          plain_uri(target))  # fmt: skip
        return {"status": "cached", "file": plain_uri(target), "size_bytes": hit.size_bytes, "sha256": hit.sha256,
                "duration_seconds": hit.duration_seconds}  # fmt: skip

    def _store(
        self,
        context: Context,
        plan: BatchPlan,
        item: BatchItem,
        status: TtsTaskStatus,
        retried: bool,
        entries: EntryWrites,
    ) -> dict[str, Any]:
        """Stream one item's audio into the folder (atomic, constant memory); queue its cache entry."""
        with self.hook.open_audio(status) as audio:
            head, chunks = peek(audio.iter_chunks(self.chunk_bytes))
            check_audio_body(audio.content_type, head, what=f"audio for item {item.key} (task {status.tts_task_id})")
            name = with_extension(item.stem, audio.content_type, head)
            path = plan.folder / name
            tag = plan.identity.digest()[:12] if plan.identity is not None else "manual"
            stored = stream_audio_into(
                path,
                chunks,
                audio,
                status,
                temp_name=f".{name}.{tag}.partial",
                retried=retried,
                overwrite=self.overwrite,
                max_bytes=self.max_bytes,
                chunk_bytes=self.chunk_bytes,
            )
        entries.record(plan, item, path, stored)
        return {"status": "stored", "file": plain_uri(path), "size_bytes": stored.size_bytes, "sha256": stored.sha256,
                "duration_seconds": stored.duration_seconds}  # fmt: skip

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage facets of the finished batch: the folder as output, the job and what it spent."""
        from airflow_provider_tts.lineage import batch_lineage

        return batch_lineage(getattr(self, "batch_summary", None), api=self.vendor.api, kind=self.tts_kind)

    def _emit(self, context: Context, summary: Mapping[str, Any]) -> None:
        """One asset event on each outlet, naming the manifest; the folder as hook-lineage output."""
        from airflow.sdk import Asset
        from airflow.sdk.definitions.asset import AssetRef

        from airflow_provider_tts.compat import get_hook_lineage_collector

        events = context.get("outlet_events")
        if events is not None:
            for outlet in self.outlets:
                if isinstance(outlet, Asset | AssetRef):
                    events[outlet].extra.update({k: summary[k] for k in EVENT_KEYS})
        get_hook_lineage_collector().add_output_asset(context=self.hook, uri=summary["destination"])


def is_retry(context: Context) -> bool:
    """Whether this is a later try (or an unknown one): a file in the way may be this task's own partial."""
    try_number = getattr(context.get("ti"), "try_number", None)
    return not isinstance(try_number, int) or try_number > 1


def spent(plan: BatchPlan, item: BatchItem, row: Mapping[str, Any], entry: Any) -> dict[str, Any]:
    """What a row's item cost this task: its characters, one create and the credits the vendor reported.

    Only a vendor task this task instance created counts (the request cache entry it waited on
    is its own, across its tries); audio from the cache, a task another run paid for, and an item
    never submitted spent nothing here.
    """
    ours = row.get("tts_task_id") is not None and isinstance(entry, Mapping) and entry.get("owner") == plan.cache.owner
    if row["status"] == "cached" or not ours:
        return {"characters": 0, "requests": 0, "credits": 0}
    credits = entry.get("credits")
    reported = credits if isinstance(credits, int) and not isinstance(credits, bool) else None
    return {"characters": item.characters, "requests": 1, "credits": reported}
