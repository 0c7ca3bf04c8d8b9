"""A scheduled DAG with retries: a vendor outage heals through retries without a second payment.

One task makes the daily briefing: ``CambTtsToStorageOperator`` submits, waits and stores. If the
wait fails (the vendor is down for longer than the hook's own retries and the wait's error
budget), or the store does, the Airflow task fails and is retried; the retry finds the vendor task
id recorded for this task instance (in the task state store on Airflow 3.3+, in an Airflow
Variable before) and waits on the same task again instead of creating, and paying for, another.
The day's file has a fixed name, so a re-run replaces nothing it does not have to
(``overwrite="skip_if_identical"``, the default).

Retries heal what is known to have created nothing or to have created a recorded task. A create
whose answer was lost (a 502 or a timeout after sending) is different: the vendor may have
billed a task nobody knows the id of, so the task fails at once, without using up its retries,
and says what to check; ``on_uncertain_submit="resubmit"`` would send it again instead.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator

OUTPUT = os.environ.get("TTS_EXAMPLE_OUTPUT", "file:///tmp/airflow-tts-examples/")

with DAG(
    dag_id="example_tts_scheduled_retries",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=5)},
    tags=["example", "tts"],
) as dag:
    CambTtsToStorageOperator(
        task_id="daily_briefing",
        text="Good morning. This is the audio briefing for {{ ds }}.",
        voice_id=20303,
        language=1,
        destination=OUTPUT + "daily/{{ ds }}.flac",
        # The wait runs in the worker here, so one try's whole story (submit, outage, failure) is in
        # one task log; deferrable=True heals the same way, from the triggerer.
        deferrable=False,
        timeout=timedelta(minutes=10),
    )
