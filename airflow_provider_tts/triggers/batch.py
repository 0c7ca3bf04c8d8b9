"""The import path of the batch trigger, as Airflow stores it in a deferred task's trigger row.

A row names ``airflow_provider_tts.triggers.batch.TtsBatchTrigger``
(:data:`BATCH_TRIGGER_CLASSPATH`), so this module keeps that path importable for every row already
written; the trigger itself, and the polling loop it shares with a batch that waits in its
worker, are in :mod:`airflow_provider_tts.batch.trigger`.
"""

from __future__ import annotations

from airflow_provider_tts.batch.trigger import BATCH_TRIGGER_CLASSPATH, PROGRESS_EVERY, TtsBatchTrigger, wait_for_all

__all__ = ["BATCH_TRIGGER_CLASSPATH", "PROGRESS_EVERY", "TtsBatchTrigger", "wait_for_all"]
