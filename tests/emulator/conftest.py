"""Fixtures for the emulator's own tests: fresh emulators on free loopback ports, plain HTTP clients."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from airflow_provider_tts.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig

KEY = DEFAULT_API_KEY
AUTH = {"x-api-key": KEY}

MakeEmulator = Callable[..., Emulator]


@pytest.fixture
def make_emulator() -> Iterator[MakeEmulator]:
    """Start emulators with tone audio (deterministic, no espeak-ng) and short delays; stop them after."""
    started: list[Emulator] = []

    def make(*, api_key: str = KEY, **fields: Any) -> Emulator:
        config = EmulatorConfig(**{"default_delay": 0.2, "audio_engine": "tones", **fields})
        emulator = Emulator(api_key=api_key, config=config).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator: MakeEmulator) -> Emulator:
    return make_emulator()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A keep-alive session that sends the emulator's default key."""
    with requests.Session() as session:
        session.headers.update(AUTH)
        yield session


def wait_for(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """Call ``fetch`` until ``done(result)``; the last result is returned either way."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.02)
