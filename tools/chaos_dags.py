"""The three DAGs the chaos run (``tools/chaos.py``) triggers at once: a batch, mapped one-task operators, streams.

* ``chaos_batch``: one :class:`RevidTtsBatchToStorageOperator` over the items file ``CHAOS_ITEMS`` (one text
  a line): one task instance, one deferral, every text paid once through the folder's request cache.
* ``chaos_one_task``: :class:`CambTtsToStorageOperator` mapped over the run's ``texts`` (submit, wait in the
  triggerer, store, in one task each), then a manifest of what each stored.
* ``chaos_stream``: :class:`CambTtsStreamToStorageOperator` mapped over the run's ``texts``, then a manifest.

Retries are generous on purpose: the chaos loop SIGKILLs workers that run these tasks, and a task whose
worker died is failed by heartbeat timeout and must succeed on a later try. The claim under test is that
a retry never pays twice and never leaves anything behind, not that no retry is needed. Where audio goes
is the deployment's (``CHAOS_OUTPUT``, ``CHAOS_DEST_CONN_ID``), never a run's conf.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_tts.operators.batch import RevidTtsBatchToStorageOperator
from airflow_provider_tts.operators.stream_to_storage import CambTtsStreamToStorageOperator
from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator

OUTPUT = os.environ.get("CHAOS_OUTPUT", "file:///tmp/airflow-tts-chaos/")
DEST_CONN_ID = os.environ.get("CHAOS_DEST_CONN_ID") or None
ITEMS = os.environ.get("CHAOS_ITEMS", "file:///tmp/airflow-tts-chaos/items.txt")
RETRIES = int(os.environ.get("CHAOS_RETRIES", "6"))
#: The batch's ``max_active_requests``, given by ``tools/chaos.py`` (its verdict bounds uncertain submits by it).
BATCH_MAX_ACTIVE_REQUESTS = int(os.environ.get("CHAOS_BATCH_MAX_ACTIVE_REQUESTS", "8"))
START = pendulum.datetime(2026, 1, 1, tz="UTC")
COMMON: dict[str, Any] = {"retries": RETRIES, "retry_delay": timedelta(seconds=5)}


def _write_manifest(folder: str, texts: list[str], stored: list[dict[str, Any]]) -> str:
    """One row per text, in order, with what its task returned; written next to the audio."""
    rows = [{"text": text, **result} for text, result in zip(texts, stored, strict=True)]
    manifest = ObjectStoragePath(folder, conn_id=DEST_CONN_ID) / "manifest.json"
    manifest.write_text(json.dumps({"count": len(rows), "items": rows}))
    return str(manifest)


with DAG(dag_id="chaos_batch", schedule=None, start_date=START, catchup=False, tags=["chaos"]):
    RevidTtsBatchToStorageOperator(
        task_id="speak_all",
        items_path=ITEMS,
        defaults={"engine": "edge"},
        destination=OUTPUT + "batch/",
        dest_conn_id=DEST_CONN_ID,
        max_failed_items=0,
        max_active_requests=BATCH_MAX_ACTIVE_REQUESTS,
        deferrable=True,
        # Its resume competes with hundreds of mapped tasks whose downstream manifest gives them weight 2:
        # without this the resumed batch waited 16 minutes in "scheduled" in the first full run.
        priority_weight=10,
        **COMMON,
    )

with DAG(
    dag_id="chaos_one_task",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"texts": Param(["Hello from the chaos run."], type="array", minItems=1)},
    max_active_tasks=32,
    tags=["chaos"],
):

    @task
    def one_task_texts(params: dict[str, Any] | None = None) -> list[str]:
        return list((params or {})["texts"])

    texts = one_task_texts()
    speak = CambTtsToStorageOperator.partial(
        task_id="speak",
        voice_id=20303,
        language=1,
        destination=OUTPUT + "one-task/",
        dest_conn_id=DEST_CONN_ID,
        deferrable=True,
        timeout=timedelta(minutes=60),
        max_active_tis_per_dagrun=32,
        **COMMON,
    ).expand(text=texts)

    @task(**COMMON)
    def one_task_manifest(texts: list[str], stored: list[dict[str, Any]]) -> str:
        return _write_manifest(OUTPUT + "one-task/", texts, stored)

    one_task_manifest(texts, speak.output)  # type: ignore[arg-type]

with DAG(
    dag_id="chaos_stream",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"texts": Param(["Hello from the chaos run."], type="array", minItems=1)},
    max_active_tasks=16,
    tags=["chaos"],
):

    @task
    def stream_texts(params: dict[str, Any] | None = None) -> list[str]:
        return list((params or {})["texts"])

    streamed = stream_texts()
    stream = CambTtsStreamToStorageOperator.partial(
        task_id="speak",
        language="en-us",
        voice_id=20303,
        output_format="flac",
        destination=OUTPUT + "stream/",
        dest_conn_id=DEST_CONN_ID,
        max_active_tis_per_dagrun=8,
        **COMMON,
    ).expand(text=streamed)

    @task(**COMMON)
    def stream_manifest(texts: list[str], stored: list[dict[str, Any]]) -> str:
        return _write_manifest(OUTPUT + "stream/", texts, stored)

    stream_manifest(streamed, stream.output)  # type: ignore[arg-type]
