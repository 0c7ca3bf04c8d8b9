"""The submit and storage operators under their public import path.

``from airflow_provider_tts.operators.tts import TtsSubmitOperator, TtsAudioToStorageOperator``
(and ``CambTtsStreamToStorageOperator``) is the documented way to import them; each is defined in
its own module:

* :mod:`airflow_provider_tts.operators.submit`: ``TtsSubmitOperator``, which creates a remote task
  once per task instance (a retry re-attaches to the task it already paid for);
* :mod:`airflow_provider_tts.operators.audio_to_storage`: ``TtsAudioToStorageOperator``, which
  waits for a task if needed and streams its audio into object storage;
* :mod:`airflow_provider_tts.operators.stream_to_storage`: ``CambTtsStreamToStorageOperator``,
  Camb.ai's ``/tts-stream`` straight into object storage.

These are the pieces for composing steps (a sensor between them, ids from elsewhere, mapped
batches). One text to one file is one task: the operators of
:mod:`airflow_provider_tts.operators.text_to_storage`, built from the first two. The helpers every
storing operator shares live in :mod:`airflow_provider_tts.storing` and
:mod:`airflow_provider_tts.templating`; they are importable from here too, ``rendered_later`` and
``StoredAudioOutput`` under those names.
"""

from __future__ import annotations

from airflow_provider_tts.operators.audio_to_storage import TtsAudioToStorageOperator
from airflow_provider_tts.operators.stream_to_storage import STREAM_FIELDS, CambTtsStreamToStorageOperator
from airflow_provider_tts.operators.submit import SUBMIT_FIELDS, TtsSubmitOperator
from airflow_provider_tts.storing import StoredAudioOutput as StoredAudioOutput
from airflow_provider_tts.storing import plain_uri, stream_audio_into
from airflow_provider_tts.templating import rendered_later as rendered_later

__all__ = [
    "STREAM_FIELDS",
    "SUBMIT_FIELDS",
    "CambTtsStreamToStorageOperator",
    "StoredAudioOutput",
    "TtsAudioToStorageOperator",
    "TtsSubmitOperator",
    "plain_uri",
    "rendered_later",
    "stream_audio_into",
]
