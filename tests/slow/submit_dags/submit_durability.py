"""DAGs for ``tests/slow/test_submit_durability.py``: paying once, on real Airflow processes.

``SubmitWithoutStateStore`` runs the operator with the context Airflow 3.0-3.2 give a task (no
``task_state_store``), so on this Airflow 3.3 deployment it records its submissions the way those
versions do: in an Airflow Variable, through the API server, as a real worker would.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_provider_tts.operators.tts import TtsSubmitOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
RETRY_ONCE = {"retries": 1, "retry_delay": timedelta(seconds=1)}


class SubmitWithoutStateStore(TtsSubmitOperator):
    """The submit operator as it runs below Airflow 3.3, where the context has no task state store."""

    def execute(self, context: Any) -> str:
        return super().execute({k: v for k, v in context.items() if k != "task_state_store"})


with DAG("submit_502_after_send", schedule=None, start_date=START, catchup=False, default_args=RETRY_ONCE):
    TtsSubmitOperator(task_id="submit", tts_conn_id="revid_tts_default", kind="tts", text="Hello once")

with DAG("submit_retry_variable_ledger", schedule=None, start_date=START, catchup=False, default_args=RETRY_ONCE):
    SubmitWithoutStateStore(
        task_id="submit_and_wait",
        tts_conn_id="camb_ai_default",
        kind="tts",
        text="Retried, and paid for once.",
        voice_id=20303,
        language=1,
        wait=True,
        deferrable=False,
        wait_timeout=600,
    )
