"""Every operator family, on the Airflow this runs on, through one retry, paying once (issue 20).

Run on every supported minor by CI (these tests are in ``MATRIX_TESTS``). Each family's DAG
(``family_dags/tts_families.py``) runs twice, the way users run it:

* on a real deployment (scheduler, triggerer, dag-processor, api-server as separate processes),
  triggered over REST, deferred waits in the triggerer;
* under ``airflow dags test`` (what ``dag.test()`` runs), with the triggers inline in the CLI.

Both with the connections in the metadata database and every component logging at DEBUG. Before each
run the emulator is told to fail the vendor calls that end the first try of one task (a status outage
for the waits, a refused ``/tts-stream``); the test then checks that Airflow retried that task once,
that the vendor created exactly one task per text (the retry re-attached, nothing was paid twice),
that the audio is in the folder, and that the API key is in no log line, table or file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from tests.conftest import TEST_KEY
from tests.reliability.secrets_audit import audit_deployment, audit_emulator
from tools.local_airflow import LocalAirflow

pytestmark = pytest.mark.slow

DAGS = Path(__file__).resolve().parent / "family_dags"
DEBUG = {"AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG"}


@dataclass(frozen=True)
class Family:
    """One DAG of ``tts_families.py``: the task whose first try an outage ends, and what it pays for."""

    dag_id: str
    retried: str
    #: ``Emulator.inject`` calls (kind, count, endpoint, api) that end the first try.
    outage: tuple[tuple[str, int, str, str], ...]
    #: (api, kind) of what the vendor creates, and how many per run.
    creates: tuple[str, str, int]
    folder: str
    files: int


FAMILIES = [
    Family("family_one_task", "speak", (("503", 1, "status", "camb_ai"),), ("camb_ai", "tts", 1), "one-task", 1),
    # A status outage heals inside a batch's try (each item is polled again before it is stored), so
    # its first try is ended by the audio host: 3 items x 3 download attempts refused.
    Family("family_batch", "speak_all", (("503", 9, "storage", "revid_tts"),), ("revid_tts", "tts", 3), "batch", 3),
    Family("family_stream", "stream", (("503", 1, "stream", "camb_ai"),), ("camb_ai", "tts-stream", 1), "stream", 1),
    Family(
        "family_submit_sensor_store", "wait", (("503", 1, "status", "camb_ai"),), ("camb_ai", "text-to-sound", 1),
        "composed", 1,
    ),
]  # fmt: skip
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3"}


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _connections(emu: Emulator) -> list[dict[str, Any]]:
    """The two connections, as the REST API and ``airflow connections add`` both take them."""
    extra = {"max_retries": 0, "retry_backoff": 0.1}
    return [
        {"connection_id": "camb_ai_default", "conn_type": "camb_ai", "host": emu.camb_base_url,
         "password": TEST_KEY, "extra": json.dumps(extra)},
        {"connection_id": "revid_tts_default", "conn_type": "revid_tts", "host": emu.revid_base_url,
         "password": TEST_KEY, "extra": json.dumps({**extra, "status_base_url": emu.revid_status_base_url})},
    ]  # fmt: skip


def _paid(emu: Emulator, family: Family) -> int:
    """What the vendor billed for this family so far: creates, or ``/tts-stream`` calls answered 200."""
    api, kind, _ = family.creates
    if kind == "tts-stream":
        return sum(1 for r in emu.requests() if r["endpoint"] == "stream" and r["status"] == 200)
    return int(emu.stats()["creates"].get(api, {}).get(kind, 0))


def _start_outage(emu: Emulator, family: Family) -> None:
    for kind, count, endpoint, api in family.outage:
        emu.inject(kind, count=count, endpoint=endpoint, api=api)


def _check_output(folder: Path, family: Family) -> None:
    audio = sorted(p for p in folder.iterdir() if p.suffix in AUDIO_SUFFIXES)
    assert len(audio) == family.files, sorted(p.name for p in folder.iterdir())
    for path in audio:
        assert path.stat().st_size > 1000, path
    assert not [p for p in folder.rglob("*") if "partial" in p.name or p.name.endswith(".tmp")]
    if family.dag_id == "family_batch":
        rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
        assert sorted(row["status"] for row in rows) == ["stored"] * 3, rows


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=2, audio_engine="tones")) as emu:
        yield emu


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator) -> Iterator[tuple[LocalAirflow, Path]]:
    output = tmp_path_factory.mktemp("deployment-audio")
    env = {**DEBUG, "TTS_FAMILY_OUTPUT": output.as_uri() + "/"}
    airflow = LocalAirflow(tmp_path_factory.mktemp("families") / "home", DAGS, parallelism=4, env=env, log=_log)
    try:
        airflow.start(timeout=300)
        for conn in _connections(emulator):
            airflow.request("POST", "/connections", json_body=conn, ok=(201,))
        yield airflow, output
    finally:
        airflow.stop()


@pytest.fixture(scope="module")
def dags_test_home(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator) -> tuple[LocalAirflow, Path]:
    """A home with a migrated database holding the connections; ``airflow dags test`` runs in it."""
    output = tmp_path_factory.mktemp("dags-test-audio")
    env = {**DEBUG, "TTS_FAMILY_OUTPUT": output.as_uri() + "/"}
    airflow = LocalAirflow(tmp_path_factory.mktemp("families-cli") / "home", DAGS, env=env, log=_log)
    airflow.home.mkdir(parents=True, exist_ok=True)
    airflow._prepare_db(time.monotonic() + 300)
    for conn in _connections(emulator):
        airflow.run_cli(
            "connections", "add", conn["connection_id"], "--conn-type", conn["conn_type"],
            "--conn-host", conn["host"], "--conn-password", conn["password"], "--conn-extra", conn["extra"],
        )  # fmt: skip
    return airflow, output


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.dag_id)
def test_on_a_deployment(deployment: tuple[LocalAirflow, Path], emulator: Emulator, family: Family) -> None:
    airflow, output = deployment
    airflow.wait_for_dag(family.dag_id)
    paid = _paid(emulator, family)
    _start_outage(emulator, family)
    run_id = airflow.trigger(family.dag_id)
    run = airflow.wait_for_run(family.dag_id, run_id, timeout=300)
    assert run["state"] == "success", airflow.describe_run(family.dag_id, run_id)
    tries = {ti["task_id"]: ti["try_number"] for ti in airflow.task_instances(family.dag_id, run_id)}
    assert tries[family.retried] == 2, tries
    assert _paid(emulator, family) - paid == family.creates[2]
    _check_output(output / family.folder, family)
    log = airflow.task_log(family.dag_id, run_id, family.retried, try_number=1)
    assert TEST_KEY not in log


def test_deployment_logs_and_tables_hold_no_key(deployment: tuple[LocalAirflow, Path], emulator: Emulator) -> None:
    """After every family ran (DEBUG everywhere): the key is in no log file and no table but ``connection``."""
    airflow, _ = deployment
    findings = audit_deployment(airflow.home, TEST_KEY) + audit_emulator(emulator, TEST_KEY)
    assert findings == [], findings


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.dag_id)
def test_under_airflow_dags_test(dags_test_home: tuple[LocalAirflow, Path], emulator: Emulator, family: Family) -> None:
    airflow, output = dags_test_home
    paid = _paid(emulator, family)
    _start_outage(emulator, family)
    out = airflow.run_cli("dags", "test", family.dag_id, timeout=300, name=f"dags-test-{family.dag_id}")
    finished = [line for line in out.splitlines() if "DagRun Finished" in line]
    assert finished, out[-4000:]
    assert "state=success" in finished[-1], out[-4000:]
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        tries = dict(
            db.execute(
                "SELECT task_id, try_number FROM task_instance WHERE dag_id = ? AND run_id = "
                "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
                (family.dag_id, family.dag_id),
            ).fetchall()
        )
    assert tries[family.retried] == 2, tries
    assert _paid(emulator, family) - paid == family.creates[2]
    _check_output(output / family.folder, family)
    leaks = [line for line in out.splitlines() if TEST_KEY in line]
    assert leaks == [], leaks[:3]
