"""Where the bytes go until they are committed: the writer interface and the non-S3 writers.

A writer receives the chunks, then either commits them (they become visible at the destination
at once, whole) or abandons them, leaving nothing behind. :class:`TempWriter` writes a temporary
beside the destination (``rename`` and ``copy`` modes). The object stores' direct writers are in
:mod:`airflow_provider_tts.storage.s3` and :mod:`airflow_provider_tts.storage.blobs`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.storage.schemes import WriteMode

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

#: S3: at or below this size a file is one ``PutObject``; above, a multipart upload in parts of this
#: size (S3's minimum part is 5 MiB). Also the block size of other object stores' files. Bounds the
#: memory a write holds whatever the file size.
UPLOAD_BLOCK_BYTES = 8 * 1024**2
#: Size of each ``write()`` to a local file (curl's size): large writes make the kernel build the
#: page cache from large folios, slower to fault in on VMs that hand memory back to their host
#: (see BENCHMARKS.md).
LOCAL_WRITE_BYTES = 16 * 1024
#: Key of the object metadata holding the sha256 of the bytes written (S3 ``x-amz-meta-sha256``, GCS
#: and Azure custom metadata): what makes ``skip_if_identical`` one metadata request, no read-back.
SHA256_METADATA = "sha256"


@dataclass(frozen=True)
class Existing:
    """What is at the destination already, from one metadata request (never a download)."""

    size: int
    sha256: str | None = None  # from object metadata, where this package wrote it
    etag: str | None = None  # S3's, for objects written without the sha256 metadata


class Writer:
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

    def same_as(self, existing: Existing, sha256: str) -> bool:
        return existing.sha256 == sha256

    def commit(self, sha256: str, size: int) -> None:
        raise NotImplementedError

    def abandon(self) -> None:
        raise NotImplementedError


class TempWriter(Writer):
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
                abandon_file(self.out)
            if self.mode == "rename":
                os.unlink(self.temp.path)
            else:
                self.temp.fs.rm(self.temp.path)
        except FileNotFoundError:
            pass
        except Exception:  # the original error matters more; a leftover is overwritten next try
            log.warning("Could not remove the temporary %s", self.temp, exc_info=True)


def abandon_file(out: Any) -> None:
    """Give up an fsspec file being written without committing it.

    Closing an object-store file commits it (s3fs completes the multipart upload, gcsfs sends the
    final chunk, adlfs commits the block list), which would publish a partial object. ``discard()``
    cancels the upload instead where the file has one; the file object is then marked closed, even
    when the discard failed, so that its finaliser (``__del__`` closes an open file) never commits
    after all. A local file is simply closed.
    """
    discard = getattr(out, "discard", None)
    try:
        if callable(discard):
            discard()
        else:
            out.close()
    except Exception:  # the original error matters more; an unfinished upload publishes nothing
        log.warning("Could not cancel the upload %s", out, exc_info=True)
    finally:
        if callable(discard):
            with contextlib.suppress(AttributeError):  # io-based files (memory://): a read-only ``closed``
                out.closed = True


def _write_all(out: Any, chunk: bytes, step: int) -> None:
    """Write ``chunk`` to ``out`` in writes of at most ``step`` bytes, without copying it."""
    view = memoryview(chunk)
    write = out.write
    for start in range(0, len(view), step):
        piece = view[start : start + step]
        while piece:
            piece = piece[write(piece) :]
