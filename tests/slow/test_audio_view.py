"""The Audio view on a real api-server, behind a real auth manager, in a real browser (issue 28).

One DAG (``audio_view_dags/tts_audio_view.py``) stores audio with every storing family (one task,
a stream and its cache hit, a batch with one item the vendor refuses, a mapped task) on a real
deployment against the emulator, plus a decoy task whose result has a stored file's shape. The
deployment's auth manager is Airflow's SimpleAuthManager without "all admins", with a user
``admin`` and a user ``outsider`` who may read every DAG but this one (``tests/slow/ui_auth.py``).

Then: the view's routes refuse an anonymous caller (401) and ``outsider`` (403) and answer
``admin``; the rows, totals, failure reason and paging are the run's; the audio comes back with
range requests; nothing but a recorded file is served; and headless Chromium opens the page, plays
one file to ``canplay`` and seeks, and keeps a screenshot.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from airflow_provider_tts.ui.plugin import HAS_EXTERNAL_VIEWS
from tests.conftest import TEST_KEY
from tests.slow.cdp import CdpError, Chromium, chromium_executable
from tools.local_airflow import LocalAirflow

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAS_EXTERNAL_VIEWS, reason="Airflow 3.0 has no UI plugins: no Audio view (the extra links stand in)"
    ),
]

REPO = Path(__file__).resolve().parents[2]
DAGS = Path(__file__).resolve().parent / "audio_view_dags"
DAG_ID = "tts_audio_view"
VIEW = "/tts-audio"
SCREENSHOT = REPO / "docs" / "audio-view.png"


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def token(api_url: str, username: str, password: str) -> str:
    """A JWT from the SimpleAuthManager's own login endpoint, as the UI gets one."""
    answer = requests.post(f"{api_url}/auth/token", json={"username": username, "password": password}, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


class BearerAuth(requests.auth.AuthBase):
    """The harness's REST calls as ``admin``; the token is fetched once the api-server answers."""

    def __init__(self, api_url: str, password: str) -> None:
        self.api_url, self.password, self.value = api_url, password, ""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if not self.value:
            try:
                self.value = token(self.api_url, "admin", self.password)
            except requests.RequestException:
                return request  # not up yet: the health checks need no token
        request.headers["Authorization"] = f"Bearer {self.value}"
        return request


def _plugin_entry_point_installed() -> bool:
    return any(ep.name == "tts_audio_view" for ep in importlib.metadata.entry_points(group="airflow.plugins"))


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=1, audio_engine="tones")) as emu:
        yield emu


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator) -> Iterator[dict[str, Any]]:
    """The DAG run to success on a deployment with real users: the deployment, run id, tokens, output."""
    output = tmp_path_factory.mktemp("audio-view")
    home = tmp_path_factory.mktemp("audio-view-home") / "home"
    home.mkdir(mode=0o700)
    passwords = {"admin": secrets.token_urlsafe(16), "outsider": secrets.token_urlsafe(16)}
    (home / "passwords.json").write_text(json.dumps(passwords))
    extra = {"max_retries": 0, "retry_backoff": 0.1}
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "TTS_AUDIO_VIEW_OUTPUT": output.as_uri() + "/",
        "AIRFLOW__TTS__ALLOWED_DESTINATIONS": output.as_uri() + "/",
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.slow.ui_auth.DagScopedAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,outsider:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW_CONN_CAMB_AI_DEFAULT": json.dumps(
            {"conn_type": "camb_ai", "host": emulator.camb_base_url, "password": TEST_KEY, "extra": extra}
        ),
        "AIRFLOW_CONN_REVID_TTS_DEFAULT": json.dumps(
            {
                "conn_type": "revid_tts",
                "host": emulator.revid_base_url,
                "password": TEST_KEY,
                "extra": {**extra, "status_base_url": emulator.revid_status_base_url},
            }
        ),
    }
    if not _plugin_entry_point_installed():
        # An editable install made before the entry point existed: let Airflow load the provider info's plugins.
        env["AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS"] = "False"
    airflow = LocalAirflow(home, DAGS, parallelism=4, env=env, log=_log)
    auth = BearerAuth(airflow.api_url, passwords["admin"])
    airflow._session.auth = auth  # the harness talks REST as admin
    try:
        airflow.start(timeout=300)
        airflow.wait_for_dag(DAG_ID)
        run_id = airflow.trigger(DAG_ID)
        result = airflow.wait_for_run(DAG_ID, run_id, timeout=300)
        assert result["state"] == "success", airflow.describe_run(DAG_ID, run_id)
        yield {
            "airflow": airflow,
            "run_id": run_id,
            "output": output,
            "admin": token(airflow.api_url, "admin", passwords["admin"]),
            "outsider": token(airflow.api_url, "outsider", passwords["outsider"]),
        }
    finally:
        airflow.stop()


