"""HTTP range requests over an object in storage, for the Audio view's player.

A browser's ``<audio>`` element asks for ``Range: bytes=N-`` when it starts and again on every seek;
without ``206 Partial Content`` answers it cannot seek (Chromium) or refuses to play at all
(Safari). The object is read through the deployment's storage connection (``ObjectStoragePath``),
so the browser gets bytes from the api-server and never a storage URL, key or signed URL.

Only what starts like audio is served (the container's magic bytes, :func:`sniff_extension`):
even a URI a task recorded cannot make the api-server hand out a file that is not audio.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.storage.content import sniff_extension

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

#: Bytes read from storage per chunk sent to the browser.
CHUNK = 256 * 1024
#: The media type sent for each container the first bytes announce.
MEDIA_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".mp4": "audio/mp4",
    ".mp3": "audio/mpeg",
    ".aac": "audio/aac",
}
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


class RangeNotSatisfiable(ValueError):
    """A range that starts past the end of the object (HTTP 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte positions (inclusive) that ``header`` asks for; None: send everything.

    One range only (what media elements ask); several ranges, or a header this does not understand,
    are answered with the whole object, which RFC 9110 allows. Raises :class:`RangeNotSatisfiable`
    for a range that starts at or past ``size``.
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # bytes=-N: the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - suffix), size - 1
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(header)
    return start, end


def media_type_of(head: bytes) -> str | None:
    """The audio media type the first bytes announce; None when they are not audio."""
    extension = sniff_extension(head)
    return MEDIA_TYPES.get(extension) if extension else None


def object_size(path: ObjectStoragePath) -> int:
    info: Any = path.fs.info(path.path)
    return int(info["size"])


def read_head(path: ObjectStoragePath, length: int = 16) -> bytes:
    with path.open("rb") as handle:
        return bytes(handle.read(length))


def chunks(path: ObjectStoragePath, start: int, length: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``start``, in chunks (the object is opened once, seeked once)."""
    with path.open("rb") as handle:
        handle.seek(start)
        left = length
        while left > 0:
            data = handle.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield bytes(data)
