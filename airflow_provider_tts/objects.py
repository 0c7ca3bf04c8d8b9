"""Small objects kept beside the audio (cache entries, batch records, manifests), on any store.

Each is written whole or not at all, may be created only if absent (the claim that keeps two runs
from paying for one text), and is read back with a size limit. And one question about audio
objects: are these still the bytes that were written (:func:`content_matches`)?

What each costs, per scheme:

=================  ======================  ==========================  ==============================
operation          local disk              S3 (``s3://``)              other fsspec stores
=================  ======================  ==========================  ==============================
write whole        temporary + rename      one ``PutObject`` (boto3)   one write (``pipe_file``)
create if absent   temporary + hard link   ``PutObject If-None-Match``  GCS, Azure: one conditional write;
                                                                       others: exists check + write
content check      read and hash the file  one ``HEAD`` (ETag)         one ``info`` (its checksum),
                                                                       else read and hash
=================  ======================  ==========================  ==============================
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import os
import shutil
import uuid
from typing import TYPE_CHECKING, Any

from airflow_provider_tts import metrics
from airflow_provider_tts.storage import AZURE_SCHEMES, GCS_SCHEMES, SHA256_METADATA, is_local, s3_call, scheme_of
from airflow_provider_tts.storage.s3 import precondition_failed

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

#: Checksum fields an fsspec ``info()`` may carry, in order of preference (S3, GCS, Azure...).
_INFO_CHECKSUMS = ("ETag", "etag", "md5Hash", "crc32c", "content_md5")


def listing(folder: ObjectStoragePath) -> frozenset[str]:
    """The names directly inside ``folder`` (one LIST); empty when it does not exist yet."""
    return frozenset(listed(folder))


def listed(folder: ObjectStoragePath) -> dict[str, dict[str, Any]]:
    """``{name: fsspec info}`` of what is directly inside ``folder``: one fresh LIST; empty when it does not exist.

    On S3 each info carries the object's size and ETag, what a HEAD would answer
    (see :func:`content_matches`'s ``listed``).
    """
    with contextlib.suppress(Exception):
        folder.fs.invalidate_cache(folder.path)  # a listing cached earlier in this process may be stale
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        infos = folder.fs.ls(folder.path, detail=True)
        return {os.path.basename(str(info["name"]).rstrip("/")): dict(info) for info in infos}
    return {}


def _publish_local(path: ObjectStoragePath, data: bytes, publish: Any) -> None:
    """Write ``data`` to a temporary beside ``path``, then ``publish(temporary, path)``; no temporary stays."""
    os.makedirs(os.path.dirname(path.path) or "/", exist_ok=True)
    temp = f"{path.path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    try:
        with open(temp, "wb") as out:
            out.write(data)
        publish(temp, path.path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def write_small(path: ObjectStoragePath, data: bytes) -> None:
    """Replace ``path`` with ``data``; a reader sees the old object or the new one, never half.

    On S3 one ``PutObject`` through the connection's boto3 client (:func:`s3_call`), like every other
    request of this package: through s3fs's event-loop bridge the same request cost a fifth more CPU
    (a batch writes two entries per item).
    """
    if is_local(path):
        _publish_local(path, data, os.replace)
        return
    s3 = s3_call(path)
    if s3 is not None:
        bucket, _, key = path.path.partition("/")
        s3("put_object", Bucket=bucket, Key=key, Body=data)
        path.fs.invalidate_cache(path.path)  # as s3fs's own write would: no stale listing of the folder
        return
    path.fs.pipe_file(path.path, data)


def create_small(path: ObjectStoragePath, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if nothing is there; False when something already was.

    Atomic on a local disk (a hard link of a complete temporary fails if the name exists), on S3
    (``If-None-Match: *``), on GCS (``ifGenerationMatch=0``) and on Azure Blob (``If-None-Match: *``),
    the last two through their filesystems' ``pipe_file(mode="create")``: of two callers at once
    exactly one gets True. Elsewhere an existence check precedes the write, so two callers within
    that moment may both get True.
    """
    if is_local(path):
        try:
            _publish_local(path, data, os.link)  # a link fails when the name exists: the atomic test
            return True
        except FileExistsError:
            return False
    s3 = s3_call(path)
    if s3 is not None:
        bucket, _, key = path.path.partition("/")
        try:
            s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except OSError as exc:
            if precondition_failed(exc):
                return False
            raise
    if scheme_of(path) in GCS_SCHEMES | AZURE_SCHEMES:
        try:
            path.fs.pipe_file(path.path, data, mode="create")
            return True
        except FileExistsError:
            return False
    if path.fs.exists(path.path):
        return False
    path.fs.pipe_file(path.path, data)
    return True


def read_small(path: ObjectStoragePath, limit: int) -> bytes | None:
    """The bytes of a small object, None when it does not exist; an error when it is over ``limit``."""
    try:
        if is_local(path):
            with open(path.path, "rb") as src:
                data = src.read(limit + 1)
        elif (s3 := s3_call(path)) is not None:  # one GetObject, at less than half s3fs's CPU
            bucket, _, key = path.path.partition("/")
            with contextlib.closing(s3("get_object", Bucket=bucket, Key=key)["Body"]) as body:
                data = body.read(limit + 1)
        else:
            data = path.fs.cat_file(path.path)
    except FileNotFoundError:
        return None
    if len(data) > limit:
        raise ValueError(f"{path} is over {limit} bytes; not an object this provider wrote")
    return bytes(data)


def delete_small(path: ObjectStoragePath) -> None:
    """Remove ``path``; absent is fine."""
    with contextlib.suppress(FileNotFoundError):
        if is_local(path):
            os.unlink(path.path)
        elif (s3 := s3_call(path)) is not None:
            bucket, _, key = path.path.partition("/")
            s3("delete_object", Bucket=bucket, Key=key)
            path.fs.invalidate_cache(path.path)
        else:
            try:
                path.fs.rm_file(path.path)
            except NotImplementedError:  # adlfs before 2026 has only ``rm``
                path.fs.rm(path.path)


def content_matches(path: ObjectStoragePath, *, size: int, sha256: str, etag: str | None, listed: Any = None) -> bool:
    """Whether ``path`` still holds the ``size`` bytes of ``sha256`` that were written there.

    Local: the file is read and hashed. S3: one HEAD; its ETag (S3's own digest of the bytes) must
    equal the one recorded when the object was written; ``listed``, the object's entry in a listing
    of its folder made moments ago (:func:`listed`), answers the same question without the HEAD when
    it agrees (S3 lists the very size and ETag a HEAD returns; a listing that disagrees is asked
    again). Other stores: their ``info`` checksum, when one was recorded, or the sha256 in its
    metadata; else the object is read and hashed. Anything that cannot be confirmed is a mismatch:
    the caller then pays for fresh audio rather than trust bytes it cannot vouch for.
    """
    try:
        if is_local(path):
            if os.stat(path.path).st_size != size:
                return False
            return _sha256_local(path.path) == sha256
        s3 = s3_call(path)
        if s3 is not None and etag is not None and _listed_as(listed, size, etag):
            return True
        if s3 is not None:
            bucket, _, key = path.path.partition("/")
            head = s3("head_object", Bucket=bucket, Key=key)
            if int(head["ContentLength"]) != size:
                return False
            if etag is not None:
                return str(head.get("ETag", "")).strip('"') == etag.strip('"')
            return _sha256_remote(path) == sha256  # nothing recorded to compare (an older entry)
        info = path.fs.info(path.path)
        if int(info.get("size", -1)) != size:
            return False
        token = info_checksum(info)
        if etag is not None and token is not None:
            return token == etag.strip('"')
        # GCS and Azure hand back the sha256 metadata the writer recorded with the same request.
        recorded = {str(k).lower(): v for k, v in (info.get("metadata") or {}).items()}.get(SHA256_METADATA)
        if recorded:
            return bool(recorded == sha256)
        return _sha256_remote(path) == sha256
    except FileNotFoundError:
        return False


def _listed_as(listed: Any, size: int, etag: str) -> bool:
    """Whether a listing's entry shows exactly ``size`` bytes with ``etag``."""
    return isinstance(listed, dict) and listed.get("size") == size and info_checksum(listed) == etag.strip('"')


def info_checksum(info: Any) -> str | None:
    """The store's checksum of an object from its fsspec ``info()``, quotes removed; None if it gives none."""
    for name in _INFO_CHECKSUMS:
        value = info.get(name) if isinstance(info, dict) else None
        if value:
            return str(value).strip('"')
    return None


def listed_md5(info: Any) -> str | None:
    """The MD5 of an object's bytes as its store lists it (hex), None when the listing shows none.

    S3 lists an ETag that is the MD5 of a plain single-request upload (32 hex digits); one of a
    multipart upload has a ``-`` and is not, and one of an SSE-KMS object looks like an MD5 but is
    not one, so a caller must only ever *compare* it with the MD5 of bytes it holds: a mismatch
    costs a read, never a wrong answer. GCS lists ``md5Hash`` (base64), Azure ``content_md5``.
    """
    if not isinstance(info, dict):
        return None
    etag = str(info.get("ETag") or "").strip('"').lower()
    if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag):
        return etag
    digest: Any = info.get("md5Hash")
    if isinstance(digest, str):
        with contextlib.suppress(binascii.Error, ValueError):
            digest = binascii.a2b_base64(digest)
    settings = info.get("content_settings")
    if digest is None and settings is not None:
        digest = settings.get("content_md5") if isinstance(settings, dict) else getattr(settings, "content_md5", None)
    if isinstance(digest, bytes | bytearray) and len(digest) == 16:
        return bytes(digest).hex()
    return None


def _sha256_local(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_remote(path: ObjectStoragePath) -> str:
    digest = hashlib.sha256()
    with path.fs.open(path.path, "rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def copy_object(source: ObjectStoragePath, target: ObjectStoragePath) -> str | None:
    """Copy an object within one store (server-side on S3); the target's ETag where the store gives one.

    The target appears whole or not at all: a local copy goes through a temporary and a rename.
    Every caller copies request-cache audio to a new name, so this counts ``tts.cache.copy``.
    """
    metrics.cache("copy", scheme=scheme_of(target))
    if is_local(source) and is_local(target):
        temp = f"{target.path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
        try:
            shutil.copyfile(source.path, temp)
            os.replace(temp, target.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return None
    s3 = s3_call(target)
    if s3 is not None and scheme_of(source) == scheme_of(target):
        bucket, _, key = target.path.partition("/")
        done = s3("copy_object", Bucket=bucket, Key=key, CopySource=source.path, MetadataDirective="COPY")
        etag = (done.get("CopyObjectResult") or {}).get("ETag")
        return str(etag).strip('"') if etag else None
    target.fs.copy(source.path, target.path)
    return info_checksum(target.fs.info(target.path))
