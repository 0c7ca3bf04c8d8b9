"""S3 through a plain boto3 client: the per-connection clients, the direct writer and stale uploads.

:func:`s3_call` gives the S3 API of a path's connection (the Amazon provider's ``S3Hook`` client,
or s3fs's own ``call_s3`` where the hook's client would talk to S3 differently), with S3's
refusals as :class:`OSError` subclasses. :class:`S3DirectWriter` writes the destination key
itself, as one ``PutObject`` or one multipart upload that is completed only on commit and aborted
otherwise; :func:`abort_stale_uploads` aborts what a killed earlier try left open.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_tts.compat import conn_id_of
from airflow_provider_tts.storage.schemes import S3_SCHEMES, scheme_of
from airflow_provider_tts.storage.writers import SHA256_METADATA, UPLOAD_BLOCK_BYTES, Existing, Writer

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

#: S3: parts of one multipart upload sent at once. One part at a time leaves the link idle while a
#: part is signed, checksummed and acknowledged; a few keep it busy. With :data:`UPLOAD_BLOCK_BYTES`
#: this bounds a large upload's buffers to ``(PARTS_IN_FLIGHT + 1) * UPLOAD_BLOCK_BYTES``.
PARTS_IN_FLIGHT = 3

#: An S3 API call: ``call("put_object", Bucket=..., ...)`` returns the parsed response; S3's errors
#: arrive as :class:`OSError` subclasses (``FileNotFoundError`` for a missing key or bucket,
#: ``PermissionError`` for a refusal), whichever client made the call.
_S3Call = Callable[..., dict[str, Any]]

#: One boto3 S3 client per Airflow connection id (``None``: the default credential chain), built
#: once per process: a client takes longer to build than a small file takes to upload, and boto3
#: clients are thread-safe (the batch operator stores from several threads). Like Airflow's own
#: filesystem cache (one per scheme and connection id), it lives as long as the process.
_CLIENTS: dict[str | None, Any] = {}
_CLIENTS_LOCK = threading.Lock()
#: ``(connection id, bucket)`` pairs this process has seen exist (``scheme://bucket`` for stores
#: other than S3, whose bucket names live in other namespaces). Knowing a bucket exists saves the
#: check's request for every further file into a folder of it; a bucket deleted since then makes the
#: write itself fail (nothing becomes visible) and is forgotten here (see :func:`forget_bucket`).
KNOWN_BUCKETS: set[tuple[str | None, str]] = set()
#: ``(region, endpoint URL)`` of each connection whose client was built here, read from the same
#: ``S3Hook`` configuration: the "Stored audio" link needs exactly these, and reading the connection
#: again for it cost a connection lookup per stored file (about a tenth of a small file's CPU time).
_CONSOLE_FACTS: dict[str | None, tuple[str | None, str | None]] = {}


def s3_call(path: ObjectStoragePath) -> _S3Call | None:
    """The S3 API of ``path``'s connection, or None when ``path`` is not on an s3fs filesystem.

    The calls go through a plain boto3 client built by the Amazon provider's ``S3Hook`` from the
    same connection Airflow's s3fs filesystem is built from (same credentials, endpoint and botocore
    config): s3fs would run every call through its event-loop thread, a synchronous bridge that costs
    more CPU per multipart part than the upload itself and serialises parts. Where the filesystem
    has settings the hook's client would not reproduce (a custom request signer, anonymous access,
    another endpoint), s3fs's own ``call_s3`` is used instead.
    """
    fs = path.fs
    call_s3 = getattr(fs, "call_s3", None)
    if scheme_of(path) not in S3_SCHEMES or not callable(call_s3):
        return None
    conn_id = conn_id_of(path)
    with _CLIENTS_LOCK:
        if conn_id not in _CLIENTS:
            _CLIENTS[conn_id] = _hook_client(fs, conn_id)
        client = _CLIENTS[conn_id]
    if client is None:
        return cast("_S3Call", call_s3)
    return functools.partial(_boto_call, client)


def _hook_client(fs: Any, conn_id: str | None) -> Any:
    """The ``S3Hook`` client of ``conn_id`` when it talks to S3 exactly as ``fs`` does; else None."""
    try:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    except ImportError:  # an s3fs filesystem registered without the Amazon provider
        return None
    hook = S3Hook(aws_conn_id=conn_id)
    endpoint = hook.conn_config.get_service_endpoint_url(service_name="s3")
    _CONSOLE_FACTS[conn_id] = (hook.conn_config.region_name or None, endpoint or None)
    if hook.service_config.get("signer") or getattr(fs, "anon", False) or getattr(fs, "endpoint_url", None) != endpoint:
        return None
    return hook.get_conn()


def known_console_facts(conn_id: str | None) -> tuple[str | None, str | None] | None:
    """``(region, endpoint URL)`` of ``conn_id`` if this process built its S3 client already, else None."""
    with _CLIENTS_LOCK:
        return _CONSOLE_FACTS.get(conn_id)


def _boto_call(client: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
    """Call ``client.<operation>``; S3's refusals become the OSError subclasses s3fs would raise."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return cast("dict[str, Any]", getattr(client, operation)(**kwargs))
    except ClientError as exc:
        from s3fs.errors import translate_boto_error

        raise translate_boto_error(exc) from exc
    except BotoCoreError as exc:  # no answer at all (connection refused, timeout, bad credentials)
        raise OSError(f"{type(exc).__name__}: {exc}") from exc


