"""Start/stop: threads, sockets and the port are released; context managers; the in-loop variant."""

from __future__ import annotations

import os
import socket
import threading
import time

import aiohttp
import pytest
import requests

from airflow_provider_tts.emulator import Emulator, EmulatorConfig

from .conftest import AUTH


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _emulator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tts-emulator")]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_stop_releases_threads_sockets_and_port() -> None:
    baseline_fds = _fds()
    emu = Emulator(config=EmulatorConfig(audio_engine="tones", default_delay=0)).start()
    port = emu.port
    with requests.Session() as session:
        task_id = emu.create_task("revid_tts", "tts")
        url = session.get(f"{emu.revid_status_base_url}/get/{task_id}").json()["response"]["audio_url"]
        assert session.get(url).status_code == 200  # renders audio on the worker pool too
        assert _emulator_threads()
        emu.stop()
    assert _emulator_threads() == []
    assert _fds() == baseline_fds
    assert not emu.running
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=2)
    with socket.socket() as sock:  # the port can be bound again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_context_manager_restart_and_errors() -> None:
    emu = Emulator(config=EmulatorConfig(audio_engine="tones"))
    with pytest.raises(RuntimeError):
        _ = emu.url
    with emu:
        assert emu.url == f"http://127.0.0.1:{emu.port}"
        assert emu.camb_base_url == emu.url + "/apis"
        assert emu.revid_base_url == emu.url + "/paid"
        assert emu.revid_status_base_url == emu.url + "/api"
        with pytest.raises(RuntimeError):
            emu.start()
        task_id = emu.create_task("camb_ai", "tts", delay=60)
    emu.stop()  # idempotent
    with emu:  # the same object can serve again; its state survives a restart
        resp = requests.get(f"{emu.camb_base_url}/tts/{task_id}", headers=AUTH)
        assert resp.json()["status"] == "PENDING"


def test_stop_does_not_wait_for_slow_requests() -> None:
    emu = Emulator(config=EmulatorConfig(audio_engine="tones")).start()
    emu.set_faults(slow_seconds=30)
    emu.inject("slow")
    outcome: list[object] = []

    def slow_call() -> None:
        try:
            outcome.append(requests.get(f"{emu.camb_base_url}/tts/x", headers=AUTH, timeout=20).status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.2)
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 3
    caller.join(5)
    assert outcome
    assert isinstance(outcome[0], requests.RequestException)


def test_stop_during_a_large_download() -> None:
    emu = Emulator(config=EmulatorConfig(audio_engine="tones", default_delay=0)).start()
    task_id = emu.create_task("revid_tts", "tts", audio_bytes=1024**3)
    url = requests.get(f"{emu.revid_status_base_url}/get/{task_id}").json()["response"]["audio_url"]
    resp = requests.get(url, stream=True)
    next(resp.iter_content(65536))
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(requests.RequestException):
        for _ in resp.iter_content(1 << 20):
            pass
    resp.close()
    assert _emulator_threads() == []


async def test_runs_inside_an_existing_loop() -> None:
    async with Emulator(config=EmulatorConfig(audio_engine="tones", default_delay=0)) as emu:
        task_id = emu.create_task("camb_ai", "tts")
        async with aiohttp.ClientSession(headers=AUTH) as session:
            async with session.get(f"{emu.camb_base_url}/tts/{task_id}") as resp:
                run_id = (await resp.json())["run_id"]
            async with session.get(f"{emu.camb_base_url}/tts-result/{run_id}") as resp:
                assert resp.headers["Content-Type"] == "audio/flac"
                assert (await resp.read())[:4] == b"fLaC"
        assert emu.stats()["connections"] == 1
    assert not emu.running
    assert _emulator_threads() == []


def test_bind_failure_is_reported() -> None:
    # Another listener on the same port (SO_REUSEADDR does not allow two listeners on Linux).
    with Emulator(config=EmulatorConfig(audio_engine="tones")) as first, pytest.raises(OSError, match="in use"):
        Emulator(port=first.port).start()
    assert _emulator_threads() == []
