"""A batch: many texts through dynamic task mapping, audio into one folder, and a manifest.

Each text becomes one mapped submit and one mapped download (which waits in the triggerer until
its task is done). ``max_active_tis_per_dagrun`` bounds how many submits run at once, so a large
batch does not flood the vendor. The downloads get a much larger bound: on Airflow 3.3 a deferred
task instance counts toward ``max_active_tis_per_dagrun``, and a wait in the triggerer costs no
worker slot, so a bound of 8 would serialise the batch behind the vendor's processing time.
Each file is named after its item, ``<number>-<first words of the text>.<extension>`` (``07-the-
mountain-wakes-up-slowly.wav``): the store task takes its ``file_name`` beside its vendor task id,
zipped from the submits' output and the names. A re-run of the batch writes the same names, so an
unchanged text's file is not written again (``overwrite="skip_if_identical"``) and nothing piles up.
The last task writes ``manifest.json`` next to the audio: file, uri, size, sha256 and duration per
text, in the order of the texts.

The mapped store task declares one asset, ``tts-audio/example_tts_batch/store`` (given as its
``outlets``; by default a literal destination folder would be the asset), and each stored file is
an event on it with the file in its ``extra``.
``example_tts_batch_announce`` is scheduled on that asset: it runs after the stores and lists the
files whose events it was given, without any sensor or polling of the folder (Airflow gives a run
the events up to the moment it was queued; later ones go to the next run the asset triggers).

Connections: ``revid_tts_default`` (RevidAPI), plus ``TTS_EXAMPLE_DEST_CONN_ID`` for the storage (e.g.
an ``aws`` connection for ``s3://``). A run chooses the texts, never where they are read or written.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, ObjectStoragePath, Param, task

from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator, TtsSubmitOperator

OUTPUT = os.environ.get("TTS_EXAMPLE_OUTPUT", "file:///tmp/airflow-tts-examples/")
#: The storage connection for OUTPUT (e.g. an ``aws`` connection for ``s3://``); where audio goes is the
#: deployment's choice, never a run's conf (see ``[tts] allowed_destinations`` in docs/install.md).
DEST_CONN_ID = os.environ.get("TTS_EXAMPLE_DEST_CONN_ID") or None
#: The 50 texts, one per line (``example_tts_batch_one_task`` reads the same file).
TEXTS_FILE = Path(__file__).parent / "data" / "batch_texts.txt"
TEXTS = TEXTS_FILE.read_text(encoding="utf-8").splitlines()
#: Words of a text that make it into its file name (a slug, not the whole sentence).
SLUG_CHARS = 40


def file_names(texts: list[str]) -> list[str]:
    """``<number>-<slug of the text>`` per text, numbered from 1 and zero-padded so a listing sorts in order."""
    width = max(2, len(str(len(texts))))
    names = []
    for number, text in enumerate(texts, start=1):
        words = re.sub(r"^\d+[.)]?\s*", "", text.lower())  # the texts' own numbering would repeat the number
        slug = re.sub(r"[^a-z0-9]+", "-", words).strip("-")[:SLUG_CHARS].rstrip("-") or "text"
        names.append(f"{number:0{width}d}-{slug}")
    return names


def store_kwargs(pair: tuple[str, str]) -> dict[str, str]:
    """One mapped store's arguments from (vendor task id, file name)."""
    tts_task_id, file_name = pair
    return {"tts_task_id": tts_task_id, "file_name": file_name}


#: The asset the store task declares by default (see TtsAudioToStorageOperator, "Assets").
BATCH_AUDIO = Asset(name="tts-audio/example_tts_batch/store")

with DAG(
    dag_id="example_tts_batch",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "texts": Param(TEXTS, type="array", minItems=1),
    },
    max_active_tasks=16,
    tags=["example", "tts", "batch"],
) as dag:

    @task
    def texts(params: dict[str, Any] | None = None) -> list[str]:
        return list((params or {})["texts"])

    batch = texts()
    names = task(task_id="file_names")(file_names)(batch)  # type: ignore[arg-type]
    submit = TtsSubmitOperator.partial(
        task_id="submit",
        tts_conn_id="revid_tts_default",
        kind="tts",
        engine="edge",
        max_active_tis_per_dagrun=8,
        retries=2,
        retry_delay=timedelta(seconds=10),
    ).expand(text=batch)

    store = TtsAudioToStorageOperator.partial(
        task_id="store",
        tts_conn_id="revid_tts_default",
        kind="tts",
        destination=OUTPUT + "batch/",
        dest_conn_id=DEST_CONN_ID,
        outlets=[BATCH_AUDIO],
        deferrable=True,
        max_active_tis_per_dagrun=64,
        retries=2,
        retry_delay=timedelta(seconds=10),
    ).expand_kwargs(submit.output.zip(names).map(store_kwargs))

    @task
    def write_manifest(texts: list[str], stored: list[dict[str, Any]]) -> str:
        """One row per text, in order; written next to the audio so the folder describes itself."""
        rows = [
            {"file": result["uri"].rsplit("/", 1)[-1], "text": text, **result}
            for text, result in zip(texts, stored, strict=True)
        ]
        folder = ObjectStoragePath(OUTPUT + "batch/", conn_id=DEST_CONN_ID)
        manifest = folder / "manifest.json"
        manifest.write_text(json.dumps({"count": len(rows), "items": rows}, indent=2))
        return str(manifest)

    # TaskFlow resolves these XComArgs to the lists at run time; mypy only sees the XComArgs.
    write_manifest(batch, store.output)  # type: ignore[arg-type]


with DAG(
    dag_id="example_tts_batch_announce",
    schedule=[BATCH_AUDIO],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "tts", "batch", "assets"],
) as announce_dag:

    @task
    def announce(triggering_asset_events: Any = None) -> list[str]:
        """The files stored since the last run: one asset event per file, its URI in the extra."""
        uris = sorted(event.extra["uri"] for event in (triggering_asset_events or {}).get(BATCH_AUDIO, []))
        logging.getLogger(__name__).info("%d new audio file(s): %s", len(uris), ", ".join(uris))
        return uris

    announce()
