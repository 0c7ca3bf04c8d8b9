"""Never pay twice for the same audio: a request's fingerprint, recorded beside the audio it made.

A batch pipeline re-run every night over mostly the same texts should only pay for the texts that
changed. The fingerprint (:func:`airflow_provider_tts.fingerprint.request_fingerprint` of vendor,
kind and the *validated* body, which includes the output format) names what was asked for. After
audio is stored, a small JSON sidecar ``<file>.tts.json`` is written next to it, recording the
fingerprint and the stored object's size and sha256. Before the next request, :func:`lookup`
answers "does this destination already hold audio made from this fingerprint?": the sidecar
matches *and* the object exists with the recorded size. Then the operator skips the vendor.

Why a sidecar: it works on every filesystem ObjectStoragePath supports (local, S3, GCS, ...),
needs no store-specific metadata API, and is readable by people. Object metadata (S3 user
metadata written with the object) would save a request per lookup and cannot drift from its
object; it may come later, once the storage writer can set metadata on every store.

Invariants that keep a hit honest:

* a sidecar never outlives the audio it describes: :func:`forget` removes it *before* new audio is
  written to the same path, and :func:`record` writes it only *after* the audio is in place. A crash
  in between leaves audio without a sidecar: a miss (a second payment), never a wrong hit;
* anything unexpected while reading (no sidecar, garbled JSON, another version, a different
  fingerprint, a missing object, a different size) is a miss, never an error: the cache may only
  save money, it may not fail a run;
* folder destinations name the file after the fingerprint (:func:`fingerprint_name`), so "same
  text, same voice, same format" lands on the same object and different requests never share one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.fingerprint import fingerprint_hex

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tts.storage import StoredAudio

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".tts.json"
SIDECAR_VERSION = 1
#: A sidecar is a few hundred bytes; anything much larger is not one of ours.
MAX_SIDECAR_BYTES = 64 * 1024
#: Hex characters of the fingerprint used in a derived file name: 64 bits, enough that two
#: different requests in one folder never collide in practice, short enough to read.
NAME_HEX_CHARS = 16


@dataclass(frozen=True)
class CachedAudio:
    """Audio found at the destination that was made from the same request."""

    uri: str
    size_bytes: int
    sha256: str
    content_type: str
    fingerprint: str
    credits: int | None
    recorded: dict[str, Any]


def fingerprint_name(fingerprint: str, extension: str) -> str:
    """The file name for a folder destination: ``<first 16 hex of the fingerprint><extension>``."""
    digest = fingerprint_hex(fingerprint)
    if len(digest) < NAME_HEX_CHARS or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"expected a sha256 hex fingerprint, got {fingerprint[:80]!r}")
    return f"{digest[:NAME_HEX_CHARS]}{extension}"


def sidecar_of(path: ObjectStoragePath) -> ObjectStoragePath:
    """Where the sidecar of ``path`` lives: beside it, named ``<file name>.tts.json``."""
    return path.parent / f"{path.name}{SIDECAR_SUFFIX}"


def _is_local(path: ObjectStoragePath) -> bool:
    return path.protocol in ("file", "local", "")


def lookup(path: ObjectStoragePath, fingerprint: str) -> CachedAudio | None:
    """The audio at ``path`` if its sidecar records ``fingerprint`` and the object has the recorded size."""
    sidecar = sidecar_of(path)
    try:
        raw = sidecar.fs.cat_file(sidecar.path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a cache read must never fail the run; it only costs a payment
        log.warning("Could not read %s (%s); treating it as a cache miss", sidecar, exc)
        return None
    if len(raw) > MAX_SIDECAR_BYTES:
        log.warning("%s is %d bytes, not a sidecar of this provider; cache miss", sidecar, len(raw))
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        log.warning("%s is not valid JSON; cache miss", sidecar)
        return None
    if not isinstance(data, dict) or data.get("version") != SIDECAR_VERSION:
        return None
    if data.get("fingerprint") != fingerprint:
        return None
    size = data.get("size_bytes")
    if not isinstance(size, int) or isinstance(size, bool):
        return None
    try:
        actual = int(path.stat()["size"])
    except FileNotFoundError:
        return None
    except Exception as exc:
        log.warning("Could not stat %s (%s); cache miss", path, exc)
        return None
    if actual != size:
        log.info("%s has %d bytes, its sidecar records %d; cache miss", path, actual, size)
        return None
    credits = data.get("credits")
    return CachedAudio(
        uri=str(data.get("uri") or path),
        size_bytes=size,
        sha256=str(data.get("sha256", "")),
        content_type=str(data.get("content_type", "")),
        fingerprint=fingerprint,
        credits=credits if isinstance(credits, int) and not isinstance(credits, bool) else None,
        recorded=data,
    )


def find_in_folder(
    folder: ObjectStoragePath, fingerprint: str, extensions: tuple[str, ...] = (".flac", ".wav", ".mp3")
) -> CachedAudio | None:
    """:func:`lookup` of ``<folder>/<fingerprint name><ext>`` for each extension, first hit wins.

    For the legacy task path, whose file extension follows the ``Content-Type`` of the download
    and so is not known before the (paid) submit that this check exists to avoid.
    """
    for extension in extensions:
        hit = lookup(folder / fingerprint_name(fingerprint, extension), fingerprint)
        if hit is not None:
            return hit
    return None


def forget(path: ObjectStoragePath) -> None:
    """Remove the sidecar of ``path`` (before new audio is written there); absent is fine."""
    sidecar = sidecar_of(path)
    with contextlib.suppress(FileNotFoundError):
        sidecar.fs.rm_file(sidecar.path)


def record(
    path: ObjectStoragePath,
    fingerprint: str,
    stored: StoredAudio,
    *,
    api: str,
    kind: str,
    uri: str,
    credits: int | None = None,
) -> None:
    """Write the sidecar of ``path`` after its audio was stored (atomically on local disks).

    On object stores one PUT is atomic; on a local filesystem the sidecar is written to a
    temporary beside it and renamed, so a reader never sees half of one.
    """
    payload = {
        "version": SIDECAR_VERSION,
        "fingerprint": fingerprint,
        "api": api,
        "kind": kind,
        "uri": uri,
        "size_bytes": stored.size_bytes,
        "sha256": stored.sha256,
        "content_type": stored.content_type,
        "duration_seconds": stored.duration_seconds,
        "credits": credits,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    data = json.dumps(payload, sort_keys=True, indent=1).encode()
    sidecar = sidecar_of(path)
    fs = sidecar.fs
    if _is_local(path):
        temp = f"{sidecar.path}.{os.getpid()}.partial"
        fs.pipe_file(temp, data)
        fs.mv(temp, sidecar.path)
    else:
        fs.pipe_file(sidecar.path, data)
