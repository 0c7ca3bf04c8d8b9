"""Every storing operator family in one DAG, for the extra links the api-server serves (issue 25).

``tests/slow/test_links.py`` runs it on a real deployment and asks ``.../taskInstances/{task_id}/links``
for each task. The connections (``camb_ai_default``, ``revid_tts_default``) point at the emulator;
the audio goes to the folder in ``TTS_LINKS_OUTPUT``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_tts.operators.batch import RevidTtsBatchToStorageOperator
from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator
from airflow_provider_tts.operators.tts import CambTtsStreamToStorageOperator

OUTPUT = os.environ.get("TTS_LINKS_OUTPUT", "file:///tmp/airflow-tts-links/")
WAIT = {"poll_interval": 1, "timeout": timedelta(minutes=5)}
STREAM = {"text": "Streamed, then found in the cache.", "language": "en-us", "voice_id": 20303}

with DAG(
    dag_id="tts_links",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["tts-links"],
):
    # Deferred: the link is kept by the resumed instance that stores.
    CambTtsToStorageOperator(
        task_id="speak",
        text="One task from text to a linked file.",
        voice_id=20303,
        language=1,
        destination=OUTPUT + "one task/",
        file_name="speak",
        deferrable=True,
        **WAIT,
    )
    stream = CambTtsStreamToStorageOperator(task_id="stream", destination=OUTPUT + "stream/", **STREAM)
    # The same request into the same folder: a cache hit, nothing paid, the stored file is still the link.
    stream_again = CambTtsStreamToStorageOperator(task_id="stream_again", destination=OUTPUT + "stream/", **STREAM)
    stream >> stream_again
    RevidTtsBatchToStorageOperator(
        task_id="speak_all",
        items=["The first text of the batch.", "The second text of the batch."],
        destination=OUTPUT + "batch/",
        deferrable=True,
        **WAIT,
    )
    # Mapped: each map index has its own link.
    CambTtsStreamToStorageOperator.partial(
        task_id="stream_mapped", destination=OUTPUT + "mapped/", language="en-us", voice_id=20303
    ).expand(text=["The first mapped text.", "The second mapped text."])
