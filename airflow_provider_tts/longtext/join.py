"""Joining the audio of a text's parts into one file, one part at a time.

Each part is opened, read and closed before the next, and only a block of it is held at once, so a
200,000-character chapter joins in the memory of one block, whatever its length. The joined file is
written into ``out`` (a local temporary the caller then stores atomically).

* **WAV** (what RevidAPI and the emulator send, and ``/tts-stream`` on ``wav``): the parts' sample
  data concatenated under one header whose sizes are computed from the parts' headers first; no
  library, no re-encoding, bit-exact.
* **MP3**: the parts' MPEG audio frames concatenated; ID3 tags and each part's Xing/Info/VBRI frame
  (which would announce the first part's length as the whole file's) are left out. No re-encoding.
  Silence between MP3 parts is not offered (it would need an encoder).
* **FLAC and anything else libsndfile reads** (Camb's ``/tts`` answers FLAC): decoded block by block
  and encoded once more by ``soundfile`` (libsndfile, bundled in its wheel, so nothing to install
  beside it). FLAC is lossless, so the samples are exactly the parts'. Joining FLAC frames without
  decoding would mean renumbering every frame header and recomputing its CRCs: a second FLAC
  implementation to maintain, against a well-kept library.

Parts whose sample rate, channels or sample format differ are an error naming both parts: a file
with one header over differently shaped data plays as noise.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from airflow_provider_tts.storage.content import sniff_extension

#: Bytes copied at once: the joiner's memory, whatever the length of the text.
BLOCK_BYTES = 1 << 20
#: Frames decoded at once on the ``soundfile`` path.
BLOCK_FRAMES = 1 << 16
#: Media type and extension of each joined format.
FORMATS = {
    "wav": ("audio/wav", ".wav"),
    "mp3": ("audio/mpeg", ".mp3"),
    "flac": ("audio/flac", ".flac"),
    "ogg": ("audio/ogg", ".ogg"),
}
_WAV_LIMIT = 0xFFFFFFFF

_SNIFFED = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".ogg": "ogg"}

Opener = Callable[[], IO[bytes]]


class AudioJoinError(ValueError):
    """The parts cannot be joined into one valid file (mismatched shapes, an unknown format, a bad part)."""


@dataclass(frozen=True)
class JoinedAudio:
    """What was joined: the format, its shape, and each part's duration in seconds (in order)."""

    format: str
    sample_rate: int
    channels: int
    durations: list[float]
    silence_seconds: float

    @property
    def content_type(self) -> str:
        return FORMATS[self.format][0]

    @property
    def extension(self) -> str:
        return FORMATS[self.format][1]

    @property
    def duration_seconds(self) -> float:
        return sum(self.durations) + self.silence_seconds * max(0, len(self.durations) - 1)

    def starts(self) -> list[float]:
        """Each part's start in the joined file, in seconds."""
        out, at = [], 0.0
        for duration in self.durations:
            out.append(at)
            at += duration + self.silence_seconds
        return out


def sniff(head: bytes) -> str | None:
    """The format the first bytes of a part announce (``wav``, ``flac``, ``mp3``, ``ogg``), or None.

    The storage layer's sniffing, so that what is stored as ``.mp3`` is what is joined as MP3 (ADTS
    AAC, which shares MPEG's frame sync, is neither).
    """
    return _SNIFFED.get(sniff_extension(head) or "")


def join_audio(
    parts: Sequence[Opener], out: IO[bytes], *, names: Sequence[str], silence_seconds: float = 0.0
) -> JoinedAudio:
    """Join the parts (each opened by its callable, in order) into ``out``; ``names`` for messages."""
    if not parts:
        raise AudioJoinError("no parts to join")
    formats = []
    for index, opener in enumerate(parts):
        with opener() as part:
            formats.append(sniff(part.read(12)))
        if formats[-1] is None:
            raise AudioJoinError(f"part {index + 1} ({names[index]}) is not audio this provider can join")
        if formats[-1] != formats[0]:
            raise AudioJoinError(
                f"part {index + 1} ({names[index]}) is {formats[-1]} but part 1 ({names[0]}) is {formats[0]}; "
                "the parts of one file must have one format"
            )
    if formats[0] == "wav":
        return _join_wav(parts, out, names, silence_seconds)
    if formats[0] == "mp3":
        if silence_seconds:
            raise AudioJoinError("silence between MP3 parts is not offered (it needs an encoder); ask for WAV or FLAC")
        return _join_mp3(parts, out, names)
    return _join_soundfile(parts, out, names, silence_seconds, str(formats[0]))


