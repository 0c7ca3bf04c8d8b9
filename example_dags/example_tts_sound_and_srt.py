"""The other two kinds: Camb.ai text-to-sound, and RevidAPI SRT-to-speech from an ``.srt`` file.

The SRT text is read by a task and handed to the submit operator, which parses it into cues
(a malformed file fails naming the line, before anything is sent or paid for).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator, TtsSubmitOperator

OUTPUT = os.environ.get("TTS_EXAMPLE_OUTPUT", "file:///tmp/airflow-tts-examples/")
SRT_FILE = Path(__file__).parent / "data" / "welcome.srt"

with DAG(
    dag_id="example_tts_sound_and_srt",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "prompt": Param("Gentle rain on a tin roof, distant thunder", type="string", minLength=1),
        "destination": Param(OUTPUT + "sound-and-srt/", type="string"),
    },
    tags=["example", "tts"],
) as dag:
    sound = TtsSubmitOperator(
        task_id="submit_sound",
        tts_conn_id="camb_ai_default",
        kind="text-to-sound",
        prompt="{{ params.prompt }}",
        duration=5,
        audio_type="sound",
    )
    TtsAudioToStorageOperator(
        task_id="store_sound",
        tts_conn_id="camb_ai_default",
        kind="text-to-sound",
        tts_task_id=sound.output,
        destination="{{ params.destination }}",
        deferrable=True,
    )

    @task
    def read_srt() -> str:
        return SRT_FILE.read_text(encoding="utf-8")

    speech = TtsSubmitOperator(
        task_id="submit_srt",
        tts_conn_id="revid_tts_default",
        kind="srt-to-speech",
        srt=read_srt(),
        mode="timeline",
    )
    TtsAudioToStorageOperator(
        task_id="store_srt",
        tts_conn_id="revid_tts_default",
        kind="srt-to-speech",
        tts_task_id=speech.output,
        destination="{{ params.destination }}",
        deferrable=True,
    )
