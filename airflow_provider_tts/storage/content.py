"""What an audio body is, and the refusal of bodies that are not audio.

Its media type, its container (from the type, else from the first bytes), its file extension and,
for WAV and FLAC, its duration. Functions of a content type and the first bytes of a body only:
they touch no storage and no network.
"""

from __future__ import annotations

import logging
import os
import struct

from airflow_provider_tts.exceptions import TtsConfigError, TtsProtocolError

log = logging.getLogger(__name__)

#: File extension for each audio media type the vendors send; anything else is ``.bin``.
EXTENSIONS = {
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "video/mp4": ".mp4",
}
#: Extensions that name the same container as another (:func:`same_container`).
SAME_CONTAINER = {".m4a": ".mp4", ".oga": ".ogg", ".opus": ".ogg", ".wave": ".wav"}
#: Media types accepted besides ``audio/*``: what the vendors document (Revid's SRT-to-speech may
#: return MP4), and the generic binary types storage hosts serve files under (S3 defaults to
#: ``binary/octet-stream``). Anything else (an HTML login page, a JSON error) is refused.
ACCEPTED_TYPES = frozenset({"video/mp4", "application/octet-stream", "binary/octet-stream"})
#: Types whose body is not labelled as a format: the first bytes are sniffed instead.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def sniff_extension(head: bytes) -> str | None:
    """The extension of the audio container the first bytes announce; None when they announce none."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ".wav"
    if head[:4] == b"fLaC":
        return ".flac"
    if head[:4] == b"OggS":
        return ".ogg"
    if head[4:8] == b"ftyp":
        return ".mp4"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        # MPEG audio frame sync; ADTS AAC shares the first 12 bits (layer bits 00).
        return ".aac" if len(head) > 1 and head[:3] != b"ID3" and head[1] & 0x06 == 0 else ".mp3"
    return None


def same_container(extension: str) -> str:
    """The extension that stands for ``extension``'s container: ``.m4a`` is ``.mp4``, ``.opus`` is ``.ogg``."""
    return SAME_CONTAINER.get(extension, extension)


def _looks_like_text(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:16].lower()
    return start.startswith((b"<!doctype", b"<html", b"<?xml", b"<", b"{", b"["))


def check_audio_body(content_type: str, head: bytes, *, what: str) -> None:
    """Refuse a response that is not audio, before anything is written.

    Accepted: ``audio/*``, ``video/mp4`` (Revid SRT-to-speech may render MP4),
    ``application/octet-stream`` and ``binary/octet-stream`` (what storage hosts label files they
    know nothing about) or no type at all; the generic types only when the first bytes are not
    markup or JSON (a login page served as ``octet-stream`` is still a login page). The error names
    the type that arrived and a short excerpt of the body, so the cause is visible in the task log.
    """
    kind = media_type(content_type)
    accepted = kind.startswith("audio/") or kind in ACCEPTED_TYPES or kind == ""
    if accepted and not (kind in _GENERIC_TYPES and _looks_like_text(head)):
        return
    from airflow_provider_tts.transport import scrub  # a page may echo the signed URL it was asked for

    excerpt = scrub(head[:160].decode("utf-8", "replace").replace("\r", " ").replace("\n", " ").strip())
    raise TtsProtocolError(
        f"{what}: expected audio (audio/*, video/mp4 or application/octet-stream), got "
        f"{content_type or 'no Content-Type'!s} starting with {excerpt!r}; nothing was stored"
    )


def extension_for(content_type: str, head: bytes = b"") -> str:
    """The file extension for a body: from its media type, else from its first bytes, else ``.bin``."""
    ext = EXTENSIONS.get(media_type(content_type))
    if ext is None and media_type(content_type) in _GENERIC_TYPES:
        ext = sniff_extension(head)
    if ext is None:
        log.warning("Unknown audio content type %r; saving with extension .bin", content_type)
        return ".bin"
    return ext


def check_extension(name: str, content_type: str, head: bytes) -> None:
    """Refuse a file name whose audio extension contradicts what the body is.

    Refused rather than warned about: a FLAC stored as ``daily.mp3`` is silently broken for every
    player and pipeline that trusts the name, and a warning in a task log nobody reads does not stop
    it from being published. Only a known audio extension against a known format is refused: a
    name without one (``daily``, ``daily.audio``, ``.bin``) or a body whose format cannot be told
    is stored as named. Use a folder destination (the extension then follows the content type) or
    the matching extension.
    """
    ext = os.path.splitext(name)[1].lower()
    if ext not in set(EXTENSIONS.values()) | set(SAME_CONTAINER):
        return
    actual = EXTENSIONS.get(media_type(content_type)) or sniff_extension(head)
    if actual is None or same_container(ext) == same_container(actual):
        return
    raise TtsConfigError(
        f"destination {name!r} says {ext} but the audio is {content_type or 'untyped'} ({actual}); refusing to "
        f"store it under a name that contradicts its format. Name the file *{actual} or give a folder "
        "destination ending in '/' (the extension then follows the content type)"
    )


def audio_duration(header: bytes) -> float | None:
    """Duration from the first bytes of a WAV or FLAC file; None when it cannot be told."""
    try:
        if header[:4] == b"RIFF" and header[8:12] == b"WAVE":
            pos, rate, block_align = 12, 0, 0
            while pos + 8 <= len(header):
                chunk_id, size = header[pos : pos + 4], struct.unpack_from("<I", header, pos + 4)[0]
                if chunk_id == b"fmt " and pos + 24 <= len(header):
                    _, _, rate, _, block_align = struct.unpack_from("<HHIIH", header, pos + 8)
                elif chunk_id == b"data":
                    return size / (rate * block_align) if rate and block_align else None
                pos += 8 + size + (size & 1)
            return None
        if header[:4] == b"fLaC" and len(header) >= 42 and header[4] & 0x7F == 0:
            # STREAMINFO: 20-bit sample rate, 3-bit channels, 5-bit bps, 36-bit total samples.
            bits = int.from_bytes(header[18:26], "big")
            rate = bits >> 44
            total = bits & ((1 << 36) - 1)
            return total / rate if rate and total else None
    except struct.error:
        return None
    return None