def _get(
    run: dict[str, Any], route: str, user: str | None, headers: dict[str, str] | None = None, **params: Any
) -> requests.Response:
    headers = dict(headers or {})
    if user:
        headers["Authorization"] = f"Bearer {run[user]}"
    params = {"dag_id": DAG_ID, "run_id": run["run_id"], **params}
    return requests.get(f"{run['airflow'].api_url}{VIEW}/{route}", params=params, headers=headers, timeout=60)


ROUTES = [("view", {}), ("entries", {}), ("audio", {"task_id": "speak"})]


@pytest.mark.parametrize(("route", "params"), ROUTES)
def test_an_anonymous_caller_is_refused(run: dict[str, Any], route: str, params: dict[str, Any]) -> None:
    answer = _get(run, route, None, **params)
    assert answer.status_code == 401, answer.text


@pytest.mark.parametrize(("route", "params"), ROUTES)
def test_a_user_who_may_not_read_the_dag_is_refused(run: dict[str, Any], route: str, params: dict[str, Any]) -> None:
    answer = _get(run, route, "outsider", **params)
    assert answer.status_code == 403, answer.text
    assert b"RIFF" not in answer.content
    assert b"fLaC" not in answer.content
    # The same user, the same token, may read other things: the refusal is about this DAG.
    dags = requests.get(
        f"{run['airflow'].api_url}/api/v2/dags", headers={"Authorization": f"Bearer {run['outsider']}"}, timeout=30
    )
    assert dags.status_code == 200
    assert DAG_ID not in {d["dag_id"] for d in dags.json()["dags"]}


def test_the_rows_and_totals_are_the_runs(run: dict[str, Any]) -> None:
    answer = _get(run, "entries", "admin")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    rows = {(e["task_id"], e["map_index"], e["index"]): e for e in body["entries"]}
    assert set(rows) == {
        ("speak", -1, -1), ("stream", -1, -1), ("stream_again", -1, -1), ("stream_mapped", 0, -1),
        ("stream_mapped", 1, -1), ("speak_all", -1, 1), ("speak_all", -1, 2), ("speak_all", -1, 3),
    }  # fmt: skip
    assert rows[("speak", -1, -1)]["name"].startswith("briefing.")
    assert rows[("speak", -1, -1)]["vendor"] == "Camb.ai"
    assert rows[("stream_again", -1, -1)]["status"] == "cached"
    failed = rows[("speak_all", -1, 2)]  # a manifest counts items from 1
    assert failed["status"] == "failed"
    assert failed["error"]
    assert failed["vendor"] == "RevidAPI"
    totals = body["totals"]
    assert (totals["files"], totals["failed"], totals["cached"]) == (7, 1, 1)
    assert totals["seconds"] > 0
    assert "file://" not in answer.text  # names, never URIs
    only_failed = _get(run, "entries", "admin", status="failed").json()
    assert [(e["task_id"], e["index"]) for e in only_failed["entries"]] == [("speak_all", 2)]
    paged = _get(run, "entries", "admin", per_page=3, page=3).json()
    assert (paged["total_entries"], len(paged["entries"]), paged["totals"]) == (8, 2, totals)
    # Airflow 3.1's UI fills the run id into the tab's URL unencoded: its "+" arrives as a space.
    assert "+" in run["run_id"]
    spaced = _get(run, "entries", "admin", run_id=run["run_id"].replace("+", " ")).json()
    assert (spaced["run_id"], spaced["total_entries"]) == (run["run_id"], 8)
    one_task = _get(run, "entries", "admin", task_id="stream_mapped", map_index=1).json()
    assert [(e["task_id"], e["map_index"]) for e in one_task["entries"]] == [("stream_mapped", 1)]


