"""Camb.ai: ``/tts`` and ``/text-to-sound`` tasks, polled by task id, fetched by integer run id.

Facts from the vendor docs and the official SDK (see ``shared/spec/vendor-apis.md``): every call
carries ``x-api-key``; statuses are PENDING, SUCCESS (with ``run_id``), TIMEOUT, ERROR (with an
``exception_reason``) and PAYMENT_REQUIRED; results are raw audio bytes whose format the
``Content-Type`` tells (FLAC or WAV), or JSON pointing at a pre-signed URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

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
    validate_fields,
    validate_task_id,
    warn_unknown_status,
)
from airflow_provider_tts.vendors.base import NonEmptyText as NonEmptyText

if TYPE_CHECKING:
    # Annotations only: the status model (pydantic, with its serializers) loads when a status is made,
    # so building an operator, which checks its fields with this vendor's request models, does not load it.
    from airflow_provider_tts.status import FailureKind, Kind, TtsTaskStatus

#: The request models live in their own module, built on first use (see its docstring); importable
#: from here as they always were.
__getattr__ = lazy_names(__name__, {"CambTtsStreamFields": "airflow_provider_tts.vendors.camb_fields"})

#: ``exception_reason`` values for which a new task with the same input would fail again.
_PERMANENT_REASONS: dict[str, FailureKind] = {
    "HARMFUL_CONTENT_DETECTED": "content_rejected",
    "SOURCE_TOO_LONG": "content_rejected",
}
#: Statuses that fail a task for good: the failure kind, and the message when Camb.ai gives none.
_FINAL_STATUSES: dict[str, tuple[FailureKind, str]] = {
    "TIMEOUT": ("vendor_timeout", "processing exceeded Camb.ai's time limit; split the text into smaller parts"),
    "PAYMENT_REQUIRED": ("payment_required", "the Camb.ai account needs more credits"),
}

_PATHS: dict[str, tuple[str, str]] = {
    # kind: (create and status path, result path)
    "tts": ("tts", "tts-result"),
    "text-to-sound": ("text-to-sound", "text-to-sound-result"),
}


# ------------------------------------------------------------------------------------ /tts-stream

#: Output formats of ``/tts-stream`` (the SDK's ``OutputFormat``) and the media type each answers with.
STREAM_FORMATS: dict[str, tuple[str, str]] = {
    # format: (media type the vendor answers with, file extension)
    "wav": ("audio/wav", ".wav"),
    "flac": ("audio/flac", ".flac"),
    "mp3": ("audio/mpeg", ".mp3"),
    "adts": ("audio/aac", ".aac"),
    "pcm_s16le": ("audio/pcm", ".pcm"),
    "pcm_s16be": ("audio/pcm", ".pcm"),
    "pcm_s32le": ("audio/pcm", ".pcm"),
    "pcm_s32be": ("audio/pcm", ".pcm"),
    "pcm_f32le": ("audio/pcm", ".pcm"),
    "pcm_f32be": ("audio/pcm", ".pcm"),
}
#: Speech models the SDK names. The SDK's type also lets any string through, so a new model is not
#: refused here; only the shape (a lower-case model name) is checked.
STREAM_SPEECH_MODELS: tuple[str, ...] = (
    "mars-pro",
    "mars-flash",
    "mars-instruct",
    "mars-8.1-pro-beta",
    "mars-8.1-flash-beta",
)
#: A stream's ``language`` is a BCP-47 tag as Camb writes them (``en-us``, ``pt-br``): a 2-3 letter
#: language and optional subtags, in Camb's list (:mod:`.camb_languages`), checked by :mod:`.camb_fields`.
#: Format used when a request names none (the SDK documents mp3 as the vendor's default).
StreamFormat = Literal[
    "wav", "flac", "mp3", "adts", "pcm_s16le", "pcm_s16be", "pcm_s32le", "pcm_s32be", "pcm_f32le", "pcm_f32be"
]
DEFAULT_STREAM_FORMAT: StreamFormat = "mp3"


def validate_stream_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The validated ``/tts-stream`` body (defaults filled in, so equal requests fingerprint alike)."""
    from airflow_provider_tts.vendors.camb_fields import CambTtsStreamFields

    return validate_fields(CambTtsStreamFields, fields, "camb_ai tts-stream request")


