"""Deferrable waits on a real Airflow 3.3: no worker slot held, and a SIGKILLed triggerer loses nothing.

One executor slot (``[core] parallelism = 1``), 20 deferrable sensors on emulator tasks held
pending until the test lets them finish. All 20 are deferred at the same time, which is only
possible when a deferred wait holds no slot. Midway, the triggerer is SIGKILLed and a new one
started: every wait still completes, and a sensor with a 45 s timeout still times out 45 s after it
started, not 45 s after the restart. On the same deployment, marking a deferred wait failed makes
Airflow 3.3's triggerer call ``on_kill()``: the trigger stops polling and says, once, that the
vendor task keeps running and may be billed (neither vendor has a cancel endpoint).
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from airflow_provider_tts.compat import HAS_TRIGGER_ON_KILL
from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from tests.conftest import TEST_KEY
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.slow

SENSORS = 20
#: The vendor tasks stay pending this long unless the test ends their wait first (it does, once all
#: waits are deferred and the triggerer has been killed); the run's timeout is below it.
HELD_SECONDS = 3600
TIMEOUT_SECONDS = 45
#: Kill the triggerer once this many waits are deferred at the same time (with one slot, more than one
#: deferred wait already shows that waiting holds no slot; a loaded machine starts sensors slowly).
KILL_AT_DEFERRED = 4

DAG_FILE = """
import pendulum
from airflow.sdk import DAG, task
from airflow_provider_tts.sensors.tts import TtsTaskSensor

with DAG("tts_many_waits", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False,
         max_active_tasks=64):

    @task
    def task_ids(params=None):
        return [[t["conn"], t["kind"], t["id"]] for t in params["tasks"]]

    @task
    def unpack(item):
        return {"tts_conn_id": item[0], "kind": item[1], "tts_task_id": item[2]}

    TtsTaskSensor.partial(task_id="wait", deferrable=True, timeout=600).expand_kwargs(
        unpack.expand(item=task_ids())
    )