def test_audio_is_streamed_with_range_requests(run: dict[str, Any]) -> None:
    stored = run["airflow"].xcom(DAG_ID, run["run_id"], "speak")
    on_disk = Path(stored["uri"][len("file://") :]).read_bytes()
    whole = _get(run, "audio", "admin", task_id="speak")
    assert whole.status_code == 200
    assert whole.content == on_disk
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"].startswith("audio/")
    part = _get(run, "audio", "admin", {"Range": "bytes=100-199"}, task_id="speak")
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(on_disk)}"
    assert part.content == on_disk[100:200]
    tail = _get(run, "audio", "admin", {"Range": f"bytes={len(on_disk) - 10}-"}, task_id="speak")
    assert (tail.status_code, tail.content) == (206, on_disk[-10:])
    beyond = _get(run, "audio", "admin", {"Range": f"bytes={len(on_disk)}-"}, task_id="speak")
    assert beyond.status_code == 416
    batch_item = _get(run, "audio", "admin", task_id="speak_all", index=3)
    assert batch_item.status_code == 200
    assert batch_item.headers["content-type"].startswith("audio/")
    mapped = _get(run, "audio", "admin", task_id="stream_mapped", map_index=1)
    assert mapped.status_code == 200


def test_only_a_recorded_audio_file_is_served(run: dict[str, Any]) -> None:
    assert _get(run, "audio", "admin", task_id="speak_all", index=2).status_code == 404  # failed item
    assert _get(run, "audio", "admin", task_id="speak_all", index=99).status_code == 404
    assert _get(run, "audio", "admin", task_id="decoy").status_code == 404  # not a storing operator
    assert _get(run, "audio", "admin", task_id="speak", index=0).status_code == 404
    assert _get(run, "audio", "admin", task_id="speak", run_id="no-such-run").status_code == 404


def test_the_ui_lists_the_audio_tabs(run: dict[str, Any]) -> None:
    plugins = run["airflow"].request("GET", "/plugins")["plugins"]
    (plugin,) = [p for p in plugins if p["name"] == "tts_audio_view"]
    assert {v["destination"] for v in plugin["external_views"]} == {"dag_run", "task_instance"}


def test_a_browser_plays_a_file_from_the_view(run: dict[str, Any], tmp_path: Path) -> None:
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no chromium on this machine (apt-get install chromium); CI installs it")
    api = run["airflow"].api_url
    with Chromium(executable, tmp_path / "profile") as browser:
        browser.send("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)
        browser.send("Network.enable")
        # The UI's session cookie, as Airflow's login sets it; the page's requests carry it.
        browser.send("Network.setCookie", name="_token", value=run["admin"], url=api, path="/", httpOnly=False)
        browser.send("Page.enable")
        browser.send(
            "Page.navigate", url=f"{api}{VIEW}/view?dag_id={DAG_ID}&run_id={requests.utils.quote(run['run_id'])}"
        )
        browser.wait_for("document.body && document.body.dataset.loaded === 'true'", timeout=60)
        assert browser.evaluate("document.querySelectorAll('#rows tr').length") == 8
        assert "7 files" in browser.evaluate("document.getElementById('totals').textContent")
        played = browser.evaluate(
            """new Promise((resolve, reject) => {
                 const a = document.querySelector('audio');
                 const timer = setTimeout(() => reject(new Error('no canplay in 30 s')), 30000);
                 a.addEventListener('error', () => reject(new Error('media error ' + (a.error && a.error.code))));
                 a.addEventListener('canplay', () => {
                   a.addEventListener('seeked', () => { clearTimeout(timer);
                     resolve({duration: a.duration, at: a.currentTime, state: a.readyState}); }, {once: true});
                   a.currentTime = a.duration / 2;
                 }, {once: true});
                 a.preload = 'auto';
                 a.load();
               })""",
            timeout=45,
        )
        assert played["duration"] > 0
        assert played["at"] > 0
        # The same page as Airflow's UI shows it: the run's Audio tab, the view in its frame.
        run_id = requests.utils.quote(run["run_id"], safe="")
        browser.send("Page.navigate", url=f"{api}/dags/{DAG_ID}/runs/{run_id}/plugin/tts-audio-run")
        try:
            browser.wait_for(FRAME_LOADED, timeout=90)
        except CdpError:
            browser.screenshot(tmp_path / "ui-failure.png")
            print(f"the UI as it was: {tmp_path / 'ui-failure.png'}; at {browser.evaluate('location.href')}")
            raise
        time.sleep(1)  # let the UI finish drawing around the frame
        browser.screenshot(tmp_path / "audio-view.png")
    if os.environ.get("TTS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(tmp_path / "audio-view.png", SCREENSHOT)


#: True once the UI's Audio tab holds the view in a frame and the view has drawn its rows.
FRAME_LOADED = """(() => {
  const frame = [...document.querySelectorAll('iframe')].find((f) => f.src.includes('/tts-audio/view'));
  const doc = frame && frame.contentDocument;
  const drawn = doc && doc.body && doc.body.dataset.loaded === 'true';
  return Boolean(drawn && doc.querySelectorAll('#rows tr').length === 8);
})()"""
