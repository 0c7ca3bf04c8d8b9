"""Audio: WAV and FLAC validity (independent verifier, plus ``flac --test`` when installed), exact-size
streamed WAVs, bounded memory for large downloads, and espeak-ng speech when available."""

from __future__ import annotations

import array
import asyncio
import math
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_tts.emulator import ConfigError, Emulator, EmulatorConfig, audio
from airflow_provider_tts.emulator.audio import Pcm, SizedWav, tone_melody, wav_bytes
from airflow_provider_tts.emulator.flac import encode_flac

from .audio_checks import read_flac, read_wav
from .conftest import MakeEmulator, wait_for

HAS_FLAC = shutil.which("flac") is not None
HAS_ESPEAK = shutil.which("espeak-ng") is not None


def sine(frames: int, rate: int = 22050, freq: float = 440.0) -> bytes:
    return array.array("h", (int(9000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(frames))).tobytes()


def test_tone_melody_is_deterministic_and_text_dependent() -> None:
    one = tone_melody("hello", 1.0, 22050)
    assert len(one) == 22050 * 2
    assert tone_melody("hello", 1.0, 22050) == one
    assert tone_melody("goodbye", 1.0, 22050) != one
    assert max(array.array("h", one)) > 5000  # audible, not silence


def test_wav_is_valid() -> None:
    data = wav_bytes(Pcm(tone_melody("x", 0.5, 16000), 16000))
    wav = read_wav(data)
    assert (wav.channels, wav.sample_width, wav.rate) == (1, 2, 16000)
    assert wav.duration == 0.5


@pytest.mark.parametrize(
    ("frames", "rate"),
    [
        (16, 22050),
        (100, 16000),
        (4095, 22050),
        (4096, 22050),
        (4097, 44100),
        (3 * 4096, 48000),
        (50_000, 8000),
        (30_001, 24000),
        (1000, 11025),
    ],
)
def test_flac_structure(frames: int, rate: int) -> None:
    pcm = sine(frames, rate)
    flac = read_flac(encode_flac(pcm, rate))
    assert flac.pcm == pcm
    assert (flac.rate, flac.total_samples) == (rate, frames)
    assert flac.min_block == flac.max_block == min(4096, frames)
    assert flac.frames == math.ceil(frames / 4096)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-32768, 32767), min_size=16, max_size=9000), st.sampled_from([16000, 22050, 44100]))
def test_flac_round_trips_any_samples(samples: list[int], rate: int) -> None:
    pcm = array.array("h", samples).tobytes()
    assert read_flac(encode_flac(pcm, rate)).pcm == pcm


def test_flac_long_stream_frame_numbers() -> None:
    """More than 128 frames exercises multi-byte (UTF-8 coded) frame numbers."""
    pcm = bytes(4096 * 2 * 130 + 2 * 77)
    flac = read_flac(encode_flac(pcm, 22050))
    assert flac.frames == 131


