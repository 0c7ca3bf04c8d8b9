"""TtsHook: authenticated calls to Camb.ai and RevidAPI behind one interface.

Which API the hook speaks follows from the connection's type (``camb_ai`` or ``revid_tts``). The
vendor unit builds requests and parses answers; the transport sends them with the retry policy.
The hook only wires them together, so it has no vendor branches of its own, and its sync and async
methods behave exactly alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_tts import metrics
from airflow_provider_tts.compat import BaseHook, omit_secrets_from_dag_test_log
from airflow_provider_tts.connection import DEFAULT_CONN_IDS, ConnectionSettings, parse_connection
from airflow_provider_tts.exceptions import (
    TtsAudioUrlExpiredError,
    TtsConfigError,
    TtsError,
    TtsProtocolError,
    TtsTaskFailedError,
    excerpt,
)
from airflow_provider_tts.hooks.connections import RESOLVED_CONNECTIONS
from airflow_provider_tts.renames import REQUEST_RETRY_KEYS, request_retry_overrides
from airflow_provider_tts.status import Kind, TtsTaskStatus
from airflow_provider_tts.transport import PACERS, AsyncTransport, AudioStream, Pacer, SyncTransport, shared_transport
from airflow_provider_tts.vendors import vendor_class
from airflow_provider_tts.vendors.base import ApiRequest, ApiResponse, Submission, Vendor, validate_task_id

if TYPE_CHECKING:
    import requests

    from airflow_provider_tts.cache import Endpoint
    from airflow_provider_tts.transport.retry import AttemptGuard

__all__ = ["AudioStream", "CambAiHook", "RevidTtsHook", "Submission", "TtsHook", "TtsTaskStatus"]

#: Media types that are never audio: a streaming TTS response carrying one is an error body.
_NOT_AUDIO = frozenset({"application/json", "text/json", "application/problem+json", "text/html", "application/xml"})


def _mask(secret: str) -> None:
    """Register the key with Airflow's secret masker, so no log line can carry it."""
    from airflow_provider_tts.compat import mask_secret

    mask_secret(secret)


#: The last connection object a hook parsed (its class, its fields) and the settings parsed from it.
_last_parsed: tuple[Any, type[Vendor], tuple[Any, ...], ConnectionSettings] | None = None


def _connection_fields(conn: Any) -> tuple[Any, ...]:
    """What :func:`parse_connection` reads from a connection (to tell a connection changed in place)."""
    return (conn.conn_id, conn.conn_type, conn.host, conn.port, conn.schema, conn.login, conn.password, conn.extra)


class StatusPoll:
    """One task's status request and parser, kept by the hook from one poll to the next.

    A wait polls the same task for minutes and the vendor answers the same bytes until the task
    moves on, so the request is built and its arguments checked once, and an answer identical to
    the last one (HTTP status and body) returns the status parsed from it before: a pending poll
    then costs no JSON decoding and no model validation. Only the body and the status decide what
    a successful parse returns (headers and URL only shape error messages), errors are never kept,
    and :class:`TtsTaskStatus` is frozen, so handing out the same object is safe.
    """

    __slots__ = ("_answer", "_kind", "_status", "_task_id", "request", "vendor")

    #: Polls a hook keeps at most (the newest): one per wait, a sliding window's worth for a batch.
    KEPT = 256

    def __init__(self, vendor: Vendor, kind: Kind, tts_task_id: str) -> None:
        self.vendor = vendor
        self._kind = kind
        self._task_id = tts_task_id
        self.request = vendor.status_request(kind, tts_task_id)
        self._answer: tuple[int, bytes] | None = None
        self._status: TtsTaskStatus | None = None

    def parse(self, resp: ApiResponse) -> TtsTaskStatus:
        answer = (resp.status, resp.body)
        if answer == self._answer and self._status is not None:
            return self._status
        status = self.vendor.parse_status(self._kind, self._task_id, resp)
        self._answer, self._status = answer, status
        return status


