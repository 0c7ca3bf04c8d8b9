"""The one per-scheme decision: how a file reaches a destination of each URI scheme atomically.

:func:`write_mode` maps a path's scheme to ``direct``, ``rename`` or ``copy`` (described in the
:mod:`airflow_provider_tts.storage` docstring); the scheme sets here are the only place that says
which scheme gets which mode, and :data:`LOCAL_SCHEMES` the only place that says which schemes are
the local disk (:func:`is_local`, for the objects, the cache, lineage and the allowed places too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

WriteMode = Literal["direct", "rename", "copy"]

#: Object stores whose uploads become visible only when they complete (single or multipart): the
#: destination itself is written, there is no temporary to copy.
DIRECT_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"})
#: The local disk: ``file://``, ``local://`` and a path with no scheme.
LOCAL_SCHEMES = frozenset({"file", "local", ""})
#: Filesystems where a rename within a folder is atomic: the local disk.
RENAME_SCHEMES = LOCAL_SCHEMES
#: Schemes served by s3fs, whose S3 calls the direct writer makes itself (to choose PUT vs multipart).
S3_SCHEMES = frozenset({"s3", "s3a"})
#: Google Cloud Storage (gcsfs) and Azure Blob Storage (adlfs): written by
#: :class:`airflow_provider_tts.storage.blobs.BlobWriter` through the filesystem's fsspec methods.
GCS_SCHEMES = frozenset({"gs", "gcs"})
AZURE_SCHEMES = frozenset({"abfs", "abfss", "az"})


def scheme_of(path: ObjectStoragePath) -> str:
    protocol = path.protocol
    return protocol if isinstance(protocol, str) else protocol[0]


def plain_uri(path: ObjectStoragePath) -> str:
    """The path's URI without the connection id (what XCom, asset events and records carry)."""
    return f"{path.protocol}://{path.path}"


def is_local(path: ObjectStoragePath) -> bool:
    """Whether ``path`` is on the local disk."""
    return scheme_of(path) in LOCAL_SCHEMES


def write_mode(path: ObjectStoragePath) -> WriteMode:
    """How a file reaches ``path`` atomically at the lowest cost: the one per-scheme decision.

    See the :mod:`airflow_provider_tts.storage` docstring for what each mode does and why it is
    atomic on its schemes.
    """
    scheme = scheme_of(path)
    if scheme in RENAME_SCHEMES:
        return "rename"
    if scheme in DIRECT_SCHEMES:
        return "direct"
    return "copy"
