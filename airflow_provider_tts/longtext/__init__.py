"""One audio file from a text of any length: split it, speak the parts, join their audio.

- :mod:`~airflow_provider_tts.longtext.split`: the text cut into parts under the vendor's limit
  (pure; the same text always gives the same parts);
- :mod:`~airflow_provider_tts.longtext.join`: the parts' audio joined into one file (WAV and MP3
  without a library, FLAC and the rest through ``soundfile``);
- :mod:`~airflow_provider_tts.longtext.timing`: the timing sidecar and the captions;
- :mod:`~airflow_provider_tts.longtext.output`: what every long-text operator shares (the parts'
  folder, the joined file, the sidecars, the result);
- :mod:`~airflow_provider_tts.longtext.operator`: the task-based operators' base class, a batch
  whose items are the parts; :mod:`~airflow_provider_tts.longtext.stream`: the ``/tts-stream`` one.
  The classes DAG authors use are in :mod:`airflow_provider_tts.operators.long_text`.

Importing the package loads nothing heavy (no operator, no audio library).
"""
