"""Choosing outcomes (Python API, control HTTP API, markers), scripting, stats, logs and storage records."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import requests

from airflow_provider_tts.emulator import ConfigError, Emulator, SpecError

from .conftest import AUTH, MakeEmulator, wait_for

CAMB_TTS = {"voice_id": 1, "language": 1}


def camb_create(http: requests.Session, emu: Emulator, text: str) -> requests.Response:
    return http.post(f"{emu.camb_base_url}/tts", json={"text": text, **CAMB_TTS})


def camb_status(http: requests.Session, emu: Emulator, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"{emu.camb_base_url}/tts/{task_id}").json()
    return body


def control(emu: Emulator, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{emu.url}/_emulator/{path}", json=body)


# -- markers -------------------------------------------------------------------------------------


def test_marker_chooses_the_outcome(emulator: Emulator, http: requests.Session) -> None:
    text = "Say this [emu:outcome=error,reason=HARMFUL_CONTENT_DETECTED,delay=0.1] please"
    task_id = camb_create(http, emulator, text).json()["task_id"]
    assert camb_status(http, emulator, task_id)["status"] == "PENDING"
    body = wait_for(lambda: camb_status(http, emulator, task_id), lambda b: b["status"] != "PENDING")
    assert (body["status"], body["exception_reason"]) == ("ERROR", "HARMFUL_CONTENT_DETECTED")
    info = emulator.task_info(task_id)
    assert info is not None
    assert info["body"]["text"] == text  # the create body as received
    assert info["spec"]["outcome"] == "error"
    assert emulator.stats()["creates"] == {"camb_ai": {"tts": 1}}


def test_marker_text_is_not_spoken(emulator: Emulator, http: requests.Session) -> None:
    plain = emulator.create_task("camb_ai", "tts", delay=0, text="Same words")
    marked = camb_create(http, emulator, "Same [emu:delay=0]   words").json()["task_id"]
    runs = [emulator.task_info(t)["run_id"] for t in (plain, marked)]  # type: ignore[index]
    audio = [http.get(f"{emulator.camb_base_url}/tts-result/{r}").content for r in runs]
    assert audio[0] == audio[1]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/paid/text-to-speech", {"text": "x [emu:outcome=failed,reason=engine down,delay=0]"}),
        (
            "/paid/srt-to-speech/merge",
            {
                "subtitles": [
                    {"index": 1, "start": "00:00:00,000", "end": "00:00:01,000", "text": "a"},
                    {
                        "index": 2,
                        "start": "00:00:01,000",
                        "end": "00:00:02,000",
                        "text": "b [emu:outcome=error, delay=0 ,reason=engine down]",
                    },
                ]
            },
        ),
        ("/paid/srt-to-speech/merge", {"srt_url": "https://x/a.srt#[emu:outcome=failed,delay=0,reason=engine down]"}),
    ],
)
def test_markers_work_for_revid(emulator: Emulator, http: requests.Session, path: str, body: dict[str, Any]) -> None:
    task_id = http.post(f"{emulator.url}{path}", json=body).json()["task_id"]
    status = requests.get(f"{emulator.revid_status_base_url}/get/{task_id}").json()
    assert (status["status"], status["error"]) == ("failed", "engine down")


def test_marker_variants_and_sizes(emulator: Emulator, http: requests.Session) -> None:
    text = "x [emu:delay=0,wrap_array=true,result_key=result,audio_bytes=2K]"
    task_id = http.post(f"{emulator.revid_base_url}/text-to-speech", json={"text": text}).json()["task_id"]
    body = requests.get(f"{emulator.revid_status_base_url}/get/{task_id}").json()[0]
    assert len(requests.get(body["result"]["audio_url"]).content) == 2048


def test_text_to_sound_marker_in_prompt(emulator: Emulator, http: requests.Session) -> None:
    resp = http.post(f"{emulator.camb_base_url}/text-to-sound", json={"prompt": "[emu:outcome=timeout,delay=0]"})
    status = http.get(f"{emulator.camb_base_url}/text-to-sound/{resp.json()['task_id']}").json()
    assert status["status"] == "TIMEOUT"


@pytest.mark.parametrize(
    "marker",
    [
        "[emu:outcome=explode]",
        "[emu:colour=blue]",
        "[emu:delay=soon]",
        "[emu:outcome]",
        "[emu:audio_bytes=10]",
        "[emu:audio_format=mp3]",
        "[emu:wrap_array=true]",
    ],
)
def test_bad_markers_are_rejected(emulator: Emulator, http: requests.Session, marker: str) -> None:
    emulator.script_next("camb_ai", "tts", outcome="timeout")
    resp = camb_create(http, emulator, f"hello {marker}")
    assert resp.status_code == 422
    assert "emulator marker" in resp.json()["detail"][0]["msg"]
    assert emulator.stats()["tasks"] == 0
    assert emulator.stats()["scripted"] == {"camb_ai/tts": 1}  # the script entry was not consumed


def test_revid_bad_marker(emulator: Emulator, http: requests.Session) -> None:
    resp = http.post(f"{emulator.revid_base_url}/text-to-speech", json={"text": "[emu:outcome=timeout]"})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "emulator marker"


# -- scripting -----------------------------------------------------------------------------------


def test_script_next_is_fifo_per_api_and_kind(emulator: Emulator, http: requests.Session) -> None:
    assert emulator.script_next("camb_ai", "tts", outcome="timeout", delay=0) == 1
    assert emulator.script_next("camb_ai", "tts", outcome="payment_required", delay=0) == 2
    emulator.script_next("revid_tts", "tts", outcome="failed", delay=0)
    ids = [camb_create(http, emulator, "x").json()["task_id"] for _ in range(3)]
    statuses = [camb_status(http, emulator, t)["status"] for t in ids]
    assert statuses[:2] == ["TIMEOUT", "PAYMENT_REQUIRED"]
    assert statuses[2] == "PENDING"  # back to the default behaviour
    assert emulator.stats()["scripted"] == {"revid_tts/tts": 1}  # another pair's script is untouched


def test_markers_override_the_script(emulator: Emulator, http: requests.Session) -> None:
    emulator.script_next("camb_ai", "tts", outcome="error", reason="SCRIPTED", delay=60)
    task_id = camb_create(http, emulator, "x [emu:delay=0]").json()["task_id"]
    status = camb_status(http, emulator, task_id)
    assert (status["status"], status["exception_reason"]) == ("ERROR", "SCRIPTED")


def test_python_api_validation(emulator: Emulator) -> None:
    for call in (
        lambda: emulator.create_task("elevenlabs", "tts"),
        lambda: emulator.create_task("revid_tts", "text-to-sound"),
        lambda: emulator.create_task("camb_ai", "tts", outcome="late_visible"),
        lambda: emulator.create_task("camb_ai", "tts", wrap_array=True),
        lambda: emulator.create_task("revid_tts", "tts", audio_format="flac"),
        lambda: emulator.create_task("camb_ai", "tts", delay=-1),
        lambda: emulator.script_next("revid_tts", "tts", status_http="sometimes"),
    ):
        with pytest.raises(SpecError):
            call()
    with pytest.raises(ConfigError):
        emulator.configure(camb_tts_format="mp3")
    with pytest.raises(ConfigError):
        emulator.configure(no_such_field=1)
    assert emulator.stats()["tasks"] == 0


def test_outcome_aliases(emulator: Emulator, http: requests.Session) -> None:
    revid = emulator.create_task("revid_tts", "tts", outcome="error", delay=0)
    assert requests.get(f"{emulator.revid_status_base_url}/get/{revid}").json()["status"] == "failed"
    camb = emulator.create_task("camb_ai", "tts", outcome="failed", delay=0)
    assert camb_status(http, emulator, camb)["status"] == "ERROR"


# -- control HTTP API ----------------------------------------------------------------------------


def test_control_create_and_inspect(emulator: Emulator, http: requests.Session) -> None:
    resp = control(
        emulator,
        "POST",
        "tasks",
        {"api": "camb_ai", "kind": "tts", "outcome": "error", "reason": "SOURCE_TOO_LONG", "delay": 0, "text": "hi"},
    )
    assert resp.status_code == 200
    task_id = resp.json()["task_id"]
    assert resp.json()["run_id"] >= 1001
    assert camb_status(http, emulator, task_id)["exception_reason"] == "SOURCE_TOO_LONG"
    info = control(emulator, "GET", f"tasks/{task_id}").json()
    assert (info["origin"], info["polls"], info["phase"]) == ("control", 1, "error")
    assert [t["task_id"] for t in control(emulator, "GET", "tasks").json()] == [task_id]
    assert control(emulator, "GET", "tasks/nope").status_code == 404
    assert emulator.stats()["creates"] == {}  # not a vendor create


def test_control_inf_delay_and_variants(emulator: Emulator) -> None:
    task_id = control(
        emulator, "POST", "tasks", {"api": "revid_tts", "kind": "tts", "delay": "inf", "status_http": "always_200"}
    ).json()["task_id"]
    resp = requests.get(f"{emulator.revid_status_base_url}/get/{task_id}")
    assert (resp.status_code, resp.json()["status"]) == (200, "processing")
    assert control(emulator, "GET", f"tasks/{task_id}").json()["spec"]["delay"] == "inf"


def test_control_script_inject_faults_config(emulator: Emulator, http: requests.Session) -> None:
    assert control(
        emulator, "POST", "script", {"api": "camb_ai", "kind": "tts", "outcome": "timeout", "delay": 0}
    ).json() == {"queued": 1}
    task_id = camb_create(http, emulator, "x").json()["task_id"]
    assert camb_status(http, emulator, task_id)["status"] == "TIMEOUT"

    assert control(emulator, "POST", "inject", {"kind": "503", "count": 2}).status_code == 200
    assert [http.get(f"{emulator.camb_base_url}/tts/{task_id}").status_code for _ in range(3)] == [503, 503, 200]

    faults = control(emulator, "POST", "faults", {"rate": 1, "kinds": ["502"], "endpoints": ["status"]})
    assert faults.json()["kinds"] == ["502"]
    assert control(emulator, "GET", "faults").json() == faults.json()
    assert http.get(f"{emulator.camb_base_url}/tts/{task_id}").status_code == 502
    control(emulator, "POST", "faults", {})
    assert http.get(f"{emulator.camb_base_url}/tts/{task_id}").status_code == 200

    config = control(emulator, "POST", "config", {"revid_wrap_array": True, "revid_status_http": "always_200"})
    assert config.json()["revid_wrap_array"] is True
    assert control(emulator, "GET", "config").json()["revid_status_http"] == "always_200"
    assert isinstance(requests.get(f"{emulator.revid_status_base_url}/get/x").json(), list)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("tasks", {"api": "camb_ai", "kind": "tts", "outcome": "nope"}),
        ("tasks", {"api": "camb_ai"}),
        ("tasks", {"api": "camb_ai", "kind": "text-to-sound", "duration": 99}),
        ("script", {"api": "revid_tts", "kind": "tts", "colour": "red"}),
        ("inject", {"kind": "418"}),
        ("inject", {"kind": "500", "extra": 1}),
        ("faults", {"rate": 2}),
        ("faults", {"kinds": ["nope"]}),
        ("config", {"camb_tts_format": "ogg"}),
        ("config", {"faults": {"rate": -1}}),
    ],
)
def test_control_errors_are_400(emulator: Emulator, path: str, body: dict[str, Any]) -> None:
    resp = control(emulator, "POST", path, body)
    assert resp.status_code == 400
    assert resp.json()["error"]


def test_control_rejects_non_json(emulator: Emulator) -> None:
    resp = requests.post(f"{emulator.url}/_emulator/tasks", data=b"{", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400


def test_health(emulator: Emulator) -> None:
    body = control(emulator, "GET", "health").json()
    assert body["ok"] is True
    assert (body["camb_base_url"], body["revid_base_url"], body["revid_status_base_url"]) == (
        emulator.camb_base_url,
        emulator.revid_base_url,
        emulator.revid_status_base_url,
    )


def test_reset(make_emulator: MakeEmulator, http: requests.Session) -> None:
    emu = make_emulator()
    task_id = emu.create_task("camb_ai", "tts")
    camb_create(http, emu, "x")
    emu.script_next("camb_ai", "tts", outcome="timeout")
    emu.inject("500")
    emu.set_faults(rate=1.0, kinds=("503",))
    assert control(emu, "POST", "reset").json() == {"ok": True}
    stats = emu.stats()
    assert (stats["tasks"], stats["creates"], stats["scripted"], stats["pending_injections"]) == (0, {}, {}, [])
    assert stats["requests_total"] == 0
    assert emu.config.faults.rate == 0.0  # back to the start-up fault config
    assert http.get(f"{emu.camb_base_url}/tts/{task_id}").status_code == 404
    run_ids = [emu.task_info(emu.create_task("camb_ai", "tts"))["run_id"] for _ in range(2)]  # type: ignore[index]
    assert min(run_ids) > 1002  # run ids never restart


# -- stats ---------------------------------------------------------------------------------------


def test_stats_counts(emulator: Emulator, http: requests.Session) -> None:
    a = emulator.create_task("camb_ai", "tts", delay=0)
    b = emulator.create_task("revid_tts", "tts", delay=60)
    for _ in range(3):
        http.get(f"{emulator.camb_base_url}/tts/{a}")
    http.get(f"{emulator.revid_status_base_url}/get/{b}")
    http.get(f"{emulator.revid_status_base_url}/get/missing")
    http.post(f"{emulator.revid_base_url}/text-to-speech", json={"text": "x"})
    http.post(f"{emulator.revid_base_url}/text-to-speech", json={})
    emulator.inject("429")
    http.get(f"{emulator.camb_base_url}/tts/{a}")
    http.get(f"{emulator.url}/no/such/route")
    control(emulator, "GET", "stats")
    stats = emulator.stats()
    assert stats["requests_total"] == 9
    assert stats["requests_by_endpoint"] == {"status": 6, "create": 2, "other": 1, "control": 1}
    assert stats["requests_by_status"] == {"200": 3, "202": 2, "404": 2, "422": 1, "429": 1}
    assert stats["polls_by_task"] == {a: 4, b: 1}
    assert stats["polls_unknown_task"] == 1
    assert stats["creates"] == {"revid_tts": {"tts": 1}}
    assert stats["creates_total"] == 1
    assert stats["faults_by_kind"] == {"429": 1}
    assert stats["tasks"] == 3
    assert control(emulator, "GET", "stats").json()["requests_total"] == 9  # same data over HTTP


def test_request_log_is_bounded(make_emulator: MakeEmulator, http: requests.Session) -> None:
    emu = make_emulator(request_log_size=5)
    for i in range(8):
        http.get(f"{emu.camb_base_url}/tts/t{i}")
    log = emu.requests()
    assert [entry["path"] for entry in log] == [f"/apis/tts/t{i}" for i in range(3, 8)]
    assert log[-1] | {"time": 0} == {
        "time": 0,
        "method": "GET",
        "path": "/apis/tts/t7",
        "endpoint": "status",
        "status": 404,
        "fault": None,
        "api_key_present": True,
    }
    assert control(emu, "GET", "requests?limit=2").json() == log[-2:]


def test_connections_are_counted(emulator: Emulator) -> None:
    task_id = emulator.create_task("camb_ai", "tts", delay=60)
    url = f"{emulator.camb_base_url}/tts/{task_id}"
    before = emulator.stats()["connections"]
    with requests.Session() as session:
        for _ in range(20):
            assert session.get(url, headers=AUTH).status_code == 200
    assert emulator.stats()["connections"] - before == 1

    before = emulator.stats()["connections"]
    for _ in range(5):
        with requests.Session() as session:
            session.get(url, headers=AUTH)
    assert emulator.stats()["connections"] - before == 5

    async def keep_alive() -> None:
        async with aiohttp.ClientSession(headers=AUTH) as session:
            for _ in range(10):
                async with session.get(url) as resp:
                    await resp.read()

    import asyncio

    before = emulator.stats()["connections"]
    asyncio.run(keep_alive())
    assert emulator.stats()["connections"] - before == 1


# -- storage key recording -----------------------------------------------------------------------


def test_storage_records_key_presence(emulator: Emulator, http: requests.Session) -> None:
    task_id = emulator.create_task("revid_tts", "tts", delay=0)
    audio_url = http.get(f"{emulator.revid_status_base_url}/get/{task_id}").json()["response"]["audio_url"]
    assert requests.get(audio_url).status_code == 200
    assert emulator.storage_key_leaks() == []
    assert http.get(audio_url).status_code == 200  # a leaking client: the session sends the key everywhere
    requests.get(audio_url, headers={"x-api-key": "other"})
    emulator.inject("500", endpoint="storage")
    requests.get(audio_url, headers={"x-api-key": "third", "Authorization": "Bearer z"})  # faulted: still recorded
    log = emulator.storage_requests()
    assert [(e["api_key_present"], e["api_key"]) for e in log] == [
        (False, None),
        (True, AUTH["x-api-key"]),
        (True, "other"),
        (True, "third"),
    ]
    assert log[-1]["authorization_present"] is True
    assert [e["api_key"] for e in emulator.storage_key_leaks()] == [AUTH["x-api-key"], "other", "third"]
    stats = emulator.stats()
    assert (stats["storage_requests"], stats["storage_requests_with_api_key"]) == (4, 3)
    assert stats["storage_api_keys_seen"] == [AUTH["x-api-key"], "other", "third"]
    assert control(emulator, "GET", "storage").json() == log