# --- WAV -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WavPart:
    fmt: bytes  # the "fmt " chunk's body
    data_offset: int
    data_bytes: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", self.fmt[:16])
        return tag, channels, rate, bits if align else 0

    @property
    def block_align(self) -> int:
        return int(struct.unpack("<H", self.fmt[12:14])[0])

    def describe(self) -> str:
        tag, channels, rate, bits = self.shape
        return f"{rate} Hz, {channels} channel(s), {bits}-bit (format tag {tag:#x})"


def _read_wav_header(part: IO[bytes], name: str) -> _WavPart:
    head = part.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioJoinError(f"{name} is not a WAV file")
    fmt = b""
    while True:
        chunk = part.read(8)
        if len(chunk) < 8:
            raise AudioJoinError(f"{name}: no data chunk in the WAV file")
        chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if chunk_id == b"data":
            if not fmt:
                raise AudioJoinError(f"{name}: the WAV data chunk comes before its fmt chunk")
            offset = part.tell()
            end = part.seek(0, 2)
            # A streamed WAV may say 0 or 0xFFFFFFFF for "unknown"; the file's end then says it.
            available = end - offset
            data_bytes = available if size in (0, _WAV_LIMIT) or size > available else size
            align = struct.unpack("<H", fmt[12:14])[0] or 1
            return _WavPart(fmt, offset, data_bytes - data_bytes % align)
        body_size = size + (size & 1)
        if chunk_id == b"fmt ":
            fmt = part.read(body_size)[:size]
            if len(fmt) < 16:
                raise AudioJoinError(f"{name}: a WAV fmt chunk of {len(fmt)} bytes")
        else:
            part.seek(body_size, 1)


def _join_wav(parts: Sequence[Opener], out: IO[bytes], names: Sequence[str], silence: float) -> JoinedAudio:
    headers: list[_WavPart] = []
    for index, opener in enumerate(parts):
        with opener() as part:
            header = _read_wav_header(part, f"part {index + 1} ({names[index]})")
        if header.shape != (headers[0].shape if headers else header.shape):
            raise AudioJoinError(
                f"part {index + 1} ({names[index]}) is {header.describe()} but part 1 ({names[0]}) is "
                f"{headers[0].describe()}; the parts of one file must match"
            )
        headers.append(header)
    first = headers[0]
    _, channels, rate, bits = first.shape
    align = first.block_align
    gap_frames = round(silence * rate)
    gap = (b"\x80" if bits == 8 else b"\x00") * (gap_frames * align)
    data_bytes = sum(h.data_bytes for h in headers) + len(gap) * (len(headers) - 1)
    fmt = first.fmt + (b"\x00" if len(first.fmt) & 1 else b"")
    riff_size = 4 + 8 + len(fmt) + 8 + data_bytes
    if riff_size > _WAV_LIMIT:
        raise AudioJoinError(f"the joined audio would be {data_bytes} bytes, over WAV's 4 GiB; ask for FLAC")
    out.write(b"RIFF" + struct.pack("<I", riff_size) + b"WAVE")
    out.write(b"fmt " + struct.pack("<I", len(first.fmt)) + fmt)
    out.write(b"data" + struct.pack("<I", data_bytes))
    for index, (opener, header) in enumerate(zip(parts, headers, strict=True)):
        if index and gap:
            out.write(gap)
        with opener() as part:
            part.seek(header.data_offset)
            _copy(part, out, header.data_bytes, f"part {index + 1} ({names[index]})")
    durations = [h.data_bytes / align / rate for h in headers]
    return JoinedAudio("wav", rate, channels, durations, gap_frames / rate if rate else 0.0)


def _copy(source: IO[bytes], out: IO[bytes], count: int, name: str) -> None:
    left = count
    while left:
        block = source.read(min(BLOCK_BYTES, left))
        if not block:
            raise AudioJoinError(f"{name} ended {left} bytes early")
        out.write(block)
        left -= len(block)


# --- MP3 -----------------------------------------------------------------------------------------

# Bitrates in kbit/s by (MPEG-1?, layer) and index 1..14.
_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True)
class Mp3Frame:
    """One MPEG audio frame header, decoded: enough to find the next frame and to compare parts."""

    version: int  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    layer: int  # 1, 2 or 3
    sample_rate: int
    channels: int
    length: int  # bytes, header included
    samples: int  # samples per channel