def _text(value: Any) -> str | None:
    """Camb's ``message`` may be a string, an object or null."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else excerpt(repr(value))


class CambAi(Vendor):
    """Camb.ai's asynchronous TTS and text-to-sound APIs."""

    api = "camb_ai"
    kinds: ClassVar[tuple[Kind, ...]] = ("tts", "text-to-sound")
    default_api_base_url = "https://client.camb.ai/apis"
    create_fields_module = "airflow_provider_tts.vendors.camb_fields"
    create_paths: ClassVar[Mapping[str, str]] = {kind: paths[0] for kind, paths in _PATHS.items()}
    spoken_fields: ClassVar[Mapping[str, str]] = {"tts": "text", "text-to-sound": "prompt", "tts-stream": "text"}
    #: Camb.ai publishes no price per character; ``/tts-stream`` answers with ``X-Credits-Required``.
    credits_per_1000_characters: ClassVar[Mapping[str, float | None]] = {
        "tts": None, "text-to-sound": None, "tts-stream": None,
    }  # fmt: skip
    #: ``/tts-stream``: 3-3,000 characters, as documented. ``/tts`` documents no limit but ends long
    #: texts in ``TIMEOUT`` and tells to split them; 3,000 is the only size Camb documents for one
    #: synthesis (its recommended endpoint's), so a ``/tts`` part stays within what it speaks at once.
    text_limits: ClassVar[Mapping[str, tuple[int, int]]] = {"tts": (1, 3000), "tts-stream": (3, 3000)}

    def status_request(self, kind: Kind, tts_task_id: str) -> ApiRequest:
        path = _PATHS[kind][0]
        return ApiRequest(
            "GET",
            f"{self.settings.api_base_url}/{path}/{path_segment(tts_task_id)}",
            what=f"status of camb_ai {kind} task {tts_task_id!r}",
        )

    def parse_status(self, kind: Kind, tts_task_id: str, resp: ApiResponse) -> TtsTaskStatus:
        what = f"status of camb_ai {kind} task {tts_task_id!r}"
        if resp.status == 404:
            # Undocumented by Camb; a 404 for a task id means there is no such task to wait for.
            from airflow_provider_tts.transport import scrub  # the answer is quoted, never a URL's query

            return self.status(
                kind,
                tts_task_id,
                "failed",
                "NOT_FOUND",
                message=f"{scrub(excerpt(resp.body, 200)) or 'task not found'} "
                f"({self.not_found_hint(kind, tts_task_id)})",
                retryable=False,
                failure="not_found",
            )
        if resp.status != 200:
            raise http_error(resp, what)
        data = json_body(resp, what)
        status = data.get("status") if isinstance(data, dict) else None
        if not isinstance(status, str) or not status:
            raise TtsProtocolError(f"{what}: expected an object with a string 'status', got {excerpt(resp.body)}")
        reason = data.get("exception_reason")
        reason = reason if isinstance(reason, str) and reason else None
        message = _text(data.get("message"))
        if status == "PENDING":
            return self.status(kind, tts_task_id, "pending", status, message=message)
        if status == "SUCCESS":
            run_id = data.get("run_id")
            if isinstance(run_id, str) and run_id.isdigit():
                run_id = int(run_id)
            if not isinstance(run_id, int) or isinstance(run_id, bool) or run_id < 0:
                raise TtsProtocolError(f"{what}: SUCCESS without an integer 'run_id', got {excerpt(resp.body)}")
            return self.status(kind, tts_task_id, "succeeded", status, run_id=run_id, message=message)
        if status in _FINAL_STATUSES:
            failure, default = _FINAL_STATUSES[status]
            return self.status(
                kind, tts_task_id, "failed", status, message=message or default, retryable=False, failure=failure
            )
        if status == "ERROR":
            failure = _PERMANENT_REASONS.get(reason or "", "error")
            detail = "; ".join(p for p in (reason, message) if p) or "no reason given"
            return self.status(
                kind,
                tts_task_id,
                "failed",
                status,
                message=detail,
                retryable=failure == "error",
                failure=failure,
            )
        warn_unknown_status(self.api, status)
        return self.status(kind, tts_task_id, "pending", status, message=message)

    def not_found_hint(self, kind: Kind, tts_task_id: str) -> str:
        # Each kind has its own status endpoint: a text-to-sound id asked for as tts is a 404.
        others = "; ".join(
            f"a {other} task is at GET /{_PATHS[other][0]}/{path_segment(tts_task_id)} (kind={other!r})"
            for other in self.kinds
            if other != kind
        )
        return f"{super().not_found_hint(kind, tts_task_id)}; {others}"

    def parse_submit(self, kind: Kind, resp: ApiResponse) -> Submission:
        what = f"camb_ai {kind} submit"
        data = success_json(resp, what)
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if not isinstance(task_id, str):
            raise TtsProtocolError(f"{what}: expected {{'task_id': str}}, got {excerpt(resp.body)}")
        return Submission(validate_task_id(task_id))

    def audio_request(self, status: TtsTaskStatus) -> ApiRequest:
        if status.run_id is None:
            raise TtsProtocolError(f"camb_ai {status.kind} task {status.tts_task_id!r} has no run_id to fetch")
        return ApiRequest(
            "GET",
            f"{self.settings.api_base_url}/{_PATHS[status.kind][1]}/{status.run_id}",
            what=f"audio of camb_ai {status.kind} run {status.run_id}",
            params={"output_type": "raw_bytes"},
        )

    def stream_request(self, fields: Mapping[str, Any]) -> ApiRequest:
        """``POST /tts-stream``: validated before anything is sent; never resent once it may have run.

        Not idempotent: the response body *is* the audio and there is no task id to re-attach to,
        so a resend after the vendor started generating would be charged again.
        """
        return ApiRequest(
            "POST",
            f"{self.settings.api_base_url}/tts-stream",
            what="camb_ai tts-stream",
            json=validate_stream_fields(fields),
            idempotent=False,
        )

    def probe_request(self) -> ApiRequest:
        # A status call for an id that cannot exist: 401/403 for a bad key, 404 for a good one.
        return ApiRequest(
            "GET",
            f"{self.settings.api_base_url}/tts/airflow-connection-test",
            what="camb_ai API key check",
        )
