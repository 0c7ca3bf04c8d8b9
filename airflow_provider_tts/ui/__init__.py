"""The Audio view: a page in Airflow's UI (3.1+) that lists and plays what a DAG run stored.

* :mod:`~airflow_provider_tts.ui.entries`: pure functions, the rows of the view from the storing
  operators' results (``docs/results.md``) and the batch manifests, filtered, paged and totalled;
* :mod:`~airflow_provider_tts.ui.streaming`: HTTP range requests over an object in storage;
* :mod:`~airflow_provider_tts.ui.api`: the FastAPI app the api-server mounts (every route behind
  Airflow's auth manager);
* :mod:`~airflow_provider_tts.ui.plugin`: the ``AirflowPlugin`` registered in the provider info.

How-to: ``docs/howto/audio-view.md``.
"""
