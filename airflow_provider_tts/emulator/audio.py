"""Playable audio made in-process: espeak-ng speech when installed, a tone melody otherwise.

Clients under test download, store and hash this audio, and some check it with real decoders, so it
must be genuine WAV/FLAC with truthful headers and durations. Rendering is CPU work (or a subprocess),
so :class:`AudioRenderer` runs it on a small thread pool, never on the event loop, and caches results
so thousands of identical tasks cost one rendering.

Large downloads (benchmarks, memory tests) use :class:`SizedWav`: a header plus one small repeated
block, so a 2 GiB body never exists in memory.
"""

from __future__ import annotations

import array
import asyncio
import functools
import hashlib
import io
import logging
import math
import shutil
import struct
import subprocess
import sys
import wave
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .flac import encode_flac

log = logging.getLogger(__name__)

SECONDS_PER_CHAR = 0.06
MIN_SECONDS = 0.5
ESPEAK_MAX_CHARS = 600
_PENTATONIC = (220.0, 261.63, 293.66, 329.63, 392.0, 440.0, 523.25, 587.33)
_AMPLITUDE = 0.25 * 32767


@dataclass(frozen=True)
class Pcm:
    """16-bit signed little-endian mono PCM."""

    data: bytes
    rate: int

    @property
    def frames(self) -> int:
        return len(self.data) // 2

    @property
    def duration(self) -> float:
        """Exact duration in seconds; this is what RevidAPI status bodies report."""
        return self.frames / self.rate


