"""``airflow dags test``, the way most people try a DAG first, against the emulator.

``dags test`` runs tasks and triggers inline, in the CLI process. Airflow's async connection lookup
there does not see database connections, while the synchronous one does (issue 16.1): tested the
way users do it, ``airflow connections add``, then ``airflow dags test`` on a one-sensor DAG with
``deferrable=True``. And many stores in one run share one connection to the vendor.
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


_STORE_DAG = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator

with DAG("tts_many_stores", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
    for n, task_id in enumerate({tasks!r}):
        TtsAudioToStorageOperator(
            task_id=f"store_{{n}}",
            tts_conn_id="camb_ai_db_only",
            tts_task_id=task_id,
            kind="tts",
            destination={folder!r},
            file_name=f"clip-{{n}}",
            deferrable=False,
        )
"""


def test_dags_test_stores_every_file_over_one_vendor_connection(emu: Any, tmp_path: Path) -> None:
    # ``dags test`` runs every task in the CLI's own process: the tasks' hooks share the connection's
    # transport (``transport.shared_transport``), so six stores open one connection to the vendor,
    # not one each (each a TCP handshake, and on a real vendor a TLS one too).
    tasks = [emu.create_task("camb_ai", "tts", delay=0) for _ in range(6)]
    dags, folder = tmp_path / "dags", tmp_path / "audio"
    dags.mkdir()
    (dags / "many_stores.py").write_text(_STORE_DAG.format(tasks=tasks, folder=f"file://{folder}/"))
    af = LocalAirflow(tmp_path / "home", dags)
    af.home.mkdir(parents=True, exist_ok=True)
    af._prepare_db(time.monotonic() + 120)
    af.run_cli("connections", "add", "camb_ai_db_only", "--conn-type", "camb_ai",
               "--conn-host", emu.camb_base_url, "--conn-password", TEST_KEY)  # fmt: skip
    before = emu.stats()["connections"]

    out = af.run_cli("dags", "test", "tts_many_stores", timeout=300, name="dags-test")

    finished = [line for line in out.splitlines() if "DagRun Finished" in line]
    assert finished, out[-3000:]
    assert "state=success" in finished[-1], out[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == [f"clip-{n}.flac" for n in range(6)]
    assert emu.stats()["connections"] - before == 1, emu.stats()
    assert TEST_KEY not in out
