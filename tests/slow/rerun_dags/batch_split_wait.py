"""A batch whose first texts end while its worker waits and whose last two do not, for
``tests/slow/test_batch_reruns.py``: the worker stores the first ones, defers once for the last two,
and the resumed task writes every row (``wait_before_defer``)."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator

with DAG(
    dag_id="batch_split_wait",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
):
    CambTtsBatchToStorageOperator(
        task_id="speak_all",
        # The emulator's own marker keeps the last two pending 12 s; the others end after 2 s.
        items=[f"Split line {n}." for n in range(4)] + [f"Split slow line {n}. [emu:delay=12]" for n in range(2)],
        defaults={"voice_id": 20303, "language": 1},
        destination=os.environ.get("TTS_RERUN_OUTPUT", "file:///tmp/tts-reruns/out/") + "split/",
        max_active_requests=1,  # one create at a time: the quick lines are the oldest
        deferrable=True,
        wait_before_defer=4,
        poll_interval=1,
    )