def parse_mp3_header(header: bytes) -> Mp3Frame | None:
    """The frame a 4-byte header announces, or None when it is not a valid frame header."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 3
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # reserved values, or a free-format bitrate (no length to find the next frame by)
    layer = 4 - layer_bits
    mpeg1 = version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index - 1] * 1000
    rate = _RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    channels = 1 if header[3] >> 6 == 3 else 2
    if layer == 1:
        return Mp3Frame(version, layer, rate, channels, (12 * bitrate // rate + padding) * 4, 384)
    samples = 1152 if layer == 2 or mpeg1 else 576
    return Mp3Frame(version, layer, rate, channels, samples // 8 * bitrate // rate + padding, samples)


def _is_info_frame(frame: bytes) -> bool:
    """A Xing/Info/VBRI frame: the encoder's summary of one file, no audio of its own."""
    return b"Xing" in frame[4:64] or b"Info" in frame[4:64] or frame[36:40] == b"VBRI"


def _skip_id3(part: IO[bytes]) -> None:
    head = part.read(10)
    if head[:3] == b"ID3" and len(head) == 10:
        size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        part.seek(10 + size + (10 if head[5] & 0x10 else 0))
    else:
        part.seek(0)


def _join_mp3(parts: Sequence[Opener], out: IO[bytes], names: Sequence[str]) -> JoinedAudio:
    shape: tuple[int, int, int, int] | None = None
    durations = []
    for index, opener in enumerate(parts):
        name = f"part {index + 1} ({names[index]})"
        samples = 0
        with opener() as part:
            _skip_id3(part)
            first = True
            while True:
                header = part.read(4)
                if len(header) < 4 or header[:3] == b"TAG" or header == b"APET" or header == b"LYRI":
                    break  # the end, or the tags that may trail the frames
                frame = parse_mp3_header(header)
                if frame is None:
                    raise AudioJoinError(f"{name}: not an MPEG audio frame at byte {part.tell() - 4}")
                body = part.read(frame.length - 4)
                if len(body) < frame.length - 4:
                    break  # a truncated last frame: left out
                this = (frame.version, frame.layer, frame.sample_rate, frame.channels)
                if shape is None:
                    shape = this
                elif this != shape:
                    raise AudioJoinError(
                        f"{name} is MPEG layer {frame.layer} at {frame.sample_rate} Hz, {frame.channels} channel(s) "
                        f"but part 1 ({names[0]}) is layer {shape[1]} at {shape[2]} Hz, {shape[3]} channel(s); "
                        "the parts of one file must match"
                    )
                if first and _is_info_frame(header + body):
                    first = False
                    continue
                first = False
                out.write(header)
                out.write(body)
                samples += frame.samples
        if shape is None:
            raise AudioJoinError(f"{name} holds no MPEG audio frame")
        durations.append(samples / shape[2])
    assert shape is not None
    return JoinedAudio("mp3", shape[2], shape[3], durations, 0.0)


# --- FLAC and the rest, through soundfile --------------------------------------------------------

_DTYPES = {"PCM_S8": "int16", "PCM_U8": "int16", "PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32",
           "DOUBLE": "float64"}  # fmt: skip


def _join_soundfile(
    parts: Sequence[Opener], out: IO[bytes], names: Sequence[str], silence: float, kind: str
) -> JoinedAudio:
    import numpy as np
    import soundfile as sf

    shapes: list[tuple[int, int, str, str]] = []
    frames: list[int] = []
    for index, opener in enumerate(parts):
        with opener() as raw, sf.SoundFile(raw) as part:
            shape = (part.samplerate, part.channels, part.format, part.subtype)
            if shapes and shape != shapes[0]:
                raise AudioJoinError(
                    f"part {index + 1} ({names[index]}) is {_describe(shape)} but part 1 ({names[0]}) is "
                    f"{_describe(shapes[0])}; the parts of one file must match"
                )
            shapes.append(shape)
            frames.append(part.frames)
    rate, channels, container, subtype = shapes[0]
    dtype: Any = _DTYPES.get(subtype, "float32")
    gap_frames = round(silence * rate)
    with sf.SoundFile(out, "w", samplerate=rate, channels=channels, format=container, subtype=subtype) as joined:
        for index, opener in enumerate(parts):
            if index and gap_frames:
                joined.write(np.zeros((gap_frames, channels), dtype=dtype))
            with opener() as raw, sf.SoundFile(raw) as part:
                for block in part.blocks(blocksize=BLOCK_FRAMES, dtype=dtype, always_2d=True):
                    joined.write(block)
    return JoinedAudio(kind, rate, channels, [n / rate for n in frames], gap_frames / rate)


def _describe(shape: tuple[int, int, str, str]) -> str:
    rate, channels, container, subtype = shape
    return f"{container} {subtype} at {rate} Hz, {channels} channel(s)"
