"""Stream audio into object storage atomically, in constant memory, through Airflow's ObjectStoragePath.

The bytes are counted and hashed on the way through, checked against the announced length and the
size cap, and only then made visible at the destination. How a whole file reaches its destination
is decided in one place, :func:`write_mode`, per scheme:

``direct`` (``s3``, ``s3a``, ``gs``, ``gcs``, ``abfs``, ``abfss``, ``az``)
    Object stores that publish an object only when its upload completes: a reader sees the old
    object (or none) until then, never a partial one. The destination key is written directly,
    once: on S3 a single ``PutObject`` below :data:`UPLOAD_BLOCK_BYTES`, a multipart upload above
    it, aborted on any failure so no upload stays open (and never completed when the policy says
    the object already holds these bytes). Other direct schemes use the filesystem's own
    uncommitted file (``autocommit=False``), committed at the end or discarded.
``rename`` (``file``, ``local``)
    A temporary beside the destination, then ``os.replace``: atomic within one filesystem, and it
    refuses to replace a directory.
``copy`` (every other scheme)
    A temporary beside the destination, then the filesystem's move (copy and delete where it has no
    atomic rename): the destination appears whole or not at all, at the cost of a second write.

A temporary's name is fixed per task instance, so a download killed with its worker leaves at most
one temporary (or, on S3, one unfinished multipart upload) that the next try overwrites (or
aborts): nothing accumulates.

The write path never goes through ``ObjectStoragePath.open`` or ``.move``: their hook-lineage calls
would record a temporary nobody reads as an input asset. The destination alone is the output.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from airflow_provider_tts.compat import conn_id_of
from airflow_provider_tts.exceptions import TtsConfigError, TtsError, TtsProtocolError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

OverwritePolicy = Literal["replace", "skip_if_identical", "fail"]
OVERWRITE_POLICIES: tuple[OverwritePolicy, ...] = ("replace", "skip_if_identical", "fail")
WriteMode = Literal["direct", "rename", "copy"]

#: Object stores whose uploads become visible only when they complete (single or multipart): the
#: destination itself is written, there is no temporary to copy.
DIRECT_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"})
#: Filesystems where a rename within a folder is atomic.
RENAME_SCHEMES = frozenset({"file", "local", ""})
#: Schemes served by s3fs, whose S3 calls the direct writer makes itself (to choose PUT vs multipart).
S3_SCHEMES = frozenset({"s3", "s3a"})

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
    "audio/opus": ".opus",
    "video/mp4": ".mp4",
}
#: Extensions that name the same container, for the extension check of a literal file name.
_SAME_FORMAT = {".m4a": ".mp4", ".oga": ".ogg", ".opus": ".ogg", ".wave": ".wav"}
#: Media types accepted besides ``audio/*``: what the vendors document (Revid's SRT-to-speech may
#: return MP4), and the generic binary types storage hosts serve files under (S3 defaults to
#: ``binary/octet-stream``). Anything else (an HTML login page, a JSON error) is refused.
ACCEPTED_TYPES = frozenset({"video/mp4", "application/octet-stream", "binary/octet-stream"})
#: Types whose body is not labelled as a format: the first bytes are sniffed instead.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
DEFAULT_MAX_BYTES = 2 * 1024**3
#: Size of the chunks read from the HTTP response. Each chunk is a new bytes object; chunks this
#: size are reused from the heap, where much larger ones are handed back to the OS and faulted in
#: again (see BENCHMARKS.md).
DEFAULT_CHUNK_BYTES = 256 * 1024
#: S3: at or below this size a file is one ``PutObject``; above, a multipart upload in parts of this
#: size (S3's minimum part is 5 MiB). Also the block size of other object stores' files. Bounds the
#: memory a write holds whatever the file size.
UPLOAD_BLOCK_BYTES = 8 * 1024**2
#: S3: parts of one multipart upload sent at once. One part at a time leaves the link idle while a
#: part is signed, checksummed and acknowledged; a few keep it busy. With :data:`UPLOAD_BLOCK_BYTES`
#: this bounds a large upload's buffers to ``(PARTS_IN_FLIGHT + 1) * UPLOAD_BLOCK_BYTES``.
PARTS_IN_FLIGHT = 3
#: Seconds between progress log lines of one download (at most one line per interval).
PROGRESS_LOG_INTERVAL = 5.0
#: Bytes the helper thread may lag behind the download (at least two chunks).
BEHIND_BYTES = 1024**2
#: Size of each ``write()`` to a local file (curl's size): large writes make the kernel build the
#: page cache from large folios, slower to fault in on VMs that hand memory back to their host
#: (see BENCHMARKS.md).
LOCAL_WRITE_BYTES = 16 * 1024
#: Key of the object metadata (``x-amz-meta-sha256``) holding the sha256 of the bytes written.
SHA256_METADATA = "sha256"


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
    #: The object store's own content identity where it gives one for free (S3's ETag from the
    #: completing request, or the HEAD a skipped rewrite made): what the request cache checks later.
    etag: str | None = None

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

    from airflow_provider_tts.compat import has_fs, omit_secrets_from_dag_test_log

    omit_secrets_from_dag_test_log()  # the storage connection's secret is masked when it is looked up
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
    _check_scheme(raw, _protocol(path), has_fs)
    return path


def _check_scheme(raw: str, scheme: str, has_fs: Callable[[str], bool]) -> None:
    if not has_fs(scheme):
        raise TtsConfigError(
            f"destination {raw!r}: no filesystem is registered for scheme {scheme!r}; install the provider "
            "that handles it (e.g. apache-airflow-providers-amazon for s3://)"
        )


def _protocol(path: ObjectStoragePath) -> str:
    protocol = path.protocol
    return protocol if isinstance(protocol, str) else protocol[0]


def write_mode(path: ObjectStoragePath) -> WriteMode:
    """How a file reaches ``path`` atomically at the lowest cost: the one per-scheme decision.

    See the module docstring for what each mode does and why it is atomic on its schemes.
    """
    scheme = _protocol(path)
    if scheme in RENAME_SCHEMES:
        return "rename"
    if scheme in DIRECT_SCHEMES:
        return "direct"
    return "copy"


def is_folder(destination: Any) -> bool:
    """A destination *written* with a trailing ``/`` names a folder (see :func:`check_destination`)."""
    return str(destination).endswith("/")


def check_destination(path: ObjectStoragePath, *, folder_hint: bool) -> bool:
    """Fail clearly, before any byte is written, when the destination cannot be written; return folder-ness.

    A destination is a folder when it was written with a trailing ``/`` (``folder_hint``) or when
    the storage already holds a directory (a prefix, on object stores) under that name:
    ``ObjectStoragePath("file:///data/audio/")`` loses its slash, and storing a file *as*
    ``/data/audio`` would move it into the folder under another name. On S3 one request
    (``ListObjectsV2`` under ``key/``, at most one key) tells both that the bucket exists and
    whether the name is a prefix; a destination written as a folder needs only the bucket, whose
    existence is asked once per process and connection (``HeadBucket``), so every further file into
    it costs no request here. A local folder (or a file's parent folder) is created.
    """
    mode = write_mode(path)
    if mode == "rename":
        local = path.path
        if os.path.isdir(local) or folder_hint:
            os.makedirs(local, exist_ok=True)
            return True
        os.makedirs(os.path.dirname(local) or "/", exist_ok=True)
        return False
    bucket, _, key = path.path.partition("/")
    where = f"{_protocol(path)}://{bucket}"
    try:
        s3 = _s3_call(path)
        if s3 is not None:
            known = (conn_id_of(path), bucket)
            if folder_hint or not key.strip("/"):  # a folder by how it was written: only the bucket matters
                if known not in _KNOWN_BUCKETS:
                    s3("head_bucket", Bucket=bucket)
                    _KNOWN_BUCKETS.add(known)
                return True
            # A name without the slash may still be a folder (a prefix): one listing tells that and,
            # by answering at all, that the bucket exists.
            listing = s3("list_objects_v2", Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
            _KNOWN_BUCKETS.add(known)
            return bool(listing.get("KeyCount") or listing.get("Contents"))
        if not getattr(path, "bucket", bucket):  # a filesystem without buckets (sftp, memory): a folder tree
            path.fs.makedirs(path.path if folder_hint else path.parent.path, exist_ok=True)
            return folder_hint or path.is_dir()
        exists = path.fs.exists(bucket)
    except FileNotFoundError:
        exists = False
    except Exception as exc:
        raise TtsStorageError(f"cannot reach the destination bucket {where}: {exc}") from exc
    if not exists:
        raise TtsStorageError(f"destination bucket {where} does not exist (or the connection cannot see it)")
    return folder_hint or not key.strip("/") or path.is_dir()


def check_writable(path: ObjectStoragePath) -> None:
    """Fail clearly, before any byte is written, when the destination's container does not exist."""
    check_destination(path, folder_hint=False)


# --------------------------------------------------------------------------------------- S3 calls

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
#: ``(connection id, bucket)`` pairs this process has seen exist. Knowing a bucket exists saves the
#: check's request for every further file into a folder of it; a bucket deleted since then makes the
#: write itself fail (nothing becomes visible) and is forgotten here (see :func:`_forget_bucket`).
_KNOWN_BUCKETS: set[tuple[str | None, str]] = set()


def _s3_call(path: ObjectStoragePath) -> _S3Call | None:
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
    if _protocol(path) not in S3_SCHEMES or not callable(call_s3):
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
    if hook.service_config.get("signer") or getattr(fs, "anon", False) or getattr(fs, "endpoint_url", None) != endpoint:
        return None
    return hook.get_conn()


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


def _forget_bucket(path: ObjectStoragePath) -> None:
    _KNOWN_BUCKETS.discard((conn_id_of(path), path.path.partition("/")[0]))


# ------------------------------------------------------------------------------ what the body is


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def sniff_extension(head: bytes) -> str | None:
    """The extension of the audio container the first bytes announce; None when they announce none."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ".wav"
    if head[:4] == b"fLaC":
        return ".flac"
    if head[:4] == b"OggS":
        return ".ogg"
    if head[4:8] == b"ftyp":
        return ".mp4"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        # MPEG audio frame sync; ADTS AAC shares the first 12 bits (layer bits 00).
        return ".aac" if len(head) > 1 and head[:3] != b"ID3" and head[1] & 0x06 == 0 else ".mp3"
    return None


def _looks_like_text(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:16].lower()
    return start.startswith((b"<!doctype", b"<html", b"<?xml", b"<", b"{", b"["))


def check_audio_body(content_type: str, head: bytes, *, what: str) -> None:
    """Refuse a response that is not audio, before anything is written.

    Accepted: ``audio/*``, ``video/mp4`` (Revid SRT-to-speech may render MP4),
    ``application/octet-stream`` and ``binary/octet-stream`` (what storage hosts label files they
    know nothing about) or no type at all; the generic types only when the first bytes are not
    markup or JSON (a login page served as ``octet-stream`` is still a login page). The error names
    the type that arrived and a short excerpt of the body, so the cause is visible in the task log.
    """
    kind = media_type(content_type)
    accepted = kind.startswith("audio/") or kind in ACCEPTED_TYPES or kind == ""
    if accepted and not (kind in _GENERIC_TYPES and _looks_like_text(head)):
        return
    from airflow_provider_tts.transport import scrub  # a page may echo the signed URL it was asked for

    excerpt = scrub(head[:160].decode("utf-8", "replace").replace("\r", " ").replace("\n", " ").strip())
    raise TtsProtocolError(
        f"{what}: expected audio (audio/*, video/mp4 or application/octet-stream), got "
        f"{content_type or 'no Content-Type'!s} starting with {excerpt!r}; nothing was stored"
    )


def extension_for(content_type: str, head: bytes = b"") -> str:
    """The file extension for a body: from its media type, else from its first bytes, else ``.bin``."""
    ext = EXTENSIONS.get(media_type(content_type))
    if ext is None and media_type(content_type) in _GENERIC_TYPES:
        ext = sniff_extension(head)
    if ext is None:
        log.warning("Unknown audio content type %r; saving with extension .bin", content_type)
        return ".bin"
    return ext


def check_extension(name: str, content_type: str, head: bytes) -> None:
    """Refuse a file name whose audio extension contradicts what the body is.

    Refused rather than warned about: a FLAC stored as ``daily.mp3`` is silently broken for every
    player and pipeline that trusts the name, and a warning in a task log nobody reads does not stop
    it from being published. Only a known audio extension against a known format is refused: a
    name without one (``daily``, ``daily.audio``, ``.bin``) or a body whose format cannot be told
    is stored as named. Use a folder destination (the extension then follows the content type) or
    the matching extension.
    """
    ext = os.path.splitext(name)[1].lower()
    if ext not in set(EXTENSIONS.values()) | set(_SAME_FORMAT):
        return
    actual = EXTENSIONS.get(media_type(content_type)) or sniff_extension(head)
    if actual is None or _SAME_FORMAT.get(ext, ext) == _SAME_FORMAT.get(actual, actual):
        return
    raise TtsConfigError(
        f"destination {name!r} says {ext} but the audio is {content_type or 'untyped'} ({actual}); refusing to "
        f"store it under a name that contradicts its format. Name the file *{actual} or give a folder "
        "destination ending in '/' (the extension then follows the content type)"
    )


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


# ------------------------------------------------------------------------------- existing object


@dataclass(frozen=True)
class _Existing:
    """What is at the destination already, from one metadata request (never a download)."""

    size: int
    sha256: str | None = None  # from object metadata, where this module wrote it
    etag: str | None = None  # S3's, for objects written without the sha256 metadata


def _existing(path: ObjectStoragePath, mode: WriteMode) -> _Existing | None:
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
        return _Existing(stat.st_size)
    s3 = _s3_call(path)
    if s3 is not None:
        bucket, _, key = path.path.partition("/")
        try:
            head = s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return _Existing(int(head["ContentLength"]), meta.get(SHA256_METADATA), head.get("ETag"))
    try:
        info = path.fs.info(path.path)
    except FileNotFoundError:
        return None
    if info.get("type") == "directory":
        raise TtsStorageError(f"destination {path} is a folder; refusing to write onto it")
    return _Existing(int(info["size"]))


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


# ---------------------------------------------------------------------------------------- writers


class _Writer:
    """Where the bytes go until :meth:`commit` makes them visible at the destination, or :meth:`abandon`.

    ``write`` runs on one thread at a time (the helper thread for object stores); ``commit`` and
    ``abandon`` only after that thread was joined. ``abandon`` leaves nothing behind and never raises.
    """

    #: ``write`` returns without waiting for the network (it may still wait for a bounded backlog).
    writes_at_once = False

    def write(self, chunk: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Every byte written (no commit yet): the place for flushing."""

    def same_as(self, existing: _Existing, sha256: str) -> bool:
        return existing.sha256 == sha256

    def commit(self, sha256: str, size: int) -> None:
        raise NotImplementedError

    def abandon(self) -> None:
        raise NotImplementedError


class _TempWriter(_Writer):
    """``rename`` and ``copy``: a temporary beside the destination, then renamed or moved into place."""

    def __init__(self, path: ObjectStoragePath, temp_name: str, mode: WriteMode) -> None:
        self.path, self.temp, self.mode = path, path.parent / temp_name, mode
        self.writes_at_once = mode == "rename"
        if mode == "rename":
            # A plain unbuffered OS file: every write() is one system call (see LOCAL_WRITE_BYTES).
            self.out: Any = open(self.temp.path, "wb", buffering=0)  # noqa: SIM115 (closed in finish/abandon)
        else:
            self.out = self.temp.fs.open(self.temp.path, "wb", block_size=UPLOAD_BLOCK_BYTES)

    def write(self, chunk: bytes) -> None:
        if self.writes_at_once:
            _write_all(self.out, chunk, LOCAL_WRITE_BYTES)
        else:
            self.out.write(chunk)

    def finish(self) -> None:
        self.out.close()

    def commit(self, sha256: str, size: int) -> None:
        if self.mode == "rename":
            os.replace(self.temp.path, self.path.path)  # atomic; refuses to replace a directory
            return
        self.temp.fs.mv(self.temp.path, self.path.path)

    def abandon(self) -> None:
        try:
            if not self.out.closed:
                _abandon_file(self.out)
            if self.mode == "rename":
                os.unlink(self.temp.path)
            else:
                self.temp.fs.rm(self.temp.path)
        except FileNotFoundError:
            pass
        except Exception:  # the original error matters more; a leftover is overwritten next try
            log.warning("Could not remove the temporary %s", self.temp, exc_info=True)


class _FsspecDirectWriter(_Writer):
    """``direct`` on object stores other than S3: the filesystem's own file, uncommitted until the end."""

    def __init__(self, path: ObjectStoragePath, content_type: str) -> None:
        self.path = path
        self.out = path.fs.open(path.path, "wb", block_size=UPLOAD_BLOCK_BYTES, autocommit=False)

    def write(self, chunk: bytes) -> None:
        self.out.write(chunk)

    def finish(self) -> None:
        self.out.close()  # uploads what is buffered; with autocommit=False nothing is visible yet

    def commit(self, sha256: str, size: int) -> None:
        self.out.commit()

    def abandon(self) -> None:
        _abandon_file(self.out)


#: What a part's upload returns: its entry for ``CompleteMultipartUpload``, its MD5 (when the ETag
#: is wanted) and its buffer, free again.
_PartDone = tuple[dict[str, Any], bytes | None, bytearray]


class _S3DirectWriter(_Writer):
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

    def same_as(self, existing: _Existing, sha256: str) -> bool:
        if existing.sha256 is not None:
            return existing.sha256 == sha256
        return existing.etag is not None and existing.etag.strip('"') == self._etag()

    def _etag(self) -> str | None:
        """The ETag S3 gives the object this upload makes (unencrypted or SSE-S3); None if unknown."""
        if self.md5s is None:
            return None
        last = hashlib.md5(memoryview(self.buffer)[: self.filled], usedforsecurity=False).digest()
        if self.upload_id is None:
            return last.hex()
        md5s = [*self.md5s, last] if self.filled else self.md5s
        return f"{hashlib.md5(b''.join(md5s), usedforsecurity=False).hexdigest()}-{len(md5s)}"

    #: S3's ETag of the object :meth:`commit` made (from the completing request itself).
    etag: str | None = None

    def commit(self, sha256: str, size: int) -> None:
        if self.upload_id is None:
            del self.buffer[self.filled :]
            done = self.s3(
                "put_object",
                Bucket=self.bucket,
                Key=self.key,
                Body=self.buffer,
                ContentType=self.content_type,
                Metadata={SHA256_METADATA: sha256},
            )
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


def _abandon_file(out: Any) -> None:
    """Give up an fsspec file being written without committing it.

    Closing an object-store file commits it (s3fs completes the multipart upload), which would
    publish a partial object. ``discard()`` aborts the upload instead; the file object is then marked
    closed so its finaliser does not try to commit after all. A local file is simply closed.
    """
    try:
        discard = getattr(out, "discard", None)
        if callable(discard):
            discard()
            out.closed = True
        else:
            out.close()
    except Exception:  # the original error matters more
        log.warning("Could not abandon the upload %s", out, exc_info=True)


def _open_writer(
    path: ObjectStoragePath, mode: WriteMode, temp_name: str, content_type: str, existing: _Existing | None, size: int
) -> _Writer:
    if mode != "direct":
        return _TempWriter(path, temp_name, mode)
    s3 = _s3_call(path)
    if s3 is not None:
        # The ETag is worth computing only if an object of the same size could be these very bytes.
        want_etag = existing is not None and existing.sha256 is None and size in (existing.size, -1)
        return _S3DirectWriter(path, s3, content_type, want_etag)
    return _FsspecDirectWriter(path, content_type)


def abort_stale_uploads(path: ObjectStoragePath, temp_name: str) -> None:
    """Abort multipart uploads an earlier, killed try of this task instance left open (S3 only).

    A worker killed mid-upload leaves an in-progress multipart upload: invisible to readers and
    never completed, but its parts are billed until a bucket lifecycle rule removes them. A direct
    write's upload is on the destination key, a copy-mode write's on its temporary; the operator
    calls this only on a retry (try number > 1), for the destination key it owns, so uploads there
    that started before this try are its own leftovers. Best effort: a failure is logged, never fatal.
    """
    s3 = _s3_call(path)
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


# ----------------------------------------------------------------------------------------- store


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
    object stores, ``stat`` on a local disk; ``replace`` on S3 asks nothing, the write is its only
    request):

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
    if overwrite not in OVERWRITE_POLICIES:
        raise TtsConfigError(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}, got {overwrite!r}")
    if content_length is not None and content_length > max_bytes:
        raise TtsProtocolError(
            f"audio for task {tts_task_id!r} is {content_length} bytes, over the {max_bytes}-byte cap"
        )
    mode = write_mode(path)
    try:
        if not checked and check_destination(path, folder_hint=False):
            raise TtsStorageError(f"destination {path} is a folder; refusing to write onto it")
        # ``replace`` on S3 needs nothing from the object already there: S3 has no directory to
        # refuse (a prefix at the name was refused by check_destination) and the new bytes replace
        # whatever is there, atomically. So no HEAD: the write is the file's only request.
        replacing_on_s3 = overwrite == "replace" and mode == "direct" and _s3_call(path) is not None
        existing = None if replacing_on_s3 else _existing(path, mode)
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
    writer: _Writer | None = None
    try:
        writer = _open_writer(path, mode, temp_name, content_type, existing, expected)
        depth = max(2, BEHIND_BYTES // max(chunk_bytes, 1))
        # Two stages per chunk run side by side (hashlib, socket reads and writes release the GIL):
        # where a write returns at once (a local file, in small writes like curl; an S3 part being
        # filled, uploaded by the writer's own pool) this thread reads and writes while a helper
        # thread hashes; elsewhere a helper thread writes (an upload blocks) while this one hashes.
        foreground: Callable[[bytes], Any]
        if writer.writes_at_once:
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
            writer.commit(sha256, size)
            etag = getattr(writer, "etag", None)
            writer = None
            _verify(path, mode, size)
        else:
            writer.abandon()
            writer = None
            etag = existing.etag if existing is not None else None
    except BaseException as exc:
        if writer is not None:
            writer.abandon()
        if isinstance(exc, FileNotFoundError):
            _forget_bucket(path)  # perhaps deleted since it was checked: the next file asks again
        if isinstance(exc, OSError):
            raise TtsStorageError(f"writing {path} failed: {type(exc).__name__}: {exc}") from exc
        raise
    duration = duration_seconds if duration_seconds is not None else audio_duration(bytes(header))
    log.info("Stored %d bytes (sha256 %s, %s) at %s", size, sha256, content_type, path)
    return StoredAudio(str(path), size, sha256, content_type, duration, tts_task_id, written, etag)


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
