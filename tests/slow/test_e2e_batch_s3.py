"""End to end on real Airflow: the batch example into s3://, with the vendor API misbehaving.

Real Airflow 3.3 processes (scheduler, triggerer, dag-processor, api-server; SQLite; LocalExecutor),
the emulator answering 10% of status, result and storage requests with 429s and 5xx, and create
calls answered 429 and 503 (the answers that prove the vendor did not process the request, so the
hook resends them; a 5xx that may hide a created task ends the submit instead: R9), and a real
S3-compatible server (moto) on loopback. The batch DAG is triggered through Airflow's
REST API with an ``s3://`` destination; the test checks through the API and the bucket that every
mapped task succeeded, every object's sha256 matches what the emulator serves, the manifest is
complete, and the emulator saw exactly one create per text.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_tts.cache import SNAPSHOT_NAME
from airflow_provider_tts.emulator import Emulator, EmulatorConfig, FaultConfig
from tests.conftest import TEST_KEY
from tests.operators.conftest import AWS_ENV
from tests.slow.test_example_dags import EXAMPLES
from tools.local_airflow import LocalAirflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BUCKET = "tts-e2e"
TEXTS = [f"Sentence number {i + 1} of the end to end batch." for i in range(50)]


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@pytest.fixture(scope="module")
def s3_client(s3: Any) -> Any:
    """The session's moto S3 server (tests/slow/conftest.py), with this test's bucket."""
    s3.create_bucket(Bucket=BUCKET)
    return s3


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    faults = FaultConfig(
        rate=0.10,
        kinds=("429", "500", "502", "503", "504"),
        endpoints=frozenset({"status", "result", "storage"}),
        retry_after="0.2",
        seed=20261121,
    )
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=4, faults=faults)) as emu:
        yield emu


@pytest.fixture(scope="module")
def items_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-task example's items file: the deployment's ``TTS_EXAMPLE_ITEMS``, written by its test."""
    return tmp_path_factory.mktemp("items") / "texts.txt"


@pytest.fixture(scope="module")
def airflow(
    tmp_path_factory: pytest.TempPathFactory, emulator: Emulator, moto_endpoint: str, items_file: Path
) -> Iterator[LocalAirflow]:
    extra = {"retry_backoff": 0.2, "retry_max_backoff": 2}
    conns = {
        "AIRFLOW_CONN_REVID_TTS_DEFAULT": {
            "conn_type": "revid_tts", "host": emulator.revid_base_url, "password": TEST_KEY,
            "extra": {**extra, "status_base_url": emulator.revid_status_base_url},
        },
        "AIRFLOW_CONN_CAMB_AI_DEFAULT": {
            "conn_type": "camb_ai", "host": emulator.camb_base_url, "password": TEST_KEY, "extra": extra,
        },
        "AIRFLOW_CONN_AWS_E2E": {
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
        },
    }  # fmt: skip
    env = {name: json.dumps(value) for name, value in conns.items()} | AWS_ENV
    # Where the examples read and write is the deployment's choice, never a run's conf.
    env |= {"TTS_EXAMPLE_OUTPUT": f"s3://{BUCKET}/", "TTS_EXAMPLE_DEST_CONN_ID": "aws_e2e",
            "TTS_EXAMPLE_ITEMS": items_file.as_uri()}  # fmt: skip
    deployment = LocalAirflow(tmp_path_factory.mktemp("e2e") / "home", EXAMPLES, parallelism=8, env=env, log=_log)
    try:
        deployment.start(timeout=240)
        yield deployment
    finally:
        deployment.stop()


