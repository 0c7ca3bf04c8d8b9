"""One text, end to end: submit, wait without holding a worker slot, store the audio.

Connections: ``camb_ai_default`` (Camb.ai). The destination is a DAG param; by default a folder,
so the file is named after the vendor task id.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator, TtsSubmitOperator
from airflow_provider_tts.sensors.tts import TtsTaskSensor

OUTPUT = os.environ.get("TTS_EXAMPLE_OUTPUT", "file:///tmp/airflow-tts-examples/")

with DAG(
    dag_id="example_tts_single",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "text": Param("Hello from Apache Airflow.", type="string", minLength=1),
        "destination": Param(OUTPUT + "single/", type="string"),
    },
    tags=["example", "tts"],
) as dag:
    submit = TtsSubmitOperator(
        task_id="submit",
        tts_conn_id="camb_ai_default",
        kind="tts",
        text="{{ params.text }}",
        voice_id=20303,
        language=1,
    )
    wait = TtsTaskSensor(
        task_id="wait",
        tts_conn_id="camb_ai_default",
        tts_task_id=submit.output,
        kind="tts",
        deferrable=True,
        timeout=15 * 60,
    )
    store = TtsAudioToStorageOperator(
        task_id="store",
        tts_conn_id="camb_ai_default",
        tts_task_id=submit.output,
        kind="tts",
        destination="{{ params.destination }}",
    )
    wait >> store
