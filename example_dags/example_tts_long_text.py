"""A chapter of any length into one audio file, in one task; an edit pays only for what changed.

``CambTtsLongTextToStorageOperator`` cuts the text at paragraphs, then sentences, clauses and words
under Camb's limit (3,000 characters a part), speaks every part through the batch machinery (one
deferral for all parts, ``max_active_requests`` at a time, each part paid for once whatever the
retries), and joins the parts' audio into one FLAC file with a timing sidecar
(``<name>.timing.json``: where each part starts, in the text and in the audio) and SubRip and
WebVTT captions beside it. The parts are kept in a hidden ``.tts-parts/`` folder next to the file,
keyed by their text: run the DAG again with one paragraph edited and only that paragraph's parts
are paid for; the file is joined again from the stored parts.

Connections: ``camb_ai_default`` (Camb.ai), plus ``TTS_EXAMPLE_DEST_CONN_ID`` for the storage (e.g.
an ``aws`` connection for ``s3://``). The file goes to ``long-text/`` under ``TTS_EXAMPLE_OUTPUT``;
a run chooses the text (``conf={"text": ...}``) and the file's name, never the folder.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_tts.operators.long_text import CambTtsLongTextToStorageOperator

OUTPUT = os.environ.get("TTS_EXAMPLE_OUTPUT", "file:///tmp/airflow-tts-examples/")
#: The storage connection for OUTPUT (e.g. an ``aws`` connection for ``s3://``); where audio goes is the
#: deployment's choice, never a run's conf (see ``[tts] allowed_destinations`` in docs/install.md).
DEST_CONN_ID = os.environ.get("TTS_EXAMPLE_DEST_CONN_ID") or None
CHAPTER = "\n\n".join(
    [
        "Chapter One. The lighthouse keeper woke before the gulls, as he had every morning for "
        "thirty-one years. He climbed the 117 steps, trimmed the wick, and wrote the date in the log.",
        "The log was older than he was. Its first pages, in a hand that leaned like wind-bent grass, "
        "recorded storms of 1,874 and ships that no longer had names; later keepers had added "
        "weather, visitors, e.g. the inspector, and once, underlined twice, a whale.",
        "That morning the sea was flat and grey. He made tea, sat by the window and waited for the "
        "supply boat, which was, as usual, late.",
    ]
)

with DAG(
    dag_id="example_tts_long_text",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "text": Param(CHAPTER, type="string", minLength=1),
        "name": Param("chapter-one", type="string", pattern="^[A-Za-z0-9][A-Za-z0-9._-]*$"),
    },
    tags=["example", "tts", "camb", "long-text"],
) as dag:
    CambTtsLongTextToStorageOperator(
        task_id="narrate",
        text="{{ params.text }}",
        defaults={"voice_id": 20303, "language": 1},
        destination=OUTPUT + "long-text/",
        file_name="{{ params.name }}",
        dest_conn_id=DEST_CONN_ID,
        silence_seconds=0.4,
        captions=["srt", "vtt"],
        max_active_requests=4,
        deferrable=True,
        timeout=timedelta(hours=2),
    )
