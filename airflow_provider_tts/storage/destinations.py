"""Where audio goes: a destination validated before anything is downloaded or written.

:func:`destination_path` turns a URI or ``ObjectStoragePath`` into a path on a registered
filesystem or fails with a :class:`~airflow_provider_tts.exceptions.TtsConfigError`;
:func:`check_destination` fails with a :class:`TtsStorageError` when the bucket is missing or
unreachable, tells whether the destination is a folder, and creates a local folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.compat import conn_id_of
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.storage.s3 import KNOWN_BUCKETS, s3_call
from airflow_provider_tts.storage.schemes import scheme_of, write_mode
from airflow_provider_tts.storage.types import TtsStorageError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


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
    _check_scheme(raw, scheme_of(path), has_fs)
    return path


def _check_scheme(raw: str, scheme: str, has_fs: Callable[[str], bool]) -> None:
    if not has_fs(scheme):
        raise TtsConfigError(
            f"destination {raw!r}: no filesystem is registered for scheme {scheme!r}; install the provider "
            "that handles it (e.g. apache-airflow-providers-amazon for s3://)"
        )


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
    where = f"{scheme_of(path)}://{bucket}"
    try:
        s3 = s3_call(path)
        if s3 is not None:
            known = (conn_id_of(path), bucket)
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
