"""Joining parts' audio into one file (issue 27): valid, the sum of the parts, mismatches refused.

Decoded by reference decoders: libsndfile (through ``soundfile``) always, ``flac -t`` and ``soxi`` /
``ffprobe`` where installed.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from airflow_provider_tts.emulator.audio import Pcm, tone_melody, wav_bytes
from airflow_provider_tts.emulator.flac import encode_flac
from airflow_provider_tts.longtext.join import AudioJoinError, join_audio, parse_mp3_header, sniff
from tests.emulator.audio_checks import read_wav

RATE = 24000


def openers(blobs: list[bytes]) -> list[object]:
    return [lambda b=b: io.BytesIO(b) for b in blobs]


def join(blobs: list[bytes], out: Path, silence: float = 0.0) -> object:
    with out.open("wb") as handle:
        return join_audio(openers(blobs), handle, names=[f"p{i}" for i in range(len(blobs))], silence_seconds=silence)  # type: ignore[arg-type]


def pcms(rate: int = RATE) -> list[bytes]:
    return [tone_melody(f"part {n}", 0.5 + 0.25 * n, rate) for n in range(4)]


def external_duration(path: Path) -> list[float]:
    """Durations other decoders report, where they are installed."""
    found = []
    if shutil.which("soxi"):
        found.append(float(subprocess.run(["soxi", "-D", str(path)], check=True, capture_output=True).stdout))
    if shutil.which("ffprobe"):
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        found.append(float(out))
    return found


@pytest.mark.parametrize("silence", [0.0, 0.2])
def test_wav_parts_join_under_one_correct_header(silence: float, tmp_path: Path) -> None:
    import soundfile as sf

    parts = pcms()
    out = tmp_path / "joined.wav"
    joined = join([wav_bytes(Pcm(p, RATE)) for p in parts], out, silence)
    wav = read_wav(out.read_bytes())  # RIFF and data sizes match the file
    gap = b"\x00" * (round(silence * RATE) * 2)
    assert wav.frames == gap.join(parts)  # bit-exact: the parts' samples, in order
    expected = sum(len(p) // 2 for p in parts) / RATE + silence * (len(parts) - 1)
    assert joined.duration_seconds == pytest.approx(expected, abs=1 / RATE)  # type: ignore[attr-defined]
    assert sf.info(str(out)).duration == pytest.approx(expected, abs=1 / RATE)
    for duration in external_duration(out):
        assert duration == pytest.approx(expected, abs=1 / RATE + 0.001)
    assert joined.starts()[1] == pytest.approx(len(parts[0]) / 2 / RATE + silence)  # type: ignore[attr-defined]


@pytest.mark.parametrize("silence", [0.0, 0.3])
def test_flac_parts_join_into_a_file_flac_decodes(silence: float, tmp_path: Path) -> None:
    import soundfile as sf

    parts = pcms()
    out = tmp_path / "joined.flac"
    joined = join([encode_flac(p, RATE) for p in parts], out, silence)
    if shutil.which("flac"):
        subprocess.run(["flac", "-t", "-s", str(out)], check=True)
    data, rate = sf.read(str(out), dtype="int16")
    gap = b"\x00" * (round(silence * RATE) * 2)
    assert rate == RATE
    assert data.tobytes() == gap.join(parts)  # lossless: the samples are exactly the parts'
    expected = sum(len(p) // 2 for p in parts) / RATE + silence * (len(parts) - 1)
    assert joined.duration_seconds == pytest.approx(expected, abs=1 / RATE)  # type: ignore[attr-defined]
    for duration in external_duration(out):
        assert duration == pytest.approx(expected, abs=1 / RATE + 0.001)


def test_a_sample_rate_mismatch_is_an_error_naming_both_parts(tmp_path: Path) -> None:
    wavs = [wav_bytes(Pcm(tone_melody("a", 0.5, RATE), RATE)), wav_bytes(Pcm(tone_melody("b", 0.5, 16000), 16000))]
    with pytest.raises(AudioJoinError, match=r"part 2 \(p1\) is 16000 Hz.*part 1 \(p0\) is 24000 Hz"):
        join(wavs, tmp_path / "x.wav")
    flacs = [encode_flac(tone_melody("a", 0.5, RATE), RATE), encode_flac(tone_melody("b", 0.5, 16000), 16000)]
    with pytest.raises(AudioJoinError, match=r"part 2 \(p1\).*16000 Hz.*part 1 \(p0\).*24000 Hz"):
        join(flacs, tmp_path / "x.flac")


def test_a_channel_or_format_mismatch_is_an_error(tmp_path: Path) -> None:
    mono = wav_bytes(Pcm(tone_melody("a", 0.5, RATE), RATE))
    stereo = bytearray(mono)
    struct.pack_into("<HIIH", stereo, 22, 2, RATE, RATE * 4, 4)  # same bytes, declared stereo
    with pytest.raises(AudioJoinError, match="2 channel"):
        join([mono, bytes(stereo)], tmp_path / "x.wav")
    with pytest.raises(AudioJoinError, match=r"part 2 .* is flac but part 1 .* is wav"):
        join([mono, encode_flac(tone_melody("b", 0.5, RATE), RATE)], tmp_path / "y")
    with pytest.raises(AudioJoinError, match="not audio"):
        join([b"<html>nope</html>"], tmp_path / "z")


# --- MP3: frames built by hand (no encoder here); silent frames are valid MPEG-1 layer III ---------

HEADER_44K_MONO = bytes([0xFF, 0xFB, 0x90, 0xC4])  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz, mono
HEADER_48K_MONO = bytes([0xFF, 0xFB, 0x94, 0xC4])


def mp3(frames: int, header: bytes = HEADER_44K_MONO, xing: bool = True, id3: bool = True) -> bytes:
    frame = parse_mp3_header(header)
    assert frame is not None
    body = b"\x00" * (frame.length - 4)
    out = b""
    if id3:
        out += b"ID3\x04\x00\x00" + bytes([0, 0, 0, 20]) + b"T" * 20
    if xing:
        out += header + (b"\x00" * 17 + b"Xing" + body)[: frame.length - 4]
    return out + (header + body) * frames + b"TAG" + b"\x00" * 125


def frames_in(data: bytes) -> int:
    count, at = 0, 0
    while at < len(data):
        frame = parse_mp3_header(data[at : at + 4])
        assert frame is not None, f"no frame at {at}"
        assert b"Xing" not in data[at : at + 64]
        count, at = count + 1, at + frame.length
    return count


def test_mp3_parts_join_by_frames_without_tags_or_info_frames(tmp_path: Path) -> None:
    out = tmp_path / "joined.mp3"
    joined = join([mp3(10), mp3(20), mp3(5, xing=False, id3=False)], out)
    data = out.read_bytes()
    assert sniff(data) == "mp3"
    assert data[:3] != b"ID3"
    assert frames_in(data) == 35
    import soundfile as sf

    assert sf.info(str(out)).frames == 35 * 1152  # libsndfile's MP3 decoder reads every frame
    assert joined.durations == pytest.approx([10 * 1152 / 44100, 20 * 1152 / 44100, 5 * 1152 / 44100])  # type: ignore[attr-defined]
    with pytest.raises(AudioJoinError, match=r"part 2 \(p1\) is MPEG layer 3 at 48000 Hz.*part 1 \(p0\).*44100 Hz"):
        join([mp3(3), mp3(3, HEADER_48K_MONO)], tmp_path / "x.mp3")
    with pytest.raises(AudioJoinError, match="silence between MP3 parts"):
        join([mp3(3), mp3(3)], tmp_path / "y.mp3", silence=0.5)
