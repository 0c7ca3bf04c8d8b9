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

import functools
import hashlib
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_tts.compat import bucket_of
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
#: Size of the chunks read from the HTTP response. Each chunk is a new bytes object; at 1 MiB the
#: allocator kept handing their pages back to the OS and faulting fresh ones in (60-90 page faults
#: per MiB on the benchmark machine, where a fault on memory its host reclaimed is expensive),
#: while 256 KiB chunks are reused from the heap (no faults) for a little more per-chunk overhead.
DEFAULT_CHUNK_BYTES = 256 * 1024
#: Multipart part size for object stores: big enough for S3's 5 MiB minimum, small enough that
#: the buffered part keeps memory flat whatever the file size.
UPLOAD_BLOCK_BYTES = 8 * 1024**2
#: Seconds between progress log lines of one download (at most one line per interval).
PROGRESS_LOG_INTERVAL = 5.0
#: Bytes the helper thread may lag behind the download (at least two chunks). Small on purpose:
#: with more chunks in flight the allocator returned and re-faulted their memory (as with 1 MiB chunks).
BEHIND_BYTES = 1024**2
#: Size of each ``write()`` to a local file (curl's size). Bigger writes make the kernel build the
#: page cache from large folios, which on VMs that hand free memory back to their host (free page
#: reporting, balloons) must be faulted in again: on the benchmark machine 1 MiB writes ran at
#: ~350 MB/s and 16 KiB writes at ~2 GB/s (``benchmarks/download.py``).
LOCAL_WRITE_BYTES = 16 * 1024


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

    from airflow_provider_tts.compat import has_fs

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
        _check_scheme(raw, raw.split("://", 1)[0].lower(), has_fs)  # before UPath refuses it less clearly
        try:
            path = ObjectStoragePath(raw, conn_id=dest_conn_id)
        except ValueError as exc:
            raise TtsConfigError(f"destination {raw!r} is not a usable storage URI: {exc}") from None
    _check_scheme(raw, path.protocol if isinstance(path.protocol, str) else path.protocol[0], has_fs)
    return path


def _check_scheme(raw: str, scheme: str, has_fs: Callable[[str], bool]) -> None:
    if not has_fs(scheme):
        raise TtsConfigError(
            f"destination {raw!r}: no filesystem is registered for scheme {scheme!r}; install the provider "
            "that handles it (e.g. apache-airflow-providers-amazon for s3://)"
        )


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


def _is_local(path: ObjectStoragePath) -> bool:
    return path.protocol in ("file", "local", "")


def _sha256_of(path: ObjectStoragePath, chunk_bytes: int) -> str:
    digest = hashlib.sha256()
    # Object stores read ahead a whole block (s3fs: 50 MiB by default); keep it small.
    open_kwargs: dict[str, Any] = {} if _is_local(path) else {"block_size": UPLOAD_BLOCK_BYTES}
    with path.open("rb", **open_kwargs) as src:
        while block := src.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: ObjectStoragePath) -> None:
    """Fail clearly, before any byte is written, when the destination's container does not exist."""
    if _is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    bucket = bucket_of(path)
    try:
        exists = bool(bucket) and path.fs.exists(bucket)
    except Exception as exc:
        raise TtsStorageError(f"cannot reach the destination bucket {path.protocol}://{bucket}: {exc}") from exc
    if not exists:
        raise TtsStorageError(
            f"destination bucket {path.protocol}://{bucket} does not exist (or the connection cannot see it)"
        )


