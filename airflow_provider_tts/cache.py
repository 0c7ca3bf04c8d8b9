"""The request cache: never pay twice for audio the destination already holds.

One policy for every operator that knows the request it pays for (the one-task operators, the
batch operators, ``/tts-stream``), kept in the destination folder itself, so it works on every
store and every Airflow minor and is shared by every task that writes there.

**What identifies a request.** Its fingerprint (vendor, kind and the validated body, see
:mod:`airflow_provider_tts.fingerprint`) *and* where it was paid (:class:`Endpoint`: the vendor's
API base URL and the account, the latter as a salted digest of the API key, never the key). Audio
made by the emulator is not served to a run against the vendor, nor one account's to another.

**Where the cache lives.** ``<folder>/.tts-cache/<key>.json``, one small entry per request, named
by :func:`cache_key`. The entry moves through the states of one paid request:

==============  =============================================================================
``claimed``     a task is about to send the create call (written *before* paying); created only
                if absent, so of two runs at once exactly one claims (atomic on local disks and
                S3; see :mod:`airflow_provider_tts.objects`)
``submitted``   the vendor's task id: any task that needs this request waits for that vendor task
                instead of paying again (a retry, a concurrent run)
``stored``      the file that holds the audio, its size, sha256 and the store's ETag; the task id
                is dropped (it is a capability at some vendors)
``rejected``    the vendor refused the request for good (e.g. ``HARMFUL_CONTENT_DETECTED``): an
                unchanged request is not sent again unless the operator is told to
==============  =============================================================================

**A hit is confirmed, not assumed.** A ``stored`` entry counts only when the file is still there
with the recorded content (:func:`~airflow_provider_tts.objects.content_matches`: the local file
hashed, S3's ETag from one HEAD). The entry is keyed by the request, not the file name, so a file
name that changes between runs finds the audio and copies it (no vendor call).

**Folders written by 0.1.** Audio stored then has a ``<file>.tts.json`` sidecar (fingerprint, size,
sha256) and no endpoint. When a request is not in ``.tts-cache/``, the sidecars in the folder are
read once, and a match whose content checks out is adopted for the endpoint of the run that finds
it (its entry is written then): such a folder is not paid for again.

Anything unreadable in an entry that would decide a payment (a claim or a task id) is an error,
never a silent miss: a miss there would pay twice.

**Many entries at once: the snapshot.** A batch that resumes after its worker was killed needs
every one of its entries again, and a GET each (1,000 of them, ~2 CPU-s on a quiet machine) took
longer than a worker lived under the chaos run's load (RELIABILITY D3). So a cache holding many
entries of a remote folder also keeps ``.tts-cache/snapshot.json.gz``: the bytes of every entry it
last read or wrote, saved at most every :data:`SNAPSHOT_SECONDS` while it writes and whenever a
batch phase ends. The snapshot is never trusted: an entry is taken from it only when its bytes
hash to the MD5 the folder's listing shows for that entry *now*
(:func:`~airflow_provider_tts.objects.listed_md5`), i.e. when it is byte for byte the object a GET
would return. Anything else (an entry changed since, a store that lists no MD5, a damaged
snapshot) is read as before, so the snapshot can make a read cheaper but never its answer older.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_tts import metrics
from airflow_provider_tts.fingerprint import fingerprint_hex
from airflow_provider_tts.objects import (
    content_matches,
    create_small,
    delete_small,
    info_checksum,
    listed,
    listed_md5,
    read_small,
    write_small,
)
from airflow_provider_tts.storage import TtsStorageError, is_local, plain_uri

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tts.storage import StoredAudio

log = logging.getLogger(__name__)

CACHE_FOLDER = ".tts-cache"
ENTRY_VERSION = 2
#: An entry is a few hundred bytes; anything much larger is not one of ours.
MAX_ENTRY_BYTES = 64 * 1024
#: The 0.1 sidecar beside each stored file (read to adopt a folder written by 0.1; no longer written).
LEGACY_SIDECAR_SUFFIX = ".tts.json"
LEGACY_SIDECAR_VERSION = 1
#: Hex characters of a fingerprint in a file name made from it: 64 bits, enough that two different
#: requests in one folder never collide in practice, short enough to read.
NAME_HEX_CHARS = 16
#: Salt of the account digest: a digest that is useless for anything but telling accounts apart.
_ACCOUNT_SALT = b"airflow-provider-tts request cache account v1\x00"
STATES = ("claimed", "submitted", "stored", "rejected")
#: ``.tts-cache/<SNAPSHOT_NAME>``: the bytes of many entries in one object (see the module's docstring).
SNAPSHOT_NAME = "snapshot.json.gz"
SNAPSHOT_VERSION = 1
#: Fewer entries than this are read one GET each: cheaper than a snapshot's write and its larger read.
SNAPSHOT_MIN_ENTRIES = 32
#: While entries are being written, the snapshot is saved at most this often (one PUT of all of them).
SNAPSHOT_SECONDS = 15.0
#: A snapshot is ~100 bytes per entry compressed; these bound what is read and inflated.
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
MAX_SNAPSHOT_INFLATED = 512 * 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    """Where a request is paid: the vendor, its API base URL and the account (a digest, never the key)."""

    api: str
    base_url: str
    account: str

    @classmethod
    def of(cls, api: str, base_url: str, api_key: str) -> Endpoint:
        digest = hashlib.sha256(_ACCOUNT_SALT + api_key.encode("utf-8")).hexdigest()[:16]
        return cls(api, base_url.rstrip("/"), f"acct:{digest}")

    def ident(self) -> str:
        return f"{self.api} {self.base_url} {self.account}"


def cache_key(fingerprint: str, endpoint: Endpoint) -> str:
    """The name of a request's entry: sha256 of the fingerprint and the endpoint."""
    return hashlib.sha256(f"{fingerprint}\n{endpoint.ident()}".encode()).hexdigest()