with DAG("tts_on_kill", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    TtsTaskSensor(task_id="wait", tts_conn_id="camb_real", tts_task_id="{{ params.task }}", deferrable=True,
                  poll_interval=1, timeout=600, retries=0, params={"task": ""})

with DAG("tts_wait_timeout", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    TtsTaskSensor(task_id="wait", tts_conn_id="camb_real", tts_task_id="{{ params.task }}", deferrable=True,
                  timeout=__TIMEOUT__, retries=0, params={"task": ""})
""".replace("__TIMEOUT__", str(TIMEOUT_SECONDS))


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _when(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=HELD_SECONDS)) as emu:
        yield emu


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator) -> Iterator[LocalAirflow]:
    root = tmp_path_factory.mktemp("real-airflow")
    dags = root / "dags"
    dags.mkdir()
    (dags / "tts_waits.py").write_text(textwrap.dedent(DAG_FILE))
    conns = {
        "AIRFLOW_CONN_CAMB_REAL": {"conn_type": "camb_ai", "host": emulator.camb_base_url, "password": TEST_KEY},
        "AIRFLOW_CONN_REVID_REAL": {
            "conn_type": "revid_tts",
            "host": emulator.revid_base_url,
            "password": TEST_KEY,
            "extra": {"status_base_url": emulator.revid_status_base_url},
        },
    }
    env = {name: json.dumps(value) for name, value in conns.items()}
    deployment = LocalAirflow(root / "home", dags, parallelism=1, env=env, log=_log)
    try:
        deployment.start(timeout=240)
        yield deployment
    finally:
        deployment.stop()


def test_deferred_waits_hold_no_slot_and_survive_a_triggerer_kill(airflow: LocalAirflow, emulator: Emulator) -> None:
    airflow.wait_for_dag("tts_many_waits")
    airflow.wait_for_dag("tts_wait_timeout")
    pairs = [
        ("camb_real", "tts"),
        ("camb_real", "text-to-sound"),
        ("revid_real", "tts"),
        ("revid_real", "srt-to-speech"),
    ]
    tasks = []
    for i in range(SENSORS):
        conn, kind = pairs[i % len(pairs)]
        api = "camb_ai" if conn.startswith("camb") else "revid_tts"
        # Pending until the test ends the wait: how fast a loaded machine starts 40 task runs
        # (20 unpacks, then 20 sensors on one slot) must not decide whether the sensors defer.
        tasks.append({"conn": conn, "kind": kind, "id": emulator.create_task(api, kind, delay=HELD_SECONDS)})
    never = emulator.create_task("camb_ai", "tts", delay=float("inf"))

    started = time.monotonic()
    run_id = airflow.trigger("tts_many_waits", conf={"tasks": tasks})
    timeout_run = airflow.trigger("tts_wait_timeout", conf={"task": never})

    peak_deferred = 0
    killed = False
    released = False

    def watch(_: dict[str, Any]) -> None:
        nonlocal peak_deferred, killed, released
        states = [ti["state"] for ti in airflow.task_instances("tts_many_waits", run_id) if ti["task_id"] == "wait"]
        deferred = states.count("deferred")
        peak_deferred = max(peak_deferred, deferred)
        if not killed and deferred >= KILL_AT_DEFERRED:
            _log(f"{deferred} waits deferred: SIGKILL the triggerer and start a new one")
            airflow.kill("triggerer")
            killed = True
            airflow.restart("triggerer")
        if killed and not released and deferred == SENSORS:
            # Every wait is deferred, some on the killed triggerer: only adoption can finish them now.
            _log(f"all {SENSORS} waits deferred: the vendor tasks finish now")
            emulator.end_pending(*(t["id"] for t in tasks))
            released = True

    run = airflow.wait_for_run("tts_many_waits", run_id, timeout=900, on_poll=watch, poll_interval=2)
    elapsed = time.monotonic() - started
    _log(f"{SENSORS} waits finished {elapsed:.0f} s after the trigger; peak deferred {peak_deferred}")
    assert killed, "the triggerer was never killed mid-wait"
    assert released, "the waits were never all deferred at once"
    assert run["state"] == "success", airflow.describe_run("tts_many_waits", run_id)
    waits = [ti for ti in airflow.task_instances("tts_many_waits", run_id) if ti["task_id"] == "wait"]
    assert len(waits) == SENSORS
    assert all(ti["state"] == "success" and ti["try_number"] == 1 for ti in waits)
    # One slot, all waits deferred at once: a wait holds no slot (no timing needed to show it).
    assert peak_deferred == SENSORS
    result = airflow.xcom("tts_many_waits", run_id, "wait", map_index=0)
    assert result["state"] == "succeeded"
    assert result["tts_task_id"] == tasks[0]["id"]
    polls = emulator.stats()["polls_by_task"]
    # No hot loop: at most the worker's check, one poll per 5 s interval, and a poll per triggerer start.
    assert all(1 <= polls[t["id"]] <= 3 + 2 * elapsed / 5 for t in tasks), polls

    timed_out = airflow.wait_for_run("tts_wait_timeout", timeout_run, timeout=200)
    assert timed_out["state"] == "failed"
    (ti,) = airflow.task_instances("tts_wait_timeout", timeout_run)
    assert ti["state"] == "failed"
    assert ti["try_number"] == 1
    waited = _when(ti["end_date"]) - _when(ti["start_date"])
    _log(f"timeout sensor ended after {waited:.0f} s (timeout {TIMEOUT_SECONDS} s)")
    # Not reset by the restart: a reset deadline would end it at least TIMEOUT_SECONDS after the kill.
    assert TIMEOUT_SECONDS - 1 <= waited < TIMEOUT_SECONDS + 20
    log = airflow.task_log("tts_wait_timeout", timeout_run, "wait")
    assert "AirflowSensorTimeout" in log or "timed out" in log.lower() or "still" in log
    assert TEST_KEY not in log


BILLED = "keeps running and may be billed"


@pytest.mark.skipif(not HAS_TRIGGER_ON_KILL, reason="Airflow before 3.3 never calls a trigger's on_kill()")
def test_marking_a_deferred_wait_failed_stops_polling_and_warns_once(airflow: LocalAirflow, emulator: Emulator) -> None:
    airflow.wait_for_dag("tts_on_kill")
    task_id = emulator.create_task("camb_ai", "tts", delay=float("inf"))
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

    def sources() -> tuple[str, str]:
        # Trigger log lines go to the task's log; the triggerer's own output may carry them too.
        return airflow.component_log("triggerer"), airflow.task_log("tts_on_kill", run_id, "wait")

    while not any(BILLED in text for text in sources()):
        assert time.monotonic() < deadline, "\n".join(sources())[-4000:]
        time.sleep(2)
    polls = emulator.stats()["polls_by_task"][task_id]
    time.sleep(5)  # five poll intervals: no poll may follow
    assert emulator.stats()["polls_by_task"][task_id] == polls
    texts = sources()
    # Once per source (the line may be in the triggerer's output and in the task log).
    per_source = [sum(BILLED in line and task_id in line for line in text.splitlines()) for text in texts]
    _log(f"on_kill: warning lines per source {per_source}; {polls} polls in all, none after the kill")
    assert max(per_source) == 1, per_source
    assert all(TEST_KEY not in text for text in texts)
