"""The OpenLineage events Airflow really emits for a one-task store, through ``airflow dags test``.

``apache-airflow-providers-openlineage`` is installed (dev extra) and configured as a user would,
by environment: its ``file`` transport writes every event the listener emits into a folder. One
``airflow dags test`` (the task runner, the listener, the deferral run inline, all in one process
on a copied, already-migrated SQLite DB) runs a DAG of two ``CambTtsToStorageOperator`` tasks
against the emulator: one into a ``file://`` folder, one into a bucket of the moto S3 server. Each
task is deferrable and its vendor task is still pending at its first check (the emulator finishes
it 0.3 s after create), so the COMPLETE event read is normally the resumed task's; the assertions
hold either way. Before the resume fix, ``dags test`` failed here: it drops the deferral's kwargs.

The emitted COMPLETE event of each task must name the stored object as its one output (per the
OpenLineage naming spec: ``file`` + path, ``s3://<bucket>`` + key) with its size, and carry the
vendor job the operator really paid for (``externalQuery``, ``ttsJob`` with the audio duration).
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

TEXT = "Lineage, spoken once."

_DAG = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator

with DAG("tts_openlineage_event", start_date=datetime(2026, 1, 1), schedule=None, catchup=False):
    for task_id, destination, dest_conn_id in {stores!r}:
        CambTtsToStorageOperator(
            task_id=task_id,
            text={text!r},
            voice_id=20303,
            language=1,
            destination=destination,
            dest_conn_id=dest_conn_id,
            deferrable=True,
            poll_interval=0.2,
            timeout=120,
        )
"""


def _events(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(folder.iterdir())]


def test_emitted_complete_events_name_the_stored_objects(
    emu: Any, tmp_path: Path, aws_conn: str, bucket: str, s3: Any
) -> None:
    audio, events, dags = tmp_path / "audio", tmp_path / "openlineage", tmp_path / "dags"
    for folder in (audio, events, dags):
        folder.mkdir()
    stores = [("to_file", audio.as_uri() + "/", None), ("to_s3", f"s3://{bucket}/speech/", aws_conn)]
    (dags / "openlineage_event.py").write_text(_DAG.format(stores=stores, text=TEXT))

    # The DB is prepared without the OpenLineage settings, so it is the harness's cached migrated copy.
    (tmp_path / "home").mkdir()
    LocalAirflow(tmp_path / "home", dags)._prepare_db(time.monotonic() + 300)
    env = {
        "AIRFLOW_CONN_CAMB_AI_DEFAULT": json.dumps(
            {"conn_type": "camb_ai", "host": emu.camb_base_url, "password": TEST_KEY}
        ),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events / "event"), "append": False}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "tts-tests",
    }
    af = LocalAirflow(tmp_path / "home", dags, env=env)
    out = af.run_cli("dags", "test", "tts_openlineage_event", timeout=600, name="dags-test")
    finished = [line for line in out.splitlines() if "DagRun Finished" in line]
    assert finished, out[-3000:]
    assert "state=success" in finished[-1], out[-3000:]

    completes = {
        e["job"]["name"].rpartition(".")[2]: e
        for e in _events(events)
        if e["eventType"] == "COMPLETE" and e["job"]["name"].startswith("tts_openlineage_event.")
    }
    assert sorted(completes) == ["to_file", "to_s3"]
    (stored_file,) = (path for path in audio.iterdir() if not path.name.startswith("."))  # not the request cache
    (stored_object,) = (o for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if "/.tts-cache/" not in o["Key"])
    expected = {
        "to_file": ("file", str(stored_file), stored_file.stat().st_size),
        "to_s3": (f"s3://{bucket}", stored_object["Key"], stored_object["Size"]),
    }
    for task_id, event in completes.items():
        assert event["inputs"] == []
        (output,) = event["outputs"]
        namespace, name, size = expected[task_id]
        assert (output["namespace"], output["name"]) == (namespace, name)
        assert output["outputFacets"]["outputStatistics"]["size"] == size
        facets = event["run"]["facets"]
        vendor_task = facets["externalQuery"]["externalQueryId"]
        assert facets["externalQuery"]["source"] == "camb_ai"
        assert emu.task_info(vendor_task)["body"]["text"] == TEXT  # the job this task really paid for
        job = {k: v for k, v in facets["ttsJob"].items() if not k.startswith("_")}
        assert job["ttsTaskId"] == vendor_task
        assert (job["api"], job["kind"], job["contentType"]) == ("camb_ai", "tts", "audio/flac")
        assert job["audioDurationSeconds"] > 0
    every_event = "".join(path.read_text() for path in events.iterdir())
    assert ".partial" not in every_event
    assert TEST_KEY not in every_event + out
