"""Parse SRT subtitle text into the cue list RevidAPI's SRT-to-speech takes.

Strict on purpose: a subtitle file that does not parse is an error naming the line, raised before
anything is sent, rather than a request the vendor rejects (or, worse, accepts and bills) later.
"""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_tts.exceptions import TtsInvalidRequestError

_TIME = r"(\d{1,2}):([0-5]\d):([0-5]\d)[,.](\d{3})"
_TIMING = re.compile(rf"\s*{_TIME}\s*-->\s*{_TIME}(?:\s+.*)?\s*")


def _millis(h: str, m: str, s: str, ms: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def _stamp(millis: int) -> str:
    h, rest = divmod(millis, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def parse_srt(text: str) -> list[dict[str, Any]]:
    """Cues as ``{"index", "start", "end", "text"}`` dicts, times normalised to ``HH:MM:SS,mmm``.

    :raises TtsInvalidRequestError: naming the 1-based line that does not fit, for a missing or
        non-numeric index, a malformed timing line, an end before its start, or a cue without text.
    """
    if not isinstance(text, str):
        raise TtsInvalidRequestError(f"srt must be SRT text, got {type(text).__name__}")
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cues: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        number = i + 1
        index = lines[i].strip()
        if not index.isdigit():
            raise TtsInvalidRequestError(f"SRT line {number}: expected a cue number, got {index[:60]!r}")
        if i + 1 >= len(lines):
            raise TtsInvalidRequestError(f"SRT line {number + 1}: cue {index} has no timing line")
        timing = _TIMING.fullmatch(lines[i + 1])
        if timing is None:
            raise TtsInvalidRequestError(
                f"SRT line {number + 1}: expected 'HH:MM:SS,mmm --> HH:MM:SS,mmm', got {lines[i + 1][:60]!r}"
            )
        start, end = _millis(*timing.groups()[:4]), _millis(*timing.groups()[4:])
        if end < start:
            raise TtsInvalidRequestError(f"SRT line {number + 1}: cue {index} ends before it starts")
        body: list[str] = []
        i += 2
        while i < len(lines) and lines[i].strip():
            body.append(lines[i].strip())
            i += 1
        if not body:
            raise TtsInvalidRequestError(f"SRT line {number}: cue {index} has no text")
        cues.append({"index": int(index), "start": _stamp(start), "end": _stamp(end), "text": " ".join(body)})
    if not cues:
        raise TtsInvalidRequestError("SRT text contains no cues")
    return cues
