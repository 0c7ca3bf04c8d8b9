"""The one normalised view of a remote task's status, whichever vendor it came from.

Vendors disagree on spelling (``SUCCESS`` vs ``completed``), on where the audio is (a Camb
``run_id`` to fetch a result with vs a Revid ``audio_url``) and on how failures are told. Everything
downstream of the vendor parsers (trigger, sensor, operators, XCom) sees only this model, so none of
it needs to know which vendor it is talking to.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_serializer, model_validator

from airflow_provider_tts.constants import KINDS as KINDS
from airflow_provider_tts.constants import Kind as Kind

Api = Literal["camb_ai", "revid_tts"]
State = Literal["pending", "succeeded", "failed"]

#: Why a task failed, in vendor-neutral terms, so callers can decide without parsing vendor strings.
FailureKind = Literal["not_found", "payment_required", "vendor_timeout", "content_rejected", "error"]


#: Query parameters that carry a pre-signed URL's credentials (S3 SigV2/SigV4, GCS, Azure SAS,
#: CloudFront, Alibaba OSS, the emulator). Prefixes end in "-"; the rest are exact, lower-cased names.
_SIGNATURE_PREFIXES = ("x-amz-", "x-goog-", "x-emu-", "x-oss-")
_SIGNATURE_NAMES = frozenset(
    {"signature", "sig", "expires", "policy", "key-pair-id", "awsaccesskeyid", "googleaccessid", "token",
     "security-token", "ossaccesskeyid", "se", "sp", "sv", "sr", "st", "spr", "skoid", "sktid", "skt", "ske",
     "sks", "skv"}
)  # fmt: skip


def url_without_signature(url: str) -> str:
    """``url`` without the query parameters that sign it (see ``_SIGNATURE_NAMES``) and its fragment.

    Other parameters stay: they may select the object. A URL that was signed with a scheme not
    listed keeps its signature; it still expires, and the download path copes with that.
    """
    parts = urlsplit(url)
    kept = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if not (name.lower().startswith(_SIGNATURE_PREFIXES) or name.lower() in _SIGNATURE_NAMES)
    ]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), ""))


class TtsTaskStatus(BaseModel):
    """Status of one remote text-to-speech task.

    :param api: which vendor API the task lives on.
    :param kind: what the task is (``tts``, ``text-to-sound``, ``srt-to-speech``).
    :param tts_task_id: the vendor's task id.
    :param state: ``pending``, ``succeeded`` or ``failed``; the only field a waiter needs.
    :param vendor_status: the vendor's raw status string, for logs and error messages.
    :param run_id: Camb.ai's id of the finished run, used to fetch the audio.
    :param audio_url: RevidAPI's URL of the finished audio (a storage host, never sent the key).
        A pre-signed URL's signature is a credential until it expires, so every dump of the model
        (:meth:`to_xcom`, hence XCom and trigger events) and its repr leave the signing parameters
        out; the full URL lives only in the object the vendor parser built, in the process that polled.
    :param duration_seconds: audio length when the vendor reports it.
    :param message: the vendor's explanation, mostly for failures.
    :param retryable: for failures, whether a new attempt (a new task) may succeed.
    :param failure: for failures, the vendor-neutral reason.
    """

    # defer_build: the validator is built on first use, not when a DAG file imports an operator.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    api: Api
    kind: Kind
    tts_task_id: str = Field(min_length=1)
    state: State
    vendor_status: str
    run_id: int | None = None
    audio_url: str | None = None
    duration_seconds: float | None = Field(default=None, ge=0)
    message: str | None = None
    retryable: bool | None = None
    failure: FailureKind | None = None

    # True only on an object a vendor parser built from an answer in this process: its audio_url
    # is complete. A status rebuilt from XCom or an event is not fresh, and the hook polls again
    # for a signed URL before downloading (which also replaces a URL that expired while waiting).
    _fresh: bool = PrivateAttr(default=False)

    @field_serializer("audio_url")
    def _audio_url_without_query(self, value: str | None) -> str | None:
        return None if value is None else url_without_signature(value)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, url_without_signature(value) if name == "audio_url" and value else value

    @property
    def fresh(self) -> bool:
        """Whether this object came from a vendor answer in this process (its audio URL complete)."""
        return self._fresh

    def mark_fresh(self) -> TtsTaskStatus:
        """Mark as parsed from a vendor answer in this process (the vendor units call this)."""
        self._fresh = True
        return self

    @model_validator(mode="after")
    def _consistent(self) -> TtsTaskStatus:
        # A success that gives no way to fetch the audio would be a silent success downstream.
        if self.state == "succeeded" and self.run_id is None and self.audio_url is None:
            raise ValueError("a succeeded status needs a run_id or an audio_url")
        if self.state == "failed" and self.retryable is None:
            raise ValueError("a failed status must say whether it is retryable")
        return self

    def is_terminal(self) -> bool:
        """True once the task will not change any more."""
        return self.state != "pending"

    def to_xcom(self) -> dict[str, Any]:
        """A JSON-able dict (what sensors return and triggers put in events)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_xcom(cls, data: Any) -> TtsTaskStatus:
        """Rebuild a status from :meth:`to_xcom` output; raises ``pydantic.ValidationError`` if malformed."""
        return cls.model_validate(data)
