"""Independent checks of the emulator's audio: a WAV reader and a FLAC verifier/decoder.

The CRCs here are bit-by-bit implementations written from the format description, deliberately not
the encoder's table-driven ones, so an encoder bug cannot hide behind an identical checker bug.
"""

from __future__ import annotations

import array
import hashlib
import io
import struct
import sys
import wave
from dataclasses import dataclass


@dataclass
class Wav:
    channels: int
    sample_width: int
    rate: int
    frames: bytes

    @property
    def duration(self) -> float:
        return len(self.frames) / self.sample_width / self.channels / self.rate


def read_wav(data: bytes) -> Wav:
    """Parse with the stdlib and check the RIFF size fields against the real length."""
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WAVE"
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8, "RIFF size must match the file"
    with wave.open(io.BytesIO(data)) as reader:
        frames = reader.readframes(reader.getnframes())
        result = Wav(reader.getnchannels(), reader.getsampwidth(), reader.getframerate(), frames)
    data_pos = data.find(b"data")
    declared = struct.unpack_from("<I", data, data_pos + 4)[0]
    assert declared == len(frames), "data chunk size must match the samples present"
    return result


def crc8_bitwise(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc16_bitwise(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


@dataclass
class Flac:
    rate: int
    channels: int
    bits: int
    total_samples: int
    min_block: int
    max_block: int
    min_frame: int
    max_frame: int
    frames: int
    pcm: bytes  # decoded, 16-bit little-endian

    @property
    def duration(self) -> float:
        return self.total_samples / self.rate


def _utf8(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    length = 0
    while first & (0x80 >> length):
        length += 1
    value = first & (0xFF >> (length + 1))
    for i in range(1, length):
        assert data[pos + i] & 0xC0 == 0x80, "continuation byte expected"
        value = (value << 6) | (data[pos + i] & 0x3F)
    return value, pos + length


def read_flac(data: bytes) -> Flac:
    """Verify every structural rule our encoder must follow and decode the (VERBATIM) samples."""
    assert data[:4] == b"fLaC"
    pos, last, info = 4, False, None
    while not last:
        header = data[pos]
        last = bool(header & 0x80)
        length = int.from_bytes(data[pos + 1 : pos + 4], "big")
        body = data[pos + 4 : pos + 4 + length]
        if header & 0x7F == 0:
            assert length == 34
            info = body
        pos += 4 + length
    assert info is not None, "STREAMINFO is mandatory"
    min_block, max_block = struct.unpack(">HH", info[:4])
    min_frame, max_frame = int.from_bytes(info[4:7], "big"), int.from_bytes(info[7:10], "big")
    packed = int.from_bytes(info[10:18], "big")
    rate, channels = packed >> 44, ((packed >> 41) & 7) + 1
    bits, total = ((packed >> 36) & 31) + 1, packed & ((1 << 36) - 1)
    assert (channels, bits) == (1, 16)
    assert 16 <= min_block <= max_block
    rate_codes = {8000: 4, 16000: 5, 22050: 6, 24000: 7, 32000: 8, 44100: 9, 48000: 10}
    pcm = bytearray()
    sizes, number = [], 0
    while pos < len(data):
        start = pos
        assert data[pos : pos + 2] == b"\xff\xf8", f"frame {number}: sync code"
        size_code, rate_code = data[pos + 2] >> 4, data[pos + 2] & 0x0F
        assert rate_code in (0, rate_codes.get(rate, 0))
        assert data[pos + 3] == 0x08, "mono, 16-bit, reserved bit 0"
        frame_number, pos = _utf8(data, pos + 4)
        assert frame_number == number
        if size_code == 6:
            block, pos = data[pos] + 1, pos + 1
        elif size_code == 7:
            block, pos = struct.unpack_from(">H", data, pos)[0] + 1, pos + 2
        elif 8 <= size_code <= 15:
            block = 256 << (size_code - 8)
        elif 2 <= size_code <= 5:
            block = 576 << (size_code - 2)
        else:
            assert size_code == 1
            block = 192
        assert crc8_bitwise(data[start:pos]) == data[pos], f"frame {number}: header CRC-8"
        pos += 1
        assert data[pos] == 0x02, "VERBATIM subframe without wasted bits"
        pos += 1
        samples = array.array("h")
        samples.frombytes(data[pos : pos + block * 2])
        assert len(samples) == block, "truncated frame"
        pos += block * 2
        assert crc16_bitwise(data[start:pos]) == struct.unpack_from(">H", data, pos)[0], f"frame {number}: CRC-16"
        pos += 2
        if sys.byteorder == "little":
            samples.byteswap()
        pcm += samples.tobytes()
        sizes.append(pos - start)
        if pos < len(data):
            assert block == max_block, "only the last block may be short"
        number += 1
    assert total == len(pcm) // 2, "total samples in STREAMINFO"
    assert hashlib.md5(pcm).digest() == info[18:34], "MD5 of the PCM"
    if sizes:
        assert (min_frame, max_frame) == (min(sizes), max(sizes))
    return Flac(rate, channels, bits, total, min_block, max_block, min_frame, max_frame, number, bytes(pcm))
