"""Paying once, proven on a real Airflow 3.3 deployment (scheduler, triggerer, dag-processor, api-server).

* A create answered 502 after it was sent (the vendor may have created the task) fails the task
  on its first try with the uncertain-submit error, and Airflow's retry (``retries=1``) does not
  run, so no second create is sent. Before the fix the 502 was a retryable error and the retry
  created a second task.
* With the context Airflow 3.0-3.2 give (no ``task_state_store``), the record goes to an
  Airflow Variable through the API server: a try that fails while waiting is retried, the retry
  re-attaches to the first try's task, and the Variable is gone once the task instance succeeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from airflow_provider_tts.submissions import SubmitIdentity
from tests.conftest import TEST_KEY
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.slow

DAGS = Path(__file__).resolve().parent / "submit_dags"


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=3, audio_engine="tones")) as emu:
        yield emu


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator) -> Iterator[LocalAirflow]:
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
    deployment = LocalAirflow(tmp_path_factory.mktemp("submit") / "home", DAGS, parallelism=2, env=env, log=_log)
    try:
        deployment.start(timeout=240)
        yield deployment
    finally:
        deployment.stop()


def test_a_502_after_sending_does_not_create_a_second_task(airflow: LocalAirflow, emulator: Emulator) -> None:
    dag_id = "submit_502_after_send"
    creates_before = emulator.stats()["requests_by_endpoint"].get("create", 0)
    emulator.inject("502", endpoint="create", api="revid_tts")
    airflow.wait_for_dag(dag_id)
    run_id = airflow.trigger(dag_id)
    run = airflow.wait_for_run(dag_id, run_id, timeout=240)
    assert run["state"] == "failed", airflow.describe_run(dag_id, run_id)
    (ti,) = airflow.task_instances(dag_id, run_id)
    assert ti["state"] == "failed"
    assert ti["try_number"] == 1  # not retried, although retries=1
    assert emulator.stats()["requests_by_endpoint"]["create"] - creates_before == 1
    log = airflow.task_log(dag_id, run_id, "submit", try_number=1)
    reference = SubmitIdentity(dag_id, run_id, "submit").client_reference()
    assert "TtsSubmitUncertainError" in log
    assert "may have created, and billed" in log
    assert reference in log
    assert TEST_KEY not in log
    _log(f"FIGURE 502 after send on real Airflow: 1 create request, try_number {ti['try_number']}, task failed")


def test_below_3_3_the_variable_ledger_makes_the_retry_reattach(airflow: LocalAirflow, emulator: Emulator) -> None:
    dag_id = "submit_retry_variable_ledger"
    before = emulator.stats()["creates"].get("camb_ai", {}).get("tts", 0)
    emulator.script_next("camb_ai", "tts", delay=40)
    # 6 failing polls x 2 requests (max_retries=1) exhaust the first try's error budget of 5.
    emulator.inject("503", count=12, endpoint="status", api="camb_ai")
    airflow.wait_for_dag(dag_id)
    run_id = airflow.trigger(dag_id)
    key = "tts_submit." + SubmitIdentity(dag_id, run_id, "submit_and_wait").digest()[:40]
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + 300
    run: dict[str, object] = {}
    while time.monotonic() < deadline:
        variables = airflow.request("GET", "/variables", params={"limit": 100})["variables"]
        seen += [json.loads(v["value"]) for v in variables if v["key"] == key]
        run = airflow.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            break
        time.sleep(2)
    assert run.get("state") == "success", airflow.describe_run(dag_id, run_id)
    (ti,) = airflow.task_instances(dag_id, run_id)
    assert ti["try_number"] == 2
    assert emulator.stats()["creates"]["camb_ai"]["tts"] - before == 1
    assert any(record.get("tts_task_id") for record in seen), "the record never showed up as a Variable"
    assert all(TEST_KEY not in json.dumps(record) for record in seen)
    log = airflow.task_log(dag_id, run_id, "submit_and_wait", try_number=2)
    assert "from an earlier try (recorded in Airflow Variable" in log
    assert TEST_KEY not in log
    remaining = [v["key"] for v in airflow.request("GET", "/variables")["variables"] if v["key"].startswith("tts_")]
    assert remaining == []  # deleted once the task instance succeeded
    _log(f"FIGURE Variable ledger on real Airflow: try 2 re-attached, 1 create, {len(seen)} sightings, 0 left")
