"""The extra links of every storing operator, served by a real api-server (issue 25).

One DAG (``link_dags/tts_links.py``) stores audio with each storing operator family into a tmp
folder against the emulator, on a real deployment (scheduler, triggerer, dag-processor, api-server
as separate processes, deferred waits in the triggerer). Then the REST API's
``GET /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links`` (what the UI asks)
must answer each task's link: the stored file as a ``file://`` URI (a cache hit's too, a mapped
task's per map index), a batch's folder and manifest; and the link must be the task's XCom.
"""

from __future__ import annotations

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

DAGS = Path(__file__).resolve().parent / "link_dags"
DAG_ID = "tts_links"


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=2, audio_engine="tones")) as emu:
        yield emu


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, emulator: Emulator) -> Iterator[tuple[LocalAirflow, str, Path]]:
    """The DAG, run once to success on a deployment: (the deployment, the run id, the output folder)."""
    output = tmp_path_factory.mktemp("linked-audio")
    extra = {"max_retries": 0, "retry_backoff": 0.1}
    env = {
        "TTS_LINKS_OUTPUT": output.as_uri() + "/",
        "AIRFLOW_CONN_CAMB_AI_DEFAULT": json.dumps(
            {"conn_type": "camb_ai", "host": emulator.camb_base_url, "password": TEST_KEY, "extra": extra}
        ),
        "AIRFLOW_CONN_REVID_TTS_DEFAULT": json.dumps(
            {
                "conn_type": "revid_tts",
                "host": emulator.revid_base_url,
                "password": TEST_KEY,
                "extra": {**extra, "status_base_url": emulator.revid_status_base_url},
            }
        ),
    }
    airflow = LocalAirflow(tmp_path_factory.mktemp("links") / "home", DAGS, parallelism=4, env=env, log=_log)
    try:
        airflow.start(timeout=300)
        airflow.wait_for_dag(DAG_ID)
        run_id = airflow.trigger(DAG_ID)
        result = airflow.wait_for_run(DAG_ID, run_id, timeout=300)
        assert result["state"] == "success", airflow.describe_run(DAG_ID, run_id)
        yield airflow, run_id, output
    finally:
        airflow.stop()


def _links(airflow: LocalAirflow, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    answer = airflow.request(
        "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/links", params={"map_index": map_index}
    )
    assert answer["total_entries"] == len(answer["extra_links"])
    return dict(answer["extra_links"])


def _file_link(uri: str) -> str:
    """The link of a stored ``file://`` URI: the path, percent-encoded."""
    assert uri.startswith("file:///"), uri
    return Path(uri[len("file://") :]).as_uri()


def test_a_stored_file_is_the_link_of_its_task(run: tuple[LocalAirflow, str, Path]) -> None:
    airflow, run_id, output = run
    stored = airflow.xcom(DAG_ID, run_id, "speak")
    assert Path(stored["uri"][len("file://") :]).parent == output / "one task"
    links = _links(airflow, run_id, "speak")
    assert links == {"Stored audio": _file_link(stored["uri"])}
    assert "one%20task/speak." in links["Stored audio"]
    # Persisted as the task's XCom, where the api-server reads it.
    assert airflow.xcom(DAG_ID, run_id, "speak", key="tts_link_stored_audio") == links["Stored audio"]


def test_a_cache_hit_links_the_stored_file(run: tuple[LocalAirflow, str, Path]) -> None:
    airflow, run_id, _ = run
    first, again = airflow.xcom(DAG_ID, run_id, "stream"), airflow.xcom(DAG_ID, run_id, "stream_again")
    assert again["cached"] is True
    assert again["uri"] == first["uri"]
    assert _links(airflow, run_id, "stream") == {"Stored audio": _file_link(first["uri"])}
    assert _links(airflow, run_id, "stream_again") == {"Stored audio": _file_link(first["uri"])}


def test_a_batch_links_its_folder_and_its_manifest(run: tuple[LocalAirflow, str, Path]) -> None:
    airflow, run_id, output = run
    summary = airflow.xcom(DAG_ID, run_id, "speak_all")
    assert summary["stored"] == 2
    assert _links(airflow, run_id, "speak_all") == {
        "Stored audio": (output / "batch").as_uri(),
        "Batch manifest": (output / "batch" / "manifest.jsonl").as_uri(),
    }
    assert summary["manifest"] == (output / "batch" / "manifest.jsonl").as_uri()


def test_each_map_index_has_its_own_link(run: tuple[LocalAirflow, str, Path]) -> None:
    airflow, run_id, _ = run
    links = []
    for index in (0, 1):
        stored = airflow.xcom(DAG_ID, run_id, "stream_mapped", map_index=index)
        links.append(_links(airflow, run_id, "stream_mapped", map_index=index))
        assert links[-1] == {"Stored audio": _file_link(stored["uri"])}
    assert links[0] != links[1]