def fingerprint_name(fingerprint: str, extension: str) -> str:
    """A file name made from the request alone: ``<first 16 hex of the fingerprint><extension>``."""
    digest = fingerprint_hex(fingerprint)
    if len(digest) < NAME_HEX_CHARS or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"expected a sha256 hex fingerprint, got {fingerprint[:80]!r}")
    return f"{digest[:NAME_HEX_CHARS]}{extension}"


@dataclass(frozen=True)
class CachedAudio:
    """Audio found in the folder that was made from the same request, its content confirmed."""

    path: ObjectStoragePath
    uri: str
    size_bytes: int
    sha256: str
    content_type: str
    duration_seconds: float | None
    credits: int | None
    etag: str | None


class RequestCache:
    """The cache entries of one destination folder, for requests paid on one endpoint.

    :param folder: the destination folder (its ``.tts-cache/`` holds the entries).
    :param endpoint: where this task pays (from the hook's connection).
    :param owner: who claims: the task instance's identity digest (stable across its tries).
    :param legacy: look for 0.1 sidecars when a request has no entry (one LIST, then their reads).
    :param listed: the folder's listing (``{name: info}``, :func:`~airflow_provider_tts.objects.listed`),
        if the caller just made it: the search for sidecars needs no LIST of its own, and on S3 a
        hit whose listed size and ETag are the recorded ones needs no HEAD.
    """

    def __init__(
        self,
        folder: ObjectStoragePath,
        endpoint: Endpoint,
        owner: str,
        *,
        legacy: bool = True,
        listed: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.folder = folder
        self.endpoint = endpoint
        self.owner = owner
        self.legacy = legacy
        self._listed = listed
        self._names = None if listed is None else list(listed)
        self._legacy_index: dict[str, str] | None = None
        # The snapshot's contents: {entry file name: its bytes} as this process last read or wrote them
        # (``_known``), and the entries of an earlier snapshot the listing vouched for (``_carried``).
        self._known: dict[str, bytes] = {}
        self._carried: dict[str, bytes] = {}
        self._unsaved = False
        self._saved_at = time.monotonic()
        self._saving = threading.Lock()

    # ------------------------------------------------------------------------------ reading

    def entry_name(self, fingerprint: str) -> str:
        """The request's entry's file name in ``.tts-cache/`` (a string: a path costs ~50 µs per join)."""
        return f"{cache_key(fingerprint, self.endpoint)}.json"

    def entry_path(self, fingerprint: str) -> ObjectStoragePath:
        return self.folder / CACHE_FOLDER / self.entry_name(fingerprint)

    def read(self, fingerprint: str) -> dict[str, Any] | None:
        """The request's entry, None when there is none; an error when one is there but unreadable."""
        path = self.entry_path(fingerprint)
        try:
            raw = read_small(path, MAX_ENTRY_BYTES)
        except (OSError, ValueError) as exc:
            raise TtsStorageError(f"could not read the request cache entry {path}: {exc}") from exc
        if raw is None:
            self._forget(path.name)
            return None
        return self._accept(fingerprint, path.name, raw)

    def _accept(self, fingerprint: str, name: str, raw: bytes) -> dict[str, Any]:
        """The entry in ``raw`` (the bytes of entry ``name``), checked; remembered for the snapshot."""
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if (
            not isinstance(entry, dict)
            or entry.get("version") != ENTRY_VERSION
            or entry.get("state") not in STATES
            or entry.get("fingerprint") != fingerprint
        ):
            raise TtsStorageError(
                f"the request cache entry {self.folder / CACHE_FOLDER / name} is not one this provider can read; "
                "it decides whether the vendor is paid, so it is not ignored. Delete it to pay for the request afresh."
            )
        self._remember(name, raw)
        return entry

    def hit(self, fingerprint: str, entry: Mapping[str, Any] | None) -> CachedAudio | None:
        """The stored audio of ``entry`` if its file still holds the recorded bytes (else None)."""
        if entry is None or entry.get("state") != "stored":
            return None
        file_name = entry.get("file")
        size, sha256 = entry.get("size_bytes"), entry.get("sha256")
        if not isinstance(file_name, str) or not isinstance(size, int) or not isinstance(sha256, str):
            return None
        path = self.folder / file_name
        etag = entry.get("etag") if isinstance(entry.get("etag"), str) else None
        try:
            seen = self._listed.get(file_name) if self._listed is not None else None
            if not content_matches(path, size=size, sha256=sha256, etag=etag, listed=seen):
                log.info("%s no longer holds the audio its cache entry recorded; not a hit", plain_uri(path))
                return None
        except OSError as exc:
            log.warning("Could not check %s (%s); not a hit", plain_uri(path), exc)
            return None
        credits = entry.get("credits")
        return CachedAudio(
            path=path,
            uri=plain_uri(path),
            size_bytes=size,
            sha256=sha256,
            content_type=str(entry.get("content_type") or ""),
            duration_seconds=_float(entry.get("duration_seconds")),
            credits=credits if isinstance(credits, int) and not isinstance(credits, bool) else None,
            etag=etag,
        )

    def find(
        self, fingerprint: str, *, absent: bool = False, raw: bytes | None = None
    ) -> tuple[CachedAudio | None, dict[str, Any] | None]:
        """``(confirmed stored audio or None, the entry or None)`` for one request.

        A request with no entry is looked up among the folder's 0.1 sidecars; a match is adopted
        (its entry written) so the next run finds it directly. ``absent``: a listing just showed
        there is no entry, so it is not read; ``raw``: the entry's bytes are these (a listing just
        vouched for them), so it is not read either.
        """
        found, entry = self._find(fingerprint, absent=absent, raw=raw)
        metrics.cache("miss" if found is None else "hit", vendor=self.endpoint.api)
        return found, entry

    def _find(
        self, fingerprint: str, *, absent: bool = False, raw: bytes | None = None
    ) -> tuple[CachedAudio | None, dict[str, Any] | None]:
        if raw is not None:  # the entry's current bytes, vouched for by a listing (the snapshot)
            entry: dict[str, Any] | None = self._accept(fingerprint, self.entry_name(fingerprint), raw)
        else:
            entry = None if absent else self.read(fingerprint)
        if entry is None and self.legacy:
            adopted = self._adopt_legacy(fingerprint)
            if adopted is not None:
                return adopted, self.read(fingerprint)
        return self.hit(fingerprint, entry), entry

    def find_all(self, fingerprints: Iterable[str], threads: int = 8) -> dict[str, tuple[CachedAudio | None, Any]]:
        """:meth:`find` for many requests at once: one LIST of the entries, then a GET per entry that exists.

        A request without an entry costs nothing more. Reading every entry instead (a GET each, most
        answered 404 on a first run) took 105 s for a 1,000-text batch on a busy machine before its first
        create, longer than a worker lived in the chaos run (RELIABILITY D3), so a batch killed every
        minute never paid for anything. An entry written after the LIST is not lost: claiming it is
        conditional, and a claim that finds an entry returns it instead of paying. Many entries that
        exist are taken from the snapshot where the listing vouches for its bytes (the module's
        docstring): a resumed batch of 1,000 makes one GET instead of 1,000.
        """
        unique = list(dict.fromkeys(fingerprints))
        if self.legacy and unique:
            self._legacy()  # one LIST before the threads, not one per thread
        present = self._entry_infos() if unique else None
        names = {fp: self.entry_name(fp) for fp in unique}
        existing = len(unique) if present is None else sum(1 for name in names.values() if name in present)
        snapshot = self._load_snapshot(present) if present is not None and existing >= SNAPSHOT_MIN_ENTRIES else {}

        def one(fingerprint: str) -> tuple[CachedAudio | None, Any]:
            name = names[fingerprint]
            if present is not None and name not in present:
                return self.find(fingerprint, absent=True)
            return self.find(fingerprint, raw=snapshot.get(name))

        with ThreadPoolExecutor(max(1, threads), thread_name_prefix="tts-cache") as pool:
            found = dict(zip(unique, pool.map(one, unique), strict=True))
        if existing - sum(1 for name in names.values() if name in snapshot) >= SNAPSHOT_MIN_ENTRIES:
            self.save_snapshot()  # many were read one by one: the next reader of them need not
        return found

    def _entry_infos(self) -> dict[str, dict[str, Any]] | None:
        """``{file name: listing info}`` of ``.tts-cache/`` (one fresh LIST); None when it cannot be listed."""
        try:
            return listed(self.folder / CACHE_FOLDER)
        except Exception:
            log.warning("Could not list %s; reading each entry instead", self.folder / CACHE_FOLDER, exc_info=True)
            return None

    # ------------------------------------------------------------------------------ the snapshot

    def _snapshot_path(self) -> ObjectStoragePath:
        return self.folder / CACHE_FOLDER / SNAPSHOT_NAME

    def _remember(self, name: str, raw: bytes) -> None:
        if self._known.get(name, self._carried.get(name)) != raw:  # news to the snapshot
            self._unsaved = True
        self._known[name] = raw

    def _forget(self, name: str) -> None:
        if self._known.pop(name, None) is not None or self._carried.pop(name, None) is not None:
            self._unsaved = True

    def _load_snapshot(self, present: Mapping[str, Mapping[str, Any]]) -> dict[str, bytes]:
        """``{entry file name: bytes}`` of the snapshot's entries whose bytes the listing ``present`` vouches for."""
        if is_local(self.folder) or SNAPSHOT_NAME not in present:
            return {}
        path = self._snapshot_path()
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

    def save_snapshot(self, *, now: bool = True) -> None:
        """Save the snapshot if an entry changed since it was last saved (``now=False``: and it is due).

        Only for remote folders with many entries: a local entry is read as cheaply as the snapshot,
        and a few are read faster one by one. One thread saves at a time; the others go on. A snapshot
        that cannot be written costs the next reader its GETs, nothing else, so it is logged, not raised.
        """
        if not self._unsaved or is_local(self.folder):
            return
        if not now and time.monotonic() - self._saved_at < SNAPSHOT_SECONDS:
            return
        if not self._saving.acquire(blocking=False):
            return
        try:
            entries = {**self._carried, **self._known}
            if len(entries) < SNAPSHOT_MIN_ENTRIES:
                return
            self._unsaved = False
            self._saved_at = time.monotonic()
            text = {name: raw.decode("utf-8", "replace") for name, raw in entries.items()}
            packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip at its fastest level: ~6x smaller
            body = json.dumps({"version": SNAPSHOT_VERSION, "entries": text}, separators=(",", ":")).encode()
            write_small(self._snapshot_path(), packer.compress(body) + packer.flush())
        except OSError as exc:
            self._unsaved = True
            log.warning("Could not save the request cache snapshot %s (%s); the next reader GETs each entry",
                        self._snapshot_path(), exc)  # fmt: skip
        finally:
            self._saving.release()

    # ------------------------------------------------------------------------------ writing

    def claim(self, fingerprint: str, *, force: bool = False) -> dict[str, Any] | None:
        """Claim the request before paying for it: None when this task now holds the claim.

        Otherwise the entry that was there (another run's claim or task id, stored audio, a
        refusal): the caller must not pay on the strength of this call. ``force`` takes the claim
        whatever is there (the caller decided to pay again: a refusal to retry, a lost answer to
        resend, audio that is gone, ``reuse_cached=False``).
        """
        entry = self._entry(fingerprint, "claimed", requested_at=time.time())
        path = self.entry_path(fingerprint)
        if force:
            self._write(fingerprint, entry)
            return None
        try:
            if self._create(path, entry):
                return None
        except OSError as exc:
            raise TtsStorageError(f"could not claim the request cache entry {path}: {exc}") from exc
        existing = self.read(fingerprint)
        if existing is None:  # released between the two calls: claim again, once
            if self._create(path, entry):
                return None
            existing = self.read(fingerprint)
        if existing is None:
            raise TtsStorageError(f"the request cache entry {path} keeps appearing and disappearing; not paying")
        return existing

    def submitted(self, fingerprint: str, tts_task_id: str, *, credits: int | None = None) -> None:
        """Record the vendor's task id (and the credits its create answer reported, if any)."""
        entry = self._entry(
            fingerprint, "submitted", tts_task_id=tts_task_id, submitted_at=time.time(), credits=credits
        )
        self._write(fingerprint, entry)

    def stored(
        self, fingerprint: str, path: ObjectStoragePath, stored: StoredAudio, *, credits: int | None = None
    ) -> None:
        """Record the audio now at ``path`` (in this folder) for the request; forget its task id."""
        etag = stored.etag
        if etag is None and not is_local(path):
            try:
                etag = info_checksum(path.fs.info(path.path))  # one request on stores whose write gave none
            except OSError:
                etag = None
        entry = self._entry(
            fingerprint,
            "stored",
            file=path.name,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            etag=etag.strip('"') if etag else None,
            content_type=stored.content_type,
            duration_seconds=stored.duration_seconds,
            credits=credits,
        )
        self._write(fingerprint, entry)

    def rejected(self, fingerprint: str, reason: str) -> None:
        self._write(fingerprint, self._entry(fingerprint, "rejected", reason=reason[:500], rejected_at=time.time()))

    def release(self, fingerprint: str) -> None:
        """Drop this task's claim: the create call provably created nothing, anyone may pay now."""
        path = self.entry_path(fingerprint)
        delete_small(path)
        self._forget(path.name)

    def _entry(self, fingerprint: str, state: str, **fields: Any) -> dict[str, Any]:
        return {
            "version": ENTRY_VERSION,
            "fingerprint": fingerprint,
            "endpoint": self.endpoint.ident(),
            "state": state,
            "owner": self.owner,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **fields,
        }

    def _write(self, fingerprint: str, entry: Mapping[str, Any]) -> None:
        path = self.entry_path(fingerprint)
        raw = _dump(entry)
        try:
            write_small(path, raw)
        except OSError as exc:
            self._forget(path.name)  # it holds the old bytes or the new: unknown
            raise TtsStorageError(f"could not write the request cache entry {path}: {exc}") from exc
        self._remember(path.name, raw)
        self.save_snapshot(now=False)

    def _create(self, path: ObjectStoragePath, entry: Mapping[str, Any]) -> bool:
        """:func:`~airflow_provider_tts.objects.create_small` of an entry, remembered when it was created."""
        raw = _dump(entry)
        if not create_small(path, raw):
            return False
        self._remember(path.name, raw)
        self.save_snapshot(now=False)
        return True

    # ------------------------------------------------------------------------------ 0.1 folders

    def _legacy(self) -> dict[str, str]:
        """``{fingerprint: audio file name}`` from the folder's 0.1 sidecars (one LIST, then a read each)."""
        if self._legacy_index is not None:
            return self._legacy_index
        index: dict[str, str] = {}
        names = self._names
        if names is None:
            try:
                found = self.folder.fs.ls(self.folder.path, detail=False)
                names = [os.path.basename(str(n).rstrip("/")) for n in found]
            except (FileNotFoundError, NotADirectoryError):
                names = []
        sidecars = [n for n in names if n.endswith(LEGACY_SIDECAR_SUFFIX)]

        def read(name: str) -> tuple[str, Any]:
            try:
                return name, json.loads(read_small(self.folder / name, MAX_ENTRY_BYTES) or b"null")
            except (OSError, ValueError):
                return name, None

        with ThreadPoolExecutor(8, thread_name_prefix="tts-cache-legacy") as pool:
            for name, data in pool.map(read, sidecars):
                if isinstance(data, dict) and data.get("version") == LEGACY_SIDECAR_VERSION:
                    fingerprint = data.get("fingerprint")
                    if isinstance(fingerprint, str):
                        index[fingerprint] = name.removesuffix(LEGACY_SIDECAR_SUFFIX)
        self._legacy_index = index
        return index

    def _adopt_legacy(self, fingerprint: str) -> CachedAudio | None:
        file_name = self._legacy().get(fingerprint)
        if file_name is None:
            return None
        try:
            data = json.loads(read_small(self.folder / f"{file_name}{LEGACY_SIDECAR_SUFFIX}", MAX_ENTRY_BYTES) or b"")
        except (OSError, ValueError):
            return None
        entry = {"state": "stored", "file": file_name, **{k: data.get(k) for k in ("size_bytes", "sha256")}}
        entry.update(content_type=data.get("content_type"), duration_seconds=data.get("duration_seconds"))
        found = self.hit(fingerprint, entry)
        if found is None:
            return None
        from airflow_provider_tts.storage import StoredAudio

        # No etag: stored() asks the store for it, as for any write that gave none.
        stored = StoredAudio(found.uri, found.size_bytes, found.sha256, found.content_type, found.duration_seconds,
                             "", False, None)  # fmt: skip
        self.stored(fingerprint, found.path, stored, credits=found.credits)
        log.info("Adopted %s (stored by an earlier release) for request %s", found.uri, fingerprint)
        return found


def _dump(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
