"""Camb.ai endpoints of the emulator: bodies, status codes, content types, outcomes, auth, URLs."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from airflow_provider_tts.emulator import Emulator

from .audio_checks import read_flac, read_wav
from .conftest import AUTH, MakeEmulator, wait_for

TTS_BODY = {"text": "Hello from Camb", "voice_id": 20303, "language": 1}
SOUND_BODY = {"prompt": "rain on a tin roof", "duration": 2}


def create(http: requests.Session, emu: Emulator, kind: str, body: dict[str, Any]) -> str:
    resp = http.post(f"{emu.camb_base_url}/{kind}", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    assert set(resp.json()) == {"task_id"}
    return str(resp.json()["task_id"])


def finished(http: requests.Session, emu: Emulator, kind: str, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = wait_for(
        lambda: http.get(f"{emu.camb_base_url}/{kind}/{task_id}").json(),
        lambda b: b.get("status") != "PENDING",
    )
    return body


def test_tts_lifecycle_flac_bytes_and_presigned_url(emulator: Emulator, http: requests.Session) -> None:
    task_id = create(http, emulator, "tts", TTS_BODY)
    assert http.get(f"{emulator.camb_base_url}/tts/{task_id}").json() == {"status": "PENDING", "run_id": None}
    status = finished(http, emulator, "tts", task_id)
    assert status["status"] == "SUCCESS"
    assert isinstance(status["run_id"], int)

    raw = http.get(f"{emulator.camb_base_url}/tts-result/{status['run_id']}")
    assert raw.status_code == 200
    assert raw.headers["Content-Type"] == "audio/flac"
    assert int(raw.headers["Content-Length"]) == len(raw.content)
    flac = read_flac(raw.content)
    assert flac.rate == 22050
    assert flac.duration == pytest.approx(len("Hello from Camb") * 0.06, abs=0.01)

    # Explicit raw_bytes is the default.
    again = http.get(f"{emulator.camb_base_url}/tts-result/{status['run_id']}", params={"output_type": "raw_bytes"})
    assert again.content == raw.content

    link = http.get(f"{emulator.camb_base_url}/tts-result/{status['run_id']}", params={"output_type": "file_url"})
    assert link.status_code == 200
    assert set(link.json()) == {"output_url"}
    url = link.json()["output_url"]
    assert url.startswith(f"{emulator.url}/storage/camb/{status['run_id']}.flac?")
    stored = requests.get(url)  # no key: it is a third-party storage URL
    assert stored.status_code == 200
    assert stored.headers["Content-Type"] == "audio/flac"
    assert stored.content == raw.content
    assert emulator.storage_key_leaks() == []
    assert emulator.stats()["creates"] == {"camb_ai": {"tts": 1}}


@pytest.mark.parametrize(
    ("config_format", "task_format", "expected"),
    [
        ("wav", None, "wav"),
        ("flac", "wav", "wav"),
        ("wav", "flac", "flac"),
    ],
)
def test_tts_result_format(
    make_emulator: MakeEmulator, http: requests.Session, config_format: str, task_format: str | None, expected: str
) -> None:
    emu = make_emulator(camb_tts_format=config_format)
    task_id = emu.create_task("camb_ai", "tts", delay=0, audio_format=task_format, text="format check")
    run_id = finished(http, emu, "tts", task_id)["run_id"]
    resp = http.get(f"{emu.camb_base_url}/tts-result/{run_id}")
    assert resp.headers["Content-Type"] == f"audio/{expected}"
    if expected == "wav":
        wav = read_wav(resp.content)
        assert (wav.channels, wav.sample_width, wav.rate) == (1, 2, 22050)
    else:
        read_flac(resp.content)
    url = http.get(f"{emu.camb_base_url}/tts-result/{run_id}?output_type=file_url").json()["output_url"]
    assert f"/storage/camb/{run_id}.{expected}?" in url
    assert requests.get(url).content == resp.content


def test_text_to_sound_lifecycle(emulator: Emulator, http: requests.Session) -> None:
    task_id = create(http, emulator, "text-to-sound", SOUND_BODY)
    status = finished(http, emulator, "text-to-sound", task_id)
    assert status == {"status": "SUCCESS", "run_id": status["run_id"]}
    raw = http.get(f"{emulator.camb_base_url}/text-to-sound-result/{status['run_id']}")
    assert raw.headers["Content-Type"] == "audio/wav"
    assert int(raw.headers["Content-Length"]) == len(raw.content)
    assert read_wav(raw.content).duration == pytest.approx(2.0)
    link = http.get(f"{emulator.camb_base_url}/text-to-sound-result/{status['run_id']}?output_type=file_url")
    assert set(link.json()) == {"file_url"}  # the docs' key
    assert requests.get(link.json()["file_url"]).content == raw.content


def test_music_ignores_duration(emulator: Emulator, http: requests.Session) -> None:
    task_id = create(http, emulator, "text-to-sound", {"prompt": "a march", "duration": 2, "audio_type": "music"})
    run_id = finished(http, emulator, "text-to-sound", task_id)["run_id"]
    raw = http.get(f"{emulator.camb_base_url}/text-to-sound-result/{run_id}")
    assert read_wav(raw.content).duration == pytest.approx(8.0)


@pytest.mark.parametrize(
    ("config_key", "task_key", "expected"),
    [
        ("output_url", None, "output_url"),
        ("file_url", "output_url", "output_url"),
        ("file_url", "url", "url"),
    ],
)
def test_sound_url_key_is_configurable(
    make_emulator: MakeEmulator, http: requests.Session, config_key: str, task_key: str | None, expected: str
) -> None:
    emu = make_emulator(camb_sound_url_key=config_key)
    extra = {"url_key": task_key} if task_key else {}
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, duration=1, **extra)
    run_id = finished(http, emu, "text-to-sound", task_id)["run_id"]
    body = http.get(f"{emu.camb_base_url}/text-to-sound-result/{run_id}?output_type=file_url").json()
    assert set(body) == {expected}


def test_result_of_the_other_kind_is_400(emulator: Emulator, http: requests.Session) -> None:
    tts = emulator.create_task("camb_ai", "tts", delay=0)
    sound = emulator.create_task("camb_ai", "text-to-sound", delay=0, duration=1)
    tts_run = finished(http, emulator, "tts", tts)["run_id"]
    sound_run = finished(http, emulator, "text-to-sound", sound)["run_id"]
    wrong = http.get(f"{emulator.camb_base_url}/text-to-sound-result/{tts_run}")
    assert wrong.status_code == 400
    assert "not a text-to-sound run" in wrong.json()["detail"]
    wrong = http.get(f"{emulator.camb_base_url}/tts-result/{sound_run}")
    assert wrong.status_code == 400
    assert "not a text-to-speech run" in wrong.json()["detail"]


def test_result_errors(emulator: Emulator, http: requests.Session) -> None:
    base = emulator.camb_base_url
    assert http.get(f"{base}/tts-result/999999").status_code == 404
    assert http.get(f"{base}/tts-result/999999").json() == {"detail": "Run not found"}
    bad = http.get(f"{base}/tts-result/abc")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["path", "run_id"]
    pending = emulator.create_task("camb_ai", "tts", delay=60)
    run_id = emulator.task_info(pending)["run_id"]  # type: ignore[index]
    assert http.get(f"{base}/tts-result/{run_id}").status_code == 404  # not finished: no run yet
    done = emulator.create_task("camb_ai", "tts", delay=0)
    run_id = finished(http, emulator, "tts", done)["run_id"]
    bad = http.get(f"{base}/tts-result/{run_id}", params={"output_type": "mp3"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "output_type"]


def test_unknown_task_is_404(emulator: Emulator, http: requests.Session) -> None:
    resp = http.get(f"{emulator.camb_base_url}/tts/no-such-task")
    assert resp.status_code == 404
    assert resp.json() == {"detail": "Task not found"}
    tts = emulator.create_task("camb_ai", "tts")
    assert http.get(f"{emulator.camb_base_url}/text-to-sound/{tts}").status_code == 404  # other kind
    revid = emulator.create_task("revid_tts", "tts")
    assert http.get(f"{emulator.camb_base_url}/tts/{revid}").status_code == 404  # other vendor
    assert emulator.stats()["polls_unknown_task"] == 1


@pytest.mark.parametrize(
    ("kind", "body", "loc", "error_type"),
    [
        ("tts", {"voice_id": 1, "language": 1}, "text", "missing"),
        ("tts", {"text": "", "voice_id": 1, "language": 1}, "text", "string_too_short"),
        ("tts", {"text": 5, "voice_id": 1, "language": 1}, "text", "string_type"),
        ("tts", {"text": "hi", "language": 1}, "voice_id", "missing"),
        ("tts", {"text": "hi", "voice_id": "abc", "language": 1}, "voice_id", "int_parsing"),
        ("tts", {"text": "hi", "voice_id": 1, "language": "en-us"}, "language", "int_parsing"),
        ("tts", {"text": "hi", "voice_id": 1, "language": 1.5}, "language", "int_from_float"),
        ("tts", {"text": "hi", "voice_id": 1}, "language", "missing"),
        ("tts", {"text": "hi", "voice_id": 1, "language": 1, "gender": 5}, "gender", "enum"),
        ("tts", {"text": "hi", "voice_id": 1, "language": 1, "folder_id": True}, "folder_id", "int_type"),
        ("text-to-sound", {"duration": 3}, "prompt", "missing"),
        ("text-to-sound", {"prompt": "x", "duration": 11}, "duration", "less_than_equal"),
        ("text-to-sound", {"prompt": "x", "duration": 0}, "duration", "greater_than"),
        ("text-to-sound", {"prompt": "x", "duration": "long"}, "duration", "float_type"),
        ("text-to-sound", {"prompt": "x", "audio_type": "noise"}, "audio_type", "enum"),
    ],
)
def test_invalid_create_is_fastapi_422(
    emulator: Emulator, http: requests.Session, kind: str, body: dict[str, Any], loc: str, error_type: str
) -> None:
    resp = http.post(f"{emulator.camb_base_url}/{kind}", json=body)
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert isinstance(detail, list)
    assert all(set(item) >= {"loc", "msg", "type"} for item in detail)
    assert {"loc": ["body", loc], "type": error_type} in [{"loc": d["loc"], "type": d["type"]} for d in detail]
    assert emulator.stats()["creates"] == {}
    assert emulator.stats()["tasks"] == 0


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
def test_malformed_create_body_is_422(emulator: Emulator, http: requests.Session, raw: bytes) -> None:
    resp = http.post(f"{emulator.camb_base_url}/tts", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["type"] in ("json_invalid", "model_attributes_type")


def test_form_encoded_create_is_422(emulator: Emulator, http: requests.Session) -> None:
    resp = http.post(f"{emulator.camb_base_url}/tts", data={"text": "hi", "voice_id": 1, "language": 1})
    assert resp.status_code == 422
    assert "JSON" in resp.json()["detail"][0]["msg"]


def test_lax_integers_are_accepted(emulator: Emulator, http: requests.Session) -> None:
    """pydantic (FastAPI) accepts "1" and 1.0 for an int field; so does the emulator."""
    create(
        http,
        emulator,
        "tts",
        {
            "text": "hi",
            "voice_id": "20303",
            "language": 1.0,
            "gender": 9,
            "age": 30,
            "project_name": "p",
            "project_description": "d",
            "folder_id": 3,
        },
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/tts"),
        ("GET", "/tts/x"),
        ("GET", "/tts-result/1"),
        ("POST", "/text-to-sound"),
        ("GET", "/text-to-sound/x"),
        ("GET", "/text-to-sound-result/1"),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_every_call_needs_the_key(emulator: Emulator, method: str, path: str, key: str | None) -> None:
    headers = {} if key is None else {"x-api-key": key}
    resp = requests.request(method, f"{emulator.camb_base_url}{path}", json=TTS_BODY, headers=headers)
    assert resp.status_code == 401
    assert set(resp.json()) == {"detail"}
    assert emulator.stats()["tasks"] == 0


def test_401_error_shape_is_configurable(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(camb_auth_error_shape="error")
    resp = requests.get(f"{emu.camb_base_url}/tts/x", headers={"x-api-key": "nope"})
    assert resp.status_code == 401
    assert resp.json() == {"error": "Invalid API key", "status": 401}


def test_custom_key(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(api_key="sk-custom")
    assert requests.get(f"{emu.camb_base_url}/tts/x", headers=AUTH).status_code == 401
    assert requests.get(f"{emu.camb_base_url}/tts/x", headers={"x-api-key": "sk-custom"}).status_code == 404


@pytest.mark.parametrize("kind", ["tts", "text-to-sound"])
@pytest.mark.parametrize(
    ("outcome", "reason", "expected"),
    [
        ("success", None, {"status": "SUCCESS"}),
        ("error", None, {"status": "ERROR", "run_id": None, "exception_reason": "INTERNAL_ERROR"}),
        (
            "error",
            "HARMFUL_CONTENT_DETECTED",
            {"status": "ERROR", "run_id": None, "exception_reason": "HARMFUL_CONTENT_DETECTED"},
        ),
        ("error", "SOURCE_TOO_LONG", {"status": "ERROR", "run_id": None, "exception_reason": "SOURCE_TOO_LONG"}),
        ("timeout", None, {"status": "TIMEOUT", "run_id": None}),
        ("payment_required", None, {"status": "PAYMENT_REQUIRED", "run_id": None}),
    ],
)
def test_outcomes(
    emulator: Emulator, http: requests.Session, kind: str, outcome: str, reason: str | None, expected: dict[str, Any]
) -> None:
    task_id = emulator.create_task("camb_ai", kind, outcome=outcome, reason=reason, delay=0.1)
    assert http.get(f"{emulator.camb_base_url}/{kind}/{task_id}").json()["status"] == "PENDING"
    body = finished(http, emulator, kind, task_id)
    assert {k: body[k] for k in expected} == expected
    if outcome == "success":
        assert isinstance(body["run_id"], int)
    if outcome == "error":
        assert isinstance(body["message"], str)
    else:
        assert "exception_reason" not in body


def test_unknown_status_then_success(emulator: Emulator, http: requests.Session) -> None:
    task_id = emulator.create_task("camb_ai", "tts", outcome="unknown_status", delay=0.3)
    assert http.get(f"{emulator.camb_base_url}/tts/{task_id}").json() == {"status": "QUEUED", "run_id": None}
    assert finished(http, emulator, "tts", task_id)["status"] == "QUEUED"  # never PENDING
    body = wait_for(
        lambda: http.get(f"{emulator.camb_base_url}/tts/{task_id}").json(), lambda b: b["status"] != "QUEUED"
    )
    assert body["status"] == "SUCCESS"
    custom = emulator.create_task("camb_ai", "tts", outcome="unknown_status", delay=60, unknown_value="RUNNING")
    assert http.get(f"{emulator.camb_base_url}/tts/{custom}").json()["status"] == "RUNNING"


def test_not_found_outcome(emulator: Emulator, http: requests.Session) -> None:
    task_id = emulator.create_task("camb_ai", "text-to-sound", outcome="not_found", delay=0)
    resp = http.get(f"{emulator.camb_base_url}/text-to-sound/{task_id}")
    assert resp.status_code == 404
    assert resp.json() == {"detail": "Task not found"}
    assert emulator.stats()["polls_by_task"] == {task_id: 1}


def test_presigned_url_expires(make_emulator: MakeEmulator, http: requests.Session) -> None:
    emu = make_emulator(presigned_url_ttl=0.3)
    run_id = finished(http, emu, "tts", emu.create_task("camb_ai", "tts", delay=0))["run_id"]
    url = http.get(f"{emu.camb_base_url}/tts-result/{run_id}?output_type=file_url").json()["output_url"]
    assert requests.get(url).status_code == 200
    time.sleep(0.35)
    expired = requests.get(url)
    assert expired.status_code == 403
    assert expired.headers["Content-Type"].startswith("application/xml")
    assert "<Code>AccessDenied</Code>" in expired.text
    assert "expired" in expired.text
    tampered = requests.get(url[:-4] + "0000")
    assert tampered.status_code == 403
    unsigned = requests.get(url.split("?")[0])
    assert unsigned.status_code == 403


def test_storage_error_body_can_be_json(make_emulator: MakeEmulator, http: requests.Session) -> None:
    emu = make_emulator(presigned_url_ttl=0.0, storage_error_body="json")
    run_id = finished(http, emu, "tts", emu.create_task("camb_ai", "tts", delay=0))["run_id"]
    url = http.get(f"{emu.camb_base_url}/tts-result/{run_id}?output_type=file_url").json()["output_url"]
    expired = requests.get(url)
    assert expired.status_code == 403
    assert expired.json() == {"error": "AccessDenied", "message": "Request has expired"}
