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
import json
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

from airflow_provider_tts.batch import (
    FILE_NAME_STYLES,
    BatchItem,
    BatchRecord,
    CsvRow,
    FileNameStyle,
    item_parts,
    item_stem,
    items_digest,
    iter_items,
    typed_cells,
    write_manifest,
)
from airflow_provider_tts.cache import CachedAudio, RequestCache
from airflow_provider_tts.compat import conf, has_supervisor
from airflow_provider_tts.confinement import DESTINATIONS, ITEMS_PATHS, confine
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
from airflow_provider_tts.fingerprint import fingerprint_hex, request_fingerprint
from airflow_provider_tts.lineage import OutletsForTestRuns, default_outlet
from airflow_provider_tts.naming import check_file_name, has_audio_extension, same_file, with_extension
from airflow_provider_tts.objects import copy_object, listing
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
    StoredAudio,
    TtsStorageError,
    check_audio_body,
    check_destination,
    destination_path,
    peek,
)
from airflow_provider_tts.submissions import SubmitIdentity, outcome_unknown, variable_api
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
#: How long a request another run claimed (and has not yet recorded a task id for) is waited for
#: before it is reported as in doubt: that run's create call normally answers within seconds.
CLAIM_WAIT_SECONDS = 120.0
CLAIM_POLL_SECONDS = 1.0
#: Times a create refused with nothing created (429/503 after the transport's retries) is sent in one try.
CREATE_ROUNDS = 3
#: Requests whose fields are held at once while paying (the texts are read again, a chunk at a time).
PAY_CHUNK = 256
#: Writes of a paid task id into the request cache before it is kept aside (see ``_IdStash``).
RECORD_ATTEMPTS = 3
RECORD_BACKOFF = 0.5


@dataclass
class _Plan:
    """Every item of the batch, validated, and where its audio and its requests' state go."""

    items: list[BatchItem]
    folder: ObjectStoragePath
    record: BatchRecord
    identity: SubmitIdentity | None
    cache: RequestCache
    digest: str
    #: The item key at each position (1-based positions: ``keys[i - 1]``).
    keys: list[str]
    #: Keys of the items that name their file themselves (a ``key`` or a ``file_name``).
    explicit: frozenset[str] = frozenset()
    names: frozenset[str] = field(default_factory=frozenset)

    @property
    def requests(self) -> list[str]:
        """The distinct requests (fingerprints), in item order: what is paid for, once each."""
        return list(dict.fromkeys(item.fingerprint for item in self.items))


@dataclass
class _Outcome:
    """What the submit phase decided for one request; ``error`` set for a failed one."""

    kind: str  # cached, wait, failed; claimed_elsewhere while another run holds a fresh claim
    tts_task_id: str | None = None
    submitted_at: float = 0.0
    error: str | None = None
    retryable: bool = True
    #: The exception that stopped the batch (a refused key), re-raised once every request ended.
    cause: BaseException | None = None
    #: Paid, but the task id could not be written to the request cache.
    unsaved: bool = False
    #: The create was refused with nothing created and the claim let go: it may be sent again.
    released: bool = False


