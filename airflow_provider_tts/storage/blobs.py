"""Google Cloud Storage and Azure Blob Storage: the direct writer, through the filesystem Airflow hands us.

Both stores publish an object only when its upload completes, so the destination itself is written,
with no temporary and no copy (the ``direct`` write mode). The filesystem is whatever Airflow resolves
for the path: gcsfs's ``GCSFileSystem`` (the Google provider builds it from ``google_cloud_default``),
adlfs's ``AzureBlobFileSystem`` (the Azure provider builds it from ``wasb_default``), or one attached
with ``airflow.sdk.io.attach(protocol, conn_id, fs=...)``. Only their fsspec methods are used, so
neither SDK is imported here.

What becomes visible, and when:

* Up to :data:`UPLOAD_BLOCK_BYTES` the bytes are held until :meth:`BlobWriter.commit` and sent in the
  store's one-shot upload, carrying their sha256 as object metadata: GCS one multipart upload
  (``pipe_file``), Azure one ``Put Blob``. Nothing is sent before the bytes were counted, checked
  and hashed, so a failed or refused download costs no request at all.
* Above it the filesystem's own file streams the blocks as they fill: a GCS resumable upload (its
  session publishes nothing until the final chunk), Azure staged blocks (uncommitted blocks are
  invisible and discarded by the service after a week). The commit sends the last block and
  publishes; the abandon cancels the GCS session (Azure has no call for it: the blocks just expire).
  Azure's block list carries the sha256 metadata; GCS takes metadata only when the upload starts,
  before the digest is known, so a large GCS object gets it with one metadata ``PATCH`` after.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.storage.schemes import GCS_SCHEMES, scheme_of
from airflow_provider_tts.storage.writers import SHA256_METADATA, UPLOAD_BLOCK_BYTES, Existing, Writer, abandon_file

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)


def blob_existing(path: ObjectStoragePath) -> Existing | None:
    """What is at ``path`` on GCS or Azure, from exactly one metadata request; None when nothing is.

    The filesystems' ``info`` asks more when the object is missing (gcsfs two listings, adlfs one:
    is it a directory?), which a new file, the common case, would pay every time; like S3's HEAD,
    this asks for the object alone (GCS ``objects.get``, Azure ``Get Blob Properties``).
    """
    fs = path.fs
    bucket, _, key = path.path.partition("/")
    if scheme_of(path) in GCS_SCHEMES:
        try:
            found = fs.call("GET", "b/{}/o/{}", bucket, key, json_out=True)
        except FileNotFoundError:
            return None
        sha256 = {str(k).lower(): v for k, v in (found.get("metadata") or {}).items()}.get(SHA256_METADATA)
        return Existing(int(found["size"]), sha256, found.get("md5Hash"))
    from azure.core.exceptions import ResourceNotFoundError
    from fsspec.asyn import sync

    async def properties() -> Any:
        async with fs.service_client.get_blob_client(container=bucket, blob=key) as blob:
            return await blob.get_blob_properties()

    try:
        found = sync(fs.loop, properties)
    except ResourceNotFoundError:
        return None
    sha256 = {str(k).lower(): v for k, v in (found.metadata or {}).items()}.get(SHA256_METADATA)
    return Existing(int(found.size), sha256, found.etag)


class BlobWriter(Writer):
    """``direct`` on GCS (``gs``, ``gcs``) and Azure Blob (``abfs``, ``abfss``, ``az``).

    Memory: at most one block held (:data:`UPLOAD_BLOCK_BYTES`), plus the filesystem file's own
    buffer of one block once a file outgrows it.
    """

    writes_at_once = True  # a copy into the block being held; the network waits until a block is full

    def __init__(self, path: ObjectStoragePath, content_type: str) -> None:
        self.path = path
        self.fs = path.fs
        self.gcs = scheme_of(path) in GCS_SCHEMES
        self.content_type = content_type or "application/octet-stream"
        self.buffer = bytearray()
        self.out: Any = None

    def _open(self, metadata: dict[str, str] | None) -> Any:
        if self.gcs:
            return self.fs.open(
                self.path.path, "wb", block_size=UPLOAD_BLOCK_BYTES, content_type=self.content_type, metadata=metadata
            )
        from azure.storage.blob import ContentSettings  # adlfs's own dependency; only for Azure paths

        # adlfs marks its blobs ``is_directory: false``; a blob without it is still a file to adlfs.
        return self.fs.open(
            self.path.path,
            "wb",
            block_size=UPLOAD_BLOCK_BYTES,
            metadata={**(metadata or {}), "is_directory": "false"},
            content_settings=ContentSettings(content_type=self.content_type),
        )

    def write(self, chunk: bytes) -> None:
        if self.out is None:
            if len(self.buffer) + len(chunk) <= UPLOAD_BLOCK_BYTES:
                self.buffer += chunk
                return
            self.out = self._open(None)  # a large file: stream its blocks from now on
            self.out.write(self.buffer)
            self.buffer = bytearray()
        self.out.write(chunk)

    def commit(self, sha256: str, size: int) -> None:
        metadata = {SHA256_METADATA: sha256}
        if self.out is None:
            if self.gcs:
                self.fs.pipe_file(self.path.path, bytes(self.buffer), metadata=metadata, content_type=self.content_type)
            else:
                self._put_blob(metadata)
        else:
            out, self.out = self.out, None
            if not self.gcs:
                out.metadata = {SHA256_METADATA: sha256, "is_directory": "false"}  # sent with the block list
            try:
                out.close()  # the last block; the upload completes and the object appears whole
            except BaseException:
                abandon_file(out)
                raise
            if self.gcs:
                self.fs.setxattrs(self.path.path, **metadata)
        self.buffer = bytearray()
        self.fs.invalidate_cache(self.path.path)

    def _put_blob(self, metadata: dict[str, str]) -> None:
        """Azure: one ``Put Blob`` with the metadata and content type (the file object would take two
        requests, and older adlfs releases drop its content type)."""
        from azure.storage.blob import ContentSettings
        from fsspec.asyn import sync

        bucket, _, key = self.path.path.partition("/")
        settings = ContentSettings(content_type=self.content_type)

        async def put() -> None:
            async with self.fs.service_client.get_blob_client(container=bucket, blob=key) as blob:
                await blob.upload_blob(
                    bytes(self.buffer), overwrite=True, metadata={**metadata, "is_directory": "false"},
                    content_settings=settings,
                )  # fmt: skip

        sync(self.fs.loop, put)

    def abandon(self) -> None:
        self.buffer = bytearray()
        if self.out is not None:
            out, self.out = self.out, None
            abandon_file(out)
