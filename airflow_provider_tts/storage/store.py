"""Stream audio into its destination: atomic, in constant memory, verified, per the overwrite policy.

:func:`store_stream` counts and hashes the bytes on the way through, checks them against the
announced length and the size cap, and only then makes them visible at the destination (or, under
``skip_if_identical``, leaves an identical object as it is). On any failure nothing new becomes
visible at the destination and what this try started is discarded (its temporary removed, its
upload aborted).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_tts import metrics
from airflow_provider_tts.exceptions import TtsConfigError, TtsProtocolError
from airflow_provider_tts.storage.blobs import BlobWriter, blob_existing
from airflow_provider_tts.storage.content import audio_duration, check_audio_body
from airflow_provider_tts.storage.destinations import check_destination
from airflow_provider_tts.storage.s3 import S3DirectWriter, forget_bucket, s3_call
from airflow_provider_tts.storage.schemes import AZURE_SCHEMES, GCS_SCHEMES, WriteMode, scheme_of, write_mode
from airflow_provider_tts.storage.types import OverwritePolicy, StoredAudio, TtsStorageError, check_overwrite
from airflow_provider_tts.storage.writers import SHA256_METADATA, UPLOAD_BLOCK_BYTES, Existing, TempWriter, Writer

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 * 1024**3
#: Size of the chunks read from the HTTP response. Each chunk is a new bytes object; chunks this
#: size are reused from the heap, where much larger ones are handed back to the OS and faulted in
#: again (see BENCHMARKS.md).
DEFAULT_CHUNK_BYTES = 256 * 1024
#: Seconds between progress log lines of one download (at most one line per interval).
PROGRESS_LOG_INTERVAL = 5.0
#: Bytes the helper thread may lag behind the download (at least two chunks).
BEHIND_BYTES = 1024**2
#: A file announced at or below this size is hashed in the downloading thread: for the 100 KB-1 MB
#: files of a batch, starting and feeding a helper thread cost more than the hashing it overlaps
#: (cProfile, 60 files of 300 KB to moto: about 3 ms a file to start the thread at load 15-20).
INLINE_BYTES = 2 * 1024**2


def check_store_settings(overwrite: Any, max_bytes: Any, chunk_bytes: Any) -> None:
    """Refuse a storing operator's ``overwrite``, ``max_bytes`` or ``chunk_bytes`` when the DAG is parsed."""
    check_overwrite(overwrite)
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise TtsConfigError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    if not isinstance(chunk_bytes, int) or not 4096 <= chunk_bytes <= 64 * 1024**2:
        raise TtsConfigError(f"chunk_bytes must be an integer from 4096 to 64 MiB, got {chunk_bytes!r}")


def _existing(path: ObjectStoragePath, mode: WriteMode) -> Existing | None:
    """The destination's current size (and identity where cheap): one HEAD on object stores.

    Raises :class:`TtsStorageError` when the destination is a directory: nothing may be moved onto it.
    """
    if mode == "rename":
        try:
            stat = os.stat(path.path)
        except FileNotFoundError:
            return None
        if not os.path.isfile(path.path):
            raise TtsStorageError(f"destination {path} is a folder (or not a regular file); refusing to write onto it")
        return Existing(stat.st_size)
    s3 = s3_call(path)
    if s3 is not None:
        bucket, _, key = path.path.partition("/")
        try:
            head = s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return Existing(int(head["ContentLength"]), meta.get(SHA256_METADATA), head.get("ETag"))
    if scheme_of(path) in GCS_SCHEMES | AZURE_SCHEMES:
        return blob_existing(path)
    try:
        info = path.fs.info(path.path)
    except FileNotFoundError:
        return None
    if info.get("type") == "directory":
        raise TtsStorageError(f"destination {path} is a folder; refusing to write onto it")
    return Existing(int(info["size"]))


def _sha256_of(path: ObjectStoragePath, chunk_bytes: int) -> str:
    """Hash what is at ``path``: a local read for ``rename``; a download only for ``copy`` schemes."""
    digest = hashlib.sha256()
    if write_mode(path) == "rename":
        with open(path.path, "rb") as src:
            while block := src.read(chunk_bytes):
                digest.update(block)
        return digest.hexdigest()
    with path.fs.open(path.path, "rb", block_size=UPLOAD_BLOCK_BYTES) as src:
        while block := src.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _open_writer(
    path: ObjectStoragePath, mode: WriteMode, temp_name: str, content_type: str, existing: Existing | None, size: int
) -> Writer:
    if mode != "direct":
        return TempWriter(path, temp_name, mode)
    s3 = s3_call(path)
    if s3 is not None:
        # The ETag is worth computing only if an object of the same size could be these very bytes.
        want_etag = existing is not None and existing.sha256 is None and size in (existing.size, -1)
        return S3DirectWriter(path, s3, content_type, want_etag)
    if scheme_of(path) in GCS_SCHEMES | AZURE_SCHEMES:
        return BlobWriter(path, content_type)
    return TempWriter(path, temp_name, "copy")  # a direct scheme on a filesystem of unknown kind


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