@dataclass(frozen=True)
class Segment:
    """One subtitle placed on an SRT timeline."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class AudioSource:
    """Everything that determines a rendering; hashable so it doubles as the cache key.

    ``style`` is ``speech`` (TTS of ``text``), ``sound``/``music`` (text-to-sound for ``seconds``)
    or ``timeline`` (SRT: ``segments`` spoken at their start times, ``seconds`` long in total).
    """

    style: str
    text: str = ""
    seconds: float = 0.0
    segments: tuple[Segment, ...] = ()


# ---------------------------------------------------------------------------------------------
# Synthesis


@functools.lru_cache(maxsize=64)
def _note(freq: float, frames: int, rate: int) -> bytes:
    """One note with short fades, so concatenated notes do not click."""
    fade = min(frames // 4, int(rate * 0.005)) or 1
    step = 2 * math.pi * freq / rate
    samples = array.array(
        "h",
        (int(_AMPLITUDE * math.sin(step * i) * min(1.0, i / fade, (frames - 1 - i) / fade)) for i in range(frames)),
    )
    return _le_bytes(samples)


def _le_bytes(samples: array.array[int]) -> bytes:
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes()


def tone_melody(text: str, seconds: float, rate: int, note_seconds: float = 0.15) -> bytes:
    """A deterministic melody derived from a hash of ``text``: same text, same audio."""
    total = max(1, round(seconds * rate))
    note_frames = max(16, round(note_seconds * rate))
    digest = hashlib.sha256(text.encode("utf-8", "replace")).digest()
    parts: list[bytes] = []
    produced = 0
    index = 0
    while produced < total:
        byte = digest[index % len(digest)] ^ (index // len(digest))
        parts.append(_note(_PENTATONIC[byte % len(_PENTATONIC)], note_frames, rate))
        produced += note_frames
        index += 1
    return b"".join(parts)[: total * 2]


def speech_seconds(text: str, max_seconds: float) -> float:
    """Length of the tone stand-in for speech: ~60 ms per character, clamped."""
    return min(max_seconds, max(MIN_SECONDS, len(text) * SECONDS_PER_CHAR))


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_pcm(text: str, rate: int) -> Pcm | None:
    """Speak ``text`` with the espeak-ng binary; ``None`` if that fails for any reason."""
    try:
        done = subprocess.run(
            ["espeak-ng", "--stdout", "-v", "en-us", "-s", "165", "--stdin"],
            input=text[:ESPEAK_MAX_CHARS].encode("utf-8", "replace"),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("espeak-ng failed (%s); using tones", exc)
        return None
    if done.returncode != 0:
        log.warning("espeak-ng exited %s; using tones", done.returncode)
        return None
    return parse_wav_stream(done.stdout)


def parse_wav_stream(data: bytes) -> Pcm | None:
    """PCM from a WAV whose size fields may be bogus (espeak-ng writes to a pipe, not a file)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, rate, fmt_ok = 12, 0, False
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            fmt_ok = tag == 1 and channels == 1 and bits == 16
        elif chunk_id == b"data":
            if not fmt_ok or rate <= 0:
                return None
            pcm = data[body:]
            return Pcm(pcm[: len(pcm) // 2 * 2], rate)
        pos = body + size + (size & 1)
    return None


def resample(pcm: Pcm, rate: int) -> Pcm:
    """Nearest-sample rate conversion: crude, but only needed if espeak's rate differs."""
    if pcm.rate == rate or pcm.frames == 0:
        return pcm
    src = array.array("h")
    src.frombytes(pcm.data)
    count = max(1, round(pcm.frames * rate / pcm.rate))
    ratio = pcm.rate / rate
    return Pcm(array.array("h", (src[min(pcm.frames - 1, int(i * ratio))] for i in range(count))).tobytes(), rate)


def fit(data: bytes, frames: int) -> bytes:
    """Truncate or pad with silence to exactly ``frames`` frames."""
    size = frames * 2
    return data[:size] if len(data) >= size else data + bytes(size - len(data))


# ---------------------------------------------------------------------------------------------
# Containers


def wav_bytes(pcm: Pcm) -> bytes:
    """A complete WAV file written by the stdlib ``wave`` module."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(pcm.rate)
        out.writeframes(pcm.data)
    return buf.getvalue()


def wav_header(data_len: int, riff_size: int, rate: int) -> bytes:
    """The 44-byte canonical header of a 16-bit mono PCM WAV."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        data_len,
    )


@functools.lru_cache(maxsize=8)
def _repeat_block(rate: int) -> bytes:
    """~128 KiB of a rate/50 Hz sine: a whole number of periods, so repeats are seamless."""
    period = 50
    one = array.array("h", (int(0.2 * 32767 * math.sin(2 * math.pi * i / period)) for i in range(period)))
    return _le_bytes(one) * 1310


class SizedWav:
    """A valid WAV of exactly ``total`` bytes, produced chunk by chunk.

    RIFF files with proper padding always have an even length, so for an odd ``total`` the data
    chunk holds whole samples and one pad byte (counted in the RIFF size) ends the file.
    """

    def __init__(self, total: int, rate: int) -> None:
        if total < 44:
            raise ValueError("a WAV needs at least 44 bytes")
        self.total = total
        self.rate = rate
        self.data_len = (total - 44) & ~1
        self.header = wav_header(self.data_len, total - 8, rate)

    @property
    def duration(self) -> float:
        return self.data_len / 2 / self.rate

    def chunks(self) -> Iterator[bytes | memoryview]:
        """Header, then the repeated block (views of one object), then the pad byte if any."""
        yield self.header
        block = memoryview(_repeat_block(self.rate))
        remaining = self.data_len
        while remaining >= len(block):
            yield block
            remaining -= len(block)
        if remaining:
            yield block[:remaining]
        if self.total - 44 - self.data_len:
            yield b"\x00"


# ---------------------------------------------------------------------------------------------
# Rendering service


class AudioRenderer:
    """Renders and caches audio off the event loop; one instance per running emulator.

    Concurrent requests for the same source share one rendering (in-flight futures), and finished
    encodings sit in a byte-bounded LRU so memory stays flat however many tasks exist. The budget
    (``cache_bytes``, the emulator's ``audio_cache_mb``) bounds that memory; a run that downloads
    more distinct audio than fits renders evicted audio again, which benchmarks must size away.
    :meth:`stats` counts renders and evictions so they can tell.
    """

    def __init__(
        self,
        engine: str,
        rate: int,
        max_seconds: float,
        max_srt_seconds: float,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if engine == "espeak" and not espeak_available():
            raise RuntimeError("audio_engine='espeak' but the espeak-ng binary is not installed")
        self.use_espeak = engine == "espeak" or (engine == "auto" and espeak_available())
        self.rate = rate
        self.max_seconds = max_seconds
        self.max_srt_seconds = max_srt_seconds
        self._cache_budget = cache_bytes
        self._cache: OrderedDict[tuple[AudioSource, str], bytes] = OrderedDict()
        self._cache_size = 0
        self._inflight: dict[tuple[AudioSource, str], asyncio.Future[bytes]] = {}
        self._renders: dict[str, int] = {}
        self._evictions = 0
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tts-emulator-audio")

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        """Renders finished (by format: ``pcm``, ``flac``, ``wav``), renders under way, the cache.

        ``renders`` counts every synthesis and encoding done, a re-render after an eviction again:
        more renders than distinct audio means the cache was too small for the run.
        """
        return {
            "renders": dict(self._renders),
            "rendering": len(self._inflight),
            "cache_bytes": self._cache_size,
            "cache_entries": len(self._cache),
            "cache_budget_bytes": self._cache_budget,
            "evictions": self._evictions,
        }

    async def pcm(self, source: AudioSource) -> Pcm:
        return Pcm(await self._get(source, "pcm"), self.rate)

    async def encoded(self, source: AudioSource, fmt: str) -> bytes:
        """The file bytes of ``source`` as ``wav`` or ``flac``."""
        return await self._get(source, fmt)

    async def _get(self, source: AudioSource, fmt: str) -> bytes:
        key = (source, fmt)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._render(source, fmt))
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(future)

    async def _render(self, source: AudioSource, fmt: str) -> bytes:
        loop = asyncio.get_running_loop()
        if fmt == "pcm":
            data = await loop.run_in_executor(self._executor, self._render_pcm, source)
        else:
            pcm = Pcm(await self._get(source, "pcm"), self.rate)
            encoder = encode_flac if fmt == "flac" else _wav_of
            data = await loop.run_in_executor(self._executor, encoder, pcm.data, pcm.rate)
        self._renders[fmt] = self._renders.get(fmt, 0) + 1
        self._remember((source, fmt), data)
        return data

    def _remember(self, key: tuple[AudioSource, str], data: bytes) -> None:
        if len(data) > self._cache_budget:
            return
        self._cache[key] = data
        self._cache_size += len(data)
        while self._cache_size > self._cache_budget:
            _, old = self._cache.popitem(last=False)
            self._cache_size -= len(old)
            self._evictions += 1

    def _speech(self, text: str, max_seconds: float) -> bytes:
        if self.use_espeak and text.strip():
            spoken = espeak_pcm(text, self.rate)
            if spoken is not None and spoken.frames:
                spoken = resample(spoken, self.rate)
                frames = min(spoken.frames, int(max_seconds * self.rate))
                return fit(spoken.data, max(frames, int(MIN_SECONDS * self.rate)))
        return tone_melody(text, speech_seconds(text, max_seconds), self.rate)

    def _render_pcm(self, source: AudioSource) -> bytes:
        rate = self.rate
        if source.style == "speech":
            return self._speech(source.text, self.max_seconds)
        if source.style in ("sound", "music"):
            note = 0.05 if source.style == "sound" else 0.25
            seconds = min(self.max_seconds, max(MIN_SECONDS, source.seconds))
            return tone_melody(f"{source.style}:{source.text}", seconds, rate, note_seconds=note)
        if source.style == "timeline":
            total = round(min(self.max_srt_seconds, max(MIN_SECONDS, source.seconds)) * rate)
            buf = bytearray(total * 2)
            for seg in source.segments:
                start = round(seg.start * rate)
                slot = min(round(seg.end * rate), total) - start
                if slot <= 0:
                    continue
                voice = self._speech(seg.text, seg.end - seg.start)
                buf[start * 2 : (start + slot) * 2] = fit(voice, slot)
            return bytes(buf)
        raise ValueError(f"unknown audio style {source.style!r}")


def _wav_of(data: bytes, rate: int) -> bytes:
    return wav_bytes(Pcm(data, rate))