@pytest.mark.skipif(not HAS_FLAC, reason="the flac command-line tool is not installed")
def test_flac_tool_accepts_the_output(tmp_path: Path) -> None:
    for frames in (100, 4096, 22050 * 3 + 5):
        path = tmp_path / f"{frames}.flac"
        path.write_bytes(encode_flac(sine(frames), 22050))
        done = subprocess.run(["flac", "--test", "--silent", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not HAS_FLAC, reason="the flac command-line tool is not installed")
def test_served_flac_decodes_with_the_flac_tool(emulator: Emulator, http: requests.Session, tmp_path: Path) -> None:
    task_id = emulator.create_task("camb_ai", "tts", delay=0, text="decode me with the reference decoder")
    run_id = emulator.task_info(task_id)["run_id"]  # type: ignore[index]
    data = http.get(f"{emulator.camb_base_url}/tts-result/{run_id}").content
    (tmp_path / "a.flac").write_bytes(data)
    done = subprocess.run(
        ["flac", "-d", "-s", "-f", "-o", str(tmp_path / "a.wav"), str(tmp_path / "a.flac")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert read_wav((tmp_path / "a.wav").read_bytes()).frames == read_flac(data).pcm


@pytest.mark.parametrize("total", [44, 45, 46, 1000, 1001, 131_000 + 44, 131_000 + 45, 3 * 131_000 + 7])
def test_sized_wav_is_exact_and_valid(total: int) -> None:
    sized = SizedWav(total, 22050)
    data = b"".join(bytes(chunk) for chunk in sized.chunks())
    assert len(data) == total
    wav = read_wav(data)
    assert len(wav.frames) == (total - 44) // 2 * 2
    assert wav.duration == sized.duration
    assert (total - 44) % 2 == 0 or data[-1:] == b"\x00"  # odd sizes end with one pad byte


def test_sized_wav_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        SizedWav(43, 22050)


def test_50mb_download_streams_with_bounded_memory(emulator: Emulator, http: requests.Session) -> None:
    size = 50 * 1024 * 1024 + 1
    task_id = emulator.create_task("revid_tts", "tts", delay=0, audio_bytes=size)
    body = http.get(f"{emulator.revid_status_base_url}/get/{task_id}").json()
    assert body["response"]["duration"] == pytest.approx((size - 45) / 2 / 22050)
    tracemalloc.start()
    try:
        with requests.get(body["response"]["audio_url"], stream=True) as resp:
            assert resp.status_code == 200
            assert resp.headers["Content-Type"] == "audio/wav"
            assert int(resp.headers["Content-Length"]) == size
            head = b""
            received = 0
            for chunk in resp.iter_content(1 << 20):
                if len(head) < 44:
                    head += chunk[: 44 - len(head)]
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert head[:4] == b"RIFF"
    assert int.from_bytes(head[4:8], "little") == size - 8
    assert int.from_bytes(head[40:44], "little") == size - 45
    assert peak < 12 * 1024 * 1024, f"server and client together peaked at {peak} bytes"


def test_camb_sized_result_is_wav_of_exact_size(emulator: Emulator, http: requests.Session) -> None:
    task_id = emulator.create_task("camb_ai", "tts", delay=0, audio_bytes=200_001)
    run_id = emulator.task_info(task_id)["run_id"]  # type: ignore[index]
    resp = http.get(f"{emulator.camb_base_url}/tts-result/{run_id}")
    assert resp.headers["Content-Type"] == "audio/wav"  # audio_bytes always means WAV
    assert len(resp.content) == int(resp.headers["Content-Length"]) == 200_001
    read_wav(resp.content)
    url = http.get(f"{emulator.camb_base_url}/tts-result/{run_id}?output_type=file_url").json()["output_url"]
    assert ".wav?" in url
    assert requests.get(url).content == resp.content


def test_head_on_storage(emulator: Emulator, http: requests.Session) -> None:
    task_id = emulator.create_task("revid_tts", "tts", delay=0, audio_bytes=5000)
    url = http.get(f"{emulator.revid_status_base_url}/get/{task_id}").json()["response"]["audio_url"]
    resp = requests.head(url)
    assert resp.status_code == 200
    assert resp.headers["Content-Length"] == "5000"
    assert resp.content == b""


def test_speech_length_is_clamped(make_emulator: MakeEmulator, http: requests.Session) -> None:
    emu = make_emulator(max_audio_seconds=2.0)
    short = emu.create_task("revid_tts", "tts", delay=0, text="a")
    long = emu.create_task("revid_tts", "tts", delay=0, text="word " * 200)
    durations = [http.get(f"{emu.revid_status_base_url}/get/{t}").json()["response"]["duration"] for t in (short, long)]
    assert durations == [0.5, 2.0]


@pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng is not installed")
def test_espeak_speech(make_emulator: MakeEmulator, http: requests.Session) -> None:
    emu = make_emulator(audio_engine="espeak")
    short = emu.create_task("revid_tts", "tts", delay=0, text="Hi.")
    long = emu.create_task("revid_tts", "tts", delay=0, text="This sentence is considerably longer than the first.")
    bodies = [http.get(f"{emu.revid_status_base_url}/get/{t}").json()["response"] for t in (short, long)]
    wavs = [read_wav(requests.get(b["audio_url"]).content) for b in bodies]
    assert [w.duration for w in wavs] == [b["duration"] for b in bodies]
    assert wavs[1].duration > wavs[0].duration + 1
    assert wavs[0].frames != tone_melody("Hi.", wavs[0].duration, 22050)  # speech, not the tone stand-in


def test_espeak_engine_requires_the_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "espeak_available", lambda: False)
    with pytest.raises(RuntimeError, match="espeak-ng"):
        Emulator(config=EmulatorConfig(audio_engine="espeak")).start()


def test_auto_engine_falls_back_to_tones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "espeak_available", lambda: False)
    with Emulator(config=EmulatorConfig(default_delay=0)) as emu:
        task_id = emu.create_task("revid_tts", "tts", text="tones please")
        body = requests.get(f"{emu.revid_status_base_url}/get/{task_id}").json()
        wav = read_wav(requests.get(body["response"]["audio_url"]).content)
        assert wav.frames == tone_melody("tones please", len("tones please") * 0.06, 22050)


def test_parse_wav_stream_tolerates_bogus_sizes() -> None:
    data = bytearray(wav_bytes(Pcm(sine(1000), 22050)))
    data[4:8] = data[40:44] = b"\xff\xff\xff\x7f"  # what a WAV written to a pipe looks like
    parsed = audio.parse_wav_stream(bytes(data))
    assert parsed is not None
    assert parsed.data == sine(1000)
    assert audio.parse_wav_stream(b"not a wav") is None


def test_render_cache_budget_evicts_and_counts_renders() -> None:
    """A cache too small for the run's audio renders evicted audio again, and ``stats`` says so
    (benchmarks rely on it to show their downloads never waited for synthesis)."""
    sources = [audio.AudioSource("speech", text=f"{i}" * 10) for i in range(3)]  # 0.6 s: 9,600 B of PCM at 8 kHz

    async def render_all(cache_bytes: int) -> dict[str, object]:
        renderer = audio.AudioRenderer("tones", 8000, 20.0, 300.0, cache_bytes=cache_bytes)
        try:
            for source in [*sources, sources[0]]:
                await renderer.encoded(source, "wav")
            return renderer.stats()
        finally:
            renderer.close()

    small = asyncio.run(render_all(40_000))  # room for two sources' PCM and WAV, not three
    assert small["renders"] == {"pcm": 4, "wav": 4}
    assert (small["evictions"], small["rendering"], small["cache_budget_bytes"]) == (4, 0, 40_000)
    assert isinstance(small["cache_bytes"], int)
    assert small["cache_bytes"] <= 40_000
    big = asyncio.run(render_all(1024 * 1024))
    assert (big["renders"], big["evictions"], big["cache_entries"]) == ({"pcm": 3, "wav": 3}, 0, 6)


def test_audio_cache_mb_and_background_renders_in_stats(make_emulator: MakeEmulator, http: requests.Session) -> None:
    """``audio_cache_mb`` sizes the renderer; a create's background render shows in ``stats()["audio"]``
    until done, and the download after it is served from the cache (no new render)."""
    with pytest.raises(ConfigError, match="audio_cache_mb"):
        EmulatorConfig(audio_cache_mb=0)
    emu = make_emulator(audio_cache_mb=3)
    task_id = emu.create_task("camb_ai", "tts", delay=0, text="a short sentence")
    done = wait_for(emu.stats, lambda s: s["audio"]["background"] == 0 and s["audio"]["renders"].get("flac") == 1)
    assert done["audio"]["cache_budget_bytes"] == 3 * 1024 * 1024
    assert http.get(f"{emu.url}/_emulator/stats").json()["audio"] == done["audio"]
    run_id = emu.task_info(task_id)["run_id"]  # type: ignore[index]
    read_flac(http.get(f"{emu.camb_base_url}/tts-result/{run_id}").content)
    assert emu.stats()["audio"]["renders"] == done["audio"]["renders"]