class TtsHook(BaseHook):
    """Talk to a text-to-speech job API: submit tasks, poll their status, stream their audio.

    :param tts_conn_id: an Airflow connection of type ``camb_ai`` or ``revid_tts``; the password
        is the API key, the host an optional base URL (the emulator's address, for example).
    :param request_retry: overrides of the connection's retry settings for each of this hook's
        HTTP requests (``max_retries``, ``backoff``, ``max_backoff``), e.g. from a trigger's kwargs.
    :param retry: the deprecated spelling of ``request_retry`` (a warning says so).
    :param shared_session: async API calls take their keep-alive client (``transport.http1``, not
        aiohttp: polls are a triggerer's hot path) from a pool shared by every hook in the same
        event loop (see ``transport.SessionPool``); False gives this hook its own.
    """

    conn_name_attr = "tts_conn_id"
    default_conn_name = DEFAULT_CONN_IDS["camb_ai"]
    # Airflow's hook metadata holds one connection type per class; the registered classes are the
    # subclasses below. This class serves either type, which its connection decides.
    conn_type = "camb_ai"
    hook_name = "Text-to-speech job API (Camb.ai, RevidAPI)"

    def __init__(
        self,
        tts_conn_id: str = default_conn_name,
        *,
        request_retry: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        shared_session: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(tts_conn_id, str) or not tts_conn_id.strip():
            raise TtsConfigError(f"tts_conn_id must be a non-empty string, got {tts_conn_id!r}")
        self.tts_conn_id = tts_conn_id
        self.retry_overrides = request_retry_overrides(type(self).__name__, request_retry, retry) or {}
        unknown = set(self.retry_overrides) - set(REQUEST_RETRY_KEYS)
        if unknown:
            raise TtsConfigError(f"unknown retry settings {sorted(unknown)}; expected {', '.join(REQUEST_RETRY_KEYS)}")
        self.shared_session = shared_session
        self._pacer: Pacer | None = None
        self._own_pacer = False
        self._vendor: Vendor | None = None
        self._async_transport: AsyncTransport | None = None
        # Tasks a vendor finished synchronously at submit time: their audio must not be lost even
        # if the status endpoint has not caught up yet.
        self._finished_at_submit: dict[tuple[str, str], TtsTaskStatus] = {}
        self._status_polls: dict[tuple[str, str], StatusPoll] = {}

    # ----------------------------------------------------------------------- connection and setup

    def _vendor_for(self, conn: Any) -> Vendor:
        global _last_parsed
        cls = vendor_class(conn.conn_type, conn.conn_id)
        # Hooks that share one resolved connection object (RESOLVED_CONNECTIONS hands the same one
        # to the waits that start together) parse and mask it once: thousands of triggers start
        # at once in a triggerer, and parsing (URL and address checks) and masking (on 3.1+ also
        # a message to the supervisor) are per-wait work with the same answer. The object's
        # fields are compared too, so one changed in place is parsed afresh.
        fields = _connection_fields(conn)
        last = _last_parsed
        if last is not None and last[0] is conn and last[1] is cls and last[2] == fields:
            settings = last[3]
        else:
            settings = parse_connection(
                conn,
                default_api_base_url=cls.default_api_base_url,
                default_status_base_url=cls.default_status_base_url,
            )
            _mask(settings.api_key.get_secret_value())
            _last_parsed = (conn, cls, fields, settings)
        if self.retry_overrides:
            settings = replace(settings, retry=replace(settings.retry, **self.retry_overrides))
        return cls(settings)

    @property
    def vendor(self) -> Vendor:
        """The vendor unit for this connection, resolved (synchronously) on first use."""
        if self._vendor is None:
            omit_secrets_from_dag_test_log()
            self._vendor = self._vendor_for(self.get_connection(self.tts_conn_id))
        return self._vendor

    async def avendor(self) -> Vendor:
        """The vendor unit, resolving the connection without blocking the event loop.

        Airflow's async lookup is tried first: in a triggerer it asks the triggerer's own channel
        and finds connections from every source. Under ``airflow dags test`` the trigger runs inline
        in the CLI process, where the async lookup does not see connections stored in the metadata
        database although the synchronous one does. So a not-found from the async lookup
        is answered by the synchronous lookup, run in a worker thread so the event loop never
        blocks; a connection that really does not exist still fails, with Airflow's own message.
        """
        if self._vendor is None:
            omit_secrets_from_dag_test_log()
            conn = await self._aget_connection()
            try:
                self._vendor = self._vendor_for(conn)
            except RuntimeError:
                # Airflow 3.0's ``conn.extra_dejson`` masks the extras by a synchronous call to the
                # supervisor, which raises on the triggerer's event loop (AsyncToSync); asgiref's
                # worker thread may make that call. Later minors never raise here.
                from asgiref.sync import sync_to_async

                self._vendor = await sync_to_async(self._vendor_for)(conn)
        return self._vendor

    async def _aget_connection(self) -> Any:
        """The connection, looked up once for every hook of it that starts around the same time."""
        return await RESOLVED_CONNECTIONS.get(self.tts_conn_id, self._alookup_connection)

    async def _alookup_connection(self) -> Any:
        from airflow_provider_tts.compat import AirflowNotFoundException

        try:
            return await self.aget_connection(self.tts_conn_id)
        except AirflowNotFoundException:
            self.log.debug("async lookup of %s found nothing; trying the sync lookup", self.tts_conn_id)
        return await asyncio.to_thread(self.get_connection, self.tts_conn_id)

    @property
    def pacer(self) -> Pacer:
        """The connection's :class:`~airflow_provider_tts.transport.Pacer` in this process, shared by every hook of it.

        Its ``requests_per_second`` and ``max_in_flight`` extras, and any 429's ``Retry-After``,
        hold the vendor calls of every task and trigger on the connection in this process
        (``transport.PACERS``). Setting one before the first call gives this hook its own instead.
        """
        if self._pacer is None:
            self._pacer = PACERS.for_connection(self.vendor.settings)
        return self._pacer

    @pacer.setter
    def pacer(self, pacer: Pacer) -> None:
        self._pacer = pacer
        self._own_pacer = True

    @property
    def api(self) -> str:
        """``camb_ai`` or ``revid_tts``."""
        return self.vendor.api

    @cached_property
    def _sync(self) -> SyncTransport:
        if self._own_pacer:  # its own pace: its own connections too
            transport = SyncTransport(self.vendor.settings)
            transport.pacer = self.pacer
            return transport
        return shared_transport(self.vendor.settings, self.pacer)

    async def _async(self) -> AsyncTransport:
        if self._async_transport is None:
            transport = AsyncTransport((await self.avendor()).settings, shared=self.shared_session)
            transport.pacer = self.pacer  # the vendor is resolved: no blocking lookup
            self._async_transport = transport
        return self._async_transport

    def get_conn(self) -> requests.Session:
        """The connection's ``requests.Session``, shared by its hooks in this process (Airflow's hook protocol)."""
        return self._sync.session

    def close(self) -> None:
        """Close the sync session's pooled connections, unless other hooks of the connection share them."""
        if "_sync" in self.__dict__ and not self._sync.shared:
            self._sync.close()

    async def aclose(self) -> None:
        """Close the async session; call it in the event loop that used the hook."""
        if self._async_transport is not None:
            await self._async_transport.aclose()

    # --------------------------------------------------------------------------------- statuses

    def _status_poll(self, vendor: Vendor, tts_task_id: str, kind: str) -> StatusPoll:
        """The kept :class:`StatusPoll` of a task, made (and its arguments checked) on its first poll."""
        key = (kind, tts_task_id)
        poll = self._status_polls.get(key)
        if poll is None or poll.vendor is not vendor:
            if len(self._status_polls) >= StatusPoll.KEPT:  # a batch polls thousands: keep the newest
                del self._status_polls[next(iter(self._status_polls))]
            poll = self._status_polls[key] = StatusPoll(vendor, vendor.check_kind(kind), validate_task_id(tts_task_id))
        return poll

    def get_task_status(self, tts_task_id: str, kind: str = "tts") -> TtsTaskStatus:
        """Poll a task once (retrying transient failures) and return its normalised status."""
        vendor = self.vendor
        if known := self._finished_at_submit.get((kind, tts_task_id)):
            return known
        poll = self._status_poll(vendor, tts_task_id, kind)
        with metrics.timed(vendor.api, kind, "status"):
            status: TtsTaskStatus = self._sync.call(poll.request, poll.parse)
        metrics.polled(status)
        return status

    async def aget_task_status(self, tts_task_id: str, kind: str = "tts") -> TtsTaskStatus:
        """Async twin of :meth:`get_task_status`; reuses one session across calls."""
        # The resolved vendor and transport without awaiting their getters: a poll's hot path.
        vendor = self._vendor or await self.avendor()
        if known := self._finished_at_submit.get((kind, tts_task_id)):
            return known
        poll = self._status_poll(vendor, tts_task_id, kind)
        transport = self._async_transport or await self._async()
        with metrics.timed(vendor.api, kind, "status"):
            status: TtsTaskStatus = await transport.call(poll.request, poll.parse)
        metrics.polled(status)
        return status

    def status_lobby(self) -> asyncio.Future[None] | None:
        """What a trigger awaits before its next async poll while the shared session pool is crowded.

        None (poll now) unless a whole round of requests already queues at the pool's gate; then a
        future the gate resolves when this poll's turn comes near (``transport.PoolGate``). Polling
        without awaiting it is correct too, only costlier while thousands of polls queue.
        """
        transport = self._async_transport
        return transport.lobby() if transport is not None else None

    # ----------------------------------------------------------------------------------- submit

    def submit_task(self, kind: str, fields: Mapping[str, Any], guard: AttemptGuard | None = None) -> Submission:
        """Create a remote task; return its id, its status if the vendor finished at once, and the
        credits the vendor said it charged (None when it did not say: neither task API documents it).

        Fields are validated against the vendor's documented body before anything is sent. The
        create call is not retried after an ambiguous failure (see ``transport.is_retryable``).
        ``guard`` lets the caller drop its "may have been paid" marker while a refused create
        waits for its resend, and take it back before it (see ``transport.retry.AttemptGuard``).
        """
        vendor = self.vendor
        checked_kind = vendor.check_kind(kind)
        req = vendor.submit_request(checked_kind, fields)
        with metrics.timed(vendor.api, checked_kind, "create"):
            submission: Submission = self._sync.call(
                req,
                lambda resp: replace(vendor.parse_submit(checked_kind, resp), credits=vendor.reported_credits(resp)),
                guard,
            )
        metrics.created(vendor.api, checked_kind, req.json)
        if submission.status is not None:
            self._finished_at_submit[(checked_kind, submission.tts_task_id)] = submission.status
        self.log.info("Created %s %s task %s", vendor.api, checked_kind, submission.tts_task_id)
        return submission

    def submit(self, kind: str, **fields: Any) -> str:
        """Create a remote task and return the vendor's task id."""
        return self.submit_task(kind, fields).tts_task_id

    # ------------------------------------------------------------------------------------ audio

    def open_audio(self, status: TtsTaskStatus) -> AudioStream:
        """Open a streaming download of a succeeded task's audio.

        Camb results come from the API (with the key); a Revid ``audio_url`` is a storage host and
        gets no key. If a result endpoint answers with JSON pointing at a pre-signed URL instead of
        bytes, that URL is followed, without the key. Every URL off the API's origins is checked
        against the connection's storage-host rules first (``transport.check_storage_url``).

        Signed URLs expire, and XCom and trigger events carry them without their query (see
        :class:`TtsTaskStatus`), so a status that did not come from a poll in this process, and
        whose URL has no query, is polled again for a signed URL before the download. A storage host refusing the URL
        (401/403/404/410) gets one more poll for a fresh URL and one more try; if that fails too,
        :class:`TtsAudioUrlExpiredError` (retryable: a later try polls again).
        """
        vendor = self.vendor
        if status.state != "succeeded":
            raise TtsConfigError(
                f"{status.api} task {status.tts_task_id!r} is {status.state}, not succeeded; no audio to fetch"
            )
        if status.api != vendor.api:
            raise TtsConfigError(f"status of a {status.api} task given to a {vendor.api} connection")
        vendor.audio_request(status)  # refuses what the status carries (e.g. an ftp:// URL) before any request
        if status.audio_url is not None and not status.fresh and not urlsplit(status.audio_url).query:
            # It may have lost its signature on the way through XCom or an event. A URL that still
            # has a query (a status made by hand, or stored by an older version) is tried as it is.
            status = self._poll_for_audio(status)
        try:
            return self._open_audio_once(vendor, status)
        except TtsAudioUrlExpiredError as first:
            self.log.warning("%s; polling the status once for a fresh URL", first)
            fresh = self._poll_for_audio(status)
            try:
                return self._open_audio_once(vendor, fresh)
            except TtsAudioUrlExpiredError as again:
                raise TtsAudioUrlExpiredError(
                    f"{again} (also with a fresh URL from a new status poll; a retry of the task polls again)",
                    http_status=again.http_status,
                ) from first

    def _poll_for_audio(self, status: TtsTaskStatus) -> TtsTaskStatus:
        """A fresh status of the same task, which must still be succeeded (with a new audio URL)."""
        self._finished_at_submit.pop((status.kind, status.tts_task_id), None)
        fresh = self.get_task_status(status.tts_task_id, status.kind)
        if fresh.state == "failed":
            raise TtsTaskFailedError.for_status(fresh)
        if fresh.state != "succeeded":
            raise TtsError(
                f"{fresh.api} {fresh.kind} task {fresh.tts_task_id!r} succeeded earlier but is now "
                f"{fresh.vendor_status!r}; its audio cannot be fetched yet"
            )
        return fresh

    def _open_audio_once(self, vendor: Vendor, status: TtsTaskStatus) -> AudioStream:
        req = vendor.audio_request(status)
        stream = self._sync.open_stream(req)
        if stream.content_type in ("application/json", "text/json"):
            with stream:
                resp = self._sync.read_response(req, stream._response)
            url = vendor.file_url_from(resp, req.what)
            stream = self._sync.open_stream(ApiRequest("GET", url, what=req.what, authenticated=False))
        return stream

    def endpoint(self) -> Endpoint:
        """Where this hook's requests are paid: the request cache's endpoint (vendor, API base, account digest)."""
        from airflow_provider_tts.cache import Endpoint

        settings = self.vendor.settings
        return Endpoint.of(self.vendor.api, settings.api_base_url, settings.api_key.get_secret_value())

    # ----------------------------------------------------------------------------- tts-stream

    def stream_vendor(self) -> Any:
        """The vendor unit, when its API has a synchronous streaming TTS call (Camb.ai's ``/tts-stream``).

        Returns the vendor object (which has ``stream_request``); a connection whose API has no
        such call is refused with a clear error before any request.
        """
        vendor = self.vendor
        if not callable(getattr(vendor, "stream_request", None)):
            raise TtsConfigError(
                f"connection {self.tts_conn_id!r} is a {vendor.api} connection, which has no streaming "
                "TTS call; /tts-stream needs a camb_ai connection"
            )
        return vendor

    def open_tts_stream(self, **fields: Any) -> AudioStream:
        """Validate a ``/tts-stream`` body, send it, and return the open audio response.

        The body is checked against the documented model before anything is sent. The call is not
        idempotent (no task id; the response *is* the paid-for audio), so the transport resends it
        only when the vendor provably did not process it: 429, 503, or a connection that never
        opened. Once a 2xx arrived, a body that breaks off is the caller's to handle: this method
        has already returned and resends nothing. The stream carries the response headers, so
        ``stream.headers.get("x-credits-required")`` is what the vendor says it charged.
        """
        vendor = self.stream_vendor()
        req: ApiRequest = vendor.stream_request(fields)
        with metrics.timed(vendor.api, "tts-stream", "stream"):
            stream = self._sync.open_stream(req)
        if stream.content_type in _NOT_AUDIO or stream.content_type.startswith("text/"):
            # A 2xx whose body is a page or JSON, not audio: a gateway or a changed API. It may
            # have been charged, so it is an error to look at, never a resend or a stored file.
            with stream:
                resp = self._sync.read_response(req, stream._response)
            raise TtsProtocolError(
                f"{req.what}: expected audio, got {stream.content_type} (HTTP {resp.status}): {excerpt(resp.body)}",
                http_status=resp.status,
            )
        self.log.info(
            "Opened %s tts-stream (%s, %s bytes, credits %s)",
            vendor.api,
            stream.content_type,
            stream.content_length if stream.content_length is not None else "unknown",
            stream.headers.get("x-credits-required", "not stated"),
        )
        metrics.created(vendor.api, "tts-stream", req.json, credits=stream.headers.get("x-credits-required"))
        return stream

    # ------------------------------------------------------------------------------ connections

    def test_connection(self) -> tuple[bool, str]:
        """Check the key against the API itself (``airflow connections test`` and the UI button)."""
        try:
            vendor = self.vendor
            req = vendor.probe_request()
            return self._sync.call(req, vendor.probe_verdict)
        except TtsError as exc:
            return False, str(exc)


class CambAiHook(TtsHook):
    """:class:`TtsHook` registered for the ``camb_ai`` connection type.

    Airflow's ProvidersManager keys hooks by connection type and expects each registered class to
    declare exactly the type it is registered for; one class registered for two types makes it log
    an "Inconsistency!" warning in every component. The behaviour is all in :class:`TtsHook`.
    """

    default_conn_name = DEFAULT_CONN_IDS["camb_ai"]
    conn_type = "camb_ai"
    hook_name = "Camb.ai Text-to-Speech"

    def __init__(self, tts_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(tts_conn_id, **kwargs)


class RevidTtsHook(TtsHook):
    """:class:`TtsHook` registered for the ``revid_tts`` connection type (see :class:`CambAiHook`)."""

    default_conn_name = DEFAULT_CONN_IDS["revid_tts"]
    conn_type = "revid_tts"
    hook_name = "RevidAPI Text-to-Speech"

    def __init__(self, tts_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(tts_conn_id, **kwargs)
