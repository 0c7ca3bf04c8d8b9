"""One DAG per operator family, each retried once: what every Airflow minor must run (issue 20).

The test (``tests/slow/test_operator_families.py``) makes the first try of the task named in each
DAG's ``doc_md`` fail through a vendor outage (injected into the emulator before the run), and
Airflow's retry must then finish the job without paying the vendor a second time. The connections
(``camb_ai_default``, ``revid_tts_default``) live in the metadata database; the audio goes to the
folder in ``TTS_FAMILY_OUTPUT``. Polls are one second apart and no failed poll is forgiven
(``max_consecutive_errors=0``), so one refused status call ends a try.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_tts.operators.batch import RevidTtsBatchToStorageOperator
from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator
from airflow_provider_tts.operators.tts import (
    CambTtsStreamToStorageOperator,
    TtsAudioToStorageOperator,
    TtsSubmitOperator,
)
from airflow_provider_tts.sensors.tts import TtsTaskSensor

OUTPUT = os.environ.get("TTS_FAMILY_OUTPUT", "file:///tmp/airflow-tts-families/")
WAIT = {"poll_interval": 1, "max_consecutive_errors": 0, "timeout": timedelta(minutes=5)}


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
        tags=["tts-family"],
    )


with _dag("family_one_task"):
    CambTtsToStorageOperator(
        task_id="speak",
        text="One task from text to stored audio.",
        voice_id=20303,
        language=1,
        destination=OUTPUT + "one-task/",
        deferrable=True,
        **WAIT,
    )

with _dag("family_batch"):
    RevidTtsBatchToStorageOperator(
        task_id="speak_all",
        items=["The first text of the batch.", "The second text of the batch.", "The third text of the batch."],
        destination=OUTPUT + "batch/",
        deferrable=True,
        **WAIT,
    )

with _dag("family_stream"):
    CambTtsStreamToStorageOperator(
        task_id="stream",
        text="Streamed straight into storage.",
        language="en-us",
        voice_id=20303,
        destination=OUTPUT + "stream/",
    )

with _dag("family_submit_sensor_store"):
    submit = TtsSubmitOperator(
        task_id="submit",
        tts_conn_id="camb_ai_default",
        kind="text-to-sound",
        prompt="a kettle coming to the boil",
        duration=2,
    )
    wait = TtsTaskSensor(task_id="wait", submitted=submit, deferrable=True, poke_interval=1, max_consecutive_errors=0)
    store = TtsAudioToStorageOperator(task_id="store", submitted=submit, destination=OUTPUT + "composed/", **WAIT)
    submit >> wait >> store
