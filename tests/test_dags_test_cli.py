"""``airflow dags test`` with a connection that exists only in the metadata database (issue 16.1).

``dags test`` runs triggers inline, in the CLI process; Airflow's async connection lookup there does
not see database connections, while the synchronous one does. This is how most people try a DAG
first, so it is tested the way they do it: ``airflow connections add``, then ``airflow dags test``
on a one-sensor DAG with ``deferrable=True``, against the emulator.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_KEY
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.slow

_DAG = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_tts.sensors.tts import TtsTaskSensor

with DAG("tts_db_conn_wait", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
    for api, task_id in {tasks!r}.items():
        TtsTaskSensor(
            task_id=f"wait_{{api}}",
            tts_conn_id=f"{{api}}_db_only",
            tts_task_id=task_id,
            kind="tts",
            deferrable=True,
            poke_interval=1,
            timeout=120,
        )
"""


def test_dags_test_waits_with_connections_only_in_the_database(emu: Any, tmp_path: Path) -> None:
    # Two polls pending: the sensor's first check in the task sees PENDING and defers, so the
    # wait really runs in the inline trigger, which must resolve the connection itself.
    tasks = {api: emu.create_task(api, "tts", delay=0, pending_polls=2) for api in ("camb_ai", "revid_tts")}
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "db_conn_wait.py").write_text(_DAG.format(tasks=tasks))
    af = LocalAirflow(tmp_path / "home", dags)
    af.home.mkdir(parents=True, exist_ok=True)
    af._prepare_db(time.monotonic() + 120)
    af.run_cli("connections", "add", "camb_ai_db_only", "--conn-type", "camb_ai",
               "--conn-host", emu.camb_base_url, "--conn-password", TEST_KEY)  # fmt: skip
    af.run_cli("connections", "add", "revid_tts_db_only", "--conn-type", "revid_tts",
               "--conn-host", emu.revid_base_url, "--conn-password", TEST_KEY,
               "--conn-extra", json.dumps({"status_base_url": emu.revid_status_base_url}))  # fmt: skip

    out = af.run_cli("dags", "test", "tts_db_conn_wait", timeout=300, name="dags-test")

    assert "isn't defined" not in out, out[-3000:]
    finished = [line for line in out.splitlines() if "DagRun Finished" in line]
    assert finished, out[-3000:]
    assert "state=success" in finished[-1], finished[-1]
    for task_id in tasks.values():
        # Each wait ran in the inline trigger: the emulator saw the polls beyond the task's first check.
        assert emu.task_info(task_id)["polls"] >= 3, emu.task_info(task_id)
    assert TEST_KEY not in out
