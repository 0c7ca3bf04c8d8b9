"""RevidAPI endpoints of the emulator: create shapes, the seed page's status bodies, variants, SRT."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from airflow_provider_tts.emulator import Emulator

from .audio_checks import read_wav
from .conftest import AUTH, MakeEmulator, wait_for

SUBTITLES = [
    {"index": 1, "start": "00:00:00,500", "end": "00:00:01,500", "text": "first line"},
    {"index": 2, "start": "00:00:02,000", "end": "00:00:03,500", "text": "second line"},
]


def status(emu: Emulator, task_id: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(f"{emu.revid_status_base_url}/get/{task_id}", headers=headers)


def body_of(resp: requests.Response) -> dict[str, Any]:
    body = resp.json()
    if isinstance(body, list):
        assert len(body) == 1
        body = body[0]
    assert isinstance(body, dict)
    return body


def completed(emu: Emulator, task_id: str) -> dict[str, Any]:
    return body_of(wait_for(lambda: status(emu, task_id), lambda r: body_of(r)["code"] != 202))


def test_tts_lifecycle_matches_the_seed_page(emulator: Emulator, http: requests.Session) -> None:
    created = http.post(
        f"{emulator.revid_base_url}/text-to-speech", json={"text": "Hello from Revid", "engine": "edge", "id": "job-7"}
    )
    assert created.status_code == 202
    task_id = created.json()["task_id"]
    assert created.json() == {"code": 202, "task_id": task_id, "id": "job-7", "message": "processing"}

    pending = status(emulator, task_id)  # no key: the status page says it is optional
    assert pending.status_code == 202
    assert pending.json() == {
        "code": 202,
        "task_id": task_id,
        "status": "processing",
        "message": "Task is being processed",
    }
    done = wait_for(lambda: status(emulator, task_id), lambda r: r.status_code != 202)
    assert done.status_code == 200
    body = done.json()
    assert list(body) == ["code", "task_id", "status", "response", "message"]
    assert body["status"] == "completed"
    assert body["message"] == "success"
    audio_url = body["response"]["audio_url"]
    assert audio_url == f"{emulator.url}/storage/revid/{task_id}.wav"

    audio = requests.get(audio_url)
    assert audio.status_code == 200
    assert audio.headers["Content-Type"] == "audio/wav"
    assert int(audio.headers["Content-Length"]) == len(audio.content)
    wav = read_wav(audio.content)
    assert body["response"]["duration"] == wav.duration  # exactly the real duration
    assert wav.duration == pytest.approx(len("Hello from Revid") * 0.06, abs=0.01)
    assert emulator.storage_key_leaks() == []
    assert emulator.stats()["creates"] == {"revid_tts": {"tts": 1}}


def test_caller_id_is_echoed(emulator: Emulator, http: requests.Session) -> None:
    assert http.post(f"{emulator.revid_base_url}/text-to-speech", json={"text": "x", "id": 42}).json()["id"] == 42
    assert http.post(f"{emulator.revid_base_url}/text-to-speech", json={"text": "x"}).json()["id"] is None


def test_create_as_array(make_emulator: MakeEmulator, http: requests.Session) -> None:
    emu = make_emulator(revid_create_response="array")
    resp = http.post(f"{emu.revid_base_url}/text-to-speech", json={"text": "array"})
    assert isinstance(resp.json(), list)
    assert len(resp.json()) == 1
    assert resp.json()[0]["code"] == 202


@pytest.mark.parametrize("how", ["config", "script"])
def test_create_immediate(make_emulator: MakeEmulator, http: requests.Session, how: str) -> None:
    emu = make_emulator(revid_create_response="immediate" if how == "config" else "object", default_delay=60)
    if how == "script":
        emu.script_next("revid_tts", "tts", create_response="immediate")
    resp = http.post(f"{emu.revid_base_url}/text-to-speech", json={"text": "already done", "id": "a"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "completed"
    assert body["code"] == 200
    assert body["id"] == "a"
    assert body["response"]["duration"] > 0
    assert requests.get(body["response"]["audio_url"]).status_code == 200
    assert status(emu, body["task_id"]).json()["status"] == "completed"  # already done despite the delay


def test_create_status_line_can_be_200(make_emulator: MakeEmulator, http: requests.Session) -> None:
    emu = make_emulator(revid_status_http="always_200")
    resp = http.post(f"{emu.revid_base_url}/text-to-speech", json={"text": "x"})
    assert resp.status_code == 200
    assert resp.json()["code"] == 202


@pytest.mark.parametrize("how", ["config", "task"])
def test_status_variants(make_emulator: MakeEmulator, how: str) -> None:
    variants = {
        "status_http": "always_200",
        "wrap_array": True,
        "result_key": "result",
        "duration_key": "audio_duration",
        "status_synonyms": True,
    }
    config = {f"revid_{k}" if k != "status_synonyms" else "revid_status_synonyms": v for k, v in variants.items()}
    emu = make_emulator(**config) if how == "config" else make_emulator()
    extra = variants if how == "task" else {}
    done = emu.create_task("revid_tts", "tts", delay=0, **extra)
    failed = emu.create_task("revid_tts", "tts", outcome="failed", reason="boom", delay=0, **extra)
    pending = emu.create_task("revid_tts", "tts", delay=60, **extra)
    missing = emu.create_task("revid_tts", "tts", outcome="not_found", **extra)
    for task_id, code, state in [
        (done, 200, "success"),
        (failed, 500, "error"),
        (pending, 202, "processing"),
        (missing, 404, "not_found"),
    ]:
        resp = status(emu, task_id)
        assert resp.status_code == 200  # always_200
        assert isinstance(resp.json(), list)
        body = resp.json()[0]
        assert (body["code"], body["status"]) == (code, state)
    body = status(emu, done).json()[0]
    assert "response" not in body
    assert set(body["result"]) == {"audio_url", "audio_duration"}
    assert status(emu, failed).json()[0]["error"] == "boom"


@pytest.mark.parametrize(
    "variant",
    [
        {"wrap_array": True},
        {"result_key": "result"},
        {"duration_key": "audio_duration"},
        {"status_synonyms": True},
        {"status_http": "always_200"},
    ],
)
def test_each_variant_alone(emulator: Emulator, variant: dict[str, Any]) -> None:
    task_id = emulator.create_task("revid_tts", "tts", delay=0, **variant)
    resp = status(emulator, task_id)
    body = body_of(resp)
    assert isinstance(resp.json(), list) == bool(variant.get("wrap_array"))
    assert body["status"] == ("success" if variant.get("status_synonyms") else "completed")
    result = body[variant.get("result_key", "response")]
    assert result[variant.get("duration_key", "duration")] > 0
    assert requests.get(result["audio_url"]).status_code == 200


def test_failed_outcome(emulator: Emulator) -> None:
    with_reason = emulator.create_task(
        "revid_tts", "srt-to-speech", outcome="failed", reason="voice crashed", delay=0.1
    )
    assert status(emulator, with_reason).json()["status"] == "processing"
    resp = wait_for(lambda: status(emulator, with_reason), lambda r: r.status_code != 202)
    assert resp.status_code == 500
    assert resp.json() == {
        "code": 500,
        "task_id": with_reason,
        "status": "failed",
        "message": "Task processing failed",
        "error": "voice crashed",
    }
    default = emulator.create_task("revid_tts", "tts", outcome="failed", delay=0)
    assert status(emulator, default).json()["error"]


def test_not_found(emulator: Emulator) -> None:
    resp = status(emulator, "550e8400-e29b-41d4-a716-446655440000")
    assert resp.status_code == 404
    assert resp.json() == {
        "code": 404,
        "task_id": "550e8400-e29b-41d4-a716-446655440000",
        "status": "not_found",
        "message": "Task not found",
    }
    forever = emulator.create_task("revid_tts", "tts", outcome="not_found", delay=0)
    assert status(emulator, forever).json()["status"] == "not_found"
    camb = emulator.create_task("camb_ai", "tts", delay=0)
    assert status(emulator, camb).json()["status"] == "not_found"  # other vendor's id


def test_late_visible(emulator: Emulator) -> None:
    task_id = emulator.create_task("revid_tts", "tts", outcome="late_visible", not_found_for=0.3, delay=0.6)
    seen: list[str] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not seen or seen[-1] != "completed"):
        state = status(emulator, task_id).json()["status"]
        if not seen or seen[-1] != state:
            seen.append(state)
        time.sleep(0.02)
    assert seen == ["not_found", "processing", "completed"]


def test_late_visible_default_window(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(default_not_found_for=0.2, default_delay=0.1)
    task_id = emu.create_task("revid_tts", "tts", outcome="late_visible")
    assert status(emu, task_id).json()["status"] == "not_found"
    assert wait_for(lambda: status(emu, task_id).json()["status"], lambda s: s == "completed") == "completed"


def test_unknown_status(emulator: Emulator) -> None:
    task_id = emulator.create_task("revid_tts", "tts", outcome="unknown_status", delay=0.2)
    resp = status(emulator, task_id)
    assert resp.status_code == 202
    assert resp.json()["status"] == "queued"
    assert wait_for(lambda: status(emulator, task_id).json()["status"], lambda s: s != "queued") == "completed"
    custom = emulator.create_task("revid_tts", "tts", outcome="unknown_status", delay=60, unknown_value="waiting")
    assert status(emulator, custom).json()["status"] == "waiting"


def test_key_rules(make_emulator: MakeEmulator) -> None:
    emu = make_emulator()
    task_id = emu.create_task("revid_tts", "tts", delay=60)
    assert status(emu, task_id).status_code == 202
    assert status(emu, task_id, AUTH).status_code == 202
    wrong = status(emu, task_id, {"x-api-key": "wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["code"] == 401
    for path in ("/text-to-speech", "/srt-to-speech/merge"):
        for headers in ({}, {"x-api-key": "wrong"}):
            resp = requests.post(f"{emu.revid_base_url}{path}", json={"text": "x"}, headers=headers)
            assert resp.status_code == 401
            assert resp.json()["status"] == "error"
    assert emu.stats()["tasks"] == 1
    emu.configure(require_key_on_status=True)
    assert status(emu, task_id).status_code == 401
    assert status(emu, task_id, AUTH).status_code == 202


def test_srt_v1_follows_the_timeline(emulator: Emulator, http: requests.Session) -> None:
    resp = http.post(
        f"{emulator.revid_base_url}/srt-to-speech/merge",
        json={
            "subtitles": SUBTITLES,
            "mode": "timeline",
            "add_silence": 0.5,
            "voice_id": 3,
            "speed": 1.2,
            "audio_name": "episode",
            "id": "srt-1",
        },
    )
    assert resp.status_code == 202
    assert resp.json()["id"] == "srt-1"
    body = completed(emulator, resp.json()["task_id"])
    assert body["response"]["duration"] == 4.0  # last end 3.5 s + 0.5 s of silence
    wav = read_wav(requests.get(body["response"]["audio_url"]).content)
    assert wav.duration == 4.0
    rate = wav.rate
    assert set(wav.frames[: int(0.5 * rate) * 2]) == {0}  # silence before the first subtitle
    assert set(wav.frames[int(0.6 * rate) * 2 : int(1.4 * rate) * 2]) != {0}  # speech inside it
    assert set(wav.frames[int(1.5 * rate) * 2 : int(2.0 * rate) * 2]) == {0}  # the gap
    assert emulator.stats()["creates"] == {"revid_tts": {"srt-to-speech": 1}}


def test_srt_v2(emulator: Emulator, http: requests.Session) -> None:
    resp = http.post(
        f"{emulator.revid_base_url}/srt-to-speech/merge",
        json={
            "srt_url": "https://example.com/a.srt",
            "engine": "google",
            "voice": "en-US",
            "output_format": "mp3",
            "video_url": "https://example.com/v.mp4",
        },
    )
    assert resp.status_code == 202
    body = completed(emulator, resp.json()["task_id"])
    assert read_wav(requests.get(body["response"]["audio_url"]).content).duration == body["response"]["duration"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("text-to-speech", {}, "text"),
        ("text-to-speech", {"text": "  "}, "text"),
        ("text-to-speech", {"text": "x", "engine": "polly"}, "engine"),
        ("text-to-speech", {"text": "x", "speed": 3}, "speed"),
        ("text-to-speech", {"text": "x", "pitch": -30}, "pitch"),
        ("text-to-speech", {"text": "x", "voice_id": "seven"}, "voice_id"),
        ("text-to-speech", {"text": "x", "voice": 7}, "voice"),
        ("text-to-speech", {"text": "x", "webhook_url": "ftp://x"}, "webhook_url"),
        ("srt-to-speech/merge", {}, "subtitles"),
        ("srt-to-speech/merge", {"subtitles": []}, "subtitles"),
        ("srt-to-speech/merge", {"subtitles": [{**SUBTITLES[0], "start": "00:00:00.500"}]}, "subtitles[0].start"),
        ("srt-to-speech/merge", {"subtitles": [{**SUBTITLES[0], "end": "00:00:00,100"}]}, "subtitles[0].end"),
        ("srt-to-speech/merge", {"subtitles": [{**SUBTITLES[0], "index": "1"}]}, "subtitles[0].index"),
        ("srt-to-speech/merge", {"subtitles": [{**SUBTITLES[0], "text": ""}]}, "subtitles[0].text"),
        ("srt-to-speech/merge", {"subtitles": SUBTITLES, "mode": "mix"}, "mode"),
        ("srt-to-speech/merge", {"srt_url": ""}, "srt_url"),
        ("srt-to-speech/merge", {"srt_url": "https://x/a.srt", "output_format": "ogg"}, "output_format"),
    ],
)
def test_invalid_create(
    emulator: Emulator, http: requests.Session, path: str, body: dict[str, Any], field: str
) -> None:
    resp = http.post(f"{emulator.revid_base_url}/{path}", json=body)
    assert resp.status_code == 422
    payload = resp.json()
    assert payload["code"] == 422
    assert field in [e["field"] for e in payload["errors"]]
    assert emulator.stats()["tasks"] == 0


def test_invalid_status_code_is_configurable(make_emulator: MakeEmulator, http: requests.Session) -> None:
    emu = make_emulator(revid_invalid_status=400)
    resp = http.post(
        f"{emu.revid_base_url}/text-to-speech", data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["code"] == 400


def test_audio_base_url_can_name_another_host(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(audio_base_url="http://localhost:{port}")
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    audio_url = status(emu, task_id).json()["response"]["audio_url"]
    parts = urlsplit(audio_url)
    assert (parts.hostname, parts.port) == ("localhost", emu.port)
    assert urlsplit(emu.url).hostname == "127.0.0.1"
    assert emu.audio_base_url == f"http://localhost:{emu.port}"
    assert requests.get(audio_url).status_code == 200


def test_revid_urls_can_expire(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(revid_url_ttl=0.3)
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    audio_url = status(emu, task_id).json()["response"]["audio_url"]
    assert "X-Emu-Expires=" in audio_url
    assert requests.get(audio_url).status_code == 200
    time.sleep(0.35)
    assert requests.get(audio_url).status_code == 403
    assert requests.get(audio_url.split("?")[0]).status_code == 403


def test_storage_404s(emulator: Emulator) -> None:
    pending = emulator.create_task("revid_tts", "tts", delay=60)
    resp = requests.get(f"{emulator.url}/storage/revid/{pending}.wav")
    assert resp.status_code == 404
    assert "NoSuchKey" in resp.text
    assert requests.get(f"{emulator.url}/storage/revid/nothing.wav").status_code == 404
