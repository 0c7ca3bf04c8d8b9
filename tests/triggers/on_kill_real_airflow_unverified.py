"""On a real Airflow 3.3, marking a deferred wait failed makes the triggerer call ``on_kill()``.

The trigger stops polling the vendor and says, once, that the vendor task keeps running and may
be billed (neither vendor has a cancel endpoint). Airflow 3.0-3.2 never call ``on_kill()``.

Not collected yet (no ``test_`` prefix): written at the end of a session in which the machine's
load (25-30) kept the harness's api-server from answering within ``LocalAirflow.start`` three
times, so it has never run to its assertions. Rename to ``test_on_kill_real_airflow.py`` once it
has passed once.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator

import pytest

from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from tests.conftest import TEST_KEY
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.slow

BILLED = "keeps running and may be billed"

DAG_FILE = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_tts.sensors.tts import TtsTaskSensor

with DAG("tts_on_kill", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    TtsTaskSensor(task_id="wait", tts_conn_id="camb_kill", tts_task_id="{{ params.task }}", deferrable=True,
                  poll_interval=1, timeout=600, retries=0, params={"task": ""})
"""


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=3600)) as emu:
        yield emu


def test_marking_a_deferred_wait_failed_stops_polling_and_warns(
    tmp_path_factory: pytest.TempPathFactory, emulator: Emulator
) -> None:
    root = tmp_path_factory.mktemp("on-kill")
    dags = root / "dags"
    dags.mkdir()
    (dags / "tts_on_kill.py").write_text(textwrap.dedent(DAG_FILE))
    env = {
        "AIRFLOW_CONN_CAMB_KILL": json.dumps(
            {"conn_type": "camb_ai", "host": emulator.camb_base_url, "password": TEST_KEY}
        )
    }
    airflow = LocalAirflow(root / "home", dags, parallelism=2, env=env, log=_log)
    try:
        airflow.start(timeout=400)
        _kill_and_check(airflow, emulator)
    finally:
        airflow.stop()


def _kill_and_check(airflow: LocalAirflow, emulator: Emulator) -> None:
    airflow.wait_for_dag("tts_on_kill", timeout=300)
    task_id = emulator.create_task("camb_ai", "tts", delay=3600)
    run_id = airflow.trigger("tts_on_kill", conf={"task": task_id})
    deadline = time.monotonic() + 300
    while [ti["state"] for ti in airflow.task_instances("tts_on_kill", run_id)] != ["deferred"]:
        assert time.monotonic() < deadline, airflow.describe_run("tts_on_kill", run_id)
        time.sleep(1)
    while emulator.stats()["polls_by_task"].get(task_id, 0) < 3:  # the trigger is polling
        assert time.monotonic() < deadline, airflow.component_log("triggerer")[-3000:]
        time.sleep(0.5)
    _log("marking the deferred task failed")
    airflow.request(
        "PATCH",
        f"/dags/tts_on_kill/dagRuns/{run_id}/taskInstances/wait",
        json_body={"new_state": "failed"},
    )

    def trigger_log() -> str:
        # Trigger log lines go to the task's log; the triggerer's own output may carry them too.
        return airflow.component_log("triggerer") + "\n" + airflow.task_log("tts_on_kill", run_id, "wait")

    while BILLED not in trigger_log():
        assert time.monotonic() < deadline, trigger_log()[-4000:]
        time.sleep(2)
    polls = emulator.stats()["polls_by_task"][task_id]
    time.sleep(5)  # five poll intervals: no poll may follow
    assert emulator.stats()["polls_by_task"][task_id] == polls
    text = trigger_log()
    # Once per source (the line may be in the triggerer's output and in the task log).
    per_source = [
        sum(BILLED in line for line in source.splitlines())
        for source in (airflow.component_log("triggerer"), airflow.task_log("tts_on_kill", run_id, "wait"))
    ]
    _log(f"on_kill: warning lines per source {per_source}; {polls} polls in all, none after the kill")
    assert max(per_source) == 1, per_source
    assert task_id in text
    assert TEST_KEY not in text
