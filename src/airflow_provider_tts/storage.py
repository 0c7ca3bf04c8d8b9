"""Stream audio into object storage atomically, in constant memory, through Airflow's ObjectStoragePath.

One mechanism for every fsspec filesystem Airflow knows (``file://``, ``s3://``, ...): the bytes go
into a temporary object beside the destination, are counted and hashed on the way through, and
the temporary is moved into place only once it is complete and verified. A reader of the
destination never sees a partial file; a failed download removes its temporary; a download killed
with the worker leaves a temporary whose name is fixed for that task instance, so the next try
overwrites it and nothing accumulates.

On ``file://`` the move is an atomic ``rename``. On object stores it is a server-side copy and a
delete: the destination object appears whole or not at all, at the cost of one copy.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_tts.exceptions import TtsConfigError, TtsError, TtsProtocolError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

OverwritePolicy = Literal["replace", "skip_if_identical", "fail"]
OVERWRITE_POLICIES: tuple[OverwritePolicy, ...] = ("replace", "skip_if_identical", "fail")

#: File extension for each audio media type the vendors send; anything else is ``.bin``.
EXTENSIONS = {
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
    "audio/ogg": ".ogg",
    "video/mp4": ".mp4",
}
DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_CHUNK_BYTES = 1024**2
#: Multipart part size for object stores: big enough for S3's 5 MiB minimum, small enough that
#: the buffered part keeps memory flat whatever the file size.
UPLOAD_BLOCK_BYTES = 8 * 1024**2


class TtsStorageError(TtsError):
    """Writing to the destination failed (refused write, full disk, missing bucket, size mismatch)."""


@dataclass(frozen=True)
class StoredAudio:
    """What was stored, as the operator returns it (see :meth:`to_xcom`)."""

    uri: str
    size_bytes: int
    sha256: str
    content_type: str
    duration_seconds: float | None
    tts_task_id: str
    written: bool

    def to_xcom(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "duration_seconds": self.duration_seconds,
            "tts_task_id": self.tts_task_id,
        }


def destination_path(destination: Any, dest_conn_id: str | None) -> ObjectStoragePath:
    """Validate a destination (URI string or ObjectStoragePath) before anything is downloaded or written."""
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io.fs import has_fs

    if isinstance(destination, ObjectStoragePath):
        path = destination if dest_conn_id is None else ObjectStoragePath(str(destination), conn_id=dest_conn_id)
        raw = str(destination)
    else:
        if not isinstance(destination, str) or not destination.strip():
            raise TtsConfigError(f"destination rendered to {destination!r}; expected a URI like s3://bucket/key.wav")
        raw = destination.strip()
        if "://" not in raw:
            raise TtsConfigError(
                f"destination {raw!r} has no scheme; expected a URI such as file:///data/audio/ or s3://bucket/audio/"
            )
        path = ObjectStoragePath(raw, conn_id=dest_conn_id)
    scheme = path.protocol if isinstance(path.protocol, str) else path.protocol[0]
    if not has_fs(scheme):
        raise TtsConfigError(
            f"destination {raw!r}: no filesystem is registered for scheme {scheme!r}; install the provider "
            "that handles it (e.g. apache-airflow-providers-amazon for s3://)"
        )
    return path


def is_folder(destination: Any) -> bool:
    """A destination ending in ``/`` names a folder: the file is named after the task."""
    return str(destination).endswith("/")


def extension_for(content_type: str) -> str:
    ext = EXTENSIONS.get(content_type.split(";")[0].strip().lower())
    if ext is None:
        log.warning("Unknown audio content type %r; saving with extension .bin", content_type)
        return ".bin"
    return ext


def audio_duration(header: bytes) -> float | None:
    """Duration from the first bytes of a WAV or FLAC file; None when it cannot be told."""
    try:
        if header[:4] == b"RIFF" and header[8:12] == b"WAVE":
            pos, rate, block_align = 12, 0, 0
            while pos + 8 <= len(header):
                chunk_id, size = header[pos : pos + 4], struct.unpack_from("<I", header, pos + 4)[0]
                if chunk_id == b"fmt " and pos + 24 <= len(header):
                    _, _, rate, _, block_align = struct.unpack_from("<HHIIH", header, pos + 8)
                elif chunk_id == b"data":
                    return size / (rate * block_align) if rate and block_align else None
                pos += 8 + size + (size & 1)
            return None
        if header[:4] == b"fLaC" and len(header) >= 42 and header[4] & 0x7F == 0:
            # STREAMINFO: 20-bit sample rate, 3-bit channels, 5-bit bps, 36-bit total samples.
            bits = int.from_bytes(header[18:26], "big")
            rate = bits >> 44
            total = bits & ((1 << 36) - 1)
            return total / rate if rate and total else None
    except struct.error:
        return None
    return None


def _size(path: ObjectStoragePath) -> int | None:
    try:
        return int(path.stat()["size"])
    except FileNotFoundError:
        return None


def _sha256_of(path: ObjectStoragePath, chunk_bytes: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while block := src.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: ObjectStoragePath) -> None:
    """Fail clearly, before any byte is written, when the destination's container does not exist."""
    if path.protocol in ("file", "local", ""):
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    bucket = path.bucket
    try:
        exists = bool(bucket) and path.fs.exists(bucket)
    except Exception as exc:
        raise TtsStorageError(f"cannot reach the destination bucket {bucket!r} of {path}: {exc}") from exc
    if not exists:
        raise TtsStorageError(f"destination bucket {bucket!r} of {path} does not exist (or is not visible)")


