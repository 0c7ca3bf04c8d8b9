"""The request cache's snapshot: many entries' bytes in one object, believed only where a listing vouches.

A batch that starts over after its worker was killed needs every one of its request cache entries
again (:mod:`airflow_provider_tts.cache`). One GET each took 10-112 s for 1,000 entries at the chaos
run's load, longer than a worker lived there (RELIABILITY D3, BUG-8). So a cache of a remote folder
that holds many entries also keeps ``.tts-cache/snapshot.json.gz``: the bytes of every entry this
process last read or wrote, gzipped JSON, saved whenever a batch phase ends and at most every
:data:`SNAPSHOT_SECONDS` while entries are written.

The snapshot is never trusted on its own: an entry is taken from it only when its bytes hash to the
MD5 the folder's fresh listing shows for that entry now
(:func:`~airflow_provider_tts.objects.listed_md5`), i.e. when it is byte for byte what a GET would
return. An entry changed since, a store that lists no MD5, a damaged snapshot: those entries are
read one by one, as without a snapshot. Deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.objects import listed_md5, read_small, write_small

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger("airflow_provider_tts.cache")

#: The snapshot's file name in ``.tts-cache/``.
SNAPSHOT_NAME = "snapshot.json.gz"
SNAPSHOT_VERSION = 1
#: Fewer entries than this are read one GET each: cheaper than a snapshot's write and its larger read.
SNAPSHOT_MIN_ENTRIES = 32
#: While entries are being written, the snapshot is saved at most this often (one PUT of all of them).
SNAPSHOT_SECONDS = 15.0
#: A snapshot is ~100-250 bytes per entry compressed; these bound what is read and inflated.
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
MAX_SNAPSHOT_INFLATED = 512 * 1024 * 1024


class EntrySnapshot:
    """The snapshot of one ``.tts-cache/`` folder, kept up to date by its ``RequestCache``.

    :param folder: the ``.tts-cache/`` folder; None for a local one (its entries are read as
        cheaply as a snapshot would be: nothing is kept or saved).
    """

    def __init__(self, folder: ObjectStoragePath | None) -> None:
        self.folder = folder
        # {entry file name: its bytes} as this process last read or wrote them (``_known``), and the
        # entries of an earlier snapshot the listing vouched for (``_carried``): what the next save holds.
        self._known: dict[str, bytes] = {}
        self._carried: dict[str, bytes] = {}
        self._unsaved = False
        self._saved_at = time.monotonic()
        self._saving = threading.Lock()

    def remember(self, name: str, raw: bytes) -> None:
        """Entry ``name`` holds ``raw`` (just read or written)."""
        if self._known.get(name, self._carried.get(name)) != raw:  # news to the snapshot
            self._unsaved = True
        self._known[name] = raw

    def forget(self, name: str) -> None:
        """Entry ``name`` is gone, or its bytes are unknown (a write that failed)."""
        if self._known.pop(name, None) is not None or self._carried.pop(name, None) is not None:
            self._unsaved = True

    def load(self, present: Mapping[str, Mapping[str, Any]]) -> dict[str, bytes]:
        """``{entry file name: bytes}`` of the saved entries whose bytes the listing ``present`` vouches for."""
        if self.folder is None or SNAPSHOT_NAME not in present:
            return {}
        path = self.folder / SNAPSHOT_NAME
        try:
            packed = read_small(path, MAX_SNAPSHOT_BYTES)
            inflater = zlib.decompressobj(wbits=31)
            text = inflater.decompress(packed or b"", MAX_SNAPSHOT_INFLATED)
            if inflater.unconsumed_tail:
                raise ValueError(f"inflates to over {MAX_SNAPSHOT_INFLATED} bytes")
            payload = json.loads(text) if text else None
        except (OSError, ValueError, zlib.error) as exc:
            log.warning("Ignoring the request cache snapshot %s (%s); reading each entry instead", path, exc)
            return {}
        entries = payload.get("entries") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or payload.get("version") != SNAPSHOT_VERSION or not isinstance(entries, dict):
            log.warning("Ignoring the request cache snapshot %s: not one this provider wrote", path)
            return {}
        vouched: dict[str, bytes] = {}
        for name, value in entries.items():
            md5 = listed_md5(present.get(name))
            if md5 is not None and isinstance(value, str):
                raw = value.encode()
                if hashlib.md5(raw, usedforsecurity=False).hexdigest() == md5:
                    vouched[name] = raw
        self._carried.update(vouched)
        log.info("Request cache snapshot %s: %d of its %d entries are current", path, len(vouched), len(entries))
        return vouched

    def save(self, *, now: bool = True) -> None:
        """Save the snapshot if an entry changed since it was last saved (``now=False``: and it is due).

        Only with :data:`SNAPSHOT_MIN_ENTRIES` or more: a few entries are read faster one by one. One
        thread saves at a time; the others go on. A snapshot that cannot be written costs the next
        reader its GETs, nothing else, so it is logged, not raised.
        """
        if not self._unsaved or self.folder is None:
            return
        if not now and time.monotonic() - self._saved_at < SNAPSHOT_SECONDS:
            return
        if not self._saving.acquire(blocking=False):
            return
        path = self.folder / SNAPSHOT_NAME
        try:
            entries = {**self._carried, **self._known}
            if len(entries) < SNAPSHOT_MIN_ENTRIES:
                return
            self._unsaved = False
            self._saved_at = time.monotonic()
            text = {name: raw.decode("utf-8", "replace") for name, raw in entries.items()}
            packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip at its fastest level
            body = json.dumps({"version": SNAPSHOT_VERSION, "entries": text}, separators=(",", ":")).encode()
            write_small(path, packer.compress(body) + packer.flush())
        except OSError as exc:
            self._unsaved = True
            log.warning("Could not save the request cache snapshot %s (%s); the next reader GETs each entry", path, exc)
        finally:
            self._saving.release()
