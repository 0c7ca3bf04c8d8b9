"""A batch through Camb.ai's ``/tts-stream`` into storage; a re-run pays only for changed texts.

``/tts-stream`` is Camb's recommended TTS call: the response body is the audio, so each mapped
task is one request streamed straight into the destination folder (no task id, no waiting).
Every file is named after its request's fingerprint and recorded in the folder's request cache
(``.tts-cache/``), so when the DAG runs again over the same texts each unchanged text is found in
the folder and the vendor is not called for it: run it twice and the second run pays for nothing. The manifest says,
per text, whether it was served from the cache and what the vendor charged.

Connections: ``camb_ai_default`` (Camb.ai), plus ``TTS_EXAMPLE_DEST_CONN_ID`` for the storage (e.g. an
``aws`` connection for ``s3://``).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_tts.operators.tts import CambTtsStreamToStorageOperator

OUTPUT = os.environ.get("TTS_EXAMPLE_OUTPUT", "file:///tmp/airflow-tts-examples/")
#: The storage connection for OUTPUT (e.g. an ``aws`` connection for ``s3://``); where audio goes is the
#: deployment's choice, never a run's conf (see ``[tts] allowed_destinations`` in docs/install.md).
DEST_CONN_ID = os.environ.get("TTS_EXAMPLE_DEST_CONN_ID") or None
TEXTS = [
    "Good evening, here is tonight's weather.",
    "Rain moves in from the west after midnight.",
    "Tomorrow starts cool and bright.",
    "Winds ease by the afternoon.",
    "That was the weather; sleep well.",
]

with DAG(
    dag_id="example_tts_stream",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "texts": Param(TEXTS, type="array", minItems=1),
        "language": Param("en-us", type="string"),
        "voice_id": Param(20303, type="integer"),
    },
    max_active_tasks=16,
    tags=["example", "tts", "camb", "stream"],
) as dag:

    @task
    def texts(params: dict[str, Any] | None = None) -> list[str]:
        return list((params or {})["texts"])

    batch = texts()
    speak = CambTtsStreamToStorageOperator.partial(
        task_id="speak",
        tts_conn_id="camb_ai_default",
        language="{{ params.language }}",
        voice_id="{{ params.voice_id }}",
        output_format="flac",
        destination=OUTPUT + "stream/",
        dest_conn_id=DEST_CONN_ID,
        max_active_tis_per_dagrun=8,
        # A stream cut off mid-body was already charged; a retry pays again, so retry sparingly.
        retries=1,
        retry_delay=timedelta(seconds=10),
    ).expand(text=batch)

    @task
    def write_manifest(texts: list[str], stored: list[dict[str, Any]]) -> str:
        """One row per text, in order, with ``cached`` and ``credits``; written next to the audio."""
        rows = [{"text": text, **result} for text, result in zip(texts, stored, strict=True)]
        paid = [row for row in rows if not row["cached"]]
        summary = {
            "count": len(rows),
            "served_from_cache": len(rows) - len(paid),
            "vendor_calls": len(paid),
            "credits_charged": sum(row["credits"] or 0 for row in paid),
            "items": rows,
        }
        folder = ObjectStoragePath(OUTPUT + "stream/", conn_id=DEST_CONN_ID)
        manifest = folder / "manifest.json"
        manifest.write_text(json.dumps(summary, indent=2))
        return str(manifest)

    # TaskFlow resolves these XComArgs to the lists at run time; mypy only sees the XComArgs.
    write_manifest(batch, speak.output)  # type: ignore[arg-type]
