"""The other two kinds, one task each: Camb.ai text-to-sound, and RevidAPI SRT-to-speech from a file.

Each operator is typed for its vendor and kind (``prompt``/``duration``/``audio_type`` for
text-to-sound; ``srt``/``mode``/... for SRT-to-speech), submits, waits in the triggerer and
stores the audio. The SRT text is read by a task and handed over as an XComArg; the operator
parses it into cues after rendering (a malformed file fails naming the line, before anything is
sent or paid for).

Connections: ``camb_ai_default`` and ``revid_tts_default``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_tts.operators.text_to_storage import (
    CambTextToSoundToStorageOperator,
    RevidSrtToSpeechToStorageOperator,
)

OUTPUT = os.environ.get("TTS_EXAMPLE_OUTPUT", "file:///tmp/airflow-tts-examples/")
#: The storage connection for OUTPUT (e.g. an ``aws`` connection for ``s3://``); where audio goes is the
#: deployment's choice, never a run's conf (see ``[tts] allowed_destinations`` in docs/install.md).
DEST_CONN_ID = os.environ.get("TTS_EXAMPLE_DEST_CONN_ID") or None
SRT_FILE = Path(__file__).parent / "data" / "welcome.srt"

with DAG(
    dag_id="example_tts_sound_and_srt",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "prompt": Param("Gentle rain on a tin roof, distant thunder", type="string", minLength=1),
    },
    tags=["example", "tts"],
) as dag:
    CambTextToSoundToStorageOperator(
        task_id="sound",
        prompt="{{ params.prompt }}",
        duration=5,
        audio_type="sound",
        destination=OUTPUT + "sound-and-srt/",
        dest_conn_id=DEST_CONN_ID,
        deferrable=True,
    )

    @task
    def read_srt() -> str:
        return SRT_FILE.read_text(encoding="utf-8")

    RevidSrtToSpeechToStorageOperator(
        task_id="srt",
        srt=read_srt(),
        mode="timeline",
        destination=OUTPUT + "sound-and-srt/",
        dest_conn_id=DEST_CONN_ID,
        deferrable=True,
    )
