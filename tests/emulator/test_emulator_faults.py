"""Fault injection: every kind's wire behaviour, deterministic injection, random faults, create safety."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time
from typing import Any

import aiohttp
import pytest
import requests

from airflow_provider_tts.emulator import FAULT_KINDS, Emulator, FaultConfig, SpecError

from .conftest import AUTH, KEY, MakeEmulator

CAMB_TTS = {"text": "fault test", "voice_id": 1, "language": 1}


def camb_status_url(emu: Emulator, task_id: str) -> str:
    return f"{emu.camb_base_url}/tts/{task_id}"


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("429", 429, "application/json"),
        ("429_no_retry_after", 429, "application/json"),
        ("429_http_date", 429, "application/json"),
        ("500", 500, "application/json"),
        ("502", 502, "application/json"),
        ("503", 503, "application/json"),
        ("504", 504, "application/json"),
        ("html", 502, "text/html"),
        ("html_200", 200, "text/html"),
        ("malformed_json", 200, "application/json"),
    ],
)
def test_http_faults(emulator: Emulator, http: requests.Session, kind: str, status: int, content_type: str) -> None:
    task_id = emulator.create_task("camb_ai", "tts", delay=0)
    emulator.inject(kind)
    resp = http.get(camb_status_url(emulator, task_id))
    assert resp.status_code == status
    assert resp.headers["Content-Type"].startswith(content_type)
    retry_after = resp.headers.get("Retry-After")
    if kind == "429":
        assert retry_after == "1"
    elif kind == "429_http_date":
        assert retry_after is not None
        when = email.utils.parsedate_to_datetime(retry_after).timestamp()
        assert 0.5 <= when - time.time() <= 3.5
    else:
        assert retry_after is None
    if kind.startswith(("429", "5")):
        assert "detail" in resp.json()  # Camb's FastAPI error shape
    if kind == "html":
        assert "nginx" in resp.text
    if kind == "malformed_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(resp.content)
    # Exactly one request was affected: the next one is normal again.
    assert http.get(camb_status_url(emulator, task_id)).json()["status"] == "SUCCESS"
    assert emulator.stats()["faults_by_kind"] == {kind: 1}


def test_revid_error_bodies_use_revid_shape(emulator: Emulator) -> None:
    task_id = emulator.create_task("revid_tts", "tts", delay=0)
    emulator.inject("503")
    resp = requests.get(f"{emulator.revid_status_base_url}/get/{task_id}")
    assert resp.status_code == 503
    assert resp.json() == {"code": 503, "status": "error", "message": "Service Unavailable"}


def test_retry_after_is_configurable(emulator: Emulator, http: requests.Session) -> None:
    emulator.set_faults(retry_after="7")
    emulator.inject("429")
    assert http.get(camb_status_url(emulator, "x")).headers["Retry-After"] == "7"


def test_slow(emulator: Emulator, http: requests.Session) -> None:
    emulator.set_faults(slow_seconds=0.3)
    task_id = emulator.create_task("camb_ai", "tts", delay=0)
    emulator.inject("slow")
    started = time.monotonic()
    resp = http.get(camb_status_url(emulator, task_id))
    assert time.monotonic() - started >= 0.3
    assert resp.json()["status"] == "SUCCESS"  # then answers normally
    emulator.inject("slow")
    with pytest.raises(requests.Timeout):
        http.get(camb_status_url(emulator, task_id), timeout=0.1)


def test_drop_breaks_a_requests_body(emulator: Emulator, http: requests.Session) -> None:
    task_id = emulator.create_task("camb_ai", "tts", delay=0)
    emulator.inject("drop")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        http.get(camb_status_url(emulator, task_id))
    assert http.get(camb_status_url(emulator, task_id)).status_code == 200  # the session recovers


def test_drop_during_download_sends_headers_then_part_of_the_body(emulator: Emulator) -> None:
    task_id = emulator.create_task("revid_tts", "tts", delay=0)
    audio_url = requests.get(f"{emulator.revid_status_base_url}/get/{task_id}").json()["response"]["audio_url"]
    emulator.inject("drop", endpoint="storage")
    with requests.get(audio_url, stream=True) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "audio/wav"
        expected = int(resp.headers["Content-Length"])
        received = bytearray()

        def read_all() -> None:
            for chunk in resp.iter_content(4096):
                received.extend(chunk)

        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
            read_all()
        assert 0 < len(received) < expected
        assert received[:4] == b"RIFF"


def test_reset_breaks_a_requests_call(emulator: Emulator, http: requests.Session) -> None:
    emulator.inject("reset")
    with pytest.raises(requests.ConnectionError):
        http.get(camb_status_url(emulator, "x"))


def _raw_exchange(emu: Emulator, path: str) -> bytes:
    """Send one request on a raw socket and return everything the server sent before closing."""
    with socket.create_connection((emu.host, emu.port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\n\r\n".encode())
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            received += b"<RST>"
        return received


def test_reset_sends_nothing_at_all(emulator: Emulator) -> None:
    emulator.inject("reset")
    assert _raw_exchange(emulator, "/apis/tts/x") in (b"", b"<RST>")


def test_drop_sends_a_short_body_then_closes(emulator: Emulator) -> None:
    emulator.inject("drop")
    raw = _raw_exchange(emulator, "/apis/tts/x")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    assert 0 < len(body) < length


@pytest.mark.parametrize("kind", ["drop", "reset"])
def test_aiohttp_sees_broken_connections(emulator: Emulator, kind: str) -> None:
    async def fetch() -> None:
        async with aiohttp.ClientSession(headers=AUTH) as session, session.get(camb_status_url(emulator, "x")) as resp:
            await resp.read()

    # aiohttp (3.10+) silently resends an idempotent request once after a disconnect, so a client
    # only sees a reset when two happen in a row; a drop (body cut short) is never resent.
    emulator.inject(kind, count=2)
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        asyncio.run(fetch())
    assert emulator.stats()["requests_by_endpoint"]["status"] == (2 if kind == "reset" else 1)


@pytest.mark.parametrize("kind", [k for k in FAULT_KINDS if k != "slow"])
@pytest.mark.parametrize(
    ("api", "path", "body"),
    [
        ("camb_ai", "/apis/tts", CAMB_TTS),
        ("revid_tts", "/paid/text-to-speech", {"text": "x"}),
    ],
)
def test_faulted_create_never_creates(emulator: Emulator, kind: str, api: str, path: str, body: dict[str, Any]) -> None:
    emulator.inject(kind, endpoint="create")
    try:
        resp = requests.post(f"{emulator.url}{path}", json=body, headers=AUTH, timeout=5)
        assert "task_id" not in resp.text or kind == "malformed_json"
    except requests.RequestException:
        assert kind in ("drop", "reset")
    stats = emulator.stats()
    assert stats["creates"] == {}
    assert stats["tasks"] == 0
    assert stats["requests_by_endpoint"]["create"] == 1
    assert stats["faults_by_kind"] == {kind: 1}


def test_slow_create_does_create(emulator: Emulator) -> None:
    """A slow create still creates (after the delay), as a real API would if the client gave up."""
    emulator.set_faults(slow_seconds=0.3)
    emulator.inject("slow", endpoint="create")
    with pytest.raises(requests.Timeout):
        requests.post(f"{emulator.camb_base_url}/tts", json=CAMB_TTS, headers=AUTH, timeout=0.1)
    deadline = time.monotonic() + 3
    while emulator.stats()["tasks"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator.stats()["creates"] == {"camb_ai": {"tts": 1}}


def test_injections_are_counted_and_scoped(emulator: Emulator, http: requests.Session) -> None:
    task_id = emulator.create_task("camb_ai", "tts", delay=0)
    run_id = emulator.task_info(task_id)["run_id"]  # type: ignore[index]
    emulator.inject("503", count=2, endpoint="status")
    emulator.inject("500", count=1, endpoint="result")
    assert http.get(f"{emulator.camb_base_url}/tts-result/{run_id}").status_code == 500
    assert http.get(f"{emulator.camb_base_url}/tts-result/{run_id}").status_code == 200
    codes = [http.get(camb_status_url(emulator, task_id)).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert emulator.stats()["pending_injections"] == []


def test_injection_fifo_any_endpoint_and_api_filter(emulator: Emulator, http: requests.Session) -> None:
    camb = emulator.create_task("camb_ai", "tts", delay=0)
    revid = emulator.create_task("revid_tts", "tts", delay=0)
    emulator.inject("502", endpoint="status", api="revid_tts")
    emulator.inject("504", endpoint="any")
    assert http.get(camb_status_url(emulator, camb)).status_code == 504  # the revid-only one is skipped
    assert http.get(f"{emulator.revid_status_base_url}/get/{revid}").status_code == 502
    assert http.get(camb_status_url(emulator, camb)).status_code == 200


def test_inject_validation(emulator: Emulator) -> None:
    with pytest.raises(SpecError):
        emulator.inject("418")
    with pytest.raises(SpecError):
        emulator.inject("500", endpoint="control")
    with pytest.raises(SpecError):
        emulator.inject("500", count=0)


def _status_codes(emu: Emulator, task_id: str, n: int) -> list[int]:
    with requests.Session() as session:
        session.headers.update(AUTH)
        codes = []
        for _ in range(n):
            try:
                codes.append(session.get(camb_status_url(emu, task_id), timeout=5).status_code)
            except requests.RequestException:
                codes.append(-1)
        return codes


def test_random_faults_are_reproducible_with_a_seed(make_emulator: MakeEmulator) -> None:
    faults = FaultConfig(rate=0.5, kinds=("500", "503", "429"), seed=1234)
    runs = []
    for _ in range(2):
        emu = make_emulator(faults=faults)
        runs.append(_status_codes(emu, emu.create_task("camb_ai", "tts", delay=0), 30))
    assert runs[0] == runs[1]
    assert 5 < sum(code != 200 for code in runs[0]) < 25
    assert set(runs[0]) <= {200, 500, 503, 429}


def test_random_faults_respect_endpoints(make_emulator: MakeEmulator, http: requests.Session) -> None:
    emu = make_emulator(faults=FaultConfig(rate=1.0, kinds=("500",), endpoints=frozenset({"status"})))
    created = http.post(f"{emu.camb_base_url}/tts", json=CAMB_TTS)
    assert created.status_code == 200  # create is not a faulted endpoint here
    assert http.get(camb_status_url(emu, created.json()["task_id"])).status_code == 500
    assert emu.stats()["faults_by_kind"] == {"500": 1}


def test_faults_never_touch_the_control_api(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(
        faults=FaultConfig(rate=1.0, kinds=("reset",), endpoints=frozenset({"create", "status", "result", "storage"}))
    )
    emu.inject("reset", count=5, endpoint="any")
    assert requests.get(f"{emu.url}/_emulator/stats").status_code == 200
    assert requests.post(f"{emu.url}/_emulator/tasks", json={"api": "camb_ai", "kind": "tts"}).status_code == 200
    assert emu.stats()["faults_total"] == 0


def test_fault_config_validation() -> None:
    for bad in (
        {"rate": 1.5},
        {"rate": -0.1},
        {"kinds": ("nope",)},
        {"kinds": ()},
        {"endpoints": frozenset({"control"})},
        {"slow_seconds": -1},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - ConfigError is a ValueError
            FaultConfig(**bad)  # type: ignore[arg-type]
    assert FaultConfig.from_mapping({"kinds": "500, 503", "endpoints": ["create"], "retry_after": 2}) == FaultConfig(
        kinds=("500", "503"), endpoints=frozenset({"create"}), retry_after="2"
    )
