"""The emulator's Camb.ai ``POST /tts-stream``: validation, chunked audio per format, credits, faults."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import requests

from tests.conftest import TEST_KEY

BODY = {"text": "Streaming straight into storage.", "language": "en-us", "voice_id": 20303}


def _post(emu: Any, body: Any, key: str | None = TEST_KEY, **kw: Any) -> requests.Response:
    headers = {"x-api-key": key} if key is not None else {}
    return requests.post(f"{emu.camb_base_url}/tts-stream", json=body, headers=headers, timeout=10, **kw)


@pytest.mark.parametrize(
    ("fmt", "content_type", "magic"),
    [("wav", "audio/wav", b"RIFF"), ("flac", "audio/flac", b"fLaC"), ("mp3", "audio/wav", b"RIFF")],
)
def test_streams_audio_chunked_with_credits(emu: Any, fmt: str, content_type: str, magic: bytes) -> None:
    resp = _post(emu, {**BODY, "output_configuration": {"format": fmt}}, stream=True)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == content_type  # mp3 cannot be encoded here: WAV, said so
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in resp.headers
    assert resp.headers["X-Credits-Required"] == str(len(BODY["text"]))
    data = resp.content
    assert data[:4] == magic
    assert len(data) > 1000
    assert emu.stats()["requests_by_endpoint"]["stream"] == 1


def test_pcm_formats_are_raw_samples_of_the_same_audio(emu: Any) -> None:
    s16le = _post(emu, {**BODY, "output_configuration": {"format": "pcm_s16le"}}).content
    s16be = _post(emu, {**BODY, "output_configuration": {"format": "pcm_s16be"}}).content
    f32le = _post(emu, {**BODY, "output_configuration": {"format": "pcm_f32le"}}).content
    n = len(s16le) // 2
    assert n > 100
    assert len(s16be) == 2 * n
    assert len(f32le) == 4 * n
    le = struct.unpack(f"<{n}h", s16le)
    assert struct.unpack(f">{n}h", s16be) == le
    floats = struct.unpack(f"<{n}f", f32le)
    assert all(abs(f * 32768 - v) < 1e-3 for f, v in zip(floats[:500], le[:500], strict=True))


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"text": "Hi"}, ["body", "text"]),
        ({"text": "x" * 3001}, ["body", "text"]),
        ({"language": 1}, ["body", "language"]),
        ({"language": "english please"}, ["body", "language"]),
        ({"voice_id": "abc"}, ["body", "voice_id"]),
        ({"output_configuration": {"format": "ogg"}}, ["body", "output_configuration", "format"]),
        ({"voice_id": None}, ["body", "voice_id"]),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(emu: Any, change: dict[str, Any], loc: list[str]) -> None:
    resp = _post(emu, {**BODY, **change})
    assert resp.status_code == 422
    assert loc in [d["loc"] for d in resp.json()["detail"]]


def test_key_is_required(emu: Any) -> None:
    assert _post(emu, BODY, key=None).status_code == 401
    assert _post(emu, BODY, key="wrong").status_code == 401


def test_drop_cuts_the_chunked_body(emu: Any) -> None:
    emu.inject("drop", endpoint="stream")
    resp = _post(emu, BODY, stream=True)
    assert resp.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = resp.content
    assert emu.stats()["faults_by_kind"] == {"drop": 1}


def test_injected_status_faults_answer_instead_of_streaming(emu: Any) -> None:
    emu.inject("503", endpoint="stream")
    assert _post(emu, BODY).status_code == 503
    assert _post(emu, BODY).status_code == 200


def test_streams_counts_whole_answers_per_text(emu: Any) -> None:
    """A stream has no vendor task, so ``streams()`` is its create count: answers sent whole, per text."""
    emu.inject("503", endpoint="stream")
    assert _post(emu, BODY).status_code == 503  # refused before any audio: not paid
    assert emu.streams() == {}
    assert _post(emu, BODY).status_code == 200
    assert _post(emu, {**BODY, "text": "Another text."}).status_code == 200
    assert _post(emu, {**BODY, "voice_id": "x"}).status_code == 422
    assert emu.streams() == {BODY["text"]: 1, "Another text.": 1}