def peek(chunks: Iterable[bytes], want: int = 4096) -> tuple[bytes, Iterator[bytes]]:
    """The first ``want`` bytes of a chunk stream (fewer if it is shorter), and the whole stream again."""
    it = iter(chunks)
    taken: list[bytes] = []
    got = 0
    for chunk in it:
        taken.append(chunk)
        got += len(chunk)
        if got >= want:
            break

    def again() -> Iterator[bytes]:
        yield from taken
        yield from it

    return b"".join(taken)[:want], again()


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
    checked: bool = False,
) -> StoredAudio:
    """Stream ``chunks`` into ``path`` atomically; verify length and cap; apply the overwrite policy.

    What each policy does when the destination exists (one metadata request finds out: a HEAD on
    object stores, ``stat`` on a local disk; ``replace`` on an object store asks nothing, the write
    is its only request):

    * ``replace``: the new bytes replace it, whatever they are.
    * ``skip_if_identical``: the new bytes are streamed and hashed first; if their size and sha256
      equal the existing object's (from its metadata on object stores, its bytes on a local disk)
      nothing is written and the existing object stays as it is; **if they differ, the new bytes
      replace it** (a warning names both digests): the policy avoids rewriting, it never keeps
      stale audio.
    * ``fail``: a :class:`TtsStorageError` before anything is written.

    :param temp_name: file name of the temporary beside ``path`` (rename and copy modes); fixed per
        task instance so that a leftover from a killed try is overwritten, never accumulated.
    :param checked: the caller already ran :func:`check_destination` on ``path`` (saves a request).
    """
    check_overwrite(overwrite)
    if content_length is not None and content_length > max_bytes:
        raise TtsProtocolError(
            f"audio for task {tts_task_id!r} is {content_length} bytes, over the {max_bytes}-byte cap"
        )
    mode = write_mode(path)
    try:
        if not checked and check_destination(path, folder_hint=False):
            raise TtsStorageError(f"destination {path} is a folder; refusing to write onto it")
        # ``replace`` on an object store (S3, GCS, Azure) needs nothing from the object already
        # there: no directory to refuse (a prefix at the name was refused by check_destination) and
        # the new bytes replace whatever is there, atomically. So no HEAD: the write is the file's
        # only request.
        # ``skip_if_identical`` for a small file on S3: a nightly batch writes mostly new names, so
        # the write goes first, as a PutObject only if nothing is there (one request in all); only
        # when S3 refuses it (something is there) is the object's HEAD asked, and the policy applied.
        absent_first = (
            overwrite == "skip_if_identical" and mode == "direct" and content_length is not None
            and content_length <= UPLOAD_BLOCK_BYTES and s3_call(path) is not None
        )  # fmt: skip
        asks_nothing = (overwrite == "replace" and mode == "direct") or absent_first
        existing = None if asks_nothing else _existing(path, mode)
    except OSError as exc:
        raise TtsStorageError(f"checking {path} failed: {type(exc).__name__}: {exc}") from exc
    if existing is not None and overwrite == "fail":
        raise TtsStorageError(f"destination {path} already exists and overwrite='fail'")
    head, chunks = peek(chunks)
    check_audio_body(content_type, head, what=f"audio for task {tts_task_id!r}")  # before anything is written

    digest = hashlib.sha256()
    header = bytearray()
    size = 0
    progress = _Progress(content_length, PROGRESS_LOG_INTERVAL)
    expected = content_length if content_length is not None else -1
    writer: Writer | None = None
    try:
        writer = _open_writer(path, mode, temp_name, content_type, existing, expected)
        if absent_first and isinstance(writer, S3DirectWriter):
            writer.only_if_absent = True
        depth = max(2, BEHIND_BYTES // max(chunk_bytes, 1))
        # Two stages per chunk run side by side (hashlib, socket reads and writes release the GIL):
        # where a write returns at once (a local file, in small writes like curl; an S3 part being
        # filled, uploaded by the writer's own pool) this thread reads and writes while a helper
        # thread hashes; elsewhere a helper thread writes (an upload blocks) while this one hashes.
        foreground: Callable[[bytes], Any]
        behind: _Behind | _Inline
        if content_length is not None and content_length <= INLINE_BYTES:
            # A small file: hashing it here costs less than starting and feeding a helper thread.
            behind, foreground = _Inline(digest.update), writer.write
        elif writer.writes_at_once:
            behind = _Behind(digest.update, depth, "tts-audio-hash")
            foreground = writer.write
        else:
            behind = _Behind(writer.write, depth, "tts-audio-upload")
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
        except BaseException:
            behind.abort()
            raise
        if content_length is not None and size != content_length:
            raise TtsProtocolError(
                f"audio for task {tts_task_id!r}: server announced {content_length} bytes, sent {size}"
            )
        writer.finish()
        sha256 = digest.hexdigest()
        written = True
        etag: str | None = None
        if existing is not None and existing.size == size and overwrite == "skip_if_identical":
            same = writer.same_as(existing, sha256) if mode == "direct" else _sha256_of(path, chunk_bytes) == sha256
            if same:
                log.info("%s already holds these %d bytes (sha256 %s); not rewriting it", path, size, sha256)
                written = False
        if written:
            if existing is not None and overwrite == "skip_if_identical":
                log.warning(
                    "%s held other bytes (%d bytes, sha256 %s); replacing them with %d bytes (sha256 %s)",
                    path, existing.size, existing.sha256 or "not recorded", size, sha256,
                )  # fmt: skip
            written, existing = _commit(writer, path, mode, sha256, size, existing, absent_first)
            etag = getattr(writer, "etag", None) if written else (existing.etag if existing else None)
            if not written:
                writer.abandon()
            writer = None
            if written:
                _verify(path, mode, size)
        else:
            writer.abandon()
            writer = None
            etag = existing.etag if existing is not None else None
    except BaseException as exc:
        if writer is not None:
            writer.abandon()
        if isinstance(exc, FileNotFoundError):
            forget_bucket(path)  # perhaps deleted since it was checked: the next file asks again
        if isinstance(exc, OSError):
            raise TtsStorageError(f"writing {path} failed: {type(exc).__name__}: {exc}") from exc
        raise
    duration = duration_seconds if duration_seconds is not None else audio_duration(bytes(header))
    log.info("Stored %d bytes (sha256 %s, %s) at %s", size, sha256, content_type, path)
    metrics.stored(scheme_of(path), size, written=written)
    return StoredAudio(str(path), size, sha256, content_type, duration, tts_task_id, written, etag)


def _commit(
    writer: Writer,
    path: ObjectStoragePath,
    mode: WriteMode,
    sha256: str,
    size: int,
    existing: Existing | None,
    absent_first: bool,
) -> tuple[bool, Existing | None]:
    """Commit ``writer``: whether it was written, and what was there.

    A write sent only if nothing is there (``absent_first``) that S3 refused because something is:
    look at it (one HEAD) and apply ``skip_if_identical``, leaving identical bytes as they are.
    """
    try:
        writer.commit(sha256, size)
        return True, existing
    except FileExistsError:
        if not absent_first:
            raise
    existing = _existing(path, mode)
    if existing is not None and existing.size == size and writer.same_as(existing, sha256):
        log.info("%s already holds these %d bytes (sha256 %s); not rewriting it", path, size, sha256)
        return False, existing
    if existing is not None:
        log.warning(
            "%s held other bytes (%d bytes, sha256 %s); replacing them with %d bytes (sha256 %s)",
            path, existing.size, existing.sha256 or "not recorded", size, sha256,
        )  # fmt: skip
    if isinstance(writer, S3DirectWriter):
        writer.only_if_absent = False
    writer.commit(sha256, size)
    return True, existing


def _verify(path: ObjectStoragePath, mode: WriteMode, size: int) -> None:
    """Check that the destination holds a file of ``size`` bytes before success is reported.

    On a local disk and on ``copy`` schemes a ``stat``. On ``direct`` object stores the store's own
    answer to the completing request (``PutObject``, ``CompleteMultipartUpload``) is the check: it
    is given only once the object exists with exactly the bytes sent, and a further HEAD would add a
    request to every file for no new information.
    """
    if mode == "direct":
        return
    try:
        found = os.stat(path.path).st_size if mode == "rename" else int(path.fs.info(path.path)["size"])
    except FileNotFoundError:
        found = None
    if found != size:
        raise TtsStorageError(f"after writing {size} bytes, {path} holds {found if found is not None else 'nothing'}")


class _Inline:
    """:class:`_Behind`'s interface without the thread: ``consume`` runs at once, in the caller's thread."""

    def __init__(self, consume: Callable[[bytes], Any]) -> None:
        self.put = consume

    def finish(self) -> None:
        """Nothing is pending."""

    def abort(self) -> None:
        """Nothing is running."""


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
