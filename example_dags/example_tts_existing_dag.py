"""Add a sensor to an existing DAG: the vendor task id arrives from elsewhere.

Some other system (or an upstream task) already created the text-to-speech task; this DAG only
waits for it and stores the audio. The id comes in as a DAG param here (``tts_task_id``); an
upstream XCom works the same way (``tts_task_id=some_task.output``). The store is handed the
sensor's status (``wait.output``), so it fetches the audio without asking the vendor again.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
from airflow_provider_tts.sensors.tts import TtsTaskSensor

OUTPUT = os.environ.get("TTS_EXAMPLE_OUTPUT", "file:///tmp/airflow-tts-examples/")
#: The storage connection for OUTPUT (e.g. an ``aws`` connection for ``s3://``); where audio goes is the
#: deployment's choice, never a run's conf (see ``[tts] allowed_destinations`` in docs/install.md).
DEST_CONN_ID = os.environ.get("TTS_EXAMPLE_DEST_CONN_ID") or None

with DAG(
    dag_id="example_tts_existing_dag",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "tts_task_id": Param("", type="string", description="the vendor's task id"),
        "tts_conn_id": Param("camb_ai_default", type="string"),
        "kind": Param("tts", enum=["tts", "text-to-sound", "srt-to-speech"]),
    },
    tags=["example", "tts"],
) as dag:

    @task
    def existing_work() -> str:
        """Stands for whatever the DAG already did before the audio was needed."""
        return "upstream work done"

    wait = TtsTaskSensor(
        task_id="wait_for_audio",
        tts_conn_id="{{ params.tts_conn_id }}",
        tts_task_id="{{ params.tts_task_id }}",
        kind="{{ params.kind }}",
        deferrable=True,
        timeout=30 * 60,
    )
    store = TtsAudioToStorageOperator(
        task_id="store_audio",
        tts_conn_id="{{ params.tts_conn_id }}",
        tts_task_id=wait.output,  # the sensor's status: where the audio is, no second status request
        kind="{{ params.kind }}",
        destination=OUTPUT + "existing/",
        dest_conn_id=DEST_CONN_ID,
    )
    existing_work() >> wait >> store
