"""Assets and lineage of the mapped store task, on a real Airflow 3.3 deployment with OpenLineage on.

One deployment (scheduler, triggerer, dag-processor, api-server; SQLite; LocalExecutor) whose DAGs
folder holds a copy of ``example_dags/example_tts_batch.py`` (the batch and the DAG scheduled on its
asset), with ``apache-airflow-providers-openlineage`` configured by environment variables to write
every event into files. One batch of three texts is run; the test then reads what Airflow recorded
through its REST API, its log files and the OpenLineage events:

* the asset the mapped store task declares was registered at parse time (before any run), and one
  event per mapped instance landed on it, the stored file in its ``extra``;
* no asset for a ``.partial`` temporary or for a single file exists, and none of Airflow's
  "AssetModel ... not found" / "inactive AssetModel" / "inactive assets" warnings was logged;
* the downstream DAG scheduled on the asset ran after the stores and was given stored files;
* each mapped store's OpenLineage COMPLETE event has the stored file as its one output (namespace
  ``file``, name the path), no input, and the vendor job as run facets; no event mentions a
  ``.partial`` file.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from tests.conftest import TEST_KEY
from tools.local_airflow import LocalAirflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # a cold start on a busy machine takes minutes

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "example_dags" / "example_tts_batch.py"
BATCH, ANNOUNCE = "example_tts_batch", "example_tts_batch_announce"
ASSET_NAME = "tts-audio/example_tts_batch/store"
TEXTS = ["One river.", "Two birds.", "Three trains."]
WARNINGS = ("cannot create asset event", "inactive AssetModel", "Task has inactive assets")


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=2)) as emu:
        yield emu


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("assets")
    for name in ("dags", "audio", "openlineage"):
        (root / name).mkdir()
    shutil.copy(EXAMPLE, root / "dags" / EXAMPLE.name)
    shutil.copytree(EXAMPLE.parent / "data", root / "dags" / "data")  # the example reads its texts from there
    return root


@pytest.fixture(scope="module")
def airflow(workdir: Path, emulator: Emulator) -> Iterator[LocalAirflow]:
    conn = {
        "conn_type": "revid_tts",
        "host": emulator.revid_base_url,
        "password": TEST_KEY,
        "extra": {"max_retries": 1, "retry_backoff": 0.1, "status_base_url": emulator.revid_status_base_url},
    }
    transport = {"type": "file", "log_file_path": str(workdir / "openlineage" / "event"), "append": False}
    env = {
        "AIRFLOW_CONN_REVID_TTS_DEFAULT": json.dumps(conn),
        "TTS_EXAMPLE_OUTPUT": (workdir / "audio").as_uri() + "/",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "tts-tests",
    }
    deployment = LocalAirflow(workdir / "home", workdir / "dags", parallelism=4, env=env, log=_log)
    try:
        deployment.start(timeout=480)  # generous: the machine running CI may be shared
        yield deployment
    finally:
        deployment.stop()


def _assets(airflow: LocalAirflow) -> list[dict[str, Any]]:
    return list(airflow.request("GET", "/assets", params={"limit": 1000})["assets"])


def _openlineage_events(workdir: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((workdir / "openlineage").iterdir())]


def test_mapped_store_emits_on_its_declared_asset_and_a_downstream_dag_runs(
    airflow: LocalAirflow, workdir: Path
) -> None:
    airflow.wait_for_dag(ANNOUNCE)  # unpaused before the batch runs, so its events queue a run
    airflow.wait_for_dag(BATCH)
    declared = [a for a in _assets(airflow) if a["name"] == ASSET_NAME]
    assert len(declared) == 1, _assets(airflow)  # registered when the DAG was parsed, before any run

    run_id = airflow.trigger(BATCH, conf={"texts": TEXTS})  # the audio goes to TTS_EXAMPLE_OUTPUT/batch/
    run = airflow.wait_for_run(BATCH, run_id, timeout=300)
    assert run["state"] == "success", airflow.describe_run(BATCH, run_id)
    stored = {airflow.xcom(BATCH, run_id, "store", map_index=i)["uri"] for i in range(len(TEXTS))}
    assert len(stored) == len(TEXTS)

    # One event per mapped instance, on the declared asset, with the stored file in its extra.
    events = airflow.request(
        "GET", "/assets/events", params={"source_dag_id": BATCH, "source_run_id": run_id, "limit": 100}
    )["asset_events"]
    assert sorted(e["source_map_index"] for e in events) == list(range(len(TEXTS)))
    assert {e["asset_id"] for e in events} == {declared[0]["id"]}
    assert {e["extra"]["uri"] for e in events} == stored
    assert all(e["extra"]["sha256"] and e["extra"]["kind"] == "tts" for e in events)

    # No asset per file, none for a temporary.
    names = [a["name"] for a in _assets(airflow)]
    assert not [n for n in names if ".partial" in n or n in stored or n.startswith("file://")], names

    # The DAG scheduled on the asset ran after the stores, triggered by their events. Airflow gives
    # a run the events up to the moment it was queued (later ones go to the next run the asset
    # triggers), so it sees at least one of the files, and only stored files.
    seen: set[str] = set()
    deadline = time.monotonic() + 180
    while not seen and time.monotonic() < deadline:
        for dag_run in airflow.request("GET", f"/dags/{ANNOUNCE}/dagRuns")["dag_runs"]:
            assert dag_run["run_type"] == "asset_triggered"
            if dag_run["state"] == "success":
                seen.update(airflow.xcom(ANNOUNCE, dag_run["dag_run_id"], "announce"))
        time.sleep(1)
    assert seen, "the downstream DAG saw no stored file"
    assert seen <= stored, (seen, stored)

    # Airflow's warnings about assets it did not know or that are inactive: none, in any log.
    logs = [p for p in airflow.home.joinpath("logs").rglob("*") if p.is_file()]
    found = [(p.name, w) for p in logs for w in WARNINGS if w in p.read_text(errors="replace")]
    assert found == []


def test_openlineage_events_name_the_stored_file_as_the_only_output(airflow: LocalAirflow, workdir: Path) -> None:
    """Runs after the batch above: reads the events the OpenLineage provider wrote for it."""
    deadline = time.monotonic() + 60
    completes: list[dict[str, Any]] = []
    while len(completes) < len(TEXTS) and time.monotonic() < deadline:
        completes = [
            e
            for e in _openlineage_events(workdir)
            if e.get("eventType") == "COMPLETE" and e.get("job", {}).get("name") == f"{BATCH}.store"
        ]
        time.sleep(1)
    assert len(completes) == len(TEXTS)
    files = sorted(p for p in (workdir / "audio" / "batch").iterdir() if p.suffix != ".json")
    assert sorted(e["outputs"][0]["name"] for e in completes) == [str(p) for p in files]
    for event in completes:
        assert event["inputs"] == []
        (output,) = event["outputs"]
        assert output["namespace"] == "file"
        assert output["outputFacets"]["outputStatistics"]["size"] == Path(output["name"]).stat().st_size
        facets = event["run"]["facets"]
        assert facets["externalQuery"]["source"] == "revid_tts"
        assert facets["ttsJob"]["ttsTaskId"] == facets["externalQuery"]["externalQueryId"]
        assert facets["ttsJob"]["kind"] == "tts"
    every_event = "".join(path.read_text() for path in (workdir / "openlineage").iterdir())
    assert ".partial" not in every_event
