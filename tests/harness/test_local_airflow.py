"""The local-deployment harness against a real Airflow 3 (separate scheduler/triggerer/dag-processor/api-server).

One deployment (parallelism=1) is shared by the tests of this module, in order: a trivial run, three
deferrable sensors sharing the single executor slot, a SIGKILLed-and-restarted triggerer, and finally
``stop()`` leaving no process behind.
"""

from __future__ import annotations

import os
import re
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.slow

WAIT_SECONDS = 10

DAGS = {
    "harness_hello.py": """
        import pendulum
        from airflow.sdk import dag, task

        @dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False)
        def harness_hello():
            @task
            def answer():
                print("hello from the harness test")
                return {"answer": 42}

            answer()

        harness_hello()
    """,
    "harness_deferred.py": f"""
        from datetime import timedelta

        import pendulum
        from airflow.providers.standard.sensors.time_delta import WaitSensor
        from airflow.sdk import DAG

        # WaitSensor(deferrable=True) defers to airflow.providers.standard.triggers.temporal.TimeDeltaTrigger.
        with DAG("harness_deferred", schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False):
            for i in range(3):
                WaitSensor(task_id=f"wait_{{i}}", time_to_wait=timedelta(seconds={WAIT_SECONDS}), deferrable=True)

        with DAG("harness_triggerer_crash", schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False):
            WaitSensor(task_id="wait", time_to_wait=timedelta(seconds=12), deferrable=True)
    """,
}


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-airflow")


@pytest.fixture(scope="module")
def deployment(root: Path) -> Iterator[LocalAirflow]:
    dags = root / "dags"
    dags.mkdir()
    for name, source in DAGS.items():
        (dags / name).write_text(textwrap.dedent(source))
    af = LocalAirflow(root / "home", dags, parallelism=1, log=_log)
    t0 = time.monotonic()
    af.start(timeout=180)
    _log(f"start() took {time.monotonic() - t0:.1f}s")
    try:
        yield af
    finally:
        af.stop()


def _seconds(run: dict[str, Any]) -> float:
    start = datetime.fromisoformat(run["start_date"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(run["end_date"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def test_trivial_run_value_state_and_log(deployment: LocalAirflow) -> None:
    deployment.wait_for_dag("harness_hello")
    run_id = deployment.trigger("harness_hello", conf={"note": "harness"})
    t0 = time.monotonic()
    run = deployment.wait_for_run("harness_hello", run_id, timeout=90)
    _log(f"trivial run took {time.monotonic() - t0:.1f}s end to end ({_seconds(run):.1f}s scheduler-side)")

    assert run["state"] == "success", deployment.describe_run("harness_hello", run_id)
    assert run["conf"] == {"note": "harness"}
    [ti] = deployment.task_instances("harness_hello", run_id)
    assert (ti["task_id"], ti["state"], ti["try_number"]) == ("answer", "success", 1)
    assert deployment.xcom("harness_hello", run_id, "answer") == {"answer": 42}
    log = deployment.task_log("harness_hello", run_id, "answer")
    assert "hello from the harness test" in log
    assert "Done. Returned value was" in log


def test_deferred_sensors_free_the_only_slot(deployment: LocalAirflow) -> None:
    """Three 10 s deferrable waits with parallelism=1 overlap instead of taking 3 x 10 s."""
    deployment.wait_for_dag("harness_deferred")
    run_id = deployment.trigger("harness_deferred")
    max_deferred = 0
    max_running = 0

    def watch(_run: dict[str, Any]) -> None:
        nonlocal max_deferred, max_running
        states = [ti["state"] for ti in deployment.task_instances("harness_deferred", run_id)]
        max_deferred = max(max_deferred, states.count("deferred"))
        max_running = max(max_running, states.count("running"))

    run = deployment.wait_for_run("harness_deferred", run_id, timeout=120, on_poll=watch)
    took = _seconds(run)
    _log(f"3 deferred {WAIT_SECONDS}s sensors with parallelism=1: {took:.1f}s; max deferred at once {max_deferred}")

    assert run["state"] == "success", deployment.describe_run("harness_deferred", run_id)
    states = {ti["task_id"]: ti["state"] for ti in deployment.task_instances("harness_deferred", run_id)}
    assert states == {"wait_0": "success", "wait_1": "success", "wait_2": "success"}
    assert max_deferred >= 2, "the sensors never waited side by side"
    assert max_running <= 1, "parallelism=1 was exceeded"
    # Sequential waits would need >= 30 s; overlapping ones need ~10 s plus three task start-ups.
    assert took < 2 * WAIT_SECONDS, deployment.describe_run("harness_deferred", run_id)


def test_deferred_task_survives_sigkilled_triggerer(deployment: LocalAirflow) -> None:
    dag_id = "harness_triggerer_crash"
    deployment.wait_for_dag(dag_id)
    run_id = deployment.trigger(dag_id)

    # Wait until the trigger is actually running in the first triggerer.
    deadline = time.monotonic() + 60
    while True:
        [ti] = deployment.task_instances(dag_id, run_id)
        if ti["state"] == "deferred" and ti.get("triggerer_job"):
            break
        assert time.monotonic() < deadline, deployment.describe_run(dag_id, run_id)
        time.sleep(0.3)
    first_job = ti["triggerer_job"]["id"]

    triggerer = psutil.Process(deployment.pid("triggerer"))
    old_tree = [triggerer, *triggerer.children(recursive=True)]
    deployment.kill("triggerer")
    assert len(old_tree) >= 2, "expected the triggerer and its trigger-runner subprocess"
    assert not any(p.is_running() for p in old_tree), "triggerer processes survived SIGKILL"

    t0 = time.monotonic()
    deployment.restart("triggerer")
    _log(f"triggerer restarted in {time.monotonic() - t0:.1f}s")
    jobs_seen: set[int] = set()

    def watch(_run: dict[str, Any]) -> None:
        for ti in deployment.task_instances(dag_id, run_id):
            if ti.get("triggerer_job"):
                jobs_seen.add(ti["triggerer_job"]["id"])

    run = deployment.wait_for_run(dag_id, run_id, timeout=120, on_poll=watch)
    _log(f"run with a SIGKILLed triggerer took {_seconds(run):.1f}s; triggerer jobs seen after restart {jobs_seen}")

    assert run["state"] == "success", deployment.describe_run(dag_id, run_id)
    [ti] = deployment.task_instances(dag_id, run_id)
    assert (ti["state"], ti["try_number"]) == ("success", 1), "the deferral should survive, not be retried"
    # Each triggerer writes the trigger's log lines to "<task log>.trigger.<triggerer job id>.log".
    log = deployment.task_log(dag_id, run_id, "wait")
    adopters = {int(job) for job in re.findall(r"\.log\.trigger\.(\d+)\.log", log)} - {first_job}
    assert adopters, f"no trigger log from a new triggerer:\n{log}"
    assert "Starting the triggerer" in deployment.component_log("triggerer")


def test_stop_leaves_no_processes(deployment: LocalAirflow, root: Path) -> None:
    ours = deployment.processes()
    assert len(ours) >= 4

    t0 = time.monotonic()
    deployment.stop()
    _log(f"stop() took {time.monotonic() - t0:.1f}s")
    deployment.stop()  # idempotent

    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ours)
    assert deployment.processes() == []
    marker = str(root)
    leftovers = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            cmdline = " ".join(proc.cmdline())
            environ = proc.environ()
        except (psutil.Error, OSError):
            continue
        if marker in cmdline or any(marker in value for value in environ.values()):
            leftovers.append((proc.pid, cmdline))
    assert leftovers == []
