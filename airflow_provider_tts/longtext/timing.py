"""The timing sidecar of a joined file, and captions made from its parts.

``<name>.timing.json`` lies beside the audio: for each part its index, request fingerprint,
character offsets in the text and start and duration in the audio, so a player or a video tool can
seek by sentence and a pipeline can tell which part a sentence is in. ``.srt`` and ``.vtt`` captions
(one cue per part) are written on request. Both are built here as bytes (pure), and written by the
operator through the same whole-or-nothing small-object writer as the batch manifest.

Reading SRT is :mod:`airflow_provider_tts.srt`'s; writing is kept here, apart, because a cue of
ours is a part of a text, not a subtitle a user gave.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_tts.longtext.join import JoinedAudio
    from airflow_provider_tts.longtext.split import TextPart

#: The version of the sidecar's layout, so a reader can tell a future change.
TIMING_VERSION = 1
#: The caption formats offered.
CAPTION_FORMATS = ("srt", "vtt")


def timing_document(
    audio_uri: str, joined: JoinedAudio, parts: Sequence[TextPart], fingerprints: Sequence[str]
) -> dict[str, Any]:
    """The sidecar's content: the file's shape and every part's place in the text and in the audio."""
    starts = joined.starts()
    return {
        "version": TIMING_VERSION,
        "audio": audio_uri,
        "format": joined.format,
        "sample_rate": joined.sample_rate,
        "channels": joined.channels,
        "duration_seconds": round(joined.duration_seconds, 6),
        "silence_seconds": joined.silence_seconds,
        "parts": [
            {
                "index": part.index,
                "fingerprint": fingerprint,
                "start_char": part.start,
                "end_char": part.end,
                "start_seconds": round(start, 6),
                "duration_seconds": round(duration, 6),
                "text": part.text,
            }
            for part, fingerprint, start, duration in zip(parts, fingerprints, starts, joined.durations, strict=True)
        ],
    }


def timing_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=1).encode() + b"\n"


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def captions(document: dict[str, Any], fmt: str) -> bytes:
    """SubRip (``srt``) or WebVTT (``vtt``) captions with one cue per part, from a timing document."""
    if fmt not in CAPTION_FORMATS:
        raise ValueError(f"captions must be some of {', '.join(CAPTION_FORMATS)}, got {fmt!r}")
    separator = "," if fmt == "srt" else "."
    lines = ["WEBVTT", ""] if fmt == "vtt" else []
    for number, part in enumerate(document["parts"], start=1):
        start = part["start_seconds"]
        end = start + part["duration_seconds"]
        text = " ".join(part["text"].split())  # a cue is one paragraph; a blank line would end it
        if fmt == "srt":
            lines.append(str(number))
        lines += [f"{_clock(start, separator)} --> {_clock(end, separator)}", text, ""]
    return "\n".join(lines).encode()
