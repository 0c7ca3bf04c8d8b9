"""Camb.ai: ``/tts`` and ``/text-to-sound`` tasks, polled by task id, fetched by integer run id.

Facts from the vendor docs and the official SDK (see ``shared/spec/vendor-apis.md``): every call
carries ``x-api-key``; statuses are PENDING, SUCCESS (with ``run_id``), TIMEOUT, ERROR (with an
``exception_reason``) and PAYMENT_REQUIRED; results are raw audio bytes whose format the
``Content-Type`` tells (FLAC or WAV), or JSON pointing at a pre-signed URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from airflow_provider_tts.exceptions import TtsProtocolError, excerpt
from airflow_provider_tts.status import FailureKind, Kind, TtsTaskStatus
from airflow_provider_tts.vendors.base import (
    ApiRequest,
    ApiResponse,
    Submission,
    Vendor,
    http_error,
    json_body,
    path_segment,
    validate_fields,
    validate_task_id,
    warn_unknown_status,
)

NonEmptyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

#: ``exception_reason`` values for which a new task with the same input would fail again.
_PERMANENT_REASONS: dict[str, FailureKind] = {
    "HARMFUL_CONTENT_DETECTED": "content_rejected",
    "SOURCE_TOO_LONG": "content_rejected",
}

_PATHS: dict[str, tuple[str, str]] = {
    # kind: (create and status path, result path)
    "tts": ("tts", "tts-result"),
    "text-to-sound": ("text-to-sound", "text-to-sound-result"),
}


class _CambTtsFields(BaseModel):
    """Documented body of ``POST /tts`` (legacy async TTS)."""

    model_config = ConfigDict(extra="forbid")
    text: NonEmptyText = Field(description="the words to speak")
    voice_id: int = Field(description="an integer voice id from Camb's voice list, e.g. 20303")
    language: int = Field(ge=1, description="Camb's integer language id; 1 is English (US)")
    gender: Literal[0, 1, 2, 9] | None = None
    age: int | None = Field(default=None, ge=0, le=150)
    project_name: str | None = None
    project_description: str | None = None
    folder_id: int | None = None


class _CambTextToSoundFields(BaseModel):
    """Documented body of ``POST /text-to-sound``."""

    model_config = ConfigDict(extra="forbid")
    prompt: NonEmptyText = Field(description="a description of the sound, e.g. 'rain on a tin roof'")
    duration: float | None = Field(default=None, gt=0, le=10)
    audio_type: Literal["sound", "music"] | None = None
    project_name: str | None = None
    project_description: str | None = None
    folder_id: int | None = None


_FIELDS: dict[str, type[BaseModel]] = {"tts": _CambTtsFields, "text-to-sound": _CambTextToSoundFields}


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
            return self.status(
                kind,
                tts_task_id,
                "failed",
                "NOT_FOUND",
                message=excerpt(resp.body, 200) or "task not found",
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
        if status == "TIMEOUT":
            return self.status(
                kind,
                tts_task_id,
                "failed",
                status,
                message=message or "processing exceeded Camb.ai's time limit; split the text into smaller parts",
                retryable=False,
                failure="vendor_timeout",
            )
        if status == "PAYMENT_REQUIRED":
            return self.status(
                kind,
                tts_task_id,
                "failed",
                status,
                message=message or "the Camb.ai account needs more credits",
                retryable=False,
                failure="payment_required",
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

    def submit_request(self, kind: Kind, fields: Mapping[str, Any]) -> ApiRequest:
        what = f"camb_ai {kind} submit"
        body = validate_fields(_FIELDS[kind], fields, what)
        return ApiRequest(
            "POST", f"{self.settings.api_base_url}/{_PATHS[kind][0]}", what=what, json=body, idempotent=False
        )

    def parse_submit(self, kind: Kind, resp: ApiResponse) -> Submission:
        what = f"camb_ai {kind} submit"
        if not 200 <= resp.status < 300:
            raise http_error(resp, what)
        data = json_body(resp, what)
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

    def probe_request(self) -> ApiRequest:
        # A status call for an id that cannot exist: 401/403 for a bad key, 404 for a good one.
        return ApiRequest(
            "GET",
            f"{self.settings.api_base_url}/tts/airflow-connection-test",
            what="camb_ai API key check",
        )
