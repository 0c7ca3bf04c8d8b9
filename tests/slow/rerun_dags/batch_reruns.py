"""A nightly batch over a ``.csv`` of texts, run again and again by ``tests/slow/test_batch_reruns.py``.

The items file and the folder come from the environment (``TTS_RERUN_ITEMS``, ``TTS_RERUN_OUTPUT``),
so the test edits the file between runs as a user edits tomorrow's texts. Two runs may be active at
once (a manual run beside the scheduled one); a failed try is retried after one second.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator

with DAG(
    dag_id="batch_reruns",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    CambTtsBatchToStorageOperator(
        task_id="speak_all",
        items_path=os.environ.get("TTS_RERUN_ITEMS", "file:///tmp/tts-reruns/texts.csv"),
        defaults={"voice_id": 20303, "language": 1},
        destination=os.environ.get("TTS_RERUN_OUTPUT", "file:///tmp/tts-reruns/out/"),
        max_active_requests=4,
        deferrable=True,
        poll_interval=1,
    )
