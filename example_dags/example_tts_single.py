"""One text, end to end, in one task: submit, wait without holding a worker slot, store the audio.

``CambTtsToStorageOperator`` is typed for Camb.ai's ``/tts``: its arguments are exactly that
call's documented fields (``text``, ``voice_id``, ``language``, ...) plus where to store the audio
and how to wait. It submits (recording the request first, so a retry re-attaches instead of
paying again), defers to the triggerer while Camb works, and streams the finished audio into the
destination. It returns the stored file: ``uri``, ``size_bytes``, ``sha256``, ``content_type``,
``duration_seconds``, ``tts_task_id``.

A mistyped field fails when the DAG is parsed, not at run time. Writing ``voice_idd=20303`` below
makes the DAG an import error that names it::

    TypeError: Invalid arguments were passed to CambTtsToStorageOperator (task_id: speak):
    'voice_idd' (did you mean 'voice_id'?). Its camb_ai tts fields are: text, voice_id, language, ...

and a literal value the vendor would refuse (``gender=5``, ``language=0``) fails at parse time
too; a templated one (``text`` below) is checked once rendered, before anything is paid for.

Connections: ``camb_ai_default`` (Camb.ai). The destination is a folder under ``TTS_EXAMPLE_OUTPUT``,
so the file is named by the operator inside it; a run chooses the text, never where it is written.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator

OUTPUT = os.environ.get("TTS_EXAMPLE_OUTPUT", "file:///tmp/airflow-tts-examples/")
#: The storage connection for OUTPUT (e.g. an ``aws`` connection for ``s3://``); where audio goes is the
#: deployment's choice, never a run's conf (see ``[tts] allowed_destinations`` in docs/install.md).
DEST_CONN_ID = os.environ.get("TTS_EXAMPLE_DEST_CONN_ID") or None

with DAG(
    dag_id="example_tts_single",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "text": Param("Hello from Apache Airflow.", type="string", minLength=1),
    },
    tags=["example", "tts"],
) as dag:
    CambTtsToStorageOperator(
        task_id="speak",
        text="{{ params.text }}",
        voice_id=20303,
        language=1,
        destination=OUTPUT + "single/",
        dest_conn_id=DEST_CONN_ID,
        deferrable=True,
        timeout=timedelta(minutes=15),
    )
