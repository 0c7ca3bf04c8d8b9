"""``TtsAudioToStorageOperator``: wait for a text-to-speech task if needed, then store its audio.

The operator waits for the remote task when it is not finished (deferring to
:class:`~airflow_provider_tts.triggers.tts.TtsTaskTrigger`, or polling in the worker when
``deferrable=False``), then streams the audio straight from the HTTP response into the destination
through :mod:`airflow_provider_tts.storage`: constant memory, atomic, verified. The destination, the
file name and ``overwrite="fail"`` are checked before any request. It declares one stable asset when
the DAG is parsed (also for a mapped task) and reports the stored object as its one output.

The one-task operators of :mod:`airflow_provider_tts.operators.text_to_storage` are this operator
with a submit in front.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import AssetAlias, BaseOperator

from airflow_provider_tts.compat import conf
from airflow_provider_tts.confinement import DESTINATIONS, confine
from airflow_provider_tts.constants import KINDS
from airflow_provider_tts.exceptions import TtsConfigError, TtsProtocolError, TtsTransientApiError
from airflow_provider_tts.hooked import TtsHookMixin
from airflow_provider_tts.lineage import default_outlet
from airflow_provider_tts.links import StoredAudioLink
from airflow_provider_tts.naming import (
    check_file_name,
    default_stem,
    has_audio_extension,
    same_file,
    with_extension,
)
from airflow_provider_tts.objects import listing
from airflow_provider_tts.operators.submit import from_submitted
from airflow_provider_tts.renames import request_retry_overrides
from airflow_provider_tts.results import stored_file_result
from airflow_provider_tts.storage import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_BYTES,
    OverwritePolicy,
    TtsStorageError,
    check_audio_body,
    check_destination,
    check_extension,
    check_store_settings,
    destination_path,
    is_folder,
    peek,
)
from airflow_provider_tts.storing import STORE_ATTEMPTS, StoredAudioOutput, plain_uri, stream_audio_into
from airflow_provider_tts.templating import rendered_later, templated
from airflow_provider_tts.waiting import Waiter, WaitPolicy, wait_sync, wait_timeout

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.sdk import Asset, Context, ObjectStoragePath, XComArg

    from airflow_provider_tts.operators.submit import TtsSubmitOperator
    from airflow_provider_tts.status import TtsTaskStatus
    from airflow_provider_tts.storage import StoredAudio


class TtsAudioToStorageOperator(TtsHookMixin, StoredAudioOutput, BaseOperator):
    """Wait for a text-to-speech task if needed, then stream its audio into object storage.

    :param tts_task_id: the vendor's task id (templated; an XComArg works), or the succeeded status
        a :class:`~airflow_provider_tts.sensors.tts.TtsTaskSensor` returned (``sensor.output``): the
        sensor's last poll already read where the audio is, so the download starts without asking
        the vendor again (one request less per file; a Revid URL that lost its signature in XCom,
        or one that expired, is still polled for afresh). A status of another kind or vendor than
        this task's is refused before any request; one not yet succeeded is waited for as its id.
    :param destination: a URI string or ``ObjectStoragePath`` (templated): ``file:///data/a.flac``,
        ``s3://bucket/audio/a.wav``, any scheme an installed provider registers. Ending in ``/`` (or
        naming an existing folder), it is a folder and the file inside it is named by ``file_name``.
    :param file_name: for a folder destination, the file's name (templated, e.g.
        ``"{{ ds }}-briefing"``); the extension follows the content type unless the name ends in
        one, and one that contradicts the audio is refused. A name with ``/``, ``..``, a leading
        ``.`` or over 200 bytes is refused before any request. Default:
        ``<dag_id>-<task_id>``, plus ``-<map_index>`` zero-padded to 4 digits for a mapped task,
        the same on every re-run of the item, so ``skip_if_identical`` writes no second file (a
        scheduled DAG that keeps every run's audio puts the run in the name, e.g. ``{{ ds }}``).
        The returned ``uri`` says where the bytes went.
    :param tts_conn_id: a ``camb_ai`` or ``revid_tts`` connection (templated).
    :param kind: ``tts``, ``text-to-sound`` (Camb.ai) or ``srt-to-speech`` (RevidAPI).
    :param submitted: instead of ``tts_task_id``, the upstream ``TtsSubmitOperator``, as for
        :class:`~airflow_provider_tts.sensors.tts.TtsTaskSensor`.
    :param dest_conn_id: the storage connection (e.g. an ``aws`` connection for ``s3://``).
    :param overwrite: when the destination exists: ``skip_if_identical`` (default; the same size and
        sha256 as the new audio means no second write, so a retried pipeline neither rewrites nor
        fails), ``replace``, or ``fail``.
    :param max_bytes: refuse audio larger than this (default 2 GiB), before or while downloading.
    :param chunk_bytes: size of the chunks streamed from HTTP into storage (default 256 KiB).
    :param deferrable: wait in the triggerer rather than in a worker slot; defaults to
        ``[operators] default_deferrable``.
    :param timeout: how long to wait for the task to finish before failing: seconds or a
        ``timedelta`` (default 1 hour; ``wait_timeout``, its old name, still works with a
        deprecation warning).
    :param poll_interval: seconds (or a ``timedelta``) between polls at first (default 5).
    :param wait_policy: the other wait settings; see :class:`~airflow_provider_tts.waiting.WaitPolicy`
        (its fields may also be passed by name).
    :param request_retry: overrides of the connection's retry settings for each HTTP request
        (``max_retries``, ``backoff``, ``max_backoff``); the task's own retries stay ``retries``.
    :param retry: the deprecated spelling of ``request_retry`` (a warning says so).
    :param asset_alias: opt in to one asset *per stored file*: the task's outlet becomes this
        ``AssetAlias`` and each store adds the file's own asset to it. Airflow creates those assets
        at run time, so no DAG can be scheduled on them in advance; the default (one stable asset,
        below) is what a scheduler can use.

    Returns the stored-file result, as every storing operator does (table: ``docs/results.md``):
    ``fingerprint``, ``characters`` and ``credits`` are None (a task id says nothing of its
    request), ``requests`` 0 (it pays for nothing), ``cached`` False.

    **Assets.** Without ``outlets``, the task declares one stable asset, registered when the DAG is
    parsed, also under ``.partial().expand()``: the destination itself when it is a literal URI (a
    folder destination's asset is the folder), else ``Asset(name="tts-audio/<dag_id>/<task_id>")``
    (a templated destination). Each store emits one event on it (on every ``Asset`` of explicit
    ``outlets``) whose ``extra`` names the file written: ``uri``, ``size_bytes``, ``sha256``,
    ``content_type``, ``duration_seconds``, ``tts_task_id``, ``kind``. A DAG scheduled on that
    asset runs after each store and finds the files in ``triggering_asset_events``.

    **Lineage.** The stored destination, and only it, is the output: reported to Airflow's hook
    lineage collector and, with ``apache-airflow-providers-openlineage`` installed, as the output
    dataset of the OpenLineage event (see :meth:`get_openlineage_facets_on_complete`).
    """

    template_fields: Sequence[str] = ("tts_task_id", "destination", "file_name", "tts_conn_id", "kind", "dest_conn_id")
    ui_color = "#e8f2d9"
    operator_extra_links = (StoredAudioLink(),)

    def __init__(
        self,
        *,
        tts_task_id: str | XComArg | Mapping[str, Any] | None = None,
        destination: str | ObjectStoragePath,
        file_name: str | None = None,
        tts_conn_id: str | None = None,
        kind: str | None = None,
        submitted: TtsSubmitOperator | None = None,
        dest_conn_id: str | None = None,
        overwrite: OverwritePolicy = "skip_if_identical",
        max_bytes: int = DEFAULT_MAX_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: float | timedelta | None = None,
        poll_interval: float | timedelta | None = None,
        wait_policy: WaitPolicy | None = None,
        request_retry: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        asset_alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_store_settings(overwrite, max_bytes, chunk_bytes)
        # A status mapping passes through as the id does; execute() reads it (_handed_status).
        handed = cast("str | XComArg | None", tts_task_id)
        tts_task_id, tts_conn_id, kind = from_submitted(
            type(self).__name__, submitted, tts_task_id=handed, tts_conn_id=tts_conn_id, kind=kind
        )
        if not templated(kind) and kind not in KINDS:
            raise TtsConfigError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        if file_name is not None and not rendered_later(file_name):
            check_file_name(file_name)  # a literal mistake fails when the DAG is parsed
        explicit_outlets = "outlets" in kwargs  # also under .expand(): partial() put them there
        policy_fields = WaitPolicy.pop_fields(kwargs)
        self.timeout = wait_timeout(timeout, kwargs, type(self).__name__)
        self.policy = WaitPolicy.build(wait_policy, poll_interval=poll_interval, **policy_fields)
        super().__init__(**kwargs)
        if not explicit_outlets:
            dag_id = self.dag_id if self.has_dag() else None
            self.outlets = [self._outlet(destination, asset_alias, dag_id, self.task_id)]
        # An XComArg is resolved and a template rendered to str before execute() runs.
        self.tts_task_id = cast("str", tts_task_id)
        self.destination = destination
        self.file_name = file_name
        self.tts_conn_id = tts_conn_id
        self.kind = kind
        self.dest_conn_id = dest_conn_id
        self.overwrite: OverwritePolicy = overwrite
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.deferrable = deferrable
        self.wait_timeout = self.timeout  # the old name, for code that still reads it
        self.request_retry = request_retry_overrides(type(self).__name__, request_retry, retry)
        self.retry = self.request_retry  # the old name, for code that still reads it
        self.asset_alias = asset_alias
        #: What this try stored (the XCom dict), for the OpenLineage facets on completion.
        self.stored_audio: dict[str, Any] | None = None

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:  # type: ignore[override]
        """Declare the default outlet on the mapped task too, so it is registered at parse time.

        ``BaseOperator.partial`` never runs ``__init__`` while the DAG is parsed, and fills in
        ``outlets=[]``: the scheduler then saw no outlet, and every mapped instance got none. The
        outlet is computed here from what ``partial()`` knows (a ``destination`` given to
        ``expand()`` instead is only known at run time: the stable name is used) and travels in
        the partial arguments to every unmapped instance.
        """
        explicit_outlets = "outlets" in kwargs
        operator_partial = super().partial(**kwargs)
        if not explicit_outlets:
            partial_kwargs = operator_partial.kwargs
            dag = partial_kwargs.get("dag")
            partial_kwargs["outlets"] = [
                cls._outlet(
                    kwargs.get("destination"),
                    kwargs.get("asset_alias"),
                    dag.dag_id if dag is not None else None,
                    partial_kwargs["task_id"],
                )
            ]
        return operator_partial

    @staticmethod
    def _outlet(destination: Any, alias: str | None, dag_id: str | None, task_id: str) -> Asset | AssetAlias:
        """The stable asset of :func:`~airflow_provider_tts.lineage.default_outlet`, or the opt-in alias."""
        if alias:
            return AssetAlias(name=alias)
        return default_outlet(destination, dag_id, task_id)

    def execute(self, context: Context) -> dict[str, Any]:
        handed = self._handed_status()
        if not isinstance(self.tts_task_id, str) or not self.tts_task_id.strip():
            raise TtsConfigError(f"tts_task_id rendered to {self.tts_task_id!r}; expected a vendor task id")
        self._check_before_paying(context)
        if handed is not None:  # the sensor's status: no poll; the store's own log line names the audio
            return self._store(context, handed)
        return self._wait_and_store(context)

    def _handed_status(self) -> TtsTaskStatus | None:
        """The succeeded status ``tts_task_id`` rendered to (a sensor's return value), else None.

        A sensor's last poll read the run id (Camb.ai) or audio URL (RevidAPI); asking again would
        cost a request per file and tell nothing new. A status is not a credential: the download
        goes through the hook's usual checks, and a stripped or expired URL is polled for afresh.
        ``tts_task_id`` becomes the status's id either way, so a wait, a deferral and the result
        see a plain id.
        """
        handed: Any = self.tts_task_id
        if not isinstance(handed, Mapping):
            return None
        from airflow_provider_tts.status import TtsTaskStatus

        try:
            status = TtsTaskStatus.from_xcom(dict(handed))
        except ValueError as exc:
            raise TtsConfigError(
                f"tts_task_id rendered to a mapping that is not a task status ({_first_line(exc)}); expected a vendor "
                "task id or the status a TtsTaskSensor returns"
            ) from None
        api = self.hook.vendor.api
        if (status.api, status.kind) != (api, self.kind):
            raise TtsConfigError(
                f"tts_task_id is the status of a {status.api} {status.kind!r} task ({status.tts_task_id!r}); this "
                f"task fetches {api} {self.kind!r} audio through {self.tts_conn_id!r}; nothing was requested"
            )
        self.tts_task_id = status.tts_task_id
        return status if status.state == "succeeded" else None

    def _check_before_paying(self, context: Context) -> None:
        """A bad destination or file name, or a file in the way with ``overwrite="fail"``, fails here.

        Before any request, let alone a paid one. In a folder the extension follows the audio, so a
        file of the same name with any audio extension is in the way.
        """
        destination, folder = self._checked_destination()
        name = self._given_name(folder)
        if folder and self.overwrite == "fail":
            stem = name or default_stem(context, self.task_id)
            for existing in listing(destination):
                if has_audio_extension(existing) and same_file(existing) == same_file(stem):
                    raise TtsConfigError(
                        f"{plain_uri(destination)} already holds {existing!r}, where this task stores its audio, "
                        "and overwrite='fail'; nothing was requested"
                    )

    def _wait_and_store(self, context: Context) -> dict[str, Any]:
        """Wait for ``self.tts_task_id`` (deferring when ``deferrable``), then store its audio."""
        from airflow_provider_tts.triggers.tts import TtsTaskTrigger, status_from_event

        started_at = time.time()
        waiter = Waiter(
            self.policy,
            tts_task_id=self.tts_task_id,
            kind=self.kind,
            started_at=started_at,
            deadline=started_at + self.timeout,
            logger=self.log,
        )
        try:
            event = waiter.on_status(self.hook.get_task_status(self.tts_task_id, self.kind))
        except Exception as exc:
            event = waiter.on_error(exc)
        if event is None:
            if self.deferrable:
                self.defer(
                    trigger=TtsTaskTrigger(
                        tts_conn_id=self.tts_conn_id,
                        tts_task_id=self.tts_task_id,
                        kind=self.kind,
                        deadline=waiter.deadline,
                        started_at=started_at,
                        wait_policy=self.policy,
                        request_retry=self.request_retry,
                    ),
                    method_name="execute_complete",
                    # The id travels with the deferral: an operator that submitted it in execute()
                    # resumes as a fresh instance that never saw it.
                    kwargs={"tts_task_id": self.tts_task_id},
                )
            event = wait_sync(self.hook, waiter)
        return self._store(context, status_from_event(event, self.tts_task_id))

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, tts_task_id: str | None = None
    ) -> dict[str, Any]:
        """Resume after the trigger fired: validate the event, then download.

        ``tts_task_id`` is the id ``execute`` deferred with (None from a deferral made before it was
        passed along): the event must be about that task.
        """
        from airflow_provider_tts.triggers.tts import status_from_event

        if tts_task_id is not None:
            self.tts_task_id = tts_task_id
        return self._store(context, status_from_event(event, self.tts_task_id))

    def _checked_destination(self, *, reuse: bool = False) -> tuple[ObjectStoragePath, bool]:
        """The destination path and whether it is a folder, validated before any request for audio.

        Checks the scheme, that the container exists (a missing bucket is a clear error, not a
        failed upload after the download), and, for a literal file with ``overwrite="fail"``,
        that it does not exist yet. A folder is a destination written with a trailing ``/`` or one
        the storage already holds as a directory (prefix): an ``ObjectStoragePath`` loses its
        trailing slash, so the raw value alone cannot tell. ``reuse`` takes the answer ``execute``
        found moments ago in this same process (one request less per file on object stores);
        after a deferral the check runs again.
        """
        cached = self.__dict__.pop("_destination_checked", None)
        if reuse and cached is not None and cached[0] == repr(self.destination):
            return cast("tuple[ObjectStoragePath, bool]", cached[1])
        destination = destination_path(self.destination, self.dest_conn_id or None)
        confine(plain_uri(destination), DESTINATIONS, what="destination")
        try:
            folder = check_destination(destination, folder_hint=is_folder(self.destination))
        except OSError as exc:
            raise TtsStorageError(f"cannot prepare {plain_uri(destination)}: {type(exc).__name__}: {exc}") from exc
        if not folder and self.overwrite == "fail" and destination.fs.exists(destination.path):
            raise TtsConfigError(f"destination {plain_uri(destination)} already exists and overwrite='fail'")
        self.__dict__["_destination_checked"] = (repr(self.destination), (destination, folder))
        return destination, folder

    def _store(self, context: Context, status: TtsTaskStatus) -> dict[str, Any]:
        """Download the finished task's audio into the destination, trying a glitched download again in place.

        The task is paid and done: a 200 maintenance page where the audio should be, a garbled result
        answer or a 5xx outliving the transport's retries says nothing about the audio, so it is fetched
        again (with a fresh status, whose URL may be new) up to ``STORE_ATTEMPTS`` times before the try
        fails, as the batch does per item. Spending an Airflow retry on it would make a worker loss and
        a glitch share one budget (found by the chaos run, RELIABILITY D3). Nothing is written by a
        failed attempt: the body is checked before the write starts and a cut write is discarded.
        """
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                return self._store_once(context, status)
            except (TtsProtocolError, TtsTransientApiError) as exc:
                if attempt == STORE_ATTEMPTS:
                    raise
                self.log.warning("Task %s: %s; downloading it again (attempt %d of %d)", status.tts_task_id, exc,
                                 attempt + 1, STORE_ATTEMPTS)  # fmt: skip
                with contextlib.suppress(Exception):  # a status glitch too: keep the one we have
                    fresh = self.hook.get_task_status(status.tts_task_id, self.kind)
                    if fresh.state == status.state:
                        status = fresh
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _store_once(self, context: Context, status: TtsTaskStatus) -> dict[str, Any]:
        destination, folder = self._checked_destination(reuse=True)
        ti = context.get("ti")
        try_number = getattr(ti, "try_number", None)
        with self.hook.open_audio(status) as audio:
            what = f"audio for task {status.tts_task_id!r} from {audio.url}"
            head, chunks = peek(audio.iter_chunks(self.chunk_bytes))
            check_audio_body(audio.content_type, head, what=what)  # a login page is never stored
            if folder:
                name = self._given_name(folder) or default_stem(context, self.task_id)
                path = destination / with_extension(name, audio.content_type, head)
            else:
                path = destination
                check_extension(path.name, audio.content_type, head)
            self.log.info(
                "Streaming %s (%s, %s bytes) to %s",
                audio.url,
                audio.content_type,
                audio.content_length if audio.content_length is not None else "unknown",
                plain_uri(path),
            )
            stored = stream_audio_into(
                path,
                chunks,
                audio,
                status,
                temp_name=self._temp_name(context, path.name),
                retried=not isinstance(try_number, int) or try_number > 1,
                overwrite=self.overwrite,
                max_bytes=self.max_bytes,
                chunk_bytes=self.chunk_bytes,
            )
        self._stored_at(context, path, stored)
        StoredAudioLink.persist(context, self, path)
        result = stored_file_result(stored, uri=plain_uri(path), tts_task_id=stored.tts_task_id,
                                    fingerprint=self._request_fingerprint(), cached=False,
                                    **self._spending())  # fmt: skip
        self._emit_asset(context, result)
        return result

    def _stored_at(self, context: Context, path: ObjectStoragePath, stored: StoredAudio) -> None:
        """Called once the audio is at ``path``; the operators that know their request record it."""

    def _request_fingerprint(self) -> str | None:
        """The fingerprint of the request that made the audio, for the result: unknown from a task id alone."""
        return None

    def _spending(self) -> dict[str, Any]:
        """What the result reports as spent (``characters``, ``requests``, ...): nothing paid, given a task id."""
        return {}


def _first_line(exc: Exception) -> str:
    """A validation error's summary and first complaint, for a message of one line."""
    return "; ".join(line.strip() for line in str(exc).splitlines()[:3] if line.strip())
