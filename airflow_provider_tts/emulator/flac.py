"""A minimal, valid FLAC encoder for 16-bit mono PCM, written from the format specification.

Camb.ai's current docs say ``/tts-result`` streams FLAC, so the emulator must serve real FLAC that a
player (or ``flac --test``) accepts, without any third-party library. Compression is irrelevant here,
so every frame uses VERBATIM subframes: with 16-bit samples and one channel everything stays
byte-aligned and the encoder reduces to headers, big-endian samples and two CRCs.
"""

from __future__ import annotations

import array
import hashlib
import struct
import sys

BLOCK_SIZE = 4096

# Frame-header codes from the FLAC format (RFC 9639, section 9.1).
_SAMPLE_RATE_CODES = {
    88200: 0b0001,
    176400: 0b0010,
    192000: 0b0011,
    8000: 0b0100,
    16000: 0b0101,
    22050: 0b0110,
    24000: 0b0111,
    32000: 0b1000,
    44100: 0b1001,
    48000: 0b1010,
    96000: 0b1011,
}
_BLOCK_SIZE_CODES = {192: 0b0001, 576: 0b0010, 1152: 0b0011, 2304: 0b0100, 4608: 0b0101}
_BLOCK_SIZE_CODES.update({256 << (n - 8): n for n in range(8, 16)})
_SAMPLE_SIZE_16 = 0b100
_MONO = 0b0000
_VERBATIM_SUBFRAME_HEADER = b"\x02"  # zero bit, type 000001 (VERBATIM), no wasted bits


def _crc8_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC8 = _crc8_table()
_CRC16 = _crc16_table()


def crc8(data: bytes | bytearray) -> int:
    """CRC-8 of a frame header (polynomial x^8 + x^2 + x + 1, initial value 0)."""
    crc = 0
    table = _CRC8
    for byte in data:
        crc = table[crc ^ byte]
    return crc


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16 of a whole frame (polynomial x^16 + x^15 + x^2 + 1, initial value 0)."""
    crc = 0
    table = _CRC16
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def utf8_number(value: int) -> bytes:
    """The frame number in FLAC's extended UTF-8-like coding (up to 36 bits)."""
    if value < 0x80:
        return bytes([value])
    if value >= 1 << 36:
        raise ValueError(f"frame number {value} does not fit in 36 bits")
    # An n-byte sequence carries 5n + 1 payload bits (n >= 2), except the 7-byte form's 36.
    length = next(n for n in range(2, 8) if value < 1 << min(5 * n + 1, 36))
    tail = []
    for _ in range(length - 1):
        tail.append(0x80 | (value & 0x3F))
        value >>= 6
    lead = ((0xFF << (8 - length)) & 0xFF) | value
    return bytes([lead, *reversed(tail)])


def _frame(number: int, samples_be: bytes, block_size: int, nominal_block: int, sample_rate: int) -> bytes:
    rate_code = _SAMPLE_RATE_CODES.get(sample_rate, 0b0000)  # 0000: "take it from STREAMINFO"
    extra = b""
    if block_size == nominal_block and block_size in _BLOCK_SIZE_CODES:
        size_code = _BLOCK_SIZE_CODES[block_size]
    elif block_size <= 256:
        size_code, extra = 0b0110, bytes([block_size - 1])
    else:
        size_code, extra = 0b0111, struct.pack(">H", block_size - 1)
    header = bytearray(b"\xff\xf8")  # sync code, reserved 0, fixed-blocksize stream
    header.append((size_code << 4) | rate_code)
    header.append((_MONO << 4) | (_SAMPLE_SIZE_16 << 1))
    header += utf8_number(number)
    header += extra
    header.append(crc8(header))
    frame = header + _VERBATIM_SUBFRAME_HEADER + samples_be
    return bytes(frame + struct.pack(">H", crc16(frame)))


def encode_flac(pcm: bytes, sample_rate: int, block_size: int = BLOCK_SIZE) -> bytes:
    """Encode 16-bit little-endian mono PCM as a complete FLAC stream."""
    if len(pcm) % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    if not 1 <= sample_rate < (1 << 20):
        raise ValueError(f"sample rate {sample_rate} is not representable in FLAC")
    total = len(pcm) // 2
    samples = array.array("h")
    samples.frombytes(pcm)
    if sys.byteorder == "little":
        samples.byteswap()  # FLAC stores samples big-endian
    big_endian = samples.tobytes()
    # A stream shorter than one block is a single (short) block; 16 is the format's minimum.
    nominal = max(16, min(block_size, total)) if total else block_size
    frames = []
    for number, start in enumerate(range(0, total, nominal)):
        count = min(nominal, total - start)
        frames.append(_frame(number, big_endian[start * 2 : (start + count) * 2], count, nominal, sample_rate))
    sizes = [len(f) for f in frames] or [0]
    info = struct.pack(">HH", nominal, nominal)
    info += min(sizes).to_bytes(3, "big") + max(sizes).to_bytes(3, "big")
    info += ((sample_rate << 44) | (0 << 41) | (15 << 36) | total).to_bytes(8, "big")
    info += hashlib.md5(pcm, usedforsecurity=False).digest()  # MD5 of the little-endian PCM
    metadata = bytes([0x80]) + len(info).to_bytes(3, "big") + info  # last block, type 0 (STREAMINFO)
    return b"fLaC" + metadata + b"".join(frames)
