"""The official Camb.ai SDK (``camb-sdk``) runs its streaming TTS call unchanged against the emulator.

The SDK's client takes a ``base_url``, so it is pointed at the emulator's Camb base and used exactly
as its documentation shows. This pins the emulator's ``/tts-stream`` to what the vendor's own
client sends and expects (path, JSON body with nulls for omitted options, ``x-api-key``, a raw
audio body, FastAPI 422s), so the provider's tests against the emulator mean something.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import TEST_KEY

camb = pytest.importorskip("camb", reason="camb-sdk is in the dev extra")


def _client(emu: Any) -> Any:
    return camb.CambAI(api_key=TEST_KEY, base_url=emu.camb_base_url, timeout=30)


def _settled_stats(emu: Any, within: float = 5.0) -> dict[str, Any]:
    """The emulator's counters once the streamed request is recorded.

    A streamed response's last byte reaches the client before the server's handler returns and
    counts the status, so reading the counters right after the body races that bookkeeping.
    """
    deadline = time.monotonic() + within
    stats: dict[str, Any] = emu.stats()
    while not stats["requests_by_status"] and time.monotonic() < deadline:
        time.sleep(0.02)
        stats = emu.stats()
    return stats


def test_sdk_streaming_tts_returns_the_emulator_audio(emu: Any) -> None:
    from camb.types import StreamTtsOutputConfiguration

    client = _client(emu)
    chunks = list(
        client.text_to_speech.tts(
            text="The official client, unchanged.",
            language="en-us",
            voice_id=20303,
            speech_model="mars-flash",
            output_configuration=StreamTtsOutputConfiguration(format="wav"),
        )
    )
    audio = b"".join(chunks)
    assert audio[:4] == b"RIFF"
    assert len(audio) > 1000
    stats = _settled_stats(emu)
    assert stats["requests_by_endpoint"]["stream"] == 1
    assert stats["requests_by_status"] == {"200": 1}


def test_sdk_sees_the_emulator_422_as_its_validation_error(emu: Any) -> None:
    from camb.errors import UnprocessableEntityError

    client = _client(emu)
    with pytest.raises(UnprocessableEntityError):
        b"".join(client.text_to_speech.tts(text="Hi", language="en-us", voice_id=1))