class BaseTextBatchToStorageOperator(OutletsForTestRuns, BaseOperator):
    """Submit a batch of one vendor and kind, wait once for all of it, store every file and a manifest.

    The base of the batch operators (see the module docstring); a subclass sets ``vendor``,
    ``tts_kind`` and ``item_field`` (the create field a plain-text item fills).

    :param destination: the folder for the audio and the manifest (templated), e.g.
        ``s3://bucket/audio/{{ ds }}/``.
    :param items: a list of items (templated; an XComArg works): texts, or dicts of per-item
        create fields with optional ``key`` (the item's identity; default: its request) and
        ``file_name`` (default: see ``file_names``; the extension follows the audio).
    :param items_path: instead of ``items``, a file of items (templated): ``.jsonl`` (a JSON text
        or object per line), ``.csv`` (a header row of field names; each cell is converted to its
        field's type) or ``.txt`` (a text per line).
    :param items_conn_id: the storage connection of ``items_path``, if it needs one.
    :param defaults: create fields shared by every item (e.g. ``{"voice_id": 20303, "language": 1}``);
        an item's own fields win. Names are checked against the vendor's body when the DAG is parsed.
    :param file_names: how an item with neither ``file_name`` nor ``key`` is named: ``"hash"``
        (default: 16 hex digits of its request's fingerprint, no word of the text in object keys)
        or ``"words"`` (its first words and 8 of those digits).
    :param tts_conn_id: a connection of the class's vendor (default: its default connection id).
    :param dest_conn_id: the storage connection (e.g. an ``aws`` connection for ``s3://``).
    :param overwrite: per file, as for ``TtsAudioToStorageOperator`` (``skip_if_identical``,
        ``replace`` or ``fail``); with ``fail`` a file in the way is refused before anything is paid for.
    :param reuse_cached: take audio the folder already holds for the same request instead of paying
        (default True; see :mod:`airflow_provider_tts.cache`). False pays for every item again.
    :param retry_failed_items: send again a request the vendor refused for good in an earlier run
        (default False: it is reported failed, with the vendor's reason, and not paid for again).
    :param max_failed_items: how many items may fail with the task still succeeding (default 0;
        None: never fail because of items). The manifest is written either way.
    :param max_active_requests: create calls, polls and downloads in flight at once (default 8).
    :param manifest_name: the manifest's file name in the destination (default ``manifest.jsonl``).
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param timeout: how long to wait for all items (seconds or ``timedelta``; default 6 hours);
        items still pending then are failed, retryable (a retry waits for them again).
    :param poll_interval: seconds between polling rounds at first; ``wait_policy`` the rest.
    :param retry: per-request retry overrides (``max_retries``, ``backoff``, ``max_backoff``).
    :param durable: must be True: the request cache is what keeps a retry from paying twice.
    :param on_uncertain_submit: ``"fail"`` (default): a request whose create call's answer was lost
        is reported failed and never resent; ``"resubmit"``: a retry sends it again.
    :param manifest_task_ids: write each item's vendor task id into the manifest (default False).
        At RevidAPI a task id alone may fetch the task's status and audio URL (its status call may
        not ask for the key), so a manifest readable by whoever can list the bucket would hand out
        the audio; Camb.ai asks for the key on every call. The request cache forgets a task id
        once its audio is stored.
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
        file_names: FileNameStyle = "hash",
        tts_conn_id: str | None = None,
        dest_conn_id: str | None = None,
        overwrite: OverwritePolicy = "skip_if_identical",
        reuse_cached: bool = True,
        retry_failed_items: bool = False,
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
        manifest_task_ids: bool = False,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        if (items is None) == (items_path is None):
            raise TtsConfigError(f"{owner} needs exactly one of items (a list) and items_path (a file of items)")
        if overwrite not in OVERWRITE_POLICIES:
            raise TtsConfigError(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}, got {overwrite!r}")
        if file_names not in FILE_NAME_STYLES:
            raise TtsConfigError(f"file_names must be one of {', '.join(FILE_NAME_STYLES)}, got {file_names!r}")
        flags = (("reuse_cached", reuse_cached), ("retry_failed_items", retry_failed_items),
                 ("manifest_task_ids", manifest_task_ids))  # fmt: skip
        for name, flag in flags:
            if not isinstance(flag, bool):
                raise TtsConfigError(f"{name} must be True or False, got {flag!r}")
        if durable is not True:
            raise TtsConfigError(
                f"{owner}: durable={durable!r} is not offered: the request cache beside the audio is what keeps a "
                "retry or a re-run from paying twice, and without it no item could be waited for or stored"
            )
        if max_failed_items is not None and (not isinstance(max_failed_items, int) or max_failed_items < 0):
            raise TtsConfigError(f"max_failed_items must be None or an integer >= 0, got {max_failed_items!r}")
        if not isinstance(max_active_requests, int) or not 1 <= max_active_requests <= MAX_ACTIVE_REQUESTS:
            raise TtsConfigError(f"max_active_requests must be 1 to {MAX_ACTIVE_REQUESTS}, got {max_active_requests!r}")
        if not _rendered_later(manifest_name):
            _check_manifest_name(manifest_name)
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
        self.file_names: FileNameStyle = file_names
        self.destination = destination
        self.tts_conn_id = tts_conn_id if tts_conn_id is not None else DEFAULT_CONN_IDS[self.vendor.api]
        self.dest_conn_id = dest_conn_id
        self.overwrite: OverwritePolicy = overwrite
        self.reuse_cached = reuse_cached
        self.retry_failed_items = retry_failed_items
        self.max_failed_items = max_failed_items
        self.max_active_requests = max_active_requests
        self.manifest_name = manifest_name
        self.deferrable = deferrable
        self.retry = dict(retry) if retry else None
        self.durable = durable
        self.on_uncertain_submit = check_uncertain_policy(on_uncertain_submit)
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.manifest_task_ids = manifest_task_ids
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
        source = destination_path(self.items_path, self.items_conn_id or None)
        confine(plain_uri(source), ITEMS_PATHS, what="items_path")
        return source

    def _raw_items(self) -> Iterator[Any]:
        return iter_items(self.items, self._source())

    def _item(self, raw: Any, index: int, defaults: Mapping[str, Any]) -> tuple[str | None, str | None, dict[str, Any]]:
        """``(key, file name, create fields)`` of one raw item; a CSV row's cells typed for the vendor."""
        key, file_name, merged = item_parts(raw, index, item_field=self.item_field, defaults=defaults)
        try:
            fields = create_fields(merged)
        except TtsConfigError as exc:
            raise TtsConfigError(f"item {index} ({key or 'no key'}): {exc}") from None
        if isinstance(raw, CsvRow):
            fields = typed_cells(fields, self.vendor.create_models[self.tts_kind])
        return key, file_name, fields

    def _fingerprint(self, index: int, key: str | None, fields: Mapping[str, Any]) -> str:
        """The request's fingerprint, validating the fields (the error names the item)."""
        try:
            body = self.vendor.validate_create(self.tts_kind, fields)
        except TtsConfigError as exc:
            raise TtsConfigError(f"item {index} ({key or 'no key'}): {exc}") from None
        return request_fingerprint(self.vendor.api, self.tts_kind, body)

    def _plan(self, context: Context) -> _Plan:
        """Validate every item and the destination; nothing is paid for or written before this passes."""
        defaults = self._check_defaults(self.defaults)
        _check_manifest_name(self.manifest_name)
        folder = destination_path(self.destination, self.dest_conn_id or None)
        confine(plain_uri(folder), DESTINATIONS, what="destination")
        try:
            if not check_destination(folder, folder_hint=True):
                raise TtsConfigError(f"destination {plain_uri(folder)} must be a folder")
        except OSError as exc:
            raise TtsStorageError(f"cannot prepare {plain_uri(folder)}: {type(exc).__name__}: {exc}") from exc
        by_key: dict[str, BatchItem] = {}
        stems: dict[str, str] = {}  # same_file(stem) -> "<index> (<key>)" of the item stored there
        keys: list[str] = []
        explicit: set[str] = set()
        for index, raw in enumerate(self._raw_items(), start=1):
            given_key, file_name, fields = self._item(raw, index, defaults)
            fingerprint = self._fingerprint(index, given_key, fields)
            key = _item_key(given_key, file_name, fingerprint)
            if key in by_key:
                first = by_key[key]
                if given_key is not None or file_name is not None or first.fingerprint != fingerprint:
                    raise TtsConfigError(
                        f"item {index} repeats key {key!r} of item {first.index}; every item needs its own key"
                    )
                first.duplicates = (*first.duplicates, index)  # the same request again: one item
                keys.append(key)
                continue
            stem = item_stem(
                key=given_key, file_name=file_name, text=fields.get(self.item_field), fingerprint=fingerprint,
                style=self.file_names,
            )  # fmt: skip
            if same_file(stem) in stems:
                raise TtsConfigError(
                    f"item {index} ({key}) would be stored as {stem!r} like item {stems[same_file(stem)]}; give "
                    "each item its own file_name or key"
                )
            stems[same_file(stem)] = f"{index} ({key})"
            by_key[key] = BatchItem(index, key, stem, fingerprint)
            keys.append(key)
            if given_key is not None or file_name is not None:
                explicit.add(key)
        if not by_key:
            raise TtsConfigError(f"{type(self).__name__} got no items; expected at least one text")
        items = list(by_key.values())
        identity = SubmitIdentity.from_context(context)
        owner = identity.digest() if identity is not None else "manual"
        request_cache = RequestCache(folder, self.hook.endpoint(), owner)
        plan = _Plan(items, folder, BatchRecord.for_task(folder, identity), identity, request_cache,
                     items_digest(items), keys, frozenset(explicit))  # fmt: skip
        plan.names = listing(folder)
        return plan

    def _refuse_overwrites(self, plan: _Plan, hits: Mapping[str, CachedAudio | None]) -> None:
        """``overwrite="fail"``: a file in the way of an item that would be written is refused before paying."""
        if self.overwrite != "fail":
            return
        taken = {same_file(name): name for name in plan.names if has_audio_extension(name)}
        for item in plan.items:
            hit = hits.get(item.fingerprint)
            if hit is not None and same_file(hit.path.name) == same_file(item.stem):
                continue  # its own audio: nothing is written
            if hit is not None and item.key not in plan.explicit:
                continue  # used where it is
            if same_file(item.stem) in taken:
                raise TtsConfigError(
                    f"item {item.index} ({item.key}) would be stored as {taken[same_file(item.stem)]!r}, which "
                    f"{plain_uri(plan.folder)} already holds, and overwrite='fail'; nothing was paid for"
                )

    # ---------------------------------------------------------------------------------- phases

    def execute(self, context: Context) -> dict[str, Any]:
        plan = self._plan(context)
        self.log.info("Batch of %d items into %s", len(plan.items), plain_uri(plan.folder))
        self._session_for_threads()
        outcomes = self._submit_all(context, plan)
        waits = {
            fp: (o.tts_task_id, o.submitted_at) for fp, o in outcomes.items() if o.kind == "wait" and o.tts_task_id
        }
        failed = {fp: {"error": o.error, "retryable": o.retryable} for fp, o in outcomes.items() if o.kind == "failed"}
        if not waits:
            return self._finish(context, plan, {"status": "done", "pending": 0}, {}, failed)
        plan.record.save(waits, plan.digest, failed)
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
        event = asyncio.run(self._wait_here(trigger, {task_id: at for task_id, at in waits.values()}))
        return self._finish(context, plan, event, waits, failed)

    async def _wait_here(self, trigger: TtsBatchTrigger, pending: Mapping[str, float]) -> dict[str, Any] | None:
        """``deferrable=False``: the trigger's own loop, in this worker, on the operator's hook."""
        try:
            return await trigger.wait(self.hook, pending, log=self.log)
        finally:
            await self.hook.aclose()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: check the items did not change meanwhile, store, write the manifest."""
        plan = self._plan(context)
        self._session_for_threads()
        waits, digest, failed = plan.record.load()
        if digest is None:
            # No wait list: this is no resume of a live deferral. Airflow 3.0 calls the resume method
            # again on a retry of a task whose earlier try failed after resuming; that retry starts
            # over, and the request cache re-attaches what was paid for.
            self.log.info("Batch: no wait list to resume from (event %.100r); starting the try over", event)
            return self.execute(context)
        if digest != plan.digest:
            raise TtsConfigError(_changed_message(plan, "they are not the items it submitted before it deferred"))
        return self._finish(context, plan, event, waits, failed)

    def _client_reference(self, identity: SubmitIdentity | None, fingerprint: str) -> str:
        base = identity.digest() if identity is not None else "manual"
        return f"airflow-{hashlib.sha256(f'{base}/{fingerprint}'.encode()).hexdigest()[:32]}"

    # ---------------------------------------------------------------------------------- submit

    def _submit_all(self, context: Context, plan: _Plan) -> dict[str, _Outcome]:
        """Decide every request from the request cache, and pay, once, for those that need it."""
        _IdStash(context, plan.identity).restore(plan.cache)
        requests = plan.requests
        found = plan.cache.find_all(requests, threads=self.max_active_requests)
        hits = {fp: hit for fp, (hit, _) in found.items()} if self.reuse_cached else {}
        self._refuse_overwrites(plan, hits)
        outcomes: dict[str, _Outcome] = {}
        to_pay: list[str] = []
        for fingerprint in requests:
            entry = found[fingerprint][1]
            decided = self._decide(hits.get(fingerprint), entry, plan.cache.owner)
            if decided is None or decided.kind == "claimed_elsewhere":
                to_pay.append(fingerprint)
            else:
                outcomes[fingerprint] = decided
        counts = {kind: sum(1 for o in outcomes.values() if o.kind == kind) for kind in ("cached", "wait", "failed")}
        self.log.info("Batch: %d distinct requests; from the request cache: %s; to claim: %d", len(requests),
                      counts, len(to_pay))  # fmt: skip
        if to_pay:
            outcomes.update(self._pay(context, plan, to_pay))
        return outcomes

    def _decide(self, hit: CachedAudio | None, entry: Mapping[str, Any] | None, owner: str) -> _Outcome | None:
        """What a request's cache entry says; None: claim it and pay."""
        if hit is not None:
            return _Outcome("cached")
        state = entry.get("state") if entry is not None else None
        if entry is None or state == "stored":  # nothing, or stored audio that is gone or changed
            return None
        if state == "rejected":
            return (
                None if self.retry_failed_items else _Outcome("failed", error=_rejected_message(entry), retryable=False)
            )
        if state == "submitted" and entry.get("tts_task_id"):
            return _Outcome("wait", str(entry["tts_task_id"]), _number(entry.get("submitted_at")))
        # Claimed: a create was (about to be) sent and its task id was never recorded.
        age = time.time() - _number(entry.get("requested_at"))
        if entry.get("owner") != owner and 0 <= age < CLAIM_WAIT_SECONDS:
            return _Outcome("claimed_elsewhere")
        if self.on_uncertain_submit == "resubmit":
            return None
        return _Outcome("failed", error=_uncertain_message(entry, owner), retryable=False)

    def _pay(self, context: Context, plan: _Plan, fingerprints: list[str]) -> dict[str, _Outcome]:
        """Claim, create and record each request, ``max_active_requests`` at a time.

        The items are read once more for their fields, a chunk at a time (the worker never holds
        every text), and must be the items just planned.
        """
        stop = threading.Event()
        unsaved: dict[str, str] = {}
        auth: list[TtsAuthError] = []
        lock = threading.Lock()
        outcomes: dict[str, _Outcome] = {}

        def pay(job: tuple[str, dict[str, Any]]) -> tuple[str, _Outcome]:
            fingerprint, fields = job
            outcome = self._pay_one(plan, fingerprint, fields, stop)
            with lock:
                if outcome.unsaved:
                    unsaved[fingerprint] = str(outcome.tts_task_id)
                if isinstance(outcome.cause, TtsAuthError):
                    auth.append(outcome.cause)
            return fingerprint, outcome

        with ThreadPoolExecutor(self.max_active_requests, thread_name_prefix="tts-batch-submit") as pool:
            for chunk in self._fields_again(plan, set(fingerprints)):
                done = dict(pool.map(pay, chunk.items()))
                # A create refused with nothing created (a 429 or 503 that outlived the transport's
                # retries) is sent again in this try: it costs nothing, and the batch's pacer has
                # already slowed every request down for it. Anything else stays as it ended.
                for _ in range(CREATE_ROUNDS - 1):
                    again = {fp: chunk[fp] for fp, outcome in done.items() if outcome.released}
                    if not again or stop.is_set():
                        break
                    done.update(pool.map(pay, again.items()))
                outcomes.update(done)
        counts = {kind: sum(1 for o in outcomes.values() if o.kind == kind) for kind in ("cached", "wait", "failed")}
        self.log.info("Batch: claimed requests ended as %s", counts)
        if unsaved:
            where = _IdStash(context, plan.identity).save(unsaved)
            raise TtsStorageError(
                f"could not record {len(unsaved)} paid task ids in the request cache of {plain_uri(plan.folder)}; "
                f"they are kept in {where}, and the next try waits for them and stores their audio without paying "
                "again"
            )
        if auth:
            raise auth[0]
        return outcomes

    def _fields_again(self, plan: _Plan, wanted: set[str]) -> Iterator[dict[str, dict[str, Any]]]:
        """The create fields of the ``wanted`` requests, read again, in chunks of :data:`PAY_CHUNK`.

        Every item must be the one planned moments before (same position, same identity): a file
        edited in between fails before the rest is paid for.
        """
        defaults = self._check_defaults(self.defaults)
        reference = self.vendor.client_reference_field
        chunk: dict[str, dict[str, Any]] = {}
        seen: set[str] = set()
        count = 0
        for index, raw in enumerate(self._raw_items(), start=1):
            count = index
            if index > len(plan.keys):
                raise TtsConfigError(_changed_message(plan, "the file has more items than when it was read"))
            key, file_name, fields = self._item(raw, index, defaults)
            fingerprint = self._fingerprint(index, key, fields)
            if _item_key(key, file_name, fingerprint) != plan.keys[index - 1]:
                raise TtsConfigError(_changed_message(plan, f"item {index} is not the item read moments before"))
            if fingerprint in wanted and fingerprint not in seen:
                seen.add(fingerprint)
                if reference is not None and fields.get(reference) is None:
                    fields[reference] = self._client_reference(plan.identity, fingerprint)
                chunk[fingerprint] = fields
                if len(chunk) >= PAY_CHUNK:
                    yield chunk
                    chunk = {}
        if count != len(plan.keys):
            raise TtsConfigError(_changed_message(plan, "the file has fewer items than when it was read"))
        if chunk:
            yield chunk

    def _pay_one(self, plan: _Plan, fingerprint: str, fields: dict[str, Any], stop: threading.Event) -> _Outcome:
        """One request: claim it (or wait out another run's fresh claim), create it, record the task id."""
        for _ in range(3):
            if stop.is_set():
                return _Outcome("failed", error="not submitted: the batch stopped because the key was refused")
            entry = plan.cache.claim(fingerprint, force=not self.reuse_cached)
            if entry is None:
                return self._create(plan, fingerprint, fields, stop)
            hit = plan.cache.hit(fingerprint, entry) if self.reuse_cached else None
            decided = self._decide(hit, entry, plan.cache.owner)
            if decided is not None and decided.kind == "claimed_elsewhere":
                decided = self._await_claim(plan, fingerprint)
                if decided is None:
                    continue  # the other run let go of it (nothing created): claim it again
            if decided is not None:
                return decided
            plan.cache.claim(fingerprint, force=True)  # the entry itself says to pay again
            return self._create(plan, fingerprint, fields, stop)
        return _Outcome("failed", error="not submitted: the request kept changing hands between runs")

    def _create(self, plan: _Plan, fingerprint: str, fields: dict[str, Any], stop: threading.Event) -> _Outcome:
        """The paid call, then its task id into the request cache (or, failing that, aside)."""
        short = fingerprint_hex(fingerprint)[:16]
        try:
            task_id = self.hook.submit_task(self.tts_kind, fields).tts_task_id
        except Exception as exc:
            self.log.warning("Request %s was not submitted: %s", short, exc)
            if isinstance(exc, TtsAuthError):
                stop.set()
                plan.cache.release(fingerprint)  # nothing was created: a retry with a good key sends it
                return _Outcome("failed", error=f"not submitted: {exc}"[:500], cause=exc)
            if outcome_unknown(exc):  # the claim stays: it says a create may have been billed
                return _Outcome("failed", error=_uncertain_message({"error": str(exc)}, plan.cache.owner),
                                retryable=self.on_uncertain_submit == "resubmit")  # fmt: skip
            if isinstance(exc, TtsPermanentError):
                plan.cache.rejected(fingerprint, str(exc))
                return _Outcome("failed", error=f"rejected by the vendor: {exc}"[:500], retryable=False)
            plan.cache.release(fingerprint)
            return _Outcome("failed", error=f"not submitted: {exc}"[:500], released=True)
        for attempt in range(RECORD_ATTEMPTS):
            try:
                plan.cache.submitted(fingerprint, task_id)
                break
            except TtsStorageError as exc:
                if attempt + 1 < RECORD_ATTEMPTS:
                    time.sleep(RECORD_BACKOFF * 2**attempt)
                    continue
                self.log.error("Could not record task %s of request %s (%s); keeping it aside", task_id, short, exc)
                return _Outcome("wait", task_id, time.time(), unsaved=True)
        return _Outcome("wait", task_id, time.time())

    def _await_claim(self, plan: _Plan, fingerprint: str) -> _Outcome | None:
        """Another run claimed the request moments ago: wait for its task id instead of paying again."""
        give_up = time.monotonic() + CLAIM_WAIT_SECONDS
        entry: Mapping[str, Any] | None = None
        while time.monotonic() < give_up:
            time.sleep(CLAIM_POLL_SECONDS)
            entry = plan.cache.read(fingerprint)
            if entry is None:
                return None
            hit = plan.cache.hit(fingerprint, entry) if self.reuse_cached else None
            decided = self._decide(hit, entry, plan.cache.owner)
            if decided is None or decided.kind != "claimed_elsewhere":
                return decided
        return _Outcome("failed", error=_uncertain_message(entry or {}, plan.cache.owner))

    # ---------------------------------------------------------------------------------- finish

    def _finish(
        self,
        context: Context,
        plan: _Plan,
        event: dict[str, Any] | None,
        waits: Mapping[str, tuple[str, float]],
        failed: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, Any]:
        """Store every finished item, write the manifest, drop the wait list, apply the threshold."""
        if not isinstance(event, dict) or event.get("status") not in ("done", "timeout", "error"):
            raise TtsError(f"the batch resumed with no usable event: {event!r:.200}")
        if event["status"] == "error":
            raise error_from_event(event)
        found = plan.cache.find_all(plan.requests, threads=self.max_active_requests)
        ti = context.get("ti")
        try_number = getattr(ti, "try_number", None)
        retried = not isinstance(try_number, int) or try_number > 1

        def one(item: BatchItem) -> dict[str, Any]:
            return self._row(context, plan, item, found[item.fingerprint][0], waits, failed, retried)

        with ThreadPoolExecutor(self.max_active_requests, thread_name_prefix="tts-batch-store") as pool:
            rows = list(pool.map(one, plan.items))
        rows = _with_duplicates(rows, plan.items)
        if not self.manifest_task_ids:
            rows = [{k: v for k, v in row.items() if k != "tts_task_id"} for row in rows]
        manifest = plan.folder / self.manifest_name
        write_manifest(manifest, rows)
        summary = _summary(rows, plain_uri(plan.folder), plain_uri(manifest))
        self._emit(context, summary)
        self.log.info("Batch finished: %s", summary)
        plan.record.remove()
        failed_rows = [row for row in rows if row["status"] == "failed" and row.get("duplicate_of") is None]
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

    def _row(
        self,
        context: Context,
        plan: _Plan,
        item: BatchItem,
        hit: CachedAudio | None,
        waits: Mapping[str, tuple[str, float]],
        failed: Mapping[str, Mapping[str, Any]],
        retried: bool,
    ) -> dict[str, Any]:
        """One manifest row: the item stored now, found stored, or failed with its reason."""
        row: dict[str, Any] = {"index": item.index, "key": item.key, "fingerprint": item.fingerprint}
        job = waits.get(item.fingerprint)
        if hit is not None and (self.reuse_cached or job is None):
            return {**row, **self._use_hit(plan, item, hit)}
        if job is None:
            why = failed.get(item.fingerprint) or {"error": "not submitted in this try", "retryable": True}
            return {**row, "status": "failed", "error": why.get("error"), "retryable": bool(why.get("retryable"))}
        task_id = job[0]
        row["tts_task_id"] = task_id
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
                    if status.retryable:
                        plan.cache.release(item.fingerprint)  # the vendor failed it: a retry pays for it anew
                    else:
                        plan.cache.rejected(item.fingerprint, reason)
                    return {**row, "status": "failed", "error": reason, "retryable": bool(status.retryable)}
                return {**row, **self._store(context, plan, item, status, retried or attempt > 1)}
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

    def _use_hit(self, plan: _Plan, item: BatchItem, hit: CachedAudio) -> dict[str, Any]:
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
        self, context: Context, plan: _Plan, item: BatchItem, status: TtsTaskStatus, retried: bool
    ) -> dict[str, Any]:
        """Stream one item's audio into the folder (atomic, constant memory) and record it in the cache."""
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
        plan.cache.stored(item.fingerprint, path, stored)
        return {"status": "stored", "file": plain_uri(path), "size_bytes": stored.size_bytes, "sha256": stored.sha256,
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


class _IdStash:
    """Paid task ids the request cache would not take, kept in the task's ledger until the next try.

    The task state store on Airflow 3.3+, an Airflow Variable per task instance below (the ledgers
    of :mod:`airflow_provider_tts.submissions`). The next try writes them into the request cache
    first, then forgets them.
    """

    KEY = "tts_batch_unsaved"

    def __init__(self, context: Context, identity: SubmitIdentity | None) -> None:
        self.store = context.get("task_state_store")
        # Outside a task runner there is no supervisor to reach Variables through: no stash then.
        usable = self.store is None and identity is not None and has_supervisor()
        self.variables = variable_api() if usable else None
        self.key = self.KEY if self.store is not None else f"{self.KEY}.{identity.digest()[:40] if identity else ''}"

    @property
    def where(self) -> str:
        return (
            f"the task state store (key {self.key!r})" if self.store is not None else f"Airflow Variable {self.key!r}"
        )

    def save(self, ids: Mapping[str, str]) -> str:
        value = json.dumps(dict(ids), sort_keys=True)
        if self.store is not None:
            self.store.set(self.key, value)
        elif self.variables is not None:
            self.variables.set(self.key, value, description="airflow-provider-tts: paid task ids awaiting the next try")
        else:
            return "no ledger (outside a task): the ids are in the log above"
        return self.where

    def restore(self, request_cache: RequestCache) -> None:
        """Write stashed ids into the cache (as submitted), then forget them."""
        if self.store is None and self.variables is None:
            return
        raw: Any = self.store.get(self.key) if self.store is not None else self.variables.get(self.key, None)  # type: ignore[union-attr]
        if raw is None:
            return
        ids: Any = json.loads(raw) if isinstance(raw, str) else raw
        for fingerprint, task_id in dict(ids).items():
            request_cache.submitted(str(fingerprint), str(task_id))
        if self.store is not None:
            self.store.delete(self.key)
        else:
            self.variables.delete(self.key)  # type: ignore[union-attr]


def _check_manifest_name(name: Any) -> str:
    """The manifest's name: one plain file name in the destination (no path, no ``..``, not hidden)."""
    try:
        return check_file_name(name)
    except TtsConfigError as exc:
        raise TtsConfigError(str(exc).replace("file_name", "manifest_name", 1)) from None


def _item_key(key: str | None, file_name: str | None, fingerprint: str) -> str:
    """An item's identity: its ``key``, else its ``file_name``, else its request (never its position)."""
    if key is not None:
        return key
    if file_name is not None:
        return file_name
    return fingerprint_hex(fingerprint)[:16]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _rejected_message(entry: Mapping[str, Any]) -> str:
    when = entry.get("updated_at") or "an earlier run"
    return (
        f"rejected by the vendor ({when}): {entry.get('reason')}; not sent again for the unchanged request "
        "(retry_failed_items=True sends it)"
    )[:500]


def _uncertain_message(entry: Mapping[str, Any], owner: str) -> str:
    who = "an earlier try of this task" if entry.get("owner") in (owner, None) else "another run"
    cause = f" ({entry['error']})" if entry.get("error") else ""
    return (
        f"{who} sent the create call for this request and its answer never arrived{cause}: the vendor may have "
        "created (and billed) it, so it is not sent again; set on_uncertain_submit='resubmit' to pay for it anew"
    )[:500]


def _changed_message(plan: _Plan, what: str) -> str:
    return (
        f"the items changed while this task instance ran ({what}); their requests and files are keyed by content, "
        "so nothing is mixed up: clear the task to run the new items"
    )


def _with_duplicates(rows: list[dict[str, Any]], items: Sequence[BatchItem]) -> list[dict[str, Any]]:
    """A row for every position: a repeated request's extra positions copy its row, naming the first."""
    out = list(rows)
    for row, item in zip(rows, items, strict=True):
        for index in item.duplicates:
            out.append({**row, "index": index, "duplicate_of": item.index})
    return sorted(out, key=lambda r: r["index"])


def _summary(rows: list[dict[str, Any]], destination: str, manifest: str) -> dict[str, Any]:
    """The small XCom result: counts and where to look, never the per-item rows."""
    own = [row for row in rows if row.get("duplicate_of") is None]

    def count(status: str) -> int:
        return sum(1 for row in own if row["status"] == status)

    failed_keys = [row["key"] for row in own if row["status"] == "failed"]
    return {
        "items": len(own),
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
