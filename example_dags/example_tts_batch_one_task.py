"""A batch in one task: the 50 texts of ``example_tts_batch``, one submit round, one deferral, one task.

``example_tts_batch`` maps a submit task and a store task over the texts: 101 task instances for
50 texts, each with its worker start-up and scheduler round trips. Here
:class:`~airflow_provider_tts.operators.batch.RevidTtsBatchToStorageOperator` takes the whole list
(from a file in object storage, one text per line) and, in one task instance: validates every text
before paying for any, submits them ``max_active_requests`` at a time (each request claimed in the
folder's request cache before its create call, its vendor id recorded right after), waits for all
of them in the triggerer, streams every audio file into the folder and writes ``manifest.jsonl``
(one row per text: file, size, sha256, duration, vendor task id, status, error).

``file_names="words"``: these texts are public, so their files are named after their first words
and their request, ``the-mountain-wakes-up-slowly-3fa9c2d1.wav`` (the default names a file by its
request alone, keeping private texts out of object keys). A re-run pays only for texts whose
request changed, wherever they moved in the file; a retry after a failure waits for every task
already paid for and pays again only for what the vendor failed retryably.
``wait_before_defer`` keeps the task in its worker for up to two minutes, storing each text as
soon as its audio is ready; whatever is still pending then is waited for in the triggerer (one
deferral).
``max_failed_items=2`` lets the run succeed with up to two failed texts, each a manifest row with
the vendor's reason. ``max_active_requests=16``: as many requests in flight as the mapped example's
16 task instances (a request asleep in its retry's backoff does not count).

Connections: ``revid_tts_default`` (RevidAPI), plus ``TTS_EXAMPLE_DEST_CONN_ID`` for the storage (e.g.
an ``aws`` connection for ``s3://``). Where the items are read and the audio written is the
deployment's choice (environment, and ``[tts] allowed_items_paths`` / ``allowed_destinations``),
never a run's conf: whoever may trigger the DAG cannot point a worker at another file or folder.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG

from airflow_provider_tts.operators.batch import RevidTtsBatchToStorageOperator

OUTPUT = os.environ.get("TTS_EXAMPLE_OUTPUT", "file:///tmp/airflow-tts-examples/")
#: The storage connection for OUTPUT (e.g. an ``aws`` connection for ``s3://``); where audio goes is the
#: deployment's choice, never a run's conf (see ``[tts] allowed_destinations`` in docs/install.md).
DEST_CONN_ID = os.environ.get("TTS_EXAMPLE_DEST_CONN_ID") or None
#: The same 50 texts as ``example_tts_batch``, one per line.
TEXTS_FILE = (Path(__file__).parent / "data" / "batch_texts.txt").as_uri()
#: The items file: the deployment's choice (``TTS_EXAMPLE_ITEMS``), never a run's conf.
ITEMS = os.environ.get("TTS_EXAMPLE_ITEMS", TEXTS_FILE)

with DAG(
    dag_id="example_tts_batch_one_task",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "tts", "batch"],
) as dag:
    RevidTtsBatchToStorageOperator(
        task_id="speak_all",
        items_path=ITEMS,
        defaults={"engine": "edge"},
        file_names="words",
        destination=OUTPUT + "batch-one-task/",
        dest_conn_id=DEST_CONN_ID,
        max_failed_items=2,
        max_active_requests=16,
        deferrable=True,
        # Wait up to 2 minutes in the worker, storing each text as its audio is ready, before
        # handing what is still pending to the triggerer: a batch that ends within it pays no
        # deferral and resume, and only its last text is left to store when that one ends.
        wait_before_defer=timedelta(minutes=2),
        retries=2,
        retry_delay=timedelta(seconds=10),
    )
