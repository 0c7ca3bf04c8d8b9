"""What the Audio view lists (issue 28): every kind of stored file, a failed batch item, and a decoy.

``tests/slow/test_audio_view.py`` runs it on a real deployment. The connections point at the emulator;
the audio goes to the folder in ``TTS_AUDIO_VIEW_OUTPUT``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_tts.operators.batch import RevidTtsBatchToStorageOperator
from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator
from airflow_provider_tts.operators.tts import CambTtsStreamToStorageOperator

OUTPUT = os.environ.get("TTS_AUDIO_VIEW_OUTPUT", "file:///tmp/airflow-tts-audio-view/")
WAIT = {"poll_interval": 1, "timeout": timedelta(minutes=5)}
STREAM = {"text": "Streamed, then found in the cache.", "language": "en-us", "voice_id": 20303}

with DAG(
    dag_id="tts_audio_view",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["tts-audio-view"],
):
    CambTtsToStorageOperator(
        task_id="speak",
        text="Good morning. This is the briefing.",
        voice_id=20303,
        language=1,
        destination=OUTPUT + "one task/",
        file_name="briefing",
        deferrable=True,
        **WAIT,
    )
    stream = CambTtsStreamToStorageOperator(task_id="stream", destination=OUTPUT + "stream/", **STREAM)
    stream_again = CambTtsStreamToStorageOperator(task_id="stream_again", destination=OUTPUT + "stream/", **STREAM)
    stream >> stream_again
    RevidTtsBatchToStorageOperator(
        task_id="speak_all",
        items=[
            "The first text of the batch.",
            "[emu:outcome=failed] The second text, which the vendor refuses.",
            "The third text of the batch.",
        ],
        destination=OUTPUT + "batch/",
        max_failed_items=1,
        deferrable=True,
        **WAIT,
    )
    CambTtsStreamToStorageOperator.partial(
        task_id="stream_mapped", destination=OUTPUT + "mapped/", language="en-us", voice_id=20303
    ).expand(text=["The first mapped text.", "The second mapped text."])

    @task
    def decoy() -> dict[str, object]:
        """Not a storing operator: its result has a stored file's shape but names a file that is not audio."""
        return {"uri": "file:///etc/passwd", "size_bytes": 1, "sha256": "", "content_type": "audio/flac",
                "duration_seconds": 1.0, "cached": False}  # fmt: skip

    decoy()