def precondition_failed(exc: BaseException) -> bool:
    """An S3 answer saying the object exists (412), or that a concurrent create is in flight (409)."""
    cause = exc.__cause__
    code = str(getattr(cause, "response", {}).get("Error", {}).get("Code", "")) if cause is not None else ""
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409") or "PreconditionFailed" in str(
        exc
    )


def forget_bucket(path: ObjectStoragePath) -> None:
    """Ask again whether ``path``'s bucket exists, next time (it was perhaps deleted since)."""
    bucket = path.path.partition("/")[0]
    KNOWN_BUCKETS.discard((conn_id_of(path), bucket))
    KNOWN_BUCKETS.discard((conn_id_of(path), f"{scheme_of(path)}://{bucket}"))


#: What a part's upload returns: its entry for ``CompleteMultipartUpload``, its MD5 (when the ETag
#: is wanted) and its buffer, free again.
_PartDone = tuple[dict[str, Any], bytes | None, bytearray]


class S3DirectWriter(Writer):
    """``direct`` on S3: the destination key itself, one ``PutObject`` or one multipart upload.

    Below :data:`UPLOAD_BLOCK_BYTES` the bytes are held until the end and sent as one ``PutObject``
    carrying their sha256 as object metadata (so ``skip_if_identical`` later costs one HEAD). Above
    it a multipart upload is created at the first full part; parts are uploaded as they fill, up to
    :data:`PARTS_IN_FLIGHT` at once on a small thread pool of this writer (a part's upload is mostly
    waiting for the network and the store, and its checksums release the GIL), and the upload is
    completed only by :meth:`commit`, aborted by :meth:`abandon` once no part is in flight any more
    (a part still arriving after the abort could otherwise outlive it). A multipart object's sha256
    is not known when the upload is created (when metadata must be given), so its identity for
    ``skip_if_identical`` is its ETag (an MD5 over the parts), computed while uploading only when an
    object of the same size is already there.

    Memory: at most ``PARTS_IN_FLIGHT`` parts in flight plus the one filling, whatever the file
    size. A part's buffer is reused for a later part once uploaded, so a large file does not make
    the process allocate (and fault in) fresh memory for every part; chunks are copied into it once.
    """

    writes_at_once = True  # a copy into the part being filled; the pool does the network

    def __init__(self, path: ObjectStoragePath, s3: _S3Call, content_type: str, want_etag: bool) -> None:
        self.path = path
        self.s3 = s3
        self.bucket, _, self.key = path.path.partition("/")
        self.content_type = content_type or "application/octet-stream"
        # The part being filled: ``filled`` bytes of ``buffer`` are this part's. A first buffer grows
        # as bytes arrive (a small file never holds more than its size); a reused one is full-sized.
        self.buffer = bytearray()
        self.filled = 0
        self.spare: list[bytearray] = []
        self.upload_id: str | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.in_flight: collections.deque[Future[_PartDone]] = collections.deque()
        self.parts: list[dict[str, Any]] = []
        self.md5s: list[bytes] | None = [] if want_etag else None

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self.filled == UPLOAD_BLOCK_BYTES:  # full and more bytes follow: not the last part
                self._send_part()
            n = min(len(view), UPLOAD_BLOCK_BYTES - self.filled)
            if self.filled + n <= len(self.buffer):
                self.buffer[self.filled : self.filled + n] = view[:n]
            else:
                self.buffer += view[:n]
            self.filled += n
            view = view[n:]

    def _send_part(self) -> None:
        """Hand the filled buffer to the pool (waiting while ``PARTS_IN_FLIGHT`` are in flight)."""
        body = self.buffer
        del body[self.filled :]  # the last part may be short; a shrink, not a copy
        if self.upload_id is None:
            created = self.s3(
                "create_multipart_upload", Bucket=self.bucket, Key=self.key, ContentType=self.content_type
            )
            self.upload_id = str(created["UploadId"])
            self.pool = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="tts-s3-part")
        assert self.pool is not None
        while self.in_flight and (len(self.in_flight) >= PARTS_IN_FLIGHT or self.in_flight[0].done()):
            self._collect()  # oldest first, so parts are listed in order; raises a part's error
        number = len(self.parts) + len(self.in_flight) + 1
        self.in_flight.append(self.pool.submit(self._upload_part, self.upload_id, number, body))
        self.buffer = self.spare.pop() if self.spare else bytearray()
        self.filled = 0

    def _upload_part(self, upload_id: str, number: int, body: bytearray) -> _PartDone:
        """Runs on the pool: one ``UploadPart``; its MD5 too when the ETag is wanted."""
        md5 = hashlib.md5(body, usedforsecurity=False).digest() if self.md5s is not None else None
        done = self.s3(
            "upload_part", Bucket=self.bucket, Key=self.key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": done["ETag"]}, md5, body

    def _collect(self) -> None:
        future = self.in_flight.popleft()
        part, md5, body = future.result()
        self.parts.append(part)
        if self.md5s is not None and md5 is not None:
            self.md5s.append(md5)
        if len(self.spare) < PARTS_IN_FLIGHT:  # its buffer, now free, is the next part's
            self.spare.append(body)

    def finish(self) -> None:
        """Wait for every part in flight: their errors surface here, and the ETag needs their MD5s."""
        while self.in_flight:
            self._collect()

    def same_as(self, existing: Existing, sha256: str) -> bool:
        if existing.sha256 is not None:
            return existing.sha256 == sha256
        return existing.etag is not None and existing.etag.strip('"') == self._etag()

    def _etag(self) -> str | None:
        """The ETag S3 gives the object this upload makes (unencrypted or SSE-S3); None if unknown."""
        if self.md5s is None and self.upload_id is not None:
            return None  # the parts' MD5s were not kept
        last = hashlib.md5(memoryview(self.buffer)[: self.filled], usedforsecurity=False).digest()
        if self.upload_id is None:  # one PutObject: its bytes are all still here
            return last.hex()
        assert self.md5s is not None
        md5s = [*self.md5s, last] if self.filled else self.md5s
        return f"{hashlib.md5(b''.join(md5s), usedforsecurity=False).hexdigest()}-{len(md5s)}"

    #: S3's ETag of the object :meth:`commit` made (from the completing request itself).
    etag: str | None = None
    #: A single ``PutObject`` only if nothing is at the key (``If-None-Match: *``): :meth:`commit`
    #: then raises :class:`FileExistsError` when something is, writing nothing (see ``store_stream``).
    only_if_absent = False

    def commit(self, sha256: str, size: int) -> None:
        if self.upload_id is None:
            del self.buffer[self.filled :]
            condition = {"IfNoneMatch": "*"} if self.only_if_absent else {}
            try:
                done = self.s3(
                    "put_object",
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=self.buffer,
                    ContentType=self.content_type,
                    Metadata={SHA256_METADATA: sha256},
                    **condition,
                )
            except OSError as exc:
                if condition and precondition_failed(exc):
                    raise FileExistsError(f"{self.path} exists") from exc
                raise
        else:
            if self.filled:
                self._send_part()
            self.finish()
            done = self.s3(
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
            self.upload_id = None
            self._close_pool()
        etag = (done or {}).get("ETag")
        self.etag = str(etag) if etag else None
        self.buffer, self.spare = bytearray(), []
        self.path.fs.invalidate_cache(self.path.path)

    def abandon(self) -> None:
        self._close_pool()  # parts not started are dropped; those being sent end first
        self.buffer, self.spare = bytearray(), []
        if self.upload_id is None:
            return
        try:
            self.s3("abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception:  # the original error matters more; the next try aborts it (abort_stale_uploads)
            log.warning("Could not abort the multipart upload to %s", self.path, exc_info=True)
        self.upload_id = None

    def _close_pool(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self.in_flight.clear()


def abort_stale_uploads(path: ObjectStoragePath, temp_name: str) -> None:
    """Abort multipart uploads an earlier, killed try of this task instance left open (S3 only).

    A worker killed mid-upload leaves an in-progress multipart upload: invisible to readers and
    never completed, but its parts are billed until a bucket lifecycle rule removes them. A direct
    write's upload is on the destination key, a copy-mode write's on its temporary; the operator
    calls this only on a retry (try number > 1), for the destination key it owns, so uploads there
    that started before this try are its own leftovers. Best effort: a failure is logged, never fatal.
    """
    s3 = s3_call(path)
    if s3 is None:
        return
    started = time.time()
    for target in (path, path.parent / temp_name):
        bucket, _, key = target.path.partition("/")
        try:
            listing = s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
            for upload in listing.get("Uploads", []):
                initiated = upload.get("Initiated")
                if upload.get("Key") != key or (initiated is not None and initiated.timestamp() > started):
                    continue
                s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                log.info("Aborted a multipart upload left on %s by an earlier try", target)
        except Exception:
            log.warning("Could not check %s for multipart uploads left by an earlier try", target, exc_info=True)
