"""Every example DAG runs on a real Airflow 3.3 deployment against the emulator.

One deployment (scheduler, triggerer, dag-processor, api-server; SQLite; LocalExecutor) serves the
whole module, with the repository's ``example_dags`` folder as its DAGs folder and the audio going
to a temporary ``file://`` folder. The tests run in order, one DAG at a time, because the
scheduled-retries test injects faults that any concurrent poll would otherwise consume.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from tests.conftest import TEST_KEY
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "example_dags"


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=3)) as emu:
        yield emu


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator, output: Path) -> Iterator[LocalAirflow]:
    extra = {"max_retries": 1, "retry_backoff": 0.1, "retry_max_backoff": 1}
    conns = {
        "AIRFLOW_CONN_CAMB_AI_DEFAULT": {
            "conn_type": "camb_ai", "host": emulator.camb_base_url, "password": TEST_KEY, "extra": extra,
        },
        "AIRFLOW_CONN_REVID_TTS_DEFAULT": {
            "conn_type": "revid_tts", "host": emulator.revid_base_url, "password": TEST_KEY,
            "extra": {**extra, "status_base_url": emulator.revid_status_base_url},
        },
    }  # fmt: skip
    env = {name: json.dumps(value) for name, value in conns.items()}
    env["TTS_EXAMPLE_OUTPUT"] = output.as_uri() + "/"
    deployment = LocalAirflow(tmp_path_factory.mktemp("examples") / "home", EXAMPLES, parallelism=8, env=env, log=_log)
    try:
        deployment.start(timeout=240)
        yield deployment
    finally:
        deployment.stop()


def _run(airflow: LocalAirflow, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 240) -> str:
    airflow.wait_for_dag(dag_id)
    run_id = airflow.trigger(dag_id, conf=conf)
    run = airflow.wait_for_run(dag_id, run_id, timeout=timeout)
    assert run["state"] == "success", airflow.describe_run(dag_id, run_id)
    return run_id


def test_single(airflow: LocalAirflow, output: Path) -> None:
    run_id = _run(airflow, "example_tts_single", {"text": "One small text."})
    stored = airflow.xcom("example_tts_single", run_id, "speak")
    path = output / "single" / Path(stored["uri"]).name
    assert stored["uri"] == path.as_uri().replace("file:///", "file:///", 1)
    assert _sha256(path) == stored["sha256"]
    assert path.suffix == ".flac"


def test_batch(airflow: LocalAirflow, emulator: Emulator, output: Path) -> None:
    before = emulator.stats()["creates"].get("revid_tts", {}).get("tts", 0)
    started = time.monotonic()
    run_id = _run(airflow, "example_tts_batch", timeout=400)
    _log(f"batch of 50 took {time.monotonic() - started:.0f} s")
    manifest = json.loads((output / "batch" / "manifest.json").read_text())
    assert manifest["count"] == 50
    for item in manifest["items"]:
        path = output / "batch" / Path(item["uri"]).name
        assert path.name == item["file"]
        assert item["file"].startswith(f"{manifest['items'].index(item) + 1:02d}-")  # readable and in order
        assert _sha256(path) == item["sha256"]
        assert path.stat().st_size == item["size_bytes"]
        assert item["duration_seconds"] > 0
        assert item["text"]
    assert emulator.stats()["creates"]["revid_tts"]["tts"] - before == 50
    states = {ti["state"] for ti in airflow.task_instances("example_tts_batch", run_id)}
    assert states == {"success"}


def test_batch_one_task(airflow: LocalAirflow, emulator: Emulator, output: Path) -> None:
    """The same 50 texts in one task instance: the same audio as the mapped batch, one create per text."""
    dag_id = "example_tts_batch_one_task"
    before = emulator.stats()["creates"].get("revid_tts", {}).get("tts", 0)
    emulator.inject("429", count=3, endpoint="create")  # one Retry-After pauses the whole batch
    emulator.inject("503", count=3, endpoint="status")
    started = time.monotonic()
    run_id = _run(airflow, dag_id, timeout=300)
    _log(f"batch of 50 in one task took {time.monotonic() - started:.0f} s")
    assert [ti["state"] for ti in airflow.task_instances(dag_id, run_id)] == ["success"]
    summary = airflow.xcom(dag_id, run_id, "speak_all")
    assert (summary["items"], summary["stored"] + summary["cached"], summary["failed"]) == (50, 50, 0)
    rows = [json.loads(line) for line in (output / "batch-one-task" / "manifest.jsonl").read_text().splitlines()]
    first = Path(rows[0]["file"]).name
    assert first == f"the-river-wakes-up-slowly-{rows[0]['fingerprint'].removeprefix('sha256:')[:8]}.wav"
    for row in rows:
        path = output / "batch-one-task" / Path(row["file"]).name
        assert _sha256(path) == row["sha256"]
        assert path.stat().st_size == row["size_bytes"]
    assert (summary["files"], summary["files_truncated"]) == ([row["file"] for row in rows], False)
    assert emulator.stats()["creates"]["revid_tts"]["tts"] - before == 50
    mapped = output / "batch" / "manifest.json"
    if mapped.exists():  # test_batch ran first: the same texts gave the same audio
        earlier = json.loads(mapped.read_text())["items"]
        assert [row["sha256"] for row in rows] == [item["sha256"] for item in earlier]


def test_existing_dag(airflow: LocalAirflow, emulator: Emulator, output: Path) -> None:
    task_id = emulator.create_task("camb_ai", "text-to-sound", delay=2)
    conf = {"tts_task_id": task_id, "tts_conn_id": "camb_ai_default", "kind": "text-to-sound"}
    _run(airflow, "example_tts_existing_dag", conf)
    # One file, named after the store task (stable across re-runs), not after the vendor's task id.
    [audio] = [path for path in (output / "existing").iterdir() if path.suffix == ".wav"]
    assert task_id not in audio.name
    assert audio.stat().st_size > 1000


def test_sound_and_srt(airflow: LocalAirflow, emulator: Emulator, output: Path) -> None:
    run_id = _run(airflow, "example_tts_sound_and_srt")
    srt_task = airflow.xcom("example_tts_sound_and_srt", run_id, "srt")["tts_task_id"]
    body = emulator.task_info(srt_task)["body"]
    assert [cue["index"] for cue in body["subtitles"]] == [1, 2, 3]
    files = sorted(p.suffix for p in (output / "sound-and-srt").iterdir() if not p.name.startswith("."))
    assert files == [".wav", ".wav"]


def test_scheduled_retries_heal_without_a_second_submit(
    airflow: LocalAirflow, emulator: Emulator, output: Path
) -> None:
    """The first try's wait runs into a vendor outage and fails; the retry re-attaches to the same task and stores."""
    dag_id = "example_tts_scheduled_retries"
    before = emulator.stats()["creates"].get("camb_ai", {}).get("tts", 0)
    emulator.script_next("camb_ai", "tts", delay=40)
    # 6 failing polls x 2 requests (max_retries=1) exhaust the first try's error budget of 5.
    emulator.inject("503", count=12, endpoint="status", api="camb_ai")
    airflow.wait_for_dag(dag_id)  # unpausing lets the scheduler create the latest @daily run
    deadline = time.monotonic() + 60
    runs: list[dict[str, Any]] = []
    while not runs and time.monotonic() < deadline:
        runs = airflow.request("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]
        time.sleep(1)
    assert len(runs) == 1
    assert runs[0]["run_type"] == "scheduled"
    run = airflow.wait_for_run(dag_id, runs[0]["dag_run_id"], timeout=300)
    assert run["state"] == "success", airflow.describe_run(dag_id, runs[0]["dag_run_id"])
    (task,) = [t for t in airflow.task_instances(dag_id, runs[0]["dag_run_id"]) if t["task_id"] == "daily_briefing"]
    assert task["try_number"] == 2
    assert emulator.stats()["creates"]["camb_ai"]["tts"] - before == 1
    log = airflow.task_log(dag_id, runs[0]["dag_run_id"], "daily_briefing", try_number=2)
    assert "earlier try" in log
    assert TEST_KEY not in log
    stored = airflow.xcom(dag_id, runs[0]["dag_run_id"], "daily_briefing")
    assert _sha256(output / "daily" / Path(stored["uri"]).name) == stored["sha256"]


def test_secrets_audit(airflow: LocalAirflow, emulator: Emulator) -> None:
    """After every example ran: the key is in no table, no log file, no storage request, no URL."""
    from tests.reliability.secrets_audit import audit_deployment, audit_emulator

    scanned: dict[str, int] = {}
    findings = audit_deployment(airflow.home, TEST_KEY, summary=scanned) + audit_emulator(emulator, TEST_KEY)
    assert findings == [], findings
    assert min(scanned["rows"], scanned["files"]) > 0, scanned
    print(f"\nFIGURE secrets audit: {scanned}; storage requests {emulator.stats()['storage_requests']}")
