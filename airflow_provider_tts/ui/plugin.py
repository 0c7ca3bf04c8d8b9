"""The Airflow plugin of the Audio view, registered in the provider info (``plugins``).

On Airflow 3.1+ it mounts the view's FastAPI app (:mod:`airflow_provider_tts.ui.api`) under
``/tts-audio`` in the api-server and adds two external views to Airflow's UI: an **Audio** tab on
a DAG run and on a task instance, which show the page in the UI with the run's ids filled in.

Airflow 3.0 has no external views (its UI has no place for the page), so there the plugin adds
nothing and the operators' extra links ("Stored audio", "Batch manifest") stand in.

Every Airflow component loads plugins, the DAG processor and workers too: importing this module
builds nothing. The FastAPI app is built on the api-server's first request to it
(:class:`LazyAudioApp`), so a worker never imports FastAPI routes, models or storage code for it.
"""

from __future__ import annotations

import threading
from typing import Any

from airflow.plugins_manager import AirflowPlugin

#: Where the api-server mounts the app (also :data:`airflow_provider_tts.ui.api.URL_PREFIX`).
URL_PREFIX = "/tts-audio"
#: Whether this Airflow's plugins can add views to its UI (3.1+).
HAS_EXTERNAL_VIEWS = hasattr(AirflowPlugin, "external_views")


class LazyAudioApp:
    """An ASGI app that builds the real one (:func:`~airflow_provider_tts.ui.api.create_app`) when first called."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._app is None:
                from airflow_provider_tts.ui.api import create_app

                self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # a mounted app gets no lifespan events; answer one anyway
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            return
        app = self._app or self._build()
        await app(scope, receive, send)


def _views() -> list[dict[str, Any]]:
    """The Audio tab of a DAG run and of a task instance; the UI fills in the ``{...}`` ids."""
    run = f"{URL_PREFIX}/view?dag_id={{DAG_ID}}&run_id={{RUN_ID}}"
    return [
        {"name": "Audio", "href": run, "destination": "dag_run", "url_route": "tts-audio-run", "category": "tts"},
        {
            "name": "Audio",
            "href": run + "&task_id={TASK_ID}&map_index={MAP_INDEX}",
            "destination": "task_instance",
            "url_route": "tts-audio-task",
            "category": "tts",
        },
    ]


class TtsAudioViewPlugin(AirflowPlugin):
    """Adds the Audio view to Airflow's UI (3.1+); nothing on 3.0."""

    name = "tts_audio_view"
    fastapi_apps = (
        [{"name": "tts_audio_view", "app": LazyAudioApp(), "url_prefix": URL_PREFIX}] if HAS_EXTERNAL_VIEWS else []
    )
    external_views = _views() if HAS_EXTERNAL_VIEWS else []
