"""RevidAPI: TTS and SRT-to-speech tasks created on one host, polled on another, audio on a third.

Facts from the vendor's status page and third-party clients (see ``shared/spec/vendor-apis.md``):
the status body carries ``code``/``task_id``/``status``; the HTTP status line may mirror ``code``
(202/404/500) or always be 200; the body may be a one-element array; the result may sit under
``response`` or ``result`` with ``duration`` or ``audio_duration``; ``success``/``error`` are seen
as synonyms of ``completed``/``failed``. The ``audio_url`` is a storage host: it never gets the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from airflow_provider_tts.exceptions import TtsProtocolError, excerpt
from airflow_provider_tts.lazy import lazy_names
from airflow_provider_tts.vendors.base import (
    ApiRequest,
    ApiResponse,
    Submission,
    Vendor,
    http_error,
    json_body,
    path_segment,
    success_json,
    unwrap_single,
    validate_task_id,
    warn_unknown_status,
)
from airflow_provider_tts.vendors.base import NonEmptyText as NonEmptyText

if TYPE_CHECKING:
    # Annotations only: the status model (pydantic, with its serializers) loads when a status is made,
    # so building an operator, which checks its fields with this vendor's request models, does not load it.
    from airflow_provider_tts.status import Kind, TtsTaskStatus

#: The request models live in their own module, built on first use (see its docstring); importable
#: from here as they always were.
__getattr__ = lazy_names(
    __name__,
    {
        "HttpUrl": "airflow_provider_tts.vendors.revid_fields",
        "SrtTime": "airflow_provider_tts.vendors.revid_fields",
        "Subtitle": "airflow_provider_tts.vendors.revid_fields",
    },
)

_PENDING = frozenset({"processing"})
_SUCCEEDED = frozenset({"completed", "success"})
_FAILED = frozenset({"failed", "error"})
_NOT_FOUND = "not_found"
#: HTTP statuses that may carry a task-state body (the API mirrors the body's ``code``).
_STATE_HTTP_STATUSES = frozenset({200, 202, 404, 500})


def _duration(result: Mapping[str, Any]) -> float | None:
    for key in ("duration", "audio_duration"):
        value = result.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and 0 <= value < float("inf"):
            return float(value)
    return None


class RevidTts(Vendor):
    """RevidAPI's TTS and SRT-to-speech APIs."""

    api = "revid_tts"
    kinds: ClassVar[tuple[Kind, ...]] = ("tts", "srt-to-speech")
    default_api_base_url = "https://api.revidapi.com/paid"
    create_fields_module = "airflow_provider_tts.vendors.revid_fields"
    create_paths: ClassVar[Mapping[str, str]] = {"tts": "text-to-speech", "srt-to-speech": "srt-to-speech/merge"}
    client_reference_field = "id"
    spoken_fields: ClassVar[Mapping[str, str]] = {"tts": "text", "srt-to-speech": "subtitles"}
    #: RevidAPI's text-to-speech page: 10 credits per 1,000 characters (SRT: the cues' spoken text).
    credits_per_1000_characters: ClassVar[Mapping[str, float | None]] = {"tts": 10.0, "srt-to-speech": 10.0}
    #: RevidAPI publishes no limit. 2,000 characters (about two minutes of speech) is a conservative
    #: part: well inside what its status page says usually finishes in 30-60 s, and a failed part
    #: costs little to redo. ``max_part_characters`` on the long-text operator overrides it.
    text_limits: ClassVar[Mapping[str, tuple[int, int]]] = {"tts": (1, 2000)}
    default_status_base_url = "https://tts.revidapi.com/api"

    def status_request(self, kind: Kind, tts_task_id: str) -> ApiRequest:
        return ApiRequest(
            "GET",
            f"{self.settings.status_base_url}/get/{path_segment(tts_task_id)}",
            what=f"status of revid_tts {kind} task {tts_task_id!r}",
        )

    def parse_status(self, kind: Kind, tts_task_id: str, resp: ApiResponse) -> TtsTaskStatus:
        what = f"status of revid_tts {kind} task {tts_task_id!r}"
        if resp.status not in _STATE_HTTP_STATUSES:
            raise http_error(resp, what)
        data = unwrap_single(json_body(resp, what), what)
        is_state = isinstance(data, dict) and isinstance(data.get("status"), str) and data["status"]
        # A non-2xx body is a task state only when it names this task, as every documented one
        # does; a bare {"code": 500, "status": "error"} is the server failing, not the task.
        if not is_state or (resp.status >= 300 and data.get("task_id") != tts_task_id):
            if resp.status >= 300:
                raise http_error(resp, what)
            raise TtsProtocolError(f"{what}: expected an object with a string 'status', got {excerpt(resp.body)}")
        echoed = data.get("task_id")
        if isinstance(echoed, str) and echoed and echoed != tts_task_id:
            raise TtsProtocolError(f"{what}: the response is about task {echoed!r}, not {tts_task_id!r}")
        return self._status_from_body(kind, tts_task_id, data, what)

    def _status_from_body(self, kind: Kind, tts_task_id: str, data: dict[str, Any], what: str) -> TtsTaskStatus:
        status: str = data["status"]
        message = data.get("message") if isinstance(data.get("message"), str) else None
        if status in _SUCCEEDED:
            result = data.get("response") or data.get("result")
            url = result.get("audio_url") if isinstance(result, dict) else None
            if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
                raise TtsProtocolError(
                    f"{what}: {status!r} without an http(s) 'response.audio_url' (or 'result.audio_url'), "
                    f"got {excerpt(repr(data))}"
                )
            assert isinstance(result, dict)
            return self.status(
                kind,
                tts_task_id,
                "succeeded",
                status,
                audio_url=url,
                duration_seconds=_duration(result),
                message=message,
            )
        if status in _FAILED:
            error = data.get("error")
            detail = "; ".join(p for p in (message, error if isinstance(error, str) else None) if p)
            return self.status(
                kind,
                tts_task_id,
                "failed",
                status,
                message=detail or "no reason given",
                retryable=True,
                failure="error",
            )
        if status == _NOT_FOUND:
            return self.status(
                kind,
                tts_task_id,
                "failed",
                status,
                message=f"{message or 'task not found (never created, or expired)'} "
                f"({self.not_found_hint(kind, tts_task_id)})",
                retryable=False,
                failure="not_found",
            )
        if status not in _PENDING:
            warn_unknown_status(self.api, status)
        return self.status(kind, tts_task_id, "pending", status, message=message)

    def not_found_hint(self, kind: Kind, tts_task_id: str) -> str:
        # One status endpoint serves every kind, so a wrong kind cannot be why a task is not found.
        return (
            f"asked for a {kind} task at GET {self.status_request(kind, tts_task_id).url}; RevidAPI serves "
            f"every kind's status there, so check the task id and that connection {self.settings.conn_id!r} "
            "is the account that submitted it"
        )

    def parse_submit(self, kind: Kind, resp: ApiResponse) -> Submission:
        what = f"revid_tts {kind} submit"
        data = unwrap_single(success_json(resp, what), what)
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if not isinstance(task_id, str):
            raise TtsProtocolError(f"{what}: expected an object with a string 'task_id', got {excerpt(resp.body)}")
        validate_task_id(task_id)
        assert isinstance(data, dict)
        # Some responses finish synchronously and already carry the audio: keep it.
        if isinstance(data.get("status"), str) and data["status"] in _SUCCEEDED:
            return Submission(task_id, self._status_from_body(kind, task_id, data, what))
        return Submission(task_id)

    def audio_request(self, status: TtsTaskStatus) -> ApiRequest:
        url = status.audio_url or ""
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            from airflow_provider_tts.transport import safe_url

            raise TtsProtocolError(  # the URL is a signed capability: its query never goes into a message
                f"revid_tts task {status.tts_task_id!r}: refusing audio_url {safe_url(url)!r:.120}; expected http(s)"
            )
        # A storage host, not the API: the key must never go there.
        return ApiRequest("GET", url, what=f"audio of revid_tts task {status.tts_task_id!r}", authenticated=False)

    def probe_request(self) -> ApiRequest:
        # A status poll for an id no task can have: a GET, so no backend, however lenient, can
        # create (and bill) a task from it. The create endpoint is never probed.
        return ApiRequest(
            "GET",
            f"{self.settings.status_base_url}/get/airflow-connection-test",
            what="revid_tts API key check",
        )

    def probe_verdict(self, resp: ApiResponse) -> tuple[bool, str]:
        """Judge the status probe, saying exactly what it proved.

        A 401/403 proves the key is refused. Anything else proves only that the status API is
        reachable: RevidAPI documents the key on status calls as optional "if required by your
        configuration", so a status host may answer without checking it. Only a create call is
        sure to check the key, and a create call may be billed, so the check does not make one.
        """
        ok, message = super().probe_verdict(resp)
        if not ok:
            return ok, message
        return True, (
            f"revid_tts status API at {self.settings.status_base_url} answered HTTP {resp.status} and did not "
            "refuse the API key; RevidAPI may not check keys on status calls, so the key is fully verified "
            "only by the first submit (this check creates no task)"
        )