def test_batch_to_s3_through_faults(airflow: LocalAirflow, emulator: Emulator, s3_client: Any) -> None:
    dag_id = "example_tts_batch"
    airflow.wait_for_dag(dag_id)
    emulator.inject("429", count=4, endpoint="create")
    emulator.inject("503", count=4, endpoint="create")
    started = time.monotonic()
    run_id = airflow.trigger(dag_id, conf={"texts": TEXTS})
    run = airflow.wait_for_run(dag_id, run_id, timeout=600, poll_interval=2)
    faults = emulator.stats()["faults_by_kind"]
    _log(f"batch of {len(TEXTS)} through {sum(faults.values())} injected faults in {time.monotonic() - started:.0f} s")
    assert run["state"] == "success", airflow.describe_run(dag_id, run_id)
    assert sum(faults.values()) > 0, "no fault was injected: the test would prove nothing"

    # Through the API: every mapped task instance succeeded.
    tis = airflow.task_instances(dag_id, run_id)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for ti in tis:
        by_task.setdefault(ti["task_id"], []).append(ti)
    assert len(by_task["submit"]) == len(by_task["store"]) == len(TEXTS)
    assert {ti["state"] for ti in tis} == {"success"}

    # Exactly one create per text, whatever the faults and retries.
    stats = emulator.stats()
    assert stats["creates"]["revid_tts"]["tts"] == len(TEXTS)
    created = sorted(emulator.task_info(ti_id)["body"]["text"] for ti_id in (
        airflow.xcom(dag_id, run_id, "submit", map_index=i) for i in range(len(TEXTS))
    ))  # fmt: skip
    assert created == sorted(TEXTS)

    # Through the bucket: the manifest is complete and every object is the audio the emulator serves.
    manifest = json.loads(s3_client.get_object(Bucket=BUCKET, Key="batch/manifest.json")["Body"].read())
    assert manifest["count"] == len(TEXTS)
    assert [item["text"] for item in manifest["items"]] == TEXTS
    emulator.set_faults(rate=0.0)
    keys = {obj["Key"] for obj in s3_client.list_objects_v2(Bucket=BUCKET, Prefix="batch/")["Contents"]}
    assert keys == {"batch/manifest.json"} | {f"batch/{item['file']}" for item in manifest["items"]}
    for number, item in enumerate(manifest["items"], start=1):
        # Named after the item (its number and the text's first words), not the vendor's task id.
        assert re.fullmatch(rf"{number:02d}-[a-z0-9-]+\.wav", item["file"]), item["file"]
        key = f"batch/{item['file']}"
        assert item["uri"] == f"s3://{BUCKET}/{key}"
        stored = s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        served = requests.get(emulator.url + f"/storage/revid/{item['tts_task_id']}.wav", timeout=30).content
        assert hashlib.sha256(stored).hexdigest() == item["sha256"] == hashlib.sha256(served).hexdigest()
        assert len(stored) == item["size_bytes"]
    assert emulator.storage_key_leaks() == []


def test_batch_in_one_task_to_s3_through_faults(
    airflow: LocalAirflow, emulator: Emulator, s3_client: Any, items_file: Path
) -> None:
    """The one-task batch example into s3:// with 10% of status, result and storage requests failing."""
    dag_id = "example_tts_batch_one_task"
    texts = [f"Sentence number {i + 1} of the one-task batch." for i in range(50)]
    items_file.write_text("\n".join(texts) + "\n")  # the deployment's TTS_EXAMPLE_ITEMS
    emulator.set_faults(
        rate=0.10, kinds=("429", "500", "502", "503", "504"), endpoints=frozenset({"status", "result", "storage"}),
        retry_after="0.2", seed=20261202,
    )  # fmt: skip
    emulator.inject("429", count=4, endpoint="create")
    emulator.inject("503", count=4, endpoint="create")
    before = emulator.stats()["creates"].get("revid_tts", {}).get("tts", 0)  # run alone: none yet
    airflow.wait_for_dag(dag_id)
    run_id = airflow.trigger(dag_id)
    run = airflow.wait_for_run(dag_id, run_id, timeout=600, poll_interval=2)
    emulator.set_faults(rate=0.0)
    assert run["state"] == "success", airflow.describe_run(dag_id, run_id)
    assert len(airflow.task_instances(dag_id, run_id)) == 1
    assert emulator.stats()["creates"]["revid_tts"]["tts"] - before == len(texts)

    body = s3_client.get_object(Bucket=BUCKET, Key="batch-one-task/manifest.jsonl")["Body"].read().decode()
    rows = [json.loads(line) for line in body.splitlines()]
    assert [row["status"] for row in rows] == ["stored"] * len(texts)
    keys = {obj["Key"] for obj in s3_client.list_objects_v2(Bucket=BUCKET, Prefix="batch-one-task/")["Contents"]}
    audio = {row["file"].removeprefix(f"s3://{BUCKET}/") for row in rows}
    snapshot = f"batch-one-task/.tts-cache/{SNAPSHOT_NAME}"  # every entry in one object (RC16)
    entries = {key for key in keys if key.startswith("batch-one-task/.tts-cache/") and key != snapshot}
    assert len(entries) == len(texts)  # one request cache entry per text, nothing else beside the audio
    assert keys == {"batch-one-task/manifest.jsonl", snapshot} | audio | entries
    # The manifest names no vendor task (a capability at RevidAPI): compare with everything the emulator served.
    created = [task["task_id"] for task in emulator.tasks() if (task.get("body") or {}).get("text") in texts]
    served = {
        hashlib.sha256(requests.get(emulator.url + f"/storage/revid/{task_id}.wav", timeout=30).content).hexdigest()
        for task_id in created
    }
    for row in rows:
        stored = s3_client.get_object(Bucket=BUCKET, Key=row["file"].removeprefix(f"s3://{BUCKET}/"))["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == row["sha256"]
    assert {row["sha256"] for row in rows} == served  # every text's audio, each exactly as served
    assert s3_client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert emulator.storage_key_leaks() == []