@dataclass
class _Progress:
    """Logs bytes, percent and rate at most every ``every`` seconds, so long downloads show life."""

    total: int | None
    every: float = 5.0
    started: float = 0.0
    last: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9) / 1024**2
        if self.total:
            log.info(
                "Downloaded %d of %d bytes (%.0f%%) at %.1f MiB/s", done, self.total, 100 * done / self.total, rate
            )
        else:
            log.info("Downloaded %d bytes at %.1f MiB/s", done, rate)


def store_stream(
    chunks: Iterable[bytes],
    path: ObjectStoragePath,
    *,
    temp_name: str,
    content_type: str,
    content_length: int | None,
    tts_task_id: str,
    overwrite: OverwritePolicy = "skip_if_identical",
    max_bytes: int = DEFAULT_MAX_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    duration_seconds: float | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> StoredAudio:
    """Stream ``chunks`` into ``path`` atomically; verify length and cap; apply the overwrite policy.

    :param temp_name: file name of the temporary beside ``path``; fixed per task instance so that a
        leftover from a killed try is overwritten, never accumulated.
    """
    if overwrite not in OVERWRITE_POLICIES:
        raise TtsConfigError(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}, got {overwrite!r}")
    if content_length is not None and content_length > max_bytes:
        raise TtsProtocolError(
            f"audio for task {tts_task_id!r} is {content_length} bytes, over the {max_bytes}-byte cap"
        )
    existing = _size(path)
    if existing is not None and overwrite == "fail":
        raise TtsStorageError(f"destination {path} already exists and overwrite='fail'")
    check_writable(path)

    temp = path.parent / temp_name
    digest = hashlib.sha256()
    header = bytearray()
    size = 0
    progress = _Progress(content_length)
    open_kwargs: dict[str, Any] = {} if path.protocol in ("file", "local", "") else {"block_size": UPLOAD_BLOCK_BYTES}
    try:
        with temp.open("wb", **open_kwargs) as out:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TtsProtocolError(f"audio for task {tts_task_id!r} exceeded the {max_bytes}-byte cap")
                if len(header) < 65536:
                    header += chunk[: 65536 - len(header)]
                digest.update(chunk)
                out.write(chunk)
                progress.update(size)
                if on_chunk is not None:
                    on_chunk(size)
        if content_length is not None and size != content_length:
            raise TtsProtocolError(
                f"audio for task {tts_task_id!r}: server announced {content_length} bytes, sent {size}"
            )
        sha256 = digest.hexdigest()
        written = True
        if existing == size and overwrite == "skip_if_identical" and _sha256_of(path, chunk_bytes) == sha256:
            log.info("%s already holds these %d bytes (sha256 %s); not rewriting it", path, size, sha256)
            temp.unlink()
            written = False
        else:
            temp.move(path)
    except BaseException as exc:
        _discard(temp)
        if isinstance(exc, OSError):
            raise TtsStorageError(f"writing {path} failed: {type(exc).__name__}: {exc}") from exc
        raise
    duration = duration_seconds if duration_seconds is not None else audio_duration(bytes(header))
    log.info("Stored %d bytes (sha256 %s, %s) at %s", size, sha256, content_type, path)
    return StoredAudio(str(path), size, sha256, content_type, duration, tts_task_id, written)


def _discard(temp: ObjectStoragePath) -> None:
    try:
        temp.unlink(missing_ok=True)
    except Exception:  # the original error matters more; a leftover is overwritten next try
        log.warning("Could not remove the temporary %s", temp, exc_info=True)
