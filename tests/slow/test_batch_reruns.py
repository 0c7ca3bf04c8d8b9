"""Paying exactly for what changed, on a real Airflow: re-run, clear, retry and two runs at once.

One deployment (scheduler, triggerer, dag-processor, api-server) runs ``rerun_dags/batch_reruns.py``,
a batch over a ``.csv`` the test edits between runs as a user edits tomorrow's texts, in order:

1. ten texts: ten creates;
2. a row inserted at the top: one create, one more file, nothing renamed;
3. the task of that run cleared: nothing paid;
4. two new rows, with the audio host refusing every download of the first try: Airflow's retry
   stores them without paying again;
5. ten new rows and two runs of the DAG at once into the same folder: ten creates between them.

Every step counts the emulator's creates and the files in the folder.
"""

from __future__ import annotations

import csv
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

DAGS = Path(__file__).resolve().parent / "rerun_dags"
DAG_ID = "batch_reruns"
TEXTS = [f"Tonight's line number {n}." for n in range(10)]


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=2, audio_engine="tones")) as emu:
        yield emu


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reruns")
    return root / "texts.csv", root / "out"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator, paths: tuple[Path, Path]) -> Iterator[Any]:
    items, out = paths
    conn = {"conn_type": "camb_ai", "host": emulator.camb_base_url, "password": TEST_KEY,
            "extra": {"max_retries": 0, "retry_backoff": 0.1}}  # fmt: skip
    env = {
        "AIRFLOW_CONN_CAMB_AI_DEFAULT": json.dumps(conn),
        "TTS_RERUN_ITEMS": items.as_uri(),
        "TTS_RERUN_OUTPUT": out.as_uri() + "/",
    }
    _write(items, TEXTS)
    deployment = LocalAirflow(tmp_path_factory.mktemp("reruns-home") / "home", DAGS, parallelism=4, env=env, log=_log)
    try:
        deployment.start(timeout=300)
        deployment.wait_for_dag(DAG_ID)
        yield deployment
    finally:
        deployment.stop()


def _write(path: Path, texts: list[str]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)


def _creates(emu: Emulator) -> int:
    return int(emu.stats()["creates"].get("camb_ai", {}).get("tts", 0))


def _audio(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.suffix in (".flac", ".wav"))


def _manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _succeeds(airflow: LocalAirflow, run_id: str) -> dict[str, Any]:
    run = airflow.wait_for_run(DAG_ID, run_id, timeout=300)
    assert run["state"] == "success", airflow.describe_run(DAG_ID, run_id)
    [task] = airflow.task_instances(DAG_ID, run_id)
    return task


def test_a_first_run_pays_once_per_text(airflow: LocalAirflow, emulator: Emulator, paths: tuple[Path, Path]) -> None:
    _, out = paths
    _succeeds(airflow, airflow.trigger(DAG_ID))
    assert _creates(emulator) == 10
    assert len(_audio(out)) == 10


def test_an_inserted_row_pays_for_itself_alone(
    airflow: LocalAirflow, emulator: Emulator, paths: tuple[Path, Path]
) -> None:
    items, out = paths
    _write(items, ["A brand new first line.", *TEXTS])
    _succeeds(airflow, airflow.trigger(DAG_ID, run_id="inserted"))
    assert _creates(emulator) == 11
    assert len(_audio(out)) == 11
    statuses = [row["status"] for row in _manifest(out)]
    assert (statuses.count("cached"), statuses.count("stored")) == (10, 1)


def test_a_cleared_task_pays_nothing(airflow: LocalAirflow, emulator: Emulator, paths: tuple[Path, Path]) -> None:
    _, out = paths
    airflow.request("POST", f"/dags/{DAG_ID}/clearTaskInstances", json_body={
        "dry_run": False, "dag_run_id": "inserted", "task_ids": ["speak_all"], "only_failed": False,
    })  # fmt: skip
    deadline = time.monotonic() + 60
    while airflow.request("GET", f"/dags/{DAG_ID}/dagRuns/inserted")["state"] == "success":
        assert time.monotonic() < deadline, "the cleared run never started again"
        time.sleep(0.5)
    task = _succeeds(airflow, "inserted")
    assert task["try_number"] == 2
    assert _creates(emulator) == 11
    assert [row["status"] for row in _manifest(out)] == ["cached"] * 11


def test_a_retried_try_stores_what_the_first_paid_for(
    airflow: LocalAirflow, emulator: Emulator, paths: tuple[Path, Path]
) -> None:
    items, out = paths
    _write(items, ["Retry line one.", "Retry line two.", *TEXTS])
    emulator.inject("503", count=6, endpoint="result", api="camb_ai")  # 2 new items x 3 downloads in try 1
    task = _succeeds(airflow, airflow.trigger(DAG_ID, run_id="retried"))
    assert task["try_number"] == 2
    assert _creates(emulator) == 13
    assert len(_audio(out)) == 13


def test_two_runs_at_once_pay_once_per_text(
    airflow: LocalAirflow, emulator: Emulator, paths: tuple[Path, Path]
) -> None:
    items, out = paths
    fresh = [f"Concurrent night line {n}." for n in range(10)]
    _write(items, fresh)
    first, second = airflow.trigger(DAG_ID, run_id="at-once-1"), airflow.trigger(DAG_ID, run_id="at-once-2")
    for run_id in (first, second):
        _succeeds(airflow, run_id)
    assert _creates(emulator) == 23
    assert len(_audio(out)) == 23
    assert not list((out / ".tts-batch").rglob("pending.json"))  # no wait list left behind


def test_what_ended_before_the_deferral_is_stored_in_the_worker_and_the_resume_writes_every_row(
    airflow: LocalAirflow, emulator: Emulator, paths: tuple[Path, Path]
) -> None:
    """``wait_before_defer`` through Airflow's own deferral and resume: the four lines that end
    within it are stored by the worker, the task defers once for the two others, and the resumed
    task's manifest has all six as stored, each with the create it cost (not "cached")."""
    _, out = paths
    before = _creates(emulator)
    airflow.wait_for_dag("batch_split_wait")
    run_id = airflow.trigger("batch_split_wait")
    states: set[str] = set()

    def watch(_run: dict[str, Any]) -> None:
        states.update(str(ti["state"]) for ti in airflow.task_instances("batch_split_wait", run_id))

    run = airflow.wait_for_run("batch_split_wait", run_id, timeout=300, on_poll=watch, poll_interval=0.5)
    assert run["state"] == "success", airflow.describe_run("batch_split_wait", run_id)
    assert "deferred" in states
    rows = _manifest(out / "split")
    assert [row["status"] for row in rows] == ["stored"] * 6
    assert sum(row["requests"] for row in rows) == 6
    assert _creates(emulator) == before + 6
