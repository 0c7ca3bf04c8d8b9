"""The batch operator's base class: its settings, and the flow from planning to the manifest.

:class:`BaseTextBatchToStorageOperator` validates its settings when the DAG is parsed, then in one
task instance plans every item (:mod:`~airflow_provider_tts.batch.plan`), pays once for each
request that needs it (:mod:`~airflow_provider_tts.batch.submit`), waits for all of them in one
deferral on :class:`~airflow_provider_tts.batch.trigger.TtsBatchTrigger` (or the same loop in the
worker) and stores every audio file and the manifest (:mod:`~airflow_provider_tts.batch.store`).
The classes DAG authors use, one per vendor and kind, are in
:mod:`airflow_provider_tts.operators.batch`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_provider_tts.batch.items import FILE_NAME_STYLES, FileNameStyle
from airflow_provider_tts.batch.manifest import changed_message, check_manifest_name
from airflow_provider_tts.batch.store import StorePhase, is_retry
from airflow_provider_tts.batch.submit import SubmitPhase
from airflow_provider_tts.compat import conf
from airflow_provider_tts.constants import DEFAULT_CONN_IDS
from airflow_provider_tts.costs import check_limit
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.hooked import TtsHookMixin
from airflow_provider_tts.lineage import OutletsForTestRuns, default_outlet
from airflow_provider_tts.links import BatchManifestLink, StoredAudioLink
from airflow_provider_tts.renames import request_retry_overrides
from airflow_provider_tts.storage import DEFAULT_CHUNK_BYTES, DEFAULT_MAX_BYTES, OverwritePolicy, check_overwrite
from airflow_provider_tts.storing import plain_uri
from airflow_provider_tts.submitting import UncertainSubmitPolicy, check_uncertain_policy
from airflow_provider_tts.templating import rendered_later
from airflow_provider_tts.waiting import WaitPolicy, wait_timeout

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath, XComArg

    from airflow_provider_tts.status import Kind
    from airflow_provider_tts.vendors import Vendor

#: A batch waits longer than one task: the default deadline of the wait for all its items.
DEFAULT_BATCH_TIMEOUT = 6 * 3600.0
MAX_ACTIVE_REQUESTS = 64


class BaseTextBatchToStorageOperator(TtsHookMixin, SubmitPhase, StorePhase, OutletsForTestRuns, BaseOperator):
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
        While the worker stores items during its own wait (``wait_before_defer``, or a batch that
        is not deferrable), polls and downloads are bounded separately, up to this many each. A
        request sleeping out its retry's backoff does not count: its place goes to the next item.
    :param manifest_name: the manifest's file name in the destination (default ``manifest.jsonl``).
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param wait_before_defer: seconds (or a ``timedelta``) a deferrable batch first waits in its
        worker, storing each item the moment it ends, before it defers for whatever is still
        pending (default 0: defer at once). A batch whose vendor tasks end within this time never
        defers: no resume round trip, and its last item is the only one left to store when it
        ends. It holds the worker slot meanwhile; at most one deferral follows, whatever the size.
        A batch that is not deferrable always waits this way.
    :param timeout: how long to wait for all items (seconds or ``timedelta``; default 6 hours);
        items still pending then are failed, retryable (a retry waits for them again).
    :param poll_interval: seconds between polling rounds at first; ``wait_policy`` the rest.
    :param request_retry: overrides of the connection's retry settings for each HTTP request
        (``max_retries``, ``backoff``, ``max_backoff``); the task's own retries stay ``retries``.
    :param retry: the deprecated spelling of ``request_retry`` (a warning says so).
    :param durable: must be True: the request cache is what keeps a retry from paying twice.
    :param on_uncertain_submit: ``"fail"`` (default): a request whose create call's answer was lost
        is reported failed and never resent; ``"resubmit"``: a retry sends it again.
    :param manifest_task_ids: write each item's vendor task id into the manifest (default False).
        At RevidAPI a task id alone may fetch the task's status and audio URL (its status call may
        not ask for the key), so a manifest readable by whoever can list the bucket would hand out
        the audio; Camb.ai asks for the key on every call. The request cache forgets a task id
        once its audio is stored.
    :param max_bytes: per file size cap; ``chunk_bytes``: streaming chunk size.
    :param max_characters: refuse a plan whose requests to pay for (after the request cache) send
        more characters than this, before the first create (default: the connection's
        ``max_characters`` extra).
    :param max_credits: the same for the estimated credits (default: the connection's
        ``max_credits`` extra); needs a price (the vendor table's or the connection's
        ``credits_per_1000_characters``). When the vendor reports more credits than estimated and
        the batch would pass it, it stops submitting: the rest are manifest rows "not submitted",
        what was submitted is stored, and the task fails with ``TtsBudgetExceededError`` (no retries
        used up). See ``docs/howto/costs-and-limits.md``.

    Returns the batch result (table: ``docs/results.md``): ``items``, ``stored``, ``cached``,
    ``failed``, ``failed_keys``, ``destination``, ``manifest``, and ``files`` (the stored and
    cached files' URIs in item order, at most
    :data:`~airflow_provider_tts.results.BATCH_RESULT_FILES`; ``files_truncated`` says when there
    were more: read ``manifest`` then), and what was spent: ``characters``, ``requests``,
    ``credits`` (None unless the vendor reported every charge) and ``estimated_credits``.
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
    operator_extra_links = (StoredAudioLink(), BatchManifestLink())

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
        request_retry: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        durable: bool = True,
        on_uncertain_submit: UncertainSubmitPolicy = "fail",
        max_bytes: int = DEFAULT_MAX_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        manifest_task_ids: bool = False,
        max_characters: int | None = None,
        max_credits: float | None = None,
        wait_before_defer: float | timedelta = 0.0,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        if (items is None) == (items_path is None):
            raise TtsConfigError(f"{owner} needs exactly one of items (a list) and items_path (a file of items)")
        check_overwrite(overwrite)
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
        if not rendered_later(manifest_name):
            check_manifest_name(manifest_name)
        before_defer = (
            wait_before_defer.total_seconds() if isinstance(wait_before_defer, timedelta) else wait_before_defer
        )
        if isinstance(before_defer, bool) or not isinstance(before_defer, int | float) or not before_defer >= 0:
            raise TtsConfigError(f"wait_before_defer must be seconds >= 0 or a timedelta, got {wait_before_defer!r}")
        explicit_outlets = "outlets" in kwargs
        policy_fields = WaitPolicy.pop_fields(kwargs)
        self.timeout = wait_timeout(timeout, kwargs, owner, default=DEFAULT_BATCH_TIMEOUT)
        self.policy = WaitPolicy.build(wait_policy, poll_interval=poll_interval, **policy_fields)
        super().__init__(**kwargs)
        if not explicit_outlets:
            self.outlets = [default_outlet(destination, self.dag_id if self.has_dag() else None, self.task_id)]
        self.items = items
        self.items_path = items_path
        self.items_conn_id = items_conn_id
        self.defaults = dict(defaults or {}) if not rendered_later(defaults) else defaults
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
        self.request_retry = request_retry_overrides(type(self).__name__, request_retry, retry)
        self.retry = self.request_retry  # the old name, for code that still reads it
        self.durable = durable
        self.on_uncertain_submit = check_uncertain_policy(on_uncertain_submit)
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.manifest_task_ids = manifest_task_ids
        self.max_characters = check_limit("max_characters", max_characters)
        self.max_credits = check_limit("max_credits", max_credits)
        self.wait_before_defer = float(before_defer)
        if not rendered_later(self.defaults):
            self._check_defaults(self.defaults)

    def _session_for_threads(self) -> None:
        """Check the connection speaks this class's API; size its pool for ``max_active_requests`` threads."""
        api = self.hook.vendor.api
        if api != self.vendor.api:
            raise TtsConfigError(
                f"connection {self.tts_conn_id!r} is a {api} connection; {type(self).__name__} needs a "
                f"{self.vendor.api} connection"
            )
        self._pool_for_threads(self.max_active_requests)

    def execute(self, context: Context) -> dict[str, Any]:
        plan = self._plan(context)
        self.log.info("Batch of %d items into %s", len(plan.items), plain_uri(plan.folder))
        self._session_for_threads()
        outcomes = self._submit_all(context, plan)
        waits = {
            fp: (o.tts_task_id, o.submitted_at) for fp, o in outcomes.items() if o.kind == "wait" and o.tts_task_id
        }
        failed = {
            fp: {"error": o.error, "retryable": o.retryable, **({"budget": True} if o.budget else {})}
            for fp, o in outcomes.items()
            if o.kind == "failed"
        }
        # What the submit phase read or wrote of each request's cache entry: the store phase does not read it again.
        known = {fp: (o.hit, o.entry) for fp, o in outcomes.items()}
        if not waits:
            return self._finish(context, plan, {"status": "done", "pending": 0}, {}, failed, known=known)
        started_at = time.time()
        # The trigger module loads Airflow's trigger base (pydantic models): at run time, not at DAG parse.
        from airflow_provider_tts.batch.trigger import TtsBatchTrigger

        trigger = TtsBatchTrigger(
            tts_conn_id=self.tts_conn_id,
            kind=self.tts_kind,
            record_uri=plan.record.where,
            record_conn_id=self.dest_conn_id or None,
            deadline=started_at + self.timeout,
            started_at=started_at,
            concurrency=self.max_active_requests,
            request_retry=self.request_retry,
            wait_policy=self.policy,
        )
        done: dict[str, dict[str, Any]] = {}
        if not self.deferrable or self.wait_before_defer > 0:
            stop_at = started_at + self.wait_before_defer if self.deferrable else None
            event, done = asyncio.run(self._store_while_waiting(context, plan, trigger, waits, failed, stop_at, known))
            if event is not None:
                return self._finish(context, plan, event, waits, failed, done, known)
            self.log.info("Batch: %d of %d items stored while waiting here; deferring the rest", len(done), len(waits))
        # The cached items' rows are made now, from the hits just confirmed, so the resumed task reads
        # none of their entries (nor HEADs their audio) again.
        cached = [item for item in plan.items if str(item.index) not in done and known[item.fingerprint][0] is not None]
        done.update(self._rows(context, plan, cached, known, {}, failed))
        ended = {item.fingerprint for item in plan.items if str(item.index) in done}
        pending = {fp: job for fp, job in waits.items() if fp not in ended}
        plan.record.save(pending, plan.digest, failed, done, {fp: known[fp][1] for fp in pending})
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: check the items did not change meanwhile, store, write the manifest."""
        plan = self._plan(context)
        self._session_for_threads()
        waits, digest, failed, done, entries = plan.record.load()
        if digest is None:
            # No wait list: this is no resume of a live deferral. Airflow 3.0 calls the resume method
            # again on a retry of a task whose earlier try failed after resuming; that retry starts
            # over, and the request cache re-attaches what was paid for.
            self.log.info("Batch: no wait list to resume from (event %.100r); starting the try over", event)
            return self.execute(context)
        if digest != plan.digest:
            raise TtsConfigError(changed_message(plan, "they are not the items it submitted before it deferred"))
        # The entries the deferring try handed over stand for the first resume; a retried resume (Airflow 3.0
        # resumes again after a failed one, perhaps after some items were stored) reads them afresh.
        known = {} if is_retry(context) else {fp: (None, entry) for fp, entry in entries.items()}
        return self._finish(context, plan, event, waits, failed, done, known)
