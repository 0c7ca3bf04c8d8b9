"""Stream audio into object storage atomically, in constant memory, through Airflow's ObjectStoragePath.

The bytes are counted and hashed on the way through, checked against the announced length and the
size cap, and only then made visible at the destination. How a whole file reaches its destination
is decided in one place, :func:`write_mode`, per scheme:

``direct`` (``s3``, ``s3a``, ``gs``, ``gcs``, ``abfs``, ``abfss``, ``az``)
    Object stores that publish an object only when its upload completes: a reader sees the old
    object (or none) until then, never a partial one. The destination key is written directly,
    once: on S3 a single ``PutObject`` below :data:`UPLOAD_BLOCK_BYTES`, a multipart upload above
    it, aborted on any failure so no upload stays open (and never completed when the policy says
    the object already holds these bytes). On GCS and Azure Blob (:mod:`.blobs`) the store's
    one-shot upload below that size, sent only once the bytes were checked; above it a GCS
    resumable upload or Azure staged blocks, published by their final request or discarded.
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

The package is split by concern: :mod:`.types` (result, error, overwrite policies),
:mod:`.schemes` (the write mode of each scheme), :mod:`.content` (what an audio body is),
:mod:`.destinations` (validating where audio goes), :mod:`.s3` (S3 clients, the S3 writer, stale
uploads), :mod:`.blobs` (the GCS and Azure writer), :mod:`.writers` (the writer interface, the
temporary's writer) and :mod:`.store` (:func:`store_stream`). Every name
is importable from ``airflow_provider_tts.storage`` itself; patch a name in the submodule that
defines it (patching it here changes nothing the code looks up).
"""

from airflow_provider_tts.storage.content import (
    ACCEPTED_TYPES,
    EXTENSIONS,
    SAME_CONTAINER,
    audio_duration,
    check_audio_body,
    check_extension,
    extension_for,
    media_type,
    same_container,
    sniff_extension,
)
from airflow_provider_tts.storage.destinations import check_destination, check_writable, destination_path, is_folder
from airflow_provider_tts.storage.s3 import PARTS_IN_FLIGHT, abort_stale_uploads
from airflow_provider_tts.storage.s3 import s3_call as s3_call
from airflow_provider_tts.storage.schemes import (
    AZURE_SCHEMES,
    DIRECT_SCHEMES,
    GCS_SCHEMES,
    LOCAL_SCHEMES,
    RENAME_SCHEMES,
    S3_SCHEMES,
    WriteMode,
    is_local,
    plain_uri,
    write_mode,
)
from airflow_provider_tts.storage.schemes import scheme_of as scheme_of
from airflow_provider_tts.storage.store import (
    BEHIND_BYTES,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_BYTES,
    PROGRESS_LOG_INTERVAL,
    check_store_settings,
    peek,
    store_stream,
)
from airflow_provider_tts.storage.types import (
    OVERWRITE_POLICIES,
    OverwritePolicy,
    StoredAudio,
    TtsStorageError,
    check_overwrite,
)
from airflow_provider_tts.storage.writers import LOCAL_WRITE_BYTES, SHA256_METADATA, UPLOAD_BLOCK_BYTES

__all__ = [
    "ACCEPTED_TYPES",
    "AZURE_SCHEMES",
    "BEHIND_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_BYTES",
    "DIRECT_SCHEMES",
    "EXTENSIONS",
    "GCS_SCHEMES",
    "LOCAL_SCHEMES",
    "LOCAL_WRITE_BYTES",
    "OVERWRITE_POLICIES",
    "PARTS_IN_FLIGHT",
    "PROGRESS_LOG_INTERVAL",
    "RENAME_SCHEMES",
    "S3_SCHEMES",
    "SAME_CONTAINER",
    "SHA256_METADATA",
    "UPLOAD_BLOCK_BYTES",
    "OverwritePolicy",
    "StoredAudio",
    "TtsStorageError",
    "WriteMode",
    "abort_stale_uploads",
    "audio_duration",
    "check_audio_body",
    "check_destination",
    "check_extension",
    "check_overwrite",
    "check_store_settings",
    "check_writable",
    "destination_path",
    "extension_for",
    "is_folder",
    "is_local",
    "media_type",
    "peek",
    "plain_uri",
    "same_container",
    "sniff_extension",
    "store_stream",
    "write_mode",
]
