"""Where audio goes: a destination validated before anything is downloaded or written.

:func:`destination_path` turns a URI or ``ObjectStoragePath`` into a path on a registered
filesystem or fails with a :class:`~airflow_provider_tts.exceptions.TtsConfigError`;
:func:`check_destination` fails with a :class:`TtsStorageError` when the bucket is missing or
unreachable, tells whether the destination is a folder, and creates a local folder.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.compat import conn_id_of
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.storage.s3 import KNOWN_BUCKETS, s3_call
from airflow_provider_tts.storage.schemes import S3_SCHEMES, scheme_of, write_mode
from airflow_provider_tts.storage.types import TtsStorageError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


def destination_path(destination: Any, dest_conn_id: str | None) -> ObjectStoragePath:
    """Validate a destination (URI string or ObjectStoragePath) before anything is downloaded or written."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tts.compat import omit_secrets_from_dag_test_log

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
        _check_scheme(raw, raw.split("://", 1)[0].lower(), dest_conn_id)  # before UPath refuses it less clearly
        try:
            path = ObjectStoragePath(raw, conn_id=dest_conn_id)
        except ValueError as exc:
            raise TtsConfigError(f"destination {raw!r} is not a usable storage URI: {exc}") from None
    _check_scheme(raw, scheme_of(path), conn_id_of(path))
    return path


def _check_scheme(raw: str, scheme: str, conn_id: str | None) -> None:
    """A filesystem must serve ``scheme``: one a provider registers, or one attached for the connection."""
    from airflow_provider_tts.compat import attached_fs, has_fs

    if not has_fs(scheme) and not attached_fs(scheme, conn_id):
        raise TtsConfigError(
            f"destination {raw!r}: no filesystem is registered for scheme {scheme!r}; install the provider "
            "that handles it (e.g. apache-airflow-providers-amazon for s3://, -google for gs://, "
            "-microsoft-azure for abfs://) or attach one (airflow.sdk.io.attach(protocol, conn_id, fs=...))"
        )


def bucket_known(path: ObjectStoragePath) -> tuple[str | None, str]:
    """The key under which :data:`KNOWN_BUCKETS` remembers ``path``'s bucket (S3: the bucket name alone)."""
    bucket = path.path.partition("/")[0]
    return conn_id_of(path), bucket if scheme_of(path) in S3_SCHEMES else f"{scheme_of(path)}://{bucket}"


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
    existence is asked once per process and connection (``HeadBucket``; on GCS and Azure the
    filesystem's ``exists``), so every further file into it costs no request here. A local folder
    (or a file's parent folder) is created.
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
    where = f"{scheme_of(path)}://{bucket}"
    try:
        s3 = s3_call(path)
        if s3 is not None:
            known = bucket_known(path)
            if folder_hint or not key.strip("/"):  # a folder by how it was written: only the bucket matters
                if known not in KNOWN_BUCKETS:
                    s3("head_bucket", Bucket=bucket)
                    KNOWN_BUCKETS.add(known)
                return True
            # A name without the slash may still be a folder (a prefix): one listing tells that and,
            # by answering at all, that the bucket exists.
            listing = s3("list_objects_v2", Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
            KNOWN_BUCKETS.add(known)
            return bool(listing.get("KeyCount") or listing.get("Contents"))
        if not getattr(path, "bucket", bucket):  # a filesystem without buckets (sftp, memory): a folder tree
            path.fs.makedirs(path.path if folder_hint else path.parent.path, exist_ok=True)
            return folder_hint or path.fs.isdir(path.path)
        known = bucket_known(path)
        exists = known in KNOWN_BUCKETS or path.fs.exists(bucket)
    except FileNotFoundError:
        exists = False
    except Exception as exc:
        raise TtsStorageError(f"cannot reach the destination bucket {where}: {exc}") from exc
    if not exists:
        raise TtsStorageError(f"destination bucket {where} does not exist (or the connection cannot see it)")
    KNOWN_BUCKETS.add(known)
    # Through the path's own filesystem (``path.is_dir()`` may build another one without a connection).
    return folder_hint or not key.strip("/") or bool(path.fs.isdir(path.path))


def check_writable(path: ObjectStoragePath) -> None:
    """Fail clearly, before any byte is written, when the destination's container does not exist."""
    check_destination(path, folder_hint=False)
