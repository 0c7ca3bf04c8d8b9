"""What storing audio returns and how it fails: the result, the error, the overwrite policies.

Plain types with no I/O; every other storage module may import them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from airflow_provider_tts.exceptions import TtsConfigError, TtsError
from airflow_provider_tts.results import stored_file_result

OverwritePolicy = Literal["replace", "skip_if_identical", "fail"]
OVERWRITE_POLICIES: tuple[OverwritePolicy, ...] = ("replace", "skip_if_identical", "fail")


def check_overwrite(overwrite: Any) -> OverwritePolicy:
    """``overwrite`` if it is one of :data:`OVERWRITE_POLICIES`; else a :class:`TtsConfigError` naming them."""
    if overwrite not in OVERWRITE_POLICIES:
        raise TtsConfigError(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}, got {overwrite!r}")
    return overwrite  # type: ignore[no-any-return]


class TtsStorageError(TtsError):
    """Writing to the destination failed (refused write, full disk, missing bucket, size mismatch)."""


@dataclass(frozen=True)
class StoredAudio:
    """What was stored: the file's facts, from which the operators build their result (:meth:`to_xcom`)."""

    uri: str
    size_bytes: int
    sha256: str
    content_type: str
    duration_seconds: float | None
    tts_task_id: str
    written: bool
    #: The object store's own content identity where it gives one for free (S3's ETag from the
    #: completing request, or the HEAD a skipped rewrite made): what the request cache checks later.
    etag: str | None = None

    def to_xcom(self) -> dict[str, Any]:
        """This store as a stored-file result (:func:`airflow_provider_tts.results.stored_file_result`).

        Nothing is known here of the request: ``fingerprint`` and ``credits`` are None,
        ``cached`` False. The operators build their result with the request's facts.
        """
        return stored_file_result(self, uri=self.uri, tts_task_id=self.tts_task_id or None, fingerprint=None,
                                  cached=False)  # fmt: skip
