"""Batch audio at the cost of one task: N texts, one deferral, one file per text, one manifest.

Mapping a submit task and a store task over 1,000 texts makes 2,000 task instances, and
Airflow's per-task overhead, not the vendor, then sets the pace. The operators here take the
whole list in one task, in the style of the one-task operators (one class per vendor and kind):

=========================================  =========  =================  ======================
operator                                   vendor     kind               a text item fills
=========================================  =========  =================  ======================
``CambTtsBatchToStorageOperator``          Camb.ai    ``tts``            ``text``
``CambTextToSoundBatchToStorageOperator``  Camb.ai    ``text-to-sound``  ``prompt``
``RevidTtsBatchToStorageOperator``         RevidAPI   ``tts``            ``text``
``RevidSrtToSpeechBatchToStorageOperator`` RevidAPI   ``srt-to-speech``  ``srt``
=========================================  =========  =================  ======================

What one task instance does:

1. **Plan**: read every item (a list, or a ``.jsonl``/``.csv``/``.txt`` file), merge it over
   ``defaults``, validate it against the vendor's documented body, check keys and file names are
   unique: any mistake fails here, before anything is paid for or written.
2. **Submit**: items whose audio is already at the destination under the same request fingerprint
   (the request cache's sidecar) cost nothing; the rest are created ``max_active_requests`` at a
   time, the intent recorded before each round of create calls and the vendor ids right after
   (:class:`~airflow_provider_tts.batch.BatchRecord`), so a retry re-attaches and never pays twice
   for an item; a 429's ``Retry-After`` pauses every request of the batch.
3. **Wait**: one deferral on :class:`~airflow_provider_tts.triggers.batch.TtsBatchTrigger` for
   all items (or the same loop in the worker with ``deferrable=False``).
4. **Store**: every finished audio streamed into the destination folder, ``max_active_requests``
   at a time, each through the same atomic, constant-memory writer as the single store; then the
   manifest (one JSON line per item) beside the audio.

**Per-item isolation.** A rejected or failed item is a manifest row with the vendor's reason, not a
failed batch; the task fails when more than ``max_failed_items`` items failed (default 0: any
failure fails the task, after everything else was stored, so a retry redoes only the failures:
retryable ones are resubmitted, permanent ones are reported again without paying).

The result (XCom) is a small summary; the per-item rows are in the manifest.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_provider_tts import cache
from airflow_provider_tts.batch import (
    PART_ITEMS,
    BatchItem,
    BatchRecord,
    item_parts,
    iter_items,
    listing,
    write_manifest,
)
from airflow_provider_tts.compat import conf
from airflow_provider_tts.connection import DEFAULT_CONN_IDS
from airflow_provider_tts.exceptions import (
    TtsAuthError,
    TtsBatchItemsFailedError,
    TtsBatchItemsFailedPermanentlyError,
    TtsConfigError,
    TtsError,
    TtsPermanentError,
    error_from_event,
)
from airflow_provider_tts.fingerprint import request_fingerprint
from airflow_provider_tts.lineage import OutletsForTestRuns, default_outlet
from airflow_provider_tts.naming import with_extension
from airflow_provider_tts.operators.submitting import (
    UncertainSubmitPolicy,
    check_uncertain_policy,
    create_field_name,
    create_fields,
)
from airflow_provider_tts.operators.tts import _rendered_later, plain_uri, stream_audio_into
from airflow_provider_tts.storage import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_BYTES,
    OVERWRITE_POLICIES,
    OverwritePolicy,
    TtsStorageError,
    check_audio_body,
    check_destination,
    destination_path,
    peek,
)
from airflow_provider_tts.submissions import SubmitIdentity, outcome_unknown
from airflow_provider_tts.triggers.batch import TtsBatchTrigger
from airflow_provider_tts.vendors import CambAi, RevidTts, Vendor
from airflow_provider_tts.waiting import WaitPolicy, wait_timeout

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath, XComArg

    from airflow_provider_tts.hooks.tts import TtsHook
    from airflow_provider_tts.status import Kind, TtsTaskStatus

#: A batch waits longer than one task: the default deadline of the wait for all its items.
DEFAULT_BATCH_TIMEOUT = 6 * 3600.0
MAX_ACTIVE_REQUESTS = 64
#: Downloads of one item within one try (each after the transport's own retries) before it is a failed row.
STORE_ATTEMPTS = 3
#: What the batch's asset event carries in its ``extra``: where the manifest is and the counts.
EVENT_KEYS = ("manifest", "items", "stored", "cached", "failed")


@dataclass
class _Plan:
    """Every item of the batch, validated: the compact rows and where things go."""

    items: list[BatchItem]
    folder: ObjectStoragePath
    record: BatchRecord
    identity: SubmitIdentity | None
    names: frozenset[str] = field(default_factory=frozenset)
    #: Audio file names in the folder that have a request-cache sidecar, by their stem.
    with_sidecar: dict[str, list[str]] = field(default_factory=dict)

    def look(self) -> None:
        """List the folder once: what exists, and which audio files carry a sidecar."""
        self.names = listing(self.folder)
        self.with_sidecar = {}
        for name in self.names:
            if name.endswith(cache.SIDECAR_SUFFIX):
                audio = name.removesuffix(cache.SIDECAR_SUFFIX)
                self.with_sidecar.setdefault(os.path.splitext(audio)[0], []).append(audio)


class BaseTextBatchToStorageOperator(OutletsForTestRuns, BaseOperator):
    """Submit a batch of one vendor and kind, wait once for all of it, store every file and a manifest.

    The base of the batch operators (see the module docstring); a subclass sets ``vendor``,
    ``tts_kind`` and ``item_field`` (the create field a plain-text item fills).

    :param destination: the folder for the audio and the manifest (templated), e.g.
        ``s3://bucket/audio/{{ ds }}/``.
    :param items: a list of items (templated; an XComArg works): texts, or dicts of per-item
        create fields with optional ``key`` (the item's stable identity; default its 1-based
        position) and ``file_name`` (default ``<key>`` when a key is given, else
        ``<position, 5 digits>-<first words>``; the extension follows the audio).
    :param items_path: instead of ``items``, a file of items (templated): ``.jsonl`` (a JSON text
        or object per line), ``.csv`` (a header row of field names) or ``.txt`` (a text per line).
    :param items_conn_id: the storage connection of ``items_path``, if it needs one.
    :param defaults: create fields shared by every item (e.g. ``{"voice_id": 20303, "language": 1}``);
        an item's own fields win. Names are checked against the vendor's body when the DAG is parsed.
    :param tts_conn_id: a connection of the class's vendor (default: its default connection id).
    :param dest_conn_id: the storage connection (e.g. an ``aws`` connection for ``s3://``).
    :param overwrite: per file, as for ``TtsAudioToStorageOperator`` (``skip_if_identical``,
        ``replace`` or ``fail``).
    :param max_failed_items: how many items may fail with the task still succeeding (default 0;
        None: never fail because of items). The manifest is written either way.
    :param max_active_requests: create calls, polls and downloads in flight at once (default 8).
    :param manifest_name: the manifest's file name in the destination (default ``manifest.jsonl``).
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param timeout: how long to wait for all items (seconds or ``timedelta``; default 6 hours);
        items still pending then are failed, retryable (a retry re-attaches to them).
    :param poll_interval: seconds between polling rounds at first; ``wait_policy`` the rest.
    :param retry: per-request retry overrides (``max_retries``, ``backoff``, ``max_backoff``).
    :param durable: record each item's submission (needed for a retry to never pay twice).
    :param on_uncertain_submit: ``"fail"`` (default): an item whose create call's answer was lost
        is reported failed and never resent; ``"resubmit"``: a retry sends it again.
    :param max_bytes: per file size cap; ``chunk_bytes``: streaming chunk size.
    """

    vendor: ClassVar[type[Vendor]]
    tts_kind: ClassVar[Kind]
    item_field: ClassVar[str]
    template_fields: Sequence[str] = (
        "items", "items_path", "items_conn_id", "defaults", "destination", "tts_conn_id", "dest_conn_id",
        "manifest_name",
    )  # fmt: skip
    template_fields_renderers = {"items": "json", "defaults": "json"}
    ui_color = "#d9ead3"

    def __init__(
        self,
        *,
        destination: str | ObjectStoragePath,
        items: list[Any] | XComArg | str | None = None,
        items_path: str | ObjectStoragePath | None = None,
        items_conn_id: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        tts_conn_id: str | None = None,
        dest_conn_id: str | None = None,
        overwrite: OverwritePolicy = "skip_if_identical",
        max_failed_items: int | None = 0,
        max_active_requests: int = 8,
        manifest_name: str = "manifest.jsonl",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: float | timedelta | None = None,
        poll_interval: float | timedelta | None = None,
        wait_policy: WaitPolicy | None = None,
        retry: Mapping[str, Any] | None = None,
        durable: bool = True,
        on_uncertain_submit: UncertainSubmitPolicy = "fail",
        max_bytes: int = DEFAULT_MAX_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        if (items is None) == (items_path is None):
            raise TtsConfigError(f"{owner} needs exactly one of items (a list) and items_path (a file of items)")
        if overwrite not in OVERWRITE_POLICIES:
            raise TtsConfigError(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}, got {overwrite!r}")
        if max_failed_items is not None and (not isinstance(max_failed_items, int) or max_failed_items < 0):
            raise TtsConfigError(f"max_failed_items must be None or an integer >= 0, got {max_failed_items!r}")
        if not isinstance(max_active_requests, int) or not 1 <= max_active_requests <= MAX_ACTIVE_REQUESTS:
            raise TtsConfigError(f"max_active_requests must be 1 to {MAX_ACTIVE_REQUESTS}, got {max_active_requests!r}")
        explicit_outlets = "outlets" in kwargs
        policy_fields = WaitPolicy.pop_fields(kwargs)
        self.timeout = wait_timeout(timeout, kwargs, owner) if timeout is not None else DEFAULT_BATCH_TIMEOUT
        self.policy = WaitPolicy.build(wait_policy, poll_interval=poll_interval, **policy_fields)
        super().__init__(**kwargs)
        if not explicit_outlets:
            self.outlets = [default_outlet(destination, self.dag_id if self.has_dag() else None, self.task_id)]
        self.items = items
        self.items_path = items_path
        self.items_conn_id = items_conn_id
        self.defaults = dict(defaults or {}) if not _rendered_later(defaults) else defaults
        self.destination = destination
        self.tts_conn_id = tts_conn_id if tts_conn_id is not None else DEFAULT_CONN_IDS[self.vendor.api]
        self.dest_conn_id = dest_conn_id
        self.overwrite: OverwritePolicy = overwrite
        self.max_failed_items = max_failed_items
        self.max_active_requests = max_active_requests
        self.manifest_name = manifest_name
        self.deferrable = deferrable
        self.retry = dict(retry) if retry else None
        self.durable = durable
        self.on_uncertain_submit = check_uncertain_policy(on_uncertain_submit)
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        if not _rendered_later(self.defaults):
            self._check_defaults(self.defaults)

    # ----------------------------------------------------------------------------- validation

    def _check_defaults(self, defaults: Any) -> dict[str, Any]:
        """``defaults`` as create fields, or an error naming the field the vendor does not document."""
        if not isinstance(defaults, Mapping):
            raise TtsConfigError(f"defaults rendered to {defaults!r:.80}; expected a dict of create fields")
        documented = self.vendor.create_models[self.tts_kind].model_fields
        reference = self.vendor.client_reference_field
        for name in defaults:
            if create_field_name(name) not in documented or name in ("caller_id", reference):
                raise TtsConfigError(
                    f"{type(self).__name__}: defaults has {name!r}, which is not a shared {self.vendor.api} "
                    f"{self.tts_kind} field; expected some of {', '.join(n for n in documented if n != reference)}"
                )
        literal = {name: value for name, value in defaults.items() if not _rendered_later(value)}
        pending = {name for name in documented if create_field_name(name) not in map(create_field_name, literal)}
        self.vendor.validate_create(self.tts_kind, create_fields(literal), pending=pending)
        return dict(defaults)

    @cached_property
    def hook(self) -> TtsHook:
        from airflow_provider_tts.hooks.tts import TtsHook
        from airflow_provider_tts.transport import Pacer

        hook = TtsHook(tts_conn_id=self.tts_conn_id, retry=self.retry)
        hook.pacer = Pacer()  # one Retry-After slows the whole batch
        return hook

    def _session_for_threads(self) -> None:
        """Check the connection speaks this class's API; size its pool for ``max_active_requests`` threads."""
        from requests.adapters import HTTPAdapter

        api = self.hook.vendor.api
        if api != self.vendor.api:
            raise TtsConfigError(
                f"connection {self.tts_conn_id!r} is a {api} connection; {type(self).__name__} needs a "
                f"{self.vendor.api} connection"
            )

        session = self.hook.get_conn()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self.max_active_requests)
        session.mount("http://", adapter)
        session.mount("https://", adapter)

    def _source(self) -> ObjectStoragePath | None:
        if self.items_path is None:
            return None
        return destination_path(self.items_path, self.items_conn_id or None)

    def _raw_items(self) -> Iterator[Any]:
        return iter_items(self.items, self._source())

    def _fields(self, raw: Any, index: int, defaults: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
        key, stem, merged = item_parts(raw, index, item_field=self.item_field, defaults=defaults)
        try:
            return key, stem, create_fields(merged)
        except TtsConfigError as exc:
            raise TtsConfigError(f"item {index} ({key}): {exc}") from None

    def _fingerprint(self, index: int, key: str, fields: Mapping[str, Any]) -> str:
        """The request's fingerprint, validating the fields (the error names the item)."""
        try:
            body = self.vendor.validate_create(self.tts_kind, fields)
        except TtsConfigError as exc:
            raise TtsConfigError(f"item {index} ({key}): {exc}") from None
        return request_fingerprint(self.vendor.api, self.tts_kind, body)

    def _plan(self, context: Context) -> _Plan:
        """Validate every item and the destination; nothing is paid for or written before this passes."""
        defaults = self._check_defaults(self.defaults)
        folder = destination_path(self.destination, self.dest_conn_id or None)
        try:
            if not check_destination(folder, folder_hint=True):
                raise TtsConfigError(f"destination {plain_uri(folder)} must be a folder")
        except OSError as exc:
            raise TtsStorageError(f"cannot prepare {plain_uri(folder)}: {type(exc).__name__}: {exc}") from exc
        items: list[BatchItem] = []
        keys: set[str] = set()
        stems: dict[str, str] = {}
        for index, raw in enumerate(self._raw_items(), start=1):
            key, stem, fields = self._fields(raw, index, defaults)
            if key in keys:
                raise TtsConfigError(f"item {index} repeats key {key!r}; every item needs its own key")
            if stem.lower() in stems:
                raise TtsConfigError(
                    f"item {index} ({key}) would be stored as {stem!r} like item {stems[stem.lower()]}; give each "
                    "item its own file_name"
                )
            keys.add(key)
            stems[stem.lower()] = key
            items.append(BatchItem(index, key, stem, self._fingerprint(index, key, fields)))
        if not items:
            raise TtsConfigError(f"{type(self).__name__} got no items; expected at least one text")
        identity = SubmitIdentity.from_context(context)
        return _Plan(items, folder, BatchRecord.for_task(folder, identity), identity)

    # ---------------------------------------------------------------------------------- phases

    def execute(self, context: Context) -> dict[str, Any]:
        plan = self._plan(context)
        plan.look()
        self.log.info("Batch of %d items into %s", len(plan.items), plain_uri(plan.folder))
        self._session_for_threads()
        pending = self._submit_all(context, plan)
        if not pending:
            return self._finish(context, plan, {"status": "done", "pending": 0})
        started_at = time.time()
        trigger = TtsBatchTrigger(
            tts_conn_id=self.tts_conn_id,
            kind=self.tts_kind,
            record_uri=plan.record.where,
            record_conn_id=self.dest_conn_id or None,
            deadline=started_at + self.timeout,
            started_at=started_at,
            concurrency=self.max_active_requests,
            retry=self.retry,
            wait_policy=self.policy,
        )
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete")
        event = asyncio.run(self._wait_here(trigger, pending))
        return self._finish(context, plan, event)

    async def _wait_here(self, trigger: TtsBatchTrigger, pending: Mapping[str, float]) -> dict[str, Any] | None:
        """``deferrable=False``: the trigger's own loop, in this worker, on the operator's hook."""
        try:
            return await trigger.wait(self.hook, pending, log=self.log)
        finally:
            await self.hook.aclose()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: store what finished, write the manifest."""
        plan = self._plan(context)
        plan.look()
        self._session_for_threads()
        return self._finish(context, plan, event)

    def _client_reference(self, identity: SubmitIdentity | None, key: str) -> str:
        base = identity.digest() if identity is not None else "manual"
        return f"airflow-{hashlib.sha256(f'{base}/{key}'.encode()).hexdigest()[:32]}"

    def _cached(self, plan: _Plan, item: BatchItem) -> cache.CachedAudio | None:
        """The item's audio if the destination already holds it for the same request (one listing, no guess)."""
        for audio in plan.with_sidecar.get(item.stem, ()):
            hit = cache.lookup(plan.folder / audio, item.fingerprint)
            if hit is not None:
                return hit
        return None

    def _submit_all(self, context: Context, plan: _Plan) -> dict[str, float]:
        """Pay for every item that needs it, once; return ``{task id: submitted_at}`` to wait for."""
        records = plan.record.load() if self.durable else {}
        defaults = self._check_defaults(self.defaults)
        reference = self.vendor.client_reference_field
        counts = {"cached": 0, "reattached": 0, "submitted": 0, "not submitted": 0}
        pending: dict[str, float] = {}
        raw_items = self._raw_items()
        with ThreadPoolExecutor(self.max_active_requests, thread_name_prefix="tts-batch-submit") as pool:
            for start in range(0, len(plan.items), PART_ITEMS):
                part = plan.items[start : start + PART_ITEMS]
                entries = {item.key: records[item.key] for item in part if item.key in records}
                to_send: list[tuple[BatchItem, dict[str, Any]]] = []
                for item in part:
                    raw = next(raw_items)
                    decision = self._decide(plan, item, entries.get(item.key))
                    if decision == "cached":
                        entries.pop(item.key, None)
                        counts["cached"] += 1
                    elif decision == "reattach":
                        pending[entries[item.key]["tts_task_id"]] = _submitted_at(entries[item.key])
                        counts["reattached"] += 1
                    elif decision == "submit":
                        _, _, fields = self._fields(raw, item.index, defaults)
                        if reference is not None and fields.get(reference) is None:
                            fields[reference] = self._client_reference(plan.identity, item.key)
                        to_send.append((item, fields))
                    else:
                        counts["not submitted"] += 1
                number = start // PART_ITEMS
                if not to_send and entries != {i.key: records[i.key] for i in part if i.key in records}:
                    self._save(plan, number, entries)
                # Rounds of max_active_requests creates: a worker killed mid-round leaves at most
                # that many items whose answer never arrived (reported, never resent blindly).
                for first in range(0, len(to_send), self.max_active_requests):
                    round_ = to_send[first : first + self.max_active_requests]
                    for item, _ in round_:
                        entries[item.key] = {"fingerprint": item.fingerprint, "requested_at": time.time()}
                    self._save(plan, number, entries)  # the intents, before paying
                    results = list(pool.map(self._create, round_))
                    auth_error = self._record_round(round_, results, entries, pending, counts)
                    self._save(plan, number, entries)  # the ids, right after
                    if auth_error is not None:
                        raise auth_error
                self.log.info("Batch: %s after %d of %d items", counts, start + len(part), len(plan.items))
        return pending

    def _save(self, plan: _Plan, number: int, entries: Mapping[str, Mapping[str, Any]]) -> None:
        if self.durable:
            plan.record.save_part(number, entries)

    @staticmethod
    def _record_round(
        round_: list[tuple[BatchItem, dict[str, Any]]],
        results: list[tuple[str | None, BaseException | None]],
        entries: dict[str, dict[str, Any]],
        pending: dict[str, float],
        counts: dict[str, int],
    ) -> TtsAuthError | None:
        """Each create's outcome into its item's entry; a refused key is returned, to stop the batch."""
        auth_error: TtsAuthError | None = None
        for (item, _), (task_id, error) in zip(round_, results, strict=True):
            entry = entries[item.key]
            if task_id is not None:
                entry.update(tts_task_id=task_id, submitted_at=time.time())
                pending[task_id] = entry["submitted_at"]
                counts["submitted"] += 1
                continue
            counts["not submitted"] += 1
            if isinstance(error, TtsAuthError):
                auth_error = error
                del entries[item.key]  # nothing was created: a retry with a good key submits it
            elif error is not None and not outcome_unknown(error):
                outcome = "rejected" if isinstance(error, TtsPermanentError) else "submit_failed"
                entry.update(outcome=outcome, error=str(error)[:500])
            else:  # the answer was lost: the intent stays, and says so on the next try
                entry.update(error=f"the create call's answer was lost: {error}"[:500])
        return auth_error

    def _decide(self, plan: _Plan, item: BatchItem, entry: Mapping[str, Any] | None) -> str:
        """``cached``, ``reattach``, ``submit`` or ``skip`` for one item, from the destination and the record.

        The destination first: audio stored for the same request (by an earlier try, run or
        operator) costs nothing, not even a poll.
        """
        if self._cached(plan, item) is not None:
            return "cached"
        if entry is not None and entry.get("fingerprint") == item.fingerprint:
            outcome = entry.get("outcome")
            if entry.get("tts_task_id") and outcome is None:
                return "reattach"
            if outcome == "rejected" or (outcome == "failed" and not entry.get("retryable")):
                return "skip"  # the vendor refused it or it failed for good: a second try pays for nothing
            if outcome is None and self.on_uncertain_submit == "fail":
                return "skip"  # an intent without an id: the create may have been paid for
        return "submit"

    def _create(self, job: tuple[BatchItem, dict[str, Any]]) -> tuple[str | None, BaseException | None]:
        item, fields = job
        try:
            return self.hook.submit_task(self.tts_kind, fields).tts_task_id, None
        except Exception as exc:
            self.log.warning("Item %d (%s) was not submitted: %s", item.index, item.key, exc)
            return None, exc

    # ---------------------------------------------------------------------------------- finish

    def _finish(self, context: Context, plan: _Plan, event: dict[str, Any] | None) -> dict[str, Any]:
        """Store every finished item, write the manifest, keep or drop the record, apply the threshold."""
        if not isinstance(event, dict) or event.get("status") not in ("done", "timeout", "error"):
            raise TtsError(f"the batch resumed with no usable event: {event!r:.200}")
        if event["status"] == "error":
            raise error_from_event(event)
        records = plan.record.load() if self.durable else {}
        ti = context.get("ti")
        try_number = getattr(ti, "try_number", None)
        retried = not isinstance(try_number, int) or try_number > 1
        lock = threading.Lock()
        changed: set[int] = set()

        def one(item: BatchItem) -> dict[str, Any]:
            entry = records.get(item.key)
            row = self._row(context, plan, item, entry, retried)
            if entry is not None and row.get("outcome"):
                with lock:
                    entry.update(outcome=row["outcome"], retryable=row["retryable"], error=row["error"])
                    changed.add((item.index - 1) // PART_ITEMS)
            return row

        with ThreadPoolExecutor(self.max_active_requests, thread_name_prefix="tts-batch-store") as pool:
            rows = list(pool.map(one, plan.items))
        if self.durable:
            for number in sorted(changed):
                part = plan.items[number * PART_ITEMS : (number + 1) * PART_ITEMS]
                plan.record.save_part(number, {i.key: records[i.key] for i in part if i.key in records})
        manifest = plan.folder / self.manifest_name
        write_manifest(manifest, rows)
        summary = _summary(rows, plain_uri(plan.folder), plain_uri(manifest))
        self._emit(context, summary)
        self.log.info("Batch finished: %s", summary)
        failed = [row for row in rows if row["status"] == "failed"]
        if not failed and self.durable:
            plan.record.remove()
        if failed and self.max_failed_items is not None and len(failed) > self.max_failed_items:
            shown = "; ".join(f"{row['key']}: {row['error']}" for row in failed[:5])
            message = (
                f"{len(failed)} of {len(rows)} items failed (max_failed_items={self.max_failed_items}); the "
                f"manifest {summary['manifest']} has every row. First: {shown}"
            )
            if any(row["retryable"] for row in failed):
                raise TtsBatchItemsFailedError(message + ". A retry resubmits only the retryable failures.")
            raise TtsBatchItemsFailedPermanentlyError(message + ". None of them can succeed on a retry.")
        return summary

    def _row(
        self, context: Context, plan: _Plan, item: BatchItem, entry: Mapping[str, Any] | None, retried: bool
    ) -> dict[str, Any]:
        """One manifest row: the item stored now, found stored, or failed with its reason."""
        row: dict[str, Any] = {"index": item.index, "key": item.key, "fingerprint": item.fingerprint}
        hit = self._cached(plan, item)
        if hit is not None:
            recorded = hit.recorded
            return {
                **row, "status": "cached", "file": hit.uri, "size_bytes": hit.size_bytes, "sha256": hit.sha256,
                "duration_seconds": recorded.get("duration_seconds"), "tts_task_id": recorded.get("tts_task_id"),
            }  # fmt: skip
        if entry is None or entry.get("fingerprint") != item.fingerprint:
            return {**row, "status": "failed", "error": "not submitted in this try", "retryable": True}
        task_id = entry.get("tts_task_id")
        row["tts_task_id"] = task_id
        if not task_id:
            uncertain = "outcome" not in entry
            error = str(entry.get("error") or "not submitted")
            if uncertain:
                error = (
                    f"{error}. The vendor may have created (and billed) a task whose id never arrived, so it is not "
                    "sent again; set on_uncertain_submit='resubmit' to pay for it anew on a retry"
                )
            retryable = entry.get("outcome") == "submit_failed" or (uncertain and self.on_uncertain_submit != "fail")
            return {**row, "status": "failed", "error": error, "retryable": retryable}
        if entry.get("outcome") == "failed" and not entry.get("retryable"):
            return {**row, "status": "failed", "error": entry.get("error"), "retryable": False}
        # A transient failure of one download (a 200 maintenance page the transport cannot tell from
        # audio, a 5xx outliving its retries) is tried again here, with a fresh status (and URL): the
        # vendor task is paid for, and max_failed_items is for items the vendor failed, not for glitches.
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                status = self.hook.get_task_status(task_id, self.tts_kind)
                if status.state == "pending":
                    return {**row, "status": "failed", "error": f"still {status.vendor_status} when the wait ended",
                            "retryable": True}  # fmt: skip
                if status.state == "failed":
                    reason = f"vendor status {status.vendor_status}" + (f": {status.message}" if status.message else "")
                    return {**row, "status": "failed", "error": reason, "retryable": bool(status.retryable),
                            "outcome": "failed"}  # fmt: skip
                stored = self._store(context, plan, item, status, retried or attempt > 1)
                return {**row, **stored}
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

    def _store(
        self, context: Context, plan: _Plan, item: BatchItem, status: TtsTaskStatus, retried: bool
    ) -> dict[str, Any]:
        """Stream one item's audio into the folder (atomic, constant memory) and record its sidecar."""
        with self.hook.open_audio(status) as audio:
            head, chunks = peek(audio.iter_chunks(self.chunk_bytes))
            check_audio_body(audio.content_type, head, what=f"audio for item {item.key} (task {status.tts_task_id})")
            name = with_extension(item.stem, audio.content_type, head)
            path = plan.folder / name
            tag = plan.identity.digest()[:12] if plan.identity is not None else "manual"
            if f"{name}{cache.SIDECAR_SUFFIX}" in plan.names:
                cache.forget(path)  # a sidecar never describes bytes it did not see written
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
        uri = plain_uri(path)
        cache.record(path, item.fingerprint, stored, api=self.vendor.api, kind=self.tts_kind, uri=uri)
        return {"status": "stored", "file": uri, "size_bytes": stored.size_bytes, "sha256": stored.sha256,
                "duration_seconds": stored.duration_seconds}  # fmt: skip

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


def _submitted_at(entry: Mapping[str, Any]) -> float:
    return float(entry.get("submitted_at") or entry.get("requested_at") or time.time())


def _summary(rows: list[dict[str, Any]], destination: str, manifest: str) -> dict[str, Any]:
    """The small XCom result: counts and where to look, never the per-item rows."""

    def count(status: str) -> int:
        return sum(1 for row in rows if row["status"] == status)

    failed_keys = [row["key"] for row in rows if row["status"] == "failed"]
    return {
        "items": len(rows),
        "stored": count("stored"),
        "cached": count("cached"),
        "failed": len(failed_keys),
        "failed_keys": failed_keys[:20],
        "destination": destination,
        "manifest": manifest,
    }


class CambTtsBatchToStorageOperator(BaseTextBatchToStorageOperator):
    """Speak every text of a batch with Camb.ai's ``/tts``, in one task (see the module docstring).

    A text item fills ``text``; ``defaults`` typically carries ``voice_id`` and ``language``.
    """

    vendor = CambAi
    tts_kind = "tts"
    item_field = "text"


class CambTextToSoundBatchToStorageOperator(BaseTextBatchToStorageOperator):
    """Make a sound for every prompt of a batch with Camb.ai's ``/text-to-sound``, in one task."""

    vendor = CambAi
    tts_kind = "text-to-sound"
    item_field = "prompt"


class RevidTtsBatchToStorageOperator(BaseTextBatchToStorageOperator):
    """Speak every text of a batch with RevidAPI's text-to-speech, in one task.

    Each item gets a deterministic reference (RevidAPI's ``id``) derived from the task instance
    and the item's key, so a duplicate can be found vendor-side.
    """

    vendor = RevidTts
    tts_kind = "tts"
    item_field = "text"


class RevidSrtToSpeechBatchToStorageOperator(BaseTextBatchToStorageOperator):
    """Voice every SRT text of a batch with RevidAPI's SRT-to-speech, in one task (a text item fills ``srt``)."""

    vendor = RevidTts
    tts_kind = "srt-to-speech"
    item_field = "srt"


__all__ = [
    "BaseTextBatchToStorageOperator",
    "CambTextToSoundBatchToStorageOperator",
    "CambTtsBatchToStorageOperator",
    "RevidSrtToSpeechBatchToStorageOperator",
    "RevidTtsBatchToStorageOperator",
]