@dataclass
class _Progress:
    """Logs bytes, percent and rate at most every ``every`` seconds, so long downloads show life."""

    total: int | None
    every: float = PROGRESS_LOG_INTERVAL
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
    progress = _Progress(content_length, PROGRESS_LOG_INTERVAL)
    local = _is_local(path)
    if not local:
        _abort_stale_uploads(temp)
    try:
        out = _open_temp(temp, local)
        depth = max(2, BEHIND_BYTES // max(chunk_bytes, 1))
        # Two stages per chunk run side by side (hashlib, socket reads and writes release the GIL):
        # on file:// this thread writes (in small writes, like curl) while a helper thread hashes;
        # on object stores a helper thread uploads (a part upload blocks) while this one hashes.
        foreground: Callable[[bytes], Any]
        if local:
            behind = _Behind(digest.update, depth, "tts-audio-hash")
            foreground = functools.partial(_write_all, out, step=LOCAL_WRITE_BYTES)
        else:
            behind = _Behind(out.write, depth, "tts-audio-upload")
            foreground = digest.update
        try:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TtsProtocolError(f"audio for task {tts_task_id!r} exceeded the {max_bytes}-byte cap")
                if len(header) < 65536:
                    header += chunk[: 65536 - len(header)]
                behind.put(chunk)
                foreground(chunk)
                progress.update(size)
                if on_chunk is not None:
                    on_chunk(size)
            behind.finish()  # every chunk hashed (or uploaded): only now may the digest be read
            if content_length is not None and size != content_length:
                raise TtsProtocolError(
                    f"audio for task {tts_task_id!r}: server announced {content_length} bytes, sent {size}"
                )
        except BaseException:
            behind.abort()
            _abandon(out, local)
            raise
        out.close()
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


def _open_temp(temp: ObjectStoragePath, local: bool) -> Any:
    """The temporary, opened for writing.

    A local temporary is a plain unbuffered OS file: every ``write()`` is one system call of the
    size given (see :data:`LOCAL_WRITE_BYTES`). An object store's is the filesystem's own file
    object, uploading in :data:`UPLOAD_BLOCK_BYTES` parts. Either way not ``ObjectStoragePath.open``,
    which wraps each ``write()`` in a lineage hook for a temporary's name no reader should care
    about (``move()`` records the lineage from the temporary to the destination).
    """
    if local:
        return open(temp.path, "wb", buffering=0)  # closed by store_stream
    return temp.fs.open(temp.path, "wb", block_size=UPLOAD_BLOCK_BYTES)


def _write_all(out: Any, chunk: bytes, step: int) -> None:
    """Write ``chunk`` to ``out`` in writes of at most ``step`` bytes, without copying it."""
    view = memoryview(chunk)
    write = out.write
    for start in range(0, len(view), step):
        piece = view[start : start + step]
        while piece:
            piece = piece[write(piece) :]


class _Behind:
    """Applies ``consume`` to every chunk in a helper thread, at most ``depth`` chunks behind.

    The queue is bounded, so memory stays at a few chunks whatever the file size. Only the helper
    thread calls ``consume`` (and touches what it uses) until :meth:`finish` or :meth:`abort` has
    joined it; its first error is re-raised in the caller's thread by :meth:`put` or :meth:`finish`.
    """

    def __init__(self, consume: Callable[[bytes], Any], depth: int, name: str) -> None:
        self._consume = consume
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consume = self._consume
        while (chunk := self._queue.get()) is not None:
            if self._error is not None or self._stopped:
                continue  # keep draining, so the producer never blocks on a full queue
            try:
                consume(chunk)
            except BaseException as exc:
                self._error = exc

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def finish(self) -> None:
        """Wait until every chunk is consumed; re-raise the helper's error, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop as soon as possible (queued chunks are dropped) and wait for the thread."""
        if not self._thread.is_alive():
            return
        self._stopped = True
        self._queue.put(None)
        self._thread.join()


def _abandon(out: Any, local: bool) -> None:
    """Give up a temporary being written without committing it.

    Closing an object-store file commits it (s3fs completes the multipart upload), which would
    publish a partial temporary only to delete it again. ``discard()`` aborts the upload instead;
    the file object is then marked closed so its finaliser does not try to commit after all.
    A local file is simply closed (and unlinked by the caller).
    """
    try:
        if local:
            out.close()
            return
        discard = getattr(out, "discard", None)
        if callable(discard):
            discard()
        out.closed = True
    except Exception:  # the original error matters more
        log.warning("Could not abandon the temporary upload %s", out, exc_info=True)


def _abort_stale_uploads(temp: ObjectStoragePath) -> None:
    """Abort multipart uploads left on the temporary's key by a killed earlier try (S3 only).

    A worker killed mid-upload leaves an in-progress multipart upload: invisible to readers and
    never at the destination, but its parts are billed until a bucket lifecycle rule removes them.
    The temporary's name is fixed per task instance, so uploads to exactly that key are this task
    instance's own leftovers. Best effort: a failure here is logged, never fatal.
    """
    call_s3 = getattr(temp.fs, "call_s3", None)
    if temp.protocol not in ("s3", "s3a") or not callable(call_s3):
        return
    bucket, _, key = temp.path.partition("/")
    try:
        listing = call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
        for upload in listing.get("Uploads", []):
            if upload.get("Key") == key:
                call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                log.info("Aborted a multipart upload left on %s by an earlier try", temp)
    except Exception:
        log.warning("Could not check %s for multipart uploads left by an earlier try", temp, exc_info=True)


def _discard(temp: ObjectStoragePath) -> None:
    try:
        temp.unlink(missing_ok=True)
    except Exception:  # the original error matters more; a leftover is overwritten next try
        log.warning("Could not remove the temporary %s", temp, exc_info=True)
